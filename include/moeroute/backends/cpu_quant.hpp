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
// Instruction sets: the portable path is plain C++; on x86-64 (GCC, Clang) AVX2+FMA and AVX-512
// (BW/VL, with VNNI when present) paths are compiled with function-level target attributes and
// chosen once at run time from the CPU's features, so the header needs no -m flags. Paths agree
// to float rounding (the integer sums are identical; the float accumulation order differs).
//
// Threads: the rows of each projection are split over the caller's thread count; every output
// value is computed by exactly one thread with the same code and order, so results are
// bit-identical for any thread count.
//
//   moeroute::cpu_quant_ffn op(layer, {/*threads*/ 2});
//   for (int e = 0; e < E; ++e) op.set_expert(e, weights.expert_weights(l, e));   // views
//   op.run({routing.view(), x, y});

#include <moeroute/backends/ffn_types.hpp>
#include <moeroute/error.hpp>
#include <moeroute/weights/dequant.hpp>
#include <moeroute/weights/expert_view.hpp>
#include <moeroute/weights/layer.hpp>
#include <moeroute/weights/types.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define MOEROUTE_CQ_X86 1
#include <immintrin.h>
#else
#define MOEROUTE_CQ_X86 0
#endif

namespace moeroute {

/// The instruction-set path of cpu_quant_ffn: best = the widest the CPU has (checked once).
enum class cpu_isa { portable, avx2, avx512, best };

/// Options of cpu_quant_ffn: thread count (>= 1, the calling thread included) and path.
struct cpu_ffn_options {
  int threads = 1;
  cpu_isa isa = cpu_isa::best;
};

/// "portable", "avx2", "avx512" or "best".
inline const char* cpu_isa_name(cpu_isa i) {
  switch (i) {
    case cpu_isa::portable: return "portable";
    case cpu_isa::avx2: return "avx2";
    case cpu_isa::avx512: return "avx512";
    case cpu_isa::best: return "best";
  }
  return "unknown";
}

namespace detail::cq {

struct cpu_features {
  bool avx2 = false, avx512 = false, vnni512 = false;
};

inline cpu_features detect_features() noexcept {
  cpu_features f;
#if MOEROUTE_CQ_X86
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = f.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl");
  f.vnni512 = f.avx512 && __builtin_cpu_supports("avx512vnni");
#endif
  return f;
}

inline const cpu_features& features() noexcept {
  static const cpu_features f = detect_features();
  return f;
}

}  // namespace detail::cq

/// True when this CPU (and this build) can run path i; `best` and `portable` always can.
inline bool cpu_supports(cpu_isa i) noexcept {
  switch (i) {
    case cpu_isa::portable: case cpu_isa::best: return true;
    case cpu_isa::avx2: return detail::cq::features().avx2;
    case cpu_isa::avx512: return detail::cq::features().avx512;
  }
  return false;
}

/// The widest path this CPU supports.
inline cpu_isa cpu_best_isa() noexcept {
  if (cpu_supports(cpu_isa::avx512)) return cpu_isa::avx512;
  if (cpu_supports(cpu_isa::avx2)) return cpu_isa::avx2;
  return cpu_isa::portable;
}

namespace detail::cq {

// ---------------------------------------------------------------------------------------------
// Quantized activations: n values (a multiple of 32) as int8 codes q[n], and per 16 values
// dx[g] (the float scale of the 32-value block holding group g) and xs[g] = dx[g] * (sum of the
// group's codes), the term a weight type with mins needs.

inline void quantize_act_portable(const float* x, std::size_t n, std::int8_t* q, float* dx, float* xs) noexcept {
  for (std::size_t b = 0; b < n / 32; ++b) {
    const float* xb = x + 32 * b;
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int h = 0; h < 2; ++h) {
      int sum = 0;
      for (int i = 16 * h; i < 16 * h + 16; ++i) {
        const int v = static_cast<int>(std::nearbyint(xb[i] * id));
        q[32 * b + static_cast<std::size_t>(i)] = static_cast<std::int8_t>(v);
        sum += v;
      }
      dx[2 * b + static_cast<std::size_t>(h)] = d;
      xs[2 * b + static_cast<std::size_t>(h)] = d * static_cast<float>(sum);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Unpacked weight rows: value i = sw[i / 16] * w[i] - mw[i / 16], with int8 codes w and float
// scales sw and mins mw per 16 values (mw only for the types with mins).

inline bool type_has_min(weight_type t) noexcept {
  return t == weight_type::q4_1 || t == weight_type::q5_1 || t == weight_type::q2_k || t == weight_type::q4_k ||
         t == weight_type::q5_k;
}
inline bool type_is_float(weight_type t) noexcept {
  return t == weight_type::f32 || t == weight_type::f16 || t == weight_type::bf16;
}

inline std::int8_t i8(int v) noexcept { return static_cast<std::int8_t>(v); }

// One block of type t at b into codes w (block_elems(t) values) and per-16 scales / mins.
inline void unpack_block(weight_type t, const unsigned char* b, std::int8_t* w, float* sw, float* mw) noexcept {
  switch (t) {
    case weight_type::q4_0:
    case weight_type::q4_1:
    case weight_type::iq4_nl:
    case weight_type::mxfp4: {
      const bool mx = t == weight_type::mxfp4;
      const unsigned char* qs = b + (t == weight_type::q4_1 ? 4 : mx ? 1 : 2);
      for (int j = 0; j < 16; ++j) {
        const int lo = qs[j] & 0xF, hi = qs[j] >> 4;
        if (t == weight_type::q4_0) {
          w[j] = i8(lo - 8);
          w[j + 16] = i8(hi - 8);
        } else if (t == weight_type::q4_1) {
          w[j] = i8(lo);
          w[j + 16] = i8(hi);
        } else if (mx) {
          w[j] = kvalues_mxfp4[lo];
          w[j + 16] = kvalues_mxfp4[hi];
        } else {
          w[j] = kvalues_iq4nl[lo];
          w[j + 16] = kvalues_iq4nl[hi];
        }
      }
      const float d = mx ? wt_e8m0_half(b[0]) : wt_f16(b);
      sw[0] = sw[1] = d;
      if (t == weight_type::q4_1) mw[0] = mw[1] = -wt_f16(b + 2);
      return;
    }
    case weight_type::q5_0:
    case weight_type::q5_1: {
      const bool has_min = t == weight_type::q5_1;
      const unsigned char* qhp = b + (has_min ? 4 : 2);
      const unsigned char* qs = qhp + 4;
      const std::uint32_t qh = static_cast<std::uint32_t>(qhp[0]) | static_cast<std::uint32_t>(qhp[1]) << 8 |
                               static_cast<std::uint32_t>(qhp[2]) << 16 | static_cast<std::uint32_t>(qhp[3]) << 24;
      const int off = has_min ? 0 : 16;
      for (int j = 0; j < 16; ++j) {
        w[j] = i8(((qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4)) - off);
        w[j + 16] = i8(((qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4)) - off);
      }
      sw[0] = sw[1] = wt_f16(b);
      if (has_min) mw[0] = mw[1] = -wt_f16(b + 2);
      return;
    }
    case weight_type::q8_0: {
      for (int j = 0; j < 32; ++j) w[j] = static_cast<std::int8_t>(b[2 + j]);
      sw[0] = sw[1] = wt_f16(b);
      return;
    }
    case weight_type::q2_k: {
      const unsigned char* q = b + 16;
      const float d = wt_f16(b + 80), dmin = wt_f16(b + 82);
      for (int g = 0; g < 16; ++g) {
        sw[g] = d * static_cast<float>(b[g] & 0xF);
        mw[g] = dmin * static_cast<float>(b[g] >> 4);
      }
      for (int h = 0; h < 2; ++h)
        for (int s = 0; s < 4; ++s)
          for (int l = 0; l < 32; ++l) w[128 * h + 32 * s + l] = i8((q[32 * h + l] >> (2 * s)) & 3);
      return;
    }
    case weight_type::q3_k: {
      const unsigned char* hm = b;
      const unsigned char* q = b + 32;
      const float d = wt_f16(b + 108);
      for (int g = 0; g < 16; ++g) sw[g] = d * static_cast<float>(wt_scale_q3k(g, b + 96) - 32);
      for (int h = 0; h < 2; ++h)
        for (int s = 0; s < 4; ++s)
          for (int l = 0; l < 32; ++l)
            w[128 * h + 32 * s + l] =
                i8(((q[32 * h + l] >> (2 * s)) & 3) - ((hm[l] & (1u << (4 * h + s))) ? 0 : 4));
      return;
    }
    case weight_type::q4_k:
    case weight_type::q5_k: {
      const bool five = t == weight_type::q5_k;
      const float d = wt_f16(b), dmin = wt_f16(b + 2);
      const unsigned char* qh = b + 16;
      const unsigned char* q = b + (five ? 48 : 16);
      for (int c = 0; c < 4; ++c) {
        for (int k = 0; k < 2; ++k) {
          int sc = 0, m = 0;
          wt_scale_min_k4(2 * c + k, b + 4, sc, m);
          sw[4 * c + 2 * k] = sw[4 * c + 2 * k + 1] = d * static_cast<float>(sc);
          mw[4 * c + 2 * k] = mw[4 * c + 2 * k + 1] = dmin * static_cast<float>(m);
          const unsigned hb = 1u << (2 * c + k);
          for (int l = 0; l < 32; ++l) {
            const int v = (k ? q[32 * c + l] >> 4 : q[32 * c + l] & 0xF) + (five && (qh[l] & hb) ? 16 : 0);
            w[64 * c + 32 * k + l] = i8(v);
          }
        }
      }
      return;
    }
    case weight_type::q6_k: {
      const float d = wt_f16(b + 208);
      for (int g = 0; g < 16; ++g) sw[g] = d * static_cast<float>(static_cast<std::int8_t>(b[192 + g]));
      for (int h = 0; h < 2; ++h) {
        const unsigned char* ql = b + 64 * h;
        const unsigned char* qh = b + 128 + 32 * h;
        for (int l = 0; l < 32; ++l) {
          w[128 * h + l] = i8(((ql[l] & 0xF) | ((qh[l] & 3) << 4)) - 32);
          w[128 * h + l + 32] = i8(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
          w[128 * h + l + 64] = i8(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
          w[128 * h + l + 96] = i8(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
      }
      return;
    }
    case weight_type::iq4_xs: {
      const float d = wt_f16(b);
      const unsigned scales_h = wt_u16(b + 2);
      for (int g = 0; g < 8; ++g) {
        const int ls = static_cast<int>(((b[4 + g / 2] >> (4 * (g % 2))) & 0xFu) | (((scales_h >> (2 * g)) & 3u) << 4));
        sw[2 * g] = sw[2 * g + 1] = d * static_cast<float>(ls - 32);
        const unsigned char* qs = b + 8 + 16 * g;
        for (int j = 0; j < 16; ++j) {
          w[32 * g + j] = kvalues_iq4nl[qs[j] & 0xF];
          w[32 * g + j + 16] = kvalues_iq4nl[qs[j] >> 4];
        }
      }
      return;
    }
    case weight_type::f32:
    case weight_type::f16:
    case weight_type::bf16: return;  // float types take the float path
  }
}

inline void unpack_row_portable(weight_type t, const unsigned char* row, std::size_t n, std::int8_t* w, float* sw,
                                float* mw) noexcept {
  const std::size_t be = block_elems(t), bb = block_bytes(t);
  for (std::size_t i = 0; i < n / be; ++i) unpack_block(t, row + i * bb, w + i * be, sw + i * be / 16, mw + i * be / 16);
}

// sum over 16-groups g of (sw[g] dx[g]) isum_g - mw[g] xs[g]  (mw == nullptr: no mins)
inline float dot_q_portable(const std::int8_t* w, const float* sw, const float* mw, const std::int8_t* x,
                            const float* dx, const float* xs, std::size_t n) noexcept {
  float acc = 0.0f;
  for (std::size_t g = 0; g < n / 16; ++g) {
    int isum = 0;
    for (std::size_t i = 16 * g; i < 16 * g + 16; ++i) isum += static_cast<int>(w[i]) * static_cast<int>(x[i]);
    acc += sw[g] * dx[g] * static_cast<float>(isum);
    if (mw != nullptr) acc -= mw[g] * xs[g];
  }
  return acc;
}

inline float dot_f_portable(const float* w, const float* x, std::size_t n) noexcept {
  float acc = 0.0f;
  for (std::size_t i = 0; i < n; ++i) acc += w[i] * x[i];
  return acc;
}

/// The kernels of one instruction-set path.
struct kernels {
  void (*quantize)(const float*, std::size_t, std::int8_t*, float*, float*) noexcept;
  void (*unpack)(weight_type, const unsigned char*, std::size_t, std::int8_t*, float*, float*) noexcept;
  float (*dot_q)(const std::int8_t*, const float*, const float*, const std::int8_t*, const float*, const float*,
                 std::size_t) noexcept;
  float (*dot_f)(const float*, const float*, std::size_t) noexcept;
};

inline kernels portable_kernels() noexcept {
  return {quantize_act_portable, unpack_row_portable, dot_q_portable, dot_f_portable};
}

// ---------------------------------------------------------------------------------------------
// A small persistent thread pool: run(f) calls f(i) for i in [0, n) on n threads (the caller is
// thread 0) and returns when all are done.

class pool {
 public:
  explicit pool(int n) : n_(n) {
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, i] { loop(i); });
  }
  ~pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  int size() const noexcept { return n_; }

  template <class F>
  void run(F& f) {
    if (n_ == 1) {
      f(0);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      fn_ = [](void* c, int i) { (*static_cast<F*>(c))(i); };
      ctx_ = &f;
      pending_.store(n_ - 1, std::memory_order_relaxed);
      ++gen_;
    }
    cv_.notify_all();
    f(0);
    // the workers' share is usually short: spin a little before sleeping
    for (int spin = 0; spin < 20000 && pending_.load(std::memory_order_acquire) != 0; ++spin) std::this_thread::yield();
    if (pending_.load(std::memory_order_acquire) != 0) {
      std::unique_lock<std::mutex> lk(m_);
      done_cv_.wait(lk, [this] { return pending_.load(std::memory_order_acquire) == 0; });
    }
  }

 private:
  void loop(int i) {
    std::uint64_t seen = 0;
    for (;;) {
      void (*fn)(void*, int) = nullptr;
      void* ctx = nullptr;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || gen_ != seen; });
        if (stop_) return;
        seen = gen_;
        fn = fn_;
        ctx = ctx_;
      }
      fn(ctx, i);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(m_);
        done_cv_.notify_one();
      }
    }
  }

  int n_;
  std::vector<std::thread> workers_;
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  std::uint64_t gen_ = 0;
  bool stop_ = false;
  void (*fn_)(void*, int) = nullptr;
  void* ctx_ = nullptr;
  std::atomic<int> pending_{0};
};

// [begin, end) of part i of n equal parts of [0, total), rounded to multiples of `align`.
inline void split(std::size_t total, int i, int n, std::size_t align, std::size_t& begin, std::size_t& end) noexcept {
  const std::size_t units = (total + align - 1) / align;
  begin = std::min(total, units * static_cast<std::size_t>(i) / static_cast<std::size_t>(n) * align);
  end = std::min(total, units * static_cast<std::size_t>(i + 1) / static_cast<std::size_t>(n) * align);
}

}  // namespace detail::cq

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
    if (threads_ > 1) pool_ = std::make_unique<detail::cq::pool>(threads_);
    scratch_.resize(static_cast<std::size_t>(threads_));
  }

  const ffn_layer& layer() const noexcept { return layer_; }
  /// The path actually used (never `best`).
  cpu_isa isa() const noexcept { return isa_; }
  int threads() const noexcept { return threads_; }

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

    const bool gu_q = !detail::cq::type_is_float(layer_.gate_type) || !detail::cq::type_is_float(layer_.up_type);
    const bool d_q = !detail::cq::type_is_float(layer_.down_type);
    grow(xq_, gu_q ? T * H : 0);
    grow(xd_, gu_q ? T * H / 16 : 0);
    grow(xs_, gu_q ? T * H / 16 : 0);
    grow(act_, nnz * F);
    grow(aq_, d_q ? nnz * F : 0);
    grow(ad_, d_q ? nnz * F / 16 : 0);
    grow(as_, d_q ? nnz * F / 16 : 0);
    grow(part_, nnz * H);
    const std::size_t maxn = std::max(H, F);
    for (auto& s : scratch_) {
      grow(s.w, maxn);
      grow(s.sw, maxn / 16 + 1);
      grow(s.mw, maxn / 16 + 1);
      grow(s.f, maxn);
      grow(s.g, T);
    }

    const int n = threads_;
    // 1. quantize the tokens' activations (tokens split over threads)
    auto quant_x = [&](int i) {
      if (!gu_q) return;
      std::size_t b = 0, e = 0;
      detail::cq::split(T, i, n, 1, b, e);
      for (std::size_t t = b; t < e; ++t)
        k_.quantize(a.x + t * H, H, xq_.data() + t * H, xd_.data() + t * H / 16, xs_.data() + t * H / 16);
    };
    dispatch(quant_x);
    // 2. gate / up rows split over threads; activation per (entry, row)
    auto gate_up = [&](int i) {
      std::size_t f0 = 0, f1 = 0;
      detail::cq::split(F, i, n, 4, f0, f1);
      thread_scratch& s = scratch_[static_cast<std::size_t>(i)];
      for (const std::uint32_t e : active_) {
        const expert_weights_view& v = experts_[e];
        const std::uint32_t* ents = list_.data() + eoff_[e];
        const std::size_t m = eoff_[e + 1] - eoff_[e];
        for (std::size_t f = f0; f < f1; ++f) {
          project(layer_.gate_type, v.gate, f, H, ents, m, a.x, s, s.g.data());
          float* act = act_.data();
          const float bg = v.gate_bias ? v.gate_bias[f] : 0.0f;
          for (std::size_t k = 0; k < m; ++k) act[ents[k] * F + f] = s.g[k] + bg;
          project(layer_.up_type, v.up, f, H, ents, m, a.x, s, s.g.data());
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
        k_.quantize(act_.data() + j * F, F, aq_.data() + j * F, ad_.data() + j * F / 16, as_.data() + j * F / 16);
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
        for (std::size_t h = h0; h < h1; ++h) {
          project_down(v.down, h, F, ents, m, s, s.g.data());
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
    std::vector<std::int8_t> w;
    std::vector<float> sw, mw, f, g;
  };

  template <class V>
  static void grow(V& v, std::size_t n) {
    if (v.size() < n) v.resize(n);
  }

  static detail::cq::kernels kernels_for(cpu_isa) noexcept { return detail::cq::portable_kernels(); }

  template <class Fn>
  void dispatch(Fn& f) {
    if (pool_)
      pool_->run(f);
    else
      f(0);
  }

  // out[k] = row f of a gate/up tensor (type t, rows of H values) . x of entry ents[k]
  void project(weight_type t, const void* base, std::size_t f, std::size_t H, const std::uint32_t* ents, std::size_t m,
               const float* x, thread_scratch& s, float* out) const {
    const auto* row = static_cast<const unsigned char*>(base) + f * row_bytes(t, H);
    if (detail::cq::type_is_float(t)) {
      dequantize_row(t, row, s.f.data(), H);
      for (std::size_t k = 0; k < m; ++k) out[k] = k_.dot_f(s.f.data(), x + token_of_[ents[k]] * H, H);
      return;
    }
    k_.unpack(t, row, H, s.w.data(), s.sw.data(), s.mw.data());
    const float* mw = detail::cq::type_has_min(t) ? s.mw.data() : nullptr;
    for (std::size_t k = 0; k < m; ++k) {
      const std::size_t tok = token_of_[ents[k]];
      out[k] = k_.dot_q(s.w.data(), s.sw.data(), mw, xq_.data() + tok * H, xd_.data() + tok * H / 16,
                        xs_.data() + tok * H / 16, H);
    }
  }

  // out[k] = down row h . activated intermediate of entry ents[k]
  void project_down(const void* base, std::size_t h, std::size_t F, const std::uint32_t* ents, std::size_t m,
                    thread_scratch& s, float* out) const {
    const weight_type t = layer_.down_type;
    const auto* row = static_cast<const unsigned char*>(base) + h * row_bytes(t, F);
    if (detail::cq::type_is_float(t)) {
      dequantize_row(t, row, s.f.data(), F);
      for (std::size_t k = 0; k < m; ++k) out[k] = k_.dot_f(s.f.data(), act_.data() + ents[k] * F, F);
      return;
    }
    k_.unpack(t, row, F, s.w.data(), s.sw.data(), s.mw.data());
    const float* mw = detail::cq::type_has_min(t) ? s.mw.data() : nullptr;
    for (std::size_t k = 0; k < m; ++k) {
      const std::size_t j = ents[k];
      out[k] = k_.dot_q(s.w.data(), s.sw.data(), mw, aq_.data() + j * F, ad_.data() + j * F / 16,
                        as_.data() + j * F / 16, F);
    }
  }

  ffn_layer layer_;
  cpu_isa isa_ = cpu_isa::portable;
  detail::cq::kernels k_{};
  int threads_ = 1;
  std::unique_ptr<detail::cq::pool> pool_;
  std::vector<expert_weights_view> experts_;
  std::vector<std::uint32_t> eoff_, cursor_, list_, token_of_, active_;
  std::vector<std::int8_t> xq_, aq_;
  std::vector<float> xd_, xs_, act_, ad_, as_, part_;
  std::vector<thread_scratch> scratch_;
};

}  // namespace moeroute
