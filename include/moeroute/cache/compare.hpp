#pragma once
// Policy comparison on a trace: total loads (misses + prefetch loads) and stalls (demand misses)
// of each policy at capacities given as a share of the cells, over the whole trace and over its
// held-out second half, with the share of the LRU-to-Belady gap each policy closes.
//
// Cells: global scope = layers present in the trace x experts; per-layer scope = experts (each
// layer's cache). capacity = max(1, round(percent / 100 x cells)). Held out: the trace is replayed
// from its start and only the records from size() / 2 on are counted (cache_sim_options::
// count_from_record), so a policy tuned on the first half is judged on the second.
// gap closure = (LRU - x) / (LRU - Belady), in loads or in stalls; NaN when LRU == Belady. Belady's
// misses bound the loads of any policy, prefetching or not, from below.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "moeroute/cache/prefetch.hpp"
#include "moeroute/cache/simulate.hpp"
#include "moeroute/io/routing_trace.hpp"

namespace moeroute {

/// Policies of the comparison, in table order: the simulate_cache_named names plus
/// "recommended-prefetch" (simulate_cache_prefetch).
inline const std::vector<std::string>& cache_compare_policies() {
  static const std::vector<std::string> names{"lru",  "fifo",        "lfu",         "layer-cycle",          "lfru",
                                              "least-stale", "recommended", "recommended-prefetch", "belady"};
  return names;
}

/// simulate_cache_named, plus "recommended-prefetch".
inline std::vector<cache_sim_result> simulate_cache_any(const std::string& policy, const routing_trace& t,
                                                        const std::vector<std::size_t>& capacities,
                                                        const cache_sim_options& o = {}) {
  if (policy == "recommended-prefetch") return simulate_cache_prefetch(t, capacities, o);
  return simulate_cache_named(policy, t, capacities, o);
}

/// (lru - x) / (lru - belady); NaN when lru == belady.
inline double cache_gap_closure(std::uint64_t lru, std::uint64_t x, std::uint64_t belady) noexcept {
  if (lru == belady) return std::numeric_limits<double>::quiet_NaN();
  return (static_cast<double>(lru) - static_cast<double>(x)) / (static_cast<double>(lru) - static_cast<double>(belady));
}

/// The cells a percentage refers to (see the top of compare.hpp).
inline std::size_t cache_compare_cells(const routing_trace& t, cache_scope scope) {
  const std::set<std::int32_t> layers(t.layer.begin(), t.layer.end());
  const auto E = static_cast<std::size_t>(t.num_experts());
  return scope == cache_scope::global ? layers.size() * E : E;
}
inline std::size_t cache_compare_capacity(std::size_t cells, double percent) {
  const auto c = static_cast<std::size_t>(std::llround(percent / 100.0 * static_cast<double>(cells)));
  return c < 1 ? 1 : c;
}

/// The first n records of t (all of them when n >= t.size()).
inline routing_trace cache_trace_head(const routing_trace& t, std::size_t n) {
  n = std::min(n, t.size());
  routing_trace h;
  h.layer.assign(t.layer.begin(), t.layer.begin() + static_cast<std::ptrdiff_t>(n));
  h.token.assign(t.token.begin(), t.token.begin() + static_cast<std::ptrdiff_t>(std::min(n, t.token.size())));
  h.offsets.assign(t.offsets.begin(), t.offsets.begin() + static_cast<std::ptrdiff_t>(n + 1));
  h.experts.assign(t.experts.begin(), t.experts.begin() + static_cast<std::ptrdiff_t>(t.offsets[n]));
  h.has_weights = t.has_weights;
  if (t.has_weights) h.weights.assign(t.weights.begin(), t.weights.begin() + static_cast<std::ptrdiff_t>(t.offsets[n]));
  return h;
}

/// One policy at one capacity: whole trace, first half alone, second half (held out).
struct cache_compare_entry {
  cache_sim_result full, held_out, first_half;
};
/// One capacity: entries in cache_compare_policies() order.
struct cache_compare_row {
  double percent = 0;
  std::size_t capacity = 0;
  std::vector<cache_compare_entry> entries;
};

/// Every policy of cache_compare_policies() at each percentage of the cells.
inline std::vector<cache_compare_row> cache_compare(const routing_trace& t, cache_scope scope,
                                                    const std::vector<double>& percents) {
  const std::size_t cells = cache_compare_cells(t, scope);
  std::vector<std::size_t> caps;
  for (double p : percents) caps.push_back(cache_compare_capacity(cells, p));
  cache_sim_options full, half;
  full.scope = half.scope = scope;
  half.count_from_record = t.size() / 2;
  const routing_trace head = cache_trace_head(t, t.size() / 2);
  std::vector<cache_compare_row> rows(caps.size());
  for (std::size_t i = 0; i < caps.size(); ++i) {
    rows[i].percent = percents[i];
    rows[i].capacity = caps[i];
  }
  for (const auto& name : cache_compare_policies()) {
    const auto f = simulate_cache_any(name, t, caps, full);
    const auto h = simulate_cache_any(name, t, caps, half);
    const auto a = simulate_cache_any(name, head, caps, full);
    for (std::size_t i = 0; i < caps.size(); ++i) rows[i].entries.push_back({f[i], h[i], a[i]});
  }
  return rows;
}

/// Largest (policy loads - LRU loads) over every capacity from lo to hi percent of the cells in
/// steps of `step` percent (negative: the policy never loads more than LRU there); `at` gets the
/// capacity where it occurs. part 0: whole trace; 1: first half alone; 2: second half (held out).
/// Capacities are shares of the whole trace's cells in every part.
inline std::int64_t cache_compare_worst_vs_lru(const std::string& policy, const routing_trace& t, cache_scope scope,
                                               double lo, double hi, double step, std::size_t& at, int part = 0) {
  const std::size_t cells = cache_compare_cells(t, scope);
  std::vector<std::size_t> caps;
  for (double p = lo; p <= hi + 1e-9; p += step) {
    const std::size_t c = cache_compare_capacity(cells, p);
    if (caps.empty() || caps.back() != c) caps.push_back(c);
  }
  cache_sim_options o;
  o.scope = scope;
  if (part == 2) o.count_from_record = t.size() / 2;
  const routing_trace head = part == 1 ? cache_trace_head(t, t.size() / 2) : routing_trace{};
  const routing_trace& r = part == 1 ? head : t;
  const auto lru = simulate_cache_named("lru", r, caps, o);
  const auto mine = simulate_cache_any(policy, r, caps, o);
  std::int64_t worst = std::numeric_limits<std::int64_t>::min();
  for (std::size_t i = 0; i < caps.size(); ++i) {
    const auto d = static_cast<std::int64_t>(mine[i].loads()) - static_cast<std::int64_t>(lru[i].loads());
    if (d > worst) {
      worst = d;
      at = caps[i];
    }
  }
  return worst;
}

}  // namespace moeroute
