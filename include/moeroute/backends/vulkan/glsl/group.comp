#version 450
// Grouping pre-pass (one workgroup): per-expert lists of routing entries from the CSR result.
//   eoff[0..E]    prefix offsets of each expert's entries in list
//   list[]        entry indices j grouped by expert (order inside a group is unspecified)
//   tok[j]        the token of entry j
//   eoff[E+1 + b*E + i]          the i-th expert with entries whose slot is in pool buffer b
//   eoff[E+1 + nb*E + 6*b ...]   indirect dispatch sizes for buffer b: gate+up (x = F/64), down (x = H/64)
// Results do not depend on the order inside a group: each entry has its own output row.
layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer Offsets { uint offs[]; };
layout(std430, set = 0, binding = 1) readonly buffer Ids { int ids[]; };
layout(std430, set = 0, binding = 5) readonly buffer SlotTable { int slot_table[]; };
layout(std430, set = 0, binding = 6) buffer ExpertOffsets { uint eoff[]; };
layout(std430, set = 0, binding = 7) buffer List { uint list[]; };
layout(std430, set = 0, binding = 8) buffer Tok { uint tok[]; };

layout(push_constant) uniform Params {
  uint T, nnz, E, H, F, buf_index, spb, stride, up_off, down_off, rbh, rbf, nb;
} pc;

const uint MAX_E = 4096;
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
      uint na = 0;
      for (uint e = 0; e < pc.E; ++e) {
        const int s = slot_table[e];
        if (eoff[e + 1] > eoff[e] && s >= 0 && uint(s) / pc.spb == b) eoff[act_base + b * pc.E + na++] = e;
      }
      eoff[ind_base + 6 * b + 0] = (pc.F + 63) / 64;
      eoff[ind_base + 6 * b + 1] = na;
      eoff[ind_base + 6 * b + 2] = 1;
      eoff[ind_base + 6 * b + 3] = (pc.H + 63) / 64;
      eoff[ind_base + 6 * b + 4] = na;
      eoff[ind_base + 6 * b + 5] = 1;
    }
  }
  barrier();
  for (uint j = tid; j < pc.nnz; j += 256) {
    const uint pos = atomicAdd(cnt[uint(ids[j])], 1u);
    list[pos] = j;
  }
}
