#pragma once
// expert_cache<Eviction>: which (layer, expert) cells of an L x E model are resident in device
// memory, and in which slot. Capacity is a number of slots (one cell each) or a byte budget with a
// size per cell. Pinned cells (a residency_set) are resident from the start, hold slots first (in
// (layer, expert) order), are never evicted and count in the capacity.
//
// Two ways in:
//  - request(layer, experts): the engine call. Returns each expert's slot and the cells to load
//    into which slots; never evicts a cell the same batch needs (throws errc::capacity, changing
//    nothing, when the batch cannot fit).
//  - access(layer, expert): one demand-paged access (the simulator's unit). A miss loads the cell,
//    evicting as the policy says; when nothing can be evicted (pinned cells fill the capacity, or
//    every candidate is protected) the miss is served without loading ("bypass").
//  - prefetch(cell): load a cell ahead of its use (a predictor's guess, cache/prefetch.hpp); counted
//    apart in prefetch_loads(), never as an access.
// Statistics: accesses, hits, misses, evictions, bytes_loaded (bytes of every miss), per layer.
// Hot path: dense arrays indexed by cell = layer x E + expert; no hashing, no allocation.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "moeroute/cache/eviction.hpp"
#include "moeroute/error.hpp"
#include "moeroute/residency/residency_set.hpp"

namespace moeroute {

namespace detail {
template <class P, class = void>
struct has_on_prefetch : std::false_type {};
template <class P>
struct has_on_prefetch<P, std::void_t<decltype(std::declval<P&>().on_prefetch(std::uint32_t{}, std::declval<const access_info&>()))>>
    : std::true_type {};
}  // namespace detail

/// Counters of a cache (or of one layer of it).
struct cache_counters {
  std::uint64_t accesses = 0;
  std::uint64_t hits = 0;      ///< includes accesses to pinned cells
  std::uint64_t misses = 0;
  std::uint64_t evictions = 0;
  std::uint64_t bytes_loaded = 0;  ///< sum of the cell sizes of the misses
  double hit_rate() const noexcept {
    return accesses ? static_cast<double>(hits) / static_cast<double>(accesses) : 0.0;
  }
};

/// Totals and per-layer counters (as JSON: cache/stats_json.hpp).
struct cache_stats {
  cache_counters total;
  std::vector<cache_counters> per_layer;  ///< size num_layers
};

/// One load the engine must perform: copy cell (layer, expert) into slot; when evicted_layer >= 0
/// the slot held (evicted_layer, evicted_expert) before. With a byte budget one load may evict
/// several cells: evicted_* is the last of them, request_evictions() lists them all.
struct cache_load {
  std::int32_t layer = 0;
  std::int32_t expert = 0;
  std::uint32_t slot = 0;
  std::int32_t evicted_layer = -1;
  std::int32_t evicted_expert = -1;
};

/// Result of one access(): hit or miss, the slot (no_cell on a bypassed miss), and the evicted
/// cell index (no_cell if none).
struct cache_access_result {
  bool hit = false;
  std::uint32_t slot = no_cell;
  std::uint32_t evicted = no_cell;
};

template <class Eviction = lru_eviction>
class expert_cache {
  static_assert(is_eviction_policy_v<Eviction>,
                "moeroute::expert_cache: Eviction does not meet the Eviction policy contract (cache/eviction.hpp): "
                "default-constructible with name, needs_future, reset(uint32_t, uint32_t), on_load/on_hit/on_miss"
                "(uint32_t, const access_info&), on_evict(uint32_t) and victim(skip) returning uint32_t");

 public:
  using eviction_type = Eviction;

  /// A cache of `capacity` slots over num_layers x num_experts cells; `pinned` (empty, or of the
  /// same shape) holds the pinned cells. More pinned cells than slots is errc::invalid_argument.
  expert_cache(int num_layers, int num_experts, std::size_t capacity,
               const residency_set& pinned = residency_set()) {
    init_shape(num_layers, num_experts, pinned);
    MOEROUTE_CHECK(capacity <= 0xFFFFFFFEu, errc::invalid_argument, "expert_cache: capacity ",
                   capacity, " too large");
    byte_mode_ = false;
    capacity_slots_ = static_cast<std::uint32_t>(capacity);
    cell_bytes_.assign(1, 0);
    budget_ = 0;
    finish_init();
  }

