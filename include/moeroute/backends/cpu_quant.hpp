#pragma once
// Quantized CPU expert FFN: the routed experts' weighted SwiGLU / swiglu_oai FFN (weights/layer.hpp)
// computed straight from the stored blocks of every weight type (weights/types.hpp), in caller
// memory (a mapped GGUF, expert blobs, any host buffer), with no per-expert float copy. No Eigen,
// no Vulkan.
//
// Arithmetic. For a quantized tensor, the activations entering it (x for gate/up, the activated
// intermediate a for down) are quantized per 32 values to int8 with a float32 scale (amax / 127,
// round to nearest), as ggml quantizes them to its dot-product types (q8_0 / q8_K); every weight
// block is read as int8 codes with a float scale (and min) per 16 values, the code x activation
// products are summed exactly in integers per 16 values and scaled in float32. f32, f16 and bf16
// tensors are computed in float32 against float32 activations.
//
// cpu_activations::f32 (cpu_ffn_options::activations) keeps every activation in float32 instead:
// each weight row, of any type, is dequantized (weights/dequant.hpp, exactly ggml's to_float) into
// a per-thread scratch row and dotted with the float x / intermediate in float32, so the result is
// the float FFN of the dequantized weights up to float32 rounding (what the Vulkan and Eigen
// backends compute) at the cost of speed; int8 (the default) is ggml's CPU arithmetic.
//
// Instruction sets: the portable path is plain C++; on x86-64 (GCC, Clang) AVX2+FMA and AVX-512
// (BW/VL, with VNNI when present) paths are compiled with function-level target attributes and
// chosen once at run time from the CPU's features, so the header needs no -m flags. Paths agree
// to float rounding (the same integer products; the AVX-512 q4_k / q6_k kernels take the code
// offset and mins through the activation's code sums in float32, and the float order differs).
//
// Threads: the rows of each projection are split over the caller's thread count; every output
// value is computed by exactly one thread with the same code and order, so results are
// bit-identical for any thread count.
//
//   moeroute::cpu_quant_ffn op(layer, {/*threads*/ 2});
//   for (int e = 0; e < E; ++e) op.set_expert(e, weights.expert_weights(l, e));   // views
//   op.run({routing.view(), x, y});

#include <moeroute/backends/ffn_types.hpp>
#include <moeroute/error.hpp>
#include <moeroute/weights/dequant.hpp>
#include <moeroute/weights/expert_view.hpp>
#include <moeroute/weights/layer.hpp>
#include <moeroute/weights/types.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

// MOEROUTE_CPU_QUANT_PORTABLE=1 compiles the portable path only (what non-x86 targets get).
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && \
    !(defined(MOEROUTE_CPU_QUANT_PORTABLE) && MOEROUTE_CPU_QUANT_PORTABLE)
#define MOEROUTE_CQ_X86 1
#include <immintrin.h>
#else
#define MOEROUTE_CQ_X86 0
#endif

namespace moeroute {

/// The instruction-set path of cpu_quant_ffn: best = the widest the CPU has (checked once).
enum class cpu_isa { portable, avx2, avx512, best };

/// Precision of the activations entering the quantized tensors: int8 per 32 values (ggml's CPU
/// arithmetic, fastest) or f32 (dequantized weight rows against float activations; matches the
/// float backends to float32 rounding).
enum class cpu_activations { int8, f32 };

/// "int8" or "f32".
inline const char* cpu_activations_name(cpu_activations a) { return a == cpu_activations::f32 ? "f32" : "int8"; }

/// Options of cpu_quant_ffn: thread count (>= 1, the calling thread included), path, and the
/// activation precision.
struct cpu_ffn_options {
  int threads = 1;
  cpu_isa isa = cpu_isa::best;
  cpu_activations activations = cpu_activations::int8;
};

/// "portable", "avx2", "avx512" or "best".
inline const char* cpu_isa_name(cpu_isa i) {
  switch (i) {
    case cpu_isa::portable: return "portable";
    case cpu_isa::avx2: return "avx2";
    case cpu_isa::avx512: return "avx512";
    case cpu_isa::best: return "best";
  }
  return "unknown";
}

namespace detail::cq {

struct cpu_features {
  bool avx2 = false, avx512 = false, vnni512 = false;
};

inline cpu_features detect_features() noexcept {
  cpu_features f;
#if MOEROUTE_CQ_X86
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = f.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl");
  f.vnni512 = f.avx512 && __builtin_cpu_supports("avx512vnni");
#endif
  return f;
}

inline const cpu_features& features() noexcept {
  static const cpu_features f = detect_features();
  return f;
}

}  // namespace detail::cq

/// True when this CPU (and this build) can run path i; `best` and `portable` always can.
inline bool cpu_supports(cpu_isa i) noexcept {
  switch (i) {
    case cpu_isa::portable: case cpu_isa::best: return true;
    case cpu_isa::avx2: return detail::cq::features().avx2;
    case cpu_isa::avx512: return detail::cq::features().avx512;
  }
  return false;
}

/// The widest path this CPU supports.
inline cpu_isa cpu_best_isa() noexcept {
  if (cpu_supports(cpu_isa::avx512)) return cpu_isa::avx512;
  if (cpu_supports(cpu_isa::avx2)) return cpu_isa::avx2;
  return cpu_isa::portable;
}

namespace detail::cq {

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
/// tq + k0 n, te + k0 n / 4, ts + k0 n / 16. The min terms only when n is a multiple of 256.
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
    if (n % 256 == 0)
      for (std::size_t b = 0; b < n / 256; ++b)
        for (std::size_t i = 0; i < t; ++i) std::memcpy(os + (b * t + i) * 16, s[k0 + i] + 16 * b, 64);
    k0 += t;
  }
}

/// A fused row kernel: out[i] = row . token i of a tile of m tokens (1-4 or 8).
using rowdot_fn = void (*)(const unsigned char*, std::size_t, const act_tile&, int, float*) noexcept;
inline rowdot_fn no_rowdot(weight_type) noexcept { return nullptr; }

/// The kernels of one instruction-set path.
struct kernels {
  void (*quantize)(const float*, std::size_t, std::int8_t*, float*, float*, float*) noexcept;
  void (*unpack)(weight_type, const unsigned char*, std::size_t, std::int8_t*, float*, float*) noexcept;
  float (*dot_q)(const std::int8_t*, const float*, const float*, const std::int8_t*, const float*, const float*,
                 std::size_t) noexcept;
  float (*dot_f)(const float*, const float*, std::size_t) noexcept;
  rowdot_fn (*rowdot)(weight_type) noexcept;  ///< the fused kernel of a type, or nullptr
};

inline kernels portable_kernels() noexcept {
  return {quantize_act_portable, unpack_row_portable, dot_q_portable, dot_f_portable, no_rowdot};
}

