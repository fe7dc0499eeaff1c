#pragma once
// Selection policies: choose the K best experts of a row by selection score.
//
// Contract of a Selection policy P:
//   static constexpr const char* name;
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
};
}  // namespace detail

/// Plain top-K over all unmasked experts.
struct topk_selection {
  static constexpr const char* name = "topk";
  void validate(int E, int K) const {
    MOEROUTE_CHECK(K >= 1 && K <= E, errc::invalid_argument, "top-k: K = ", K,
                   " must be in [1, E = ", E, "]");
  }
  std::size_t workspace_bytes(int) const noexcept { return 0; }
  int select(const float* score, int E, int K, float* top_score, std::int32_t* top_id,
             void*) const noexcept {
    constexpr float ninf = -std::numeric_limits<float>::infinity();
    detail::routing_topk t{top_score, top_id, K};
    for (int e = 0; e < E; ++e)
      if (score[e] != ninf) t.push(score[e], e);
    return t.n;
  }
};

/// Group-limited top-K (DeepSeek-V3 noaux_tc): E experts in `groups` equal groups; a group's
/// score is the sum of its two largest selection scores (its only one when a group has one
/// expert); the `topk_groups` best groups stay eligible (ties: lower group index), then top-K
/// over the eligible experts. A masked expert counts as -inf inside its group's sum.
struct grouped_topk_selection {
  static constexpr const char* name = "grouped-topk";
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
    for (int i = 0; i < tg.n; ++i) {
      const int base = gid[i] * per;
      for (int j = 0; j < per; ++j)
        if (score[base + j] != ninf) t.push(score[base + j], base + j);
    }
    return t.n;
  }
};

}  // namespace moeroute
