// Weight formats (weights/types.hpp, dequant.hpp, layer.hpp): sizes from ggml's block definitions,
// dequantize_row against ggml's own decoding of the golden models and against hand-built blocks,
// the reference quantizer's round trip, and the expert blob layout.
#include "golden_support.hpp"

#include <moeroute/io/gguf.hpp>
#include <moeroute/weights/dequant.hpp>
#include <moeroute/weights/layer.hpp>
#include <moeroute/weights/types.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

using moeroute::weight_type;

TEST(WeightTypes, IdsNamesAndSizesAreGgmls) {
  // ggml id, name, values per block, bytes per block (ggml-common.h's static_asserts).
  const struct {
    std::uint32_t id;
    const char* name;
    std::size_t elems, bytes;
  } want[] = {{0, "f32", 1, 4},         {1, "f16", 1, 2},         {2, "q4_0", 32, 18},   {3, "q4_1", 32, 20},
              {6, "q5_0", 32, 22},      {7, "q5_1", 32, 24},      {8, "q8_0", 32, 34},   {10, "q2_k", 256, 84},
              {11, "q3_k", 256, 110},   {12, "q4_k", 256, 144},   {13, "q5_k", 256, 176}, {14, "q6_k", 256, 210},
              {20, "iq4_nl", 32, 18},   {23, "iq4_xs", 256, 136}, {30, "bf16", 1, 2},    {39, "mxfp4", 32, 17}};
  ASSERT_EQ(std::size(want), std::size(moeroute::all_weight_types));
  for (const auto& w : want) {
    weight_type t{};
    ASSERT_TRUE(moeroute::weight_type_from_ggml(w.id, t)) << w.name;
    EXPECT_EQ(static_cast<std::uint32_t>(t), w.id);
    EXPECT_STREQ(moeroute::weight_type_name(t), w.name);
    weight_type by_name{};
    ASSERT_TRUE(moeroute::weight_type_from_name(w.name, by_name));
    EXPECT_EQ(by_name, t);
    EXPECT_EQ(moeroute::block_elems(t), w.elems) << w.name;
    EXPECT_EQ(moeroute::block_bytes(t), w.bytes) << w.name;
    EXPECT_EQ(moeroute::row_bytes(t, 2048), 2048 / w.elems * w.bytes) << w.name;
  }
  // Q8_1, Q8_K, IQ2_XXS, IQ1_S, TQ1_0, I32, an unknown id.
  for (std::uint32_t id : {9u, 15u, 16u, 19u, 34u, 26u, 1000u}) {
    weight_type t{};
    EXPECT_FALSE(moeroute::weight_type_from_ggml(id, t)) << id;
  }
  weight_type t{};
  EXPECT_FALSE(moeroute::weight_type_from_name("Q4_K", t));
  EXPECT_FALSE(moeroute::weight_type_from_name("q4", t));
}

