#pragma once
// The AVX-512 (F/BW/VL, VNNI when present) path of the quantized CPU expert FFN
// (backends/cpu_quant.hpp): a 512-bit dot of unpacked rows, and fused row kernels that decode a
// weight row chunk by chunk into registers and dot it with a tile of up to 8 tokens (act_tile of
// portable.hpp) without writing the unpacked row: 32-value-block types (q4_0, q8_0, mxfp4, iq4_nl)
// and K-quant super-blocks (q4_k, q6_k).
//
// Contract: rowdot_avx512_for<Vnni>(t) is the fused kernel of type t or nullptr; a kernel computes
// the same integer sums per 16 values as portable.hpp (offsets and mins may be taken through the
// activation's code sums in float32), so results differ from the other paths only in float order.
// Every function carries MOEROUTE_CQ_AVX512 and may run only when cpu_supports(cpu_isa::avx512);
// Vnni = true only when features().vnni512. Empty unless MOEROUTE_CQ_X86.

#include <moeroute/backends/cpu_quant/features.hpp>
#include <moeroute/backends/cpu_quant/kernels_avx2.hpp>
#include <moeroute/backends/cpu_quant/portable.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if MOEROUTE_CQ_X86
namespace moeroute::detail::cq {

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

// The 16 int32 sums of 4 products of unsigned codes u and signed activations x (|x| <= 127):
// vpdpbusd, or without VNNI vpmaddubsw + vpmaddwd, exact while pairs of products stay within int16,
// so codes above 128 (Wide: q8_0's and iq4_nl's codes + 128) take their top bit in a second pass.
template <bool Vnni, bool Wide = false>
MOEROUTE_CQ_AVX512_INLINE __m512i dot4_u8s8(__m512i u, __m512i x) noexcept {
  const __m512i one = _mm512_set1_epi16(1);
  if constexpr (Vnni) {
    return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, x);
  } else if constexpr (Wide) {
    const __m512i top = _mm512_set1_epi8(static_cast<char>(0x80));
    return _mm512_add_epi32(_mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_maskz_andnot_epi32(0xFFFF, top, u), x), one),
                            _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_maskz_and_epi32(0xFFFF, top, u), x), one));  // maskz: GCC bug 105593
  } else {
    return _mm512_madd_epi16(_mm512_maddubs_epi16(u, x), one);
  }
}

// The A accumulator chains of a tile of M tokens: zeroed, and summed into out[i] per token.
template <std::size_t A, std::size_t M>
MOEROUTE_CQ_AVX512_INLINE void zero_chains(__m512 (&acc)[A][M]) noexcept {
  for (std::size_t i = 0; i < M; ++i)
    for (std::size_t a = 0; a < A; ++a) acc[a][i] = _mm512_setzero_ps();
}
template <std::size_t R, std::size_t A, std::size_t M>
MOEROUTE_CQ_AVX512_INLINE void zero_chains(__m512 (&acc)[R][A][M]) noexcept {
  for (std::size_t r = 0; r < R; ++r) zero_chains(acc[r]);
}
template <std::size_t A, std::size_t M>
MOEROUTE_CQ_AVX512_INLINE void sum_chains(const __m512 (&acc)[A][M], float* out) noexcept {
  static_assert(A == 1 || A == 2, "one or two chains");
  for (std::size_t i = 0; i < M; ++i) out[i] = hsum512(A == 2 ? _mm512_add_ps(acc[0][i], acc[A - 1][i]) : acc[0][i]);
}
template <std::size_t R, std::size_t A, std::size_t M>
MOEROUTE_CQ_AVX512_INLINE void sum_chains(const __m512 (&acc)[R][A][M], float* out) noexcept {
  for (std::size_t r = 0; r < R; ++r) sum_chains(acc[r], out + r * M);
}

// The same for signed codes given as |q| (aq) and the mask of negative codes (neg): the sign moves
// to the activations.
template <bool Vnni>
MOEROUTE_CQ_AVX512_INLINE __m512i dot4_s8s8(__m512i aq, __mmask64 neg, __m512i x) noexcept {
  return dot4_u8s8<Vnni>(aq, _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x));
}

