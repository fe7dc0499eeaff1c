#pragma once
// Building ATX residency policies: rank units (global experts, or (layer, expert) cells) by an
// importance measure and keep the top p%.
//
// Each workload contributes an L x E importance matrix (imatrix counts, trace activation counts or
// router-weight mass). A unit's value in a workload is its cell value (unit = cell) or the sum of
// its column over all layers (unit = global expert); its share is value / the workload's total.
// Several workloads are combined by the mean of their shares (as ATX's "combined" policies average
// the SciCode and Terminal-Bench shares). Units are ranked by that mean share, descending; equal
// shares rank the lower (layer, expert) first. p% of N units is ceil(p/100 x N) units.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeroute/error.hpp"
#include "moeroute/io/trace_counts.hpp"
#include "moeroute/residency/atx_policy.hpp"

namespace moeroute {

/// A dense, row-major num_layers x num_experts matrix of non-negative finite values.
struct expert_matrix {
  int num_layers = 0;
  int num_experts = 0;
  std::vector<double> values;

  expert_matrix() = default;
  expert_matrix(int layers, int experts) : num_layers(layers), num_experts(experts) {
    MOEROUTE_CHECK(layers >= 0 && experts >= 0 && layers <= atx_max_id + 1 && experts <= atx_max_id + 1,
                   errc::invalid_argument, "expert_matrix: bad shape ", layers, " x ", experts);
    MOEROUTE_CHECK(static_cast<std::uint64_t>(layers) * static_cast<std::uint64_t>(experts) <= max_count_cells,
                   errc::bad_input, layers, " layers x ", experts, " experts is more than the ", max_count_cells,
                   " cells a count matrix holds (is a layer or expert id implausible?)");
    values.assign(static_cast<std::size_t>(layers) * static_cast<std::size_t>(experts), 0.0);
  }
  bool empty() const noexcept { return values.empty(); }
  double& at(int l, int e) { return values[static_cast<std::size_t>(l) * static_cast<std::size_t>(num_experts) + static_cast<std::size_t>(e)]; }
  double at(int l, int e) const { return values[static_cast<std::size_t>(l) * static_cast<std::size_t>(num_experts) + static_cast<std::size_t>(e)]; }

