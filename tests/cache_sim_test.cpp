// Trace replay, Belady and Mattson curves (include/moeroute/cache/simulate.hpp) against the plain
// reference simulator in cache_reference.hpp, hand-computed small traces and the issue's figures.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cache_reference.hpp"
#include "moeroute/cache/compare.hpp"
#include "moeroute/cache/prefetch.hpp"
#include "moeroute/cache/simulate.hpp"
#include "moeroute/io/routing_trace.hpp"

using namespace moeroute;

namespace {

std::string trace_path(const std::string& name) {
  return std::string(MOEROUTE_TEST_DATA_DIR) + "/traces/" + name + ".jsonl";
}

const routing_trace& mixtral() {
  static const routing_trace t = read_routing_trace_jsonl(trace_path("mixtral-8x7b_humaneval_routing"));
  return t;
}

routing_trace parse(const std::string& text) {
  std::istringstream in(text);
  return parse_routing_trace_jsonl(in, "hand.jsonl");
}

// One record per line "layer: e e e".
routing_trace trace_of(const std::vector<std::pair<int, std::vector<int>>>& recs) {
  std::string s;
  for (const auto& r : recs) {
    s += "{\"layer\": " + std::to_string(r.first) + ", \"experts\": [";
    for (std::size_t i = 0; i < r.second.size(); ++i) s += (i ? "," : "") + std::to_string(r.second[i]);
    s += "]}\n";
  }
  return parse(s);
}

std::vector<cache_ref::access> accesses_of(const routing_trace& t) {
  std::vector<cache_ref::access> a;
  for (std::size_t r = 0; r < t.size(); ++r)
    for (auto i = t.offsets[r]; i < t.offsets[r + 1]; ++i) a.push_back({t.layer[r], t.experts[i], r});
  return a;
}

cache_sim_result run(const std::string& policy, const routing_trace& t, std::size_t cap,
                     const cache_sim_options& o = {}) {
  return simulate_cache_named(policy, t, {cap}, o).at(0);
}

std::set<std::pair<int, int>> pin_list(const residency_set& s) {
  std::set<std::pair<int, int>> out;
  s.for_each([&](int l, int e) { out.insert({l, e}); });
  return out;
}

// A small deterministic generator for the random-trace tests: rnd(n) is in [0, n).
struct lcg {
  explicit lcg(std::uint64_t seed) : state(seed) {}
  std::uint64_t operator()(std::uint64_t n) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (state >> 33) % n;
  }
  std::uint64_t state;
};

}  // namespace

// Single layer, accesses 0 1 2 0 3 0 1, capacity 3 (worked by hand):
// lru: 3 evicts 1, last 1 evicts 2 -> hits at the two 0s = 2; fifo: 3 evicts 0, 0 evicts 1,
// 1 evicts 2 -> 1 hit; lfu: 3 evicts 1 (count 1, older than 2), 1 evicts 2 -> 2 hits;
// belady: 3 evicts 2 (never used again) -> 0 and 1 hit = 3 hits.
TEST(CacheSimHand, FourPoliciesOnAShortTrace) {
  const auto t = trace_of({{0, {0, 1}}, {0, {2}}, {0, {0}}, {0, {3}}, {0, {0}}, {0, {1}}});
  EXPECT_EQ(run("lru", t, 3).hits, 2u);
  EXPECT_EQ(run("fifo", t, 3).hits, 1u);
  EXPECT_EQ(run("lfu", t, 3).hits, 2u);
  EXPECT_EQ(run("belady", t, 3).hits, 3u);
  EXPECT_EQ(run("lru", t, 3).misses, 5u);
  EXPECT_EQ(run("lru", t, 3).accesses, 7u);
}

// 0 0 0 1 2 1 3 0, capacity 3: at 3, lru evicts 0 (oldest access) and misses the final 0 -> 3 hits;
// lfu evicts 2 (one access) and hits it -> 4 hits; fifo evicts 0 (loaded first) -> 3 hits.
TEST(CacheSimHand, LfuKeepsTheFrequentCell) {
  const auto t = trace_of({{0, {0}}, {0, {0}}, {0, {0}}, {0, {1}}, {0, {2}}, {0, {1}}, {0, {3}}, {0, {0}}});
  EXPECT_EQ(run("lru", t, 3).hits, 3u);
  EXPECT_EQ(run("lfu", t, 3).hits, 4u);
  EXPECT_EQ(run("fifo", t, 3).hits, 3u);
  EXPECT_EQ(run("belady", t, 3).hits, 4u);
}

// Records [1], [0], [2, 1] with capacity 2. Access by access, loading 2 evicts 1 (LRU) and then 1
// misses; with protect_batch the victim is 0 and 1 hits.
TEST(CacheSimHand, ReplayIsAccessByAccessInsideARecord) {
  const auto t = trace_of({{0, {1}}, {0, {0}}, {0, {2, 1}}});
  EXPECT_EQ(run("lru", t, 2).hits, 0u);
  cache_sim_options o;
  o.protect_batch = true;
  EXPECT_EQ(run("lru", t, 2, o).hits, 1u);
}

