// GGUF reader: every KV type, nested arrays, tensor infos and byte sizes, alignment, tensor reads,
// and every malformed-input kind (each must throw moeroute::error naming the problem).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "expect_error.hpp"
#include "fuzz/gguf_writer.hpp"
#include "golden_support.hpp"
#include "moeroute/io/gguf.hpp"
#include "moeroute/io/gguf_experts.hpp"

using namespace moeroute;
using namespace moeroute_test;

namespace {

std::string u32b(std::uint32_t v) {
  std::string s;
  put_u32(s, v);
  return s;
}
std::string u64b(std::uint64_t v) {
  std::string s;
  put_u64(s, v);
  return s;
}

// Expects parse to throw moeroute::error whose message contains `needle`.
void expect_error(const std::string& bytes, const std::string& needle) {
  expect_error_message([&] { gguf_file::parse(bytes, "x.gguf"); }, needle, "x.gguf");
}

gguf_writer all_types_file() {
  gguf_writer w;
  w.kv_raw("u8", T_U8, std::string(1, '\xfe'));
  w.kv_raw("i8", T_I8, std::string(1, '\xfe'));
  w.kv_raw("u16", T_U16, std::string("\x34\x12", 2));
  w.kv_raw("i16", T_I16, std::string("\xff\xff", 2));
  w.kv_u32("u32", 4000000000u);
  w.kv_raw("i32", T_I32, u32b(static_cast<std::uint32_t>(-7)));
  std::string f;
  put_f32(f, 1.5f);
  w.kv_raw("f32", T_F32, f);
  w.kv_raw("bool", T_BOOL, std::string(1, '\x01'));
  w.kv_string("str", "hello");
  w.kv_raw("u64", T_U64, u64b(0xfedcba9876543210ull));
  w.kv_raw("i64", T_I64, u64b(static_cast<std::uint64_t>(-123456789012LL)));
  double d = -2.25;
  std::uint64_t db;
  std::memcpy(&db, &d, 8);
  w.kv_raw("f64", T_F64, u64b(db));
  // Array of u32 [1, 2, 3].
  w.kv_raw("arr_u32", T_ARR, u32b(T_U32) + u64b(3) + u32b(1) + u32b(2) + u32b(3));
  w.kv_string_array("arr_str", {"a", "", "ccc"});
  // Nested: [[1, 2], [], [7]] of int16.
  std::string nested = u32b(T_ARR) + u64b(3);
  nested += u32b(T_I16) + u64b(2) + std::string("\x01\x00\x02\x00", 4);
  nested += u32b(T_I16) + u64b(0);
  nested += u32b(T_I16) + u64b(1) + std::string("\x07\x00", 2);
  w.kv_raw("nested", T_ARR, nested);
  // Tensors: F32 [3, 2], F16 [4], Q4_K [512, 3] (data content irrelevant, size matters).
  w.tensor_f32("t.f32", {3, 2}, {1, 2, 3, 4, 5, -6.5f});
  w.tensor_raw("t.f16", 1, {4}, std::string("\x00\x3c\x00\xc0\x00\x00\x00\x7c", 8));  // 1, -2, 0, inf
  w.tensor_raw("t.q4k", 12, {512, 3}, std::string(2 * 3 * 144, '\x11'));
  return w;
}

}  // namespace

TEST(GgufTypes, BlockLayoutsMatchGgml) {
  // (id, elements per block, bytes per block) from the ggml block structs.
  const struct { std::uint32_t id; std::uint32_t bs, ts; } expect[] = {
      {0, 1, 4},      {1, 1, 2},      {2, 32, 18},    {3, 32, 20},    {6, 32, 22},
      {7, 32, 24},    {8, 32, 34},    {10, 256, 84},  {11, 256, 110}, {12, 256, 144},
      {13, 256, 176}, {14, 256, 210}, {15, 256, 292}, {16, 256, 66},  {20, 32, 18},
      {23, 256, 136}, {29, 256, 56},  {30, 1, 2},     {39, 32, 17}};
  for (const auto& e : expect) {
    const ggml_type_traits* t = find_ggml_type(e.id);
    ASSERT_NE(t, nullptr) << e.id;
    EXPECT_EQ(t->block_size, e.bs) << t->name;
    EXPECT_EQ(t->type_size, e.ts) << t->name;
  }
  EXPECT_EQ(find_ggml_type(4), nullptr);  // removed Q4_2
  EXPECT_EQ(find_ggml_type(1000), nullptr);
}