// acc[i] += (64 codes u . token i's 64 activation codes per 4 values) * sc * token i's lane
// scales, for the M tokens of a tile (xq, xe: the chunk's first token).
template <bool Vnni, std::size_t M, bool Wide = false>
MOEROUTE_CQ_AVX512_INLINE void chunk_tokens(__m512 (&acc)[M], __m512i u, __m512 sc, const std::int8_t* xq,
                                            const float* xe) noexcept {
  for (std::size_t i = 0; i < M; ++i) {
    const __m512i p = dot4_u8s8<Vnni, Wide>(u, _mm512_loadu_si512(xq + 64 * i));
    acc[i] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, p), _mm512_mul_ps(sc, _mm512_loadu_ps(xe + 16 * i)), acc[i]);
  }
}

// acc += (64 codes u . the token's 64 activation codes per 4 values) * scx, the lane scales already
// multiplied by the activation's (one token: the same products as chunk_tokens, one multiply less).
template <bool Vnni, bool Wide = false>
MOEROUTE_CQ_AVX512_INLINE void chunk_token_scaled(__m512& acc, __m512i u, __m512 scx, const std::int8_t* xq) noexcept {
  acc = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, dot4_u8s8<Vnni, Wide>(u, _mm512_loadu_si512(xq))), scx, acc);
}

