#version 450
#extension GL_EXT_control_flow_attributes : require
// Grouped expert matmul over the weight pool buffer `buf_index`. One workgroup per (RB output
// rows, expert). Weights, x and the activations are read as uniform texel buffers (uvec4 / vec4
// texels): lavapipe fetches a texel with one vector load per lane, a storage-buffer element with
// one bounds-checked scalar load per component and lane.
//   GATE_UP = 1: g = Wg[f,:] . x[tok[j]] (+ bg[f]), u = Wu[f,:] . x[tok[j]] (+ bu[f]),
//                act[j, f] = silu(g) * u, or swiglu_oai: min(g, 7) * sigmoid(1.702 min(g, 7)) *
//                (clamp(u, -7, 7) + 1)
//   GATE_UP = 0: partial[j, h] = w[j] * (Wd[h,:] . act[j] (+ bd[h]))
// (biases and swiglu_oai per the push constant flags, biases f32 in the slot at bias_off).
// TA: type of the gate (GATE_UP = 1) or down matrix, TU: type of the up matrix (default TA), in
// ggml's numbering (0 f32, 1 f16, 2 q4_0, 3 q4_1, 6 q5_0, 7 q5_1, 8 q8_0, 10 q2_k, 11 q3_k,
// 12 q4_k, 13 q5_k, 14 q6_k, 20 iq4_nl, 23 iq4_xs, 30 bf16, 39 mxfp4), blocks read as they are
// stored. The per-type variants have TU = TA (see vulkan.hpp).
// MIXED = 1 (gate+up only): the gate and up types are the specialization constants 0 and 1, set
//   when the pipeline is created, for layers whose gate and up types differ. Every decoder is
//   compiled in; the driver folds the type switches on the constants, so each pipeline runs only
//   its two decoders. Two modules (mat-vec and tiled) cover every (gate, up) pair.
// MV = 1: mat-vec variant, runs the experts with at most MV_MAX entries, one token per pass. The
//   reduction dimension K is split across lanes: lane (g, kl) owns chunks kl, kl + L, ... of CB
//   blocks (CB * 32 values), keeps the activations of its chunk in registers and walks the rows
//   g, g + G, ... of the workgroup; per-lane partial sums go to shared memory and are added in a
//   fixed lane order (deterministic, no subgroup operations).
// MV = 0: tiled variant, runs the experts with more entries, NTV tokens per pass. Each lane owns
//   RPL whole rows and accumulates RPL x NTV dot products in registers over all of K: every
//   weight block it loads feeds NTV tokens, every activation block feeds RPL rows, and there is
//   no cross-lane reduction. The cost of an expert is ceil(entries / NTV) passes, so zero-gated
//   experts save passes; NTV = 8 keeps that quantization small.
// group.comp lists the two sets of experts separately (MV_MAX must match there) and sizes each
// dispatch (RB of each variant must match there).
#ifndef GATE_UP
#define GATE_UP 1
#endif
#ifndef MIXED
#define MIXED 0
#endif
#if MIXED
#define TA 255  // not a type id: the decoders and dot products follow SC_TA and SC_TU
#define TU 255
layout(constant_id = 0) const uint SC_TA = 0;
layout(constant_id = 1) const uint SC_TU = 0;
#endif
#ifndef TA
#define TA 0
#endif
#ifndef TU
#define TU TA
#endif
#ifndef MV
#define MV 1
#endif
#define MV_MAX 4u
#define WG 64
#if MV
#define RB 64   // rows per workgroup
#define NTV 1   // tokens per pass
#define CB 4    // blocks of 32 values per lane chunk
#define LMAX 32 // most lanes splitting one row
#else
#define RB 256  // rows per workgroup: RPL per lane
#define NTV 8   // tokens per pass
#define RPL 4   // rows per lane (accumulated in registers over the whole row)
#endif
#if GATE_UP
#define NACC 2
#else
#define NACC 1
#endif

layout(local_size_x = WG) in;

layout(std430, set = 0, binding = 2) readonly buffer RWeights { float rweights[]; };
layout(set = 0, binding = 3) uniform samplerBuffer xtex;  // x as vec4 texels
layout(std430, set = 0, binding = 5) readonly buffer SlotTable { int slot_table[]; };
layout(std430, set = 0, binding = 6) readonly buffer ExpertOffsets { uint eoff[]; };
layout(std430, set = 0, binding = 7) readonly buffer List { uint list[]; };
layout(std430, set = 0, binding = 8) readonly buffer Tok { uint tok[]; };
#if GATE_UP
layout(std430, set = 0, binding = 9) writeonly buffer Act { float act[]; };
#else
layout(set = 0, binding = 12) uniform samplerBuffer acttex;  // act as vec4 texels
layout(std430, set = 0, binding = 10) writeonly buffer Partial { float partial[]; };
#endif
layout(set = 0, binding = 11) uniform usamplerBuffer wtex;  // the pool buffer as uvec4 texels
#define WLOAD(i) texelFetch(wtex, int(i))

// flags: bit 0 biases, bit 1 swiglu_oai. rbh / rbu / rbf: bytes per gate / up / down row.
layout(push_constant) uniform Params {
  uint T, nnz, E, H, F, buf_index, spb, stride, up_off, down_off, rbh, rbf, nb, rbu, bias_off, flags;
} pc;

#if MV
shared float part[RB * LMAX * NTV * NACC];
#endif

// ---- Block decoders -------------------------------------------------------------------------------
// dec_<T>(row, blk, s, w0..w7): the 32 values of block blk (values 32 blk .. 32 blk + 31) of the
// weight row starting at byte `row` of the pool buffer, type T in ggml's numbering. Values 0..15
// (w0..w3) are s.x * w + s.z, values 16..31 (w4..w7) are s.y * w + s.w: a scale and an offset per
// half, since Q2_K, Q3_K and Q6_K scale 16 values at a time. The matmuls apply them once per half
// block and token: s.x (w0..w3 . x) + s.y (w4..w7 . x) + s.z sum(x 0..15) + s.w sum(x 16..31).
// HALVES(T): s.x != s.y possible; HASM(T): offsets present (else s.z = s.w = 0 and unused).
// Rows of the 256-value types (K-quants, IQ4_XS) hold superblocks; block blk is sub-block blk % 8
// of superblock blk / 8.
//
// Alignment: matrices start at 16-byte offsets in a slot (vulkan.hpp), so a block starts at a
// multiple of gcd(16, block bytes): 16 for F32/F16/BF16/Q4_K/Q5_K, 8 for Q5_1/IQ4_XS, 4 for
// Q4_1/Q2_K, 2 for Q8_0/Q4_0/Q5_0/IQ4_NL/Q3_K/Q6_K and 1 for MXFP4 (17 bytes). The loaders below
// read the uvec4 texels that cover the bytes and realign them with selects and funnel shifts, so
// no lane branches on an address.
#define HALVES(t) ((t) == 10 || (t) == 11 || (t) == 14)
#define HASM(t) ((t) == 2 || (t) == 3 || (t) == 6 || (t) == 7 || (t) == 10 || (t) == 11 || (t) == 12 || (t) == 13 || (t) == 14)
#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define DEC(t) CAT(dec_, t)
// Whether type t's decoder is needed: the types of this variant's matrices.
#define NEED(t) (MIXED || TA == (t) || TU == (t))