// Two layers. Per layer with 1 cell each: layer 0 sees 0 0 (1 hit), layer 1 sees 0 1 0 (0 hits).
// Global with 2 cells: (0,0) (1,0) (0,0)hit (1,1) evicts (1,0) -> (1,0) misses: 1 hit.
TEST(CacheSimHand, PerLayerAndGlobalScope) {
  const auto t = trace_of({{0, {0}}, {1, {0}}, {0, {0}}, {1, {1}}, {1, {0}}});
  cache_sim_options pl;
  pl.scope = cache_scope::per_layer;
  EXPECT_EQ(run("lru", t, 1, pl).hits, 1u);
  EXPECT_EQ(run("lru", t, 1).hits, 0u);
  EXPECT_EQ(run("lru", t, 2).hits, 1u);
}

TEST(CacheSimHand, PinnedCellsHitAndTakeCapacity) {
  const auto t = trace_of({{0, {0}}, {0, {1}}, {0, {1}}, {0, {0}}});
  cache_sim_options o;
  o.pinned = residency_set(1, 2);
  o.pinned.insert(0, 0);
  o.cell_bytes = 1000;
  // pinned == capacity: nothing else is ever loaded; every access to expert 1 misses.
  const auto r = run("lru", t, 1, o);
  EXPECT_EQ(r.accesses, 4u);
  EXPECT_EQ(r.hits, 2u);
  EXPECT_EQ(r.misses, 2u);
  EXPECT_EQ(r.bytes_loaded, 2000u);
  // one free cell: expert 1 stays after its first load.
  EXPECT_EQ(run("lru", t, 2, o).hits, 3u);
  EXPECT_EQ(run("lru", t, 2, o).bytes_loaded, 1000u);
  // more pinned cells than capacity is bad input, also per layer.
  o.pinned.insert(0, 1);
  try {
    run("lru", t, 1, o);
    FAIL() << "expected bad_input";
  } catch (const error& e) {
    EXPECT_EQ(e.code(), errc::bad_input);
  }
  o.scope = cache_scope::per_layer;
  EXPECT_THROW(run("fifo", t, 1, o), error);
}

TEST(CacheSimHand, KeepLayerPinsEveryExpertOfTheLayer) {
  // A hybrid policy's keep_layers arrives as whole rows of the pinned set.
  const auto t = trace_of({{0, {0, 1, 2}}, {1, {0}}, {0, {2, 1, 0}}, {1, {1}}});
  cache_sim_options o;
  o.pinned = residency_set(2, 3);
  o.pinned.insert_layer(0);
  const auto r = run("lru", t, 4, o);  // 3 pinned + 1 free cell for layer 1
  EXPECT_EQ(r.hits, 6u);
  EXPECT_EQ(r.misses, 2u);
}

TEST(CacheSimHand, BlankLinesAndEmptyExpertLists) {
  const auto t = parse("{\"layer\": 0, \"experts\": [1]}\n\n   \n{\"layer\": 1, \"experts\": []}\n{\"layer\": 0, \"experts\": [1]}\n");
  const auto r = run("lru", t, 1);
  EXPECT_EQ(r.accesses, 2u);
  EXPECT_EQ(r.hits, 1u);
  EXPECT_EQ(run("belady", t, 1).hits, 1u);
}

TEST(CacheSimHand, ImplausibleShapeIsRejectedBeforeAllocating) {
  const auto t = parse("{\"layer\": 65535, \"experts\": [65535]}\n");
  try {
    run("lru", t, 4);
    FAIL() << "expected bad_input";
  } catch (const error& e) {
    EXPECT_EQ(e.code(), errc::bad_input);
    EXPECT_NE(e.message().find("65536 layers x 65536 experts"), std::string::npos) << e.message();
  }
  EXPECT_THROW(lru_hit_curve(t, 4), error);
  EXPECT_THROW(opt_hit_curve(t, 4), error);
}

TEST(CacheSimHand, ResultsInCapacityOrderAndUnknownPolicy) {
  const auto& t = mixtral();
  const auto rs = simulate_cache_named("lru", t, {102, 13, 51});
  ASSERT_EQ(rs.size(), 3u);
  EXPECT_EQ(rs[0].capacity, 102u);
  EXPECT_EQ(rs[1].capacity, 13u);
  EXPECT_EQ(rs[2].capacity, 51u);
  EXPECT_EQ(rs[1].hits, run("lru", t, 13).hits);
  EXPECT_THROW(simulate_cache_named("mru", t, {5}), error);
}

// The four contract policies against the reference on the shipped Mixtral trace.
struct RefCase {
  const char* policy;
  bool per_layer;
  bool pinned;
  bool protect;
};

