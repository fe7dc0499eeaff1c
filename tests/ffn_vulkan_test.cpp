// The Vulkan expert FFN against the plain-loop reference and the Eigen CPU reference. With
// MOEROUTE_VK_VALIDATION=1 the Khronos validation layer is on and any message fails the test.
// Without a Vulkan device every test skips with a message.
#include "ffn_test_common.hpp"
#include "golden_support.hpp"

#include <moeroute/io/gguf.hpp>
#include <moeroute/weights/layer.hpp>
#include <moeroute/weights/types.hpp>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#ifdef MOEROUTE_TEST_HAS_VULKAN
#include <moeroute/backends/vulkan.hpp>
#ifdef MOEROUTE_TEST_HAS_EIGEN
#include <moeroute/backends/cpu_eigen.hpp>
#endif

using moeroute::weight_type;

namespace {

// A layer whose rows put blocks at every alignment the types allow and end part-way through a
// mat-vec lane's chunk: 32-value types H = 96 (3 blocks), F = 160 (5 blocks); with a 256-value
// type H = 768 (3 superblocks), F = 256.
moeroute::ffn_layer odd_layer(int E, weight_type g, weight_type u, weight_type d, bool bias = false,
                              moeroute::ffn_activation act = moeroute::ffn_activation::swiglu) {
  const bool big = moeroute::block_elems(g) == 256 || moeroute::block_elems(u) == 256 || moeroute::block_elems(d) == 256;
  return moeroute::ffn_layer(E, big ? 768 : 96, big ? 256 : 160, g, u, d, bias, act);
}

std::string layer_name(const moeroute::ffn_layer& s) {
  return std::string(moeroute::weight_type_name(s.gate_type)) + "/" + moeroute::weight_type_name(s.up_type) + "/" +
         moeroute::weight_type_name(s.down_type) + (s.has_bias ? " bias" : "") + " " + moeroute::ffn_activation_name(s.act);
}

class VulkanFfn : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    try {
      ctx_ = std::make_unique<moeroute::vulkan_context>();
    } catch (const moeroute::error& e) {
      if (e.code() != moeroute::errc::unsupported) throw;
      skip_reason_ = e.message();
    }
  }
  static void TearDownTestSuite() {
    keep_.reset();
    ctx_.reset();
  }

  void SetUp() override {
    if (!ctx_) GTEST_SKIP() << "no Vulkan device: " << skip_reason_;
    seen_ = ctx_->validation_messages().size();
  }
  void TearDown() override {
    if (!ctx_) return;
    keep_.reset();
    const auto msgs = ctx_->validation_messages();
    for (std::size_t i = seen_; i < msgs.size(); ++i) ADD_FAILURE() << "Vulkan validation: " << msgs[i];
  }

  // Uploads every expert of p into slot table[e] and runs the op; returns y.
  static std::vector<float> run_vk(const ffn_test::problem& p, const std::vector<std::int32_t>& table, int num_slots,
                                   VkDeviceSize max_buffer_bytes = 0, moeroute::vulkan_expert_pool** pool_out = nullptr) {
    keep_.reset();
    keep_ = std::make_unique<moeroute::vulkan_expert_pool>(*ctx_, p.shape, num_slots, max_buffer_bytes);
    auto& pool = *keep_;
    for (int e = 0; e < p.shape.num_experts; ++e)
      if (table[static_cast<std::size_t>(e)] >= 0)
        pool.upload_expert(table[static_cast<std::size_t>(e)], p.blobs[static_cast<std::size_t>(e)].data(),
                           p.blobs[static_cast<std::size_t>(e)].size());
    pool.set_slot_table(table.data(), table.size());
    moeroute::vulkan_ffn op(*ctx_, pool);
    moeroute::vulkan_ffn_config cfg{std::max<std::size_t>(1, p.routing.num_tokens), std::max<std::size_t>(1, p.routing.nnz())};
    EXPECT_EQ(op.can_implement(cfg), "");
    auto ws = ctx_->make_buffer(op.workspace_size(cfg), false);
    op.initialize(cfg, ws);
    std::vector<float> y(p.routing.num_tokens * static_cast<std::size_t>(p.shape.hidden), -7.0f);
    op.forward({p.routing.view(), p.x.data(), y.data()});
    if (pool_out) *pool_out = keep_.get();
    return y;
  }

  static std::vector<std::int32_t> identity(int E) {
    std::vector<std::int32_t> t(static_cast<std::size_t>(E));
    for (int e = 0; e < E; ++e) t[static_cast<std::size_t>(e)] = e;
    return t;
  }

  static double bound(weight_type t) { return t == weight_type::f32 ? 1e-7 : 5e-4; }