// Each golden model's deq_rows: the first 4 rows of expert 0 of gate, up and down as ggml's
// to_float decodes them. dequantize_row must reproduce them bit for bit.
TEST(Dequantize, MatchesGgmlOnEveryGoldenModel) {
  for (const auto& v : golden::kVariants) {
    SCOPED_TRACE(golden::stem(v));
    const auto file = moeroute::gguf_file::open(golden::path(std::string(v.name) + ".gguf"));
    const golden::array deq = golden::load(golden::stem(v) + ".deq_rows.npy");
    ASSERT_EQ(deq.shape, (std::vector<std::size_t>{3, 4, 256}));
    const std::vector<float> want = deq.f32();
    const std::string blk = "blk." + std::to_string(v.block) + ".";
    const auto* fused = file.find_tensor(blk + "ffn_gate_up_exps.weight");
    for (int part = 0; part < 3; ++part) {
      const moeroute::gguf_tensor_info* t = nullptr;
      std::size_t first_row = 0;
      if (fused != nullptr && part < 2) {
        t = fused;
        first_row = part == 1 ? static_cast<std::size_t>(fused->ne[1] / 2) : 0;  // F gate rows, then F up rows
      } else {
        const char* names[] = {"ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight"};
        t = file.find_tensor(blk + names[part]);
      }
      ASSERT_NE(t, nullptr) << part;
      weight_type wt{};
      ASSERT_TRUE(moeroute::weight_type_from_ggml(t->type, wt)) << t->type_name;
      const auto n = static_cast<std::size_t>(t->ne[0]);
      ASSERT_EQ(n, 256u);
      const std::size_t rb = moeroute::row_bytes(wt, n);
      std::vector<unsigned char> raw(4 * rb);
      file.read_tensor_range(*t, first_row * rb, raw.size(), raw.data());
      std::vector<float> got(4 * n);
      moeroute::dequantize_row(wt, raw.data(), got.data(), 4 * n);  // 4 rows back to back
      for (std::size_t i = 0; i < got.size(); ++i) {
        const float w = want[static_cast<std::size_t>(part) * 4 * n + i];
        ASSERT_EQ(got[i], w) << t->name << " (" << moeroute::weight_type_name(wt) << ") row " << first_row + i / n
                             << " column " << i % n;
      }
    }
  }
}

namespace {
void put_u16(unsigned char* p, unsigned v) {
  p[0] = static_cast<unsigned char>(v & 0xFF);
  p[1] = static_cast<unsigned char>(v >> 8);
}
std::vector<float> decode(weight_type t, const unsigned char* b, std::size_t n) {
  std::vector<float> y(n);
  moeroute::dequantize_row(t, b, y.data(), n);
  return y;
}
}  // namespace

