#pragma once
// Eviction policies for moeroute::expert_cache, passed as template parameters.
//
// Contract of an Eviction policy P (default-constructible, with these public members):
//   static constexpr const char* name;          short name ("lru", "fifo", ...)
//   static constexpr bool needs_future;         true: access_info::next_use must be exact (Belady)
//   void reset(std::uint32_t num_cells, std::uint32_t num_layers);
//       forget everything; cells are 0 .. num_cells-1, layers (access_info::layer) 0 .. num_layers-1
//   void on_load(std::uint32_t cell, const access_info& a);  cell became resident on access a
//   void on_hit(std::uint32_t cell, const access_info& a);   a resident cell was accessed
//   void on_miss(std::uint32_t cell, const access_info& a);  access a to a non-resident cell;
//       called before the victim() calls that make room for it (and before on_load)
//   void on_evict(std::uint32_t cell);          a resident cell left the cache
//   template <class Skip> std::uint32_t victim(Skip&& skip);
//       the resident cell the policy evicts next among those with skip(cell) == false, or
//       no_cell when there is none; it does not remove it (the cache then calls on_evict).
// Optional: static constexpr bool serves_record = true — the policy is served one record at a time,
// the way expert_cache::request serves an engine: the router's choice for the record is known
// before any of its experts load, so the simulator never evicts a cell of the record being
// replayed for it (as with cache_sim_options::protect_batch). Absent or false: access by access.
// The cache never passes pinned cells to a policy. Calls are O(1) or O(log n) in the number of
// cells unless a policy says otherwise, and victim() also walks past the cells skip rejects. No call allocates after
// reset() except where noted (lfu grows its frequency table when a count exceeds all before).
// Policies keep their per-cell state in dense arrays indexed by cell (layer x E + expert).

#include <cstddef>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "moeroute/error.hpp"

namespace moeroute {

/// "No cell" / "no slot" marker.
inline constexpr std::uint32_t no_cell = std::numeric_limits<std::uint32_t>::max();
/// next_use value of an access whose cell is never accessed again (or when the future is unknown).
inline constexpr std::uint64_t no_next_use = std::numeric_limits<std::uint64_t>::max();

/// What a policy learns about one access.
struct access_info {
  std::uint64_t time = 0;              ///< access counter of the cache (0, 1, 2, ...)
  std::uint64_t next_use = no_next_use;  ///< time of the next access to the same cell, if known
  std::int32_t layer = 0;              ///< layer of the accessed cell
  std::uint64_t record = 0;            ///< batch counter of the cache (expert_cache::begin_batch; one
                                       ///< per request() and per replayed trace record)
};

namespace detail {
/// Intrusive circular doubly-linked list over cells 0..n-1 with one sentinel node n.
struct cache_intrusive_list {
  std::vector<std::uint32_t> prev, next;
  std::uint32_t sentinel = 0;

  void reset(std::uint32_t n) {
    prev.assign(static_cast<std::size_t>(n) + 1, n);
    next.assign(static_cast<std::size_t>(n) + 1, n);
    sentinel = n;
  }
  void push_front(std::uint32_t c) { insert_after(sentinel, c); }
  void insert_after(std::uint32_t at, std::uint32_t c) {
    const std::uint32_t nx = next[at];
    prev[c] = at;
    next[c] = nx;
    next[at] = c;
    prev[nx] = c;
  }
  void unlink(std::uint32_t c) {
    next[prev[c]] = next[c];
    prev[next[c]] = prev[c];
  }
  /// Oldest-first walk: the last element not rejected by skip, or no_cell.
  template <class Skip>
  std::uint32_t back_not(Skip&& skip) const {
    for (std::uint32_t c = prev[sentinel]; c != sentinel; c = prev[c])
      if (!skip(c)) return c;
    return no_cell;
  }
};

/// Indexed binary heap over cells; top() is the cell with the largest key (ties: larger cell).
struct cache_indexed_heap {
  std::vector<std::uint32_t> heap;  // cells
  std::vector<std::uint32_t> pos;   // position of a cell in heap, or no_cell
  std::vector<std::uint64_t> key;

