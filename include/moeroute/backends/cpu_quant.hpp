#pragma once
// Quantized CPU expert FFN: the routed experts' weighted SwiGLU / swiglu_oai FFN (weights/layer.hpp)
// computed straight from the stored blocks of every weight type (weights/types.hpp), in caller
// memory (a mapped GGUF, expert blobs, any host buffer), with no per-expert float copy. No Eigen,
// no Vulkan.
//
// Arithmetic. For a quantized tensor, the activations entering it (x for gate/up, the activated
// intermediate a for down) are quantized per 32 values to int8 with a float32 scale (amax / 127,
// round to nearest), as ggml quantizes them to its dot-product types (q8_0 / q8_K); every weight
// block is read as int8 codes with a float scale (and min) per 16 values, the code x activation
// products are summed exactly in integers per 16 values and scaled in float32. f32, f16 and bf16
// tensors are computed in float32 against float32 activations.
//
// cpu_activations::f32 (cpu_ffn_options::activations) keeps every activation in float32 instead:
// each weight row, of any type, is dequantized (weights/dequant.hpp, exactly ggml's to_float) into
// a per-thread scratch row and dotted with the float x / intermediate in float32, so the result is
// the float FFN of the dequantized weights up to float32 rounding (what the Vulkan and Eigen
// backends compute) at the cost of speed; int8 (the default) is ggml's CPU arithmetic.
//
// Instruction sets: the portable path is plain C++; on x86-64 (GCC, Clang) AVX2+FMA and AVX-512
// (BW/VL, with VNNI when present) paths are compiled with function-level target attributes and
// chosen once at run time from the CPU's features, so the header needs no -m flags. Paths agree
// to float rounding (the same integer products; the AVX-512 fused kernels read codes unsigned and
// take the code offset and mins through the activation's code sums in float32, and the float
// order differs).
//
// Threads: the rows of each projection are split over the caller's thread count; every output
// value is computed by exactly one thread with the same code and order, so results are
// bit-identical for any thread count.
//
//   moeroute::cpu_quant_ffn op(layer, {/*threads*/ 2});
//   for (int e = 0; e < E; ++e) op.set_expert(e, weights.expert_weights(l, e));   // views
//   op.run({routing.view(), x, y});
//
// The parts, one job each, under backends/cpu_quant/: features.hpp (paths, CPU check, target
// attributes), portable.hpp (shared layouts, portable path), kernels_avx2.hpp, kernels_avx512.hpp,
// pool.hpp (thread pool and row split). This header holds the class.

#include <moeroute/backends/cpu_quant/features.hpp>
#include <moeroute/backends/cpu_quant/kernels_avx2.hpp>
#include <moeroute/backends/cpu_quant/kernels_avx512.hpp>
#include <moeroute/backends/cpu_quant/pool.hpp>
#include <moeroute/backends/cpu_quant/portable.hpp>
#include <moeroute/backends/ffn_types.hpp>
#include <moeroute/error.hpp>
#include <moeroute/weights/dequant.hpp>
#include <moeroute/weights/expert_view.hpp>
#include <moeroute/weights/layer.hpp>
#include <moeroute/weights/types.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace moeroute {

/// Precision of the activations entering the quantized tensors: int8 per 32 values (ggml's CPU
/// arithmetic, fastest) or f32 (dequantized weight rows against float activations; matches the
/// float backends to float32 rounding).
enum class cpu_activations { int8, f32 };

/// "int8" or "f32".
inline const char* cpu_activations_name(cpu_activations a) { return a == cpu_activations::f32 ? "f32" : "int8"; }

/// Options of cpu_quant_ffn: thread count (>= 1, the calling thread included), path, and the
/// activation precision.
struct cpu_ffn_options {
  int threads = 1;
  cpu_isa isa = cpu_isa::best;
  cpu_activations activations = cpu_activations::int8;
};