// The types without golden models, one hand-built block each. qs[j] = j | (15 - j) << 4: value j
// has nibble j, value j + 16 nibble 15 - j. qh = 0xAAAA5555: bit j is set for even j < 16 and for
// odd j >= 16.
TEST(Dequantize, HandBuiltQ4_1Q5_0Q5_1Iq4NlMxfp4Blocks) {
  unsigned char qs[16];
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<unsigned char>(j | ((15 - j) << 4));
  const unsigned char qh[4] = {0x55, 0x55, 0xAA, 0xAA};

  unsigned char q4_1[20];  // d = 0.5 (f16 0x3800), m = -2 (0xC000): value = 0.5 q - 2
  put_u16(q4_1, 0x3800);
  put_u16(q4_1 + 2, 0xC000);
  std::memcpy(q4_1 + 4, qs, 16);
  auto y = decode(weight_type::q4_1, q4_1, 32);
  EXPECT_EQ(y[0], -2.0f);
  EXPECT_EQ(y[5], 0.5f);     // 0.5 * 5 - 2
  EXPECT_EQ(y[15], 5.5f);    // 0.5 * 15 - 2
  EXPECT_EQ(y[16], 5.5f);    // nibble 15
  EXPECT_EQ(y[31], -2.0f);   // nibble 0

  unsigned char q5_0[22];  // d = 0.25 (0x3400): value = 0.25 (q5 - 16)
  put_u16(q5_0, 0x3400);
  std::memcpy(q5_0 + 2, qh, 4);
  std::memcpy(q5_0 + 6, qs, 16);
  y = decode(weight_type::q5_0, q5_0, 32);
  EXPECT_EQ(y[0], 0.0f);     // nibble 0 + 16 (bit 0 set) - 16
  EXPECT_EQ(y[1], -3.75f);   // nibble 1, bit 1 clear: (1 - 16) / 4
  EXPECT_EQ(y[14], 3.5f);    // nibble 14 + 16 - 16 = 14
  EXPECT_EQ(y[16], -0.25f);  // nibble 15, bit 16 clear: (15 - 16) / 4
  EXPECT_EQ(y[17], 3.5f);    // nibble 14, bit 17 set: (30 - 16) / 4
  EXPECT_EQ(y[31], 0.0f);    // nibble 0, bit 31 set

  unsigned char q5_1[24];  // d = 0.5, m = 1 (0x3C00): value = 0.5 q5 + 1
  put_u16(q5_1, 0x3800);
  put_u16(q5_1 + 2, 0x3C00);
  std::memcpy(q5_1 + 4, qh, 4);
  std::memcpy(q5_1 + 8, qs, 16);
  y = decode(weight_type::q5_1, q5_1, 32);
  EXPECT_EQ(y[0], 9.0f);    // 16 * 0.5 + 1
  EXPECT_EQ(y[1], 1.5f);    // 1 * 0.5 + 1
  EXPECT_EQ(y[16], 8.5f);   // 15 * 0.5 + 1
  EXPECT_EQ(y[17], 16.0f);  // 30 * 0.5 + 1

  unsigned char iq4_nl[18];  // d = 0.5: value = 0.5 * kvalues_iq4nl[nibble]
  put_u16(iq4_nl, 0x3800);
  std::memcpy(iq4_nl + 2, qs, 16);
  y = decode(weight_type::iq4_nl, iq4_nl, 32);
  EXPECT_EQ(y[0], -63.5f);   // -127 / 2
  EXPECT_EQ(y[8], 0.5f);     // 1 / 2
  EXPECT_EQ(y[15], 56.5f);   // 113 / 2
  EXPECT_EQ(y[16], 56.5f);   // nibble 15
  EXPECT_EQ(y[24], -5.0f);   // nibble 7: -10 / 2

  unsigned char mxfp4[17];  // e = 127: scale 2^(127-127) = 1 on E2M1 (table doubled, scale halved)
  mxfp4[0] = 127;
  std::memcpy(mxfp4 + 1, qs, 16);
  y = decode(weight_type::mxfp4, mxfp4, 32);
  EXPECT_EQ(y[1], 0.5f);    // E2M1 code 1 = 0.5
  EXPECT_EQ(y[7], 6.0f);    // code 7 = 6
  EXPECT_EQ(y[8], -0.0f);   // code 8 = -0
  EXPECT_EQ(y[16], -6.0f);  // code 15 = -6
  mxfp4[0] = 0;             // 2^-127: a float32 subnormal
  y = decode(weight_type::mxfp4, mxfp4, 32);
  EXPECT_EQ(y[7], std::ldexp(6.0f, -127));
}

// encode_row writes blocks that decode near the input, for every type.
TEST(Encode, RoundTripOfEveryType) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(512);
  for (auto& v : x) v = nd(rng);
  x[3] = 0.0f;
  for (std::size_t i = 256; i < 288; ++i) x[i] = 0.0f;  // an all-zero block must decode to zeros
  for (weight_type t : moeroute::all_weight_types) {
    SCOPED_TRACE(moeroute::weight_type_name(t));
    std::vector<unsigned char> b(moeroute::row_bytes(t, x.size()));
    moeroute::encode_row(t, x.data(), x.size(), b.data());
    const auto y = decode(t, b.data(), x.size());
    // NMSE of an N(0, 1) row: 2-bit ~1e-1, 3-bit ~3e-2, 4-bit ~1e-2, 5-bit ~3e-3, 8-bit ~1e-4.
    const double bound = t == weight_type::q2_k ? 0.2
                         : t == weight_type::q3_k ? 0.06
                         : (t == weight_type::f32 ? 0 : (t == weight_type::f16 || t == weight_type::bf16 ? 1e-5 : 0.03));
    EXPECT_LE(golden::nmse(y, x), bound);
    for (std::size_t i = 256; i < 288; ++i) EXPECT_EQ(y[i], 0.0f) << i;
  }
}

