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

#include "moeroute/detail/simd.hpp"

namespace moeroute {

namespace detail {
/// exp(x) for x <= 0 (and -inf): relative error below 2e-7 on [-87, 0]; underflows smoothly to
/// 0 through the subnormal range; exp(-inf) == 0. Bit-identical to one lane of vf4_exp_nonpos.
inline float routing_exp_nonpos(float x) noexcept {
#if MOEROUTE_VECTOR_EXT
  return vf4_exp_nonpos(vf4_splat(x))[0];
#else
  x = x < -104.0f ? -104.0f : x;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
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
}  // namespace detail

/// s = softmax(x): exp(x - max) / sum, float32 accumulation (eight partial sums in a fixed
/// order, so results do not depend on batch size or threads). key = exp(x - max).
struct softmax_scoring {
  static constexpr const char* name = "softmax";
  static constexpr bool row_normalized = true;
  float unnormalized(float x, float m) const noexcept { return detail::routing_exp_nonpos(x - m); }
  float prepare(const float* x, float* key, int E) const noexcept {
    const float m = detail::routing_row_max(x, E);
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int e = 0;
#if MOEROUTE_VECTOR_EXT
    const detail::vf4 mv = detail::vf4_splat(m);
    detail::vf4 a0 = detail::vf4_splat(0.0f), a1 = a0;
    for (; e + 8 <= E; e += 8) {
      const detail::vf4 k0 = detail::vf4_exp_nonpos(detail::vf4_load(x + e) - mv);
      const detail::vf4 k1 = detail::vf4_exp_nonpos(detail::vf4_load(x + e + 4) - mv);
      detail::vf4_store(key + e, k0);
      detail::vf4_store(key + e + 4, k1);
      a0 += k0;
      a1 += k1;
    }
    for (int j = 0; j < 4; ++j) {
      acc[j] = a0[j];
      acc[4 + j] = a1[j];
    }
#endif
    for (; e < E; ++e) {  // the same lanes and order as above, one element at a time
      key[e] = detail::routing_exp_nonpos(x[e] - m);
      acc[e % 8] += key[e];
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  }
  float finish(float key, float norm) const noexcept { return key / norm; }
};

/// s = sigmoid(x) = 1 / (1 + exp(-x)) (DeepSeek-V3, ...). key = s; masked (-inf) -> 0.
struct sigmoid_scoring {
  static constexpr const char* name = "sigmoid";
  static constexpr bool row_normalized = false;
#if MOEROUTE_VECTOR_EXT
  static detail::vf4 sigmoid4(detail::vf4 v) noexcept {
    // exp(-|v|) keeps the argument non-positive: sigmoid(v) = 1/(1+t) or t/(1+t)
    const detail::vf4 zero = detail::vf4_splat(0.0f), one = detail::vf4_splat(1.0f);
    const detail::vf4 t = detail::vf4_exp_nonpos(v >= zero ? -v : v);
    return (v >= zero ? one : t) / (one + t);
  }
  float unnormalized(float v, float) const noexcept { return sigmoid4(detail::vf4_splat(v))[0]; }
  float prepare(const float* x, float* key, int E) const noexcept {
    int e = 0;
    for (; e + 4 <= E; e += 4) detail::vf4_store(key + e, sigmoid4(detail::vf4_load(x + e)));
    for (; e < E; ++e) key[e] = unnormalized(x[e], 0.0f);
    return 1.0f;
  }
#else
  float unnormalized(float v, float) const noexcept {
    const float t = detail::routing_exp_nonpos(v >= 0 ? -v : v);
    return (v >= 0 ? 1.0f : t) / (1.0f + t);
  }
  float prepare(const float* x, float* key, int E) const noexcept {
    for (int e = 0; e < E; ++e) key[e] = unnormalized(x[e], 0.0f);
    return 1.0f;
  }
#endif
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
