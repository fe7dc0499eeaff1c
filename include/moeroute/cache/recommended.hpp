#pragma once
// recommended_eviction: moeroute's recommended expert-cache policy (an Eviction, eviction.hpp),
// learned online from the accesses so far; it never looks at the future of the trace.
//
// Contract (what it does, in the order it decides):
//  0. It is served a record at a time (serves_record, eviction.hpp): the router's choice for the
//     record is known before its experts load, as in expert_cache::request, so no cell of the
//     record being served is evicted while it runs. The shadows of step 4 replay access by access.
//  1. Statistics, per access (hits and misses alike): a *visit* of layer l is a run of consecutive
//     records (access_info::record) at layer l; in a cache of one layer every record is a visit.
//     Per cell c of layer l, lambda(c) = expected accesses per visit of l, an exponential moving
//     average over the visits of l with factor beta = 0.9 (lambda <- lambda * beta^(visits since
//     its update) + (1 - beta) at each access). Per layer: the start time of its latest visit, the
//     time between its two latest visit starts (G) and the length of its latest finished visit (V),
//     in accesses.
//  2. Expected time to next use, from those: p = 1 - exp(-lambda) is the chance that c is used in a
//     visit of l; the next visit of l starts in d = max(G - (now - start), 1) accesses; then
//     T(c) = d + (1/p - 1) * G. While l is the layer being visited, with m = max(V - (now - start),
//     0) accesses expected left in the visit and q = 1 - exp(-lambda * m / V): T(c) = q * m / 2 +
//     (1 - q) * T_far. A forward pass visits the layers in order, so the layer just used is needed
//     again last: T grows with d. G unknown (first visit): G = 2 * max(now - start, 1).
//  3. next-use rule: evict the largest T(c) (ties: least recently accessed).
//  4. Online choice of rule (set dueling): three tag-only shadow caches of the same capacity replay
//     every access, evicting by the next-use rule, by layer-cycle (eviction.hpp) and by LRU; each
//     keeps a miss count that decays by (1 - 1/512) per access. The real cache evicts by the rule
//     whose shadow has the fewest decayed misses (ties: next-use, then layer-cycle, then LRU); the
//     layer-cycle rule runs on a layer_cycle_eviction that hears the real cache's events. The
//     capacity of the shadows is the number of resident cells at the cache's first eviction
//     (before it, every accessed cell is resident).
//  5. Prefetch (optional, prefetch.hpp): expect(cell, p) before prefetching a cell records the
//     predictor's probability that it is used in the next visit of its layer; until that visit
//     starts, the cell's T is p * d + (1 - p) * T(c). A prefetched cell is not an access.
// Cost: O(1) per access plus the shadows' evictions; victim() is O(resident) (it scores every
// resident cell). Memory: O(cells + layers). Parameters are the same for every trace and scope:
// beta was fixed before the evaluation in docs/cache.md; the decay was chosen among 1/256 .. 1/4096
// on the first halves of the shipped traces alone (docs/cache.md), the second halves held out.

#include <cmath>
#include <cstdint>
#include <vector>

#include "moeroute/cache/eviction.hpp"

namespace moeroute {

namespace detail {

/// A set of cells with O(1) insert, erase and membership (dense position index).
struct cache_cell_set {
  std::vector<std::uint32_t> cells, pos;
  void reset(std::uint32_t n) {
    cells.clear();
    cells.reserve(n);
    pos.assign(n, no_cell);
  }
  bool contains(std::uint32_t c) const { return pos[c] != no_cell; }
  void insert(std::uint32_t c) {
    pos[c] = static_cast<std::uint32_t>(cells.size());
    cells.push_back(c);
  }
  void erase(std::uint32_t c) {
    const std::uint32_t i = pos[c], last = cells.back();
    cells[i] = last;
    pos[last] = i;
    cells.pop_back();
    pos[c] = no_cell;
  }
};

/// The online statistics of recommended_eviction (steps 1, 2 and 5 of its contract).
struct next_use_model {
  static constexpr double beta = 0.9;