  /// A cache with a byte budget. cell_bytes has one size per layer (size num_layers) or one per
  /// cell (size num_layers x num_experts, index layer x E + expert); every size must be > 0.
  /// Pinned cells whose bytes exceed the budget are errc::invalid_argument.
  expert_cache(int num_layers, int num_experts, std::uint64_t byte_budget,
               std::vector<std::uint64_t> cell_bytes, const residency_set& pinned = residency_set()) {
    init_shape(num_layers, num_experts, pinned);
    const std::size_t L = static_cast<std::size_t>(num_layers);
    MOEROUTE_CHECK(cell_bytes.size() == L || cell_bytes.size() == cells_, errc::invalid_argument,
                   "expert_cache: ", cell_bytes.size(), " cell sizes for ", num_layers, " layers x ",
                   num_experts, " experts (need one per layer or one per cell)");
    std::uint64_t min_bytes = std::numeric_limits<std::uint64_t>::max();
    for (std::size_t i = 0; i < cell_bytes.size(); ++i) {
      MOEROUTE_CHECK(cell_bytes[i] > 0, errc::invalid_argument, "expert_cache: cell size ", i,
                     " is 0");
      min_bytes = std::min(min_bytes, cell_bytes[i]);
    }
    byte_mode_ = true;
    per_layer_bytes_ = cell_bytes.size() == L && cell_bytes.size() != cells_;
    cell_bytes_ = std::move(cell_bytes);
    budget_ = byte_budget;
    const std::uint64_t most = cells_ == 0 ? 0 : byte_budget / min_bytes;
    capacity_slots_ = static_cast<std::uint32_t>(std::min<std::uint64_t>(most, cells_));
    finish_init();
  }

  int num_layers() const noexcept { return layers_; }
  int num_experts() const noexcept { return experts_; }
  std::size_t num_cells() const noexcept { return cells_; }
  /// Slots (in byte mode: the most cells that can be resident at once).
  std::size_t capacity() const noexcept { return capacity_slots_; }
  std::uint64_t byte_budget() const noexcept { return budget_; }
  std::uint64_t used_bytes() const noexcept { return used_bytes_; }
  std::size_t resident_count() const noexcept { return resident_; }
  std::size_t pinned_count() const noexcept { return pinned_count_; }
  const cache_stats& stats() const noexcept { return stats_; }
  void reset_stats() {
    prefetch_loads_ = prefetch_bytes_ = 0;
    stats_.total = cache_counters{};
    std::fill(stats_.per_layer.begin(), stats_.per_layer.end(), cache_counters{});
  }
  const Eviction& eviction() const noexcept { return policy_; }
  /// The policy, for calls beyond the Eviction contract (e.g. recommended_eviction::expect).
  Eviction& eviction() noexcept { return policy_; }

  std::uint32_t cell_index(int layer, int expert) const {
    MOEROUTE_CHECK(layer >= 0 && layer < layers_ && expert >= 0 && expert < experts_,
                   errc::invalid_argument, "expert_cache: cell (", layer, ", ", expert, ") outside ",
                   layers_, " x ", experts_);
    return static_cast<std::uint32_t>(layer) * static_cast<std::uint32_t>(experts_) +
           static_cast<std::uint32_t>(expert);
  }
  bool contains(int layer, int expert) const { return slot_[cell_index(layer, expert)] != no_cell; }
  bool is_pinned(int layer, int expert) const { return pinned_[cell_index(layer, expert)] != 0; }
  /// The slot of a resident cell, or no_cell.
  std::uint32_t slot_of(int layer, int expert) const { return slot_[cell_index(layer, expert)]; }
  std::uint64_t bytes_of(std::uint32_t cell) const noexcept {
    if (!byte_mode_) return cell_bytes_[0];
    return per_layer_bytes_ ? cell_bytes_[cell / static_cast<std::uint32_t>(experts_)] : cell_bytes_[cell];
  }
  /// Size counted in bytes_loaded in slot mode (default 0).
  void set_cell_bytes(std::uint64_t b) {
    if (!byte_mode_) cell_bytes_[0] = b;
  }

