// `moeroute concentration` end to end: the shipped routing traces (checked against a plain loop
// written here), gpu-container JSON and imatrix GGUF files written by the test, exit codes 0/5/2,
// the verdict line, and every malformed input kind (exit 2, one-line message, no output file).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_support.hpp"
#include "fuzz/gguf_writer.hpp"

#ifdef MOEROUTE_CLI_PATH

namespace {

using result = clitest::run_result;

std::string tmp(const std::string& name) { return clitest::tmp_path("cliconc_" + name); }
const auto& slurp = clitest::read_text;
const auto& spit = clitest::write_text;

result run(const std::string& args) { return clitest::run_cli("concentration " + args, "cliconc"); }

// Reference: per-layer metrics by plain loops over counts[layer][expert].
struct ref_summary {
  double hot = 1, conc = 0, top1 = 0;
  bool helps = false;
  std::vector<double> layer_hot, layer_conc, layer_top1;
};

ref_summary reference(const std::vector<std::vector<double>>& counts, double coverage, double threshold) {
  ref_summary s;
  for (const auto& c : counts) {
    double total = 0, mx = 0;
    int nz = 0;
    for (double x : c) {
      total += x;
      if (x > mx) mx = x;
      if (x > 0) ++nz;
    }
    if (total <= 0) continue;
    std::vector<double> d = c;
    std::sort(d.rbegin(), d.rend());
    double cum = 0;
    std::size_t k = d.size();
    for (std::size_t i = 0; i < d.size(); ++i) {
      cum += d[i];
      if (cum >= coverage * total) {
        k = i + 1;
        break;
      }
    }
    double h = 0;
    for (double x : c)
      if (x > 0) h -= x / total * std::log(x / total);
    s.layer_hot.push_back(double(k) / double(c.size()));
    // 1 - normalized entropy; the normalized entropy of one active expert (or E = 1) is 0.
    s.layer_conc.push_back(c.size() <= 1 || nz <= 1 ? 1.0 : 1.0 - h / std::log(double(c.size())));
    s.layer_top1.push_back(mx / total);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
  };
  if (!s.layer_hot.empty()) {
    s.hot = median(s.layer_hot);
    s.top1 = median(s.layer_top1);
    double m = 0;
    for (double x : s.layer_conc) m += x;
    s.conc = m / double(s.layer_conc.size());
    s.helps = s.hot < threshold;
  }
  return s;
}

// Counts per layer (layers in ascending order) from a routing JSONL, by plain parsing.
std::vector<std::vector<double>> jsonl_counts(const std::string& path, int E, std::vector<int>& layer_ids,
                                              long long& n_tokens) {
  std::map<int, std::vector<double>> m;
  std::map<int, long long> records;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    const int l = j["layer"];
    auto& row = m[l];
    row.resize(E, 0.0);
    ++records[l];
    for (int e : j["experts"]) row[e] += 1;
  }
  std::vector<std::vector<double>> out;
  layer_ids.clear();
  n_tokens = 0;
  for (auto& [l, row] : m) {
    layer_ids.push_back(l);
    out.push_back(row);
    n_tokens = std::max(n_tokens, records[l]);
  }
  return out;
}

void expect_matches(const nlohmann::json& j, const ref_summary& s) {
  EXPECT_NEAR(j["hot_frac_for_coverage"].get<double>(), s.hot, 1e-12);
  EXPECT_NEAR(j["concentration_score"].get<double>(), s.conc, 1e-12);
  EXPECT_NEAR(j["top1_share"].get<double>(), s.top1, 1e-12);
  EXPECT_EQ(j["cache_helps"].get<bool>(), s.helps);
  ASSERT_EQ(j["per_layer"].size(), s.layer_hot.size());
  for (std::size_t i = 0; i < s.layer_hot.size(); ++i) {
    EXPECT_NEAR(j["per_layer"][i]["hot_frac_for_coverage"].get<double>(), s.layer_hot[i], 1e-12);
    EXPECT_NEAR(j["per_layer"][i]["concentration_score"].get<double>(), s.layer_conc[i], 1e-12);
    EXPECT_NEAR(j["per_layer"][i]["top1_share"].get<double>(), s.layer_top1[i], 1e-12);
  }
}

// Expects exit 2, a single "moeroute: ..." line naming `needle`, and no output file.
void expect_bad(const std::string& args, const std::string& needle) {
  const std::string out = tmp("bad_out.json");
  clitest::expect_bad("concentration " + args + " -o " + out, out, needle, "cliconc");
}

}  // namespace