class CacheSimVsReference : public ::testing::TestWithParam<RefCase> {};

TEST_P(CacheSimVsReference, MixtralHitsMatch) {
  const auto p = GetParam();
  const auto& t = mixtral();
  const auto acc = accesses_of(t);
  cache_sim_options o;
  o.scope = p.per_layer ? cache_scope::per_layer : cache_scope::global;
  o.protect_batch = p.protect;
  if (p.pinned) {
    o.pinned = residency_set(t.num_layers(), t.num_experts());
    for (int l = 0; l < t.num_layers(); l += 3) o.pinned.insert(l, (l * 5) % 8);  // 11 cells, 1 per layer max
  }
  const std::vector<std::size_t> caps = p.per_layer ? std::vector<std::size_t>{1, 2, 3, 5, 8, 9}
                                                    : std::vector<std::size_t>{11, 13, 26, 51, 102, 200, 300};
  for (auto cap : caps) {
    const auto got = run(p.policy, t, cap, o);
    const auto want = cache_ref::simulate(acc, p.policy, cap, p.per_layer, pin_list(o.pinned), p.protect);
    EXPECT_EQ(got.accesses, want.accesses) << p.policy << " cap " << cap;
    EXPECT_EQ(got.hits, want.hits) << p.policy << " cap " << cap;
    EXPECT_EQ(got.misses, want.misses) << p.policy << " cap " << cap;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Policies, CacheSimVsReference,
    ::testing::Values(RefCase{"lru", false, false, false}, RefCase{"fifo", false, false, false},
                      RefCase{"lfu", false, false, false}, RefCase{"belady", false, false, false},
                      RefCase{"lru", true, false, false}, RefCase{"fifo", true, false, false},
                      RefCase{"lfu", true, false, false}, RefCase{"belady", true, false, false},
                      RefCase{"lru", false, true, false}, RefCase{"fifo", false, true, false},
                      RefCase{"lfu", false, true, false}, RefCase{"belady", false, true, false},
                      RefCase{"lru", true, true, false}, RefCase{"lfu", true, true, false},
                      RefCase{"belady", true, true, false}, RefCase{"lru", false, false, true},
                      RefCase{"fifo", false, false, true}, RefCase{"lfu", false, true, true},
                      RefCase{"lfru", false, false, false}, RefCase{"lfru", true, false, false},
                      RefCase{"lfru", false, true, false}, RefCase{"lfru", true, true, true},
                      RefCase{"least-stale", false, false, false}, RefCase{"least-stale", true, false, false},
                      RefCase{"least-stale", false, true, false}, RefCase{"least-stale", true, true, true}),
    [](const ::testing::TestParamInfo<RefCase>& i) {
      std::string name = i.param.policy;
      for (auto& ch : name)
        if (ch == '-') ch = '_';
      return name + (i.param.per_layer ? "_perlayer" : "_global") +
             (i.param.pinned ? "_pinned" : "") + (i.param.protect ? "_protect" : "");
    });

// The issue's reference figures at 10% of all cells (layers present in the trace x experts,
// rounded): LRU 0.1% / 48.9% / 10.0%, Belady 33.9% / 63.9% / 35.2%.
TEST(CacheSimFigures, IssueReferenceFiguresAtTenPercent) {
  struct fig {
    const char* name;
    double lru, belady;
  };
  for (const fig& f : {fig{"mixtral-8x7b_humaneval_routing", 0.1, 33.9}, fig{"qwen1.5-moe-a2.7b_gsm8k_vllm", 48.9, 63.9},
                       fig{"flame-moe-290m_pretrain_decode10", 10.0, 35.2}}) {
    const auto t = read_routing_trace_jsonl(trace_path(f.name));
    std::set<int> layers(t.layer.begin(), t.layer.end());
    const auto cells = static_cast<double>(layers.size()) * t.num_experts();
    const auto cap = static_cast<std::size_t>(std::llround(0.10 * cells));
    EXPECT_NEAR(100.0 * run("lru", t, cap).hit_rate(), f.lru, 0.05) << f.name;
    EXPECT_NEAR(100.0 * run("belady", t, cap).hit_rate(), f.belady, 0.05) << f.name;
  }
}

// Belady is optimal: no policy beats it on the same trace and capacity.
TEST(CacheSimFigures, NoPolicyBeatsBelady) {
  const auto& t = mixtral();
  for (std::size_t cap : {5, 13, 26, 51, 102, 180}) {
    const auto opt = run("belady", t, cap).hits;
    for (const auto& p : cache_policy_names()) EXPECT_LE(run(p, t, cap).hits, opt) << p << " cap " << cap;
  }
}

// layer-cycle is measured against LRU on the real traces (docs/cache.md); on Mixtral it must win
// clearly at every small capacity.
TEST(CacheSimFigures, LayerCycleBeatsLruOnMixtral) {
  const auto& t = mixtral();
  for (std::size_t cap : {13, 26, 51, 102})
    EXPECT_GT(run("layer-cycle", t, cap).hits, run("lru", t, cap).hits + 200) << cap;
}

// Mattson's one-pass curve equals per-capacity LRU replay at every capacity.
TEST(CacheSimCurves, MattsonEqualsLruReplayAtEveryCapacity) {
  const auto& t = mixtral();
  for (int variant = 0; variant < 4; ++variant) {
    cache_sim_options o;
    o.scope = variant & 1 ? cache_scope::per_layer : cache_scope::global;
    if (variant & 2) {
      o.pinned = residency_set(t.num_layers(), t.num_experts());
      for (int l = 0; l < t.num_layers(); l += 2) o.pinned.insert(l, l % 8);
    }
    const std::size_t top = cache_useful_capacity(t, o) + 2;
    const auto curve = lru_hit_curve(t, top, o);
    EXPECT_EQ(curve.accesses, t.num_accesses());
    for (std::size_t cap = curve.min_capacity; cap <= top; ++cap)
      EXPECT_EQ(curve.hits[cap], run("lru", t, cap, o).hits) << "variant " << variant << " cap " << cap;
  }
}

TEST(CacheSimCurves, MattsonOnFlameAndOptCurve) {
  const auto t = read_routing_trace_jsonl(trace_path("flame-moe-290m_pretrain_decode10"));
  const std::size_t top = cache_useful_capacity(t);
  const auto curve = lru_hit_curve(t, top);
  for (std::size_t cap = 1; cap <= top; cap += 23) EXPECT_EQ(curve.hits[cap], run("lru", t, cap).hits) << cap;
  EXPECT_EQ(curve.hits[top], run("lru", t, top + 50).hits);  // flat beyond the useful capacity
  const auto opt = opt_hit_curve(mixtral(), 60);
  for (std::size_t cap : {1, 7, 26, 60}) EXPECT_EQ(opt.hits[cap], run("belady", mixtral(), cap).hits);
  for (std::size_t cap = 2; cap <= 60; ++cap) EXPECT_GE(opt.hits[cap], opt.hits[cap - 1]);
}

TEST(CacheSimCurves, CapacityBeyondCellsIsFine) {
  const auto& t = mixtral();
  const auto acc = accesses_of(t);
  std::set<std::pair<int, int>> distinct;
  for (const auto& a : acc) distinct.insert({a.layer, a.expert});
  const auto r = run("fifo", t, 100000);
  EXPECT_EQ(r.misses, distinct.size());  // cold misses only
  EXPECT_EQ(r.hits, acc.size() - distinct.size());
}

// The one-pass OPT curve against per-capacity Belady replay of the plain reference simulator, on
// random traces (skewed and uniform ids, records of 1-4 experts), both scopes, with and without
// pinned cells, at every capacity from the pinned count to past the useful capacity.
TEST(CacheSimCurves, OnePassOptCurveEqualsBeladyReplayAtEveryCapacity) {
  lcg rnd(12345);
  for (int trial = 0; trial < 24; ++trial) {
    const int L = 1 + static_cast<int>(rnd(4)), E = 2 + static_cast<int>(rnd(12));
    const bool skew = trial % 2 == 0;
    std::vector<std::pair<int, std::vector<int>>> recs;
    const int n = 20 + static_cast<int>(rnd(120));
    for (int r = 0; r < n; ++r) {
      std::vector<int> ids;
      const int k = 1 + static_cast<int>(rnd(4));
      for (int i = 0; i < k && static_cast<int>(ids.size()) < E; ++i) {
        int e = skew ? static_cast<int>(rnd(static_cast<std::uint64_t>(1 + rnd(static_cast<std::uint64_t>(E)))))
                     : static_cast<int>(rnd(static_cast<std::uint64_t>(E)));
        while (std::find(ids.begin(), ids.end(), e) != ids.end()) e = (e + 1) % E;
        ids.push_back(e);
      }
      recs.push_back({static_cast<int>(rnd(static_cast<std::uint64_t>(L))), ids});
    }
    const auto t = trace_of(recs);
    const auto acc = accesses_of(t);
    for (const bool per_layer : {false, true}) {
      for (const bool with_pins : {false, true}) {
        cache_sim_options o;
        o.scope = per_layer ? cache_scope::per_layer : cache_scope::global;
        std::set<std::pair<int, int>> pins;
        if (with_pins) {
          o.pinned = residency_set(t.num_layers(), t.num_experts());
          o.pinned.insert(0, 0);
          pins.insert({0, 0});
        }
        const std::size_t top = cache_useful_capacity(t, o) + 2;
        const auto curve = opt_hit_curve(t, top, o);
        ASSERT_EQ(curve.hits.size(), top + 1);
        for (std::size_t cap = curve.min_capacity; cap <= top; ++cap) {
          if (cap == 0) continue;
          const auto ref = cache_ref::simulate(acc, "belady", cap, per_layer, pins, false);
          EXPECT_EQ(curve.hits[cap], ref.hits) << "trial " << trial << " cap " << cap << " per_layer "
                                               << per_layer << " pins " << with_pins;
        }
      }
    }
  }
}

// Single layer, accesses 0 1 0 2 3 2 0, capacity 2 (lfru worked by hand, score = count / age):
// t2 hits 0 (count 2); t3 miss 2: 0 scores 2/2, 1 scores 1/3 -> evict 1; t4 miss 3: 0 scores 2/3,
// 2 scores 1/2 -> evict 2; t5 miss 2: 0 scores 2/4, 3 scores 1/2, a tie -> the least recently
// accessed, 0, goes; t6 misses 0: 1 hit. LRU: t4 evicts 0, t5 hits 2, t6 misses: 2 hits.
TEST(CacheSimHand, LfruScoresFrequencyOverAge) {
  const auto t = trace_of({{0, {0}}, {0, {1}}, {0, {0}}, {0, {2}}, {0, {3}}, {0, {2}}, {0, {0}}});
  EXPECT_EQ(run("lfru", t, 2).hits, 1u);
  EXPECT_EQ(run("lru", t, 2).hits, 2u);
}

// Two layers, capacity 3; a pass starts where the layer goes back to 0. Cells a=(0,0) b=(1,0)
// c=(0,1) d=(1,1), records a b | c b | a d | c (by hand): a b c load; b hits (pass 1); a hits
// (pass 2); d misses with a b c resident: a is fresh, b and c are stale (pass 1) and b was loaded
// first -> least-stale evicts b and the final c hits: 3 hits. LRU evicts c (accessed before b and
// a) and the final c misses: 2 hits.
TEST(CacheSimHand, LeastStaleEvictsEarlierPassesFirstInLoadOrder) {
  const auto t = trace_of({{0, {0}}, {1, {0}}, {0, {1}}, {1, {0}}, {0, {0}}, {1, {1}}, {0, {1}}});
  const auto acc = accesses_of(t);
  for (std::size_t cap : {2, 3})
    for (const char* p : {"least-stale", "lru"})
      EXPECT_EQ(run(p, t, cap).hits, cache_ref::simulate(acc, p, cap, false, {}, false).hits) << p << cap;
  EXPECT_EQ(run("least-stale", t, 3).hits, 3u);
  EXPECT_EQ(run("lru", t, 3).hits, 2u);
}

// The recommended policy against the reference written from its contract.
TEST(CacheSimVsReferenceRecommended, MixtralAndFlame) {
  const auto& t = mixtral();
  const auto acc = accesses_of(t);
  for (const bool per_layer : {false, true})
    for (const bool pinned : {false, true})
      for (const bool protect : {false, true}) {
        cache_sim_options o;
        o.scope = per_layer ? cache_scope::per_layer : cache_scope::global;
        o.protect_batch = protect;
        if (pinned) {
          o.pinned = residency_set(t.num_layers(), t.num_experts());
          for (int l = 0; l < t.num_layers(); l += 3) o.pinned.insert(l, (l * 5) % 8);
        }
        const auto caps = per_layer ? std::vector<std::size_t>{1, 2, 3, 5} : std::vector<std::size_t>{13, 26, 51, 102, 200};
        for (auto cap : caps) {
          const auto got = run("recommended", t, cap, o);
          // recommended serves a record at a time (serves_record): protected with or without the option
          const auto want = cache_ref::simulate_recommended(acc, cap, per_layer, pin_list(o.pinned), true);
          EXPECT_EQ(got.hits, want.hits) << per_layer << pinned << protect << " cap " << cap;
          EXPECT_EQ(got.misses, want.misses) << per_layer << pinned << protect << " cap " << cap;
        }
      }
  // FLAME-MoE, first 1200 records (64 experts, top-6), both scopes.
  const auto flame = read_routing_trace_jsonl(trace_path("flame-moe-290m_pretrain_decode10"));
  routing_trace part;
  for (std::size_t r = 0; r < 1200; ++r) {
    part.layer.push_back(flame.layer[r]);
    part.token.push_back(flame.token[r]);
    for (auto i = flame.offsets[r]; i < flame.offsets[r + 1]; ++i) part.experts.push_back(flame.experts[i]);
    part.offsets.push_back(static_cast<std::uint32_t>(part.experts.size()));
  }
  const auto facc = accesses_of(part);
  for (const bool per_layer : {false, true}) {
    cache_sim_options o;
    o.scope = per_layer ? cache_scope::per_layer : cache_scope::global;
    for (std::size_t cap : per_layer ? std::vector<std::size_t>{6, 13} : std::vector<std::size_t>{51, 102})
      EXPECT_EQ(run("recommended", part, cap, o).hits,
                cache_ref::simulate_recommended(facc, cap, per_layer, {}, true).hits)
          << per_layer << " " << cap;
  }
}

// Held-out halves: the prefix replays identically, so counting from record n/2 gives the full
// counts minus those of a replay of the first n/2 records (online policies), for every scope.
TEST(CacheSimHeldOut, CountFromRecordCountsTheSecondHalf) {
  const auto& t = mixtral();
  routing_trace first;
  const std::size_t half = t.size() / 2;
  for (std::size_t r = 0; r < half; ++r) {
    first.layer.push_back(t.layer[r]);
    first.token.push_back(t.token[r]);
    for (auto i = t.offsets[r]; i < t.offsets[r + 1]; ++i) first.experts.push_back(t.experts[i]);
    first.offsets.push_back(static_cast<std::uint32_t>(first.experts.size()));
  }
  for (const char* p : {"lru", "layer-cycle", "lfru", "least-stale", "recommended"})
    for (const auto scope : {cache_scope::global, cache_scope::per_layer}) {
      cache_sim_options o, h;
      o.scope = h.scope = scope;
      h.count_from_record = half;
      const std::size_t cap = scope == cache_scope::global ? 26 : 2;
      const auto full = run(p, t, cap, o), head = run(p, first, cap, o), tail = run(p, t, cap, h);
      EXPECT_EQ(tail.accesses, full.accesses - head.accesses) << p;
      EXPECT_EQ(tail.hits, full.hits - head.hits) << p;
      EXPECT_EQ(tail.misses, full.misses - head.misses) << p;
    }
  cache_sim_options none;
  none.count_from_record = t.size();
  EXPECT_EQ(run("lru", t, 26, none).accesses, 0u);
}

// Co-activation predictor, by hand: layer 0 -> layer 1 records (0: [0, 1] then 1: [2]) and
// (0: [0] then 1: [3]): from expert 0, 2 and 3 each followed once in 2 records -> 1/2 each; from
// expert 1, 2 followed in its only record -> 1. predict(0, [0, 1]) = mean: 2 -> 3/4, 3 -> 1/4.
TEST(CachePrefetch, CoactivationPredictorByHand) {
  coactivation_predictor p(2, 4);
  std::vector<std::pair<std::int32_t, double>> out;
  const std::int32_t r0[] = {0, 1}, r1[] = {2}, r2[] = {0}, r3[] = {3};
  EXPECT_EQ(p.predict(0, r0, 2, out), -1);  // nothing follows layer 0 yet
  p.observe(0, r0, 2);
  p.observe(1, r1, 1);
  p.observe(0, r2, 1);
  p.observe(1, r3, 1);
  ASSERT_EQ(p.predict(0, r0, 2, out), 1);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].first, 2);
  EXPECT_DOUBLE_EQ(out[0].second, 0.75);
  EXPECT_EQ(out[1].first, 3);
  EXPECT_DOUBLE_EQ(out[1].second, 0.25);
  // Layer 1 is followed by layer 0: from (1, 2), expert 0 followed in its only record.
  ASSERT_EQ(p.predict(1, r1, 1, out), 0);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, 0);
  EXPECT_DOUBLE_EQ(out[0].second, 1.0);
  const std::int32_t bad[] = {4};
  EXPECT_THROW(p.observe(0, bad, 1), error);
  EXPECT_THROW(p.predict(2, r0, 2, out), error);
}

