// `moeroute cache-sim` end to end: hit counts against the plain reference simulator
// (cache_reference.hpp), the output contract (fields, order), pinning and every bad-input exit.

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "cache_reference.hpp"
#include "cli_support.hpp"
#include "moeroute/io/routing_trace.hpp"

#ifndef MOEROUTE_CLI_PATH
TEST(CliCacheSim, Skipped) { GTEST_SKIP() << "the moeroute CLI is not built"; }
#else

namespace {

const std::string kTmp = MOEROUTE_TEST_TMP_DIR;
const std::string kMixtral = std::string(MOEROUTE_TEST_DATA_DIR) + "/traces/mixtral-8x7b_humaneval_routing.jsonl";

using clitest::run_result;
const auto& slurp = clitest::read_text;

run_result cli(const std::string& args) { return clitest::run_cli("cache-sim " + args, "cli_cache_sim"); }

std::string write_tmp(const std::string& name, const std::string& text) {
  const std::string path = kTmp + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

std::vector<cache_ref::access> mixtral_accesses() {
  const auto t = moeroute::read_routing_trace_jsonl(kMixtral);
  std::vector<cache_ref::access> a;
  for (std::size_t r = 0; r < t.size(); ++r)
    for (auto i = t.offsets[r]; i < t.offsets[r + 1]; ++i) a.push_back({t.layer[r], t.experts[i], r});
  return a;
}

std::vector<std::string> keys(const nlohmann::ordered_json& j) {
  std::vector<std::string> k;
  for (auto& kv : j.items()) k.push_back(kv.key());
  return k;
}

// Exit 2, one line on stderr containing `needle`, and no output file.
void expect_bad(const std::string& args, const std::string& needle) {
  const std::string out = kTmp + "/cli_cache_sim_bad.json";
  clitest::expect_bad("cache-sim " + args + " -o \"" + out + "\"", out, needle, "cli_cache_sim");
}

}  // namespace

TEST(CliCacheSim, HitsMatchTheReferenceForEveryContractPolicy) {
  const auto acc = mixtral_accesses();
  for (const std::string policy : {"lru", "fifo", "lfu", "belady", "lfru", "least-stale"})
    for (const bool per_layer : {false, true}) {
      const std::vector<std::size_t> caps = per_layer ? std::vector<std::size_t>{3, 1, 6}
                                                      : std::vector<std::size_t>{51, 13, 26, 102};
      std::string list;
      for (auto c : caps) list += (list.empty() ? "" : ",") + std::to_string(c);
      const std::string out = kTmp + "/cli_cache_sim_" + policy + (per_layer ? "_pl" : "") + ".json";
      const auto r = cli("--trace \"" + kMixtral + "\" --policy " + policy + " --capacity " + list +
                         (per_layer ? " --scope per-layer" : "") + " --cell-bytes 1000 -o \"" + out + "\"");
      ASSERT_EQ(r.code, 0) << r.err;
      EXPECT_TRUE(r.out.empty());
      const auto j = nlohmann::ordered_json::parse(slurp(out));
      EXPECT_EQ(keys(j), (std::vector<std::string>{"policy", "scope", "results"}));
      EXPECT_EQ(j["policy"], policy);
      EXPECT_EQ(j["scope"], per_layer ? "per-layer" : "global");
      ASSERT_EQ(j["results"].size(), caps.size());
      for (std::size_t i = 0; i < caps.size(); ++i) {
        const auto& row = j["results"][i];
        EXPECT_EQ(keys(row), (std::vector<std::string>{"capacity", "accesses", "hits", "misses", "hit_rate",
                                                       "prefetch_loads", "bytes_loaded", "stalls"}));
        EXPECT_EQ(row["prefetch_loads"].get<std::uint64_t>(), 0u);
        const auto want = cache_ref::simulate(acc, policy, caps[i], per_layer, {}, false);
        EXPECT_EQ(row["capacity"].get<std::size_t>(), caps[i]);
        EXPECT_EQ(row["accesses"].get<std::uint64_t>(), want.accesses);
        EXPECT_EQ(row["hits"].get<std::uint64_t>(), want.hits) << policy << " " << caps[i];
        EXPECT_EQ(row["misses"].get<std::uint64_t>(), want.misses);
        EXPECT_DOUBLE_EQ(row["hit_rate"].get<double>(),
                         static_cast<double>(want.hits) / static_cast<double>(want.accesses));
        EXPECT_EQ(row["bytes_loaded"].get<std::uint64_t>(), want.misses * 1000);
        EXPECT_EQ(row["stalls"].get<std::uint64_t>(), want.misses);  // no prefetch: every miss stalls
      }
    }
}

TEST(CliCacheSim, PinningFromAtxPolicies) {
  const auto acc = mixtral_accesses();
  std::set<int> layers;
  for (const auto& a : acc) layers.insert(a.layer);
  const std::string cells = write_tmp(
      "cli_cache_sim_cells.atx.json",
      R"({"schema_version":"atx-moe-residency-policy-v1","policy_name":"c","keep_layer_experts":[)"
      R"({"layer":0,"expert":6,"rank":1},{"layer":1,"expert":2,"rank":2},{"layer":5,"expert":3,"rank":3}]})");
  const std::string global = write_tmp(
      "cli_cache_sim_global.atx.json",
      R"({"schema_version":"atx-moe-residency-policy-v1","policy_name":"g","keep_experts":[6, 1]})");
  const std::string hybrid = write_tmp(
      "cli_cache_sim_hybrid.atx.json",
      R"({"schema_version":"atx-moe-residency-policy-v1","policy_name":"h","keep_layer_experts":[)"
      R"({"layer":0,"expert":6,"rank":1}],"keep_layers":[3]})");
  std::set<std::pair<int, int>> pc{{0, 6}, {1, 2}, {5, 3}}, pg, ph{{0, 6}};
  for (int l : layers) {
    pg.insert({l, 6});
    pg.insert({l, 1});
  }
  for (int e = 0; e < 8; ++e) ph.insert({3, e});
  struct pin_case {
    std::string file;
    std::set<std::pair<int, int>> cells;
    std::size_t cap;
  };
  for (const auto& pcase : {pin_case{cells, pc, 20}, pin_case{global, pg, 64}, pin_case{global, pg, 90},
                            pin_case{hybrid, ph, 9}, pin_case{hybrid, ph, 30}})
    for (const std::string policy : {"lru", "belady"}) {
      const auto r = cli("--trace \"" + kMixtral + "\" --policy " + policy + " --capacity " +
                         std::to_string(pcase.cap) + " --pin \"" + pcase.file + "\" --cell-bytes 3");
      ASSERT_EQ(r.code, 0) << r.err;
      const auto j = nlohmann::json::parse(r.out);
      const auto want = cache_ref::simulate(acc, policy, pcase.cap, false, pcase.cells, false);
      EXPECT_EQ(j["results"][0]["hits"].get<std::uint64_t>(), want.hits) << pcase.file << " " << policy;
      EXPECT_EQ(j["results"][0]["bytes_loaded"].get<std::uint64_t>(), want.misses * 3);
    }
  // pinned == capacity (64 = 2 experts x 32 layers): only pinned accesses hit.
  std::uint64_t pinned_accesses = 0;
  for (const auto& a : acc) pinned_accesses += pg.count({a.layer, a.expert});
  const auto r = cli("--trace \"" + kMixtral + "\" --policy fifo --capacity 64 --pin \"" + global + "\"");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["results"][0]["hits"].get<std::uint64_t>(), pinned_accesses);
  // More pinned cells than capacity: exit 2 naming the flag.
  expect_bad("--trace \"" + kMixtral + "\" --policy lru --capacity 63 --pin \"" + global + "\"", "--pin");
  expect_bad("--trace \"" + kMixtral + "\" --policy lru --capacity 7 --scope per-layer --pin \"" + hybrid + "\"",
             "--pin");
  expect_bad("--trace \"" + kMixtral + "\" --policy lru --capacity 7 --pin \"" + kTmp + "/no_such.atx.json\"",
             "no_such.atx.json");
}