TEST(Gguf, ReadsEveryKvTypeAndNestedArrays) {
  const gguf_file g = gguf_file::parse(all_types_file().bytes(), "x.gguf");
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.metadata().size(), 15u);
  EXPECT_EQ(g.get_int("u8"), 254);
  EXPECT_EQ(g.get_int("i8"), -2);
  EXPECT_EQ(g.get_int("u16"), 0x1234);
  EXPECT_EQ(g.get_int("i16"), -1);
  EXPECT_EQ(g.get_int("u32"), 4000000000LL);
  EXPECT_EQ(g.get_int("i32"), -7);
  EXPECT_EQ(g.get_double("f32"), 1.5);
  EXPECT_TRUE(g.at("bool").as_bool());
  EXPECT_EQ(g.get_string("str"), "hello");
  EXPECT_EQ(g.at("u64").as_uint(), 0xfedcba9876543210ull);
  EXPECT_THROW(g.get_int("u64"), moeroute::error);  // above INT64_MAX
  EXPECT_EQ(g.get_int("i64"), -123456789012LL);
  EXPECT_EQ(g.get_double("f64"), -2.25);
  const gguf_value& a = g.at("arr_u32");
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a.array_type(), gguf_type::uint32);
  EXPECT_EQ(a.at(2).as_int(), 3);
  EXPECT_EQ(g.at("arr_str").as_string_array(), (std::vector<std::string>{"a", "", "ccc"}));
  const gguf_value& n = g.at("nested");
  ASSERT_EQ(n.size(), 3u);
  EXPECT_EQ(n.at(0).size(), 2u);
  EXPECT_EQ(n.at(0).at(1).as_int(), 2);
  EXPECT_EQ(n.at(1).size(), 0u);
  EXPECT_EQ(n.at(2).at(0).as_int(), 7);
  EXPECT_THROW(n.at(3), moeroute::error);
  EXPECT_THROW(g.get_string("u8"), moeroute::error);
  EXPECT_THROW(g.at("missing"), moeroute::error);
}

