#pragma once
// Expert FFN weights of an MoE model GGUF (llama.cpp layout), as moeroute expert blobs.
//
// A llama.cpp MoE model stores each MoE layer's experts as three 3-D tensors:
//   blk.N.ffn_gate_exps.weight  ne = {H, F, E}   (E experts of F rows of length H)
//   blk.N.ffn_up_exps.weight    ne = {H, F, E}
//   blk.N.ffn_down_exps.weight  ne = {F, H, E}   (E experts of H rows of length F)
// and the router as blk.N.ffn_gate_inp.weight, ne = {H, E}. Expert e of a tensor is the contiguous
// slice [e * slice_bytes, (e + 1) * slice_bytes), so the blob of (layer, e) that the backends take
// (weights/layer.hpp: gate rows, up rows, down rows) is the concatenation of three slices, copied as
// stored: F32, F16, Q8_0 and Q4_0 are read without conversion. Dense layers (no *_exps tensors),
// as in DeepSeek's first layers, are skipped: MoE layer i is the i-th block that has experts.
//
//   auto w = moeroute::gguf_expert_weights::open("model.gguf");
//   std::vector<unsigned char> blob(w.shape().expert_bytes());
//   w.read_expert(layer, expert, blob.data());

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "moeroute/error.hpp"
#include "moeroute/io/gguf.hpp"
#include "moeroute/weights/layer.hpp"
#include "moeroute/weights/types.hpp"

namespace moeroute {

/// The MoE expert tensors of a model GGUF, checked once when opened.
class gguf_expert_weights {
 public:
  /// One MoE layer: its block index N (blk.N) and its three expert tensors.
  struct layer_tensors {
    int block = 0;
    const gguf_tensor_info* gate = nullptr;
    const gguf_tensor_info* up = nullptr;
    const gguf_tensor_info* down = nullptr;
    const gguf_tensor_info* router = nullptr;  ///< blk.N.ffn_gate_inp.weight, or nullptr
  };

  /// Reads the header of `path` (not the weights) and checks every expert tensor: all three per
  /// MoE layer, 3-D with matching {H, F, E}, one weight type the backends take, and the model's
  /// `<arch>.expert_count` when present. Errors name the file and the tensor or key.
  static gguf_expert_weights open(const std::string& path) { return gguf_expert_weights(gguf_file::open(path)); }

  explicit gguf_expert_weights(gguf_file file) : file_(std::move(file)) { index(); }

  gguf_expert_weights(const gguf_expert_weights&) = delete;  // layer_tensors point into file_
  gguf_expert_weights& operator=(const gguf_expert_weights&) = delete;
  gguf_expert_weights(gguf_expert_weights&& o) noexcept = default;

  const gguf_file& file() const noexcept { return file_; }
  /// E, H, F and the weight type shared by every MoE layer.
  const ffn_layer& shape() const noexcept { return shape_; }
  /// Number of MoE layers (blocks with expert tensors).
  int num_layers() const noexcept { return static_cast<int>(layers_.size()); }
  /// The tensors of MoE layer `layer` (0-based among MoE layers).
  const layer_tensors& layer(int layer) const {
    MOEROUTE_CHECK(layer >= 0 && layer < num_layers(), errc::invalid_argument, file_.name(), ": MoE layer ", layer,
                   " outside [0, ", num_layers(), ")");
    return layers_[static_cast<std::size_t>(layer)];
  }
  /// `<arch>.expert_used_count` (experts per token), or 0 when the file does not say.
  int experts_used() const noexcept { return experts_used_; }
  /// `general.architecture`, or "" when absent.
  const std::string& architecture() const noexcept { return arch_; }

  /// Copies the blob of (layer, expert) into out (shape().expert_bytes() bytes): the gate, up and
  /// down slices of that expert, as stored.
  void read_expert(int layer_index, int expert, unsigned char* out) const {
    const layer_tensors& t = layer(layer_index);
    MOEROUTE_CHECK(expert >= 0 && expert < shape_.num_experts, errc::invalid_argument, file_.name(), ": expert ",
                   expert, " outside [0, ", shape_.num_experts, ")");
    const std::uint64_t gb = shape_.gate_bytes(), db = shape_.down_bytes(), e = static_cast<std::uint64_t>(expert);
    file_.read_tensor_range(*t.gate, e * gb, gb, out);
    file_.read_tensor_range(*t.up, e * gb, gb, out + gb);
    file_.read_tensor_range(*t.down, e * db, db, out + 2 * gb);
  }