  void reset(std::uint32_t n) {
    heap.clear();
    heap.reserve(n);
    pos.assign(n, no_cell);
    key.assign(n, 0);
  }
  bool above(std::uint32_t a, std::uint32_t b) const {
    return key[a] > key[b] || (key[a] == key[b] && a > b);
  }
  void place(std::size_t i, std::uint32_t c) {
    heap[i] = c;
    pos[c] = static_cast<std::uint32_t>(i);
  }
  void sift_up(std::size_t i) {
    const std::uint32_t c = heap[i];
    while (i > 0) {
      const std::size_t p = (i - 1) / 2;
      if (!above(c, heap[p])) break;
      place(i, heap[p]);
      i = p;
    }
    place(i, c);
  }
  void sift_down(std::size_t i) {
    const std::uint32_t c = heap[i];
    const std::size_t n = heap.size();
    for (;;) {
      std::size_t best = 2 * i + 1;
      if (best >= n) break;
      if (best + 1 < n && above(heap[best + 1], heap[best])) ++best;
      if (!above(heap[best], c)) break;
      place(i, heap[best]);
      i = best;
    }
    place(i, c);
  }
  void push(std::uint32_t c, std::uint64_t k) {
    key[c] = k;
    heap.push_back(c);
    sift_up(heap.size() - 1);
  }
  void update(std::uint32_t c, std::uint64_t k) {
    const std::uint64_t old = key[c];
    key[c] = k;
    if (k > old)
      sift_up(pos[c]);
    else
      sift_down(pos[c]);
  }
  void erase(std::uint32_t c) {
    const std::size_t i = pos[c];
    pos[c] = no_cell;
    const std::uint32_t last = heap.back();
    heap.pop_back();
    if (i < heap.size()) {
      place(i, last);
      sift_up(i);
      sift_down(pos[last]);
    }
  }
  /// The largest-key cell not rejected by skip (linear search only when the top is rejected).
  template <class Skip>
  std::uint32_t top_not(Skip&& skip) const {
    if (heap.empty()) return no_cell;
    if (!skip(heap[0])) return heap[0];
    std::uint32_t best = no_cell;
    for (std::uint32_t c : heap)
      if (!skip(c) && (best == no_cell || above(c, best))) best = c;
    return best;
  }
};
}  // namespace detail

/// LRU: evicts the least recently accessed resident cell.
struct lru_eviction {
  static constexpr const char* name = "lru";
  static constexpr bool needs_future = false;
  detail::cache_intrusive_list list;  ///< front = most recently accessed

  void reset(std::uint32_t num_cells, std::uint32_t = 1) { list.reset(num_cells); }
  void on_load(std::uint32_t c, const access_info&) { list.push_front(c); }
  void on_hit(std::uint32_t c, const access_info&) {
    list.unlink(c);
    list.push_front(c);
  }
  void on_miss(std::uint32_t, const access_info&) {}
  void on_evict(std::uint32_t c) { list.unlink(c); }
  template <class Skip>
  std::uint32_t victim(Skip&& skip) const {
    return list.back_not(skip);
  }
};

/// FIFO: evicts the resident cell loaded earliest; hits do not change the order.
struct fifo_eviction {
  static constexpr const char* name = "fifo";
  static constexpr bool needs_future = false;
  detail::cache_intrusive_list list;  ///< front = most recently loaded

  void reset(std::uint32_t num_cells, std::uint32_t = 1) { list.reset(num_cells); }
  void on_load(std::uint32_t c, const access_info&) { list.push_front(c); }
  void on_hit(std::uint32_t, const access_info&) {}
  void on_miss(std::uint32_t, const access_info&) {}
  void on_evict(std::uint32_t c) { list.unlink(c); }
  template <class Skip>
  std::uint32_t victim(Skip&& skip) const {
    return list.back_not(skip);
  }
};

/// LFU: evicts the resident cell with the fewest accesses since it was loaded (the loading access
/// counts as one); ties go to the least recently accessed. O(1) per call: one recency-ordered list
/// per access count (sentinel nodes after the cells), a lower bound on the smallest count in use.
struct lfu_eviction {
  static constexpr const char* name = "lfu";
  static constexpr bool needs_future = false;
  std::vector<std::uint32_t> prev, next;  ///< nodes 0..n-1 cells, n + f = sentinel of count f
  std::vector<std::uint32_t> count;       ///< accesses since loaded, per cell
  std::uint32_t n = 0;
  std::uint32_t min_count = 1;  ///< no resident cell has a smaller count
  std::uint32_t max_count = 0;  ///< sentinels exist for counts 0..max_count

