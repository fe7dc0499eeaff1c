#pragma once
// Expert FFN weights and routing of an MoE model GGUF (llama.cpp layout), as moeroute expert blobs
// and router settings.
//
// A llama.cpp MoE model stores each MoE layer (block N) as 3-D expert tensors, ne[0] fastest:
//   blk.N.ffn_gate_exps.weight     ne = {H, F, E}   (E experts of F rows of length H)
//   blk.N.ffn_up_exps.weight       ne = {H, F, E}
//   or fused: blk.N.ffn_gate_up_exps.weight  ne = {H, 2F, E}  (per expert F gate rows, then F up rows)
//   blk.N.ffn_down_exps.weight     ne = {F, H, E}   (E experts of H rows of length F)
// each in its own weight type (weights/types.hpp; layers may differ), optional per-expert biases
// (gpt-oss) blk.N.ffn_{gate,up}_exps.bias ne = {F, E} (fused: ffn_gate_up_exps.bias {2F, E}) and
// blk.N.ffn_down_exps.bias {H, E}, the router blk.N.ffn_gate_inp.weight ne = {H, E} with an
// optional logit bias blk.N.ffn_gate_inp.bias {E}, and an optional selection bias
// blk.N.exp_probs_b.bias {E} (DeepSeek-V3). Expert e of a tensor is its contiguous slice
// [e * slice_bytes, (e + 1) * slice_bytes), so the blob of (layer, e) that the backends take
// (weights/layer.hpp) is the concatenation of the slices, copied as stored, plus the biases as
// float32. Dense blocks (no expert tensors), as in DeepSeek's first layers, are skipped: MoE layer
// i is the i-th block that has experts.
//
// The file is mapped (io/gguf.hpp): read_expert / read_layer copy from the mapping, and
// expert_slices() hands out views of one expert's stored rows without copying.
//
// Routing (routing()) follows how llama.cpp's build_moe_ffn routes each architecture, from
// `<arch>.expert_count`, `.expert_used_count`, `.expert_gating_func`, `.expert_weights_norm`,
// `.expert_weights_scale`, `.expert_group_count`, `.expert_group_used_count` and the
// exp_probs_b tensors, mapped onto a router_config. An architecture whose routing moeroute does
// not reproduce is an `unsupported` error naming it, never a guess.
//
//   auto w = moeroute::gguf_expert_weights::open("model.gguf");
//   std::vector<unsigned char> blob(w.layer_shape(layer).expert_bytes());
//   w.read_expert(layer, expert, blob.data());

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "moeroute/error.hpp"
#include "moeroute/io/gguf.hpp"
#include "moeroute/io/gguf_expert_names.hpp"
#include "moeroute/routing/presets.hpp"
#include "moeroute/weights/dequant.hpp"
#include "moeroute/weights/expert_view.hpp"
#include "moeroute/weights/layer.hpp"
#include "moeroute/weights/types.hpp"

namespace moeroute {

/// How a model's MoE layers route, as llama.cpp computes it, mapped onto moeroute's router.
struct gguf_moe_routing {
  /// scoring, top_k, renorm, scale, groups, uses_bias (selection bias exp_probs_b), E.
  router_config config;
  /// llama.cpp's gating function: "softmax", "sigmoid" or "softmax_weight" (top-K of the logits,
  /// then a softmax over those K: the same as softmax over all experts, top-K, renormalized).
  std::string gating;
  /// True when blk.N.ffn_gate_inp.bias is added to the logits before gating (gpt-oss).
  bool logit_bias = false;
};

/// The MoE expert tensors of a model GGUF, checked once when opened.
class gguf_expert_weights {
 public:
  /// One MoE layer: its block index N (blk.N), its description and its tensors.
  struct layer_tensors {
    int block = 0;
    ffn_layer shape;  ///< E, H, F shared by every layer; types, biases and activation per layer
    const gguf_tensor_info* gate = nullptr;  ///< the fused tensor when fused
    const gguf_tensor_info* up = nullptr;    ///< the fused tensor when fused
    const gguf_tensor_info* down = nullptr;
    bool fused = false;                           ///< gate and up stored as ffn_gate_up_exps
    const gguf_tensor_info* gate_bias = nullptr;  ///< fused: ffn_gate_up_exps.bias ({2F, E})
    const gguf_tensor_info* up_bias = nullptr;    ///< fused: same tensor as gate_bias
    const gguf_tensor_info* down_bias = nullptr;
    const gguf_tensor_info* router = nullptr;          ///< blk.N.ffn_gate_inp.weight, or nullptr
    const gguf_tensor_info* router_bias = nullptr;     ///< blk.N.ffn_gate_inp.bias, or nullptr
    const gguf_tensor_info* selection_bias = nullptr;  ///< blk.N.exp_probs_b(.bias), or nullptr
  };

