// Concentration metrics on hand-computed small matrices, the gpu-container edge rules (strict <,
// coverage reached at >=, median of an even count, zero-mass layers, all-zero input), the extras
// (coverage curve, hot experts, Gini, recommended size), and gpu-container trace JSON read/write.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "moeroute/io/container_trace.hpp"
#include "moeroute/metrics/concentration.hpp"

using namespace moeroute;

namespace {
std::vector<layer_counts> one(std::vector<double> c, int index = 0) { return {{index, std::move(c)}}; }
}  // namespace

TEST(Concentration, HandComputedLayer) {
  // counts 6,3,1,0: total 10; top1 0.6; 90% of 10 = 9 is reached by 6+3 -> 2 of 4 experts.
  // H = -(0.6 ln 0.6 + 0.3 ln 0.3 + 0.1 ln 0.1) = 0.8979457; 1 - H / ln 4 = 0.3522691.
  // Gini: sum over ordered pairs |xi - xj| = 40, / (2 * 4^2 * mean 2.5) = 0.5.
  concentration_options o;
  o.cell_bytes = 1000;
  const auto r = analyze_layer_concentration({7, {6, 3, 1, 0}}, o);
  EXPECT_EQ(r.layer_index, 7);
  EXPECT_EQ(r.num_experts, 4);
  EXPECT_DOUBLE_EQ(r.total_mass, 10.0);
  EXPECT_DOUBLE_EQ(r.top1_share, 0.6);
  EXPECT_EQ(r.hot_experts_for_coverage, 2);
  EXPECT_DOUBLE_EQ(r.hot_frac_for_coverage, 0.5);
  EXPECT_NEAR(r.concentration_score, 0.35226907788083917, 1e-14);
  EXPECT_NEAR(r.gini, 0.5, 1e-14);
  // Levels 50/80/90/95/99%: targets 5, 8, 9, 9.5, 9.9 -> 1, 2, 2, 3, 3 experts.
  EXPECT_EQ(r.coverage_curve, (std::vector<int>{1, 2, 2, 3, 3}));
  EXPECT_EQ(r.hot_experts, (std::vector<int>{0, 1}));
  EXPECT_EQ(r.recommended_cells, 2u);
  EXPECT_EQ(r.recommended_bytes, 2000u);
}