// ---------------------------------------------------------------------------------------------
// x86-64 paths: compiled for their instruction sets with target attributes, called only after
// the run-time check of features().
#if MOEROUTE_CQ_X86
#define MOEROUTE_CQ_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MOEROUTE_CQ_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
// the decode helpers of the fused kernels: always inlined into the kernel's loop
#define MOEROUTE_CQ_AVX512_INLINE MOEROUTE_CQ_AVX512 __attribute__((always_inline)) inline

MOEROUTE_CQ_AVX2 inline float hsum256(__m256 v) noexcept {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// 16 nibbles of qs -> 32 bytes: low nibbles first, then high nibbles (the q4_0 order)
MOEROUTE_CQ_AVX2 inline __m256i nibbles32(const unsigned char* qs) noexcept {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m = _mm_set1_epi8(0xF);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(b, 4), m), _mm_and_si128(b, m));
}

MOEROUTE_CQ_AVX2 inline void st(std::int8_t* p, __m256i v) noexcept {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
}
// bits sh, sh + 1 of each byte of qh, moved to bits 4, 5
MOEROUTE_CQ_AVX2 inline __m256i q6_high(__m256i qh, int sh) noexcept {
  return _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(sh)), _mm256_set1_epi8(3)), 4);
}

// Unpack with SSE/AVX2 for q4_0, q8_0, iq4_nl, mxfp4, q4_k, q6_k, iq4_xs; the rest as portable.
MOEROUTE_CQ_AVX2 inline void unpack_row_avx2(weight_type t, const unsigned char* row, std::size_t n, std::int8_t* w,
                                             float* sw, float* mw) noexcept {
  const std::size_t be = block_elems(t), bb = block_bytes(t), nb = n / be;
  switch (t) {
    case weight_type::q4_0: {
      const __m256i off = _mm256_set1_epi8(8);
      for (std::size_t i = 0; i < nb; ++i, row += bb, w += 32, sw += 2) {
        st(w, _mm256_sub_epi8(nibbles32(row + 2), off));
        sw[0] = sw[1] = wt_f16(row);
      }
      return;
    }
    case weight_type::q8_0:
      for (std::size_t i = 0; i < nb; ++i, row += bb, w += 32, sw += 2) {
        st(w, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2)));
        sw[0] = sw[1] = wt_f16(row);
      }
      return;
    case weight_type::iq4_nl:
    case weight_type::mxfp4: {
      const bool mx = t == weight_type::mxfp4;
      const __m256i book = _mm256_broadcastsi128_si256(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(mx ? kvalues_mxfp4 : kvalues_iq4nl)));
      for (std::size_t i = 0; i < nb; ++i, row += bb, w += 32, sw += 2) {
        st(w, _mm256_shuffle_epi8(book, nibbles32(row + (mx ? 1 : 2))));
        sw[0] = sw[1] = mx ? e8m0_half(row[0]) : wt_f16(row);
      }
      return;
    }
    case weight_type::iq4_xs: {
      const __m256i book = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kvalues_iq4nl)));
      for (std::size_t i = 0; i < nb; ++i, row += bb) {
        const float d = wt_f16(row);
        const unsigned scales_h = wt_u16(row + 2);
        for (int g = 0; g < 8; ++g, w += 32, sw += 2) {
          const int ls = static_cast<int>(((row[4 + g / 2] >> (4 * (g % 2))) & 0xFu) | (((scales_h >> (2 * g)) & 3u) << 4));
          sw[0] = sw[1] = d * static_cast<float>(ls - 32);
          st(w, _mm256_shuffle_epi8(book, nibbles32(row + 8 + 16 * g)));
        }
      }
      return;
    }
    case weight_type::q4_k: {
      const __m256i m4 = _mm256_set1_epi8(0xF);
      for (std::size_t i = 0; i < nb; ++i, row += bb) {
        const float d = wt_f16(row), dmin = wt_f16(row + 2);
        for (int c = 0; c < 4; ++c, w += 64, sw += 4, mw += 4) {
          const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 16 + 32 * c));
          st(w, _mm256_and_si256(q, m4));
          st(w + 32, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
          for (int k = 0; k < 2; ++k) {
            int sc = 0, m = 0;
            wt_scale_min_k4(2 * c + k, row + 4, sc, m);
            sw[2 * k] = sw[2 * k + 1] = d * static_cast<float>(sc);
            mw[2 * k] = mw[2 * k + 1] = dmin * static_cast<float>(m);
          }
        }
      }
      return;
    }
    case weight_type::q6_k: {
      const __m256i m4 = _mm256_set1_epi8(0xF), o = _mm256_set1_epi8(32);
      for (std::size_t i = 0; i < nb; ++i, row += bb) {
        const float d = wt_f16(row + 208);
        for (int g = 0; g < 16; ++g) sw[g] = d * static_cast<float>(static_cast<std::int8_t>(row[192 + g]));
        sw += 16;
        for (int h = 0; h < 2; ++h, w += 128) {
          const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 64 * h));
          const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 64 * h + 32));
          const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 128 + 32 * h));
          st(w, _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(l0, m4), q6_high(qh, 0)), o));
          st(w + 32, _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(l1, m4), q6_high(qh, 2)), o));
          st(w + 64, _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), q6_high(qh, 4)), o));
          st(w + 96, _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), q6_high(qh, 6)), o));
        }
      }
      return;
    }
    default: unpack_row_portable(t, row, n, w, sw, mw); return;
  }
}

// acc + the 32 products at `at` (two 16-groups), scaled
MOEROUTE_CQ_AVX2 inline __m256 dot_step_avx2(const std::int8_t* w, const float* sw, const std::int8_t* x, const float* dx,
                                             std::size_t at, __m256 acc) noexcept {
  const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + at));
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + at));
  const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv)),
                                      _mm256_set1_epi16(1));
  const std::size_t g = at / 16;
  const __m256 sc = _mm256_set_m128(_mm_set1_ps(sw[g + 1] * dx[g + 1]), _mm_set1_ps(sw[g] * dx[g]));
  return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), sc, acc);
}

MOEROUTE_CQ_AVX2 inline float dot_q_avx2(const std::int8_t* w, const float* sw, const float* mw, const std::int8_t* x,
                                         const float* dx, const float* xs, std::size_t n) noexcept {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    acc0 = dot_step_avx2(w, sw, x, dx, i, acc0);
    acc1 = dot_step_avx2(w, sw, x, dx, i + 32, acc1);
  }
  if (i < n) acc0 = dot_step_avx2(w, sw, x, dx, i, acc0);
  float r = hsum256(_mm256_add_ps(acc0, acc1));
  if (mw != nullptr) {
    __m256 m = _mm256_setzero_ps();
    std::size_t g = 0;
    for (; g + 8 <= n / 16; g += 8) m = _mm256_fmadd_ps(_mm256_loadu_ps(mw + g), _mm256_loadu_ps(xs + g), m);
    r -= hsum256(m);
    for (; g < n / 16; ++g) r -= mw[g] * xs[g];
  }
  return r;
}

