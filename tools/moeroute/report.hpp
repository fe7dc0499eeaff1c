#pragma once
// moeroute report: one self-contained HTML page with SVG charts (no scripts, no external files)
// from routing traces, expert-count tables (imatrix, gpu-container JSON), pareto comparisons
// and offload-run results.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeroute/cache/simulate.hpp"
#include "moeroute/io/trace_counts.hpp"
#include "moeroute/metrics/concentration.hpp"
#include "svg.hpp"

namespace moeroute::cli {

struct report_inputs {
  std::string title = "moeroute report";
  std::vector<std::pair<std::string, routing_trace>> traces;                 ///< (file, trace)
  std::vector<std::pair<std::string, std::vector<layer_counts>>> counts;     ///< (file, counts)
  std::vector<std::pair<std::string, nlohmann::json>> pareto;                ///< (file, comparison)
  std::vector<std::pair<std::string, nlohmann::json>> runs;                  ///< (file, offload run)
  std::vector<std::pair<std::string, nlohmann::json>> plans;                 ///< (label, `moeroute plan` result)
  std::vector<double> capacity_percents{1, 2, 5, 10, 15, 20, 30, 40, 60, 80, 100};
};

namespace detail {

inline std::string html_escape(const std::string& s) { return moeroute::cli::detail::svg_escape(s); }

inline std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

/// The heat map's colour for s = count / the layer's maximum in [0, 1]: white -> deep blue.
inline std::string heat_colour(double s) {
  const int R = static_cast<int>(255 - 230 * s), G = static_cast<int>(255 - 170 * s), B = static_cast<int>(255 - 60 * s);
  char col[16];
  std::snprintf(col, sizeof col, "#%02x%02x%02x", R, G, B);
  return col;
}

/// Most expert columns and layer rows a heat map draws: a larger model is drawn in bins of
/// consecutive experts and layers, each bin the sum of its cells, so the page stays small.
inline constexpr std::size_t heatmap_max_cols = 256, heatmap_max_rows = 128;

/// Heat map of per-layer expert counts: one row per layer, colour = count / the layer's maximum,
/// with a colour scale (0 .. 100% of the layer's busiest expert) under it. Over heatmap_max_cols
/// experts or heatmap_max_rows layers, cells are summed into bins first.
inline std::string report_heatmap(const std::vector<layer_counts>& in_layers, const std::string& title) {
  std::size_t E = 0;
  for (const auto& l : in_layers) E = std::max(E, l.counts.size());
  const std::size_t eb = std::max<std::size_t>(1, (E + heatmap_max_cols - 1) / heatmap_max_cols);
  const std::size_t lb = std::max<std::size_t>(1, (in_layers.size() + heatmap_max_rows - 1) / heatmap_max_rows);
  std::vector<layer_counts> binned;
  if (eb > 1 || lb > 1) {
    for (std::size_t r = 0; r < in_layers.size(); r += lb) {
      layer_counts b;
      b.layer_index = in_layers[r].layer_index;
      b.counts.assign((E + eb - 1) / eb, 0.0);
      for (std::size_t q = r; q < std::min(in_layers.size(), r + lb); ++q)
        for (std::size_t e = 0; e < in_layers[q].counts.size(); ++e) b.counts[e / eb] += in_layers[q].counts[e];
      binned.push_back(std::move(b));
    }
  }
  const std::vector<layer_counts>& layers = binned.empty() ? in_layers : binned;
  const std::string expert_word = eb > 1 ? "experts from " : "expert ";
  const std::size_t E_all = E;
  E = binned.empty() ? E : (E + eb - 1) / eb;
  const double L = static_cast<double>(layers.size());
  const double cw = std::max(2.0, std::min(48.0, 760.0 / static_cast<double>(std::max<std::size_t>(E, 1))));
  const double ch = std::max(4.0, std::min(18.0, 420.0 / std::max(L, 1.0)));
  const double left = 60, top = 40;
  const double w = std::max(760.0, left + cw * static_cast<double>(E) + 20), h = top + ch * L + 76;
  std::string o = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"heatmap\" width=\"" + fmt("%.0f", w) +
                  "\" height=\"" + fmt("%.0f", h) + "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  o += "<text x=\"" + fmt("%.1f", w / 2) + "\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">" +
       html_escape(title) + "</text>\n";
  for (std::size_t r = 0; r < layers.size(); ++r) {
    const auto& c = layers[r].counts;
    double mx = 0;
    for (double v : c) mx = std::max(mx, v);
    const double y = top + ch * static_cast<double>(r);
    if (layers.size() <= 48 || r % 4 == 0)
      o += "<text x=\"" + fmt("%.1f", left - 4) + "\" y=\"" + fmt("%.1f", y + ch * 0.8) +
           "\" text-anchor=\"end\">" + std::to_string(layers[r].layer_index) + "</text>\n";
    for (std::size_t e = 0; e < c.size(); ++e) {
      const std::string col = heat_colour(mx > 0 ? c[e] / mx : 0.0);
      o += "<rect x=\"" + fmt("%.1f", left + cw * static_cast<double>(e)) + "\" y=\"" + fmt("%.1f", y) +
           "\" width=\"" + fmt("%.2f", cw) + "\" height=\"" + fmt("%.2f", ch) + "\" fill=\"" + col +
           "\"><title>layer " + std::to_string(layers[r].layer_index) + (lb > 1 ? "+" : "") + ", " +
           expert_word + std::to_string(e * eb) + ": " + fmt("%g", c[e]) + "</title></rect>\n";
    }
  }
  o += "<text x=\"" + fmt("%.1f", left) + "\" y=\"" + fmt("%.1f", top + ch * L + 16) +
       "\">expert (0 .. " + std::to_string(E_all ? E_all - 1 : 0) + ")" +
       (binned.empty() ? std::string()
                       : "; bins of " + std::to_string(eb) + " experts x " + std::to_string(lb) + " layers, summed") +
       "; colour = routing count / the layer's busiest expert</text>\n";
  // Colour scale: eleven steps from 0 to 100% of the layer's busiest expert.
  const double sy = h - 44, sw = 24;
  o += "<g class=\"heat-scale\">\n<text x=\"" + fmt("%.1f", left) + "\" y=\"" + fmt("%.1f", sy + 11) +
       "\">scale:</text>\n";
  for (int i = 0; i <= 10; ++i) {
    const double x = left + 44 + sw * i;
    o += "<rect x=\"" + fmt("%.1f", x) + "\" y=\"" + fmt("%.1f", sy) + "\" width=\"" + fmt("%.0f", sw) +
         "\" height=\"14\" fill=\"" + heat_colour(i / 10.0) + "\" stroke=\"#999\" stroke-width=\"0.5\"><title>" +
         std::to_string(10 * i) + "% of the layer's busiest expert</title></rect>\n";
  }
  o += "<text x=\"" + fmt("%.1f", left + 44) + "\" y=\"" + fmt("%.1f", sy + 26) + "\">0</text>\n";
  o += "<text x=\"" + fmt("%.1f", left + 44 + sw * 11) + "\" y=\"" + fmt("%.1f", sy + 26) +
       "\" text-anchor=\"end\">100% of the layer's busiest expert</text>\n</g>\n";
  o += "<text x=\"14\" y=\"" + fmt("%.1f", top + ch * L / 2) + "\" transform=\"rotate(-90 14 " +
       fmt("%.1f", top + ch * L / 2) + ")\" text-anchor=\"middle\">layer</text>\n";
  o += "</svg>\n";
  return o;
}

/// Experts needed (fraction of E) against routing coverage: min, median and max over layers.
inline std::string report_coverage(const std::vector<layer_counts>& layers, const std::string& title) {
  std::vector<double> levels;
  for (int i = 1; i <= 20; ++i) levels.push_back(i / 20.0);
  std::vector<std::vector<double>> per_level(levels.size());
  for (const auto& l : layers) {
    std::vector<double> c = l.counts;
    std::sort(c.rbegin(), c.rend());
    double total = 0;
    for (double v : c) total += v;
    if (total <= 0 || c.empty()) continue;
    for (std::size_t i = 0; i < levels.size(); ++i) {
      double cum = 0;
      std::size_t k = 0;
      while (k < c.size() && cum < levels[i] * total) cum += c[k++];
      per_level[i].push_back(static_cast<double>(k) / static_cast<double>(c.size()));
    }
  }
  svg_chart chart;
  chart.title = title;
  chart.x_label = "routing coverage";
  chart.y_label = "fraction of experts resident";
  svg_series lo{"least concentrated layer", {}, {}, true, false}, med{"median layer", {}, {}, true, true},
      hi{"most concentrated layer", {}, {}, true, false};
  for (std::size_t i = 0; i < levels.size(); ++i) {
    auto v = per_level[i];
    if (v.empty()) continue;
    std::sort(v.begin(), v.end());
    lo.x.push_back(levels[i]);
    lo.y.push_back(v.back());
    hi.x.push_back(levels[i]);
    hi.y.push_back(v.front());
    med.x.push_back(levels[i]);
    med.y.push_back(v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2);
  }
  chart.series = {lo, med, hi};
  return chart.render();
}

/// Hit rate against cache capacity (percent of the trace's cells) per eviction policy: the policies
/// whose replay costs O(log n) per access at most (the O(resident)-per-eviction ones, lfru,
/// least-stale and recommended, are compared by `cache-sim --compare`), so a huge trace stays fast.
inline std::string report_hit_rates(const routing_trace& t, const std::vector<double>& percents,
                                    const std::string& title, std::string& table) {
  const std::size_t cells = static_cast<std::size_t>(t.num_layers()) * static_cast<std::size_t>(t.num_experts());
  std::vector<std::size_t> caps;
  for (double p : percents) caps.push_back(std::max<std::size_t>(1, static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(cells)))));
  svg_chart chart;
  chart.title = title;
  chart.x_label = "cache capacity (% of " + std::to_string(cells) + " layer-expert cells)";
  chart.y_label = "hit rate (%)";
  table = "<table><tr><th>capacity</th>";
  for (double p : percents) table += "<th>" + fmt("%g%%", p) + "</th>";
  table += "</tr>\n";
  for (const std::string name : {"lru", "fifo", "lfu", "belady", "layer-cycle"}) {
    auto res = simulate_cache_named(name, t, caps);
    svg_series s{name == "belady" ? "belady (optimal bound)" : name, {}, {}, true, true};
    table += "<tr><td>" + name + "</td>";
    for (std::size_t i = 0; i < res.size(); ++i) {
      s.x.push_back(percents[i]);
      s.y.push_back(100.0 * res[i].hit_rate());
      table += "<td>" + fmt("%.1f", 100.0 * res[i].hit_rate()) + "</td>";
    }
    table += "</tr>\n";
    chart.series.push_back(std::move(s));
  }
  table += "</table>\n";
  return chart.render();
}

