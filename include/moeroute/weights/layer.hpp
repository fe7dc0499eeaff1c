#pragma once
// One MoE layer's experts: shape, per-tensor weight types, biases, activation, and the layout of
// one expert's weights in memory (core: no Eigen, no Vulkan).
//
// The expert FFN, for each token t and each routed expert e with routing weight w:
//   g = W_gate[e] x_t (+ b_gate[e]),  u = W_up[e] x_t (+ b_up[e])        (F values each)
//   a = act(g, u)
//   y_t += w * (W_down[e] a (+ b_down[e]))                                (H values)
// with W_gate, W_up of F rows of H values and W_down of H rows of F values.
//   swiglu:      a = silu(g) * u = g / (1 + exp(-g)) * u
//   swiglu_oai:  g' = min(g, 7), u' = clamp(u, -7, 7), a = g' * sigmoid(1.702 g') * (u' + 1)
//                (gpt-oss; the biases are added before the clamps)
//
// Expert blob (one contiguous block per expert, what the backends' upload_expert takes):
//   [gate_offset()] F gate rows of H values, each row_bytes(gate_type, H) bytes
//   [up_offset()]   F up rows of H values, each row_bytes(up_type, H) bytes
//   [down_offset()] H down rows of F values, each row_bytes(down_type, F) bytes
//   [bias_offset()] if has_bias: F gate biases, F up biases, H down biases, float32 (host order,
//                   little-endian as in GGUF);
//                   bias_offset() is the end of the down rows rounded up to 16 bytes (zero padding)
// Rows are stored as in GGUF (types.hpp), so the slices of expert e of ffn_gate_exps,
// ffn_up_exps and ffn_down_exps concatenate to its blob; a fused ffn_gate_up_exps slice (F gate
// rows then F up rows) is the first two parts at once.

#include <moeroute/weights/dequant.hpp>
#include <moeroute/weights/types.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>

namespace moeroute {

/// The activation between the gate/up and down projections.
enum class ffn_activation : std::uint32_t {
  swiglu = 0,      ///< silu(g) * u (Qwen, DeepSeek, Mixtral, ...)
  swiglu_oai = 1,  ///< gpt-oss: min(g, 7) * sigmoid(1.702 min(g, 7)) * (clamp(u, -7, 7) + 1)
};

/// "swiglu" or "swiglu_oai".
inline const char* ffn_activation_name(ffn_activation a) noexcept {
  return a == ffn_activation::swiglu_oai ? "swiglu_oai" : "swiglu";
}

/// The activation applied to one (gate, up) pair, in float32.
inline float ffn_activate(ffn_activation act, float g, float u) noexcept {
  if (act == ffn_activation::swiglu_oai) {
    const float gc = g < 7.0f ? g : 7.0f;
    const float uc = u < -7.0f ? -7.0f : (u > 7.0f ? 7.0f : u);
    return gc / (1.0f + std::exp(-1.702f * gc)) * (uc + 1.0f);
  }
  return g / (1.0f + std::exp(-g)) * u;
}

/// Description of one MoE layer's experts.
struct ffn_layer {
  int num_experts = 0;  ///< E
  int hidden = 0;       ///< H: model width (x and y rows)
  int ffn = 0;          ///< F: expert intermediate width
  weight_type gate_type = weight_type::f32;
  weight_type up_type = weight_type::f32;
  weight_type down_type = weight_type::f32;
  bool has_bias = false;  ///< per-expert float32 biases of gate, up and down (gpt-oss)
  ffn_activation act = ffn_activation::swiglu;

  ffn_layer() = default;
  /// E experts of H x F with one type for all three tensors, no biases, swiglu.
  ffn_layer(int E, int H, int F, weight_type t) noexcept
      : num_experts(E), hidden(H), ffn(F), gate_type(t), up_type(t), down_type(t) {}
  /// Per-tensor types, optional biases and activation.
  ffn_layer(int E, int H, int F, weight_type gate, weight_type up, weight_type down, bool bias = false,
            ffn_activation activation = ffn_activation::swiglu) noexcept
      : num_experts(E), hidden(H), ffn(F), gate_type(gate), up_type(up), down_type(down), has_bias(bias),
        act(activation) {}

  bool operator==(const ffn_layer& o) const noexcept {
    return num_experts == o.num_experts && hidden == o.hidden && ffn == o.ffn && gate_type == o.gate_type &&
           up_type == o.up_type && down_type == o.down_type && has_bias == o.has_bias && act == o.act;
  }
  bool operator!=(const ffn_layer& o) const noexcept { return !(*this == o); }

