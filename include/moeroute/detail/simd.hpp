#pragma once
// 4-lane float vectors through the GCC/Clang vector extension (SSE2 on x86-64, NEON on ARM),
// with a scalar fallback. Only used inside moeroute's hot loops; every lane computes exactly what
// the scalar path would, so results do not depend on which path ran.

#include <cstdint>
#include <cstring>

#if defined(__GNUC__) || defined(__clang__)
#define MOEROUTE_VECTOR_EXT 1
#endif

namespace moeroute::detail {

#if MOEROUTE_VECTOR_EXT
typedef float vf4 __attribute__((vector_size(16)));
typedef std::int32_t vi4 __attribute__((vector_size(16)));

inline vf4 vf4_splat(float v) noexcept { return vf4{v, v, v, v}; }
inline vf4 vf4_load(const float* p) noexcept {
  vf4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void vf4_store(float* p, vf4 v) noexcept { std::memcpy(p, &v, sizeof v); }
inline vf4 vf4_max(vf4 a, vf4 b) noexcept { return a > b ? a : b; }
inline float vf4_hmax(vf4 v) noexcept {
  const float a = v[0] > v[1] ? v[0] : v[1];
  const float b = v[2] > v[3] ? v[2] : v[3];
  return a > b ? a : b;
}

inline float vf4_hmin(vf4 v) noexcept {
  const float a = v[0] < v[1] ? v[0] : v[1];
  const float b = v[2] < v[3] ? v[2] : v[3];
  return a < b ? a : b;
}

/// exp(x) lane-wise for x <= 0 (and -inf): relative error below 2e-7 on [-87, 0], smooth
/// underflow through the subnormals, exp(-inf) == 0.
inline vf4 vf4_exp_nonpos(vf4 x) noexcept {
  const vf4 lo = vf4_splat(-104.0f);
  x = x < lo ? lo : x;
  const vf4 magic = vf4_splat(12582912.0f);  // 1.5 * 2^23: round to nearest
  const vf4 n = (x * vf4_splat(1.44269504088896341f) + magic) - magic;
  vf4 r = x - n * vf4_splat(0.693359375f);
  r = r - n * vf4_splat(-2.12194440e-4f);
  vf4 p = vf4_splat(1.9875691500e-4f);
  p = p * r + vf4_splat(1.3981999507e-3f);
  p = p * r + vf4_splat(8.3334519073e-3f);
  p = p * r + vf4_splat(4.1665795894e-2f);
  p = p * r + vf4_splat(1.6666665459e-1f);
  p = p * r + vf4_splat(5.0000001201e-1f);
  p = p * r * r + r + vf4_splat(1.0f);
  const vi4 ni = __builtin_convertvector(n, vi4);
  const vi4 n1 = ni >> 1;  // both halves stay in the normal exponent range
  const vi4 n2 = ni - n1;
  const vi4 bias = {127, 127, 127, 127};
  const vi4 b1 = (n1 + bias) << 23;
  const vi4 b2 = (n2 + bias) << 23;
  vf4 f1, f2;
  std::memcpy(&f1, &b1, sizeof f1);
  std::memcpy(&f2, &b2, sizeof f2);
  return p * f1 * f2;
}
#endif

}  // namespace moeroute::detail
