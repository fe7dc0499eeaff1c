#version 450
#extension GL_EXT_control_flow_attributes : require
// Grouped expert matmul over the weight pool buffer `buf_index`. One workgroup per (RB output
// rows, expert). Weights, x and the activations are read as uniform texel buffers (uvec4 / vec4
// texels): lavapipe fetches a texel with one vector load per lane, a storage-buffer element with
// one bounds-checked scalar load per component and lane.
//   GATE_UP = 1: act[j, f] = silu(Wg[f,:] . x[tok[j]]) * (Wu[f,:] . x[tok[j]])
//   GATE_UP = 0: partial[j, h] = w[j] * (Wd[h,:] . act[j])
// TYPE: 0 f32, 1 f16, 2 q8_0, 3 q4_0 (ggml blocks, read as they are stored).
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
#ifndef TYPE
#define TYPE 0
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

layout(push_constant) uniform Params {
  uint T, nnz, E, H, F, buf_index, spb, stride, up_off, down_off, rbh, rbf, nb;
} pc;

#if TYPE == 0
#define BB 128u
#elif TYPE == 1
#define BB 64u
#elif TYPE == 2
#define BB 34u
#else
#define BB 18u
#endif

#if MV
shared float part[RB * LMAX * NTV * NACC];
#endif

// The 32 values of the block starting at byte b, as a scale d and 8 vec4 (named registers): the
// block's values are d * (w + BIAS) (BIAS = -8 for Q4_0, else 0; the dot products apply d and the
// bias once per block and token: d * (w . x + BIAS * sum(x))). f32 and f16 blocks
// are 16-byte aligned (read as uvec4); Q8_0 / Q4_0 blocks start at an even byte (see load_words).
#define BLOCK_ARGS out float d, out vec4 w0, out vec4 w1, out vec4 w2, out vec4 w3, out vec4 w4, out vec4 w5, out vec4 w6, out vec4 w7
#if TYPE == 0
void load_block(uint b, BLOCK_ARGS) {
  const uint w = b >> 4;
  d = 1.0;
  w0 = uintBitsToFloat(WLOAD(w)); w1 = uintBitsToFloat(WLOAD(w + 1));
  w2 = uintBitsToFloat(WLOAD(w + 2)); w3 = uintBitsToFloat(WLOAD(w + 3));
  w4 = uintBitsToFloat(WLOAD(w + 4)); w5 = uintBitsToFloat(WLOAD(w + 5));
  w6 = uintBitsToFloat(WLOAD(w + 6)); w7 = uintBitsToFloat(WLOAD(w + 7));
}
#elif TYPE == 1
void load_block(uint b, BLOCK_ARGS) {
  const uint w = b >> 4;
  const uvec4 a = WLOAD(w), c = WLOAD(w + 1), f = WLOAD(w + 2), e = WLOAD(w + 3);
  d = 1.0;
  w0 = vec4(unpackHalf2x16(a.x), unpackHalf2x16(a.y)); w1 = vec4(unpackHalf2x16(a.z), unpackHalf2x16(a.w));
  w2 = vec4(unpackHalf2x16(c.x), unpackHalf2x16(c.y)); w3 = vec4(unpackHalf2x16(c.z), unpackHalf2x16(c.w));
  w4 = vec4(unpackHalf2x16(f.x), unpackHalf2x16(f.y)); w5 = vec4(unpackHalf2x16(f.z), unpackHalf2x16(f.w));
  w6 = vec4(unpackHalf2x16(e.x), unpackHalf2x16(e.y)); w7 = vec4(unpackHalf2x16(e.z), unpackHalf2x16(e.w));
}
#else
// Q8_0 / Q4_0: the NW 32-bit words from the block's first byte b (even) rounded down to 4 bytes,
// read as NV uvec4 from b rounded down to 16 bytes (clamped to the buffer: a clamped load only
// ever replaces bytes past the end of the pool buffer, which no block uses) and realigned with
// selects, so each lane issues NV vector loads and no lane branches on the alignment.
#if TYPE == 2
#define NW 9
#define NV 3
#else
#define NW 5
#define NV 2
#endif
void load_words(uint b, out uint E[NW]) {
  const uint v = b >> 4, last = uint(textureSize(wtex)) - 1u;
  uint W[NV * 4];
  [[unroll]] for (uint i = 0; i < NV; ++i) {
    const uvec4 q = WLOAD(min(v + i, last));
    W[4 * i] = q.x; W[4 * i + 1] = q.y; W[4 * i + 2] = q.z; W[4 * i + 3] = q.w;
  }
  const uint a = (b >> 2) & 3u;
  [[unroll]] for (uint k = 0; k < NW; ++k)
    E[k] = a < 2u ? (a == 0u ? W[k] : W[k + 1]) : (a == 2u ? W[k + 2] : W[k + 3]);
}
#if TYPE == 2
vec4 q8x4(uint q) {
  return vec4(bitfieldExtract(int(q), 0, 8), bitfieldExtract(int(q), 8, 8), bitfieldExtract(int(q), 16, 8),
              bitfieldExtract(int(q), 24, 8));
}
#else
vec4 lo4(uint q) { return vec4(q & 15u, (q >> 8) & 15u, (q >> 16) & 15u, (q >> 24) & 15u); }
vec4 hi4(uint q) { return vec4((q >> 4) & 15u, (q >> 12) & 15u, (q >> 20) & 15u, q >> 28); }
#endif
void load_block(uint b, BLOCK_ARGS) {
  uint E[NW];
  load_words(b, E);
  const bool odd = (b & 2u) != 0u;
  d = unpackHalf2x16(odd ? (E[0] >> 16) : E[0]).x;
  uint q[NW - 1];  // the block's quants as words
  [[unroll]] for (uint k = 0; k + 1 < NW; ++k) q[k] = odd ? E[k + 1] : ((E[k] >> 16) | (E[k + 1] << 16));
#if TYPE == 2
  w0 = q8x4(q[0]); w1 = q8x4(q[1]); w2 = q8x4(q[2]); w3 = q8x4(q[3]);
  w4 = q8x4(q[4]); w5 = q8x4(q[5]); w6 = q8x4(q[6]); w7 = q8x4(q[7]);
#else
  w0 = lo4(q[0]); w1 = lo4(q[1]); w2 = lo4(q[2]); w3 = lo4(q[3]);
  w4 = hi4(q[0]); w5 = hi4(q[1]); w6 = hi4(q[2]); w7 = hi4(q[3]);
#endif
}
#endif

