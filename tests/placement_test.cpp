// Expert placement: DeepSeek EPLB against its published README example and hand-worked packing,
// the replay against a plain reference loop, the SGLang and vLLM files against what those engines'
// loaders require, SGLang's logical_count input, and moeroute's step-balanced placement on a
// workload whose co-firing experts EPLB cannot see.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "expect_error.hpp"
#include "moeroute/placement/eplb.hpp"
#include "moeroute/placement/formats.hpp"
#include "moeroute/placement/load_sources.hpp"
#include "moeroute/placement/replay.hpp"
#include "moeroute/placement/step_balance.hpp"

namespace {

using moeroute::expert_placement;
using moeroute::load_table;
using moeroute::placement_options;

// DeepSeek EPLB README: 2 layers x 12 experts, 16 replicas, 4 groups, 2 nodes, 8 GPUs.
const load_table kReadmeWeight{{90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86},
                               {20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27}};
const std::vector<std::vector<std::int32_t>> kReadmeMap{{5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1},
                                                        {7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1}};

placement_options opts(int gpus, int nodes, int groups, int redundant) {
  placement_options o;
  o.gpus = gpus;
  o.nodes = nodes;
  o.groups = groups;
  o.redundant = redundant;
  return o;
}

moeroute::routing_trace make_trace(const std::vector<std::pair<int, std::vector<int>>>& recs) {
  moeroute::routing_trace t;
  for (const auto& r : recs) {
    t.layer.push_back(r.first);
    t.token.push_back(-1);
    for (int e : r.second) t.experts.push_back(e);
    t.offsets.push_back(static_cast<std::uint32_t>(t.experts.size()));
  }
  return t;
}

// The replay written the plain way: per layer, per step, a map from GPU to its accesses.
struct ref_result {
  double bal = 0, max_load = 0;
  std::uint64_t off = 0;
  std::size_t steps = 0;
};
ref_result reference_replay(const expert_placement& p, const moeroute::routing_trace& t, std::size_t batch,
                            bool least_loaded) {
  const int per_gpu = p.num_physical() / p.num_gpus;
  ref_result r;
  double sum_bal = 0, sum_max = 0;
  for (int l = 0; l < t.num_layers(); ++l) {
    std::vector<std::size_t> recs;
    for (std::size_t i = 0; i < t.size(); ++i)
      if (t.layer[i] == l) recs.push_back(i);
    for (std::size_t b = 0; b < recs.size(); b += batch) {
      const std::size_t n = std::min(batch, recs.size() - b);
      std::map<int, int> load;
      for (int g = 0; g < p.num_gpus; ++g) load[g] = 0;
      int pos = 0, total = 0;
      for (std::size_t j = 0; j < n; ++j) {
        const auto& rec = recs[b + j];
        const int home = static_cast<int>(j * static_cast<std::size_t>(p.num_gpus) / n);
        std::set<int> remote;
        for (auto i = t.offsets[rec]; i < t.offsets[rec + 1]; ++i, ++pos) {
          std::vector<int> reps;
          for (int q = 0; q < p.num_physical(); ++q)
            if (p.physical_to_logical[static_cast<std::size_t>(l)][static_cast<std::size_t>(q)] == t.experts[i])
              reps.push_back(q);
          int chosen = reps[static_cast<std::size_t>(pos) % reps.size()];
          if (least_loaded) {
            chosen = reps[0];
            for (int q : reps)
              if (load[q / per_gpu] < load[chosen / per_gpu]) chosen = q;
          }
          const int g = chosen / per_gpu;
          ++load[g];
          ++total;
          if (g != home) remote.insert(g);
        }
        r.off += remote.size();
      }
      if (total == 0) continue;
      int mx = 0;
      for (auto& kv : load) mx = std::max(mx, kv.second);
      sum_bal += static_cast<double>(total) / p.num_gpus / mx;
      sum_max += mx;
      ++r.steps;
    }
  }
  r.bal = sum_bal / static_cast<double>(r.steps);
  r.max_load = sum_max / static_cast<double>(r.steps);
  return r;
}

}  // namespace

