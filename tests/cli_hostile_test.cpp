// Hostile input against every subcommand: the three CLI mechanisms (tools/moeroute/cli.hpp) and
// the library limits behind them. Each case is a class of the hostile-input issue: non-regular
// input files, flags out of range or contradicting each other, several outputs written all or
// nothing, overflows reported as bad input, memory bounded by what the input holds, compact ATX
// lists out of order, and the report's heat map binning huge models.

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_support.hpp"
#include "moeroute/io/npy.hpp"

#ifdef MOEROUTE_CLI_PATH

namespace {

using clitest::expect_bad;
using clitest::file_exists;
using clitest::run_cli;

const std::string kData = MOEROUTE_TEST_DATA_DIR;
const std::string kTrace = kData + "/traces/mixtral-8x7b_humaneval_routing.jsonl";
const std::string kPolicy = kData + "/atx/combined_top_20pct_global_experts.atx.json";

std::string tmp(const std::string& name) { return clitest::tmp_path("cli_hostile_" + name); }

std::string fifo() {
  const std::string p = tmp("fifo");
  std::remove(p.c_str());
  EXPECT_EQ(::mkfifo(p.c_str(), 0600), 0);
  return p;
}

std::string logits_npy() {
  const std::string p = tmp("logits.npy");
  const float x[8] = {1, 2, 3, 4, 4, 3, 2, 1};
  clitest::write_text(p, moeroute::format_npy(x, 2, 4));
  return p;
}

}  // namespace

// 1. Inputs: a FIFO (would block forever), /dev/zero (endless), a directory; for every file flag.
TEST(CliHostile, NonRegularInputsAreRefusedByName) {
  const std::string f = fifo(), dir = std::string(MOEROUTE_TEST_TMP_DIR), out = tmp("out1.json");
  const std::string npy = logits_npy();
  const std::vector<std::string> flags = {
      "route --topk 2 -o " + out + " --logits ",
      "route --topk 2 -o " + out + " --logits " + npy + " --bias ",
      "concentration -o " + out + " --trace ",
      "concentration -o " + out + " --imatrix ",
      "cache-sim --policy lru --capacity 4 -o " + out + " --trace ",
      "cache-sim --policy lru --capacity 4 -o " + out + " --trace " + kTrace + " --pin ",
      "policy show ",
      "policy eval --trace " + kTrace + " -o " + out + " --policy ",
      "policy eval --policy " + kPolicy + " -o " + out + " --trace ",
      "policy build --percent 10 -o " + out + " --trace ",
      "policy build --percent 10 -o " + out + " --counts ",
      "policy build --percent 10 -o " + out + " --imatrix ",
      "policy pareto --cell-mib 1 -o " + out + " ",
      "policy pareto -o " + out + " " + kPolicy + " --model ",
      "policy convert -o " + out + " ",
      "report -o " + out + " --trace ",
      "report -o " + out + " --container ",
      "report -o " + out + " --pareto ",
      "report -o " + out + " --run ",
      "run --json " + out + " --trace ",
      "run --json " + out + " --pin ",
      "run --json " + out + " --model ",
  };
  for (const auto& cmd : flags) {
    const auto t0 = std::chrono::steady_clock::now();
    expect_bad(cmd + f, out, f + ": is a FIFO (named pipe), not a regular file", "hostile_in");
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10)) << cmd;
    expect_bad(cmd + "/dev/zero", out, "/dev/zero: is a character device", "hostile_in");
    expect_bad(cmd + dir, out, dir + ": is a directory", "hostile_in");
  }
}

