// `moeroute run`: the offloaded stack on the shipped Mixtral trace, its byte accounting against a
// count of the trace, and the bad arguments of issue 8 (exit 2, one line, nothing written).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli_support.hpp"
#include "fuzz/gguf_writer.hpp"
#include "moeroute/backends/ffn_types.hpp"

using namespace clitest;

namespace {
const std::string mixtral = std::string(MOEROUTE_TEST_DATA_DIR) + "/traces/mixtral-8x7b_humaneval_routing.jsonl";

// A small MoE model GGUF in llama.cpp's layout: `blocks` MoE layers of E experts (H = F = 64, Q8_0,
// random weights), router tensors blk.N.ffn_gate_inp.weight, expert_used_count 2.
std::string write_model(const std::string& name, int blocks, int E, bool with_router = true) {
  const std::size_t H = 64, F = 64, row = moeroute::row_bytes(moeroute::weight_type::q8_0, 64);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-0.125f, 0.125f);
  auto slice = [&](int, int, int) {  // F rows of H (gate, up) or H rows of F (down): 64 rows of 64
    std::string s(64 * row, '\0');
    std::vector<float> v(64);
    for (std::size_t r = 0; r < 64; ++r) {
      for (auto& x : v) x = u(rng);
      moeroute::encode_row(moeroute::weight_type::q8_0, v.data(), 64, reinterpret_cast<unsigned char*>(&s[r * row]));
    }
    return s;
  };
  std::vector<int> ids;
  for (int b = 0; b < blocks; ++b) ids.push_back(b);
  moeroute_test::gguf_writer w = moeroute_test::make_moe_model(ids, static_cast<std::uint64_t>(E), H, F, 8, slice);
  if (with_router)
    for (int b = 0; b < blocks; ++b) {
      std::vector<float> r(H * static_cast<std::size_t>(E));
      for (auto& x : r) x = 4.0f * u(rng);
      w.tensor_f32("blk." + std::to_string(b) + ".ffn_gate_inp.weight", {H, static_cast<std::uint64_t>(E)}, r);
    }
  const std::string path = tmp_path(name);
  w.write(path);
  return path;
}

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
  std::vector<std::uint64_t> layer_accesses(32, 0);
  while (std::getline(f, line)) {
    auto rec = nlohmann::json::parse(line);
    if (rec["token_idx"].get<int>() < 3) {
      accesses += rec["experts"].size();
      layer_accesses.at(rec["layer"].get<std::size_t>()) += rec["experts"].size();
    }
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
  // per-layer figures: accesses as counted from the trace; hits and bytes add up to the totals
  for (const auto* p : {&none, &lru}) {
    const auto& pl = (*p)["per_layer"];
    ASSERT_EQ(pl.size(), 32u);
    std::uint64_t hits = 0, bytes = 0;
    for (std::size_t l = 0; l < 32; ++l) {
      EXPECT_EQ(pl[l]["accesses"].get<std::uint64_t>(), layer_accesses[l]) << "layer " << l;
      EXPECT_EQ(pl[l]["bytes_uploaded"].get<std::uint64_t>(),
                (layer_accesses[l] - pl[l]["hits"].get<std::uint64_t>()) * expert_bytes) << "layer " << l;
      hits += pl[l]["hits"].get<std::uint64_t>();
      bytes += pl[l]["bytes_uploaded"].get<std::uint64_t>();
    }
    EXPECT_EQ(hits, (*p)["hits"].get<std::uint64_t>());
    EXPECT_EQ(bytes, (*p)["bytes_uploaded"].get<std::uint64_t>());
  }
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
      {"--trace " + mixtral + " --hidden 40 --type q8_0", "hidden (40) to be a multiple of 32"},
      {"--trace /nonexistent.jsonl", "/nonexistent.jsonl: cannot open"},
      {"--router --topk 9 --experts 8", "--topk"},
  };
  for (const auto& c : cases) expect_bad("run " + c.first + " --json " + out, out, c.second, "run_bad");
}

TEST(CliRun, ModelGgufSuppliesShapeExpertsPerTokenAndWeights) {
  if (!have_vulkan_cli()) GTEST_SKIP() << "no Vulkan device (or the CLI was built without Vulkan)";
  const std::string model = write_model("run_model.gguf", 4, 8);
  const auto out = tmp_path("run_model.json");
  std::remove(out.c_str());
  auto r = run_cli("run --model " + model + " --router --tokens 3 --policies none,lru --json " + out, "run_model");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("router weights: 4 of 4 layers from the model"), std::string::npos) << r.err;
  auto j = nlohmann::json::parse(read_text(out));
  EXPECT_EQ(j["model"], model);
  EXPECT_EQ(j["layers"].get<int>(), 4);
  EXPECT_EQ(j["experts"].get<int>(), 8);
  EXPECT_EQ(j["top_k"].get<int>(), 2);  // qwen3moe.expert_used_count
  const std::uint64_t expert_bytes = 3ull * 64 * 2 * 34;  // gate, up, down: 64 rows of two Q8_0 blocks
  EXPECT_EQ(j["expert_bytes"].get<std::uint64_t>(), expert_bytes);
  const auto& none = j["policies"][0];
  EXPECT_EQ(none["accesses"].get<std::uint64_t>(), 3u * 4u * 2u);  // tokens x layers x top-k
  EXPECT_EQ(none["bytes_uploaded"].get<std::uint64_t>(), 3u * 4u * 2u * expert_bytes);
  // the first --layers of the model's MoE layers
  r = run_cli("run --model " + model + " --router --layers 2 --tokens 1 --policies none --json " + out, "run_model2");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(read_text(out))["layers"].get<int>(), 2);
}