#ifdef MOEROUTE_TEST_HAS_EIGEN
  // y of the Eigen reference (moeroute::cpu_ffn) for p, every expert resident, as double.
  static std::vector<double> eigen_y(const ffn_test::problem& p) {
    const int E = p.shape.num_experts;
    moeroute::cpu_ffn cpu(p.shape, E);
    for (int e = 0; e < E; ++e) cpu.upload_expert(e, p.blobs[static_cast<std::size_t>(e)].data(), p.shape.expert_bytes());
    const auto id = identity(E);
    cpu.set_slot_table(id.data(), id.size());
    std::vector<float> y(p.routing.num_tokens * static_cast<std::size_t>(p.shape.hidden));
    moeroute::ffn_args a{p.routing.view(), p.x.data(), y.data()};
    std::vector<float> ws(cpu.workspace_size(a) / 4 + 1);
    cpu.initialize(a, ws.data());
    cpu.run();
    return {y.begin(), y.end()};
  }
#endif

  // Random experts of `layer` in permuted slots of a pool split into buffers of 3 slots, one op
  // for T <= 64: decode (T = 1, mat-vec kernels) and prefill (T = 64, K = 2 of 4 experts: tiled
  // kernels) against the plain-loop reference (dequantized rows, double) and, when built with
  // Eigen, the Eigen reference, NMSE <= 1e-5.
  static void check_decode_and_prefill(const moeroute::ffn_layer& layer, std::uint32_t seed) {
    ffn_test::problem p;
    p.shape = layer;
    ffn_test::random_weights(p, seed);
    moeroute::vulkan_expert_pool pool(*ctx_, p.shape, 4, 3 * moeroute::vulkan_expert_pool::slot_layout(p.shape)[3]);
    ASSERT_EQ(pool.num_buffers(), 2);
    const std::vector<std::int32_t> table{2, 0, 3, 1};
    for (int e = 0; e < 4; ++e)
      pool.upload_expert(table[static_cast<std::size_t>(e)], p.blobs[static_cast<std::size_t>(e)].data(), p.shape.expert_bytes());
    pool.set_slot_table(table.data(), 4);
    moeroute::vulkan_ffn op(*ctx_, pool);
    const moeroute::vulkan_ffn_config cfg{64, 128};
    ASSERT_EQ(op.can_implement(cfg), "") << layer_name(p.shape);
    auto ws = ctx_->make_buffer(op.workspace_size(cfg), false);
    op.initialize(cfg, ws);
    for (std::size_t T : {1u, 64u}) {
      ffn_test::random_x(p, T, seed + 1 + static_cast<std::uint32_t>(T));
      p.routing = ffn_test::random_routing(T, 4, 2, seed + 2 + static_cast<std::uint32_t>(T));
      std::vector<float> y(T * static_cast<std::size_t>(p.shape.hidden), -7.0f);
      op.forward({p.routing.view(), p.x.data(), y.data()});
      EXPECT_LE(ffn_test::nmse(y, ffn_test::reference(p)), 1e-5) << layer_name(p.shape) << " T=" << T;
#ifdef MOEROUTE_TEST_HAS_EIGEN
      EXPECT_LE(ffn_test::nmse(y, eigen_y(p)), 1e-5) << layer_name(p.shape) << " T=" << T << " vs Eigen";
#endif
    }
  }

  static std::unique_ptr<moeroute::vulkan_context> ctx_;
  static std::unique_ptr<moeroute::vulkan_expert_pool> keep_;  // the pool of the last run_vk
  static std::string skip_reason_;
  std::size_t seen_ = 0;
};
std::unique_ptr<moeroute::vulkan_context> VulkanFfn::ctx_;
std::unique_ptr<moeroute::vulkan_expert_pool> VulkanFfn::keep_;
std::string VulkanFfn::skip_reason_;


}  // namespace