// 2. Flags: every numeric flag finite and in range; contradictory flags refused; all before work.
TEST(CliHostile, BadFlagValuesAndContradictionsAreRefused) {
  const std::string out = tmp("out2.json"), npy = logits_npy();
  const std::string route = "route --logits " + npy + " -o " + out + " ";
  const std::pair<std::string, std::string> cases[] = {
      {route + "--topk 2 --groups 0 --topk-groups 1", "--groups: 0 is not in"},
      {route + "--topk 2 --groups -2 --topk-groups 1", "--groups: -2 is not in"},
      {route + "--topk 2 --groups 2", "--groups requires --topk-groups"},
      {route + "--topk 2 --cum-prob -0.5", "--cum-prob: -0.5"},
      {route + "--topk 2 --cum-prob nan", "--cum-prob: 'nan' is not a finite number"},
      {route + "--topk 2 --cum-prob 1.5", "--cum-prob: 1.5 is not in"},
      {route + "--topk 2 --min-k 1", "--min-k requires --cum-prob"},
      {route + "--topk 2 --scale inf", "--scale: 'inf' is not a finite number"},
      {route + "--topk 2 --scale 0", "--scale: 0 is not in (0, "},
      {route + "--topk 0", "--topk: 0 is not in"},
      {"concentration --trace " + kTrace + " -o " + out + " --cell-bytes -1", "--cell-bytes: -1 is not in"},
      {"concentration --trace " + kTrace + " -o " + out + " --coverage nan", "--coverage: 'nan'"},
      {"concentration --trace " + kTrace + " -o " + out + " --threshold 0", "--threshold: 0 is not in (0, 1]"},
      {"concentration --imatrix x.gguf -o " + out + " --num-experts 8", "--imatrix excludes --num-experts"},
      {"policy build --trace " + kTrace + " --percent 10 -o " + out + " --hybrid-top-layers -3",
       "--hybrid-top-layers: -3 is not in"},
      {"policy build --trace " + kTrace + " --percent nan -o " + out, "--percent: 'nan'"},
      {"policy build --trace " + kTrace + " --percent 101 -o " + out, "--percent: 101 is not in"},
      {"policy build --trace " + kTrace + " --percent 10 --names a,b -o " + out, "--names has 2 names for 1"},
      {"policy pareto " + kPolicy + " --cell-mib -1 -o " + out, "--cell-mib: -1"},
      {"policy pareto " + kPolicy + " --cell-mib 1 --percents 5,nan -o " + out, "--percents: 'nan'"},
      {"policy show " + kPolicy + " --layers 0", "--layers: 0 is not in"},
      {"policy eval --policy " + kPolicy + " --trace " + kTrace + " --experts 70000 -o " + out, "--experts: 70000"},
      {"cache-sim --trace " + kTrace + " --policy lru --capacity 4,0 -o " + out, "--capacity: 0 must be at least 1"},
      {"report --trace " + kTrace + " --capacity-percents 5,inf -o " + out, "--capacity-percents: 'inf'"},
      {"run --router --trace " + kTrace + " --json " + out, "--trace excludes --router"},
      {"run --trace " + kTrace + " --cum-prob 0.5 --json " + out, "--cum-prob requires --router"},
      {"run --router --cum-prob 1.5 --json " + out, "--cum-prob: 1.5 is not in"},
      {"run --router --cum-prob 0.5 --min-k 0 --json " + out, "--min-k: 0 is not in"},
      {"run --router --cum-prob 0.5 --min-k 9 --topk 8 --json " + out, "--min-k 9 is more than the 8 experts"},
      {"run --vram-mib -5 --json " + out, "--vram-mib: -5"},
      {"run --vram-mib nan --json " + out, "--vram-mib: 'nan'"},
      {"run --layers 4 --json " + out, "--layers requires --router"},
      {"run --router --layers 65537 --json " + out, "--layers: 65537 is not in"},
  };
  for (const auto& c : cases) expect_bad(c.first, out, c.second, "hostile_flags");
}

// `run` checks everything before its banner: a failure is one line, and an invalid zero-gating
// flag fails before any pass has run (no banner, no table on stdout).
TEST(CliHostile, RunPrintsNothingBeforeItsChecksPass) {
  const std::string out = tmp("run.json");
  for (const std::string& args : std::vector<std::string>{"--router --cum-prob 1.5", "--router --experts 4 --topk 2 --layers 65536 --tokens 1",
                                 "--trace " + kTrace + " --report " + tmp("nodir/r.html")}) {
    std::remove(out.c_str());
    const auto r = run_cli("run " + args + " --json " + out, "hostile_run");
    EXPECT_EQ(r.code, 2) << args << r.err;
    EXPECT_EQ(r.err.rfind("moeroute: ", 0), 0u) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.out, "") << args;
    EXPECT_FALSE(file_exists(out)) << args;
    EXPECT_FALSE(clitest::has_temporary(out)) << args;
  }
}