// Prefetch replay: with a threshold no prediction reaches, it is simulate_cache<recommended>; with
// prefetch, every access is a hit or a miss and loads = misses + prefetch loads.
TEST(CachePrefetch, ReplayCountsPrefetchLoads) {
  const auto& t = mixtral();
  for (const auto scope : {cache_scope::global, cache_scope::per_layer}) {
    cache_sim_options o;
    o.scope = scope;
    o.cell_bytes = 7;
    const std::vector<std::size_t> caps = scope == cache_scope::global ? std::vector<std::size_t>{26, 51}
                                                                         : std::vector<std::size_t>{2, 4};
    const auto off = simulate_cache_prefetch(t, caps, o, 2.0);
    const auto plain = simulate_cache<recommended_eviction>(t, caps, o);
    const auto on = simulate_cache_prefetch(t, caps, o);
    for (std::size_t i = 0; i < caps.size(); ++i) {
      EXPECT_EQ(off[i].hits, plain[i].hits);
      EXPECT_EQ(off[i].prefetch_loads, 0u);
      EXPECT_EQ(on[i].accesses, t.num_accesses());
      EXPECT_EQ(on[i].hits + on[i].misses, on[i].accesses);
      EXPECT_GT(on[i].prefetch_loads, 0u);
      EXPECT_EQ(on[i].bytes_loaded, (on[i].misses + on[i].prefetch_loads) * 7);
      // Belady's misses bound the loads of any policy from below.
      EXPECT_GE(on[i].loads(), simulate_cache<belady_eviction>(t, caps[i], o).misses);
    }
  }
  cache_sim_options pinned;
  pinned.pinned = residency_set(t.num_layers(), t.num_experts());
  pinned.pinned.insert(0, 0);
  EXPECT_THROW(simulate_cache_prefetch(t, {26}, pinned), error);
}

