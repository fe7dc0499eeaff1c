// moeroute policy: build, show, convert, compare (pareto) and replay (eval) ATX residency policies.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "moeroute/io/container_trace.hpp"
#include "moeroute/io/gguf.hpp"
#include "moeroute/io/imatrix.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/residency/atx_policy.hpp"
#include "moeroute/residency/pareto.hpp"
#include "moeroute/residency/policy_builder.hpp"
#include "svg.hpp"

namespace {

using namespace moeroute;

std::string fmt(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// File stem turned into a field-name prefix: "mixtral-8x7b_x.jsonl" -> "mixtral_8x7b_x".
std::string workload_name(const std::string& path) {
  std::string s = path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
  const std::size_t dot = s.find('.');
  if (dot != std::string::npos && dot > 0) s = s.substr(0, dot);
  for (char& c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))) c = '_';
  return s;
}

// Shape of a policy for commands that need one: flags, else the selection block, else the largest
// ids named (+1), raised to cover `at_least_layers` / `at_least_experts`.
void policy_shape(const atx_policy& p, int flag_layers, int flag_experts, int at_least_layers,
                  int at_least_experts, int& L, int& E) {
  auto sel = [&](const char* k) {
    if (!p.selection.is_object() || !p.selection.contains(k) || !p.selection[k].is_number_integer()) return 0;
    return static_cast<int>(std::min<long long>(p.selection[k].get<long long>(), atx_max_id + 1));
  };
  L = flag_layers;
  E = flag_experts;
  if (L <= 0) {
    L = std::max(sel("layers"), at_least_layers);
    for (const auto& u : p.keep_layer_experts) L = std::max(L, u.layer + 1);
    for (int l : p.keep_layers) L = std::max(L, l + 1);
  }
  if (E <= 0) {
    E = std::max({sel("total_experts"), sel("experts_per_layer"), at_least_experts});
    for (int e : p.keep_experts) E = std::max(E, e + 1);
    for (const auto& u : p.keep_layer_experts) E = std::max(E, u.expert + 1);
  }
  MOEROUTE_CHECK(L > 0, errc::invalid_argument,
                 "number of layers unknown: give --layers (the policy has no selection.layers)");
  MOEROUTE_CHECK(E > 0, errc::invalid_argument, "number of experts unknown: give --experts");
}

// ---------------------------------------------------------------------------------------- show
struct show_args {
  std::string policy;
  int layers = 0, experts = 0, top = 10;
};