// 4. Outputs: with two outputs, a bad second path leaves the first unwritten.
TEST(CliHostile, TwoOutputsAreWrittenAllOrNothing) {
  const std::string good = tmp("good.out"), bad = tmp("nodir/x.out");
  const std::pair<std::string, std::string> cases[] = {
      {"policy pareto " + kPolicy + " --cell-mib 1 -o " + good + " --svg " + bad, "--svg " + bad},
      {"policy pareto " + kPolicy + " --cell-mib 1 -o " + bad + " --svg " + good, "--output " + bad},
      {"cache-sim --trace " + kTrace + " --policy lru --capacity 4 --svg " + good + " -o " + bad, "--output " + bad},
      {"run --trace " + kTrace + " --json " + good + " --report " + bad, "--report " + bad},
      {"cache-sim --trace " + kTrace + " --policy lru --capacity 4 --svg " + good + " -o " + good, "both write to"},
      {"cache-sim --trace " + kTrace + " --policy lru --capacity 4 --svg - -o -", "both write to stdout"},
      {"policy convert --experts 1,2 -o " + std::string(MOEROUTE_TEST_TMP_DIR), "is a directory"},
  };
  for (const auto& c : cases) expect_bad(c.first, good, c.second, "hostile_out");
  // and when every path is good, both are written
  const std::string svg = tmp("both.svg");
  std::remove(svg.c_str());
  const auto r = run_cli("policy pareto " + kPolicy + " --layers 40 --cell-mib 1 -o " + good + " --svg " + svg, "hostile_out");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(file_exists(good));
  EXPECT_TRUE(file_exists(svg));
  EXPECT_FALSE(clitest::has_temporary(good));
  EXPECT_FALSE(clitest::has_temporary(svg));
}

// 8. Overflows are bad input naming the field, never a null or a wrapped number.
TEST(CliHostile, OverflowsAreBadInputNamingTheField) {
  const std::string out = tmp("out8.json");
  const std::string ct = tmp("overflow.json");
  clitest::write_text(ct, R"({"model": "m", "num_experts": 3, "experts_per_token": 1, "n_tokens": 1,
      "layers": [{"layer_index": 0, "expert_counts": [1.5e308, 1.5e308, 1]}]})");
  expect_bad("concentration --trace " + ct + " -o " + out, out,
             "layers[0].expert_counts: the counts up to [1] sum past the double range", "hostile_ovf");
  expect_bad("policy build --counts " + ct + " --percent 10 -o " + out, out, "sum past the double range", "hostile_ovf");
  expect_bad("cache-sim --trace " + kTrace + " --policy lru --capacity 4 --cell-bytes 4611686018427387904 -o " + out,
             out, "overflows bytes_loaded", "hostile_ovf");
  const std::string big = tmp("big.npy");
  const float x[4] = {3e38f, 1e38f, 2e38f, 0.0f};
  clitest::write_text(big, moeroute::format_npy(x, 1, 4));
  expect_bad("route --logits " + big + " --scoring sqrt-softplus --topk 2 --scale 3e38 -o " + out, out,
             "weight x scale overflows float", "hostile_ovf");
  // the same logits with a unit scale are fine
  const auto r = run_cli("route --logits " + big + " --scoring sqrt-softplus --topk 2 -o " + out, "hostile_ovf");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(clitest::read_text(out));
  EXPECT_NEAR(j["weights"][0].get<double>(), std::sqrt(3e38), 1e-6 * std::sqrt(3e38));
}