#if TYPE == 3 && MV
// Four consecutive Q4_0 blocks (72 bytes from the even byte b): 6 uvec4 loads instead of 8.
void load_chunk(uint b, out float dv[4], out vec4 wv[32]) {
  const uint v = b >> 4, last = uint(textureSize(wtex)) - 1u;
  uint W[24];
  [[unroll]] for (uint i = 0; i < 6; ++i) {
    const uvec4 q = WLOAD(min(v + i, last));
    W[4 * i] = q.x; W[4 * i + 1] = q.y; W[4 * i + 2] = q.z; W[4 * i + 3] = q.w;
  }
  const uint a = (b >> 2) & 3u;
  const bool odd = (b & 2u) != 0u;
  uint E[19], Q[18];  // words from b rounded down to 4 bytes; words from b
  [[unroll]] for (uint k = 0; k < 19; ++k)
    E[k] = a < 2u ? (a == 0u ? W[k] : W[k + 1]) : (a == 2u ? W[k + 2] : W[k + 3]);
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
#endif

#if TYPE == 3
#define BIAS(s) (-8.0 * (s))
#else
#define BIAS(s) 0.0
#endif
#define XSUM(o) dot(xr[(o)] + xr[(o) + 1] + xr[(o) + 2] + xr[(o) + 3] + xr[(o) + 4] + xr[(o) + 5] + xr[(o) + 6] + xr[(o) + 7], vec4(1.0))

#define XN (CB * 8)
#define DOTV(W, w, o) (dot(W[(w)], xr[(o)]) + dot(W[(w) + 1], xr[(o) + 1]) + dot(W[(w) + 2], xr[(o) + 2]) + \
                       dot(W[(w) + 3], xr[(o) + 3]) + dot(W[(w) + 4], xr[(o) + 4]) + dot(W[(w) + 5], xr[(o) + 5]) + \
                       dot(W[(w) + 6], xr[(o) + 6]) + dot(W[(w) + 7], xr[(o) + 7]))