// Prefetch accounting on a tiny trace, worked by hand. Two layers of two experts, per-layer caches
// of one cell (so every eviction is forced), tokens alternate expert 0 and expert 1 at both layers:
// L0[0] L1[0] L0[1] L1[1] L0[0] L1[0] L0[1] L1[1]. The first four records miss (nothing to
// predict from: the predictor has not yet seen what followed those experts). After L0[0] (record
// 4) the predictor has seen (L0,0) followed by (L1,0) once: p = 1, so it prefetches (L1,0), evicting
// (L1,1); record 5 hits it. Likewise (L1,0) -> (L0,1), (L0,1) -> (L1,1) and, after the last record,
// (L1,1) -> (L0,0), a load never used. Accesses 8, hits 3, misses = stalls 5, prefetch loads 4,
// loads 9, bytes 9 x 10. LRU and Belady with one cell per layer miss all 8 (no cell repeats before
// the other expert of its layer): prefetching trades one more load for three fewer stalls.
TEST(CachePrefetch, HandComputedTinyTrace) {
  const auto t = trace_of({{0, {0}}, {1, {0}}, {0, {1}}, {1, {1}}, {0, {0}}, {1, {0}}, {0, {1}}, {1, {1}}});
  cache_sim_options o;
  o.scope = cache_scope::per_layer;
  o.cell_bytes = 10;
  const auto r = simulate_cache_prefetch(t, {1}, o).at(0);
  EXPECT_EQ(r.accesses, 8u);
  EXPECT_EQ(r.hits, 3u);
  EXPECT_EQ(r.misses, 5u);
  EXPECT_EQ(r.stalls(), 5u);
  EXPECT_EQ(r.prefetch_loads, 4u);
  EXPECT_EQ(r.loads(), 9u);
  EXPECT_EQ(r.bytes_loaded, 90u);
  EXPECT_EQ(run("lru", t, 1, o).loads(), 8u);
  EXPECT_EQ(run("belady", t, 1, o).loads(), 8u);
  // Second half held out (records 4..7): record 4 misses, the other three hit, and all four
  // prefetches are issued after counting starts.
  o.count_from_record = 4;
  const auto h = simulate_cache_prefetch(t, {1}, o).at(0);
  EXPECT_EQ(h.accesses, 4u);
  EXPECT_EQ(h.hits, 3u);
  EXPECT_EQ(h.misses, 1u);
  EXPECT_EQ(h.prefetch_loads, 4u);
  // The engine-side call gives the same choice: after L0[0] at record 4, (L1,0) with p = 1.
  coactivation_predictor p(2, 2);
  std::vector<std::pair<std::int32_t, double>> out;
  for (std::size_t i = 0; i < 5; ++i)
    p.observe(t.layer[i], t.experts.data() + t.offsets[i], t.offsets[i + 1] - t.offsets[i]);
  const std::int32_t zero[] = {0};
  ASSERT_EQ(p.prefetch_candidates(0, zero, 1, 0.5, 1, out), 1);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].first, 0);
  EXPECT_DOUBLE_EQ(out[0].second, 1.0);
  EXPECT_EQ(p.prefetch_candidates(0, zero, 1, 0.5, 0, out), 1);
  EXPECT_TRUE(out.empty());
}