TEST(Eplb, ReproducesTheDeepSeekReadmeExample) {
  const auto p = moeroute::eplb_hierarchical(kReadmeWeight, 12, opts(8, 2, 4, 4));
  EXPECT_EQ(p.physical_to_logical, kReadmeMap);
  EXPECT_EQ(p.num_physical(), 16);
  EXPECT_EQ(p.experts_per_gpu(), 2);
}

TEST(Eplb, BalancedPackingByHand) {
  // Sorted 5,4,3,2: 5 -> pack 0, 4 -> pack 1, 3 -> pack 1 (4 < 5), 2 -> pack 0 (5 < 7).
  const auto pk = moeroute::balanced_packing({2, 5, 3, 4}, 2);
  EXPECT_EQ(pk.pack, (std::vector<int>{0, 0, 1, 1}));
  EXPECT_EQ(pk.rank, (std::vector<int>{1, 0, 1, 0}));
  // Equal weights: lower index first, lower pack on equal totals.
  const auto eq = moeroute::balanced_packing({1, 1, 1, 1}, 2);
  EXPECT_EQ(eq.pack, (std::vector<int>{0, 1, 0, 1}));
}

TEST(Eplb, ReplicasGoToTheLargestLoadPerReplica) {
  // 10/1 > 1 -> expert 0; 10/2 = 5 > 1 -> expert 0; then 10/3 = 3.3 > 1 -> expert 0.
  const auto r = moeroute::replicate_experts({10, 1}, 5);
  EXPECT_EQ(r.phy2log, (std::vector<int>{0, 1, 0, 0, 0}));
  EXPECT_EQ(r.count, (std::vector<int>{4, 1}));
  // Equal load per replica: the lower index.
  EXPECT_EQ(moeroute::replicate_experts({4, 2, 2}, 4).phy2log, (std::vector<int>{0, 1, 2, 0}));
}

TEST(Eplb, GlobalPlacesEveryReplicaAndFillsEveryGpu) {
  const auto p = moeroute::eplb_global(kReadmeWeight, 12, opts(4, 1, 1, 4));
  moeroute::check_placement(p);
  for (std::size_t l = 0; l < 2; ++l) {
    const auto rep = moeroute::replicate_experts(kReadmeWeight[l], 16);
    EXPECT_EQ(moeroute::replica_counts(p.physical_to_logical[l], 12), rep.count);
    // Balanced packing of 16 loads-per-replica onto 4 GPUs: the heaviest GPU is within one
    // item of the mean (LPT bound).
    const auto g = moeroute::expected_gpu_load(p, l, kReadmeWeight[l]);
    double total = 0, mx = 0, item = 0;
    for (double x : g) total += x, mx = std::max(mx, x);
    for (std::size_t e = 0; e < 12; ++e) item = std::max(item, kReadmeWeight[l][e] / rep.count[e]);
    EXPECT_LE(mx, total / 4 + item);
  }
}

TEST(Eplb, BadShapesNameTheConstraint) {
  using moeroute_test::expect_error_message;
  expect_error_message([] { moeroute::eplb_hierarchical(kReadmeWeight, 12, opts(5, 1, 4, 4)); },
                       "not divisible by the GPU count", "physical experts");
  expect_error_message([] { moeroute::eplb_hierarchical(kReadmeWeight, 12, opts(8, 2, 5, 4)); },
                       "do not divide the experts", "groups");
  expect_error_message([] { moeroute::eplb_hierarchical(kReadmeWeight, 12, opts(8, 4, 6, 4)); },
                       "do not divide the groups", "nodes");
  expect_error_message([] { moeroute::eplb_global(kReadmeWeight, 12, opts(8, 3, 1, 4)); },
                       "does not divide the GPU count", "nodes");
  expect_error_message([] { moeroute::eplb_global(kReadmeWeight, 12, opts(4, 1, 1, -4)); }, "must be >= 0",
                       "redundant");
  expect_error_message([] { moeroute::eplb_global(kReadmeWeight, 11, opts(4, 1, 1, 5)); }, "has 12 experts",
                       "load of layer 0");
}

