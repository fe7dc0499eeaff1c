// moeroute cache-sim: replay a routing trace through an expert cache and report hit rates.
// Contract: issue 6 ("moeroute cache-sim"). Bad input or flags throw moeroute::error (exit 2).

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "svg.hpp"
#include "moeroute/cache/simulate.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/residency/atx_policy.hpp"
#include "moeroute/residency/residency_set.hpp"

namespace {

struct cache_sim_args {
  std::string trace, policy, capacity, scope = "global", pin, cell_bytes = "0", output = "-", svg;
  bool protect_batch = false, curve = false;
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

void run_cache_sim(const cache_sim_args& a) {
  using moeroute::errc;
  const auto& names = moeroute::cache_policy_names();
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

  const auto trace = moeroute::read_routing_trace_jsonl(a.trace);
  moeroute::cache_sim_options o;
  o.scope = a.scope == "global" ? moeroute::cache_scope::global : moeroute::cache_scope::per_layer;
  o.cell_bytes = static_cast<std::uint64_t>(cb[0]);
  o.protect_batch = a.protect_batch;
  if (!a.pin.empty()) o.pinned = cache_sim_pins(moeroute::read_atx_policy(a.pin), trace);

  std::vector<moeroute::cache_sim_result> results;
  try {
    results = moeroute::simulate_cache_named(a.policy, trace, caps, o);
  } catch (const moeroute::error& e) {
    if (!a.pin.empty() && e.message().find("pinned") != std::string::npos)
      moeroute::detail::fail(e.code(), "--pin ", a.pin, " with --capacity: ", e.message());
    moeroute::detail::fail(e.code(), a.trace, ": ", e.message());
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
    j["bytes_loaded"] = r.bytes_loaded;
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
      outs.set(a.svg, cache_sim_svg("cache-sim " + a.scope + ": " + a.trace, lru, opt, lo, a.policy, results));
  }
  outs.set(a.output, out.dump(2) + "\n");
  outs.commit();
}

void setup_cache_sim(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<cache_sim_args>();
  auto* cmd = app.add_subcommand("cache-sim", "Replay a routing trace through an expert cache: hit rates per capacity");
  cmd->add_option("--trace", args->trace, "routing trace JSONL")->required();
  cmd->add_option("--policy", args->policy, "lru|fifo|lfu|belady|layer-cycle")->required();
  cmd->add_option("--capacity", args->capacity, "cells, N[,N2,...] (per layer with --scope per-layer)")->required();
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
