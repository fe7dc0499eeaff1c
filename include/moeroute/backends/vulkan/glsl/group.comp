#version 450
// Grouping pre-pass (one workgroup): per-expert lists of routing entries from the CSR result.
//   eoff[0..E]    prefix offsets of each expert's entries in list
//   list[]        entry indices j grouped by expert (order inside a group is unspecified)
//   tok[j]        the token of entry j
// Results do not depend on the order inside a group: each entry has its own output row.
layout(local_size_x = 256) in;

layout(std430, set = 0, binding = 0) readonly buffer Offsets { uint offs[]; };
layout(std430, set = 0, binding = 1) readonly buffer Ids { int ids[]; };
layout(std430, set = 0, binding = 6) buffer ExpertOffsets { uint eoff[]; };
layout(std430, set = 0, binding = 7) buffer List { uint list[]; };
layout(std430, set = 0, binding = 8) buffer Tok { uint tok[]; };

layout(push_constant) uniform Params {
  uint T, nnz, E, H, F, buf_index, spb, stride, up_off, down_off, rbh, rbf;
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
      const uint c = cnt[e];
      cnt[e] = acc;
      acc += c;
    }
    eoff[pc.E] = acc;
  }
  barrier();
  for (uint j = tid; j < pc.nnz; j += 256) {
    const uint pos = atomicAdd(cnt[uint(ids[j])], 1u);
    list[pos] = j;
  }
}