// The comparison's gap closure and capacities, by hand.
TEST(CacheCompare, GapClosureAndCapacities) {
  EXPECT_DOUBLE_EQ(cache_gap_closure(100, 75, 50), 0.5);
  EXPECT_DOUBLE_EQ(cache_gap_closure(100, 110, 50), -0.2);
  EXPECT_TRUE(std::isnan(cache_gap_closure(10, 10, 10)));
  const auto& t = mixtral();
  EXPECT_EQ(cache_compare_cells(t, cache_scope::global), 256u);
  EXPECT_EQ(cache_compare_cells(t, cache_scope::per_layer), 8u);
  EXPECT_EQ(cache_compare_capacity(256, 10), 26u);
  EXPECT_EQ(cache_compare_capacity(8, 1), 1u);
  const auto rows = cache_compare(t, cache_scope::global, {10});
  ASSERT_EQ(rows.size(), 1u);
  ASSERT_EQ(rows[0].entries.size(), cache_compare_policies().size());
  EXPECT_EQ(rows[0].entries.front().full.misses, run("lru", t, 26).misses);
  EXPECT_EQ(rows[0].entries.back().full.misses, run("belady", t, 26).misses);
  // First half: the first size() / 2 records replayed alone.
  const auto head = cache_trace_head(t, t.size() / 2);
  ASSERT_EQ(head.size(), t.size() / 2);
  EXPECT_EQ(head.num_accesses(), t.offsets[t.size() / 2]);
  EXPECT_EQ(rows[0].entries.front().first_half.misses, run("lru", head, 26).misses);
  EXPECT_EQ(rows[0].entries[1].first_half.misses, run("fifo", head, 26).misses);
}