TEST(CliCacheSim, ProtectBatchCurveAndChart) {
  const auto acc = mixtral_accesses();
  auto r = cli("--trace \"" + kMixtral + "\" --policy lru --capacity 13 --protect-batch");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["results"][0]["hits"].get<std::uint64_t>(),
            cache_ref::simulate(acc, "lru", 13, false, {}, true).hits);
  const std::string svg = kTmp + "/cli_cache_sim_chart.svg";
  std::remove(svg.c_str());
  r = cli("--trace \"" + kMixtral + "\" --policy layer-cycle --capacity 26,51 --curve --svg \"" + svg + "\"");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::ordered_json::parse(r.out);
  EXPECT_EQ(keys(j), (std::vector<std::string>{"policy", "scope", "results", "lru_curve", "opt_curve"}));
  const auto& caps = j["lru_curve"]["capacities"];
  for (std::size_t i = 0; i < caps.size(); i += 25) {
    const auto c = caps[i].get<std::size_t>();
    EXPECT_EQ(j["lru_curve"]["hits"][i].get<std::uint64_t>(), cache_ref::simulate(acc, "lru", c, false, {}, false).hits);
    EXPECT_EQ(j["opt_curve"]["hits"][i].get<std::uint64_t>(),
              cache_ref::simulate(acc, "belady", c, false, {}, false).hits);
  }
  const std::string chart = slurp(svg);
  EXPECT_EQ(chart.rfind("<svg", 0), 0u);
  EXPECT_NE(chart.find("</svg>"), std::string::npos);
  EXPECT_NE(chart.find("layer-cycle"), std::string::npos);
}

