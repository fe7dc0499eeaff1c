#pragma once
// Published expert-cache eviction policies, implemented from their public descriptions as anchors
// for moeroute's own policies (docs/cache.md compares them). Both follow the Eviction contract of
// eviction.hpp.
//
// lfru_eviction — LFRU as vLLM pull request 37190 ("--moe-expert-cache-size") describes it: a hit
//   bumps the expert's frequency and recency, a miss evicts the lowest-scoring expert, the score is
//   frequency / age. Here: frequency = accesses since the cell was loaded (the load counts one),
//   age = 1 + accesses of the cache since the cell's latest access; ties go to the least recently
//   accessed cell. Scores are compared exactly (cross-multiplied integers). victim() is O(resident).
//
// least_stale_eviction — Least-Stale as SpecMD (Hoang et al., arXiv 2602.03921) describes it: a
//   cell not used in the current forward pass is stale and is evicted before any cell of the
//   current pass. A forward pass starts at a record (access_info::record) whose layer is below the
//   previous record's layer (the layer sweep restarts); in a cache of one layer every record is a
//   pass. A cell loaded or prefetched during the pass is fresh. Inside each tier the cell loaded
//   earliest goes first (FIFO, as the public re-implementations order the tiers): ordering the
//   tiers by latest access instead would make the policy exactly LRU, because every stale cell was
//   accessed before every fresh one. O(1) per access, victim() O(resident).

#include <cstdint>
#include <vector>

#include "moeroute/cache/eviction.hpp"

namespace moeroute {

namespace detail {
/// x1 * y1 < x2 * y2 for 64-bit unsigned factors, without overflow (128-bit products by halves).
inline bool cache_mul_less(std::uint64_t x1, std::uint64_t y1, std::uint64_t x2, std::uint64_t y2) noexcept {
  auto mul = [](std::uint64_t x, std::uint64_t y, std::uint64_t& hi, std::uint64_t& lo) {
    const std::uint64_t xl = x & 0xFFFFFFFFu, xh = x >> 32, yl = y & 0xFFFFFFFFu, yh = y >> 32;
    const std::uint64_t ll = xl * yl, lh = xl * yh, hl = xh * yl, hh = xh * yh;
    const std::uint64_t mid = (ll >> 32) + (lh & 0xFFFFFFFFu) + (hl & 0xFFFFFFFFu);
    lo = (ll & 0xFFFFFFFFu) | (mid << 32);
    hi = hh + (lh >> 32) + (hl >> 32) + (mid >> 32);
  };
  std::uint64_t h1, l1, h2, l2;
  mul(x1, y1, h1, l1);
  mul(x2, y2, h2, l2);
  return h1 < h2 || (h1 == h2 && l1 < l2);
}
}  // namespace detail

/// LFRU (vLLM PR 37190): evicts the lowest frequency / age; see the top of anchors.hpp.
struct lfru_eviction {
  static constexpr const char* name = "lfru";
  static constexpr bool needs_future = false;

  void reset(std::uint32_t num_cells, std::uint32_t = 1) {
    list_.reset(num_cells);
    count_.assign(num_cells, 0);
    last_.assign(num_cells, 0);
    now_ = 0;
  }
  void on_load(std::uint32_t c, const access_info& a) {
    count_[c] = 1;
    last_[c] = a.time;
    now_ = a.time;
    list_.push_front(c);
  }
  void on_hit(std::uint32_t c, const access_info& a) {
    ++count_[c];
    last_[c] = a.time;
    now_ = a.time;
    list_.unlink(c);
    list_.push_front(c);
  }
  void on_miss(std::uint32_t, const access_info& a) { now_ = a.time; }
  void on_evict(std::uint32_t c) { list_.unlink(c); }
  template <class Skip>
  std::uint32_t victim(Skip&& skip) const {
    std::uint32_t best = no_cell;
    for (std::uint32_t c = list_.prev[list_.sentinel]; c != list_.sentinel; c = list_.prev[c]) {  // oldest first
      if (skip(c)) continue;
      if (best == no_cell || lower(c, best)) best = c;
    }
    return best;
  }

 private:
  // count_a / age_a < count_b / age_b, exactly (ties keep the older cell, visited first).
  bool lower(std::uint32_t a, std::uint32_t b) const {
    return detail::cache_mul_less(count_[a], now_ - last_[b] + 1, count_[b], now_ - last_[a] + 1);
  }
  detail::cache_intrusive_list list_;  // recency order, front = most recent
  std::vector<std::uint64_t> count_, last_;
  std::uint64_t now_ = 0;
};

/// Least-Stale (SpecMD): cells of earlier forward passes go first, FIFO in each tier; see the top
/// of anchors.hpp.
struct least_stale_eviction {
  static constexpr const char* name = "least-stale";
  static constexpr bool needs_future = false;

  void reset(std::uint32_t num_cells, std::uint32_t layers = 1) {
    list_.reset(num_cells);
    pass_of_.assign(num_cells, 0);
    single_layer_ = layers <= 1;
    pass_ = 0;
    record_ = 0;
    last_layer_ = -1;
    started_ = false;
  }
  void on_load(std::uint32_t c, const access_info& a) {
    see(a);
    pass_of_[c] = pass_;
    list_.push_front(c);
  }
  void on_prefetch(std::uint32_t c, const access_info&) {
    pass_of_[c] = pass_;
    list_.push_front(c);
  }
  void on_hit(std::uint32_t c, const access_info& a) {
    see(a);
    pass_of_[c] = pass_;
  }
  void on_miss(std::uint32_t, const access_info& a) { see(a); }
  void on_evict(std::uint32_t c) { list_.unlink(c); }
  template <class Skip>
  std::uint32_t victim(Skip&& skip) const {
    std::uint32_t oldest = no_cell;
    for (std::uint32_t c = list_.prev[list_.sentinel]; c != list_.sentinel; c = list_.prev[c]) {  // earliest loaded first
      if (skip(c)) continue;
      if (pass_of_[c] < pass_) return c;
      if (oldest == no_cell) oldest = c;
    }
    return oldest;
  }

 private:
  void see(const access_info& a) {
    if (started_ && a.record == record_) return;
    if (started_ && (single_layer_ || a.layer < last_layer_)) ++pass_;
    started_ = true;
    record_ = a.record;
    last_layer_ = a.layer;
  }
  detail::cache_intrusive_list list_;  // load order, front = latest loaded
  std::vector<std::uint64_t> pass_of_;  // pass of the latest access or load, per cell
  std::uint64_t pass_ = 0, record_ = 0;
  std::int32_t last_layer_ = -1;
  bool single_layer_ = true, started_ = false;
};

}  // namespace moeroute
