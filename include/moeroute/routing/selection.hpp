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
//       Scores are never NaN (the router rejects NaN logits and non-finite biases before it
//       selects); which experts NaN scores would choose is not defined.
//       Writes the chosen experts best first (ties: lower id first) and returns how many were
//       chosen: K, or fewer when fewer than K experts are eligible (the router reports that).
// One tie rule everywhere: equal scores -> the lower expert index wins.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "moeroute/routing/kernels.hpp"
#include "moeroute/error.hpp"

namespace moeroute {


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
    return detail::routing_select_topk(score, E, K, top_score, top_id);
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
    const int per = E / groups;
    auto* gscore = static_cast<float*>(workspace);
    float* gval = gscore + groups;
    auto* gid = reinterpret_cast<std::int32_t*>(gval + groups);
    detail::routing_group_scores(score, groups, per, gscore);
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
    const int n = detail::routing_select_topk(kept, tg.n * per, K, top_score, top_id);
    for (int i = 0; i < n; ++i) top_id[i] = gid[top_id[i] / per] * per + top_id[i] % per;
    return n;
  }
};

}  // namespace moeroute
