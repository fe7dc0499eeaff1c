// expert_cache<Eviction> engine API and the eviction policies' contracts (expert_cache.hpp,
// eviction.hpp), with hand-worked expectations.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeroute/cache/expert_cache.hpp"
#include "moeroute/cache/stats_json.hpp"

using namespace moeroute;

namespace {
template <class C>
std::set<std::pair<int, int>> resident(const C& c) {
  std::set<std::pair<int, int>> out;
  for (int l = 0; l < c.num_layers(); ++l)
    for (int e = 0; e < c.num_experts(); ++e)
      if (c.contains(l, e)) out.insert({l, e});
  return out;
}
template <class C>
void expect_distinct_slots(const C& c) {
  std::set<std::uint32_t> slots;
  for (int l = 0; l < c.num_layers(); ++l)
    for (int e = 0; e < c.num_experts(); ++e)
      if (c.contains(l, e)) {
        EXPECT_LT(c.slot_of(l, e), c.capacity());
        EXPECT_TRUE(slots.insert(c.slot_of(l, e)).second) << "slot used twice";
      }
}
}  // namespace

TEST(ExpertCache, PinnedCellsHoldSlotsFromTheStart) {
  residency_set pins(2, 4);
  pins.insert(1, 2);
  pins.insert(0, 3);
  expert_cache<lru_eviction> c(2, 4, 3, pins);
  EXPECT_EQ(c.capacity(), 3u);
  EXPECT_EQ(c.pinned_count(), 2u);
  EXPECT_EQ(c.resident_count(), 2u);
  EXPECT_TRUE(c.contains(1, 2));
  EXPECT_TRUE(c.is_pinned(0, 3));
  // (layer, expert) order: (0,3) gets slot 0, (1,2) slot 1.
  EXPECT_EQ(c.slot_of(0, 3), 0u);
  EXPECT_EQ(c.slot_of(1, 2), 1u);
  // One free slot: every other cell cycles through it; pinned cells are never evicted.
  for (int e : {0, 1, 0, 1}) {
    const auto r = c.access(0, e);
    EXPECT_FALSE(r.hit);
    EXPECT_EQ(r.slot, 2u);
  }
  EXPECT_TRUE(c.access(1, 2).hit);
  EXPECT_TRUE(c.access(0, 3).hit);
  EXPECT_EQ(c.stats().total.accesses, 6u);
  EXPECT_EQ(c.stats().total.hits, 2u);
  EXPECT_EQ(c.stats().total.evictions, 3u);
  EXPECT_EQ(resident(c), (std::set<std::pair<int, int>>{{0, 1}, {0, 3}, {1, 2}}));
  pins.insert(1, 1);
  pins.insert(1, 0);
  EXPECT_THROW((expert_cache<lru_eviction>(2, 4, 3, pins)), error);
  EXPECT_THROW((expert_cache<lru_eviction>(3, 4, 3, pins)), error);  // shape mismatch
}

TEST(ExpertCache, PinnedEqualToCapacityServesMissesWithoutLoading) {
  residency_set pins(1, 3);
  pins.insert(0, 0);
  expert_cache<fifo_eviction> c(1, 3, 1, pins);
  c.set_cell_bytes(10);
  const auto r = c.access(0, 1);
  EXPECT_FALSE(r.hit);
  EXPECT_EQ(r.slot, no_cell);
  EXPECT_FALSE(c.contains(0, 1));
  EXPECT_FALSE(c.access(0, 1).hit);
  EXPECT_TRUE(c.access(0, 0).hit);
  EXPECT_EQ(c.stats().total.misses, 2u);
  EXPECT_EQ(c.stats().total.bytes_loaded, 20u);
  EXPECT_EQ(c.stats().total.evictions, 0u);
}

