// Weight formats (weights/) and the Eigen reference FFN (cpu_eigen.hpp) against plain loops.
#include "ffn_test_common.hpp"

#include <moeroute/backends/ffn_types.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#ifdef MOEROUTE_TEST_HAS_EIGEN
#include <moeroute/backends/cpu_eigen.hpp>
#endif

using moeroute::weight_type;

TEST(FfnTypes, BlockSizesMatchGgml) {
  EXPECT_EQ(moeroute::block_bytes(weight_type::q8_0), 34u);
  EXPECT_EQ(moeroute::block_bytes(weight_type::q4_0), 18u);
  EXPECT_EQ(moeroute::row_bytes(weight_type::q4_0, 2048), 64u * 18u);
  EXPECT_EQ(moeroute::row_bytes(weight_type::f16, 768), 1536u);
  moeroute::ffn_layer s{128, 2048, 768, weight_type::f16};
  // Qwen3-30B-A3B layer: 128 x 3 x 2048 x 768 f16 = 1.125 GiB.
  EXPECT_EQ(s.expert_bytes() * 128, 128ull * 3 * 2048 * 768 * 2);
}

TEST(FfnTypes, Q4_0HandComputedBlock) {
  // x[i] = (i % 16) - 8: the largest magnitude is -8 (first at i = 0), so d = -8 / -8 = 1 and
  // each nibble is x + 8 = i % 16. Byte j holds element j (low) and j + 16 (high).
  float x[32];
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i % 16) - 8.0f;
  unsigned char b[18];
  moeroute::encode_row(weight_type::q4_0, x, 32, b);
  EXPECT_EQ(b[0] | (b[1] << 8), 0x3C00);  // f16 1.0
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b[2 + j], static_cast<unsigned char>(j | (j << 4))) << j;
  float y[32];
  moeroute::dequantize_row(weight_type::q4_0, b, y, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], x[i]) << i;
}

TEST(FfnTypes, Q8_0HandComputedBlock) {
  // amax 127 -> d = 1, q = x exactly.
  float x[32];
  for (int i = 0; i < 32; ++i) x[i] = static_cast<float>(i * 8 - 127) * (i == 31 ? 0.0f : 1.0f);
  x[31] = 127.0f;
  unsigned char b[34];
  moeroute::encode_row(weight_type::q8_0, x, 32, b);
  EXPECT_EQ(b[0] | (b[1] << 8), 0x3C00);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(static_cast<signed char>(b[2 + i]), static_cast<int>(x[i])) << i;
  float y[32];
  moeroute::dequantize_row(weight_type::q8_0, b, y, 32);
  for (int i = 0; i < 32; ++i) EXPECT_EQ(y[i], x[i]) << i;
}

TEST(FfnTypes, QuantErrorWithinHalfStep) {
  std::vector<float> x(64);
  for (int i = 0; i < 64; ++i) x[static_cast<std::size_t>(i)] = std::sin(0.37f * static_cast<float>(i)) * 3.0f;
  for (weight_type t : {weight_type::q8_0, weight_type::q4_0}) {
    std::vector<unsigned char> b(moeroute::row_bytes(t, 64));
    moeroute::encode_row(t, x.data(), 64, b.data());
    for (std::size_t blk = 0; blk < 2; ++blk) {
      float amax = 0;
      for (std::size_t i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[blk * 32 + i]));
      // Q8_0 rounds to the nearest of 255 levels: half a step. Q4_0 maps the largest-magnitude value
      // to -8 * d, so the opposite end saturates at nibble 15 (7 * d): up to a full step there.
      const float step = t == weight_type::q8_0 ? amax / 127.0f * 0.5f : amax / 8.0f;
      for (std::size_t i = 0; i < 32; ++i) {
        const float v = ffn_test::ref_value(t, b.data(), blk * 32 + i);
        EXPECT_LE(std::fabs(v - x[blk * 32 + i]), step + 1e-3f * amax) << moeroute::weight_type_name(t) << i;
      }
    }
  }
}

TEST(FfnTypes, ShapeAndRoutingChecksGiveReasons) {
  EXPECT_NE(moeroute::check_ffn_layer({8, 48, 64, weight_type::q4_0}).find("hidden (48) to be a multiple of 32"),
            std::string::npos);
  EXPECT_TRUE(moeroute::check_ffn_layer({8, 64, 64, weight_type::q4_0}).empty());
  EXPECT_NE(moeroute::check_ffn_layer({8, 256, 64, weight_type::q4_0, weight_type::q4_0, weight_type::q6_k})
                .find("down is q6_k, which needs ffn (64) to be a multiple of 256"),
            std::string::npos);
  moeroute::routing_result r = ffn_test::random_routing(3, 4, 2, 1);
  r.ids[3] = 4;
  EXPECT_NE(moeroute::check_routing(r.view(), 4).find("token 1: expert id 4"), std::string::npos);
}

#ifdef MOEROUTE_TEST_HAS_EIGEN

