#pragma once
// The router's hot loops, one implementation per instruction set (routing/isa.hpp), and the
// dispatchers that pick one by routing_isa_in_use():
//   routing_scan_row        NaN/+inf present?, count of masked (-inf) logits
//   routing_softmax_keys    key = exp(x - max), returns sum(key) in eight partial sums
//   routing_sigmoid_keys    key = sigmoid(x)
//   routing_sigmoid_select  key = sigmoid(x) and sel = key + bias (masked -> -inf) in one pass
//   routing_exp_chosen      exp(x - max) of the K chosen experts only
//   routing_softmax_renorm_write8  K = 8: those exps, renormalized (zero-gated and renormalized
//                           again), scaled and written out when already in the output order
//   routing_select_scores   selection scores: key / norm + bias, or key; masked -> -inf
//   routing_select_topk     the K largest, best first, ties -> lower id; -inf never chosen
//   routing_scan_select_topk  routing_scan_row, then routing_select_topk of the row when it has
//                           no NaN / +inf and K unmasked logits (one pass over the row on AVX-512)
//   routing_scan_select_topk_rows  the same for up to 16 rows at once
//   routing_softmax_renorm_rows8  routing_softmax_renorm_write8 for up to 16 rows at once (AVX-512;
//                           elsewhere none), and routing_write_rows8 to write those rows out
//   routing_group_scores    per group: sum of its two largest (its only one), -inf sum -> -max
//   routing_sigmoid_grouped_topk  sigmoid, bias and the grouped top-K of one or two rows in one
//                           call, the chosen in output order (AVX-512, groups of whole vectors)
// Every path gives bit-identical outputs (see isa.hpp): the exp and sigmoid lanes run the
// operations of vf4_exp_nonpos, softmax sums keep element e in partial sum e % 8 in element
// order, and selections are exact.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "moeroute/detail/simd.hpp"
#include "moeroute/routing/isa.hpp"

#if MOEROUTE_ROUTING_X86
#include <immintrin.h>
#endif