  void reset(std::uint32_t num_cells, std::uint32_t layers) {
    layers_ = layers == 0 ? 1 : layers;
    experts_ = num_cells / layers_;
    lambda_.assign(num_cells, 0.0);
    expect_p_.assign(num_cells, 0.0);
    stamp_.assign(num_cells, 0);
    expect_visit_.assign(num_cells, 0);
    last_.assign(num_cells, 0);
    seen_.assign(num_cells, 0);
    start_.assign(layers_, 0);
    gap_.assign(layers_, 0);
    vlen_.assign(layers_, 0);
    visits_.assign(layers_, 0);
    cur_ = -1;
    record_ = 0;
    started_ = false;
    now_ = 0;
  }
  /// Every access, before any eviction it causes.
  void observe(std::uint32_t c, const access_info& a) {
    now_ = a.time;
    if (!started_ || a.record != record_) {
      started_ = true;
      record_ = a.record;
      if (a.layer != cur_ || layers_ == 1) {
        const auto l = static_cast<std::size_t>(a.layer);
        if (cur_ >= 0) vlen_[static_cast<std::size_t>(cur_)] = a.time - start_[static_cast<std::size_t>(cur_)];
        if (visits_[l] > 0) gap_[l] = a.time - start_[l];
        start_[l] = a.time;
        ++visits_[l];
        cur_ = a.layer;
      }
    }
    const auto l = static_cast<std::size_t>(a.layer);
    lambda_[c] = (seen_[c] ? lambda(c) : 0.0) + (1.0 - beta);
    seen_[c] = 1;
    stamp_[c] = visits_[l];
    last_[c] = a.time;
  }
  void expect(std::uint32_t c, double p) {
    expect_p_[c] = p;
    expect_visit_[c] = visits_[layer_of(c)] + 1;
  }
  std::uint64_t last(std::uint32_t c) const { return last_[c]; }
  /// Estimated accesses until the next use of c (step 2).
  double next_use(std::uint32_t c) const {
    const std::size_t l = layer_of(c);
    const double lam = std::max(lambda(c), 1e-6);
    const double p = 1.0 - std::exp(-lam);
    const double since = static_cast<double>(now_ - start_[l]);
    const double G = gap_[l] ? static_cast<double>(gap_[l]) : 2.0 * std::max(since, 1.0);
    const double d = std::max(G - since, 1.0);
    double t = d + (1.0 / p - 1.0) * G;
    if (static_cast<std::int32_t>(l) == cur_) {
      const double V = vlen_[l] ? static_cast<double>(vlen_[l]) : 1.0;
      const double m = std::max(V - since, 0.0);
      const double q = 1.0 - std::exp(-lam * m / V);
      t = q * m / 2.0 + (1.0 - q) * t;
    }
    if (expect_visit_[c] == visits_[l] + 1 && expect_p_[c] > 0.0)
      t = expect_p_[c] * d + (1.0 - expect_p_[c]) * t;
    return t;
  }
  /// The next-use rule over `cells` (step 3).
  template <class Skip>
  std::uint32_t pick(const std::vector<std::uint32_t>& cells, Skip&& skip) const {
    std::uint32_t best = no_cell;
    double best_t = 0.0;
    for (std::uint32_t c : cells) {
      if (skip(c)) continue;
      const double t = next_use(c);
      if (best == no_cell || t > best_t || (t == best_t && last_[c] < last_[best])) {
        best = c;
        best_t = t;
      }
    }
    return best;
  }
  /// LRU over `cells`.
  template <class Skip>
  std::uint32_t pick_lru(const std::vector<std::uint32_t>& cells, Skip&& skip) const {
    std::uint32_t best = no_cell;
    for (std::uint32_t c : cells)
      if (!skip(c) && (best == no_cell || last_[c] < last_[best])) best = c;
    return best;
  }

 private:
  std::size_t layer_of(std::uint32_t c) const { return experts_ ? c / experts_ : 0; }
  double lambda(std::uint32_t c) const {
    return lambda_[c] * std::pow(beta, static_cast<double>(visits_[layer_of(c)] - stamp_[c]));
  }
  std::uint32_t layers_ = 1, experts_ = 0;
  std::vector<double> lambda_, expect_p_;
  std::vector<std::uint64_t> stamp_, expect_visit_, last_;
  std::vector<std::uint8_t> seen_;
  std::vector<std::uint64_t> start_, gap_, vlen_, visits_;
  std::int32_t cur_ = -1;
  std::uint64_t record_ = 0, now_ = 0;
  bool started_ = false;
};

}  // namespace detail

/// moeroute's recommended policy; contract at the top of recommended.hpp.
struct recommended_eviction {
  static constexpr const char* name = "recommended";
  static constexpr bool needs_future = false;
  static constexpr bool serves_record = true;
  static constexpr double miss_decay = 1.0 - 1.0 / 512.0;

