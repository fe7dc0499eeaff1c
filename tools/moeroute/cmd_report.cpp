// moeroute report: a self-contained HTML page of SVG charts from traces, counts, pareto tables
// and offload-run results.

#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cli.hpp"
#include "moeroute/io/container_trace.hpp"
#include "moeroute/io/input_file.hpp"
#include "moeroute/io/imatrix.hpp"
#include "report.hpp"

namespace {

struct report_args {
  std::vector<std::string> traces, imatrix, container, pareto, runs;
  std::string capacities, title, out;
};

nlohmann::json read_json_file(const std::string& path) {
  auto j = nlohmann::json::parse(moeroute::read_input_file(path, moeroute::input_cap_document), nullptr,
                                 /*allow_exceptions=*/false);
  MOEROUTE_CHECK(!j.is_discarded(), moeroute::errc::parse_error, path, ": not valid JSON");
  return j;
}

void run_report(const report_args& a) {
  using namespace moeroute;
  cli::report_inputs in;
  if (!a.title.empty()) in.title = a.title;
  if (!a.capacities.empty()) in.capacity_percents = cli::parse_list<double>(a.capacities, "--capacity-percents");
  for (double p : in.capacity_percents)
    MOEROUTE_CHECK(p > 0 && p <= 100, errc::invalid_argument, "--capacity-percents: ", p, " is not in (0, 100]");
  cli::output_files outs;
  outs.declare("--output", a.out);
  for (const auto& p : a.traces) in.traces.emplace_back(p, read_routing_trace_jsonl(p));
  for (const auto& p : a.imatrix) in.counts.emplace_back(p, imatrix_expert_counts(read_imatrix(p)));
  for (const auto& p : a.container) in.counts.emplace_back(p, read_container_trace_json(p).layers);
  for (const auto& p : a.pareto) in.pareto.emplace_back(p, read_json_file(p));
  for (const auto& p : a.runs) in.runs.emplace_back(p, read_json_file(p));
  const std::string html = cli::render_report_html(in);
  outs.set(a.out, html);
  outs.commit();
  if (!a.out.empty() && a.out != "-") std::cerr << "moeroute report: wrote " << a.out << "\n";
}

void setup_report(CLI::App& app, int&) {
  auto a = std::make_shared<report_args>();
  CLI::App* sub = app.add_subcommand("report", "Write a self-contained HTML report with SVG charts");
  sub->add_option("--trace", a->traces, "routing trace JSONL (heat map, coverage, hit rate per policy)");
  sub->add_option("--imatrix", a->imatrix, "llama.cpp imatrix GGUF (heat map, coverage)");
  sub->add_option("--container", a->container, "gpu-container trace JSON (heat map, coverage)");
  sub->add_option("--pareto", a->pareto, "atx-policy-pareto-comparison-v1 JSON (from `moeroute policy pareto`)");
  sub->add_option("--run", a->runs, "offload run result JSON (from `moeroute run --json`)");
  sub->add_option("--capacity-percents", a->capacities, "capacities for the hit-rate chart, % of cells (default 1,2,5,...,100)");
  sub->add_option("--title", a->title, "page title");
  sub->add_option("-o,--output", a->out, "output HTML file ('-' for stdout)")->required();
  sub->callback([a] { run_report(*a); });
}

}  // namespace

MOEROUTE_CLI_COMMAND("report", setup_report);