TEST(Gguf, TensorInfosSizesAndData) {
  const std::string bytes = all_types_file().bytes();
  const gguf_file g = gguf_file::parse(bytes, "x.gguf");
  ASSERT_EQ(g.tensors().size(), 3u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(g.data_offset() % 32, 0u);
  const auto& q = g.tensor("t.q4k");
  EXPECT_STREQ(q.type_name, "Q4_K");
  EXPECT_EQ(q.ne, (std::vector<std::int64_t>{512, 3}));
  EXPECT_EQ(q.n_elements, 1536);
  EXPECT_EQ(q.nbytes, 864u);  // 6 blocks of 256 x 144 bytes
  EXPECT_EQ(g.tensor("t.f32").nbytes, 24u);
  EXPECT_EQ(g.tensor("t.f16").offset, 32u);  // 24 bytes of F32 padded to 32
  EXPECT_EQ(g.read_tensor_f32("t.f32"), (std::vector<float>{1, 2, 3, 4, 5, -6.5f}));
  const auto h = g.read_tensor_f32("t.f16");
  ASSERT_EQ(h.size(), 4u);
  EXPECT_EQ(h[0], 1.0f);
  EXPECT_EQ(h[1], -2.0f);
  EXPECT_EQ(h[2], 0.0f);
  EXPECT_TRUE(std::isinf(h[3]));
  try {
    g.read_tensor_f32("t.q4k");
    FAIL();
  } catch (const moeroute::error& e) {
    EXPECT_EQ(e.code(), errc::unsupported);
    EXPECT_NE(e.message().find("t.q4k"), std::string::npos);
  }
  EXPECT_EQ(g.read_tensor_bytes("t.q4k"), std::vector<unsigned char>(864, 0x11));
}

TEST(Gguf, OpensFromDiskAndReadsOnlyTheAskedTensor) {
  const std::string path = std::string(MOEROUTE_TEST_TMP_DIR) + "/gguf_test_disk.gguf";
  all_types_file().write(path);
  const gguf_file g = gguf_file::open(path);
  EXPECT_EQ(g.get_string("str"), "hello");
  EXPECT_EQ(g.read_tensor_f32("t.f32")[5], -6.5f);
  EXPECT_THROW(gguf_file::open(path + ".missing"), moeroute::error);
}

TEST(Gguf, VersionTwoAndCustomAlignment) {
  gguf_writer w;
  w.version = 2;
  w.kv_u32("general.alignment", 64);
  w.tensor_f32("a", {3}, {1, 2, 3});
  w.tensor_f32("b", {2}, {4, 5});
  const gguf_file g = gguf_file::parse(w.bytes(64), "x.gguf");
  EXPECT_EQ(g.version(), 2u);
  EXPECT_EQ(g.alignment(), 64u);
  EXPECT_EQ(g.data_offset() % 64, 0u);
  EXPECT_EQ(g.tensor("b").offset, 64u);
  EXPECT_EQ(g.read_tensor_f32("b"), (std::vector<float>{4, 5}));
}

TEST(GgufMalformed, EveryTruncationIsAnError) {
  const std::string full = all_types_file().bytes();
  for (std::size_t n = 0; n < full.size(); ++n) {
    try {
      gguf_file::parse(full.substr(0, n), "x.gguf");
      ADD_FAILURE() << "prefix of " << n << " bytes parsed";
    } catch (const moeroute::error& e) {
      ASSERT_EQ(e.message().rfind("x.gguf", 0), 0u);
    }
  }
}

TEST(GgufMalformed, HeaderFields) {
  expect_error("GGU", "too short");
  expect_error("GGML" + u32b(3) + u64b(0) + u64b(0), "bad magic");
  expect_error("GGUF" + u32b(1) + u64b(0) + u64b(0), "version 1");
  expect_error("GGUF" + std::string("\0\0\0\3", 4) + u64b(0) + u64b(0), "big-endian");
  expect_error("GGUF" + u32b(3) + u64b(0) + u64b(1ull << 60), "metadata KV count");
  expect_error("GGUF" + u32b(3) + u64b(1ull << 60) + u64b(0), "tensor count");
}

TEST(GgufMalformed, KvFields) {
  const std::string head = "GGUF" + u32b(3) + u64b(0) + u64b(1);
  expect_error(head + u64b(1ull << 62) + std::string(16, 'k'), "key length");
  expect_error(head + u64b(0) + u32b(T_U8) + "x", "KV 0 key is empty");
  expect_error(head + u64b(1) + "k" + u32b(13) + "x", "unknown value type 13");
  expect_error(head + u64b(1) + "k" + u32b(T_STR) + u64b(1ull << 40), "metadata 'k' length");
  expect_error(head + u64b(1) + "k" + u32b(T_ARR) + u32b(T_U32) + u64b(1ull << 61),
               "element count");
  expect_error(head + u64b(1) + "k" + u32b(T_ARR) + u32b(99) + u64b(0), "unknown element type");
  expect_error(head + u64b(1) + "k" + u32b(T_ARR) + u32b(T_BOOL) + u64b(1) + "\x02",
               "not a valid bool");
  std::string deep = head + u64b(1) + "k" + u32b(T_ARR);
  for (int i = 0; i < 20; ++i) deep += u32b(T_ARR) + u64b(1);
  deep += u32b(T_U8) + u64b(0);
  expect_error(deep, "deeper than");
  std::string wide = head + u64b(1) + "k" + u32b(T_ARR) + u32b(T_ARR) + u64b((1u << 20) + 1);
  for (int i = 0; i <= (1 << 20); ++i) wide += u32b(T_U8) + u64b(0);
  expect_error(wide, "more than the limit of 1048576");
  gguf_writer dup;
  dup.kv_u32("k", 1);
  dup.kv_u32("k", 2);
  expect_error(dup.bytes(), "duplicate metadata key 'k'");
  gguf_writer al;
  al.kv_u32("general.alignment", 48);
  expect_error(al.bytes(), "general.alignment");
  gguf_writer al2;
  al2.kv_string("general.alignment", "32");
  expect_error(al2.bytes(), "general.alignment");
}

TEST(GgufMalformed, TensorFields) {
  auto one = [](const std::string& name, std::uint32_t nd, std::vector<std::uint64_t> ne,
                std::uint32_t type, std::uint64_t offset) {
    std::string s = "GGUF" + u32b(3) + u64b(1) + u64b(0);
    put_str(s, name);
    s += u32b(nd);
    for (auto n : ne) s += u64b(n);
    s += u32b(type) + u64b(offset);
    s.append((32 - s.size() % 32) % 32, '\0');
    s.append(64, '\0');
    return s;
  };
  EXPECT_NO_THROW(gguf_file::parse(one("w", 1, {16}, 0, 0), "x.gguf"));
  expect_error(one("w", 0, {}, 0, 0), "tensor 'w' n_dims = 0");
  expect_error(one("w", 5, {1, 1, 1, 1, 1}, 0, 0), "tensor 'w' n_dims = 5");
  expect_error(one("w", 2, {1ull << 40, 1ull << 40}, 0, 0), "overflows");
  expect_error(one("w", 1, {1ull << 63}, 0, 0), "out of range");
  expect_error(one("w", 1, {16}, 31, 0), "tensor 'w' has unknown ggml type 31");
  expect_error(one("w", 1, {16}, 2, 0), "not a multiple of the Q4_0 block size 32");
  expect_error(one("w", 1, {16}, 0, 8), "not a multiple of the alignment");
  expect_error(one("w", 1, {17}, 0, 0), "runs past the end");
  expect_error(one("w", 1, {8}, 0, 1ull << 62), "runs past the end");
  gguf_writer dup;
  dup.tensor_f32("t", {1}, {1});
  dup.tensor_f32("t", {1}, {2});
  expect_error(dup.bytes(), "duplicate tensor name 't'");
}

// ---- MoE expert tensors (gguf_experts.hpp) ----

namespace {

// Bytes of one expert slice, in a pattern unique to (block, proj, expert, position).
std::string pattern_slice(int block, int proj, int e, std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i)
    s[i] = static_cast<char>((block * 31 + proj * 7 + e * 13 + static_cast<int>(i) * 5 + static_cast<int>(i / 251)) & 0xff);
  return s;
}

struct type_case {
  std::uint32_t ggml;
  weight_type type;
  std::size_t gate_slice, down_slice;  // hand-computed for H = 64, F = 32
};

// H = 64, F = 32: gate/up slices are 32 rows of 64 values, down slices 64 rows of 32 values.
const type_case kTypes[] = {
    {0, weight_type::f32, 32 * 64 * 4, 64 * 32 * 4},
    {1, weight_type::f16, 32 * 64 * 2, 64 * 32 * 2},
    {8, weight_type::q8_0, 32 * 2 * 34, 64 * 1 * 34},
    {2, weight_type::q4_0, 32 * 2 * 18, 64 * 1 * 18},
};

gguf_writer pattern_model(const type_case& tc, std::uint64_t E = 3) {
  gguf_writer w = make_moe_model({1, 3}, E, 64, 32, tc.ggml, [&](int b, int p, int e) {
    return pattern_slice(b, p, e, p == 2 ? tc.down_slice : tc.gate_slice);
  });
  w.tensor_f32("blk.0.ffn_gate.weight", {64, 32}, std::vector<float>(64 * 32, 0.5f));  // a dense layer
  return w;
}

void expect_experts_error(const gguf_writer& w, const std::string& needle) {
  expect_error_message([&] { gguf_expert_weights g(gguf_file::parse(w.bytes(), "m.gguf")); }, needle, "m.gguf");
}

}  // namespace