  /// Copies the blobs of every expert of MoE layer `layer` into out (num_experts x
  /// shape().expert_bytes() bytes, expert e at e * expert_bytes), reading each of the three
  /// tensors once instead of once per expert.
  void read_layer(int layer_index, unsigned char* out) const {
    const layer_tensors& t = layer(layer_index);
    const std::size_t gb = shape_.gate_bytes(), db = shape_.down_bytes(), eb = shape_.expert_bytes();
    const auto E = static_cast<std::size_t>(shape_.num_experts);
    const struct {
      const gguf_tensor_info* tensor;
      std::size_t at, slice;
    } parts[3] = {{t.gate, 0, gb}, {t.up, gb, gb}, {t.down, 2 * gb, db}};
    std::vector<unsigned char> buf;
    for (const auto& p : parts) {
      buf.resize(E * p.slice);
      file_.read_tensor_range(*p.tensor, 0, buf.size(), buf.data());
      for (std::size_t e = 0; e < E; ++e) std::memcpy(out + e * eb + p.at, buf.data() + e * p.slice, p.slice);
    }
  }

  /// The router matrix of MoE layer `layer` as E x H floats (row e = expert e's logit weights),
  /// or empty when the file has no blk.N.ffn_gate_inp.weight in a float type.
  std::vector<float> router_weights(int layer_index) const {
    const layer_tensors& t = layer(layer_index);
    if (t.router == nullptr) return {};
    return file_.read_tensor_f32(t.router->name);  // ne = {H, E}: H fastest, so row e is contiguous
  }

 private:
  static constexpr const char* kSuffix[3] = {".ffn_gate_exps.weight", ".ffn_up_exps.weight", ".ffn_down_exps.weight"};

  // "blk.N<suffix>" -> N, or -1.
  static int block_of(const std::string& name, const std::string& suffix) {
    if (name.size() <= 4 + suffix.size() || name.compare(0, 4, "blk.") != 0 ||
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
      return -1;
    const std::string digits = name.substr(4, name.size() - 4 - suffix.size());
    if (digits.empty() || digits.size() > 6) return -1;
    int n = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return -1;
      n = n * 10 + (c - '0');
    }
    return n;
  }

  static std::string dims(const gguf_tensor_info& t) {
    std::string s = "{";
    for (std::size_t i = 0; i < t.ne.size(); ++i) s += (i ? ", " : "") + std::to_string(t.ne[i]);
    return s + "}";
  }