TEST(Replay, HandWorkedExample) {
  // E = 4, G = 2, P = 6: GPU 0 holds experts 0 1 2, GPU 1 holds 3 0 1.
  expert_placement p;
  p.num_logical = 4;
  p.num_gpus = 2;
  p.physical_to_logical = {{0, 1, 2, 3, 0, 1}};
  const auto t = make_trace({{0, {0, 1}}, {0, {0, 2}}, {0, {3, 0}}, {0, {1, 0}}});
  moeroute::replay_options o;
  o.batch = 2;
  // Round robin: step 1 sends e0->p0, e1->p5, e0->p0, e2->p2 (loads 3, 1); step 2 e3->p3,
  // e0->p4, e1->p1, e0->p4 (loads 1, 3). Token 0 (home 0) reaches GPU 1, token 1 (home 1)
  // GPU 0; token 2 (home 0) GPU 1; token 3 (home 1) GPU 0.
  auto r = moeroute::replay_placement(p, t, o);
  EXPECT_DOUBLE_EQ(r.total.balancedness, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(r.total.max_gpu_load, 3.0);
  EXPECT_DOUBLE_EQ(r.total.mean_gpu_load, 2.0);
  EXPECT_EQ(r.total.tokens_off_gpu, 4u);
  EXPECT_EQ(r.total.steps, 2u);
  // Least loaded: step 1 as before (loads 3, 1); step 2 e3->G1, e0->G0, e1->G0 (tie: lower
  // physical), e0->G1: loads 2, 2.
  o.dispatch = moeroute::replica_dispatch::least_loaded;
  r = moeroute::replay_placement(p, t, o);
  EXPECT_DOUBLE_EQ(r.total.balancedness, (2.0 / 3.0 + 1.0) / 2.0);
  EXPECT_DOUBLE_EQ(r.total.peak_gpu_load, 3.0);
}

TEST(Replay, MatchesThePlainLoopOnRandomData) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 20; ++trial) {
    const int E = 6 + trial % 5, G = 1 + trial % 4, L = 1 + trial % 3;
    int P = E + trial % 3;
    while (P % G != 0) ++P;
    expert_placement p;
    p.num_logical = E;
    p.num_gpus = G;
    for (int l = 0; l < L; ++l) {
      std::vector<std::int32_t> row;
      for (int q = 0; q < P; ++q) row.push_back(q < E ? q : static_cast<std::int32_t>(rng() % static_cast<unsigned>(E)));
      std::shuffle(row.begin(), row.end(), rng);
      p.physical_to_logical.push_back(row);
    }
    std::vector<std::pair<int, std::vector<int>>> recs;
    for (int tok = 0; tok < 37; ++tok)
      for (int l = 0; l < L; ++l) {
        std::vector<int> ids(static_cast<std::size_t>(E));
        for (int e = 0; e < E; ++e) ids[static_cast<std::size_t>(e)] = e;
        std::shuffle(ids.begin(), ids.end(), rng);
        ids.resize(1 + rng() % 3);
        recs.push_back({l, ids});
      }
    const auto t = make_trace(recs);
    for (bool ll : {false, true}) {
      moeroute::replay_options o;
      o.batch = 1 + static_cast<std::size_t>(trial % 9);
      o.dispatch = ll ? moeroute::replica_dispatch::least_loaded : moeroute::replica_dispatch::round_robin;
      const auto got = moeroute::replay_placement(p, t, o);
      const auto want = reference_replay(p, t, o.batch, ll);
      EXPECT_NEAR(got.total.balancedness, want.bal, 1e-12) << trial;
      EXPECT_NEAR(got.total.max_gpu_load, want.max_load, 1e-12) << trial;
      EXPECT_EQ(got.total.tokens_off_gpu, want.off) << trial;
      EXPECT_EQ(got.total.steps, want.steps) << trial;
    }
  }
}

