#pragma once
// The routing result: CSR over tokens. Token t chose ids[offsets[t] .. offsets[t+1]) with the
// matching weights, in descending weight order (ties: lower id first). k varies per token after
// zero-gating, so a backend skips dropped experts instead of multiplying by zero.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace moeroute {

/// Non-owning view of a CSR routing result (caller memory).
struct routing_result_view {
  std::size_t num_tokens = 0;
  int num_experts = 0;
  const std::uint32_t* offsets = nullptr;  ///< num_tokens + 1 entries, offsets[0] == 0
  const std::int32_t* ids = nullptr;       ///< offsets[num_tokens] entries, each in [0, num_experts)
  const float* weights = nullptr;          ///< offsets[num_tokens] entries

  std::size_t nnz() const noexcept { return num_tokens ? offsets[num_tokens] : 0; }
  std::uint32_t k(std::size_t t) const noexcept { return offsets[t + 1] - offsets[t]; }
};

/// Owning CSR routing result (for callers that do not manage their own buffers).
struct routing_result {
  std::size_t num_tokens = 0;
  int num_experts = 0;
  std::vector<std::uint32_t> offsets{0};
  std::vector<std::int32_t> ids;
  std::vector<float> weights;

  routing_result_view view() const noexcept {
    return {num_tokens, num_experts, offsets.data(), ids.data(), weights.data()};
  }
  std::size_t nnz() const noexcept { return ids.size(); }
};

}  // namespace moeroute
