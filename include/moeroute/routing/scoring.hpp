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
// Keys let the router choose experts before it normalizes the whole row: softmax only needs the
// normalizer for the chosen experts' weights.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace moeroute {

namespace detail {
/// exp(x) for x <= 0 (and -inf), branch free so loops over it vectorize. Relative error below
/// 2e-7 on [-87, 0]; underflows smoothly to 0 through the subnormal range; exp(-inf) == 0.
inline float routing_exp_nonpos(float x) noexcept {
  x = x < -104.0f ? -104.0f : x;  // also maps -inf; e^-104 rounds to 0
  // round to nearest with the 1.5 * 2^23 trick (vectorizes without SSE4.1)
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;          // ln2 split in two for an exact reduction
  r = r - n * -2.12194440e-4f;
  // e^r on [-ln2/2, ln2/2], degree-6 minimax (Cephes-style coefficients)
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // 2^n for n in [-151, 0], split in two factors that are normal floats
  const std::int32_t ni = static_cast<std::int32_t>(n);
  const std::int32_t n1 = ni / 2;
  const std::int32_t n2 = ni - n1;
  const std::uint32_t b1 = static_cast<std::uint32_t>(n1 + 127) << 23;
  const std::uint32_t b2 = static_cast<std::uint32_t>(n2 + 127) << 23;
  float f1, f2;
  std::memcpy(&f1, &b1, 4);
  std::memcpy(&f2, &b2, 4);
  return p * f1 * f2;
}

/// max over a row of finite-or-(-inf) values, with eight partial maxima (vectorizable, exact).
inline float routing_row_max(const float* x, int E) noexcept {
  constexpr float ninf = -std::numeric_limits<float>::infinity();
  float m[8] = {ninf, ninf, ninf, ninf, ninf, ninf, ninf, ninf};
  int e = 0;
  for (; e + 8 <= E; e += 8)
    for (int j = 0; j < 8; ++j) m[j] = x[e + j] > m[j] ? x[e + j] : m[j];
  for (; e < E; ++e) m[0] = x[e] > m[0] ? x[e] : m[0];
  for (int j = 1; j < 8; ++j) m[0] = m[j] > m[0] ? m[j] : m[0];
  return m[0];
}
}  // namespace detail

/// s = softmax(x): exp(x - max) / sum, float32 accumulation (eight partial sums in a fixed
/// order, so results do not depend on batch size or threads). key = exp(x - max).
struct softmax_scoring {
  static constexpr const char* name = "softmax";
  float prepare(const float* x, float* key, int E) const noexcept {
    const float m = detail::routing_row_max(x, E);
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int e = 0;
    for (; e + 8 <= E; e += 8)
      for (int j = 0; j < 8; ++j) {
        key[e + j] = detail::routing_exp_nonpos(x[e + j] - m);
        acc[j] += key[e + j];
      }
    for (; e < E; ++e) {
      key[e] = detail::routing_exp_nonpos(x[e] - m);
      acc[0] += key[e];
    }
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  }
  float finish(float key, float norm) const noexcept { return key / norm; }
};

/// s = sigmoid(x) = 1 / (1 + exp(-x)) (DeepSeek-V3, ...). key = s; masked (-inf) -> 0.
struct sigmoid_scoring {
  static constexpr const char* name = "sigmoid";
  float prepare(const float* x, float* key, int E) const noexcept {
    for (int e = 0; e < E; ++e) {
      const float v = x[e];
      // exp(-|v|) keeps the argument non-positive: sigmoid(v) = 1/(1+t) or t/(1+t)
      const float t = detail::routing_exp_nonpos(v >= 0 ? -v : v);
      key[e] = v >= 0 ? 1.0f / (1.0f + t) : t / (1.0f + t);
    }
    return 1.0f;
  }
  float finish(float key, float) const noexcept { return key; }
};

/// s = sqrt(softplus(x)) = sqrt(log(1 + exp(x))). key = s; masked (-inf) -> 0.
struct sqrt_softplus_scoring {
  static constexpr const char* name = "sqrt-softplus";
  float prepare(const float* x, float* key, int E) const noexcept {
    for (int e = 0; e < E; ++e) {
      const float v = x[e];
      // softplus(v) = max(v, 0) + log1p(exp(-|v|))
      const float sp = (v > 0 ? v : 0.0f) + std::log1p(detail::routing_exp_nonpos(v >= 0 ? -v : v));
      key[e] = std::sqrt(sp);
    }
    return 1.0f;
  }
  float finish(float key, float) const noexcept { return key; }
};

}  // namespace moeroute