TEST(Replay, BadInputNamesTheProblem) {
  expert_placement p;
  p.num_logical = 2;
  p.num_gpus = 1;
  p.physical_to_logical = {{0, 1}};
  moeroute_test::expect_error_message([&] { moeroute::replay_placement(p, make_trace({{1, {0}}})); },
                                      "placement has 1 layers", "trace has layer 1");
  moeroute_test::expect_error_message([&] { moeroute::replay_placement(p, make_trace({{0, {5}}})); },
                                      "names expert 5", "trace record 1");
}

TEST(LoadSources, HalvesSplitEveryLayersTokens) {
  const auto t = make_trace({{0, {1}}, {1, {2}}, {0, {3}}, {1, {4}}, {0, {5}}});
  const auto a = moeroute::routing_trace_half(t, moeroute::trace_half::first);
  const auto b = moeroute::routing_trace_half(t, moeroute::trace_half::second);
  EXPECT_EQ(a.experts, (std::vector<std::int32_t>{1, 2}));      // layer 0: 1 of 3; layer 1: 1 of 2
  EXPECT_EQ(b.experts, (std::vector<std::int32_t>{3, 4, 5}));
  EXPECT_EQ(b.layer, (std::vector<std::int32_t>{0, 1, 0}));
}

TEST(LoadSources, SglangLogicalCountTwoAndThreeDimensions) {
  EXPECT_EQ(moeroute::parse_logical_count_json(R"({"logical_count": [[1, 2], [3, 4]]})", "c.json"),
            (load_table{{1, 2}, {3, 4}}));
  EXPECT_EQ(moeroute::parse_logical_count_json(R"({"logical_count": [[[1, 2], [3, 4]], [[10, 0], [0, 1]]]})", "c.json"),
            (load_table{{11, 2}, {3, 5}}));
  using moeroute_test::expect_error_message;
  expect_error_message([] { moeroute::parse_logical_count_json(R"({"logical_count": [[1, 2], [3]]})", "c.json"); },
                       "has 1 experts, expected 2", "c.json");
  expect_error_message([] { moeroute::parse_logical_count_json(R"({"logical_count": [[1, -2]]})", "c.json"); },
                       "logical_count[0][1] = -2", "c.json");
  expect_error_message([] { moeroute::parse_logical_count_json(R"({"counts": []})", "c.json"); },
                       "missing field 'logical_count'", "c.json");
  expect_error_message([] { moeroute::load_table_from_counts({{0, {1, 2}}, {3, {1, 2, 3}}}, 0, "t.jsonl"); },
                       "layer 3 has 3 experts, expected 2", "t.jsonl");
}

// What SGLang's loader needs (python/sglang/srt/eplb/expert_location.py): the JSON keys are
// passed as keyword arguments to ExpertLocationMetadata.init_by_mapping, so the only key is
// physical_to_logical_map, a [layers][num_physical] integer array; num_physical % ep_size == 0;
// every logical expert has at least one physical expert (its dispatch map needs one).
TEST(Formats, SglangFileHasWhatInitByMappingNeeds) {
  const auto p = moeroute::eplb_hierarchical(kReadmeWeight, 12, opts(8, 2, 4, 4));
  const auto j = nlohmann::json::parse(moeroute::placement_to_sglang_json(p).dump());
  ASSERT_TRUE(j.is_object());
  ASSERT_EQ(j.size(), 1u);
  const auto& m = j.at("physical_to_logical_map");
  ASSERT_EQ(m.size(), 2u);
  for (const auto& row : m) {
    ASSERT_EQ(row.size(), 16u);
    ASSERT_EQ(row.size() % 8, 0u);
    std::set<int> seen;
    for (const auto& x : row) {
      ASSERT_TRUE(x.is_number_integer());
      ASSERT_GE(x.get<int>(), 0);
      ASSERT_LT(x.get<int>(), 12);
      seen.insert(x.get<int>());
    }
    EXPECT_EQ(seen.size(), 12u);
  }
  EXPECT_EQ(m.get<std::vector<std::vector<int>>>()[0], (std::vector<int>{5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1}));
}