TEST(ExpertCache, RequestNeverEvictsACellOfTheSameBatch) {
  expert_cache<lru_eviction> c(2, 4, 3);
  std::vector<std::uint32_t> slots;
  auto loads = c.request(0, {0, 1, 2}, slots);
  ASSERT_EQ(loads.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(loads[i].expert, static_cast<int>(i));
    EXPECT_EQ(loads[i].slot, slots[i]);
    EXPECT_EQ(loads[i].evicted_layer, -1);
    EXPECT_EQ(c.slot_of(0, static_cast<int>(i)), slots[i]);
  }
  expect_distinct_slots(c);
  // LRU order is now 0 (oldest), 1, 2. The batch {3, 0}: loading 3 would evict 0 under plain
  // LRU, but 0 is in the batch, so 1 goes; 0 then hits.
  const std::uint32_t slot_of_1 = c.slot_of(0, 1);
  loads = c.request(0, {3, 0}, slots);
  ASSERT_EQ(loads.size(), 1u);
  EXPECT_EQ(loads[0].expert, 3);
  EXPECT_EQ(loads[0].evicted_layer, 0);
  EXPECT_EQ(loads[0].evicted_expert, 1);
  EXPECT_EQ(loads[0].slot, slot_of_1);
  EXPECT_EQ(slots[0], slot_of_1);
  EXPECT_EQ(slots[1], c.slot_of(0, 0));
  EXPECT_EQ(resident(c), (std::set<std::pair<int, int>>{{0, 0}, {0, 2}, {0, 3}}));
  EXPECT_EQ(c.request_evictions(), (std::vector<std::pair<std::int32_t, std::int32_t>>{{0, 1}}));
  // The same sequence through access() (no batch protection) evicts 0 and misses it.
  expert_cache<lru_eviction> d(2, 4, 3);
  for (int e : {0, 1, 2}) d.access(0, e);
  d.access(0, 3);
  EXPECT_FALSE(d.access(0, 0).hit);
  // A repeated expert in one batch is one load and then a hit.
  loads = c.request(1, {2, 2}, slots);
  ASSERT_EQ(loads.size(), 1u);
  EXPECT_EQ(slots[0], slots[1]);
  expect_distinct_slots(c);
}

TEST(ExpertCache, RequestThatCannotFitChangesNothing) {
  residency_set pins(2, 4);
  pins.insert(1, 0);
  expert_cache<lru_eviction> c(2, 4, 3, pins);
  std::vector<std::uint32_t> slots;
  c.request(0, {0}, slots);
  const auto before = resident(c);
  const auto stats_before = c.stats().total.accesses;
  try {
    c.request(0, {1, 2, 3}, slots);  // 3 unpinned cells, 2 unpinned slots
    FAIL() << "expected errc::capacity";
  } catch (const error& e) {
    EXPECT_EQ(e.code(), errc::capacity);
  }
  EXPECT_EQ(resident(c), before);
  EXPECT_EQ(c.stats().total.accesses, stats_before);
  // pinned cells in the batch need no slot
  EXPECT_NO_THROW(c.request(1, {0, 1, 2}, slots));
  EXPECT_THROW(c.request(0, {4}, slots), error);
  EXPECT_THROW(c.request(2, {0}, slots), error);
}

TEST(ExpertCache, ByteBudgetEvictsUntilTheCellFits) {
  // Layer 0 cells are 100 bytes, layer 1 cells 300; budget 500.
  expert_cache<lru_eviction> c(2, 4, 500, std::vector<std::uint64_t>{100, 300});
  EXPECT_EQ(c.capacity(), 5u);
  std::vector<std::uint32_t> slots;
  c.request(0, {0, 1}, slots);
  c.request(1, {0}, slots);
  EXPECT_EQ(c.used_bytes(), 500u);
  // (1,1) needs 300: LRU evicts (0,0) [400 used], (0,1) [300], then (1,0) [0] before it fits.
  const auto loads = c.request(1, {1}, slots);
  ASSERT_EQ(loads.size(), 1u);
  EXPECT_EQ(c.used_bytes(), 300u);
  EXPECT_EQ(c.stats().total.evictions, 3u);
  EXPECT_EQ(c.stats().total.bytes_loaded, 100u + 100u + 300u + 300u);
  EXPECT_EQ(resident(c), (std::set<std::pair<int, int>>{{1, 1}}));
  EXPECT_EQ(loads[0].evicted_layer, 1);
  EXPECT_EQ(loads[0].evicted_expert, 0);
  EXPECT_EQ(c.request_evictions(),
            (std::vector<std::pair<std::int32_t, std::int32_t>>{{0, 0}, {0, 1}, {1, 0}}));
  // Two layer-1 cells in one batch need 600 > 500.
  EXPECT_THROW(c.request(1, {2, 3}, slots), error);
  // Per-cell sizes; pinned bytes beyond the budget are rejected.
  std::vector<std::uint64_t> per_cell(8, 50);
  per_cell[5] = 400;
  residency_set pins(2, 4);
  pins.insert(1, 1);
  expert_cache<fifo_eviction> d(2, 4, 420, per_cell, pins);
  EXPECT_EQ(d.used_bytes(), 400u);
  EXPECT_FALSE(d.access(0, 0).hit);  // 50 bytes do not fit next to the 400 pinned: bypass
  EXPECT_FALSE(d.contains(0, 0));
  EXPECT_THROW((expert_cache<fifo_eviction>(2, 4, 300, per_cell, pins)), error);
  EXPECT_THROW((expert_cache<fifo_eviction>(2, 4, 300, std::vector<std::uint64_t>{1, 2, 3})), error);
  EXPECT_THROW((expert_cache<fifo_eviction>(2, 4, 300, std::vector<std::uint64_t>{1, 0})), error);
}