TEST_F(VulkanFfn, AllTypesAllBatchSizesMatchReferences) {
  for (weight_type type : {weight_type::f32, weight_type::f16, weight_type::q8_0, weight_type::q4_0}) {
    ffn_test::problem p;
    p.shape = {8, 64, 96, type};
    ffn_test::random_weights(p, 100 + static_cast<std::uint32_t>(type));
    // Experts in reversed slots, pool split into buffers of 3 slots: exercises the slot table
    // and the per-buffer dispatch. One op per type, initialized for the largest call.
    const VkDeviceSize three = 3 * moeroute::vulkan_expert_pool::slot_layout(p.shape)[3];
    moeroute::vulkan_expert_pool pool(*ctx_, p.shape, 8, three);
    ASSERT_EQ(pool.num_buffers(), 3);
    std::vector<std::int32_t> table(8);
    for (int e = 0; e < 8; ++e) {
      table[static_cast<std::size_t>(e)] = 7 - e;
      pool.upload_expert(7 - e, p.blobs[static_cast<std::size_t>(e)].data(), p.shape.expert_bytes());
    }
    pool.set_slot_table(table.data(), 8);
    moeroute::vulkan_ffn op(*ctx_, pool);
    const moeroute::vulkan_ffn_config cfg{512, 1024};
    ASSERT_EQ(op.can_implement(cfg), "");
    auto ws = ctx_->make_buffer(op.workspace_size(cfg), false);
    op.initialize(cfg, ws);
    for (std::size_t T : {1u, 3u, 64u, 512u}) {
      ffn_test::random_x(p, T, 200 + static_cast<std::uint32_t>(T));
      p.routing = ffn_test::random_routing(T, 8, 2, 300 + static_cast<std::uint32_t>(T));
      std::vector<float> y(T * 64, -7.0f);
      op.forward({p.routing.view(), p.x.data(), y.data()});
      const auto ref = ffn_test::reference(p);
      const std::string what = std::string(moeroute::weight_type_name(type)) + " T=" + std::to_string(T);
      EXPECT_LE(ffn_test::nmse(y, ref), bound(type)) << what;
#ifdef MOEROUTE_TEST_HAS_EIGEN
      EXPECT_LE(ffn_test::nmse(y, eigen_y(p)), bound(type)) << what << " vs Eigen";
#endif
    }
  }
}


// Every weight type, decode (T = 1: mat-vec kernels) and prefill (T = 64 over 4 experts: tiled
// kernels), against the plain-loop reference that dequantizes the stored rows (dequantize_row,
// checked against ggml in weights_test) and accumulates in double. Experts sit in permuted slots
// of a pool split into buffers of 3 slots.
TEST_F(VulkanFfn, EveryWeightTypeDecodeAndPrefill) {
  for (weight_type type : moeroute::all_weight_types)
    check_decode_and_prefill(odd_layer(4, type, type, type), 700 + static_cast<std::uint32_t>(type));
}

// Per-tensor types (gate/up one type and down another, as Q4_K_M files), expert biases and
// gpt-oss's swiglu_oai, in both kernels. The golden fixtures cover one type per layer, gate/up
// Q4_K with down Q6_K and gpt-oss (MXFP4, biases, swiglu_oai) at T = 5.
TEST_F(VulkanFfn, MixedTypesBiasesAndSwigluOai) {
  using A = moeroute::ffn_activation;
  const moeroute::ffn_layer layers[] = {
      odd_layer(4, weight_type::q4_k, weight_type::q4_k, weight_type::mxfp4, true, A::swiglu_oai),
      odd_layer(4, weight_type::q5_1, weight_type::q5_1, weight_type::bf16, true, A::swiglu),
      odd_layer(4, weight_type::q4_k, weight_type::q5_k, weight_type::q6_k, true, A::swiglu_oai),
  };
  std::uint32_t seed = 1000;
  for (const auto& layer : layers) check_decode_and_prefill(layer, seed += 10);
}

// Gate, up and down each of its own type (dynamic quants mix Q4_K, Q5_K, Q6_K and IQ4_XS within a
// layer): every ordered (gate, up) pair of three types from different block families (a 32-value
// type with an offset, a K-quant with two scales per block at 2-byte alignment, a code book at
// 1-byte alignment), down the third, in both kernels. Each pair is two pipelines to compile,
// which on lavapipe costs seconds, so the set is kept small.
TEST_F(VulkanFfn, GateUpDownEachOfItsOwnType) {
  const weight_type types[] = {weight_type::q4_0, weight_type::q6_k, weight_type::mxfp4};
  std::uint32_t seed = 1100;
  // The three rotations: every type once as gate, once as up and once as down, gate != up each time
  // (each layer costs two pipeline builds, which dominate this test on a CPU device).
  for (std::size_t r = 0; r < 3; ++r)
    check_decode_and_prefill(odd_layer(4, types[r], types[(r + 1) % 3], types[(r + 2) % 3]), seed += 10);
}

