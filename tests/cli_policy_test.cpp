// `moeroute policy` end to end: the ATX pareto rows, lossless rewrite, eval against a plain replay
// loop, build from hand-made traces, conversions, and exit 2 with no output on bad input.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "cli_support.hpp"

#ifdef MOEROUTE_CLI_PATH

namespace {

const std::string kData = MOEROUTE_TEST_DATA_DIR;
const std::string kAtx = kData + "/atx/";
const std::string kGlobal = kAtx + "combined_top_20pct_global_experts.atx.json";
const std::string kLayer = kAtx + "combined_top_05pct_layer_experts.hybrid_top_4_layers.atx.json";

std::string tmp(const std::string& name) { return clitest::tmp_path("cli_policy_" + name); }
const auto& slurp = clitest::read_text;
const auto& spit = clitest::write_text;
using result = clitest::run_result;

result run(const std::string& args) { return clitest::run_cli(args, "cli_policy"); }

nlohmann::json load_json(const std::string& path) { return nlohmann::json::parse(slurp(path)); }

// Bad input: exit 2, one "moeroute: ..." line containing `needle`, and no output file.
void expect_bad(const std::string& args, const std::string& out_path, const std::string& needle) {
  clitest::expect_bad(args, out_path, needle, "cli_policy");
}

TEST(CliPolicy, ParetoReproducesAtxGlobalRows) {
  const std::string out = tmp("pareto.json"), svg = tmp("pareto.svg");
  std::remove(out.c_str());
  std::remove(svg.c_str());
  const result r = run("policy pareto " + kGlobal + " --percents 5,10,15,20 --layers 40 --cell-mib 1.83202 -o " +
                       out + " --svg " + svg);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto got = load_json(out);
  EXPECT_EQ(got["schema_version"], "atx-policy-pareto-comparison-v1");
  std::vector<nlohmann::json> want;
  const auto comparison = load_json(kAtx + "policy_pareto_comparison.json");
  for (const auto& row : comparison["rows"])
    if (row["policy_type"] == "global_experts") want.push_back(row);
  ASSERT_EQ(want.size(), 4u);
  ASSERT_EQ(got["rows"].size(), 4u);
  for (std::size_t i = 0; i < 4; ++i) {
    const auto& g = got["rows"][i];
    const auto& w = want[i];
    EXPECT_EQ(g["selected_units"], w["selected_units"]) << i;
    EXPECT_EQ(g["effective_layer_expert_cells"], w["effective_layer_expert_cells"]) << i;
    for (const char* k : {"combined_importance_captured_pct", "combined_activation_captured_pct",
                          "scicode_importance_captured_pct", "terminal_bench_importance_captured_pct",
                          "estimated_hot_vram_mib"})  // one decimal
      EXPECT_NEAR(g[k].get<double>(), w[k].get<double>(), 1e-9) << i << " " << k;
    EXPECT_NEAR(g["estimated_hot_vram_gib"].get<double>(), w["estimated_hot_vram_gib"].get<double>(), 1e-9) << i;
  }
  // The chart: an SVG document with one marker per row for importance and for activation.
  const std::string chart = slurp(svg);
  EXPECT_EQ(chart.rfind("<svg ", 0), 0u);
  EXPECT_NE(chart.find("</svg>"), std::string::npos);
  std::size_t circles = 0;
  for (std::size_t p = chart.find("<circle"); p != std::string::npos; p = chart.find("<circle", p + 1)) ++circles;
  EXPECT_EQ(circles, 8u);
  EXPECT_NE(chart.find("importance, global_experts"), std::string::npos);
  EXPECT_NE(chart.find("activation, global_experts"), std::string::npos);
}

TEST(CliPolicy, ParetoErrorsWriteNothing) {
  const std::string out = tmp("pareto_bad.json");
  expect_bad("policy pareto " + kGlobal + " --percents 5,25 --layers 40 --cell-mib 1.8 -o " + out, out,
             "ranks only 52");
  expect_bad("policy pareto " + kGlobal + " --percents 5 --layers 40 -o " + out, out, "--cell-mib");
  expect_bad("policy pareto " + kGlobal + " --percents 5,x --layers 40 --cell-mib 1 -o " + out, out, "--percents");
  expect_bad("policy pareto " + kGlobal + " --percents 5 --layers 40 --model " + kAtx + "nope.gguf -o " + out, out,
             "nope.gguf");
}

// Writes a GGUF v3 whose F32 tensors are zero; only the header matters to --model.
void write_gguf(const std::string& path, const std::vector<std::pair<std::string, std::vector<std::uint64_t>>>& tensors) {
  std::string b = "GGUF";
  auto u32 = [&](std::uint32_t v) { for (int i = 0; i < 4; ++i) b.push_back(static_cast<char>(v >> (8 * i))); };
  auto u64 = [&](std::uint64_t v) { for (int i = 0; i < 8; ++i) b.push_back(static_cast<char>(v >> (8 * i))); };
  u32(3);
  u64(tensors.size());
  u64(0);
  std::uint64_t off = 0;
  for (const auto& t : tensors) {
    u64(t.first.size());
    b += t.first;
    u32(static_cast<std::uint32_t>(t.second.size()));
    std::uint64_t n = 4;
    for (auto d : t.second) {
      u64(d);
      n *= d;
    }
    u32(0);  // F32
    u64(off);
    off += (n + 31) / 32 * 32;
  }
  while (b.size() % 32) b.push_back('\0');
  b.append(off, '\0');
  spit(path, b);
}

TEST(CliPolicy, ParetoCellSizesFromModelGguf) {
  // Layer 0: three [256, 256, 4] F32 tensors = 1 MiB each -> 0.75 MiB a cell; layer 1: [256, 512, 4]
  // -> 1.5 MiB a cell. Cells 0:0, 0:1, 1:1 -> 3.0 MiB.
  const std::string model = tmp("model.gguf"), pol = tmp("small.json"), out = tmp("pareto_gguf.json");
  write_gguf(model, {{"blk.0.ffn_gate_exps.weight", {256, 256, 4}}, {"blk.0.ffn_up_exps.weight", {256, 256, 4}},
                     {"blk.0.ffn_down_exps.weight", {256, 256, 4}}, {"blk.1.ffn_gate_exps.weight", {256, 512, 4}},
                     {"blk.1.ffn_up_exps.weight", {256, 512, 4}}, {"blk.1.ffn_down_exps.weight", {512, 256, 4}}});
  spit(pol, R"({"keep_layer_experts_compact": "0:0,0:1,1:1"})");
  const result r = run("policy pareto " + pol + " --model " + model + " -o " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto row = load_json(out)["rows"][0];
  EXPECT_EQ(row["effective_layer_expert_cells"], 3);
  EXPECT_DOUBLE_EQ(row["estimated_hot_vram_mib"].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(row["estimated_hot_vram_gib"].get<double>(), 0.003);
  EXPECT_DOUBLE_EQ(row["percent"].get<double>(), 37.5);  // 3 of 2 x 4 cells
  EXPECT_TRUE(row["combined_importance_captured_pct"].is_null());
}

TEST(CliPolicy, ConvertRoundTripsLayerFixtureLosslessly) {
  const std::string out = tmp("roundtrip.json");
  std::remove(out.c_str());
  const result r = run("policy convert " + kLayer + " --to json -o " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto got = load_json(out);
  EXPECT_EQ(got, load_json(kLayer));
  EXPECT_EQ(got["keep_layer_experts"].size(), 512u);
  EXPECT_EQ(got["keep_layers"], nlohmann::json::parse("[37, 38, 36, 35]"));
}

TEST(CliPolicy, ConvertBetweenFlagCompactAndJson) {
  // Flag -> compact: every cell spelled out, (layer, expert) order.
  result r = run("policy convert --cells 37:103,0:0-31 --to compact");
  ASSERT_EQ(r.code, 0) << r.err;
  std::string want;
  for (int e = 0; e < 32; ++e) want += "0:" + std::to_string(e) + ",";
  want += "37:103\n";
  EXPECT_EQ(r.out, want);
  // Compact -> flag: runs folded into ranges.
  r = run("policy convert --cells " + want.substr(0, want.size() - 1) + " --keep-layers 35,36,37,38 --to flag");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "--moe-keep-layer-experts 0:0-31,37:103 --moe-keep-layers 35-38\n");
  // Global experts.
  r = run("policy convert " + kGlobal + " --to flag");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("--moe-keep-experts 1,12,14-16,22,", 0), 0u) << r.out;
  // The fixture's compact string and the flag form name the same cells.
  r = run("policy convert " + kLayer + " --to compact");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, load_json(kLayer)["keep_layer_experts_compact"].get<std::string>() + "\n");
  // Flag -> JSON policy.
  const std::string out = tmp("converted.json");
  r = run("policy convert --experts 0,3-5 --name tiny -o " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = load_json(out);
  EXPECT_EQ(j["schema_version"], "atx-moe-residency-policy-v1");
  EXPECT_EQ(j["policy_name"], "tiny");
  EXPECT_EQ(j["keep_experts"], nlohmann::json::parse("[0, 3, 4, 5]"));
  EXPECT_EQ(j["keep_experts_compact"], "0,3,4,5");
}

TEST(CliPolicy, MalformedPoliciesExit2NamingTheEntry) {
  const std::string out = tmp("bad_out.json");
  struct bad_case {
    const char* json;
    const char* needle;
  };
  const bad_case cases[] = {
      {R"({"schema_version": "atx-moe-residency-policy-v9", "keep_experts": [1]})", "schema_version"},
      {R"({"keep_experts": [4, 4]})", "keep_experts[1]: duplicate expert 4"},
      {R"({"keep_experts": [4, 5.5]})", "keep_experts[1] must be an integer"},
      {R"({"selection": {"total_experts": 8}, "keep_experts": [9]})", "keep_experts[0] = 9 out of range"},
      {R"({"keep_layer_experts": [{"layer": 1, "expert": 2}], "keep_layer_experts_compact": "1:3"})",
       "cell 1:3 is not in keep_layer_experts"},
      {R"({"keep_layer_experts": [{"layer": "1", "expert": 2}]})", "keep_layer_experts[0].layer must be an integer"},
      {R"({"keep_layer_experts_compact": "1:2,x"})", "keep_layer_experts_compact: item 2"},
      {R"({"keep_layers": "1,2"})", "keep_layers must be an array"},
  };
  int i = 0;
  for (const auto& c : cases) {
    const std::string in = tmp("bad_" + std::to_string(i++) + ".json");
    spit(in, c.json);
    expect_bad("policy convert " + in + " -o " + out, out, c.needle);
    expect_bad("policy show " + in, out, c.needle);
  }
  expect_bad("policy convert --cells 0:5-3 -o " + out, out, "range start is greater");
  expect_bad("policy convert --cells 0:1,0:1 -o " + out, out, "duplicate cell 0:1");
  expect_bad("policy convert " + tmp("does_not_exist.json") + " -o " + out, out, "cannot open");
}

// Plain replay: per layer, accesses and hits of (layer, expert) in the resident cell set.
struct plain_eval {
  std::map<int, long long> accesses, hits;
};

plain_eval plain_replay(const std::set<std::pair<int, int>>& resident, const std::string& trace) {
  plain_eval p;
  std::ifstream f(trace);
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    const int l = j["layer"];
    for (const auto& e : j["experts"]) {
      p.accesses[l] += 1;
      if (resident.count({l, e.get<int>()})) p.hits[l] += 1;
    }
  }
  return p;
}

// Resident cells of a policy JSON, read independently of the library: cells (or global experts in
// every layer) plus whole keep_layers.
std::set<std::pair<int, int>> plain_cells(const nlohmann::json& pol, int L, int E) {
  std::set<std::pair<int, int>> s;
  if (pol.contains("keep_layer_experts")) {
    for (const auto& c : pol["keep_layer_experts"]) s.insert({c["layer"].get<int>(), c["expert"].get<int>()});
  } else {
    for (const auto& e : pol["keep_experts"])
      for (int l = 0; l < L; ++l) s.insert({l, e.get<int>()});
  }
  if (pol.contains("keep_layers"))
    for (const auto& l : pol["keep_layers"])
      for (int e = 0; e < E; ++e) s.insert({l.get<int>(), e});
  return s;
}

TEST(CliPolicy, EvalMatchesPlainReplayOnShippedTraces) {
  struct trace_case {
    const char* file;
    const char* build;
    int L, E;
  };
  const trace_case cases[] = {
      {"mixtral-8x7b_humaneval_routing.jsonl", "--unit cell --percent 20 --hybrid-top-layers 2", 32, 8},
      {"qwen1.5-moe-a2.7b_gsm8k_vllm.jsonl", "--unit global --percent 10", 24, 60},
      {"flame-moe-290m_pretrain_decode10.jsonl", "--unit cell --percent 7.5 --measure weight --keep-layers 9", 10, 64},
  };
  for (const auto& c : cases) {
    const std::string trace = kData + "/traces/" + c.file;
    const std::string pol = tmp(std::string("eval_policy_") + c.file + ".json");
    const std::string rep = tmp(std::string("eval_report_") + c.file + ".json");
    result r = run("policy build --trace " + trace + " " + c.build + " -o " + pol);
    ASSERT_EQ(r.code, 0) << r.err;
    r = run("policy eval --policy " + pol + " --trace " + trace + " -o " + rep);
    ASSERT_EQ(r.code, 0) << r.err;
    const auto report = load_json(rep);
    const int L = report["num_layers"], E = report["num_experts"];
    EXPECT_EQ(E, c.E) << c.file;
    EXPECT_GE(L, 1);
    const auto ref = plain_replay(plain_cells(load_json(pol), L, E), trace);
    long long acc = 0, hit = 0;
    ASSERT_EQ(report["per_layer"].size(), ref.accesses.size()) << c.file;
    for (const auto& row : report["per_layer"]) {
      const int l = row["layer"];
      EXPECT_EQ(row["accesses"].get<long long>(), ref.accesses.at(l)) << c.file << " layer " << l;
      const long long h = ref.hits.count(l) ? ref.hits.at(l) : 0;
      EXPECT_EQ(row["hits"].get<long long>(), h) << c.file << " layer " << l;
      EXPECT_DOUBLE_EQ(row["hit_rate"].get<double>(), static_cast<double>(h) / static_cast<double>(ref.accesses.at(l)));
      acc += ref.accesses.at(l);
      hit += h;
    }
    EXPECT_EQ(report["accesses"].get<long long>(), acc);
    EXPECT_EQ(report["hits"].get<long long>(), hit);
    EXPECT_DOUBLE_EQ(report["hit_rate"].get<double>(), static_cast<double>(hit) / static_cast<double>(acc));
    EXPECT_GT(hit, 0) << c.file;
    EXPECT_LT(hit, acc) << c.file;
  }
}

TEST(CliPolicy, EvalOfTheAtxPolicyOnAForeignTraceIsAnError) {
  // A 40 x 256 policy cannot be replayed on an 8-expert, 32-layer Mixtral trace with forced shape.
  const std::string out = tmp("eval_bad.json");
  expect_bad("policy eval --policy " + kLayer + " --trace " + kData +
                 "/traces/mixtral-8x7b_humaneval_routing.jsonl --layers 32 --experts 8 -o " + out,
             out, "outside the model's");
}

TEST(CliPolicy, BuildCombinesWorkloadsByMeanOfNormalizedShares) {
  // Workload a (2 layers x 3 experts), activation counts: layer 0: e0 x3, e1 x1; layer 1: e2 x4 (total 8).
  // Workload b: layer 0: e1 x2; layer 1: e1 x1, e2 x1 (total 4).
  // Global shares a: e0 3/8, e1 1/8, e2 4/8; b: e0 0, e1 3/4, e2 1/4.
  // Mean: e0 .1875, e1 .4375, e2 .375 -> ranks e1, e2, e0. 50% of 3 = 2 experts: e1, e2.
  const std::string a = tmp("wa.jsonl"), b = tmp("wb.jsonl"), out = tmp("combined.json");
  spit(a, R"({"layer": 0, "experts": [0, 1]}
{"layer": 1, "experts": [2]}
{"layer": 0, "experts": [0]}
{"layer": 1, "experts": [2]}
{"layer": 0, "experts": [0]}
{"layer": 1, "experts": [2]}
{"layer": 1, "experts": [2]}
)");
  spit(b, R"({"layer": 0, "experts": [1]}
{"layer": 1, "experts": [1, 2]}
{"layer": 0, "experts": [1]}
)");
  result r = run("policy build --trace " + a + " --trace " + b + " --names a,b --experts 3 --percent 50 -o " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = load_json(out);
  EXPECT_EQ(j["keep_experts"], nlohmann::json::parse("[1, 2]"));
  ASSERT_EQ(j["keep_experts_ranked"].size(), 2u);
  const auto& r1 = j["keep_experts_ranked"][0];
  EXPECT_EQ(r1["expert"], 1);
  EXPECT_EQ(r1["rank"], 1);
  EXPECT_DOUBLE_EQ(r1["mean_importance_share"].get<double>(), 0.4375);
  EXPECT_DOUBLE_EQ(r1["a_importance_share"].get<double>(), 0.125);
  EXPECT_DOUBLE_EQ(r1["b_importance_share"].get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(r1["min_importance_share"].get<double>(), 0.125);
  EXPECT_DOUBLE_EQ(j["keep_experts_ranked"][1]["cumulative_mean_importance_share"].get<double>(), 0.8125);
  EXPECT_EQ(j["selection"]["selected_experts"], 2);
  EXPECT_EQ(j["selection"]["total_experts"], 3);
  EXPECT_EQ(j["selection"]["percent_of_total_experts"], 50);
  EXPECT_EQ(j["keep_experts_compact"], "1,2");

  // Cells, 50% of 6 = 3: mean cell shares (0,0) 3/16, (0,1) 1/16+1/4, (1,1) 1/8, (1,2) 1/4+1/8.
  // Ranking: (1,2) .375, (0,1) .3125, (0,0) .1875.
  r = run("policy build --trace " + a + " --trace " + b + " --names a,b --experts 3 --percent 50 --unit cell -o " + out);
  ASSERT_EQ(r.code, 0) << r.err;
  const auto c = load_json(out);
  EXPECT_EQ(c["keep_layer_experts_compact"], "0:0,0:1,1:2");
  ASSERT_EQ(c["keep_layer_experts"].size(), 3u);
  EXPECT_EQ(c["keep_layer_experts"][0]["layer"], 1);
  EXPECT_EQ(c["keep_layer_experts"][0]["expert"], 2);
  EXPECT_DOUBLE_EQ(c["keep_layer_experts"][1]["mean_importance_share"].get<double>(), 0.3125);

  expect_bad("policy build --trace " + a + " --percent 0 -o " + out, out, "percent");
  expect_bad("policy build --trace " + a + " --trace " + b + " --names a --percent 5 -o " + out, out, "--names");
  expect_bad("policy build --trace " + a + " --percent 5 --measure weight -o " + out, out, "weight");
}

TEST(CliPolicy, BuildFromGpuContainerCountsEqualsTraceBuild) {
  // The counts of workload a above as a gpu-container trace: the same policy, field for field.
  const std::string a = tmp("wa2.jsonl"), counts = tmp("wa2.counts.json");
  const std::string from_trace = tmp("from_trace.json"), from_counts = tmp("from_counts.json");
  spit(a, "{\"layer\": 0, \"experts\": [0, 1]}\n{\"layer\": 0, \"experts\": [0]}\n{\"layer\": 0, \"experts\": [0]}\n"
          "{\"layer\": 1, \"experts\": [2]}\n{\"layer\": 1, \"experts\": [2]}\n{\"layer\": 1, \"experts\": [2]}\n"
          "{\"layer\": 1, \"experts\": [2]}\n");
  spit(counts, R"({"model": "m", "num_experts": 3, "experts_per_token": 2, "n_tokens": 4, "layers": [{"layer_index": 0, "expert_counts": [3, 1, 0]},
                  {"layer_index": 1, "expert_counts": [0, 0, 4]}]})");
  result r = run("policy build --trace " + a + " --names a --percent 100 --unit cell --basis x -o " + from_trace);
  ASSERT_EQ(r.code, 0) << r.err;
  r = run("policy build --counts " + counts + " --names a --percent 100 --unit cell --basis x -o " + from_counts);
  ASSERT_EQ(r.code, 0) << r.err;
  auto t = load_json(from_trace), c = load_json(from_counts);
  // The trace carries no weights, so both have activation shares only.
  EXPECT_EQ(t, c);
  ASSERT_EQ(c["keep_layer_experts"].size(), 6u);
  EXPECT_EQ(c["keep_layer_experts"][0]["layer"], 1);  // (1,2) 4/8
  EXPECT_EQ(c["keep_layer_experts"][1]["expert"], 0);  // (0,0) 3/8
  EXPECT_DOUBLE_EQ(c["keep_layer_experts"][2]["mean_importance_share"].get<double>(), 0.125);  // (0,1)
  EXPECT_EQ(c["keep_layer_experts"][3]["layer"], 0);  // zero shares: (0,2), (1,0), (1,1) in order
  EXPECT_EQ(c["keep_layer_experts"][3]["expert"], 2);
  EXPECT_EQ(c["keep_layer_experts"][5]["expert"], 1);
}

TEST(CliPolicy, ShowSummarizesThePolicy) {
  const result r = run("policy show " + kLayer);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("512 cells"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("keep_layers:   37,38,36,35"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("layer 38 expert 103"), std::string::npos) << r.out;
}

}  // namespace

#else
TEST(CliPolicy, SkippedWithoutCli) { GTEST_SKIP() << "moeroute CLI not built"; }
#endif