TEST(CliRun, BadModelFilesExitTwoWithOneLine) {
  const std::string dense = tmp_path("run_dense.gguf");
  moeroute_test::gguf_writer d;
  d.kv_string("general.architecture", "llama");
  d.tensor_f32("blk.0.ffn_gate.weight", {32, 2}, std::vector<float>(64, 1.0f));
  d.write(dense);
  const std::string two_layers = write_model("run_model_l2.gguf", 2, 8, false);
  const std::string four_experts = write_model("run_model_e4.gguf", 32, 4, false);
  const auto out = tmp_path("run_badmodel.json");
  const std::pair<std::string, std::string> cases[] = {
      {"--model " + dense, dense + ": no MoE expert tensors"},
      {"--model " + two_layers + " --trace " + mixtral, "routes MoE layer 31 but " + two_layers + " has 2 MoE layers"},
      {"--model " + four_experts + " --trace " + mixtral, "names expert 7 but the model has 4 experts (" + four_experts},
      {"--model " + two_layers + " --hidden 128", "--hidden cannot be combined with --model"},
      {"--model " + tmp_path("missing.gguf"), "missing.gguf: cannot open"},
  };
  for (const auto& c : cases) expect_bad("run " + c.first + " --json " + out, out, c.second, "run_badmodel");
}

// The golden models (tests/data/ggml_golden): f16 runs on today's Vulkan kernels in router and
// trace mode; the mixed, fused and gpt-oss layouts load (per-tensor types, fused gate_up, biases,
// router bias) and either run or stop with one line naming what the Vulkan backend lacks.
TEST(CliRun, GoldenModelLayoutsLoad) {
  if (!have_vulkan_cli()) GTEST_SKIP() << "no Vulkan device (or the CLI was built without Vulkan)";
  const std::string trace = tmp_path("run_golden_trace.jsonl");
  {
    std::string t;
    for (int tok = 0; tok < 3; ++tok)
      for (int l = 0; l < 2; ++l)
        t += "{\"token_idx\": " + std::to_string(tok) + ", \"layer\": " + std::to_string(l) + ", \"experts\": [" +
             std::to_string((tok + l) % 4) + ", " + std::to_string((tok + l + 1) % 4) +
             "], \"gating_probs\": [0.75, 0.25]}\n";
    write_text(trace, t);
  }
  const std::string trace1 = tmp_path("run_golden_trace1.jsonl");
  {
    std::string t;
    for (int tok = 0; tok < 3; ++tok)
      t += "{\"token_idx\": " + std::to_string(tok) + ", \"layer\": 0, \"experts\": [" + std::to_string(tok % 4) +
           ", 3], \"gating_probs\": [0.5, 0.5]}\n";
    write_text(trace1, t);
  }
  const auto out = tmp_path("run_golden.json");
  for (const char* v : {"f16", "mixed", "fused", "gptoss"}) {
    SCOPED_TRACE(v);
    const std::string model = std::string(MOEROUTE_TEST_DATA_DIR) + "/ggml_golden/" + v + ".gguf";
    const std::string layered = std::string(v) == "mixed" ? trace : trace1;
    for (const std::string& mode : {std::string("--router --tokens 2"), "--trace " + layered}) {
      std::remove(out.c_str());
      const auto r = run_cli("run --model " + model + " " + mode + " --policies none,lru --vram-mib 4 --json " + out, "run_golden");
      if (std::string(v) == "f16") {
        ASSERT_EQ(r.code, 0) << r.err;
        const auto j = nlohmann::json::parse(read_text(out));
        EXPECT_EQ(j["experts"].get<int>(), 4);
        EXPECT_EQ(j["top_k"].get<int>(), 2);
        EXPECT_EQ(j["expert_bytes"].get<std::uint64_t>(), 3ull * 256 * 256 * 2);
        continue;
      }
      if (r.code == 0) continue;  // the Vulkan backend runs this layout
      EXPECT_EQ(r.code, 2) << r.err;
      const std::string last = r.err.substr(r.err.rfind("moeroute: "));
      EXPECT_EQ(std::count(last.begin(), last.end(), '\n'), 1) << r.err;
      const bool says_why = last.find("the Vulkan kernels take") != std::string::npos ||
                            last.find("differs from blk.1") != std::string::npos;
      EXPECT_TRUE(says_why) << r.err;
      EXPECT_FALSE(file_exists(out));
    }
  }
}
