#pragma once
// CPU reference of the grouped expert FFN (weights/layer.hpp: per-tensor types, biases, swiglu or
// swiglu_oai), with Eigen. Same API shape as the Vulkan op (moeroute::vulkan_ffn): a pool of
// weight slots, a slot table (expert -> slot), then can_implement -> workspace_size -> initialize
// -> run. Every weight type is computed exactly: upload_expert dequantizes the stored rows as
// ggml does (weights/dequant.hpp) and the FFN runs in float32. Used by the tests as the reference
// and by the benchmarks as the CPU baseline.
//
// Determinism: each (token, slot) pair writes its own partial output row; y_t is the sum of its
// partial rows in slot order (the order of the routing CSR), so results do not depend on grouping.

#include <moeroute/backends/ffn_types.hpp>
#include <moeroute/error.hpp>

#include <Eigen/Core>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace moeroute {

/// CPU expert FFN over decoded (float) expert weights.
class cpu_ffn {
 public:
  using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

  /// shape: the layer; num_slots: how many experts can be resident at once (>= 1).
  cpu_ffn(const ffn_layer& shape, int num_slots) : shape_(shape), slot_table_(static_cast<std::size_t>(shape.num_experts), -1) {
    const std::string why = check_ffn_layer(shape);
    MOEROUTE_CHECK(why.empty(), errc::invalid_argument, "cpu_ffn: ", why);
    MOEROUTE_CHECK(num_slots > 0, errc::invalid_argument, "cpu_ffn: num_slots must be positive");
    slots_.resize(static_cast<std::size_t>(num_slots));
  }

  const ffn_layer& shape() const noexcept { return shape_; }
  int num_slots() const noexcept { return static_cast<int>(slots_.size()); }

  /// Decodes an expert blob (layout in weights/layer.hpp, shape().expert_bytes() bytes) into a slot.
  void upload_expert(int slot, const void* blob, std::size_t bytes) {
    MOEROUTE_CHECK(slot >= 0 && slot < num_slots(), errc::invalid_argument, "cpu_ffn: slot ", slot,
                   " outside [0, ", num_slots(), ")");
    MOEROUTE_CHECK(bytes == shape_.expert_bytes(), errc::bad_input, "cpu_ffn: expert blob has ", bytes,
                   " bytes, expected ", shape_.expert_bytes());
    const auto H = static_cast<Eigen::Index>(shape_.hidden), F = static_cast<Eigen::Index>(shape_.ffn);
    const auto* p = static_cast<const unsigned char*>(blob);
    slot_weights& w = slots_[static_cast<std::size_t>(slot)];
    decode_matrix(shape_.gate_type, p + shape_.gate_offset(), F, H, w.gate);
    decode_matrix(shape_.up_type, p + shape_.up_offset(), F, H, w.up);
    decode_matrix(shape_.down_type, p + shape_.down_offset(), H, F, w.down);
    if (shape_.has_bias) {
      w.b_gate.resize(F);
      w.b_up.resize(F);
      w.b_down.resize(H);
      const unsigned char* b = p + shape_.bias_offset();
      std::memcpy(w.b_gate.data(), b, static_cast<std::size_t>(F) * 4);
      std::memcpy(w.b_up.data(), b + static_cast<std::size_t>(F) * 4, static_cast<std::size_t>(F) * 4);
      std::memcpy(w.b_down.data(), b + static_cast<std::size_t>(2 * F) * 4, static_cast<std::size_t>(H) * 4);
    }
    w.loaded = true;
  }

  /// Sets the slot of each expert (n == num_experts entries; -1 = not resident).
  void set_slot_table(const std::int32_t* table, std::size_t n) {
    MOEROUTE_CHECK(n == slot_table_.size(), errc::invalid_argument, "cpu_ffn: slot table has ", n,
                   " entries, expected ", slot_table_.size());
    for (std::size_t e = 0; e < n; ++e)
      MOEROUTE_CHECK(table[e] >= -1 && table[e] < num_slots(), errc::invalid_argument, "cpu_ffn: slot table entry ",
                     e, " = ", table[e], " outside [-1, ", num_slots(), ")");
    slot_table_.assign(table, table + n);
  }

  /// Empty when run() can compute args, else the reason (bad routing, a routed expert not resident).
  std::string can_implement(const ffn_args& a) const {
    std::string why = check_routing(a.routing, shape_.num_experts);
    if (!why.empty()) return why;
    if (a.routing.num_tokens > 0 && (a.x == nullptr || a.y == nullptr)) return "x or y is null";
    for (std::size_t j = 0; j < a.routing.nnz(); ++j) {
      const std::int32_t s = slot_table_[static_cast<std::size_t>(a.routing.ids[j])];
      if (s < 0 || !slots_[static_cast<std::size_t>(s)].loaded)
        return detail::concat("expert ", a.routing.ids[j], " is routed to but not resident in a loaded slot");
    }
    return {};
  }

  /// Bytes of scratch run() needs for args.
  std::size_t workspace_size(const ffn_args& a) const noexcept {
    const std::size_t T = a.routing.num_tokens, nnz = a.routing.nnz();
    const auto H = static_cast<std::size_t>(shape_.hidden), F = static_cast<std::size_t>(shape_.ffn);
    const std::size_t words = (static_cast<std::size_t>(shape_.num_experts) + 1) * 2 + nnz + nnz * H + T * H + 2 * T * F;
    return words * 4;
  }