TEST(GgufExperts, BlobIsTheThreeStoredSlicesOfEachType) {
  for (const auto& tc : kTypes) {
    SCOPED_TRACE(weight_type_name(tc.type));
    gguf_expert_weights g(gguf_file::parse(pattern_model(tc).bytes(), "m.gguf"));
    EXPECT_EQ(g.shape().num_experts, 3);
    EXPECT_EQ(g.shape().hidden, 64);
    EXPECT_EQ(g.shape().ffn, 32);
    EXPECT_EQ(g.shape().gate_type, tc.type);
    EXPECT_EQ(g.shape().expert_bytes(), 2 * tc.gate_slice + tc.down_slice);
    ASSERT_EQ(g.num_layers(), 2);  // blk.0 is dense
    EXPECT_EQ(g.layer(0).block, 1);
    EXPECT_EQ(g.layer(1).block, 3);
    EXPECT_EQ(g.architecture(), "qwen3moe");
    EXPECT_EQ(g.experts_used(), 2);
    std::vector<unsigned char> blob(g.shape().expert_bytes()), all(3 * g.shape().expert_bytes());
    for (int l = 0; l < 2; ++l) {
      const int b = l == 0 ? 1 : 3;
      std::string want_layer;
      for (int e = 0; e < 3; ++e) {
        g.read_expert(l, e, blob.data());
        const std::string want = pattern_slice(b, 0, e, tc.gate_slice) + pattern_slice(b, 1, e, tc.gate_slice) +
                                 pattern_slice(b, 2, e, tc.down_slice);
        ASSERT_EQ(std::string(blob.begin(), blob.end()), want) << "layer " << l << " expert " << e;
        want_layer += want;
      }
      g.read_layer(l, all.data());  // every expert's blob, side by side
      ASSERT_EQ(std::string(all.begin(), all.end()), want_layer) << "layer " << l;
    }
    EXPECT_THROW(g.read_expert(0, 3, blob.data()), moeroute::error);
    EXPECT_THROW(g.read_expert(2, 0, blob.data()), moeroute::error);
    EXPECT_TRUE(g.router_weights(0).empty());
  }
}

TEST(GgufExperts, ReadsFromDiskAndRouterWeights) {
  gguf_writer w = pattern_model(kTypes[3]);
  std::vector<float> r(64 * 3);
  for (std::size_t i = 0; i < r.size(); ++i) r[i] = static_cast<float>(i / 64) + static_cast<float>(i % 64) / 128.0f;
  w.tensor_f32("blk.3.ffn_gate_inp.weight", {64, 3}, r);
  const std::string path = std::string(MOEROUTE_TEST_TMP_DIR) + "/gguf_experts_disk.gguf";
  w.write(path);
  const auto g = gguf_expert_weights::open(path);
  std::vector<unsigned char> blob(g.shape().expert_bytes());
  g.read_expert(1, 2, blob.data());
  const std::string want = pattern_slice(3, 0, 2, kTypes[3].gate_slice) + pattern_slice(3, 1, 2, kTypes[3].gate_slice) +
                           pattern_slice(3, 2, 2, kTypes[3].down_slice);
  EXPECT_EQ(std::string(blob.begin(), blob.end()), want);
  EXPECT_TRUE(g.router_weights(0).empty());  // blk.1 has no router tensor
  const std::vector<float> got = g.router_weights(1);
  ASSERT_EQ(got.size(), 64u * 3u);
  EXPECT_FLOAT_EQ(got[2 * 64 + 5], 2.0f + 5.0f / 128.0f);  // row e = 2, column h = 5
}