// acc + the (up to) 64 products at `at` (masked by km; ks: their 16-groups), scaled
template <bool Vnni>
MOEROUTE_CQ_AVX512 inline __m512 dot_step_avx512(const std::int8_t* w, const float* sw, const std::int8_t* x,
                                                 const float* dx, std::size_t at, __mmask64 km, __mmask8 ks,
                                                 __m512 acc) noexcept {
  const __m512i wv = _mm512_maskz_loadu_epi8(km, w + at);
  const __m512i p = dot4_s8s8<Vnni>(_mm512_abs_epi8(wv), _mm512_movepi8_mask(wv), _mm512_maskz_loadu_epi8(km, x + at));
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
// A permute index: lanes 0-7 take lane j, lanes 8-15 lane j + 1 (the product lanes of two
// 32-value blocks, or of two 32-value sub-blocks).
MOEROUTE_CQ_AVX512_INLINE __m512i half_lanes(int j) noexcept {
  return _mm512_set_epi32(j + 1, j + 1, j + 1, j + 1, j + 1, j + 1, j + 1, j + 1, j, j, j, j, j, j, j, j);
}
// The 16 product lanes of two 32-value blocks: lanes 0-7 scale a, lanes 8-15 scale b.
MOEROUTE_CQ_AVX512 inline __m512 two_scales(__m128 ab) noexcept {
  return _mm512_maskz_permutexvar_ps(0xFFFF, half_lanes(0), _mm512_maskz_broadcast_f32x4(0xFFFF, ab));
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
    constexpr std::size_t bb = block_bytes(WT), qo = mx ? 1 : 2;
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

// The activation scale of each float lane of a super-block's / group's scales (dx: one per 16
// values): q6_k lane g = 16-group g; the others lane j = 32-value block j (dx[2 j]).
template <weight_type WT>
MOEROUTE_CQ_AVX512_INLINE __m512 act_lane_scales(const float* dx) noexcept {
  const __m512 v = _mm512_loadu_ps(dx);
  if constexpr (WT == weight_type::q6_k) return v;
  return lanes(v, _mm512_set_epi32(14, 12, 10, 8, 6, 4, 2, 0, 14, 12, 10, 8, 6, 4, 2, 0));
}

// Super-block sb of a q4_k / q6_k row: sf = the float scale of each product lane's 16-group source
// (q4_k: lanes 0-7 d * scale_j, lanes 8-15 dmin * min_j per 32 values; q6_k: d * scale_g per 16).
template <weight_type WT>
MOEROUTE_CQ_AVX512_INLINE __m512 k_superblock_scales(const unsigned char* b) noexcept {
  if constexpr (WT == weight_type::q4_k) {
    const __m512 sm = _mm512_maskz_cvtepi32_ps(0xFFFF, _mm512_maskz_cvtepu8_epi32(0xFFFF, k4_scales_mins(b + 4)));
    std::uint32_t dd;
    std::memcpy(&dd, b, 4);
    const __m128 dm = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(dd)));  // d, dmin
    return _mm512_mul_ps(sm, lanes(_mm512_zextps128_ps512(dm), half_lanes(0)));
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

// out[r M + i] = row r . token i of a tile of M tokens for R q4_k or q6_k rows (row r at
// row + r stride), each row on A accumulator chains; a row's arithmetic does not depend on R.
template <weight_type WT, bool Vnni, std::size_t M, std::size_t R, std::size_t A, bool Pre>
MOEROUTE_CQ_AVX512 inline void rowdot_k_avx512(const unsigned char* row, std::size_t stride, std::size_t n,
                                               const act_tile& x, float* out) noexcept {
  constexpr bool q4k = WT == weight_type::q4_k;
  constexpr std::size_t bb = block_bytes(WT);
  // lanes of a chunk's scales: q4_k two 32-value scales (8 lanes each), q6_k four 16-value ones
  const __m512i sel[4] = {
      q4k ? half_lanes(0) : _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0),
      q4k ? half_lanes(2) : _mm512_set_epi32(7, 7, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 4, 4, 4, 4),
      q4k ? half_lanes(4) : _mm512_set_epi32(11, 11, 11, 11, 10, 10, 10, 10, 9, 9, 9, 9, 8, 8, 8, 8),
      q4k ? half_lanes(6) : _mm512_set_epi32(15, 15, 15, 15, 14, 14, 14, 14, 13, 13, 13, 13, 12, 12, 12, 12)};
  // the min of each 16-value group (q4_k: the lane of its 32-value sub-block's min)
  const __m512i msel = _mm512_set_epi32(15, 15, 14, 14, 13, 13, 12, 12, 11, 11, 10, 10, 9, 9, 8, 8);
  __m512 acc[R][A][M];
  zero_chains(acc);
  const std::int8_t* xq = x.q;
  const float* xe = x.e;
  const float* xs = x.s;
  for (std::size_t sb = 0; sb < n / 256; ++sb, xs += 16 * M) {
    __m512 sf[R];
    for (std::size_t r = 0; r < R; ++r) {
      const unsigned char* b = row + r * stride + sb * bb;
      _mm_prefetch(reinterpret_cast<const char*>(b) + 1024, _MM_HINT_T0);  // the stream, across pages
      _mm_prefetch(reinterpret_cast<const char*>(b) + 1024 + 64, _MM_HINT_T0);
      if constexpr (!q4k) _mm_prefetch(reinterpret_cast<const char*>(b) + 1024 + 128, _MM_HINT_T0);
      sf[r] = k_superblock_scales<WT>(b);
      // q4_k: value = d sc q - dmin m; q6_k: value = d sc (q - 32)
      const __m512 mn = q4k ? lanes(sf[r], msel) : _mm512_mul_ps(sf[r], _mm512_set1_ps(32.0f));
      for (std::size_t i = 0; i < M; ++i) acc[r][0][i] = _mm512_fnmadd_ps(mn, _mm512_loadu_ps(xs + 16 * i), acc[r][0][i]);
      if constexpr (Pre) sf[r] = _mm512_mul_ps(sf[r], act_lane_scales<WT>(x.d + 16 * sb));
    }
    for (int k = 0; k < 4; ++k, xq += 64 * M, xe += 16 * M)
      for (std::size_t r = 0; r < R; ++r) {
        const __m512i q = k_chunk_codes<WT>(row + r * stride + sb * bb, k);
        if constexpr (Pre)
          chunk_token_scaled<Vnni>(acc[r][static_cast<std::size_t>(k) % A][0], q, lanes(sf[r], sel[k]), xq);
        else
          chunk_tokens<Vnni, M>(acc[r][static_cast<std::size_t>(k) % A], q, lanes(sf[r], sel[k]), xq, xe);
      }
  }
  sum_chains(acc, out);
}

// 32-value-block kernels per 256 values (8 blocks), for rows of whole 256-value groups: the 8
// block scales are gathered into one vector of floats with one two-register word permute (no scalar
// f16 or E8M0 conversion per block), each 64-value chunk takes its lane scales from it with one
// permute, and codes are read unsigned, with an offset o per type (q4_0: its own 8; q8_0: the
// code + 128; mxfp4 / iq4_nl: the book shifted by 12 / 128), so a chunk's integer dot is one
// vpdpbusd per token with no sign fix-up. The offset comes back as one 16-lane multiply-add per
// token and group: - o * d_block * (the activation's scale x code sum per 16 values). A row's last
// 64-191 values (n not a multiple of 256) take load_chunk with signed codes.

// The offset of WT's unsigned codes.
template <weight_type WT>
inline constexpr int block_code_offset = WT == weight_type::q4_0 ? 8 : WT == weight_type::mxfp4 ? 12 : 128;

// The scales of the 8 blocks at b (bytes b .. b + 8 bb readable) as 8 floats, block k in lane k.
template <weight_type WT>
MOEROUTE_CQ_AVX512_INLINE __m256 block8_scales(const unsigned char* b) noexcept {
  if constexpr (WT == weight_type::q4_0 || WT == weight_type::iq4_nl) {
    // 18-byte blocks: the f16 scale of block k is word 9 k of the first 128 bytes
    const __m512i idx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                         63, 54, 45, 36, 27, 18, 9, 0);
    const __m512i h = _mm512_permutex2var_epi16(_mm512_loadu_si512(b), idx, _mm512_loadu_si512(b + 64));
    return _mm256_cvtph_ps(_mm512_maskz_extracti32x4_epi32(0xF, h, 0));
  } else if constexpr (WT == weight_type::q8_0) {
    // 34-byte blocks: word 17 k of the first 128 bytes for blocks 0-3, of the 128 from 136 for 4-7
    const __m512i idx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                         51, 34, 17, 0, 51, 34, 17, 0);
    const __m512i lo = _mm512_permutex2var_epi16(_mm512_loadu_si512(b), idx, _mm512_loadu_si512(b + 64));
    const __m512i hi = _mm512_permutex2var_epi16(_mm512_loadu_si512(b + 136), idx, _mm512_loadu_si512(b + 200));
    return _mm256_cvtph_ps(_mm_blend_epi16(_mm512_maskz_extracti32x4_epi32(0xF, lo, 0), _mm512_maskz_extracti32x4_epi32(0xF, hi, 0), 0xF0));
  } else {
    // 17-byte mxfp4 blocks: the E8M0 byte of block k is byte 17 k (word 17 k / 2, high byte for
    // odd k); 2^(e - 128) as e8m0_half builds it
    const __m512i idx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                         59, 51, 42, 34, 25, 17, 8, 0);
    const __m512i w = _mm512_permutex2var_epi16(_mm512_loadu_si512(b), idx, _mm512_loadu_si512(b + 64));
    const __m128i e16 = _mm_and_si128(_mm_srlv_epi16(_mm512_maskz_extracti32x4_epi32(0xF, w, 0), _mm_setr_epi16(0, 8, 0, 8, 0, 8, 0, 8)),
                                      _mm_set1_epi16(0xFF));
    const __m256i e = _mm256_cvtepu16_epi32(e16);
    const __m256i normal = _mm256_slli_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(1)), 23);
    const __m256i tiny = _mm256_sllv_epi32(_mm256_set1_epi32(0x00200000), e);
    const __m256i bits = _mm256_blendv_epi8(normal, tiny, _mm256_cmpgt_epi32(_mm256_set1_epi32(2), e));
    return _mm256_castsi256_ps(bits);
  }
}

