#pragma once
// The portable path of the quantized CPU expert FFN (backends/cpu_quant.hpp), plain C++ for every
// architecture, and the data layouts every path shares: int8 activations with their scales and min
// terms, unpacked weight rows (int8 codes, a float scale and min per 16 values), the act_tile the
// fused kernels read, and the `kernels` table of one path.
//
// Contract: unpack_block / unpack_row_portable reproduce ggml's to_float per 16 values as
// sw * w - mw exactly; dot_q_portable sums each 16-group's code products exactly in int32 and
// scales them in float32. The other paths (kernels_avx2.hpp, kernels_avx512.hpp) compute the same
// integer sums and may only differ in float order.

#include <moeroute/weights/dequant.hpp>
#include <moeroute/weights/types.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace moeroute::detail::cq {

// ---------------------------------------------------------------------------------------------
// Quantized activations: n values (a multiple of 32) as int8 codes q[n], and per 16 values
// dx[g] (the float scale of the 32-value block holding group g) and xs[g] = dx[g] * (sum of the
// group's codes), the term a weight type with mins needs.

// dxe (n / 4 floats): the block scale once per 4 values, the layout of the fused AVX-512 kernels.
inline void quantize_act_portable(const float* x, std::size_t n, std::int8_t* q, float* dx, float* xs,
                                  float* dxe) noexcept {
  for (std::size_t b = 0; b < n / 32; ++b) {
    const float* xb = x + 32 * b;
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int h = 0; h < 2; ++h) {
      int sum = 0;
      for (int i = 16 * h; i < 16 * h + 16; ++i) {
        const int v = static_cast<int>(std::nearbyint(xb[i] * id));
        q[32 * b + static_cast<std::size_t>(i)] = static_cast<std::int8_t>(v);
        sum += v;
      }
      dx[2 * b + static_cast<std::size_t>(h)] = d;
      xs[2 * b + static_cast<std::size_t>(h)] = d * static_cast<float>(sum);
    }
    for (std::size_t i = 0; i < 8; ++i) dxe[8 * b + i] = d;
  }
}

// ---------------------------------------------------------------------------------------------
// Unpacked weight rows: value i = sw[i / 16] * w[i] - mw[i / 16], with int8 codes w and float
// scales sw and mins mw per 16 values (mw only for the types with mins).

inline bool type_has_min(weight_type t) noexcept {
  return t == weight_type::q4_1 || t == weight_type::q5_1 || t == weight_type::q2_k || t == weight_type::q4_k ||
         t == weight_type::q5_k;
}
inline bool type_is_float(weight_type t) noexcept {
  return t == weight_type::f32 || t == weight_type::f16 || t == weight_type::bf16;
}

inline std::int8_t i8(int v) noexcept { return static_cast<std::int8_t>(v); }