  /// Views of one expert's stored rows (nullptr when the file is not in memory).
  struct expert_view {
    const unsigned char* gate = nullptr;  ///< F rows of H (gate_type)
    const unsigned char* up = nullptr;    ///< F rows of H (up_type)
    const unsigned char* down = nullptr;  ///< H rows of F (down_type)
  };

  /// Reads the header of `path` (the file is mapped, no weights are read) and checks every expert
  /// tensor: gate and up (or fused gate_up) and down per MoE layer, 3-D with matching {H, F, E},
  /// a supported weight type, biases complete and float, the model's `<arch>.expert_count` when
  /// present. Errors name the file and the tensor or key.
  static gguf_expert_weights open(const std::string& path) { return gguf_expert_weights(gguf_file::open(path)); }

  explicit gguf_expert_weights(gguf_file file) : file_(std::move(file)) { index(); }

  gguf_expert_weights(const gguf_expert_weights&) = delete;  // layer_tensors point into file_
  gguf_expert_weights& operator=(const gguf_expert_weights&) = delete;
  gguf_expert_weights(gguf_expert_weights&& o) noexcept = default;

  const gguf_file& file() const noexcept { return file_; }
  /// The first MoE layer's description; E, H and F are those of every layer, types may differ
  /// per layer (layer_shape).
  const ffn_layer& shape() const noexcept { return layers_.front().shape; }
  /// The description of MoE layer `layer`.
  const ffn_layer& layer_shape(int layer_index) const { return layer(layer_index).shape; }
  /// The largest expert blob of any layer (bytes).
  std::size_t max_expert_bytes() const noexcept {
    std::size_t m = 0;
    for (const auto& l : layers_) m = std::max(m, l.shape.expert_bytes());
    return m;
  }
  /// Number of MoE layers (blocks with expert tensors).
  int num_layers() const noexcept { return static_cast<int>(layers_.size()); }
  /// The tensors of MoE layer `layer` (0-based among MoE layers).
  const layer_tensors& layer(int layer_index) const {
    MOEROUTE_CHECK(layer_index >= 0 && layer_index < num_layers(), errc::invalid_argument, file_.name(), ": MoE layer ",
                   layer_index, " outside [0, ", num_layers(), ")");
    return layers_[static_cast<std::size_t>(layer_index)];
  }
  /// The MoE layer stored as blk.N, or -1 when block N has no experts.
  int layer_of_block(int block) const noexcept {
    for (std::size_t i = 0; i < layers_.size(); ++i)
      if (layers_[i].block == block) return static_cast<int>(i);
    return -1;
  }
  /// `<arch>.expert_used_count` (experts per token), or 0 when the file does not say.
  int experts_used() const noexcept { return experts_used_; }
  /// `general.architecture`, or "" when absent.
  const std::string& architecture() const noexcept { return arch_; }

  /// Empty when moeroute computes this model's expert FFN exactly as llama.cpp does (the
  /// activation of the architecture is known), else the reason.
  const std::string& ffn_unsupported() const noexcept { return act_error_; }

  /// The model's routing (see gguf_moe_routing). Throws unsupported, naming the architecture or
  /// key, when moeroute cannot reproduce it.
  const gguf_moe_routing& routing() const {
    MOEROUTE_CHECK(routing_error_.empty(), errc::unsupported, file_.name(), ": ", routing_error_);
    return routing_;
  }