TEST(Concentration, UniformSingleAndOneExpertLayers) {
  const auto u = analyze_layer_concentration({0, {5, 5, 5, 5}});
  EXPECT_DOUBLE_EQ(u.hot_frac_for_coverage, 1.0);  // 18 of 20 needs all four
  EXPECT_NEAR(u.concentration_score, 0.0, 1e-12);
  EXPECT_NEAR(u.gini, 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(u.top1_share, 0.25);
  // One non-zero expert: p = (0, 1, 0), H = 0, normalized entropy 0 -> concentration 1 - 0 = 1
  // ("0 = uniform, 1 = one expert"); Gini 2/3.
  const auto s = analyze_layer_concentration({0, {0, 7, 0}});
  EXPECT_EQ(s.concentration_score, 1.0);
  EXPECT_DOUBLE_EQ(s.top1_share, 1.0);
  EXPECT_DOUBLE_EQ(s.hot_frac_for_coverage, 1.0 / 3.0);
  EXPECT_EQ(s.hot_experts, std::vector<int>{1});
  EXPECT_NEAR(s.gini, 2.0 / 3.0, 1e-12);
  // E = 1: the normalized entropy is 0 by definition, so the score is 1.
  const auto e1 = analyze_layer_concentration({0, {4}});
  EXPECT_EQ(e1.concentration_score, 1.0);
  EXPECT_DOUBLE_EQ(e1.hot_frac_for_coverage, 1.0);
}

TEST(Concentration, TiesGoToTheLowerExpertId) {
  concentration_options o;
  o.coverage = 0.5;  // 5 of 10: 3 + 3
  const auto r = analyze_layer_concentration({0, {1, 3, 3, 3}}, o);
  EXPECT_EQ(r.hot_experts, (std::vector<int>{1, 2}));
}

TEST(Concentration, CoverageReachedAtEqualityAndThresholdIsStrict) {
  // 9 of 10 at coverage 0.9 is exactly the target: one expert of two, hot_frac 0.5.
  concentration_options o;
  o.threshold = 0.5;
  const auto r = analyze_concentration(one({9, 1}), o);
  EXPECT_DOUBLE_EQ(r.hot_frac_for_coverage, 0.5);
  EXPECT_FALSE(r.cache_helps);  // 0.5 < 0.5 is false
  o.threshold = 0.51;
  EXPECT_TRUE(analyze_concentration(one({9, 1}), o).cache_helps);
}

TEST(Concentration, MedianOfEvenCountIsMeanOfMiddleTwoAndConcentrationIsMean) {
  // Four layers of E = 4 with hot fractions 1/4, 2/4, 3/4, 4/4 (coverage 0.9) and top1 shares
  // 1.0, 0.6, 0.4, 0.25: median hot = (0.5 + 0.75) / 2, median top1 = (0.4 + 0.6) / 2.
  std::vector<layer_counts> L = {{0, {10, 0, 0, 0}}, {1, {6, 3, 1, 0}}, {2, {4, 3, 3, 0}},
                                 {3, {5, 5, 5, 5}}};
  const auto r = analyze_concentration(L);
  ASSERT_EQ(r.per_layer.size(), 4u);
  EXPECT_DOUBLE_EQ(r.per_layer[2].hot_frac_for_coverage, 0.75);
  EXPECT_DOUBLE_EQ(r.hot_frac_for_coverage, 0.625);
  EXPECT_DOUBLE_EQ(r.top1_share, 0.5);
  double mean = 0;
  for (const auto& p : r.per_layer) mean += p.concentration_score;
  EXPECT_DOUBLE_EQ(r.concentration_score, mean / 4);
  EXPECT_EQ(r.num_experts, 4);
  EXPECT_EQ(r.recommended_cells, 1u + 2u + 3u + 4u);
  EXPECT_EQ(r.total_cells, 16u);
  EXPECT_FALSE(r.cache_helps);  // 0.625 >= 0.5
  // Odd count: the middle value.
  L.pop_back();
  EXPECT_DOUBLE_EQ(analyze_concentration(L).hot_frac_for_coverage, 0.5);
}

TEST(Concentration, EachLayerUsesItsOwnExpertCount) {
  const auto r = analyze_concentration({{0, {1, 1}}, {1, {4, 0, 0, 0}}});
  EXPECT_DOUBLE_EQ(r.per_layer[0].hot_frac_for_coverage, 1.0);   // 2 of 2
  EXPECT_DOUBLE_EQ(r.per_layer[1].hot_frac_for_coverage, 0.25);  // 1 of 4
  EXPECT_EQ(r.num_experts, 0);                                    // mixed
}

TEST(Concentration, ZeroMassLayersSkippedAndAllZeroIsValid) {
  const auto r = analyze_concentration({{0, {0, 0}}, {1, {3, 1}}, {2, {0, 0}}});
  EXPECT_EQ(r.per_layer.size(), 1u);
  EXPECT_EQ(r.n_layers(), 1u);  // only analyzed layers count
  EXPECT_EQ(r.skipped_layers, (std::vector<int>{0, 2}));
  EXPECT_DOUBLE_EQ(r.hot_frac_for_coverage, 1.0);  // 0.9 * 4 = 3.6 needs both
  const auto z = analyze_concentration({{0, {0, 0, 0}}, {1, {0, 0, 0}}});
  EXPECT_TRUE(z.per_layer.empty());
  EXPECT_EQ(z.n_layers(), 0u);
  EXPECT_DOUBLE_EQ(z.hot_frac_for_coverage, 1.0);
  EXPECT_DOUBLE_EQ(z.concentration_score, 0.0);
  EXPECT_DOUBLE_EQ(z.top1_share, 0.0);
  EXPECT_FALSE(z.cache_helps);
  const auto empty = analyze_concentration({});
  EXPECT_FALSE(empty.cache_helps);
  EXPECT_DOUBLE_EQ(empty.hot_frac_for_coverage, 1.0);
}

TEST(Concentration, NotesOnTotalSpreadAndWorkload) {
  auto has = [](const concentration_report& r, const std::string& s) {
    for (const auto& n : r.notes)
      if (n.find(s) != std::string::npos) return true;
    return false;
  };
  const auto a = analyze_concentration({{0, {5, 5}}, {1, {7, 6}}});  // 13 > 1.2 * 10
  EXPECT_TRUE(has(a, "differ by more than 20%"));
  EXPECT_TRUE(has(a, "only for the workload measured"));
  const auto b = analyze_concentration({{0, {5, 5}}, {1, {6, 6}}});  // 12 is not > 12
  EXPECT_FALSE(has(b, "differ by more than"));
}

TEST(Concentration, RejectsBadOptionsAndCounts) {
  concentration_options o;
  o.coverage = 0;
  EXPECT_THROW(analyze_concentration(one({1}), o), moeroute::error);
  o = {};
  o.coverage = 1.01;
  EXPECT_THROW(analyze_concentration(one({1}), o), moeroute::error);
  o = {};
  o.threshold = 0;
  EXPECT_THROW(analyze_concentration(one({1}), o), moeroute::error);
  EXPECT_THROW(analyze_concentration(one({1, -1})), moeroute::error);
  EXPECT_THROW(analyze_concentration(one({1, NAN})), moeroute::error);
  EXPECT_THROW(analyze_concentration(one({})), moeroute::error);
}

TEST(Concentration, VerdictLine) {
  const auto r = analyze_concentration(one({6, 3, 1, 0}));
  EXPECT_EQ(concentration_verdict(r),
            "cache NOT justified \u2014 2/4 experts (50%) resident for 90% routing coverage; "
            "concentration 0.352, top expert 60.0% (median of 1 layers; threshold 50%; holds only "
            "for the workload measured)");
  concentration_options o;
  o.threshold = 0.6;
  EXPECT_EQ(concentration_verdict(analyze_concentration(one({6, 3, 1, 0}), o)).rfind("cache could help \u2014 2/4", 0), 0u);
}

TEST(ContainerTrace, ReadWriteRoundTrip) {
  const std::string text = R"({"model": "m", "num_experts": 3, "experts_per_token": 2, "n_tokens": 5,
    "layers": [{"layer_index": 4, "expert_counts": [5, 3, 2]}, {"layer_index": 1, "expert_counts": [0, 0, 10]}],
    "created": "2026-01-01", "rig": "r", "custom": {"a": 1}})";
  const container_trace t = parse_container_trace_json(text, "t.json");
  EXPECT_EQ(t.model, "m");
  EXPECT_EQ(t.num_experts, 3);
  EXPECT_EQ(t.experts_per_token, 2);
  EXPECT_EQ(t.n_tokens, 5);
  ASSERT_EQ(t.layers.size(), 2u);
  EXPECT_EQ(t.layers[0].layer_index, 4);
  EXPECT_EQ(t.layers[1].counts, (std::vector<double>{0, 0, 10}));
  std::ostringstream os;
  write_container_trace_json(os, t);
  const container_trace u = parse_container_trace_json(os.str(), "u.json");
  EXPECT_EQ(u.layers[0].counts, t.layers[0].counts);
  EXPECT_EQ(u.extra["custom"]["a"], 1);
  EXPECT_EQ(u.extra["rig"], "r");
  EXPECT_NE(os.str().find("\"expert_counts\": [\n        5,"), std::string::npos);  // integers stay integers
}

