#pragma once
// IEEE binary16 and bfloat16 <-> float conversions (bit exact, round to nearest even on narrowing).

#include <cstdint>
#include <cstring>

namespace moeroute {

/// 16-bit storage types; values are the raw bits.
struct float16_t {
  std::uint16_t bits;
};
struct bfloat16_t {
  std::uint16_t bits;
};

namespace detail {
inline std::uint32_t f32_bits(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_f32(std::uint32_t u) noexcept {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace detail

/// binary16 bits -> float (exact: every half is a float).
inline float half_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return detail::bits_f32(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return detail::bits_f32(sign);
    // subnormal: normalize
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    mant &= 0x3ffu;
    exp = static_cast<std::uint32_t>(112 - e);
    return detail::bits_f32(sign | (exp << 23) | (mant << 13));
  }
  return detail::bits_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

/// float -> binary16 bits, round to nearest even; overflow gives infinity, NaN stays NaN.
inline std::uint16_t float_to_half(float f) noexcept {
  const std::uint32_t u = detail::f32_bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t absu = u & 0x7fffffffu;
  if (absu >= 0x7f800000u) {  // inf or NaN
    return static_cast<std::uint16_t>(sign | 0x7c00u | (absu > 0x7f800000u ? 0x200u : 0u));
  }
  if (absu >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (absu < 0x38800000u) {  // result is subnormal or zero
    if (absu < 0x33000000u) return sign;  // below half of the smallest subnormal
    const std::uint32_t exp = absu >> 23;
    const std::uint32_t mant = (absu & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - exp;  // 14..24
    std::uint32_t r = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1u);
    const std::uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return static_cast<std::uint16_t>(sign | r);
  }
  std::uint32_t r = (absu - 0x38000000u) >> 13;  // rebias exponent 127 -> 15
  const std::uint32_t rem = absu & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;
  return static_cast<std::uint16_t>(sign | r);
}

/// bfloat16 bits -> float (exact).
inline float bf16_to_float(std::uint16_t b) noexcept {
  return detail::bits_f32(static_cast<std::uint32_t>(b) << 16);
}

/// float -> bfloat16 bits, round to nearest even; NaN stays NaN.
inline std::uint16_t float_to_bf16(float f) noexcept {
  const std::uint32_t u = detail::f32_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  const std::uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>((u + rounding) >> 16);
}

inline float to_float(float v) noexcept { return v; }
inline float to_float(float16_t v) noexcept { return half_to_float(v.bits); }
inline float to_float(bfloat16_t v) noexcept { return bf16_to_float(v.bits); }

}  // namespace moeroute