/// Importance and activation captured against hot VRAM, from pareto rows.
inline std::string report_pareto(const nlohmann::json& doc, const std::string& title) {
  svg_chart chart;
  chart.title = title;
  chart.x_label = "estimated hot VRAM (GiB)";
  chart.y_label = "captured (%)";
  for (const char* type : {"global_experts", "layer_expert_cells"}) {
    svg_series imp{std::string(type) + ": importance", {}, {}, true, true};
    svg_series act{std::string(type) + ": activation", {}, {}, true, true};
    for (const auto& r : doc.at("rows")) {
      if (r.value("policy_type", "") != type) continue;
      const double x = r.at("estimated_hot_vram_gib").get<double>();
      if (r.contains("combined_importance_captured_pct") && r["combined_importance_captured_pct"].is_number()) {
        imp.x.push_back(x);
        imp.y.push_back(r["combined_importance_captured_pct"].get<double>());
      }
      if (r.contains("combined_activation_captured_pct") && r["combined_activation_captured_pct"].is_number()) {
        act.x.push_back(x);
        act.y.push_back(r["combined_activation_captured_pct"].get<double>());
      }
    }
    if (!imp.x.empty()) chart.series.push_back(imp);
    if (!act.x.empty()) chart.series.push_back(act);
  }
  return chart.render();
}

