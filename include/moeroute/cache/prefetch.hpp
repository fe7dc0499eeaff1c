#pragma once
// Expert prefetch from cross-layer co-activation, learned online, and the trace replay that uses it.
//
// coactivation_predictor (the library API an offload engine calls; no Eigen, no Vulkan):
//   observe(layer, experts, n): one record (a token's or a batch's experts at one layer), in
//     inference order. It learns which layer follows which (the layer of the next record) and, when
//     consecutive records are at different layers, counts for every expert a of the earlier record
//     and every expert b of the later one how often b followed a: co(a -> b), and n(a).
//   predict(layer, experts, n, out): for the layer expected after `layer`, the probability of each
//     expert b: p(b) = (1/n) * sum over a in experts of co(a -> b) / n(a) (an a never seen adds 0);
//     `out` gets (expert, p) pairs with p > 0, most likely first (ties: smaller id). Returns that
//     layer, or -1 when no record has followed `layer` yet. O(n x E) per call.
//   prefetch_candidates(layer, experts, n, threshold, max_count, out): predict(), then keep the
//     experts with p >= threshold, at most max_count of them, most likely first: what an engine
//     prefetches for the next layer (simulate_cache_prefetch uses exactly this). Returns the layer.
//   Memory: layers x E x E counters (32 bits each).
// Nothing is learned from the future: predict() only uses records observed before it.
//
// simulate_cache_prefetch: replays a trace like simulate_cache<recommended_eviction> (global or
// per-layer scope) and, after each record, prefetches the predicted experts of the next layer
// whose probability is at least `threshold` (at most as many as the record had experts, most
// likely first: prefetch_candidates) into the cache of that layer: recommended_eviction::expect(cell, p), then
// expert_cache::prefetch(cell). A prefetched cell that is then accessed is a hit; prefetch loads
// are counted in cache_sim_result::prefetch_loads and bytes_loaded = (misses + prefetch_loads) x
// cell_bytes. A prefetch issued after record r is assumed to arrive before record r + 1 (one
// layer's compute hides one layer's loads): an access to a prefetched cell is a hit, and only a
// demand miss is a stall (cache_sim_result::stalls). Like simulate_cache for recommended_eviction,
// the record being replayed is protected (serves_record), and a prefetch issued after it does not
// evict its cells either (they are still computing); in per-layer scope a prefetch into another
// layer's cache may evict any of its cells. Pinned cells and
// protect_batch are not supported here (errc::invalid_argument).

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "moeroute/cache/expert_cache.hpp"
#include "moeroute/cache/recommended.hpp"
#include "moeroute/cache/simulate.hpp"
#include "moeroute/error.hpp"
#include "moeroute/io/routing_trace.hpp"

namespace moeroute {

/// Online cross-layer co-activation predictor; contract at the top of prefetch.hpp.
class coactivation_predictor {
 public:
  coactivation_predictor() = default;
  coactivation_predictor(int num_layers, int num_experts) { reset(num_layers, num_experts); }

  void reset(int num_layers, int num_experts) {
    MOEROUTE_CHECK(num_layers >= 0 && num_experts >= 0, errc::invalid_argument,
                   "coactivation_predictor: negative shape ", num_layers, " x ", num_experts);
    const auto cells = static_cast<std::uint64_t>(num_layers) * static_cast<std::uint64_t>(num_experts);
    MOEROUTE_CHECK(cells * static_cast<std::uint64_t>(num_experts) <= (std::uint64_t{1} << 28),
                   errc::invalid_argument, "coactivation_predictor: ", num_layers, " layers x ",
                   num_experts, " experts need more than 2^28 counters");
    L_ = num_layers;
    E_ = num_experts;
    co_.assign(static_cast<std::size_t>(cells) * static_cast<std::size_t>(E_), 0);
    n_.assign(static_cast<std::size_t>(cells), 0);
    next_.assign(static_cast<std::size_t>(L_), -1);
    prev_layer_ = -1;
    prev_.clear();
  }
  int num_layers() const noexcept { return L_; }
  int num_experts() const noexcept { return E_; }

  /// One record, in inference order. Ids outside the shape are errc::invalid_argument.
  void observe(int layer, const std::int32_t* experts, std::size_t n) {
    check(layer, experts, n);
    if (prev_layer_ >= 0) {
      next_[static_cast<std::size_t>(prev_layer_)] = layer;
      if (prev_layer_ != layer)
        for (const std::int32_t a : prev_) {
          const std::size_t ac = cell(prev_layer_, a);
          ++n_[ac];
          for (std::size_t i = 0; i < n; ++i) ++co_[ac * static_cast<std::size_t>(E_) + static_cast<std::size_t>(experts[i])];
        }
    }
    prev_layer_ = layer;
    prev_.assign(experts, experts + n);
  }
  /// The expected next layer and its experts' probabilities (see the contract).
  int predict(int layer, const std::int32_t* experts, std::size_t n,
              std::vector<std::pair<std::int32_t, double>>& out) const {
    check(layer, experts, n);
    out.clear();
    const int nl = next_[static_cast<std::size_t>(layer)];
    if (nl < 0 || n == 0) return nl;
    for (std::int32_t b = 0; b < E_; ++b) {
      double p = 0.0;
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t ac = cell(layer, experts[i]);
        if (n_[ac]) p += static_cast<double>(co_[ac * static_cast<std::size_t>(E_) + static_cast<std::size_t>(b)]) /
                         static_cast<double>(n_[ac]);
      }
      p /= static_cast<double>(n);
      if (p > 0.0) out.emplace_back(b, p);
    }
    std::sort(out.begin(), out.end(), [](const auto& x, const auto& y) {
      return x.second > y.second || (x.second == y.second && x.first < y.first);
    });
    return nl;
  }