TEST(CliConcentration, ShippedMixtralTraceMatchesPlainLoop) {
  const std::string trace = std::string(MOEROUTE_TEST_DATA_DIR) + "/traces/mixtral-8x7b_humaneval_routing.jsonl";
  const std::string out = tmp("mixtral.json");
  const result r = run("--trace " + trace + " --topk 2 -o " + out);
  std::vector<int> ids;
  long long n_tokens = 0;
  const auto counts = jsonl_counts(trace, 8, ids, n_tokens);
  const ref_summary s = reference(counts, 0.90, 0.50);
  EXPECT_EQ(r.code, s.helps ? 5 : 0) << r.err;
  const auto j = nlohmann::json::parse(slurp(out));
  EXPECT_EQ(j["num_experts"], 8);
  EXPECT_EQ(j["n_layers"], 32);
  EXPECT_EQ(j["n_tokens"], n_tokens);
  EXPECT_EQ(j["model"], "mixtral-8x7b_humaneval_routing");
  expect_matches(j, s);
  for (std::size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(j["per_layer"][i]["layer_index"], ids[i]);
  // The verdict line states the median resident experts out of 8.
  const int resident = static_cast<int>(std::lround(s.hot * 8));
  EXPECT_EQ(r.err.rfind(std::string(s.helps ? "cache could help" : "cache NOT justified") + " \u2014 " +
                            std::to_string(resident) + "/8 experts",
                        0),
            0u)
      << r.err;
  // --model-name overrides; stdout output when -o is absent.
  const result r2 = run("--trace " + trace + " --model-name mixtral");
  EXPECT_EQ(nlohmann::json::parse(r2.out)["model"], "mixtral");
}

TEST(CliConcentration, ShippedQwenAndFlameTracesMatchPlainLoop) {
  for (const auto& [name, E] : std::vector<std::pair<std::string, int>>{
           {"qwen1.5-moe-a2.7b_gsm8k_vllm", 60}, {"flame-moe-290m_pretrain_decode10", 64}}) {
    const std::string trace = std::string(MOEROUTE_TEST_DATA_DIR) + "/traces/" + name + ".jsonl";
    const result r = run("--trace " + trace + " --num-experts " + std::to_string(E) + " --coverage 0.8");
    std::vector<int> ids;
    long long n_tokens = 0;
    const ref_summary s = reference(jsonl_counts(trace, E, ids, n_tokens), 0.80, 0.50);
    EXPECT_EQ(r.code, s.helps ? 5 : 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["num_experts"], E);
    expect_matches(j, s);
  }
}

TEST(CliConcentration, ContainerTraceJsonExitCodes) {
  // Concentrated: each layer sends 90% to one of 10 experts -> hot 1/10 < 0.5 -> exit 5.
  const std::string hot = tmp("hot.json");
  spit(hot, R"({"model": "toy", "num_experts": 10, "experts_per_token": 1, "n_tokens": 100,
    "layers": [{"layer_index": 0, "expert_counts": [90, 10, 0, 0, 0, 0, 0, 0, 0, 0]},
               {"layer_index": 1, "expert_counts": [0, 0, 95, 1, 1, 1, 1, 1, 0, 0]}]})");
  const std::string out = tmp("hot_out.json");
  const result r = run("--trace " + hot + " -o " + out + " --cell-bytes 1024");
  EXPECT_EQ(r.code, 5) << r.err;
  EXPECT_EQ(r.err.rfind("cache could help \u2014 1/10 experts (10%)", 0), 0u) << r.err;
  const auto j = nlohmann::json::parse(slurp(out));
  EXPECT_EQ(j["model"], "toy");
  EXPECT_EQ(j["n_tokens"], 100);
  const ref_summary s = reference({{90, 10, 0, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 95, 1, 1, 1, 1, 1, 0, 0}}, 0.9, 0.5);
  expect_matches(j, s);
  EXPECT_EQ(j["per_layer"][1]["hot_experts"], nlohmann::json::array({2}));
  EXPECT_EQ(j["recommended_cache"]["cells"], 2);
  EXPECT_EQ(j["recommended_cache"]["bytes"], 2048);
  for (const char* k : {"model", "num_experts", "n_layers", "n_tokens", "coverage_target", "threshold",
                        "cache_helps", "hot_frac_for_coverage", "concentration_score", "top1_share",
                        "per_layer", "basis", "notes"})
    EXPECT_TRUE(j.contains(k)) << k;
  // Threshold 0.1: 0.1 < 0.1 is false -> exit 0.
  EXPECT_EQ(run("--trace " + hot + " --threshold 0.1").code, 0);

  // All-zero trace: valid, hot 1.0, concentration 0, top1 0, exit 0.
  const std::string zero = tmp("zero.json");
  spit(zero, R"({"model": "z", "num_experts": 4, "experts_per_token": 1, "n_tokens": 0,
    "layers": [{"layer_index": 0, "expert_counts": [0, 0, 0, 0]}]})");
  const result z = run("--trace " + zero);
  EXPECT_EQ(z.code, 0) << z.err;
  const auto zj = nlohmann::json::parse(z.out);
  EXPECT_EQ(zj["hot_frac_for_coverage"], 1.0);
  EXPECT_EQ(zj["concentration_score"], 0.0);
  EXPECT_EQ(zj["top1_share"], 0.0);
  EXPECT_EQ(zj["cache_helps"], false);
  EXPECT_EQ(zj["n_layers"], 0);  // no layer was analyzed

  // n_layers counts analyzed layers only; a one-expert layer scores concentration 1.0, so the
  // mean over the two analyzed layers is (1 + 0) / 2 (the uniform layer's score is 0).
  const std::string mixed = tmp("mixed.json");
  spit(mixed, R"({"model": "x", "num_experts": 4, "experts_per_token": 1, "n_tokens": 8,
    "layers": [{"layer_index": 0, "expert_counts": [0, 0, 0, 0]},
               {"layer_index": 1, "expert_counts": [0, 8, 0, 0]},
               {"layer_index": 2, "expert_counts": [2, 2, 2, 2]}]})");
  const result m = run("--trace " + mixed);
  ASSERT_EQ(m.code, 0) << m.err;
  const auto mj = nlohmann::json::parse(m.out);
  EXPECT_EQ(mj["n_layers"], 2);
  EXPECT_EQ(mj["per_layer"][0]["concentration_score"], 1.0);
  EXPECT_NEAR(mj["concentration_score"].get<double>(), 0.5, 1e-12);
}

