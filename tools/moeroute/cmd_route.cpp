// moeroute route: router logits (.npy) -> CSR routing result (JSON), with a preset or explicit options.

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <limits>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "cli.hpp"
#include "moeroute/io/npy.hpp"
#include "moeroute/routing/presets.hpp"

namespace {

struct route_args {
  std::string logits, preset, scoring, bias, out;
  int topk = 0, groups = 0, topk_groups = 0, min_k = 0, max_k = 0;
  double scale = std::numeric_limits<double>::quiet_NaN();
  double cum_prob = 0;
  bool renorm = false;
};

void run_route(const route_args& a, CLI::App& sub) {
  using namespace moeroute;
  const auto given = [&](const char* flag) { return sub.count(flag) > 0; };

  router_config cfg;
  cfg.name = "custom";
  if (given("--preset")) cfg = preset(a.preset);
  if (given("--scoring")) cfg.scoring = parse_scoring(a.scoring);
  if (given("--topk")) cfg.top_k = a.topk;
  if (given("--renorm")) cfg.renorm = a.renorm;
  if (given("--scale")) cfg.scale = static_cast<float>(a.scale);
  if (given("--groups")) {
    cfg.groups = a.groups;
    cfg.topk_groups = a.topk_groups;
  }
  if (given("--cum-prob")) {
    cfg.cum_prob = a.cum_prob;
    cfg.min_k = given("--min-k") ? a.min_k : 1;
    cfg.max_k = given("--max-k") ? a.max_k : 0;
  }
  MOEROUTE_CHECK(cfg.top_k > 0, errc::invalid_argument, "--topk is required (or a --preset)");
  cli::output_files outs;
  outs.declare("--output", a.out);

  const npy_array x = read_npy(a.logits);
  MOEROUTE_CHECK(x.cols > 0, errc::bad_input, a.logits, ": logits have 0 experts (columns)");
  MOEROUTE_CHECK(x.cols <= 1u << 20, errc::bad_input, a.logits, ": ", x.cols, " experts is more than supported");
  if (cfg.num_experts == 0) cfg.num_experts = static_cast<int>(x.cols);
  MOEROUTE_CHECK(static_cast<std::size_t>(cfg.num_experts) == x.cols, errc::bad_input, a.logits,
                 ": logits have ", x.cols, " experts (columns) but preset ", cfg.name, " has ",
                 cfg.num_experts);

  std::vector<float> bias;
  if (given("--bias")) {
    const npy_array b = read_npy(a.bias, /*allow_vector=*/true);
    MOEROUTE_CHECK(b.rows == 1 && b.cols == x.cols, errc::bad_input, a.bias, ": bias has shape (",
                   b.rows, ", ", b.cols, "), expected ", x.cols, " values");
    if (b.dtype == npy_dtype::f32) {
      bias = b.f32;
    } else {
      for (auto h : b.f16) bias.push_back(half_to_float(h.bits));
    }
    for (std::size_t e = 0; e < bias.size(); ++e)
      MOEROUTE_CHECK(std::isfinite(bias[e]), errc::bad_input, a.bias, ": bias[", e, "] is not finite");
  }

  any_router r(cfg, bias);
  routing_result res;
  try {
    res = x.dtype == npy_dtype::f32
              ? r.route(logits_view<float>(x.f32.data(), x.rows, x.cols))
              : r.route(logits_view<float16_t>(x.f16.data(), x.rows, x.cols));
  } catch (const error& e) {
    throw error(e.code(), a.logits + ": " + e.message());
  }

  std::uint32_t kmin = std::numeric_limits<std::uint32_t>::max(), kmax = 0;
  for (std::size_t t = 0; t < res.num_tokens; ++t) {
    const std::uint32_t k = res.offsets[t + 1] - res.offsets[t];
    kmin = std::min(kmin, k);
    kmax = std::max(kmax, k);
  }
  if (res.num_tokens == 0) kmin = 0;
  const double mean_active =
      res.num_tokens ? static_cast<double>(res.nnz()) / static_cast<double>(res.num_tokens) : 0.0;

  nlohmann::ordered_json j;
  j["tokens"] = res.num_tokens;
  j["num_experts"] = res.num_experts;
  j["offsets"] = res.offsets;
  j["ids"] = res.ids;
  j["weights"] = res.weights;
  j["mean_active"] = mean_active;
  j["config"] = {{"preset", cfg.name},        {"scoring", scoring_name(cfg.scoring)},
                 {"top_k", cfg.top_k},        {"renorm", cfg.renorm},
                 {"scale", cfg.scale},        {"groups", cfg.groups},
                 {"topk_groups", cfg.topk_groups}, {"bias", !bias.empty()},
                 {"cum_prob", cfg.cum_prob},  {"min_k", cfg.min_k},
                 {"max_k", cfg.max_k ? cfg.max_k : cfg.top_k}};
  outs.set(a.out, j.dump() + "\n");
  outs.commit();
  std::cerr << "moeroute route: " << res.num_tokens << " tokens x " << res.num_experts
            << " experts (" << cfg.name << ", " << scoring_name(cfg.scoring) << ", top-" << cfg.top_k
            << "): mean active " << std::fixed << std::setprecision(2) << mean_active << ", k min "
            << kmin << " max " << kmax << "\n";
}

void setup_route(CLI::App& app, int&) {
  auto a = std::make_shared<route_args>();
  CLI::App* sub = app.add_subcommand("route", "Route router logits (.npy [T, E]) to a CSR result (JSON)");
  sub->add_option("--logits", a->logits, "router logits, .npy float32/float16 [tokens, experts]")->required();
  std::string names;
  for (const auto& p : moeroute::presets()) names += (names.empty() ? "" : ", ") + p.name;
  sub->add_option("--preset", a->preset, "model preset: " + names);
  sub->add_option("--scoring", a->scoring, "softmax | sigmoid | sqrt-softplus");
  constexpr long long max_e = 1 << 20;
  sub->add_option("--topk", a->topk, "experts chosen per token (K)")->check(moeroute::cli::int_in(1, max_e));
  sub->add_flag("--renorm,!--no-renorm", a->renorm, "renormalize the chosen weights to sum 1");
  sub->add_option("--bias", a->bias, "selection bias per expert, .npy [E] or [1, E]");
  auto* groups = sub->add_option("--groups", a->groups, "expert groups G (grouped top-k)")->check(moeroute::cli::int_in(1, max_e));
  auto* tg = sub->add_option("--topk-groups", a->topk_groups, "groups kept TG")->check(moeroute::cli::int_in(1, max_e));
  groups->needs(tg);
  tg->needs(groups);
  sub->add_option("--scale", a->scale, "multiply the final weights (routed_scaling_factor)")
      ->check(moeroute::cli::finite_above(0.0));
  auto* cum = sub->add_option("--cum-prob", a->cum_prob, "zero-gating: keep experts until this cumulative share, in (0, 1]")
                  ->check(moeroute::cli::finite_above(0.0, 1.0));
  sub->add_option("--min-k", a->min_k, "zero-gating: keep at least this many")->check(moeroute::cli::int_in(1, max_e))->needs(cum);
  sub->add_option("--max-k", a->max_k, "zero-gating: keep at most this many (default K)")
      ->check(moeroute::cli::int_in(1, max_e))
      ->needs(cum);
  sub->add_option("-o,--output", a->out, "output JSON ('-' for stdout)")->required();
  sub->callback([a, sub] { run_route(*a, *sub); });
}

}  // namespace

MOEROUTE_CLI_COMMAND("route", setup_route);