TEST(GgufExperts, RejectsFilesWithoutUsableExpertTensors) {
  gguf_writer dense;
  dense.kv_string("general.architecture", "llama");
  dense.tensor_f32("token_embd.weight", {4, 2}, std::vector<float>(8, 1.0f));
  dense.tensor_f32("blk.0.ffn_gate.weight", {4, 2}, std::vector<float>(8, 1.0f));
  expect_experts_error(dense, "no MoE expert tensors");

  auto slice = [](int b, int p, int e) { return pattern_slice(b, p, e, p == 2 ? 64 * 34 : 32 * 2 * 34); };
  gguf_writer missing;
  for (const auto& t : make_moe_model({1, 3}, 3, 64, 32, 8, slice).tensors)
    if (t.name != "blk.3.ffn_down_exps.weight") missing.tensors.push_back(t);
  expect_experts_error(missing, "no 'blk.3.ffn_down_exps.weight'");

  gguf_writer short_down = make_moe_model({1}, 3, 64, 32, 8, slice);
  short_down.tensors[2].type = 1;  // down as F16 needs 64 rows of 32 halves = 4096 bytes per expert
  short_down.tensors[2].ne = {32, 64, 2};
  short_down.tensors[2].data = std::string(2 * 64 * 32 * 2, '\0');
  expect_experts_error(short_down, "'blk.1.ffn_down_exps.weight' has dimensions {32, 64, 2}, expected {32, 64, 3}");

  gguf_writer iq2 = make_moe_model({1}, 2, 256, 256, 16, [](int, int, int) { return std::string(256 * 66, '\0'); });
  expect_experts_error(iq2, "'blk.1.ffn_gate_exps.weight' has type IQ2_XXS");

  gguf_writer bad_dims = make_moe_model({1}, 3, 64, 32, 8, slice);
  bad_dims.tensors[1].ne = {64, 64, 3};
  bad_dims.tensors[1].data += bad_dims.tensors[1].data;
  expect_experts_error(bad_dims, "'blk.1.ffn_up_exps.weight' has dimensions {64, 64, 3}, expected {64, 32, 3}");

  gguf_writer flat = make_moe_model({1}, 3, 64, 32, 8, slice);
  flat.tensors[0].ne = {64, 96};
  expect_experts_error(flat, "expected 3");

  gguf_writer other_e = make_moe_model({1}, 3, 64, 32, 8, slice);
  for (const auto& t : make_moe_model({2}, 2, 64, 32, 8, slice).tensors) other_e.tensors.push_back(t);
  expect_experts_error(other_e, "'blk.2.ffn_gate_exps.weight' has dimensions {64, 32, 2}, expected {64, 32, 3}");

  gguf_writer count = make_moe_model({1}, 3, 64, 32, 8, slice, "qwen3moe");
  count.kv_u32("qwen3moe.expert_count", 4);  // a second key of the same name is a parse error; rebuild instead
  gguf_writer count2;
  count2.kv_string("general.architecture", "qwen3moe");
  count2.kv_u32("qwen3moe.expert_count", 4);
  count2.tensors = count.tensors;
  expect_experts_error(count2, "'qwen3moe.expert_count' is 4");

  gguf_writer router = make_moe_model({1}, 3, 64, 32, 8, slice);
  router.tensor_f32("blk.1.ffn_gate_inp.weight", {64, 2}, std::vector<float>(128, 0.0f));
  expect_experts_error(router, "'blk.1.ffn_gate_inp.weight' has dimensions {64, 2}");
}

// ---- layouts of published models: per-tensor types, fused gate/up, biases, routing metadata ----