  /// Copies the blob of (layer, expert) into out (layer_shape(layer).expert_bytes() bytes): the
  /// gate, up and down slices of that expert as stored, then its biases as float32.
  void read_expert(int layer_index, int expert, unsigned char* out) const {
    const layer_tensors& t = layer(layer_index);
    check_expert(expert);
    const ffn_layer& s = t.shape;
    const auto e = static_cast<std::uint64_t>(expert);
    if (t.fused) {
      const std::uint64_t gu = s.gate_bytes() + s.up_bytes();
      file_.read_tensor_range(*t.gate, e * gu, gu, out);
    } else {
      file_.read_tensor_range(*t.gate, e * s.gate_bytes(), s.gate_bytes(), out + s.gate_offset());
      file_.read_tensor_range(*t.up, e * s.up_bytes(), s.up_bytes(), out + s.up_offset());
    }
    file_.read_tensor_range(*t.down, e * s.down_bytes(), s.down_bytes(), out + s.down_offset());
    if (!s.has_bias) return;
    const std::size_t rows_end = s.down_offset() + s.down_bytes();
    std::memset(out + rows_end, 0, s.bias_offset() - rows_end);
    const auto F = static_cast<std::size_t>(s.ffn), H = static_cast<std::size_t>(s.hidden);
    std::vector<float> b(2 * F + H);
    if (t.fused) {
      read_floats(*t.gate_bias, e * 2 * F, 2 * F, b.data());
    } else {
      read_floats(*t.gate_bias, e * F, F, b.data());
      read_floats(*t.up_bias, e * F, F, b.data() + F);
    }
    read_floats(*t.down_bias, e * H, H, b.data() + 2 * F);
    std::memcpy(out + s.bias_offset(), b.data(), b.size() * 4);
  }

  /// Copies the blobs of every expert of MoE layer `layer` into out (num_experts x
  /// layer_shape(layer).expert_bytes() bytes, expert e at e * expert_bytes).
  void read_layer(int layer_index, unsigned char* out) const {
    const std::size_t eb = layer_shape(layer_index).expert_bytes();
    for (int e = 0; e < shape().num_experts; ++e) read_expert(layer_index, e, out + static_cast<std::size_t>(e) * eb);
  }

  /// Views of (layer, expert)'s stored gate, up and down rows in the mapped file (all nullptr
  /// when the file is read through streams). Valid while this object lives.
  expert_view expert_slices(int layer_index, int expert) const {
    const layer_tensors& t = layer(layer_index);
    check_expert(expert);
    expert_view v;
    if (!file_.in_memory()) return v;
    const ffn_layer& s = t.shape;
    const auto e = static_cast<std::size_t>(expert);
    if (t.fused) {
      v.gate = file_.tensor_data(*t.gate) + e * (s.gate_bytes() + s.up_bytes());
      v.up = v.gate + s.gate_bytes();
    } else {
      v.gate = file_.tensor_data(*t.gate) + e * s.gate_bytes();
      v.up = file_.tensor_data(*t.up) + e * s.up_bytes();
    }
    v.down = file_.tensor_data(*t.down) + e * s.down_bytes();
    return v;
  }

  /// Views of (layer, expert)'s weights for the CPU FFN (backends/cpu_quant.hpp): its stored
  /// gate, up and down rows (a fused gate_up slice split into its F gate and F up rows) and its
  /// biases, all pointing into the mapped file, nothing copied. Valid while this object lives.
  /// Throws unsupported when the file is not in memory or the layer's biases are not F32.
  expert_weights_view expert_weights(int layer_index, int expert) const {
    const layer_tensors& t = layer(layer_index);
    const expert_view s = expert_slices(layer_index, expert);
    MOEROUTE_CHECK(s.gate != nullptr, errc::unsupported, file_.name(),
                   ": expert weight views need the file in memory (it is read through a stream)");
    expert_weights_view v;
    v.gate = s.gate;
    v.up = s.up;
    v.down = s.down;
    if (!t.shape.has_bias) return v;
    const auto e = static_cast<std::size_t>(expert);
    const auto F = static_cast<std::size_t>(t.shape.ffn), H = static_cast<std::size_t>(t.shape.hidden);
    auto floats = [&](const gguf_tensor_info* b, std::size_t first) {
      MOEROUTE_CHECK(b->type == static_cast<std::uint32_t>(weight_type::f32), errc::unsupported, file_.name(),
                     ": tensor '", b->name, "' is ", b->type_name, "; expert weight views need F32 biases");
      const unsigned char* p = file_.tensor_data(*b) + first * 4;
      MOEROUTE_CHECK(reinterpret_cast<std::uintptr_t>(p) % alignof(float) == 0, errc::unsupported, file_.name(),
                     ": tensor '", b->name, "' is not 4-byte aligned in the file");
      return reinterpret_cast<const float*>(p);
    };
    if (t.fused) {
      v.gate_bias = floats(t.gate_bias, e * 2 * F);
      v.up_bias = v.gate_bias + F;
    } else {
      v.gate_bias = floats(t.gate_bias, e * F);
      v.up_bias = floats(t.up_bias, e * F);
    }
    v.down_bias = floats(t.down_bias, e * H);
    return v;
  }