  /// The rules it chooses between (step 4).
  enum class rule { next_use, layer_cycle, lru };

  void reset(std::uint32_t num_cells, std::uint32_t layers = 1) {
    model_.reset(num_cells, layers);
    cycle_.reset(num_cells, layers);
    cycle_shadow_.reset(num_cells, layers);
    resident_.reset(num_cells);
    for (auto& s : shadow_) s.reset(num_cells);
    capacity_ = 0;
    for (auto& m : misses_) m = 0.0;
  }
  void on_load(std::uint32_t c, const access_info& a) {
    resident_.insert(c);
    cycle_.on_load(c, a);
  }
  void on_prefetch(std::uint32_t c, const access_info& a) { on_load(c, a); }
  void on_hit(std::uint32_t c, const access_info& a) {
    see(c, a);
    cycle_.on_hit(c, a);
  }
  void on_miss(std::uint32_t c, const access_info& a) {
    see(c, a);
    cycle_.on_miss(c, a);
  }
  void on_evict(std::uint32_t c) {
    resident_.erase(c);
    cycle_.on_evict(c);
  }
  template <class Skip>
  std::uint32_t victim(Skip&& skip) {
    if (capacity_ == 0) start_shadows();
    switch (current_rule()) {
      case rule::lru: return model_.pick_lru(resident_.cells, skip);
      case rule::layer_cycle: return cycle_.victim(skip);
      default: return model_.pick(resident_.cells, skip);
    }
  }
  /// The predictor's probability that `cell` is used in the next visit of its layer (call before
  /// expert_cache::prefetch of that cell).
  void expect(std::uint32_t cell, double p) { model_.expect(cell, p); }
  /// The rule the real cache evicts by now.
  rule current_rule() const {
    const double n = misses_[0], c = misses_[1], l = misses_[2];
    if (n <= c && n <= l) return rule::next_use;
    return c <= l ? rule::layer_cycle : rule::lru;
  }

 private:
  void see(std::uint32_t c, const access_info& a) {
    model_.observe(c, a);
    for (auto& m : misses_) m *= miss_decay;
    for (std::size_t r = 0; r < 3; ++r) shadow_access(r, c, a);
  }
  void shadow_access(std::size_t r, std::uint32_t c, const access_info& a) {
    auto& s = shadow_[r];
    if (s.contains(c)) {
      if (r == 1) cycle_shadow_.on_hit(c, a);
      return;
    }
    misses_[r] += 1.0;
    if (r == 1) cycle_shadow_.on_miss(c, a);
    if (capacity_ != 0 && s.cells.size() >= capacity_) shadow_evict(r, c);
    s.insert(c);
    if (r == 1) cycle_shadow_.on_load(c, a);
  }
  void shadow_evict(std::size_t r, std::uint32_t keep) {
    const auto skip = [keep](std::uint32_t x) { return x == keep; };
    auto& s = shadow_[r];
    const std::uint32_t v = r == 0 ? model_.pick(s.cells, skip)
                            : r == 1 ? cycle_shadow_.victim(skip)
                                     : model_.pick_lru(s.cells, skip);
    if (v == no_cell) return;
    s.erase(v);
    if (r == 1) cycle_shadow_.on_evict(v);
  }
  // First eviction: the cache is full with every cell accessed so far, and so are the shadows
  // (plus the cell being accessed now, which they already hold): trim them to the capacity.
  void start_shadows() {
    capacity_ = static_cast<std::uint32_t>(resident_.cells.size());
    if (capacity_ == 0) return;
    const std::uint32_t incoming = last_incoming();
    for (std::size_t r = 0; r < 3; ++r)
      while (shadow_[r].cells.size() > capacity_) shadow_evict(r, incoming);
  }
  std::uint32_t last_incoming() const {
    std::uint32_t best = no_cell;
    for (std::uint32_t c : shadow_[0].cells)
      if (best == no_cell || model_.last(c) > model_.last(best)) best = c;
    return best;
  }

  detail::next_use_model model_;
  layer_cycle_eviction cycle_, cycle_shadow_;  // the layer-cycle rule on the real cache, on its shadow
  detail::cache_cell_set resident_, shadow_[3];  // real residents; shadows: next-use, layer-cycle, LRU
  std::uint32_t capacity_ = 0;
  double misses_[3] = {0.0, 0.0, 0.0};
};

}  // namespace moeroute
