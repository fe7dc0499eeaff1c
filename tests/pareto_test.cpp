// Pareto comparison: the ATX global rows reproduced from the ranked 20% policy, per-layer sizes,
// GGUF-derived cell sizes.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeroute/residency/pareto.hpp"

namespace {

const std::string kAtx = std::string(MOEROUTE_TEST_DATA_DIR) + "/atx/";

nlohmann::json load_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

TEST(Pareto, GlobalRowsReproduceAtxComparison) {
  const auto policy = moeroute::read_atx_policy(kAtx + "combined_top_20pct_global_experts.atx.json");
  moeroute::pareto_options o;
  o.num_layers = 40;
  o.size.bytes = 1.83202 * 1024 * 1024;
  const auto rows = moeroute::pareto_slices(policy, {5, 10, 15, 20}, o, "policy");
  const auto doc = nlohmann::json::parse(moeroute::pareto_json(rows).dump());
  std::vector<nlohmann::json> want;
  const auto comparison = load_json(kAtx + "policy_pareto_comparison.json");
  for (const auto& r : comparison["rows"])
    if (r["policy_type"] == "global_experts") want.push_back(r);
  ASSERT_EQ(want.size(), 4u);
  ASSERT_EQ(doc["rows"].size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    const auto& got = doc["rows"][i];
    for (const char* k : {"policy_type", "policy", "percent", "selected_units", "effective_layer_expert_cells"})
      EXPECT_EQ(got[k], want[i][k]) << i << " " << k;
    for (const char* k : {"estimated_hot_vram_gib", "estimated_hot_vram_mib", "combined_importance_captured_pct",
                          "combined_activation_captured_pct", "scicode_importance_captured_pct",
                          "terminal_bench_importance_captured_pct"})
      EXPECT_DOUBLE_EQ(got[k].get<double>(), want[i][k].get<double>()) << i << " " << k;
  }
}

TEST(Pareto, SlicesBeyondTheRankedListAreErrors) {
  const auto policy = moeroute::read_atx_policy(kAtx + "combined_top_20pct_global_experts.atx.json");
  moeroute::pareto_options o;
  o.num_layers = 40;
  o.size.bytes = 1;
  EXPECT_THROW(moeroute::pareto_slices(policy, {25}, o, "policy"), moeroute::error);
}

TEST(Pareto, LayerPolicyRowCountsCellsAndKeepLayers) {
  const auto policy =
      moeroute::read_atx_policy(kAtx + "combined_top_05pct_layer_experts.hybrid_top_4_layers.atx.json");
  const auto raw = load_json(kAtx + "combined_top_05pct_layer_experts.hybrid_top_4_layers.atx.json");
  moeroute::pareto_options o;
  o.size.bytes = 1024 * 1024;  // 1 MiB a cell
  const auto row = moeroute::pareto_policy_row(policy, o, "hybrid");
  // Reference: 512 listed cells, those outside layers 35..38, plus 4 x 256.
  long long outside = 0;
  double imp = 0;
  for (const auto& c : raw["keep_layer_experts"]) {
    const int l = c["layer"];
    if (l < 35 || l > 38) ++outside;
    imp += c["mean_importance_share"].get<double>();
  }
  EXPECT_EQ(row.selected_units, 512);
  EXPECT_EQ(row.effective_layer_expert_cells, outside + 4 * 256);
  EXPECT_DOUBLE_EQ(row.estimated_hot_vram_mib, static_cast<double>(outside + 1024));
  EXPECT_DOUBLE_EQ(row.percent, 5);
  EXPECT_DOUBLE_EQ(row.combined_importance_captured_pct, std::round(imp * 1000) / 10);
  EXPECT_DOUBLE_EQ(row.combined_importance_captured_pct, 66.1);  // ATX's layer row at 5%
}

TEST(Pareto, PerLayerCellSizes) {
  auto p = moeroute::parse_atx_policy(R"({"keep_layer_experts_compact": "0:1,1:0,1:1", "keep_layers": [2]})", "p");
  moeroute::pareto_options o;
  o.num_layers = 3;
  o.num_experts = 4;
  o.size.per_layer = {1024.0 * 1024, 2048.0 * 1024, 512.0 * 1024};
  const auto row = moeroute::pareto_policy_row(p, o, "p");
  EXPECT_EQ(row.effective_layer_expert_cells, 3 + 4);
  EXPECT_DOUBLE_EQ(row.estimated_hot_vram_mib, 1 + 2 * 2 + 4 * 0.5);
  EXPECT_TRUE(std::isnan(row.combined_importance_captured_pct));
  EXPECT_DOUBLE_EQ(row.percent, 25);  // 3 of 12 cells
}

// A minimal GGUF v3 with F32 tensors (header written by hand; data zero).
struct gguf_builder {
  std::string out;
  void u32(std::uint32_t v) { for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(v >> (8 * i))); }
  void u64(std::uint64_t v) { for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (8 * i))); }
  void str(const std::string& s) { u64(s.size()); out += s; }
  static std::string build(const std::vector<std::pair<std::string, std::vector<std::uint64_t>>>& tensors) {
    gguf_builder b;
    b.out = "GGUF";
    b.u32(3);
    b.u64(tensors.size());
    b.u64(0);
    std::uint64_t off = 0;
    std::vector<std::uint64_t> sizes;
    for (const auto& t : tensors) {
      b.str(t.first);
      b.u32(static_cast<std::uint32_t>(t.second.size()));
      std::uint64_t n = 1;
      for (auto d : t.second) { b.u64(d); n *= d; }
      b.u32(0);  // F32
      b.u64(off);
      off += (n * 4 + 31) / 32 * 32;
    }
    while (b.out.size() % 32) b.out.push_back('\0');
    b.out.append(off, '\0');
    return b.out;
  }
};