TEST(CliCacheSim, BlankLinesAndEmptyExpertLists) {
  const std::string t = write_tmp("cli_cache_sim_blank.jsonl",
                                  "{\"layer\": 0, \"experts\": [1, 2]}\n\n{\"layer\": 1, \"experts\": []}\n"
                                  "   \n{\"layer\": 0, \"experts\": [2, 1]}\n");
  const auto r = cli("--trace \"" + t + "\" --policy lru --capacity 2");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["results"][0]["accesses"], 4);
  EXPECT_EQ(j["results"][0]["hits"], 2);
}

TEST(CliCacheSim, BadInputExitsTwoNamingTheLineOrFlag) {
  const std::string ok = "--policy lru --capacity 4";
  expect_bad("--trace \"" + kTmp + "/missing.jsonl\" " + ok, "missing.jsonl");
  const auto bad_trace = [&](const std::string& name, const std::string& text, const std::string& needle) {
    expect_bad("--trace \"" + write_tmp(name, text) + "\" " + ok, needle);
  };
  bad_trace("cli_cache_sim_notjson.jsonl", "{\"layer\": 0, \"experts\": [1]}\n{layer: 0}\n", ":2:");
  bad_trace("cli_cache_sim_nolayer.jsonl", "{\"layer\": 0, \"experts\": [1]}\n\n{\"experts\": [1]}\n", ":3:");
  bad_trace("cli_cache_sim_nolayer2.jsonl", "{\"experts\": [1]}\n", "'layer'");
  bad_trace("cli_cache_sim_noexperts.jsonl", "{\"layer\": 0}\n", "'experts'");
  bad_trace("cli_cache_sim_negexpert.jsonl", "{\"layer\": 0, \"experts\": [1, -3]}\n", ":1:");
  bad_trace("cli_cache_sim_neglayer.jsonl", "{\"layer\": -1, \"experts\": [1]}\n", "'layer'");
  bad_trace("cli_cache_sim_huge.jsonl", "{\"layer\": 65535, \"experts\": [65535]}\n", "cli_cache_sim_huge.jsonl: ");
  const std::string tr = "--trace \"" + kMixtral + "\" ";
  expect_bad(tr + "--policy lru --capacity 0", "--capacity");
  expect_bad(tr + "--policy lru --capacity 5,0", "--capacity");
  expect_bad(tr + "--policy lru --capacity -4", "--capacity");
  expect_bad(tr + "--policy lru --capacity x", "--capacity");
  expect_bad(tr + "--policy lru --capacity 5,", "--capacity");
  expect_bad(tr + "--policy mru --capacity 5", "--policy");
  expect_bad(tr + "--policy lru --capacity 5 --scope layer", "--scope");
  expect_bad(tr + "--policy lru --capacity 5 --cell-bytes -1", "--cell-bytes");
  expect_bad(tr + "--policy lru", "capacity");
  expect_bad(tr + "--capacity 5", "--policy");
  expect_bad(tr + "--compare --policy lru", "--compare");
  expect_bad(tr + "--compare --percent 0", "--percent");
  expect_bad(tr + "--trace \"" + kMixtral + "\" --policy lru --capacity 5", "--trace");
  expect_bad(tr + "--policy recommended-prefetch --capacity 5 --protect-batch", "protect_batch");
}

