// moeroute placement: expert-parallel placement (EPLB or moeroute's) in the files SGLang and vLLM
// load, and `placement eval`: the replay of a placement against a routing trace.
// Contract: issue 17 and docs/placement.md. Bad input or flags throw moeroute::error (exit 2).

#include <cstdint>
#include <memory>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "moeroute/io/container_trace.hpp"
#include "moeroute/io/gguf.hpp"
#include "moeroute/io/imatrix.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/io/trace_counts.hpp"
#include "moeroute/placement/eplb.hpp"
#include "moeroute/placement/formats.hpp"
#include "moeroute/placement/load_sources.hpp"
#include "moeroute/placement/replay.hpp"
#include "moeroute/placement/step_balance.hpp"

namespace {

using moeroute::errc;

struct placement_args {
  std::string trace, counts, imatrix, algorithm = "moeroute", format = "moeroute", output;
  int gpus = 0, nodes = 1, groups = 1, redundant = -1, experts = 0;
  long long batch = 64;
  bool first_half = false, second_half = false, mass = false;
};

struct placement_eval_args {
  std::string trace, placement, dispatch = "round-robin", output = "-";
  int gpus = 0;
  long long batch = 64;
  bool first_half = false, second_half = false;
};

moeroute::trace_half placement_half(bool first, bool second) {
  MOEROUTE_CHECK(!(first && second), errc::invalid_argument, "--first-half and --second-half exclude each other");
  return first ? moeroute::trace_half::first : second ? moeroute::trace_half::second : moeroute::trace_half::all;
}

const char* placement_half_name(moeroute::trace_half h) {
  return h == moeroute::trace_half::first ? "first" : h == moeroute::trace_half::second ? "second" : "all";
}

// A gpu-container trace JSON (one object with "layers") rather than routing-trace JSONL?
bool placement_is_container(const std::string& text) {
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  return !j.is_discarded() && j.is_object() && j.contains("layers") && !j.contains("experts");
}

void run_placement(const placement_args& a) {
  const int sources = !a.trace.empty() + !a.counts.empty() + !a.imatrix.empty();
  MOEROUTE_CHECK(sources == 1, errc::invalid_argument, "give exactly one of --trace, --counts, --imatrix");
  MOEROUTE_CHECK(a.gpus >= 1, errc::invalid_argument, "--gpus is required (at least 1)");
  MOEROUTE_CHECK(a.redundant >= 0, errc::invalid_argument, "--redundant is required (>= 0)");
  MOEROUTE_CHECK(!a.output.empty(), errc::invalid_argument, "-o is required");
  MOEROUTE_CHECK(a.batch >= 1, errc::invalid_argument, "--batch must be at least 1");
  MOEROUTE_CHECK(a.algorithm == "eplb" || a.algorithm == "eplb-global" || a.algorithm == "moeroute",
                 errc::invalid_argument, "--algorithm: '", a.algorithm, "' is not eplb, eplb-global or moeroute");
  MOEROUTE_CHECK(a.format == "sglang" || a.format == "vllm" || a.format == "moeroute", errc::invalid_argument,
                 "--format: '", a.format, "' is not sglang, vllm or moeroute");
  const auto half = placement_half(a.first_half, a.second_half);
  MOEROUTE_CHECK(half == moeroute::trace_half::all || !a.trace.empty(), errc::invalid_argument,
                 "--first-half/--second-half need --trace (a routing-trace JSONL)");
  MOEROUTE_CHECK(!a.mass || !a.trace.empty(), errc::invalid_argument, "--mass needs --trace");

  moeroute::routing_trace build;
  moeroute::load_table load;
  nlohmann::ordered_json source;
  std::string input;
  if (!a.trace.empty()) {
    const std::string text = moeroute::read_text_file(a.trace);
    if (placement_is_container(text)) {
      MOEROUTE_CHECK(half == moeroute::trace_half::all && !a.mass, errc::invalid_argument, a.trace,
                     ": a gpu-container trace has no per-token records (no --first-half/--second-half/--mass)");
      const auto ct = moeroute::parse_container_trace_json(text, a.trace);
      load = moeroute::load_table_from_counts(ct.layers, a.experts, a.trace);
      source["format"] = "gpu-container-trace";
    } else {
      std::istringstream in(text);
      const auto full = moeroute::parse_routing_trace_jsonl(in, a.trace);
      MOEROUTE_CHECK(full.num_accesses() > 0, errc::bad_input, a.trace, ": trace has no expert accesses");
      const int E = a.experts > 0 ? a.experts : full.num_experts();
      MOEROUTE_CHECK(E >= full.num_experts(), errc::bad_input, a.trace, ": trace names expert ",
                     full.num_experts() - 1, " but --experts is ", a.experts);
      build = moeroute::routing_trace_half(full, half);
      MOEROUTE_CHECK(build.num_accesses() > 0, errc::bad_input, a.trace, ": the ", placement_half_name(half),
                     " half has no expert accesses");
      try {
        load = moeroute::load_table_from_counts(
            a.mass ? moeroute::trace_weight_mass(build, E) : moeroute::trace_activation_counts(build, E), E, a.trace);
      } catch (const moeroute::error& e) {
        moeroute::detail::fail(e.code(), a.trace, ": ", e.message());
      }
      source["format"] = "routing-trace-jsonl";
      source["half"] = placement_half_name(half);
      source["load"] = a.mass ? "router-weight mass" : "activation counts";
    }
    input = a.trace;
  } else if (!a.counts.empty()) {
    load = moeroute::read_logical_count_json(a.counts);
    MOEROUTE_CHECK(a.experts <= 0 || load[0].size() == static_cast<std::size_t>(a.experts), errc::bad_input,
                   a.counts, ": logical_count has ", load[0].size(), " experts per layer but --experts is ", a.experts);
    source["format"] = "sglang-logical-count";
    input = a.counts;
  } else {
    const auto g = moeroute::gguf_file::open(a.imatrix);
    load = moeroute::load_table_from_counts(moeroute::imatrix_expert_counts(moeroute::read_imatrix(g)), a.experts,
                                            a.imatrix);
    source["format"] = "imatrix-gguf";
    input = a.imatrix;
  }
  source["path"] = input;
  const int E = static_cast<int>(load[0].size());

  moeroute::placement_options o;
  o.gpus = a.gpus;
  o.nodes = a.nodes;
  o.groups = a.groups;
  o.redundant = a.redundant;
  moeroute::expert_placement p;
  if (a.algorithm == "eplb") {
    p = moeroute::eplb_hierarchical(load, E, o);
  } else if (a.algorithm == "eplb-global") {
    p = moeroute::eplb_global(load, E, o);
  } else {
    moeroute::check_eplb_options(E, o, a.nodes > 1);
    moeroute::step_balance_options so;
    so.batch = static_cast<std::size_t>(a.batch);
    p = moeroute::step_balanced_placement(build, load, E, o, so);
    source["batch"] = a.batch;
  }
  moeroute::check_placement(p);

  nlohmann::ordered_json out;
  if (a.format == "sglang") {
    out = moeroute::placement_to_sglang_json(p);
  } else if (a.format == "vllm") {
    out = moeroute::placement_to_vllm_json(p);
  } else {
    moeroute::placement_record_info info;
    info.algorithm = a.algorithm;
    info.groups = a.groups;
    info.load = load;
    info.source = source;
    out = moeroute::placement_to_moeroute_json(p, info);
  }
  moeroute::cli::write_output(a.output, out.dump() + "\n");
}

nlohmann::ordered_json placement_stats_json(const moeroute::replay_stats& s, bool with_layer) {
  nlohmann::ordered_json j;
  if (with_layer) j["layer"] = s.layer;
  j["balancedness"] = s.balancedness;
  j["max_gpu_load"] = s.max_gpu_load;
  j["mean_gpu_load"] = s.mean_gpu_load;
  j["peak_gpu_load"] = s.peak_gpu_load;
  j["tokens_off_gpu"] = s.tokens_off_gpu;
  j["steps"] = s.steps;
  j["tokens"] = s.tokens;
  j["accesses"] = s.accesses;
  return j;
}

void placement_run_eval(const placement_eval_args& a) {
  MOEROUTE_CHECK(!a.trace.empty(), errc::invalid_argument, "--trace is required");
  MOEROUTE_CHECK(!a.placement.empty(), errc::invalid_argument, "--placement is required");
  MOEROUTE_CHECK(a.batch >= 1, errc::invalid_argument, "--batch must be at least 1");
  MOEROUTE_CHECK(a.dispatch == "round-robin" || a.dispatch == "least-loaded", errc::invalid_argument,
                 "--dispatch: '", a.dispatch, "' is not round-robin or least-loaded");
  MOEROUTE_CHECK(a.gpus >= 0, errc::invalid_argument, "--gpus must be at least 1");
  const auto half = placement_half(a.first_half, a.second_half);
  moeroute::placement_format fmt{};
  const auto p = moeroute::read_placement_json(a.placement, a.gpus, &fmt);
  const std::string text = moeroute::read_text_file(a.trace);
  MOEROUTE_CHECK(!placement_is_container(text), errc::invalid_argument, a.trace,
                 ": placement eval needs a routing-trace JSONL (per-token records), not counts");
  std::istringstream in(text);
  const auto t = moeroute::routing_trace_half(moeroute::parse_routing_trace_jsonl(in, a.trace), half);
  moeroute::replay_options o;
  o.batch = static_cast<std::size_t>(a.batch);
  o.dispatch = a.dispatch == "round-robin" ? moeroute::replica_dispatch::round_robin
                                           : moeroute::replica_dispatch::least_loaded;
  moeroute::replay_result r;
  try {
    r = moeroute::replay_placement(p, t, o);
  } catch (const moeroute::error& e) {
    moeroute::detail::fail(e.code(), a.trace, " with ", a.placement, ": ", e.message());
  }
  nlohmann::ordered_json out;
  out["trace"] = a.trace;
  out["placement"] = a.placement;
  out["placement_format"] = fmt == moeroute::placement_format::sglang ? "sglang"
                            : fmt == moeroute::placement_format::vllm ? "vllm"
                                                                       : "moeroute";
  out["half"] = placement_half_name(half);
  out["batch"] = a.batch;
  out["dispatch"] = a.dispatch;
  out["num_gpus"] = p.num_gpus;
  out["num_logical_experts"] = p.num_logical;
  out["num_physical_experts"] = p.num_physical();
  const auto total = placement_stats_json(r.total, false);
  for (auto it = total.begin(); it != total.end(); ++it) out[it.key()] = it.value();
  out["per_layer"] = nlohmann::ordered_json::array();
  for (const auto& s : r.per_layer) out["per_layer"].push_back(placement_stats_json(s, true));
  moeroute::cli::write_output(a.output, out.dump(2) + "\n");
}

void setup_placement(CLI::App& app, int& /*exit_code*/) {
  CLI::App* pl = app.add_subcommand(
      "placement", "Expert-parallel placement (EPLB or moeroute's) as SGLang/vLLM/moeroute JSON; 'eval' replays one");
  pl->require_subcommand(0, 1);
  auto a = std::make_shared<placement_args>();
  pl->add_option("--trace", a->trace, "Routing trace JSONL (or gpu-container trace JSON)");
  pl->add_option("--counts", a->counts, "SGLang expert-distribution JSON with logical_count");
  pl->add_option("--imatrix", a->imatrix, "llama.cpp imatrix GGUF of an MoE model");
  pl->add_option("--gpus", a->gpus, "GPU count G (physical experts E + R must divide by it)")
      ->check(moeroute::cli::int_in(1, 1 << 20));
  pl->add_option("--nodes", a->nodes, "Node count N (divides G and, for eplb, the groups)")
      ->check(moeroute::cli::int_in(1, 1 << 20));
  pl->add_option("--groups", a->groups, "Expert groups GR of group-limited routing (divides E)")
      ->check(moeroute::cli::int_in(1, 1 << 20));
  pl->add_option("--redundant", a->redundant, "Redundant experts R")->check(moeroute::cli::int_in(0, 1 << 20));
  pl->add_option("--experts", a->experts, "Logical experts E (default: from the input)")
      ->check(moeroute::cli::int_in(1, 1 << 20));
  pl->add_option("--algorithm", a->algorithm, "eplb | eplb-global | moeroute (default moeroute)");
  pl->add_option("--format", a->format, "sglang | vllm | moeroute (default moeroute)");
  pl->add_option("--batch", a->batch, "Tokens per batch step that moeroute's algorithm balances (default 64)")
      ->check(moeroute::cli::int_in(1, 1 << 30));
  pl->add_flag("--mass", a->mass, "Load = router-weight mass of the trace instead of activation counts");
  pl->add_flag("--first-half", a->first_half, "Build from the first half of each layer's tokens");
  pl->add_flag("--second-half", a->second_half, "Build from the second half of each layer's tokens");
  pl->add_option("-o,--output", a->output, "Output file");
  pl->callback([a, pl] {
    if (pl->got_subcommand("eval")) return;
    run_placement(*a);
  });

  CLI::App* ev = pl->add_subcommand("eval", "Replay a routing trace against a placement: per-step GPU balance");
  auto e = std::make_shared<placement_eval_args>();
  ev->add_option("--trace", e->trace, "Routing trace JSONL")->required();
  ev->add_option("--placement", e->placement, "Placement file (SGLang, vLLM or moeroute JSON)")->required();
  ev->add_option("--batch", e->batch, "Tokens per batch step (default 64)")->check(moeroute::cli::int_in(1, 1 << 30));
  ev->add_option("--dispatch", e->dispatch, "round-robin (vLLM's rule) | least-loaded");
  ev->add_option("--gpus", e->gpus, "GPU count (required for SGLang/vLLM files)")
      ->check(moeroute::cli::int_in(1, 1 << 20));
  ev->add_flag("--first-half", e->first_half, "Replay the first half of each layer's tokens");
  ev->add_flag("--second-half", e->second_half, "Replay the second half of each layer's tokens");
  ev->add_option("-o,--output", e->output, "Output JSON (default stdout)");
  ev->callback([e] { placement_run_eval(*e); });
}

}  // namespace

MOEROUTE_CLI_COMMAND("placement", setup_placement);