void run_show(const show_args& a) {
  const atx_policy p = read_atx_policy(a.policy);
  std::ostringstream o;
  o << "policy:        " << (p.policy_name.empty() ? std::string("(unnamed)") : p.policy_name) << "\n";
  o << "file:          " << a.policy << "\n";
  o << "schema:        " << (p.schema_version.empty() ? std::string("(none)") : p.schema_version) << "\n";
  const bool cells = p.has_layer_experts();
  std::vector<std::string> forms;
  if (p.forms.keep_experts) forms.push_back("keep_experts");
  if (p.forms.keep_experts_ranked) forms.push_back("keep_experts_ranked");
  if (p.forms.keep_experts_compact) forms.push_back("keep_experts_compact");
  if (p.forms.keep_layer_experts) forms.push_back("keep_layer_experts");
  if (p.forms.keep_layer_experts_by_layer) forms.push_back("keep_layer_experts_by_layer");
  if (p.forms.keep_layer_experts_compact) forms.push_back("keep_layer_experts_compact");
  if (p.forms.keep_layers) forms.push_back("keep_layers");
  o << "forms:         ";
  for (std::size_t i = 0; i < forms.size(); ++i) o << (i ? ", " : "") << forms[i];
  o << "\n";
  if (cells) {
    o << "kind:          layer-expert cells (" << p.keep_layer_experts.size() << " cells)\n";
  } else if (!p.keep_experts.empty()) {
    o << "kind:          global experts (" << p.keep_experts.size() << " experts, hot in every layer)\n";
    o << "experts:       " << format_atx_id_flag(p.keep_experts) << "\n";
  } else {
    o << "kind:          whole layers only\n";
  }
  if (!p.keep_layers.empty()) {
    o << "keep_layers:   ";
    for (std::size_t i = 0; i < p.keep_layers.size(); ++i) o << (i ? "," : "") << p.keep_layers[i];
    o << " (whole layers, hybrid)\n";
  }
  if (p.selection.is_object()) {
    o << "selection:\n";
    for (auto it = p.selection.begin(); it != p.selection.end(); ++it)
      o << "  " << it.key() << ": " << it->dump() << "\n";
  }
  int L = 0, E = 0;
  policy_shape(p, a.layers, a.experts, 0, 0, L, E);
  const residency_set s = atx_policy_cells(p, L, E);
  o << "shape:         " << L << " layers x " << E << " experts\n";
  o << "resident:      " << s.count() << " of " << s.num_cells() << " cells ("
    << fmt(100.0 * static_cast<double>(s.count()) / static_cast<double>(std::max<std::size_t>(1, s.num_cells())), 2)
    << "%)\n";
  o << "per layer:     ";
  for (int l = 0; l < L; ++l) o << (l ? " " : "") << l << ":" << s.count_in_layer(l);
  o << "\n";
  const auto& ranked = cells ? p.keep_layer_experts : p.keep_experts_ranked;
  if (!ranked.empty() && a.top > 0) {
    o << "top " << std::min<std::size_t>(static_cast<std::size_t>(a.top), ranked.size()) << ":\n";
    for (std::size_t i = 0; i < ranked.size() && i < static_cast<std::size_t>(a.top); ++i) {
      const auto& u = ranked[i];
      o << "  #" << (u.rank ? u.rank : static_cast<long long>(i + 1)) << "  ";
      if (u.layer >= 0) o << "layer " << u.layer << " ";
      o << "expert " << u.expert;
      const double imp = u.stat("mean_importance_share"), cum = u.stat("cumulative_mean_importance_share");
      const double act = u.stat("mean_activation_share");
      if (!std::isnan(imp)) o << "  importance " << fmt(100 * imp, 3) << "%";
      if (!std::isnan(cum)) o << "  cumulative " << fmt(100 * cum, 2) << "%";
      if (!std::isnan(act)) o << "  activation " << fmt(100 * act, 3) << "%";
      o << "\n";
    }
  }
  cli::write_output("-", o.str());
}

// ------------------------------------------------------------------------------------- convert
struct convert_args {
  std::string policy, cells, experts, keep_layers, to = "json", out = "-", name;
};

