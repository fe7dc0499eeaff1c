#pragma once
// Pareto comparison of residency policies (`schema_version: atx-policy-pareto-comparison-v1`): for
// each policy (or each slice of one ranked policy) the hot-VRAM cost against the importance and
// activation it captures.
//
// Captured percentages are 100 x the sum of the kept units' shares (mean_importance_share,
// mean_activation_share, "<workload>_importance_share"), rounded to one decimal. Hot VRAM is
// effective cells x bytes per cell (one size, or one size per layer), in GiB (3 decimals) and MiB
// (1 decimal). A global-expert unit covers every layer: effective cells = experts x layers.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeroute/error.hpp"
#include "moeroute/io/gguf.hpp"
#include "moeroute/io/gguf_expert_names.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/residency/atx_policy.hpp"
#include "moeroute/residency/policy_builder.hpp"

namespace moeroute {

inline constexpr const char* atx_pareto_schema = "atx-policy-pareto-comparison-v1";

/// Bytes of one (layer, expert) cell: a single size, or one size per layer (per_layer non-empty).
struct cell_size {
  double bytes = 0;
  std::vector<double> per_layer;

  /// Bytes of `cells` cells spread over layers as in `per_layer_cells` (size num_layers), or
  /// cells x bytes when there is no per-layer size.
  double total(const std::vector<long long>& per_layer_cells) const {
    if (per_layer.empty()) {
      long long n = 0;
      for (auto c : per_layer_cells) n += c;
      return static_cast<double>(n) * bytes;
    }
    MOEROUTE_CHECK(per_layer_cells.size() <= per_layer.size(), errc::bad_input, "the policy spans ",
                   per_layer_cells.size(), " layers but cell sizes are known for ", per_layer.size());
    double b = 0;
    for (std::size_t l = 0; l < per_layer_cells.size(); ++l)
      b += static_cast<double>(per_layer_cells[l]) * per_layer[l];
    return b;
  }
};

/// Per-layer cell bytes of a model GGUF, from the headers only: for each layer N with
/// `blk.N.ffn_{gate,up,down}_exps.weight` (N up to 6 digits, as the GGUF expert view reads them:
/// io/gguf_expert_names.hpp), the sum of the three tensors' bytes divided by n_expert
/// (their last dimension). Layers without expert tensors get 0. Errors name the file and tensor.
inline cell_size gguf_expert_cell_size(const gguf_file& g, int* num_experts_out = nullptr) {
  std::map<int, double> per;
  int n_expert = 0;
  for (const auto& t : g.tensors()) {
    const std::string& n = t.name;
    const int layer = gguf_expert_tensor(n);  // the expert view's rule (io/gguf_expert_names.hpp)
    if (layer < 0) continue;
    MOEROUTE_CHECK(t.ne.size() == 3 && t.ne[2] > 0, errc::bad_input, g.name(), ": tensor '", n,
                   "' must have 3 dimensions [n_in, n_out, n_expert]");
    MOEROUTE_CHECK(t.ne[2] <= atx_max_id + 1, errc::bad_input, g.name(), ": tensor '", n, "': ",
                   t.ne[2], " experts is too many");
    const int e = static_cast<int>(t.ne[2]);
    MOEROUTE_CHECK(n_expert == 0 || n_expert == e, errc::bad_input, g.name(), ": tensor '", n,
                   "' has ", e, " experts but an earlier expert tensor has ", n_expert);
    n_expert = e;
    per[layer] += static_cast<double>(t.nbytes) / e;
  }
  MOEROUTE_CHECK(!per.empty(), errc::bad_input, g.name(),
                 ": no blk.N.ffn_{gate,up,down}_exps.weight tensors (not an MoE model GGUF?)");
  cell_size s;
  s.per_layer.assign(static_cast<std::size_t>(per.rbegin()->first + 1), 0.0);
  for (const auto& kv : per) s.per_layer[static_cast<std::size_t>(kv.first)] = kv.second;
  if (num_experts_out) *num_experts_out = n_expert;
  return s;
}

/// One row of the comparison. Captured percentages are NaN when the policy's entries lack the
/// share; `workload_importance_pct` holds ("<field>_importance_captured_pct", value) pairs.
struct pareto_row {
  std::string policy_type;  ///< "global_experts" or "layer_expert_cells"
  std::string policy;
  double percent = 0;
  long long selected_units = 0;
  long long effective_layer_expert_cells = 0;
  double estimated_hot_vram_gib = 0;
  double estimated_hot_vram_mib = 0;
  double combined_importance_captured_pct = 0;
  double combined_activation_captured_pct = 0;
  std::vector<std::pair<std::string, double>> workload_importance_pct;
};

/// Shape and sizes a comparison needs; 0 = take from the policy's selection block.
struct pareto_options {
  int num_layers = 0;
  int num_experts = 0;
  cell_size size;
};

namespace detail {

inline double pareto_round(double x, int decimals) {
  const double f = std::pow(10.0, decimals);
  return std::round(x * f) / f;
}

// "terminal_bench_hard_agent" is reported as "terminal_bench" (the ATX comparison's column name).
inline std::string pareto_workload_column(const std::string& workload) {
  const std::string w = workload == "terminal_bench_hard_agent" ? "terminal_bench" : workload;
  return w + "_importance_captured_pct";
}

inline int pareto_sel_int(const atx_policy& p, const char* key) {
  if (!p.selection.is_object()) return 0;
  auto it = p.selection.find(key);
  if (it == p.selection.end() || !it->is_number_integer()) return 0;
  return static_cast<int>(std::min<long long>(it->get<long long>(), atx_max_id + 1));
}

inline bool pareto_is_workload_share(const std::string& k, std::string& workload) {
  static const std::string suffix = "_importance_share";
  if (k.size() <= suffix.size() || k.compare(k.size() - suffix.size(), suffix.size(), suffix) != 0)
    return false;
  workload = k.substr(0, k.size() - suffix.size());
  return workload != "mean" && workload != "min" && workload.compare(0, 11, "cumulative_") != 0;
}

inline pareto_row pareto_make_row(const atx_policy& p, const std::vector<atx_unit>& units, bool global,
                                  int L, int E, const cell_size& size, const std::string& name,
                                  double percent) {
  pareto_row r;
  r.policy_type = global ? "global_experts" : "layer_expert_cells";
  r.policy = name;
  r.percent = percent;
  r.selected_units = static_cast<long long>(units.size());
  atx_policy slice;
  slice.policy_name = p.policy_name;
  if (global) {
    for (const auto& u : units) slice.keep_experts.push_back(u.expert);
  } else {
    slice.keep_layer_experts = units;
  }
  slice.keep_layers = p.keep_layers;
  const residency_set cells = atx_policy_cells(slice, L, E);
  r.effective_layer_expert_cells = static_cast<long long>(cells.count());
  std::vector<long long> per_layer(static_cast<std::size_t>(L));
  for (int l = 0; l < L; ++l) per_layer[static_cast<std::size_t>(l)] = static_cast<long long>(cells.count_in_layer(l));
  const double bytes = size.total(per_layer);
  r.estimated_hot_vram_gib = pareto_round(bytes / (1024.0 * 1024.0 * 1024.0), 3);
  r.estimated_hot_vram_mib = pareto_round(bytes / (1024.0 * 1024.0), 1);
  auto captured = [&](const std::string& key) {
    double s = 0;
    for (const auto& u : units) {
      const double v = u.stat(key);
      if (std::isnan(v)) return std::nan("");
      s += v;
    }
    return pareto_round(100.0 * s, 1);
  };
  r.combined_importance_captured_pct = captured("mean_importance_share");
  r.combined_activation_captured_pct = captured("mean_activation_share");
  if (!units.empty()) {
    for (auto it = units[0].stats.begin(); it != units[0].stats.end(); ++it) {
      std::string w;
      if (pareto_is_workload_share(it.key(), w))
        r.workload_importance_pct.emplace_back(pareto_workload_column(w), captured(it.key()));
    }
  }
  return r;
}

inline void pareto_shape(const atx_policy& p, const pareto_options& o, bool global, int& L, int& E,
                         const std::string& who) {
  L = o.num_layers > 0 ? o.num_layers : pareto_sel_int(p, "layers");
  if (L <= 0 && !o.size.per_layer.empty()) L = static_cast<int>(o.size.per_layer.size());
  E = o.num_experts > 0 ? o.num_experts
                        : pareto_sel_int(p, global ? "total_experts" : "experts_per_layer");
  MOEROUTE_CHECK(L > 0, errc::invalid_argument, who,
                 ": number of layers unknown (give it, or a selection.layers in the policy)");
  if (E <= 0) {
    for (int e : p.keep_experts) E = std::max(E, e + 1);
    for (const auto& u : p.keep_layer_experts) E = std::max(E, u.expert + 1);
  }
}

inline std::vector<atx_unit> pareto_ranked_units(const atx_policy& p, bool global) {
  std::vector<atx_unit> units;
  if (global) {
    if (!p.keep_experts_ranked.empty()) {
      units = p.keep_experts_ranked;
    } else {
      for (int e : p.keep_experts) {
        atx_unit u;
        u.expert = e;
        units.push_back(u);
      }
    }
  } else {
    units = p.keep_layer_experts;
  }
  const bool ranked = !units.empty() && std::all_of(units.begin(), units.end(),
                                                    [](const atx_unit& u) { return u.rank > 0; });
  if (ranked)
    std::stable_sort(units.begin(), units.end(),
                     [](const atx_unit& a, const atx_unit& b) { return a.rank < b.rank; });
  return units;
}

inline std::string pareto_slice_name(const std::string& policy_name, double percent) {
  const std::string pct = builder_pct_name(percent);
  const std::size_t a = policy_name.find("top_");
  if (a != std::string::npos) {
    const std::size_t b = policy_name.find("pct", a + 4);
    if (b != std::string::npos && b > a + 4) {
      bool digits = true;
      for (std::size_t i = a + 4; i < b; ++i)
        digits = digits && ((policy_name[i] >= '0' && policy_name[i] <= '9') || policy_name[i] == '.');
      if (digits) return policy_name.substr(0, a + 4) + pct + policy_name.substr(b) + ".atx.json";
    }
  }
  return (policy_name.empty() ? std::string("policy") : policy_name) + ".top_" + pct + "pct";
}

}  // namespace detail

/// One row per percent from one ranked policy: the top ceil(p/100 x N) units in rank order, where N
/// is selection.total_experts (global) or selection.total_layer_expert_pairs (cells), else
/// num_experts (x num_layers for cells). The policy must rank at least that many units.
/// keep_layers of a hybrid policy are added to every slice's cells.
inline std::vector<pareto_row> pareto_slices(const atx_policy& p, const std::vector<double>& percents,
                                             const pareto_options& o, const std::string& who) {
  const bool global = !p.has_layer_experts();
  MOEROUTE_CHECK(global ? !p.keep_experts.empty() : true, errc::bad_input, who,
                 ": the policy keeps no experts or cells to slice");
  int L = 0, E = 0;
  detail::pareto_shape(p, o, global, L, E, who);
  long long N = global ? detail::pareto_sel_int(p, "total_experts") : 0;
  if (!global && p.selection.is_object() && p.selection.contains("total_layer_expert_pairs") &&
      p.selection["total_layer_expert_pairs"].is_number_integer())
    N = p.selection["total_layer_expert_pairs"].get<long long>();
  if (o.num_experts > 0 || N <= 0)
    N = global ? static_cast<long long>(E) : static_cast<long long>(E) * L;
  const auto units = detail::pareto_ranked_units(p, global);
  std::vector<pareto_row> rows;
  for (double pct : percents) {
    const long long n = atx_unit_count(pct, N);
    MOEROUTE_CHECK(n <= static_cast<long long>(units.size()), errc::bad_input, who, ": ", pct,
                   "% of ", N, global ? " experts" : " cells", " is ", n, " units but the policy ranks only ",
                   units.size());
    const std::vector<atx_unit> kept(units.begin(), units.begin() + n);
    rows.push_back(detail::pareto_make_row(p, kept, global, L, E, o.size,
                                           detail::pareto_slice_name(p.policy_name, pct), pct));
  }
  return rows;
}

/// One row for a whole policy, named `name`; its percent is the selection's
/// percent_of_total_experts / percent_of_total_layer_expert_pairs, else units / N x 100.
inline pareto_row pareto_policy_row(const atx_policy& p, const pareto_options& o, const std::string& name) {
  const bool global = !p.has_layer_experts();
  int L = 0, E = 0;
  detail::pareto_shape(p, o, global, L, E, name);
  const auto units = detail::pareto_ranked_units(p, global);
  double percent = std::nan("");
  const char* key = global ? "percent_of_total_experts" : "percent_of_total_layer_expert_pairs";
  if (p.selection.is_object() && p.selection.contains(key) && p.selection[key].is_number())
    percent = p.selection[key].get<double>();
  if (std::isnan(percent) && E > 0)
    percent = detail::pareto_round(100.0 * static_cast<double>(units.size()) /
                                       (global ? E : static_cast<double>(E) * L), 3);
  return detail::pareto_make_row(p, units, global, L, E, o.size, name, percent);
}

/// The `atx-policy-pareto-comparison-v1` document. NaN captured values are written as null.
inline nlohmann::ordered_json pareto_json(const std::vector<pareto_row>& rows,
                                          const std::vector<std::string>& notes = {}) {
  auto num = [](double v) -> nlohmann::ordered_json {
    if (std::isnan(v)) return nullptr;
    if (v == std::floor(v) && std::fabs(v) < 1e15) return static_cast<long long>(v);
    return v;
  };
  nlohmann::ordered_json doc = nlohmann::ordered_json::object();
  doc["schema_version"] = atx_pareto_schema;
  doc["description"] = "Residency policies by hot-cache size against the importance and activation they capture.";
  if (!notes.empty()) doc["notes"] = notes;
  doc["rows"] = nlohmann::ordered_json::array();
  for (const auto& r : rows) {
    nlohmann::ordered_json o = nlohmann::ordered_json::object();
    o["policy_type"] = r.policy_type;
    o["policy"] = r.policy;
    o["percent"] = num(r.percent);
    o["selected_units"] = r.selected_units;
    o["effective_layer_expert_cells"] = r.effective_layer_expert_cells;
    o["estimated_hot_vram_gib"] = r.estimated_hot_vram_gib;
    o["estimated_hot_vram_mib"] = r.estimated_hot_vram_mib;
    o["combined_importance_captured_pct"] = num(r.combined_importance_captured_pct);
    o["combined_activation_captured_pct"] = num(r.combined_activation_captured_pct);
    for (const auto& w : r.workload_importance_pct) o[w.first] = num(w.second);
    doc["rows"].push_back(std::move(o));
  }
  return doc;
}

/// Hits of one layer when a routing trace is replayed against a residency set.
struct residency_layer_hits {
  int layer = 0;
  long long accesses = 0;        ///< routed (token, expert) accesses of this layer
  long long hits = 0;            ///< of those, accesses to a resident cell
  long long resident_cells = 0;  ///< resident cells of this layer
  double hit_rate() const noexcept { return accesses ? static_cast<double>(hits) / static_cast<double>(accesses) : 0.0; }
};

/// Forced-residency check: the fraction of a trace's routed (token, layer, expert) accesses that
/// land on resident cells, overall and per layer (layers that have accesses, ascending).
struct residency_hits {
  long long accesses = 0;
  long long hits = 0;
  std::vector<residency_layer_hits> per_layer;
  double hit_rate() const noexcept { return accesses ? static_cast<double>(hits) / static_cast<double>(accesses) : 0.0; }
};

/// Replays `t` against `s`. A record naming a layer or expert outside s's shape is a
/// moeroute::error naming the record (1-based).
inline residency_hits evaluate_residency(const residency_set& s, const routing_trace& t) {
  std::vector<residency_layer_hits> layers(static_cast<std::size_t>(s.num_layers()));
  residency_hits out;
  for (std::size_t r = 0; r < t.size(); ++r) {
    const int l = t.layer[r];
    MOEROUTE_CHECK(l >= 0 && l < s.num_layers(), errc::bad_input, "trace record ", r + 1, ": layer ", l,
                   " outside the policy's ", s.num_layers(), " layers");
    auto& lh = layers[static_cast<std::size_t>(l)];
    for (std::uint32_t i = t.offsets[r]; i < t.offsets[r + 1]; ++i) {
      const int e = t.experts[i];
      MOEROUTE_CHECK(e >= 0 && e < s.num_experts(), errc::bad_input, "trace record ", r + 1, ": expert ", e,
                     " outside the policy's ", s.num_experts(), " experts");
      ++lh.accesses;
      if (s.contains(l, e)) ++lh.hits;
    }
  }
  for (int l = 0; l < s.num_layers(); ++l) {
    auto& lh = layers[static_cast<std::size_t>(l)];
    if (lh.accesses == 0) continue;
    lh.layer = l;
    lh.resident_cells = static_cast<long long>(s.count_in_layer(l));
    out.accesses += lh.accesses;
    out.hits += lh.hits;
    out.per_layer.push_back(lh);
  }
  return out;
}

}  // namespace moeroute