  /// The router matrix of MoE layer `layer` as E x H floats (row e = expert e's logit weights),
  /// or empty when the file has no blk.N.ffn_gate_inp.weight. Any weight type is decoded.
  std::vector<float> router_weights(int layer_index) const {
    const layer_tensors& t = layer(layer_index);
    if (t.router == nullptr) return {};
    const auto H = static_cast<std::size_t>(shape().hidden), E = static_cast<std::size_t>(shape().num_experts);
    weight_type wt{};
    weight_type_from_ggml(t.router->type, wt);  // checked in index()
    std::vector<unsigned char> raw(static_cast<std::size_t>(t.router->nbytes));
    file_.read_tensor_range(*t.router, 0, raw.size(), raw.data());
    std::vector<float> out(E * H);
    dequantize_row(wt, raw.data(), out.data(), E * H);  // ne = {H, E}: rows of H back to back
    return out;
  }

  /// blk.N.ffn_gate_inp.bias (E floats, added to the logits), or empty.
  std::vector<float> router_bias(int layer_index) const { return vector_of(layer(layer_index).router_bias); }
  /// blk.N.exp_probs_b.bias (E floats, added to the scores for selection only), or empty.
  std::vector<float> selection_bias(int layer_index) const { return vector_of(layer(layer_index).selection_bias); }

  /// Router logits of T tokens x (T x H floats, row-major) at MoE layer `layer`: T x E floats,
  /// W_router x_t (+ the logit bias), accumulated in double and rounded once. Throws bad_input
  /// when the layer has no router tensor.
  std::vector<float> router_logits(int layer_index, const float* x, std::size_t T) const {
    const std::vector<float> w = router_weights(layer_index);
    MOEROUTE_CHECK(!w.empty(), errc::bad_input, file_.name(), ": blk.", layer(layer_index).block,
                   " has no router tensor 'blk.", layer(layer_index).block, ".ffn_gate_inp.weight'");
    const std::vector<float> b = router_bias(layer_index);
    const auto H = static_cast<std::size_t>(shape().hidden), E = static_cast<std::size_t>(shape().num_experts);
    std::vector<float> out(T * E);
    for (std::size_t t = 0; t < T; ++t)
      for (std::size_t e = 0; e < E; ++e) {
        double acc = 0;
        for (std::size_t h = 0; h < H; ++h) acc += static_cast<double>(w[e * H + h]) * static_cast<double>(x[t * H + h]);
        out[t * E + e] = static_cast<float>(acc) + (b.empty() ? 0.0f : b[e]);
      }
    return out;
  }

  /// Routes T tokens x (T x H floats) at MoE layer `layer` as the model does: router_logits,
  /// then routing() with the layer's selection bias. Throws unsupported when routing() does.
  routing_result route(int layer_index, const float* x, std::size_t T) const {
    const gguf_moe_routing& r = routing();
    const std::vector<float> logits = router_logits(layer_index, x, T);
    const any_router router(r.config, selection_bias(layer_index));
    return router.route(logits_view<float>(logits.data(), T, static_cast<std::size_t>(shape().num_experts)));
  }

 private:
  enum part { gate_p = 0, up_p, down_p, fused_p, gate_b, up_b, down_b, fused_b, router_w, router_b, sel_b, sel_b2, kParts };
  static constexpr const char* kSuffix[kParts] = {
      gguf_expert_suffixes[0], gguf_expert_suffixes[1], gguf_expert_suffixes[2], gguf_expert_suffixes[3],
      ".ffn_gate_exps.bias",   ".ffn_up_exps.bias",   ".ffn_down_exps.bias",   ".ffn_gate_up_exps.bias",
      ".ffn_gate_inp.weight",  ".ffn_gate_inp.bias",  ".exp_probs_b.bias",     ".exp_probs_b"};

  // "blk.N<suffix>" -> N, or -1 (the rule of io/gguf_expert_names.hpp).
  static int block_of(const std::string& name, const char* suffix) { return gguf_expert_block(name, suffix); }