TEST(ContainerTrace, FromRoutingTraceCountsAndMass) {
  std::istringstream in(
      "{\"layer\": 0, \"experts\": [1, 0], \"gating_probs\": [0.75, 0.25], \"token_idx\": 0}\n"
      "{\"layer\": 1, \"experts\": [2, 1], \"gating_probs\": [0.5, 0.5], \"token_idx\": 0}\n"
      "{\"layer\": 0, \"experts\": [1, 2], \"gating_probs\": [0.625, 0.375], \"token_idx\": 1}\n");
  const routing_trace r = parse_routing_trace_jsonl(in, "r.jsonl");
  const container_trace c = container_trace_from_routing(r, "m");
  EXPECT_EQ(c.n_tokens, 2);
  EXPECT_EQ(c.experts_per_token, 2);
  EXPECT_EQ(c.num_experts, 3);
  EXPECT_EQ(c.layers[0].counts, (std::vector<double>{1, 2, 1}));
  EXPECT_EQ(c.layers[1].counts, (std::vector<double>{0, 1, 1}));
  const container_trace w = container_trace_from_routing(r, "m", 4, true);
  EXPECT_TRUE(w.gate_weighted);
  EXPECT_EQ(w.layers[0].counts, (std::vector<double>{0.25, 1.375, 0.375, 0}));
}