// The 64 unsigned codes (code + block_code_offset) of the two blocks at b and b + bb.
template <weight_type WT>
MOEROUTE_CQ_AVX512_INLINE __m512i block2_codes(const unsigned char* b) noexcept {
  if constexpr (WT == weight_type::q8_0) {
    const __m512i v = _mm512_maskz_inserti64x4(0xFF, _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2))),
                                               _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 36)), 1);
    return _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));
  } else {
    constexpr std::size_t bb = block_bytes(WT), qo = WT == weight_type::mxfp4 ? 1 : 2;
    // 128-bit lanes [a, a, b, b], the second of each pair shifted right by 4: low then high nibbles
    const __m512i a = _mm512_maskz_broadcast_i32x4(0xFFFF, _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + qo)));
    const __m512i v = _mm512_mask_broadcast_i32x4(a, 0xFF00, _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + bb + qo)));
    const __m512i sh = _mm512_set_epi64(0x0004000400040004, 0x0004000400040004, 0, 0, 0x0004000400040004,
                                        0x0004000400040004, 0, 0);
    const __m512i nib = _mm512_and_si512(_mm512_srlv_epi16(v, sh), _mm512_set1_epi8(0xF));
    if constexpr (WT == weight_type::q4_0) return nib;
    // the books of dequant.hpp plus the offset (mod 256: iq4_nl's + 128 as unsigned bytes)
    const __m128i book128 = _mm_add_epi8(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(WT == weight_type::mxfp4 ? kvalues_mxfp4 : kvalues_iq4nl)),
        _mm_set1_epi8(static_cast<char>(block_code_offset<WT>)));
    const __m512i book = _mm512_maskz_broadcast_i32x4(0xFFFF, book128);
    return _mm512_shuffle_epi8(book, nib);
  }
}