/// Quantized CPU expert FFN over expert weights in caller memory (see the top of this header).
class cpu_quant_ffn {
 public:
  /// layer: the MoE layer (every weight type of weights/types.hpp); opt: threads and path. Throws
  /// moeroute::error (invalid_argument) for a bad layer, a thread count < 1, or a path this CPU
  /// does not have.
  cpu_quant_ffn(const ffn_layer& layer, cpu_ffn_options opt = {}) : layer_(layer) {
    const std::string why = check_ffn_layer(layer);
    MOEROUTE_CHECK(why.empty(), errc::invalid_argument, "cpu_quant_ffn: ", why);
    MOEROUTE_CHECK(opt.threads >= 1 && opt.threads <= 1024, errc::invalid_argument,
                   "cpu_quant_ffn: threads must be in [1, 1024], got ", opt.threads);
    MOEROUTE_CHECK(cpu_supports(opt.isa), errc::invalid_argument, "cpu_quant_ffn: this CPU has no ",
                   cpu_isa_name(opt.isa), " path");
    isa_ = opt.isa == cpu_isa::best ? cpu_best_isa() : opt.isa;
    k_ = kernels_for(isa_);
    experts_.assign(static_cast<std::size_t>(layer.num_experts), expert_weights_view{});
    threads_ = opt.threads;
    f32_act_ = opt.activations == cpu_activations::f32;
    if (threads_ > 1) pool_ = std::make_unique<detail::cq::pool>(threads_);
    scratch_.resize(static_cast<std::size_t>(threads_));
  }

  const ffn_layer& layer() const noexcept { return layer_; }
  /// The path actually used (never `best`).
  cpu_isa isa() const noexcept { return isa_; }
  int threads() const noexcept { return threads_; }
  cpu_activations activations() const noexcept {
    return f32_act_ ? cpu_activations::f32 : cpu_activations::int8;
  }

  /// Sets expert e's weights (views, no copy). Every routed expert must be set before run().
  /// Throws invalid_argument for e outside [0, E), a null gate/up/down, or missing biases when
  /// the layer has them.
  void set_expert(int e, const expert_weights_view& v) {
    MOEROUTE_CHECK(e >= 0 && e < layer_.num_experts, errc::invalid_argument, "cpu_quant_ffn: expert ", e,
                   " outside [0, ", layer_.num_experts, ")");
    MOEROUTE_CHECK(v.gate != nullptr && v.up != nullptr && v.down != nullptr, errc::invalid_argument,
                   "cpu_quant_ffn: expert ", e, ": gate, up and down must not be null");
    MOEROUTE_CHECK(!layer_.has_bias || (v.gate_bias != nullptr && v.up_bias != nullptr && v.down_bias != nullptr),
                   errc::invalid_argument, "cpu_quant_ffn: expert ", e, ": the layer has biases but the view has none");
    experts_[static_cast<std::size_t>(e)] = v;
  }

  /// Sets expert e from a blob in the weights/layer.hpp layout (views into it, no copy; 4-byte
  /// aligned when the layer has biases).
  void set_expert_blob(int e, const void* blob) {
    MOEROUTE_CHECK(blob != nullptr, errc::invalid_argument, "cpu_quant_ffn: expert ", e, ": blob is null");
    const auto* p = static_cast<const unsigned char*>(blob);
    expert_weights_view v;
    v.gate = p + layer_.gate_offset();
    v.up = p + layer_.up_offset();
    v.down = p + layer_.down_offset();
    if (layer_.has_bias) {
      MOEROUTE_CHECK(reinterpret_cast<std::uintptr_t>(p) % 4 == 0, errc::invalid_argument, "cpu_quant_ffn: expert ", e,
                     ": a blob with biases must be 4-byte aligned");
      const auto* b = reinterpret_cast<const float*>(p + layer_.bias_offset());
      v.gate_bias = b;
      v.up_bias = b + layer_.ffn;
      v.down_bias = b + 2 * layer_.ffn;
    }
    set_expert(e, v);
  }