  void index() {
    const std::string& fname = file_.name();
    std::map<int, std::array<const gguf_tensor_info*, 3>> found;
    for (const auto& t : file_.tensors())
      for (int p = 0; p < 3; ++p)
        if (const int b = block_of(t.name, kSuffix[p]); b >= 0) found[b][static_cast<std::size_t>(p)] = &t;
    MOEROUTE_CHECK(!found.empty(), errc::bad_input, fname,
                   ": no MoE expert tensors (blk.N.ffn_gate_exps.weight, ffn_up_exps, ffn_down_exps): "
                   "not an MoE model file, or one whose experts are stored in another layout");
    if (const gguf_value* a = file_.find("general.architecture"); a && a->is_string()) arch_ = a->as_string();

    bool first = true;
    for (const auto& [block, ts] : found) {
      for (int p = 0; p < 3; ++p)
        MOEROUTE_CHECK(ts[static_cast<std::size_t>(p)] != nullptr, errc::bad_input, fname, ": blk.", block,
                       " has expert tensors but no 'blk.", block, kSuffix[p], "'");
      const gguf_tensor_info& g = *ts[0];
      for (int p = 0; p < 3; ++p) {
        const gguf_tensor_info& t = *ts[static_cast<std::size_t>(p)];
        weight_type wt{};
        MOEROUTE_CHECK(weight_type_from_ggml(t.type, wt), errc::unsupported, fname, ": tensor '", t.name, "' has type ",
                       t.type_name, "; expert weights must be F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS or MXFP4");
        MOEROUTE_CHECK(t.ne.size() == 3, errc::bad_input, fname, ": tensor '", t.name, "' has dimensions ", dims(t),
                       ", expected 3 ({in, out, experts})");
        for (auto n : t.ne)
          MOEROUTE_CHECK(n > 0 && n <= std::numeric_limits<int>::max(), errc::bad_input, fname, ": tensor '", t.name,
                         "' has dimensions ", dims(t));
        if (first) {
          shape_ = ffn_layer(static_cast<int>(g.ne[2]), static_cast<int>(g.ne[0]), static_cast<int>(g.ne[1]), wt);
          first_gate_ = g.name;
          first = false;
        }
        MOEROUTE_CHECK(wt == shape_.gate_type, errc::unsupported, fname, ": tensor '", t.name, "' has type ", t.type_name,
                       " but '", first_gate_, "' has ",
                       weight_type_name(shape_.gate_type), "; all expert tensors must share one type");
        const std::int64_t H = shape_.hidden, F = shape_.ffn, E = shape_.num_experts;
        const bool is_down = p == 2;
        const std::int64_t want0 = is_down ? F : H, want1 = is_down ? H : F;
        MOEROUTE_CHECK(t.ne[0] == want0 && t.ne[1] == want1 && t.ne[2] == E, errc::bad_input, fname, ": tensor '",
                       t.name, "' has dimensions ", dims(t), ", expected {", want0, ", ", want1, ", ", E,
                       "} (H = ", H, ", F = ", F, ", E = ", E, " from '", first_gate_, "')");
      }
      if (layers_.empty()) {
        const std::string why = check_ffn_layer(shape_);
        MOEROUTE_CHECK(why.empty(), errc::unsupported, fname, ": tensor '", g.name, "': ", why);
      }
      const std::uint64_t gb = shape_.gate_bytes(), db = shape_.down_bytes(), E = static_cast<std::uint64_t>(shape_.num_experts);
      for (int p = 0; p < 3; ++p) {
        const gguf_tensor_info& t = *ts[static_cast<std::size_t>(p)];
        MOEROUTE_CHECK(t.nbytes / E == (p == 2 ? db : gb) && t.nbytes % E == 0, errc::bad_input, fname, ": tensor '",
                       t.name, "' holds ", t.nbytes, " bytes, not ", E, " expert slices of ", p == 2 ? db : gb);
      }
      layer_tensors lt;
      lt.block = block;
      lt.gate = ts[0];
      lt.up = ts[1];
      lt.down = ts[2];
      const std::string rname = "blk." + std::to_string(block) + ".ffn_gate_inp.weight";
      if (const gguf_tensor_info* r = file_.find_tensor(rname)) {
        const auto ty = static_cast<ggml_type>(r->type);
        const bool floaty = ty == ggml_type::f32 || ty == ggml_type::f16 || ty == ggml_type::bf16;
        MOEROUTE_CHECK(r->ne.size() == 2 && r->ne[0] == shape_.hidden && r->ne[1] == shape_.num_experts, errc::bad_input,
                       fname, ": tensor '", rname, "' has dimensions ", dims(*r), ", expected {", shape_.hidden, ", ",
                       shape_.num_experts, "}");
        if (floaty) lt.router = r;
      }
      layers_.push_back(lt);
    }
    if (!arch_.empty()) {
      if (const gguf_value* v = file_.find(arch_ + ".expert_count"); v && v->is_integer())
        MOEROUTE_CHECK(v->as_int() == shape_.num_experts, errc::bad_input, fname, ": metadata '", arch_,
                       ".expert_count' is ", v->as_int(), " but '", first_gate_, "' holds ", shape_.num_experts,
                       " experts");
      if (const gguf_value* v = file_.find(arch_ + ".expert_used_count"); v && v->is_integer()) {
        MOEROUTE_CHECK(v->as_int() > 0 && v->as_int() <= shape_.num_experts, errc::bad_input, fname, ": metadata '",
                       arch_, ".expert_used_count' is ", v->as_int(), ", outside [1, ", shape_.num_experts, "]");
        experts_used_ = static_cast<int>(v->as_int());
      }
    }
  }

  gguf_file file_;
  ffn_layer shape_{};
  std::vector<layer_tensors> layers_;
  std::string arch_, first_gate_;
  int experts_used_ = 0;
};

}  // namespace moeroute