// out[r M + i] = row r . token i of a tile of M tokens (q4_0, q8_0, mxfp4, iq4_nl), per 256
// values, for R rows (row r at row + r stride) on A chains each, as rowdot_k_avx512.
template <weight_type WT, bool Vnni, std::size_t M, std::size_t R, std::size_t A, bool Pre>
MOEROUTE_CQ_AVX512 inline void rowdot_b_avx512(const unsigned char* row, std::size_t stride, std::size_t n,
                                               const act_tile& x, float* out) noexcept {
  constexpr std::size_t bb = block_bytes(WT);
  constexpr float off = static_cast<float>(block_code_offset<WT>);
  // lanes of chunk k's scales: block 2k in lanes 0-7, block 2k + 1 in lanes 8-15; the offset
  // term's lanes: block g / 2 for 16-group g
  const __m512i sel[4] = {half_lanes(0), half_lanes(2), half_lanes(4), half_lanes(6)};
  const __m512i gsel = _mm512_set_epi32(7, 7, 6, 6, 5, 5, 4, 4, 3, 3, 2, 2, 1, 1, 0, 0);
  __m512 acc[R][A][M];
  zero_chains(acc);
  const std::int8_t* xq = x.q;
  const float* xe = x.e;
  const float* xs = x.s;
  const std::size_t groups = n / 256;
  for (std::size_t g = 0; g < groups; ++g, xs += 16 * M) {
    __m512 d[R];
    for (std::size_t r = 0; r < R; ++r) {
      const unsigned char* b = row + r * stride + g * 8 * bb;
      // the stream, across pages (a group is 136-272 bytes)
      _mm_prefetch(reinterpret_cast<const char*>(b) + 1024, _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(b) + 1024 + 64, _MM_HINT_T0);
      if constexpr (bb == 34) {
        _mm_prefetch(reinterpret_cast<const char*>(b) + 1024 + 128, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(b) + 1024 + 192, _MM_HINT_T0);
      }
      d[r] = _mm512_castps256_ps512(block8_scales<WT>(b));
      const __m512 mn = _mm512_mul_ps(lanes(d[r], gsel), _mm512_set1_ps(off));
      for (std::size_t i = 0; i < M; ++i) acc[r][0][i] = _mm512_fnmadd_ps(mn, _mm512_loadu_ps(xs + 16 * i), acc[r][0][i]);
      if constexpr (Pre) d[r] = _mm512_mul_ps(d[r], act_lane_scales<WT>(x.d + 16 * g));
    }
    for (std::size_t k = 0; k < 4; ++k, xq += 64 * M, xe += 16 * M)
      for (std::size_t r = 0; r < R; ++r) {
        const __m512i q = block2_codes<WT>(row + r * stride + g * 8 * bb + 2 * k * bb);
        if constexpr (Pre)
          chunk_token_scaled<Vnni, block_code_offset<WT> == 128>(acc[r][k % A][0], q, lanes(d[r], sel[k]), xq);
        else
          chunk_tokens<Vnni, M, block_code_offset<WT> == 128>(acc[r][k % A], q, lanes(d[r], sel[k]), xq, xe);
      }
  }
  for (std::size_t c = groups * 4; c < n / 64; ++c, xq += 64 * M, xe += 16 * M)  // the last 64-192 values
    for (std::size_t r = 0; r < R; ++r) {
      __m512i q;
      __m512 sc;
      load_chunk<WT>(row + r * stride, c, q, sc);
      const __m512i aq = _mm512_abs_epi8(q);
      const __mmask64 neg = _mm512_movepi8_mask(q);
      for (std::size_t i = 0; i < M; ++i) {
        const __m512i p = dot4_s8s8<Vnni>(aq, neg, _mm512_loadu_si512(xq + 64 * i));
        acc[r][0][i] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, p),
                                       _mm512_mul_ps(sc, _mm512_loadu_ps(xe + 16 * i)), acc[r][0][i]);
      }
    }
  sum_chains(acc, out);
}