  /// Starts a new batch: cells marked with protect() until the next begin_batch() are not evicted.
  /// Accesses after it carry the next access_info::record number (policies that work per token
  /// or per forward pass see batch boundaries through it).
  void begin_batch() noexcept {
    ++record_;
    if (++epoch_ == 0) {
      std::fill(protect_.begin(), protect_.end(), 0u);
      epoch_ = 1;
    }
  }
  void protect(std::uint32_t cell) noexcept { protect_[cell] = epoch_; }

  /// One access to `cell` (from cell_index). next_use: time of the next access to this cell in
  /// this cache's access count (needed by Eviction::needs_future policies). Never throws.
  cache_access_result access(std::uint32_t cell, std::uint64_t next_use = no_next_use) noexcept {
    const access_info a{time_++, next_use,
                        static_cast<std::int32_t>(cell / static_cast<std::uint32_t>(experts_)), record_};
    cache_counters& lc = stats_.per_layer[static_cast<std::size_t>(a.layer)];
    ++stats_.total.accesses;
    ++lc.accesses;
    cache_access_result r;
    r.slot = slot_[cell];
    if (r.slot != no_cell) {
      ++stats_.total.hits;
      ++lc.hits;
      r.hit = true;
      if (!pinned_[cell]) policy_.on_hit(cell, a);
      return r;
    }
    const std::uint64_t b = bytes_of(cell);
    ++stats_.total.misses;
    ++lc.misses;
    stats_.total.bytes_loaded += b;
    lc.bytes_loaded += b;
    policy_.on_miss(cell, a);
    if (!make_room(b, r.evicted)) return r;  // bypass
    r.slot = free_slots_.back();
    free_slots_.pop_back();
    slot_[cell] = r.slot;
    ++resident_;
    used_bytes_ += byte_mode_ ? b : 0;
    policy_.on_load(cell, a);
    return r;
  }
  cache_access_result access(int layer, int expert, std::uint64_t next_use = no_next_use) {
    return access(cell_index(layer, expert), next_use);
  }

  /// Loads `cell` before it is asked for (prefetch). Counts no access, hit or miss: a load that
  /// happens is counted in prefetch_loads() (and its bytes in prefetch_bytes()). Returns true when
  /// the cell was loaded, false when it was already resident or nothing could be evicted. The
  /// policy hears on_prefetch(cell, a) when it has that member, else on_load(cell, a); a carries
  /// the time of the next access. Never throws.
  bool prefetch(std::uint32_t cell) noexcept {
    if (slot_[cell] != no_cell) return false;
    const access_info a{time_, no_next_use, static_cast<std::int32_t>(cell / static_cast<std::uint32_t>(experts_)),
                        record_};
    const std::uint64_t b = bytes_of(cell);
    std::uint32_t evicted = no_cell;
    if (!make_room(b, evicted)) return false;
    slot_[cell] = free_slots_.back();
    free_slots_.pop_back();
    ++resident_;
    used_bytes_ += byte_mode_ ? b : 0;
    ++prefetch_loads_;
    prefetch_bytes_ += b;
    if constexpr (detail::has_on_prefetch<Eviction>::value)
      policy_.on_prefetch(cell, a);
    else
      policy_.on_load(cell, a);
    return true;
  }
  std::uint64_t prefetch_loads() const noexcept { return prefetch_loads_; }
  std::uint64_t prefetch_bytes() const noexcept { return prefetch_bytes_; }

