#pragma once
// Trace-driven expert-cache simulation.
//
// Replay (simulate_cache): every access of a routing trace, in file order and, inside a record, in
// listed order, goes through an expert_cache<Eviction> (demand paging: a miss loads the cell and
// evicts one when full; loading expert a of a record [a, b] may evict b unless protect_batch).
// A policy that declares serves_record (eviction.hpp) is served as expert_cache::request serves an
// engine: no cell of the record being replayed is evicted while it runs, as with protect_batch.
// Scope global: one cache of `capacity` cells over all (layer, expert) cells; per_layer: each
// layer its own cache of `capacity` cells. The shape is inferred from the trace (1 + the largest
// layer and expert id), widened to cover the pinned set. Pinned cells are resident from the start,
// never evicted, count in the capacity (per_layer: their layer's) and their accesses are hits;
// more pinned cells than capacity is errc::bad_input. bytes_loaded = (misses + prefetch_loads) x
// cell_bytes (prefetch_loads: simulate_cache_prefetch in prefetch.hpp; 0 here). Each record is one
// batch of the cache (expert_cache::begin_batch), so policies see record boundaries.
// count_from_record: records before it are replayed (they warm the cache) but not counted, for
// held-out halves.
//
// Belady's OPT is belady_eviction fed with exact next-use times (computed here).
// lru_hit_curve: Mattson's stack-distance algorithm, the LRU hits at every capacity in one pass
// (O(n log n)); opt_hit_curve: Belady replayed at every capacity.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "moeroute/cache/anchors.hpp"
#include "moeroute/cache/eviction.hpp"
#include "moeroute/cache/expert_cache.hpp"
#include "moeroute/cache/policies.hpp"
#include "moeroute/cache/recommended.hpp"
#include "moeroute/error.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/residency/residency_set.hpp"

