#pragma once
// Rows of expert weights to float and back (core: no Eigen, no Vulkan).
//
// dequantize_row computes exactly what ggml's to_float (dequantize_row_*) computes for the stored
// bytes: the same float32 operations in the same order (block layouts in types.hpp), so a row
// decoded here is bit-identical to ggml's.
//
// encode_row is a simple reference quantizer for every type: f32, f16 and bf16 round to nearest
// even; q4_0 and q8_0 follow ggml's reference quantizers; the others pick scales from each
// group's range and the nearest code. It writes valid blocks (what tests and benchmarks need to
// build random experts), not ggml's error-minimizing choices.

#include <moeroute/detail/float16.hpp>
#include <moeroute/weights/types.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace moeroute {

namespace detail {

/// ggml's non-linear 4-bit codebook of IQ4_NL and IQ4_XS.
inline constexpr std::int8_t kvalues_iq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                  1,    13,   25,  38,  53,  69,  89,  113};
/// E2M1 values times two, the codebook of MXFP4 (the scale is halved to match).
inline constexpr std::int8_t kvalues_mxfp4[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

inline std::uint16_t wt_u16(const unsigned char* p) noexcept {
  return static_cast<std::uint16_t>(p[0] | (p[1] << 8));
}
inline float wt_f16(const unsigned char* p) noexcept { return half_to_float(wt_u16(p)); }
inline void wt_put_u16(unsigned char* p, std::uint16_t v) noexcept {
  p[0] = static_cast<unsigned char>(v & 0xFFu);
  p[1] = static_cast<unsigned char>(v >> 8);
}
/// Stores f as f16 and returns the value the f16 holds.
inline float wt_put_f16(unsigned char* p, float f) noexcept {
  const std::uint16_t h = float_to_half(f);
  wt_put_u16(p, h);
  return half_to_float(h);
}
/// 2^(e - 128): half the E8M0 scale, as ggml applies it to the doubled MXFP4 codebook.
inline float wt_e8m0_half(std::uint8_t e) noexcept {
  return std::ldexp(1.0f, static_cast<int>(e) - 128);
}
/// Scale and min (6 bits each) of group j of a q4_k / q5_k block (ggml's get_scale_min_k4).
inline void wt_scale_min_k4(int j, const unsigned char* q, int& sc, int& m) noexcept {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}
/// Packs 8 6-bit scales and mins the way wt_scale_min_k4 reads them.
inline void wt_pack_scale_min_k4(const int* sc, const int* m, unsigned char* q) noexcept {
  for (int j = 0; j < 4; ++j) {
    q[j] = static_cast<unsigned char>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    q[j + 4] = static_cast<unsigned char>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    q[j + 8] = static_cast<unsigned char>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
}
/// 6-bit scale j (0..15, stored with offset 32) of a q3_k block.
inline int wt_scale_q3k(int j, const unsigned char* s) noexcept {
  const int lo = (s[j % 8] >> (4 * (j / 8))) & 0xF;
  const int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
  return lo | (hi << 4);
}

inline void dequant_block(weight_type t, const unsigned char* b, float* y) noexcept {
  switch (t) {
    case weight_type::f32: std::memcpy(y, b, 4); return;
    case weight_type::f16: *y = wt_f16(b); return;
    case weight_type::bf16: *y = bf16_to_float(wt_u16(b)); return;
    case weight_type::q4_0: {
      const float d = wt_f16(b);
      for (int j = 0; j < 16; ++j) {
        y[j] = static_cast<float>((b[2 + j] & 0x0F) - 8) * d;
        y[j + 16] = static_cast<float>((b[2 + j] >> 4) - 8) * d;
      }
      return;
    }
    case weight_type::q4_1: {
      const float d = wt_f16(b), m = wt_f16(b + 2);
      for (int j = 0; j < 16; ++j) {
        y[j] = static_cast<float>(b[4 + j] & 0x0F) * d + m;
        y[j + 16] = static_cast<float>(b[4 + j] >> 4) * d + m;
      }
      return;
    }
    case weight_type::q5_0:
    case weight_type::q5_1: {
      const bool has_min = t == weight_type::q5_1;
      const float d = wt_f16(b), m = has_min ? wt_f16(b + 2) : 0.0f;
      const unsigned char* qhp = b + (has_min ? 4 : 2);
      const unsigned char* qs = qhp + 4;
      const std::uint32_t qh = static_cast<std::uint32_t>(qhp[0]) | static_cast<std::uint32_t>(qhp[1]) << 8 |
                               static_cast<std::uint32_t>(qhp[2]) << 16 | static_cast<std::uint32_t>(qhp[3]) << 24;
      for (int j = 0; j < 16; ++j) {
        const int h0 = static_cast<int>((qh >> j) & 1u) << 4, h1 = static_cast<int>((qh >> (j + 16)) & 1u) << 4;
        const int x0 = (qs[j] & 0x0F) | h0, x1 = (qs[j] >> 4) | h1;
        if (has_min) {
          y[j] = static_cast<float>(x0) * d + m;
          y[j + 16] = static_cast<float>(x1) * d + m;
        } else {
          y[j] = static_cast<float>(x0 - 16) * d;
          y[j + 16] = static_cast<float>(x1 - 16) * d;
        }
      }
      return;
    }
    case weight_type::q8_0: {
      const float d = wt_f16(b);
      for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<std::int8_t>(b[2 + j])) * d;
      return;
    }
    case weight_type::iq4_nl: {
      const float d = wt_f16(b);
      for (int j = 0; j < 16; ++j) {
        y[j] = d * static_cast<float>(kvalues_iq4nl[b[2 + j] & 0xF]);
        y[j + 16] = d * static_cast<float>(kvalues_iq4nl[b[2 + j] >> 4]);
      }
      return;
    }
    case weight_type::mxfp4: {
      const float d = wt_e8m0_half(b[0]);
      for (int j = 0; j < 16; ++j) {
        y[j] = static_cast<float>(kvalues_mxfp4[b[1 + j] & 0x0F]) * d;
        y[j + 16] = static_cast<float>(kvalues_mxfp4[b[1 + j] >> 4]) * d;
      }
      return;
    }
    case weight_type::q2_k: {
      const unsigned char* sc = b;
      const unsigned char* q = b + 16;
      const float d = wt_f16(b + 80), dmin = wt_f16(b + 82);
      int is = 0;
      for (int h = 0; h < 2; ++h, q += 32) {
        for (int s = 0; s < 4; ++s) {
          const int shift = 2 * s;
          for (int half = 0; half < 2; ++half) {
            const unsigned char g = sc[is++];
            const float dl = d * static_cast<float>(g & 0xF), ml = dmin * static_cast<float>(g >> 4);
            for (int l = 0; l < 16; ++l)
              *y++ = dl * static_cast<float>((q[l + 16 * half] >> shift) & 3) - ml;
          }
        }
      }
      return;
    }
    case weight_type::q3_k: {
      const unsigned char* hm = b;
      const unsigned char* q = b + 32;
      const unsigned char* scales = b + 96;
      const float d_all = wt_f16(b + 108);
      int is = 0;
      unsigned m = 1;
      for (int h = 0; h < 2; ++h, q += 32) {
        for (int s = 0; s < 4; ++s, m <<= 1) {
          const int shift = 2 * s;
          for (int half = 0; half < 2; ++half) {
            const float dl = d_all * static_cast<float>(wt_scale_q3k(is++, scales) - 32);
            for (int l = 16 * half; l < 16 * half + 16; ++l)
              *y++ = dl * static_cast<float>(((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
          }
        }
      }
      return;
    }
    case weight_type::q4_k:
    case weight_type::q5_k: {
      const bool five = t == weight_type::q5_k;
      const float d = wt_f16(b), dmin = wt_f16(b + 2);
      const unsigned char* scales = b + 4;
      const unsigned char* qh = b + 16;
      const unsigned char* q = b + (five ? 48 : 16);
      for (int c = 0; c < 4; ++c, q += 32) {
        int sc = 0, m = 0;
        wt_scale_min_k4(2 * c, scales, sc, m);
        const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
        wt_scale_min_k4(2 * c + 1, scales, sc, m);
        const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(m);
        const unsigned u1 = 1u << (2 * c), u2 = 2u << (2 * c);
        for (int l = 0; l < 32; ++l)
          *y++ = d1 * static_cast<float>((q[l] & 0xF) + (five && (qh[l] & u1) ? 16 : 0)) - m1;
        for (int l = 0; l < 32; ++l)
          *y++ = d2 * static_cast<float>((q[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0)) - m2;
      }
      return;
    }
    case weight_type::q6_k: {
      const float d = wt_f16(b + 208);
      const unsigned char* ql = b;
      const unsigned char* qh = b + 128;
      const unsigned char* scb = b + 192;
      for (int h = 0; h < 2; ++h, ql += 64, qh += 32, scb += 8, y += 128) {
        for (int l = 0; l < 32; ++l) {
          const int is = l / 16;
          const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
          const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
          const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
          const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
          y[l] = d * static_cast<float>(static_cast<std::int8_t>(scb[is])) * static_cast<float>(q1);
          y[l + 32] = d * static_cast<float>(static_cast<std::int8_t>(scb[is + 2])) * static_cast<float>(q2);
          y[l + 64] = d * static_cast<float>(static_cast<std::int8_t>(scb[is + 4])) * static_cast<float>(q3);
          y[l + 96] = d * static_cast<float>(static_cast<std::int8_t>(scb[is + 6])) * static_cast<float>(q4);
        }
      }
      return;
    }
    case weight_type::iq4_xs: {
      const float d = wt_f16(b);
      const unsigned scales_h = wt_u16(b + 2);
      const unsigned char* scales_l = b + 4;
      const unsigned char* qs = b + 8;
      for (int g = 0; g < 8; ++g, qs += 16, y += 32) {
        const int ls = static_cast<int>(((scales_l[g / 2] >> (4 * (g % 2))) & 0xFu) |
                                        (((scales_h >> (2 * g)) & 3u) << 4));
        const float dl = d * static_cast<float>(ls - 32);
        for (int j = 0; j < 16; ++j) {
          y[j] = dl * static_cast<float>(kvalues_iq4nl[qs[j] & 0xF]);
          y[j + 16] = dl * static_cast<float>(kvalues_iq4nl[qs[j] >> 4]);
        }
      }
      return;
    }
  }
}

inline int wt_clamp(long v, int lo, int hi) noexcept {
  return static_cast<int>(std::min<long>(hi, std::max<long>(lo, v)));
}
/// round(x / step) clamped to [lo, hi]; lo..hi's midpoint-free zero when step is 0.
inline int wt_code(float x, float step, int lo, int hi) noexcept {
  if (step == 0.0f || !std::isfinite(x / step)) return wt_clamp(0, lo, hi);
  return wt_clamp(std::lround(x / step), lo, hi);
}
/// Index of the codebook entry nearest to v (first of equals).
inline int wt_nearest(const std::int8_t* book, float v) noexcept {
  int best = 0;
  float err = std::fabs(static_cast<float>(book[0]) - v);
  for (int i = 1; i < 16; ++i) {
    const float e = std::fabs(static_cast<float>(book[i]) - v);
    if (e < err) {
      err = e;
      best = i;
    }
  }
  return best;
}
/// The value of largest magnitude among x[0..n) (first of equals).
inline float wt_extreme(const float* x, int n) noexcept {
  float m = 0.0f, amax = 0.0f;
  for (int i = 0; i < n; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      m = x[i];
    }
  return m;
}
inline void wt_minmax(const float* x, int n, float& lo, float& hi) noexcept {
  lo = x[0];
  hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
}
inline void wt_put_nibbles(unsigned char* qs, const int* q) noexcept {
  for (int j = 0; j < 16; ++j) qs[j] = static_cast<unsigned char>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
}

// The fifth bits of 32 5-bit codes as the little-endian 32-bit qh of q5_0 / q5_1 (bit i = code i).
inline void wt_put_high_bits(unsigned char* qh_out, const int* q) noexcept {
  std::uint32_t qh = 0;
  for (int i = 0; i < 32; ++i) qh |= static_cast<std::uint32_t>((q[i] >> 4) & 1) << i;
  for (int k = 0; k < 4; ++k) qh_out[k] = static_cast<unsigned char>((qh >> (8 * k)) & 0xFFu);
}

// Scale/min choice of the "d * scale * q - dmin * min" K-quants (q2_k, q4_k, q5_k): groups of gs
// values, codes 0..qmax, scales and mins 0..smax.
inline void wt_kquant_minscale(const float* x, int groups, int gs, int qmax, int smax, float& d, float& dmin,
                               int* sc, int* mn, unsigned char* d_out, unsigned char* dmin_out) noexcept {
  float scale[16], mins[16], max_scale = 0.0f, max_min = 0.0f;
  for (int g = 0; g < groups; ++g) {
    float lo = 0.0f, hi = 0.0f;
    wt_minmax(x + g * gs, gs, lo, hi);
    lo = std::min(lo, 0.0f);
    scale[g] = (hi - lo) / static_cast<float>(qmax);
    mins[g] = -lo;
    max_scale = std::max(max_scale, scale[g]);
    max_min = std::max(max_min, mins[g]);
  }
  d = wt_put_f16(d_out, max_scale / static_cast<float>(smax));
  dmin = wt_put_f16(dmin_out, max_min / static_cast<float>(smax));
  for (int g = 0; g < groups; ++g) {
    sc[g] = wt_code(scale[g], d, 0, smax);
    mn[g] = wt_code(mins[g], dmin, 0, smax);
    // a group whose range rounds to scale 0 still needs a scale to encode anything but -min
    if (sc[g] == 0 && scale[g] > 0.0f) sc[g] = 1;
  }
}
inline int wt_kquant_code(float x, float d, float dmin, int sc, int mn, int qmax) noexcept {
  return wt_code(x + dmin * static_cast<float>(mn), d * static_cast<float>(sc), 0, qmax);
}

// Symmetric K-quant scales (q3_k, q6_k, iq4_xs): per group the scale that maps the extreme value
// onto code `qneg` (negative), quantized to integer multiples of d in [slo, shi].
inline float wt_sym_scales(const float* x, int groups, int gs, int qneg, int shi, int* sc) noexcept {
  float scale[16], amax = 0.0f;
  for (int g = 0; g < groups; ++g) {
    scale[g] = wt_extreme(x + g * gs, gs) / static_cast<float>(qneg);
    amax = std::max(amax, std::fabs(scale[g]));
  }
  const float d = half_to_float(float_to_half(amax / static_cast<float>(shi)));
  for (int g = 0; g < groups; ++g) sc[g] = wt_code(scale[g], d, -shi, shi);
  return d;
}

inline void encode_block(weight_type t, const float* x, unsigned char* b) noexcept {
  switch (t) {
    case weight_type::f32: std::memcpy(b, x, 4); return;
    case weight_type::f16: wt_put_u16(b, float_to_half(*x)); return;
    case weight_type::bf16: wt_put_u16(b, float_to_bf16(*x)); return;
    case weight_type::q4_0: {  // ggml's reference: d = m / -8, nibble = min(15, trunc(x / d + 8.5))
      const float d = wt_extreme(x, 32) / -8.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      wt_put_u16(b, float_to_half(d));
      int q[32];
      for (int i = 0; i < 32; ++i) q[i] = std::min(15, static_cast<int>(x[i] * id + 8.5f));
      wt_put_nibbles(b + 2, q);
      return;
    }
    case weight_type::q8_0: {  // ggml's reference: d = amax / 127, q = round(x / d)
      const float d = std::fabs(wt_extreme(x, 32)) / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      wt_put_u16(b, float_to_half(d));
      for (int i = 0; i < 32; ++i) b[2 + i] = static_cast<unsigned char>(static_cast<std::int8_t>(std::lround(x[i] * id)));
      return;
    }
    case weight_type::q4_1:
    case weight_type::q5_1: {
      const int qmax = t == weight_type::q4_1 ? 15 : 31;
      float lo = 0.0f, hi = 0.0f;
      wt_minmax(x, 32, lo, hi);
      const float d = wt_put_f16(b, (hi - lo) / static_cast<float>(qmax));
      const float m = wt_put_f16(b + 2, lo);
      int q[32];
      for (int i = 0; i < 32; ++i) q[i] = wt_code(x[i] - m, d, 0, qmax);
      if (t == weight_type::q4_1) {
        wt_put_nibbles(b + 4, q);
      } else {
        wt_put_high_bits(b + 4, q);
        wt_put_nibbles(b + 8, q);
      }
      return;
    }
    case weight_type::q5_0: {
      const float d = wt_put_f16(b, wt_extreme(x, 32) / -16.0f);
      int q[32];
      for (int i = 0; i < 32; ++i) q[i] = wt_code(x[i], d, -16, 15) + 16;
      wt_put_high_bits(b + 2, q);
      wt_put_nibbles(b + 6, q);
      return;
    }
    case weight_type::iq4_nl: {
      const float d = wt_put_f16(b, wt_extreme(x, 32) / -127.0f);
      int q[32];
      for (int i = 0; i < 32; ++i) q[i] = wt_nearest(kvalues_iq4nl, d != 0.0f ? x[i] / d : 0.0f);
      wt_put_nibbles(b + 2, q);
      return;
    }
    case weight_type::mxfp4: {
      const float amax = std::fabs(wt_extreme(x, 32));
      int e = 0;
      if (amax > 0.0f) {
        int ex = 0;
        std::frexp(amax / 12.0f, &ex);  // amax / 12 < 2^ex
        e = std::min(254, std::max(0, ex + 128));
      }
      b[0] = static_cast<unsigned char>(e);
      const float d = wt_e8m0_half(static_cast<std::uint8_t>(e));
      int q[32];
      for (int i = 0; i < 32; ++i) q[i] = wt_nearest(kvalues_mxfp4, x[i] / d);
      wt_put_nibbles(b + 1, q);
      return;
    }
    case weight_type::q2_k: {
      float d = 0.0f, dmin = 0.0f;
      int sc[16], mn[16];
      wt_kquant_minscale(x, 16, 16, 3, 15, d, dmin, sc, mn, b + 80, b + 82);
      for (int g = 0; g < 16; ++g) b[g] = static_cast<unsigned char>(sc[g] | (mn[g] << 4));
      std::memset(b + 16, 0, 64);
      for (int i = 0; i < 256; ++i) {
        const int h = i / 128, s = (i % 128) / 32, l = i % 32, g = 8 * h + 2 * s + l / 16;
        const int q = wt_kquant_code(x[i], d, dmin, sc[g], mn[g], 3);
        b[16 + 32 * h + l] = static_cast<unsigned char>(b[16 + 32 * h + l] | (q << (2 * s)));
      }
      return;
    }
    case weight_type::q3_k: {
      int sc[16];
      const float d = wt_sym_scales(x, 16, 16, -4, 31, sc);
      wt_put_u16(b + 108, float_to_half(d));
      std::memset(b, 0, 108);
      for (int j = 0; j < 16; ++j) {
        const int u = sc[j] + 32;
        b[96 + j % 8] = static_cast<unsigned char>(b[96 + j % 8] | ((u & 0xF) << (4 * (j / 8))));
        b[104 + j % 4] = static_cast<unsigned char>(b[104 + j % 4] | (((u >> 4) & 3) << (2 * (j / 4))));
      }
      for (int i = 0; i < 256; ++i) {
        const int h = i / 128, s = (i % 128) / 32, l = i % 32, g = 8 * h + 2 * s + l / 16;
        const int u = wt_code(x[i], d * static_cast<float>(sc[g]), -4, 3) + 4;
        b[32 + 32 * h + l] = static_cast<unsigned char>(b[32 + 32 * h + l] | ((u & 3) << (2 * s)));
        if (u >> 2) b[l] = static_cast<unsigned char>(b[l] | (1 << (4 * h + s)));
      }
      return;
    }
    case weight_type::q4_k:
    case weight_type::q5_k: {
      const bool five = t == weight_type::q5_k;
      const int qmax = five ? 31 : 15;
      float d = 0.0f, dmin = 0.0f;
      int sc[8], mn[8];
      wt_kquant_minscale(x, 8, 32, qmax, 63, d, dmin, sc, mn, b, b + 2);
      wt_pack_scale_min_k4(sc, mn, b + 4);
      unsigned char* qh = b + 16;
      unsigned char* qs = b + (five ? 48 : 16);
      std::memset(b + 16, 0, five ? 160 : 128);
      for (int i = 0; i < 256; ++i) {
        const int c = i / 64, hi = (i % 64) / 32, l = i % 32, g = 2 * c + hi;
        const int q = wt_kquant_code(x[i], d, dmin, sc[g], mn[g], qmax);
        qs[32 * c + l] = static_cast<unsigned char>(qs[32 * c + l] | ((q & 0xF) << (4 * hi)));
        if (five && (q >> 4)) qh[l] = static_cast<unsigned char>(qh[l] | (1 << (2 * c + hi)));
      }
      return;
    }
    case weight_type::q6_k: {
      int sc[16];
      const float d = wt_sym_scales(x, 16, 16, -32, 127, sc);
      wt_put_u16(b + 208, float_to_half(d));
      std::memset(b, 0, 208);
      for (int g = 0; g < 16; ++g) b[192 + g] = static_cast<unsigned char>(static_cast<std::int8_t>(sc[g]));
      for (int i = 0; i < 256; ++i) {
        const int h = i / 128, s = (i % 128) / 32, l = i % 32, g = 8 * h + 2 * s + l / 16;
        const int u = wt_code(x[i], d * static_cast<float>(sc[g]), -32, 31) + 32;
        const int lo_at = 64 * h + l + 32 * (s & 1);
        b[lo_at] = static_cast<unsigned char>(b[lo_at] | ((u & 0xF) << (s >= 2 ? 4 : 0)));
        b[128 + 32 * h + l] = static_cast<unsigned char>(b[128 + 32 * h + l] | ((u >> 4) << (2 * s)));
      }
      return;
    }
    case weight_type::iq4_xs: {
      int sc[8];
      const float d = wt_sym_scales(x, 8, 32, -127, 31, sc);
      wt_put_u16(b, float_to_half(d));
      unsigned scales_h = 0;
      std::memset(b + 4, 0, 4);
      for (int g = 0; g < 8; ++g) {
        const int ls = sc[g] + 32;
        b[4 + g / 2] = static_cast<unsigned char>(b[4 + g / 2] | ((ls & 0xF) << (4 * (g % 2))));
        scales_h |= static_cast<unsigned>((ls >> 4) & 3) << (2 * g);
        const float dl = d * static_cast<float>(sc[g]);
        int q[32];
        for (int i = 0; i < 32; ++i) q[i] = wt_nearest(kvalues_iq4nl, dl != 0.0f ? x[32 * g + i] / dl : 0.0f);
        wt_put_nibbles(b + 8 + 16 * g, q);
      }
      wt_put_u16(b + 2, static_cast<std::uint16_t>(scales_h));
      return;
    }
  }
}

}  // namespace detail

/// Decodes n values of type t at src (row_bytes(t, n) bytes, any alignment) into dst; n must be a
/// multiple of block_elems(t). Bit-identical to ggml's to_float for the type.
inline void dequantize_row(weight_type t, const void* src, float* dst, std::size_t n) noexcept {
  const std::size_t be = block_elems(t), bb = block_bytes(t);
  if (be == 0) return;
  const auto* p = static_cast<const unsigned char*>(src);
  for (std::size_t i = 0; i < n / be; ++i) detail::dequant_block(t, p + i * bb, dst + i * be);
}

/// Encodes n floats (a multiple of block_elems(t)) into row_bytes(t, n) bytes at out, with the
/// reference quantizer described at the top of this header.
inline void encode_row(weight_type t, const float* x, std::size_t n, unsigned char* out) noexcept {
  const std::size_t be = block_elems(t), bb = block_bytes(t);
  if (be == 0) return;
  for (std::size_t i = 0; i < n / be; ++i) detail::encode_block(t, x + i * be, out + i * bb);
}

}  // namespace moeroute
