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
#include "golden_support.hpp"
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
  std::uint64_t accesses = 0, calls = 0;
  std::vector<std::uint64_t> layer_accesses(32, 0);
  while (std::getline(f, line)) {
    auto rec = nlohmann::json::parse(line);
    if (rec["token_idx"].get<int>() < 3) {
      accesses += rec["experts"].size();
      ++calls;
      layer_accesses.at(rec["layer"].get<std::size_t>()) += rec["experts"].size();
    }
  }
  const std::uint64_t expert_bytes = 3ull * 32 * 64 * 4;  // gate, up, down of f32 32 x 64
  EXPECT_EQ(j["expert_bytes"].get<std::uint64_t>(), expert_bytes);
  const auto& none = j["policies"][0];
  EXPECT_EQ(none["name"], "no cache");
  EXPECT_EQ(none["accesses"].get<std::uint64_t>(), accesses);
  EXPECT_EQ(none["bytes_uploaded"].get<std::uint64_t>(), accesses * expert_bytes);
  EXPECT_EQ(none["device_passes"].get<std::uint64_t>(), calls);  // no hits: one pass per call
  EXPECT_EQ(j["passes"], "auto");
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

// The golden models (tests/data/ggml_golden) of mixed layer types, fused gate_up and gpt-oss
// biases: run replays a trace through each, and the final activations it dumps
// with a tiny budget in upload, cpu and auto modes (auto with prefetch) equal those of a budget
// that holds every expert (NMSE <= 1e-5: the host entries use float32 activations); counters add up.
TEST(CliRun, GoldenModelsGiveTheSameYInEveryMissMode) {
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
  const auto out = tmp_path("run_golden.json"), ref = tmp_path("run_golden_ref.npy"), got = tmp_path("run_golden_y.npy");
  // the three layouts run refused before it used offloaded_moe (every type: offload_test, through
  // the library; a CLI run is a process start and a pipeline build, too slow for all fourteen)
  for (const char* v : {"mixed", "fused", "gptoss"}) {
    SCOPED_TRACE(v);
    const std::string model = std::string(MOEROUTE_TEST_DATA_DIR) + "/ggml_golden/" + v + ".gguf";
    const std::string base = "run --model " + model + " --trace " + (std::string(v) == "mixed" ? trace : trace1) +
                             " --policies lru --json " + out + " --dump-y ";
    auto r = run_cli(base + ref + " --vram-mib 64", "run_golden");  // every expert fits
    ASSERT_EQ(r.code, 0) << r.err;
    auto j = nlohmann::json::parse(read_text(out));
    EXPECT_EQ(j["experts"].get<int>(), 4);
    const std::vector<float> want = golden::load_file(ref).f32();
    ASSERT_EQ(want.size(), 3u * 256u);
    const std::uint64_t slot = j["slot_bytes"].get<std::uint64_t>();
    auto mib = [&](int slots) { return std::to_string((static_cast<double>(slots * slot) + 16.0) / 1048576.0); };
    for (const std::string& mode : {"--miss upload --vram-mib " + mib(2), "--miss cpu --vram-mib " + mib(1),
                                    "--miss auto --prefetch coactivation --vram-mib " + mib(1)}) {
      SCOPED_TRACE(mode);
      std::remove(got.c_str());
      r = run_cli(base + got + " " + mode, "run_golden");
      ASSERT_EQ(r.code, 0) << r.err;
      EXPECT_LE(golden::nmse(golden::load_file(got).f32(), want), 1e-5);
      j = nlohmann::json::parse(read_text(out));
      EXPECT_LE(j["slots"].get<int>(), 2);
      const auto& p = j["policies"][0];
      EXPECT_EQ(p["accesses"].get<std::uint64_t>(), p["hits"].get<std::uint64_t>() + p["misses"].get<std::uint64_t>());
      EXPECT_EQ(p["misses"].get<std::uint64_t>(), p["miss_uploads"].get<std::uint64_t>() + p["miss_cpu"].get<std::uint64_t>());
      if (mode.find("cpu") != std::string::npos) {
        EXPECT_GT(p["miss_cpu"].get<std::uint64_t>(), 0u);
      }
      if (mode.find("upload") != std::string::npos) {
        EXPECT_EQ(p["miss_cpu"].get<std::uint64_t>(), 0u);
      }
    }
  }
}

TEST(CliRun, MissAndPrefetchFlagsAreChecked) {
  const auto out = tmp_path("run_flags.json");
  expect_bad("run --trace " + mixtral + " --miss gpu --json " + out, out, "miss mode 'gpu'", "run_flags");
  expect_bad("run --trace " + mixtral + " --prefetch psychic --json " + out, out, "--prefetch 'psychic'", "run_flags");
  expect_bad("run --trace " + mixtral + " --passes three --json " + out, out, "device passes 'three'", "run_flags");
  expect_bad("run --router --prefetch oracle --json " + out, out, "cannot be combined with --router", "run_flags");
  expect_bad("run --trace " + mixtral + " --policies belady --dump-y " + out, out, "--dump-y needs a policy", "run_flags");
}