void run_convert(const convert_args& a, CLI::App& sub) {
  const int sources = (sub.count("policy") > 0) + (sub.count("--cells") > 0) + (sub.count("--experts") > 0);
  MOEROUTE_CHECK(sources == 1 || (sources == 0 && sub.count("--keep-layers")), errc::invalid_argument,
                 "give exactly one of POLICY.json, --cells SPEC, --experts SPEC (or only --keep-layers)");
  MOEROUTE_CHECK(!sub.count("policy") || !sub.count("--keep-layers"), errc::invalid_argument,
                 "--keep-layers goes with --cells/--experts, not with a policy file");
  cli::output_files outs;
  outs.declare("--output", a.out);
  atx_policy p;
  if (sub.count("policy")) {
    p = read_atx_policy(a.policy);
  } else {
    p.policy_name = a.name.empty() ? std::string("converted") : a.name;
    p.key_order = {"schema_version", "policy_name"};
    if (sub.count("--cells")) {
      for (const auto& c : parse_atx_cell_list(a.cells, "--cells")) {
        atx_unit u;
        u.layer = c.first;
        u.expert = c.second;
        p.keep_layer_experts.push_back(u);
      }
      std::stable_sort(p.keep_layer_experts.begin(), p.keep_layer_experts.end(), [](const atx_unit& x, const atx_unit& y) {
        return std::make_pair(x.layer, x.expert) < std::make_pair(y.layer, y.expert);
      });
      p.forms.keep_layer_experts = p.forms.keep_layer_experts_by_layer = p.forms.keep_layer_experts_compact = true;
    }
    if (sub.count("--experts")) {
      p.keep_experts = parse_atx_id_list(a.experts, "--experts");
      std::sort(p.keep_experts.begin(), p.keep_experts.end());
      p.forms.keep_experts = p.forms.keep_experts_compact = true;
    }
    if (sub.count("--keep-layers")) {
      p.keep_layers = parse_atx_id_list(a.keep_layers, "--keep-layers");
      p.forms.keep_layers = true;
    }
  }
  if (!a.name.empty()) p.policy_name = a.name;
  std::string out;
  if (a.to == "json") {
    out = write_atx_policy_string(p);
  } else if (a.to == "compact") {
    if (p.has_layer_experts()) {
      out = format_atx_cell_compact(atx_policy_cell_list(p));
    } else {
      MOEROUTE_CHECK(!p.keep_experts.empty(), errc::invalid_argument,
                     "the policy keeps no experts or cells: nothing to write as a compact string");
      out = format_atx_id_compact(p.keep_experts);
    }
    out += "\n";
  } else {  // flag
    std::vector<std::string> parts;
    if (p.has_layer_experts())
      parts.push_back("--moe-keep-layer-experts " + format_atx_cell_flag(atx_policy_cell_list(p)));
    else if (!p.keep_experts.empty())
      parts.push_back("--moe-keep-experts " + format_atx_id_flag(p.keep_experts));
    if (!p.keep_layers.empty()) parts.push_back("--moe-keep-layers " + format_atx_id_flag(p.keep_layers));
    MOEROUTE_CHECK(!parts.empty(), errc::invalid_argument, "the policy keeps nothing: no flags to write");
    for (std::size_t i = 0; i < parts.size(); ++i) out += (i ? " " : "") + parts[i];
    out += "\n";
  }
  outs.set(a.out, out);
  outs.commit();
}

// --------------------------------------------------------------------------------------- build
struct build_args {
  std::vector<std::string> traces, counts, imatrices;
  std::string names, unit = "global", measure = "activation", keep_layers, name, basis, out = "-";
  double percent = 0;
  int layers = 0, experts = 0, hybrid_top_layers = 0;
};