/// A run row measured a speed: not a bound from the simulator ("measured": false, Belady).
inline bool run_row_has_speed(const nlohmann::json& r) {
  return r.value("measured", true) && r.contains("tokens_per_s") && r["tokens_per_s"].is_number();
}

/// Tokens per second per policy of an offload run, as horizontal bars. A bound without a speed
/// (Belady) gets no bar: its row says it is a bound and gives its hit rate. The label column is
/// as wide as the longest label.
inline std::string report_run_bars(const nlohmann::json& run, const std::string& title) {
  const auto& rows = run.at("policies");
  double mx = 0;
  std::size_t longest = 0;
  for (const auto& r : rows) {
    if (run_row_has_speed(r)) mx = std::max(mx, r.at("tokens_per_s").get<double>());
    longest = std::max(longest, r.value("name", std::string()).size());
  }
  // 12px sans-serif averages under 7px a character; 16px of margin on the left.
  const double bar_h = 26, left = std::max(190.0, 16 + 7.0 * static_cast<double>(longest)), top = 44;
  const double width = left + 570;
  const double h = top + bar_h * static_cast<double>(rows.size()) + 30;
  std::string o = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"bars\" width=\"" + fmt("%.0f", width) +
                  "\" height=\"" + fmt("%.0f", h) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o += "<text x=\"" + fmt("%.0f", width / 2) + "\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">" +
       html_escape(title) + "</text>\n";
  std::size_t i = 0;
  for (const auto& r : rows) {
    const double y = top + bar_h * static_cast<double>(i++);
    o += "<text x=\"" + fmt("%.0f", left - 8) + "\" y=\"" + fmt("%.1f", y + 17) + "\" text-anchor=\"end\">" +
         html_escape(r.at("name").get<std::string>()) + "</text>\n";
    if (!run_row_has_speed(r)) {
      std::string note = r.contains("why") ? "not feasible" : "bound, no speed";
      if (r.contains("hit_rate") && r["hit_rate"].is_number())
        note += fmt(" (hit rate %.1f%%)", 100.0 * r["hit_rate"].get<double>());
      o += "<text class=\"bound\" x=\"" + fmt("%.0f", left) + "\" y=\"" + fmt("%.1f", y + 17) +
           "\" fill=\"#666\" font-style=\"italic\">" + note + "</text>\n";
      continue;
    }
    const double v = r.at("tokens_per_s").get<double>();
    const double bw = mx > 0 ? (width - left - 110) * v / mx : 0;
    o += "<rect x=\"" + fmt("%.0f", left) + "\" y=\"" + fmt("%.1f", y + 4) + "\" width=\"" + fmt("%.1f", std::max(bw, 1.0)) +
         "\" height=\"" + fmt("%.0f", bar_h - 8) + "\" fill=\"#1f77b4\"/>\n";
    o += "<text x=\"" + fmt("%.1f", left + bw + 6) + "\" y=\"" + fmt("%.1f", y + 17) + "\">" + fmt("%.1f tok/s", v) +
         "</text>\n";
  }
  o += "</svg>\n";
  return o;
}

