// Fuzz target: GGUF header parser, metadata walk, tensor reads, MoE expert tensor indexing and
// slices (see fuzz_target.hpp).
#include <algorithm>
#include <string>
#include <vector>

#include "fuzz_target.hpp"
#include "gguf_writer.hpp"
#include "moeroute/io/gguf.hpp"
#include "moeroute/io/gguf_experts.hpp"

namespace {
void walk(const moeroute::gguf_value& v, int depth) {
  try {
    if (v.is_array()) {
      const std::size_t n = std::min<std::size_t>(v.size(), 64);
      for (std::size_t i = 0; i < n; ++i) walk(v.at(i), depth + 1);
      (void)v.at(v.size());  // out of range: must throw moeroute::error
    } else if (v.is_string()) {
      (void)v.as_string().size();
    } else if (v.is_number()) {
      (void)v.as_double();
      if (v.is_integer()) (void)v.as_int();
    } else {
      (void)v.as_bool();
    }
  } catch (const moeroute::error&) {
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto g = moeroute::gguf_file::parse(std::string(reinterpret_cast<const char*>(data), size),
                                              "fuzz.gguf");
    for (const auto& kv : g.metadata()) walk(kv.second, 0);
    for (const auto& t : g.tensors()) {
      if (t.nbytes > (1u << 20)) continue;
      (void)g.read_tensor_bytes(t.name);
      try {
        (void)g.read_tensor_f32(t.name);
      } catch (const moeroute::error&) {
      }
    }
  } catch (const moeroute::error&) {
  }
  try {  // the expert view: every check before any slice is read
    moeroute::gguf_expert_weights w(
        moeroute::gguf_file::parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz.gguf"));
    if (w.shape().expert_bytes() <= (1u << 20)) {
      std::vector<unsigned char> blob(w.shape().expert_bytes());
      w.read_expert(w.num_layers() - 1, w.shape().num_experts - 1, blob.data());
      (void)w.router_weights(0);
    }
  } catch (const moeroute::error&) {
  }
  return 0;
}

std::vector<std::string> moeroute_fuzz_seeds() {
  using namespace moeroute_test;
  std::vector<std::string> s;
  gguf_writer a;
  a.kv_string("general.architecture", "qwen3moe");
  a.kv_u32("general.alignment", 64);
  a.kv_string_array("tokenizer.ggml.tokens", {"a", "bb", ""});
  a.kv_raw("nested", T_ARR, [] {
    std::string b;
    put_u32(b, T_ARR);
    put_u64(b, 2);
    put_u32(b, T_I16);
    put_u64(b, 1);
    b += std::string("\x05\x00", 2);
    put_u32(b, T_F64);
    put_u64(b, 0);
    return b;
  }());
  a.tensor_f32("token_embd.weight", {4, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  a.tensor_raw("blk.0.ffn_down_exps.weight", 12, {256, 1, 2}, std::string(2 * 144, '\x01'));
  a.tensor_raw("blk.0.attn_q.weight", 1, {2}, std::string("\x00\x3c\x00\xbc", 4));
  s.push_back(a.bytes(64));
  gguf_writer b;
  b.version = 2;
  b.tensor_raw("q8", 8, {32}, std::string(34, '\x02'));
  s.push_back(b.bytes());
  s.push_back(make_imatrix({0, 1}, {{1, 2, 3}, {4, 5, 6}}).bytes());
  gguf_writer m = make_moe_model({0, 2}, 2, 32, 32, 8, [](int bl, int p, int e) {  // a small Q8_0 MoE model
    return std::string(32 * 34, static_cast<char>(bl + 3 * p + 7 * e));
  });
  m.tensor_f32("blk.2.ffn_gate_inp.weight", {32, 2}, std::vector<float>(64, 0.25f));
  s.push_back(m.bytes());
  return s;
}
