#version 450
// Grouped expert matmul over the weight pool buffer `buf_index`. One workgroup per (64 output
// rows, expert); it loops over the expert's routing entries in chunks of NT tokens and over the
// reduction dimension in chunks of KC, staging activations in shared memory.
// Activations are staged for NT tokens at a time (fewer tokens: longer K chunks, fewer barriers).
//   GATE_UP = 1: act[j, f] = silu(Wg[f,:] . x[tok[j]]) * (Wu[f,:] . x[tok[j]])
//   GATE_UP = 0: partial[j, h] = w[j] * (Wd[h,:] . act[j])
// TYPE: 0 f32, 1 f16, 2 q8_0, 3 q4_0 (ggml blocks, read as they are stored).
#ifndef GATE_UP
#define GATE_UP 1
#endif
#ifndef TYPE
#define TYPE 0
#endif
#define WG 64
#define NT 8
#define KC 256

layout(local_size_x = WG) in;

layout(std430, set = 0, binding = 2) readonly buffer RWeights { float rweights[]; };
layout(std430, set = 0, binding = 3) readonly buffer X { float x[]; };
layout(std430, set = 0, binding = 5) readonly buffer SlotTable { int slot_table[]; };
layout(std430, set = 0, binding = 6) readonly buffer ExpertOffsets { uint eoff[]; };
layout(std430, set = 0, binding = 7) readonly buffer List { uint list[]; };
layout(std430, set = 0, binding = 8) readonly buffer Tok { uint tok[]; };
#if GATE_UP
layout(std430, set = 0, binding = 9) writeonly buffer Act { float act[]; };
#else
layout(std430, set = 0, binding = 9) readonly buffer Act { float act[]; };
layout(std430, set = 0, binding = 10) writeonly buffer Partial { float partial[]; };
#endif
layout(std430, set = 0, binding = 11) readonly buffer Weights { uint wpool[]; };

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

shared vec4 xs[NT * KC / 4];

// 32 bits starting at an even byte offset.
uint load_u32(uint b) {
  const uint w = b >> 2;
  if ((b & 2u) == 0u) return wpool[w];
  return (wpool[w] >> 16) | (wpool[w + 1] << 16);
}

float load_f16(uint b) {
  const uint v = wpool[b >> 2] >> ((b & 2u) * 8u);
  return unpackHalf2x16(v & 0xFFFFu).x;
}

// The 32 values of the block starting at byte b, as 8 vec4 (kept in named registers: llvmpipe
// spills dynamically indexed arrays to memory).
#define BLOCK_ARGS out vec4 w0, out vec4 w1, out vec4 w2, out vec4 w3, out vec4 w4, out vec4 w5, out vec4 w6, out vec4 w7
#if TYPE == 0
#define F4(i) vec4(uintBitsToFloat(wpool[w + 4 * i]), uintBitsToFloat(wpool[w + 4 * i + 1]), uintBitsToFloat(wpool[w + 4 * i + 2]), uintBitsToFloat(wpool[w + 4 * i + 3]))
void load_block(uint b, BLOCK_ARGS) {
  const uint w = b >> 2;
  w0 = F4(0); w1 = F4(1); w2 = F4(2); w3 = F4(3); w4 = F4(4); w5 = F4(5); w6 = F4(6); w7 = F4(7);
}
#elif TYPE == 1
#define H4(i) vec4(unpackHalf2x16(wpool[w + 2 * i]), unpackHalf2x16(wpool[w + 2 * i + 1]))
void load_block(uint b, BLOCK_ARGS) {
  const uint w = b >> 2;
  w0 = H4(0); w1 = H4(1); w2 = H4(2); w3 = H4(3); w4 = H4(4); w5 = H4(5); w6 = H4(6); w7 = H4(7);
}
#elif TYPE == 2
vec4 q8x4(uint q) {
  return vec4(bitfieldExtract(int(q), 0, 8), bitfieldExtract(int(q), 8, 8), bitfieldExtract(int(q), 16, 8),
              bitfieldExtract(int(q), 24, 8));
}
void load_block(uint b, BLOCK_ARGS) {
  const float d = load_f16(b);
  w0 = d * q8x4(load_u32(b + 2)); w1 = d * q8x4(load_u32(b + 6));
  w2 = d * q8x4(load_u32(b + 10)); w3 = d * q8x4(load_u32(b + 14));
  w4 = d * q8x4(load_u32(b + 18)); w5 = d * q8x4(load_u32(b + 22));
  w6 = d * q8x4(load_u32(b + 26)); w7 = d * q8x4(load_u32(b + 30));
}
#else
vec4 lo4(uint q) { return vec4(q & 15u, (q >> 8) & 15u, (q >> 16) & 15u, (q >> 24) & 15u) - 8.0; }
vec4 hi4(uint q) { return vec4((q >> 4) & 15u, (q >> 12) & 15u, (q >> 20) & 15u, q >> 28) - 8.0; }
void load_block(uint b, BLOCK_ARGS) {
  const float d = load_f16(b);
  const uint q0 = load_u32(b + 2), q1 = load_u32(b + 6), q2 = load_u32(b + 10), q3 = load_u32(b + 14);
  w0 = d * lo4(q0); w1 = d * lo4(q1); w2 = d * lo4(q2); w3 = d * lo4(q3);
  w4 = d * hi4(q0); w5 = d * hi4(q1); w6 = d * hi4(q2); w7 = d * hi4(q3);
}
#endif

