#pragma once
// Selection policies: choose the K best experts of a row by selection score.
//
// Contract of a Selection policy P:
//   static constexpr const char* name;
//   static constexpr bool order_only;   // true: the choice depends only on the scores' order,
//                                       // so a strictly increasing transform may be skipped
//   void validate(int E, int K) const;              // throws moeroute::error on a bad shape
//   std::size_t workspace_bytes(int E) const noexcept;    // scratch for select, 4-byte aligned
//   int select(const float* score, int E, int K, float* top_score, std::int32_t* top_id,
//              void* workspace) const noexcept;
//       score[e] is the selection score; -inf marks an expert that cannot be chosen (masked).
//       Writes the chosen experts best first (ties: lower id first) and returns how many were
//       chosen: K, or fewer when fewer than K experts are eligible (the router reports that).
// One tie rule everywhere: equal scores -> the lower expert index wins.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "moeroute/detail/simd.hpp"
#include "moeroute/error.hpp"

namespace moeroute {

namespace detail {
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
}  // namespace detail

/// Plain top-K over all unmasked experts.
struct topk_selection {
  static constexpr const char* name = "topk";
  /// The choice depends only on the order of the scores (not their values).
  static constexpr bool order_only = true;
  void validate(int E, int K) const {
    MOEROUTE_CHECK(K >= 1 && K <= E, errc::invalid_argument, "top-k: K = ", K,
                   " must be in [1, E = ", E, "]");
  }
  std::size_t workspace_bytes(int) const noexcept { return 0; }
  int select(const float* score, int E, int K, float* top_score, std::int32_t* top_id,
             void*) const noexcept {
    detail::routing_topk t{top_score, top_id, K};
    t.push_range(score, 0, E);
    return t.n;
  }
};

/// Group-limited top-K (DeepSeek-V3 noaux_tc): E experts in `groups` equal groups; a group's
/// score is the sum of its two largest selection scores (its only one when a group has one
/// expert); the `topk_groups` best groups stay eligible (ties: lower group index), then top-K
/// over the eligible experts. A masked expert counts as -inf inside its group's sum.
struct grouped_topk_selection {
  static constexpr const char* name = "grouped-topk";
  /// Group scores add values, so the choice needs the scores themselves.
  static constexpr bool order_only = false;
  int groups = 1;
  int topk_groups = 1;

  void validate(int E, int K) const {
    MOEROUTE_CHECK(groups >= 1 && E % groups == 0, errc::invalid_argument, "grouped top-k: E = ",
                   E, " is not divisible by groups = ", groups);
    MOEROUTE_CHECK(topk_groups >= 1 && topk_groups <= groups, errc::invalid_argument,
                   "grouped top-k: topk_groups = ", topk_groups, " must be in [1, groups = ",
                   groups, "]");
    MOEROUTE_CHECK(K >= 1 && K <= (E / groups) * topk_groups, errc::invalid_argument,
                   "grouped top-k: K = ", K, " exceeds the ", (E / groups) * topk_groups,
                   " experts of ", topk_groups, " groups of ", E / groups);
  }
  /// group scores, the best groups' scores and ids, the kept groups' scores side by side
  std::size_t workspace_bytes(int E) const noexcept {
    return static_cast<std::size_t>(groups) * (2 * sizeof(float) + sizeof(std::int32_t)) +
           static_cast<std::size_t>(E) * sizeof(float);
  }

  int select(const float* score, int E, int K, float* top_score, std::int32_t* top_id,
             void* workspace) const noexcept {
    constexpr float ninf = -std::numeric_limits<float>::infinity();
    const int per = E / groups;
    auto* gscore = static_cast<float*>(workspace);
    float* gval = gscore + groups;
    auto* gid = reinterpret_cast<std::int32_t*>(gval + groups);
    for (int g = 0; g < groups; ++g) {
      const float* s = score + static_cast<std::ptrdiff_t>(g) * per;
      float a = ninf, b = ninf;  // the two largest, a >= b (no branches: b = max(b, min(a, v)))
      int j = 0;
#if MOEROUTE_VECTOR_EXT
      if (per >= 8) {  // the two largest of each lane, then of the 8 lane values
        detail::vf4 a4 = detail::vf4_splat(ninf), b4 = a4;
        for (; j + 4 <= per; j += 4) {
          const detail::vf4 v = detail::vf4_load(s + j);
          const detail::vf4 lo = a4 < v ? a4 : v;
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
    detail::routing_topk tg{gval, gid, topk_groups};
    for (int g = 0; g < groups; ++g) tg.push(gscore[g], g);
    // visit eligible experts in ascending id order so that ties keep the lower id
    for (int i = 1; i < tg.n; ++i) {
      const std::int32_t v = gid[i];
      int j = i;
      for (; j > 0 && gid[j - 1] > v; --j) gid[j] = gid[j - 1];
      gid[j] = v;
    }
    // the kept groups side by side, in ascending id order: one top-K over them, ids mapped back
    auto* kept = reinterpret_cast<float*>(gid + groups);
    for (int i = 0; i < tg.n; ++i)
      std::memcpy(kept + static_cast<std::ptrdiff_t>(i) * per, score + static_cast<std::ptrdiff_t>(gid[i]) * per,
                  static_cast<std::size_t>(per) * sizeof(float));
    detail::routing_topk t{top_score, top_id, K};
    t.push_range(kept, 0, tg.n * per);
    for (int i = 0; i < t.n; ++i) top_id[i] = gid[top_id[i] / per] * per + top_id[i] % per;
    return t.n;
  }
};

}  // namespace moeroute