namespace {
// One MoE block of a golden GGUF as the Vulkan op takes it: the layer (types per tensor; fused
// gate_up split into its F gate rows and F up rows; gpt-oss biases and activation) and one blob
// per expert, built from the tensors' raw bytes with the io/ GGUF reader.
struct golden_layer {
  moeroute::ffn_layer layer;
  std::vector<std::vector<unsigned char>> blobs;
};

golden_layer load_golden(const golden::variant& v) {
  const auto f = moeroute::gguf_file::open(golden::path(std::string(v.name) + ".gguf"));
  const std::string b = "blk." + std::to_string(v.block) + ".ffn_";
  const auto* fused = f.find_tensor(b + "gate_up_exps.weight");
  const auto& down = f.tensor(b + "down_exps.weight");
  const int H = static_cast<int>(down.ne[1]), F = static_cast<int>(down.ne[0]), E = static_cast<int>(down.ne[2]);
  auto type_of = [](const moeroute::gguf_tensor_info& t) {
    weight_type w{};
    EXPECT_TRUE(moeroute::weight_type_from_ggml(t.type, w)) << t.name;
    return w;
  };
  const auto& gate = fused ? *fused : f.tensor(b + "gate_exps.weight");
  const auto& up = fused ? *fused : f.tensor(b + "up_exps.weight");
  const bool bias = f.find_tensor(b + "down_exps.bias") != nullptr;
  golden_layer g;
  g.layer = moeroute::ffn_layer(E, H, F, type_of(gate), type_of(up), type_of(down), bias,
                                bias ? moeroute::ffn_activation::swiglu_oai : moeroute::ffn_activation::swiglu);
  const auto& s = g.layer;
  for (int e = 0; e < E; ++e) {
    std::vector<unsigned char> blob(s.expert_bytes(), 0);
    const auto ue = static_cast<std::uint64_t>(e);
    if (fused) {
      f.read_tensor_range(*fused, ue * (s.gate_bytes() + s.up_bytes()), s.gate_bytes() + s.up_bytes(), blob.data());
    } else {
      f.read_tensor_range(gate, ue * s.gate_bytes(), s.gate_bytes(), blob.data() + s.gate_offset());
      f.read_tensor_range(up, ue * s.up_bytes(), s.up_bytes(), blob.data() + s.up_offset());
    }
    f.read_tensor_range(down, ue * s.down_bytes(), s.down_bytes(), blob.data() + s.down_offset());
    if (bias) {
      const auto Fb = static_cast<std::uint64_t>(F) * 4, Hb = static_cast<std::uint64_t>(H) * 4;
      unsigned char* at = blob.data() + s.bias_offset();
      if (fused) {
        f.read_tensor_range(f.tensor(b + "gate_up_exps.bias"), ue * 2 * Fb, 2 * Fb, at);
      } else {
        f.read_tensor_range(f.tensor(b + "gate_exps.bias"), ue * Fb, Fb, at);
        f.read_tensor_range(f.tensor(b + "up_exps.bias"), ue * Fb, Fb, at + Fb);
      }
      f.read_tensor_range(f.tensor(b + "down_exps.bias"), ue * Hb, Hb, at + 2 * Fb);
    }
    g.blobs.push_back(std::move(blob));
  }
  return g;
}
}  // namespace