  void reset(std::uint32_t num_cells, std::uint32_t = 1) {
    n = num_cells;
    prev.clear();
    next.clear();
    count.assign(num_cells, 0);
    prev.reserve(static_cast<std::size_t>(num_cells) + 64);
    next.reserve(static_cast<std::size_t>(num_cells) + 64);
    prev.resize(num_cells, 0);
    next.resize(num_cells, 0);
    max_count = 0;
    min_count = 1;
    add_sentinel();  // count 0, unused
    add_sentinel();  // count 1
  }
  void on_load(std::uint32_t c, const access_info&) {
    count[c] = 1;
    insert_front(1, c);
    min_count = 1;
  }
  void on_hit(std::uint32_t c, const access_info&) {
    const std::uint32_t f = count[c];
    unlink(c);
    if (f == std::numeric_limits<std::uint32_t>::max()) {  // saturated: stays in its list
      insert_front(f, c);
      return;
    }
    if (f + 1 > max_count) add_sentinel();
    count[c] = f + 1;
    insert_front(f + 1, c);
    if (f == min_count && empty(f)) min_count = f + 1;
  }
  void on_miss(std::uint32_t, const access_info&) {}
  void on_evict(std::uint32_t c) { unlink(c); }
  template <class Skip>
  std::uint32_t victim(Skip&& skip) {
    while (min_count < max_count && empty(min_count)) ++min_count;
    for (std::uint32_t f = min_count; f <= max_count; ++f) {
      const std::uint32_t s = n + f;
      for (std::uint32_t c = prev[s]; c != s; c = prev[c])
        if (!skip(c)) return c;
    }
    return no_cell;
  }

 private:
  void add_sentinel() {
    const std::uint32_t s = static_cast<std::uint32_t>(prev.size());
    prev.push_back(s);
    next.push_back(s);
    max_count = s - n;
  }
  bool empty(std::uint32_t f) const { return next[n + f] == n + f; }
  void insert_front(std::uint32_t f, std::uint32_t c) {
    const std::uint32_t s = n + f, nx = next[s];
    prev[c] = s;
    next[c] = nx;
    next[s] = c;
    prev[nx] = c;
  }
  void unlink(std::uint32_t c) {
    next[prev[c]] = next[c];
    prev[next[c]] = prev[c];
  }
};

/// Belady's OPT: evicts the resident cell whose next access is farthest away (never again =
/// infinitely far; ties among those: the larger cell index). Needs exact access_info::next_use
/// for every access (simulation only; see simulate.hpp).
struct belady_eviction {
  static constexpr const char* name = "belady";
  static constexpr bool needs_future = true;
  detail::cache_indexed_heap heap;  ///< key = next use

  void reset(std::uint32_t num_cells, std::uint32_t = 1) { heap.reset(num_cells); }
  void on_load(std::uint32_t c, const access_info& a) { heap.push(c, a.next_use); }
  void on_hit(std::uint32_t c, const access_info& a) { heap.update(c, a.next_use); }
  void on_miss(std::uint32_t, const access_info&) {}
  void on_evict(std::uint32_t c) { heap.erase(c); }
  template <class Skip>
  std::uint32_t victim(Skip&& skip) const {
    return heap.top_not(skip);
  }
};

/// layer-cycle (moeroute's own): built for the layer sweep of MoE inference, where LRU thrashes.
/// A forward pass visits layers in a cycle, so the layer visited most recently is the one needed
/// again last. The victim comes from the first layer, in order of most recent visit, that has an
/// evictable resident cell; the layer of the access being served is tried last. Within a layer,
/// cells not accessed during the layer's latest visit (a run of consecutive accesses to it) go
/// first; among those, the cell accessed fewest times since reset (counts survive eviction; ties:
/// least recently accessed). On batch-1 decoding this keeps the layers ahead of the sweep and the
/// layer's frequent experts resident; on batched traces (long runs of one layer) it behaves like
/// LRU across layers and like frequency inside the current one.
/// Cost: O(log E) per access; victim() walks the layers (O(L)) and takes the first evictable cell
/// of a layer from its ordered sets (O(1) plus the cells skipped).
struct layer_cycle_eviction {
  static constexpr const char* name = "layer-cycle";
  static constexpr bool needs_future = false;

  void reset(std::uint32_t num_cells, std::uint32_t layers = 1) {
    layers_ = layers;
    stale_.assign(layers, {});
    fresh_.assign(layers, {});
    layer_of_.assign(num_cells, 0);
    lprev_.assign(static_cast<std::size_t>(layers) + 1, no_cell);
    lnext_.assign(static_cast<std::size_t>(layers) + 1, no_cell);
    lprev_[layers] = lnext_[layers] = layers;
    count_.assign(num_cells, 0);
    last_.assign(num_cells, 0);
    current_ = incoming_ = -1;
  }
  void on_load(std::uint32_t c, const access_info& a) {
    layer_of_[c] = static_cast<std::uint32_t>(a.layer);
    touch(c, a);
  }
  void on_hit(std::uint32_t c, const access_info& a) {
    fresh_[layer_of_[c]].erase(key(c));
    stale_[layer_of_[c]].erase(key(c));
    touch(c, a);
  }
  void on_miss(std::uint32_t, const access_info& a) { incoming_ = a.layer; }
  void on_evict(std::uint32_t c) {
    fresh_[layer_of_[c]].erase(key(c));
    stale_[layer_of_[c]].erase(key(c));
  }
  template <class Skip>
  std::uint32_t victim(Skip&& skip) const {
    const std::int32_t own = incoming_ >= 0 ? incoming_ : current_;
    for (std::uint32_t l = lnext_[layers_]; l != layers_; l = lnext_[l]) {
      if (static_cast<std::int32_t>(l) == own) continue;
      const std::uint32_t v = pick_in_layer(l, skip);
      if (v != no_cell) return v;
    }
    return own >= 0 ? pick_in_layer(static_cast<std::uint32_t>(own), skip) : no_cell;
  }

