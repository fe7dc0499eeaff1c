// moeroute plan: predicted decode tokens/s of the MoE FFN under each offloading strategy, on a
// hardware profile (shipped, a JSON file, or `this` machine measured now). The model comes from a
// GGUF or a --shape; the routing from a trace (mapped onto the model's layers and experts as
// plan/model.hpp says). The prediction is moeroute/plan/predict.hpp; this file parses flags and
// prints.

#include <algorithm>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "moeroute/io/gguf_experts.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/plan/hardware.hpp"
#include "moeroute/plan/model.hpp"
#include "moeroute/plan/predict.hpp"
#include "moeroute/residency/atx_policy.hpp"
#include "moeroute_hardware_profiles.hpp"  // generated: the shipped profiles (share/hardware/*.json)
#include "report.hpp"

#if MOEROUTE_CLI_HAS_VULKAN
#include "moeroute/backends/hardware_probe.hpp"
#endif

namespace moeroute_plan_cmd {

using namespace moeroute;

struct plan_args {
  std::string trace, model, shape, hardware, json, report, pin, save_hardware;
  double vram_mib = 0, threshold = default_prefetch_threshold;
  int max_tokens = 0;
  int cpu_threads = 1;
};

/// Names of the shipped profiles, comma-separated.
inline std::string shipped_names() {
  std::string s;
  for (const auto& p : moeroute_cli_hardware_profiles) s += (s.empty() ? "" : ", ") + std::string(p.name);
  return s;
}

/// The ranked cells of an ATX policy: whole keep_layers first, then keep_layer_experts in file
/// (rank) order, or each keep_experts id (in order) in every layer.
inline std::vector<std::pair<int, int>> plan_pin_order(const atx_policy& p, int L, int E) {
  (void)atx_policy_cells(p, L, E);  // every id inside the model, or errc::bad_input naming it
  std::vector<std::pair<int, int>> out;
  for (int l : p.keep_layers)
    for (int e = 0; e < E; ++e) out.emplace_back(l, e);
  if (p.has_layer_experts())
    for (const auto& c : atx_policy_cell_list(p)) out.push_back(c);
  else
    for (int e : p.keep_experts)
      for (int l = 0; l < L; ++l) out.emplace_back(l, e);
  return out;
}

inline std::string fixed(double v, int prec) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(prec) << v;
  return o.str();
}

