#pragma once
// Scoring policies: router logits -> expert scores s.
//
// Contract of a Scoring policy P (all members noexcept, no allocation):
//   static constexpr const char* name;
//   float prepare(const float* x, float* key, int E) const;
//       x: one row of E logits, each finite or -inf (masked; the router rejects NaN and +inf
//       before calling). Writes key[e], a value with the same order as s[e] (key[e] >= key[f]
//       exactly when s[e] >= s[f] up to rounding), and returns the row's normalizer.
//       Masked experts get key 0 (the router masks them separately).
//   float finish(float key, float norm) const;   // s[e] = finish(key[e], norm)
//   static constexpr bool row_normalized;        // s depends on the whole row (softmax)
//   float unnormalized(float x, float m) const;  // key of one expert from its logit x and the
//                                                // row's largest logit m: s = key / norm
// Every scoring is strictly increasing in the logit, so an order-only selection without a bias
// compares logits directly: that is the exact order of the scores (float rounding of s could
// merge two scores into a tie that the real-valued scores do not have), and it spares computing
// s for experts that are not chosen. Then a row-normalized score needs its normalizer only when
// the weights are not renormalized.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "moeroute/routing/kernels.hpp"

namespace moeroute {

/// s = softmax(x): exp(x - max) / sum, float32 accumulation (eight partial sums in a fixed
/// order, so results do not depend on batch size or threads). key = exp(x - max).
struct softmax_scoring {
  static constexpr const char* name = "softmax";
  static constexpr bool row_normalized = true;
  float unnormalized(float x, float m) const noexcept { return detail::routing_exp_nonpos(x - m); }
  /// Runs on the instruction set of routing_isa_in_use() (the same bits on every one).
  float prepare(const float* x, float* key, int E) const noexcept {
    return detail::routing_softmax_keys(x, key, E);
  }
  float finish(float key, float norm) const noexcept { return key / norm; }
};

/// s = sigmoid(x) = 1 / (1 + exp(-x)) (DeepSeek-V3, ...). key = s; masked (-inf) -> 0.
struct sigmoid_scoring {
  static constexpr const char* name = "sigmoid";
  static constexpr bool row_normalized = false;
  float unnormalized(float v, float) const noexcept { return detail::routing_sigmoid(v); }
  /// Runs on the instruction set of routing_isa_in_use() (the same bits on every one).
  float prepare(const float* x, float* key, int E) const noexcept {
    detail::routing_sigmoid_keys(x, key, E);
    return 1.0f;
  }
  float finish(float key, float) const noexcept { return key; }
};

/// s = sqrt(softplus(x)) = sqrt(log(1 + exp(x))). key = s; masked (-inf) -> 0.
struct sqrt_softplus_scoring {
  static constexpr const char* name = "sqrt-softplus";
  static constexpr bool row_normalized = false;
  float unnormalized(float v, float) const noexcept {
    // softplus(v) = max(v, 0) + log1p(exp(-|v|))
    return std::sqrt((v > 0 ? v : 0.0f) + std::log1p(detail::routing_exp_nonpos(v >= 0 ? -v : v)));
  }
  float prepare(const float* x, float* key, int E) const noexcept {
    for (int e = 0; e < E; ++e) key[e] = unnormalized(x[e], 0.0f);
    return 1.0f;
  }
  float finish(float key, float) const noexcept { return key; }
};

}  // namespace moeroute