#define DOT8(W, o) (dot(W##0, xs[(o)]) + dot(W##1, xs[(o) + 1]) + dot(W##2, xs[(o) + 2]) + dot(W##3, xs[(o) + 3]) + \
                    dot(W##4, xs[(o) + 4]) + dot(W##5, xs[(o) + 5]) + dot(W##6, xs[(o) + 6]) + dot(W##7, xs[(o) + 7]))

void main() {
  // Dispatched indirectly over the experts with entries in this pool buffer (group.comp).
  const uint e = eoff[pc.E + 1 + pc.buf_index * pc.E + gl_WorkGroupID.y];
  const int slot = slot_table[e];
  const uint beg = eoff[e];
  const uint n = eoff[e + 1] - beg;
  if (n == 0u) return;
  const uint tid = gl_LocalInvocationID.x;
  const uint slot_base = (uint(slot) % pc.spb) * pc.stride;
#if GATE_UP
  const uint rows = pc.F, K = pc.H, rb = pc.rbh;
  const uint row_a = slot_base;
#else
  const uint rows = pc.H, K = pc.F, rb = pc.rbf;
  const uint row_a = slot_base + pc.down_off;
#endif
  const uint r = gl_WorkGroupID.x * WG + tid;
  const bool valid = r < rows;
  const uint ra = row_a + (valid ? r : 0u) * rb;
#if GATE_UP
  const uint ru = slot_base + pc.up_off + (valid ? r : 0u) * rb;
#endif

  for (uint c0 = 0; c0 < n; c0 += NT) {
    const uint nt = min(uint(NT), n - c0);
    vec4 a_lo = vec4(0.0), a_hi = vec4(0.0);
#if GATE_UP
    vec4 u_lo = vec4(0.0), u_hi = vec4(0.0);
#endif
    const uint ntp = nt == 1u ? 1u : (nt <= 4u ? 4u : 8u);
    const uint kce = NT * KC / ntp;  // K chunk for ntp staged tokens
    for (uint k0 = 0; k0 < K; k0 += kce) {
      const uint kc = min(kce, K - k0);
      for (uint i = tid; i < NT * KC / 4; i += WG) {
        const uint tk = i / (kce / 4), kk = (i % (kce / 4)) * 4;
        vec4 v = vec4(0.0);
        if (tk < nt && kk < kc) {
          const uint j = list[beg + c0 + tk];
#if GATE_UP
          const uint base = tok[j] * pc.H + k0 + kk;
          v = vec4(x[base], x[base + 1], x[base + 2], x[base + 3]);
#else
          const uint base = j * pc.F + k0 + kk;
          v = vec4(act[base], act[base + 1], act[base + 2], act[base + 3]);
#endif
        }
        xs[i] = v;
      }
      barrier();
      if (valid) {
        for (uint c = 0; c < kc / 32; ++c) {
          const uint cb = (k0 / 32 + c) * BB;
          vec4 a0, a1, a2, a3, a4, a5, a6, a7;
          load_block(ra + cb, a0, a1, a2, a3, a4, a5, a6, a7);
#if GATE_UP
          vec4 u0, u1, u2, u3, u4, u5, u6, u7;
          load_block(ru + cb, u0, u1, u2, u3, u4, u5, u6, u7);
#define ACC(comp, tk) a_##comp += DOT8(a, (tk) * (kce / 4) + c * 8); u_##comp += DOT8(u, (tk) * (kce / 4) + c * 8);
#else
#define ACC(comp, tk) a_##comp += DOT8(a, (tk) * (kce / 4) + c * 8);
#endif
          ACC(lo.x, 0)
          if (nt > 1u) {
            ACC(lo.y, 1) ACC(lo.z, 2) ACC(lo.w, 3)
            if (nt > 4u) {
              ACC(hi.x, 4) ACC(hi.y, 5) ACC(hi.z, 6) ACC(hi.w, 7)
            }
          }
        }
      }
      barrier();
    }
    if (valid) {
      for (uint tk = 0; tk < nt; ++tk) {
        const uint j = list[beg + c0 + tk];
        const float av = tk < 4u ? a_lo[tk] : a_hi[tk - 4u];
#if GATE_UP
        const float uv = tk < 4u ? u_lo[tk] : u_hi[tk - 4u];
        act[j * pc.F + r] = av / (1.0 + exp(-av)) * uv;
#else
        partial[j * pc.H + r] = rweights[j] * av;
#endif
      }
    }
  }
}