void run_build(const build_args& a, CLI::App& sub) {
  MOEROUTE_CHECK(!a.traces.empty() || !a.counts.empty() || !a.imatrices.empty(), errc::invalid_argument,
                 "give at least one workload: --trace T.jsonl, --counts C.json or --imatrix F.gguf");
  MOEROUTE_CHECK(sub.count("--percent"), errc::invalid_argument, "--percent is required");
  std::vector<int> keep_layers;
  if (!a.keep_layers.empty()) keep_layers = parse_atx_id_list(a.keep_layers, "--keep-layers");
  std::vector<std::string> names;
  if (!a.names.empty()) {
    std::stringstream ss(a.names);
    for (std::string n; std::getline(ss, n, ',');) names.push_back(n);
    const std::size_t n_src = a.traces.size() + a.counts.size() + a.imatrices.size();
    MOEROUTE_CHECK(names.size() == n_src, errc::invalid_argument, "--names has ", names.size(),
                   " names for ", n_src, " workloads (order: traces, counts, imatrices)");
  }
  cli::output_files outs;
  outs.declare("--output", a.out);
  const bool weight = a.measure == "weight";
  struct source {
    std::string path;
    std::vector<layer_counts> importance, activation, router_weight;
  };
  std::vector<source> src;
  for (const auto& t : a.traces) {
    const routing_trace tr = read_routing_trace_jsonl(t);
    MOEROUTE_CHECK(tr.num_accesses() > 0, errc::bad_input, t, ": the trace has no expert accesses");
    source s{t, {}, trace_activation_counts(tr), {}};
    if (tr.has_weights) s.router_weight = trace_weight_mass(tr);
    MOEROUTE_CHECK(!weight || tr.has_weights, errc::bad_input, t,
                   ": --measure weight needs gating_probs/weights on every record");
    s.importance = weight ? s.router_weight : s.activation;
    src.push_back(std::move(s));
  }
  for (const auto& c : a.counts) {
    const container_trace ct = read_container_trace_json(c);
    MOEROUTE_CHECK(!weight || ct.gate_weighted, errc::bad_input, c,
                   ": --measure weight needs gate_weighted counts (this file has activation counts)");
    source s{c, ct.layers, {}, {}};
    if (ct.gate_weighted) s.router_weight = ct.layers;
    else s.activation = ct.layers;
    src.push_back(std::move(s));
  }
  for (const auto& f : a.imatrices) {
    MOEROUTE_CHECK(!weight, errc::bad_input, f, ": an imatrix has activation counts only (no --measure weight)");
    const auto counts = imatrix_expert_counts(read_imatrix(f));
    src.push_back(source{f, counts, counts, {}});
  }
  if (names.empty())
    for (const auto& s : src) names.push_back(workload_name(s.path));
  // A common shape: flags, else the largest over the workloads.
  int L = a.layers, E = a.experts;
  if (L <= 0 || E <= 0) {
    int ml = 0, me = 0;
    for (const auto& s : src)
      for (const auto& lc : s.importance) {
        ml = std::max(ml, lc.layer_index + 1);
        me = std::max(me, static_cast<int>(std::min<std::size_t>(lc.counts.size(), atx_max_id + 1)));
      }
    if (L <= 0) L = ml;
    if (E <= 0) E = me;
  }
  std::vector<atx_workload> workloads;
  for (std::size_t i = 0; i < src.size(); ++i) {
    atx_workload w;
    w.name = names[i];
    auto mat = [&](const std::vector<layer_counts>& rows, const char* what) {
      try {
        return rows.empty() ? expert_matrix() : expert_matrix::from_layer_counts(rows, L, E);
      } catch (const error& e) {
        detail::fail(e.code(), src[i].path, ": ", what, ": ", e.message());
      }
    };
    w.importance = mat(src[i].importance, "importance");
    w.activation = mat(src[i].activation, "activation");
    w.router_weight = mat(src[i].router_weight, "router weight");
    workloads.push_back(std::move(w));
  }
  atx_build_options o;
  o.percent = a.percent;
  MOEROUTE_CHECK(a.unit == "global" || a.unit == "cell", errc::invalid_argument, "--unit must be global or cell");
  o.unit = a.unit == "cell" ? atx_unit_kind::cell : atx_unit_kind::global_expert;
  o.policy_name = a.name;
  o.keep_layers = keep_layers;
  o.hybrid_top_layers = a.hybrid_top_layers;
  o.basis = a.basis;
  if (o.basis.empty()) {
    o.basis = std::string(workloads.size() > 1 ? "Mean of normalized " : "Normalized ") +
              (weight ? "router-weight mass" : "activation count") + " shares per " +
              (o.unit == atx_unit_kind::cell ? "layer-expert cell" : "expert (summed over layers)") + " from ";
    for (std::size_t i = 0; i < src.size(); ++i) o.basis += (i ? ", " : "") + src[i].path;
    o.basis += "; ranked descending, ties to the lower (layer, expert).";
  }
  const atx_policy p = build_atx_policy(workloads, o);
  outs.set(a.out, write_atx_policy_string(p));
  outs.commit();
}

// -------------------------------------------------------------------------------------- pareto
struct pareto_args {
  std::vector<std::string> policies;
  std::string percents, model, svg, out = "-";
  int layers = 0, experts = 0;
  double cell_mib = 0, cell_bytes = 0;
};

