#pragma once
// 4-lane float vectors through the GCC/Clang vector extension (SSE2 on x86-64, NEON on ARM),
// with a scalar fallback. Only used inside moeroute's hot loops; every lane computes exactly what
// the scalar path would, so results do not depend on which path ran.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <initializer_list>

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

/// Keeps a product out of a fused multiply-add: compilers contract a * b + c into one FMA where
/// the target has it (GCC by default, across statements), which rounds once instead of twice, so
/// paths compiled for different targets would differ in the last bit. The empty asm makes the
/// product a value the compiler must materialize.
#if defined(__x86_64__)
#define MOEROUTE_FP_KEEP(v) __asm__("" : "+x"(v))
#elif defined(__aarch64__)
#define MOEROUTE_FP_KEEP(v) __asm__("" : "+w"(v))
#else
#define MOEROUTE_FP_KEEP(v) __asm__("" : "+m"(v))
#endif

/// a * b + c rounded once in every lane (IEEE fused multiply-add): an FMA instruction where the
/// target has one (ARMv8, x86 built with FMA), the C library's correctly rounded fmaf elsewhere;
/// the same bits either way, and the same as the AVX paths' FMA instructions.
inline vf4 vf4_fma(vf4 a, vf4 b, vf4 c) noexcept {
  vf4 r;
  for (int i = 0; i < 4; ++i) r[i] = std::fma(a[i], b[i], c[i]);
  return r;
}

/// exp(x) lane-wise for x <= 0 (and -inf): relative error below 2e-7 on [-87, 0], smooth
/// underflow through the subnormals, exp(-inf) == 0. Cephes-style: n = round(x / ln 2), r = x - n
/// ln 2 in two parts, a degree-5 polynomial, 2^n in two halves. The reduction and the polynomial
/// are fused multiply-adds (vf4_fma) and every other product is kept out of one (see
/// MOEROUTE_FP_KEEP): the AVX paths of routing/kernels_x86.inl run the same operations.
inline vf4 vf4_exp_nonpos(vf4 x) noexcept {
  const vf4 lo = vf4_splat(-104.0f);
  x = x < lo ? lo : x;
  const vf4 magic = vf4_splat(12582912.0f);  // 1.5 * 2^23: round to nearest
  vf4 t = x * vf4_splat(1.44269504088896341f);
  MOEROUTE_FP_KEEP(t);
  const vf4 n = (t + magic) - magic;
  const vf4 m = -n;
  vf4 r = vf4_fma(m, vf4_splat(0.693359375f), x);
  r = vf4_fma(m, vf4_splat(-2.12194440e-4f), r);
  vf4 p = vf4_splat(1.9875691500e-4f);
  for (const float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f,
                        5.0000001201e-1f})
    p = vf4_fma(p, r, vf4_splat(c));
  p = p * r;
  MOEROUTE_FP_KEEP(p);
  p = vf4_fma(p, r, r) + vf4_splat(1.0f);
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