  /// True when gate, up and down share one type.
  bool single_type() const noexcept { return gate_type == up_type && up_type == down_type; }

  std::size_t gate_bytes() const noexcept { return rows(ffn) * row_bytes(gate_type, rows(hidden)); }
  std::size_t up_bytes() const noexcept { return rows(ffn) * row_bytes(up_type, rows(hidden)); }
  std::size_t down_bytes() const noexcept { return rows(hidden) * row_bytes(down_type, rows(ffn)); }
  /// Bytes of the biases (2F + H floats), 0 without biases.
  std::size_t bias_bytes() const noexcept { return has_bias ? (2 * rows(ffn) + rows(hidden)) * 4 : 0; }

  std::size_t gate_offset() const noexcept { return 0; }
  std::size_t up_offset() const noexcept { return gate_bytes(); }
  std::size_t down_offset() const noexcept { return gate_bytes() + up_bytes(); }
  /// Start of the biases: the end of the down rows rounded up to 16 bytes.
  std::size_t bias_offset() const noexcept { return (down_offset() + down_bytes() + 15) / 16 * 16; }
  /// Bytes of one expert blob.
  std::size_t expert_bytes() const noexcept {
    return has_bias ? bias_offset() + bias_bytes() : down_offset() + down_bytes();
  }
  /// Multiply-adds of one (token, expert) pair, times 2: the FLOPs the FFN counts per routed pair.
  double flops_per_pair() const noexcept {
    return 2.0 * 3.0 * static_cast<double>(hidden) * static_cast<double>(ffn);
  }

 private:
  static std::size_t rows(int n) noexcept { return n > 0 ? static_cast<std::size_t>(n) : 0; }
};

/// Empty when the layer is usable (positive sizes, rows whole numbers of blocks), else the reason.
inline std::string check_ffn_layer(const ffn_layer& s) {
  if (s.num_experts <= 0) return "num_experts must be positive";
  if (s.hidden <= 0 || s.ffn <= 0) return "hidden and ffn must be positive";
  const struct {
    const char* what;
    weight_type t;
    int n;
    const char* dim;
  } parts[] = {{"gate", s.gate_type, s.hidden, "hidden"}, {"up", s.up_type, s.hidden, "hidden"},
               {"down", s.down_type, s.ffn, "ffn"}};
  for (const auto& p : parts) {
    const std::size_t be = block_elems(p.t);
    if (be == 0) return std::string(p.what) + " has an unknown weight type";
    if (static_cast<std::size_t>(p.n) % be != 0) {
      std::ostringstream os;
      os << p.what << " is " << weight_type_name(p.t) << ", which needs " << p.dim << " (" << p.n
         << ") to be a multiple of " << be;
      return os.str();
    }
  }
  return {};
}

/// Builds an expert blob from float matrices gate [F x H], up [F x H], down [H x F] (row-major),
/// each row encoded with encode_row in its tensor's type, and, when s.has_bias, the biases
/// (b_gate F, b_up F, b_down H floats; nullptr = zeros). out must hold s.expert_bytes().
inline void encode_expert(const ffn_layer& s, const float* gate, const float* up, const float* down,
                          unsigned char* out, const float* b_gate = nullptr, const float* b_up = nullptr,
                          const float* b_down = nullptr) noexcept {
  const auto H = static_cast<std::size_t>(s.hidden), F = static_cast<std::size_t>(s.ffn);
  const std::size_t rg = row_bytes(s.gate_type, H), ru = row_bytes(s.up_type, H), rd = row_bytes(s.down_type, F);
  for (std::size_t f = 0; f < F; ++f) encode_row(s.gate_type, gate + f * H, H, out + s.gate_offset() + f * rg);
  for (std::size_t f = 0; f < F; ++f) encode_row(s.up_type, up + f * H, H, out + s.up_offset() + f * ru);
  for (std::size_t h = 0; h < H; ++h) encode_row(s.down_type, down + h * F, F, out + s.down_offset() + h * rd);
  if (!s.has_bias) return;
  const std::size_t end = s.down_offset() + s.down_bytes();
  std::memset(out + end, 0, s.bias_offset() - end);
  unsigned char* b = out + s.bias_offset();
  const struct {
    const float* v;
    std::size_t n;
  } parts[] = {{b_gate, F}, {b_up, F}, {b_down, H}};
  for (const auto& p : parts) {
    if (p.v != nullptr)
      std::memcpy(b, p.v, p.n * 4);
    else
      std::memset(b, 0, p.n * 4);
    b += p.n * 4;
  }
}

}  // namespace moeroute