namespace moeroute {
namespace detail {

/// exp(x) for x <= 0 (and -inf): relative error below 2e-7 on [-87, 0]; underflows smoothly to
/// 0 through the subnormal range; exp(-inf) == 0. Bit-identical to one lane of vf4_exp_nonpos.
inline float routing_exp_nonpos(float x) noexcept {
#if MOEROUTE_VECTOR_EXT
  return vf4_exp_nonpos(vf4_splat(x))[0];
#else
  x = x < -104.0f ? -104.0f : x;
  volatile float t = x * 1.44269504088896341f;  // rounded before the add, as on the vector paths
  const float n = (t + 12582912.0f) - 12582912.0f;
  float r = std::fma(-n, 0.693359375f, x);
  r = std::fma(-n, -2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  volatile float pr = p * r;
  p = std::fma(pr, r, r) + 1.0f;
  const std::int32_t ni = static_cast<std::int32_t>(n);
  const std::int32_t n1 = ni >> 1;
  const std::int32_t n2 = ni - n1;
  const std::uint32_t b1 = static_cast<std::uint32_t>(n1 + 127) << 23;
  const std::uint32_t b2 = static_cast<std::uint32_t>(n2 + 127) << 23;
  float f1, f2;
  std::memcpy(&f1, &b1, 4);
  std::memcpy(&f2, &b2, 4);
  return p * f1 * f2;
#endif
}

/// max over a row of finite-or-(-inf) values (exact; order of comparison does not matter).
inline float routing_row_max(const float* x, int E) noexcept {
  float m = -std::numeric_limits<float>::infinity();
  int e = 0;
#if MOEROUTE_VECTOR_EXT
  vf4 m0 = vf4_splat(m), m1 = m0;
  for (; e + 8 <= E; e += 8) {
    m0 = vf4_max(m0, vf4_load(x + e));
    m1 = vf4_max(m1, vf4_load(x + e + 4));
  }
  m = vf4_hmax(vf4_max(m0, m1));
#endif
  for (; e < E; ++e) m = x[e] > m ? x[e] : m;
  return m;
}

/// Zero-gating for routing_softmax_renorm_write8: cumulative_gating's cum_prob and min_k, and its
/// max_k capped at 8 (0 taken as 8).
struct routing_gate8 {
  double cum_prob;
  int min_k;
  int max_k;
};

/// Rows routing_scan_select_topk_rows takes at once.
constexpr int routing_topk_rows_max = 16;

/// Keeps the K best (score, id) pairs seen so far, best first. Ids must arrive in ascending
/// order: then an equal score never displaces an earlier (lower) id.
struct routing_topk {
  float* val;
  std::int32_t* id;
  int k;
  int n = 0;

  void push(float v, std::int32_t e) noexcept {
    if (n == k) {
      if (!(v > val[k - 1])) return;
      --n;
    }
    int pos = n;
    while (pos > 0 && val[pos - 1] < v) {
      val[pos] = val[pos - 1];
      id[pos] = id[pos - 1];
      --pos;
    }
    val[pos] = v;
    id[pos] = e;
    ++n;
  }

  /// Pushes score[b..end) in ascending id order, skipping -inf (masked) entries.
  void push_range(const float* score, int b, int end) noexcept {
    int e = b;
#if MOEROUTE_VECTOR_EXT
    if (k <= max_k_fast && n == 0 && end - b >= 16 * k && (end - b) / 8 <= max_chunks) e = select_fast(score, b, end);
#endif
    constexpr float ninf = -std::numeric_limits<float>::infinity();
    for (; e < end; ++e)
      if (score[e] != ninf) push(score[e], e);
  }

#if MOEROUTE_VECTOR_EXT
  static constexpr int max_k_fast = 32;
  static constexpr int max_chunks = 128;  // chunks of 8 scores: E <= 1024 (+ a tail) takes the fast path
  static constexpr int max_rank = 32;     // candidates ranked by counting; more go through push()

  // Top-K of an empty set over [b, end) with few unpredictable branches (they dominate the cost of
  // a plain insertion top-K on random scores):
  //  1. chunk maxima of 8 scores; thr = the K-th largest maximum of K or more disjoint groups of
  //     chunks, found by counting (a lower bound of the K-th largest score: K groups hold a score
  //     >= thr);
  //  2. the scores >= thr of the chunks whose maximum reaches thr, compacted without branches;
  //  3. their order by counting: rank = #(greater) + #(equal with a lower id).
  // Returns the first index not yet visited (the tail after the last full chunk), or b when thr
  // is -inf (fewer than K groups with an unmasked score), leaving everything to push().
  int select_fast(const float* score, int b, int end) noexcept {
    constexpr float ninf = -std::numeric_limits<float>::infinity();
    constexpr float pinf = std::numeric_limits<float>::infinity();
    const int nc = (end - b) / 8, nc4 = (nc + 3) / 4 * 4;
    alignas(16) float cmax[max_chunks + 8];
    for (int i = 0; i < nc; ++i) cmax[i] = chunk_max(score + b + 8 * i);
    for (int i = nc; i < nc4 + 8; ++i) cmax[i] = ninf;
    // thr: the K-th largest of the maxima of disjoint groups of chunks (pairs when there are at
    // least 4K chunks: a quarter of the counting work for a slightly lower bound), found as the
    // smallest value with fewer than K values above it
    const bool pairs = nc >= 4 * k;
    const int np = pairs ? (nc + 1) / 2 : nc, np4 = (np + 3) / 4 * 4;
    alignas(16) float pbuf[max_chunks / 2];
    const float* pmax = cmax;
    if (pairs) {  // chunk 8j + l pairs with 8j + 4 + l
      for (int i = 0; i < np4; i += 4) vf4_store(pbuf + i, vf4_max(vf4_load(cmax + 2 * i), vf4_load(cmax + 2 * i + 4)));
      pmax = pbuf;
    }
    vf4 thr4 = vf4_splat(pinf);
    const vi4 kk = {k, k, k, k};
    for (int i = 0; i < np4; i += 4) {
      const vf4 v = vf4_load(pmax + i);
      vi4 above = {0, 0, 0, 0};
      for (int j = 0; j < np; ++j) above -= (vf4_splat(pmax[j]) > v);  // true lanes are -1
      thr4 = ((above < kk) & (v < thr4)) ? v : thr4;
    }
    const float thr = vf4_hmin(thr4);
    if (!(thr > ninf)) return b;
    // candidates: scores >= thr in ascending id order (thr > -inf excludes masked scores)
    float cv[256 + 4];  // + padding to a multiple of 4 for the ranking
    std::int32_t ci[sizeof cv / sizeof cv[0]];
    constexpr int cap = 256;
    int m = 0;
    bool spilled = false;
    std::uint64_t pass[max_chunks / 64] = {};  // chunks whose maximum reaches thr, as bits
    for (int i = 0; i < nc; ++i) pass[i >> 6] |= static_cast<std::uint64_t>(cmax[i] >= thr) << (i & 63);
    for (int i = 0; i < nc; ++i) {
      std::uint64_t rest = pass[i >> 6] >> (i & 63);
      if (rest == 0) {
        i |= 63;
        continue;
      }
      i += __builtin_ctzll(rest);
      if (m > cap - 8) {  // many ties at the threshold: hand the candidates so far to push()
        for (int j = 0; j < m; ++j) push(cv[j], ci[j]);
        m = 0;
        spilled = true;
      }
      const int c = b + 8 * i;
      for (int j = 0; j < 8; ++j) {
        const float x = score[c + j];
        cv[m] = x;
        ci[m] = c + j;
        m += x >= thr;
      }
    }
    if (spilled || m > max_rank) {
      for (int j = 0; j < m; ++j) push(cv[j], ci[j]);
      return b + 8 * nc;
    }
    const int m4 = (m + 3) / 4 * 4;
    for (int j = m; j < m4; ++j) {  // padding that ranks below every candidate
      cv[j] = ninf;
      ci[j] = ci[m - 1] + 1;
    }
    for (int i = 0; i < m; ++i) {
      const vf4 v = vf4_splat(cv[i]);
      const vi4 idv = {ci[i], ci[i], ci[i], ci[i]};
      vi4 before = {0, 0, 0, 0};
      for (int j = 0; j < m4; j += 4) {
        vi4 cj;
        std::memcpy(&cj, ci + j, sizeof cj);
        const vf4 w = vf4_load(cv + j);
        before -= (w > v) | ((w == v) & (cj < idv));  // true lanes are -1
      }
      const int rank = before[0] + before[1] + before[2] + before[3];
      if (rank < k) {
        val[rank] = cv[i];
        id[rank] = ci[i];
      }
    }
    n = m < k ? m : k;
    return b + 8 * nc;
  }
  static float chunk_max(const float* p) noexcept {
    return vf4_hmax(vf4_max(vf4_load(p), vf4_load(p + 4)));
  }
#endif
};

#if MOEROUTE_VECTOR_EXT
/// sigmoid lane-wise: exp(-|v|) keeps the argument non-positive, sigmoid(v) = 1/(1+t) or t/(1+t).
inline vf4 routing_sigmoid4(vf4 v) noexcept {
  const vf4 zero = vf4_splat(0.0f), one = vf4_splat(1.0f);
  const vf4 t = vf4_exp_nonpos(v >= zero ? -v : v);
  return (v >= zero ? one : t) / (one + t);
}
inline float routing_sigmoid(float v) noexcept { return routing_sigmoid4(vf4_splat(v))[0]; }
#else
inline float routing_sigmoid(float v) noexcept {
  const float t = routing_exp_nonpos(v >= 0 ? -v : v);
  return (v >= 0 ? 1.0f : t) / (1.0f + t);
}
#endif

/// The portable path: 4-lane vectors where the compiler has them.
namespace rk_portable {
inline void scan_row(const float* x, int E, int* bad, int* masked) noexcept {
  constexpr float inf = std::numeric_limits<float>::infinity();
  int b = 0, m = 0;
  for (int e = 0; e < E; ++e) {
    b |= !(x[e] < inf);  // NaN or +inf
    m += x[e] == -inf;
  }
  *bad = b;
  *masked = m;
}

inline float softmax_keys(const float* x, float* key, int E) noexcept {
  const float m = routing_row_max(x, E);
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int e = 0;
#if MOEROUTE_VECTOR_EXT
  const vf4 mv = vf4_splat(m);
  vf4 a0 = vf4_splat(0.0f), a1 = a0;
  for (; e + 8 <= E; e += 8) {
    const vf4 k0 = vf4_exp_nonpos(vf4_load(x + e) - mv);
    const vf4 k1 = vf4_exp_nonpos(vf4_load(x + e + 4) - mv);
    vf4_store(key + e, k0);
    vf4_store(key + e + 4, k1);
    a0 += k0;
    a1 += k1;
  }
  for (int j = 0; j < 4; ++j) {
    acc[j] = a0[j];
    acc[4 + j] = a1[j];
  }
#endif
  for (; e < E; ++e) {  // the same lanes and order as above, one element at a time
    key[e] = routing_exp_nonpos(x[e] - m);
    acc[e % 8] += key[e];
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

inline void exp_chosen(const float* x, const std::int32_t* id, int K, float m, float* out) noexcept {
  int i = 0;
#if MOEROUTE_VECTOR_EXT
  const vf4 mv = vf4_splat(m);
  for (; i + 4 <= K; i += 4) {
    const vf4 v = {x[id[i]], x[id[i + 1]], x[id[i + 2]], x[id[i + 3]]};
    vf4_store(out + i, vf4_exp_nonpos(v - mv));
  }
#endif
  for (; i < K; ++i) out[i] = routing_exp_nonpos(x[id[i]] - m);
}

/// The vector paths' shortcut for K == 8 (kernels_x86.inl); here: out only, and 0.
inline int softmax_renorm_write8(const float* x, const std::int32_t* id, float m, float,
                                 const routing_gate8*, float* out, std::int32_t*, float*) noexcept {
  exp_chosen(x, id, 8, m, out);
  return 0;
}

inline void sigmoid_keys(const float* x, float* key, int E) noexcept {
  int e = 0;
#if MOEROUTE_VECTOR_EXT
  for (; e + 4 <= E; e += 4) vf4_store(key + e, routing_sigmoid4(vf4_load(x + e)));
#endif
  for (; e < E; ++e) key[e] = routing_sigmoid(x[e]);
}

inline void sigmoid_select(const float* x, float* key, const float* bias, float* sel, int E) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  int e = 0;
#if MOEROUTE_VECTOR_EXT
  const vf4 vninf = vf4_splat(ninf);
  for (; e + 4 <= E; e += 4) {
    const vf4 v = vf4_load(x + e), k = routing_sigmoid4(v);
    vf4_store(key + e, k);
    vf4_store(sel + e, v == vninf ? vninf : k + vf4_load(bias + e));
  }
#endif
  for (; e < E; ++e) {
    key[e] = routing_sigmoid(x[e]);
    sel[e] = x[e] == ninf ? ninf : key[e] + bias[e];
  }
}

inline void select_scores(const float* x, const float* key, float norm, const float* bias,
                          float* sel, int E) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  if (bias) {
    for (int e = 0; e < E; ++e) sel[e] = x[e] == ninf ? ninf : key[e] / norm + bias[e];
  } else {
    for (int e = 0; e < E; ++e) sel[e] = x[e] == ninf ? ninf : key[e];
  }
}

inline int select_topk(const float* score, int E, int K, float* val, std::int32_t* id) noexcept {
  routing_topk t{val, id, K};
  t.push_range(score, 0, E);
  return t.n;
}

inline void group_scores(const float* score, int groups, int per, float* gscore) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  for (int g = 0; g < groups; ++g) {
    const float* s = score + static_cast<std::ptrdiff_t>(g) * per;
    float a = ninf, b = ninf;  // the two largest, a >= b (no branches: b = max(b, min(a, v)))
    int j = 0;
#if MOEROUTE_VECTOR_EXT
    if (per >= 8) {  // the two largest of each lane, then of the 8 lane values
      vf4 a4 = vf4_splat(ninf), b4 = a4;
      for (; j + 4 <= per; j += 4) {
        const vf4 v = vf4_load(s + j);
        const vf4 lo = a4 < v ? a4 : v;
        b4 = b4 > lo ? b4 : lo;
        a4 = a4 > v ? a4 : v;
      }
      for (int l = 0; l < 4; ++l)
        for (const float v : {a4[l], b4[l]}) {
          const float lo = a < v ? a : v;
          b = b > lo ? b : lo;
          a = a > v ? a : v;
        }
    }
#endif
    for (; j < per; ++j) {
      const float v = s[j];
      const float lo = a < v ? a : v;
      b = b > lo ? b : lo;
      a = a > v ? a : v;
    }
    // -inf sums rank below every finite group, and among themselves by index
    const float sum = per == 1 ? a : a + b;
    gscore[g] = sum == ninf ? -std::numeric_limits<float>::max() : sum;
  }
}
/// The vector paths' fused sigmoid + grouped top-K (kernels_x86.inl); here: nothing chosen.
inline void sigmoid_grouped_topk(const float* const*, int rows, const float*, int, int, int, int,
                                 float* const*, float* const*, float* const*, std::int32_t* const*,
                                 int* n) noexcept {
  for (int r = 0; r < rows; ++r) n[r] = 0;
}
}  // namespace rk_portable
}  // namespace detail
}  // namespace moeroute

