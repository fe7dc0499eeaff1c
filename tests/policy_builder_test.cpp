// Policy builder: rankings checked against hand-computed shares and against plain loops over traces.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeroute/io/routing_trace.hpp"
#include "moeroute/residency/policy_builder.hpp"

namespace {

moeroute::expert_matrix matrix(int L, int E, const std::vector<double>& v) {
  moeroute::expert_matrix m(L, E);
  m.values = v;
  return m;
}

// Two workloads on 2 layers x 3 experts; shares are exact binary fractions.
//   a: [[4,0,0],[0,2,2]] (total 8)   b: [[0,1,0],[1,1,1]] (total 4)
// cell mean shares: (0,0) .25, (0,1) .125, (0,2) 0, (1,0) .125, (1,1) .25, (1,2) .25
// global mean shares: e0 (.5+.25)/2 = .375, e1 (.25+.5)/2 = .375, e2 .25
std::vector<moeroute::atx_workload> two_workloads() {
  moeroute::atx_workload a, b;
  a.name = "a";
  a.importance = matrix(2, 3, {4, 0, 0, 0, 2, 2});
  b.name = "b";
  b.importance = matrix(2, 3, {0, 1, 0, 1, 1, 1});
  return {a, b};
}

TEST(PolicyBuilder, UnitCountIsCeilOfPercent) {
  EXPECT_EQ(moeroute::atx_unit_count(5, 256), 13);
  EXPECT_EQ(moeroute::atx_unit_count(10, 256), 26);
  EXPECT_EQ(moeroute::atx_unit_count(15, 256), 39);
  EXPECT_EQ(moeroute::atx_unit_count(20, 256), 52);
  EXPECT_EQ(moeroute::atx_unit_count(5, 10240), 512);
  EXPECT_EQ(moeroute::atx_unit_count(100, 7), 7);
  EXPECT_EQ(moeroute::atx_unit_count(0.001, 7), 1);
  EXPECT_THROW(moeroute::atx_unit_count(0, 7), moeroute::error);
  EXPECT_THROW(moeroute::atx_unit_count(101, 7), moeroute::error);
}

TEST(PolicyBuilder, CellRankingMatchesHandComputedSharesWithTieRule) {
  const auto r = moeroute::rank_atx_units(two_workloads(), moeroute::atx_unit_kind::cell);
  const std::vector<std::pair<int, int>> want = {{0, 0}, {1, 1}, {1, 2}, {0, 1}, {1, 0}, {0, 2}};
  const std::vector<double> share = {0.25, 0.25, 0.25, 0.125, 0.125, 0.0};
  ASSERT_EQ(r.size(), 6u);
  double cum = 0;
  for (std::size_t i = 0; i < 6; ++i) {
    EXPECT_EQ(std::make_pair(r[i].layer, r[i].expert), want[i]) << i;
    EXPECT_EQ(r[i].rank, static_cast<long long>(i + 1));
    EXPECT_DOUBLE_EQ(r[i].stat("mean_importance_share"), share[i]);
    cum += share[i];
    EXPECT_DOUBLE_EQ(r[i].stat("cumulative_mean_importance_share"), cum);
  }
  // (0,0): a .5, b 0 -> min 0; (1,1): a .25, b .25.
  EXPECT_DOUBLE_EQ(r[0].stat("a_importance_share"), 0.5);
  EXPECT_DOUBLE_EQ(r[0].stat("b_importance_share"), 0.0);
  EXPECT_DOUBLE_EQ(r[0].stat("min_importance_share"), 0.0);
  EXPECT_DOUBLE_EQ(r[1].stat("min_importance_share"), 0.25);
}

TEST(PolicyBuilder, GlobalPolicyTopPercentWithEveryForm) {
  moeroute::atx_build_options o;
  o.percent = 34;  // ceil(0.34 x 3) = 2
  o.unit = moeroute::atx_unit_kind::global_expert;
  const auto p = moeroute::build_atx_policy(two_workloads(), o);
  EXPECT_EQ(p.keep_experts, (std::vector<int>{0, 1}));
  ASSERT_EQ(p.keep_experts_ranked.size(), 2u);
  EXPECT_EQ(p.keep_experts_ranked[0].expert, 0);  // .375 tie with e1: lower id first
  EXPECT_EQ(p.keep_experts_ranked[1].expert, 1);
  EXPECT_DOUBLE_EQ(p.keep_experts_ranked[1].stat("cumulative_mean_importance_share"), 0.75);
  EXPECT_DOUBLE_EQ(p.keep_experts_ranked[0].stat("a_importance_share"), 0.5);
  EXPECT_DOUBLE_EQ(p.keep_experts_ranked[0].stat("min_importance_share"), 0.25);
  EXPECT_EQ(p.selection["selected_experts"], 2);
  EXPECT_EQ(p.selection["total_experts"], 3);
  EXPECT_DOUBLE_EQ(p.selection["cumulative_a_importance_share"].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(p.selection["cumulative_b_importance_share"].get<double>(), 0.75);
  // The written policy is a valid ATX policy with all three global forms.
  const auto j = nlohmann::json::parse(moeroute::write_atx_policy_string(p));
  EXPECT_EQ(j["schema_version"], "atx-moe-residency-policy-v1");
  EXPECT_EQ(j["keep_experts_compact"], "0,1");
  EXPECT_EQ(j["keep_experts_ranked"].size(), 2u);
  const auto back = moeroute::parse_atx_policy(j.dump(), "built");
  EXPECT_EQ(moeroute::atx_policy_cells(back, 2, 3).count(), 4u);
}

TEST(PolicyBuilder, CellPolicyWithHybridTopLayer) {
  moeroute::atx_build_options o;
  o.percent = 50;  // 3 of 6 cells
  o.unit = moeroute::atx_unit_kind::cell;
  o.hybrid_top_layers = 1;  // layer shares: a (.5, .5), b (.25, .75) -> mean (.375, .625): layer 1
  const auto p = moeroute::build_atx_policy(two_workloads(), o);
  ASSERT_EQ(p.keep_layer_experts.size(), 3u);
  EXPECT_EQ(moeroute::atx_policy_cell_list(p), (std::vector<std::pair<int, int>>{{0, 0}, {1, 1}, {1, 2}}));
  EXPECT_EQ(p.keep_layers, (std::vector<int>{1}));
  const auto j = nlohmann::json::parse(moeroute::write_atx_policy_string(p));
  EXPECT_EQ(j["keep_layer_experts_compact"], "0:0,1:1,1:2");
  EXPECT_EQ(j["keep_layer_experts_by_layer"], nlohmann::json::parse(R"({"0": [0], "1": [1, 2]})"));
  EXPECT_EQ(j["selection"]["unique_layers_touched"], 2);
  EXPECT_EQ(j["selection"]["unique_experts_touched"], 3);
  const auto cells = moeroute::atx_policy_cells(moeroute::parse_atx_policy(j.dump(), "built"), 2, 3);
  EXPECT_EQ(cells.count(), 4u);  // (0,0) + all of layer 1
}

TEST(PolicyBuilder, RejectsBadWorkloads) {
  auto w = two_workloads();
  w[1].importance = matrix(2, 2, {1, 1, 1, 1});
  EXPECT_THROW(moeroute::rank_atx_units(w, moeroute::atx_unit_kind::cell), moeroute::error);
  w = two_workloads();
  w[0].importance = matrix(2, 3, {0, 0, 0, 0, 0, 0});
  EXPECT_THROW(moeroute::rank_atx_units(w, moeroute::atx_unit_kind::cell), moeroute::error);
  moeroute::atx_build_options o;
  o.keep_layers = {2};
  EXPECT_THROW(moeroute::build_atx_policy(two_workloads(), o), moeroute::error);
}

TEST(PolicyBuilder, TraceWorkloadMatchesPlainCount) {
  const std::string path = std::string(MOEROUTE_TEST_DATA_DIR) + "/traces/mixtral-8x7b_humaneval_routing.jsonl";
  // Plain loop over the JSONL, independent of the trace reader.
  std::map<std::pair<int, int>, double> count;
  std::ifstream f(path);
  std::string line;
  double total = 0;
  while (std::getline(f, line)) {
    const auto j = nlohmann::json::parse(line);
    for (const auto& e : j["experts"]) {
      count[{j["layer"].get<int>(), e.get<int>()}] += 1;
      total += 1;
    }
  }
  const auto w = moeroute::trace_workload(moeroute::read_routing_trace_jsonl(path), "humaneval");
  ASSERT_EQ(w.importance.num_layers, 32);
  ASSERT_EQ(w.importance.num_experts, 8);
  for (int l = 0; l < 32; ++l)
    for (int e = 0; e < 8; ++e) EXPECT_EQ(w.importance.at(l, e), (count[{l, e}]));

  // The top cell by the plain count, ties to the lower (layer, expert).
  std::pair<int, int> best{-1, -1};
  double best_n = -1;
  for (const auto& kv : count)
    if (kv.second > best_n) best_n = kv.second, best = kv.first;
  const auto r = moeroute::rank_atx_units({w}, moeroute::atx_unit_kind::cell);
  EXPECT_EQ(std::make_pair(r[0].layer, r[0].expert), best);
  EXPECT_DOUBLE_EQ(r[0].stat("mean_importance_share"), best_n / total);
  EXPECT_DOUBLE_EQ(r[0].stat("mean_activation_share"), best_n / total);
  EXPECT_FALSE(std::isnan(r[0].stat("mean_router_weight_share")));
}

}  // namespace