  static std::string dims(const gguf_tensor_info& t) {
    std::string s = "{";
    for (std::size_t i = 0; i < t.ne.size(); ++i) s += (i ? ", " : "") + std::to_string(t.ne[i]);
    return s + "}";
  }

  void check_expert(int expert) const {
    MOEROUTE_CHECK(expert >= 0 && expert < shape().num_experts, errc::invalid_argument, file_.name(), ": expert ",
                   expert, " outside [0, ", shape().num_experts, ")");
  }

  // n floats starting at element `first` of a float-typed (F32, F16, BF16) tensor.
  void read_floats(const gguf_tensor_info& t, std::uint64_t first, std::size_t n, float* out) const {
    weight_type wt{};
    weight_type_from_ggml(t.type, wt);  // checked in index()
    const std::size_t w = block_bytes(wt);
    std::vector<unsigned char> raw(n * w);
    file_.read_tensor_range(t, first * w, raw.size(), raw.data());
    dequantize_row(wt, raw.data(), out, n);
  }

  std::vector<float> vector_of(const gguf_tensor_info* t) const {
    if (t == nullptr) return {};
    std::vector<float> v(static_cast<std::size_t>(t->n_elements));
    read_floats(*t, 0, v.size(), v.data());
    return v;
  }

  weight_type type_of(const gguf_tensor_info& t) const {
    weight_type wt{};
    MOEROUTE_CHECK(weight_type_from_ggml(t.type, wt), errc::unsupported, file_.name(), ": tensor '", t.name,
                   "' has type ", t.type_name,
                   "; supported types are F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, "
                   "Q6_K, IQ4_NL, IQ4_XS and MXFP4");
    return wt;
  }

  void expect_dims(const gguf_tensor_info& t, std::vector<std::int64_t> want, const char* meaning) const {
    if (t.ne == want) return;
    std::string w = "{";
    for (std::size_t i = 0; i < want.size(); ++i) w += (i ? ", " : "") + std::to_string(want[i]);
    detail::fail(errc::bad_input, file_.name(), ": tensor '", t.name, "' has dimensions ", dims(t), ", expected ", w,
                 "} (", meaning, "; H = ", H_, ", F = ", F_, ", E = ", E_, " from '", first_gate_, "')");
  }

  // A bias or router-bias tensor: float type, dimensions `want`.
  void check_float_vector(const gguf_tensor_info& t, std::vector<std::int64_t> want, const char* meaning) const {
    const weight_type wt = type_of(t);
    MOEROUTE_CHECK(wt == weight_type::f32 || wt == weight_type::f16 || wt == weight_type::bf16, errc::unsupported,
                   file_.name(), ": tensor '", t.name, "' has type ", t.type_name, "; biases must be F32, F16 or BF16");
    expect_dims(t, std::move(want), meaning);
  }

