#pragma once
// llama.cpp imatrix GGUF (the format llama-imatrix writes): KV `general.type = "imatrix"`,
// `imatrix.datasets` (strings), `imatrix.chunk_count`, `imatrix.chunk_size`; for each weight tensor
// <name>.in_sum2 (F32, ne = [n_in, n_mat]) and <name>.counts (F32, ne = [1, n_mat]). For MoE expert
// tensors n_mat is the number of experts, so blk.N.ffn_down_exps.weight.counts says how often each
// expert of layer N was routed to. This header turns those into an L x E count matrix and
// per-expert mean squared activations (in_sum2 / counts).

#include <cmath>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "moeroute/error.hpp"
#include "moeroute/io/gguf.hpp"
#include "moeroute/io/trace_counts.hpp"

namespace moeroute {

/// The expert counts of one MoE layer of an imatrix.
struct imatrix_layer {
  int layer_index = 0;
  std::string tensor;           ///< the weight the counts belong to: "blk.N.ffn_down_exps.weight"
  std::string projection;       ///< "ffn_down_exps", or "ffn_gate_exps"/"ffn_up_exps" as fallback
  std::vector<float> counts;    ///< raw F32 counts, one per expert
  std::int64_t n_in = 0;        ///< ne[0] of the in_sum2 tensor
};

/// What an imatrix GGUF says about an MoE model's routing.
struct imatrix_data {
  std::string file;
  std::vector<std::string> datasets;   ///< imatrix.datasets (empty when absent)
  std::int64_t chunk_count = -1;       ///< imatrix.chunk_count (-1 when absent)
  std::int64_t chunk_size = -1;        ///< imatrix.chunk_size (-1 when absent)
  int num_experts = 0;                 ///< n_mat, the same in every MoE layer
  std::vector<imatrix_layer> layers;   ///< MoE layers, ascending layer index
};

/// Largest layer index accepted in a `blk.N.` tensor name.
inline constexpr int imatrix_max_layer = 65535;

namespace detail {
// "blk.<N>.<proj>.weight.counts" -> N and proj; false when the name has another shape.
inline bool imatrix_split_name(const std::string& name, int& layer, std::string& proj) {
  static const char* const suffix = ".weight.counts";
  const std::size_t sl = std::char_traits<char>::length(suffix);
  if (name.size() <= 4 + sl || name.compare(0, 4, "blk.") != 0 ||
      name.compare(name.size() - sl, sl, suffix) != 0)
    return false;
  std::size_t i = 4;
  long long n = 0;
  const std::size_t digits_begin = i;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9') {
    n = n * 10 + (name[i] - '0');
    if (n > imatrix_max_layer) return false;
    ++i;
  }
  if (i == digits_begin || i >= name.size() || name[i] != '.') return false;
  proj = name.substr(i + 1, name.size() - sl - i - 1);
  layer = static_cast<int>(n);
  return true;
}

inline int imatrix_projection_rank(const std::string& proj) {
  if (proj == "ffn_down_exps") return 0;
  if (proj == "ffn_gate_exps") return 1;
  if (proj == "ffn_up_exps") return 2;
  return -1;
}
}  // namespace detail