// The recommended policy against the plain reference written from its contract, and its prefetch
// variant: prefetch loads are counted and billed in bytes_loaded.
TEST(CliCacheSim, RecommendedAndPrefetchCounters) {
  const auto acc = mixtral_accesses();
  const std::string out = kTmp + "/cli_cache_sim_rec.json";
  auto r = cli("--trace \"" + kMixtral + "\" --policy recommended --capacity 26,13 --cell-bytes 10 -o \"" + out + "\"");
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::ordered_json::parse(slurp(out));
  for (std::size_t i = 0; i < 2; ++i) {
    const std::size_t cap = i == 0 ? 26 : 13;
    const auto want = cache_ref::simulate_recommended(acc, cap, false, {}, true);  // serves_record
    EXPECT_EQ(j["results"][i]["hits"].get<std::uint64_t>(), want.hits) << cap;
    EXPECT_EQ(j["results"][i]["bytes_loaded"].get<std::uint64_t>(), want.misses * 10);
  }
  r = cli("--trace \"" + kMixtral + "\" --policy recommended-prefetch --capacity 51 --cell-bytes 10 -o \"" + out + "\"");
  ASSERT_EQ(r.code, 0) << r.err;
  j = nlohmann::ordered_json::parse(slurp(out));
  const auto& row = j["results"][0];
  EXPECT_GT(row["prefetch_loads"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(row["hits"].get<std::uint64_t>() + row["misses"].get<std::uint64_t>(), acc.size());
  EXPECT_EQ(row["stalls"].get<std::uint64_t>(), row["misses"].get<std::uint64_t>());
  EXPECT_EQ(row["bytes_loaded"].get<std::uint64_t>(),
            (row["misses"].get<std::uint64_t>() + row["prefetch_loads"].get<std::uint64_t>()) * 10);
}

TEST(CliCacheSim, CompareWritesTheMarkdownTables) {
  const std::string t = write_tmp("cli_cache_sim_cmp.jsonl",
                                  "{\"layer\": 0, \"experts\": [0, 1]}\n{\"layer\": 1, \"experts\": [1, 2]}\n"
                                  "{\"layer\": 0, \"experts\": [0, 2]}\n{\"layer\": 1, \"experts\": [1, 3]}\n");
  const std::string out = kTmp + "/cli_cache_sim_cmp.md";
  const auto r = cli("--compare --trace \"" + t + "\" --percent 25,50 -o \"" + out + "\"");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string md = slurp(out);
  EXPECT_NE(md.find("#### cli_cache_sim_cmp, global (8 cells)"), std::string::npos) << md;
  EXPECT_NE(md.find("#### cli_cache_sim_cmp, per-layer (4 cells per layer)"), std::string::npos) << md;
  EXPECT_NE(md.find("| % cells | capacity | LRU loads | Belady loads | fifo | lfu | layer-cycle | lfru | "
                    "least-stale | recommended | recommended-prefetch | recommended-prefetch stalls |"),
            std::string::npos);
  // 25% of 8 cells = 2 (by hand): LRU misses all 8 accesses (4 in the first half alone, 4 in the
  // second); Belady keeps (0,0) for its second use and misses the other 7 (the first half's 4
  // accesses are 4 distinct cells; 3 misses in the second half).
  EXPECT_NE(md.find("| 25 | 2 | 8 (4 / 4) | 7 (4 / 3) |"), std::string::npos) << md;
  EXPECT_EQ(md.find("#### At 10% of the cells"), std::string::npos) << md;  // 10 is not in --percent
}

#endif
