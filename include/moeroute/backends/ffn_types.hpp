#pragma once
// The per-call arguments shared by the expert FFN backends (CPU reference and Vulkan). The layer
// description, the expert blob layout and the weight formats are in weights/ (layer.hpp,
// types.hpp, dequant.hpp), included here.

#include <moeroute/error.hpp>
#include <moeroute/routing/result.hpp>
#include <moeroute/weights/dequant.hpp>
#include <moeroute/weights/layer.hpp>
#include <moeroute/weights/types.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace moeroute {

/// Arguments of one FFN call: the routing result and token activations (caller memory).
struct ffn_args {
  routing_result_view routing;  ///< T tokens, CSR ids/weights, ids in [0, E)
  const float* x = nullptr;     ///< T x H, row-major
  float* y = nullptr;           ///< T x H, row-major, overwritten
};

/// Empty when the routing result is well formed for E experts, else the reason naming the token.
inline std::string check_routing(const routing_result_view& r, int num_experts) {
  if (r.num_tokens == 0) return {};
  if (r.offsets == nullptr) return "routing offsets are null";
  if (r.offsets[0] != 0) return "routing offsets[0] must be 0";
  for (std::size_t t = 0; t < r.num_tokens; ++t) {
    if (r.offsets[t + 1] < r.offsets[t])
      return detail::concat("routing offsets decrease at token ", t);
  }
  const std::size_t nnz = r.offsets[r.num_tokens];
  if (nnz > 0 && (r.ids == nullptr || r.weights == nullptr)) return "routing ids or weights are null";
  for (std::size_t t = 0; t < r.num_tokens; ++t) {
    for (std::uint32_t j = r.offsets[t]; j < r.offsets[t + 1]; ++j) {
      if (r.ids[j] < 0 || r.ids[j] >= num_experts)
        return detail::concat("routing token ", t, ": expert id ", r.ids[j], " outside [0, ", num_experts, ")");
      if (!std::isfinite(r.weights[j]))
        return detail::concat("routing token ", t, ": weight of expert ", r.ids[j], " is not finite");
    }
  }
  return {};
}

}  // namespace moeroute
