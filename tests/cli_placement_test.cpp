// `moeroute placement` and `moeroute placement eval` end to end: DeepSeek's README example through
// SGLang's logical_count input, the three output formats, the replay against hand-worked figures,
// the halves, and every bad-input exit (2, one line, no output file).

#include <gtest/gtest.h>

#include <cstdio>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_support.hpp"
#include "fuzz/gguf_writer.hpp"

#ifndef MOEROUTE_CLI_PATH
TEST(CliPlacement, Skipped) { GTEST_SKIP() << "the moeroute CLI is not built"; }
#else

namespace {

const std::string kTmp = MOEROUTE_TEST_TMP_DIR;
const std::string kTraces = std::string(MOEROUTE_TEST_DATA_DIR) + "/traces/";
const std::string kMixtral = kTraces + "mixtral-8x7b_humaneval_routing.jsonl";
const std::string kQwen = kTraces + "qwen1.5-moe-a2.7b_gsm8k_vllm.jsonl";

clitest::run_result cli(const std::string& args) { return clitest::run_cli("placement " + args, "cli_placement"); }

std::string write_tmp(const std::string& name, const std::string& text) {
  const std::string path = kTmp + "/" + name;
  clitest::write_text(path, text);
  return path;
}

std::string q(const std::string& s) { return "\"" + s + "\""; }

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(clitest::read_text(path)); }

void expect_bad(const std::string& args, const std::string& needle) {
  const std::string out = kTmp + "/cli_placement_bad.json";
  clitest::expect_bad("placement " + args + " -o " + q(out), out, needle, "cli_placement");
}

const std::string kReadmeCounts =
    R"({"logical_count": [[90,132,40,61,104,165,39,4,73,56,183,86],[20,107,104,64,19,197,187,157,172,86,16,27]]})";

}  // namespace