MOEROUTE_CQ_AVX2 inline float dot_f_avx2(const float* w, const float* x, std::size_t n) noexcept {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
  }
  float r = hsum256(_mm256_add_ps(a0, a1));
  for (; i < n; ++i) r += w[i] * x[i];
  return r;
}

// A pairwise tree over the 16 lanes (short dependency chain: one per row and token).
MOEROUTE_CQ_AVX512 inline float hsum512(__m512 v) noexcept {
  const __m512d d = _mm512_castps_pd(v);
  const __m256 h = _mm256_add_ps(_mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xF, d, 0)),
                                 _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xF, d, 1)));
  return hsum256(h);
}

// (maskz forms: GCC 12's unmasked ones warn in -Wmaybe-uninitialized, GCC bug 105593)
// The 16 product lanes of four 16-value groups (4 lanes each).
MOEROUTE_CQ_AVX512 inline __m512 four_scales(__m128 s4) noexcept {
  const __m512i spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  return _mm512_maskz_permutexvar_ps(0xFFFF, spread, _mm512_maskz_broadcast_f32x4(0xFFFF, s4));
}

// acc + the (up to) 64 products at `at` (masked by km; ks: their 16-groups), scaled
template <bool Vnni>
MOEROUTE_CQ_AVX512 inline __m512 dot_step_avx512(const std::int8_t* w, const float* sw, const std::int8_t* x,
                                                 const float* dx, std::size_t at, __mmask64 km, __mmask8 ks,
                                                 __m512 acc) noexcept {
  const __m512i zero = _mm512_setzero_si512();
  const __m512i wv = _mm512_maskz_loadu_epi8(km, w + at);
  const __m512i xv = _mm512_maskz_loadu_epi8(km, x + at);
  const __m512i aw = _mm512_abs_epi8(wv);
  const __m512i sx = _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(wv), zero, xv);
  __m512i p;
  if constexpr (Vnni)
    p = _mm512_dpbusd_epi32(zero, aw, sx);
  else
    p = _mm512_madd_epi16(_mm512_maddubs_epi16(aw, sx), _mm512_set1_epi16(1));
  const std::size_t g = at / 16;
  const __m128 s4 = _mm_mul_ps(_mm_maskz_loadu_ps(ks, sw + g), _mm_maskz_loadu_ps(ks, dx + g));
  const __m512 sc = four_scales(s4);
  return _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, p), sc, acc);
}

template <bool Vnni>
MOEROUTE_CQ_AVX512 inline float dot_q_avx512(const std::int8_t* w, const float* sw, const float* mw,
                                             const std::int8_t* x, const float* dx, const float* xs,
                                             std::size_t n) noexcept {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  std::size_t i = 0;
  for (; i + 128 <= n; i += 128) {
    acc0 = dot_step_avx512<Vnni>(w, sw, x, dx, i, ~__mmask64{0}, 0xF, acc0);
    acc1 = dot_step_avx512<Vnni>(w, sw, x, dx, i + 64, ~__mmask64{0}, 0xF, acc1);
  }
  for (; i < n; i += 64) {
    const std::size_t left = std::min<std::size_t>(64, n - i);
    acc0 = dot_step_avx512<Vnni>(w, sw, x, dx, i, left == 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1,
                                 static_cast<__mmask8>((1u << (left / 16)) - 1), acc0);
  }
  float r = hsum512(_mm512_add_ps(acc0, acc1));
  if (mw != nullptr) {
    __m512 m = _mm512_setzero_ps();
    const std::size_t ng = n / 16;
    for (std::size_t g = 0; g < ng; g += 16) {
      const __mmask16 k = ng - g >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << (ng - g)) - 1);
      m = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, mw + g), _mm512_maskz_loadu_ps(k, xs + g), m);
    }
    r -= hsum512(m);
  }
  return r;
}

// Fused AVX-512 row kernels: one 64-value chunk of a row decoded into a register (codes, a scale
// per 16 values spread over the 16 int32 lanes of the products, a min per 16 values), then dotted
// with up to 4 tokens at once, without writing the unpacked row.
MOEROUTE_CQ_AVX512 inline __m512i cat256(__m256i lo, __m256i hi) noexcept {
  return _mm512_maskz_inserti64x4(0xFF, _mm512_castsi256_si512(lo), hi, 1);  // maskz: GCC bug 105593
}
// The 16 product lanes of two 32-value blocks: lanes 0-7 scale a, lanes 8-15 scale b.
MOEROUTE_CQ_AVX512 inline __m512 two_scales(__m128 ab) noexcept {
  const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_maskz_permutexvar_ps(0xFFFF, idx, _mm512_maskz_broadcast_f32x4(0xFFFF, ab));
}
// The f16 scales at a and b as the lanes of two_scales.
MOEROUTE_CQ_AVX512 inline __m512 two_f16_scales(const unsigned char* a, const unsigned char* b) noexcept {
  const int bits = a[0] | (a[1] << 8) | (b[0] << 16) | (b[1] << 24);
  return two_scales(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)));
}
// The 16 nibbles of two blocks (at a and b) as 64 codes: low then high nibbles of a, then of b.
MOEROUTE_CQ_AVX512 inline __m512i nibbles64(const unsigned char* a, const unsigned char* b) noexcept {
  const __m256i v = _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b)),
                                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(a)));
  const __m256i m4 = _mm256_set1_epi8(0xF);
  const __m512i lh = cat256(_mm256_and_si256(v, m4), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
  return _mm512_maskz_shuffle_i64x2(0xFF, lh, lh, _MM_SHUFFLE(3, 1, 2, 0));  // [lo a, hi a, lo b, hi b]
}

template <weight_type WT>
MOEROUTE_CQ_AVX512_INLINE void load_chunk(const unsigned char* row, std::size_t c, __m512i& q, __m512& sc) noexcept {
  if constexpr (WT == weight_type::q4_0) {
    const unsigned char* b = row + 2 * c * 18;
    q = _mm512_sub_epi8(nibbles64(b + 2, b + 20), _mm512_set1_epi8(8));
    sc = two_f16_scales(b, b + 18);
  } else if constexpr (WT == weight_type::q8_0) {
    const unsigned char* b = row + 2 * c * 34;
    q = cat256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2)),
               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 36)));
    sc = two_f16_scales(b, b + 34);
  } else if constexpr (WT == weight_type::mxfp4 || WT == weight_type::iq4_nl) {
    constexpr bool mx = WT == weight_type::mxfp4;
    constexpr std::size_t bb = mx ? 17 : 18, qo = mx ? 1 : 2;
    const unsigned char* b = row + 2 * c * bb;
    const __m512i book = _mm512_maskz_broadcast_i32x4(
        0xFFFF, _mm_loadu_si128(reinterpret_cast<const __m128i*>(mx ? kvalues_mxfp4 : kvalues_iq4nl)));
    q = _mm512_shuffle_epi8(book, nibbles64(b + qo, b + bb + qo));
    if constexpr (mx)
      sc = two_scales(_mm_set_ps(0.0f, 0.0f, e8m0_half(b[bb]), e8m0_half(b[0])));
    else
      sc = two_f16_scales(b, b + bb);
  }
}