  /// A matrix from per-layer counts (layer_index -> counts). num_layers / num_experts = 0 infer
  /// 1 + the largest layer index / the longest counts list; missing layers and experts are 0.
  static expert_matrix from_layer_counts(const std::vector<layer_counts>& rows, int num_layers = 0,
                                         int num_experts = 0) {
    int L = num_layers, E = num_experts;
    for (const auto& r : rows) {
      MOEROUTE_CHECK(r.layer_index >= 0 && r.layer_index <= atx_max_id, errc::bad_input,
                     "layer index ", r.layer_index, " out of range");
      if (num_layers <= 0) L = std::max(L, r.layer_index + 1);
      if (num_experts <= 0) E = std::max(E, static_cast<int>(std::min<std::size_t>(r.counts.size(), atx_max_id + 1)));
    }
    expert_matrix m(L, E);
    for (const auto& r : rows) {
      MOEROUTE_CHECK(r.layer_index < L, errc::bad_input, "layer ", r.layer_index, " outside ", L,
                     " layers");
      MOEROUTE_CHECK(r.counts.size() <= static_cast<std::size_t>(E), errc::bad_input, "layer ",
                     r.layer_index, " has ", r.counts.size(), " experts, more than ", E);
      for (std::size_t e = 0; e < r.counts.size(); ++e) {
        const double v = r.counts[e];
        MOEROUTE_CHECK(std::isfinite(v) && v >= 0, errc::bad_input, "layer ", r.layer_index,
                       " expert ", e, ": value ", v, " is not a finite non-negative number");
        m.at(r.layer_index, static_cast<int>(e)) = v;
      }
    }
    return m;
  }
};

/// One workload's measurements. `importance` ranks the units; `activation` (how often each cell was
/// routed to) and `router_weight` (router-weight mass) are optional and only reported. `name`
/// names the per-workload share fields ("<name>_importance_share"); empty = not reported.
struct atx_workload {
  std::string name;
  expert_matrix importance;
  expert_matrix activation;
  expert_matrix router_weight;
};

/// What unit a policy keeps.
enum class atx_unit_kind { global_expert, cell };

/// Options of build_atx_policy.
struct atx_build_options {
  double percent = 5;                    ///< keep ceil(percent/100 x N) units; (0, 100]
  atx_unit_kind unit = atx_unit_kind::global_expert;
  std::string policy_name;               ///< "" = a generated name
  std::vector<int> keep_layers;          ///< whole layers kept hot as well (hybrid), in this order
  int hybrid_top_layers = 0;             ///< also keep the K layers with the largest total share
  std::string basis;                     ///< written as "basis" when not empty
};

/// Number of units for p% of n: ceil(p/100 x n) (0 < p <= 100).
inline long long atx_unit_count(double percent, long long n) {
  MOEROUTE_CHECK(std::isfinite(percent) && percent > 0 && percent <= 100, errc::invalid_argument,
                 "percent ", percent, " outside (0, 100]");
  const double x = percent * static_cast<double>(n) / 100.0;
  long long k = static_cast<long long>(std::ceil(x - 1e-9 * std::max(1.0, x)));
  return std::min(std::max(k, 0LL), n);
}

namespace detail {

inline std::vector<double> builder_unit_shares(const expert_matrix& m, atx_unit_kind unit,
                                               const std::string& what) {
  double total = 0;
  for (double v : m.values) {
    MOEROUTE_CHECK(std::isfinite(v) && v >= 0, errc::bad_input, what,
                   ": values must be finite and non-negative");
    total += v;
  }
  MOEROUTE_CHECK(total > 0, errc::bad_input, what, ": all values are zero; shares are undefined");
  std::vector<double> out;
  if (unit == atx_unit_kind::cell) {
    out.resize(m.values.size());
    for (std::size_t i = 0; i < m.values.size(); ++i) out[i] = m.values[i] / total;
  } else {
    out.assign(static_cast<std::size_t>(m.num_experts), 0.0);
    for (int l = 0; l < m.num_layers; ++l)
      for (int e = 0; e < m.num_experts; ++e) out[static_cast<std::size_t>(e)] += m.at(l, e);
    for (double& v : out) v /= total;
  }
  return out;
}

inline std::vector<double> builder_mean(const std::vector<std::vector<double>>& shares) {
  if (shares.empty()) return {};
  std::vector<double> out(shares[0].size(), 0.0);
  for (const auto& s : shares)
    for (std::size_t i = 0; i < s.size(); ++i) out[i] += s[i];
  for (double& v : out) v /= static_cast<double>(shares.size());
  return out;
}

inline std::string builder_pct_name(double percent) {
  char buf[32];
  if (percent == std::floor(percent))
    std::snprintf(buf, sizeof buf, "%02d", static_cast<int>(percent));
  else
    std::snprintf(buf, sizeof buf, "%g", percent);
  return buf;
}

}  // namespace detail

/// Every unit ranked (see the header comment), with its stats: mean_importance_share,
/// cumulative_mean_importance_share, "<name>_importance_share" per named workload,
/// min_importance_share, mean_activation_share and mean_router_weight_share when every workload
/// has that matrix. Units carry rank 1..N; a global expert has layer -1. Only the first `limit`
/// units of the ranking are returned (their stats are the same as in the full ranking).
inline std::vector<atx_unit> rank_atx_units(const std::vector<atx_workload>& workloads,
                                            atx_unit_kind unit,
                                            std::size_t limit = std::numeric_limits<std::size_t>::max()) {
  MOEROUTE_CHECK(!workloads.empty(), errc::invalid_argument, "rank_atx_units: no workloads");
  const int L = workloads[0].importance.num_layers, E = workloads[0].importance.num_experts;
  MOEROUTE_CHECK(L > 0 && E > 0, errc::bad_input, "workload ", workloads[0].name,
                 ": empty importance matrix");
  bool all_act = true, all_rw = true;
  std::vector<std::vector<double>> imp, act, rw;
  for (std::size_t w = 0; w < workloads.size(); ++w) {
    const auto& wl = workloads[w];
    const std::string what = detail::concat("workload ", wl.name.empty() ? std::to_string(w) : wl.name);
    auto same_shape = [&](const expert_matrix& m, const char* which) {
      MOEROUTE_CHECK(m.num_layers == L && m.num_experts == E, errc::bad_input, what, ": ", which,
                     " is ", m.num_layers, " x ", m.num_experts, " but the first workload's importance is ",
                     L, " x ", E);
    };
    same_shape(wl.importance, "importance");
    imp.push_back(detail::builder_unit_shares(wl.importance, unit, what + " importance"));
    if (wl.activation.empty()) {
      all_act = false;
    } else {
      same_shape(wl.activation, "activation");
      act.push_back(detail::builder_unit_shares(wl.activation, unit, what + " activation"));
    }
    if (wl.router_weight.empty()) {
      all_rw = false;
    } else {
      same_shape(wl.router_weight, "router_weight");
      rw.push_back(detail::builder_unit_shares(wl.router_weight, unit, what + " router_weight"));
    }
  }
  const auto mean_imp = detail::builder_mean(imp);
  const auto mean_act = all_act ? detail::builder_mean(act) : std::vector<double>{};
  const auto mean_rw = all_rw ? detail::builder_mean(rw) : std::vector<double>{};

  std::vector<std::size_t> order(mean_imp.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  // Index order is (layer, expert) order for cells and expert order for global experts.
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return mean_imp[a] > mean_imp[b]; });

