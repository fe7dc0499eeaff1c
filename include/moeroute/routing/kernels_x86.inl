// The router's hot loops for one x86 instruction set, written once over W float lanes of the
// compiler's vector extension. routing/kernels.hpp includes this file once per set with
//   MOEROUTE_RK_NS      the namespace (rk_avx2, rk_avx512)
//   MOEROUTE_RK_TARGET  the function attribute enabling the set (__attribute__((target(...))))
//   MOEROUTE_RK_W       lanes: 8 (AVX2) or 16 (AVX-512)
// Every function carries the attribute, so vectors never cross a function boundary compiled for
// another set. The results match the portable path of kernels.hpp bit for bit (see isa.hpp).
// No include guard: meant to be included more than once.

namespace moeroute {
namespace detail {
namespace MOEROUTE_RK_NS {

#if MOEROUTE_RK_W == 16
#define MOEROUTE_RK_KEEP(v) __asm__("" : "+v"(v))
#else
#define MOEROUTE_RK_KEEP(v) __asm__("" : "+x"(v))
#endif

constexpr int W = MOEROUTE_RK_W;
typedef float vf __attribute__((vector_size(4 * MOEROUTE_RK_W)));
typedef std::int32_t vi __attribute__((vector_size(4 * MOEROUTE_RK_W)));
typedef float v8 __attribute__((vector_size(32)));

MOEROUTE_RK_TARGET inline vf load(const float* p) noexcept {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
MOEROUTE_RK_TARGET inline void store(float* p, vf v) noexcept { std::memcpy(p, &v, sizeof v); }
MOEROUTE_RK_TARGET inline vf splat(float x) noexcept { return vf{} + x; }
MOEROUTE_RK_TARGET inline vf vmax(vf a, vf b) noexcept { return a > b ? a : b; }
MOEROUTE_RK_TARGET inline vf vmin(vf a, vf b) noexcept { return a < b ? a : b; }

/// Lanes of a comparison result (-1 or 0) that are true, as bits.
MOEROUTE_RK_TARGET inline unsigned bits(vi m) noexcept {
#if MOEROUTE_RK_W == 16
  __m512i u;
  std::memcpy(&u, &m, sizeof u);
  return _mm512_movepi32_mask(u);
#else
  __m256 u;
  std::memcpy(&u, &m, sizeof u);
  return static_cast<unsigned>(_mm256_movemask_ps(u));
#endif
}

/// a * b + c rounded once per lane (vf4_fma), V of 16 or 8 lanes.
template <class V>
MOEROUTE_RK_TARGET __attribute__((always_inline)) inline V fma_n(V a, V b, V c) noexcept {
  if constexpr (sizeof(V) == 64) {
    __m512 x, y, z;
    std::memcpy(&x, &a, sizeof x);
    std::memcpy(&y, &b, sizeof y);
    std::memcpy(&z, &c, sizeof z);
    x = _mm512_fmadd_ps(x, y, z);
    std::memcpy(&a, &x, sizeof a);
  } else {
    __m256 x, y, z;
    std::memcpy(&x, &a, sizeof x);
    std::memcpy(&y, &b, sizeof y);
    std::memcpy(&z, &c, sizeof z);
    x = _mm256_fmadd_ps(x, y, z);
    std::memcpy(&a, &x, sizeof a);
  }
  return a;
}

/// vf4_exp_nonpos on the lanes of V (vf, or v8 for a few values): the same operations in the
/// same order: the same fused multiply-adds, the other products kept out of FMAs.
template <class V>
MOEROUTE_RK_TARGET __attribute__((always_inline)) inline V exp_nonpos_n(V x) noexcept {
  using VI = decltype(x < x);
  V t = x;
  V n;
  // the clamp to -104 (a NaN stays NaN) and n = (t + 1.5 * 2^23) - 1.5 * 2^23, the nearest
  // integer to t for |t| < 2^22 (here -151 < t <= 0), in one instruction each; -0 for +0 only
  // where t is in (-0.5, 0], which leaves every product with n, and so the result, unchanged
  if constexpr (sizeof(V) == 64) {
    __m512 u;
    std::memcpy(&u, &x, sizeof u);
    u = _mm512_maskz_max_ps(0xffff, _mm512_set1_ps(-104.0f), u);  // maskz: GCC bug 105593
    std::memcpy(&x, &u, sizeof x);
    t = x * 1.44269504088896341f;
    MOEROUTE_RK_KEEP(t);
    std::memcpy(&u, &t, sizeof u);
#if defined(__GNUC__) && !defined(__clang__)  // GCC's unoptimized macro hands the mask on as short
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-conversion"
#endif
    u = _mm512_maskz_roundscale_ps(0xffff, u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
    std::memcpy(&n, &u, sizeof n);
  } else {
    __m256 u;
    std::memcpy(&u, &x, sizeof u);
    u = _mm256_max_ps(_mm256_set1_ps(-104.0f), u);
    std::memcpy(&x, &u, sizeof x);
    t = x * 1.44269504088896341f;
    MOEROUTE_RK_KEEP(t);
    std::memcpy(&u, &t, sizeof u);
    u = _mm256_round_ps(u, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    std::memcpy(&n, &u, sizeof n);
  }
  const V m = -n;
  V r = fma_n(m, V{} + 0.693359375f, x);
  r = fma_n(m, V{} + -2.12194440e-4f, r);
  V p = V{} + 1.9875691500e-4f;
  for (const float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f,
                        5.0000001201e-1f})
    p = fma_n(p, r, V{} + c);
  p = p * r;
  MOEROUTE_RK_KEEP(p);
  p = fma_n(p, r, r) + 1.0f;
#if MOEROUTE_RK_W == 16
  // p * 2^n rounded once, as p * 2^(n >> 1) (exact: p * 2^-75 is a normal float) * 2^(n - (n >> 1))
  // below: the same bits in one instruction
  if constexpr (sizeof(V) == 64) {
    __m512 pp, nn;
    std::memcpy(&pp, &p, sizeof pp);
    std::memcpy(&nn, &n, sizeof nn);
    const __m512 y = _mm512_maskz_scalef_ps(0xffff, pp, nn);  // maskz: GCC bug 105593
    V out;
    std::memcpy(&out, &y, sizeof out);
    return out;
  } else {
    __m256 pp, nn;
    std::memcpy(&pp, &p, sizeof pp);
    std::memcpy(&nn, &n, sizeof nn);
    const __m256 y = _mm256_maskz_scalef_ps(0xff, pp, nn);
    V out;
    std::memcpy(&out, &y, sizeof out);
    return out;
  }
#endif
  const VI ni = __builtin_convertvector(n, VI);
  const VI n1 = ni >> 1;
  const VI n2 = ni - n1;
  const VI b1 = (n1 + 127) << 23;
  const VI b2 = (n2 + 127) << 23;
  V f1, f2;
  std::memcpy(&f1, &b1, sizeof f1);
  std::memcpy(&f2, &b2, sizeof f2);
  return p * f1 * f2;
}
MOEROUTE_RK_TARGET __attribute__((always_inline)) inline vf exp_nonpos(vf x) noexcept {
  return exp_nonpos_n(x);
}

MOEROUTE_RK_TARGET inline vf sigmoid(vf v) noexcept {
  const vf zero = splat(0.0f), one = splat(1.0f);
  vi a;  // -|v| (v >= 0 ? -v : v) as v with its sign bit set: the same value, +0 and -0 included
  std::memcpy(&a, &v, sizeof a);
  a |= std::numeric_limits<std::int32_t>::min();
  vf nabs;
  std::memcpy(&nabs, &a, sizeof nabs);
  const vf t = exp_nonpos(nabs);
  return (v >= zero ? one : t) / (one + t);
}

MOEROUTE_RK_TARGET inline void scan_row(const float* x, int E, int* bad, int* masked) noexcept {
  constexpr float inf = std::numeric_limits<float>::infinity();
  const vf pinf = splat(inf), ninf = splat(-inf);
  vi b = {}, m = {};
  int e = 0;
  for (; e + W <= E; e += W) {
    const vf v = load(x + e);
    b |= ~(v < pinf);
    m -= v == ninf;
  }
  int bs = bits(b) != 0, ms = 0;
  for (int l = 0; l < W; ++l) ms += m[l];
  for (; e < E; ++e) {
    bs |= !(x[e] < inf);
    ms += x[e] == -inf;
  }
  *bad = bs;
  *masked = ms;
}

MOEROUTE_RK_TARGET inline float row_max(const float* x, int E) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  vf m0 = splat(ninf), m1 = m0;
  int e = 0;
  for (; e + 2 * W <= E; e += 2 * W) {
    m0 = vmax(m0, load(x + e));
    m1 = vmax(m1, load(x + e + W));
  }
  for (; e + W <= E; e += W) m0 = vmax(m0, load(x + e));
  m0 = vmax(m0, m1);
  float m = ninf;
  for (int l = 0; l < W; ++l) m = m0[l] > m ? m0[l] : m;
  for (; e < E; ++e) m = x[e] > m ? x[e] : m;
  return m;
}

MOEROUTE_RK_TARGET inline float softmax_keys(const float* x, float* key, int E) noexcept {
  const float m = row_max(x, E);
  const vf mv = splat(m);
  v8 acc = {};  // partial sum l holds the elements e with e % 8 == l, in element order
  int e = 0;
  for (; e + W <= E; e += W) {
    const vf k = exp_nonpos(load(x + e) - mv);
    store(key + e, k);
#if MOEROUTE_RK_W == 16
    v8 lo, hi;
    std::memcpy(&lo, &k, sizeof lo);
    std::memcpy(&hi, reinterpret_cast<const char*>(&k) + sizeof lo, sizeof hi);
    acc += lo;
    acc += hi;
#else
    acc += k;
#endif
  }
  float a[8];
  std::memcpy(a, &acc, sizeof a);
  for (; e < E; ++e) {
    key[e] = routing_exp_nonpos(x[e] - m);
    a[e % 8] += key[e];
  }
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

MOEROUTE_RK_TARGET inline void exp_chosen(const float* x, const std::int32_t* id, int K, float m,
                                          float* out) noexcept {
  // 8 lanes at a time (K is 8 in most models), built from scalar loads in registers and stored
  // whole: a vector read back from scalar stores, or a copy of a variable count, would wait on
  // memory
  const v8 mv = v8{} + m;
  int i = 0;
  for (; i + 8 <= K; i += 8) {
    const std::int32_t* d = id + i;
    const v8 g = {x[d[0]], x[d[1]], x[d[2]], x[d[3]], x[d[4]], x[d[5]], x[d[6]], x[d[7]]};
    const v8 k = exp_nonpos_n(g - mv);
    std::memcpy(out + i, &k, sizeof k);
  }
  if (i < K) {  // the last K % 8: lanes past K hold m (their exp is discarded)
    const int n = K - i;
    alignas(32) float g[8], k[8];
    for (int l = 0; l < 8; ++l) g[l] = l < n ? x[id[i + l]] : m;
    v8 gv;
    std::memcpy(&gv, g, sizeof gv);
    const v8 kv = exp_nonpos_n(gv - mv);
    std::memcpy(k, &kv, sizeof k);
    for (int l = 0; l < n; ++l) out[i + l] = k[l];
  }
}

/// K == 8, softmax + renorm chosen by logit (x[id[i]] in the top-K's order, m = x[id[0]]): out =
/// the 8 numerators, then, when they are already in the output order (each above the next, or
/// equal to it from an equal logit, which the top-K put in id order), the router's generic steps
/// kept in registers: w = out / sum (the sum in index order); with gate, the kept count n of
/// cumulative_gating::keep (the shares' running sums in double in index order, decided by its
/// bounds; a sum within them sends the row back) and w = w / (sum of the first n) when n < 8; ids
/// and w * scale written for the n kept when all are finite. Returns n, or 0 having written only out.
MOEROUTE_RK_TARGET inline int softmax_renorm_write8(const float* x, const std::int32_t* id, float m,
                                                    float scale, const routing_gate8* gate,
                                                    float* out, std::int32_t* ids,
                                                    float* w) noexcept {
  typedef std::int32_t vi8 __attribute__((vector_size(32)));
  const v8 g = {x[id[0]], x[id[1]], x[id[2]], x[id[3]], x[id[4]], x[id[5]], x[id[6]], x[id[7]]};
  const v8 k = exp_nonpos_n(g - (v8{} + m));
  std::memcpy(out, &k, sizeof k);
  const vi8 ordered = (k > __builtin_shufflevector(k, k, 1, 2, 3, 4, 5, 6, 7, 7)) |
                        (g == __builtin_shufflevector(g, g, 1, 2, 3, 4, 5, 6, 7, 7));
  const float s = ((((((k[0] + k[1]) + k[2]) + k[3]) + k[4]) + k[5]) + k[6]) + k[7];
  v8 wv = k / s;
  std::int32_t all = -1;
  for (int l = 0; l < 7; ++l) all &= ordered[l];
  if (!all || !(s > 0)) return 0;
  int n = 8;
  if (gate) {
    double c[8], total = 0.0;
    for (int l = 0; l < 8; ++l) {
      total += static_cast<double>(wv[l]);
      c[l] = total;
    }
    const double pt = gate->cum_prob * total, hi = pt * (1.0 + 0x1p-50), lo = pt * (1.0 - 0x1p-50);
    unsigned reached = 0, near = 0;
    for (int l = 0; l < 8; ++l) {
      reached |= static_cast<unsigned>(c[l] >= hi) << l;
      near |= static_cast<unsigned>(c[l] > lo && c[l] < hi) << l;
    }
    if (near || !(total > 0.0)) return 0;
    reached &= ~0u << (gate->min_k - 1);
    n = reached ? __builtin_ctz(reached) + 1 : 8;
    n = n < gate->max_k ? n : gate->max_k;
    if (n < 8) {
      float s2 = 0.0f;
      for (int l = 0; l < 8; ++l) s2 += l < n ? wv[l] : 0.0f;
      wv = wv / s2;  // s2 >= wv[0] > 0
    }
  }
  wv = wv * scale;
  const v8 lim = v8{} + std::numeric_limits<float>::max();
  const vi8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
  const vi8 live = lane < n;
  const vi8 finite = (wv <= lim) & (wv >= -lim);
  for (int l = 0; l < 8; ++l)
    if (live[l] & ~finite[l]) return 0;
  if (n == 8) {
    std::memcpy(w, &wv, sizeof wv);
    std::memcpy(ids, id, 8 * sizeof(std::int32_t));
  } else {
    __m256 wm;
    __m256i mm, im;
    std::memcpy(&wm, &wv, sizeof wm);
    std::memcpy(&mm, &live, sizeof mm);
    std::memcpy(&im, id, sizeof im);
    _mm256_maskstore_ps(w, mm, wm);
    _mm256_maskstore_epi32(ids, mm, im);
  }
  return n;
}

MOEROUTE_RK_TARGET inline void sigmoid_keys(const float* x, float* key, int E) noexcept {
  int e = 0;
  for (; e + W <= E; e += W) store(key + e, sigmoid(load(x + e)));
  for (; e < E; ++e) key[e] = routing_sigmoid(x[e]);
}

MOEROUTE_RK_TARGET inline void sigmoid_select(const float* x, float* key, const float* bias,
                                              float* sel, int E) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  const vf vninf = splat(ninf);
  int e = 0;
  for (; e + W <= E; e += W) {
    const vf v = load(x + e), k = sigmoid(v);
    store(key + e, k);
    store(sel + e, v == vninf ? vninf : k + load(bias + e));
  }
  for (; e < E; ++e) {
    key[e] = routing_sigmoid(x[e]);
    sel[e] = x[e] == ninf ? ninf : key[e] + bias[e];
  }
}

MOEROUTE_RK_TARGET inline void select_scores(const float* x, const float* key, float norm,
                                             const float* bias, float* sel, int E) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  const vf vninf = splat(ninf), vnorm = splat(norm);
  int e = 0;
  if (bias) {
    for (; e + W <= E; e += W)
      store(sel + e, load(x + e) == vninf ? vninf : load(key + e) / vnorm + load(bias + e));
    for (; e < E; ++e) sel[e] = x[e] == ninf ? ninf : key[e] / norm + bias[e];
  } else {
    for (; e + W <= E; e += W) store(sel + e, load(x + e) == vninf ? vninf : load(key + e));
    for (; e < E; ++e) sel[e] = x[e] == ninf ? ninf : key[e];
  }
}

#if MOEROUTE_RK_W == 16
/// Each lane's rank among lanes [0, n) of v: how many of them beat it (greater, or equal in an
/// earlier lane), one broadcast and comparison per lane j < n.
MOEROUTE_RK_TARGET __attribute__((always_inline)) inline __m512i lane_ranks(__m512 v, int n) noexcept {
  const __m512i one = _mm512_set1_epi32(1);
  __m512i rank = _mm512_setzero_si512();
#pragma GCC unroll 16
  for (int j = 0; j < n; ++j) {
    const __m512 vj = _mm512_maskz_permutexvar_ps(0xffff, _mm512_set1_epi32(j), v);  // maskz: GCC bug 105593
    const __mmask16 later = static_cast<__mmask16>(~((2u << j) - 1));
    rank = _mm512_mask_add_epi32(rank, _mm512_cmp_ps_mask(vj, v, _CMP_GT_OQ) | _mm512_mask_cmp_ps_mask(later, vj, v, _CMP_EQ_OQ), rank, one);
  }
  return rank;
}

/// max(a, b) (Max) or min(a, b), lane-wise.
template <bool Max>
MOEROUTE_RK_TARGET __attribute__((always_inline)) inline __m512 max_or_min(__m512 a, __m512 b) noexcept {
  return Max ? _mm512_maskz_max_ps(0xffff, a, b) : _mm512_maskz_min_ps(0xffff, a, b);  // maskz: GCC bug 105593
}

/// The largest (Max) or smallest of the 16 lanes of t, in every lane: four exchanges (of 256-bit
/// halves, 128-bit quarters, lane pairs and single lanes).
template <bool Max>
MOEROUTE_RK_TARGET __attribute__((always_inline)) inline __m512 fold_lanes(__m512 t) noexcept {
  t = max_or_min<Max>(t, _mm512_maskz_shuffle_f32x4(0xffff, t, t, 0x4e));
  t = max_or_min<Max>(t, _mm512_maskz_shuffle_f32x4(0xffff, t, t, 0xb1));
  t = max_or_min<Max>(t, _mm512_maskz_permute_ps(0xffff, t, 0x4e));
  return max_or_min<Max>(t, _mm512_maskz_permute_ps(0xffff, t, 0xb1));
}

/// The K-th largest of the 16 lanes of g (K <= 16; -inf if g has no total order), in every lane:
/// with cnt_i = #{j : g_j >= g_i}, the largest g_i with cnt_i >= K.
MOEROUTE_RK_TARGET __attribute__((always_inline)) inline __m512 kth_largest(__m512 g, int K) noexcept {
  const __m512i one = _mm512_set1_epi32(1);
  __m512i c[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                  _mm512_setzero_si512()};  // four chains of the counts
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) {
    const __m512 gj = _mm512_maskz_permutexvar_ps(0xffff, _mm512_set1_epi32(j), g);
    c[j & 3] = _mm512_mask_add_epi32(c[j & 3], _mm512_cmp_ps_mask(gj, g, _CMP_GE_OQ), c[j & 3], one);
  }
  const __m512i cnt = _mm512_add_epi32(_mm512_add_epi32(c[0], c[1]), _mm512_add_epi32(c[2], c[3]));
  return fold_lanes<true>(_mm512_mask_mov_ps(_mm512_set1_ps(-std::numeric_limits<float>::infinity()),
                                             _mm512_cmpge_epi32_mask(cnt, _mm512_set1_epi32(K)), g));
}

/// Top-K of score[0, E) on 16 lanes:
///  1. the maxima of the 16 columns of the row seen as [E / 16, 16]; thr = the K-th largest of
///     them, a lower bound of the K-th largest score (K disjoint columns reach it): the column
///     whose rank (maxima greater, or equal in a lower column) is K - 1, taken out with a compress;
///  2. the ids of the scores >= thr in ascending order (compressed in registers), their scores
///     read back: about K + 3 of them on random rows;
///  3. every candidate's rank at once: for each candidate j, the lanes i it beats gain one
///     (greater, or equal with a lower id, which is j < i since ids ascend); the candidate of rank
///     r < K is the r-th output.
/// Falls back to routing_topk when K > 16, thr is -inf or more than 32 scores reach thr.
/// Scan: also does scan_row's work in the pass of step 1 (*bad, *masked) and returns 0 without
/// choosing when the row has a NaN or +inf or fewer than K unmasked scores.
template <bool Scan>
MOEROUTE_RK_TARGET inline int topk16(const float* score, int E, int K, float* val, std::int32_t* id,
                                     int* bad, int* masked) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  constexpr int max_e = 1024;
  const int nv = E / 16;
  auto fallback = [&]() {
    routing_topk t{val, id, K};
    for (int e = 0; e < E; ++e)
      if (score[e] != ninf) t.push(score[e], e);
    return t.n;
  };
  if (K > 16 || E > max_e || nv == 0) {
    if (Scan) {
      scan_row(score, E, bad, masked);
      if (*bad || E - *masked < K) return 0;
    }
    return fallback();
  }
  // 1. column maxima (max through the vector extension: GCC 12's _mm512_max_ps trips
  // -Wmaybe-uninitialized, its bug 105593), NaN / +inf and -inf lanes, and the threshold
  vf g0 = splat(ninf), g1 = g0;
  const __m512 vpinf = _mm512_set1_ps(-ninf), vninf = _mm512_set1_ps(ninf);
  __mmask16 kbad = 0;
  int nmasked = 0;
  int v = 0;
  for (; v < nv; ++v) {
    const vf a = load(score + 16 * v);
    if (v & 1)
      g1 = vmax(g1, a);
    else
      g0 = vmax(g0, a);
    if (Scan) {
      __m512 u;
      std::memcpy(&u, &a, sizeof u);
      kbad = static_cast<__mmask16>(kbad | _mm512_cmp_ps_mask(u, vpinf, _CMP_NLT_UQ));  // !(u < inf)
      nmasked += __builtin_popcount(_mm512_cmp_ps_mask(u, vninf, _CMP_EQ_OQ));
    }
  }
  if (Scan) {
    int b = kbad != 0;
    for (int e = 16 * nv; e < E; ++e) {
      b |= !(score[e] < -ninf);
      nmasked += score[e] == ninf;
    }
    *bad = b;
    *masked = nmasked;
    if (b || E - nmasked < K) return 0;
  }
  alignas(64) float gm[16];
  store(gm, vmax(g0, g1));
  const __m512 g = _mm512_load_ps(gm);
  const __m512i one = _mm512_set1_epi32(1);
  __m512i ra = _mm512_setzero_si512(), rb = ra;  // two chains of the lanes' ranks
  for (int j = 0; j < 16; j += 2) {
    const __mmask16 la = static_cast<__mmask16>(~((2u << j) - 1)), lb = static_cast<__mmask16>(la << 1);
    const __m512 ga = _mm512_set1_ps(gm[j]), gb = _mm512_set1_ps(gm[j + 1]);
    ra = _mm512_mask_add_epi32(ra, _mm512_cmp_ps_mask(ga, g, _CMP_GT_OQ) | _mm512_mask_cmp_ps_mask(la, ga, g, _CMP_EQ_OQ), ra, one);
    rb = _mm512_mask_add_epi32(rb, _mm512_cmp_ps_mask(gb, g, _CMP_GT_OQ) | _mm512_mask_cmp_ps_mask(lb, gb, g, _CMP_EQ_OQ), rb, one);
  }
  const __mmask16 kth = _mm512_cmpeq_epi32_mask(_mm512_add_epi32(ra, rb), _mm512_set1_epi32(K - 1));
  if (kth == 0) return fallback();  // no total order (NaN)
  const float thr = _mm512_cvtss_f32(_mm512_maskz_compress_ps(kth, g));
  if (!(thr > ninf)) return fallback();
  const __m512 vthr = _mm512_set1_ps(thr);
  // 2. candidate ids, ascending; full-width stores of register compresses, at most 32 kept
  constexpr int cap = 32;
  alignas(64) std::int32_t ci[cap + 16 + 32] = {};
  int m = 0;
  const __m512i step = _mm512_set1_epi32(16);
  __m512i idv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (v = 0; v < nv; ++v, idv = _mm512_add_epi32(idv, step)) {
    const __mmask16 k = _mm512_cmp_ps_mask(_mm512_loadu_ps(score + 16 * v), vthr, _CMP_GE_OQ);
    _mm512_storeu_si512(ci + (m < cap ? m : cap), _mm512_maskz_compress_epi32(k, idv));
    m += __builtin_popcount(k);
  }
  for (int e = 16 * nv; e < E; ++e) {
    ci[m < cap ? m : cap] = e;
    m += score[e] >= thr;
  }
  if (m > cap) return fallback();  // many ties at thr
  // 3. ranks of up to 32 candidates (lanes past m: -inf, ranked last)
  alignas(64) float cv[32];
  for (int j = 0; j < 32; ++j) cv[j] = j < m ? score[ci[j]] : ninf;
  const __m512 c0 = _mm512_load_ps(cv), c1 = _mm512_load_ps(cv + 16);
  __m512i r0 = _mm512_setzero_si512(), r1 = r0;
  if (m <= 16) {  // one vector; j from a register, a fixed count (no mispredicted exit)
    r0 = lane_ranks(c0, 16);
  } else {
    for (int j = 0; j < m; ++j) {
      const __m512 cj = _mm512_set1_ps(cv[j]);
      // lanes i > j: candidate j has the lower id
      const unsigned long long later = ~((2ull << j) - 1);
      const __mmask16 l0 = static_cast<__mmask16>(later), l1 = static_cast<__mmask16>(later >> 16);
      r0 = _mm512_mask_add_epi32(r0, _mm512_cmp_ps_mask(cj, c0, _CMP_GT_OQ) | _mm512_mask_cmp_ps_mask(l0, cj, c0, _CMP_EQ_OQ), r0, one);
      r1 = _mm512_mask_add_epi32(r1, _mm512_cmp_ps_mask(cj, c1, _CMP_GT_OQ) | _mm512_mask_cmp_ps_mask(l1, cj, c1, _CMP_EQ_OQ), r1, one);
    }
  }
  // the candidate of rank r: its lane, ranks are distinct (padding lanes rank from m upwards)
  for (int r = 0; r < K; ++r) {
    const __m512i vr = _mm512_set1_epi32(r);
    const unsigned k0 = _mm512_cmpeq_epi32_mask(r0, vr);
    const unsigned k1 = _mm512_cmpeq_epi32_mask(r1, vr) & (m > 16 ? 0xffffu : 0u);
    const int lane = k0 ? __builtin_ctz(k0) : 16 + __builtin_ctz(k1 | 0x10000u);
    val[r] = cv[lane];
    id[r] = ci[lane];
  }
  return K;
}
MOEROUTE_RK_TARGET inline int select_topk(const float* score, int E, int K, float* val,
                                          std::int32_t* id) noexcept {
  return topk16<false>(score, E, K, val, id, nullptr, nullptr);
}
/// scan_select_topk of rows [0, rows) of x (row r at x + r * stride, rows <= routing_topk_rows_max,
/// its K at val + r * K, id + r * K, its count in n[r]), in two sweeps so the second never waits:
///  1. per row: the column maxima (one classification per vector: any NaN, inf or -inf sends the
///     row to topk16, which does the exact scan); thr = the largest column maximum that at least
///     K column maxima reach (the K-th largest); the ids of the scores >= thr compressed to memory;
///  2. per row, once those stores have long left for the cache: the candidates' ids as a vector,
///     their scores by one masked gather, the ranks as in topk16 (a candidate's rank is the number
///     that beat it: greater, or equal with a lower id, the lower lane), the K lowest ranks out.
/// A row with more than 16 candidates (ties at thr) or a shape topk16 handles otherwise goes to
/// topk16 in the second sweep.
MOEROUTE_RK_TARGET inline void scan_select_topk_rows(const float* x, std::size_t stride, int rows,
                                                     int E, int K, float* val, std::int32_t* id,
                                                     int* n, int* bad, int* masked) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  constexpr int cap = 16;
  const int nv = E / 16;
  const bool fast = K <= 16 && nv * 16 == E && E <= 1024 && nv > 0;
  alignas(64) std::int32_t ci[routing_topk_rows_max][cap + 16 + 16];
  int cand[routing_topk_rows_max];  // candidates of the row, -1: topk16
  for (int r = 0; r < rows && fast; ++r) {
    const float* s = x + static_cast<std::size_t>(r) * stride;
    __m512 g0 = _mm512_set1_ps(ninf), g1 = g0;
    __mmask16 special = 0;
    for (int v = 0; v < nv; ++v) {
      const __m512 a = _mm512_loadu_ps(s + 16 * v);
      if (v & 1)
        g1 = _mm512_maskz_max_ps(0xffff, g1, a);  // maskz: GCC bug 105593
      else
        g0 = _mm512_maskz_max_ps(0xffff, g0, a);
      special = static_cast<__mmask16>(special | _mm512_fpclass_ps_mask(a, 0x99));  // NaN, +-inf
    }
    cand[r] = -1;
    if (special) continue;
    // thr: the K-th largest column maximum, in every lane
    const __m512 thr = kth_largest(_mm512_maskz_max_ps(0xffff, g0, g1), K);
    // candidate ids, ascending: full-width stores of register compresses (the first covers
    // lanes 0-15, so the vector read back below is initialized)
    int m = 0;
    const __m512i step = _mm512_set1_epi32(16);
    __m512i idv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int v = 0; v < nv; ++v, idv = _mm512_add_epi32(idv, step)) {
      const __mmask16 k = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + 16 * v), thr, _CMP_GE_OQ);
      _mm512_storeu_si512(ci[r] + (m < cap ? m : cap), _mm512_maskz_compress_epi32(k, idv));
      m += __builtin_popcount(k);
    }
    cand[r] = m <= cap ? m : -1;
  }
  for (int r = 0; r < rows; ++r) {
    const float* s = x + static_cast<std::size_t>(r) * stride;
    float* rv = val + static_cast<std::ptrdiff_t>(r) * K;
    std::int32_t* ri = id + static_cast<std::ptrdiff_t>(r) * K;
    if (!fast || cand[r] < 0) {
      n[r] = topk16<true>(s, E, K, rv, ri, bad + r, masked + r);
      continue;
    }
    bad[r] = 0;
    masked[r] = 0;
    // lanes past the candidates: -inf, ranked after them (K columns reach thr: cand[r] >= K)
    const __mmask16 live = static_cast<__mmask16>((1u << cand[r]) - 1);
    const __m512i civ = _mm512_load_si512(ci[r]);
#if defined(__GNUC__) && !defined(__clang__)  // GCC's unoptimized gather macro hands the mask on as short
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-conversion"
#endif
    const __m512 cv = _mm512_mask_i32gather_ps(_mm512_set1_ps(ninf), live, civ, s, 4);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
    // lane_ranks(cv, 16) written out: through the helper this sweep measured ~5% slower (the
    // softmax router at T = 512, alternated)
    const __m512i one = _mm512_set1_epi32(1);
    __m512i rank = _mm512_setzero_si512();
    for (int j = 0; j < 16; ++j) {
      const __m512 cj = _mm512_maskz_permutexvar_ps(0xffff, _mm512_set1_epi32(j), cv);
      const __mmask16 later = static_cast<__mmask16>(~((2u << j) - 1));
      rank = _mm512_mask_add_epi32(rank, _mm512_cmp_ps_mask(cj, cv, _CMP_GT_OQ) | _mm512_mask_cmp_ps_mask(later, cj, cv, _CMP_EQ_OQ), rank, one);
    }
    alignas(64) float fv[16];
    _mm512_store_ps(fv, cv);
    for (int q = 0; q < K; ++q) {  // ranks are distinct: one lane each
      const int lane = __builtin_ctz(_mm512_cmpeq_epi32_mask(rank, _mm512_set1_epi32(q)) | 0x10000u) & 15;
      rv[q] = fv[lane];
      ri[q] = ci[r][lane];
    }
    n[r] = K;
  }
}
MOEROUTE_RK_TARGET inline int scan_select_topk(const float* x, int E, int K, float* val,
                                               std::int32_t* id, int* bad, int* masked) noexcept {
  int n = 0;
  scan_select_topk_rows(x, 0, 1, E, K, val, id, &n, bad, masked);
  return n;
}