// out[i] = row . token i of a tile of M tokens (q4_0, q8_0, mxfp4, iq4_nl: signed codes).
template <weight_type WT, bool Vnni, std::size_t M>
MOEROUTE_CQ_AVX512 inline void rowdot_avx512(const unsigned char* row, std::size_t n, const act_tile& x,
                                             float* out) noexcept {
  constexpr std::size_t A = M == 1 ? 2 : 1;  // one token: two chains
  const __m512i zero = _mm512_setzero_si512();
  __m512 acc[A][M];
  for (std::size_t i = 0; i < M; ++i)
    for (std::size_t a = 0; a < A; ++a) acc[a][i] = _mm512_setzero_ps();
  const std::int8_t* xq = x.q;
  const float* xe = x.e;
  for (std::size_t c = 0; c < n / 64; ++c, xq += 64 * M, xe += 16 * M) {
    __m512i q;
    __m512 sc;
    // the stream, across pages (a chunk is 34-68 bytes: one line ahead per chunk keeps up)
    _mm_prefetch(reinterpret_cast<const char*>(row) + c * 64 * block_bytes(WT) / 32 + 1024, _MM_HINT_T0);
    load_chunk<WT>(row, c, q, sc);
    const __m512i aq = _mm512_abs_epi8(q);
    const __mmask64 neg = _mm512_movepi8_mask(q);
    for (std::size_t i = 0; i < M; ++i) {
      const __m512i xv = _mm512_loadu_si512(xq + 64 * i);
      const __m512i sx = _mm512_mask_sub_epi8(xv, neg, zero, xv);
      __m512i p;
      if constexpr (Vnni)
        p = _mm512_dpbusd_epi32(zero, aq, sx);
      else
        p = _mm512_madd_epi16(_mm512_maddubs_epi16(aq, sx), _mm512_set1_epi16(1));
      const __m512 s = _mm512_mul_ps(sc, _mm512_loadu_ps(xe + 16 * i));
      __m512& a = acc[c % A][i];
      a = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, p), s, a);
    }
  }
  for (std::size_t i = 0; i < M; ++i) out[i] = hsum512(A == 2 ? _mm512_add_ps(acc[0][i], acc[A - 1][i]) : acc[0][i]);
}

// K-quant super-block kernels (q4_k, q6_k): the scales (and mins) of a 256-value super-block are
// decoded once into one vector of floats, and its four 64-value chunks take their per-lane scales
// from it with one permute each. Codes are read unsigned (q4_k 0..15; q6_k 0..63, its offset 32
// moved into the min term: 32 * scale per 16 values, like q4_k's mins), so a chunk's integer dot
// is one vpdpbusd per token with no sign fix-up; the min terms of a super-block are one 16-lane
// multiply-add per token against the activation's code sums per 16 values.

// The 8 scales then the 8 mins of a q4_k / q5_k super-block (the 12 bytes at p, readable to
// p + 16), as 16 bytes: scale j < 4 is byte j & 63, min j < 4 byte j + 4 & 63; for j >= 4 the low
// 4 bits come from byte j + 4 (scale: low nibble, min: high nibble) and bits 4-5 from the top two
// bits of byte j - 4 (scale) or j (min).
MOEROUTE_CQ_AVX512_INLINE __m128i k4_scales_mins(const unsigned char* p) noexcept {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i lo = _mm_or_si128(_mm_shuffle_epi8(v, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, -1, -1, -1, -1)),
                                  _mm_shuffle_epi8(_mm_srli_epi16(v, 4),
                                                   _mm_setr_epi8(-1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 8, 9, 10, 11)));
  const __m128i hi = _mm_shuffle_epi8(v, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
  return _mm_or_si128(_mm_and_si128(lo, _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 15, 15, 15, 15)),
                      _mm_and_si128(_mm_srli_epi16(hi, 2), _mm_set1_epi8(0x30)));
}

// Lane l of the result: lane idx[l] of v (maskz: GCC bug 105593).
MOEROUTE_CQ_AVX512_INLINE __m512 lanes(__m512 v, __m512i idx) noexcept { return _mm512_maskz_permutexvar_ps(0xFFFF, idx, v); }

// Super-block sb of a q4_k / q6_k row: sf = the float scale of each product lane's 16-group source
// (q4_k: lanes 0-7 d * scale_j, lanes 8-15 dmin * min_j per 32 values; q6_k: d * scale_g per 16).
template <weight_type WT>
MOEROUTE_CQ_AVX512_INLINE __m512 k_superblock_scales(const unsigned char* b) noexcept {
  if constexpr (WT == weight_type::q4_k) {
    const __m512 sm = _mm512_maskz_cvtepi32_ps(0xFFFF, _mm512_maskz_cvtepu8_epi32(0xFFFF, k4_scales_mins(b + 4)));
    std::uint32_t dd;
    std::memcpy(&dd, b, 4);
    const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dd)));  // d, dmin
    const __m512i sel = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_mul_ps(sm, lanes(_mm512_zextps128_ps512(dm), sel));
  } else {
    const __m512 s = _mm512_maskz_cvtepi32_ps(
        0xFFFF, _mm512_maskz_cvtepi8_epi32(0xFFFF, _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 192))));
    return _mm512_mul_ps(s, _mm512_set1_ps(_cvtsh_ss(static_cast<unsigned short>(b[208] | (b[209] << 8)))));
  }
}

// The 64 unsigned codes of chunk k (0..3) of the super-block at b.
template <weight_type WT>
MOEROUTE_CQ_AVX512_INLINE __m512i k_chunk_codes(const unsigned char* b, int k) noexcept {
  const __m512i m4 = _mm512_set1_epi8(0xF);
  if constexpr (WT == weight_type::q4_k) {
    // 32 bytes: low nibbles are values 0-31, high nibbles 32-63 of the chunk
    const __m512i v = _mm512_maskz_broadcast_i64x4(0xFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16 + 32 * k)));
    const __m512i sh = _mm512_set_epi64(0x0004000400040004, 0x0004000400040004, 0x0004000400040004, 0x0004000400040004, 0, 0, 0, 0);
    return _mm512_and_si512(_mm512_srlv_epi16(v, sh), m4);
  } else {
    // half h = k / 2: 64 bytes ql (low nibbles: chunk 2h, high nibbles: chunk 2h + 1) and 32 bytes
    // qh (2 bits per value: bits 0-1 values 0-31, 2-3 values 32-63, 4-5 64-95, 6-7 96-127)
    const int h = k / 2;
    const __m512i ql = _mm512_loadu_si512(b + 64 * h);
    const __m512i qh = _mm512_maskz_broadcast_i64x4(0xFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h)));
    const __m512i m30 = _mm512_set1_epi8(0x30);
    if (k % 2 == 0) {
      const __m512i sh = _mm512_set_epi64(0x0002000200020002, 0x0002000200020002, 0x0002000200020002, 0x0002000200020002,
                                          0x0004000400040004, 0x0004000400040004, 0x0004000400040004, 0x0004000400040004);
      return _mm512_ternarylogic_epi32(ql, m4, _mm512_and_si512(_mm512_sllv_epi16(qh, sh), m30), 0xEA);  // (a & b) | c
    }
    const __m512i sh = _mm512_set_epi64(0x0002000200020002, 0x0002000200020002, 0x0002000200020002, 0x0002000200020002, 0, 0, 0, 0);
    return _mm512_ternarylogic_epi32(_mm512_srli_epi16(ql, 4), m4, _mm512_and_si512(_mm512_srlv_epi16(qh, sh), m30), 0xEA);
  }
}

