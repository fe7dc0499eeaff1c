// Expert-cache throughput per eviction policy (accesses per second), and Mattson's one-pass LRU
// curve against per-capacity replay. Run with --benchmark_format=json; compare items_per_second
// of each policy with BM_Access<lru_eviction> from the same run.
//
// Synthetic streams: 100 layers x 256 experts (25,600 cells), a cache of 10,000 cells; tokens sweep
// the layers in order and pick 8 distinct experts per layer from a Zipf-like distribution whose
// ranking is shuffled per layer: argument 0 = skewed (s = 1.1, mostly hits), 1 = flatter (s = 0.4,
// many misses, so the eviction path dominates). 2^20 accesses per pass, fixed seed.

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "moeroute/cache/expert_cache.hpp"
#include "moeroute/cache/simulate.hpp"
#include "moeroute/io/routing_trace.hpp"

namespace {

constexpr int kLayers = 100, kExperts = 256, kTopK = 8;
constexpr std::size_t kCapacity = 10000, kAccesses = std::size_t{1} << 20;

struct stream {
  std::vector<std::uint32_t> cells;
  std::vector<std::uint64_t> next_use;
};

stream make_stream(double zipf_s) {
  {
    stream out;
    std::mt19937_64 rng(20261123);
    std::vector<double> w(kExperts);
    for (int r = 0; r < kExperts; ++r) w[static_cast<std::size_t>(r)] = 1.0 / std::pow(r + 1.0, zipf_s);
    std::vector<std::vector<int>> rank(kLayers, std::vector<int>(kExperts));
    for (auto& r : rank) {
      std::iota(r.begin(), r.end(), 0);
      std::shuffle(r.begin(), r.end(), rng);
    }
    std::discrete_distribution<int> pick(w.begin(), w.end());
    while (out.cells.size() < kAccesses)
      for (int l = 0; l < kLayers && out.cells.size() < kAccesses; ++l) {
        int chosen[kTopK];
        int n = 0;
        while (n < kTopK) {
          const int e = rank[static_cast<std::size_t>(l)][static_cast<std::size_t>(pick(rng))];
          if (std::find(chosen, chosen + n, e) == chosen + n) chosen[n++] = e;
        }
        for (int i = 0; i < n && out.cells.size() < kAccesses; ++i)
          out.cells.push_back(static_cast<std::uint32_t>(l * kExperts + chosen[i]));
      }
    out.next_use.assign(out.cells.size(), moeroute::no_next_use);
    std::vector<std::uint64_t> seen(static_cast<std::size_t>(kLayers) * kExperts, moeroute::no_next_use);
    for (std::size_t i = out.cells.size(); i-- > 0;) {
      out.next_use[i] = seen[out.cells[i]];
      seen[out.cells[i]] = i;
    }
    return out;
  }
}

const stream& synthetic(int which) {
  static const stream skewed = make_stream(1.1), flat = make_stream(0.4);
  return which == 0 ? skewed : flat;
}

template <class Policy>
void BM_Access(benchmark::State& state) {
  const auto& s = synthetic(static_cast<int>(state.range(0)));
  std::uint64_t hits = 0, accesses = 0;
  for (auto _ : state) {
    moeroute::expert_cache<Policy> cache(kLayers, kExperts, kCapacity);
    for (std::size_t i = 0; i < s.cells.size(); ++i) {
      if constexpr (Policy::needs_future)
        benchmark::DoNotOptimize(cache.access(s.cells[i], s.next_use[i]));
      else
        benchmark::DoNotOptimize(cache.access(s.cells[i]));
    }
    hits += cache.stats().total.hits;
    accesses += cache.stats().total.accesses;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(accesses));
  state.counters["hit_rate"] = accesses ? static_cast<double>(hits) / static_cast<double>(accesses) : 0.0;
}
BENCHMARK_TEMPLATE(BM_Access, moeroute::lru_eviction)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Access, moeroute::fifo_eviction)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Access, moeroute::lfu_eviction)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Access, moeroute::belady_eviction)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK_TEMPLATE(BM_Access, moeroute::layer_cycle_eviction)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

// The engine call: one request per (token, layer) with the batch's 8 experts.
void BM_RequestLru(benchmark::State& state) {
  const auto& s = synthetic(static_cast<int>(state.range(0)));
  std::vector<std::int32_t> experts(kTopK);
  std::vector<std::uint32_t> slots(kTopK);
  std::uint64_t accesses = 0, hits = 0;
  for (auto _ : state) {
    moeroute::expert_cache<moeroute::lru_eviction> cache(kLayers, kExperts, kCapacity);
    for (std::size_t i = 0; i + kTopK <= s.cells.size(); i += kTopK) {
      const int layer = static_cast<int>(s.cells[i] / kExperts);
      for (int k = 0; k < kTopK; ++k) experts[static_cast<std::size_t>(k)] = static_cast<std::int32_t>(s.cells[i + static_cast<std::size_t>(k)] % kExperts);
      benchmark::DoNotOptimize(cache.request(layer, experts.data(), kTopK, slots.data()).size());
    }
    accesses += cache.stats().total.accesses;
    hits += cache.stats().total.hits;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(accesses));
  state.counters["hit_rate"] = accesses ? static_cast<double>(hits) / static_cast<double>(accesses) : 0.0;
}
BENCHMARK(BM_RequestLru)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

const moeroute::routing_trace& mixtral() {
  static const auto t =
      moeroute::read_routing_trace_jsonl(std::string(MOEROUTE_DATA_DIR) + "/traces/mixtral-8x7b_humaneval_routing.jsonl");
  return t;
}

// LRU hits at every capacity 1..256 of the Mixtral trace: Mattson's one pass ...
void BM_MixtralLruCurveMattson(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(moeroute::lru_hit_curve(mixtral(), 256).hits.back());
}
BENCHMARK(BM_MixtralLruCurveMattson)->Unit(benchmark::kMillisecond);

// ... against one replay per capacity.
void BM_MixtralLruCurveReplay(benchmark::State& state) {
  std::vector<std::size_t> caps(256);
  std::iota(caps.begin(), caps.end(), std::size_t{1});
  for (auto _ : state)
    benchmark::DoNotOptimize(moeroute::simulate_cache<moeroute::lru_eviction>(mixtral(), caps).back().hits);
}
BENCHMARK(BM_MixtralLruCurveReplay)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