  /// Empty when run() can compute args, else the reason (bad routing, x or y null, a routed
  /// expert without weights).
  std::string can_implement(const ffn_args& a, const std::uint8_t* select = nullptr) const {
    std::string why = check_routing(a.routing, layer_.num_experts);
    if (!why.empty()) return why;
    if (a.routing.num_tokens > 0 && (a.x == nullptr || a.y == nullptr)) return "x or y is null";
    for (std::size_t j = 0; j < a.routing.nnz(); ++j) {
      if (select != nullptr && select[j] == 0) continue;
      if (experts_[static_cast<std::size_t>(a.routing.ids[j])].gate == nullptr)
        return detail::concat("expert ", a.routing.ids[j], " is routed to but has no weights set");
    }
    return {};
  }

  /// y_t = sum over the routed entries j of token t of w_j * FFN_{id_j}(x_t), the contract of the
  /// other backends (ffn_args). select (optional, one byte per routing entry, CSR order): only
  /// entries with select[j] != 0 are computed. accumulate: y is added to instead of overwritten.
  /// Throws bad_input when can_implement fails. No allocation after the first call at a given
  /// size (the workspace grows); results do not depend on the thread count.
  void run(const ffn_args& a, const std::uint8_t* select = nullptr, bool accumulate = false) {
    const std::string why = can_implement(a, select);
    MOEROUTE_CHECK(why.empty(), errc::bad_input, "cpu_quant_ffn: ", why);
    const auto& r = a.routing;
    const std::size_t T = r.num_tokens, nnz = r.nnz();
    const auto E = static_cast<std::size_t>(layer_.num_experts);
    const auto H = static_cast<std::size_t>(layer_.hidden), F = static_cast<std::size_t>(layer_.ffn);
    if (T == 0) return;

    // group the selected entries by expert (entry order within an expert: CSR order)
    eoff_.assign(E + 1, 0);
    token_of_.resize(nnz);
    for (std::size_t t = 0; t < T; ++t)
      for (std::uint32_t j = r.offsets[t]; j < r.offsets[t + 1]; ++j) token_of_[j] = static_cast<std::uint32_t>(t);
    for (std::size_t j = 0; j < nnz; ++j)
      if (select == nullptr || select[j] != 0) ++eoff_[static_cast<std::size_t>(r.ids[j]) + 1];
    for (std::size_t e = 0; e < E; ++e) eoff_[e + 1] += eoff_[e];
    cursor_.assign(eoff_.begin(), eoff_.end() - 1);
    list_.resize(eoff_[E]);
    for (std::size_t j = 0; j < nnz; ++j)
      if (select == nullptr || select[j] != 0) list_[cursor_[static_cast<std::size_t>(r.ids[j])]++] = static_cast<std::uint32_t>(j);
    active_.clear();
    for (std::size_t e = 0; e < E; ++e)
      if (eoff_[e + 1] > eoff_[e]) active_.push_back(static_cast<std::uint32_t>(e));

    const bool gu_q = !is_float(layer_.gate_type) || !is_float(layer_.up_type);
    const bool d_q = !is_float(layer_.down_type);
    grow(xq_, gu_q ? T * H : 0);
    grow(xd_, gu_q ? T * H / 16 : 0);
    grow(xs_, gu_q ? T * H / 16 : 0);
    grow(xe_, gu_q ? T * H / 4 : 0);
    grow(act_, nnz * F);
    grow(aq_, d_q ? nnz * F : 0);
    grow(ad_, d_q ? nnz * F / 16 : 0);
    grow(as_, d_q ? nnz * F / 16 : 0);
    grow(ae_, d_q ? nnz * F / 4 : 0);
    grow(part_, nnz * H);
    const std::size_t maxn = std::max(H, F);
    for (auto& s : scratch_) {
      grow(s.w, maxn);
      grow(s.sw, maxn / 16 + 1);
      grow(s.mw, maxn / 16 + 1);
      grow(s.f, maxn);
      grow(s.rg, maxn);
      grow(s.ru, maxn);
      grow(s.g, T);
      grow(s.tq, T * maxn);
      grow(s.te, T * maxn / 4);
      grow(s.ts, T * maxn / 16);
      grow(s.pq, T);
      grow(s.pe, T);
      grow(s.ps, T);
    }

    const int n = threads_;
    // 1. quantize the tokens' activations (tokens split over threads)
    auto quant_x = [&](int i) {
      if (!gu_q) return;
      std::size_t b = 0, e = 0;
      detail::cq::split(T, i, n, 1, b, e);
      for (std::size_t t = b; t < e; ++t)
        k_.quantize(a.x + t * H, H, xq_.data() + t * H, xd_.data() + t * H / 16, xs_.data() + t * H / 16,
                    xe_.data() + t * H / 4);
    };
    dispatch(quant_x);
    const act_rows xa{a.x, xq_.data(), xd_.data(), xs_.data(), xe_.data(), H, token_of_.data()};
    const act_rows aa{act_.data(), aq_.data(), ad_.data(), as_.data(), ae_.data(), F, nullptr};
    // 2. gate / up rows split over threads; activation per (entry, row)
    auto gate_up = [&](int i) {
      std::size_t f0 = 0, f1 = 0;
      detail::cq::split(F, i, n, 4, f0, f1);
      thread_scratch& s = scratch_[static_cast<std::size_t>(i)];
      for (const std::uint32_t e : active_) {
        const expert_weights_view& v = experts_[e];
        const std::uint32_t* ents = list_.data() + eoff_[e];
        const std::size_t m = eoff_[e + 1] - eoff_[e];
        if (f0 < f1) pack(layer_.gate_type, layer_.up_type, xa, ents, m, s);
        if (m == 1 && f0 < f1) {  // one token: all rows of the range per kernel call
          project_rows(layer_.gate_type, v.gate, f0, f1, xa, ents, s, s.rg.data());
          project_rows(layer_.up_type, v.up, f0, f1, xa, ents, s, s.ru.data());
          float* act = act_.data() + std::size_t{ents[0]} * F;
          for (std::size_t f = f0; f < f1; ++f)
            act[f] = ffn_activate(layer_.act, s.rg[f - f0] + (v.gate_bias ? v.gate_bias[f] : 0.0f),
                                  s.ru[f - f0] + (v.up_bias ? v.up_bias[f] : 0.0f));
          continue;
        }
        for (std::size_t f = f0; f < f1; ++f) {
          project(layer_.gate_type, v.gate, f, xa, ents, m, s, s.g.data());
          float* act = act_.data();
          const float bg = v.gate_bias ? v.gate_bias[f] : 0.0f;
          for (std::size_t k = 0; k < m; ++k) act[ents[k] * F + f] = s.g[k] + bg;
          project(layer_.up_type, v.up, f, xa, ents, m, s, s.g.data());
          const float bu = v.up_bias ? v.up_bias[f] : 0.0f;
          for (std::size_t k = 0; k < m; ++k) {
            float& o = act[ents[k] * F + f];
            o = ffn_activate(layer_.act, o, s.g[k] + bu);
          }
        }
      }
    };
    dispatch(gate_up);
    // 3. quantize the activated intermediates (entries split over threads)
    auto quant_a = [&](int i) {
      if (!d_q) return;
      std::size_t b = 0, e = 0;
      detail::cq::split(list_.size(), i, n, 1, b, e);
      for (std::size_t k = b; k < e; ++k) {
        const std::size_t j = list_[k];
        k_.quantize(act_.data() + j * F, F, aq_.data() + j * F, ad_.data() + j * F / 16, as_.data() + j * F / 16,
                    ae_.data() + j * F / 4);
      }
    };
    dispatch(quant_a);
    // 4. down rows split over threads, then y for those rows in CSR order
    auto down = [&](int i) {
      std::size_t h0 = 0, h1 = 0;
      detail::cq::split(H, i, n, 16, h0, h1);
      thread_scratch& s = scratch_[static_cast<std::size_t>(i)];
      for (const std::uint32_t e : active_) {
        const expert_weights_view& v = experts_[e];
        const std::uint32_t* ents = list_.data() + eoff_[e];
        const std::size_t m = eoff_[e + 1] - eoff_[e];
        if (h0 < h1) pack(layer_.down_type, layer_.down_type, aa, ents, m, s);
        if (m == 1 && h0 < h1) {
          project_rows(layer_.down_type, v.down, h0, h1, aa, ents, s, s.rg.data());
          float* p = part_.data() + std::size_t{ents[0]} * H;
          for (std::size_t h = h0; h < h1; ++h) p[h] = s.rg[h - h0] + (v.down_bias ? v.down_bias[h] : 0.0f);
          continue;
        }
        for (std::size_t h = h0; h < h1; ++h) {
          project(layer_.down_type, v.down, h, aa, ents, m, s, s.g.data());
          const float bd = v.down_bias ? v.down_bias[h] : 0.0f;
          for (std::size_t k = 0; k < m; ++k) part_[ents[k] * H + h] = s.g[k] + bd;
        }
      }
      for (std::size_t t = 0; t < T; ++t) {
        float* y = a.y + t * H;
        if (!accumulate)
          for (std::size_t h = h0; h < h1; ++h) y[h] = 0.0f;
        for (std::uint32_t j = r.offsets[t]; j < r.offsets[t + 1]; ++j) {
          if (select != nullptr && select[j] == 0) continue;
          const float wj = r.weights[j];
          const float* p = part_.data() + static_cast<std::size_t>(j) * H;
          for (std::size_t h = h0; h < h1; ++h) y[h] += wj * p[h];
        }
      }
    };
    dispatch(down);
  }