// The fused kernel of type WT for a tile of M tokens and R rows (A chains per row).
// Pre (one token, x.d set): the float scales multiplied by the activation's once per 256 values.
template <weight_type WT, bool Vnni, std::size_t M, std::size_t R = 1, std::size_t A = M == 1 ? 2 : 1, bool Pre = false>
MOEROUTE_CQ_AVX512 inline void rowdot_tile(const unsigned char* row, std::size_t stride, std::size_t n,
                                           const act_tile& x, float* out) noexcept {
  static_assert(!Pre || M == 1, "pre-multiplied scales: one token");
  if constexpr (WT == weight_type::q4_k || WT == weight_type::q6_k)
    rowdot_k_avx512<WT, Vnni, M, R, A, Pre>(row, stride, n, x, out);
  else
    rowdot_b_avx512<WT, Vnni, M, R, A, Pre>(row, stride, n, x, out);
}

// The same for a tile of m tokens (1-4 or max_tile).
template <weight_type WT, bool Vnni>
MOEROUTE_CQ_AVX512 inline void rowdot_avx512_m(const unsigned char* row, std::size_t n, const act_tile& x, int m,
                                               float* out) noexcept {
  switch (m) {
    case 1: rowdot_tile<WT, Vnni, 1>(row, 0, n, x, out); return;
    case 2: rowdot_tile<WT, Vnni, 2>(row, 0, n, x, out); return;
    case 3: rowdot_tile<WT, Vnni, 3>(row, 0, n, x, out); return;
    case 4: rowdot_tile<WT, Vnni, 4>(row, 0, n, x, out); return;
    default: rowdot_tile<WT, Vnni, max_tile>(row, 0, n, x, out); return;
  }
}

// One token, `rows` consecutive rows (row r at row + r stride): out[r] = row r . x. K-quants: rows
// r and r + rows / 2 in one pass (two contiguous streams) sharing the activation loads, one
// accumulator chain per row, so a row's result is the same whether it is paired or the odd one
// out (what keeps results independent of the row split); the 32-value-block types: row by row on
// two chains (pairing measured slower for them).
template <weight_type WT, bool Vnni>
MOEROUTE_CQ_AVX512 inline void rows1_avx512(const unsigned char* row, std::size_t stride, std::size_t rows,
                                            std::size_t n, const act_tile& x, float* out) noexcept {
  if constexpr (WT != weight_type::q4_k && WT != weight_type::q6_k) {
    for (std::size_t r = 0; r < rows; ++r) rowdot_tile<WT, Vnni, 1, 1, 2, true>(row + r * stride, stride, n, x, out + r);
    return;
  }
  const std::size_t h = rows / 2;
  const std::size_t hs = h * stride;
  for (std::size_t r = 0; r < h; ++r) {
    float o[2];
    rowdot_tile<WT, Vnni, 1, 2, 1, true>(row + r * stride, hs, n, x, o);
    out[r] = o[0];
    out[r + h] = o[1];
  }
  if (rows % 2 != 0) rowdot_tile<WT, Vnni, 1, 1, 1, true>(row + (rows - 1) * stride, stride, n, x, out + rows - 1);
}

// f(std::integral_constant<weight_type, t>) for the types with fused AVX-512 kernels, else nullptr.
template <class F>
inline auto with_fused_type(weight_type t, F f) noexcept {
  using W = weight_type;
  switch (t) {
    case W::q4_0: return f(std::integral_constant<W, W::q4_0>{});
    case W::q8_0: return f(std::integral_constant<W, W::q8_0>{});
    case W::mxfp4: return f(std::integral_constant<W, W::mxfp4>{});
    case W::iq4_nl: return f(std::integral_constant<W, W::iq4_nl>{});
    case W::q4_k: return f(std::integral_constant<W, W::q4_k>{});
    case W::q6_k: return f(std::integral_constant<W, W::q6_k>{});
    default: return decltype(f(std::integral_constant<W, W::q4_0>{})){nullptr};
  }
}

// The fused kernels of type t (a tile of tokens per row; one token over many rows), or nullptr
// (then the row is unpacked and dotted per token).
template <bool Vnni>
inline rowdot_fn rowdot_avx512_for(weight_type t) noexcept {
  return with_fused_type(t, [](auto w) -> rowdot_fn { return rowdot_avx512_m<decltype(w)::value, Vnni>; });
}
template <bool Vnni>
inline rows1_fn rows1_avx512_for(weight_type t) noexcept {
  return with_fused_type(t, [](auto w) -> rows1_fn { return rows1_avx512<decltype(w)::value, Vnni>; });
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

}  // namespace moeroute::detail::cq
#endif