  void index() {
    const std::string& fname = file_.name();
    std::map<int, std::array<const gguf_tensor_info*, kParts>> found;
    for (const auto& t : file_.tensors())
      for (int p = 0; p < kParts; ++p)
        if (const int b = block_of(t.name, kSuffix[p]); b >= 0) {
          found[b][static_cast<std::size_t>(p)] = &t;
        }
    for (auto it = found.begin(); it != found.end();) {  // blocks without expert weights are dense
      const auto& ts = it->second;
      if (!ts[gate_p] && !ts[up_p] && !ts[down_p] && !ts[fused_p])
        it = found.erase(it);
      else
        ++it;
    }
    MOEROUTE_CHECK(!found.empty(), errc::bad_input, fname,
                   ": no MoE expert tensors (blk.N.ffn_gate_exps.weight or ffn_gate_up_exps.weight, ffn_up_exps, "
                   "ffn_down_exps): not an MoE model file, or one whose experts are stored in another layout");
    if (const gguf_value* a = file_.find("general.architecture"); a && a->is_string()) arch_ = a->as_string();

    for (const auto& [block, ts] : found) {
      const std::string blk = "blk." + std::to_string(block);
      const bool fused = ts[fused_p] != nullptr;
      if (fused)
        MOEROUTE_CHECK(!ts[gate_p] && !ts[up_p], errc::bad_input, fname, ": ", blk,
                       " has both the fused '", blk, kSuffix[fused_p], "' and separate gate/up expert tensors");
      for (int p : fused ? std::vector<int>{fused_p, down_p} : std::vector<int>{gate_p, up_p, down_p})
        MOEROUTE_CHECK(ts[static_cast<std::size_t>(p)] != nullptr, errc::bad_input, fname, ": ", blk,
                       " has expert tensors but no '", blk, kSuffix[p], "'");
      const gguf_tensor_info& g = fused ? *ts[fused_p] : *ts[gate_p];
      const gguf_tensor_info& u = fused ? *ts[fused_p] : *ts[up_p];
      const gguf_tensor_info& d = *ts[down_p];
      const weight_type gt = type_of(g), ut = type_of(u), dt = type_of(d);
      for (const gguf_tensor_info* t : {&g, &u, &d}) {
        MOEROUTE_CHECK(t->ne.size() == 3, errc::bad_input, fname, ": tensor '", t->name, "' has dimensions ", dims(*t),
                       ", expected 3 ({in, out, experts})");
        for (auto n : t->ne)
          MOEROUTE_CHECK(n > 0 && n <= std::numeric_limits<int>::max() / 2, errc::bad_input, fname, ": tensor '",
                         t->name, "' has dimensions ", dims(*t));
      }
      if (layers_.empty()) {
        MOEROUTE_CHECK(!fused || g.ne[1] % 2 == 0, errc::bad_input, fname, ": tensor '", g.name, "' has dimensions ",
                       dims(g), ": a fused gate_up tensor needs an even ne[1] (2F)");
        H_ = g.ne[0];
        F_ = fused ? g.ne[1] / 2 : g.ne[1];
        E_ = g.ne[2];
        first_gate_ = g.name;
      }
      if (fused) {
        expect_dims(g, {H_, 2 * F_, E_}, "fused gate_up: {H, 2F, E}");
      } else {
        expect_dims(g, {H_, F_, E_}, "gate: {H, F, E}");
        expect_dims(u, {H_, F_, E_}, "up: {H, F, E}");
      }
      expect_dims(d, {F_, H_, E_}, "down: {F, H, E}");

      layer_tensors lt;
      lt.block = block;
      lt.fused = fused;
      lt.gate = &g;
      lt.up = &u;
      lt.down = &d;
      const bool any_bias = ts[gate_b] || ts[up_b] || ts[down_b] || ts[fused_b];
      if (any_bias) {
        if (fused) {
          MOEROUTE_CHECK(ts[fused_b] && ts[down_b] && !ts[gate_b] && !ts[up_b], errc::bad_input, fname, ": ", blk,
                         " has some expert biases but not '", blk, kSuffix[fused_b], "' and '", blk, kSuffix[down_b],
                         "' (a fused layer takes exactly those two)");
          check_float_vector(*ts[fused_b], {2 * F_, E_}, "fused gate_up bias: {2F, E}");
          lt.gate_bias = lt.up_bias = ts[fused_b];
        } else {
          MOEROUTE_CHECK(ts[gate_b] && ts[up_b] && ts[down_b] && !ts[fused_b], errc::bad_input, fname, ": ", blk,
                         " has some expert biases but not all of '", blk, kSuffix[gate_b], "', '", blk, kSuffix[up_b],
                         "' and '", blk, kSuffix[down_b], "'");
          check_float_vector(*ts[gate_b], {F_, E_}, "gate bias: {F, E}");
          check_float_vector(*ts[up_b], {F_, E_}, "up bias: {F, E}");
          lt.gate_bias = ts[gate_b];
          lt.up_bias = ts[up_b];
        }
        check_float_vector(*ts[down_b], {H_, E_}, "down bias: {H, E}");
        lt.down_bias = ts[down_b];
      }
      lt.shape = ffn_layer(static_cast<int>(E_), static_cast<int>(H_), static_cast<int>(F_), gt, ut, dt, any_bias,
                           arch_ == "gpt-oss" ? ffn_activation::swiglu_oai : ffn_activation::swiglu);
      const std::string why = check_ffn_layer(lt.shape);
      MOEROUTE_CHECK(why.empty(), errc::unsupported, fname, ": ", blk, ": ", why);
      const std::uint64_t E = static_cast<std::uint64_t>(E_);
      const std::uint64_t gu_slice = fused ? lt.shape.gate_bytes() + lt.shape.up_bytes() : lt.shape.gate_bytes();
      for (const auto& [t, slice] : {std::pair<const gguf_tensor_info*, std::uint64_t>{&g, gu_slice},
                                     {&u, fused ? gu_slice : lt.shape.up_bytes()},
                                     {&d, lt.shape.down_bytes()}})
        MOEROUTE_CHECK(t->nbytes % E == 0 && t->nbytes / E == slice, errc::bad_input, fname, ": tensor '", t->name,
                       "' holds ", t->nbytes, " bytes, not ", E, " expert slices of ", slice);

      if (const gguf_tensor_info* r = ts[router_w]) {
        type_of(*r);
        MOEROUTE_CHECK(r->ne.size() == 2, errc::bad_input, fname, ": tensor '", r->name, "' has dimensions ", dims(*r),
                       ", expected {", H_, ", ", E_, "}");
        expect_dims(*r, {H_, E_}, "router: {H, E}");
        lt.router = r;
      }
      if (const gguf_tensor_info* rb = ts[router_b]) {
        check_float_vector(*rb, {E_}, "router bias: {E}");
        lt.router_bias = rb;
      }
      if (const gguf_tensor_info* sb = ts[sel_b] ? ts[sel_b] : ts[sel_b2]) {
        check_float_vector(*sb, {E_}, "selection bias: {E}");
        lt.selection_bias = sb;
      }
      layers_.push_back(lt);
    }
    if (!arch_.empty()) {
      if (const gguf_value* v = file_.find(arch_ + ".expert_count"); v && v->is_integer())
        MOEROUTE_CHECK(v->as_int() == E_, errc::bad_input, fname, ": metadata '", arch_, ".expert_count' is ",
                       v->as_int(), " but '", first_gate_, "' holds ", E_, " experts");
      if (const gguf_value* v = file_.find(arch_ + ".expert_used_count"); v && v->is_integer()) {
        MOEROUTE_CHECK(v->as_int() > 0 && v->as_int() <= E_, errc::bad_input, fname, ": metadata '", arch_,
                       ".expert_used_count' is ", v->as_int(), ", outside [1, ", E_, "]");
        experts_used_ = static_cast<int>(v->as_int());
      }
    }
    index_activation();
    index_routing();
  }