void run_pareto(const pareto_args& a, CLI::App& sub) {
  const int size_flags = (sub.count("--cell-mib") > 0) + (sub.count("--cell-bytes") > 0) + (sub.count("--model") > 0);
  MOEROUTE_CHECK(size_flags == 1, errc::invalid_argument,
                 "give exactly one of --cell-mib, --cell-bytes or --model M.gguf for the hot-VRAM estimate");
  std::vector<double> pct;
  if (!a.percents.empty()) pct = cli::parse_list<double>(a.percents, "--percents");
  for (double x : pct)
    MOEROUTE_CHECK(x > 0 && x <= 100, errc::invalid_argument, "--percents: ", x, " is not in (0, 100]");
  cli::output_files outs;
  outs.declare("--output", a.out);
  if (!a.svg.empty()) outs.declare("--svg", a.svg);
  pareto_options o;
  o.num_layers = a.layers;
  o.num_experts = a.experts;
  std::vector<std::string> notes;
  if (sub.count("--cell-mib")) {
    MOEROUTE_CHECK(a.cell_mib > 0 && std::isfinite(a.cell_mib), errc::invalid_argument, "--cell-mib must be > 0");
    o.size.bytes = a.cell_mib * 1024.0 * 1024.0;
    notes.push_back("estimated_hot_vram is effective cells x " + fmt(a.cell_mib, 5) + " MiB per cell.");
  } else if (sub.count("--cell-bytes")) {
    MOEROUTE_CHECK(a.cell_bytes > 0 && std::isfinite(a.cell_bytes), errc::invalid_argument, "--cell-bytes must be > 0");
    o.size.bytes = a.cell_bytes;
    notes.push_back("estimated_hot_vram is effective cells x " + fmt(a.cell_bytes, 0) + " bytes per cell.");
  } else {
    int n_expert = 0;
    o.size = gguf_expert_cell_size(gguf_file::open(a.model), &n_expert);
    if (o.num_layers <= 0) o.num_layers = static_cast<int>(o.size.per_layer.size());
    if (o.num_experts <= 0) o.num_experts = n_expert;
    notes.push_back("estimated_hot_vram sums per-layer cell sizes from " + a.model +
                    " (blk.N.ffn_{gate,up,down}_exps.weight bytes / n_expert).");
  }
  notes.push_back("captured pct = 100 x the sum of the kept units' shares, one decimal; null when the policy lacks that share.");
  std::vector<pareto_row> rows;
  if (!pct.empty()) {
    for (const auto& path : a.policies) {
      const auto part = pareto_slices(read_atx_policy(path), pct, o, path);
      rows.insert(rows.end(), part.begin(), part.end());
    }
  } else {
    for (const auto& path : a.policies) {
      const std::string base = path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
      rows.push_back(pareto_policy_row(read_atx_policy(path), o, base));
    }
  }
  const std::string json = pareto_json(rows, notes).dump(2) + "\n";
  std::string svg;
  if (!a.svg.empty()) {
    cli::svg_chart c;
    c.title = "Residency policies: captured share vs hot VRAM";
    c.x_label = "estimated hot VRAM (GiB)";
    c.y_label = "captured (%)";
    for (const char* type : {"global_experts", "layer_expert_cells"}) {
      cli::svg_series imp, act;
      imp.name = std::string("importance, ") + type;
      act.name = std::string("activation, ") + type;
      for (const auto& r : rows) {
        if (r.policy_type != type) continue;
        imp.x.push_back(r.estimated_hot_vram_gib);
        imp.y.push_back(r.combined_importance_captured_pct);
        act.x.push_back(r.estimated_hot_vram_gib);
        act.y.push_back(r.combined_activation_captured_pct);
      }
      if (imp.x.empty()) continue;
      c.series.push_back(imp);
      c.series.push_back(act);
    }
    svg = c.render();
  }
  outs.set(a.out, json);
  if (!a.svg.empty()) outs.set(a.svg, svg);
  outs.commit();
}

