#pragma once
// The model the offload planner (plan/predict.hpp) plans for: one ffn_layer per MoE layer (experts,
// widths, the type of each expert tensor, biases), the experts each token uses, and the routing
// replayed for it (core: no Eigen, no Vulkan).
//
// Sources of a model:
//  - a GGUF (plan_model_from_gguf): each MoE layer's own types, so the bytes per expert are exact
//    per layer (ffn_layer::expert_bytes, biases included);
//  - a shape spec (parse_plan_shape): "E,K,H,F,TYPE[,LAYERS]" where TYPE is one weight type name
//    for gate, up and down ("q8_0"), or three joined by '/' ("q4_k/q4_k/q6_k"), optionally followed
//    by "+bias" (per-expert float32 biases and the gpt-oss activation: "mxfp4+bias"). LAYERS
//    omitted (0) = as many layers as the trace routes.
//
// Routing for the model (plan_map_trace): the trace's records grouped into tokens (a token ends
// where token_idx changes, or, without token_idx, where the layer index stops increasing) and its
// layers, in the order of their ids, numbered 0..Lt-1. Model layer l replays trace
// layers (m l + j) mod Lt, j < m: the first K / m experts of each (best first), expert ids of
// part j shifted by j Et. m = E / Et when E is a multiple of Et above it, K a multiple of m and
// K / m at most the experts of every record; otherwise m = 1, which needs Et <= E and K at most the
// experts of every record (errc::bad_input if not). A model with more layers than the trace
// repeats the trace's layers in order; a (token, layer) the trace lacks is skipped.

#include <algorithm>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "moeroute/error.hpp"
#include "moeroute/io/gguf_experts.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/weights/layer.hpp"

namespace moeroute {

/// The model a plan is for (contract at the top of model.hpp).
struct plan_model {
  std::vector<ffn_layer> layers;  ///< one per MoE layer; all with the same num_experts
  int top_k = 0;                  ///< experts per token
  std::string description;        ///< where the shape came from, for reports

  int num_layers() const noexcept { return static_cast<int>(layers.size()); }
  int num_experts() const noexcept { return layers.empty() ? 0 : layers.front().num_experts; }
  /// Bytes of one expert of layer l.
  std::uint64_t expert_bytes(int l) const { return layers.at(static_cast<std::size_t>(l)).expert_bytes(); }
  /// Bytes of every expert of every layer.
  std::uint64_t total_bytes() const {
    std::uint64_t s = 0;
    for (const auto& l : layers) s += static_cast<std::uint64_t>(l.num_experts) * l.expert_bytes();
    return s;
  }
};

namespace detail {
inline weight_type plan_type_named(const std::string& name, const std::string& spec) {
  weight_type t{};
  MOEROUTE_CHECK(weight_type_from_name(name.c_str(), t), errc::invalid_argument, "--shape ", spec, ": '", name,
                 "' is not a weight type (f32, f16, bf16, q8_0, q4_0, q4_k, q6_k, mxfp4, ...)");
  return t;
}
}  // namespace detail

/// Parses "E,K,H,F,TYPE[,LAYERS]" (see the contract). Errors are errc::invalid_argument naming
/// the spec and the part.
inline plan_model parse_plan_shape(const std::string& spec) {
  std::vector<std::string> parts;
  {
    std::stringstream ss(spec);
    std::string p;
    while (std::getline(ss, p, ',')) parts.push_back(p);
  }
  MOEROUTE_CHECK(parts.size() == 5 || parts.size() == 6, errc::invalid_argument, "--shape ", spec,
                 ": expected E,K,H,F,TYPE[,LAYERS] (e.g. 128,8,2048,768,q4_k/q4_k/q6_k,48)");
  const char* names[] = {"E", "K", "H", "F", "TYPE", "LAYERS"};
  auto num = [&](std::size_t i, long long lo, long long hi) {
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(parts[i], &used);
    } catch (const std::logic_error&) {
      used = 0;
    }
    MOEROUTE_CHECK(!parts[i].empty() && used == parts[i].size() && v >= lo && v <= hi, errc::invalid_argument, "--shape ",
                   spec, ": ", names[i], " '", parts[i], "' is not an integer in [", lo, ", ", hi, "]");
    return static_cast<int>(v);
  };
  const int E = num(0, 1, 65536), K = num(1, 1, 65536), H = num(2, 1, 1 << 20), F = num(3, 1, 1 << 20);
  const int L = parts.size() == 6 ? num(5, 1, 65536) : 0;
  MOEROUTE_CHECK(K <= E, errc::invalid_argument, "--shape ", spec, ": K (", K, ") is more than E (", E, ")");
  std::string type = parts[4];
  bool bias = false;
  if (type.size() > 5 && type.compare(type.size() - 5, 5, "+bias") == 0) {
    bias = true;
    type.resize(type.size() - 5);
  }
  std::vector<std::string> ts;
  {
    std::stringstream ss(type);
    std::string t;
    while (std::getline(ss, t, '/')) ts.push_back(t);
  }
  MOEROUTE_CHECK(ts.size() == 1 || ts.size() == 3, errc::invalid_argument, "--shape ", spec, ": TYPE '", parts[4],
                 "' is one type or gate/up/down (e.g. q4_k/q4_k/q6_k), optionally with +bias");
  const weight_type g = detail::plan_type_named(ts[0], spec);
  const weight_type u = ts.size() == 3 ? detail::plan_type_named(ts[1], spec) : g;
  const weight_type d = ts.size() == 3 ? detail::plan_type_named(ts[2], spec) : g;
  const ffn_layer layer(E, H, F, g, u, d, bias, bias ? ffn_activation::swiglu_oai : ffn_activation::swiglu);
  const std::string why = check_ffn_layer(layer);
  MOEROUTE_CHECK(why.empty(), errc::invalid_argument, "--shape ", spec, ": ", why);
  plan_model m;
  m.layers.assign(static_cast<std::size_t>(L), layer);
  m.top_k = K;
  m.description = "--shape " + spec;
  return m;
}

