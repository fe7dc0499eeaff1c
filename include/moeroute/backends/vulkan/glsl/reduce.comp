#version 450
// y[t, h] = sum of the partial rows of token t's routing entries, in CSR (slot) order.
layout(local_size_x = 64) in;

layout(std430, set = 0, binding = 0) readonly buffer Offsets { uint offs[]; };
layout(std430, set = 0, binding = 4) writeonly buffer Y { float y[]; };
layout(std430, set = 0, binding = 10) readonly buffer Partial { float partial[]; };

layout(push_constant) uniform Params {
  uint T, nnz, E, H, F, buf_index, spb, stride, up_off, down_off, rbh, rbf, nb, rbu, bias_off, flags;
} pc;

void main() {
  const uint h = gl_WorkGroupID.x * 64 + gl_LocalInvocationID.x;
  const uint t = gl_WorkGroupID.y;
  if (h >= pc.H) return;
  float s = 0.0;
  for (uint j = offs[t]; j < offs[t + 1]; ++j) s += partial[j * pc.H + h];
  y[t * pc.H + h] = s;
}