// What vLLM's EPLB static mapping loader reads (tools/eplb/generate_static_mapping.py writes it,
// EplbState._load_initial_mapping reads it): one JSONL record with record_type
// "eplb_initial_mapping", version 1, num_redundant_experts equal to the server's R, num_slots = P,
// initial_global_assignments keyed "0" .. "L-1" (MoE layers), each a list of P logical ids.
TEST(Formats, VllmRecordHasWhatTheStaticMappingLoaderNeeds) {
  const auto p = moeroute::eplb_hierarchical(kReadmeWeight, 12, opts(8, 2, 4, 4));
  const std::string text = moeroute::placement_to_vllm_json(p).dump() + "\n";
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1);
  const auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j.at("record_type"), "eplb_initial_mapping");
  EXPECT_EQ(j.at("version"), 1);
  EXPECT_EQ(j.at("num_redundant_experts"), 4);
  EXPECT_EQ(j.at("num_slots"), 16);
  const auto& a = j.at("initial_global_assignments");
  ASSERT_TRUE(a.is_object());
  ASSERT_EQ(a.size(), 2u);
  for (const std::string key : {"0", "1"}) {
    const auto row = a.at(key).get<std::vector<int>>();
    ASSERT_EQ(row.size(), 16u);
    std::vector<int> cnt(12, 0);
    for (int x : row) {
      ASSERT_GE(x, 0);
      ASSERT_LT(x, 12);
      ++cnt[static_cast<std::size_t>(x)];
    }
    EXPECT_EQ(*std::min_element(cnt.begin(), cnt.end()), 1);
  }
  EXPECT_EQ(a.at("1").get<std::vector<int>>(), (std::vector<int>{7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1}));
}

TEST(Formats, EveryFormatReadsBack) {
  const auto p = moeroute::eplb_hierarchical(kReadmeWeight, 12, opts(8, 2, 4, 4));
  moeroute::placement_record_info info;
  info.algorithm = "eplb";
  info.groups = 4;
  info.load = kReadmeWeight;
  const auto mj = moeroute::placement_to_moeroute_json(p, info);
  EXPECT_EQ(mj.at("replica_counts")[0], (std::vector<int>{1, 2, 1, 1, 2, 2, 1, 1, 1, 1, 2, 1}));
  EXPECT_EQ(mj.at("logical_to_physical_map")[0][4], (std::vector<int>{5, 7}));
  EXPECT_EQ(mj.at("gpu_of_physical"), (std::vector<int>{0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7}));
  moeroute::placement_format f{};
  auto back = moeroute::parse_placement_json(mj.dump(), "m.json", 0, &f);
  EXPECT_EQ(f, moeroute::placement_format::moeroute);
  EXPECT_EQ(back.physical_to_logical, kReadmeMap);
  EXPECT_EQ(back.num_gpus, 8);
  EXPECT_EQ(back.num_nodes, 2);
  back = moeroute::parse_placement_json(moeroute::placement_to_sglang_json(p).dump(), "s.json", 8, &f);
  EXPECT_EQ(f, moeroute::placement_format::sglang);
  EXPECT_EQ(back.physical_to_logical, kReadmeMap);
  EXPECT_EQ(back.num_logical, 12);
  back = moeroute::parse_placement_json(moeroute::placement_to_vllm_json(p).dump() + "\n", "v.jsonl", 8, &f);
  EXPECT_EQ(f, moeroute::placement_format::vllm);
  EXPECT_EQ(back.physical_to_logical, kReadmeMap);
  using moeroute_test::expect_error_message;
  expect_error_message([&] { moeroute::parse_placement_json(moeroute::placement_to_sglang_json(p).dump(), "s.json", 0); },
                       "give --gpus", "s.json");
  expect_error_message([&] { moeroute::parse_placement_json(moeroute::placement_to_sglang_json(p).dump(), "s.json", 5); },
                       "not divisible by the GPU count", "s.json");
  expect_error_message([&] { moeroute::parse_placement_json(R"({"physical_to_logical_map": [[0, 2, 2, 0]]})", "s.json", 2); },
                       "no physical expert for logical expert 1", "s.json");
}

