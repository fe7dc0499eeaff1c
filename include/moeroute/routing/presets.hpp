#pragma once
// Run-time router configuration, the presets of real models, and any_router: the one dispatch
// point that instantiates router<Scoring, Selection, Gating> from a router_config.

#include <algorithm>
#include <string>
#include <variant>
#include <vector>

#include "moeroute/error.hpp"
#include "moeroute/routing/router.hpp"

namespace moeroute {

enum class scoring_kind { softmax, sigmoid, sqrt_softplus };

inline const char* scoring_name(scoring_kind k) noexcept {
  switch (k) {
    case scoring_kind::softmax: return "softmax";
    case scoring_kind::sigmoid: return "sigmoid";
    case scoring_kind::sqrt_softplus: return "sqrt-softplus";
  }
  return "?";
}

/// Parses "softmax" | "sigmoid" | "sqrt-softplus".
inline scoring_kind parse_scoring(const std::string& s) {
  if (s == "softmax") return scoring_kind::softmax;
  if (s == "sigmoid") return scoring_kind::sigmoid;
  if (s == "sqrt-softplus" || s == "sqrt_softplus") return scoring_kind::sqrt_softplus;
  detail::fail(errc::invalid_argument, "unknown scoring '", s,
               "' (expected softmax, sigmoid or sqrt-softplus)");
}

/// Everything that decides a routing result, as plain data.
struct router_config {
  std::string name;           ///< preset name, or "custom"
  int num_experts = 0;        ///< E
  int top_k = 0;              ///< K
  scoring_kind scoring = scoring_kind::softmax;
  bool renorm = false;
  float scale = 1.0f;
  int groups = 0;             ///< 0: plain top-k; else grouped top-k with topk_groups
  int topk_groups = 0;
  bool uses_bias = false;     ///< the model has a selection bias (e_score_correction_bias)
  double cum_prob = 0.0;      ///< 0: no zero-gating; else cumulative-probability threshold
  int min_k = 1;
  int max_k = 0;              ///< 0: K
  std::string source;         ///< where the preset's numbers come from
};

/// The presets of real models. Numbers are the published router settings (config.json of each
/// model: num_experts / n_routed_experts, num_experts_per_tok, scoring, norm_topk_prob, n_group,
/// topk_group, routed_scaling_factor).
inline const std::vector<router_config>& presets() {
  static const std::vector<router_config> p = {
      {"mixtral-8x7b", 8, 2, scoring_kind::softmax, true, 1.0f, 0, 0, false, 0.0, 1, 0,
       "mistralai/Mixtral-8x7B-v0.1 config.json: num_local_experts 8, num_experts_per_tok 2; "
       "softmax over the router logits, top-2 renormalized"},
      {"qwen3-30b-a3b", 128, 8, scoring_kind::softmax, true, 1.0f, 0, 0, false, 0.0, 1, 0,
       "Qwen/Qwen3-30B-A3B config.json: num_experts 128, num_experts_per_tok 8, norm_topk_prob true"},
      {"qwen3-235b-a22b", 128, 8, scoring_kind::softmax, true, 1.0f, 0, 0, false, 0.0, 1, 0,
       "Qwen/Qwen3-235B-A22B config.json: num_experts 128, num_experts_per_tok 8, norm_topk_prob true"},
      {"qwen3.6-35b-a3b", 256, 8, scoring_kind::softmax, true, 1.0f, 0, 0, false, 0.0, 1, 0,
       "Qwen3.6-35B-A3B: 256 routed experts, 8 per token, softmax with top-k renormalization "
       "(Qwen3-MoE routing)"},
      {"qwen3.6-35b-a3b-adaptive", 256, 12, scoring_kind::softmax, true, 1.0f, 0, 0, false, 0.90,
       1, 12,
       "Qwen3.6-35B-A3B with post-hoc adaptive gating: k = 12, cumulative probability 0.90 "
       "(reported: 10.3 experts per token, perplexity slightly better than k = 8)"},
      {"deepseek-v3", 256, 8, scoring_kind::sigmoid, true, 2.5f, 8, 4, true, 0.0, 1, 0,
       "deepseek-ai/DeepSeek-V3 config.json: n_routed_experts 256, num_experts_per_tok 8, "
       "scoring_func sigmoid, topk_method noaux_tc (e_score_correction_bias), n_group 8, "
       "topk_group 4, norm_topk_prob true, routed_scaling_factor 2.5"},
      {"deepseek-r1", 256, 8, scoring_kind::sigmoid, true, 2.5f, 8, 4, true, 0.0, 1, 0,
       "deepseek-ai/DeepSeek-R1 config.json: same router as DeepSeek-V3"},
      {"gpt-oss-120b", 128, 4, scoring_kind::softmax, true, 1.0f, 0, 0, false, 0.0, 1, 0,
       "openai/gpt-oss-120b config.json: num_local_experts 128, experts_per_token 4; softmax "
       "over the top-4 logits (= softmax then renormalize)"},
      {"gpt-oss-20b", 32, 4, scoring_kind::softmax, true, 1.0f, 0, 0, false, 0.0, 1, 0,
       "openai/gpt-oss-20b config.json: num_local_experts 32, experts_per_token 4; softmax over "
       "the top-4 logits"},
      {"olmoe-1b-7b", 64, 8, scoring_kind::softmax, false, 1.0f, 0, 0, false, 0.0, 1, 0,
       "allenai/OLMoE-1B-7B-0924 config.json: num_experts 64, num_experts_per_tok 8, "
       "norm_topk_prob false"},
  };
  return p;
}

/// Looks up a preset by name; unknown names list the known ones.
inline const router_config& preset(const std::string& name) {
  for (const auto& p : presets())
    if (p.name == name) return p;
  std::string known;
  for (const auto& p : presets()) known += (known.empty() ? "" : ", ") + p.name;
  detail::fail(errc::invalid_argument, "unknown preset '", name, "' (known: ", known, ")");
}

/// A router chosen at run time from a router_config (dispatches to the matching instantiation).
class any_router {
 public:
  /// bias: selection bias per expert (size E), or empty for none. A preset with uses_bias routes
  /// with zero bias when none is given (the bias is learned per checkpoint, not part of the preset).
  explicit any_router(const router_config& cfg, std::vector<float> bias = {}) : cfg_(cfg) {
    router_params p{cfg.renorm, cfg.scale, std::move(bias)};
    const bool is_grouped = cfg.groups > 0;
    const bool gated = cfg.cum_prob > 0.0;
    switch (cfg.scoring) {
      case scoring_kind::softmax: make<softmax_scoring>(p, is_grouped, gated); break;
      case scoring_kind::sigmoid: make<sigmoid_scoring>(p, is_grouped, gated); break;
      case scoring_kind::sqrt_softplus: make<sqrt_softplus_scoring>(p, is_grouped, gated); break;
    }
  }