#define WORDS(q, W, i) W[4 * (i)] = q.x; W[4 * (i) + 1] = q.y; W[4 * (i) + 2] = q.z; W[4 * (i) + 3] = q.w
// The word at byte b, b a multiple of 4.
uint word_at(uint b) {
  const uvec4 q = WLOAD(b >> 4);
  const uint a = (b >> 2) & 3u;
  return a < 2u ? (a == 0u ? q.x : q.y) : (a == 2u ? q.z : q.w);
}
// N words from byte b, b a multiple of 4 (word selects) or any byte (selects and funnel shifts).
// NV texels from b rounded down to 16 bytes; texels past the end of the buffer are clamped to the
// last one: they only ever replace bytes that no block uses.
#define TEXELS(NV)                                                                       \
  const uint v = b >> 4, last = uint(textureSize(wtex)) - 1u, a = (b >> 2) & 3u;         \
  uint W[NV * 4];                                                                        \
  [[unroll]] for (uint i = 0; i < NV; ++i) {                                             \
    const uvec4 q = WLOAD(min(v + i, last));                                             \
    WORDS(q, W, i);                                                                      \
  }
#define SEL(k) (a < 2u ? (a == 0u ? W[k] : W[(k) + 1]) : (a == 2u ? W[(k) + 2] : W[(k) + 3]))
#define DEFINE_LOAD(NAME, N, NV)                                                         \
  void NAME(uint b, out uint E[N]) {                                                     \
    TEXELS(NV)                                                                           \
    [[unroll]] for (uint k = 0; k < N; ++k) E[k] = SEL(k);                               \
  }
#define DEFINE_LOAD_BYTES(NAME, N, NV)                                                   \
  void NAME(uint b, out uint E[N]) {                                                     \
    TEXELS(NV)                                                                           \
    const uint sh = (b & 3u) * 8u;                                                       \
    [[unroll]] for (uint k = 0; k < N; ++k) {                                            \
      const uint lo = SEL(k), hi = SEL(k + 1);                                           \
      E[k] = sh == 0u ? lo : (lo >> sh) | (hi << (32u - sh));                            \
    }                                                                                    \
  }

vec4 lo4(uint q) { return vec4(q & 15u, (q >> 8) & 15u, (q >> 16) & 15u, (q >> 24) & 15u); }
vec4 hi4(uint q) { return vec4((q >> 4) & 15u, (q >> 12) & 15u, (q >> 20) & 15u, q >> 28); }
vec4 q8x4(uint q) {
  return vec4(bitfieldExtract(int(q), 0, 8), bitfieldExtract(int(q), 8, 8), bitfieldExtract(int(q), 16, 8),
              bitfieldExtract(int(q), 24, 8));
}
// Bits sh, sh + 1 of each byte.
vec4 two4(uint q, uint sh) {
  return vec4((q >> sh) & 3u, (q >> (sh + 8u)) & 3u, (q >> (sh + 16u)) & 3u, (q >> (sh + 24u)) & 3u);
}
// Bit sh of each byte.
vec4 bit4(uint q, uint sh) {
  return vec4((q >> sh) & 1u, (q >> (sh + 8u)) & 1u, (q >> (sh + 16u)) & 1u, (q >> (sh + 24u)) & 1u);
}
// Bit i .. i + 3 of h.
vec4 bits4(uint h, uint i) { return vec4((h >> i) & 1u, (h >> (i + 1u)) & 1u, (h >> (i + 2u)) & 1u, (h >> (i + 3u)) & 1u); }
float half_lo(uint w) { return unpackHalf2x16(w).x; }
float half_hi(uint w) { return unpackHalf2x16(w).y; }

#define DEC_ARGS uint row, uint blk, out vec4 s, out vec4 w0, out vec4 w1, out vec4 w2, out vec4 w3, out vec4 w4, out vec4 w5, out vec4 w6, out vec4 w7

#if NEED(0)  // F32
void dec_0(DEC_ARGS) {
  const uint w = (row + blk * 128u) >> 4;
  s = vec4(1.0, 1.0, 0.0, 0.0);
  w0 = uintBitsToFloat(WLOAD(w)); w1 = uintBitsToFloat(WLOAD(w + 1));
  w2 = uintBitsToFloat(WLOAD(w + 2)); w3 = uintBitsToFloat(WLOAD(w + 3));
  w4 = uintBitsToFloat(WLOAD(w + 4)); w5 = uintBitsToFloat(WLOAD(w + 5));
  w6 = uintBitsToFloat(WLOAD(w + 6)); w7 = uintBitsToFloat(WLOAD(w + 7));
}
#endif
#if NEED(1)  // F16
void dec_1(DEC_ARGS) {
  const uint w = (row + blk * 64u) >> 4;
  const uvec4 a = WLOAD(w), c = WLOAD(w + 1), f = WLOAD(w + 2), e = WLOAD(w + 3);
  s = vec4(1.0, 1.0, 0.0, 0.0);
  w0 = vec4(unpackHalf2x16(a.x), unpackHalf2x16(a.y)); w1 = vec4(unpackHalf2x16(a.z), unpackHalf2x16(a.w));
  w2 = vec4(unpackHalf2x16(c.x), unpackHalf2x16(c.y)); w3 = vec4(unpackHalf2x16(c.z), unpackHalf2x16(c.w));
  w4 = vec4(unpackHalf2x16(f.x), unpackHalf2x16(f.y)); w5 = vec4(unpackHalf2x16(f.z), unpackHalf2x16(f.w));
  w6 = vec4(unpackHalf2x16(e.x), unpackHalf2x16(e.y)); w7 = vec4(unpackHalf2x16(e.z), unpackHalf2x16(e.w));
}
#endif
#if NEED(30)  // BF16: the high 16 bits of an f32
vec4 bf4(uint a, uint b) { return uintBitsToFloat(uvec4(a << 16, a & 0xffff0000u, b << 16, b & 0xffff0000u)); }
void dec_30(DEC_ARGS) {
  const uint w = (row + blk * 64u) >> 4;
  const uvec4 a = WLOAD(w), c = WLOAD(w + 1), f = WLOAD(w + 2), e = WLOAD(w + 3);
  s = vec4(1.0, 1.0, 0.0, 0.0);
  w0 = bf4(a.x, a.y); w1 = bf4(a.z, a.w); w2 = bf4(c.x, c.y); w3 = bf4(c.z, c.w);
  w4 = bf4(f.x, f.y); w5 = bf4(f.z, f.w); w6 = bf4(e.x, e.y); w7 = bf4(e.z, e.w);
}
#endif