  /// Engine call: the batch at `layer` needs experts[0..n). Writes each expert's slot to
  /// slots_out[i] and returns the loads to perform (in access order; valid until the next call).
  /// A cell of this batch is never evicted by this call. Throws errc::invalid_argument for an
  /// expert outside [0, E) and errc::capacity when the batch's cells cannot all be resident;
  /// in both cases nothing changes. next_uses (optional, size n) feeds needs_future policies.
  const std::vector<cache_load>& request(int layer, const std::int32_t* experts, std::size_t n,
                                         std::uint32_t* slots_out,
                                         const std::uint64_t* next_uses = nullptr) {
    loads_.clear();
    request_evicted_.clear();
    MOEROUTE_CHECK(layer >= 0 && layer < layers_, errc::invalid_argument, "expert_cache: layer ",
                   layer, " outside [0, ", layers_, ")");
    for (std::size_t i = 0; i < n; ++i)
      MOEROUTE_CHECK(experts[i] >= 0 && experts[i] < experts_, errc::invalid_argument,
                     "expert_cache: layer ", layer, ": expert ", experts[i], " outside [0, ", experts_,
                     ")");
    begin_batch();
    std::uint64_t need_bytes = 0, need_cells = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t c = cell_index(layer, experts[i]);
      if (protect_[c] == epoch_) continue;
      protect(c);
      if (pinned_[c]) continue;
      ++need_cells;
      need_bytes += bytes_of(c);
    }
    if (byte_mode_)
      MOEROUTE_CHECK(need_bytes <= budget_ - pinned_bytes_, errc::capacity, "expert_cache: layer ",
                     layer, ": the batch needs ", need_bytes, " bytes of unpinned cells but only ",
                     budget_ - pinned_bytes_, " bytes are not pinned");
    else
      MOEROUTE_CHECK(need_cells <= capacity_slots_ - pinned_count_, errc::capacity,
                     "expert_cache: layer ", layer, ": the batch needs ", need_cells,
                     " unpinned cells but only ", capacity_slots_ - pinned_count_,
                     " slots are not pinned");
    collect_evictions_ = true;
    for (std::size_t i = 0; i < n; ++i) {
      const std::uint32_t c = cell_index(layer, experts[i]);
      const auto r = access(c, next_uses ? next_uses[i] : no_next_use);
      slots_out[i] = r.slot;
      if (!r.hit) {
        cache_load ld;
        ld.layer = layer;
        ld.expert = experts[i];
        ld.slot = r.slot;
        if (r.evicted != no_cell) {
          ld.evicted_layer = static_cast<std::int32_t>(r.evicted / static_cast<std::uint32_t>(experts_));
          ld.evicted_expert = static_cast<std::int32_t>(r.evicted % static_cast<std::uint32_t>(experts_));
        }
        loads_.push_back(ld);
      }
    }
    collect_evictions_ = false;
    return loads_;
  }
  /// Every cell the latest request() evicted, in eviction order.
  const std::vector<std::pair<std::int32_t, std::int32_t>>& request_evictions() const noexcept {
    return request_evicted_;
  }
  const std::vector<cache_load>& request(int layer, const std::vector<std::int32_t>& experts,
                                         std::vector<std::uint32_t>& slots_out) {
    slots_out.resize(experts.size());
    return request(layer, experts.data(), experts.size(), slots_out.data());
  }