TEST(StepBalance, SeparatesExpertsThatFireTogether) {
  // Equal totals, but experts 0 and 2 always fire together, as do 1 and 3, in runs of 8 tokens.
  // EPLB (equal weights, lower index first) puts 0 and 2 on GPU 0: every step loads one GPU.
  std::vector<std::pair<int, std::vector<int>>> recs;
  for (int run = 0; run < 40; ++run)
    for (int j = 0; j < 8; ++j) recs.push_back({0, run % 2 == 0 ? std::vector<int>{0, 2} : std::vector<int>{1, 3}});
  const auto t = make_trace(recs);
  const auto load = moeroute::load_table_from_counts(moeroute::trace_activation_counts(t, 4), 4, "t");
  const auto o = opts(2, 1, 1, 0);
  const auto e = moeroute::eplb_global(load, 4, o);
  moeroute::step_balance_options so;
  so.batch = 8;
  const auto m = moeroute::step_balanced_placement(t, load, 4, o, so);
  moeroute::check_placement(m);
  EXPECT_EQ(e.gpu_of(0), 0);
  EXPECT_EQ(e.physical_to_logical[0][0], 0);
  EXPECT_EQ(e.physical_to_logical[0][1], 2);
  // moeroute's: 0 and 2 on different GPUs.
  const auto& row = m.physical_to_logical[0];
  const auto at = [&](int x) { return m.gpu_of(static_cast<int>(std::find(row.begin(), row.end(), x) - row.begin())); };
  EXPECT_NE(at(0), at(2));
  EXPECT_NE(at(1), at(3));
  moeroute::replay_options ro;
  ro.batch = 8;
  EXPECT_DOUBLE_EQ(moeroute::replay_placement(e, t, ro).total.balancedness, 0.5);
  EXPECT_DOUBLE_EQ(moeroute::replay_placement(m, t, ro).total.balancedness, 1.0);
}

TEST(StepBalance, KeepsReplicasOfOneExpertOnDifferentGpus) {
  // One very hot expert per layer gets several replicas; each expert with r <= G replicas must
  // sit on r different GPUs (EPLB's packing alone may stack them).
  std::vector<std::pair<int, std::vector<int>>> recs;
  std::mt19937 rng(3);
  for (int tok = 0; tok < 400; ++tok)
    for (int l = 0; l < 3; ++l) recs.push_back({l, {l, 1 + static_cast<int>(rng() % 7)}});
  const auto t = make_trace(recs);
  const auto load = moeroute::load_table_from_counts(moeroute::trace_activation_counts(t, 8), 8, "t");
  for (int G : {2, 4, 8}) {
    const auto m = moeroute::step_balanced_placement(t, load, 8, opts(G, 1, 1, 8));
    moeroute::check_placement(m);
    for (std::size_t l = 0; l < 3; ++l) {
      const auto l2p = moeroute::logical_to_physical(m.physical_to_logical[l], 8);
      for (const auto& reps : l2p) {
        std::set<int> gpus;
        for (int q : reps) gpus.insert(m.gpu_of(q));
        if (reps.size() <= static_cast<std::size_t>(G)) {
          EXPECT_EQ(gpus.size(), reps.size()) << "G " << G << " layer " << l;
        }
      }
    }
  }
}

TEST(StepBalance, SameInputSameOutput) {
  const auto t = moeroute::read_routing_trace_jsonl(std::string(MOEROUTE_TEST_DATA_DIR) +
                                                    "/traces/flame-moe-290m_pretrain_decode10.jsonl");
  const auto load = moeroute::load_table_from_counts(moeroute::trace_activation_counts(t, 64), 64, "t");
  const auto a = moeroute::step_balanced_placement(t, load, 64, opts(8, 1, 1, 8));
  const auto b = moeroute::step_balanced_placement(t, load, 64, opts(8, 1, 1, 8));
  EXPECT_EQ(a.physical_to_logical, b.physical_to_logical);
  moeroute::check_placement(a);
}
