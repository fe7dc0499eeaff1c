#pragma once
// Expert placement for expert-parallel serving: where each physical expert (a copy of a logical
// expert's weights) lives, layer by layer.
//
// Contract:
// - A placement has L layers, E logical experts, P physical experts (P = E + R redundant), G GPUs
//   and N nodes. physical_to_logical[l][p] is the logical expert held by physical expert p of
//   layer l. Physical experts are numbered GPU by GPU: GPU g holds p in [g*P/G, (g+1)*P/G), and
//   node n holds GPUs [n*G/N, (n+1)*G/N) (how SGLang and vLLM number them).
// - Valid when P % G == 0, G % N == 0, every id is in [0, E) and every logical expert has at least
//   one physical expert in every layer. check_placement() throws moeroute::error (invalid_argument
//   or bad_input) naming the violated constraint, the layer and the slot.
// - Load is a dense L x E table (row l = layer l; rows of layers without data are zeros). The
//   expected load of a physical expert is its logical expert's load divided by the replica count
//   (the share each replica takes when tokens are spread evenly over replicas).
// - balancedness of a set of GPU loads = mean / max (1 when all are zero), as vLLM logs it.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "moeroute/error.hpp"

namespace moeroute {

/// Per-(layer, expert) load: load[l][e], every row the same length E.
using load_table = std::vector<std::vector<double>>;

/// Where the physical experts of every layer live.
struct expert_placement {
  int num_logical = 0;  ///< E
  int num_gpus = 1;     ///< G
  int num_nodes = 1;    ///< N
  std::vector<std::vector<std::int32_t>> physical_to_logical;  ///< [layer][physical]

  int num_layers() const noexcept { return static_cast<int>(physical_to_logical.size()); }
  /// P (0 for a placement without layers).
  int num_physical() const noexcept {
    return physical_to_logical.empty() ? 0 : static_cast<int>(physical_to_logical[0].size());
  }
  int num_redundant() const noexcept { return num_physical() - num_logical; }
  int experts_per_gpu() const noexcept { return num_gpus > 0 ? num_physical() / num_gpus : 0; }
  /// The GPU of physical expert p.
  int gpu_of(int p) const noexcept { return p / std::max(1, experts_per_gpu()); }
};

/// Replica count of every logical expert of one layer's physical_to_logical row.
inline std::vector<int> replica_counts(const std::vector<std::int32_t>& row, int num_logical) {
  std::vector<int> c(static_cast<std::size_t>(num_logical), 0);
  for (auto e : row)
    if (e >= 0 && e < num_logical) ++c[static_cast<std::size_t>(e)];
  return c;
}

/// Physical experts of every logical expert of one row, ascending.
inline std::vector<std::vector<int>> logical_to_physical(const std::vector<std::int32_t>& row,
                                                         int num_logical) {
  std::vector<std::vector<int>> m(static_cast<std::size_t>(num_logical));
  for (std::size_t p = 0; p < row.size(); ++p)
    if (row[p] >= 0 && row[p] < num_logical) m[static_cast<std::size_t>(row[p])].push_back(static_cast<int>(p));
  return m;
}

/// Checks the shape constraints shared by every algorithm and writer; `what` prefixes messages.
inline void check_placement_shape(int num_logical, int num_physical, int gpus, int nodes,
                                  const std::string& what) {
  MOEROUTE_CHECK(num_logical >= 1, errc::invalid_argument, what, "need at least one expert (E = ",
                 num_logical, ")");
  MOEROUTE_CHECK(gpus >= 1, errc::invalid_argument, what, "GPUs must be at least 1 (G = ", gpus, ")");
  MOEROUTE_CHECK(nodes >= 1, errc::invalid_argument, what, "nodes must be at least 1 (N = ", nodes, ")");
  MOEROUTE_CHECK(num_physical >= num_logical, errc::invalid_argument, what,
                 "physical experts P = ", num_physical, " fewer than logical experts E = ", num_logical,
                 " (redundant experts must be >= 0)");
  MOEROUTE_CHECK(num_physical % gpus == 0, errc::invalid_argument, what, "physical experts P = E + R = ",
                 num_physical, " is not divisible by the GPU count G = ", gpus);
  MOEROUTE_CHECK(gpus % nodes == 0, errc::invalid_argument, what, "nodes N = ", nodes,
                 " does not divide the GPU count G = ", gpus);
}

/// Throws unless `p` is a valid placement (see the contract at the top).
inline void check_placement(const expert_placement& p, const std::string& what = "") {
  MOEROUTE_CHECK(p.num_layers() >= 1, errc::bad_input, what, "placement has no layers");
  check_placement_shape(p.num_logical, p.num_physical(), p.num_gpus, p.num_nodes, what);
  const std::size_t P = static_cast<std::size_t>(p.num_physical());
  for (std::size_t l = 0; l < p.physical_to_logical.size(); ++l) {
    const auto& row = p.physical_to_logical[l];
    MOEROUTE_CHECK(row.size() == P, errc::bad_input, what, "layer ", l, " has ", row.size(),
                   " physical experts but layer 0 has ", P);
    for (std::size_t i = 0; i < row.size(); ++i)
      MOEROUTE_CHECK(row[i] >= 0 && row[i] < p.num_logical, errc::bad_input, what, "layer ", l,
                     " physical expert ", i, " names logical expert ", row[i], " outside [0, ",
                     p.num_logical, ")");
    const auto c = replica_counts(row, p.num_logical);
    for (std::size_t e = 0; e < c.size(); ++e)
      MOEROUTE_CHECK(c[e] > 0, errc::bad_input, what, "layer ", l, " has no physical expert for logical expert ",
                     e, " (every logical expert needs at least one)");
  }
}

/// balancedness of one set of GPU loads: mean / max (1 when all are zero).
inline double balancedness_of(const std::vector<double>& gpu_load) {
  double sum = 0.0, mx = 0.0;
  for (double x : gpu_load) {
    sum += x;
    mx = std::max(mx, x);
  }
  if (mx <= 0.0 || gpu_load.empty()) return 1.0;
  return sum / static_cast<double>(gpu_load.size()) / mx;
}

/// Expected load of each GPU of layer `l` when each logical expert's load is spread evenly over
/// its replicas.
inline std::vector<double> expected_gpu_load(const expert_placement& p, std::size_t l,
                                             const std::vector<double>& load) {
  const auto& row = p.physical_to_logical[l];
  const auto cnt = replica_counts(row, p.num_logical);
  std::vector<double> g(static_cast<std::size_t>(p.num_gpus), 0.0);
  for (std::size_t i = 0; i < row.size(); ++i) {
    const auto e = static_cast<std::size_t>(row[i]);
    if (e < load.size()) g[static_cast<std::size_t>(p.gpu_of(static_cast<int>(i)))] += load[e] / cnt[e];
  }
  return g;
}

/// Predicted balancedness per layer from a load table (rows beyond the placement are ignored;
/// layers beyond the table count as zero load, balancedness 1).
inline std::vector<double> predicted_balancedness(const expert_placement& p, const load_table& load) {
  std::vector<double> out;
  for (std::size_t l = 0; l < p.physical_to_logical.size(); ++l)
    out.push_back(l < load.size() ? balancedness_of(expected_gpu_load(p, l, load[l])) : 1.0);
  return out;
}

}  // namespace moeroute
