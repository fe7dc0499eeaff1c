// moeroute concentration: is an expert cache worth building? A drop-in for
// gpu-container-concentration: same flags, same report fields, same exit codes (0 = analyzed,
// cache not justified; 5 = a cache could help; 2 = bad input or usage), plus coverage curves,
// hot experts, Gini and a recommended cache size.

#include <cstdint>
#include <algorithm>
#include <memory>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "moeroute/io/container_trace.hpp"
#include "moeroute/io/input_file.hpp"
#include "moeroute/io/imatrix.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/io/trace_counts.hpp"
#include "moeroute/metrics/concentration.hpp"

namespace {

using ojson = nlohmann::ordered_json;

struct concentration_args {
  std::string trace, imatrix, model_name, out;
  int topk = 8;
  double coverage = 0.90, threshold = 0.50;
  std::uint64_t cell_bytes = 0;
  int num_experts = 0;
};

std::string file_stem(const std::string& path) {
  std::string s = path.substr(path.find_last_of('/') == std::string::npos ? 0 : path.find_last_of('/') + 1);
  for (const char* ext : {".jsonl", ".json", ".gguf"}) {
    const std::string e = ext;
    if (s.size() > e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0)
      return s.substr(0, s.size() - e.size());
  }
  return s;
}

bool ends_with(const std::string& s, const std::string& e) {
  return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
}

// A routing-trace JSONL rather than a gpu-container JSON: by extension, else by content (the whole
// file is not one JSON document, or it is one record with 'layer' and 'experts').
bool looks_like_jsonl(const std::string& path, const std::string& text) {
  if (ends_with(path, ".jsonl")) return true;
  if (ends_with(path, ".json")) return false;
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded()) {
    const std::size_t nl = text.find('\n');
    return nl != std::string::npos && text.find_first_not_of(" \t\r\n", nl) != std::string::npos;
  }
  return j.is_object() && j.contains("layer") && j.contains("experts");
}

ojson summary_json(const moeroute::concentration_report& r) {
  return ojson{{"hot_frac_for_coverage", r.hot_frac_for_coverage},
               {"concentration_score", r.concentration_score},
               {"top1_share", r.top1_share},
               {"cache_helps", r.cache_helps}};
}

ojson report_json(const moeroute::concentration_report& r, const concentration_args& a,
                  const std::string& model, int num_experts, std::size_t n_layers,
                  std::int64_t n_tokens, const std::string& basis) {
  ojson j;
  j["model"] = model;
  j["num_experts"] = num_experts;
  j["n_layers"] = n_layers;
  j["n_tokens"] = n_tokens;
  j["coverage_target"] = r.coverage_target;
  j["threshold"] = r.threshold;
  j["cache_helps"] = r.cache_helps;
  j["hot_frac_for_coverage"] = r.hot_frac_for_coverage;
  j["concentration_score"] = r.concentration_score;
  j["top1_share"] = r.top1_share;
  ojson per = ojson::array();
  for (const auto& L : r.per_layer) {
    ojson curve = ojson::object();
    for (std::size_t i = 0; i < r.curve_levels.size(); ++i)
      curve[moeroute::detail::conc_fmt("%g", r.curve_levels[i])] = L.coverage_curve[i];
    ojson p{{"layer_index", L.layer_index},
            {"total_mass", L.total_mass},
            {"top1_share", L.top1_share},
            {"hot_frac_for_coverage", L.hot_frac_for_coverage},
            {"concentration_score", L.concentration_score},
            {"num_experts", L.num_experts},
            {"hot_experts_for_coverage", L.hot_experts_for_coverage},
            {"gini", L.gini},
            {"experts_for_coverage", curve},
            {"hot_experts", L.hot_experts},
            {"recommended_cells", L.recommended_cells}};
    if (a.cell_bytes) p["recommended_bytes"] = L.recommended_bytes;
    per.push_back(std::move(p));
  }
  j["per_layer"] = std::move(per);
  j["basis"] = basis;
  j["notes"] = r.notes;
  j["verdict"] = moeroute::concentration_verdict(r);
  j["gini"] = r.gini;
  j["skipped_layers"] = r.skipped_layers;
  ojson rec{{"cells", r.recommended_cells},
            {"total_cells", r.total_cells},
            {"fraction", r.total_cells ? static_cast<double>(r.recommended_cells) /
                                             static_cast<double>(r.total_cells)
                                       : 0.0}};
  if (a.cell_bytes) {
    rec["cell_bytes"] = a.cell_bytes;
    rec["bytes"] = r.recommended_bytes;
  }
  j["recommended_cache"] = std::move(rec);
  return j;
}

