#pragma once
// Per-layer expert statistics from a routing trace: how often each expert of each layer was routed
// to (activation counts) and, when the trace carries gating probabilities, the router-weight mass.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "moeroute/error.hpp"
#include "moeroute/io/routing_trace.hpp"

namespace moeroute {

/// One layer's per-expert values (counts or mass). The layer's E is counts.size().
struct layer_counts {
  int layer_index = 0;
  std::vector<double> counts;
};

/// Most (layer, expert) cells one count table may hold (layers present in the trace x E): bounds
/// the memory a small, hostile trace can make the counters allocate.
inline constexpr std::uint64_t max_count_cells = std::uint64_t{1} << 22;

namespace detail {
template <bool Weighted>
std::vector<layer_counts> trace_per_layer(const routing_trace& t, int num_experts) {
  const int E = num_experts > 0 ? num_experts : t.num_experts();
  MOEROUTE_CHECK(E >= t.num_experts(), errc::bad_input, "trace names expert ", t.num_experts() - 1,
                 " but the model has ", E, " experts");
  const int L = t.num_layers();
  std::vector<char> present(static_cast<std::size_t>(L), 0);
  for (std::size_t r = 0; r < t.size(); ++r) present[static_cast<std::size_t>(t.layer[r])] = 1;
  std::uint64_t cells = 0;
  for (char p : present) cells += p ? static_cast<std::uint64_t>(E) : 0;
  MOEROUTE_CHECK(cells <= max_count_cells, errc::capacity, "trace has ", cells, " (layer, expert) cells to count, more than ",
                 max_count_cells);
  std::vector<std::vector<double>> acc(static_cast<std::size_t>(L));
  for (std::size_t r = 0; r < t.size(); ++r) {
    auto& row = acc[static_cast<std::size_t>(t.layer[r])];
    if (row.empty()) row.assign(static_cast<std::size_t>(E), 0.0);
    for (std::uint32_t i = t.offsets[r]; i < t.offsets[r + 1]; ++i) {
      if constexpr (Weighted) {
        row[static_cast<std::size_t>(t.experts[i])] += static_cast<double>(t.weights[i]);
      } else {
        row[static_cast<std::size_t>(t.experts[i])] += 1.0;
      }
    }
  }
  std::vector<layer_counts> out;
  for (int l = 0; l < L; ++l)
    if (!acc[static_cast<std::size_t>(l)].empty())
      out.push_back({l, std::move(acc[static_cast<std::size_t>(l)])});
  return out;
}
}  // namespace detail

/// Activation counts per layer present in the trace (layers in ascending order; layers that never
/// appear are absent). num_experts = 0 infers E as 1 + the largest id; a larger E pads with zeros.
inline std::vector<layer_counts> trace_activation_counts(const routing_trace& t, int num_experts = 0) {
  return detail::trace_per_layer<false>(t, num_experts);
}

/// Router-weight mass per layer (sum of gating_probs per expert). Requires t.has_weights.
inline std::vector<layer_counts> trace_weight_mass(const routing_trace& t, int num_experts = 0) {
  MOEROUTE_CHECK(t.has_weights, errc::bad_input,
                 "trace has no gating_probs/weights on every record: no router-weight mass");
  return detail::trace_per_layer<true>(t, num_experts);
}

}  // namespace moeroute