// 2. (memory) A small input naming huge ids is refused by a cap with a clear message instead of
// allocating gigabytes; exit 2 quickly.
TEST(CliHostile, HugeIdsInSmallInputsHitCapsNotMemory) {
  const std::string out = tmp("out_mem.json");
  const std::string jl = tmp("huge_ids.jsonl");
  std::string text;
  for (int l = 0; l < 1024; ++l) text += "{\"layer\": " + std::to_string(l) + ", \"experts\": [65534]}\n";
  clitest::write_text(jl, text);
  expect_bad("concentration --trace " + jl + " -o " + out, out, "(layer, expert) cells to count, more than", "hostile_mem");
  expect_bad("policy build --unit cell --percent 5 --trace " + jl + " -o " + out, out, "more than", "hostile_mem");
  const std::string pol = tmp("huge_ids.atx.json");
  clitest::write_text(pol, R"({"keep_experts": [65535], "keep_layers": [65535]})");
  expect_bad("policy show " + pol, out, "65536 layers x 65536 experts is more than", "hostile_mem");
  expect_bad("policy eval --policy " + pol + " --trace " + kTrace + " -o " + out, out, "is more than", "hostile_mem");
}

// 9. Compact ATX lists are sorted; one out of order is refused (not silently re-sorted).
TEST(CliHostile, UnsortedCompactListIsRefused) {
  const std::string pol = tmp("unsorted.atx.json"), out = tmp("out9.json");
  clitest::write_text(pol, R"({"keep_experts_compact": "1,4,3"})");
  expect_bad("policy show " + pol, out, "expert 3 after 4", "hostile_atx");
  expect_bad("policy convert " + pol + " -o " + out, out, "compact lists are sorted ascending", "hostile_atx");
}

// 11. Layers of different sizes: the verdict names the fraction, never a blank number.
TEST(CliHostile, MixedExpertCountsVerdictHasItsNumber) {
  const std::string ct = tmp("mixed.json"), out = tmp("out11.json");
  clitest::write_text(ct, R"({"model": "m", "num_experts": 4, "experts_per_token": 1, "n_tokens": 10,
                                        "layers": [{"layer_index": 0, "expert_counts": [10, 0, 0, 0]},
                                        {"layer_index": 1, "expert_counts": [10, 0]}]})");
  const auto r = run_cli("concentration --trace " + ct + " -o " + out, "hostile_mixed");
  ASSERT_EQ(r.code, 5) << r.err;  // one expert of 4 and one of 2: median 37.5% < 50%
  EXPECT_NE(r.err.find("38% of each layer's experts (layers differ in size) resident"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("\xe2\x80\x94 experts ("), std::string::npos) << r.err;
}

// 2. (charts) A 64 x 65536 count table makes a bounded page: the heat map draws bins, not cells.
TEST(CliHostile, ReportHeatMapOfHugeModelIsBinned) {
  const std::string ct = tmp("wide.json"), out = tmp("wide.html");
  nlohmann::json j;
  j["model"] = "wide";
  j["num_experts"] = 3000;
  j["experts_per_token"] = 1;
  j["n_tokens"] = 6;
  j["layers"] = nlohmann::json::array();
  for (int l = 0; l < 200; ++l) {
    std::vector<int> c(3000, 0);
    c[static_cast<std::size_t>(l * 7 % 3000)] = 5;
    c[2999] = 1;
    j["layers"].push_back({{"layer_index", l}, {"expert_counts", c}});
  }
  clitest::write_text(ct, j.dump());
  const auto r = run_cli("report --container " + ct + " -o " + out, "hostile_report");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string html = clitest::read_text(out);
  std::size_t rects = 0;
  for (std::size_t at = html.find("<title>layer "); at != std::string::npos; at = html.find("<title>layer ", at + 1))
    ++rects;
  // 3000 experts in bins of 12 -> 250 columns; 200 layers in bins of 2 -> 100 rows
  EXPECT_EQ(rects, 250u * 100u);
  EXPECT_NE(html.find("bins of 12 experts x 2 layers, summed"), std::string::npos);
  EXPECT_NE(html.find("<title>layer 0+, experts from 2988: 2</title>"), std::string::npos);
}

#else
TEST(CliHostile, SkippedWithoutCli) { GTEST_SKIP() << "CLI not built"; }
#endif
