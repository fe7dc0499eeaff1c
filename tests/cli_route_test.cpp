// `moeroute route`: output JSON against the reference router, presets, zero-gating, bad input.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_support.hpp"
#include "moeroute/io/npy.hpp"
#include "routing_reference.hpp"

using namespace clitest;

namespace {
std::vector<float> write_logits(const std::string& path, int T, int E, unsigned seed, bool half = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> x(static_cast<std::size_t>(T) * E);
  for (auto& v : x) v = d(rng);
  if (half)
    for (auto& v : x) v = moeroute::half_to_float(moeroute::float_to_half(v));
  write_text(path, moeroute::format_npy(x.data(), T, E, half));
  return x;
}

void expect_output_matches(const std::string& out, const std::vector<float>& x, int T, int E,
                           const ref::config& c) {
  auto j = nlohmann::json::parse(read_text(out));
  ASSERT_EQ(j["tokens"], T);
  ASSERT_EQ(j["num_experts"], E);
  auto off = j["offsets"].get<std::vector<std::uint32_t>>();
  auto ids = j["ids"].get<std::vector<int>>();
  auto w = j["weights"].get<std::vector<double>>();
  ASSERT_EQ(off.size(), static_cast<std::size_t>(T) + 1);
  for (int t = 0; t < T; ++t) {
    auto want = ref::route_row(std::vector<double>(x.begin() + t * E, x.begin() + (t + 1) * E), c);
    ASSERT_EQ(off[t + 1] - off[t], want.ids.size()) << "row " << t;
    for (std::size_t i = 0; i < want.ids.size(); ++i) {
      EXPECT_EQ(ids[off[t] + i], want.ids[i]);
      EXPECT_NEAR(w[off[t] + i], want.w[i], 2e-5);
    }
  }
  EXPECT_NEAR(j["mean_active"].get<double>(), static_cast<double>(ids.size()) / T, 1e-12);
}
}  // namespace

TEST(CliRoute, PresetMatchesReference) {
  const auto in = tmp_path("route_mix.npy"), out = tmp_path("route_mix.json");
  auto x = write_logits(in, 33, 8, 1);
  auto r = run_cli("route --logits " + in + " --preset mixtral-8x7b -o " + out, "route_mix");
  ASSERT_EQ(r.code, 0) << r.err;
  ref::config c;
  c.K = 2;
  c.renorm = true;
  expect_output_matches(out, x, 33, 8, c);
  EXPECT_NE(r.err.find("33 tokens x 8 experts"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("mean active 2.00, k min 2 max 2"), std::string::npos) << r.err;
}

TEST(CliRoute, ExplicitGroupedSigmoidWithBiasScaleAndZeroGatingOnHalfInput) {
  const auto in = tmp_path("route_ds.npy"), bias = tmp_path("route_ds_bias.npy"), out = tmp_path("route_ds.json");
  auto x = write_logits(in, 20, 32, 2, /*half=*/true);
  std::vector<float> b(32);
  for (int e = 0; e < 32; ++e) b[e] = 0.01f * static_cast<float>(e % 5);
  write_text(bias, moeroute::format_npy(b.data(), 1, 32));
  auto r = run_cli("route --logits " + in + " --scoring sigmoid --topk 6 --renorm --bias " + bias +
                       " --groups 4 --topk-groups 2 --scale 2.5 --cum-prob 0.8 --min-k 2 --max-k 5 -o " + out,
                   "route_ds");
  ASSERT_EQ(r.code, 0) << r.err;
  ref::config c;
  c.scoring = "sigmoid";
  c.K = 6;
  c.renorm = true;
  c.scale = 2.5;
  c.bias.assign(b.begin(), b.end());
  c.groups = 4;
  c.topk_groups = 2;
  c.cum_prob = 0.8;
  c.min_k = 2;
  c.max_k = 5;
  expect_output_matches(out, x, 20, 32, c);
}

TEST(CliRoute, BadInputExitsTwoWithOneLineAndNoOutput) {
  const auto good = tmp_path("route_good.npy");
  write_logits(good, 4, 8, 3);
  std::vector<float> nan_rows(4 * 8, 0.0f);
  nan_rows[2 * 8 + 5] = std::numeric_limits<float>::quiet_NaN();
  const auto nan_file = tmp_path("route_nan.npy");
  write_text(nan_file, moeroute::format_npy(nan_rows.data(), 4, 8));
  const auto trunc = tmp_path("route_trunc.npy");
  write_text(trunc, read_text(good).substr(0, 100));
  const std::pair<std::string, std::string> cases[] = {
      {"--logits /nonexistent.npy --topk 2", "/nonexistent.npy: cannot open"},
      {"--logits " + nan_file + " --topk 2", "route_nan.npy: row 2: NaN logit (expert 5)"},
      {"--logits " + trunc + " --topk 2", "route_trunc.npy"},
      {"--logits " + good + " --topk 9", "K = 9"},
      {"--logits " + good + " --topk 2 --groups 3 --topk-groups 1", "not divisible by groups = 3"},
      {"--logits " + good + " --topk 2 --groups 4", "--groups requires --topk-groups"},
      {"--logits " + good + " --preset nope", "unknown preset 'nope'"},
      {"--logits " + good + " --preset deepseek-v3", "has 256"},
      {"--logits " + good + " --topk 2 --scoring relu", "unknown scoring 'relu'"},
      {"--logits " + good + " --topk 2 --cum-prob 1.5", "--cum-prob: 1.5 is not in (0, 1]"},
      {"--logits " + good + " --topk 2 --min-k 1", "--min-k requires --cum-prob"},
      {"--logits " + good + " --topk two", "two"},
      {"--logits " + good, "--topk is required"},
      {"--logits " + good + " --topk 2 --bias " + good, "bias has shape (4, 8)"},
  };
  const auto out = tmp_path("route_bad.json");
  for (const auto& c : cases) expect_bad("route " + c.first + " -o " + out, out, c.second, "route_bad");
  auto u = run_cli("route --frobnicate", "route_unknown_flag");
  EXPECT_EQ(u.code, 2);
  auto none = run_cli("", "route_no_sub");
  EXPECT_EQ(none.code, 2);
}