  std::vector<atx_unit> out;
  const std::size_t n_out = std::min(order.size(), limit);
  out.reserve(n_out);
  double cum = 0;
  for (std::size_t r = 0; r < n_out; ++r) {
    const std::size_t i = order[r];
    atx_unit u;
    if (unit == atx_unit_kind::cell) {
      u.layer = static_cast<int>(i / static_cast<std::size_t>(E));
      u.expert = static_cast<int>(i % static_cast<std::size_t>(E));
    } else {
      u.expert = static_cast<int>(i);
    }
    u.rank = static_cast<long long>(r + 1);
    cum += mean_imp[i];
    u.stats["mean_importance_share"] = mean_imp[i];
    u.stats["cumulative_mean_importance_share"] = cum;
    double mn = std::numeric_limits<double>::infinity();
    for (std::size_t w = 0; w < workloads.size(); ++w) {
      if (!workloads[w].name.empty()) u.stats[workloads[w].name + "_importance_share"] = imp[w][i];
      mn = std::min(mn, imp[w][i]);
    }
    u.stats["min_importance_share"] = mn;
    if (all_act) u.stats["mean_activation_share"] = mean_act[i];
    if (all_rw) u.stats["mean_router_weight_share"] = mean_rw[i];
    out.push_back(std::move(u));
  }
  return out;
}

