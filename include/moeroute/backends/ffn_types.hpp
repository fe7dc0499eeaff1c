#pragma once
// Types shared by the expert FFN backends (CPU reference and Vulkan): weight formats, the expert
// weight blob layout, the problem shape and the per-call arguments.
//
// The expert FFN: for each token t and each kept expert e with weight w,
//   y_t += w * W_down[e] * (silu(W_gate[e] x_t) * W_up[e] x_t)
// with W_gate, W_up of shape [F x H] and W_down of shape [H x F] (rows x columns, row-major).
//
// Expert blob layout (what upload_expert takes, one contiguous block per expert):
//   gate rows (F rows of H values), then up rows (F rows of H values), then down rows (H rows of
//   F values), each row encoded in the weight type. Quantized rows are sequences of ggml blocks
//   along the row, so a GGUF expert tensor slice (ffn_gate_exps[e], ffn_up_exps[e],
//   ffn_down_exps[e]) is uploaded as it is.

#include <moeroute/detail/float16.hpp>
#include <moeroute/error.hpp>
#include <moeroute/routing/result.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace moeroute {

/// Encoding of expert weights.
enum class weight_type : int {
  f32 = 0,   ///< IEEE float32
  f16 = 1,   ///< IEEE float16
  q8_0 = 2,  ///< ggml Q8_0: blocks of 32, {f16 d; int8 q[32]}, value = d * q (34 bytes)
  q4_0 = 3,  ///< ggml Q4_0: blocks of 32, {f16 d; uint8 qs[16]}, value = d * (nibble - 8) (18 bytes);
             ///< byte j holds element j in its low nibble and element j + 16 in its high nibble
};

/// "f32", "f16", "q8_0", "q4_0".
inline const char* weight_type_name(weight_type t) noexcept {
  switch (t) {
    case weight_type::f32: return "f32";
    case weight_type::f16: return "f16";
    case weight_type::q8_0: return "q8_0";
    case weight_type::q4_0: return "q4_0";
  }
  return "unknown";
}

/// Elements per block (1 for the float types, 32 for the ggml block types).
inline std::size_t block_elems(weight_type t) noexcept {
  return (t == weight_type::q8_0 || t == weight_type::q4_0) ? 32 : 1;
}

/// Bytes per block (4, 2, 34, 18).
inline std::size_t block_bytes(weight_type t) noexcept {
  switch (t) {
    case weight_type::f32: return 4;
    case weight_type::f16: return 2;
    case weight_type::q8_0: return 34;
    case weight_type::q4_0: return 18;
  }
  return 0;
}

/// Bytes of one row of n values; n must be a multiple of block_elems(t).
inline std::size_t row_bytes(weight_type t, std::size_t n) noexcept {
  return n / block_elems(t) * block_bytes(t);
}

/// Shape of one MoE layer's experts.
struct ffn_shape {
  int num_experts = 0;  ///< E
  int hidden = 0;       ///< H: model width (x and y rows)
  int ffn = 0;          ///< F: expert intermediate width
  weight_type type = weight_type::f32;

  std::size_t gate_bytes() const noexcept {
    return static_cast<std::size_t>(ffn) * row_bytes(type, static_cast<std::size_t>(hidden));
  }
  std::size_t down_bytes() const noexcept {
    return static_cast<std::size_t>(hidden) * row_bytes(type, static_cast<std::size_t>(ffn));
  }
  /// Bytes of one expert blob (gate, up, down).
  std::size_t expert_bytes() const noexcept { return 2 * gate_bytes() + down_bytes(); }
  /// Multiply-adds of one (token, expert) pair, times 2: the FLOPs the FFN counts per routed pair.
  double flops_per_pair() const noexcept {
    return 2.0 * 3.0 * static_cast<double>(hidden) * static_cast<double>(ffn);
  }
};

/// Empty when the shape is usable by a backend, else the reason.
inline std::string check_ffn_shape(const ffn_shape& s) {
  if (s.num_experts <= 0) return "num_experts must be positive";
  if (s.hidden <= 0 || s.ffn <= 0) return "hidden and ffn must be positive";
  const std::size_t be = block_elems(s.type);
  if (s.hidden % static_cast<int>(be) != 0 || s.ffn % static_cast<int>(be) != 0)
    return detail::concat(weight_type_name(s.type), " needs hidden (", s.hidden, ") and ffn (", s.ffn,
                          ") to be multiples of ", be);
  if (s.type == weight_type::f16 && (s.hidden % 2 != 0 || s.ffn % 2 != 0))
    return "f16 needs even hidden and ffn";
  return {};
}

/// Arguments of one FFN call: the routing result and token activations (caller memory).
struct ffn_args {
  routing_result_view routing;  ///< T tokens, CSR ids/weights, ids in [0, E)
  const float* x = nullptr;     ///< T x H, row-major
  float* y = nullptr;           ///< T x H, row-major, overwritten
};

