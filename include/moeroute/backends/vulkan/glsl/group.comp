#version 450
// Grouping pre-pass (one workgroup): per-expert lists of routing entries from the CSR result.
//   eoff[0..E]    prefix offsets of each expert's entries in list
//   list[]        entry indices j grouped by expert (order inside a group is unspecified)
//   tok[j]        the token of entry j
//   eoff[E+1 + b*E + i]          experts with entries whose slot is in pool buffer b: those with at
//                                most MV_MAX entries (mat-vec kernels) from i = 0 up, the others (tiled
//                                kernels) from i = E-1 down
//   eoff[E+1 + nb*E + 12*b ...]  indirect dispatch sizes for buffer b: mat-vec gate+up (x = F/64),
//                                mat-vec down (x = H/64), tiled gate+up (x = F/256), tiled down (x = H/256)
// Results do not depend on the order inside a group: each entry has its own output row.
layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer Offsets { uint offs[]; };
layout(std430, set = 0, binding = 1) readonly buffer Ids { int ids[]; };
layout(std430, set = 0, binding = 5) readonly buffer SlotTable { int slot_table[]; };
layout(std430, set = 0, binding = 6) buffer ExpertOffsets { uint eoff[]; };
layout(std430, set = 0, binding = 7) buffer List { uint list[]; };
layout(std430, set = 0, binding = 8) buffer Tok { uint tok[]; };

layout(push_constant) uniform Params {
  uint T, nnz, E, H, F, buf_index, spb, stride, up_off, down_off, rbh, rbf, nb, rbu, bias_off, flags;
} pc;

const uint MAX_E = 4096;
const uint MV_MAX = 4;  // must match matmul.comp
shared uint cnt[MAX_E];

void main() {
  const uint tid = gl_LocalInvocationID.x;
  for (uint e = tid; e < pc.E; e += 256) cnt[e] = 0;
  barrier();
  for (uint t = tid; t < pc.T; t += 256) {
    for (uint j = offs[t]; j < offs[t + 1]; ++j) {
      tok[j] = t;
      atomicAdd(cnt[uint(ids[j])], 1u);
    }
  }
  barrier();
  if (tid == 0) {
    uint acc = 0;
    for (uint e = 0; e < pc.E; ++e) {
      eoff[e] = acc;
      eoff[e + 1] = acc + cnt[e];
      const uint c = cnt[e];
      cnt[e] = acc;
      acc += c;
    }
    eoff[pc.E] = acc;
    const uint act_base = pc.E + 1, ind_base = pc.E + 1 + pc.nb * pc.E;
    for (uint b = 0; b < pc.nb; ++b) {
      uint na = 0, nt = 0;
      for (uint e = 0; e < pc.E; ++e) {
        const int s = slot_table[e];
        const uint c = eoff[e + 1] - eoff[e];
        if (c > 0 && s >= 0 && uint(s) / pc.spb == b) {
          if (c <= MV_MAX) eoff[act_base + b * pc.E + na++] = e;
          else eoff[act_base + b * pc.E + pc.E - 1 - nt++] = e;
        }
      }
      const uint d = ind_base + 12 * b;
      eoff[d + 0] = (pc.F + 63) / 64;
      eoff[d + 3] = (pc.H + 63) / 64;
      eoff[d + 6] = (pc.F + 255) / 256;
      eoff[d + 9] = (pc.H + 255) / 256;
      for (uint i = 0; i < 4; ++i) {
        eoff[d + 3 * i + 1] = i < 2 ? na : nt;
        eoff[d + 3 * i + 2] = 1;
      }
    }
  }
  barrier();
  for (uint j = tid; j < pc.nnz; j += 256) {
    const uint pos = atomicAdd(cnt[uint(ids[j])], 1u);
    list[pos] = j;
  }
}