TEST(GgufExperts, PerTensorTypesAreReadAsStored) {
  // gate/up Q8_0, down F16 (as Q4_K_M-style files mix types): each slice keeps its own size.
  gguf_writer w = make_moe_model({1}, 3, 64, 32, 8, [](int b, int p, int e) {
    return pattern_slice(b, p, e, p == 2 ? 64 * 32 * 2 : 32 * 2 * 34);
  });
  w.tensors[2].type = 1;
  gguf_expert_weights g(gguf_file::parse(w.bytes(), "m.gguf"));
  const ffn_layer& s = g.shape();
  EXPECT_EQ(s.gate_type, weight_type::q8_0);
  EXPECT_EQ(s.up_type, weight_type::q8_0);
  EXPECT_EQ(s.down_type, weight_type::f16);
  EXPECT_FALSE(s.has_bias);
  EXPECT_EQ(s.act, ffn_activation::swiglu);
  ASSERT_EQ(s.expert_bytes(), 2u * 32 * 2 * 34 + 64u * 32 * 2);
  std::vector<unsigned char> blob(s.expert_bytes());
  g.read_expert(0, 2, blob.data());
  EXPECT_EQ(std::string(blob.begin(), blob.end()),
            pattern_slice(1, 0, 2, 32 * 2 * 34) + pattern_slice(1, 1, 2, 32 * 2 * 34) + pattern_slice(1, 2, 2, 64 * 32 * 2));
  // in memory (parse buffer): views of the stored rows
  const auto v = g.expert_slices(0, 2);
  ASSERT_NE(v.gate, nullptr);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(v.down), 64 * 32 * 2), pattern_slice(1, 2, 2, 64 * 32 * 2));
}

// The golden models (tests/data/ggml_golden): each variant's layout as its README describes it.
TEST(GgufExperts, GoldenModelLayouts) {
  const struct {
    const char* file;
    int block;
    weight_type gate, up, down;
    bool fused, bias;
  } cases[] = {
      {"q4_k", 0, weight_type::q4_k, weight_type::q4_k, weight_type::q4_k, false, false},
      {"mixed", 1, weight_type::q4_k, weight_type::q4_k, weight_type::q6_k, false, false},
      {"mixed", 2, weight_type::q5_k, weight_type::q5_k, weight_type::q8_0, false, false},
      {"fused", 0, weight_type::q4_k, weight_type::q4_k, weight_type::q6_k, true, false},
      {"gptoss", 0, weight_type::mxfp4, weight_type::mxfp4, weight_type::mxfp4, false, true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.file) + " blk." + std::to_string(c.block));
    const auto g = gguf_expert_weights::open(golden::path(std::string(c.file) + ".gguf"));
    EXPECT_TRUE(g.file().in_memory());  // mapped
    const int l = g.layer_of_block(c.block);
    ASSERT_GE(l, 0);
    const ffn_layer& s = g.layer_shape(l);
    EXPECT_EQ(s.num_experts, 4);
    EXPECT_EQ(s.hidden, 256);
    EXPECT_EQ(s.ffn, 256);
    EXPECT_EQ(s.gate_type, c.gate);
    EXPECT_EQ(s.up_type, c.up);
    EXPECT_EQ(s.down_type, c.down);
    EXPECT_EQ(g.layer(l).fused, c.fused);
    EXPECT_EQ(s.has_bias, c.bias);
    EXPECT_EQ(s.act, c.bias ? ffn_activation::swiglu_oai : ffn_activation::swiglu);
    EXPECT_TRUE(g.ffn_unsupported().empty());
    EXPECT_EQ(g.experts_used(), 2);
    const gguf_moe_routing& r = g.routing();
    EXPECT_EQ(r.config.top_k, 2);
    EXPECT_EQ(r.config.scoring, scoring_kind::softmax);
    EXPECT_TRUE(r.config.renorm);
    EXPECT_EQ(r.gating, c.bias ? "softmax_weight" : "softmax");
    EXPECT_EQ(r.logit_bias, c.bias);
    EXPECT_EQ(g.router_bias(l).size(), c.bias ? 4u : 0u);
    EXPECT_EQ(g.router_weights(l).size(), 4u * 256u);

    // Blob of expert 3: the stored gate/up/down rows (fused: one slice), then the biases.
    std::vector<unsigned char> blob(s.expert_bytes());
    g.read_expert(l, 3, blob.data());
    const auto& t = g.layer(l);
    const std::string gate_bytes = [&] {
      std::string b(c.fused ? s.gate_bytes() + s.up_bytes() : s.gate_bytes(), '\0');
      g.file().read_tensor_range(*t.gate, 3 * b.size(), b.size(), b.data());
      return b;
    }();
    EXPECT_EQ(std::string(blob.begin(), blob.begin() + static_cast<std::ptrdiff_t>(gate_bytes.size())), gate_bytes);
    const auto v = g.expert_slices(l, 3);
    EXPECT_EQ(std::memcmp(v.up, blob.data() + s.up_offset(), s.up_bytes()), 0);
    EXPECT_EQ(std::memcmp(v.down, blob.data() + s.down_offset(), s.down_bytes()), 0);
    if (c.bias) {
      const auto bias_of = [&](const gguf_tensor_info* bt, std::size_t n) {
        const auto all = g.file().read_tensor_f32(bt->name);
        return std::vector<float>(all.begin() + static_cast<std::ptrdiff_t>(3 * n), all.begin() + static_cast<std::ptrdiff_t>(4 * n));
      };
      std::vector<float> want = bias_of(t.gate_bias, 256), up = bias_of(t.up_bias, 256), down = bias_of(t.down_bias, 256);
      want.insert(want.end(), up.begin(), up.end());
      want.insert(want.end(), down.begin(), down.end());
      std::vector<float> got(want.size());
      std::memcpy(got.data(), blob.data() + s.bias_offset(), got.size() * 4);
      EXPECT_EQ(got, want);
    }
  }
  // mixed: block 0 is dense, blocks 1 and 2 are MoE layers 0 and 1
  const auto m = gguf_expert_weights::open(golden::path("mixed.gguf"));
  EXPECT_EQ(m.num_layers(), 2);
  EXPECT_EQ(m.layer_of_block(0), -1);
  EXPECT_NE(m.layer_shape(0), m.layer_shape(1));
  EXPECT_EQ(m.max_expert_bytes(), m.layer_shape(1).expert_bytes());  // q5_k/q8_0 > q4_k/q6_k
}

