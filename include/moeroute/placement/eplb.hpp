#pragma once
// DeepSeek's expert-parallelism load balancer (EPLB), written from its published description
// (github.com/deepseek-ai/EPLB, README and eplb.py): redundant experts for the heaviest experts,
// then balanced packing onto GPUs.
//
// Contract (per layer, load w[E] >= 0, P physical experts, GR groups, N nodes, G GPUs):
// - balanced_packing(items, m): items sorted by weight descending (equal weights: lower index
//   first); each goes to the pack with the smallest total weight among packs that still have
//   room for n/m items (equal totals: lower pack). Returns the pack and the rank inside it.
// - replicate: every logical expert gets one physical expert, then each of the remaining slots
//   goes to the expert with the largest load per replica w/count (equal: lower index).
// - hierarchical (eplb_hierarchical): groups of E/GR consecutive experts are packed onto nodes
//   by balanced packing of group loads; inside each node the experts are replicated to P/N
//   physical experts; those are packed onto the node's G/N GPUs by balanced packing of their
//   load per replica; a GPU's slots are filled in the order its experts were packed.
// - global (eplb_global): hierarchical with one group and one node.
// Requirements (errc::invalid_argument naming the constraint): E >= 1, P >= E, G % N == 0,
// P % G == 0, E % GR == 0, GR % N == 0, every load finite and >= 0, every row of length E.
// The result reproduces the README example of DeepSeek EPLB exactly (tests/placement_test.cpp).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "moeroute/error.hpp"
#include "moeroute/placement/placement.hpp"

namespace moeroute {

/// The shape asked of a placement algorithm.
struct placement_options {
  int gpus = 1;       ///< G
  int nodes = 1;      ///< N
  int groups = 1;     ///< GR (expert groups of the model's group-limited routing; 1 = none)
  int redundant = 0;  ///< R: physical experts P = E + R
};

/// Result of balanced_packing: pack and rank inside the pack of every item.
struct packing {
  std::vector<int> pack;
  std::vector<int> rank;
};

/// Packs n weighted items into m packs of exactly n/m items each (n % m == 0), balancing weight.
inline packing balanced_packing(const std::vector<double>& w, int m) {
  const std::size_t n = w.size();
  const std::size_t M = static_cast<std::size_t>(m);
  MOEROUTE_CHECK(m >= 1 && n % M == 0, errc::invalid_argument, "balanced packing: ", n,
                 " items do not split evenly into ", m, " packs");
  const std::size_t per = n / M;
  packing out;
  out.pack.assign(n, 0);
  out.rank.assign(n, 0);
  if (per == 1) {
    for (std::size_t i = 0; i < n; ++i) out.pack[i] = static_cast<int>(i);
    return out;
  }
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return w[a] > w[b]; });
  std::vector<double> pack_w(M, 0.0);
  std::vector<std::size_t> pack_n(M, 0);
  for (std::size_t item : order) {
    std::size_t best = M;
    for (std::size_t k = 0; k < M; ++k)
      if (pack_n[k] < per && (best == M || pack_w[k] < pack_w[best])) best = k;
    out.pack[item] = static_cast<int>(best);
    out.rank[item] = static_cast<int>(pack_n[best]);
    pack_w[best] += w[item];
    ++pack_n[best];
  }
  return out;
}

/// Replication of n logical experts to `num_physical` slots: slot -> expert, and replica counts.
struct replication {
  std::vector<int> phy2log;
  std::vector<int> count;
};

/// One physical expert per logical expert, then each extra slot to the largest load per replica.
inline replication replicate_experts(const std::vector<double>& w, int num_physical) {
  const std::size_t n = w.size();
  replication r;
  r.count.assign(n, 1);
  for (std::size_t e = 0; e < n; ++e) r.phy2log.push_back(static_cast<int>(e));
  for (std::size_t i = n; i < static_cast<std::size_t>(num_physical); ++i) {
    std::size_t best = 0;
    for (std::size_t e = 1; e < n; ++e)
      if (w[e] / r.count[e] > w[best] / r.count[best]) best = e;
    r.phy2log.push_back(static_cast<int>(best));
    ++r.count[best];
  }
  return r;
}

