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
    constexpr float ninf = -std::numeric_limits<float>::infinity();
    int e = b;
#if MOEROUTE_VECTOR_EXT
    constexpr int max_k_fast = 32;
    if (k <= max_k_fast && n == 0 && end - b >= 16 * k) {
      // Pass 1: the K-th largest of the chunk maxima is a lower bound of the K-th largest score
      // (K chunks each hold a score at least that large). Pass 2 visits only chunks that reach it.
      float cval[max_k_fast];
      std::int32_t cid[max_k_fast];
      routing_topk chunks{cval, cid, k};
      const int full_end = b + (end - b) / 8 * 8;
      for (int c = b; c < full_end; c += 8) chunks.push(chunk_max(score + c), c);
      const float thr = chunks.n == k ? cval[k - 1] : ninf;
      for (; e < full_end; e += 8) {
        if (chunk_max(score + e) < thr) continue;
        for (int j = e; j < e + 8; ++j)
          if (score[j] >= thr && score[j] != ninf) push(score[j], j);
      }
    }
#endif
    for (; e < end; ++e)
      if (score[e] != ninf) push(score[e], e);
  }

#if MOEROUTE_VECTOR_EXT
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
  /// group scores, the best groups' scores and ids
  std::size_t workspace_bytes(int) const noexcept {
    return static_cast<std::size_t>(groups) * (2 * sizeof(float) + sizeof(std::int32_t));
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
      float a = ninf, b = ninf;  // the two largest, a >= b
      for (int j = 0; j < per; ++j) {
        if (s[j] > a) {
          b = a;
          a = s[j];
        } else if (s[j] > b) {
          b = s[j];
        }
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
    detail::routing_topk t{top_score, top_id, K};
    for (int i = 0; i < tg.n; ++i) t.push_range(score, gid[i] * per, gid[i] * per + per);
    return t.n;
  }
};

}  // namespace moeroute
