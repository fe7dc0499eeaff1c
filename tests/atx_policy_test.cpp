// ATX residency policy read/write, flag syntax and compact strings, policy -> residency set.

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "moeroute/residency/atx_policy.hpp"

namespace {

const std::string kAtx = std::string(MOEROUTE_TEST_DATA_DIR) + "/atx/";
const std::string kLayerFixture = kAtx + "combined_top_05pct_layer_experts.hybrid_top_4_layers.atx.json";
const std::string kGlobalFixture = kAtx + "combined_top_20pct_global_experts.atx.json";

nlohmann::json load_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

// Expects parse_atx_policy(text) to throw a moeroute::error whose message contains `needle`.
void expect_policy_error(const std::string& text, const std::string& needle) {
  try {
    moeroute::parse_atx_policy(text, "p.json");
    FAIL() << "no error for: " << text;
  } catch (const moeroute::error& e) {
    EXPECT_NE(e.message().find(needle), std::string::npos) << e.message();
    EXPECT_EQ(e.message().rfind("p.json", 0), 0u) << e.message();
  }
}

TEST(AtxPolicy, LayerExpertFixtureRoundTripsSemantically) {
  const auto p = moeroute::read_atx_policy(kLayerFixture);
  EXPECT_EQ(p.keep_layer_experts.size(), 512u);
  EXPECT_EQ(p.keep_layers, (std::vector<int>{37, 38, 36, 35}));
  const auto written = nlohmann::json::parse(moeroute::write_atx_policy_string(p));
  EXPECT_EQ(written, load_json(kLayerFixture));
  // And again through the writer's own output.
  const auto p2 = moeroute::parse_atx_policy(written.dump(), "rewritten");
  EXPECT_EQ(nlohmann::json::parse(moeroute::write_atx_policy_string(p2)), written);
}

TEST(AtxPolicy, GlobalFixtureRoundTripsSemantically) {
  const auto p = moeroute::read_atx_policy(kGlobalFixture);
  EXPECT_EQ(p.keep_experts.size(), 52u);
  EXPECT_EQ(p.keep_experts_ranked.size(), 52u);
  EXPECT_EQ(p.keep_experts_ranked[0].expert, 103);
  EXPECT_EQ(p.keep_experts_ranked[0].rank, 1);
  EXPECT_EQ(nlohmann::json::parse(moeroute::write_atx_policy_string(p)), load_json(kGlobalFixture));
}

TEST(AtxPolicy, KeyOrderIsPreservedOnRewrite) {
  const std::string text = R"({"zeta": 1, "keep_experts": [3, 1], "alpha": {"x": [1]}})";
  const auto p = moeroute::parse_atx_policy(text, "p.json");
  EXPECT_EQ(moeroute::atx_policy_to_json(p).dump(), R"({"zeta":1,"keep_experts":[3,1],"alpha":{"x":[1]}})");
}

TEST(AtxPolicy, CellsOfLayerExpertPolicyPlusKeepLayers) {
  const auto p = moeroute::read_atx_policy(kLayerFixture);
  const auto raw = load_json(kLayerFixture);
  // Independent reference: the listed cells plus every expert of layers 35..38.
  std::set<std::pair<int, int>> ref;
  for (const auto& c : raw["keep_layer_experts"]) ref.insert({c["layer"].get<int>(), c["expert"].get<int>()});
  for (int l : {35, 36, 37, 38})
    for (int e = 0; e < 256; ++e) ref.insert({l, e});
  const auto s = moeroute::atx_policy_cells(p, 40, 256);
  EXPECT_EQ(s.count(), ref.size());
  for (const auto& c : ref) EXPECT_TRUE(s.contains(c.first, c.second));
  EXPECT_THROW(moeroute::atx_policy_cells(p, 38, 256), moeroute::error);  // keep_layers 38
  EXPECT_THROW(moeroute::atx_policy_cells(p, 40, 200), moeroute::error);
}

TEST(AtxPolicy, CellsOfGlobalPolicyCoverEveryLayer) {
  const auto p = moeroute::read_atx_policy(kGlobalFixture);
  const auto s = moeroute::atx_policy_cells(p, 40, 256);
  EXPECT_EQ(s.count(), 52u * 40u);
  for (int l = 0; l < 40; ++l) {
    EXPECT_TRUE(s.contains(l, 103));
    EXPECT_TRUE(s.contains(l, 1));
    EXPECT_FALSE(s.contains(l, 0));
  }
  try {
    moeroute::atx_policy_cells(p, 40, 200);
    FAIL();
  } catch (const moeroute::error& e) {
    EXPECT_NE(e.message().find("keep_experts["), std::string::npos) << e.message();
  }
}

TEST(AtxPolicy, LayerExpertCellsWinOverGlobalExperts) {
  const auto p = moeroute::parse_atx_policy(
      R"({"keep_experts": [0], "keep_layer_experts_compact": "1:2", "keep_layers": [0]})", "p");
  const auto s = moeroute::atx_policy_cells(p, 3, 4);
  EXPECT_EQ(s.count(), 5u);  // 1:2 plus layer 0's four experts; expert 0 is not kept in layer 2
  EXPECT_TRUE(s.contains(1, 2));
  EXPECT_FALSE(s.contains(2, 0));
}

TEST(AtxFlagSyntax, ParsesForkExamples) {
  const auto cells = moeroute::parse_atx_cell_list("0:0-31,37:103", "flag");
  ASSERT_EQ(cells.size(), 33u);
  for (int e = 0; e < 32; ++e) EXPECT_EQ(cells[static_cast<std::size_t>(e)], std::make_pair(0, e));
  EXPECT_EQ(cells.back(), std::make_pair(37, 103));
  EXPECT_EQ(moeroute::parse_atx_id_list("0,3-5", "flag"), (std::vector<int>{0, 3, 4, 5}));
  EXPECT_TRUE(moeroute::parse_atx_id_list("", "flag").empty());
}

TEST(AtxFlagSyntax, FormatsRuns) {
  EXPECT_EQ(moeroute::format_atx_cell_flag({{37, 103}, {0, 2}, {0, 0}, {0, 1}, {0, 5}, {1, 6}}),
            "0:0-2,0:5,1:6,37:103");
  EXPECT_EQ(moeroute::format_atx_id_flag({5, 0, 3, 4}), "0,3-5");
  EXPECT_EQ(moeroute::format_atx_cell_compact({{4, 59}, {1, 193}}), "1:193,4:59");
  EXPECT_EQ(moeroute::format_atx_id_compact({14, 1, 12}), "1,12,14");
}

TEST(AtxFlagSyntax, RoundTripsFixtureCompactString) {
  const auto raw = load_json(kLayerFixture);
  const std::string compact = raw["keep_layer_experts_compact"];
  const auto cells = moeroute::parse_atx_cell_list(compact, "compact", false);
  EXPECT_EQ(cells.size(), 512u);
  EXPECT_EQ(moeroute::format_atx_cell_compact(cells), compact);
  EXPECT_EQ(moeroute::parse_atx_cell_list(moeroute::format_atx_cell_flag(cells), "flag"), cells);
}

TEST(AtxFlagSyntax, RejectsMalformedItems) {
  for (const char* bad : {"0:", ":3", "0:3-", "0:5-3", "a:1", "0:1,,2:3", "0:1,", "0:-1", "0 :1",
                          "1", "0:1:2", "0:99999999"}) {
    EXPECT_THROW(moeroute::parse_atx_cell_list(bad, "flag"), moeroute::error) << bad;
  }
  EXPECT_THROW(moeroute::parse_atx_cell_list("0:1-3", "compact", false), moeroute::error);
  EXPECT_THROW(moeroute::parse_atx_id_list("1,2,x", "flag"), moeroute::error);
  try {
    moeroute::parse_atx_cell_list("0:0-31,37:103,0:7", "--moe-keep-layer-experts");
    FAIL();
  } catch (const moeroute::error& e) {
    EXPECT_NE(e.message().find("item 3"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("duplicate cell 0:7"), std::string::npos) << e.message();
  }
}

TEST(AtxPolicy, MalformedPoliciesNameTheEntry) {
  expect_policy_error(R"({"schema_version": "atx-moe-residency-policy-v2", "keep_experts": [1]})",
                      "schema_version");
  expect_policy_error(R"({"schema_version": 1})", "schema_version must be a string");
  expect_policy_error(R"({"keep_experts": [1, 2, 1]})", "keep_experts[2]: duplicate expert 1");
  expect_policy_error(R"({"keep_experts": [1, "2"]})", "keep_experts[1] must be an integer");
  expect_policy_error(R"({"keep_experts": {"a": 1}})", "keep_experts must be an array");
  expect_policy_error(R"({"keep_experts": [-1]})", "keep_experts[0] = -1 out of range");
  expect_policy_error(R"({"selection": {"total_experts": 8}, "keep_experts": [3, 8]})",
                      "keep_experts[1] = 8 out of range");
  expect_policy_error(R"({"keep_experts": [1, 2], "keep_experts_compact": "1,3"})",
                      "keep_experts_compact: expert 3 is not in keep_experts");
  expect_policy_error(R"({"keep_experts": [1, 2], "keep_experts_compact": "1"})",
                      "keep_experts names expert 2 but keep_experts_compact does not");
  expect_policy_error(R"({"keep_experts": [1], "keep_experts_ranked": [{"expert": 1}, {"expert": 2}]})",
                      "keep_experts_ranked[1]: expert 2 is not in keep_experts");
  expect_policy_error(R"({"keep_experts_ranked": [{"expert": 1, "rank": 0}]})", "rank");
  expect_policy_error(R"({"keep_experts_ranked": [{"expert": 1, "mean_importance_share": "x"}]})",
                      "keep_experts_ranked[0].mean_importance_share must be a finite number");
  expect_policy_error(R"({"keep_layer_experts": [{"layer": 1, "expert": 2}, {"layer": 1, "expert": 2}]})",
                      "keep_layer_experts[1]: duplicate cell 1:2");
  expect_policy_error(R"({"keep_layer_experts": [{"layer": 1}]})",
                      "keep_layer_experts[0]: missing field 'expert'");
  expect_policy_error(R"({"keep_layer_experts": [[1, 2]]})", "keep_layer_experts[0] must be an object");
  expect_policy_error(
      R"({"selection": {"layers": 4, "experts_per_layer": 8}, "keep_layer_experts": [{"layer": 4, "expert": 0}]})",
      "keep_layer_experts[0].layer = 4 out of range");
  expect_policy_error(
      R"({"keep_layer_experts": [{"layer": 1, "expert": 2}], "keep_layer_experts_compact": "1:2,3:4"})",
      "keep_layer_experts_compact: cell 3:4 is not in keep_layer_experts");
  expect_policy_error(
      R"({"keep_layer_experts": [{"layer": 1, "expert": 2}, {"layer": 3, "expert": 4}], "keep_layer_experts_compact": "1:2"})",
      "keep_layer_experts names cell 3:4 but keep_layer_experts_compact does not");
  expect_policy_error(
      R"({"keep_layer_experts": [{"layer": 1, "expert": 2}], "keep_layer_experts_by_layer": {"1": [2, 5]}})",
      "keep_layer_experts_by_layer[\"1\"][1]: cell 1:5 is not in keep_layer_experts");
  expect_policy_error(R"({"keep_layer_experts_by_layer": {"x": [2]}})", "key is not a layer id");
  expect_policy_error(R"({"keep_layer_experts_compact": "1:2,1:2"})", "duplicate cell 1:2");
  expect_policy_error(R"({"keep_layers": [3, 3]})", "keep_layers[1]: duplicate layer 3");
  expect_policy_error(R"({"selection": {"selected_experts": 3}, "keep_experts": [1, 2]})",
                      "selection.selected_experts = 3 but the policy lists 2");
  expect_policy_error(R"([1, 2])", "must be a JSON object");
  expect_policy_error("{\"keep_experts\": [1,\n 2,, 3]}", "p.json:2:4: not valid JSON");
  expect_policy_error("{\"x\": " + std::string(100, '[') + std::string(100, ']') + "}", "nested deeper than 64");
  expect_policy_error(R"({"keep_experts": [18446744073709551615]})", "= 18446744073709551615 out of range");
  expect_policy_error(R"({"keep_experts_ranked": [{"expert": 1, "rank": 18446744073709551615}]})", "rank");
  expect_policy_error(R"({"keep_experts_ranked": [{"expert": 1, "mean_importance_share": 1e999}]})",
                      "not valid JSON");
}

TEST(AtxPolicy, MissingFileIsAnIoError) {
  try {
    moeroute::read_atx_policy(kAtx + "does-not-exist.json");
    FAIL();
  } catch (const moeroute::error& e) {
    EXPECT_EQ(e.code(), moeroute::errc::io_error);
  }
}

}  // namespace

// Compact strings are sorted ascending (the header's contract); one out of order is rejected, so a
// rewrite (which writes them sorted) can never change the order a reader saw.
TEST(AtxPolicy, UnsortedCompactListsAreRejected) {
  expect_policy_error(R"({"keep_experts_compact": "1,4,3"})",
                      "keep_experts_compact: expert 3 after 4 (compact lists are sorted ascending)");
  expect_policy_error(R"({"keep_layer_experts_compact": "1:2,0:5"})",
                      "keep_layer_experts_compact: cell 0:5 after cell 1:2");
  expect_policy_error(R"({"keep_layer_experts_compact": "1:5,1:2"})", "cell 1:2 after cell 1:5");
  // sorted lists read back in the same order and write back unchanged
  const auto p = moeroute::parse_atx_policy(R"({"keep_experts_compact": "1,3,4"})", "p.json");
  EXPECT_EQ(p.keep_experts, (std::vector<int>{1, 3, 4}));
  const auto j = nlohmann::json::parse(moeroute::write_atx_policy_string(p));
  EXPECT_EQ(j["keep_experts_compact"], "1,3,4");
  const auto q = moeroute::parse_atx_policy(R"({"keep_layer_experts_compact": "0:5,1:2,1:7"})", "p.json");
  ASSERT_EQ(q.keep_layer_experts.size(), 3u);
  EXPECT_EQ(q.keep_layer_experts[1].layer, 1);
  EXPECT_EQ(q.keep_layer_experts[1].expert, 2);
}