/// Empty when the routing result is well formed for E experts, else the reason naming the token.
inline std::string check_routing(const routing_result_view& r, int num_experts) {
  if (r.num_tokens == 0) return {};
  if (r.offsets == nullptr) return "routing offsets are null";
  if (r.offsets[0] != 0) return "routing offsets[0] must be 0";
  for (std::size_t t = 0; t < r.num_tokens; ++t) {
    if (r.offsets[t + 1] < r.offsets[t])
      return detail::concat("routing offsets decrease at token ", t);
  }
  const std::size_t nnz = r.offsets[r.num_tokens];
  if (nnz > 0 && (r.ids == nullptr || r.weights == nullptr)) return "routing ids or weights are null";
  for (std::size_t t = 0; t < r.num_tokens; ++t) {
    for (std::uint32_t j = r.offsets[t]; j < r.offsets[t + 1]; ++j) {
      if (r.ids[j] < 0 || r.ids[j] >= num_experts)
        return detail::concat("routing token ", t, ": expert id ", r.ids[j], " outside [0, ", num_experts, ")");
      if (!std::isfinite(r.weights[j]))
        return detail::concat("routing token ", t, ": weight of expert ", r.ids[j], " is not finite");
    }
  }
  return {};
}

/// Quantizes one block of 32 floats to ggml Q8_0 (d = amax / 127, q = round(x / d)).
inline void quantize_block_q8_0(const float* x, unsigned char* out) noexcept {
  float amax = 0.0f;
  for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const std::uint16_t dh = float_to_half(d);
  std::memcpy(out, &dh, 2);
  for (int i = 0; i < 32; ++i) {
    const auto q = static_cast<std::int8_t>(std::lround(x[i] * id));
    std::memcpy(out + 2 + i, &q, 1);
  }
}

/// Quantizes one block of 32 floats to ggml Q4_0 (d = m / -8 with m the value of largest
/// magnitude, nibble = min(15, trunc(x / d + 8.5))).
inline void quantize_block_q4_0(const float* x, unsigned char* out) noexcept {
  float amax = 0.0f, m = 0.0f;
  for (int i = 0; i < 32; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      m = x[i];
    }
  }
  const float d = m / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  const std::uint16_t dh = float_to_half(d);
  std::memcpy(out, &dh, 2);
  for (int j = 0; j < 16; ++j) {
    const int lo = std::min(15, static_cast<int>(x[j] * id + 8.5f));
    const int hi = std::min(15, static_cast<int>(x[j + 16] * id + 8.5f));
    out[2 + j] = static_cast<unsigned char>(lo | (hi << 4));
  }
}

/// Encodes a row of n floats (n a multiple of block_elems(t)) into row_bytes(t, n) bytes.
inline void encode_row(weight_type t, const float* x, std::size_t n, unsigned char* out) noexcept {
  switch (t) {
    case weight_type::f32: std::memcpy(out, x, n * 4); break;
    case weight_type::f16:
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint16_t h = float_to_half(x[i]);
        std::memcpy(out + 2 * i, &h, 2);
      }
      break;
    case weight_type::q8_0:
      for (std::size_t b = 0; b < n / 32; ++b) quantize_block_q8_0(x + 32 * b, out + 34 * b);
      break;
    case weight_type::q4_0:
      for (std::size_t b = 0; b < n / 32; ++b) quantize_block_q4_0(x + 32 * b, out + 18 * b);
      break;
  }
}

/// Decodes a row of n values of type t into floats.
inline void decode_row(weight_type t, const unsigned char* in, std::size_t n, float* out) noexcept {
  switch (t) {
    case weight_type::f32: std::memcpy(out, in, n * 4); break;
    case weight_type::f16:
      for (std::size_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, in + 2 * i, 2);
        out[i] = half_to_float(h);
      }
      break;
    case weight_type::q8_0:
      for (std::size_t b = 0; b < n / 32; ++b) {
        std::uint16_t dh;
        std::memcpy(&dh, in + 34 * b, 2);
        const float d = half_to_float(dh);
        for (int i = 0; i < 32; ++i) {
          std::int8_t q;
          std::memcpy(&q, in + 34 * b + 2 + i, 1);
          out[32 * b + static_cast<std::size_t>(i)] = d * static_cast<float>(q);
        }
      }
      break;
    case weight_type::q4_0:
      for (std::size_t b = 0; b < n / 32; ++b) {
        std::uint16_t dh;
        std::memcpy(&dh, in + 18 * b, 2);
        const float d = half_to_float(dh);
        for (int j = 0; j < 16; ++j) {
          const unsigned char q = in[18 * b + 2 + static_cast<std::size_t>(j)];
          out[32 * b + static_cast<std::size_t>(j)] = d * static_cast<float>((q & 0x0F) - 8);
          out[32 * b + static_cast<std::size_t>(j) + 16] = d * static_cast<float>((q >> 4) - 8);
        }
      }
      break;
  }
}

/// Builds an expert blob from float matrices gate [F x H], up [F x H], down [H x F] (row-major).
/// out must hold s.expert_bytes().
inline void encode_expert(const ffn_shape& s, const float* gate, const float* up, const float* down,
                          unsigned char* out) noexcept {
  const auto H = static_cast<std::size_t>(s.hidden), F = static_cast<std::size_t>(s.ffn);
  const std::size_t rh = row_bytes(s.type, H), rf = row_bytes(s.type, F);
  for (std::size_t f = 0; f < F; ++f) encode_row(s.type, gate + f * H, H, out + f * rh);
  out += F * rh;
  for (std::size_t f = 0; f < F; ++f) encode_row(s.type, up + f * H, H, out + f * rh);
  out += F * rh;
  for (std::size_t h = 0; h < H; ++h) encode_row(s.type, down + h * F, F, out + h * rf);
}

}  // namespace moeroute