TEST(ExpertCache, StatsJsonPerLayer) {
  expert_cache<lru_eviction> c(3, 2, 2);
  c.set_cell_bytes(7);
  c.access(0, 0);
  c.access(0, 0);
  c.access(2, 1);
  c.access(2, 0);  // evicts (0,0)
  const auto j = cache_stats_json(c.stats());
  std::vector<std::string> keys;
  for (auto& kv : j.items()) keys.push_back(kv.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"accesses", "hits", "misses", "evictions", "bytes_loaded",
                                            "hit_rate", "per_layer"}));
  EXPECT_EQ(j["accesses"], 4);
  EXPECT_EQ(j["hits"], 1);
  EXPECT_EQ(j["misses"], 3);
  EXPECT_EQ(j["evictions"], 1);
  EXPECT_EQ(j["bytes_loaded"], 21);
  EXPECT_DOUBLE_EQ(j["hit_rate"].get<double>(), 0.25);
  ASSERT_EQ(j["per_layer"].size(), 2u);  // layer 1 had no accesses
  EXPECT_EQ(j["per_layer"][0]["layer"], 0);
  EXPECT_EQ(j["per_layer"][0]["hits"], 1);
  EXPECT_EQ(j["per_layer"][0]["evictions"], 1);  // evictions count in the evicted cell's layer
  EXPECT_EQ(j["per_layer"][1]["layer"], 2);
  EXPECT_EQ(j["per_layer"][1]["misses"], 2);
  c.reset_stats();
  EXPECT_EQ(c.stats().total.accesses, 0u);
  EXPECT_TRUE(c.contains(2, 0));
}

TEST(EvictionPolicies, LfuTiesGoToTheLeastRecentlyAccessed) {
  expert_cache<lfu_eviction> c(1, 5, 3);
  for (int e : {0, 1, 2, 2, 1}) c.access(0, e);  // counts: 0:1, 1:2, 2:2
  c.access(0, 3);                                  // evicts 0 (fewest)
  EXPECT_FALSE(c.contains(0, 0));
  c.access(0, 3);                                  // 3: count 2; tie among 1, 2, 3 at 2
  c.access(0, 4);                                  // evicts the least recently accessed of them: 2
  EXPECT_EQ(resident(c), (std::set<std::pair<int, int>>{{0, 1}, {0, 3}, {0, 4}}));
  // A reloaded cell starts again at one access.
  c.access(0, 2);  // evicts 4 (count 1)
  EXPECT_FALSE(c.contains(0, 4));
  c.access(0, 0);  // evicts 2 (count 1 since its reload)
  EXPECT_EQ(resident(c), (std::set<std::pair<int, int>>{{0, 0}, {0, 1}, {0, 3}}));
}

TEST(EvictionPolicies, FifoIgnoresHits) {
  expert_cache<fifo_eviction> c(1, 4, 2);
  c.access(0, 0);
  c.access(0, 1);
  c.access(0, 0);
  c.access(0, 2);  // evicts 0, loaded first, although just hit
  EXPECT_EQ(resident(c), (std::set<std::pair<int, int>>{{0, 1}, {0, 2}}));
}

TEST(EvictionPolicies, BeladyUsesTheGivenNextUse) {
  expert_cache<belady_eviction> c(1, 4, 2);
  c.access(0, 0, /*next_use=*/10);
  c.access(0, 1, /*next_use=*/5);
  c.access(0, 2, /*next_use=*/7);  // evicts 0 (next use 10, farthest)
  EXPECT_EQ(resident(c), (std::set<std::pair<int, int>>{{0, 1}, {0, 2}}));
  c.access(0, 3, no_next_use);  // evicts 2 (7 > 5)
  c.access(0, 0, 9);            // evicts 3 (never used again)
  EXPECT_EQ(resident(c), (std::set<std::pair<int, int>>{{0, 0}, {0, 1}}));
}