#if MOEROUTE_ROUTING_X86
#define MOEROUTE_RK_NS rk_avx2
#define MOEROUTE_RK_TARGET __attribute__((target("avx2,fma,popcnt,bmi")))
#define MOEROUTE_RK_W 8
#include "moeroute/routing/kernels_x86.inl"
#define MOEROUTE_RK_NS rk_avx512
#define MOEROUTE_RK_TARGET \
  __attribute__((target("avx2,fma,popcnt,bmi,avx512f,avx512bw,avx512dq,avx512vl")))
#define MOEROUTE_RK_W 16
#include "moeroute/routing/kernels_x86.inl"
#endif

namespace moeroute {
namespace detail {

#if MOEROUTE_ROUTING_X86
#define MOEROUTE_RK_DISPATCH(fn, ...)                                        \
  switch (routing_isa_in_use()) {                                          \
    case routing_isa::avx512: return rk_avx512::fn(__VA_ARGS__);           \
    case routing_isa::avx2: return rk_avx2::fn(__VA_ARGS__);               \
    default: return rk_portable::fn(__VA_ARGS__);                          \
  }
#else
#define MOEROUTE_RK_DISPATCH(fn, ...) return rk_portable::fn(__VA_ARGS__);
#endif

inline void routing_scan_row(const float* x, int E, int* bad, int* masked) noexcept {
  MOEROUTE_RK_DISPATCH(scan_row, x, E, bad, masked)
}
inline float routing_softmax_keys(const float* x, float* key, int E) noexcept {
  MOEROUTE_RK_DISPATCH(softmax_keys, x, key, E)
}
inline void routing_sigmoid_keys(const float* x, float* key, int E) noexcept {
  MOEROUTE_RK_DISPATCH(sigmoid_keys, x, key, E)
}
/// out[i] = exp(x[id[i]] - m) for i < K (x[id[i]] <= m): the softmax numerators of the chosen.
inline void routing_exp_chosen(const float* x, const std::int32_t* id, int K, float m,
                               float* out) noexcept {
  MOEROUTE_RK_DISPATCH(exp_chosen, x, id, K, m, out)
}
/// K == 8, softmax + renorm, the chosen in the top-K's order (m = x[id[0]]): out[i] = exp(x[id[i]]
/// - m); then, when that is already the output order and the weights are finite, what the router
/// computes from out: w[i] = out[i] / sum (the sum in index order); with gate, the first n kept as
/// cumulative_gating::keep decides and renormalized again when n < 8; ids[0, n) = id and
/// w[0, n) times scale, returning n. Otherwise (and always on the portable path) 0, having written
/// out.
inline int routing_softmax_renorm_write8(const float* x, const std::int32_t* id, float m,
                                         float scale, const routing_gate8* gate, float* out,
                                         std::int32_t* ids, float* w) noexcept {
  MOEROUTE_RK_DISPATCH(softmax_renorm_write8, x, id, m, scale, gate, out, ids, w)
}
/// key = sigmoid(x); sel = key + bias (the same as routing_select_scores with norm 1: key / 1 is
/// key), masked (x == -inf) -> -inf.
inline void routing_sigmoid_select(const float* x, float* key, const float* bias, float* sel,
                                   int E) noexcept {
  MOEROUTE_RK_DISPATCH(sigmoid_select, x, key, bias, sel, E)
}
/// bias == nullptr: sel = key; else sel = key / norm + bias. Masked (x == -inf) -> -inf.
inline void routing_select_scores(const float* x, const float* key, float norm, const float* bias,
                                  float* sel, int E) noexcept {
  MOEROUTE_RK_DISPATCH(select_scores, x, key, norm, bias, sel, E)
}
inline int routing_select_topk(const float* score, int E, int K, float* val,
                               std::int32_t* id) noexcept {
  MOEROUTE_RK_DISPATCH(select_topk, score, E, K, val, id)
}
/// routing_scan_row(x, E, bad, masked); then, when !*bad and E - *masked >= K,
/// routing_select_topk(x, E, K, val, id); else 0. One pass over the row on AVX-512; the two
/// kernels one after the other on the other paths.
inline int routing_scan_select_topk(const float* x, int E, int K, float* val, std::int32_t* id,
                                    int* bad, int* masked) noexcept {
#if MOEROUTE_ROUTING_X86
  if (routing_isa_in_use() == routing_isa::avx512)
    return rk_avx512::scan_select_topk(x, E, K, val, id, bad, masked);
#endif
  routing_scan_row(x, E, bad, masked);
  if (*bad || E - *masked < K) return 0;
  return routing_select_topk(x, E, K, val, id);
}
/// routing_scan_select_topk of rows r in [0, rows) (rows <= routing_topk_rows_max) of x, row r
/// at x + r * stride: its K at val + r * K and id + r * K, its return value in n[r], its scan in
/// bad[r] and masked[r]. On AVX-512 the rows' selections finish after all of them have been
/// scanned, so no row waits on its own candidate list (the same results as row by row).
inline void routing_scan_select_topk_rows(const float* x, std::size_t stride, int rows, int E,
                                          int K, float* val, std::int32_t* id, int* n, int* bad,
                                          int* masked) noexcept {
#if MOEROUTE_ROUTING_X86
  if (routing_isa_in_use() == routing_isa::avx512)
    return rk_avx512::scan_select_topk_rows(x, stride, rows, E, K, val, id, n, bad, masked);
#endif
  for (int r = 0; r < rows; ++r)
    n[r] = routing_scan_select_topk(x + static_cast<std::size_t>(r) * stride, E, K,
                                    val + static_cast<std::ptrdiff_t>(r) * K,
                                    id + static_cast<std::ptrdiff_t>(r) * K, bad + r, masked + r);
}
/// DeepSeek-V3's scoring and selection of `rows` (1 or 2) rows in one call where the shape allows
/// it (kernels_x86.inl, AVX-512: groups of whole vectors, finite logits). Per row r: key[r] =
/// sigmoid(x[r]), sel[r] = key[r] + bias (bias may be null), the grouped top-K of sel[r] (ties
/// to the lower id) written as val[r] = key of the chosen and id[r], in descending key order (ties
/// to the lower id), n[r] = K. n[r] = 0: nothing chosen (other paths and shapes, a NaN / inf /
/// -inf logit, many ties): the general steps route that row.
inline void routing_sigmoid_grouped_topk(const float* const* x, int rows, const float* bias, int E,
                                         int K, int groups, int topk_groups, float* const* key,
                                         float* const* sel, float* const* val,
                                         std::int32_t* const* id, int* n) noexcept {
  MOEROUTE_RK_DISPATCH(sigmoid_grouped_topk, x, rows, bias, E, K, groups, topk_groups, key, sel, val, id, n)
}
/// routing_softmax_renorm_write8 of the rows r of a block (r < routing_topk_rows_max) whose bit
/// is set in `rows`, row r's 8 chosen logits at val + 8 r in the top-K's order (those of
/// routing_scan_select_topk_rows with K = 8): returns the set of rows for which it would return
/// nonzero, with row r's weights (x scale, 8 of them, those past the kept count scratch) at
/// w + 8 r and its kept count at kept[r]. AVX-512 computes the rows at once, a row per lane; the
/// other paths return 0 (each row then takes routing_softmax_renorm_write8 on its own).
inline unsigned routing_softmax_renorm_rows8(const float* val, unsigned rows, float scale,
                                             const routing_gate8* gate, float* w,
                                             std::int32_t* kept) noexcept {
#if MOEROUTE_ROUTING_X86
  if (routing_isa_in_use() == routing_isa::avx512)
    return rk_avx512::softmax_renorm_rows8(val, rows, scale, gate, w, kept);
#endif
  (void)val, (void)rows, (void)scale, (void)gate, (void)w, (void)kept;
  return 0;
}
/// Writes rows [r0, r1) of a block that routing_softmax_renorm_rows8 did: row r's first kept[r]
/// ids (id + 8 r) and weights (w + 8 r) at ids + nnz and weights + nnz, then nnz += kept[r] and
/// offsets[r] = nnz. Returns nnz.
inline std::uint32_t routing_write_rows8(const std::int32_t* id, const float* w,
                                         const std::int32_t* kept, int r0, int r1,
                                         std::int32_t* ids, float* weights, std::uint32_t nnz,
                                         std::uint32_t* offsets) noexcept {
#if MOEROUTE_ROUTING_X86
  if (routing_isa_in_use() == routing_isa::avx512)
    return rk_avx512::write_rows8(id, w, kept, r0, r1, ids, weights, nnz, offsets);
#endif
  for (int r = r0; r < r1; ++r) {
    for (int i = 0; i < kept[r]; ++i) {
      ids[nnz + static_cast<std::uint32_t>(i)] = id[8 * r + i];
      weights[nnz + static_cast<std::uint32_t>(i)] = w[8 * r + i];
    }
    nnz += static_cast<std::uint32_t>(kept[r]);
    offsets[r] = nnz;
  }
  return nnz;
}
inline void routing_group_scores(const float* score, int groups, int per, float* gscore) noexcept {
  MOEROUTE_RK_DISPATCH(group_scores, score, groups, per, gscore)
}
#undef MOEROUTE_RK_DISPATCH

}  // namespace detail
}  // namespace moeroute