inline void run_plan(const plan_args& a) {
  // flags and outputs first
  cli::output_files outs;
  if (!a.json.empty()) outs.declare("-o", a.json);
  if (!a.report.empty()) outs.declare("--report", a.report);
  if (!a.save_hardware.empty()) outs.declare("--save-hardware", a.save_hardware);
  const bool measure = a.hardware == "this";
  hardware_profile hw;
  if (!measure) {
    bool found = false;
    for (const auto& p : moeroute_cli_hardware_profiles)
      if (a.hardware == p.name) {
        hw = parse_hardware_profile(std::string(p.json), std::string("shipped profile ") + p.name);
        found = true;
      }
    if (!found) {
      MOEROUTE_CHECK(a.hardware.find('/') != std::string::npos || a.hardware.find(".json") != std::string::npos,
                     errc::invalid_argument, "--hardware '", a.hardware, "': not a shipped profile (",
                     shipped_names(), "), 'this', nor a path to a .json file");
      hw = read_hardware_profile(a.hardware);
    }
  }

  // model and routing
  plan_model model;
  std::unique_ptr<gguf_expert_weights> gguf;
  if (!a.model.empty()) {
    gguf = std::make_unique<gguf_expert_weights>(gguf_file::open(a.model));
    model = plan_model_from_gguf(*gguf, a.model);
  } else {
    model = parse_plan_shape(a.shape);
  }
  const routing_trace trace = read_routing_trace_jsonl(a.trace);
  MOEROUTE_CHECK(trace.size() > 0, errc::bad_input, a.trace, ": the trace has no records");
  if (model.layers.empty()) {  // --shape without LAYERS: the trace's layer count
    int present = 0;
    std::vector<char> seen(static_cast<std::size_t>(trace.num_layers()), 0);
    for (auto l : trace.layer) present += seen[static_cast<std::size_t>(l)]++ == 0;
    const ffn_layer one = parse_plan_shape(a.shape + ",1").layers.front();
    model.layers.assign(static_cast<std::size_t>(present), one);
  }
  if (model.top_k == 0) {  // a GGUF without expert_used_count: the trace's widest record
    std::uint32_t k = 0;
    for (std::size_t r = 0; r < trace.size(); ++r) k = std::max(k, trace.offsets[r + 1] - trace.offsets[r]);
    model.top_k = static_cast<int>(k);
  }
  const plan_routing rt = plan_map_trace(trace, model.num_layers(), model.num_experts(), model.top_k, a.trace,
                                         static_cast<std::size_t>(a.max_tokens));
  plan_options opt;
  opt.vram_bytes = static_cast<std::uint64_t>(a.vram_mib * 1048576.0);
  opt.prefetch_threshold = a.threshold;
  if (!a.pin.empty()) {
    opt.pin_order = plan_pin_order(read_atx_policy(a.pin), model.num_layers(), model.num_experts());
    opt.pin_source = a.pin;
  }

  if (measure) {
#if MOEROUTE_CLI_HAS_VULKAN
    std::vector<ffn_layer> distinct;
    for (const auto& l : model.layers)
      if (std::find(distinct.begin(), distinct.end(), l) == distinct.end()) distinct.push_back(l);
    vulkan_context ctx;
    std::cerr << "moeroute plan: measuring this machine (" << ctx.device_name() << ") ...\n";
    hw = measure_hardware(ctx, distinct, "this", 9, a.cpu_threads, model.top_k);
#else
    detail::fail(errc::unsupported, "--hardware this: this moeroute was built without Vulkan");
#endif
  }
  MOEROUTE_CHECK(hw.vram_gib <= 0 || measure || a.vram_mib <= hw.vram_gib * 1024.0, errc::invalid_argument,
                 "--vram-mib ", a.vram_mib, " is more than the ", hw.vram_gib, " GiB of ", hw.name);

  std::vector<plan_row> rows = predict_plan(model, rt, hw, opt);
  rank_plan_rows(rows);

  // ---- output ----
  const auto& s0 = model.layers.front();
  std::cerr << "moeroute plan: " << rt.tokens << " tokens x " << model.num_layers() << " layers x " << model.num_experts()
            << " experts (top-" << model.top_k << ", H " << s0.hidden << ", F " << s0.ffn << ", "
            << weight_type_name(s0.gate_type) << "/" << weight_type_name(s0.up_type) << "/"
            << weight_type_name(s0.down_type) << (s0.has_bias ? " +bias" : "") << ", "
            << fixed(static_cast<double>(s0.expert_bytes()) / 1048576.0, 3) << " MiB/expert, "
            << fixed(static_cast<double>(model.total_bytes()) / 1073741824.0, 2) << " GiB of experts) on " << hw.name
            << ", VRAM budget " << a.vram_mib << " MiB\n  routing: " << a.trace << ": " << rt.mapping << "\n";
  std::cout << std::left << std::setw(4) << "#" << std::setw(52) << "strategy" << std::right << std::setw(10) << "tok/s"
            << std::setw(9) << "device" << std::setw(9) << "upload" << std::setw(9) << "CPU" << std::setw(12)
            << "MiB up/tok" << "  detail\n";
  nlohmann::ordered_json j;
  j["trace"] = a.trace;
  j["trace_mapping"] = rt.mapping;
  j["model"] = model.description;
  j["tokens"] = rt.tokens;
  j["layers"] = model.num_layers();
  j["experts"] = model.num_experts();
  j["top_k"] = model.top_k;
  j["expert_bytes_per_layer"] = nlohmann::ordered_json::array();
  for (int l = 0; l < model.num_layers(); ++l) j["expert_bytes_per_layer"].push_back(model.expert_bytes(l));
  j["vram_budget_bytes"] = opt.vram_bytes;
  j["hardware"] = hardware_profile_json(hw);
  j["policies"] = nlohmann::ordered_json::array();  // named as `moeroute run --json` names its rows
  int rank = 0;
  const double tok = static_cast<double>(rt.tokens);
  for (const auto& r : rows) {
    const double acc = static_cast<double>(std::max<std::uint64_t>(r.accesses, 1));
    std::cout << std::left << std::setw(4) << (r.feasible ? std::to_string(++rank) : std::string("-")) << std::setw(52)
              << r.name << std::right << std::setw(10) << (r.feasible ? fixed(r.tokens_per_s, 1) : std::string("-"))
              << std::setw(8) << fixed(100.0 * static_cast<double>(r.device_hits) / acc, 1) << "%" << std::setw(8)
              << fixed(100.0 * static_cast<double>(r.uploads) / acc, 1) << "%" << std::setw(8)
              << fixed(100.0 * static_cast<double>(r.cpu_experts) / acc, 1) << "%" << std::setw(12)
              << fixed(tok > 0 ? static_cast<double>(r.bytes_uploaded) / tok / 1048576.0 : 0.0, 2) << "  "
              << (r.feasible ? r.detail : "not feasible: " + r.why) << "\n";
    nlohmann::ordered_json o;
    o["name"] = r.name;
    o["predicted"] = true;
    o["feasible"] = r.feasible;
    if (!r.feasible) o["why"] = r.why;
    if (r.feasible) o["tokens_per_s"] = r.tokens_per_s;
    o["seconds"] = r.seconds;
    o["detail"] = r.detail;
    o["accesses"] = r.accesses;
    o["device_hits"] = r.device_hits;
    o["uploads"] = r.uploads;
    o["background_uploads"] = r.background_uploads;
    o["prefetch_uploads"] = r.prefetches;
    o["cpu_experts"] = r.cpu_experts;
    o["hit_rate"] = static_cast<double>(r.device_hits) / acc;
    o["bytes_uploaded"] = r.bytes_uploaded;
    o["bytes_per_token"] = tok > 0 ? static_cast<double>(r.bytes_uploaded) / tok : 0.0;
    o["resident_bytes"] = r.resident_bytes;
    o["device_seconds"] = r.device_s;
    o["transfer_seconds"] = r.transfer_s;
    o["cpu_seconds"] = r.cpu_s;
    j["policies"].push_back(o);
  }
  if (!a.json.empty()) outs.set(a.json, j.dump(2) + "\n");
  if (!a.save_hardware.empty()) outs.set(a.save_hardware, hardware_profile_json(hw).dump(2) + "\n");
  if (!a.report.empty()) {
    cli::report_inputs in;
    in.title = "moeroute plan: predicted tokens/s on " + hw.name;
    in.plans.emplace_back(a.trace + " on " + hw.name + ", " + fixed(a.vram_mib, 0) + " MiB", nlohmann::json::parse(j.dump()));
    outs.set(a.report, cli::render_report_html(in));
  }
  outs.commit();
}