  /// Binds args and a workspace of at least workspace_size(args) bytes (4-byte aligned). Throws
  /// moeroute::error with the reason when can_implement fails.
  void initialize(const ffn_args& a, void* workspace) {
    const std::string why = can_implement(a);
    MOEROUTE_CHECK(why.empty(), errc::bad_input, "cpu_ffn: ", why);
    args_ = a;
    ws_ = static_cast<float*>(workspace);
  }

  /// Computes y. No allocation.
  void run() {
    const auto& r = args_.routing;
    const std::size_t T = r.num_tokens, nnz = r.nnz();
    const auto E = static_cast<std::size_t>(shape_.num_experts);
    const auto H = static_cast<Eigen::Index>(shape_.hidden), F = static_cast<Eigen::Index>(shape_.ffn);
    auto* eoff = reinterpret_cast<std::uint32_t*>(ws_);
    std::uint32_t* cursor = eoff + E + 1;
    std::uint32_t* list = cursor + E + 1;
    float* partial = reinterpret_cast<float*>(list + nnz);
    float* xg = partial + nnz * static_cast<std::size_t>(H);
    float* g = xg + T * static_cast<std::size_t>(H);
    float* u = g + T * static_cast<std::size_t>(F);

    for (std::size_t e = 0; e <= E; ++e) eoff[e] = 0;
    for (std::size_t j = 0; j < nnz; ++j) ++eoff[static_cast<std::size_t>(r.ids[j]) + 1];
    for (std::size_t e = 0; e < E; ++e) eoff[e + 1] += eoff[e];
    for (std::size_t e = 0; e < E; ++e) cursor[e] = eoff[e];
    for (std::size_t t = 0; t < T; ++t)
      for (std::uint32_t j = r.offsets[t]; j < r.offsets[t + 1]; ++j) list[cursor[static_cast<std::size_t>(r.ids[j])]++] = j;

    using rmap = Eigen::Map<matrix>;
    for (std::size_t e = 0; e < E; ++e) {
      const auto n = static_cast<Eigen::Index>(eoff[e + 1] - eoff[e]);
      if (n == 0) continue;
      const slot_weights& w = slots_[static_cast<std::size_t>(slot_table_[e])];
      rmap X(xg, n, H), G(g, n, F), U(u, n, F);
      for (Eigen::Index i = 0; i < n; ++i) {
        const std::uint32_t j = list[eoff[e] + static_cast<std::size_t>(i)];
        X.row(i) = Eigen::Map<const Eigen::RowVectorXf>(args_.x + token_of(j) * static_cast<std::size_t>(H), H);
      }
      G.noalias() = X * w.gate.transpose();
      U.noalias() = X * w.up.transpose();
      if (shape_.has_bias) {
        G.rowwise() += w.b_gate;
        U.rowwise() += w.b_up;
      }
      if (shape_.act == ffn_activation::swiglu_oai) {
        for (Eigen::Index i = 0; i < n; ++i)
          for (Eigen::Index f = 0; f < F; ++f) G(i, f) = ffn_activate(shape_.act, G(i, f), U(i, f));
      } else {
        G = G.array() / (1.0f + (-G.array()).exp()) * U.array();
      }
      rmap P(xg, n, H);  // reuse the gather buffer for the down output
      P.noalias() = G * w.down.transpose();
      if (shape_.has_bias) P.rowwise() += w.b_down;
      for (Eigen::Index i = 0; i < n; ++i) {
        const std::uint32_t j = list[eoff[e] + static_cast<std::size_t>(i)];
        Eigen::Map<Eigen::RowVectorXf>(partial + static_cast<std::size_t>(j) * static_cast<std::size_t>(H), H) =
            r.weights[j] * P.row(i);
      }
    }
    for (std::size_t t = 0; t < T; ++t) {
      Eigen::Map<Eigen::RowVectorXf> y(args_.y + t * static_cast<std::size_t>(H), H);
      y.setZero();
      for (std::uint32_t j = r.offsets[t]; j < r.offsets[t + 1]; ++j)
        y += Eigen::Map<const Eigen::RowVectorXf>(partial + static_cast<std::size_t>(j) * static_cast<std::size_t>(H), H);
    }
  }

 private:
  struct slot_weights {
    matrix gate, up, down;
    Eigen::RowVectorXf b_gate, b_up, b_down;
    bool loaded = false;
  };

  // rows x cols values of type t, row-major as in the blob, into m.
  static void decode_matrix(weight_type t, const unsigned char* p, Eigen::Index rows, Eigen::Index cols, matrix& m) {
    m.resize(rows, cols);
    const std::size_t rb = row_bytes(t, static_cast<std::size_t>(cols));
    for (Eigen::Index r = 0; r < rows; ++r)
      dequantize_row(t, p + static_cast<std::size_t>(r) * rb, m.row(r).data(), static_cast<std::size_t>(cols));
  }

  std::size_t token_of(std::uint32_t j) const noexcept {
    const auto& r = args_.routing;
    std::size_t lo = 0, hi = r.num_tokens;  // largest t with offsets[t] <= j
    while (hi - lo > 1) {
      const std::size_t mid = (lo + hi) / 2;
      if (r.offsets[mid] <= j) lo = mid; else hi = mid;
    }
    return lo;
  }

  ffn_layer shape_;
  std::vector<slot_weights> slots_;
  std::vector<std::int32_t> slot_table_;
  ffn_args args_{};
  float* ws_ = nullptr;
};

}  // namespace moeroute