  /// predict(), then the experts with p >= threshold, at most max_count, most likely first.
  int prefetch_candidates(int layer, const std::int32_t* experts, std::size_t n, double threshold,
                          std::size_t max_count, std::vector<std::pair<std::int32_t, double>>& out) const {
    const int nl = predict(layer, experts, n, out);
    std::size_t keep = 0;
    while (keep < out.size() && keep < max_count && out[keep].second >= threshold) ++keep;
    out.resize(keep);
    return nl;
  }

 private:
  std::size_t cell(int l, std::int32_t e) const {
    return static_cast<std::size_t>(l) * static_cast<std::size_t>(E_) + static_cast<std::size_t>(e);
  }
  void check(int layer, const std::int32_t* experts, std::size_t n) const {
    MOEROUTE_CHECK(layer >= 0 && layer < L_, errc::invalid_argument, "coactivation_predictor: layer ",
                   layer, " outside [0, ", L_, ")");
    for (std::size_t i = 0; i < n; ++i)
      MOEROUTE_CHECK(experts[i] >= 0 && experts[i] < E_, errc::invalid_argument,
                     "coactivation_predictor: expert ", experts[i], " outside [0, ", E_, ")");
  }
  int L_ = 0, E_ = 0;
  std::vector<std::uint32_t> co_, n_;
  std::vector<int> next_;
  int prev_layer_ = -1;
  std::vector<std::int32_t> prev_;
};

/// Default prefetch threshold of simulate_cache_prefetch and `recommended-prefetch`.
inline constexpr double default_prefetch_threshold = 0.5;

/// recommended_eviction plus co-activation prefetch, at each capacity (contract at the top).
inline std::vector<cache_sim_result> simulate_cache_prefetch(const routing_trace& t,
                                                             const std::vector<std::size_t>& capacities,
                                                             const cache_sim_options& o = {},
                                                             double threshold = default_prefetch_threshold) {
  MOEROUTE_CHECK(o.pinned.count() == 0, errc::invalid_argument,
                 "prefetch simulation: pinned cells are not supported");
  MOEROUTE_CHECK(!o.protect_batch, errc::invalid_argument, "prefetch simulation: protect_batch is not supported");
  const int L = t.num_layers(), E = t.num_experts();
  MOEROUTE_CHECK(static_cast<std::uint64_t>(L) * static_cast<std::uint64_t>(E) <= max_cache_sim_cells,
                 errc::bad_input, "cache simulation: ", L, " layers x ", E, " experts = ",
                 static_cast<std::uint64_t>(L) * static_cast<std::uint64_t>(E),
                 " cells, more than the limit of ", max_cache_sim_cells,
                 " (the largest layer or expert id is implausible)");
  const bool global = o.scope == cache_scope::global;
  std::vector<cache_sim_result> out;
  std::vector<std::pair<std::int32_t, double>> pred;
  for (const std::size_t cap : capacities) {
    using cache_t = expert_cache<recommended_eviction>;
    std::vector<cache_t> caches;
    if (global)
      caches.emplace_back(L, E, std::min<std::size_t>(cap, static_cast<std::size_t>(L) * static_cast<std::size_t>(E)));
    else
      for (int l = 0; l < L; ++l) caches.emplace_back(1, E, std::min<std::size_t>(cap, static_cast<std::size_t>(E)));
    auto cache_of = [&](int layer) -> cache_t& { return caches[global ? 0 : static_cast<std::size_t>(layer)]; };
    auto cell_of = [&](int layer, std::int32_t e) {
      return static_cast<std::uint32_t>((global ? layer * E : 0) + e);
    };
    coactivation_predictor predictor(L, E);
    for (std::size_t r = 0; r < t.size(); ++r) {
      if (r == o.count_from_record)
        for (auto& c : caches) c.reset_stats();
      const int layer = t.layer[r];
      const std::int32_t* ex = t.experts.data() + t.offsets[r];
      const std::size_t n = t.offsets[r + 1] - t.offsets[r];
      if (n == 0) continue;
      auto& cache = cache_of(layer);
      cache.begin_batch();
      for (std::size_t i = 0; i < n; ++i) cache.protect(cell_of(layer, ex[i]));
      for (std::size_t i = 0; i < n; ++i) cache.access(cell_of(layer, ex[i]));
      predictor.observe(layer, ex, n);
      const int nl = predictor.prefetch_candidates(layer, ex, n, threshold, n, pred);
      if (nl < 0) continue;
      auto& target = cache_of(nl);
      if (&target != &cache) target.begin_batch();  // another layer's cache: its last record is done
      for (const auto& [b, p] : pred) {
        const std::uint32_t c = cell_of(nl, b);
        target.eviction().expect(c, p);
        target.prefetch(c);
      }
    }
    cache_sim_result res;
    res.capacity = cap;
    if (o.count_from_record >= t.size())
      for (auto& c : caches) c.reset_stats();
    for (const auto& c : caches) {
      res.accesses += c.stats().total.accesses;
      res.hits += c.stats().total.hits;
      res.misses += c.stats().total.misses;
      res.evictions += c.stats().total.evictions;
      res.prefetch_loads += c.prefetch_loads();
    }
    res.bytes_loaded = (res.misses + res.prefetch_loads) * o.cell_bytes;
    out.push_back(res);
  }
  return out;
}

}  // namespace moeroute