// out[i] = row . token i of a tile of M tokens for a q4_k or q6_k row.
template <weight_type WT, bool Vnni, std::size_t M>
MOEROUTE_CQ_AVX512 inline void rowdot_k_avx512(const unsigned char* row, std::size_t n, const act_tile& x,
                                               float* out) noexcept {
  constexpr bool q4k = WT == weight_type::q4_k;
  constexpr std::size_t bb = q4k ? 144 : 210, A = M == 1 ? 2 : 1;  // one token: two chains
  const __m512i zero = _mm512_setzero_si512();
  // lanes of a chunk's scales: q4_k two 32-value scales (8 lanes each), q6_k four 16-value ones
  const __m512i sel[4] = {
      q4k ? _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0)
          : _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
      q4k ? _mm512_set_epi32(3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2)
          : _mm512_set_epi32(7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4),
      q4k ? _mm512_set_epi32(5, 5, 5, 5, 5, 5, 5, 5, 4, 4, 4, 4, 4, 4, 4, 4)
          : _mm512_set_epi32(11, 11, 11, 11, 10, 10, 10, 10, 9, 9, 9, 9, 8, 8, 8, 8),
      q4k ? _mm512_set_epi32(7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 6, 6, 6)
          : _mm512_set_epi32(15, 15, 15, 15, 14, 14, 14, 14, 13, 13, 13, 13, 12, 12, 12, 12)};
  // the min of each 16-value group (q4_k: the lane of its 32-value sub-block's min)
  const __m512i msel = _mm512_set_epi32(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
  __m512 acc[A][M];
  for (std::size_t i = 0; i < M; ++i)
    for (std::size_t a = 0; a < A; ++a) acc[a][i] = _mm512_setzero_ps();
  const std::int8_t* xq = x.q;
  const float* xe = x.e;
  const float* xs = x.s;
  for (std::size_t sb = 0; sb < n / 256; ++sb, xs += 16 * M) {
    const unsigned char* b = row + sb * bb;
    _mm_prefetch(reinterpret_cast<const char*>(b) + 1024, _MM_HINT_T0);  // the stream, across pages
    _mm_prefetch(reinterpret_cast<const char*>(b) + 1024 + 64, _MM_HINT_T0);
    if constexpr (!q4k) _mm_prefetch(reinterpret_cast<const char*>(b) + 1024 + 128, _MM_HINT_T0);
    const __m512 sf = k_superblock_scales<WT>(b);
    // q4_k: value = d sc q - dmin m; q6_k: value = d sc (q - 32)
    const __m512 mn = q4k ? lanes(sf, msel) : _mm512_mul_ps(sf, _mm512_set1_ps(32.0f));
    for (std::size_t i = 0; i < M; ++i) acc[0][i] = _mm512_fnmadd_ps(mn, _mm512_loadu_ps(xs + 16 * i), acc[0][i]);
    for (int k = 0; k < 4; ++k, xq += 64 * M, xe += 16 * M) {
      const __m512i q = k_chunk_codes<WT>(b, k);
      const __m512 sc = lanes(sf, sel[k]);
      for (std::size_t i = 0; i < M; ++i) {
        const __m512i xv = _mm512_loadu_si512(xq + 64 * i);
        __m512i p;
        if constexpr (Vnni)
          p = _mm512_dpbusd_epi32(zero, q, xv);
        else
          p = _mm512_madd_epi16(_mm512_maddubs_epi16(q, xv), _mm512_set1_epi16(1));
        __m512& a = acc[static_cast<std::size_t>(k) % A][i];
        a = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, p), _mm512_mul_ps(sc, _mm512_loadu_ps(xe + 16 * i)), a);
      }
    }
  }
  for (std::size_t i = 0; i < M; ++i) {
    __m512 a = acc[0][i];
    if constexpr (A == 2) a = _mm512_add_ps(a, acc[A - 1][i]);
    out[i] = hsum512(a);
  }
}

// The fused kernel of type WT for a tile of M tokens.
template <weight_type WT, bool Vnni, std::size_t M>
MOEROUTE_CQ_AVX512 inline void rowdot_tile(const unsigned char* row, std::size_t n, const act_tile& x,
                                           float* out) noexcept {
  if constexpr (WT == weight_type::q4_k || WT == weight_type::q6_k)
    rowdot_k_avx512<WT, Vnni, M>(row, n, x, out);
  else
    rowdot_avx512<WT, Vnni, M>(row, n, x, out);
}

// The same for a tile of m tokens (1-4 or max_tile).
template <weight_type WT, bool Vnni>
MOEROUTE_CQ_AVX512 inline void rowdot_avx512_m(const unsigned char* row, std::size_t n, const act_tile& x, int m,
                                               float* out) noexcept {
  switch (m) {
    case 1: rowdot_tile<WT, Vnni, 1>(row, n, x, out); return;
    case 2: rowdot_tile<WT, Vnni, 2>(row, n, x, out); return;
    case 3: rowdot_tile<WT, Vnni, 3>(row, n, x, out); return;
    case 4: rowdot_tile<WT, Vnni, 4>(row, n, x, out); return;
    default: rowdot_tile<WT, Vnni, max_tile>(row, n, x, out); return;
  }
}

// The fused kernel of type t, or nullptr (then the row is unpacked and dotted per token).
template <bool Vnni>
inline rowdot_fn rowdot_avx512_for(weight_type t) noexcept {
  switch (t) {
    case weight_type::q4_0: return rowdot_avx512_m<weight_type::q4_0, Vnni>;
    case weight_type::q8_0: return rowdot_avx512_m<weight_type::q8_0, Vnni>;
    case weight_type::mxfp4: return rowdot_avx512_m<weight_type::mxfp4, Vnni>;
    case weight_type::iq4_nl: return rowdot_avx512_m<weight_type::iq4_nl, Vnni>;
    case weight_type::q4_k: return rowdot_avx512_m<weight_type::q4_k, Vnni>;
    case weight_type::q6_k: return rowdot_avx512_m<weight_type::q6_k, Vnni>;
    default: return nullptr;
  }
}

