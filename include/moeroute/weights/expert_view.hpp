#pragma once
// One expert's stored weights in caller memory, as views (core: no Eigen, no Vulkan).
//
// The rows are stored as in GGUF (weights/types.hpp): gate and up are F rows of H values in their
// tensors' types, down is H rows of F values; the biases (gpt-oss) are float32 arrays of F, F and
// H values, or nullptr when the layer has none. Nothing is copied: the memory (a mapped GGUF, an
// expert blob, any host buffer) must stay valid while a backend uses the view.

namespace moeroute {

/// Views of one expert's gate, up and down rows and its optional float32 biases.
struct expert_weights_view {
  const void* gate = nullptr;
  const void* up = nullptr;
  const void* down = nullptr;
  const float* gate_bias = nullptr;
  const float* up_bias = nullptr;
  const float* down_bias = nullptr;
};

}  // namespace moeroute