/// Reads the MoE expert counts of an imatrix GGUF. Per layer the ffn_down_exps counts are used,
/// falling back to ffn_gate_exps, then ffn_up_exps. Errors (moeroute::error, naming file and
/// tensor): general.type is not "imatrix"; no expert counts ("not an imatrix of an MoE model");
/// a counts tensor not of shape [1, n_mat], without its in_sum2, whose n_mat differs from its
/// in_sum2's or from the other layers'; a negative or non-finite count.
inline imatrix_data read_imatrix(const gguf_file& g) {
  const std::string& f = g.name();
  const gguf_value* type = g.find("general.type");
  MOEROUTE_CHECK(type != nullptr, errc::bad_input, f,
                 ": not an imatrix GGUF (no 'general.type' metadata)");
  MOEROUTE_CHECK(type->is_string() && type->as_string() == "imatrix", errc::bad_input, f,
                 ": not an imatrix GGUF (general.type = ",
                 type->is_string() ? "'" + type->as_string() + "'" : std::string(gguf_type_name(type->type())),
                 ")");
  imatrix_data out;
  out.file = f;
  if (const gguf_value* d = g.find("imatrix.datasets")) {
    MOEROUTE_CHECK(d->is_array() && d->array_type() == gguf_type::string, errc::bad_input, f,
                   ": metadata 'imatrix.datasets' must be an array of strings");
    out.datasets = d->as_string_array();
  }
  if (g.find("imatrix.chunk_count")) out.chunk_count = g.get_int("imatrix.chunk_count");
  if (g.find("imatrix.chunk_size")) out.chunk_size = g.get_int("imatrix.chunk_size");

  // Best projection per layer: layer -> (rank, tensor info).
  std::map<int, std::pair<int, const gguf_tensor_info*>> best;
  for (const auto& t : g.tensors()) {
    int layer = 0;
    std::string proj;
    if (!detail::imatrix_split_name(t.name, layer, proj)) continue;
    const int rank = detail::imatrix_projection_rank(proj);
    if (rank < 0) continue;
    auto it = best.find(layer);
    if (it == best.end() || rank < it->second.first) best[layer] = {rank, &t};
  }
  MOEROUTE_CHECK(!best.empty(), errc::bad_input, f,
                 ": not an imatrix of an MoE model (no blk.N.ffn_down_exps/ffn_gate_exps/"
                 "ffn_up_exps.weight.counts tensors)");

  std::string first_tensor;
  for (const auto& [layer, entry] : best) {
    const gguf_tensor_info& c = *entry.second;
    MOEROUTE_CHECK(c.ne.size() >= 2 && c.ne[0] == 1, errc::bad_input, f, ": tensor '", c.name,
                   "' must have shape [1, n_mat]");
    for (std::size_t d = 2; d < c.ne.size(); ++d)
      MOEROUTE_CHECK(c.ne[d] == 1, errc::bad_input, f, ": tensor '", c.name,
                     "' must have shape [1, n_mat]");
    const std::int64_t n_mat = c.ne[1];
    MOEROUTE_CHECK(n_mat >= 1 && n_mat <= max_trace_expert + 1, errc::bad_input, f, ": tensor '",
                   c.name, "' has ", n_mat, " experts (must be 1 to ", max_trace_expert + 1, ")");
    const std::string weight = c.name.substr(0, c.name.size() - 7);  // drop ".counts"
    const gguf_tensor_info* s = g.find_tensor(weight + ".in_sum2");
    MOEROUTE_CHECK(s != nullptr, errc::bad_input, f, ": tensor '", c.name, "' has no matching '",
                   weight, ".in_sum2'");
    MOEROUTE_CHECK(s->ne.size() >= 2 && s->ne[1] == n_mat, errc::bad_input, f, ": tensor '",
                   c.name, "' has ", n_mat, " experts but '", s->name, "' has n_mat = ",
                   s->ne.size() >= 2 ? s->ne[1] : 1);
    if (out.layers.empty()) {
      out.num_experts = static_cast<int>(n_mat);
      first_tensor = c.name;
    }
    MOEROUTE_CHECK(n_mat == out.num_experts, errc::bad_input, f, ": tensor '", c.name, "' has ",
                   n_mat, " experts but '", first_tensor, "' has ", out.num_experts);
    imatrix_layer L;
    L.layer_index = layer;
    L.tensor = weight;
    L.projection = weight.substr(weight.find('.', 4) + 1, weight.size() - weight.find('.', 4) - 8);
    L.n_in = s->ne[0];
    L.counts = g.read_tensor_f32(c.name);
    for (std::size_t e = 0; e < L.counts.size(); ++e)
      MOEROUTE_CHECK(std::isfinite(L.counts[e]) && L.counts[e] >= 0.0f, errc::bad_input, f,
                     ": tensor '", c.name, "' count of expert ", e, " is ", L.counts[e],
                     " (must be finite and >= 0)");
    out.layers.push_back(std::move(L));
  }
  return out;
}