inline std::string report_verdict(const std::vector<layer_counts>& layers) {
  try {
    return concentration_verdict(analyze_concentration(layers));
  } catch (const error& e) {
    return e.message();
  }
}

}  // namespace detail

/// Renders the page. Throws moeroute::error when an input lacks what its section needs.
inline std::string render_report_html(const report_inputs& in) {
  using detail::html_escape;
  std::string body;
  int charts = 0;
  for (const auto& [name, t] : in.traces) {
    const auto counts = trace_activation_counts(t);
    body += "<section><h2>Routing trace: " + html_escape(name) + "</h2>\n<p>" + std::to_string(t.size()) +
            " records, " + std::to_string(t.num_accesses()) + " expert accesses, " +
            std::to_string(t.num_layers()) + " layers x " + std::to_string(t.num_experts()) +
            " experts.</p>\n<p class=\"verdict\">" + html_escape(detail::report_verdict(counts)) + "</p>\n";
    body += detail::report_heatmap(counts, "Routing counts per layer and expert");
    body += detail::report_coverage(counts, "Experts needed for a routing coverage");
    std::string table;
    body += detail::report_hit_rates(t, in.capacity_percents, "Hit rate against cache capacity (global cache)", table);
    body += "<h3>Hit rate (%) by policy and capacity</h3>\n" + table + "</section>\n";
    charts += 3;
  }
  for (const auto& [name, counts] : in.counts) {
    body += "<section><h2>Expert counts: " + html_escape(name) + "</h2>\n<p class=\"verdict\">" +
            html_escape(detail::report_verdict(counts)) + "</p>\n";
    body += detail::report_heatmap(counts, "Routing counts per layer and expert");
    body += detail::report_coverage(counts, "Experts needed for a routing coverage");
    body += "</section>\n";
    charts += 2;
  }
  for (const auto& [name, doc] : in.pareto) {
    MOEROUTE_CHECK(doc.is_object() && doc.contains("rows") && doc["rows"].is_array(), errc::bad_input, name,
                   ": not a pareto comparison (no 'rows' array)");
    body += "<section><h2>Residency policies: " + html_escape(name) + "</h2>\n";
    body += detail::report_pareto(doc, "Captured importance and activation against hot VRAM");
    body += "</section>\n";
    ++charts;
  }
  for (const auto& [name, run] : in.runs) {
    MOEROUTE_CHECK(run.is_object() && run.contains("policies") && run["policies"].is_array(), errc::bad_input,
                   name, ": not an offload run result (no 'policies' array)");
    body += "<section><h2>Offload run: " + html_escape(name) + "</h2>\n";
    body += detail::report_run_bars(run, "Tokens per second by cache policy");
    body += "<table><tr><th>policy</th><th>tokens/s</th><th>hit rate</th><th>MiB uploaded / token</th></tr>\n";
    for (const auto& r : run["policies"])
      body += "<tr><td>" + html_escape(r.value("name", "")) + "</td><td>" +
              (detail::run_row_has_speed(r) ? detail::fmt("%.1f", r["tokens_per_s"].get<double>()) : "bound") +
              "</td><td>" +
              detail::fmt("%.1f%%", 100.0 * r.value("hit_rate", 0.0)) + "</td><td>" +
              detail::fmt("%.2f", r.value("bytes_per_token", 0.0) / 1048576.0) + "</td></tr>\n";
    body += "</table></section>\n";
    ++charts;
  }
  for (const auto& [name, plan] : in.plans) {
    MOEROUTE_CHECK(plan.is_object() && plan.contains("policies") && plan["policies"].is_array(), errc::bad_input,
                   name, ": not a plan result (no 'policies' array)");
    body += "<section><h2>Offload plan: " + html_escape(name) + "</h2>\n<p>Predicted decode tokens/s of the MoE FFN "
            "(moeroute plan; docs/plan.md gives the cost model). Routing: " +
            html_escape(plan.value("trace_mapping", std::string())) + ".</p>\n";
    body += detail::report_run_bars(plan, "Predicted tokens per second by strategy");
    body += "<table><tr><th>strategy</th><th>tokens/s</th><th>on device</th><th>uploaded</th><th>on CPU</th>"
            "<th>MiB uploaded / token</th><th>detail</th></tr>\n";
    for (const auto& r : plan["policies"]) {
      const double acc = std::max(1.0, r.value("accesses", 0.0));
      body += "<tr><td>" + html_escape(r.value("name", "")) + "</td><td>" +
              (detail::run_row_has_speed(r) ? detail::fmt("%.1f", r["tokens_per_s"].get<double>()) : "not feasible") +
              "</td><td>" + detail::fmt("%.1f%%", 100.0 * r.value("device_hits", 0.0) / acc) + "</td><td>" +
              detail::fmt("%.1f%%", 100.0 * r.value("uploads", 0.0) / acc) + "</td><td>" +
              detail::fmt("%.1f%%", 100.0 * r.value("cpu_experts", 0.0) / acc) + "</td><td>" +
              detail::fmt("%.2f", r.value("bytes_per_token", 0.0) / 1048576.0) + "</td><td>" +
              html_escape(r.value("feasible", true) ? r.value("detail", "") : r.value("why", "")) + "</td></tr>\n";
    }
    body += "</table></section>\n";
    ++charts;
  }
  MOEROUTE_CHECK(charts > 0, errc::invalid_argument, "report: nothing to show (give --trace, --imatrix, "
                 "--container, --pareto or --run)");
  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + html_escape(in.title) +
         "</title>\n<style>body{font-family:sans-serif;max-width:1000px;margin:1em auto;color:#222}"
         "section{border-top:1px solid #ccc;margin-top:1.5em}svg{display:block;margin:1em 0}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
         ".verdict{font-weight:bold}</style></head>\n<body><h1>" + html_escape(in.title) + "</h1>\n" + body +
         "</body></html>\n";
}

}  // namespace moeroute::cli
