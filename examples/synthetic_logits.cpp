// Writes synthetic router logits as .npy: T tokens x E experts, float16, from a fixed seed.
// Each expert has a popularity offset (Zipf-like), each token belongs to one of a few topics
// that favour their own experts, plus Gaussian noise: enough structure that routing is
// concentrated the way real routers are, without claiming to be any real model's logits.
//   example_synthetic_logits OUT.npy [T=512] [E=256] [seed=7]

#include <cmath>
#include <cstdio>
#include <fstream>
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include <moeroute/io/npy.hpp>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT.npy [T] [E] [seed]\n", argv[0]);
    return 2;
  }
  const int T = argc > 2 ? std::stoi(argv[2]) : 512;
  const int E = argc > 3 ? std::stoi(argv[3]) : 256;
  const unsigned seed = argc > 4 ? static_cast<unsigned>(std::stoul(argv[4])) : 7u;
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 1.0f);
  std::vector<float> popularity(E);
  std::vector<int> perm(E);
  for (int e = 0; e < E; ++e) perm[e] = e;
  std::shuffle(perm.begin(), perm.end(), rng);
  for (int e = 0; e < E; ++e) popularity[perm[e]] = -0.6f * std::log(1.0f + static_cast<float>(e));
  const int topics = 6;
  std::vector<std::vector<float>> topic_bias(topics, std::vector<float>(E, 0.0f));
  for (auto& tb : topic_bias)
    for (int i = 0; i < E / 16; ++i) tb[rng() % E] += 2.0f;
  std::vector<float> x(static_cast<std::size_t>(T) * E);
  std::uniform_int_distribution<int> pick(0, topics - 1);
  int topic = pick(rng);
  for (int t = 0; t < T; ++t) {
    if (t % 32 == 0) topic = pick(rng);  // topics change every 32 tokens
    for (int e = 0; e < E; ++e)
      x[static_cast<std::size_t>(t) * E + e] = popularity[e] + topic_bias[topic][e] + 1.2f * noise(rng);
  }
  std::ofstream f(argv[1], std::ios::binary);
  f << moeroute::format_npy(x.data(), T, E, /*half=*/true);
  std::fprintf(stderr, "wrote %s: %d x %d float16 logits (seed %u)\n", argv[1], T, E, seed);
  return f.good() ? 0 : 1;
}
