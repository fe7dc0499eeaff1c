// `moeroute ffn`: every golden model (tests/data/ggml_golden) through the CLI on the Eigen
// backend, with given routing (Y against ggml's exact answer) and with --route (ids and weights
// against ggml's), and the bad-input contract (exit 2, one line, nothing written).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "cli_support.hpp"
#include "fuzz/gguf_writer.hpp"
#include "golden_support.hpp"

using namespace clitest;

namespace {
golden::array load_tmp(const std::string& path) { return golden::load_file(path); }

std::string g(const std::string& f) { return golden::path(f); }
}  // namespace

TEST(CliFfn, EveryGoldenModelGivenRoutingAndRoute) {
  for (const auto& v : golden::kVariants) {
    SCOPED_TRACE(golden::stem(v));
    const std::string st = golden::stem(v), model = g(std::string(v.name) + ".gguf"), x = g(std::string(v.name) + ".x.npy");
    const std::string y = tmp_path("ffn_" + st + ".y.npy");
    auto r = run_cli("ffn --model " + model + " --block " + std::to_string(v.block) + " --x " + x + " --ids " +
                         g(st + ".ids.npy") + " --weights " + g(st + ".w.npy") + " -o " + y,
                     "ffn_given");
    ASSERT_EQ(r.code, 0) << r.err;
    const std::vector<double> exact = golden::load(st + ".y_exact.npy").f64();
    const golden::array ya = load_tmp(y);
    EXPECT_EQ(ya.shape, (std::vector<std::size_t>{5, 256}));
    EXPECT_LE(golden::nmse(ya.f32(), exact), 1e-9);

    const std::string ids = tmp_path("ffn_" + st + ".ids.npy"), w = tmp_path("ffn_" + st + ".w.npy");
    r = run_cli("ffn --model " + model + " --block " + std::to_string(v.block) + " --x " + x + " --route --ids-out " +
                    ids + " --weights-out " + w + " --backend eigen -o " + y,
                "ffn_route");
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_EQ(load_tmp(ids).i32(), golden::load(st + ".ids.npy").i32());
    const std::vector<float> got_w = load_tmp(w).f32(), want_w = golden::load(st + ".w.npy").f32();
    ASSERT_EQ(got_w.size(), want_w.size());
    for (std::size_t i = 0; i < got_w.size(); ++i) EXPECT_NEAR(got_w[i], want_w[i], 1e-5) << i;
    EXPECT_LE(golden::nmse(load_tmp(y).f32(), exact), 1e-9);  // same routing, same answer
  }
}

TEST(CliFfn, BadInputExitsTwoWithOneLineAndWritesNothing) {
  const std::string out = tmp_path("ffn_bad.npy");
  const std::string q4 = g("q4_k.gguf"), x = g("q4_k.x.npy"), ids = g("q4_k.blk0.ids.npy"), w = g("q4_k.blk0.w.npy");
  const std::string base = "ffn --model " + q4 + " --block 0 --x " + x;
  // truncated GGUF
  const std::string trunc = tmp_path("ffn_trunc.gguf");
  write_text(trunc, read_text(q4).substr(0, 100000));
  expect_bad("ffn --model " + trunc + " --block 0 --x " + x + " --route -o " + out, out, "runs past the end");
  // a dense block, a block that does not exist
  expect_bad("ffn --model " + g("mixed.gguf") + " --block 0 --x " + g("mixed.x.npy") + " --route -o " + out, out,
             "blk.0 has no expert tensors (MoE blocks: 1, 2)");
  expect_bad("ffn --model " + q4 + " --block 7 --x " + x + " --route -o " + out, out, "blk.7 has no expert tensors");
  // X of the wrong width (the ids file is [5, 2])
  expect_bad("ffn --model " + q4 + " --block 0 --x " + ids + " --route -o " + out, out, "'<f4' or '<f2'");
  const std::string narrow = tmp_path("ffn_narrow.npy");
  write_text(narrow, read_text(w));  // [5, 2] float32
  expect_bad("ffn --model " + q4 + " --block 0 --x " + narrow + " --route -o " + out, out,
             "X has 2 columns but the model's hidden size is 256");
  // ids outside [0, E), W of another shape than I
  const std::string bad_ids = tmp_path("ffn_bad_ids.npy");
  std::string b = read_text(ids);
  b[b.size() - 4] = 4;  // last id = 4 (little-endian int32)
  write_text(bad_ids, b);
  expect_bad(base + " --ids " + bad_ids + " --weights " + w + " -o " + out, out,
             "row 4 column 1: expert id 4 outside [0, 4)");
  expect_bad(base + " --ids " + ids + " --weights " + x + " -o " + out, out, "W has shape (5, 256) but I has shape (5, 2)");
  // flag combinations
  expect_bad(base + " -o " + out, out, "give either --ids and --weights, or --route");
  expect_bad(base + " --route --ids " + ids + " -o " + out, out, "give either --ids and --weights, or --route");
  expect_bad(base + " --ids " + ids + " -o " + out, out, "--ids and --weights go together");
  expect_bad(base + " --ids " + ids + " --weights " + w + " --ids-out " + tmp_path("i.npy") + " -o " + out, out,
             "--ids-out and --weights-out need --route");
  expect_bad(base + " --route --backend gpu -o " + out, out, "--backend 'gpu' (expected eigen, cpu or vulkan)");
  expect_bad(base + " --route --threads 2 -o " + out, out, "--threads applies to --backend cpu only");
  expect_bad(base + " --route --backend cpu --threads 0 -o " + out, out, "--threads");
  expect_bad(base + " --route --activations f32 -o " + out, out, "--activations applies to --backend cpu only");
  expect_bad(base + " --route --backend cpu --activations f16 -o " + out, out,
             "--activations 'f16' (expected int8 or f32)");
  // an unsupported weight type: IQ1_M experts
  moeroute_test::gguf_writer iq = moeroute_test::make_moe_model({0}, 4, 256, 256, 29, [](int, int, int) {
    return std::string(256 * 56, '\0');
  });
  const std::string iq_path = tmp_path("ffn_iq1m.gguf");
  iq.write(iq_path);
  expect_bad("ffn --model " + iq_path + " --block 0 --x " + x + " --route -o " + out, out,
             "tensor 'blk.0.ffn_gate_exps.weight' has type IQ1_M");
}

