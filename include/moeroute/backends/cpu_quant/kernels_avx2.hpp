#pragma once
// The AVX2 (+FMA, F16C) path of the quantized CPU expert FFN (backends/cpu_quant.hpp): SSE/AVX2
// unpack of q4_0, q8_0, iq4_nl, mxfp4, q4_k, q6_k, iq4_xs (the other types unpack as portable), the
// vpmaddubsw / vpmaddwd integer dot of an unpacked row with int8 activations, and fused row kernels
// (rowdot_avx2_for) for q4_0, q8_0, mxfp4, iq4_nl that dot a tile of tokens without unpacking.
//
// Contract: the same unpacked rows and per-16-value integer sums as portable.hpp; every function
// carries MOEROUTE_CQ_AVX2 and may run only when cpu_supports(cpu_isa::avx2). Empty unless
// MOEROUTE_CQ_X86.

#include <moeroute/backends/cpu_quant/features.hpp>
#include <moeroute/backends/cpu_quant/portable.hpp>

#include <cstddef>
#include <cstdint>

#if MOEROUTE_CQ_X86
namespace moeroute::detail::cq {

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

// Block b of a 32-value-block type (q4_0, q8_0, mxfp4, iq4_nl) in a register: its 32 signed codes
// and its scale.
template <weight_type WT>
MOEROUTE_CQ_AVX2 __attribute__((always_inline)) inline void load_block_avx2(const unsigned char* b, __m256i& q,
                                                                            float& d) noexcept {
  if constexpr (WT == weight_type::q8_0) {
    q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2));
  } else if constexpr (WT == weight_type::q4_0) {
    q = _mm256_sub_epi8(nibbles32(b + 2), _mm256_set1_epi8(8));
  } else {
    constexpr bool mx = WT == weight_type::mxfp4;
    const __m128i book = _mm_loadu_si128(reinterpret_cast<const __m128i*>(mx ? kvalues_mxfp4 : kvalues_iq4nl));
    q = _mm256_shuffle_epi8(_mm256_set_m128i(book, book), nibbles32(b + (mx ? 1 : 2)));
  }
  if constexpr (WT == weight_type::mxfp4)
    d = e8m0_half(b[0]);
  else
    d = _cvtsh_ss(static_cast<unsigned short>(b[0] | (b[1] << 8)));
}

// Unpacks nb blocks of a 32-value-block type (load_block_avx2): codes, and the scale per 16 values.
template <weight_type WT>
MOEROUTE_CQ_AVX2 inline void unpack_blocks_avx2(const unsigned char* row, std::size_t nb, std::int8_t* w,
                                                float* sw) noexcept {
  for (std::size_t i = 0; i < nb; ++i, row += block_bytes(WT), w += 32, sw += 2) {
    __m256i q;
    float d;
    load_block_avx2<WT>(row, q, d);
    st(w, q);
    sw[0] = sw[1] = d;
  }
}

// Unpack with SSE/AVX2 for q4_0, q8_0, iq4_nl, mxfp4, q4_k, q6_k, iq4_xs; the rest as portable.
MOEROUTE_CQ_AVX2 inline void unpack_row_avx2(weight_type t, const unsigned char* row, std::size_t n, std::int8_t* w,
                                             float* sw, float* mw) noexcept {
  const std::size_t be = block_elems(t), bb = block_bytes(t), nb = n / be;
  switch (t) {
    case weight_type::q4_0: unpack_blocks_avx2<weight_type::q4_0>(row, nb, w, sw); return;
    case weight_type::q8_0: unpack_blocks_avx2<weight_type::q8_0>(row, nb, w, sw); return;
    case weight_type::iq4_nl: unpack_blocks_avx2<weight_type::iq4_nl>(row, nb, w, sw); return;
    case weight_type::mxfp4: unpack_blocks_avx2<weight_type::mxfp4>(row, nb, w, sw); return;
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


// Fused AVX2 row kernels for the 32-value-block types (q4_0, q8_0, mxfp4, iq4_nl): each block is
// decoded into a register once (signed codes, its scale converted once) and dotted with a tile of
// up to 8 tokens (act_tile) by vpmaddubsw on |code| and the activation with the code's sign, so
// the row is never written out. Same integer sums per 32 values as the portable path.
// out[i] = row . token i of a tile of M tokens.
template <weight_type WT, std::size_t M>
MOEROUTE_CQ_AVX2 inline void rowdot_avx2(const unsigned char* row, std::size_t n, const act_tile& x,
                                         float* out) noexcept {
  constexpr std::size_t bb = block_bytes(WT), A = M == 1 ? 2 : 1;  // one token: two chains
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[A][M];
  for (std::size_t i = 0; i < M; ++i)
    for (std::size_t a = 0; a < A; ++a) acc[a][i] = _mm256_setzero_ps();
  const std::int8_t* xq = x.q;
  const float* xe = x.e;
  for (std::size_t c = 0; c < n / 64; ++c, xq += 64 * M, xe += 16 * M) {
    _mm_prefetch(reinterpret_cast<const char*>(row) + c * 2 * bb + 1024, _MM_HINT_T0);  // the stream
    for (std::size_t h = 0; h < 2; ++h) {
      __m256i q;
      float d;
      load_block_avx2<WT>(row + (2 * c + h) * bb, q, d);
      const __m256i aq = _mm256_sign_epi8(q, q);
      const __m256 dv = _mm256_set1_ps(d);
      for (std::size_t i = 0; i < M; ++i) {
        const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 64 * i + 32 * h));
        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(aq, _mm256_sign_epi8(xv, q)), ones);
        __m256& a = acc[h % A][i];
        a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dv, _mm256_loadu_ps(xe + 16 * i + 8 * h)), a);
      }
    }
  }
  for (std::size_t i = 0; i < M; ++i) out[i] = hsum256(A == 2 ? _mm256_add_ps(acc[0][i], acc[A - 1][i]) : acc[0][i]);
}

// The same for a tile of m tokens (1-4 or max_tile).
template <weight_type WT>
MOEROUTE_CQ_AVX2 inline void rowdot_avx2_m(const unsigned char* row, std::size_t n, const act_tile& x, int m,
                                           float* out) noexcept {
  switch (m) {
    case 1: rowdot_avx2<WT, 1>(row, n, x, out); return;
    case 2: rowdot_avx2<WT, 2>(row, n, x, out); return;
    case 3: rowdot_avx2<WT, 3>(row, n, x, out); return;
    case 4: rowdot_avx2<WT, 4>(row, n, x, out); return;
    default: rowdot_avx2<WT, max_tile>(row, n, x, out); return;
  }
}

// The fused AVX2 kernel of type t, or nullptr (then the row is unpacked and dotted per token).
inline rowdot_fn rowdot_avx2_for(weight_type t) noexcept {
  switch (t) {
    case weight_type::q4_0: return rowdot_avx2_m<weight_type::q4_0>;
    case weight_type::q8_0: return rowdot_avx2_m<weight_type::q8_0>;
    case weight_type::mxfp4: return rowdot_avx2_m<weight_type::mxfp4>;
    case weight_type::iq4_nl: return rowdot_avx2_m<weight_type::iq4_nl>;
    default: return nullptr;
  }
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

}  // namespace moeroute::detail::cq
#endif