TEST(CliPlacement, DeepSeekReadmeExampleFromLogicalCount) {
  const std::string counts = write_tmp("cli_placement_readme.json", kReadmeCounts);
  const std::string out = kTmp + "/cli_placement_readme.sglang.json";
  const auto r = cli("--counts " + q(counts) + " --gpus 8 --nodes 2 --groups 4 --redundant 4 --algorithm eplb "
                     "--format sglang -o " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(r.out.empty());
  const auto j = read_json(out);
  EXPECT_EQ(j.size(), 1u);
  EXPECT_EQ(j.at("physical_to_logical_map"),
            nlohmann::json::parse("[[5,6,5,7,8,4,3,4,10,9,10,2,0,1,11,1],[7,10,6,8,6,11,8,9,2,4,5,1,5,0,3,1]]"));
  // The same through SGLang's [steps][layers][experts] form, split into two steps that sum to it.
  const std::string stepped = write_tmp(
      "cli_placement_readme_steps.json",
      R"({"logical_count": [[[90,132,40,61,104,165,39,4,73,56,183,86],[0,0,0,0,0,0,0,0,0,0,0,0]],)"
      R"([[0,0,0,0,0,0,0,0,0,0,0,0],[20,107,104,64,19,197,187,157,172,86,16,27]]]})");
  const std::string out2 = kTmp + "/cli_placement_readme.vllm.jsonl";
  ASSERT_EQ(cli("--counts " + q(stepped) + " --gpus 8 --nodes 2 --groups 4 --redundant 4 --algorithm eplb "
                "--format vllm -o " + q(out2)).code, 0);
  const auto v = read_json(out2);
  EXPECT_EQ(v.at("record_type"), "eplb_initial_mapping");
  EXPECT_EQ(v.at("num_redundant_experts"), 4);
  EXPECT_EQ(v.at("num_slots"), 16);
  EXPECT_EQ(v.at("initial_global_assignments").at("1"),
            nlohmann::json::parse("[7,10,6,8,6,11,8,9,2,4,5,1,5,0,3,1]"));
}

TEST(CliPlacement, DeepSeekReadmeExampleFromAnImatrix) {
  // The README weights as the ffn_down_exps counts of an imatrix with layers 0 and 1.
  const std::string path = kTmp + "/cli_placement_readme.imatrix.gguf";
  moeroute_test::make_imatrix({0, 1}, {{90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86},
                                       {20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27}})
      .write(path);
  const std::string out = kTmp + "/cli_placement_readme_imatrix.json";
  const auto r = cli("--imatrix " + q(path) + " --gpus 8 --nodes 2 --groups 4 --redundant 4 --algorithm eplb -o " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = read_json(out);
  EXPECT_EQ(j.at("physical_to_logical_map"),
            nlohmann::json::parse("[[5,6,5,7,8,4,3,4,10,9,10,2,0,1,11,1],[7,10,6,8,6,11,8,9,2,4,5,1,5,0,3,1]]"));
  EXPECT_EQ(j.at("source").at("format"), "imatrix-gguf");
  expect_bad("--imatrix " + q(path) + " --gpus 8 --redundant 4 --experts 16", "has 12 experts, expected 16");
  // And as a gpu-container trace given to --trace.
  const std::string ct = write_tmp(
      "cli_placement_readme.container.json",
      R"({"model": "m", "num_experts": 12, "experts_per_token": 1, "n_tokens": 1000, "layers": [{"layer_index": 0, "expert_counts": [90,132,40,61,104,165,39,4,73,56,183,86]},)"
      R"({"layer_index": 1, "expert_counts": [20,107,104,64,19,197,187,157,172,86,16,27]}]})");
  const auto c = cli("--trace " + q(ct) + " --gpus 8 --nodes 2 --groups 4 --redundant 4 --algorithm eplb -o " + q(out));
  ASSERT_EQ(c.code, 0) << c.err;
  EXPECT_EQ(read_json(out).at("physical_to_logical_map"), j.at("physical_to_logical_map"));
  expect_bad("--trace " + q(ct) + " --gpus 8 --redundant 4 --first-half", "no per-token records");
}

TEST(CliPlacement, EveryAlgorithmAndFormatFromATrace) {
  for (const std::string alg : {"eplb", "eplb-global", "moeroute"}) {
    const std::string out = kTmp + "/cli_placement_" + alg + ".json";
    const auto r = cli("--trace " + q(kMixtral) + " --gpus 4 --redundant 4 --algorithm " + alg + " -o " + q(out));
    ASSERT_EQ(r.code, 0) << r.err;
    const auto j = read_json(out);
    EXPECT_EQ(j.at("format"), "moeroute-expert-placement-v1");
    EXPECT_EQ(j.at("algorithm"), alg);
    EXPECT_EQ(j.at("num_layers"), 32);
    EXPECT_EQ(j.at("num_logical_experts"), 8);
    EXPECT_EQ(j.at("num_physical_experts"), 12);
    EXPECT_EQ(j.at("experts_per_gpu"), 3);
    ASSERT_EQ(j.at("physical_to_logical_map").size(), 32u);
    ASSERT_EQ(j.at("replica_counts").size(), 32u);
    for (const auto& row : j.at("replica_counts")) {
      int sum = 0;
      for (const auto& c : row) {
        EXPECT_GE(c.get<int>(), 1);
        sum += c.get<int>();
      }
      EXPECT_EQ(sum, 12);
    }
    EXPECT_GT(j.at("predicted").at("balancedness").get<double>(), 0.5);
    // eval reads it back.
    const std::string ev = kTmp + "/cli_placement_" + alg + ".eval.json";
    const auto e = cli("eval --trace " + q(kMixtral) + " --placement " + q(out) + " -o " + q(ev));
    ASSERT_EQ(e.code, 0) << e.err;
    const auto k = read_json(ev);
    EXPECT_EQ(k.at("num_gpus"), 4);
    EXPECT_EQ(k.at("per_layer").size(), 32u);
    EXPECT_GT(k.at("balancedness").get<double>(), 0.0);
    EXPECT_LE(k.at("balancedness").get<double>(), 1.0);
  }
}

TEST(CliPlacement, EvalMatchesHandWorkedReplay) {
  // E = 4, G = 2, P = 6 (GPU 0: experts 0 1 2; GPU 1: 3 0 1), batch 2 (see placement_test.cpp).
  const std::string trace = write_tmp("cli_placement_small.jsonl",
                                      "{\"layer\": 0, \"experts\": [0, 1]}\n{\"layer\": 0, \"experts\": [0, 2]}\n"
                                      "{\"layer\": 0, \"experts\": [3, 0]}\n{\"layer\": 0, \"experts\": [1, 0]}\n");
  const std::string sg = write_tmp("cli_placement_small.sglang.json", R"({"physical_to_logical_map": [[0,1,2,3,0,1]]})");
  const std::string out = kTmp + "/cli_placement_small.eval.json";
  auto r = cli("eval --trace " + q(trace) + " --placement " + q(sg) + " --gpus 2 --batch 2 -o " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = read_json(out);
  EXPECT_EQ(j.at("placement_format"), "sglang");
  EXPECT_EQ(j.at("dispatch"), "round-robin");
  EXPECT_DOUBLE_EQ(j.at("balancedness").get<double>(), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(j.at("max_gpu_load").get<double>(), 3.0);
  EXPECT_EQ(j.at("tokens_off_gpu"), 4);
  ASSERT_EQ(j.at("per_layer").size(), 1u);
  EXPECT_EQ(j.at("per_layer")[0].at("layer"), 0);
  EXPECT_DOUBLE_EQ(j.at("per_layer")[0].at("balancedness").get<double>(), 2.0 / 3.0);
  r = cli("eval --trace " + q(trace) + " --placement " + q(sg) + " --gpus 2 --batch 2 --dispatch least-loaded -o " +
          q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_DOUBLE_EQ(read_json(out).at("balancedness").get<double>(), 5.0 / 6.0);
  // --second-half: tokens 2 and 3 only, one step (loads 1, 3 round robin).
  r = cli("eval --trace " + q(trace) + " --placement " + q(sg) + " --gpus 2 --batch 2 --second-half -o " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  j = read_json(out);
  EXPECT_EQ(j.at("half"), "second");
  EXPECT_EQ(j.at("tokens"), 2);
  EXPECT_DOUBLE_EQ(j.at("balancedness").get<double>(), 2.0 / 3.0);
  // The vLLM record of the same placement gives the same figures.
  const std::string vl = write_tmp("cli_placement_small.vllm.jsonl",
                                   R"({"record_type": "eplb_initial_mapping", "version": 1, "num_redundant_experts": 2, )"
                                   R"("num_slots": 6, "initial_global_assignments": {"0": [0,1,2,3,0,1]}})"
                                   "\n");
  r = cli("eval --trace " + q(trace) + " --placement " + q(vl) + " --gpus 2 --batch 2 -o " + q(out));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_DOUBLE_EQ(read_json(out).at("balancedness").get<double>(), 2.0 / 3.0);
}

TEST(CliPlacement, BuiltOnOneHalfJudgedOnTheOther) {
  const std::string out = kTmp + "/cli_placement_qwen_first.json";
  ASSERT_EQ(cli("--trace " + q(kQwen) + " --first-half --gpus 8 --redundant 4 --format vllm -o " + q(out)).code, 0);
  const auto v = read_json(out);
  EXPECT_EQ(v.at("num_slots"), 64);
  EXPECT_EQ(v.at("initial_global_assignments").size(), 24u);  // layers 0..23 (only 5 logged)
  const std::string ev = kTmp + "/cli_placement_qwen_first.eval.json";
  const auto r = cli("eval --trace " + q(kQwen) + " --second-half --gpus 8 --placement " + q(out) + " -o " + q(ev));
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = read_json(ev);
  EXPECT_EQ(j.at("per_layer").size(), 5u);
  EXPECT_GT(j.at("balancedness").get<double>(), 0.5);
}

TEST(CliPlacement, BadInputExitsTwoNamingTheConstraint) {
  const std::string counts = write_tmp("cli_placement_bad_counts.json", kReadmeCounts);
  const std::string c = "--counts " + q(counts) + " ";
  expect_bad(c + "--gpus 8 --nodes 2 --groups 4 --redundant 4 --experts 10", "--experts");
  expect_bad(c + "--gpus 5 --redundant 4", "not divisible by the GPU count");
  expect_bad(c + "--gpus 8 --groups 5 --redundant 4 --algorithm eplb", "do not divide the experts");
  expect_bad(c + "--gpus 8 --nodes 4 --groups 6 --redundant 4 --algorithm eplb", "do not divide the groups");
  expect_bad(c + "--gpus 8 --nodes 3 --redundant 4 --algorithm eplb-global", "does not divide the GPU count");
  expect_bad(c + "--redundant 4", "--gpus");
  expect_bad(c + "--gpus 4", "--redundant");
  expect_bad(c + "--gpus 4 --redundant 4 --algorithm best", "--algorithm");
  expect_bad(c + "--gpus 4 --redundant 4 --format yaml", "--format");
  expect_bad(c + "--gpus 4 --redundant 4 --first-half", "need --trace");
  expect_bad("--trace " + q(kMixtral) + " " + c + "--gpus 4 --redundant 4", "exactly one of");
  expect_bad("--trace " + q(kMixtral) + " --gpus 4 --redundant 4 --first-half --second-half", "exclude each other");
  expect_bad("--trace " + q(kMixtral) + " --gpus 4 --redundant 4 --experts 6", "--experts is 6");
  expect_bad("--counts " + q(write_tmp("cli_placement_ragged.json", R"({"logical_count": [[1,2],[3]]})")) +
                 " --gpus 1 --redundant 0",
             "logical_count[1] has 1 experts, expected 2");
  expect_bad("--counts " + q(kTmp + "/no_such_counts.json") + " --gpus 1 --redundant 0", "no_such_counts.json");

  // eval
  const std::string sg = write_tmp("cli_placement_bad.sglang.json", R"({"physical_to_logical_map": [[0,1,2,3,0,1]]})");
  const std::string ev = "eval --trace " + q(kMixtral) + " --placement " + q(sg);
  expect_bad(ev, "give --gpus");
  expect_bad(ev + " --gpus 4", "not divisible by the GPU count");
  expect_bad(ev + " --gpus 2", "trace has layer 31 but the placement has 1 layers");
  expect_bad(ev + " --gpus 2 --dispatch random", "--dispatch");
  expect_bad(ev + " --gpus 2 --batch 0", "--batch");
  const std::string missing = write_tmp("cli_placement_missing.sglang.json", R"({"physical_to_logical_map": [[0,2,2,0]]})");
  expect_bad("eval --trace " + q(kMixtral) + " --gpus 2 --placement " + q(missing), "no physical expert for logical expert 1");
  expect_bad("eval --trace " + q(kMixtral) + " --gpus 2 --placement " + q(write_tmp("cli_placement_junk.json", "{\"a\": 1}")),
             "not a placement");
}

#endif