// --backend cpu (the quantized CPU FFN, from the mapped file): every golden layer within 2x ggml's
// own NMSE against the exact answer (ggml's figures from NMSE.txt), with 1 and 2 threads giving the
// same bytes.
TEST(CliFfn, CpuBackendWithinTwiceGgmlError) {
  const std::string nmse_txt = read_text(g("NMSE.txt"));
  for (const auto& v : golden::kVariants) {
    const std::string st = golden::stem(v);
    SCOPED_TRACE(st);
    // this variant's line: "<name> blk<N> ... nmse(ggml vs exact)=<value>"
    const std::string head = std::string(v.name) + " ";
    std::size_t at = 0;
    double ggml = -1;
    while ((at = nmse_txt.find(head, at)) != std::string::npos) {
      const std::size_t eol = nmse_txt.find('\n', at);
      const std::string line = nmse_txt.substr(at, eol - at);
      if ((at == 0 || nmse_txt[at - 1] == '\n') && line.find("blk" + std::to_string(v.block) + " ") != std::string::npos)
        ggml = std::stod(line.substr(line.find("exact)=") + 7));
      at = eol;
    }
    ASSERT_GT(ggml, 0);
    std::string bytes;
    for (int threads : {1, 2}) {
      const std::string y = tmp_path("ffn_cpu_" + st + ".npy");
      const auto r = run_cli("ffn --model " + g(std::string(v.name) + ".gguf") + " --block " + std::to_string(v.block) +
                                 " --x " + g(std::string(v.name) + ".x.npy") + " --ids " + g(st + ".ids.npy") +
                                 " --weights " + g(st + ".w.npy") + " --backend cpu --threads " +
                                 std::to_string(threads) + " -o " + y,
                             "ffn_cpu");
      ASSERT_EQ(r.code, 0) << r.err;
      EXPECT_NE(r.err.find("on cpu ("), std::string::npos) << r.err;
      EXPECT_LE(golden::nmse(load_tmp(y).f32(), golden::load(st + ".y_exact.npy").f64()), 2 * ggml);
      if (threads == 1)
        bytes = read_text(y);
      else
        EXPECT_EQ(read_text(y), bytes) << "depends on the thread count";
    }
  }
}

// --backend cpu --activations f32 (dequantized rows, float32 dots): every golden layer equals the
// exact answer to float32 rounding (NMSE <= 1e-9).
TEST(CliFfn, CpuBackendF32ActivationsMatchExact) {
  for (const auto& v : golden::kVariants) {
    const std::string st = golden::stem(v);
    SCOPED_TRACE(st);
    const std::string y = tmp_path("ffn_cpu_f32_" + st + ".npy");
    const auto r = run_cli("ffn --model " + g(std::string(v.name) + ".gguf") + " --block " + std::to_string(v.block) +
                               " --x " + g(std::string(v.name) + ".x.npy") + " --ids " + g(st + ".ids.npy") +
                               " --weights " + g(st + ".w.npy") + " --backend cpu --activations f32 -o " + y,
                           "ffn_cpu_f32");
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.err.find("f32 activations)"), std::string::npos) << r.err;
    EXPECT_LE(golden::nmse(load_tmp(y).f32(), golden::load(st + ".y_exact.npy").f64()), 1e-9);
  }
}

// --backend vulkan: every golden layer the Vulkan kernels take matches the exact answer within
// 1e-5; the others exit 2 with one line naming the reason and write nothing.
TEST(CliFfn, VulkanBackendMatchesExactOrSaysWhy) {
#ifndef MOEROUTE_TEST_HAS_VULKAN
  GTEST_SKIP() << "built without Vulkan";
#else
  int ran = 0;
  for (const auto& v : golden::kVariants) {
    SCOPED_TRACE(golden::stem(v));
    const std::string st = golden::stem(v), y = tmp_path("ffn_vk_" + st + ".npy");
    std::remove(y.c_str());
    const auto r = run_cli("ffn --model " + g(std::string(v.name) + ".gguf") + " --block " + std::to_string(v.block) +
                               " --x " + g(std::string(v.name) + ".x.npy") + " --ids " + g(st + ".ids.npy") +
                               " --weights " + g(st + ".w.npy") + " --backend vulkan -o " + y,
                           "ffn_vk");
    if (r.code == 0) {
      ++ran;
      EXPECT_LE(golden::nmse(load_tmp(y).f32(), golden::load(st + ".y_exact.npy").f64()), 1e-5);
    } else {
      EXPECT_EQ(r.code, 2) << r.err;
      EXPECT_EQ(r.err.rfind("moeroute: ", 0), 0u) << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
      if (r.err.find("no usable") == std::string::npos && r.err.find("Vulkan") == std::string::npos &&
          r.err.find("vulkan") == std::string::npos)
        ADD_FAILURE() << r.err;
      EXPECT_FALSE(file_exists(y));
    }
  }
  std::printf("  Vulkan ran %d of %zu golden layers\n", ran, std::size(golden::kVariants));
#endif
}