TEST(Pareto, GgufCellSizeFromExpertTensorHeaders) {
  // Layer 1: gate/up [4, 3, 8] F32 = 384 bytes each, down [3, 4, 8] = 384: 3 x 384 / 8 = 144 a cell.
  // Layer 3: only gate [2, 2, 8] = 128 bytes: 16 a cell. Other tensors are ignored.
  const auto bytes = gguf_builder::build({{"blk.1.ffn_gate_exps.weight", {4, 3, 8}},
                                          {"blk.1.ffn_up_exps.weight", {4, 3, 8}},
                                          {"blk.1.ffn_down_exps.weight", {3, 4, 8}},
                                          {"blk.1.attn_q.weight", {4, 4}},
                                          {"blk.3.ffn_gate_exps.weight", {2, 2, 8}}});
  const auto g = moeroute::gguf_file::parse(bytes, "m.gguf");
  int E = 0;
  const auto s = moeroute::gguf_expert_cell_size(g, &E);
  EXPECT_EQ(E, 8);
  EXPECT_EQ(s.per_layer, (std::vector<double>{0, 144, 0, 16}));

  const auto bad = gguf_builder::build({{"blk.1.ffn_gate_exps.weight", {4, 3, 8}},
                                        {"blk.2.ffn_up_exps.weight", {4, 3, 4}}});
  EXPECT_THROW(moeroute::gguf_expert_cell_size(moeroute::gguf_file::parse(bad, "b.gguf")), moeroute::error);
  const auto none = gguf_builder::build({{"token_embd.weight", {4, 3}}});
  EXPECT_THROW(moeroute::gguf_expert_cell_size(moeroute::gguf_file::parse(none, "n.gguf")), moeroute::error);
}

TEST(Pareto, ExpertTensorsFollowTheGgufExpertViewRule) {
  // One rule decides what an expert tensor is: blk.N with 1 to 6 digits and an _exps suffix.
  int proj = -1;
  EXPECT_EQ(moeroute::gguf_expert_tensor("blk.70000.ffn_up_exps.weight", &proj), 70000);
  EXPECT_EQ(proj, 1);
  EXPECT_EQ(moeroute::gguf_expert_tensor("blk.999999.ffn_down_exps.weight", &proj), 999999);
  EXPECT_EQ(proj, 2);
  EXPECT_EQ(moeroute::gguf_expert_tensor("blk.1234567.ffn_gate_exps.weight"), -1);  // 7 digits
  EXPECT_EQ(moeroute::gguf_expert_tensor("blk..ffn_gate_exps.weight"), -1);
  EXPECT_EQ(moeroute::gguf_expert_tensor("blk.1x.ffn_gate_exps.weight"), -1);
  EXPECT_EQ(moeroute::gguf_expert_tensor("blk.1.ffn_gate_exps.weight.x"), -1);
  EXPECT_EQ(moeroute::gguf_expert_tensor("blk.1.ffn_gate_inp.weight"), -1);
  // Layer 70000 (past the ATX id range) is a layer like any other here; 7 digits are ignored.
  // gate [2, 2, 4] F32 = 64 bytes: 16 a cell.
  const auto bytes = gguf_builder::build({{"blk.70000.ffn_gate_exps.weight", {2, 2, 4}},
                                          {"blk.1234567.ffn_gate_exps.weight", {2, 2, 4}}});
  const auto s = moeroute::gguf_expert_cell_size(moeroute::gguf_file::parse(bytes, "m.gguf"));
  ASSERT_EQ(s.per_layer.size(), 70001u);
  EXPECT_EQ(s.per_layer[70000], 16.0);
  EXPECT_EQ(s.per_layer[0], 0.0);
}

}  // namespace