// The golden fixtures (tests/data/ggml_golden, computed by ggml): for every variant, the Vulkan
// op on the stored bytes with ggml's routing (ids, weights) lands within NMSE 1e-5 of y_exact
// (the exact answer for those bytes, in double).
TEST_F(VulkanFfn, GgmlGoldenFixtures) {
  for (const auto& v : golden::kVariants) {
    const std::string what = golden::stem(v);
    const golden_layer g = load_golden(v);
    const auto x = golden::load(std::string(v.name) + ".x.npy").f32();
    const auto ids = golden::load(what + ".ids.npy");
    const auto w = golden::load(what + ".w.npy").f32();
    const auto y_exact = golden::load(what + ".y_exact.npy").f64();
    ASSERT_EQ(ids.shape.size(), 2u) << what;
    const std::size_t T = ids.shape[0], K = ids.shape[1];
    ASSERT_EQ(x.size(), T * static_cast<std::size_t>(g.layer.hidden)) << what;
    ffn_test::problem p;
    p.shape = g.layer;
    p.blobs = g.blobs;
    p.x = x;
    p.routing.num_tokens = T;
    p.routing.num_experts = g.layer.num_experts;
    const auto id = ids.i32();
    for (std::size_t t = 0; t < T; ++t) {
      for (std::size_t k = 0; k < K; ++k) {
        p.routing.ids.push_back(id[t * K + k]);
        p.routing.weights.push_back(w[t * K + k]);
      }
      p.routing.offsets.push_back(static_cast<std::uint32_t>(p.routing.ids.size()));
    }
    const auto y = run_vk(p, identity(g.layer.num_experts), g.layer.num_experts);
    EXPECT_LE(golden::nmse(y, y_exact), 1e-5) << what << " (" << layer_name(g.layer) << ")";
  }
}

TEST_F(VulkanFfn, AdversarialRouting) {
  ffn_test::problem p;
  p.shape = {6, 64, 64, weight_type::f16};
  ffn_test::random_weights(p, 41);
  const std::size_t T = 45;
  ffn_test::random_x(p, T, 42);
  p.routing.num_tokens = T;
  p.routing.num_experts = 6;
  // Tokens 0..39: all to expert 4 (more tokens than one chunk); 40: k = 0 (all zero-gated);
  // 41: k = 3; 42: k = 1 to expert 0; 43: k = 2; 44: k = 1. Expert 5 is masked (no slot) and
  // experts 1 and 2 get no tokens.
  for (std::size_t t = 0; t < 40; ++t) {
    p.routing.ids.push_back(4);
    p.routing.weights.push_back(0.25f + 0.01f * static_cast<float>(t));
    p.routing.offsets.push_back(static_cast<std::uint32_t>(p.routing.ids.size()));
  }
  p.routing.offsets.push_back(static_cast<std::uint32_t>(p.routing.ids.size()));
  for (auto [ids, ws] : std::vector<std::pair<std::vector<int>, std::vector<float>>>{
           {{4, 3, 0}, {0.5f, 0.3f, 0.2f}}, {{0}, {1.0f}}, {{3, 4}, {0.6f, 0.4f}}, {{3}, {0.0f}}}) {
    for (std::size_t i = 0; i < ids.size(); ++i) {
      p.routing.ids.push_back(ids[i]);
      p.routing.weights.push_back(ws[i]);
    }
    p.routing.offsets.push_back(static_cast<std::uint32_t>(p.routing.ids.size()));
  }
  const std::vector<std::int32_t> table{2, 0, 1, 3, 4, -1};
  const auto y = run_vk(p, table, 5);
  const auto ref = ffn_test::reference(p);
  EXPECT_LE(ffn_test::nmse(y, ref), 5e-4);
  for (int h = 0; h < 64; ++h) {
    EXPECT_EQ(y[40 * 64 + static_cast<std::size_t>(h)], 0.0f) << "token with k = 0 must give 0";
    EXPECT_EQ(y[44 * 64 + static_cast<std::size_t>(h)], 0.0f) << "zero weight must give 0";
  }
}

TEST_F(VulkanFfn, MatVecAndTiledKernelBoundaries) {
  // Experts with 1, 4 (mat-vec kernel), 5, 16, 17 and 40 entries (tiled kernel: partial and full
  // token tiles, several passes); H = 160 and F = 224 are 5 and 7 blocks, so the lanes' chunks of
  // the reduction dimension end part-way through a row.
  const int counts[6] = {1, 4, 5, 16, 17, 40};
  for (weight_type type : {weight_type::f32, weight_type::f16, weight_type::q8_0, weight_type::q4_0}) {
    ffn_test::problem p;
    p.shape = {6, 160, 224, type};
    ffn_test::random_weights(p, 500 + static_cast<std::uint32_t>(type));
    const std::size_t T = 40;
    ffn_test::random_x(p, T, 600 + static_cast<std::uint32_t>(type));
    p.routing.num_tokens = T;
    p.routing.num_experts = 6;
    for (std::size_t t = 0; t < T; ++t) {
      for (int e = 5; e >= 0; --e) {
        if (static_cast<int>(t) < counts[e]) {
          p.routing.ids.push_back(e);
          p.routing.weights.push_back(0.1f + 0.05f * static_cast<float>(e) + 0.001f * static_cast<float>(t));
        }
      }
      p.routing.offsets.push_back(static_cast<std::uint32_t>(p.routing.ids.size()));
    }
    const std::vector<std::int32_t> table{5, 3, 1, 0, 2, 4};
    const auto y = run_vk(p, table, 6);
    const auto ref = ffn_test::reference(p);
    EXPECT_LE(ffn_test::nmse(y, ref), bound(type)) << moeroute::weight_type_name(type);
  }
}