#define DOT8(W, o) (dot(W##0, xr[(o)]) + dot(W##1, xr[(o) + 1]) + dot(W##2, xr[(o) + 2]) + dot(W##3, xr[(o) + 3]) + \
                    dot(W##4, xr[(o) + 4]) + dot(W##5, xr[(o) + 5]) + dot(W##6, xr[(o) + 6]) + dot(W##7, xr[(o) + 7]))

// Expert number li of this pool buffer's list (group.comp): its entries [beg, beg + n) of `list`,
// the output rows and reduction length of this matmul, the bytes per weight row, and the byte
// offsets of its first (gate or down) and up matrix in the pool buffer (row_u = row_a for down).
void expert_at(uint li, out uint beg, out uint n, out uint rows, out uint K, out uint rb, out uint row_a,
               out uint row_u) {
  const uint e = eoff[pc.E + 1 + pc.buf_index * pc.E + li];
  beg = eoff[e];
  n = eoff[e + 1] - beg;
  const uint slot_base = (uint(slot_table[e]) % pc.spb) * pc.stride;
#if GATE_UP
  rows = pc.F; K = pc.H; rb = pc.rbh;
  row_a = slot_base;
  row_u = slot_base + pc.up_off;
#else
  rows = pc.H; K = pc.F; rb = pc.rbf;
  row_a = slot_base + pc.down_off;
  row_u = row_a;
#endif
}

#if MV
void main() {
  // Dispatched indirectly over the experts of this pool buffer with at most MV_MAX entries.
  uint beg, n, rows, K, rb, row_a, row_u;
  expert_at(gl_WorkGroupID.y, beg, n, rows, K, rb, row_a, row_u);
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
        float xs[NTV * CB];
        [[unroll]] for (uint t = 0; t < NTV; ++t) {
          [[unroll]] for (uint bi = 0; bi < CB; ++bi) xs[t * CB + bi] = BIAS(XSUM(t * XN + bi * 8));
        }
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
#if TYPE == 3
          float adv[4], udv[4];
          vec4 awv[32], uwv[32];
          load_chunk(row_a + (row0 + r) * rb + c * (CB * BB), adv, awv);
#if GATE_UP
          load_chunk(row_u + (row0 + r) * rb + c * (CB * BB), udv, uwv);
#endif
          [[unroll]] for (uint bi = 0; bi < CB; ++bi) {
            const bool bv = c * CB + bi < nbk;  // blocks past the row: read, not used
            [[unroll]] for (uint t = 0; t < NTV; ++t) {
              const float da = adv[bi] * (DOTV(awv, bi * 8, t * XN + bi * 8) + xs[t * CB + bi]);
              sa[t] += bv ? da : 0.0;
#if GATE_UP
              const float du = udv[bi] * (DOTV(uwv, bi * 8, t * XN + bi * 8) + xs[t * CB + bi]);
              su[t] += bv ? du : 0.0;
#endif
            }
          }
#else
          [[unroll]] for (uint bi = 0; bi < CB; ++bi) {
            const uint blk = c * CB + bi;
            const bool bv = blk < nbk;
            const uint cb = (bv ? blk : 0u) * BB;
            float ad, ud;
            vec4 a0, a1, a2, a3, a4, a5, a6, a7;
            load_block(row_a + (row0 + r) * rb + cb, ad, a0, a1, a2, a3, a4, a5, a6, a7);
#if GATE_UP
            vec4 u0, u1, u2, u3, u4, u5, u6, u7;
            load_block(row_u + (row0 + r) * rb + cb, ud, u0, u1, u2, u3, u4, u5, u6, u7);
#endif
            [[unroll]] for (uint t = 0; t < NTV; ++t) {
              const float da = ad * (DOT8(a, t * XN + bi * 8) + xs[t * CB + bi]);
              sa[t] += bv ? da : 0.0;
#if GATE_UP
              const float du = ud * (DOT8(u, t * XN + bi * 8) + xs[t * CB + bi]);
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
      act[j * pc.F + row0 + r] = a / (1.0 + exp(-a)) * u;
#else
      partial[j * pc.H + row0 + r] = rweights[j] * a;
#endif
    }
    barrier();
    c0 += NTV;
  } while (c0 < n);
}
#else
void main() {
  // Dispatched indirectly over the experts of this pool buffer with more entries (listed from the end).
  uint beg, n, rows, K, rb, row_a, row_u;
  expert_at(pc.E - 1u - gl_WorkGroupID.y, beg, n, rows, K, rb, row_a, row_u);
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
      float xs[NTV];
      [[unroll]] for (uint t = 0; t < NTV; ++t) xs[t] = BIAS(XSUM(t * 8));
      [[unroll]] for (uint i = 0; i < RPL; ++i) {
        float ad, ud;
        vec4 a0, a1, a2, a3, a4, a5, a6, a7;
        load_block(row_a + (row0 + i) * rb + c * BB, ad, a0, a1, a2, a3, a4, a5, a6, a7);
#if GATE_UP
        vec4 u0, u1, u2, u3, u4, u5, u6, u7;
        load_block(row_u + (row0 + i) * rb + c * BB, ud, u0, u1, u2, u3, u4, u5, u6, u7);
#endif
        [[unroll]] for (uint t = 0; t < NTV; ++t) {
          acc[i * NTV + t] += ad * (DOT8(a, t * 8) + xs[t]);
#if GATE_UP
          accu[i * NTV + t] += ud * (DOT8(u, t * 8) + xs[t]);
#endif
        }
      }
    } while (++c < nbk);
    [[unroll]] for (uint t = 0; t < NTV; ++t) {
      if (t < nt) {
        const uint j = list[beg + c0 + t];
        [[unroll]] for (uint i = 0; i < RPL; ++i) {
          const float a = acc[i * NTV + t];
#if GATE_UP
          act[j * pc.F + row0 + i] = a / (1.0 + exp(-a)) * accu[i * NTV + t];
#else
          partial[j * pc.H + row0 + i] = rweights[j] * a;
#endif
        }
      }
    }
    c0 += NTV;
  } while (c0 < n);
}
#endif