TEST(CliConcentration, ImatrixPath) {
  // Layers 2 and 5 (no blk.0): n_tokens from blk.2 = round(7.5) + round(2.5) + 6 = 8 + 2 + 6 = 16,
  // / topk 4 = 4. Counts rounded half-to-even before the metrics.
  const std::string path = tmp("moe.imatrix.gguf");
  moeroute_test::make_imatrix({5, 2}, {{1, 1, 1, 1}, {7.5f, 2.5f, 6, 0}}).write(path);
  const std::string out = tmp("imatrix_out.json");
  const result r = run("--imatrix " + path + " --topk 4 -o " + out);
  const ref_summary s = reference({{8, 2, 6, 0}, {1, 1, 1, 1}}, 0.9, 0.5);
  EXPECT_EQ(r.code, s.helps ? 5 : 0) << r.err;
  const auto j = nlohmann::json::parse(slurp(out));
  EXPECT_EQ(j["n_tokens"], 4);
  EXPECT_EQ(j["num_experts"], 4);
  EXPECT_EQ(j["n_layers"], 2);
  EXPECT_EQ(j["model"], "model");  // gpu-container's default without --model-name
  EXPECT_EQ(j["input"]["file_stem"], "cliconc_moe.imatrix");
  EXPECT_EQ(nlohmann::json::parse(run("--imatrix " + path + " --model-name q3").out)["model"], "q3");
  EXPECT_EQ(j["per_layer"][0]["layer_index"], 2);
  EXPECT_EQ(j["per_layer"][0]["total_mass"], 16.0);
  expect_matches(j, s);
  EXPECT_EQ(nlohmann::json::parse(run("--imatrix " + path + " --topk 3").out)["n_tokens"], 5);  // 16 / 3
}