namespace {
gguf_writer small_model(const std::string& arch, bool fused = false) {
  auto slice = [](int b, int p, int e) { return pattern_slice(b, p, e, p == 2 ? 64 * 34 : 32 * 2 * 34); };
  gguf_writer w = make_moe_model({1}, 4, 64, 32, 8, slice, arch);
  if (fused) {
    std::string data;
    for (int e = 0; e < 4; ++e) data += pattern_slice(1, 0, e, 32 * 2 * 34) + pattern_slice(1, 1, e, 32 * 2 * 34);
    w.tensors.erase(w.tensors.begin(), w.tensors.begin() + 2);
    w.tensor_raw("blk.1.ffn_gate_up_exps.weight", 8, {64, 64, 4}, data);
  }
  return w;
}
std::string f32_bytes(std::size_t n, float v) {
  std::vector<float> x(n, v);
  return std::string(reinterpret_cast<const char*>(x.data()), n * 4);
}
gguf_expert_weights open_mem(const gguf_writer& w) { return gguf_expert_weights(gguf_file::parse(w.bytes(), "m.gguf")); }
void expect_routing_error(const gguf_writer& w, const std::string& needle) {
  const auto g = open_mem(w);
  expect_error_message([&] { g.routing(); }, needle, "m.gguf");
}
}  // namespace

TEST(GgufExperts, FusedGateUpAndBiases) {
  gguf_writer w = small_model("gpt-oss", true);
  w.tensor_raw("blk.1.ffn_gate_up_exps.bias", 0, {64, 4}, f32_bytes(64 * 4, 0.5f));
  w.tensor_raw("blk.1.ffn_down_exps.bias", 0, {64, 4}, f32_bytes(64 * 4, -1.0f));
  const auto g = open_mem(w);
  const ffn_layer& s = g.shape();
  EXPECT_TRUE(g.layer(0).fused);
  EXPECT_TRUE(s.has_bias);
  EXPECT_EQ(s.act, ffn_activation::swiglu_oai);
  std::vector<unsigned char> blob(s.expert_bytes());
  g.read_expert(0, 1, blob.data());
  EXPECT_EQ(std::string(blob.begin(), blob.begin() + 2 * 32 * 2 * 34),
            pattern_slice(1, 0, 1, 32 * 2 * 34) + pattern_slice(1, 1, 1, 32 * 2 * 34));
  std::vector<float> b(2 * 32 + 64);
  std::memcpy(b.data(), blob.data() + s.bias_offset(), b.size() * 4);
  for (std::size_t i = 0; i < b.size(); ++i) EXPECT_EQ(b[i], i < 64 ? 0.5f : -1.0f) << i;

  gguf_writer both = small_model("qwen3moe", true);
  both.tensors.push_back(small_model("qwen3moe").tensors[0]);
  expect_experts_error(both, "has both the fused 'blk.1.ffn_gate_up_exps.weight' and separate gate/up");
  gguf_writer half = small_model("gpt-oss");
  half.tensor_raw("blk.1.ffn_gate_exps.bias", 0, {32, 4}, f32_bytes(32 * 4, 0.0f));
  expect_experts_error(half, "has some expert biases but not all of");
  gguf_writer dims = small_model("gpt-oss");
  dims.tensor_raw("blk.1.ffn_gate_exps.bias", 0, {32, 4}, f32_bytes(32 * 4, 0.0f));
  dims.tensor_raw("blk.1.ffn_up_exps.bias", 0, {32, 4}, f32_bytes(32 * 4, 0.0f));
  dims.tensor_raw("blk.1.ffn_down_exps.bias", 0, {32, 4}, f32_bytes(32 * 4, 0.0f));
  expect_experts_error(dims, "'blk.1.ffn_down_exps.bias' has dimensions {32, 4}, expected {64, 4}");
  gguf_writer qbias = small_model("gpt-oss");
  qbias.tensor_raw("blk.1.ffn_gate_exps.bias", 8, {32, 4}, std::string(4 * 34, '\0'));
  qbias.tensor_raw("blk.1.ffn_up_exps.bias", 0, {32, 4}, f32_bytes(32 * 4, 0.0f));
  qbias.tensor_raw("blk.1.ffn_down_exps.bias", 0, {64, 4}, f32_bytes(64 * 4, 0.0f));
  expect_experts_error(qbias, "'blk.1.ffn_gate_exps.bias' has type Q8_0; biases must be F32, F16 or BF16");
  gguf_writer odd = small_model("qwen3moe", true);
  odd.tensors.back().ne = {64, 63, 4};
  expect_experts_error(odd, "fused gate_up tensor needs an even ne[1]");
}