// Blocks with an f16 scale at an even byte b, then quants (Q8_0, Q4_0, Q5_0, IQ4_NL): the words
// from b rounded down to 4 bytes, then q[k] = the words from byte b + 2.
#define DEFINE_EVEN(NAME, NW, NV)                                                        \
  void NAME(uint b, out float d, out uint q[NW - 1]) {                                   \
    uint E[NW];                                                                          \
    load_words_##NAME(b, E);                                                             \
    const bool odd = (b & 2u) != 0u;                                                     \
    d = half_lo(odd ? (E[0] >> 16) : E[0]);                                              \
    [[unroll]] for (uint k = 0; k + 1 < NW; ++k) q[k] = odd ? E[k + 1] : ((E[k] >> 16) | (E[k + 1] << 16)); \
  }
#if NEED(8)  // Q8_0: {f16 d; int8 q[32]}, 34 bytes
DEFINE_LOAD(load_words_even9, 9, 3)
DEFINE_EVEN(even9, 9, 3)
void dec_8(DEC_ARGS) {
  float d;
  uint q[8];
  even9(row + blk * 34u, d, q);
  s = vec4(d, d, 0.0, 0.0);
  w0 = q8x4(q[0]); w1 = q8x4(q[1]); w2 = q8x4(q[2]); w3 = q8x4(q[3]);
  w4 = q8x4(q[4]); w5 = q8x4(q[5]); w6 = q8x4(q[6]); w7 = q8x4(q[7]);
}
#endif
#if NEED(2) || NEED(20) || NEED(6)
DEFINE_LOAD(load_words_even5, 5, 2)
DEFINE_EVEN(even5, 5, 2)
#endif
#if NEED(2)  // Q4_0: {f16 d; uint8 qs[16]}, 18 bytes; byte j = value j (low nibble), j + 16 (high)
void dec_2(DEC_ARGS) {
  float d;
  uint q[4];
  even5(row + blk * 18u, d, q);
  s = vec4(d, d, -8.0 * d, -8.0 * d);
  w0 = lo4(q[0]); w1 = lo4(q[1]); w2 = lo4(q[2]); w3 = lo4(q[3]);
  w4 = hi4(q[0]); w5 = hi4(q[1]); w6 = hi4(q[2]); w7 = hi4(q[3]);
}
#endif
#if NEED(20) || NEED(23) || NEED(39)
// 16-entry int8 code books packed four to a word (entry i in byte i % 4 of word i / 4) and looked
// up per component with selects and shifts: on lavapipe a constant array indexed per lane is a
// gather or a per-lane loop, selects and shifts stay vector operations.
vec4 cb4(uvec4 i, uvec4 tab) {
  const bvec4 hi = greaterThanEqual(i, uvec4(8u)), odd = notEqual(i & 4u, uvec4(0u));
  const uvec4 w = mix(mix(uvec4(tab.x), uvec4(tab.y), odd), mix(uvec4(tab.z), uvec4(tab.w), odd), hi);
  return vec4(ivec4(w << (24u - 8u * (i & 3u))) >> 24);
}
// Nibble indices of the four bytes of q: low nibbles (values 0..15 of a block) or high (16..31).
uvec4 nib_lo(uint q) { return (uvec4(q) >> uvec4(0u, 8u, 16u, 24u)) & 15u; }
uvec4 nib_hi(uint q) { return (uvec4(q) >> uvec4(4u, 12u, 20u, 28u)) & 15u; }
#endif
#if NEED(20) || NEED(23)  // IQ4_NL / IQ4_XS code book: -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113
const uvec4 KV_IQ4 = uvec4(0xBFAD9881u, 0xF6EADDCFu, 0x26190D01u, 0x71594535u);
vec4 iq4lo(uint q) { return cb4(nib_lo(q), KV_IQ4); }
vec4 iq4hi(uint q) { return cb4(nib_hi(q), KV_IQ4); }
#endif
#if NEED(20)  // IQ4_NL: Q4_0's layout, value d * KV_IQ4[nibble]
void dec_20(DEC_ARGS) {
  float d;
  uint q[4];
  even5(row + blk * 18u, d, q);
  s = vec4(d, d, 0.0, 0.0);
  w0 = iq4lo(q[0]); w1 = iq4lo(q[1]); w2 = iq4lo(q[2]); w3 = iq4lo(q[3]);
  w4 = iq4hi(q[0]); w5 = iq4hi(q[1]); w6 = iq4hi(q[2]); w7 = iq4hi(q[3]);
}
#endif
#if NEED(6)  // Q5_0: {f16 d; uint32 qh; uint8 qs[16]}, 22 bytes; value d * (nibble | qh bit << 4) - 16 d
DEFINE_LOAD(load_words_even6, 6, 3)
DEFINE_EVEN(even6, 6, 3)
void dec_6(DEC_ARGS) {
  float d;
  uint q[5];
  even6(row + blk * 22u, d, q);
  const uint h = q[0];
  s = vec4(d, d, -16.0 * d, -16.0 * d);
  w0 = lo4(q[1]) + 16.0 * bits4(h, 0u); w1 = lo4(q[2]) + 16.0 * bits4(h, 4u);
  w2 = lo4(q[3]) + 16.0 * bits4(h, 8u); w3 = lo4(q[4]) + 16.0 * bits4(h, 12u);
  w4 = hi4(q[1]) + 16.0 * bits4(h, 16u); w5 = hi4(q[2]) + 16.0 * bits4(h, 20u);
  w6 = hi4(q[3]) + 16.0 * bits4(h, 24u); w7 = hi4(q[4]) + 16.0 * bits4(h, 28u);
}
#endif
#if NEED(3) || NEED(23)
DEFINE_LOAD(load_w4a4, 4, 2)
#endif
#if NEED(3)  // Q4_1: {f16 d; f16 m; uint8 qs[16]}, 20 bytes; value d * nibble + m
DEFINE_LOAD(load_w5a4, 5, 2)
void dec_3(DEC_ARGS) {
  uint E[5];
  load_w5a4(row + blk * 20u, E);
  const float d = half_lo(E[0]), m = half_hi(E[0]);
  s = vec4(d, d, m, m);
  w0 = lo4(E[1]); w1 = lo4(E[2]); w2 = lo4(E[3]); w3 = lo4(E[4]);
  w4 = hi4(E[1]); w5 = hi4(E[2]); w6 = hi4(E[3]); w7 = hi4(E[4]);
}
#endif
#if NEED(7)  // Q5_1: {f16 d; f16 m; uint32 qh; uint8 qs[16]}, 24 bytes; value d * (nibble | qh bit << 4) + m
DEFINE_LOAD(load_w6a4, 6, 3)
void dec_7(DEC_ARGS) {
  uint E[6];
  load_w6a4(row + blk * 24u, E);
  const float d = half_lo(E[0]), m = half_hi(E[0]);
  const uint h = E[1];
  s = vec4(d, d, m, m);
  w0 = lo4(E[2]) + 16.0 * bits4(h, 0u); w1 = lo4(E[3]) + 16.0 * bits4(h, 4u);
  w2 = lo4(E[4]) + 16.0 * bits4(h, 8u); w3 = lo4(E[5]) + 16.0 * bits4(h, 12u);
  w4 = hi4(E[2]) + 16.0 * bits4(h, 16u); w5 = hi4(E[3]) + 16.0 * bits4(h, 20u);
  w6 = hi4(E[4]) + 16.0 * bits4(h, 24u); w7 = hi4(E[5]) + 16.0 * bits4(h, 28u);
}
#endif
#if NEED(39) || NEED(14)
DEFINE_LOAD_BYTES(load_w5a1, 5, 3)
#endif
#if NEED(39)  // MXFP4: {uint8 e; uint8 qs[16]}, 17 bytes; value 2^(e - 128) * KV_MXFP4[nibble]
// Code book: 0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12 (packed as for cb4).
const uvec4 KV_MXFP4 = uvec4(0x03020100u, 0x0C080604u, 0xFDFEFF00u, 0xF4F8FAFCu);
vec4 fp4lo(uint q) { return cb4(nib_lo(q), KV_MXFP4); }
vec4 fp4hi(uint q) { return cb4(nib_hi(q), KV_MXFP4); }
void dec_39(DEC_ARGS) {
  uint E[5];
  load_w5a1(row + blk * 17u, E);
  const uint e = E[0] & 255u;
  // ggml's E8M0 "half" scale: 2^(e - 128), the two smallest exponents as subnormals.
  const float d = uintBitsToFloat(e < 2u ? (0x00200000u << e) : ((e - 1u) << 23));
  uint q[4];
  [[unroll]] for (uint k = 0; k < 4; ++k) q[k] = (E[k] >> 8) | (E[k + 1] << 24);
  s = vec4(d, d, 0.0, 0.0);
  w0 = fp4lo(q[0]); w1 = fp4lo(q[1]); w2 = fp4lo(q[2]); w3 = fp4lo(q[3]);
  w4 = fp4hi(q[0]); w5 = fp4hi(q[1]); w6 = fp4hi(q[2]); w7 = fp4hi(q[3]);
}
#endif
#if NEED(10) || NEED(12) || NEED(13)
DEFINE_LOAD(load_w8a4, 8, 3)
#endif
#if NEED(10)  // Q2_K: {uint8 scales[16]; uint8 qs[64]; f16 d, dmin}, 84 bytes
// Sub-block s: qs bytes 32 (s / 4) .. + 31 at bit 2 (s % 4); scale bytes 2s (values 0..15) and
// 2s + 1 (16..31), each d * low nibble and -dmin * high nibble.
void dec_10(DEC_ARGS) {
  const uint sb = row + (blk >> 3) * 84u, sub = blk & 7u;
  uint Q[8];
  load_w8a4(sb + 16u + 32u * (sub >> 2), Q);
  const uint sc = word_at(sb + 4u * (sub >> 1)) >> (16u * (sub & 1u)), dd = word_at(sb + 80u);
  const float d = half_lo(dd), dmin = half_hi(dd);
  s = vec4(d * float(sc & 15u), d * float((sc >> 8) & 15u), -dmin * float((sc >> 4) & 15u), -dmin * float((sc >> 12) & 15u));
  const uint sh = 2u * (sub & 3u);
  w0 = two4(Q[0], sh); w1 = two4(Q[1], sh); w2 = two4(Q[2], sh); w3 = two4(Q[3], sh);
  w4 = two4(Q[4], sh); w5 = two4(Q[5], sh); w6 = two4(Q[6], sh); w7 = two4(Q[7], sh);
}
#endif
#if NEED(11) || NEED(14)
DEFINE_LOAD_BYTES(load_w8a1, 8, 3)
#endif
#if NEED(11)  // Q3_K: {uint8 hmask[32]; uint8 qs[64]; uint8 scales[12]; f16 d}, 110 bytes
// Sub-block s: value l = d * (scale - 32) * ((qs bits) + 4 * (hmask[l] bit s) - 4), qs bytes
// 32 + 32 (s / 4) .. at bit 2 (s % 4); 6-bit scales 2s, 2s + 1 packed in 12 bytes: scale k has its
// low 4 bits in byte k (k < 8, low nibble) or k - 8 (high nibble) and its high 2 bits in byte
// 8 + k % 4 at bit 2 (k / 4).
DEFINE_LOAD_BYTES(load_w4a1, 4, 2)
uint byte_of(uint S[4], uint i) { return (S[i >> 2] >> (8u * (i & 3u))) & 255u; }
float q3k_scale(uint S[4], uint k) {
  const uint lo = k < 8u ? byte_of(S, k) & 15u : byte_of(S, k - 8u) >> 4;
  const uint hi = (byte_of(S, 8u + (k & 3u)) >> (2u * (k >> 2))) & 3u;
  return float(int(lo | (hi << 4)) - 32);
}
void dec_11(DEC_ARGS) {
  const uint sb = row + (blk >> 3) * 110u, sub = blk & 7u;
  uint Hm[8], Q[8], S[4];
  load_w8a1(sb, Hm);
  load_w8a1(sb + 32u + 32u * (sub >> 2), Q);
  load_w4a1(sb + 96u, S);  // scales, then d in the low half of S[3]
  const float d = half_lo(S[3]);
  const float d0 = d * q3k_scale(S, 2u * sub), d1 = d * q3k_scale(S, 2u * sub + 1u);
  s = vec4(d0, d1, -4.0 * d0, -4.0 * d1);
  const uint sh = 2u * (sub & 3u);
  w0 = two4(Q[0], sh) + 4.0 * bit4(Hm[0], sub); w1 = two4(Q[1], sh) + 4.0 * bit4(Hm[1], sub);
  w2 = two4(Q[2], sh) + 4.0 * bit4(Hm[2], sub); w3 = two4(Q[3], sh) + 4.0 * bit4(Hm[3], sub);
  w4 = two4(Q[4], sh) + 4.0 * bit4(Hm[4], sub); w5 = two4(Q[5], sh) + 4.0 * bit4(Hm[5], sub);
  w6 = two4(Q[6], sh) + 4.0 * bit4(Hm[6], sub); w7 = two4(Q[7], sh) + 4.0 * bit4(Hm[7], sub);
}
#endif
#if NEED(12) || NEED(13)
// Q4_K / Q5_K scale and min of sub-block j (6 bits each, packed in the 12 bytes after d, dmin:
// words c1..c3 of the superblock's first texel).
void k4_scale_min(uvec4 h, uint j, out float sc, out float mn) {
  uint S[4];
  S[0] = h.y; S[1] = h.z; S[2] = h.w; S[3] = 0u;
  const uint b = (S[j >> 2] >> (8u * (j & 3u))) & 255u;            // byte j (j < 4)
  const uint b4 = (S[(j + 4u) >> 2] >> (8u * (j & 3u))) & 255u;    // byte j + 4
  const uint bm4 = (S[(j - 4u) >> 2 & 3u] >> (8u * (j & 3u))) & 255u;  // byte j - 4 (j >= 4)
  if (j < 4u) {
    sc = float(b & 63u);
    mn = float(b4 & 63u);
  } else {
    sc = float((b4 & 15u) | ((bm4 >> 6) << 4));
    mn = float((b4 >> 4) | ((b >> 6) << 4));
  }
}
#endif
#if NEED(12)  // Q4_K: {f16 d, dmin; uint8 scales[12]; uint8 qs[128]}, 144 bytes (16-aligned)
// Sub-block s: qs bytes 32 (s / 2) .. + 31, low nibbles for even s, high for odd; value
// d * sc * nibble - dmin * m.
void dec_12(DEC_ARGS) {
  const uint sb = row + (blk >> 3) * 144u, sub = blk & 7u;
  const uvec4 h = WLOAD(sb >> 4);
  const uint qv = (sb + 16u + 32u * (sub >> 1)) >> 4;
  const uvec4 a = WLOAD(qv), c = WLOAD(qv + 1u);
  float sc, mn;
  k4_scale_min(h, sub, sc, mn);
  const float d = half_lo(h.x) * sc, m = -half_hi(h.x) * mn;
  s = vec4(d, d, m, m);
  const uint sh = 4u * (sub & 1u);
  w0 = vec4((uvec4(a.x) >> uvec4(sh, sh + 8u, sh + 16u, sh + 24u)) & 15u);
  w1 = vec4((uvec4(a.y) >> uvec4(sh, sh + 8u, sh + 16u, sh + 24u)) & 15u);
  w2 = vec4((uvec4(a.z) >> uvec4(sh, sh + 8u, sh + 16u, sh + 24u)) & 15u);
  w3 = vec4((uvec4(a.w) >> uvec4(sh, sh + 8u, sh + 16u, sh + 24u)) & 15u);
  w4 = vec4((uvec4(c.x) >> uvec4(sh, sh + 8u, sh + 16u, sh + 24u)) & 15u);
  w5 = vec4((uvec4(c.y) >> uvec4(sh, sh + 8u, sh + 16u, sh + 24u)) & 15u);
  w6 = vec4((uvec4(c.z) >> uvec4(sh, sh + 8u, sh + 16u, sh + 24u)) & 15u);
  w7 = vec4((uvec4(c.w) >> uvec4(sh, sh + 8u, sh + 16u, sh + 24u)) & 15u);
}
#endif
#if NEED(13)  // Q5_K: {f16 d, dmin; uint8 scales[12]; uint8 qh[32]; uint8 qs[128]}, 176 bytes (16-aligned)
// As Q4_K, plus bit s of qh[l] as the fifth bit of value l.
vec4 nib5(uint q, uint sh, uint h, uint hs) {
  return vec4((uvec4(q) >> uvec4(sh, sh + 8u, sh + 16u, sh + 24u)) & 15u) + 16.0 * bit4(h, hs);
}
void dec_13(DEC_ARGS) {
  const uint sb = row + (blk >> 3) * 176u, sub = blk & 7u;
  const uvec4 h = WLOAD(sb >> 4), h0 = WLOAD((sb >> 4) + 1u), h1 = WLOAD((sb >> 4) + 2u);
  const uint qv = (sb + 48u + 32u * (sub >> 1)) >> 4;
  const uvec4 a = WLOAD(qv), c = WLOAD(qv + 1u);
  float sc, mn;
  k4_scale_min(h, sub, sc, mn);
  const float d = half_lo(h.x) * sc, m = -half_hi(h.x) * mn;
  s = vec4(d, d, m, m);
  const uint sh = 4u * (sub & 1u);
  w0 = nib5(a.x, sh, h0.x, sub); w1 = nib5(a.y, sh, h0.y, sub); w2 = nib5(a.z, sh, h0.z, sub); w3 = nib5(a.w, sh, h0.w, sub);
  w4 = nib5(c.x, sh, h1.x, sub); w5 = nib5(c.y, sh, h1.y, sub); w6 = nib5(c.z, sh, h1.z, sub); w7 = nib5(c.w, sh, h1.w, sub);
}
#endif
#if NEED(14)  // Q6_K: {uint8 ql[128]; uint8 qh[64]; int8 scales[16]; f16 d}, 210 bytes
// Sub-block s = 4n + j: ql bytes 64n + 32 (j % 2) .. + 31 (low nibbles for j < 2, else high), qh
// bytes 128 + 32n .. + 31 at bit 2j; value l = d * scale[2s + l / 16] * (q6 - 32).
vec4 q6v(uint q, uint nsh, uint h, uint hsh) {
  return vec4((uvec4(q) >> uvec4(nsh, nsh + 8u, nsh + 16u, nsh + 24u)) & 15u) + 16.0 * two4(h, hsh);
}
void dec_14(DEC_ARGS) {
  const uint sb = row + (blk >> 3) * 210u, sub = blk & 7u, n = sub >> 2, j = sub & 3u;
  uint L[8], Hq[8], S[5];
  load_w8a1(sb + 64u * n + 32u * (j & 1u), L);
  load_w8a1(sb + 128u + 32u * n, Hq);
  load_w5a1(sb + 192u, S);  // 16 int8 scales, then d in the low half of S[4]
  const float d = half_lo(S[4]);
  const int sw = int(S[sub >> 1]), so = 16 * int(sub & 1u);
  const float d0 = d * float(bitfieldExtract(sw, so, 8)), d1 = d * float(bitfieldExtract(sw, so + 8, 8));
  s = vec4(d0, d1, -32.0 * d0, -32.0 * d1);
  const uint nsh = 4u * (j >> 1), hsh = 2u * j;
  w0 = q6v(L[0], nsh, Hq[0], hsh); w1 = q6v(L[1], nsh, Hq[1], hsh); w2 = q6v(L[2], nsh, Hq[2], hsh); w3 = q6v(L[3], nsh, Hq[3], hsh);
  w4 = q6v(L[4], nsh, Hq[4], hsh); w5 = q6v(L[5], nsh, Hq[5], hsh); w6 = q6v(L[6], nsh, Hq[6], hsh); w7 = q6v(L[7], nsh, Hq[7], hsh);
}
#endif
#if NEED(23)  // IQ4_XS: {f16 d; uint16 scales_h; uint8 scales_l[4]; uint8 qs[128]}, 136 bytes
// Sub-block s: qs bytes 16s .. + 15 (IQ4_NL order), scale (low nibble s % 2 of scales_l[s / 2]
// | bits 2s, 2s + 1 of scales_h << 4) - 32.
void dec_23(DEC_ARGS) {
  const uint sb = row + (blk >> 3) * 136u, sub = blk & 7u;
  uint Q[4];
  load_w4a4(sb + 8u + 16u * sub, Q);
  const uint h0 = word_at(sb), h1 = word_at(sb + 4u);
  const uint ls = ((h1 >> (4u * sub)) & 15u) | (((h0 >> (16u + 2u * sub)) & 3u) << 4);
  const float d = half_lo(h0) * float(int(ls) - 32);
  s = vec4(d, d, 0.0, 0.0);
  w0 = iq4lo(Q[0]); w1 = iq4lo(Q[1]); w2 = iq4lo(Q[2]); w3 = iq4lo(Q[3]);
  w4 = iq4hi(Q[0]); w5 = iq4hi(Q[1]); w6 = iq4hi(Q[2]); w7 = iq4hi(Q[3]);
}
#endif
#if MIXED
// Decoder of type t (a specialization constant: the driver keeps one case).
void dec_any(uint t, DEC_ARGS) {
  switch (t) {
    case 0u: dec_0(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
    case 1u: dec_1(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
    case 2u: dec_2(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
    case 3u: dec_3(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
    case 6u: dec_6(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
    case 7u: dec_7(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
    case 8u: dec_8(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
    case 10u: dec_10(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
    case 11u: dec_11(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
    case 12u: dec_12(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
    case 13u: dec_13(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
    case 14u: dec_14(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
    case 20u: dec_20(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
    case 23u: dec_23(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
    case 30u: dec_30(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
    default: dec_39(row, blk, s, w0, w1, w2, w3, w4, w5, w6, w7); break;
  }
}
#define LOAD_A(row, blk, s, W) dec_any(SC_TA, row, blk, s, W##0, W##1, W##2, W##3, W##4, W##5, W##6, W##7)
#define LOAD_U(row, blk, s, W) dec_any(SC_TU, row, blk, s, W##0, W##1, W##2, W##3, W##4, W##5, W##6, W##7)
#else
#define LOAD_A(row, blk, s, W) DEC(TA)(row, blk, s, W##0, W##1, W##2, W##3, W##4, W##5, W##6, W##7)
#define LOAD_U(row, blk, s, W) DEC(TU)(row, blk, s, W##0, W##1, W##2, W##3, W##4, W##5, W##6, W##7)
#endif

#define XN (CB * 8)

#if TA == 2 && TU == 2 && MV
// Four consecutive Q4_0 blocks (72 bytes from the even byte b): 6 uvec4 loads instead of 8.
void load_chunk(uint b, out float dv[4], out vec4 wv[32]) {
  const uint v = b >> 4, last = uint(textureSize(wtex)) - 1u;
  uint W[24];
  [[unroll]] for (uint i = 0; i < 6; ++i) {
    const uvec4 q = WLOAD(min(v + i, last));
    WORDS(q, W, i);
  }
  const uint a = (b >> 2) & 3u;
  const bool odd = (b & 2u) != 0u;
  uint E[19], Q[18];  // words from b rounded down to 4 bytes; words from b
  [[unroll]] for (uint k = 0; k < 19; ++k) E[k] = SEL(k);
  [[unroll]] for (uint k = 0; k < 18; ++k) Q[k] = odd ? ((E[k] >> 16) | (E[k + 1] << 16)) : E[k];
  // Blocks at bytes 0 and 36 (words 0 and 9) start word-aligned, blocks at 18 and 54 half-way.
  [[unroll]] for (uint h = 0; h < 2; ++h) {
    const uint o = 9 * h;
    dv[2 * h] = unpackHalf2x16(Q[o]).x;
    dv[2 * h + 1] = unpackHalf2x16(Q[o + 4] >> 16).x;
    [[unroll]] for (uint k = 0; k < 4; ++k) {
      const uint q0 = (Q[o + k] >> 16) | (Q[o + k + 1] << 16), q1 = Q[o + 5 + k];
      wv[16 * h + k] = lo4(q0);
      wv[16 * h + 4 + k] = hi4(q0);
      wv[16 * h + 8 + k] = lo4(q1);
      wv[16 * h + 12 + k] = hi4(q1);
    }
  }
}
#define CHUNK_Q4_0 1
#else
#define CHUNK_Q4_0 0
#endif

// Sums of the activations of half block h: xh[2 * (token * blocks + block) + half].
#define XHALF(o) dot(xr[(o)] + xr[(o) + 1] + xr[(o) + 2] + xr[(o) + 3], vec4(1.0))
#define DOTV(W, w, o) (dot(W[(w)], xr[(o)]) + dot(W[(w) + 1], xr[(o) + 1]) + dot(W[(w) + 2], xr[(o) + 2]) + \
                       dot(W[(w) + 3], xr[(o) + 3]) + dot(W[(w) + 4], xr[(o) + 4]) + dot(W[(w) + 5], xr[(o) + 5]) + \
                       dot(W[(w) + 6], xr[(o) + 6]) + dot(W[(w) + 7], xr[(o) + 7]))
#define DOTLO(W, o) (dot(W##0, xr[(o)]) + dot(W##1, xr[(o) + 1]) + dot(W##2, xr[(o) + 2]) + dot(W##3, xr[(o) + 3]))
#define DOTHI(W, o) (dot(W##4, xr[(o) + 4]) + dot(W##5, xr[(o) + 5]) + dot(W##6, xr[(o) + 6]) + dot(W##7, xr[(o) + 7]))
// The dot product of a decoded block (scales s, values W) with the 32 activations at xr[o]
// whose half sums are xh[h], xh[h + 1], for a type with the HALVES / HASM properties of T.
#define BDOT_H(s, W, o, h) (s.x * DOTLO(W, o) + s.y * DOTHI(W, o) + s.z * xh[(h)] + s.w * xh[(h) + 1])
#define BDOT_M(s, W, o, h) (s.x * (DOTLO(W, o) + DOTHI(W, o)) + s.z * (xh[(h)] + xh[(h) + 1]))
#define BDOT_0(s, W, o, h) (s.x * (DOTLO(W, o) + DOTHI(W, o)))
#if MIXED
#define BDOT_SC(t, s, W, o, h) (HALVES(t) ? BDOT_H(s, W, o, h) : (HASM(t) ? BDOT_M(s, W, o, h) : BDOT_0(s, W, o, h)))
#define BDOT_A(s, W, o, h) BDOT_SC(SC_TA, s, W, o, h)
#define BDOT_U(s, W, o, h) BDOT_SC(SC_TU, s, W, o, h)
#else
#if HALVES(TA)
#define BDOT_A BDOT_H
#elif HASM(TA)
#define BDOT_A BDOT_M
#else
#define BDOT_A BDOT_0
#endif
#if HALVES(TU)
#define BDOT_U BDOT_H
#elif HASM(TU)
#define BDOT_U BDOT_M
#else
#define BDOT_U BDOT_0
#endif
#endif

// Expert number li of this pool buffer's list (group.comp): its entries [beg, beg + n) of `list`,
// the output rows and reduction length of this matmul, the bytes per row of its first (gate or
// down) and up matrix, their byte offsets in the pool buffer (row_u = row_a for down) and the
// byte offset of the expert's biases.
void expert_at(uint li, out uint beg, out uint n, out uint rows, out uint K, out uint rb, out uint rbu,
               out uint row_a, out uint row_u, out uint bias) {
  const uint e = eoff[pc.E + 1 + pc.buf_index * pc.E + li];
  beg = eoff[e];
  n = eoff[e + 1] - beg;
  const uint slot_base = (uint(slot_table[e]) % pc.spb) * pc.stride;
  bias = slot_base + pc.bias_off;
#if GATE_UP
  rows = pc.F; K = pc.H; rb = pc.rbh; rbu = pc.rbu;
  row_a = slot_base;
  row_u = slot_base + pc.up_off;
#else
  rows = pc.H; K = pc.F; rb = pc.rbf; rbu = rb;
  row_a = slot_base + pc.down_off;
  row_u = row_a;
#endif
}

#if GATE_UP
// The activation of output row f from the gate and up dot products (biases gate F, up F floats).
float activation(float g, float u, uint bias, uint f) {
  if ((pc.flags & 1u) != 0u) {
    g += uintBitsToFloat(word_at(bias + 4u * f));
    u += uintBitsToFloat(word_at(bias + 4u * (pc.F + f)));
  }
  if ((pc.flags & 2u) != 0u) {
    const float gc = min(g, 7.0), uc = clamp(u, -7.0, 7.0);
    return gc / (1.0 + exp(-1.702 * gc)) * (uc + 1.0);
  }
  return g / (1.0 + exp(-g)) * u;
}
#else
// The down output of row h with its bias (after gate F and up F floats).
float down_out(float a, uint bias, uint h) {
  return (pc.flags & 1u) != 0u ? a + uintBitsToFloat(word_at(bias + 4u * (2u * pc.F + h))) : a;
}
#endif

#if MV
void main() {
  // Dispatched indirectly over the experts of this pool buffer with at most MV_MAX entries.
  uint beg, n, rows, K, rb, rbu, row_a, row_u, bias;
  expert_at(gl_WorkGroupID.y, beg, n, rows, K, rb, rbu, row_a, row_u, bias);
  const uint tid = gl_LocalInvocationID.x;
  const uint nbk = K / 32u;                      // blocks per row
  const uint NC = (nbk + CB - 1u) / CB;          // chunks per row
  const uint L = min(NC, uint(LMAX));            // lanes splitting a row
  const uint G = WG / L;                         // row groups
  const uint g = tid / L, kl = tid % L;
  const uint row0 = gl_WorkGroupID.x * RB;
  const uint nr = min(uint(RB), rows - row0);

  // do-while where a loop runs at least once (see the tiled kernel).
  uint c0 = 0;  // experts in the list have entries
  do {
    const uint nt = min(uint(NTV), n - c0);
    uint xb[NTV];
    [[unroll]] for (uint t = 0; t < NTV; ++t) {
      const uint j = list[beg + c0 + min(t, nt - 1u)];
#if GATE_UP
      xb[t] = tok[j] * (pc.H / 4u);
#else
      xb[t] = j * (pc.F / 4u);
#endif
    }
    if (g < G) {
      uint c = kl;  // kl < L <= NC
      do {
        vec4 xr[NTV * XN];
        [[unroll]] for (uint i = 0; i < XN; ++i) {
          const uint k4 = c * (CB * 8u) + i;        // vec4 index inside the row
          const bool kv = k4 < K / 4u;
          [[unroll]] for (uint t = 0; t < NTV; ++t) {
#if GATE_UP
            const vec4 v = texelFetch(xtex, int(xb[t] + (kv ? k4 : 0u)));
#else
            const vec4 v = texelFetch(acttex, int(xb[t] + (kv ? k4 : 0u)));
#endif
            xr[t * XN + i] = kv ? v : vec4(0.0);
          }
        }
        float xh[NTV * CB * 2];
        [[unroll]] for (uint i = 0; i < NTV * CB * 2; ++i) xh[i] = XHALF(4 * i);
        for (uint r = g; r < nr; r += G) {
          float sa[NTV];
#if GATE_UP
          float su[NTV];
#endif
          [[unroll]] for (uint t = 0; t < NTV; ++t) {
            sa[t] = 0.0;
#if GATE_UP
            su[t] = 0.0;
#endif
          }
#if CHUNK_Q4_0
          float adv[4], udv[4];
          vec4 awv[32], uwv[32];
          load_chunk(row_a + (row0 + r) * rb + c * (CB * 18u), adv, awv);
#if GATE_UP
          load_chunk(row_u + (row0 + r) * rbu + c * (CB * 18u), udv, uwv);
#endif
          [[unroll]] for (uint bi = 0; bi < CB; ++bi) {
            const bool bv = c * CB + bi < nbk;  // blocks past the row: read, not used
            [[unroll]] for (uint t = 0; t < NTV; ++t) {
              const uint h = 2 * (t * CB + bi);
              const float xs = -8.0 * (xh[h] + xh[h + 1]);
              const float da = adv[bi] * (DOTV(awv, bi * 8, t * XN + bi * 8) + xs);
              sa[t] += bv ? da : 0.0;
#if GATE_UP
              const float du = udv[bi] * (DOTV(uwv, bi * 8, t * XN + bi * 8) + xs);
              su[t] += bv ? du : 0.0;
#endif
            }
          }
#else
          [[unroll]] for (uint bi = 0; bi < CB; ++bi) {
            const uint blk = c * CB + bi;
            const bool bv = blk < nbk;
            const uint cb = bv ? blk : 0u;
            vec4 as, a0, a1, a2, a3, a4, a5, a6, a7;
            LOAD_A(row_a + (row0 + r) * rb, cb, as, a);
#if GATE_UP
            vec4 us, u0, u1, u2, u3, u4, u5, u6, u7;
            LOAD_U(row_u + (row0 + r) * rbu, cb, us, u);
#endif
            [[unroll]] for (uint t = 0; t < NTV; ++t) {
              const float da = BDOT_A(as, a, t * XN + bi * 8, 2 * (t * CB + bi));
              sa[t] += bv ? da : 0.0;
#if GATE_UP
              const float du = BDOT_U(us, u, t * XN + bi * 8, 2 * (t * CB + bi));
              su[t] += bv ? du : 0.0;
#endif
            }
          }
#endif
          [[unroll]] for (uint t = 0; t < NTV; ++t) {
            const uint p = ((r * LMAX + kl) * NTV + t) * NACC;
            if (c == kl) {
              part[p] = sa[t];
#if GATE_UP
              part[p + 1] = su[t];
#endif
            } else {
              part[p] += sa[t];
#if GATE_UP
              part[p + 1] += su[t];
#endif
            }
          }
        }
        c += L;
      } while (c < NC);
    }
    barrier();
    for (uint i = tid; i < nr * nt; i += WG) {
      const uint r = i / nt, t = i % nt;
      float a = 0.0;
#if GATE_UP
      float u = 0.0;
#endif
      for (uint q = 0; q < L; ++q) {
        const uint p = ((r * LMAX + q) * NTV + t) * NACC;
        a += part[p];
#if GATE_UP
        u += part[p + 1];
#endif
      }
      const uint j = list[beg + c0 + t];
#if GATE_UP
      act[j * pc.F + row0 + r] = activation(a, u, bias, row0 + r);
#else
      partial[j * pc.H + row0 + r] = rweights[j] * down_out(a, bias, row0 + r);
#endif
    }
    barrier();
    c0 += NTV;
  } while (c0 < n);
}
#else
void main() {
  // Dispatched indirectly over the experts of this pool buffer with more entries (listed from the end).
  uint beg, n, rows, K, rb, rbu, row_a, row_u, bias;
  expert_at(pc.E - 1u - gl_WorkGroupID.y, beg, n, rows, K, rb, rbu, row_a, row_u, bias);
  const uint nbk = K / 32u;  // blocks per row
  const uint row0 = gl_WorkGroupID.x * RB + gl_LocalInvocationID.x * RPL;
  if (row0 >= rows) return;  // rows is a multiple of 32, so rows row0 .. row0 + RPL - 1 all exist

  // Loops are written as do-while where they run at least once: on lavapipe a loop ends with a
  // whole iteration under an all-off lane mask after its exit test fails, and at the head of a
  // pass loop that iteration costs as much as a real pass.
  uint c0 = 0;  // the tiled kernel only sees experts with entries
  do {
    const uint nt = min(uint(NTV), n - c0);
    uint xb[NTV];
    [[unroll]] for (uint t = 0; t < NTV; ++t) {
      const uint j = list[beg + c0 + min(t, nt - 1u)];
#if GATE_UP
      xb[t] = tok[j] * (pc.H / 4u);
#else
      xb[t] = j * (pc.F / 4u);
#endif
    }
    float acc[RPL * NTV];
#if GATE_UP
    float accu[RPL * NTV];
#endif
    [[unroll]] for (uint i = 0; i < RPL * NTV; ++i) {
      acc[i] = 0.0;
#if GATE_UP
      accu[i] = 0.0;
#endif
    }
    uint c = 0;  // K >= 32: at least one block
    do {
      vec4 xr[NTV * 8];
      [[unroll]] for (uint i = 0; i < 8; ++i) {
        [[unroll]] for (uint t = 0; t < NTV; ++t) {
#if GATE_UP
          xr[t * 8 + i] = texelFetch(xtex, int(xb[t] + c * 8u + i));
#else
          xr[t * 8 + i] = texelFetch(acttex, int(xb[t] + c * 8u + i));
#endif
        }
      }
      float xh[NTV * 2];
      [[unroll]] for (uint i = 0; i < NTV * 2; ++i) xh[i] = XHALF(4 * i);
      [[unroll]] for (uint i = 0; i < RPL; ++i) {
        vec4 as, a0, a1, a2, a3, a4, a5, a6, a7;
        LOAD_A(row_a + (row0 + i) * rb, c, as, a);
#if GATE_UP
        vec4 us, u0, u1, u2, u3, u4, u5, u6, u7;
        LOAD_U(row_u + (row0 + i) * rbu, c, us, u);
#endif
        [[unroll]] for (uint t = 0; t < NTV; ++t) {
          acc[i * NTV + t] += BDOT_A(as, a, t * 8, 2 * t);
#if GATE_UP
          accu[i * NTV + t] += BDOT_U(us, u, t * 8, 2 * t);
#endif
        }
      }
    } while (++c < nbk);
    [[unroll]] for (uint t = 0; t < NTV; ++t) {
      if (t < nt) {
        const uint j = list[beg + c0 + t];
        [[unroll]] for (uint i = 0; i < RPL; ++i) {
#if GATE_UP
          act[j * pc.F + row0 + i] = activation(acc[i * NTV + t], accu[i * NTV + t], bias, row0 + i);
#else
          partial[j * pc.H + row0 + i] = rweights[j] * down_out(acc[i * NTV + t], bias, row0 + i);
#endif
        }
      }
    }
    c0 += NTV;
  } while (c0 < n);
}
#endif