inline void setup_plan(CLI::App& app, int&) {
  auto a = std::make_shared<plan_args>();
  CLI::App* sub = app.add_subcommand("plan", "Predict decode tokens/s of MoE offloading strategies on a hardware profile");
  sub->add_option("--trace", a->trace, "routing trace JSONL to replay")->required();
  auto* model = sub->add_option("--model", a->model, "GGUF model: exact bytes per expert of every MoE layer");
  auto* shape = sub->add_option("--shape", a->shape,
                                "E,K,H,F,TYPE[,LAYERS]; TYPE one type or gate/up/down (q4_k/q4_k/q6_k), +bias for gpt-oss");
  model->excludes(shape);
  sub->add_option("--vram-mib", a->vram_mib, "device memory for expert weights, MiB")
      ->required()
      ->check(moeroute::cli::finite_above(0.0, 1 << 30));
  sub->add_option("--hardware", a->hardware, "shipped profile name (" + shipped_names() + "), a profile .json, or 'this'")
      ->required();
  sub->add_option("-o,--json", a->json, "write the ranked predictions as JSON");
  sub->add_option("--report", a->report, "write an HTML report with the chart");
  sub->add_option("--pin", a->pin, "ATX residency policy ranking the cells of 'static pinning' (default: trace counts)");
  sub->add_option("--save-hardware", a->save_hardware, "write the profile used (with --hardware this: the measurement)");
  sub->add_option("--max-tokens", a->max_tokens, "replay at most this many tokens")->check(moeroute::cli::int_in(1, 1 << 30));
  sub->add_option("--cpu-threads", a->cpu_threads, "--hardware this: host threads of the CPU FFN probe, as run's --cpu-threads (1)")
      ->check(moeroute::cli::int_in(1, 256));
  sub->add_option("--prefetch-threshold", a->threshold, "probability a prefetch needs (best strategy; default 0.5)")
      ->check(moeroute::cli::finite_in(0.0, 1.0));
  sub->callback([a] {
    MOEROUTE_CHECK(!a->model.empty() || !a->shape.empty(), moeroute::errc::invalid_argument,
                   "plan: give --model M.gguf or --shape E,K,H,F,TYPE[,LAYERS]");
    run_plan(*a);
  });
}

}  // namespace moeroute_plan_cmd

using moeroute_plan_cmd::setup_plan;
MOEROUTE_CLI_COMMAND("plan", setup_plan);