 private:
  void init_shape(int num_layers, int num_experts, const residency_set& pinned) {
    MOEROUTE_CHECK(num_layers >= 0 && num_experts >= 0, errc::invalid_argument,
                   "expert_cache: negative shape ", num_layers, " x ", num_experts);
    cells_ = static_cast<std::size_t>(num_layers) * static_cast<std::size_t>(num_experts);
    MOEROUTE_CHECK(cells_ < no_cell, errc::invalid_argument, "expert_cache: ", num_layers, " x ",
                   num_experts, " cells is too many");
    layers_ = num_layers;
    experts_ = num_experts;
    const bool has_pins = pinned.num_layers() != 0 || pinned.num_experts() != 0;
    MOEROUTE_CHECK(!has_pins || (pinned.num_layers() == num_layers && pinned.num_experts() == num_experts),
                   errc::invalid_argument, "expert_cache: pinned set is ", pinned.num_layers(), " x ",
                   pinned.num_experts(), " but the cache is ", num_layers, " x ", num_experts);
    pinned_.assign(cells_, 0);
    if (has_pins)
      pinned.for_each([&](int l, int e) {
        pinned_[static_cast<std::size_t>(l) * static_cast<std::size_t>(num_experts) +
                static_cast<std::size_t>(e)] = 1;
      });
  }
  void finish_init() {
    slot_.assign(cells_, no_cell);
    protect_.assign(cells_, 0);
    epoch_ = 1;
    stats_.per_layer.assign(static_cast<std::size_t>(layers_), cache_counters{});
    policy_.reset(static_cast<std::uint32_t>(cells_), static_cast<std::uint32_t>(layers_));
    pinned_count_ = 0;
    pinned_bytes_ = 0;
    for (std::size_t c = 0; c < cells_; ++c)
      if (pinned_[c]) {
        ++pinned_count_;
        pinned_bytes_ += byte_mode_ ? bytes_of(static_cast<std::uint32_t>(c)) : 0;
      }
    if (byte_mode_) {
      MOEROUTE_CHECK(pinned_bytes_ <= budget_, errc::invalid_argument, "expert_cache: ",
                     pinned_count_, " pinned cells need ", pinned_bytes_, " bytes, more than the budget of ",
                     budget_);
      capacity_slots_ = std::max<std::uint32_t>(capacity_slots_, static_cast<std::uint32_t>(pinned_count_));
    } else {
      MOEROUTE_CHECK(pinned_count_ <= capacity_slots_, errc::invalid_argument, "expert_cache: ",
                     pinned_count_, " pinned cells but capacity is ", capacity_slots_);
    }
    free_slots_.clear();
    free_slots_.reserve(capacity_slots_);
    for (std::uint32_t s = capacity_slots_; s-- > 0;) free_slots_.push_back(s);
    resident_ = 0;
    used_bytes_ = pinned_bytes_;
    for (std::size_t c = 0; c < cells_; ++c)
      if (pinned_[c]) {
        slot_[c] = free_slots_.back();
        free_slots_.pop_back();
        ++resident_;
      }
    time_ = record_ = prefetch_loads_ = prefetch_bytes_ = 0;
  }
  bool fits(std::uint64_t b) const noexcept {
    return byte_mode_ ? (used_bytes_ + b <= budget_ && !free_slots_.empty()) : !free_slots_.empty();
  }
  // Evicts until a cell of b bytes fits; false (nothing evicted beyond what was) when it cannot.
  bool make_room(std::uint64_t b, std::uint32_t& evicted) noexcept {
    if (byte_mode_ && b > budget_ - pinned_bytes_) return false;
    const auto skip = [this](std::uint32_t c) { return protect_[c] == epoch_; };
    while (!fits(b)) {
      const std::uint32_t v = policy_.victim(skip);
      if (v == no_cell) return false;
      policy_.on_evict(v);
      free_slots_.push_back(slot_[v]);
      slot_[v] = no_cell;
      --resident_;
      used_bytes_ -= byte_mode_ ? bytes_of(v) : 0;
      ++stats_.total.evictions;
      ++stats_.per_layer[v / static_cast<std::uint32_t>(experts_)].evictions;
      evicted = v;
      if (collect_evictions_)
        request_evicted_.emplace_back(static_cast<std::int32_t>(v / static_cast<std::uint32_t>(experts_)),
                                      static_cast<std::int32_t>(v % static_cast<std::uint32_t>(experts_)));
    }
    return true;
  }

  int layers_ = 0, experts_ = 0;
  std::size_t cells_ = 0;
  bool byte_mode_ = false, per_layer_bytes_ = false;
  std::uint32_t capacity_slots_ = 0;
  std::uint64_t budget_ = 0, used_bytes_ = 0, pinned_bytes_ = 0;
  std::size_t pinned_count_ = 0, resident_ = 0;
  std::vector<std::uint64_t> cell_bytes_;
  std::vector<std::uint8_t> pinned_;
  std::vector<std::uint32_t> slot_;
  std::vector<std::uint32_t> protect_;
  std::uint32_t epoch_ = 1;
  std::vector<std::uint32_t> free_slots_;
  std::uint64_t time_ = 0, record_ = 0, prefetch_loads_ = 0, prefetch_bytes_ = 0;
  cache_stats stats_;
  std::vector<cache_load> loads_;
  std::vector<std::pair<std::int32_t, std::int32_t>> request_evicted_;
  bool collect_evictions_ = false;
  Eviction policy_;
};

}  // namespace moeroute
