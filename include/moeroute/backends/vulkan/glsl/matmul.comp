#version 450
// Grouped expert matmul over the weight pool buffer `buf_index`. One workgroup per (64 output
// rows, expert); it loops over the expert's routing entries in chunks of NT tokens and over the
// reduction dimension in chunks of KC, staging activations in shared memory.
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
  uint T, nnz, E, H, F, buf_index, spb, stride, up_off, down_off, rbh, rbf;
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

shared float xs[NT * KC];

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

// The 32 values of the block starting at byte b.
void load_block(uint b, out float w[32]) {
#if TYPE == 0
  const uint w0 = b >> 2;
  for (uint i = 0; i < 32; ++i) w[i] = uintBitsToFloat(wpool[w0 + i]);
#elif TYPE == 1
  const uint w0 = b >> 2;
  for (uint i = 0; i < 16; ++i) {
    const vec2 v = unpackHalf2x16(wpool[w0 + i]);
    w[2 * i] = v.x;
    w[2 * i + 1] = v.y;
  }
#elif TYPE == 2
  const float d = load_f16(b);
  for (uint i = 0; i < 8; ++i) {
    const uint q = load_u32(b + 2 + 4 * i);
    w[4 * i + 0] = d * float(bitfieldExtract(int(q), 0, 8));
    w[4 * i + 1] = d * float(bitfieldExtract(int(q), 8, 8));
    w[4 * i + 2] = d * float(bitfieldExtract(int(q), 16, 8));
    w[4 * i + 3] = d * float(bitfieldExtract(int(q), 24, 8));
  }
#else
  const float d = load_f16(b);
  for (uint i = 0; i < 4; ++i) {
    const uint q = load_u32(b + 2 + 4 * i);
    for (uint k = 0; k < 4; ++k) {
      const uint byte = (q >> (8 * k)) & 0xFFu;
      w[4 * i + k] = d * (float(byte & 15u) - 8.0);
      w[4 * i + k + 16] = d * (float(byte >> 4) - 8.0);
    }
  }
#endif
}

void main() {
  const uint e = gl_WorkGroupID.y;
  const int slot = slot_table[e];
  if (slot < 0 || uint(slot) / pc.spb != pc.buf_index) return;
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
    float acc_a[NT];
#if GATE_UP
    float acc_u[NT];
#endif
    for (uint i = 0; i < NT; ++i) {
      acc_a[i] = 0.0;
#if GATE_UP
      acc_u[i] = 0.0;
#endif
    }
    for (uint k0 = 0; k0 < K; k0 += KC) {
      const uint kc = min(uint(KC), K - k0);
      for (uint i = tid; i < NT * KC; i += WG) {
        const uint tk = i / KC, kk = i % KC;
        float v = 0.0;
        if (tk < nt && kk < kc) {
          const uint j = list[beg + c0 + tk];
#if GATE_UP
          v = x[tok[j] * pc.H + k0 + kk];
#else
          v = act[j * pc.F + k0 + kk];
#endif
        }
        xs[i] = v;
      }
      barrier();
      if (valid) {
        for (uint c = 0; c < kc / 32; ++c) {
          const uint cb = (k0 / 32 + c) * BB;
          float wa[32];
          load_block(ra + cb, wa);
#if GATE_UP
          float wu[32];
          load_block(ru + cb, wu);
#endif
          if (nt == 1u) {
            float sa = 0.0;
#if GATE_UP
            float su = 0.0;
#endif
            for (uint i = 0; i < 32; ++i) {
              const float xv = xs[c * 32 + i];
              sa += wa[i] * xv;
#if GATE_UP
              su += wu[i] * xv;
#endif
            }
            acc_a[0] += sa;
#if GATE_UP
            acc_u[0] += su;
#endif
          } else {
            for (uint tk = 0; tk < NT; ++tk) {
              float sa = 0.0;
#if GATE_UP
              float su = 0.0;
#endif
              for (uint i = 0; i < 32; ++i) {
                const float xv = xs[tk * KC + c * 32 + i];
                sa += wa[i] * xv;
#if GATE_UP
                su += wu[i] * xv;
#endif
              }
              acc_a[tk] += sa;
#if GATE_UP
              acc_u[tk] += su;
#endif
            }
          }
        }
      }
      barrier();
    }
    if (valid) {
      for (uint tk = 0; tk < nt; ++tk) {
        const uint j = list[beg + c0 + tk];
#if GATE_UP
        const float g = acc_a[tk];
        act[j * pc.F + r] = g / (1.0 + exp(-g)) * acc_u[tk];
#else
        partial[j * pc.H + r] = rweights[j] * acc_a[tk];
#endif
      }
    }
  }
}
