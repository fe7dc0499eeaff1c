#pragma once
// Expert weight formats: ggml's type ids, block layouts and sizes (core: no Eigen, no Vulkan).
//
// A row of n values of a block type is n / block_elems(t) blocks stored back to back; each block
// is block_bytes(t) bytes. Multi-byte fields are little-endian; "f16" is IEEE binary16, "e8m0" an
// exponent-only byte (value 2^(e - 127)). Layouts (byte offsets inside one block), as defined by
// ggml (ggml-common.h) and decoded by dequant.hpp:
//
//   f32    1 value, 4 bytes.           f16 / bf16  1 value, 2 bytes.
//   q4_0   32 values, 18 bytes: [0] f16 d, [2] qs[16]. Byte j holds value j (low nibble) and
//          value j + 16 (high nibble); value = d * (nibble - 8).
//   q4_1   32 values, 20 bytes: [0] f16 d, [2] f16 m, [4] qs[16] as q4_0; value = d * nibble + m.
//   q5_0   32 values, 22 bytes: [0] f16 d, [2] qh (u32, bit j = 5th bit of value j), [6] qs[16]
//          as q4_0; value = d * ((nibble | 5th bit << 4) - 16).
//   q5_1   32 values, 24 bytes: [0] f16 d, [2] f16 m, [4] qh (u32), [8] qs[16];
//          value = d * (nibble | 5th bit << 4) + m.
//   q8_0   32 values, 34 bytes: [0] f16 d, [2] int8 qs[32]; value = d * q.
//   iq4_nl 32 values, 18 bytes: [0] f16 d, [2] qs[16] as q4_0; value = d * kvalues_iq4nl[nibble].
//   mxfp4  32 values, 17 bytes: [0] e8m0 e, [1] qs[16] as q4_0; value = 2^(e - 128) *
//          kvalues_mxfp4[nibble] (the table holds twice the E2M1 values).
//   q2_k   256 values, 84 bytes: [0] scales[16] (low nibble: scale, high nibble: min of each
//          16-value group), [16] qs[64] (2 bits each), [80] f16 d, [82] f16 dmin.
//          In each half h (0, 1) of 128 values, 2-bit plane s (0..3) of qs[32h + l] holds value
//          128h + 32s + l (l < 32), which belongs to group 8h + 2s + (l >= 16);
//          value = d * scale * q - dmin * min.
//   q3_k   256 values, 110 bytes: [0] hmask[32], [32] qs[64], [96] scales[12] (16 6-bit signed
//          scales, offset 32), [108] f16 d. Value positions and groups as q2_k; value
//          128h + 32s + l has q = its 2-bit plane - (bit 4h + s of hmask[l] set ? 0 : 4);
//          value = d * (scale - 32) * q. Scale j: low 4 bits in scales[j % 8] >> 4 * (j / 8),
//          high 2 bits in scales[8 + j % 4] >> 2 * (j / 4).
//   q4_k   256 values, 144 bytes: [0] f16 d, [2] f16 dmin, [4] scales[12] (8 6-bit scales and 8
//          6-bit mins, packed as ggml's get_scale_min_k4), [16] qs[128]. Values 64c + l (l < 32):
//          low nibble of qs[32c + l], group 2c; values 64c + 32 + l: high nibble, group 2c + 1;
//          value = d * scale * q - dmin * min.
//   q5_k   256 values, 176 bytes: [0] f16 d, [2] f16 dmin, [4] scales[12] as q4_k, [16] qh[32],
//          [48] qs[128] as q4_k; the 5th bit of value 64c + l is bit 2c of qh[l], of value
//          64c + 32 + l bit 2c + 1.
//   q6_k   256 values, 210 bytes: [0] ql[128], [128] qh[64], [192] int8 scales[16], [208] f16 d.
//          In each half h: value 128h + 32s + l (l < 32) has low 4 bits from ql[64h + l + 32 (s & 1)]
//          (low nibble for s < 2, high for s >= 2) and high 2 bits from qh[32h + l] >> 2s;
//          value = d * scales[8h + 2s + l / 16] * (q - 32).
//   iq4_xs 256 values, 136 bytes: [0] f16 d, [2] u16 scales_h, [4] scales_l[4], [8] qs[128].
//          Group g (32 values, g < 8): 6-bit scale ls = (scales_l[g / 2] >> 4 (g % 2)) & 15 |
//          ((scales_h >> 2g) & 3) << 4; qs[16g + j] as q4_0 inside the group;
//          value = d * (ls - 32) * kvalues_iq4nl[nibble].

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace moeroute {

/// Encoding of expert weights; the values are ggml's type ids (as written in GGUF tensor infos).
enum class weight_type : std::uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q2_k = 10,
  q3_k = 11,
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  iq4_nl = 20,
  iq4_xs = 23,
  bf16 = 30,
  mxfp4 = 39,
};