  const router_config& config() const noexcept { return cfg_; }
  std::size_t max_nnz(std::size_t tokens) const noexcept {
    return tokens * static_cast<std::size_t>(cfg_.top_k);
  }
  std::size_t workspace_size() const noexcept {
    return std::visit([](const auto& r) { return r.workspace_size(); }, r_);
  }
  template <class T>
  void route(const logits_view<T>& x, const routing_output& out, void* ws,
             token_stats* stats = nullptr) const {
    std::visit([&](const auto& r) { r.route(x, out, ws, stats); }, r_);
  }
  template <class T>
  status try_route(const logits_view<T>& x, const routing_output& out, void* ws,
                   token_stats* stats = nullptr) const noexcept {
    return std::visit([&](const auto& r) { return r.try_route(x, out, ws, stats); }, r_);
  }
  template <class T>
  routing_result route(const logits_view<T>& x, std::vector<token_stats>* stats = nullptr) const {
    return std::visit([&](const auto& r) { return r.route(x, stats); }, r_);
  }

 private:
  template <class S>
  using plain = router<S, topk_selection, no_gating>;
  template <class S>
  using plain_gated = router<S, topk_selection, cumulative_gating>;
  template <class S>
  using grouped = router<S, grouped_topk_selection, no_gating>;
  template <class S>
  using grouped_gated = router<S, grouped_topk_selection, cumulative_gating>;

  template <class S>
  void make(const router_params& p, bool is_grouped, bool gated) {
    const grouped_topk_selection gs{cfg_.groups, cfg_.topk_groups};
    const cumulative_gating cg{cfg_.cum_prob, cfg_.min_k, cfg_.max_k};
    const int E = cfg_.num_experts, K = cfg_.top_k;
    if (!is_grouped && !gated) r_.template emplace<plain<S>>(E, K, p, S{}, topk_selection{}, no_gating{});
    if (!is_grouped && gated) r_.template emplace<plain_gated<S>>(E, K, p, S{}, topk_selection{}, cg);
    if (is_grouped && !gated) r_.template emplace<grouped<S>>(E, K, p, S{}, gs, no_gating{});
    if (is_grouped && gated) r_.template emplace<grouped_gated<S>>(E, K, p, S{}, gs, cg);
  }

  router_config cfg_;
  std::variant<plain<softmax_scoring>, plain_gated<softmax_scoring>, grouped<softmax_scoring>,
               grouped_gated<softmax_scoring>, plain<sigmoid_scoring>, plain_gated<sigmoid_scoring>,
               grouped<sigmoid_scoring>, grouped_gated<sigmoid_scoring>,
               plain<sqrt_softplus_scoring>, plain_gated<sqrt_softplus_scoring>,
               grouped<sqrt_softplus_scoring>, grouped_gated<sqrt_softplus_scoring>>
      r_{std::in_place_index<0>, 1, 1};
};

}  // namespace moeroute