 private:
  struct thread_scratch {
    std::vector<std::int8_t> w, tq;
    std::vector<float> sw, mw, f, g, te, ts;  // tq, te, ts: the fused kernels' tiles (pack)
    std::vector<float> rg, ru;                 // one token's rows of a range (project_rows)
    std::vector<const std::int8_t*> pq;  // pack's row pointers
    std::vector<const float*> pe, ps;
  };

  template <class V>
  static void grow(V& v, std::size_t n) {
    if (v.size() < n) v.resize(n);
  }

  static detail::cq::kernels kernels_for(cpu_isa isa) noexcept {
    detail::cq::kernels k = detail::cq::portable_kernels();
#if MOEROUTE_CQ_X86
    if (isa == cpu_isa::avx2) {
      k.unpack = detail::cq::unpack_row_avx2;
      k.dot_q = detail::cq::dot_q_avx2;
      k.dot_f = detail::cq::dot_f_avx2;
      k.rowdot = detail::cq::rowdot_avx2_for;
    } else if (isa == cpu_isa::avx512) {
      k.unpack = detail::cq::unpack_row_avx2;
      k.dot_q = detail::cq::features().vnni512 ? detail::cq::dot_q_avx512<true> : detail::cq::dot_q_avx512<false>;
      k.dot_f = detail::cq::dot_f_avx512;
      k.rowdot = detail::cq::features().vnni512 ? detail::cq::rowdot_avx512_for<true> : detail::cq::rowdot_avx512_for<false>;
      k.rows1 = detail::cq::features().vnni512 ? detail::cq::rows1_avx512_for<true> : detail::cq::rows1_avx512_for<false>;
    }
#else
    (void)isa;
#endif
    return k;
  }