// ---------------------------------------------------------------------------------------- eval
struct eval_args {
  std::string policy, trace, out = "-";
  int layers = 0, experts = 0;
};

void run_eval(const eval_args& a) {
  cli::output_files outs;
  outs.declare("--output", a.out);
  const atx_policy p = read_atx_policy(a.policy);
  const routing_trace t = read_routing_trace_jsonl(a.trace);
  int L = 0, E = 0;
  policy_shape(p, a.layers, a.experts, t.num_layers(), t.num_experts(), L, E);
  const residency_set s = atx_policy_cells(p, L, E);
  residency_hits h;
  try {
    h = evaluate_residency(s, t);
  } catch (const error& e) {
    detail::fail(e.code(), a.trace, ": ", e.message());
  }
  nlohmann::ordered_json o = nlohmann::ordered_json::object();
  o["policy"] = a.policy;
  o["policy_name"] = p.policy_name;
  o["trace"] = a.trace;
  o["num_layers"] = L;
  o["num_experts"] = E;
  o["resident_cells"] = s.count();
  o["records"] = t.size();
  o["accesses"] = h.accesses;
  o["hits"] = h.hits;
  o["hit_rate"] = h.hit_rate();
  o["per_layer"] = nlohmann::ordered_json::array();
  for (const auto& lh : h.per_layer) {
    nlohmann::ordered_json r = nlohmann::ordered_json::object();
    r["layer"] = lh.layer;
    r["resident_cells"] = lh.resident_cells;
    r["accesses"] = lh.accesses;
    r["hits"] = lh.hits;
    r["hit_rate"] = lh.hit_rate();
    o["per_layer"].push_back(std::move(r));
  }
  outs.set(a.out, o.dump(2) + "\n");
  outs.commit();
}