/// Opens an imatrix GGUF (header, then only the counts tensors) and reads its expert counts.
inline imatrix_data read_imatrix(const std::string& path) {
  return read_imatrix(gguf_file::open(path));
}

/// Rounds half to even (Python's round(), independent of the floating-point environment).
inline double round_half_even(double x) noexcept {
  const double r = std::floor(x);
  const double d = x - r;
  if (d > 0.5) return r + 1.0;
  if (d < 0.5) return r;
  return std::fmod(r, 2.0) == 0.0 ? r : r + 1.0;
}

/// The per-layer expert counts, each rounded half-to-even (the concentration input).
inline std::vector<layer_counts> imatrix_expert_counts(const imatrix_data& m) {
  std::vector<layer_counts> out;
  out.reserve(m.layers.size());
  for (const auto& L : m.layers) {
    layer_counts c;
    c.layer_index = L.layer_index;
    c.counts.reserve(L.counts.size());
    for (float x : L.counts) c.counts.push_back(round_half_even(static_cast<double>(x)));
    out.push_back(std::move(c));
  }
  return out;
}

/// Tokens the imatrix saw: the sum of the rounded counts of the lowest-numbered MoE layer,
/// integer-divided by topk (each token routes to topk experts).
inline std::int64_t imatrix_n_tokens(const imatrix_data& m, int topk) {
  MOEROUTE_CHECK(topk >= 1, errc::invalid_argument, "topk must be >= 1, got ", topk);
  MOEROUTE_CHECK(!m.layers.empty(), errc::bad_input, m.file, ": no MoE layers");
  double sum = 0.0;
  for (float x : m.layers.front().counts) sum += round_half_even(static_cast<double>(x));
  MOEROUTE_CHECK(sum <= 9.0e15, errc::bad_input, m.file, ": counts of '", m.layers.front().tensor,
                 "' sum to ", sum, ", too large for a token count");
  return static_cast<std::int64_t>(sum) / topk;
}

/// Mean squared input activations of each expert of one layer: in_sum2 / count, [n_mat][n_in]
/// row-major by expert (zeros for an expert never routed to), plus their mean over n_in.
struct imatrix_expert_activations {
  int layer_index = 0;
  std::int64_t n_in = 0;
  int num_experts = 0;
  std::vector<float> mean_sq;       ///< num_experts * n_in
  std::vector<double> expert_mean;  ///< num_experts: mean over n_in of mean_sq
};

/// Reads <layer tensor>.in_sum2 of `layer` and divides it by the counts.
inline imatrix_expert_activations read_imatrix_activations(const gguf_file& g, const imatrix_layer& layer) {
  const std::string name = layer.tensor + ".in_sum2";
  const gguf_tensor_info& s = g.tensor(name);
  const std::size_t E = layer.counts.size();
  MOEROUTE_CHECK(s.ne.size() >= 2 && static_cast<std::size_t>(s.ne[1]) == E && s.ne[0] == layer.n_in,
                 errc::bad_input, g.name(), ": tensor '", name, "' does not have shape [", layer.n_in,
                 ", ", E, "]");
  const std::vector<float> sums = g.read_tensor_f32(name);
  imatrix_expert_activations a;
  a.layer_index = layer.layer_index;
  a.n_in = layer.n_in;
  a.num_experts = static_cast<int>(E);
  a.mean_sq.assign(sums.size(), 0.0f);
  a.expert_mean.assign(E, 0.0);
  const std::size_t n_in = static_cast<std::size_t>(layer.n_in);
  for (std::size_t e = 0; e < E; ++e) {
    const float c = layer.counts[e];
    if (c <= 0.0f) continue;
    double acc = 0.0;
    for (std::size_t j = 0; j < n_in; ++j) {
      const float v = sums[e * n_in + j] / c;
      a.mean_sq[e * n_in + j] = v;
      acc += v;
    }
    a.expert_mean[e] = n_in ? acc / static_cast<double>(n_in) : 0.0;
  }
  return a;
}

}  // namespace moeroute