namespace {
std::vector<float> run_cpu(const ffn_test::problem& p) {
  moeroute::cpu_ffn op(p.shape, p.shape.num_experts);
  std::vector<std::int32_t> table(static_cast<std::size_t>(p.shape.num_experts));
  for (int e = 0; e < p.shape.num_experts; ++e) {
    // Reverse mapping: experts live in slots other than their own index.
    const int slot = p.shape.num_experts - 1 - e;
    table[static_cast<std::size_t>(e)] = slot;
    op.upload_expert(slot, p.blobs[static_cast<std::size_t>(e)].data(), p.blobs[static_cast<std::size_t>(e)].size());
  }
  op.set_slot_table(table.data(), table.size());
  std::vector<float> y(p.routing.num_tokens * static_cast<std::size_t>(p.shape.hidden), -1.0f);
  moeroute::ffn_args a{p.routing.view(), p.x.data(), y.data()};
  EXPECT_EQ(op.can_implement(a), "");
  std::vector<float> ws(op.workspace_size(a) / 4 + 1);
  op.initialize(a, ws.data());
  op.run();
  return y;
}
}  // namespace

class CpuFfn : public ::testing::TestWithParam<weight_type> {};

TEST_P(CpuFfn, MatchesPlainLoops) {
  const bool k256 = moeroute::block_elems(GetParam()) == 256;
  for (std::size_t T : {1u, 3u, 64u}) {
    if (k256 && T == 64) continue;  // the plain-loop reference is slow at H = F = 256
    ffn_test::problem p;
    p.shape = k256 ? moeroute::ffn_layer{6, 256, 256, GetParam()} : moeroute::ffn_layer{6, 64, 96, GetParam()};
    ffn_test::random_weights(p, 11);
    ffn_test::random_x(p, T, 12);
    p.routing = ffn_test::random_routing(T, 6, 2, 13);
    const auto y = run_cpu(p);
    EXPECT_LE(ffn_test::nmse(y, ffn_test::reference(p)), 1e-10) << "T=" << T;
  }
}

INSTANTIATE_TEST_SUITE_P(Types, CpuFfn,
                         ::testing::ValuesIn(moeroute::all_weight_types),
                         [](const ::testing::TestParamInfo<weight_type>& pi) { return std::string(moeroute::weight_type_name(pi.param)); });

// Per-tensor types (as in Q4_K_M files), biases and gpt-oss's activation.
TEST(CpuFfnLayouts, MixedTypesBiasesAndSwigluOai) {
  struct layout {
    const char* what;
    moeroute::ffn_layer shape;
  } cases[] = {
      {"q4_k/q4_k/q6_k", {5, 256, 256, weight_type::q4_k, weight_type::q4_k, weight_type::q6_k}},
      {"q5_k/f16/q8_0", {5, 256, 256, weight_type::q5_k, weight_type::f16, weight_type::q8_0}},
      {"mxfp4 + biases, swiglu_oai",
       {5, 64, 96, weight_type::mxfp4, weight_type::mxfp4, weight_type::mxfp4, true, moeroute::ffn_activation::swiglu_oai}},
      {"f32 + biases, swiglu", {5, 64, 32, weight_type::f32, weight_type::f32, weight_type::f32, true}},
  };
  for (const auto& c : cases) {
    ffn_test::problem p;
    p.shape = c.shape;
    ffn_test::random_weights(p, 41);
    ffn_test::random_x(p, 7, 42);
    p.routing = ffn_test::random_routing(7, 5, 3, 43);
    EXPECT_LE(ffn_test::nmse(run_cpu(p), ffn_test::reference(p)), 1e-10) << c.what;
  }
}

TEST(CpuFfnAdversarial, AllToOneExpertEmptyTokensVariableK) {
  ffn_test::problem p;
  p.shape = {4, 32, 64, weight_type::f32};
  ffn_test::random_weights(p, 21);
  ffn_test::random_x(p, 5, 22);
  p.routing.num_tokens = 5;
  p.routing.num_experts = 4;
  // token 0: experts 2; token 1: none (all zero-gated); token 2: 2, 0, 3; token 3: 2; token 4: 2, 1.
  p.routing.ids = {2, 2, 0, 3, 2, 2, 1};
  p.routing.weights = {1.0f, 0.5f, 0.3f, 0.2f, 0.9f, 0.7f, 0.3f};
  p.routing.offsets = {0, 1, 1, 4, 5, 7};
  const auto y = run_cpu(p);
  const auto ref = ffn_test::reference(p);
  EXPECT_LE(ffn_test::nmse(y, ref), 1e-10);
  for (int h = 0; h < 32; ++h) EXPECT_EQ(y[32 + static_cast<std::size_t>(h)], 0.0f) << "empty token must give 0";
}

TEST(CpuFfnAdversarial, NonResidentExpertAndBadIdAreRejected) {
  ffn_test::problem p;
  p.shape = {4, 32, 32, weight_type::f32};
  ffn_test::random_weights(p, 31);
  ffn_test::random_x(p, 2, 32);
  p.routing = ffn_test::random_routing(2, 4, 2, 33);
  moeroute::cpu_ffn op(p.shape, 2);
  op.upload_expert(0, p.blobs[0].data(), p.blobs[0].size());
  std::vector<std::int32_t> table{0, -1, -1, -1};
  op.set_slot_table(table.data(), 4);
  std::vector<float> y(64);
  moeroute::ffn_args a{p.routing.view(), p.x.data(), y.data()};
  EXPECT_NE(op.can_implement(a).find("not resident"), std::string::npos);
  std::vector<float> ws(op.workspace_size(a) / 4 + 1);
  EXPECT_THROW(op.initialize(a, ws.data()), moeroute::error);
  EXPECT_THROW(op.upload_expert(0, p.blobs[0].data(), 7), moeroute::error);
  EXPECT_THROW(op.upload_expert(2, p.blobs[0].data(), p.blobs[0].size()), moeroute::error);
}

#endif