TEST(EvictionPolicies, LayerCycleEvictsFromTheLayerVisitedLast) {
  // Layers 0, 1, 2 in a sweep with 2 slots: at (2,0) LRU evicts (0,0), which the next sweep needs
  // first; layer-cycle evicts from layer 1, the layer visited most recently.
  expert_cache<layer_cycle_eviction> c(3, 2, 2);
  expert_cache<lru_eviction> l(3, 2, 2);
  for (int layer : {0, 1, 2}) {
    c.access(layer, 0);
    l.access(layer, 0);
  }
  EXPECT_EQ(resident(c), (std::set<std::pair<int, int>>{{0, 0}, {2, 0}}));
  EXPECT_EQ(resident(l), (std::set<std::pair<int, int>>{{1, 0}, {2, 0}}));
  // Next sweep: layer 0 hits under layer-cycle, misses under LRU.
  EXPECT_TRUE(c.access(0, 0).hit);
  EXPECT_FALSE(l.access(0, 0).hit);
  // Inside a layer the least-used cell goes, and cells of the layer's current visit go last.
  expert_cache<layer_cycle_eviction> d(2, 4, 3);
  for (int e : {0, 0, 0, 1}) d.access(0, e);  // layer 0 visit: 0 (3 accesses), 1 (1)
  d.access(1, 0);                                // layer 1 visit
  d.access(0, 2);  // layer 0 again: victim from layer 1 (visited last): (1,0)
  EXPECT_EQ(resident(d), (std::set<std::pair<int, int>>{{0, 0}, {0, 1}, {0, 2}}));
  d.access(0, 3);  // only layer 0 left: stale (before this visit) and least used: 1
  EXPECT_EQ(resident(d), (std::set<std::pair<int, int>>{{0, 0}, {0, 2}, {0, 3}}));
}

TEST(EvictionPolicies, LargeCacheKeepsSlotsConsistent) {
  // 100 x 100 cells, 1000 slots, a deterministic pseudo-random stream: every resident cell has a
  // distinct slot below capacity and the resident count never exceeds it.
  expert_cache<lru_eviction> a(100, 100, 1000);
  expert_cache<layer_cycle_eviction> b(100, 100, 1000);
  expert_cache<lfu_eviction> f(100, 100, 1000);
  std::uint64_t x = 88172645463325252ull;
  for (int i = 0; i < 20000; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const int layer = static_cast<int>(i % 100), e = static_cast<int>(x % 100);
    a.access(layer, e);
    b.access(layer, e);
    f.access(layer, e);
  }
  EXPECT_EQ(a.resident_count(), 1000u);
  EXPECT_EQ(b.resident_count(), 1000u);
  EXPECT_EQ(f.resident_count(), 1000u);
  expect_distinct_slots(a);
  expect_distinct_slots(b);
  expect_distinct_slots(f);
  EXPECT_EQ(a.stats().total.hits + a.stats().total.misses, 20000u);
  EXPECT_EQ(a.stats().total.misses - a.stats().total.evictions, 1000u);
}

// prefetch(): a load ahead of use, counted apart from accesses; evicts as the policy says.
TEST(ExpertCache, PrefetchLoadsWithoutCountingAnAccess) {
  expert_cache<lru_eviction> c(1, 4, 2);
  c.set_cell_bytes(5);
  c.access(0);
  EXPECT_TRUE(c.prefetch(1));
  EXPECT_FALSE(c.prefetch(1));  // already resident
  EXPECT_EQ(c.prefetch_loads(), 1u);
  EXPECT_EQ(c.prefetch_bytes(), 5u);
  EXPECT_TRUE(c.access(1).hit);
  EXPECT_TRUE(c.prefetch(2));  // full: evicts 0, the least recently used
  EXPECT_FALSE(c.contains(0, 0));
  EXPECT_EQ(c.stats().total.accesses, 2u);
  EXPECT_EQ(c.stats().total.hits, 1u);
  EXPECT_EQ(c.stats().total.misses, 1u);
  EXPECT_EQ(c.stats().total.bytes_loaded, 5u);
  EXPECT_EQ(c.prefetch_loads(), 2u);
  c.reset_stats();
  EXPECT_EQ(c.prefetch_loads(), 0u);
  // Nothing evictable (pinned fill the cache): the prefetch loads nothing.
  residency_set pins(1, 4);
  pins.insert(0, 3);
  expert_cache<lru_eviction> p(1, 4, 1, pins);
  EXPECT_FALSE(p.prefetch(1));
  EXPECT_EQ(p.prefetch_loads(), 0u);
}