  template <class Fn>
  void dispatch(Fn& f) {
    if (pool_)
      pool_->run(f);
    else
      f(0);
  }

  // Quantized activations of the rows `ents` index: codes q, scales d, min terms xs, lane scales e,
  // n values per row (entry j's row is j * n; for tokens, entries map to their token first).
  struct act_rows {
    const float* f;
    const std::int8_t* q;
    const float *d, *xs, *e;
    std::size_t n;
    const std::uint32_t* token_of;  // nullptr: row = entry
    std::size_t row(std::uint32_t j) const noexcept { return token_of != nullptr ? token_of[j] : j; }
  };

  // A tensor of type t takes the float path: a float type, or any type with f32 activations.
  bool is_float(weight_type t) const noexcept { return f32_act_ || detail::cq::type_is_float(t); }

  // The fused kernel of a tensor of type t with rows of n values, or nullptr.
  detail::cq::rowdot_fn fused_kernel(weight_type t, std::size_t n) const noexcept {
    return is_float(t) || n % 64 != 0 ? nullptr : k_.rowdot(t);
  }

  // Packs the activation rows of entries ents[0, m) into s's tiles when a tensor of type t1 or t2
  // takes a fused kernel (project then reads them).
  void pack(weight_type t1, weight_type t2, const act_rows& a, const std::uint32_t* ents, std::size_t m,
            thread_scratch& s) const {
    if (fused_kernel(t1, a.n) == nullptr && fused_kernel(t2, a.n) == nullptr) return;
    for (std::size_t k = 0; k < m; ++k) {
      const std::size_t r = a.row(ents[k]);
      s.pq[k] = a.q + r * a.n;
      s.pe[k] = a.e + r * a.n / 4;
      s.ps[k] = a.xs + r * a.n / 16;
    }
    detail::cq::pack_tiles(s.pq.data(), s.pe.data(), s.ps.data(), m, a.n, s.tq.data(), s.te.data(), s.ts.data());
  }