TEST_F(VulkanFfn, OneTokenAndDeterministicRuns) {
  ffn_test::problem p;
  p.shape = {16, 128, 64, weight_type::q4_0};
  ffn_test::random_weights(p, 51);
  ffn_test::random_x(p, 1, 52);
  p.routing = ffn_test::random_routing(1, 16, 8, 53);
  const auto y1 = run_vk(p, identity(16), 16);
  const auto y2 = run_vk(p, identity(16), 16);
  EXPECT_LE(ffn_test::nmse(y1, ffn_test::reference(p)), 5e-4);
  EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * 4)) << "two runs differ";
}

TEST_F(VulkanFfn, Qwen3LayerPool) {
  // A Qwen3-30B-A3B layer in f16: 128 x 3 x 2048 x 768 x 2 bytes = 1.125 GiB of slots, more than
  // maxStorageBufferRange on lavapipe (128 MiB): the pool buffers are texel buffers, split at the
  // device's per-buffer limit. Eight experts spread over the pool are loaded.
  ffn_test::problem small;
  small.shape = {8, 2048, 768, weight_type::f16};
  ffn_test::random_weights(small, 81);
  ffn_test::problem p;
  p.shape = {128, 2048, 768, weight_type::f16};
  p.blobs.assign(128, {});
  const int experts[8] = {5, 17, 40, 63, 64, 90, 101, 127};
  for (int i = 0; i < 8; ++i) p.blobs[static_cast<std::size_t>(experts[i])] = small.blobs[static_cast<std::size_t>(i)];
  ffn_test::random_x(p, 2, 82);
  p.routing.num_tokens = 2;
  p.routing.num_experts = 128;
  p.routing.offsets = {0, 8, 11};
  for (int i = 0; i < 8; ++i) {
    p.routing.ids.push_back(experts[i]);
    p.routing.weights.push_back(0.2f - 0.02f * static_cast<float>(i));
  }
  p.routing.ids.insert(p.routing.ids.end(), {127, 5, 64});
  p.routing.weights.insert(p.routing.weights.end(), {0.5f, 0.3f, 0.2f});
  std::unique_ptr<moeroute::vulkan_expert_pool> pool;
  try {
    pool = std::make_unique<moeroute::vulkan_expert_pool>(*ctx_, p.shape, 128);
  } catch (const moeroute::error& e) {
    GTEST_SKIP() << "device cannot hold a 1.125 GiB pool: " << e.message();
  }
  EXPECT_EQ(pool->slot_stride() * 128 >= 128ull * 3 * 2048 * 768 * 2, true);
  const VkDeviceSize per_buffer = std::min<VkDeviceSize>(
      {static_cast<VkDeviceSize>(ctx_->limits().maxTexelBufferElements) * 16, ctx_->max_allocation(), VkDeviceSize{1} << 31});
  EXPECT_EQ(pool->num_buffers(), (128 + per_buffer / pool->slot_stride() - 1) / (per_buffer / pool->slot_stride()));
  std::vector<std::int32_t> table(128, -1);
  for (int e : experts) {
    table[static_cast<std::size_t>(e)] = e;
    pool->upload_expert(e, p.blobs[static_cast<std::size_t>(e)].data(), p.shape.expert_bytes());
  }
  pool->set_slot_table(table.data(), 128);
  moeroute::vulkan_ffn op(*ctx_, *pool);
  const moeroute::vulkan_ffn_config cfg{2, 11};
  ASSERT_EQ(op.can_implement(cfg), "");
  auto ws = ctx_->make_buffer(op.workspace_size(cfg), false);
  op.initialize(cfg, ws);
  std::vector<float> y(2 * 2048);
  op.forward({p.routing.view(), p.x.data(), y.data()});
  EXPECT_LE(ffn_test::nmse(y, ffn_test::reference(p)), 5e-4);
}