// The recommended policy never loads more than LRU on Mixtral at any capacity from 1% to 80% of
// the cells, in both scopes (docs/cache.md has the figures for every shipped trace).
TEST(CacheSimFigures, RecommendedNoWorseThanLruOnMixtral) {
  for (const auto scope : {cache_scope::global, cache_scope::per_layer}) {
    std::size_t at = 0;
    EXPECT_LE(cache_compare_worst_vs_lru("recommended", mixtral(), scope, 1, 80, 1, at), 0) << at;
  }
  // FLAME-MoE's first half, global, at 10% of the cells (51): the capacity where the miss decay of
  // 1/1024 loaded more than LRU (docs/cache.md, the choice of the decay). One capacity: cheap.
  const auto flame = cache_trace_head(read_routing_trace_jsonl(trace_path("flame-moe-290m_pretrain_decode10")), 2560);
  EXPECT_LE(run("recommended", flame, 51).misses, run("lru", flame, 51).misses);
}

// layer-cycle (ordered sets per layer) against a plain scan of its documented rule on random
// traces, including one wide layer: victim from the most recently visited layer that has a
// resident cell (the access's own layer last); within it cells not accessed in the layer's latest
// visit first, then fewest accesses since the start, then least recently accessed.
TEST(CacheSimLayerCycle, OrderedSetsMatchAPlainScanOfTheRule) {
  lcg rnd(99);
  for (int trial = 0; trial < 30; ++trial) {
    const int L = 1 + static_cast<int>(rnd(4)), E = 2 + static_cast<int>(rnd(trial % 3 == 0 ? 300 : 10));
    std::vector<std::pair<int, std::vector<int>>> recs;
    for (int r = 0; r < 150; ++r) {
      const int e0 = static_cast<int>(rnd(static_cast<std::uint64_t>(E)));
      std::vector<int> ids{e0};
      if (E > 1 && rnd(2)) ids.push_back((e0 + 1 + static_cast<int>(rnd(static_cast<std::uint64_t>(E - 1)))) % E);
      recs.push_back({static_cast<int>(rnd(3) ? r % L : rnd(static_cast<std::uint64_t>(L))), ids});
    }
    const auto t = trace_of(recs);
    const auto acc = accesses_of(t);
    for (std::size_t cap : {std::size_t{1}, std::size_t{2}, std::size_t{5}, std::size_t{17}}) {
      struct cell {
        int l, e;
        std::uint64_t last;
      };
      std::vector<cell> res;
      std::map<std::pair<int, int>, std::uint64_t> count;
      std::vector<int> visits;  // layers, most recent visit first
      std::map<int, std::uint64_t> visit_start;
      int current = -1;
      std::uint64_t hits = 0;
      for (std::uint64_t time = 0; time < acc.size(); ++time) {
        const int l = acc[time].layer, e = acc[time].expert;
        auto it = std::find_if(res.begin(), res.end(), [&](const cell& c) { return c.l == l && c.e == e; });
        if (it != res.end()) {
          ++hits;
        } else if (res.size() == cap) {
          std::vector<int> order;
          for (int v : visits)
            if (v != l) order.push_back(v);
          order.push_back(l);
          bool done = false;
          for (int v : order) {
            int best = -1;
            for (std::size_t i = 0; i < res.size(); ++i) {
              if (res[i].l != v) continue;
              const bool stale = res[i].last < visit_start[v];
              if (best < 0) {
                best = static_cast<int>(i);
                continue;
              }
              const auto& b = res[static_cast<std::size_t>(best)];
              const bool bstale = b.last < visit_start[v];
              const auto ci = count[{res[i].l, res[i].e}], cb = count[{b.l, b.e}];
              if ((stale && !bstale) || (stale == bstale && (ci < cb || (ci == cb && res[i].last < b.last))))
                best = static_cast<int>(i);
            }
            if (best >= 0) {
              res.erase(res.begin() + best);
              done = true;
              break;
            }
          }
          ASSERT_TRUE(done);
        }
        // touch: count, time, a new visit when the layer changes
        ++count[{l, e}];
        if (l != current) {
          current = l;
          visit_start[l] = time;
          visits.erase(std::remove(visits.begin(), visits.end(), l), visits.end());
          visits.insert(visits.begin(), l);
        }
        it = std::find_if(res.begin(), res.end(), [&](const cell& c) { return c.l == l && c.e == e; });
        if (it == res.end()) res.push_back({l, e, time});
        else it->last = time;
      }
      EXPECT_EQ(run("layer-cycle", t, cap).hits, hits) << "trial " << trial << " cap " << cap;
    }
  }
}