  // out[k] = row r of a tensor of type t (rows of a.n values) . activation row of entry ents[k]
  void project(weight_type t, const void* base, std::size_t r, const act_rows& a, const std::uint32_t* ents,
               std::size_t m, thread_scratch& s, float* out) const {
    const std::size_t n = a.n;
    const auto* row = static_cast<const unsigned char*>(base) + r * row_bytes(t, n);
    if (is_float(t)) {  // the row dequantized once into s.f, dotted with each float activation row
      dequantize_row(t, row, s.f.data(), n);
      for (std::size_t k = 0; k < m; ++k) out[k] = k_.dot_f(s.f.data(), a.f + a.row(ents[k]) * n, n);
      return;
    }
    if (const detail::cq::rowdot_fn fused = fused_kernel(t, n)) {  // the tiles pack() made
      for (std::size_t k = 0; k < m;) {
        const std::size_t tile = detail::cq::tile_at(k, m);
        const detail::cq::act_tile x{s.tq.data() + k * n, s.te.data() + k * n / 4, s.ts.data() + k * n / 16};
        fused(row, n, x, static_cast<int>(tile), out + k);
        k += tile;
      }
      return;
    }
    k_.unpack(t, row, n, s.w.data(), s.sw.data(), s.mw.data());
    const float* mw = detail::cq::type_has_min(t) ? s.mw.data() : nullptr;
    for (std::size_t k = 0; k < m; ++k) {
      const std::size_t rr = a.row(ents[k]);
      out[k] = k_.dot_q(s.w.data(), s.sw.data(), mw, a.q + rr * n, a.d + rr * n / 16, a.xs + rr * n / 16, n);
    }
  }

  // out[r - r0] = row r of a tensor of type t . the activation row of the one entry ents[0], for
  // r in [r0, r1): the path's one-token kernel over the range when it has one (its results do not
  // depend on the range), else project() per row.
  void project_rows(weight_type t, const void* base, std::size_t r0, std::size_t r1, const act_rows& a,
                    const std::uint32_t* ents, thread_scratch& s, float* out) const {
    const detail::cq::rows1_fn k = fused_kernel(t, a.n) != nullptr ? k_.rows1(t) : nullptr;
    if (k == nullptr) {
      for (std::size_t r = r0; r < r1; ++r) project(t, base, r, a, ents, 1, s, out + (r - r0));
      return;
    }
    const std::size_t rb = row_bytes(t, a.n);
    const detail::cq::act_tile x{s.tq.data(), s.te.data(), s.ts.data(), a.d + a.row(ents[0]) * a.n / 16};
    k(static_cast<const unsigned char*>(base) + r0 * rb, rb, r1 - r0, a.n, x, out);
  }

  ffn_layer layer_;
  cpu_isa isa_ = cpu_isa::portable;
  detail::cq::kernels k_{};
  int threads_ = 1;
  bool f32_act_ = false;
  std::unique_ptr<detail::cq::pool> pool_;
  std::vector<expert_weights_view> experts_;
  std::vector<std::uint32_t> eoff_, cursor_, list_, token_of_, active_;
  std::vector<std::int8_t> xq_, aq_;
  std::vector<float> xd_, xs_, xe_, act_, ad_, as_, ae_, part_;
  std::vector<thread_scratch> scratch_;
};

}  // namespace moeroute