// 8 vectors of 16 lanes as a 16 x 8 block: rows_to_positions turns v[j] = rows 2j and 2j + 1
// (8 values each, row-major) into v[q] = the q-th value of every row (lane r: row r), in three
// stages that each exchange one bit of the vector index with one bit of the lane index between
// pairs of vectors; positions_to_rows is the way back.
#define MOEROUTE_RK_PAIRS(bit, ...)                                                 \
  for (int j = 0; j < 8; ++j) {                                                     \
    if (j & (bit)) continue;                                                        \
    const vf x = v[j], y = v[j | (bit)];                                            \
    constexpr int P[2][16] = __VA_ARGS__;                                           \
    v[j] = __builtin_shufflevector(x, y, P[0][0], P[0][1], P[0][2], P[0][3], P[0][4], P[0][5], \
                                   P[0][6], P[0][7], P[0][8], P[0][9], P[0][10], P[0][11],  \
                                   P[0][12], P[0][13], P[0][14], P[0][15]);         \
    v[j | (bit)] = __builtin_shufflevector(x, y, P[1][0], P[1][1], P[1][2], P[1][3], P[1][4], \
                                           P[1][5], P[1][6], P[1][7], P[1][8], P[1][9],      \
                                           P[1][10], P[1][11], P[1][12], P[1][13], P[1][14], \
                                           P[1][15]);                               \
  }