/// Every weight_type, in ggml id order.
inline constexpr weight_type all_weight_types[] = {
    weight_type::f32,  weight_type::f16,  weight_type::q4_0, weight_type::q4_1,   weight_type::q5_0,   weight_type::q5_1,
    weight_type::q8_0, weight_type::q2_k, weight_type::q3_k, weight_type::q4_k,   weight_type::q5_k,   weight_type::q6_k,
    weight_type::iq4_nl, weight_type::iq4_xs, weight_type::bf16, weight_type::mxfp4,
};

/// "f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k",
/// "q6_k", "iq4_nl", "iq4_xs", "mxfp4"; "unknown" for a value outside the enum.
inline const char* weight_type_name(weight_type t) noexcept {
  switch (t) {
    case weight_type::f32: return "f32";
    case weight_type::f16: return "f16";
    case weight_type::q4_0: return "q4_0";
    case weight_type::q4_1: return "q4_1";
    case weight_type::q5_0: return "q5_0";
    case weight_type::q5_1: return "q5_1";
    case weight_type::q8_0: return "q8_0";
    case weight_type::q2_k: return "q2_k";
    case weight_type::q3_k: return "q3_k";
    case weight_type::q4_k: return "q4_k";
    case weight_type::q5_k: return "q5_k";
    case weight_type::q6_k: return "q6_k";
    case weight_type::iq4_nl: return "iq4_nl";
    case weight_type::iq4_xs: return "iq4_xs";
    case weight_type::bf16: return "bf16";
    case weight_type::mxfp4: return "mxfp4";
  }
  return "unknown";
}

/// The type named `name` (as weight_type_name spells it, case-sensitive); false when no type has
/// that name.
inline bool weight_type_from_name(const char* name, weight_type& out) noexcept {
  for (weight_type t : all_weight_types)
    if (std::strcmp(weight_type_name(t), name) == 0) {
      out = t;
      return true;
    }
  return false;
}

/// The weight_type of ggml type id `id`; false for ids moeroute does not compute with (Q8_1,
/// Q8_K, the IQ1/IQ2/IQ3 families, TQ*, integer and f64 types, ids it does not know).
inline bool weight_type_from_ggml(std::uint32_t id, weight_type& out) noexcept {
  for (weight_type t : all_weight_types)
    if (static_cast<std::uint32_t>(t) == id) {
      out = t;
      return true;
    }
  return false;
}

/// Values per block: 1 for f32, f16 and bf16; 32 for q4_0, q4_1, q5_0, q5_1, q8_0, iq4_nl and
/// mxfp4; 256 for the K-quants and iq4_xs.
constexpr std::size_t block_elems(weight_type t) noexcept {
  switch (t) {
    case weight_type::f32: case weight_type::f16: case weight_type::bf16: return 1;
    case weight_type::q4_0: case weight_type::q4_1: case weight_type::q5_0: case weight_type::q5_1:
    case weight_type::q8_0: case weight_type::iq4_nl: case weight_type::mxfp4: return 32;
    case weight_type::q2_k: case weight_type::q3_k: case weight_type::q4_k: case weight_type::q5_k:
    case weight_type::q6_k: case weight_type::iq4_xs: return 256;
  }
  return 0;
}

/// Bytes per block (see the layouts above).
constexpr std::size_t block_bytes(weight_type t) noexcept {
  switch (t) {
    case weight_type::f32: return 4;
    case weight_type::f16: return 2;
    case weight_type::bf16: return 2;
    case weight_type::q4_0: return 18;
    case weight_type::q4_1: return 20;
    case weight_type::q5_0: return 22;
    case weight_type::q5_1: return 24;
    case weight_type::q8_0: return 34;
    case weight_type::iq4_nl: return 18;
    case weight_type::mxfp4: return 17;
    case weight_type::q2_k: return 84;
    case weight_type::q3_k: return 110;
    case weight_type::q4_k: return 144;
    case weight_type::q5_k: return 176;
    case weight_type::q6_k: return 210;
    case weight_type::iq4_xs: return 136;
  }
  return 0;
}

/// Bytes of one row of n values; n must be a multiple of block_elems(t).
inline std::size_t row_bytes(weight_type t, std::size_t n) noexcept {
  const std::size_t be = block_elems(t);
  return be == 0 ? 0 : n / be * block_bytes(t);
}

}  // namespace moeroute