/// The shape of every MoE layer of a GGUF model; K from its expert_used_count (0 when absent).
inline plan_model plan_model_from_gguf(const gguf_expert_weights& w, const std::string& name) {
  plan_model m;
  for (int l = 0; l < w.num_layers(); ++l) m.layers.push_back(w.layer_shape(l));
  MOEROUTE_CHECK(!m.layers.empty(), errc::bad_input, name, ": no MoE expert tensors");
  for (int l = 1; l < w.num_layers(); ++l)
    MOEROUTE_CHECK(m.layers[static_cast<std::size_t>(l)].num_experts == m.num_experts(), errc::unsupported, name,
                   ": blk.", w.layer(l).block, " has ", m.layers[static_cast<std::size_t>(l)].num_experts,
                   " experts, blk.", w.layer(0).block, " ", m.num_experts(), "; the planner takes one expert count");
  m.top_k = w.experts_used();
  m.description = name;
  return m;
}

/// A trace replayed for a model of L layers, E experts, K per token (contract at the top).
struct plan_routing {
  routing_trace trace;     ///< records in inference order, layer = model layer, token = token number
  std::size_t tokens = 0;  ///< tokens replayed
  std::string mapping;     ///< how trace layers and experts became the model's, in words
};

/// Maps `t` onto a model of L layers x E experts with K experts per token (see the contract).
/// max_tokens > 0 replays only the first max_tokens tokens. `name` names the trace in errors.
inline plan_routing plan_map_trace(const routing_trace& t, int L, int E, int K, const std::string& name,
                                   std::size_t max_tokens = 0) {
  MOEROUTE_CHECK(L > 0 && E > 0 && K > 0 && K <= E, errc::invalid_argument, "plan_map_trace: L ", L, ", E ", E,
                 ", K ", K);
  MOEROUTE_CHECK(t.size() > 0, errc::bad_input, name, ": the trace has no records");
  // trace layers in id order
  std::vector<int> present(static_cast<std::size_t>(t.num_layers()), -1);
  for (auto l : t.layer) present[static_cast<std::size_t>(l)] = 0;
  std::vector<int> ids;
  for (std::size_t l = 0; l < present.size(); ++l)
    if (present[l] == 0) {
      present[l] = static_cast<int>(ids.size());
      ids.push_back(static_cast<int>(l));
    }
  const int Lt = static_cast<int>(ids.size()), Et = t.num_experts();
  std::size_t kt = 0, kmax = 0;  // fewest and most experts in a non-empty record
  for (std::size_t r = 0; r < t.size(); ++r) {
    const std::size_t n = t.offsets[r + 1] - t.offsets[r];
    if (n > 0) kt = kt == 0 ? n : std::min(kt, n);
    kmax = std::max(kmax, n);
  }
  MOEROUTE_CHECK(kt > 0, errc::bad_input, name, ": the trace routes no token to any expert");
  // m trace layers side by side when the model has a multiple of the trace's experts and that
  // split of K fits the records; else one trace layer per model layer
  int m = 1;
  if (Et < E && E % Et == 0 && K % (E / Et) == 0 && static_cast<std::size_t>(K / (E / Et)) <= kt && E / Et <= Lt)
    m = E / Et;
  MOEROUTE_CHECK(m > 1 || (Et <= E && static_cast<std::size_t>(K) <= kt), errc::bad_input, name,
                 ": cannot map the trace (", Lt, " layers x ", Et, " experts, records of at least ", kt,
                 " experts) onto a model of ", E, " experts x top-", K,
                 ": it needs E >= the trace's experts and K <= its experts per record, or E a multiple m of the "
                 "trace's experts with K a multiple of m and K / m <= its experts per record");
  const int per = K / m;
  // tokens: [token][trace layer index] -> record
  std::vector<std::vector<std::int64_t>> tok;
  std::int64_t cur = -2;
  int last = -1;
  for (std::size_t r = 0; r < t.size(); ++r) {
    const bool new_token = t.token[r] >= 0 ? t.token[r] != cur : t.layer[r] <= last;
    if (new_token || tok.empty()) {
      if (max_tokens > 0 && tok.size() == max_tokens) break;
      MOEROUTE_CHECK((tok.size() + 1) * static_cast<std::size_t>(std::max(L, Lt)) <= (std::size_t{1} << 26),
                     errc::capacity, name, ": more than ", tok.size(), " tokens x ", std::max(L, Lt),
                     " layers; replay fewer tokens");
      tok.emplace_back(static_cast<std::size_t>(Lt), -1);
    }
    cur = t.token[r];
    last = t.layer[r];
    tok.back()[static_cast<std::size_t>(present[static_cast<std::size_t>(t.layer[r])])] = static_cast<std::int64_t>(r);
  }
  plan_routing out;
  out.tokens = tok.size();
  for (std::size_t k = 0; k < tok.size(); ++k)
    for (int l = 0; l < L; ++l) {
      bool all = true;
      for (int j = 0; j < m; ++j) all = all && tok[k][static_cast<std::size_t>((m * l + j) % Lt)] >= 0;
      if (!all) continue;
      for (int j = 0; j < m; ++j) {
        const auto r = static_cast<std::size_t>(tok[k][static_cast<std::size_t>((m * l + j) % Lt)]);
        const std::size_t n = std::min<std::size_t>(t.offsets[r + 1] - t.offsets[r], static_cast<std::size_t>(per));
        for (std::size_t i = 0; i < n; ++i) out.trace.experts.push_back(t.experts[t.offsets[r] + i] + j * Et);
      }
      out.trace.layer.push_back(l);
      out.trace.token.push_back(static_cast<std::int64_t>(k));
      out.trace.offsets.push_back(static_cast<std::uint32_t>(out.trace.experts.size()));
    }
  std::ostringstream how;
  if (m == 1 && Lt == L && static_cast<std::size_t>(K) >= kmax)
    how << "trace layers as model layers 0.." << L - 1 << ", experts as routed";
  else {
    how << "model layer l replays trace layer" << (m > 1 ? "s " : " ");
    for (int j = 0; j < m; ++j) how << (j ? " and " : "") << "(" << m << "l+" << j << ") mod " << Lt;
    how << " of the trace's " << Lt << " layers (ids " << ids.front() << ".." << ids.back() << ")";
    if (m > 1) how << " side by side (experts of part j shifted by j x " << Et << ")";
    how << ", the first " << per << " experts of each record";
  }
  out.mapping = how.str();
  return out;
}

}  // namespace moeroute
