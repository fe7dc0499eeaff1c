// `moeroute run`: the offloaded stack on the shipped Mixtral trace, its byte accounting against a
// count of the trace, and the bad arguments of issue 8 (exit 2, one line, nothing written).
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "cli_support.hpp"

using namespace clitest;

namespace {
const std::string mixtral = std::string(MOEROUTE_TEST_DATA_DIR) + "/traces/mixtral-8x7b_humaneval_routing.jsonl";

bool have_vulkan_cli() {
  auto r = run_cli("run --trace " + mixtral + " --max-tokens 1 --policies none --hidden 32 --ffn 32 --type f32",
                   "run_probe");
  return r.code == 0;
}
}  // namespace

TEST(CliRun, NoCacheUploadsEveryRoutedExpertOfEveryStep) {
  if (!have_vulkan_cli()) GTEST_SKIP() << "no Vulkan device (or the CLI was built without Vulkan)";
  const auto out = tmp_path("run.json");
  std::remove(out.c_str());
  auto r = run_cli("run --trace " + mixtral + " --max-tokens 3 --policies none,lru,belady --hidden 32 --ffn 64 "
                   "--type f32 --json " + out, "run_ok");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(read_text(out));
  ASSERT_EQ(j["policies"].size(), 3u);
  // Plain count: routed (token, layer, expert) accesses of tokens 0..2 in the trace.
  std::ifstream f(mixtral);
  std::string line;
  std::uint64_t accesses = 0;
  while (std::getline(f, line)) {
    auto rec = nlohmann::json::parse(line);
    if (rec["token_idx"].get<int>() < 3) accesses += rec["experts"].size();
  }
  const std::uint64_t expert_bytes = 3ull * 32 * 64 * 4;  // gate, up, down of f32 32 x 64
  EXPECT_EQ(j["expert_bytes"].get<std::uint64_t>(), expert_bytes);
  const auto& none = j["policies"][0];
  EXPECT_EQ(none["name"], "no cache");
  EXPECT_EQ(none["accesses"].get<std::uint64_t>(), accesses);
  EXPECT_EQ(none["bytes_uploaded"].get<std::uint64_t>(), accesses * expert_bytes);
  const auto& lru = j["policies"][1];
  EXPECT_EQ(lru["accesses"].get<std::uint64_t>(), accesses);
  EXPECT_EQ(lru["bytes_uploaded"].get<std::uint64_t>(), (accesses - lru["hits"].get<std::uint64_t>()) * expert_bytes);
  // the optimum never hits less than LRU
  EXPECT_GE(j["policies"][2]["hit_rate"].get<double>(), lru["hit_rate"].get<double>());
}

TEST(CliRun, BadArgumentsExitTwoWithOneLine) {
  const auto bad_trace = tmp_path("run_bad_trace.jsonl");
  write_text(bad_trace, "{\"layer\": 0, \"token_idx\": 0, \"experts\": [9, 1]}\n");
  const auto out = tmp_path("run_bad.json");
  const std::pair<std::string, std::string> cases[] = {
      {"--trace " + mixtral + " --vram-mib 0.1", "one token needs 2"},
      {"--trace " + bad_trace + " --experts 8", "names expert 9 but the model has 8"},
      {"--trace " + mixtral + " --policies lru,mru", "unknown policy 'mru'"},
      {"--trace " + mixtral + " --type q5_k", "--type 'q5_k'"},
      {"--trace " + mixtral + " --hidden 40 --type q8_0", "multiples of 32"},
      {"--trace /nonexistent.jsonl", "/nonexistent.jsonl: cannot open"},
      {"--router --topk 9 --experts 8", "--topk"},
  };
  int i = 0;
  for (const auto& c : cases) {
    std::remove(out.c_str());
    auto r = run_cli("run " + c.first + " --json " + out, "run_bad_" + std::to_string(i++));
    EXPECT_EQ(r.code, 2) << c.first << "\n" << r.err;
    EXPECT_NE(r.err.find(c.second), std::string::npos) << c.first << "\n" << r.err;
    EXPECT_FALSE(file_exists(out)) << c.first;
  }
}
