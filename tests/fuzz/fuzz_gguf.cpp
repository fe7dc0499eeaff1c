// Fuzz target: GGUF header parser, metadata walk, tensor reads and views, MoE expert tensor
// indexing (per-tensor types, fused gate/up, biases), blobs, dequantization of the stored rows and
// routing from metadata (see fuzz_target.hpp).
#include <algorithm>
#include <string>
#include <vector>

#include "fuzz_target.hpp"
#include "gguf_writer.hpp"
#include "moeroute/io/gguf.hpp"
#include "moeroute/io/gguf_experts.hpp"
#include "moeroute/weights/dequant.hpp"

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
      if (const unsigned char* view = g.tensor_data(t); view != nullptr && t.nbytes > 0)
        (void)view[t.nbytes - 1];  // a view covers the tensor's bytes (ASan checks)
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
    for (int l = 0; l < w.num_layers(); ++l) {
      const moeroute::ffn_layer& s = w.layer_shape(l);
      if (s.expert_bytes() > (1u << 20)) continue;
      std::vector<unsigned char> blob(s.expert_bytes());
      w.read_expert(l, s.num_experts - 1, blob.data());
      const auto v = w.expert_slices(l, s.num_experts - 1);
      if (v.down != nullptr && s.down_bytes() > 0) (void)v.down[s.down_bytes() - 1];
      std::vector<float> row(static_cast<std::size_t>(std::max(s.hidden, s.ffn)));
      moeroute::dequantize_row(s.gate_type, blob.data() + s.gate_offset(), row.data(), static_cast<std::size_t>(s.hidden));
      moeroute::dequantize_row(s.down_type, blob.data() + s.down_offset(), row.data(), static_cast<std::size_t>(s.ffn));
      (void)w.router_weights(l);
      (void)w.router_bias(l);
      (void)w.selection_bias(l);
    }
    try {
      (void)w.routing();
      if (w.shape().hidden <= 4096) {
        const std::vector<float> x(static_cast<std::size_t>(w.shape().hidden), 0.5f);
        (void)w.route(0, x.data(), 1);
      }
    } catch (const moeroute::error&) {
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
  // gpt-oss-like: fused MXFP4 gate_up, biases, router bias
  gguf_writer o;
  o.kv_string("general.architecture", "gpt-oss");
  o.kv_u32("gpt-oss.expert_count", 2);
  o.kv_u32("gpt-oss.expert_used_count", 1);
  o.tensor_raw("blk.0.ffn_gate_up_exps.weight", 39, {32, 64, 2}, std::string(2 * 64 * 17, '\x7f'));
  o.tensor_raw("blk.0.ffn_down_exps.weight", 39, {32, 32, 2}, std::string(2 * 32 * 17, '\x80'));
  o.tensor_f32("blk.0.ffn_gate_up_exps.bias", {64, 2}, std::vector<float>(128, 0.5f));
  o.tensor_f32("blk.0.ffn_down_exps.bias", {32, 2}, std::vector<float>(64, -0.5f));
  o.tensor_f32("blk.0.ffn_gate_inp.weight", {32, 2}, std::vector<float>(64, 0.125f));
  o.tensor_f32("blk.0.ffn_gate_inp.bias", {2}, {1.0f, -1.0f});
  s.push_back(o.bytes());
  // DeepSeek-V3-like keys and a K-quant layer with a Q6_K down projection
  gguf_writer d;
  d.kv_string("general.architecture", "deepseek2");
  d.kv_u32("deepseek2.expert_count", 4);
  d.kv_u32("deepseek2.expert_used_count", 2);
  d.kv_u32("deepseek2.expert_gating_func", 2);
  d.kv_u32("deepseek2.expert_group_count", 2);
  d.kv_u32("deepseek2.expert_group_used_count", 1);
  d.kv_raw("deepseek2.expert_weights_scale", T_F32, std::string("\x00\x00\x20\x40", 4));
  d.tensor_raw("blk.1.ffn_gate_exps.weight", 12, {256, 256, 4}, std::string(4 * 256 * 144, '\x11'));
  d.tensor_raw("blk.1.ffn_up_exps.weight", 12, {256, 256, 4}, std::string(4 * 256 * 144, '\x22'));
  d.tensor_raw("blk.1.ffn_down_exps.weight", 14, {256, 256, 4}, std::string(4 * 256 * 210, '\x33'));
  d.tensor_f32("blk.1.exp_probs_b.bias", {4}, {0.1f, 0.2f, 0.3f, 0.4f});
  d.tensor_f32("blk.1.ffn_gate_inp.weight", {256, 4}, std::vector<float>(1024, 0.01f));
  s.push_back(d.bytes());
  return s;
}