TEST(Layer, BlobLayoutOffsetsAndBiases) {
  const moeroute::ffn_layer s(4, 256, 512, weight_type::q4_k, weight_type::q4_k, weight_type::q6_k);
  EXPECT_FALSE(s.single_type());
  EXPECT_EQ(s.gate_bytes(), 512u * 144u);  // F rows of one q4_k block
  EXPECT_EQ(s.up_offset(), 512u * 144u);
  EXPECT_EQ(s.down_offset(), 2u * 512u * 144u);
  EXPECT_EQ(s.down_bytes(), 256u * 2u * 210u);  // H rows of two q6_k blocks
  EXPECT_EQ(s.bias_bytes(), 0u);
  EXPECT_EQ(s.expert_bytes(), 2u * 512u * 144u + 256u * 420u);

  // Biases start at the end of the down rows rounded up to 16 bytes: H = 1, F = 32, gate/up f32
  // (128 + 128 bytes), down one mxfp4 row of 17 bytes end at 273 -> 288.
  const moeroute::ffn_layer o(2, 1, 32, weight_type::f32, weight_type::f32, weight_type::mxfp4, true,
                              moeroute::ffn_activation::swiglu_oai);
  EXPECT_EQ(o.down_offset() + o.down_bytes(), 273u);
  EXPECT_EQ(o.bias_offset(), 288u);
  EXPECT_EQ(o.bias_bytes(), (2u * 32u + 1u) * 4u);
  EXPECT_EQ(o.expert_bytes(), 288u + 260u);

  // encode_expert: rows where the offsets say, biases as float32 after them.
  std::vector<float> g(32 * 64, 0.25f), u(32 * 64, -0.5f), d(64 * 32, 1.0f), bg(32, 1.5f), bu(32, -2.0f), bd(64, 3.0f);
  const moeroute::ffn_layer f(1, 64, 32, weight_type::f32, weight_type::f16, weight_type::f32, true);
  std::vector<unsigned char> blob(f.expert_bytes(), 0xEE);
  moeroute::encode_expert(f, g.data(), u.data(), d.data(), blob.data(), bg.data(), bu.data(), bd.data());
  float v = 0;
  std::memcpy(&v, blob.data() + f.gate_offset() + 4 * 5, 4);
  EXPECT_EQ(v, 0.25f);
  EXPECT_EQ(blob[f.up_offset()] | blob[f.up_offset() + 1] << 8, 0xB800);  // f16 -0.5
  std::memcpy(&v, blob.data() + f.down_offset(), 4);
  EXPECT_EQ(v, 1.0f);
  std::memcpy(&v, blob.data() + f.bias_offset(), 4);
  EXPECT_EQ(v, 1.5f);
  std::memcpy(&v, blob.data() + f.bias_offset() + 32 * 4, 4);
  EXPECT_EQ(v, -2.0f);
  std::memcpy(&v, blob.data() + f.bias_offset() + 64 * 4 + 63 * 4, 4);
  EXPECT_EQ(v, 3.0f);
  EXPECT_EQ(f.expert_bytes(), f.bias_offset() + (64u + 64u) * 4u);
}

TEST(Layer, Activations) {
  // silu(2) * 3 = 2 / (1 + e^-2) * 3
  EXPECT_FLOAT_EQ(moeroute::ffn_activate(moeroute::ffn_activation::swiglu, 2.0f, 3.0f), 6.0f / (1.0f + std::exp(-2.0f)));
  // swiglu_oai: g clamps at 7 from above only; u clamps to [-7, 7] and gets + 1.
  const auto oai = moeroute::ffn_activation::swiglu_oai;
  EXPECT_FLOAT_EQ(moeroute::ffn_activate(oai, 10.0f, 20.0f), 7.0f / (1.0f + std::exp(-1.702f * 7.0f)) * 8.0f);
  EXPECT_FLOAT_EQ(moeroute::ffn_activate(oai, -10.0f, -20.0f), -10.0f / (1.0f + std::exp(17.02f)) * -6.0f);
  EXPECT_FLOAT_EQ(moeroute::ffn_activate(oai, 1.0f, 0.5f), 1.0f / (1.0f + std::exp(-1.702f)) * 1.5f);
}