MOEROUTE_CQ_AVX512 inline float dot_f_avx512(const float* w, const float* x, std::size_t n) noexcept {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
  }
  float r = hsum512(_mm512_add_ps(a0, a1));
  for (; i < n; ++i) r += w[i] * x[i];
  return r;
}
#endif

// ---------------------------------------------------------------------------------------------
// A small persistent thread pool: run(f) calls f(i) for i in [0, n) on n threads (the caller is
// thread 0) and returns when all are done.

class pool {
 public:
  explicit pool(int n) : n_(n) {
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, i] { loop(i); });
  }
  ~pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  int size() const noexcept { return n_; }

  template <class F>
  void run(F& f) {
    if (n_ == 1) {
      f(0);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      fn_ = [](void* c, int i) { (*static_cast<F*>(c))(i); };
      ctx_ = &f;
      pending_.store(n_ - 1, std::memory_order_relaxed);
      ++gen_;
    }
    cv_.notify_all();
    f(0);
    // the workers' share is usually short: spin a little before sleeping
    for (int spin = 0; spin < 20000 && pending_.load(std::memory_order_acquire) != 0; ++spin) std::this_thread::yield();
    if (pending_.load(std::memory_order_acquire) != 0) {
      std::unique_lock<std::mutex> lk(m_);
      done_cv_.wait(lk, [this] { return pending_.load(std::memory_order_acquire) == 0; });
    }
  }

 private:
  void loop(int i) {
    std::uint64_t seen = 0;
    for (;;) {
      void (*fn)(void*, int) = nullptr;
      void* ctx = nullptr;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || gen_ != seen; });
        if (stop_) return;
        seen = gen_;
        fn = fn_;
        ctx = ctx_;
      }
      fn(ctx, i);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(m_);
        done_cv_.notify_one();
      }
    }
  }

  int n_;
  std::vector<std::thread> workers_;
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  std::uint64_t gen_ = 0;
  bool stop_ = false;
  void (*fn_)(void*, int) = nullptr;
  void* ctx_ = nullptr;
  std::atomic<int> pending_{0};
};

// [begin, end) of part i of n equal parts of [0, total), rounded to multiples of `align`.
inline void split(std::size_t total, int i, int n, std::size_t align, std::size_t& begin, std::size_t& end) noexcept {
  const std::size_t units = (total + align - 1) / align;
  begin = std::min(total, units * static_cast<std::size_t>(i) / static_cast<std::size_t>(n) * align);
  end = std::min(total, units * static_cast<std::size_t>(i + 1) / static_cast<std::size_t>(n) * align);
}

}  // namespace detail::cq

/// Quantized CPU expert FFN over expert weights in caller memory (see the top of this header).
class cpu_quant_ffn {
 public:
  /// layer: the MoE layer (every weight type of weights/types.hpp); opt: threads and path. Throws
  /// moeroute::error (invalid_argument) for a bad layer, a thread count < 1, or a path this CPU
  /// does not have.
  cpu_quant_ffn(const ffn_layer& layer, cpu_ffn_options opt = {}) : layer_(layer) {
    const std::string why = check_ffn_layer(layer);
    MOEROUTE_CHECK(why.empty(), errc::invalid_argument, "cpu_quant_ffn: ", why);
    MOEROUTE_CHECK(opt.threads >= 1 && opt.threads <= 1024, errc::invalid_argument,
                   "cpu_quant_ffn: threads must be in [1, 1024], got ", opt.threads);
    MOEROUTE_CHECK(cpu_supports(opt.isa), errc::invalid_argument, "cpu_quant_ffn: this CPU has no ",
                   cpu_isa_name(opt.isa), " path");
    isa_ = opt.isa == cpu_isa::best ? cpu_best_isa() : opt.isa;
    k_ = kernels_for(isa_);
    experts_.assign(static_cast<std::size_t>(layer.num_experts), expert_weights_view{});
    threads_ = opt.threads;
    f32_act_ = opt.activations == cpu_activations::f32;
    if (threads_ > 1) pool_ = std::make_unique<detail::cq::pool>(threads_);
    scratch_.resize(static_cast<std::size_t>(threads_));
  }

  const ffn_layer& layer() const noexcept { return layer_; }
  /// The path actually used (never `best`).
  cpu_isa isa() const noexcept { return isa_; }
  int threads() const noexcept { return threads_; }
  cpu_activations activations() const noexcept {
    return f32_act_ ? cpu_activations::f32 : cpu_activations::int8;
  }

  /// Sets expert e's weights (views, no copy). Every routed expert must be set before run().
  /// Throws invalid_argument for e outside [0, E), a null gate/up/down, or missing biases when
  /// the layer has them.
  void set_expert(int e, const expert_weights_view& v) {
    MOEROUTE_CHECK(e >= 0 && e < layer_.num_experts, errc::invalid_argument, "cpu_quant_ffn: expert ", e,
                   " outside [0, ", layer_.num_experts, ")");
    MOEROUTE_CHECK(v.gate != nullptr && v.up != nullptr && v.down != nullptr, errc::invalid_argument,
                   "cpu_quant_ffn: expert ", e, ": gate, up and down must not be null");
    MOEROUTE_CHECK(!layer_.has_bias || (v.gate_bias != nullptr && v.up_bias != nullptr && v.down_bias != nullptr),
                   errc::invalid_argument, "cpu_quant_ffn: expert ", e, ": the layer has biases but the view has none");
    experts_[static_cast<std::size_t>(e)] = v;
  }

  /// Sets expert e from a blob in the weights/layer.hpp layout (views into it, no copy; 4-byte
  /// aligned when the layer has biases).
  void set_expert_blob(int e, const void* blob) {
    MOEROUTE_CHECK(blob != nullptr, errc::invalid_argument, "cpu_quant_ffn: expert ", e, ": blob is null");
    const auto* p = static_cast<const unsigned char*>(blob);
    expert_weights_view v;
    v.gate = p + layer_.gate_offset();
    v.up = p + layer_.up_offset();
    v.down = p + layer_.down_offset();
    if (layer_.has_bias) {
      MOEROUTE_CHECK(reinterpret_cast<std::uintptr_t>(p) % 4 == 0, errc::invalid_argument, "cpu_quant_ffn: expert ", e,
                     ": a blob with biases must be 4-byte aligned");
      const auto* b = reinterpret_cast<const float*>(p + layer_.bias_offset());
      v.gate_bias = b;
      v.up_bias = b + layer_.ffn;
      v.down_bias = b + 2 * layer_.ffn;
    }
    set_expert(e, v);
  }