TEST(CliConcentration, MalformedInputsExitTwoWithoutOutput) {
  const std::string dir = std::string(MOEROUTE_TEST_TMP_DIR) + "/cliconc_";
  expect_bad("--trace " + dir + "missing.json", "missing.json: cannot open file");
  spit(dir + "syntax.json", "{\n \"layers\": [\n  {\"layer_index\": 0,, }]}");
  expect_bad("--trace " + dir + "syntax.json", "syntax.json:3:");
  spit(dir + "neg.json", R"({"model": "m", "num_experts": 2, "experts_per_token": 1, "n_tokens": 3,
    "layers": [{"layer_index": 0, "expert_counts": [3, -1]}]})");
  expect_bad("--trace " + dir + "neg.json", "layers[0].expert_counts[1] = -1");
  spit(dir + "nolayers.json", R"({"model": "m"})");
  expect_bad("--trace " + dir + "nolayers.json", "missing field 'layers'");
  // gpu-container-concentration requires the header fields; a trace without one is bad input.
  spit(dir + "noexperts.json", R"({"model": "m", "experts_per_token": 1, "n_tokens": 3,
    "layers": [{"layer_index": 0, "expert_counts": [3, 1]}]})");
  expect_bad("--trace " + dir + "noexperts.json", "missing field 'num_experts'");
  spit(dir + "nomodel.json", R"({"num_experts": 2, "experts_per_token": 1, "n_tokens": 3,
    "layers": [{"layer_index": 0, "expert_counts": [3, 1]}]})");
  expect_bad("--trace " + dir + "nomodel.json", "missing field 'model'");
  spit(dir + "bad.jsonl", "{\"layer\": 0, \"experts\": [1]}\n{\"layer\": 0, \"experts\": [-4]}\n");
  expect_bad("--trace " + dir + "bad.jsonl", "bad.jsonl:2: experts[0] = -4");
  spit(dir + "big.jsonl", "{\"layer\": 0, \"experts\": [9]}\n");
  expect_bad("--trace " + dir + "big.jsonl --num-experts 4", "--num-experts is 4");

  const std::string good = dir + "good.gguf";
  moeroute_test::make_imatrix({0}, {{1, 2}}).write(good);
  const std::string full = slurp(good);
  spit(dir + "trunc.gguf", full.substr(0, full.size() - 3));
  expect_bad("--imatrix " + dir + "trunc.gguf", "runs past the end");
  spit(dir + "notgguf.gguf", "hello world, not a gguf");
  expect_bad("--imatrix " + dir + "notgguf.gguf", "bad magic");
  moeroute_test::gguf_writer model;
  model.kv_string("general.type", "model");
  model.write(dir + "model.gguf");
  expect_bad("--imatrix " + dir + "model.gguf", "not an imatrix GGUF");
  moeroute_test::gguf_writer dense = moeroute_test::make_imatrix({}, {});
  dense.tensor_f32("blk.0.ffn_down.weight.in_sum2", {2, 1}, {1, 1});
  dense.tensor_f32("blk.0.ffn_down.weight.counts", {1, 1}, {3});
  dense.write(dir + "dense.gguf");
  expect_bad("--imatrix " + dir + "dense.gguf", "not an imatrix of an MoE model");
  moeroute_test::make_imatrix({0, 1}, {{1, 2}, {1, 2, 3}}).write(dir + "mismatch.gguf");
  expect_bad("--imatrix " + dir + "mismatch.gguf", "has 3 experts but");
  moeroute_test::gguf_writer sums = moeroute_test::make_imatrix({}, {});
  sums.tensor_f32("blk.0.ffn_down_exps.weight.in_sum2", {2, 3}, std::vector<float>(6, 1));
  sums.tensor_f32("blk.0.ffn_down_exps.weight.counts", {1, 2}, {1, 2});
  sums.write(dir + "sums.gguf");
  expect_bad("--imatrix " + dir + "sums.gguf", "n_mat = 3");

  expect_bad("--trace " + std::string(MOEROUTE_TEST_TMP_DIR), "is a directory");
  expect_bad("--imatrix " + std::string(MOEROUTE_TEST_TMP_DIR), "is a directory");
  spit(dir + "empty.gguf", "");
  expect_bad("--imatrix " + dir + "empty.gguf", "too short for the magic");
  expect_bad("", "one of --trace or --imatrix is required");
  expect_bad("--trace " + dir + "neg.json --imatrix " + good, "excludes");
  expect_bad("--imatrix " + good + " --coverage 0", "--coverage: 0 is not in (0, 1]");
  expect_bad("--imatrix " + good + " --threshold 1.5", "--threshold: 1.5 is not in (0, 1]");
  expect_bad("--imatrix " + good + " --topk 0", "--topk: 0 is not in [1, 65536]");
  expect_bad("--imatrix " + good + " --bogus", "bogus");
}

#else
TEST(CliConcentration, SkippedWithoutCli) { GTEST_SKIP() << "CLI not built"; }
#endif