TEST_F(VulkanFfn, TransferBytesCounted) {
  ffn_test::problem p;
  p.shape = {4, 64, 32, weight_type::q8_0};
  ffn_test::random_weights(p, 61);
  ffn_test::random_x(p, 2, 62);
  p.routing.num_tokens = 2;
  p.routing.num_experts = 4;
  p.routing.offsets = {0, 2, 3};
  p.routing.ids = {3, 0, 1};
  p.routing.weights = {0.7f, 0.3f, 1.0f};
  moeroute::vulkan_expert_pool* pool = nullptr;
  const auto y = run_vk(p, {0, 1, -1, 2}, 3, 0, &pool);
  EXPECT_LE(ffn_test::nmse(y, ffn_test::reference(p)), 5e-4);
  ASSERT_NE(pool, nullptr);
  // 3 experts of 2 * 32 rows * 2 blocks * 34 bytes + 64 rows * 1 block * 34 bytes.
  EXPECT_EQ(pool->transfer_bytes(), 3u * (2u * 32u * 2u * 34u + 64u * 34u));
}

TEST_F(VulkanFfn, RejectsBadInputWithReasons) {
  ffn_test::problem p;
  p.shape = {4, 64, 64, weight_type::f32};
  ffn_test::random_weights(p, 71);
  ffn_test::random_x(p, 4, 72);
  p.routing = ffn_test::random_routing(4, 4, 2, 73);
  moeroute::vulkan_expert_pool pool(*ctx_, p.shape, 2);
  pool.upload_expert(0, p.blobs[0].data(), p.blobs[0].size());
  const std::vector<std::int32_t> table{0, -1, -1, -1};
  pool.set_slot_table(table.data(), 4);
  EXPECT_THROW(pool.upload_expert(2, p.blobs[0].data(), p.blobs[0].size()), moeroute::error);
  EXPECT_THROW(pool.upload_expert(0, p.blobs[0].data(), 10), moeroute::error);
  const std::vector<std::int32_t> bad{0, 5, -1, -1};
  EXPECT_THROW(pool.set_slot_table(bad.data(), 4), moeroute::error);

  moeroute::vulkan_ffn op(*ctx_, pool);
  moeroute::vulkan_ffn_config cfg{2, 8};
  auto ws = ctx_->make_buffer(op.workspace_size(cfg), false);
  op.initialize(cfg, ws);
  std::vector<float> y(4 * 64);
  moeroute::ffn_args a{p.routing.view(), p.x.data(), y.data()};
  EXPECT_NE(op.check_args(a).find("max_tokens"), std::string::npos);
  cfg = {4, 8};
  auto ws2 = ctx_->make_buffer(op.workspace_size(cfg), false);
  op.initialize(cfg, ws2);
  EXPECT_NE(op.check_args(a).find("no loaded slot"), std::string::npos);
  try {
    op.forward(a);
    ADD_FAILURE() << "forward accepted a non-resident expert";
  } catch (const moeroute::error& e) {
    EXPECT_EQ(e.code(), moeroute::errc::bad_input);
  }
  auto small = ctx_->make_buffer(16, false);
  EXPECT_THROW(op.initialize(cfg, small), moeroute::error);

  moeroute::vulkan_expert_pool odd(*ctx_, {4, 48, 64, weight_type::f32}, 1);
  moeroute::vulkan_ffn op2(*ctx_, odd);
  EXPECT_NE(op2.can_implement({1, 1}).find("multiples of 32"), std::string::npos);
}

TEST_F(VulkanFfn, DeviceSelector) {
  moeroute::vulkan_context_options o;
  o.validation = false;
  o.device = "no-such-device-name";
  try {
    moeroute::vulkan_context c(o);
    ADD_FAILURE() << "a selector that matches nothing was accepted";
  } catch (const moeroute::error& e) {
    EXPECT_EQ(e.code(), moeroute::errc::invalid_argument);
    EXPECT_NE(e.message().find("matches no device"), std::string::npos) << e.message();
  }
  o.device = ctx_->device_name().substr(0, 4);
  EXPECT_NO_THROW(moeroute::vulkan_context{o});
}

#else
TEST(VulkanFfn, Skipped) { GTEST_SKIP() << "built without the Vulkan loader and headers"; }
#endif