// 2^(e - 128) (half the E8M0 scale, as wt_e8m0_half) built from its bits, without ldexp.
inline float e8m0_half(std::uint8_t e) noexcept {
  const std::uint32_t bits = e < 2 ? 0x00200000u << e : static_cast<std::uint32_t>(e - 1) << 23;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// One block of type t at b into codes w (block_elems(t) values) and per-16 scales / mins.
inline void unpack_block(weight_type t, const unsigned char* b, std::int8_t* w, float* sw, float* mw) noexcept {
  switch (t) {
    case weight_type::q4_0:
    case weight_type::q4_1:
    case weight_type::iq4_nl:
    case weight_type::mxfp4: {
      const bool mx = t == weight_type::mxfp4;
      const unsigned char* qs = b + (t == weight_type::q4_1 ? 4 : mx ? 1 : 2);
      for (int j = 0; j < 16; ++j) {
        const int lo = qs[j] & 0xF, hi = qs[j] >> 4;
        if (t == weight_type::q4_0) {
          w[j] = i8(lo - 8);
          w[j + 16] = i8(hi - 8);
        } else if (t == weight_type::q4_1) {
          w[j] = i8(lo);
          w[j + 16] = i8(hi);
        } else if (mx) {
          w[j] = kvalues_mxfp4[lo];
          w[j + 16] = kvalues_mxfp4[hi];
        } else {
          w[j] = kvalues_iq4nl[lo];
          w[j + 16] = kvalues_iq4nl[hi];
        }
      }
      const float d = mx ? e8m0_half(b[0]) : wt_f16(b);
      sw[0] = sw[1] = d;
      if (t == weight_type::q4_1) mw[0] = mw[1] = -wt_f16(b + 2);
      return;
    }
    case weight_type::q5_0:
    case weight_type::q5_1: {
      const bool has_min = t == weight_type::q5_1;
      const unsigned char* qhp = b + (has_min ? 4 : 2);
      const unsigned char* qs = qhp + 4;
      const std::uint32_t qh = static_cast<std::uint32_t>(qhp[0]) | static_cast<std::uint32_t>(qhp[1]) << 8 |
                               static_cast<std::uint32_t>(qhp[2]) << 16 | static_cast<std::uint32_t>(qhp[3]) << 24;
      const int off = has_min ? 0 : 16;
      for (int j = 0; j < 16; ++j) {
        w[j] = i8(((qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4)) - off);
        w[j + 16] = i8(((qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4)) - off);
      }
      sw[0] = sw[1] = wt_f16(b);
      if (has_min) mw[0] = mw[1] = -wt_f16(b + 2);
      return;
    }
    case weight_type::q8_0: {
      for (int j = 0; j < 32; ++j) w[j] = static_cast<std::int8_t>(b[2 + j]);
      sw[0] = sw[1] = wt_f16(b);
      return;
    }
    case weight_type::q2_k: {
      const unsigned char* q = b + 16;
      const float d = wt_f16(b + 80), dmin = wt_f16(b + 82);
      for (int g = 0; g < 16; ++g) {
        sw[g] = d * static_cast<float>(b[g] & 0xF);
        mw[g] = dmin * static_cast<float>(b[g] >> 4);
      }
      for (int h = 0; h < 2; ++h)
        for (int s = 0; s < 4; ++s)
          for (int l = 0; l < 32; ++l) w[128 * h + 32 * s + l] = i8((q[32 * h + l] >> (2 * s)) & 3);
      return;
    }
    case weight_type::q3_k: {
      const unsigned char* hm = b;
      const unsigned char* q = b + 32;
      const float d = wt_f16(b + 108);
      for (int g = 0; g < 16; ++g) sw[g] = d * static_cast<float>(wt_scale_q3k(g, b + 96) - 32);
      for (int h = 0; h < 2; ++h)
        for (int s = 0; s < 4; ++s)
          for (int l = 0; l < 32; ++l)
            w[128 * h + 32 * s + l] =
                i8(((q[32 * h + l] >> (2 * s)) & 3) - ((hm[l] & (1u << (4 * h + s))) ? 0 : 4));
      return;
    }
    case weight_type::q4_k:
    case weight_type::q5_k: {
      const bool five = t == weight_type::q5_k;
      const float d = wt_f16(b), dmin = wt_f16(b + 2);
      const unsigned char* qh = b + 16;
      const unsigned char* q = b + (five ? 48 : 16);
      for (int c = 0; c < 4; ++c) {
        for (int k = 0; k < 2; ++k) {
          int sc = 0, m = 0;
          wt_scale_min_k4(2 * c + k, b + 4, sc, m);
          sw[4 * c + 2 * k] = sw[4 * c + 2 * k + 1] = d * static_cast<float>(sc);
          mw[4 * c + 2 * k] = mw[4 * c + 2 * k + 1] = dmin * static_cast<float>(m);
          const unsigned hb = 1u << (2 * c + k);
          for (int l = 0; l < 32; ++l) {
            const int v = (k ? q[32 * c + l] >> 4 : q[32 * c + l] & 0xF) + (five && (qh[l] & hb) ? 16 : 0);
            w[64 * c + 32 * k + l] = i8(v);
          }
        }
      }
      return;
    }
    case weight_type::q6_k: {
      const float d = wt_f16(b + 208);
      for (int g = 0; g < 16; ++g) sw[g] = d * static_cast<float>(static_cast<std::int8_t>(b[192 + g]));
      for (int h = 0; h < 2; ++h) {
        const unsigned char* ql = b + 64 * h;
        const unsigned char* qh = b + 128 + 32 * h;
        for (int l = 0; l < 32; ++l) {
          w[128 * h + l] = i8(((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
          w[128 * h + l + 32] = i8(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
          w[128 * h + l + 64] = i8(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
          w[128 * h + l + 96] = i8(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
      }
      return;
    }
    case weight_type::iq4_xs: {
      const float d = wt_f16(b);
      const unsigned scales_h = wt_u16(b + 2);
      for (int g = 0; g < 8; ++g) {
        const int ls = static_cast<int>(((b[4 + g / 2] >> (4 * (g % 2))) & 0xFu) | (((scales_h >> (2 * g)) & 3u) << 4));
        sw[2 * g] = sw[2 * g + 1] = d * static_cast<float>(ls - 32);
        const unsigned char* qs = b + 8 + 16 * g;
        for (int j = 0; j < 16; ++j) {
          w[32 * g + j] = kvalues_iq4nl[qs[j] & 0xF];
          w[32 * g + j + 16] = kvalues_iq4nl[qs[j] >> 4];
        }
      }
      return;
    }
    case weight_type::f32:
    case weight_type::f16:
    case weight_type::bf16: return;  // float types take the float path
  }
}

inline void unpack_row_portable(weight_type t, const unsigned char* row, std::size_t n, std::int8_t* w, float* sw,
                                float* mw) noexcept {
  const std::size_t be = block_elems(t), bb = block_bytes(t);
  for (std::size_t i = 0; i < n / be; ++i) unpack_block(t, row + i * bb, w + i * be, sw + i * be / 16, mw + i * be / 16);
}

// sum over 16-groups g of (sw[g] dx[g]) isum_g - mw[g] xs[g]  (mw == nullptr: no mins)
inline float dot_q_portable(const std::int8_t* w, const float* sw, const float* mw, const std::int8_t* x,
                            const float* dx, const float* xs, std::size_t n) noexcept {
  float acc = 0.0f;
  for (std::size_t g = 0; g < n / 16; ++g) {
    int isum = 0;
    for (std::size_t i = 16 * g; i < 16 * g + 16; ++i) isum += static_cast<int>(w[i]) * static_cast<int>(x[i]);
    acc += sw[g] * dx[g] * static_cast<float>(isum);
    if (mw != nullptr) acc -= mw[g] * xs[g];
  }
  return acc;
}

inline float dot_f_portable(const float* w, const float* x, std::size_t n) noexcept {
  float acc = 0.0f;
  for (std::size_t i = 0; i < n; ++i) acc += w[i] * x[i];
  return acc;
}

/// The quantized activations of m <= 8 tokens, packed for the fused kernels so that one pointer
/// per stream walks them: per 64-value chunk c, token i's codes at q + (c m + i) 64 and its lane
/// scales (one per 4 values) at e + (c m + i) 16; per 256 values b, its min terms (scale times code
/// sum, one per 16 values) at s + (b m + i) 16.
struct act_tile {
  const std::int8_t* q;
  const float* e;
  const float* s;
  const float* d = nullptr;  ///< one token (rows1_fn): its scales, one per 16 values
};

/// The longest tile of the fused kernels.
inline constexpr std::size_t max_tile = 8;

/// Tokens [k0, k0 + tile) of m: tiles of 8, then one of 4, then the 1-3 left.
inline std::size_t tile_at(std::size_t k0, std::size_t m) noexcept {
  const std::size_t left = m - k0;
  return left >= max_tile ? max_tile : left >= 4 ? 4 : left;
}

/// Packs the activation rows (codes q[i], lane scales e[i], min terms s[i] of n values) of m tokens
/// into consecutive act_tiles (tile_at), from tq / te / ts: the tile of tokens k0.. starts at
/// tq + k0 n, te + k0 n / 4, ts + k0 n / 16. The min terms of the whole 256-value
/// groups (n / 256 of them).
inline void pack_tiles(const std::int8_t* const* q, const float* const* e, const float* const* s, std::size_t m,
                       std::size_t n, std::int8_t* tq, float* te, float* ts) noexcept {
  for (std::size_t k0 = 0; k0 < m;) {
    const std::size_t t = tile_at(k0, m);
    std::int8_t* oq = tq + k0 * n;
    float* oe = te + k0 * n / 4;
    float* os = ts + k0 * n / 16;
    for (std::size_t c = 0; c < n / 64; ++c)
      for (std::size_t i = 0; i < t; ++i) {
        std::memcpy(oq + (c * t + i) * 64, q[k0 + i] + 64 * c, 64);
        std::memcpy(oe + (c * t + i) * 16, e[k0 + i] + 16 * c, 64);
      }
    for (std::size_t b = 0; b < n / 256; ++b)
      for (std::size_t i = 0; i < t; ++i) std::memcpy(os + (b * t + i) * 16, s[k0 + i] + 16 * b, 64);
    k0 += t;
  }
}

/// A fused row kernel: out[i] = row . token i of a tile of m tokens (1-4 or 8).
using rowdot_fn = void (*)(const unsigned char*, std::size_t, const act_tile&, int, float*) noexcept;
inline rowdot_fn no_rowdot(weight_type) noexcept { return nullptr; }
/// A one-token kernel over consecutive rows: out[r] = row r (at row + r stride) . x (a tile of one
/// token), r < rows. A row's result does not depend on `rows` or on where the row starts in the
/// range, so any row split gives the same bits (it may differ from rowdot_fn's in float order).
using rows1_fn = void (*)(const unsigned char*, std::size_t, std::size_t, std::size_t, const act_tile&, float*) noexcept;
inline rows1_fn no_rows1(weight_type) noexcept { return nullptr; }

/// The kernels of one instruction-set path.
struct kernels {
  void (*quantize)(const float*, std::size_t, std::int8_t*, float*, float*, float*) noexcept;
  void (*unpack)(weight_type, const unsigned char*, std::size_t, std::int8_t*, float*, float*) noexcept;
  float (*dot_q)(const std::int8_t*, const float*, const float*, const std::int8_t*, const float*, const float*,
                 std::size_t) noexcept;
  float (*dot_f)(const float*, const float*, std::size_t) noexcept;
  rowdot_fn (*rowdot)(weight_type) noexcept;  ///< the fused kernel of a type, or nullptr
  rows1_fn (*rows1)(weight_type) noexcept;    ///< the one-token many-row kernel of a type, or nullptr
};

inline kernels portable_kernels() noexcept {
  return {quantize_act_portable, unpack_row_portable, dot_q_portable, dot_f_portable, no_rowdot, no_rows1};
}

}  // namespace moeroute::detail::cq