int run_concentration(const concentration_args& a) {
  using namespace moeroute;
  MOEROUTE_CHECK(a.topk >= 1, errc::invalid_argument, "--topk must be >= 1, got ", a.topk);
  concentration_options opt;
  opt.coverage = a.coverage;
  opt.threshold = a.threshold;
  opt.cell_bytes = a.cell_bytes;
  MOEROUTE_CHECK(opt.coverage > 0.0 && opt.coverage <= 1.0, errc::invalid_argument,
                 "--coverage must be in (0, 1], got ", opt.coverage);
  MOEROUTE_CHECK(opt.threshold > 0.0 && opt.threshold <= 1.0, errc::invalid_argument,
                 "--threshold must be in (0, 1], got ", opt.threshold);

  cli::output_files outs;
  outs.declare("--output", a.out);
  std::vector<layer_counts> counts;
  std::string model, basis;
  int num_experts = 0;
  std::int64_t n_tokens = 0;
  ojson input;
  ojson weight_mass;  // extra analysis of router-weight mass (JSONL with gating_probs)
  if (!a.imatrix.empty()) {
    const gguf_file g = gguf_file::open(a.imatrix);
    const imatrix_data m = read_imatrix(g);
    counts = imatrix_expert_counts(m);
    num_experts = m.num_experts;
    n_tokens = imatrix_n_tokens(m, a.topk);
    model = "model";  // gpu-container-concentration's name without --model-name
    basis = "imatrix expert counts (" + m.layers.front().projection +
            ".weight.counts, rounded half-to-even); n_tokens = layer " +
            std::to_string(m.layers.front().layer_index) + " counts / topk " + std::to_string(a.topk);
    input = ojson{{"path", a.imatrix}, {"format", "imatrix-gguf"}, {"file_stem", file_stem(a.imatrix)},
                  {"datasets", m.datasets}, {"chunk_count", m.chunk_count},
                  {"chunk_size", m.chunk_size}, {"moe_layers", m.layers.size()}};
  } else {
    const std::string text = read_input_file(a.trace, input_cap_document);
    if (looks_like_jsonl(a.trace, text)) {
      std::istringstream in(text);
      const routing_trace r = parse_routing_trace_jsonl(in, a.trace);
      MOEROUTE_CHECK(a.num_experts == 0 || a.num_experts >= r.num_experts(), errc::bad_input,
                     a.trace, ": names expert ", r.num_experts() - 1, " but --num-experts is ",
                     a.num_experts);
      const container_trace ct = container_trace_from_routing(r, file_stem(a.trace), a.num_experts);
      counts = ct.layers;
      num_experts = ct.num_experts;
      n_tokens = ct.n_tokens;
      model = ct.model;
      basis = "expert activation counts from routing-trace JSONL (" + std::to_string(r.size()) +
              " records; n_tokens = most records in one layer)";
      input = ojson{{"path", a.trace}, {"format", "routing-trace-jsonl"},
                    {"records", r.size()}, {"accesses", r.num_accesses()},
                    {"has_router_weights", r.has_weights}};
      if (r.has_weights)
        weight_mass = summary_json(analyze_concentration(trace_weight_mass(r, a.num_experts), opt));
    } else {
      const container_trace ct = parse_container_trace_json(text, a.trace);
      counts = ct.layers;
      n_tokens = ct.n_tokens;
      model = ct.model.empty() ? file_stem(a.trace) : ct.model;
      num_experts = ct.num_experts;
      basis = ct.gate_weighted ? "gate-weighted expert counts (gpu-container trace)"
                               : "expert activation counts (gpu-container trace)";
      input = ojson{{"path", a.trace}, {"format", "gpu-container-trace-json"}};
    }
  }
  if (!a.model_name.empty()) model = a.model_name;

  const concentration_report rep = analyze_concentration(counts, opt);
  ojson j = report_json(rep, a, model, num_experts, rep.n_layers(), n_tokens, basis);
  j["input"] = std::move(input);
  if (!weight_mass.is_null()) j["router_weight_mass"] = std::move(weight_mass);
  outs.set(a.out, j.dump(2) + "\n");
  outs.commit();
  std::cerr << concentration_verdict(rep) << "\n";
  return rep.cache_helps ? 5 : 0;
}

void setup_concentration(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<concentration_args>();
  CLI::App* sub = app.add_subcommand(
      "concentration",
      "Routing concentration of a model on a workload, and whether an expert cache is worth it "
      "(exit 0: not justified, 5: a cache could help, 2: bad input)");
  auto* tr = sub->add_option("--trace", args->trace,
                             "gpu-container trace JSON, or routing-trace JSONL (.jsonl)");
  auto* im = sub->add_option("--imatrix", args->imatrix, "llama.cpp imatrix GGUF of an MoE model");
  tr->excludes(im);
  im->excludes(tr);
  sub->add_option("--model-name", args->model_name, "model name written in the report");
  sub->add_option("--topk", args->topk, "experts per token (imatrix n_tokens = counts / topk)")
      ->capture_default_str()
      ->check(moeroute::cli::int_in(1, moeroute::max_trace_expert + 1));
  sub->add_option("--coverage", args->coverage, "routing coverage the resident set must reach, in (0, 1]")
      ->capture_default_str()
      ->check(moeroute::cli::finite_above(0.0, 1.0));
  sub->add_option("--threshold", args->threshold,
                  "cache helps when the median hot fraction is below this, in (0, 1]")
      ->capture_default_str()
      ->check(moeroute::cli::finite_above(0.0, 1.0));
  sub->add_option("--cell-bytes", args->cell_bytes,
                  "bytes of one (layer, expert) cell: adds byte sizes to the recommendation")
      ->check(moeroute::cli::int_in(0, 1LL << 50));
  sub->add_option("--num-experts", args->num_experts,
                  "experts per layer of a JSONL trace (default: 1 + the largest id seen)")
      ->check(moeroute::cli::int_in(1, moeroute::max_trace_expert + 1))
      ->excludes(im);
  sub->add_option("-o,--output", args->out, "report JSON path (default: stdout)");
  sub->callback([args, &exit_code]() {
    MOEROUTE_CHECK(!args->trace.empty() || !args->imatrix.empty(), moeroute::errc::invalid_argument,
                   "concentration: one of --trace or --imatrix is required");
    exit_code = run_concentration(*args);
  });
}

}  // namespace

MOEROUTE_CLI_COMMAND("concentration", setup_concentration);