namespace detail {
inline void check_load_table(const load_table& w, int num_logical) {
  MOEROUTE_CHECK(!w.empty(), errc::bad_input, "load has no layers");
  for (std::size_t l = 0; l < w.size(); ++l) {
    MOEROUTE_CHECK(w[l].size() == static_cast<std::size_t>(num_logical), errc::bad_input, "load of layer ",
                   l, " has ", w[l].size(), " experts, expected ", num_logical);
    for (std::size_t e = 0; e < w[l].size(); ++e)
      MOEROUTE_CHECK(std::isfinite(w[l][e]) && w[l][e] >= 0.0, errc::bad_input, "load of layer ", l,
                     " expert ", e, " = ", w[l][e], " (must be finite and >= 0)");
  }
}

// One layer of the hierarchical policy: physical -> logical.
inline std::vector<std::int32_t> eplb_layer(const std::vector<double>& w, std::size_t P, std::size_t groups,
                                            std::size_t nodes, std::size_t gpus) {
  const std::size_t E = w.size();
  const std::size_t group_size = E / groups, groups_per_node = groups / nodes;
  const std::size_t per_node_log = E / nodes, per_node_phy = P / nodes, per_gpu = P / gpus;
  const std::size_t gpus_per_node = gpus / nodes;
  // 1. groups onto nodes.
  std::vector<double> group_w(groups, 0.0);
  for (std::size_t e = 0; e < E; ++e) group_w[e / group_size] += w[e];
  const packing gp = balanced_packing(group_w, static_cast<int>(nodes));
  // node-major order of logical experts: position -> logical id.
  std::vector<std::size_t> mlog2log(E);
  for (std::size_t e = 0; e < E; ++e) {
    const std::size_t g = e / group_size;
    const std::size_t pos = (static_cast<std::size_t>(gp.pack[g]) * groups_per_node +
                             static_cast<std::size_t>(gp.rank[g])) * group_size + e % group_size;
    mlog2log[pos] = e;
  }
  std::vector<std::int32_t> out(P, 0);
  for (std::size_t node = 0; node < nodes; ++node) {
    // 2. replicate inside the node.
    std::vector<double> node_w(per_node_log);
    for (std::size_t i = 0; i < per_node_log; ++i) node_w[i] = w[mlog2log[node * per_node_log + i]];
    const replication rep = replicate_experts(node_w, static_cast<int>(per_node_phy));
    // 3. physical experts onto the node's GPUs.
    std::vector<double> phy_w(per_node_phy);
    for (std::size_t i = 0; i < per_node_phy; ++i) {
      const auto m = static_cast<std::size_t>(rep.phy2log[i]);
      phy_w[i] = node_w[m] / rep.count[m];
    }
    const packing pp = balanced_packing(phy_w, static_cast<int>(gpus_per_node));
    for (std::size_t i = 0; i < per_node_phy; ++i) {
      const std::size_t slot = node * per_node_phy + static_cast<std::size_t>(pp.pack[i]) * per_gpu +
                               static_cast<std::size_t>(pp.rank[i]);
      out[slot] = static_cast<std::int32_t>(
          mlog2log[node * per_node_log + static_cast<std::size_t>(rep.phy2log[i])]);
    }
  }
  return out;
}
}  // namespace detail

/// Checks the EPLB shape requirements for E logical experts (hierarchical also needs the groups).
inline void check_eplb_options(int num_logical, const placement_options& o, bool hierarchical) {
  MOEROUTE_CHECK(o.redundant >= 0, errc::invalid_argument, "redundant experts R = ", o.redundant,
                 " must be >= 0");
  check_placement_shape(num_logical, num_logical + o.redundant, o.gpus, o.nodes, "");
  if (!hierarchical) return;
  MOEROUTE_CHECK(o.groups >= 1, errc::invalid_argument, "groups must be at least 1 (GR = ", o.groups, ")");
  MOEROUTE_CHECK(num_logical % o.groups == 0, errc::invalid_argument, "groups GR = ", o.groups,
                 " do not divide the experts E = ", num_logical);
  MOEROUTE_CHECK(o.groups % o.nodes == 0, errc::invalid_argument, "nodes N = ", o.nodes,
                 " do not divide the groups GR = ", o.groups,
                 " (hierarchical EPLB packs whole groups onto nodes; use eplb-global)");
}

namespace detail {
inline expert_placement eplb_run(const load_table& w, int num_logical, const placement_options& o, bool hierarchical) {
  check_eplb_options(num_logical, o, hierarchical);
  check_load_table(w, num_logical);
  expert_placement p;
  p.num_logical = num_logical;
  p.num_gpus = o.gpus;
  p.num_nodes = o.nodes;
  const auto P = static_cast<std::size_t>(num_logical + o.redundant);
  const auto groups = hierarchical ? static_cast<std::size_t>(o.groups) : 1;
  const auto nodes = hierarchical ? static_cast<std::size_t>(o.nodes) : 1;
  for (const auto& row : w)
    p.physical_to_logical.push_back(eplb_layer(row, P, groups, nodes, static_cast<std::size_t>(o.gpus)));
  return p;
}
}  // namespace detail

/// DeepSeek EPLB, hierarchical policy (see the contract at the top).
inline expert_placement eplb_hierarchical(const load_table& w, int num_logical, const placement_options& o) {
  return detail::eplb_run(w, num_logical, o, true);
}

/// DeepSeek EPLB, global policy: replicas and GPUs chosen over all experts (groups and nodes
/// ignored for packing; N is kept in the result).
inline expert_placement eplb_global(const load_table& w, int num_logical, const placement_options& o) {
  return detail::eplb_run(w, num_logical, o, false);
}

}  // namespace moeroute