  // Architectures whose experts llama.cpp computes as down(silu(gate x) * up x) (LLM_FFN_SILU with
  // gate tensors), and gpt-oss (swiglu_oai).
  void index_activation() {
    static const char* const silu_archs[] = {"llama", "qwen2moe", "qwen3moe", "qwen3vlmoe", "olmoe", "deepseek2",
                                             "glm4moe", "dots1"};
    if (arch_ == "gpt-oss") return;
    for (const char* a : silu_archs)
      if (arch_ == a) return;
    act_error_ = arch_.empty() ? "the file has no 'general.architecture', so the experts' activation is unknown"
                               : "architecture '" + arch_ + "': moeroute does not know its experts' activation";
  }

  // llama.cpp's routing of the architecture (build_moe_ffn's arguments per architecture), mapped
  // onto router_config; routing_error_ says why when it cannot be.
  void index_routing() {
    auto fail = [&](const std::string& why) { routing_error_ = why; };
    if (arch_.empty()) return fail("the file has no 'general.architecture', so its routing is unknown");
    if (experts_used_ <= 0) return fail("metadata '" + arch_ + ".expert_used_count' is missing");
    const std::string k = arch_ + ".";
    auto int_key = [&](const char* key, std::int64_t dflt, bool& present) -> std::int64_t {
      const gguf_value* v = file_.find(k + key);
      present = v != nullptr;
      if (!v) return dflt;
      MOEROUTE_CHECK(v->is_integer(), errc::bad_input, file_.name(), ": metadata '", k, key, "' is ",
                     gguf_type_name(v->type()), ", expected an integer");
      return v->as_int();
    };
    bool has_gating = false, has_norm = false, has_scale = false, has_groups = false, has_used = false;
    const std::int64_t gating_id = int_key("expert_gating_func", 0, has_gating);
    const gguf_value* norm_v = file_.find(k + "expert_weights_norm");
    has_norm = norm_v != nullptr;
    const bool norm_key = has_norm && (norm_v->type() == gguf_type::boolean ? norm_v->as_bool() : norm_v->as_int() != 0);
    const gguf_value* scale_v = file_.find(k + "expert_weights_scale");
    has_scale = scale_v != nullptr;
    const double scale_key = has_scale ? scale_v->as_double() : 0.0;
    const std::int64_t groups = int_key("expert_group_count", 0, has_groups);
    const std::int64_t groups_used = int_key("expert_group_used_count", 0, has_used);

    router_config& c = routing_.config;
    c.name = arch_;
    c.num_experts = static_cast<int>(E_);
    c.top_k = experts_used_;
    bool keyed = false;  // routing taken from the keys (DeepSeek-V3-style architectures)
    if (arch_ == "llama" || arch_ == "qwen3moe" || arch_ == "qwen3vlmoe") {
      routing_.gating = "softmax";
      c.renorm = true;  // llama.cpp passes norm_w = true for these architectures, whatever the keys say
    } else if (arch_ == "qwen2moe" || arch_ == "olmoe") {
      routing_.gating = "softmax";
      c.renorm = false;
    } else if (arch_ == "gpt-oss") {
      routing_.gating = "softmax_weight";
      c.renorm = true;  // softmax over the K chosen logits = renormalized softmax over all
      routing_.logit_bias = true;
    } else if (arch_ == "deepseek2" || arch_ == "glm4moe" || arch_ == "dots1") {
      keyed = true;
      if (!has_gating && arch_ == "deepseek2") {
        routing_.gating = "softmax";  // llama.cpp's default for DeepSeek-V2 files without the key
      } else if (gating_id == 1) {
        routing_.gating = "softmax";
      } else if (gating_id == 2) {
        routing_.gating = "sigmoid";
      } else {
        return fail("metadata '" + k + "expert_gating_func' is " + (has_gating ? std::to_string(gating_id) : "missing") +
                    "; moeroute reproduces 1 (softmax) and 2 (sigmoid) for " + arch_);
      }
      c.renorm = has_norm && norm_key;
      if (!has_scale) return fail("metadata '" + k + "expert_weights_scale' is missing");
      c.scale = static_cast<float>(scale_key);
    } else {
      return fail("architecture '" + arch_ + "': moeroute does not know how llama.cpp routes it");
    }
    if (!keyed && has_gating) {
      const std::int64_t want = routing_.gating == "softmax_weight" ? 3 : 1;
      if (gating_id != want)
        return fail("metadata '" + k + "expert_gating_func' is " + std::to_string(gating_id) + " but llama.cpp routes " +
                    arch_ + " with " + routing_.gating);
    }
    c.scoring = routing_.gating == "sigmoid" ? scoring_kind::sigmoid : scoring_kind::softmax;
    if (!(std::isfinite(c.scale) && c.scale > 0.0f))
      return fail("metadata '" + k + "expert_weights_scale' is " + std::to_string(scale_key) + ", not a positive number");
    if (has_groups && groups > 1) {
      if (!keyed) return fail("metadata '" + k + "expert_group_count' > 1: llama.cpp does not group " + arch_ + "'s experts");
      if (!has_used || groups_used < 1 || groups_used > groups || E_ % groups != 0 ||
          static_cast<std::int64_t>(experts_used_) > (E_ / groups) * groups_used)
        return fail("metadata '" + k + "expert_group_count' = " + std::to_string(groups) + " with '" + k +
                    "expert_group_used_count' = " + (has_used ? std::to_string(groups_used) : "missing") +
                    " does not describe a grouped top-" + std::to_string(experts_used_) + " of " + std::to_string(E_) +
                    " experts");
      c.groups = static_cast<int>(groups);
      c.topk_groups = static_cast<int>(groups_used);
    }
    bool any_sel = false, any_logit = false;
    for (const auto& l : layers_) {
      any_sel = any_sel || l.selection_bias != nullptr;
      any_logit = any_logit || l.router_bias != nullptr;
    }
    if (any_sel && routing_.gating == "softmax_weight")
      return fail("a selection bias (exp_probs_b) with softmax_weight gating is not reproduced");
    if (any_logit && !routing_.logit_bias)
      return fail("blk.N.ffn_gate_inp.bias is present but llama.cpp's " + arch_ + " graph does not use it");
    c.uses_bias = any_sel;
    c.source = file_.name() + ": llama.cpp routing of " + arch_ + " (" + routing_.gating + ")";
  }

  gguf_file file_;
  std::vector<layer_tensors> layers_;
  std::string arch_, first_gate_;
  std::int64_t H_ = 0, F_ = 0, E_ = 0;
  int experts_used_ = 0;
  gguf_moe_routing routing_;
  std::string routing_error_, act_error_;
};

}  // namespace moeroute