/// Builds a policy keeping the top options.percent of the units (see the header comment), with
/// every form of the chosen unit kind (global: keep_experts, keep_experts_ranked,
/// keep_experts_compact; cells: keep_layer_experts, keep_layer_experts_by_layer,
/// keep_layer_experts_compact), keep_layers when hybrid, and the `selection` block.
inline atx_policy build_atx_policy(const std::vector<atx_workload>& workloads,
                                   const atx_build_options& options) {
  MOEROUTE_CHECK(!workloads.empty(), errc::invalid_argument, "build_atx_policy: no workloads");
  const int L = workloads[0].importance.num_layers, E = workloads[0].importance.num_experts;
  const bool cells = options.unit == atx_unit_kind::cell;
  const long long n_total = cells ? static_cast<long long>(L) * E : static_cast<long long>(E);
  const long long n = atx_unit_count(options.percent, n_total);
  // only the kept units are materialized (a unit carries a stats object)
  const auto ranked = rank_atx_units(workloads, options.unit, static_cast<std::size_t>(std::max(n, 1LL)));

  atx_policy p;
  p.policy_name = options.policy_name;
  if (p.policy_name.empty())
    p.policy_name = detail::concat(workloads.size() > 1 ? "combined_" : "", "top_",
                                   detail::builder_pct_name(options.percent), "pct_",
                                   cells ? "layer_experts" : "global_experts");
  p.extra = nlohmann::ordered_json::object();
  p.extra["intended_runtime"] = "ATX llama.cpp fork with --moe-residency-policy";
  if (!options.basis.empty()) p.extra["basis"] = options.basis;

  std::vector<atx_unit> kept(ranked.begin(), ranked.begin() + n);
  auto sel = nlohmann::ordered_json::object();
  // Integral percents are written as integers (5, not 5.0), as ATX writes them.
  const nlohmann::ordered_json pct =
      options.percent == std::floor(options.percent) ? nlohmann::ordered_json(static_cast<long long>(options.percent))
                                                     : nlohmann::ordered_json(options.percent);
  if (cells) {
    sel["percent_of_total_layer_expert_pairs"] = pct;
    sel["selected_layer_expert_pairs"] = n;
    sel["total_layer_expert_pairs"] = n_total;
    sel["layers"] = L;
    sel["experts_per_layer"] = E;
  } else {
    sel["percent_of_total_experts"] = pct;
    sel["selected_experts"] = n;
    sel["total_experts"] = n_total;
    sel["layers"] = L;
  }
  sel["rank_metric"] = "mean_importance_share";
  auto sum_stat = [&](const std::string& key) {
    double s = 0;
    for (const auto& u : kept) s += u.stat(key);
    return s;
  };
  sel["cumulative_mean_importance_share"] = n ? kept.back().stat("cumulative_mean_importance_share") : 0.0;
  for (const auto& w : workloads)
    if (!w.name.empty()) sel["cumulative_" + w.name + "_importance_share"] = sum_stat(w.name + "_importance_share");
  if (!ranked.empty() && ranked[0].stats.contains("mean_activation_share"))
    sel["cumulative_mean_activation_share"] = sum_stat("mean_activation_share");
  if (!ranked.empty() && ranked[0].stats.contains("mean_router_weight_share"))
    sel["cumulative_mean_router_weight_share"] = sum_stat("mean_router_weight_share");

  if (cells) {
    std::set<int> layers, experts;
    for (const auto& u : kept) {
      layers.insert(u.layer);
      experts.insert(u.expert);
    }
    sel["unique_layers_touched"] = layers.size();
    sel["unique_experts_touched"] = experts.size();
    p.keep_layer_experts = kept;
    p.forms.keep_layer_experts = p.forms.keep_layer_experts_by_layer = p.forms.keep_layer_experts_compact = true;
  } else {
    for (const auto& u : kept) p.keep_experts.push_back(u.expert);
    std::sort(p.keep_experts.begin(), p.keep_experts.end());
    p.keep_experts_ranked = kept;
    p.forms.keep_experts = p.forms.keep_experts_ranked = p.forms.keep_experts_compact = true;
  }

  // Hybrid: explicit layers first, then the densest layers by total mean importance share.
  std::vector<int> keep_layers;
  std::set<int> seen;
  for (int l : options.keep_layers) {
    MOEROUTE_CHECK(l >= 0 && l < L, errc::invalid_argument, "keep layer ", l, " outside the ", L,
                   " layers of the workloads");
    MOEROUTE_CHECK(seen.insert(l).second, errc::invalid_argument, "keep layer ", l, " given twice");
    keep_layers.push_back(l);
  }
  if (options.hybrid_top_layers > 0) {
    MOEROUTE_CHECK(options.hybrid_top_layers <= L, errc::invalid_argument, "hybrid top layers ",
                   options.hybrid_top_layers, " exceeds the ", L, " layers");
    const auto layer_rank = rank_atx_units(
        [&] {
          // One "expert" per layer: the layer's total, per workload (shares are then per layer).
          std::vector<atx_workload> per_layer;
          for (const auto& w : workloads) {
            atx_workload lw;
            lw.importance = expert_matrix(1, L);
            for (int l = 0; l < L; ++l)
              for (int e = 0; e < E; ++e) lw.importance.at(0, l) += w.importance.at(l, e);
            per_layer.push_back(std::move(lw));
          }
          return per_layer;
        }(),
        atx_unit_kind::global_expert);
    int added = 0;
    for (const auto& u : layer_rank) {
      if (added == options.hybrid_top_layers) break;
      if (seen.insert(u.expert).second) {
        keep_layers.push_back(u.expert);
        ++added;
      }
    }
  }
  if (!keep_layers.empty()) {
    p.keep_layers = keep_layers;
    p.forms.keep_layers = true;
    p.extra["hybrid_note"] = "whole layers in keep_layers are kept hot in addition to the listed units";
  }
  p.selection = std::move(sel);
  p.key_order = {"schema_version", "policy_name", "intended_runtime", "basis", "selection"};
  return p;
}

/// A workload from a routing trace: importance = activation counts (weight_importance = false) or
/// router-weight mass (true; needs gating_probs/weights); activation always; router_weight when the
/// trace has weights. num_layers / num_experts = 0 infer the shape from the trace.
inline atx_workload trace_workload(const routing_trace& t, const std::string& name,
                                   bool weight_importance = false, int num_layers = 0,
                                   int num_experts = 0) {
  atx_workload w;
  w.name = name;
  const int L = num_layers > 0 ? num_layers : t.num_layers();
  const int E = num_experts > 0 ? num_experts : t.num_experts();
  MOEROUTE_CHECK(t.num_layers() <= L, errc::bad_input, name, ": trace names layer ",
                 t.num_layers() - 1, " but the model has ", L, " layers");
  w.activation = expert_matrix::from_layer_counts(trace_activation_counts(t, E), L, E);
  if (t.has_weights)
    w.router_weight = expert_matrix::from_layer_counts(trace_weight_mass(t, E), L, E);
  if (weight_importance) {
    MOEROUTE_CHECK(t.has_weights, errc::bad_input, name,
                   ": router-weight importance needs gating_probs/weights on every record");
    w.importance = w.router_weight;
  } else {
    w.importance = w.activation;
  }
  return w;
}

}  // namespace moeroute