  /// Empty when run() can compute args, else the reason (bad routing, x or y null, a routed
  /// expert without weights).
  std::string can_implement(const ffn_args& a, const std::uint8_t* select = nullptr) const {
    std::string why = check_routing(a.routing, layer_.num_experts);
    if (!why.empty()) return why;
    if (a.routing.num_tokens > 0 && (a.x == nullptr || a.y == nullptr)) return "x or y is null";
    for (std::size_t j = 0; j < a.routing.nnz(); ++j) {
      if (select != nullptr && select[j] == 0) continue;
      if (experts_[static_cast<std::size_t>(a.routing.ids[j])].gate == nullptr)
        return detail::concat("expert ", a.routing.ids[j], " is routed to but has no weights set");
    }
    return {};
  }

  /// y_t = sum over the routed entries j of token t of w_j * FFN_{id_j}(x_t), the contract of the
  /// other backends (ffn_args). select (optional, one byte per routing entry, CSR order): only
  /// entries with select[j] != 0 are computed. accumulate: y is added to instead of overwritten.
  /// Throws bad_input when can_implement fails. No allocation after the first call at a given
  /// size (the workspace grows); results do not depend on the thread count.
  void run(const ffn_args& a, const std::uint8_t* select = nullptr, bool accumulate = false) {
    const std::string why = can_implement(a, select);
    MOEROUTE_CHECK(why.empty(), errc::bad_input, "cpu_quant_ffn: ", why);
    const auto& r = a.routing;
    const std::size_t T = r.num_tokens, nnz = r.nnz();
    const auto E = static_cast<std::size_t>(layer_.num_experts);
    const auto H = static_cast<std::size_t>(layer_.hidden), F = static_cast<std::size_t>(layer_.ffn);
    if (T == 0) return;

    // group the selected entries by expert (entry order within an expert: CSR order)
    eoff_.assign(E + 1, 0);
    token_of_.resize(nnz);
    for (std::size_t t = 0; t < T; ++t)
      for (std::uint32_t j = r.offsets[t]; j < r.offsets[t + 1]; ++j) token_of_[j] = static_cast<std::uint32_t>(t);
    for (std::size_t j = 0; j < nnz; ++j)
      if (select == nullptr || select[j] != 0) ++eoff_[static_cast<std::size_t>(r.ids[j]) + 1];
    for (std::size_t e = 0; e < E; ++e) eoff_[e + 1] += eoff_[e];
    cursor_.assign(eoff_.begin(), eoff_.end() - 1);
    list_.resize(eoff_[E]);
    for (std::size_t j = 0; j < nnz; ++j)
      if (select == nullptr || select[j] != 0) list_[cursor_[static_cast<std::size_t>(r.ids[j])]++] = static_cast<std::uint32_t>(j);
    active_.clear();
    for (std::size_t e = 0; e < E; ++e)
      if (eoff_[e + 1] > eoff_[e]) active_.push_back(static_cast<std::uint32_t>(e));

    const bool gu_q = !is_float(layer_.gate_type) || !is_float(layer_.up_type);
    const bool d_q = !is_float(layer_.down_type);
    grow(xq_, gu_q ? T * H : 0);
    grow(xd_, gu_q ? T * H / 16 : 0);
    grow(xs_, gu_q ? T * H / 16 : 0);
    grow(xe_, gu_q ? T * H / 4 : 0);
    grow(act_, nnz * F);
    grow(aq_, d_q ? nnz * F : 0);
    grow(ad_, d_q ? nnz * F / 16 : 0);
    grow(as_, d_q ? nnz * F / 16 : 0);
    grow(ae_, d_q ? nnz * F / 4 : 0);
    grow(part_, nnz * H);
    const std::size_t maxn = std::max(H, F);
    for (auto& s : scratch_) {
      grow(s.w, maxn);
      grow(s.sw, maxn / 16 + 1);
      grow(s.mw, maxn / 16 + 1);
      grow(s.f, maxn);
      grow(s.g, T);
      grow(s.tq, T * maxn);
      grow(s.te, T * maxn / 4);
      grow(s.ts, T * maxn / 16);
      grow(s.pq, T);
      grow(s.pe, T);
      grow(s.ps, T);
    }

    const int n = threads_;
    // 1. quantize the tokens' activations (tokens split over threads)
    auto quant_x = [&](int i) {
      if (!gu_q) return;
      std::size_t b = 0, e = 0;
      detail::cq::split(T, i, n, 1, b, e);
      for (std::size_t t = b; t < e; ++t)
        k_.quantize(a.x + t * H, H, xq_.data() + t * H, xd_.data() + t * H / 16, xs_.data() + t * H / 16,
                    xe_.data() + t * H / 4);
    };
    dispatch(quant_x);
    const act_rows xa{a.x, xq_.data(), xd_.data(), xs_.data(), xe_.data(), H, token_of_.data()};
    const act_rows aa{act_.data(), aq_.data(), ad_.data(), as_.data(), ae_.data(), F, nullptr};
    // 2. gate / up rows split over threads; activation per (entry, row)
    auto gate_up = [&](int i) {
      std::size_t f0 = 0, f1 = 0;
      detail::cq::split(F, i, n, 4, f0, f1);
      thread_scratch& s = scratch_[static_cast<std::size_t>(i)];
      for (const std::uint32_t e : active_) {
        const expert_weights_view& v = experts_[e];
        const std::uint32_t* ents = list_.data() + eoff_[e];
        const std::size_t m = eoff_[e + 1] - eoff_[e];
        if (f0 < f1) pack(layer_.gate_type, layer_.up_type, xa, ents, m, s);
        for (std::size_t f = f0; f < f1; ++f) {
          project(layer_.gate_type, v.gate, f, xa, ents, m, s, s.g.data());
          float* act = act_.data();
          const float bg = v.gate_bias ? v.gate_bias[f] : 0.0f;
          for (std::size_t k = 0; k < m; ++k) act[ents[k] * F + f] = s.g[k] + bg;
          project(layer_.up_type, v.up, f, xa, ents, m, s, s.g.data());
          const float bu = v.up_bias ? v.up_bias[f] : 0.0f;
          for (std::size_t k = 0; k < m; ++k) {
            float& o = act[ents[k] * F + f];
            o = ffn_activate(layer_.act, o, s.g[k] + bu);
          }
        }
      }
    };
    dispatch(gate_up);
    // 3. quantize the activated intermediates (entries split over threads)
    auto quant_a = [&](int i) {
      if (!d_q) return;
      std::size_t b = 0, e = 0;
      detail::cq::split(list_.size(), i, n, 1, b, e);
      for (std::size_t k = b; k < e; ++k) {
        const std::size_t j = list_[k];
        k_.quantize(act_.data() + j * F, F, aq_.data() + j * F, ad_.data() + j * F / 16, as_.data() + j * F / 16,
                    ae_.data() + j * F / 4);
      }
    };
    dispatch(quant_a);
    // 4. down rows split over threads, then y for those rows in CSR order
    auto down = [&](int i) {
      std::size_t h0 = 0, h1 = 0;
      detail::cq::split(H, i, n, 16, h0, h1);
      thread_scratch& s = scratch_[static_cast<std::size_t>(i)];
      for (const std::uint32_t e : active_) {
        const expert_weights_view& v = experts_[e];
        const std::uint32_t* ents = list_.data() + eoff_[e];
        const std::size_t m = eoff_[e + 1] - eoff_[e];
        if (h0 < h1) pack(layer_.down_type, layer_.down_type, aa, ents, m, s);
        for (std::size_t h = h0; h < h1; ++h) {
          project(layer_.down_type, v.down, h, aa, ents, m, s, s.g.data());
          const float bd = v.down_bias ? v.down_bias[h] : 0.0f;
          for (std::size_t k = 0; k < m; ++k) part_[ents[k] * H + h] = s.g[k] + bd;
        }
      }
      for (std::size_t t = 0; t < T; ++t) {
        float* y = a.y + t * H;
        if (!accumulate)
          for (std::size_t h = h0; h < h1; ++h) y[h] = 0.0f;
        for (std::uint32_t j = r.offsets[t]; j < r.offsets[t + 1]; ++j) {
          if (select != nullptr && select[j] == 0) continue;
          const float wj = r.weights[j];
          const float* p = part_.data() + static_cast<std::size_t>(j) * H;
          for (std::size_t h = h0; h < h1; ++h) y[h] += wj * p[h];
        }
      }
    };
    dispatch(down);
  }