TEST(GgufExperts, UnsupportedTypeNamesTensorAndType) {
  gguf_writer w = make_moe_model({1}, 2, 256, 256, 8, [](int, int p, int) {
    return std::string(p == 1 ? 256 * 56 : 256 * 8 * 34, '\0');
  });
  w.tensors[1].type = 29;  // IQ1_M
  expect_experts_error(w, "tensor 'blk.1.ffn_up_exps.weight' has type IQ1_M; supported types are");
}

TEST(GgufExperts, RoutingFromMetadataAsLlamaCppReadsIt) {
  // qwen2moe and olmoe: softmax without renormalization
  EXPECT_FALSE(open_mem(small_model("qwen2moe")).routing().config.renorm);
  // DeepSeek-V3-style: every setting from the keys, selection bias per layer
  gguf_writer ds = small_model("deepseek2");
  ds.kv_u32("deepseek2.expert_gating_func", 2);
  ds.kv_raw("deepseek2.expert_weights_norm", 7, std::string(1, '\1'));
  ds.kv_raw("deepseek2.expert_weights_scale", 6, f32_bytes(1, 2.5f));
  ds.kv_u32("deepseek2.expert_group_count", 2);
  ds.kv_u32("deepseek2.expert_group_used_count", 1);
  ds.tensor_raw("blk.1.exp_probs_b.bias", 0, {4}, f32_bytes(4, 0.25f));
  const auto g = open_mem(ds);
  const router_config& c = g.routing().config;
  EXPECT_EQ(c.scoring, scoring_kind::sigmoid);
  EXPECT_TRUE(c.renorm);
  EXPECT_EQ(c.scale, 2.5f);
  EXPECT_EQ(c.groups, 2);
  EXPECT_EQ(c.topk_groups, 1);
  EXPECT_TRUE(c.uses_bias);
  EXPECT_EQ(g.selection_bias(0), std::vector<float>(4, 0.25f));

  gguf_writer no_scale = small_model("deepseek2");
  expect_routing_error(no_scale, "'deepseek2.expert_weights_scale' is missing");
  gguf_writer glm = small_model("glm4moe");
  glm.kv_raw("glm4moe.expert_weights_scale", 6, f32_bytes(1, 1.0f));
  expect_routing_error(glm, "'glm4moe.expert_gating_func' is missing");
  gguf_writer bad_groups;
  bad_groups.tensors = small_model("deepseek2").tensors;
  bad_groups.kv_string("general.architecture", "deepseek2");
  bad_groups.kv_u32("deepseek2.expert_count", 4);
  bad_groups.kv_u32("deepseek2.expert_used_count", 2);
  bad_groups.kv_raw("deepseek2.expert_weights_scale", 6, f32_bytes(1, 1.0f));
  bad_groups.kv_u32("deepseek2.expert_group_count", 3);
  bad_groups.kv_u32("deepseek2.expert_group_used_count", 1);
  expect_routing_error(bad_groups, "does not describe a grouped top-2 of 4 experts");
  gguf_writer qwen_groups = small_model("qwen3moe");
  qwen_groups.kv_u32("qwen3moe.expert_group_count", 2);
  expect_routing_error(qwen_groups, "llama.cpp does not group qwen3moe's experts");
  gguf_writer qwen_sigmoid = small_model("qwen3moe");
  qwen_sigmoid.kv_u32("qwen3moe.expert_gating_func", 2);
  expect_routing_error(qwen_sigmoid, "'qwen3moe.expert_gating_func' is 2 but llama.cpp routes qwen3moe with softmax");
  gguf_writer stray_bias = small_model("qwen3moe");
  stray_bias.tensor_raw("blk.1.ffn_gate_inp.bias", 0, {4}, f32_bytes(4, 1.0f));
  expect_routing_error(stray_bias, "ffn_gate_inp.bias is present but llama.cpp's qwen3moe graph does not use it");

  const auto llama4 = open_mem(small_model("llama4"));
  expect_error_message([&] { llama4.routing(); }, "architecture 'llama4': moeroute does not know how llama.cpp routes it",
                       "m.gguf");
  EXPECT_NE(llama4.ffn_unsupported().find("architecture 'llama4': moeroute does not know its experts' activation"),
            std::string::npos);
}
