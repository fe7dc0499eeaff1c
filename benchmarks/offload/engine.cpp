// The offloaded MoE layer (offload/offloaded_moe.hpp) as an engine drives it: decode tokens, one
// forward() per MoE layer, a residual add. Cases `offload/<cache>/passes:<p>` time one token
// through every layer (items = tokens) for
//   cache:  none (streaming: every routed expert uploaded for its call, two slots) or lru (25% of
//           the cells resident);
//   passes: two (the hit pass first, overlapping the uploads), one (one pass after the uploads),
//           auto (the engine's rule: two only when the call's uploads take at least one pass).
// Compare items_per_second with offload/none/passes:two of the same run. Counters: hit_rate,
// passes_per_call (device passes per forward), upload_ms and pass_ms (the engine's measured costs).
//
// Model: 16 layers x 16 experts, top-2, random q8_0 experts of H 256, F 512 (0.40 MiB each), the
// shape `moeroute run` uses; routing: per layer a fixed skewed (Zipf s = 1) ranking of the experts,
// 256 tokens, fixed seed, so lru's hit rate is well above 25%.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "moeroute/backends/vulkan.hpp"
#include "moeroute/offload/offloaded_moe.hpp"
#include "moeroute/weights/layer.hpp"
#include "../vulkan_support.hpp"

namespace {

constexpr int kLayers = 16, kExperts = 16, kTopK = 2, kHidden = 256, kFfn = 512, kTokens = 256;

struct model {
  moeroute::ffn_layer shape{kExperts, kHidden, kFfn, moeroute::weight_type::q8_0};
  std::vector<unsigned char> blobs;
  std::vector<moeroute::offload_layer_source> layers;
  std::vector<std::int32_t> ids;  // kTokens x kLayers x kTopK
};

const model& the_model() {
  static const model m = [] {
    model r;
    std::mt19937 rng(20261202);
    std::normal_distribution<float> nd(0.0f, 0.05f);
    r.blobs.resize(static_cast<std::size_t>(kLayers * kExperts) * r.shape.expert_bytes());
    std::vector<float> g(static_cast<std::size_t>(kHidden) * kFfn), u(g.size()), d(g.size());
    for (int c = 0; c < kLayers * kExperts; ++c) {
      for (auto* v : {&g, &u, &d})
        for (auto& a : *v) a = nd(rng);
      moeroute::encode_expert(r.shape, g.data(), u.data(), d.data(),
                              r.blobs.data() + static_cast<std::size_t>(c) * r.shape.expert_bytes());
    }
    for (int l = 0; l < kLayers; ++l)
      r.layers.push_back(moeroute::offload_layer_from_blobs(
          r.shape, r.blobs.data() + static_cast<std::size_t>(l * kExperts) * r.shape.expert_bytes()));
    std::vector<double> w(kExperts);
    for (int i = 0; i < kExperts; ++i) w[static_cast<std::size_t>(i)] = 1.0 / (i + 1.0);
    std::discrete_distribution<int> pick(w.begin(), w.end());
    std::vector<std::vector<int>> rank(kLayers, std::vector<int>(kExperts));
    for (auto& rk : rank) {
      std::iota(rk.begin(), rk.end(), 0);
      std::shuffle(rk.begin(), rk.end(), rng);
    }
    for (int t = 0; t < kTokens; ++t)
      for (int l = 0; l < kLayers; ++l) {
        const int a = rank[static_cast<std::size_t>(l)][static_cast<std::size_t>(pick(rng))];
        int b = a;
        while (b == a) b = rank[static_cast<std::size_t>(l)][static_cast<std::size_t>(pick(rng))];
        r.ids.push_back(a);
        r.ids.push_back(b);
      }
    return r;
  }();
  return m;
}

void BM_Offload(benchmark::State& state, bool cache, moeroute::pass_split passes) {
  moeroute::vulkan_context* ctx = bench_vulkan_context(state);
  if (!ctx) return;
  const model& m = the_model();
  const std::uint64_t slot = moeroute::offloaded_moe<>::slot_bytes_of(m.layers);
  moeroute::offload_options o;
  o.cache = cache;
  o.passes = passes;
  o.budget_bytes = cache ? slot * (kLayers * kExperts / 4) : slot * kTopK;
  o.max_tokens = 1;
  o.max_entries = kTopK;
  moeroute::offloaded_moe<moeroute::lru_eviction> moe(*ctx, m.layers, o);
  std::vector<float> x(kHidden), y(kHidden);
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  const float w[kTopK] = {0.6f, 0.4f};
  const std::uint32_t off[2] = {0, kTopK};
  int t = 0;
  for (auto _ : state) {
    for (int l = 0; l < kLayers; ++l) {
      const std::int32_t* ids = m.ids.data() + (static_cast<std::size_t>(t) * kLayers + static_cast<std::size_t>(l)) * kTopK;
      moe.forward(l, moeroute::routing_result_view{1, kExperts, off, ids, w}, x.data(), y.data());
      for (int h = 0; h < kHidden; ++h) x[static_cast<std::size_t>(h)] = 0.5f * x[static_cast<std::size_t>(h)] + y[static_cast<std::size_t>(h)];
    }
    benchmark::DoNotOptimize(x.data());
    t = (t + 1) % kTokens;
  }
  const auto& c = moe.counters();
  state.SetItemsProcessed(state.iterations());
  state.counters["hit_rate"] = c.accesses ? static_cast<double>(c.hits) / static_cast<double>(c.accesses) : 0.0;
  state.counters["passes_per_call"] = c.forwards ? static_cast<double>(c.device_passes) / static_cast<double>(c.forwards) : 0.0;
  state.counters["upload_ms"] = 1e3 * moe.costs().upload_s(m.shape.expert_bytes());
  state.counters["pass_ms"] = 1e3 * moe.costs().device_s_per_pass;
}

const int registered = [] {
  for (const bool cache : {false, true})
    for (const auto p : {moeroute::pass_split::two, moeroute::pass_split::one, moeroute::pass_split::auto_}) {
      if (!cache && p != moeroute::pass_split::two) continue;  // streaming calls have no hits: one pass whatever the mode
      const std::string name = std::string("offload/") + (cache ? "lru" : "none") + "/passes:" + moeroute::pass_split_name(p);
      benchmark::RegisterBenchmark(name.c_str(), [cache, p](benchmark::State& s) { BM_Offload(s, cache, p); })
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
    }
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