 private:
  // (accesses since reset, latest access time, cell): the order a layer's cells are evicted in
  using cell_key = std::tuple<std::uint64_t, std::uint64_t, std::uint32_t>;
  cell_key key(std::uint32_t c) const { return {count_[c], last_[c], c}; }

  template <class Skip>
  std::uint32_t pick_in_layer(std::uint32_t l, Skip&& skip) const {
    for (const auto* set : {&stale_[l], &fresh_[l]})  // cells not accessed in the latest visit first
      for (const auto& k : *set)
        if (!skip(std::get<2>(k))) return std::get<2>(k);
    return no_cell;
  }
  void touch(std::uint32_t c, const access_info& a) {
    const auto l = static_cast<std::uint32_t>(a.layer);
    incoming_ = -1;
    ++count_[c];
    last_[c] = a.time;
    if (a.layer != current_) {  // a new visit of layer l: its cells accessed so far become stale
      current_ = a.layer;
      stale_[l].insert(fresh_[l].begin(), fresh_[l].end());
      fresh_[l].clear();
      if (lprev_[l] != no_cell) {
        lnext_[lprev_[l]] = lnext_[l];
        lprev_[lnext_[l]] = lprev_[l];
      }
      lprev_[l] = layers_;
      lnext_[l] = lnext_[layers_];
      lprev_[lnext_[layers_]] = l;
      lnext_[layers_] = l;
    }
    fresh_[l].insert(key(c));
  }

  std::vector<std::set<cell_key>> stale_, fresh_;  // per layer: resident cells, by cell_key
  std::vector<std::uint32_t> layer_of_;           // per cell
  std::vector<std::uint32_t> lprev_, lnext_;      // layers by latest visit; index L = sentinel
  std::vector<std::uint64_t> count_, last_;       // per cell: accesses since reset, latest access time
  std::uint32_t layers_ = 0;
  std::int32_t current_ = -1, incoming_ = -1;
};

namespace detail {
// A skip predicate of the shape the cache passes to victim().
struct eviction_skip_probe {
  bool operator()(std::uint32_t) const noexcept { return false; }
};

template <class P, class = void>
struct eviction_contract : std::false_type {};
template <class P>
struct eviction_contract<
    P, std::void_t<decltype(static_cast<const char*>(P::name)), decltype(static_cast<bool>(P::needs_future)),
                   decltype(std::declval<P&>().reset(std::uint32_t{}, std::uint32_t{})),
                   decltype(std::declval<P&>().on_load(std::uint32_t{}, std::declval<const access_info&>())),
                   decltype(std::declval<P&>().on_hit(std::uint32_t{}, std::declval<const access_info&>())),
                   decltype(std::declval<P&>().on_miss(std::uint32_t{}, std::declval<const access_info&>())),
                   decltype(std::declval<P&>().on_evict(std::uint32_t{})),
                   decltype(std::declval<P&>().victim(eviction_skip_probe{}))>>
    : std::bool_constant<std::is_default_constructible_v<P> &&
                         std::is_convertible_v<decltype(std::declval<P&>().victim(eviction_skip_probe{})),
                                               std::uint32_t>> {};
}  // namespace detail

namespace detail {
template <class P, class = void>
struct eviction_serves_record : std::false_type {};
template <class P>
struct eviction_serves_record<P, std::void_t<decltype(P::serves_record)>> : std::bool_constant<P::serves_record> {};
}  // namespace detail

/// True when P declares serves_record (see the contract): the simulator protects the record it serves.
template <class P>
inline constexpr bool eviction_serves_record_v = detail::eviction_serves_record<P>::value;

/// True when P meets the Eviction policy contract at the top of this header (every member, with
/// a usable signature, and default construction). expert_cache static_asserts it.
template <class P>
inline constexpr bool is_eviction_policy_v = detail::eviction_contract<P>::value;

#if defined(__cpp_concepts) && __cpp_concepts >= 201907L
/// The Eviction policy contract as a C++20 concept.
template <class P>
concept eviction_policy = is_eviction_policy_v<P>;
#endif

}  // namespace moeroute