void setup_policy(CLI::App& app, int& /*exit_code*/) {
  CLI::App* pol = app.add_subcommand("policy", "Build, show, convert, compare (pareto) and replay ATX residency policies");
  pol->require_subcommand(1);
  const CLI::Validator id_count = cli::int_in(1, atx_max_id + 1);  // --layers, --experts

  {
    auto a = std::make_shared<show_args>();
    CLI::App* sub = pol->add_subcommand("show", "Print a human summary of a policy");
    sub->add_option("policy", a->policy, "ATX policy JSON")->required();
    sub->add_option("--layers", a->layers, "MoE layers of the model (default: from the policy)")->check(id_count);
    sub->add_option("--experts", a->experts, "experts per layer (default: from the policy)")->check(id_count);
    sub->add_option("--top", a->top, "ranked entries to list (default 10)")->check(cli::int_in(0, 1 << 30));
    sub->callback([a] { run_show(*a); });
  }
  {
    auto a = std::make_shared<convert_args>();
    CLI::App* sub = pol->add_subcommand(
        "convert", "Convert between policy JSON, compact strings and the fork's flag syntax (0:0-31,37:103)");
    sub->add_option("policy", a->policy, "ATX policy JSON to convert");
    sub->add_option("--cells", a->cells, "layer-expert cells, compact or flag syntax: 0:0-31,37:103");
    sub->add_option("--experts", a->experts, "global expert ids, compact or flag syntax: 0,3-5");
    sub->add_option("--keep-layers", a->keep_layers, "whole layers kept hot: 35-38");
    sub->add_option("--to", a->to, "json | compact | flag (default json)")
        ->check(CLI::IsMember({"json", "compact", "flag"}));
    sub->add_option("--name", a->name, "policy_name of the output");
    sub->add_option("-o,--output", a->out, "output file (default stdout)");
    sub->callback([a, sub] { run_convert(*a, *sub); });
  }
  {
    auto a = std::make_shared<build_args>();
    CLI::App* sub = pol->add_subcommand("build", "Build a top-p% policy from workload counts");
    sub->add_option("--trace", a->traces, "routing trace JSONL (repeatable: one workload each)");
    sub->add_option("--counts", a->counts, "gpu-container trace JSON (repeatable)");
    sub->add_option("--imatrix", a->imatrices, "llama.cpp imatrix GGUF (repeatable)");
    sub->add_option("--names", a->names, "workload names, comma-separated (traces, counts, imatrices order)");
    sub->add_option("--percent", a->percent, "keep ceil(p/100 x N) units, p in (0, 100]")
        ->check(cli::finite_above(0.0, 100.0));
    sub->add_option("--unit", a->unit, "global (experts in every layer) | cell (default global)")
        ->check(CLI::IsMember({"global", "cell"}));
    sub->add_option("--measure", a->measure, "importance: activation (counts) | weight (router-weight mass)")
        ->check(CLI::IsMember({"activation", "weight"}));
    sub->add_option("--keep-layers", a->keep_layers, "whole layers kept hot as well (hybrid): 35-38");
    sub->add_option("--hybrid-top-layers", a->hybrid_top_layers, "also keep the K layers with the largest share")
        ->check(cli::int_in(0, atx_max_id + 1));
    sub->add_option("--layers", a->layers, "MoE layers of the model (default: from the workloads)")->check(id_count);
    sub->add_option("--experts", a->experts, "experts per layer (default: from the workloads)")->check(id_count);
    sub->add_option("--name", a->name, "policy_name");
    sub->add_option("--basis", a->basis, "basis text written into the policy");
    sub->add_option("-o,--output", a->out, "output policy JSON (default stdout)");
    sub->callback([a, sub] { run_build(*a, *sub); });
  }
  {
    auto a = std::make_shared<pareto_args>();
    CLI::App* sub = pol->add_subcommand("pareto", "Compare policies (or slices of one ranked policy): hot VRAM vs captured share");
    sub->add_option("policies", a->policies, "ATX policy JSON files")->required();
    sub->add_option("--percents", a->percents, "slice each ranked policy at these percents: 5,10,15,20");
    sub->add_option("--layers", a->layers, "MoE layers of the model (default: selection.layers or the GGUF)")->check(id_count);
    sub->add_option("--experts", a->experts, "experts per layer (default: from the policy or the GGUF)")->check(id_count);
    sub->add_option("--cell-mib", a->cell_mib, "MiB per (layer, expert) cell")->check(cli::finite_above(0.0, 1e12));
    sub->add_option("--cell-bytes", a->cell_bytes, "bytes per (layer, expert) cell")->check(cli::finite_above(0.0, 1e18));
    sub->add_option("--model", a->model, "model GGUF: per-layer cell bytes from its expert tensors (headers only)");
    sub->add_option("--svg", a->svg, "also write a chart of captured importance/activation vs hot VRAM");
    sub->add_option("-o,--output", a->out, "output comparison JSON (default stdout)");
    sub->callback([a, sub] { run_pareto(*a, *sub); });
  }
  {
    auto a = std::make_shared<eval_args>();
    CLI::App* sub = pol->add_subcommand("eval", "Replay a routing trace: fraction of accesses that hit resident cells");
    sub->add_option("--policy", a->policy, "ATX policy JSON")->required();
    sub->add_option("--trace", a->trace, "routing trace JSONL")->required();
    sub->add_option("--layers", a->layers, "MoE layers of the model (default: policy/trace)")->check(id_count);
    sub->add_option("--experts", a->experts, "experts per layer (default: policy/trace)")->check(id_count);
    sub->add_option("-o,--output", a->out, "output report JSON (default stdout)");
    sub->callback([a] { run_eval(*a); });
  }
}

}  // namespace

MOEROUTE_CLI_COMMAND("policy", setup_policy);
