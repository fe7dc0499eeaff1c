// An engine's decode loop with the offloaded MoE layer (moeroute/offload/offloaded_moe.hpp): one
// object for the model, one forward() per MoE layer and token. Expert weights stay in host memory
// (a GGUF given on the command line, mapped, or a synthetic q8_0 model); a quarter of them fit in
// the device pool; misses are uploaded or computed on the CPU, whichever the measured costs say
// is faster, and the next layer's experts are prefetched from co-activation learned online.
//
//   example_offload_moe                       # synthetic: 8 layers x 32 experts, top-4
//   example_offload_moe model.gguf [tokens]   # a llama.cpp MoE GGUF (its routers route)
#include <moeroute/cache/eviction.hpp>
#include <moeroute/io/gguf_experts.hpp>
#include <moeroute/offload/offloaded_moe.hpp>
#include <moeroute/routing/router.hpp>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

// A synthetic model: L layers of E q8_0 experts (H = F = 256) and random router matrices.
struct synthetic {
  moeroute::ffn_layer shape{32, 256, 256, moeroute::weight_type::q8_0};
  int layers = 8;
  std::vector<unsigned char> blobs;
  std::vector<std::vector<float>> routers;  // per layer E x H
};

synthetic make_synthetic() {
  synthetic m;
  const auto H = static_cast<std::size_t>(m.shape.hidden), F = static_cast<std::size_t>(m.shape.ffn);
  const std::size_t E = static_cast<std::size_t>(m.shape.num_experts), eb = m.shape.expert_bytes();
  m.blobs.resize(static_cast<std::size_t>(m.layers) * E * eb);
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0.0f, 0.06f);
  std::vector<float> g(F * H), u(F * H), d(H * F);
  for (std::size_t c = 0; c < static_cast<std::size_t>(m.layers) * E; ++c) {
    for (auto* v : {&g, &u, &d})
      for (auto& a : *v) a = n(rng);
    moeroute::encode_expert(m.shape, g.data(), u.data(), d.data(), m.blobs.data() + c * eb);
  }
  m.routers.assign(static_cast<std::size_t>(m.layers), std::vector<float>(E * H));
  for (auto& r : m.routers)
    for (auto& a : r) a = 4.0f * n(rng);
  return m;
}

}  // namespace

int main(int argc, char** argv) try {
  const int tokens = argc > 2 ? std::atoi(argv[2]) : 16;
  std::unique_ptr<moeroute::gguf_expert_weights> gguf;
  synthetic syn;
  moeroute::offload_host_weights host;
  int K = 4;
  if (argc > 1) {  // a real model: its expert tensors as mapped, its routing as llama.cpp computes it
    gguf = std::make_unique<moeroute::gguf_expert_weights>(moeroute::gguf_file::open(argv[1]));
    host = moeroute::offload_weights_from_gguf(*gguf, gguf->num_layers());
    K = gguf->experts_used();
  } else {
    syn = make_synthetic();
    for (int l = 0; l < syn.layers; ++l)
      host.layers.push_back(moeroute::offload_layer_from_blobs(
          syn.shape, syn.blobs.data() + static_cast<std::size_t>(l) * syn.shape.num_experts * syn.shape.expert_bytes()));
  }
  const int L = static_cast<int>(host.layers.size()), E = host.layers[0].shape.num_experts;
  const auto H = static_cast<std::size_t>(host.layers[0].shape.hidden);

  // The engine's one object: a quarter of all experts fit on the device.
  moeroute::vulkan_context ctx;
  moeroute::offload_options opt;
  const std::uint64_t slot = moeroute::offloaded_moe<>::slot_bytes_of(host.layers);
  opt.budget_bytes = std::max<std::uint64_t>(static_cast<std::uint64_t>(L) * static_cast<std::uint64_t>(E) / 4, 1) * slot;
  opt.max_tokens = 1;
  opt.max_entries = static_cast<std::size_t>(K);
  opt.miss = moeroute::miss_mode::auto_;
  opt.cpu_threads = 2;
  moeroute::offloaded_moe<moeroute::layer_cycle_eviction> moe(ctx, host.layers, opt);
  moe.use_coactivation_prefetch();
  std::printf("%s: %d layers x %d experts (top-%d), %zu device slots of %llu bytes; upload %.0f MB/s, CPU %.1f us/entry\n",
              ctx.device_name().c_str(), L, E, K, moe.slots(), static_cast<unsigned long long>(slot),
              moe.costs().upload_bytes_per_s / 1e6, moe.costs().cpu_s_per_entry * 1e6);

  // Buffers of the decode loop, allocated once.
  moeroute::router<moeroute::softmax_scoring> router(E, K, {true});
  std::vector<float> x(H), y(H), logits(static_cast<std::size_t>(E));
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (int t = 0; t < tokens; ++t) {
    for (auto& v : x) v = n(rng);  // stands in for the attention block's output
    for (int l = 0; l < L; ++l) {
      moeroute::routing_result r;
      if (gguf) {
        r = gguf->route(l, x.data(), 1);
      } else {
        const auto& w = syn.routers[static_cast<std::size_t>(l)];
        for (int e = 0; e < E; ++e) {
          float acc = 0;
          for (std::size_t h = 0; h < H; ++h) acc += w[static_cast<std::size_t>(e) * H + h] * x[h];
          logits[static_cast<std::size_t>(e)] = acc;
        }
        r = router.route(moeroute::logits_view<float>(logits.data(), 1, static_cast<std::size_t>(E)));
      }
      moe.forward(l, r.view(), x.data(), y.data());  // the whole offloaded MoE layer
      for (std::size_t h = 0; h < H; ++h) x[h] += y[h];  // residual
    }
  }

  const moeroute::offload_counters& c = moe.counters();
  std::printf("%d tokens: %llu accesses, %llu hits (%.1f%%), %llu misses (%llu uploaded, %llu on the CPU)\n", tokens,
              static_cast<unsigned long long>(c.accesses), static_cast<unsigned long long>(c.hits),
              c.accesses ? 100.0 * static_cast<double>(c.hits) / static_cast<double>(c.accesses) : 0.0,
              static_cast<unsigned long long>(c.misses), static_cast<unsigned long long>(c.miss_uploads),
              static_cast<unsigned long long>(c.miss_cpu));
  std::printf("uploads %llu (%.2f MiB, %llu prefetched, %llu of them used), stalls %llu, CPU %.3f s\n",
              static_cast<unsigned long long>(c.uploads), static_cast<double>(c.bytes_uploaded) / 1048576.0,
              static_cast<unsigned long long>(c.prefetch_loads), static_cast<unsigned long long>(c.prefetch_useful),
              static_cast<unsigned long long>(c.stalls), c.cpu_seconds);
  std::printf("final x[0..3]: %.5f %.5f %.5f %.5f\n", x[0], x[1], x[2], x[3]);
  return 0;
} catch (const moeroute::error& e) {
  std::fprintf(stderr, "offload_moe: %s\n", e.message().c_str());
  return e.code() == moeroute::errc::unsupported ? 0 : 1;  // no Vulkan device: nothing to show
}