 private:
  struct thread_scratch {
    std::vector<std::int8_t> w, tq;
    std::vector<float> sw, mw, f, g, te, ts;  // tq, te, ts: the fused kernels' tiles (pack)
    std::vector<const std::int8_t*> pq;  // pack's row pointers
    std::vector<const float*> pe, ps;
  };

  template <class V>
  static void grow(V& v, std::size_t n) {
    if (v.size() < n) v.resize(n);
  }

  static detail::cq::kernels kernels_for(cpu_isa isa) noexcept {
    detail::cq::kernels k = detail::cq::portable_kernels();
#if MOEROUTE_CQ_X86
    if (isa == cpu_isa::avx2) {
      k.unpack = detail::cq::unpack_row_avx2;
      k.dot_q = detail::cq::dot_q_avx2;
      k.dot_f = detail::cq::dot_f_avx2;
    } else if (isa == cpu_isa::avx512) {
      k.unpack = detail::cq::unpack_row_avx2;
      k.dot_q = detail::cq::features().vnni512 ? detail::cq::dot_q_avx512<true> : detail::cq::dot_q_avx512<false>;
      k.dot_f = detail::cq::dot_f_avx512;
      k.rowdot = detail::cq::features().vnni512 ? detail::cq::rowdot_avx512_for<true> : detail::cq::rowdot_avx512_for<false>;
    }
#else
    (void)isa;
#endif
    return k;
  }

  template <class Fn>
  void dispatch(Fn& f) {
    if (pool_)
      pool_->run(f);
    else
      f(0);
  }

  // Quantized activations of the rows `ents` index: codes q, scales d, min terms xs, lane scales e,
  // n values per row (entry j's row is j * n; for tokens, entries map to their token first).
  struct act_rows {
    const float* f;
    const std::int8_t* q;
    const float *d, *xs, *e;
    std::size_t n;
    const std::uint32_t* token_of;  // nullptr: row = entry
    std::size_t row(std::uint32_t j) const noexcept { return token_of != nullptr ? token_of[j] : j; }
  };

  // A tensor of type t takes the float path: a float type, or any type with f32 activations.
  bool is_float(weight_type t) const noexcept { return f32_act_ || detail::cq::type_is_float(t); }

  // The fused kernel of a tensor of type t with rows of n values, or nullptr.
  detail::cq::rowdot_fn fused_kernel(weight_type t, std::size_t n) const noexcept {
    return is_float(t) || n % 64 != 0 ? nullptr : k_.rowdot(t);
  }

  // Packs the activation rows of entries ents[0, m) into s's tiles when a tensor of type t1 or t2
  // takes a fused kernel (project then reads them).
  void pack(weight_type t1, weight_type t2, const act_rows& a, const std::uint32_t* ents, std::size_t m,
            thread_scratch& s) const {
    if (fused_kernel(t1, a.n) == nullptr && fused_kernel(t2, a.n) == nullptr) return;
    for (std::size_t k = 0; k < m; ++k) {
      const std::size_t r = a.row(ents[k]);
      s.pq[k] = a.q + r * a.n;
      s.pe[k] = a.e + r * a.n / 4;
      s.ps[k] = a.xs + r * a.n / 16;
    }
    detail::cq::pack_tiles(s.pq.data(), s.pe.data(), s.ps.data(), m, a.n, s.tq.data(), s.te.data(), s.ts.data());
  }

  // out[k] = row r of a tensor of type t (rows of a.n values) . activation row of entry ents[k]
  void project(weight_type t, const void* base, std::size_t r, const act_rows& a, const std::uint32_t* ents,
               std::size_t m, thread_scratch& s, float* out) const {
    const std::size_t n = a.n;
    const auto* row = static_cast<const unsigned char*>(base) + r * row_bytes(t, n);
    if (is_float(t)) {  // the row dequantized once into s.f, dotted with each float activation row
      dequantize_row(t, row, s.f.data(), n);
      for (std::size_t k = 0; k < m; ++k) out[k] = k_.dot_f(s.f.data(), a.f + a.row(ents[k]) * n, n);
      return;
    }
    if (const detail::cq::rowdot_fn fused = fused_kernel(t, n)) {  // the tiles pack() made
      for (std::size_t k = 0; k < m;) {
        const std::size_t tile = detail::cq::tile_at(k, m);
        const detail::cq::act_tile x{s.tq.data() + k * n, s.te.data() + k * n / 4, s.ts.data() + k * n / 16};
        fused(row, n, x, static_cast<int>(tile), out + k);
        k += tile;
      }
      return;
    }
    k_.unpack(t, row, n, s.w.data(), s.sw.data(), s.mw.data());
    const float* mw = detail::cq::type_has_min(t) ? s.mw.data() : nullptr;
    for (std::size_t k = 0; k < m; ++k) {
      const std::size_t rr = a.row(ents[k]);
      out[k] = k_.dot_q(s.w.data(), s.sw.data(), mw, a.q + rr * n, a.d + rr * n / 16, a.xs + rr * n / 16, n);
    }
  }

  ffn_layer layer_;
  cpu_isa isa_ = cpu_isa::portable;
  detail::cq::kernels k_{};
  int threads_ = 1;
  bool f32_act_ = false;
  std::unique_ptr<detail::cq::pool> pool_;
  std::vector<expert_weights_view> experts_;
  std::vector<std::uint32_t> eoff_, cursor_, list_, token_of_, active_;
  std::vector<std::int8_t> xq_, aq_;
  std::vector<float> xd_, xs_, xe_, act_, ad_, as_, ae_, part_;
  std::vector<thread_scratch> scratch_;
};

}  // namespace moeroute