TEST(ContainerTrace, MalformedInputsNameTheProblem) {
  // Every case but the first few carries the required header, so it fails for its own reason.
  const std::string head = R"("model": "m", "num_experts": 2, "experts_per_token": 1, "n_tokens": 1, )";
  auto err = [&](std::string text, const std::string& needle) {
    if (text.rfind("{\"layers\"", 0) == 0) text.insert(1, head);
    try {
      parse_container_trace_json(text, "t.json");
      ADD_FAILURE() << "no error for " << text;
    } catch (const moeroute::error& e) {
      EXPECT_NE(e.message().find(needle), std::string::npos) << e.message();
    }
  };
  err("{\n  \"layers\": [\n  1,,]}", "t.json:3:");
  err("[1, 2]", "top level");
  err("{\"layers\": [\n {\"layer_index\": 0, \"expert_counts\": [1e999]}]}", "t.json:2:");
  err("{\"layers\": [\n {\"layer_index\": 0, \"expert_counts\": [1e999]}]}", "'1e999' is out of range");
  err(std::string(100, '[') + std::string(100, ']'), "nested deeper than 64");
  err("{}", "missing field 'layers'");
  err(R"({"layers": 3})", "'layers' must be an array");
  err(R"({"layers": [{"expert_counts": [1]}]})", "layers[0]: missing 'layer_index'");
  err(R"({"layers": [{"layer_index": 0}]})", "layers[0]: missing 'expert_counts'");
  err(R"({"layers": [{"layer_index": -1, "expert_counts": [1]}]})", "layer_index = -1");
  err(R"({"layers": [{"layer_index": 0, "expert_counts": []}]})", "has 0 entries");
  err(R"({"layers": [{"layer_index": 0, "expert_counts": [1, -2]}]})", "expert_counts[1] = -2");
  err(R"({"layers": [{"layer_index": 0, "expert_counts": [1, "x"]}]})", "expert_counts[1] is not a number");
  err(R"({"layers": [{"layer_index": 0, "expert_counts": [1]}, {"layer_index": 0, "expert_counts": [1]}]})",
      "appears twice");
  // The four header fields are required (bad input), as in gpu-container-concentration.
  err(R"({"num_experts": 2, "experts_per_token": 1, "n_tokens": 1, "layers": []})", "missing field 'model'");
  err(R"({"model": "m", "experts_per_token": 1, "n_tokens": 1, "layers": []})", "missing field 'num_experts'");
  err(R"({"model": "m", "num_experts": 2, "n_tokens": 1, "layers": []})", "missing field 'experts_per_token'");
  err(R"({"model": "m", "num_experts": 2, "experts_per_token": 1, "layers": []})", "missing field 'n_tokens'");
  try {
    parse_container_trace_json(R"({"model": "m", "layers": []})", "t.json");
    ADD_FAILURE() << "no error";
  } catch (const moeroute::error& e) {
    EXPECT_EQ(e.code(), errc::bad_input);
  }
  err(R"({"num_experts": 0, "layers": []})", "'num_experts' = 0");
  err(R"({"num_experts": 18446744073709551615, "layers": []})", "out of range");
  err(R"({"n_tokens": 1.5, "layers": []})", "'n_tokens' must be an integer");
  err(R"({"model": 3, "layers": []})", "'model' must be a string");
}
