// moeroute cache-sim: replay a routing trace through an expert cache and report hit rates.
// Contract: issue 6 ("moeroute cache-sim"). Bad input or flags throw moeroute::error (exit 2).

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "svg.hpp"
#include "moeroute/cache/compare.hpp"
#include "moeroute/cache/simulate.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/residency/atx_policy.hpp"
#include "moeroute/residency/residency_set.hpp"

namespace {

struct cache_sim_args {
  std::string trace, policy, capacity, scope = "global", pin, cell_bytes = "0", output = "-", svg;
  bool protect_batch = false, curve = false, compare = false;
  std::vector<std::string> traces;  // --trace, once per file (several only with --compare)
  std::string percent = "1,2,5,10,20,40,60,80";
};

// Pinned cells of an ATX policy for this trace: keep_layer_experts when present, else every
// keep_experts id in every layer the trace names; plus whole keep_layers. The shape grows to hold
// cells the trace never touches (they still take capacity).
moeroute::residency_set cache_sim_pins(const moeroute::atx_policy& p, const moeroute::routing_trace& t) {
  int L = t.num_layers(), E = t.num_experts();
  for (const auto& u : p.keep_layer_experts) {
    L = std::max(L, u.layer + 1);
    E = std::max(E, u.expert + 1);
  }
  if (!p.has_layer_experts())
    for (int e : p.keep_experts) E = std::max(E, e + 1);
  for (int l : p.keep_layers) L = std::max(L, l + 1);
  if (p.has_layer_experts()) {
    moeroute::atx_policy cells_only = p;
    cells_only.keep_layers.clear();
    auto s = moeroute::atx_policy_cells(cells_only, L, E);
    for (int l : p.keep_layers) s.insert_layer(l);
    return s;
  }
  moeroute::residency_set s(L, E);
  std::vector<char> present(static_cast<std::size_t>(L), 0);
  for (auto l : t.layer) present[static_cast<std::size_t>(l)] = 1;
  for (std::size_t i = 0; i < p.keep_experts.size(); ++i) {
    const int e = p.keep_experts[i];
    MOEROUTE_CHECK(e >= 0, moeroute::errc::bad_input, "--pin: keep_experts[", i, "] = ", e,
                   " is negative");
    for (int l = 0; l < L; ++l)
      if (present[static_cast<std::size_t>(l)]) s.insert(l, e);
  }
  for (std::size_t i = 0; i < p.keep_layers.size(); ++i) {
    MOEROUTE_CHECK(p.keep_layers[i] >= 0, moeroute::errc::bad_input, "--pin: keep_layers[", i,
                   "] = ", p.keep_layers[i], " is negative");
    s.insert_layer(p.keep_layers[i]);
  }
  return s;
}

nlohmann::ordered_json cache_sim_curve_json(const moeroute::cache_hit_curve& c, std::size_t lo) {
  nlohmann::ordered_json j;
  j["capacities"] = nlohmann::ordered_json::array();
  j["hits"] = nlohmann::ordered_json::array();
  j["hit_rates"] = nlohmann::ordered_json::array();
  for (std::size_t cap = lo; cap < c.hits.size(); ++cap) {
    j["capacities"].push_back(cap);
    j["hits"].push_back(c.hits[cap]);
    j["hit_rates"].push_back(c.hit_rate(cap));
  }
  return j;
}

// A chart of hit rate (%) against capacity: the OPT and LRU curves and the policy's results.
std::string cache_sim_svg(const std::string& title, const moeroute::cache_hit_curve& lru,
                          const moeroute::cache_hit_curve& opt, std::size_t lo, const std::string& policy,
                          const std::vector<moeroute::cache_sim_result>& results) {
  moeroute::cli::svg_chart chart;
  chart.title = title;
  chart.x_label = "capacity (cells)";
  chart.y_label = "hit rate (%)";
  auto curve = [&](const moeroute::cache_hit_curve& c, const std::string& name) {
    moeroute::cli::svg_series s;
    s.name = name;
    s.markers = false;
    for (std::size_t cap = lo; cap < c.hits.size(); ++cap) {
      s.x.push_back(static_cast<double>(cap));
      s.y.push_back(100.0 * c.hit_rate(cap));
    }
    return s;
  };
  chart.series.push_back(curve(opt, "belady (OPT)"));
  chart.series.push_back(curve(lru, "lru (Mattson)"));
  moeroute::cli::svg_series mine;
  mine.name = policy + " (--capacity)";
  mine.line = false;
  std::vector<moeroute::cache_sim_result> sorted = results;
  std::sort(sorted.begin(), sorted.end(), [](const auto& x, const auto& y) { return x.capacity < y.capacity; });
  for (const auto& r : sorted) {
    mine.x.push_back(static_cast<double>(r.capacity));
    mine.y.push_back(100.0 * r.hit_rate());
  }
  chart.series.push_back(std::move(mine));
  return chart.render();
}

std::string cache_sim_pct(double x) {
  if (std::isnan(x)) return "n/a";
  char b[32];
  std::snprintf(b, sizeof b, "%.0f%%", 100.0 * x);
  return b;
}

std::string cache_sim_stem(const std::string& path) {
  const auto slash = path.find_last_of("/\\");
  std::string s = slash == std::string::npos ? path : path.substr(slash + 1);
  const auto dot = s.rfind(".jsonl");
  return dot == std::string::npos ? s : s.substr(0, dot);
}

// "whole (first / second)" of three counts or three closures.
std::string cache_sim_triple(const std::string& w, const std::string& f, const std::string& s) {
  return w + " (" + f + " / " + s + ")";
}
std::string cache_sim_count(std::uint64_t x) { return std::to_string(x); }

// Gap closure of entry e against the LRU and Belady entries of its row, in loads or in stalls.
std::string cache_sim_closure(const moeroute::cache_compare_row& r, std::size_t k, bool stalls) {
  const auto& e = r.entries[k];
  const auto& L = r.entries.front();
  const auto& B = r.entries.back();
  auto one = [stalls](const moeroute::cache_sim_result& l, const moeroute::cache_sim_result& x,
                      const moeroute::cache_sim_result& b) {
    return stalls ? moeroute::cache_gap_closure(l.stalls(), x.stalls(), b.stalls())
                  : moeroute::cache_gap_closure(l.loads(), x.loads(), b.loads());
  };
  return cache_sim_triple(cache_sim_pct(one(L.full, e.full, B.full)),
                          cache_sim_pct(one(L.first_half, e.first_half, B.first_half)),
                          cache_sim_pct(one(L.held_out, e.held_out, B.held_out)));
}

// --compare: every comparison policy x trace x scope x capacity as Markdown tables (docs/cache.md),
// then the recommended policies at 10% of the cells (when 10 is among --percent) against the goal.
void run_cache_compare(const cache_sim_args& a) {
  using moeroute::errc;
  std::vector<double> percents;
  for (double p : moeroute::cli::parse_list<double>(a.percent, "--percent")) {
    MOEROUTE_CHECK(p > 0 && p <= 100, errc::invalid_argument, "--percent: ", p, " is not in (0, 100]");
    percents.push_back(p);
  }
  std::vector<moeroute::routing_trace> traces;
  for (const auto& path : a.traces) traces.push_back(moeroute::read_routing_trace_jsonl(path));
  const auto& pol = moeroute::cache_compare_policies();
  const std::size_t rec = static_cast<std::size_t>(
      std::find(pol.begin(), pol.end(), "recommended") - pol.begin());
  const std::size_t pre = static_cast<std::size_t>(
      std::find(pol.begin(), pol.end(), "recommended-prefetch") - pol.begin());
  std::string md, summary;
  for (std::size_t ti = 0; ti < traces.size(); ++ti) {
    const auto& t = traces[ti];
    for (const auto scope : {moeroute::cache_scope::global, moeroute::cache_scope::per_layer}) {
      const auto rows = moeroute::cache_compare(t, scope, percents);
      const std::string title = cache_sim_stem(a.traces[ti]) + ", " + moeroute::cache_scope_name(scope);
      md += "#### " + title + " (" + std::to_string(moeroute::cache_compare_cells(t, scope)) + " cells" +
            (scope == moeroute::cache_scope::per_layer ? " per layer" : "") + ")\n\n";
      md += "| % cells | capacity | LRU loads | Belady loads |";
      for (const auto& name : pol)
        if (name != "lru" && name != "belady") md += " " + name + " |";
      md += " recommended-prefetch stalls |\n|---|---|---|---|";
      for (std::size_t i = 0; i + 2 < pol.size(); ++i) md += "---|";
      md += "---|\n";
      for (const auto& r : rows) {
        const auto& L = r.entries.front();
        const auto& B = r.entries.back();
        char head[48];
        std::snprintf(head, sizeof head, "| %g | %zu | ", r.percent, r.capacity);
        md += head +
              cache_sim_triple(cache_sim_count(L.full.loads()), cache_sim_count(L.first_half.loads()),
                               cache_sim_count(L.held_out.loads())) +
              " | " +
              cache_sim_triple(cache_sim_count(B.full.loads()), cache_sim_count(B.first_half.loads()),
                               cache_sim_count(B.held_out.loads())) +
              " |";
        for (std::size_t k = 1; k + 1 < pol.size(); ++k) md += " " + cache_sim_closure(r, k, false) + " |";
        md += " " + cache_sim_closure(r, pre, true) + " |\n";
        if (r.percent == 10.0)
          summary += "| " + title + " | " + std::to_string(r.capacity) + " | " + cache_sim_closure(r, rec, false) +
                     " | " + cache_sim_closure(r, pre, false) + " | " + cache_sim_closure(r, pre, true) + " |\n";
      }
      md += "\nrecommended - LRU loads, worst over every 1% step from 1% to 80% of the cells:";
      for (int part = 0; part < 3; ++part) {
        std::size_t at = 0;
        const auto worst = moeroute::cache_compare_worst_vs_lru("recommended", t, scope, 1, 80, 1, at, part);
        md += std::string(part == 0 ? " whole trace " : part == 1 ? ", first half " : ", second half ") +
              (worst > 0 ? "+" : "") + std::to_string(worst) + " (capacity " + std::to_string(at) + ")";
      }
      md += "\n\n";
    }
  }
  if (!summary.empty())
    md += "#### At 10% of the cells: share of the LRU-to-Belady gap closed, whole trace (first half / second "
          "half)\n\n| trace, scope | capacity | recommended, loads | recommended-prefetch, loads | "
          "recommended-prefetch, stalls |\n|---|---|---|---|---|\n" +
          summary + "\n";
  moeroute::cli::write_output(a.output, md);
}

void run_cache_sim(const cache_sim_args& a) {
  using moeroute::errc;
  MOEROUTE_CHECK(!a.traces.empty(), errc::invalid_argument, "--trace is required");
  if (a.compare) {
    MOEROUTE_CHECK(a.policy.empty() && a.capacity.empty(), errc::invalid_argument,
                   "--compare runs every policy at --percent of the cells; drop --policy and --capacity");
    run_cache_compare(a);
    return;
  }
  MOEROUTE_CHECK(a.traces.size() == 1, errc::invalid_argument, "--trace: one trace (several only with --compare)");
  MOEROUTE_CHECK(!a.policy.empty(), errc::invalid_argument, "--policy is required");
  MOEROUTE_CHECK(!a.capacity.empty(), errc::invalid_argument, "--capacity is required");
  auto names = moeroute::cache_policy_names();
  names.push_back("recommended-prefetch");
  std::string known;
  for (const auto& n : names) known += (known.empty() ? "" : "|") + n;
  MOEROUTE_CHECK(std::find(names.begin(), names.end(), a.policy) != names.end(), errc::invalid_argument,
                 "--policy: unknown policy '", a.policy, "' (expected ", known, ")");
  MOEROUTE_CHECK(a.scope == "global" || a.scope == "per-layer", errc::invalid_argument, "--scope: '",
                 a.scope, "' is not global or per-layer");
  std::vector<std::size_t> caps;
  for (long long c : moeroute::cli::parse_list<long long>(a.capacity, "--capacity")) {
    MOEROUTE_CHECK(c >= 1, errc::invalid_argument, "--capacity: ", c, " must be at least 1");
    caps.push_back(static_cast<std::size_t>(c));
  }
  const auto cb = moeroute::cli::parse_list<long long>(a.cell_bytes, "--cell-bytes");
  MOEROUTE_CHECK(cb.size() == 1 && cb[0] >= 0, errc::invalid_argument, "--cell-bytes: '", a.cell_bytes,
                 "' must be one number >= 0");
  moeroute::cli::output_files outs;
  if (!a.svg.empty()) outs.declare("--svg", a.svg);
  outs.declare("--output", a.output);

  const auto trace = moeroute::read_routing_trace_jsonl(a.traces[0]);
  moeroute::cache_sim_options o;
  o.scope = a.scope == "global" ? moeroute::cache_scope::global : moeroute::cache_scope::per_layer;
  o.cell_bytes = static_cast<std::uint64_t>(cb[0]);
  o.protect_batch = a.protect_batch;
  if (!a.pin.empty()) o.pinned = cache_sim_pins(moeroute::read_atx_policy(a.pin), trace);

  std::vector<moeroute::cache_sim_result> results;
  try {
    results = moeroute::simulate_cache_any(a.policy, trace, caps, o);
  } catch (const moeroute::error& e) {
    if (!a.pin.empty() && e.message().find("pinned") != std::string::npos)
      moeroute::detail::fail(e.code(), "--pin ", a.pin, " with --capacity: ", e.message());
    moeroute::detail::fail(e.code(), a.traces[0], ": ", e.message());
  }

  nlohmann::ordered_json out;
  out["policy"] = a.policy;
  out["scope"] = a.scope;
  out["results"] = nlohmann::ordered_json::array();
  for (const auto& r : results) {
    nlohmann::ordered_json j;
    j["capacity"] = r.capacity;
    j["accesses"] = r.accesses;
    j["hits"] = r.hits;
    j["misses"] = r.misses;
    j["hit_rate"] = r.hit_rate();
    j["prefetch_loads"] = r.prefetch_loads;
    j["bytes_loaded"] = r.bytes_loaded;
    j["stalls"] = r.stalls();
    out["results"].push_back(std::move(j));
  }
  if (a.curve || !a.svg.empty()) {
    const std::size_t top = std::max<std::size_t>(moeroute::cache_useful_capacity(trace, o), 1);
    const auto lru = moeroute::lru_hit_curve(trace, top, o);
    const auto opt = moeroute::opt_hit_curve(trace, top, o);
    const std::size_t lo = std::max<std::size_t>(lru.min_capacity, 1);
    if (a.curve) {
      out["lru_curve"] = cache_sim_curve_json(lru, lo);
      out["opt_curve"] = cache_sim_curve_json(opt, lo);
    }
    if (!a.svg.empty())
      outs.set(a.svg, cache_sim_svg("cache-sim " + a.scope + ": " + a.traces[0], lru, opt, lo, a.policy, results));
  }
  outs.set(a.output, out.dump(2) + "\n");
  outs.commit();
}

void setup_cache_sim(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<cache_sim_args>();
  auto* cmd = app.add_subcommand("cache-sim", "Replay a routing trace through an expert cache: hit rates per capacity");
  cmd->add_option("--trace", args->traces, "routing trace JSONL (repeat with --compare)");
  cmd->add_option("--policy", args->policy,
                  "lru|fifo|lfu|belady|layer-cycle|lfru|least-stale|recommended|recommended-prefetch");
  cmd->add_option("--capacity", args->capacity, "cells, N[,N2,...] (per layer with --scope per-layer)");
  cmd->add_flag("--compare", args->compare,
                "Markdown tables: every policy x trace x scope x --percent, loads, stalls, gap closure");
  cmd->add_option("--percent", args->percent, "with --compare: capacities as % of the cells (default 1,2,5,10,20,40,60,80)");
  cmd->add_option("--scope", args->scope, "global (default) or per-layer");
  cmd->add_option("--pin", args->pin, "ATX residency policy whose cells stay pinned");
  cmd->add_option("--cell-bytes", args->cell_bytes, "bytes of one cell, for bytes_loaded (default 0)");
  cmd->add_flag("--protect-batch", args->protect_batch, "never evict a cell of the record being replayed");
  cmd->add_flag("--curve", args->curve, "add the full LRU (Mattson) and OPT (Belady) hit-rate curves");
  cmd->add_option("--svg", args->svg, "write a chart of hit rate against capacity (SVG)");
  cmd->add_option("-o,--output", args->output, "output JSON (default stdout)");
  cmd->callback([args, &exit_code] {
    run_cache_sim(*args);
    exit_code = 0;
  });
}

}  // namespace

MOEROUTE_CLI_COMMAND("cache-sim", setup_cache_sim);