namespace moeroute {

enum class cache_scope { global, per_layer };

inline const char* cache_scope_name(cache_scope s) noexcept {
  return s == cache_scope::global ? "global" : "per-layer";
}

/// Options of a simulation.
struct cache_sim_options {
  cache_scope scope = cache_scope::global;
  residency_set pinned;          ///< pinned cells (any shape; empty = none)
  std::uint64_t cell_bytes = 0;  ///< bytes of one cell, for bytes_loaded
  bool protect_batch = false;    ///< never evict a cell of the record being replayed
  std::size_t count_from_record = 0;  ///< count only accesses of records from this index on
};

/// Counters of one simulated capacity.
struct cache_sim_result {
  std::size_t capacity = 0;
  std::uint64_t accesses = 0, hits = 0, misses = 0, evictions = 0, bytes_loaded = 0;
  std::uint64_t prefetch_loads = 0;  ///< cells loaded ahead of use (prefetching policies only)
  /// Every cell brought into the cache: demand misses plus prefetch loads. Belady's misses bound
  /// it from below for any policy, prefetching or not.
  std::uint64_t loads() const noexcept { return misses + prefetch_loads; }
  /// Accesses that wait for a load: every demand miss. A prefetch issued after record r is in time
  /// for every access from record r + 1 on (one record of compute, in batch-1 decoding one layer,
  /// hides one load), so an access to a prefetched cell is a hit, never a stall.
  std::uint64_t stalls() const noexcept { return misses; }
  double hit_rate() const noexcept {
    return accesses ? static_cast<double>(hits) / static_cast<double>(accesses) : 0.0;
  }
};

/// Hits at every capacity 0 .. hits.size()-1. Capacities below min_capacity (fewer slots than
/// pinned cells) are not valid and hold 0.
struct cache_hit_curve {
  std::size_t min_capacity = 0;
  std::uint64_t accesses = 0;
  std::vector<std::uint64_t> hits;
  double hit_rate(std::size_t capacity) const {
    MOEROUTE_CHECK(capacity < hits.size() && capacity >= min_capacity, errc::invalid_argument,
                   "cache_hit_curve: capacity ", capacity, " outside [", min_capacity, ", ",
                   hits.size(), ")");
    return accesses ? static_cast<double>(hits[capacity]) / static_cast<double>(accesses) : 0.0;
  }
};

/// Most (layer x expert) cells a simulation accepts (dense per-cell tables are allocated).
inline constexpr std::uint64_t max_cache_sim_cells = std::uint64_t{1} << 22;

namespace detail {

/// The trace as the simulator sees it: shape, cells per access, the streams (one per cache).
struct cache_sim_plan {
  int num_layers = 0, num_experts = 0;
  residency_set pinned;  // num_layers x num_experts
  // Per stream (global: 1 stream; per_layer: one per layer): accesses in order, as the stream's
  // local cell index, and each access's next use in stream-local time (no_next_use: never).
  struct stream {
    std::vector<std::uint32_t> cells;
    std::vector<std::uint64_t> next_use;
    std::vector<std::uint32_t> record_end;  // exclusive end (local index) of each record with accesses
    std::vector<std::uint8_t> pinned;       // per local cell
    std::size_t pinned_count = 0;
    std::size_t count_start = 0;  // local index of the first counted access (count_from_record)
    std::uint32_t num_cells = 0;
    int cache_layers = 1;  // cache shape: cache_layers x (num_cells / cache_layers)
  };
  std::vector<stream> streams;
  std::uint64_t accesses = 0;
};

inline cache_sim_plan cache_make_plan(const routing_trace& t, const cache_sim_options& o, bool need_future) {
  cache_sim_plan p;
  p.num_layers = std::max(t.num_layers(), o.pinned.num_layers());
  p.num_experts = std::max(t.num_experts(), o.pinned.num_experts());
  const auto cells = static_cast<std::uint64_t>(p.num_layers) * static_cast<std::uint64_t>(p.num_experts);
  MOEROUTE_CHECK(cells <= max_cache_sim_cells, errc::bad_input, "cache simulation: ", p.num_layers,
                 " layers x ", p.num_experts, " experts = ", cells, " cells, more than the limit of ",
                 max_cache_sim_cells, " (the largest layer or expert id is implausible)");
  p.pinned = residency_set(p.num_layers, p.num_experts);
  o.pinned.for_each([&](int l, int e) { p.pinned.insert(l, e); });
  const auto L = static_cast<std::size_t>(p.num_layers), E = static_cast<std::size_t>(p.num_experts);
  const bool global = o.scope == cache_scope::global;
  p.streams.resize(global ? 1 : L);
  for (std::size_t s = 0; s < p.streams.size(); ++s) {
    auto& st = p.streams[s];
    st.num_cells = static_cast<std::uint32_t>(global ? L * E : E);
    st.cache_layers = global ? p.num_layers : 1;
    st.pinned.assign(st.num_cells, 0);
  }
  p.pinned.for_each([&](int l, int e) {
    auto& st = p.streams[global ? 0 : static_cast<std::size_t>(l)];
    st.pinned[global ? static_cast<std::size_t>(l) * E + static_cast<std::size_t>(e) : static_cast<std::size_t>(e)] = 1;
    ++st.pinned_count;
  });
  for (std::size_t r = 0; r < t.size(); ++r) {
    if (r == o.count_from_record)
      for (auto& s : p.streams) s.count_start = s.cells.size();
    const auto l = static_cast<std::size_t>(t.layer[r]);
    auto& st = p.streams[global ? 0 : l];
    for (std::uint32_t i = t.offsets[r]; i < t.offsets[r + 1]; ++i) {
      const auto e = static_cast<std::size_t>(t.experts[i]);
      st.cells.push_back(static_cast<std::uint32_t>(global ? l * E + e : e));
    }
    if (t.offsets[r + 1] > t.offsets[r]) st.record_end.push_back(static_cast<std::uint32_t>(st.cells.size()));
  }
  if (o.count_from_record >= t.size())
    for (auto& s : p.streams) s.count_start = s.cells.size();
  p.accesses = t.num_accesses();
  if (need_future)
    for (auto& st : p.streams) {
      st.next_use.assign(st.cells.size(), no_next_use);
      std::vector<std::uint64_t> seen(st.num_cells, no_next_use);
      for (std::size_t i = st.cells.size(); i-- > 0;) {
        st.next_use[i] = seen[st.cells[i]];
        seen[st.cells[i]] = i;
      }
    }
  return p;
}

inline void cache_check_pins(const cache_sim_plan& p, cache_scope scope, std::size_t capacity) {
  if (scope == cache_scope::global) {
    MOEROUTE_CHECK(p.streams[0].pinned_count <= capacity, errc::bad_input, p.streams[0].pinned_count,
                   " pinned cells do not fit in capacity ", capacity);
  } else {
    for (std::size_t l = 0; l < p.streams.size(); ++l)
      MOEROUTE_CHECK(p.streams[l].pinned_count <= capacity, errc::bad_input, "layer ", l, " has ",
                     p.streams[l].pinned_count, " pinned cells, more than the per-layer capacity ",
                     capacity);
  }
}

template <class Eviction>
cache_sim_result cache_run_plan(const cache_sim_plan& p, std::size_t capacity, const cache_sim_options& o) {
  cache_check_pins(p, o.scope, capacity);
  cache_sim_result res;
  res.capacity = capacity;
  for (const auto& st : p.streams) {
    if (st.cells.empty()) continue;
    // Global: the model's L x E shape; per layer: 1 x E (the layer's experts).
    const int Lc = st.cache_layers, Ec = static_cast<int>(st.num_cells) / std::max(Lc, 1);
    residency_set pins(Lc, Ec);
    for (std::uint32_t c = 0; c < st.num_cells; ++c)
      if (st.pinned[c]) pins.insert(static_cast<int>(c) / Ec, static_cast<int>(c) % Ec);
    expert_cache<Eviction> cache(Lc, Ec, std::min<std::size_t>(capacity, st.num_cells), pins);
    std::size_t i = 0;
    for (const std::uint32_t end : st.record_end) {
      cache.begin_batch();
      if (o.protect_batch || eviction_serves_record_v<Eviction>)
        for (std::size_t j = i; j < end; ++j) cache.protect(st.cells[j]);
      for (; i < end; ++i) {
        if (i == st.count_start) cache.reset_stats();
        if constexpr (Eviction::needs_future)
          cache.access(st.cells[i], st.next_use[i]);
        else
          cache.access(st.cells[i]);
      }
    }
    if (st.count_start >= st.cells.size()) cache.reset_stats();
    const auto& c = cache.stats().total;
    res.accesses += c.accesses;
    res.hits += c.hits;
    res.misses += c.misses;
    res.evictions += c.evictions;
  }
  MOEROUTE_CHECK(o.cell_bytes == 0 || res.loads() <= UINT64_MAX / o.cell_bytes, errc::bad_input, "cell_bytes ",
                 o.cell_bytes, " x ", res.loads(), " loads overflows bytes_loaded (64 bits)");
  res.bytes_loaded = res.loads() * o.cell_bytes;
  return res;
}

// Fenwick tree over positions (counts).
struct cache_fenwick {
  std::vector<std::int32_t> t;
  explicit cache_fenwick(std::size_t n) : t(n + 1, 0) {}
  void add(std::size_t i, std::int32_t v) {
    for (++i; i < t.size(); i += i & (~i + 1)) t[i] += v;
  }
  std::int64_t prefix(std::size_t i) const {  // sum of [0, i)
    std::int64_t s = 0;
    for (; i > 0; i -= i & (~i + 1)) s += t[i];
    return s;
  }
};

}  // namespace detail

/// Replays trace t through a cache of `capacity` cells with policy Eviction.
template <class Eviction>
cache_sim_result simulate_cache(const routing_trace& t, std::size_t capacity, const cache_sim_options& o = {}) {
  const auto plan = detail::cache_make_plan(t, o, Eviction::needs_future);
  return detail::cache_run_plan<Eviction>(plan, capacity, o);
}

/// Replays t once per capacity (results in the order given).
template <class Eviction>
std::vector<cache_sim_result> simulate_cache(const routing_trace& t, const std::vector<std::size_t>& capacities,
                                             const cache_sim_options& o = {}) {
  const auto plan = detail::cache_make_plan(t, o, Eviction::needs_future);
  std::vector<cache_sim_result> out;
  for (auto c : capacities) detail::cache_check_pins(plan, o.scope, c);
  for (auto c : capacities) out.push_back(detail::cache_run_plan<Eviction>(plan, c, o));
  return out;
}

/// Belady's OPT at one capacity.
inline cache_sim_result simulate_belady(const routing_trace& t, std::size_t capacity, const cache_sim_options& o = {}) {
  return simulate_cache<belady_eviction>(t, capacity, o);
}

/// The most cells a cache of this trace can usefully hold (global: pinned + distinct unpinned cells
/// accessed; per_layer: the largest such count of a layer). Hit rates are flat beyond it.
inline std::size_t cache_useful_capacity(const routing_trace& t, const cache_sim_options& o = {}) {
  const auto p = detail::cache_make_plan(t, o, false);
  std::size_t best = 0;
  for (const auto& st : p.streams) {
    std::vector<std::uint8_t> seen(st.num_cells, 0);
    std::size_t n = st.pinned_count;
    for (auto c : st.cells)
      if (!seen[c] && !st.pinned[c]) {
        seen[c] = 1;
        ++n;
      }
    best = std::max(best, n);
  }
  return best;
}

/// LRU hits at every capacity 0..max_capacity in one pass (Mattson stack distances); the replay
/// is the one simulate_cache<lru_eviction> does without protect_batch.
inline cache_hit_curve lru_hit_curve(const routing_trace& t, std::size_t max_capacity, const cache_sim_options& o = {}) {
  const auto p = detail::cache_make_plan(t, o, false);
  cache_hit_curve curve;
  curve.accesses = p.accesses;
  curve.hits.assign(max_capacity + 1, 0);
  for (const auto& st : p.streams) curve.min_capacity = std::max(curve.min_capacity, st.pinned_count);
  for (const auto& st : p.streams) {
    if (st.cells.empty()) continue;
    // hist[d] = accesses with stack distance d (1-based) among unpinned cells.
    std::vector<std::uint64_t> hist(st.num_cells + 2, 0);
    std::uint64_t pinned_hits = 0;
    std::vector<std::uint64_t> last(st.num_cells, no_next_use);
    detail::cache_fenwick fw(st.cells.size());
    for (std::size_t i = 0; i < st.cells.size(); ++i) {
      const std::uint32_t c = st.cells[i];
      if (st.pinned[c]) {
        ++pinned_hits;
        continue;
      }
      if (last[c] != no_next_use) {
        const auto prev = static_cast<std::size_t>(last[c]);
        const auto d = 1 + fw.prefix(i) - fw.prefix(prev + 1);
        ++hist[static_cast<std::size_t>(d)];
        fw.add(prev, -1);
      }
      fw.add(i, 1);
      last[c] = i;
    }
    std::uint64_t cum = 0;
    std::size_t d = 0;
    for (std::size_t cap = st.pinned_count; cap <= max_capacity; ++cap) {
      const std::size_t free_slots = cap - st.pinned_count;
      while (d < free_slots && d + 1 < hist.size()) cum += hist[++d];
      curve.hits[cap] += pinned_hits + cum;
    }
  }
  for (std::size_t cap = 0; cap < curve.min_capacity && cap <= max_capacity; ++cap) curve.hits[cap] = 0;
  return curve;
}

/// Belady (OPT) hits at every capacity min_capacity..max_capacity in one pass; the replay is the
/// one simulate_cache<belady_eviction> does without protect_batch. OPT is a stack algorithm
/// (Mattson et al. 1970): a cache of c free slots holds the top c cells of one stack ordered by
/// next use. On an access to cell x at depth d (absent: below the stack) x goes on top with its
/// new next use, and a carry (the old top) sinks through depths 1..d-1, leaving at each depth the
/// cell used sooner and carrying the later one, until it fills the slot x left. The access is a
/// hit for every capacity >= d. The stack is cut at max_capacity (deeper cells cannot change a
/// hit within it) and a carry that is never used again ends its scan at once, so the work is the
/// depths scanned: far below one replay per capacity.
inline cache_hit_curve opt_hit_curve(const routing_trace& t, std::size_t max_capacity, const cache_sim_options& o = {}) {
  const auto p = detail::cache_make_plan(t, o, true);
  cache_hit_curve curve;
  curve.accesses = p.accesses;
  curve.hits.assign(max_capacity + 1, 0);
  for (const auto& st : p.streams) curve.min_capacity = std::max(curve.min_capacity, st.pinned_count);
  for (const auto& st : p.streams) {
    if (st.cells.empty() || st.pinned_count > max_capacity) continue;
    const std::size_t D = std::min<std::size_t>(max_capacity - st.pinned_count, st.num_cells);
    std::vector<std::uint32_t> cell(D);
    std::vector<std::uint64_t> nxt(D);
    std::vector<std::int64_t> pos(st.num_cells, -1);
    std::vector<std::uint64_t> hist(D + 1, 0);  // hist[d]: hits at depth d (1-based)
    std::uint64_t pinned_hits = 0;
    std::size_t size = 0;
    for (std::size_t i = 0; i < st.cells.size(); ++i) {
      const std::uint32_t x = st.cells[i];
      if (st.pinned[x]) {
        ++pinned_hits;
        continue;
      }
      const std::int64_t d = pos[x];
      if (d >= 0) ++hist[static_cast<std::size_t>(d) + 1];
      if (D == 0) continue;
      if (d == 0) {
        nxt[0] = st.next_use[i];
        continue;
      }
      // the slot the carry ends in: the one x left, else a new bottom slot, else none (D)
      const std::size_t end = d > 0 ? static_cast<std::size_t>(d) : size < D ? size++ : D;
      std::uint32_t carry = cell[0];
      std::uint64_t carry_next = nxt[0];
      const bool had_top = size > 1 || d > 0;
      cell[0] = x;
      nxt[0] = st.next_use[i];
      pos[x] = 0;
      if (!had_top) continue;  // x was pushed on an empty stack
      for (std::size_t j = 1; j < end && carry_next != no_next_use; ++j)
        if (nxt[j] > carry_next) {  // s[j] is used later: it sinks, the carry stays
          std::swap(cell[j], carry);
          std::swap(nxt[j], carry_next);
          pos[cell[j]] = static_cast<std::int64_t>(j);
        }
      if (end < D) {
        cell[end] = carry;
        nxt[end] = carry_next;
        pos[carry] = static_cast<std::int64_t>(end);
      } else {
        pos[carry] = -1;
      }
    }
    std::uint64_t cum = 0;
    for (std::size_t cap = st.pinned_count; cap <= max_capacity; ++cap) {
      const std::size_t free_slots = cap - st.pinned_count;
      if (free_slots >= 1 && free_slots <= D) cum += hist[free_slots];
      curve.hits[cap] += pinned_hits + cum;
    }
  }
  for (std::size_t cap = 0; cap < curve.min_capacity && cap <= max_capacity; ++cap) curve.hits[cap] = 0;
  return curve;
}

/// Names accepted by simulate_cache_named, in the order the CLI lists them.
inline const std::vector<std::string>& cache_policy_names() { return eviction_policy_names(); }

/// simulate_cache with the policy chosen by name (cache_policy_names()); an unknown name is
/// errc::invalid_argument.
inline std::vector<cache_sim_result> simulate_cache_named(const std::string& policy, const routing_trace& t,
                                                          const std::vector<std::size_t>& capacities,
                                                          const cache_sim_options& o = {}) {
  return visit_eviction(policy, [&](auto tag) {
    return simulate_cache<typename decltype(tag)::type>(t, capacities, o);
  });
}

}  // namespace moeroute