MOEROUTE_RK_TARGET __attribute__((always_inline)) inline void rows_to_positions(vf* v) noexcept {
  MOEROUTE_RK_PAIRS(1, {{0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
                        {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31}})
  MOEROUTE_RK_PAIRS(2, {{0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
                        {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}})
  MOEROUTE_RK_PAIRS(4, {{0, 8, 1, 9, 2, 10, 3, 11, 16, 24, 17, 25, 18, 26, 19, 27},
                        {4, 12, 5, 13, 6, 14, 7, 15, 20, 28, 21, 29, 22, 30, 23, 31}})
}
MOEROUTE_RK_TARGET __attribute__((always_inline)) inline void positions_to_rows(vf* v) noexcept {
  MOEROUTE_RK_PAIRS(1, {{0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
                        {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31}})
  MOEROUTE_RK_PAIRS(2, {{0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
                        {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31}})
  MOEROUTE_RK_PAIRS(4, {{0, 2, 4, 6, 16, 18, 20, 22, 1, 3, 5, 7, 17, 19, 21, 23},
                        {8, 10, 12, 14, 24, 26, 28, 30, 9, 11, 13, 15, 25, 27, 29, 31}})
}
#undef MOEROUTE_RK_PAIRS

/// softmax_renorm_write8 for the rows r of a block of up to 16 whose bit is set in `rows`, all at
/// once, lane r of each vector computing row r (val + 8 r: the row's 8 chosen logits in the
/// top-K's order): the exps, the sum in index order, the division, the order check; with gate the
/// shares' running sums in double in index order, the bounds, the kept count and the second
/// renormalization; the scale and the finiteness check: per lane the same operations, so the
/// same bits, as softmax_renorm_write8 on that row. Returns the rows done, with their weights x
/// scale at w + 8 r and their kept count at kept[r]; the other rows are the generic steps' (the
/// cases where softmax_renorm_write8 returns 0).
MOEROUTE_RK_TARGET inline unsigned softmax_renorm_rows8(const float* val, unsigned rows, float scale,
                                                        const routing_gate8* gate, float* w,
                                                        std::int32_t* kept) noexcept {
  typedef double vd __attribute__((vector_size(64)));
  typedef std::int32_t vi8 __attribute__((vector_size(32)));
  vf v[8];
  for (int j = 0; j < 8; ++j) {  // rows outside the set read as 0 (their lanes are discarded)
    const unsigned m = ((rows >> (2 * j)) & 1u ? 0xffu : 0u) | ((rows >> (2 * j + 1)) & 1u ? 0xff00u : 0u);
    const __m512 x = _mm512_maskz_loadu_ps(static_cast<__mmask16>(m), val + 16 * j);
    std::memcpy(&v[j], &x, sizeof x);
  }
  rows_to_positions(v);
  vi ok = vi{} - 1;
  vf k[8];
  for (int q = 0; q < 8; ++q) k[q] = exp_nonpos(v[q] - v[0]);
  for (int q = 0; q < 7; ++q) ok &= (k[q] > k[q + 1]) | (v[q] == v[q + 1]);
  const vf s = ((((((k[0] + k[1]) + k[2]) + k[3]) + k[4]) + k[5]) + k[6]) + k[7];
  ok &= s > 0.0f;
  for (int q = 0; q < 8; ++q) k[q] = k[q] / s;  // the weights from here on
  vi n = vi{} + 8;
  if (gate) {
    // lanes 0-7 and 8-15 in double; comparisons of the two halves joined back into 16 lanes
#define MOEROUTE_RK_JOIN(lo, hi)                                                         \
  __builtin_shufflevector(__builtin_convertvector(lo, vi8), __builtin_convertvector(hi, vi8), 0, 1, \
                          2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    vd c[8][2], total[2] = {vd{}, vd{}};
    for (int q = 0; q < 8; ++q) {
      const v8 l8 = __builtin_shufflevector(k[q], k[q], 0, 1, 2, 3, 4, 5, 6, 7);
      const v8 h8 = __builtin_shufflevector(k[q], k[q], 8, 9, 10, 11, 12, 13, 14, 15);
      c[q][0] = total[0] += __builtin_convertvector(l8, vd);
      c[q][1] = total[1] += __builtin_convertvector(h8, vd);
    }
    vd hi[2], lo[2];
    for (int h = 0; h < 2; ++h) {
      const vd pt = gate->cum_prob * total[h];
      hi[h] = pt * (1.0 + 0x1p-50);
      lo[h] = pt * (1.0 - 0x1p-50);
    }
    ok &= MOEROUTE_RK_JOIN(total[0] > 0.0, total[1] > 0.0);
    vi reached[8];
    for (int q = 0; q < 8; ++q) {
      reached[q] = MOEROUTE_RK_JOIN(c[q][0] >= hi[0], c[q][1] >= hi[1]);
      ok &= ~MOEROUTE_RK_JOIN((c[q][0] > lo[0]) & (c[q][0] < hi[0]), (c[q][1] > lo[1]) & (c[q][1] < hi[1]));
    }
#undef MOEROUTE_RK_JOIN
    for (int q = 7; q >= gate->min_k - 1; --q) n = reached[q] ? vi{} + (q + 1) : n;
    n = n < gate->max_k ? n : vi{} + gate->max_k;
    vf s2 = {};
    for (int q = 0; q < 8; ++q) s2 += q < n ? k[q] : vf{};
    const vi cut = n < 8;
    for (int q = 0; q < 8; ++q) k[q] = cut ? k[q] / s2 : k[q];
  }
  const vf lim = splat(std::numeric_limits<float>::max());
  for (int q = 0; q < 8; ++q) {
    k[q] = k[q] * scale;
    ok &= ~(q < n) | ((k[q] <= lim) & (k[q] >= -lim));
  }
  positions_to_rows(k);
  for (int j = 0; j < 8; ++j) store(w + 16 * j, k[j]);
  std::memcpy(kept, &n, sizeof n);
  return bits(ok) & rows;
}

/// Rows [r0, r1) of a block whose softmax_renorm_rows8 is done: row r's first kept[r] of id + 8 r
/// and w + 8 r to ids + nnz and weights + nnz, nnz advanced and stored at offsets[r]. Returns nnz.
MOEROUTE_RK_TARGET inline std::uint32_t write_rows8(const std::int32_t* id, const float* w,
                                                    const std::int32_t* kept, int r0, int r1,
                                                    std::int32_t* ids, float* weights,
                                                    std::uint32_t nnz, std::uint32_t* offsets) noexcept {
  for (int r = r0; r < r1; ++r) {
    const auto m = static_cast<__mmask8>((1u << kept[r]) - 1u);
    _mm256_mask_storeu_epi32(ids + nnz, m, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(id + 8 * r)));
    _mm256_mask_storeu_ps(weights + nnz, m, _mm256_loadu_ps(w + 8 * r));
    nnz += static_cast<std::uint32_t>(kept[r]);
    offsets[r] = nnz;
  }
  return nnz;
}
#else
/// Top-K of score[0, E) (see routing_topk::select_fast for the idea):
///  1. the maxima of G >= 2K disjoint groups (lane l of vectors v = b mod B); thr = the K-th
///     largest of them, a lower bound of the K-th largest score;
///  2. the scores >= thr, compacted in ascending id order;
///  3. their order by counting: rank = #(greater) + #(equal with a lower id).
/// Falls back to routing_topk when K is large, thr is -inf or many scores tie at thr.
MOEROUTE_RK_TARGET inline int select_topk(const float* score, int E, int K, float* val,
                                          std::int32_t* id) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  constexpr int max_k = 32, max_e = 1024, max_rank = 32, max_b = 4;
  routing_topk t{val, id, K};
  const int nv = E / W;
  int B = (2 * K + W - 1) / W;
  B = B > max_b ? max_b : B;
  B = B > nv ? nv : B;
  if (K > max_k || E > max_e || B * W < K) {
    for (int e = 0; e < E; ++e)
      if (score[e] != ninf) t.push(score[e], e);
    return t.n;
  }
  // 1. group maxima and the threshold
  alignas(64) float gm[max_b * W];
  {
    vf acc[max_b];
    for (int b = 0; b < B; ++b) acc[b] = splat(ninf);
    int v = 0;
    for (; v + B <= nv; v += B)
      for (int b = 0; b < B; ++b) acc[b] = vmax(acc[b], load(score + (v + b) * W));
    for (int b = 0; v < nv; ++v, ++b) acc[b] = vmax(acc[b], load(score + v * W));
    for (int b = 0; b < B; ++b) store(gm + b * W, acc[b]);
  }
  const int G = B * W;
  vf thr4 = splat(std::numeric_limits<float>::infinity());
  for (int i = 0; i < G; i += W) {
    const vf g = load(gm + i);
    vi above = {};
    for (int j = 0; j < G; ++j) above -= splat(gm[j]) > g;  // true lanes are -1
    thr4 = ((above < K) & (g < thr4)) ? g : thr4;
  }
  float thr = thr4[0];
  for (int l = 1; l < W; ++l) thr = thr4[l] < thr ? thr4[l] : thr;
  if (!(thr > ninf)) {
    for (int e = 0; e < E; ++e)
      if (score[e] != ninf) t.push(score[e], e);
    return t.n;
  }
  // 2. candidates: the scores >= thr (thr > -inf excludes masked ones), ids ascending
  alignas(64) float cv[max_e + 2 * W];
  alignas(64) std::int32_t ci[max_e + 2 * W];
  int m = 0;
  const vf vthr = splat(thr);
#if MOEROUTE_RK_W == 16
  const __m512i step = _mm512_set1_epi32(W);
  __m512i idv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int v = 0; v < nv; ++v, idv = _mm512_add_epi32(idv, step)) {
    const __m512 s = _mm512_loadu_ps(score + v * W);
    const __mmask16 k = _mm512_cmp_ps_mask(s, _mm512_set1_ps(thr), _CMP_GE_OQ);
    // compress in registers, then a full store (compress-to-memory is microcoded on some CPUs)
    _mm512_storeu_ps(cv + m, _mm512_maskz_compress_ps(k, s));
    _mm512_storeu_si512(ci + m, _mm512_maskz_compress_epi32(k, idv));
    m += __builtin_popcount(k);
  }
  (void)vthr;
#else
  for (int v = 0; v < nv; ++v) {
    unsigned k = bits(load(score + v * W) >= vthr);
    while (k) {
      const int j = v * W + __builtin_ctz(k);
      cv[m] = score[j];
      ci[m] = j;
      ++m;
      k &= k - 1;
    }
  }
#endif
  for (int e = nv * W; e < E; ++e) {
    cv[m] = score[e];
    ci[m] = e;
    m += score[e] >= thr;
  }
  if (m > max_rank) {
    for (int j = 0; j < m; ++j) t.push(cv[j], ci[j]);
    return t.n;
  }
  // 3. rank by counting; padding ranks below every candidate
  const int mw = (m + W - 1) / W * W;
  for (int j = m; j < mw; ++j) {
    cv[j] = ninf;
    ci[j] = std::numeric_limits<std::int32_t>::max();
  }
  for (int i = 0; i < m; ++i) {
    const vf v = splat(cv[i]);
    const vi iv = vi{} + ci[i];
    int rank = 0;
    for (int j = 0; j < mw; j += W) {
      vi cj;
      std::memcpy(&cj, ci + j, sizeof cj);
      const vf w = load(cv + j);
      rank += __builtin_popcount(bits((w > v) | ((w == v) & (cj < iv))));
    }
    if (rank < K) {
      val[rank] = cv[i];
      id[rank] = ci[i];
    }
  }
  return m < K ? m : K;
}

#endif

/// The sum of the two largest of s[0, per) (per a multiple of W) in every lane; a -inf sum (fewer
/// than two unmasked) -> -FLT_MAX, so that it ranks below every finite group.
MOEROUTE_RK_TARGET inline vf group_top2_sum(const float* s, int per) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  vf a = splat(ninf), b = a;  // the two largest of each lane, a >= b
  for (int j = 0; j < per; j += W) {
    const vf v = load(s + j);
    b = vmax(b, vmin(a, v));
    a = vmax(a, v);
  }
  // fold the halves onto each other (every lane ends with the result): the top-2 of a union of
  // two top-2 pairs is max(a, a'), max(min(a, a'), max(b, b'))
#define MOEROUTE_RK_FOLD(...)                                 \
  {                                                           \
    const vf ah = __builtin_shufflevector(a, a, __VA_ARGS__); \
    const vf bh = __builtin_shufflevector(b, b, __VA_ARGS__); \
    b = vmax(vmin(a, ah), vmax(b, bh));                       \
    a = vmax(a, ah);                                          \
  }
#if MOEROUTE_RK_W == 16
  MOEROUTE_RK_FOLD(8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7)
  MOEROUTE_RK_FOLD(4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11)
  MOEROUTE_RK_FOLD(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)
  MOEROUTE_RK_FOLD(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14)
#else
  MOEROUTE_RK_FOLD(4, 5, 6, 7, 0, 1, 2, 3)
  MOEROUTE_RK_FOLD(2, 3, 0, 1, 6, 7, 4, 5)
  MOEROUTE_RK_FOLD(1, 0, 3, 2, 5, 4, 7, 6)
#endif
#undef MOEROUTE_RK_FOLD
  const vf sum = a + b;  // per >= W > 1
  return sum == splat(ninf) ? splat(-std::numeric_limits<float>::max()) : sum;
}

MOEROUTE_RK_TARGET inline void group_scores(const float* score, int groups, int per,
                                            float* gscore) noexcept {
  if (per % W != 0) {
    rk_portable::group_scores(score, groups, per, gscore);
    return;
  }
  for (int g = 0; g < groups; ++g) gscore[g] = group_top2_sum(score + static_cast<std::ptrdiff_t>(g) * per, per)[0];
}

#if MOEROUTE_RK_W == 16
/// topk16's threshold over the kept groups' vectors of sel: the K-th largest column maximum.
MOEROUTE_RK_TARGET __attribute__((always_inline)) inline __m512 kept_column_threshold(
    const float* sel, unsigned kept, int per, int vpg, int K) noexcept {
  __m512 c0 = _mm512_set1_ps(-std::numeric_limits<float>::infinity()), c1 = c0;
  for (unsigned kg = kept; kg; kg &= kg - 1) {
    const float* s = sel + __builtin_ctz(kg) * per;
    for (int v = 0; v < vpg; ++v) {
      const __m512 a = _mm512_loadu_ps(s + 16 * v);
      if (v & 1)
        c1 = _mm512_maskz_max_ps(0xffff, c1, a);
      else
        c0 = _mm512_maskz_max_ps(0xffff, c0, a);
    }
  }
  return kth_largest(_mm512_maskz_max_ps(0xffff, c0, c1), K);
}

/// The candidates of the kept groups' vectors, sel >= thr, in ascending id order: their ids,
/// sel and key compressed out of each vector and appended in registers (expanded into lanes
/// [m, m + p); lanes past the candidates: id 0, sel -inf, key 0). Returns their count (only the
/// first 16 are kept).
MOEROUTE_RK_TARGET __attribute__((always_inline)) inline int kept_candidates(
    const float* sel, const float* key, unsigned kept, int per, int vpg, __m512 thr, __m512i& ci,
    __m512& cs, __m512& ck) noexcept {
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  ci = _mm512_setzero_si512();
  cs = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  ck = _mm512_setzero_ps();
  int m = 0;
  for (unsigned kg = kept; kg; kg &= kg - 1) {
    const int b = __builtin_ctz(kg) * per;
    for (int v = 0; v < vpg; ++v) {
      const int e = b + 16 * v;
      const __m512 sv = _mm512_loadu_ps(sel + e);
      const __mmask16 k = _mm512_cmp_ps_mask(sv, thr, _CMP_GE_OQ);
      const int p = __builtin_popcount(k), m0 = m < 16 ? m : 16;
      const int end = m + p < 16 ? m + p : 16;
      const __mmask16 to = static_cast<__mmask16>(((1u << end) - 1) & ~((1u << m0) - 1));
      ci = _mm512_mask_expand_epi32(ci, to, _mm512_maskz_compress_epi32(k, _mm512_add_epi32(_mm512_set1_epi32(e), iota)));
      cs = _mm512_mask_expand_ps(cs, to, _mm512_maskz_compress_ps(k, sv));
      ck = _mm512_mask_expand_ps(ck, to, _mm512_maskz_compress_ps(k, _mm512_loadu_ps(key + e)));
      m += p;
    }
  }
  return m;
}

/// Sigmoid scoring, selection bias and the grouped top-K (grouped_topk_selection) of R rows (1 or
/// 2) in one call, in lockstep so that one row's dependent steps overlap the other's, for rows of
/// finite logits whose groups are whole vectors (per = E / groups a multiple of 16, groups <= 16,
/// K <= 16, E <= 1024). Per row r (logits x[r]; its own key[r], sel[r] of E floats):
///  1. key = sigmoid(x) and sel = key + bias (no bias: sel = key), both stored;
///  2. the group scores (the sum of the two largest sel), one lane per group; a group is kept when
///     fewer than topk_groups groups beat it (greater, or equal with a lower index);
///  3. a threshold at or below the K-th largest sel of the kept groups: where the group scores
///     come all at once and 2 topk_groups >= K, the smallest second-largest of a kept group (the
///     kept groups' top two are 2 topk_groups >= K scores at or above it); otherwise, and again
///     for a row that leaves more than 16 candidates with it, topk16's threshold over the kept
///     groups' vectors (the K-th largest column maximum);
///  4. the candidates (sel >= threshold, ascending ids) with their sel and key, appended in
///     registers; a candidate is chosen when fewer than K candidates beat it by sel (greater, or
///     equal with a lower id: an earlier lane);
///  5. the chosen in the router's output order: by key, ties to the lower id.
/// Writes val[r] = the chosen's keys (their weights before renormalization) and id[r], in that
/// order, and n[r] = K; n[r] = 0 where nothing was chosen (a NaN or inf logit, more than 16
/// candidates): the router's general steps then route that row.
template <int G, int R>  // G: groups when a power of two (the group scores all at once), else 0
MOEROUTE_RK_TARGET inline void sigmoid_grouped_topk_g(const float* const* x, const float* bias,
                                                      int E, int K, int groups, int topk_groups,
                                                      float* const* key, float* const* sel,
                                                      float* const* val, std::int32_t* const* id,
                                                      int* n) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  constexpr std::size_t NR = static_cast<std::size_t>(R), NG = static_cast<std::size_t>(G > 0 ? G : 1);
  const int nv = E / 16, per = E / (G > 0 ? G : groups), vpg = per / 16;  // G > 0: G == groups
  const bool quick = G > 0 && 2 * topk_groups >= K;  // the threshold from the groups' top two
  // 1. scores and selection scores
  __mmask16 special[NR];
  for (int r = 0; r < R; ++r) special[r] = 0;
  const float* xr[NR];  // the row pointers in locals: the vector stores could alias the arrays
  float *kr[NR], *sr[NR];
  for (int r = 0; r < R; ++r) {
    xr[r] = x[r];
    kr[r] = key[r];
    sr[r] = sel[r];
  }
  for (int v = 0; v < nv; ++v)
    for (int r = 0; r < R; ++r) {
      const vf a = load(xr[r] + 16 * v);
      __m512 u;
      std::memcpy(&u, &a, sizeof u);
      special[r] = static_cast<__mmask16>(special[r] | _mm512_fpclass_ps_mask(u, 0x99));  // NaN, +-inf
      const vf k = sigmoid(a);
      store(kr[r] + 16 * v, k);
      store(sr[r] + 16 * v, bias ? k + load(bias + 16 * v) : k);
    }
  // 2. lane-wise top-2 of each group (A >= B), then the group scores in lanes (lanes past the
  // groups: -inf, below every group) and the kept groups
  __m512 gs[NR], second[NR];  // second: lane g, group g's second-largest (G > 0)
  for (int r = 0; r < R; ++r) second[r] = _mm512_set1_ps(ninf);
  if constexpr (G > 0) {
    __m512 A[NR][NG], B[NR][NG];
#pragma GCC unroll 16
    for (int g = 0; g < G; ++g)
      for (int r = 0; r < R; ++r) {
        const float* s = sr[r] + g * per;
        A[r][g] = _mm512_loadu_ps(s);
        B[r][g] = _mm512_set1_ps(ninf);
        for (int v = 1; v < vpg; ++v) {
          const __m512 a = _mm512_loadu_ps(s + 16 * v);
          B[r][g] = _mm512_maskz_max_ps(0xffff, B[r][g], _mm512_maskz_min_ps(0xffff, A[r][g], a));  // maskz: GCC bug 105593
          A[r][g] = _mm512_maskz_max_ps(0xffff, A[r][g], a);
        }
      }
    // all groups at once: merging two vectors of groups in blocks of w lanes gives one in blocks
    // of w / 2 (each block's top-2 folded from its halves), the groups staying in order; from one
    // vector on, it merges with itself, ending with group g in lane g. Lane j of the merge of P
    // and Q (index >= 16: Q) for w = 16 >> level: (j < 8 ? P : Q)[(j % 8) / (w / 2) * w +
    // (j % 8) % (w / 2)]; the upper halves are w / 2 further
    alignas(64) static constexpr std::int32_t merge_x[4][16] = {
        {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
        {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27},
        {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29},
        {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}};
    int c = G;  // the loops unrolled (G a constant): A and B stay in registers
#pragma GCC unroll 4
    for (int level = 0; level < 4; ++level) {
      const __m512i vx = _mm512_load_si512(merge_x[level]);
      const __m512i vy = _mm512_add_epi32(vx, _mm512_set1_epi32(8 >> level));
      const int half = c > 1 ? c / 2 : 1;
#pragma GCC unroll 8
      for (int i = 0; i < half; ++i)
        for (int r = 0; r < R; ++r) {
          const int p = c > 1 ? 2 * i : 0, q = c > 1 ? 2 * i + 1 : 0;
          const __m512 xa = _mm512_permutex2var_ps(A[r][p], vx, A[r][q]);
          const __m512 ya = _mm512_permutex2var_ps(A[r][p], vy, A[r][q]);
          const __m512 xb = _mm512_permutex2var_ps(B[r][p], vx, B[r][q]);
          const __m512 yb = _mm512_permutex2var_ps(B[r][p], vy, B[r][q]);
          B[r][i] = _mm512_maskz_max_ps(0xffff, _mm512_maskz_min_ps(0xffff, xa, ya), _mm512_maskz_max_ps(0xffff, xb, yb));
          A[r][i] = _mm512_maskz_max_ps(0xffff, xa, ya);
        }
      c = half;
    }
    for (int r = 0; r < R; ++r) {
      const __m512 sum = _mm512_add_ps(A[r][0], B[r][0]);  // -inf (fewer than two unmasked): -FLT_MAX
      const __m512 lim = _mm512_mask_mov_ps(sum, _mm512_cmp_ps_mask(sum, _mm512_set1_ps(ninf), _CMP_EQ_OQ),
                                            _mm512_set1_ps(-std::numeric_limits<float>::max()));
      gs[r] = _mm512_mask_mov_ps(_mm512_set1_ps(ninf), static_cast<__mmask16>((1u << G) - 1), lim);
      second[r] = B[r][0];
    }
  } else {
    const vi lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    for (int r = 0; r < R; ++r) {
      vf gv = splat(ninf);
      for (int g = 0; g < groups; ++g) gv = lane == g ? group_top2_sum(sr[r] + g * per, per) : gv;
      std::memcpy(&gs[r], &gv, sizeof gs[r]);
    }
  }
  __m512i grank[NR];
  for (int r = 0; r < R; ++r) grank[r] = lane_ranks(gs[r], groups);
  // 3. the kept groups, the threshold and the candidates
  unsigned kept[NR];
  __m512 thr[NR];
  for (int r = 0; r < R; ++r) {
    kept[r] = _mm512_cmplt_epi32_mask(grank[r], _mm512_set1_epi32(topk_groups)) & ((1u << groups) - 1);
    if (quick) {
      // the smallest second-largest of a kept group: the kept groups' top two are 2 topk_groups
      // >= K scores at or above it, so it bounds the K-th largest from below; one reduction
      thr[r] = fold_lanes<false>(_mm512_mask_mov_ps(_mm512_set1_ps(std::numeric_limits<float>::infinity()),
                                                    static_cast<__mmask16>(kept[r]), second[r]));
    } else {
      thr[r] = kept_column_threshold(sr[r], kept[r], per, vpg, K);
    }
  }
  __m512i ci[NR];
  __m512 cs[NR], ck[NR];
  int m[NR];
  for (int r = 0; r < R; ++r) {
    m[r] = kept_candidates(sr[r], kr[r], kept[r], per, vpg, thr[r], ci[r], cs[r], ck[r]);
    if (m[r] > 16 && quick)  // a few rows: the column-maximum threshold instead
      m[r] = kept_candidates(sr[r], kr[r], kept[r], per, vpg,
                             kept_column_threshold(sr[r], kept[r], per, vpg, K), ci[r], cs[r], ck[r]);
  }
  // ranks by sel among the m candidates (exactly K: all chosen, as in many rows where the kept
  // groups' top two are the only scores at the threshold; lanes past m are -inf and beat none),
  // then 5. the chosen side by side (ids still ascending) ranked by key, each written at its rank
  for (int r = 0; r < R; ++r) {
    n[r] = special[r] || m[r] > 16 || m[r] < K ? 0 : K;  // m >= K: K scores reach either threshold
    if (!n[r]) continue;
    const __mmask16 chosen = m[r] == K ? static_cast<__mmask16>((1u << K) - 1)
                                       : _mm512_cmplt_epi32_mask(lane_ranks(cs[r], m[r]), _mm512_set1_epi32(K));
    const __m512 wk = _mm512_mask_compress_ps(_mm512_set1_ps(ninf), chosen, ck[r]);
    const __m512i wi = _mm512_maskz_compress_epi32(chosen, ci[r]);
    const __m512i wrank = lane_ranks(wk, K);  // over the K chosen
    alignas(64) float fk[16];
    alignas(64) std::int32_t fi[16], fr[16];
    _mm512_store_ps(fk, wk);
    _mm512_store_si512(fi, wi);
    _mm512_store_si512(fr, wrank);
    for (int l = 0; l < K; ++l) {  // the K chosen have the distinct ranks 0 .. K - 1
      const int q = fr[l];
      val[r][q] = fk[l];
      id[r][q] = fi[l];
    }
  }
}
MOEROUTE_RK_TARGET inline void sigmoid_grouped_topk(const float* const* x, int rows, const float* bias,
                                                    int E, int K, int groups, int topk_groups,
                                                    float* const* key, float* const* sel,
                                                    float* const* val, std::int32_t* const* id,
                                                    int* n) noexcept {
  if (K > 16 || groups > 16 || E > 1024 || E % (16 * groups) != 0) {  // groups of whole vectors
    for (int r = 0; r < rows; ++r) n[r] = 0;
    return;
  }
#define MOEROUTE_RK_GROUPED(G)                                                                   \
  return rows == 2 ? sigmoid_grouped_topk_g<G, 2>(x, bias, E, K, groups, topk_groups, key, sel, val, id, n) \
                   : sigmoid_grouped_topk_g<G, 1>(x, bias, E, K, groups, topk_groups, key, sel, val, id, n);
  switch (groups) {
    case 1: MOEROUTE_RK_GROUPED(1)
    case 2: MOEROUTE_RK_GROUPED(2)
    case 4: MOEROUTE_RK_GROUPED(4)
    case 8: MOEROUTE_RK_GROUPED(8)
    case 16: MOEROUTE_RK_GROUPED(16)
    default: MOEROUTE_RK_GROUPED(0)
  }
#undef MOEROUTE_RK_GROUPED
}
#else
MOEROUTE_RK_TARGET inline void sigmoid_grouped_topk(const float* const*, int rows, const float*, int,
                                                    int, int, int, float* const*, float* const*,
                                                    float* const*, std::int32_t* const*,
                                                    int* n) noexcept {
  for (int r = 0; r < rows; ++r) n[r] = 0;
}
#endif

#undef MOEROUTE_RK_KEEP

}  // namespace MOEROUTE_RK_NS
}  // namespace detail
}  // namespace moeroute

#undef MOEROUTE_RK_NS
#undef MOEROUTE_RK_TARGET
#undef MOEROUTE_RK_W
