// Grouped SwiGLU expert FFN: Vulkan backend vs the Eigen CPU reference, in the same run.
//
// Shapes: qwen3_30b_a3b (E = 128, K = 8, H = 2048, F = 768) and e256 (E = 256, K = 8, H = 2048,
// F = 512: Qwen3.6-35B-A3B / DeepSeek-like expert count). T = 1, 8, 32, 512. Each case runs with
// the full top-8 routing and with the same routing zero-gated to a mean of 5.4 experts per token.
// Vulkan weight types: f32, f16, q8_0 and q4_0 at every shape and T; bf16, q4_1, q5_0, q5_1,
// q2_k .. q6_k, iq4_nl, iq4_xs, mxfp4 and q4_k_m (gate/up q4_k, down q6_k) at qwen3_30b_a3b,
// T = 1 and 512, full routing.
// Counters: GFLOPS (2 * 3 * H * F per routed pair), weight_GBps (bytes of the distinct experts a
// call reads / time), active (routed pairs per token). Times are wall-clock; the CPU column of the
// Vulkan cases is the CPU time of the whole process (all driver threads: on a CPU device such as
// lavapipe it is the work done, and is steadier than wall time on a shared machine).
//
// Quantized CPU FFN (backends/cpu_quant.hpp), cases cpu/qwen3_30b_a3b/<type>/T:<T>/threads:<n> for
// q4_0, q8_0, q4_k, q6_k and mxfp4, T = 1 and 512, 1 and 2 threads, every expert its own memory
// (E blobs side by side); with a ggml peer (MOEROUTE_HAVE_GGML) the same FFN on ggml's CPU backend,
// ggml_cpu/...: MUL_MAT_ID gate and up, swiglu, MUL_MAT_ID down, times the routing weights and
// summed over the K experts (the graph of llama.cpp's build_moe_ffn), weights in ggml's default
// CPU buffer. At T = 1 both cycle through the same 64 routings (routing_sequence), one per
// iteration, so the weights stream from memory rather than the cache. membw/read/threads:<n>
// streams a 1 GiB buffer: the memory bandwidth of this run, so T = 1 weight bytes/s
// (weight_GBps) is given as a share of it at the end.
// ggml peer (only when configured with MOEROUTE_GGML_PEER_DIR pointing at a ggml built with
// Vulkan): ggml_vulkan/qwen3_30b_a3b/<type>/T:<1|512>/{mmid,ffn} run ggml's own Vulkan backend
// (ggml_backend_vk_init) on the same device, same weights (the same stored bytes), same routing:
// mmid is one MUL_MAT_ID (the gate projection, 2 * H * F per routed pair), ffn the whole MoE FFN
// as llama.cpp builds it (gate, up, down MUL_MAT_IDs, SwiGLU, routing weights, sum over the K
// experts; 2 * 3 * H * F per pair). ggml skips CPU devices such as lavapipe unless
// GGML_VK_VISIBLE_DEVICES names them; the benchmark sets it to 0 when it is not set. These cases
// run 20 iterations at T = 1 and one at T = 512 (after a warm-up call), as ggml is the slower side.
//
//   bench_ffn_expert_ffn --benchmark_format=json --benchmark_out=ffn.json
// At the end it prints the ratios between cases of the same run to stderr (see ratio_reporter).
// Options: MOEROUTE_BENCH_FFN_QUICK=1 runs only T = 1 and 512 of the qwen3 shape.
// --benchmark_filter='^(cpu|ggml_cpu|membw)/' runs the quantized CPU comparison alone.
#include <moeroute/backends/cpu_quant.hpp>
#include <moeroute/backends/ffn_types.hpp>

#include "ffn_test_common.hpp"  // tests/: the random routing and activations of the FFN tests

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#if __has_include(<Eigen/Core>)
#include <moeroute/backends/cpu_eigen.hpp>
#define MOEROUTE_BENCH_EIGEN 1
#endif
#if MOEROUTE_HAVE_GGML
#include <ggml-alloc.h>
#include <ggml-backend.h>
#include <ggml-cpu.h>
#include <ggml.h>
#endif
#if __has_include(<vulkan/vulkan.h>)
#include <moeroute/backends/vulkan.hpp>
#include "../vulkan_support.hpp"
#define MOEROUTE_BENCH_VULKAN 1
#endif
#if defined(MOEROUTE_HAVE_GGML_VULKAN) && MOEROUTE_HAVE_GGML_VULKAN
#include <ggml-alloc.h>
#include <ggml-backend.h>
#include <ggml-vulkan.h>
#include <ggml.h>
#define MOEROUTE_BENCH_GGML_VULKAN 1
#endif

namespace {

struct shape_def {
  const char* name;
  int E, K, H, F;
};
const shape_def kShapes[] = {{"qwen3_30b_a3b", 128, 8, 2048, 768}, {"e256", 256, 8, 2048, 512}};

// The weight types of the Vulkan cases (gate, up, down); a case's second argument indexes this
// table. The first four run at every shape and T; the others (every other type, and q4_k_m:
// gate/up Q4_K with down Q6_K as in Q4_K_M files) at the qwen3 shape, T = 1 and 512.
struct type_def {
  const char* name;
  moeroute::weight_type gate, up, down;
};
using wt = moeroute::weight_type;
const type_def kTypes[] = {
    {"f32", wt::f32, wt::f32, wt::f32},          {"f16", wt::f16, wt::f16, wt::f16},
    {"q8_0", wt::q8_0, wt::q8_0, wt::q8_0},      {"q4_0", wt::q4_0, wt::q4_0, wt::q4_0},
    {"bf16", wt::bf16, wt::bf16, wt::bf16},      {"q4_1", wt::q4_1, wt::q4_1, wt::q4_1},
    {"q5_0", wt::q5_0, wt::q5_0, wt::q5_0},      {"q5_1", wt::q5_1, wt::q5_1, wt::q5_1},
    {"q2_k", wt::q2_k, wt::q2_k, wt::q2_k},      {"q3_k", wt::q3_k, wt::q3_k, wt::q3_k},
    {"q4_k", wt::q4_k, wt::q4_k, wt::q4_k},      {"q5_k", wt::q5_k, wt::q5_k, wt::q5_k},
    {"q6_k", wt::q6_k, wt::q6_k, wt::q6_k},      {"iq4_nl", wt::iq4_nl, wt::iq4_nl, wt::iq4_nl},
    {"iq4_xs", wt::iq4_xs, wt::iq4_xs, wt::iq4_xs}, {"mxfp4", wt::mxfp4, wt::mxfp4, wt::mxfp4},
    {"q4_k_m", wt::q4_k, wt::q4_k, wt::q6_k},
};
constexpr int kAllShapeTypes = 4;  // kTypes[0 .. 4) run at every shape and T

moeroute::ffn_layer make_shape(int si, int ti) {
  const shape_def& d = kShapes[si];
  const type_def& t = kTypes[ti];
  return moeroute::ffn_layer(d.E, d.H, d.F, t.gate, t.up, t.down);
}

// One expert blob (random, N(0, 1/sqrt(fan_in))) reused for every slot: the memory traffic is the
// same as with distinct experts since every slot is its own memory.
std::vector<unsigned char> make_blob(const moeroute::ffn_layer& s) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const std::size_t H = static_cast<std::size_t>(s.hidden), F = static_cast<std::size_t>(s.ffn);
  std::vector<float> g(F * H), u(F * H), d(H * F);
  for (auto& v : g) v = nd(rng) / std::sqrt(static_cast<float>(H));
  for (auto& v : u) v = nd(rng) / std::sqrt(static_cast<float>(H));
  for (auto& v : d) v = nd(rng) / std::sqrt(static_cast<float>(F));
  std::vector<unsigned char> blob(s.expert_bytes());
  moeroute::encode_expert(s, g.data(), u.data(), d.data(), blob.data());
  return blob;
}

// Top-K routing with distinct random experts (the tests' generator); with gated, token t keeps
// its first floor(5.4 (t + 1)) - floor(5.4 t) experts (mean 5.4 of 8). Weights renormalized.
moeroute::routing_result make_routing(std::size_t T, int E, int K, bool gated, unsigned seed = 1234) {
  const moeroute::routing_result full = ffn_test::random_routing(T, E, K, seed);
  moeroute::routing_result r;
  r.num_tokens = T;
  r.num_experts = E;
  for (std::size_t t = 0; t < T; ++t) {
    const std::uint32_t b = full.offsets[t];
    const int keep = gated ? static_cast<int>(std::floor(5.4 * static_cast<double>(t + 1)) - std::floor(5.4 * static_cast<double>(t))) : K;
    float sum = 0;
    for (int i = 0; i < keep; ++i) sum += full.weights[b + static_cast<std::uint32_t>(i)];
    for (int i = 0; i < keep; ++i) {
      r.ids.push_back(full.ids[b + static_cast<std::uint32_t>(i)]);
      r.weights.push_back(full.weights[b + static_cast<std::uint32_t>(i)] / sum);
    }
    r.offsets.push_back(static_cast<std::uint32_t>(r.ids.size()));
  }
  return r;
}

std::vector<float> make_x(std::size_t T, const moeroute::ffn_layer& s) {
  ffn_test::problem p;
  p.shape = s;
  ffn_test::random_x(p, T, 99);
  return std::move(p.x);
}

// The routings the cpu/ and ggml_cpu/ cases cycle through, one per iteration, identical for both:
// at T = 1, kT1Routings draws of 8 of the 128 experts (so a run reads every expert's weights, a
// working set of 0.3-0.6 GB, larger than the last-level cache, as a decode step over a real
// model's layers does); at T = 512 one routing (it already routes to every expert).
constexpr std::size_t kT1Routings = 64;
std::vector<moeroute::routing_result> routing_sequence(std::size_t T) {
  std::vector<moeroute::routing_result> seq;
  const std::size_t n = T == 1 ? kT1Routings : 1;
  for (std::size_t i = 0; i < n; ++i)
    seq.push_back(make_routing(T, kShapes[0].E, kShapes[0].K, false, static_cast<unsigned>(1234 + i)));
  return seq;
}

// flops_per_pair: per routed (token, expert) pair; expert_bytes: weight bytes one expert's matrices
// that the call reads.
void set_counters(benchmark::State& state, double flops_per_pair, double expert_bytes, const moeroute::routing_result& r) {
  std::set<int> distinct(r.ids.begin(), r.ids.end());
  const double flops = static_cast<double>(r.nnz()) * flops_per_pair;
  const double bytes = static_cast<double>(distinct.size()) * expert_bytes;
  const double iters = static_cast<double>(state.iterations());
  state.counters["GFLOPS"] = benchmark::Counter(flops * iters * 1e-9, benchmark::Counter::kIsRate);
  state.counters["weight_GBps"] = benchmark::Counter(bytes * iters * 1e-9, benchmark::Counter::kIsRate);
  state.counters["active"] = static_cast<double>(r.nnz()) / static_cast<double>(r.num_tokens);
}

#ifdef MOEROUTE_BENCH_VULKAN
struct vk_cache {
  int si = -1;
  int type = -1;
  std::unique_ptr<moeroute::vulkan_expert_pool> pool;
  std::unique_ptr<moeroute::vulkan_ffn> op;
  std::unique_ptr<moeroute::vulkan_buffer> ws;
  void release() {  // frees the pool (device memory) and the op
    op.reset();
    ws.reset();
    pool.reset();
    si = -1;
  }
};
vk_cache& vk_state() {
  static vk_cache c;
  return c;
}

void BM_vulkan(benchmark::State& state) {
  const int si = static_cast<int>(state.range(0));
  const int type = static_cast<int>(state.range(1));
  const auto T = static_cast<std::size_t>(state.range(2));
  const bool gated = state.range(3) != 0;
  moeroute::vulkan_context* ctx = bench_vulkan_context(state);
  if (!ctx) return;
  vk_cache& c = vk_state();
  const moeroute::ffn_layer s = make_shape(si, type);
  if (c.si != si || c.type != type || !c.op) {
    c.op.reset();
    c.ws.reset();
    c.pool.reset();
    c.pool = std::make_unique<moeroute::vulkan_expert_pool>(*ctx, s, s.num_experts);
    const auto blob = make_blob(s);
    std::vector<std::int32_t> table(static_cast<std::size_t>(s.num_experts));
    for (int e = 0; e < s.num_experts; ++e) {
      c.pool->upload_expert(e, blob.data(), blob.size());
      table[static_cast<std::size_t>(e)] = e;
    }
    c.pool->set_slot_table(table.data(), table.size());
    c.op = std::make_unique<moeroute::vulkan_ffn>(*ctx, *c.pool);
    const moeroute::vulkan_ffn_config cfg{512, 512 * 8};
    const std::string why = c.op->can_implement(cfg);
    if (!why.empty()) {
      state.SkipWithError(why.c_str());
      c.op.reset();
      return;
    }
    c.ws = std::make_unique<moeroute::vulkan_buffer>(ctx->make_buffer(c.op->workspace_size(cfg), false));
    c.op->initialize(cfg, *c.ws);
    c.si = si;
    c.type = type;
  }
  const auto r = make_routing(T, kShapes[si].E, kShapes[si].K, gated);
  const auto x = make_x(T, s);
  std::vector<float> y(x.size());
  const moeroute::ffn_args a{r.view(), x.data(), y.data()};
  c.op->forward(a);  // warm-up
  for (auto _ : state) {
    c.op->forward(a);
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, s.flops_per_pair(), static_cast<double>(s.expert_bytes()), r);
  state.SetLabel(ctx->device_name());
}
#endif

#ifdef MOEROUTE_BENCH_EIGEN
void BM_eigen(benchmark::State& state) {
#ifdef MOEROUTE_BENCH_VULKAN
  vk_state().release();  // free the Vulkan pool before the CPU copy of the weights is built
#endif
  static int cached_si = -1;
  static std::unique_ptr<moeroute::cpu_ffn> op;
  const int si = static_cast<int>(state.range(0));
  const auto T = static_cast<std::size_t>(state.range(2));
  const bool gated = state.range(3) != 0;
  const moeroute::ffn_layer s = make_shape(si, 0);
  if (cached_si != si) {
    op.reset();
    op = std::make_unique<moeroute::cpu_ffn>(s, s.num_experts);
    const auto blob = make_blob(s);
    std::vector<std::int32_t> table(static_cast<std::size_t>(s.num_experts));
    for (int e = 0; e < s.num_experts; ++e) {
      op->upload_expert(e, blob.data(), blob.size());
      table[static_cast<std::size_t>(e)] = e;
    }
    op->set_slot_table(table.data(), table.size());
    cached_si = si;
  }
  const auto r = make_routing(T, kShapes[si].E, kShapes[si].K, gated);
  const auto x = make_x(T, s);
  std::vector<float> y(x.size());
  const moeroute::ffn_args a{r.view(), x.data(), y.data()};
  std::vector<float> ws(op->workspace_size(a) / 4 + 1);
  op->initialize(a, ws.data());
  for (auto _ : state) {
    op->run();
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, s.flops_per_pair(), static_cast<double>(s.expert_bytes()), r);
  state.SetLabel("eigen f32, 1 thread");
}
#endif

// ---- quantized CPU FFN against ggml's CPU backend ----

// The types of the cpu/ and ggml_cpu/ cases (the third argument indexes kTypes).
const int kCpuTypes[] = {3, 2, 10, 12, 15};  // q4_0, q8_0, q4_k, q6_k, mxfp4

// E expert blobs side by side (one random expert copied E times: each expert its own memory).
struct cpu_layer {
  int type = -1;
  std::vector<unsigned char> all;
};
cpu_layer& cpu_state() {
  static cpu_layer c;
  return c;
}
const cpu_layer& cpu_weights(int type) {
  cpu_layer& c = cpu_state();
  if (c.type != type) {
    const moeroute::ffn_layer s = make_shape(0, type);
    const std::vector<unsigned char> blob = make_blob(s);
    c.all.assign(static_cast<std::size_t>(s.num_experts) * blob.size(), 0);
    for (int e = 0; e < s.num_experts; ++e)
      std::copy(blob.begin(), blob.end(), c.all.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(e) * blob.size()));
    c.type = type;
  }
  return c;
}

void BM_cpu_quant(benchmark::State& state) {
  const int type = static_cast<int>(state.range(0));
  const auto T = static_cast<std::size_t>(state.range(1));
  const int threads = static_cast<int>(state.range(2));
  const moeroute::ffn_layer s = make_shape(0, type);
  const cpu_layer& w = cpu_weights(type);
  moeroute::cpu_quant_ffn op(s, {threads, moeroute::cpu_isa::best});
  for (int e = 0; e < s.num_experts; ++e) op.set_expert_blob(e, w.all.data() + static_cast<std::size_t>(e) * s.expert_bytes());
  const auto seq = routing_sequence(T);
  const auto x = make_x(T, s);
  std::vector<float> y(x.size());
  op.run({seq[0].view(), x.data(), y.data()});  // warm-up: workspace
  std::size_t it = 1;
  for (auto _ : state) {
    op.run({seq[it++ % seq.size()].view(), x.data(), y.data()});
    benchmark::DoNotOptimize(y.data());
  }
  set_counters(state, s.flops_per_pair(), static_cast<double>(s.expert_bytes()), seq[0]);  // every call: K distinct
  state.SetLabel(std::string("moeroute cpu_quant_ffn, ") + moeroute::cpu_isa_name(op.isa()));
}

// Streams `bytes` of a buffer much larger than the caches on n threads; GBps counter.
void BM_membw(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  static std::vector<std::uint64_t> buf;
  const std::size_t words = (std::size_t{1} << 30) / 8;
  if (buf.size() != words) {
    buf.assign(words, 0);
    for (std::size_t i = 0; i < words; i += 512) buf[i] = i;
  }
  std::vector<std::uint64_t> sums(static_cast<std::size_t>(n) * 8);
  auto part = [&](int i) {
    const std::size_t b = words * static_cast<std::size_t>(i) / static_cast<std::size_t>(n);
    const std::size_t e = words * static_cast<std::size_t>(i + 1) / static_cast<std::size_t>(n);
    std::uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (std::size_t k = b; k + 4 <= e; k += 4) {
      a0 += buf[k];
      a1 += buf[k + 1];
      a2 += buf[k + 2];
      a3 += buf[k + 3];
    }
    sums[static_cast<std::size_t>(i) * 8] = a0 + a1 + a2 + a3;
  };
  for (auto _ : state) {
    std::vector<std::thread> ts;
    for (int i = 1; i < n; ++i) ts.emplace_back(part, i);
    part(0);
    for (auto& t : ts) t.join();
    benchmark::DoNotOptimize(sums.data());
  }
  state.counters["GBps"] = benchmark::Counter(static_cast<double>(words * 8) * static_cast<double>(state.iterations()) * 1e-9,
                                              benchmark::Counter::kIsRate);
}

#if MOEROUTE_HAVE_GGML
// The expert weights of one type in a ggml backend's memory, as ggml lays out MoE expert tensors
// (ne {H, F, E}, {H, F, E}, {F, H, E}), filled with the moeroute blob's bytes (the same stored
// format: moeroute's type ids and block layouts are ggml's). One per ggml backend (CPU, Vulkan).
struct ggml_expert_weights {
  int type = -1;
  ggml_backend_t backend = nullptr;
  ggml_context* ctx = nullptr;
  ggml_backend_buffer_t buf = nullptr;
  ggml_tensor *gate = nullptr, *up = nullptr, *down = nullptr;
  std::string device;  // the label of the cases that use it
  void reset() {
    if (buf) ggml_backend_buffer_free(buf);
    if (ctx) ggml_free(ctx);
    buf = nullptr;
    ctx = nullptr;
    type = -1;
  }
  ~ggml_expert_weights() {
    reset();
    if (backend) ggml_backend_free(backend);
  }
  // Loads the weights of kTypes[type] in the qwen3_30b_a3b shape (kept when already loaded).
  // Empty on success, else why the case cannot run.
  std::string load(int t) {
    if (type == t) return {};
    reset();
    const moeroute::ffn_layer s = make_shape(0, t);
    const auto gt = static_cast<ggml_type>(static_cast<std::uint32_t>(s.gate_type));
    const auto ut = static_cast<ggml_type>(static_cast<std::uint32_t>(s.up_type));
    const auto dt = static_cast<ggml_type>(static_cast<std::uint32_t>(s.down_type));
    const std::int64_t H = s.hidden, F = s.ffn, E = s.num_experts;
    if (ggml_row_size(gt, H) * static_cast<std::size_t>(F) != s.gate_bytes() ||
        ggml_row_size(ut, H) * static_cast<std::size_t>(F) != s.up_bytes() ||
        ggml_row_size(dt, F) * static_cast<std::size_t>(H) != s.down_bytes())
      return "ggml's row size differs from moeroute's for this type";
    ggml_init_params ip{3 * ggml_tensor_overhead(), nullptr, true};
    ctx = ggml_init(ip);
    gate = ggml_new_tensor_3d(ctx, gt, H, F, E);
    up = ggml_new_tensor_3d(ctx, ut, H, F, E);
    down = ggml_new_tensor_3d(ctx, dt, F, H, E);
    buf = ggml_backend_alloc_ctx_tensors(ctx, backend);
    if (!buf) return "ggml could not allocate the expert weights";
    const std::vector<unsigned char> blob = make_blob(s);  // the bytes of the moeroute cases' experts
    for (std::int64_t e = 0; e < E; ++e) {
      const auto ue = static_cast<std::size_t>(e);
      ggml_backend_tensor_set(gate, blob.data() + s.gate_offset(), ue * s.gate_bytes(), s.gate_bytes());
      ggml_backend_tensor_set(up, blob.data() + s.up_offset(), ue * s.up_bytes(), s.up_bytes());
      ggml_backend_tensor_set(down, blob.data() + s.down_offset(), ue * s.down_bytes(), s.down_bytes());
    }
    type = t;
    return {};
  }
};

// The layer as llama.cpp's build_moe_ffn builds it: gate and up MUL_MAT_ID, swiglu, down
// MUL_MAT_ID, times the routing weights, summed over the K experts. x [H, 1, T], ids [K, T],
// wts [1, K, T]; returns y [H, T].
ggml_tensor* ggml_moe_ffn(ggml_context* c, const ggml_expert_weights& w, ggml_tensor* x, ggml_tensor* ids,
                          ggml_tensor* wts) {
  const std::int64_t H = w.down->ne[1], T = x->ne[2], K = ids->ne[0];
  ggml_tensor* gate = ggml_mul_mat_id(c, w.gate, x, ids);  // [F, K, T]
  ggml_tensor* up = ggml_mul_mat_id(c, w.up, x, ids);      // [F, K, T]
  ggml_tensor* act = ggml_swiglu_split(c, gate, up);       // silu(gate) * up
  ggml_tensor* d = ggml_mul(c, ggml_mul_mat_id(c, w.down, act, ids), wts);  // [H, K, T]
  ggml_tensor* out = ggml_view_2d(c, d, H, T, d->nb[2], 0);
  for (std::int64_t k = 1; k < K; ++k)
    out = ggml_add(c, out, ggml_view_2d(c, d, H, T, d->nb[2], static_cast<std::size_t>(k) * d->nb[1]));
  return out;
}

// ggml's CPU backend computing the same layer (ggml_moe_ffn).
ggml_expert_weights& ggml_cpu_state() {
  static ggml_expert_weights g;
  return g;
}

void BM_ggml_cpu(benchmark::State& state) {
  const int type = static_cast<int>(state.range(0));
  const auto T = static_cast<std::size_t>(state.range(1));
  const int threads = static_cast<int>(state.range(2));
  const moeroute::ffn_layer s = make_shape(0, type);
  const std::int64_t H = s.hidden, K = kShapes[0].K;
  ggml_expert_weights& g = ggml_cpu_state();
  if (!g.backend) g.backend = ggml_backend_cpu_init();
  const std::string why = g.load(type);
  if (!why.empty()) {
    state.SkipWithError(why.c_str());
    return;
  }
  ggml_backend_cpu_set_n_threads(g.backend, threads);
  const auto seq = routing_sequence(T);
  const moeroute::routing_result& r = seq[0];
  const auto x = make_x(T, s);

  ggml_init_params gp{ggml_tensor_overhead() * 64 + ggml_graph_overhead(), nullptr, true};
  ggml_context* ctx = ggml_init(gp);
  const auto nt = static_cast<std::int64_t>(T);
  ggml_tensor* cur = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, H, 1, nt);
  ggml_tensor* ids = ggml_new_tensor_2d(ctx, GGML_TYPE_I32, K, nt);
  ggml_tensor* wts = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, 1, K, nt);
  ggml_tensor* out = ggml_moe_ffn(ctx, g, cur, ids, wts);
  ggml_cgraph* gf = ggml_new_graph(ctx);
  ggml_build_forward_expand(gf, out);
  ggml_gallocr_t alloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(g.backend));
  ggml_gallocr_alloc_graph(alloc, gf);
  ggml_backend_tensor_set(cur, x.data(), 0, x.size() * 4);
  ggml_backend_tensor_set(ids, r.ids.data(), 0, r.ids.size() * 4);
  ggml_backend_tensor_set(wts, r.weights.data(), 0, r.weights.size() * 4);
  ggml_backend_graph_compute(g.backend, gf);  // warm-up
  std::size_t it = 1;
  for (auto _ : state) {
    if (seq.size() > 1) {  // the next routing of the sequence, as the cpu/ case
      const moeroute::routing_result& ri = seq[it++ % seq.size()];
      ggml_backend_tensor_set(ids, ri.ids.data(), 0, ri.ids.size() * 4);
      ggml_backend_tensor_set(wts, ri.weights.data(), 0, ri.weights.size() * 4);
    }
    ggml_backend_graph_compute(g.backend, gf);
  }
  set_counters(state, s.flops_per_pair(), static_cast<double>(s.expert_bytes()), r);  // every call: K distinct
  state.SetLabel("ggml CPU backend, MUL_MAT_ID x3 + swiglu + weighted sum");
  ggml_gallocr_free(alloc);
  ggml_free(ctx);
}
#endif

void register_cpu_quant() {
  for (int ti : kCpuTypes)
    for (int T : {1, 512})
      for (int n : {1, 2}) {
        const std::string rest = std::string("/qwen3_30b_a3b/") + kTypes[ti].name + "/T:" + std::to_string(T) +
                                 "/threads:" + std::to_string(n);
        const int it = T >= 512 ? 2 : static_cast<int>(kT1Routings);
        benchmark::RegisterBenchmark(("cpu" + rest).c_str(), BM_cpu_quant)
            ->Args({ti, T, n})->Iterations(it)->UseRealTime()->Unit(benchmark::kMillisecond);
#if MOEROUTE_HAVE_GGML
        benchmark::RegisterBenchmark(("ggml_cpu" + rest).c_str(), BM_ggml_cpu)
            ->Args({ti, T, n})->Iterations(it)->UseRealTime()->Unit(benchmark::kMillisecond);
#endif
      }
  for (int n : {1, 2})
    benchmark::RegisterBenchmark(("membw/read/threads:" + std::to_string(n)).c_str(), BM_membw)
        ->Args({n})->Iterations(5)->UseRealTime()->Unit(benchmark::kMillisecond);
}

#ifdef MOEROUTE_BENCH_GGML_VULKAN
// ggml's Vulkan backend with the expert weights of one type.
ggml_expert_weights& ggml_vk_state() {
  static ggml_expert_weights w;
  return w;
}

// Empty on success, else why the case cannot run.
std::string ggml_vk_prepare(int type) {
  ggml_expert_weights& w = ggml_vk_state();
  if (!w.backend) {
    setenv("GGML_VK_VISIBLE_DEVICES", "0", 0);  // ggml skips CPU devices (lavapipe) otherwise
    if (ggml_backend_vk_get_device_count() < 1) return "ggml: no Vulkan device";
    w.backend = ggml_backend_vk_init(0);
    if (!w.backend) return "ggml_backend_vk_init(0) failed";
    char desc[256] = {};
    ggml_backend_vk_get_device_description(0, desc, sizeof desc);
    w.device = std::string("ggml vulkan: ") + desc;
  }
#ifdef MOEROUTE_BENCH_VULKAN
  // free moeroute's Vulkan pool first: both live in the same device memory
  if (w.type != type) vk_state().release();
#endif
  return w.load(type);
}

// range(1): type, range(2): T, range(3): 0 = one MUL_MAT_ID (gate), 1 = the whole FFN.
void BM_ggml_vulkan(benchmark::State& state) {
  const int type = static_cast<int>(state.range(1));
  const auto T = static_cast<std::int64_t>(state.range(2));
  const bool ffn = state.range(3) != 0;
  const std::string why = ggml_vk_prepare(type);
  if (!why.empty()) {
    state.SkipWithError(why.c_str());
    return;
  }
  ggml_expert_weights& w = ggml_vk_state();
  const moeroute::ffn_layer s = make_shape(0, type);
  const std::int64_t H = s.hidden, K = kShapes[0].K;
  const auto r = make_routing(static_cast<std::size_t>(T), kShapes[0].E, kShapes[0].K, false);
  const auto xv = make_x(static_cast<std::size_t>(T), s);

  ggml_init_params ip{64 * ggml_tensor_overhead() + ggml_graph_overhead(), nullptr, true};
  ggml_context* gctx = ggml_init(ip);
  ggml_tensor* x = ggml_new_tensor_3d(gctx, GGML_TYPE_F32, H, 1, T);
  ggml_tensor* ids = ggml_new_tensor_2d(gctx, GGML_TYPE_I32, K, T);
  ggml_tensor* wts = ggml_new_tensor_3d(gctx, GGML_TYPE_F32, 1, K, T);
  ggml_set_input(x);
  ggml_set_input(ids);
  ggml_set_input(wts);
  ggml_tensor* out = ffn ? ggml_moe_ffn(gctx, w, x, ids, wts) : ggml_mul_mat_id(gctx, w.gate, x, ids);
  ggml_set_output(out);
  ggml_cgraph* graph = ggml_new_graph(gctx);
  ggml_build_forward_expand(graph, out);
  ggml_gallocr_t galloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(w.backend));
  if (!ggml_gallocr_alloc_graph(galloc, graph)) {
    ggml_gallocr_free(galloc);
    ggml_free(gctx);
    state.SkipWithError("ggml could not allocate the graph");
    return;
  }
  std::vector<float> y(static_cast<std::size_t>(ggml_nelements(out)));
  auto call = [&] {  // as moeroute's forward(): inputs in, compute, output out
    ggml_backend_tensor_set(x, xv.data(), 0, ggml_nbytes(x));
    ggml_backend_tensor_set(ids, r.ids.data(), 0, ggml_nbytes(ids));
    if (ffn) ggml_backend_tensor_set(wts, r.weights.data(), 0, ggml_nbytes(wts));  // not in the mmid graph
    ggml_backend_graph_compute(w.backend, graph);
    ggml_backend_tensor_get(out, y.data(), 0, ggml_nbytes(out));
  };
  call();  // warm-up (ggml builds its pipelines on first use)
  for (auto _ : state) {
    call();
    benchmark::DoNotOptimize(y.data());
  }
  ggml_gallocr_free(galloc);
  ggml_free(gctx);
  const double mat_flops = 2.0 * static_cast<double>(s.hidden) * static_cast<double>(s.ffn);
  if (ffn)
    set_counters(state, 3 * mat_flops, static_cast<double>(s.expert_bytes()), r);
  else
    set_counters(state, mat_flops, static_cast<double>(s.gate_bytes()), r);
  state.SetLabel(w.device);
}

// The types of the ggml peer cases (kTypes indices by name).
const char* const kGgmlTypes[] = {"q4_0", "q4_k", "q6_k", "iq4_xs", "mxfp4"};
#endif

void register_all() {
  const bool quick = std::getenv("MOEROUTE_BENCH_FFN_QUICK") != nullptr;
  const std::vector<int> shapes = quick ? std::vector<int>{0} : std::vector<int>{0, 1};
  const std::vector<int> tokens = quick ? std::vector<int>{1, 512} : std::vector<int>{1, 8, 32, 512};
  auto name = [&](const char* impl, int si, int t, int T, int g) {
    return std::string(impl) + "/" + kShapes[si].name + "/" + kTypes[t].name + "/T:" + std::to_string(T) +
           (g ? "/gated_5.4" : "/full");
  };
  auto iters = [](int T) { return T >= 512 ? 2 : (T >= 32 ? 5 : (T >= 8 ? 20 : 100)); };
#ifdef MOEROUTE_BENCH_VULKAN
  auto add_vulkan = [&](int si, int t, int T, int g) {
    benchmark::RegisterBenchmark(name("vulkan", si, t, T, g).c_str(), BM_vulkan)
        ->Args({si, t, T, g})->Iterations(iters(T))->MeasureProcessCPUTime()->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  };
  for (int si : shapes)
    for (int t = 0; t < kAllShapeTypes; ++t)
      for (int T : tokens)
        for (int g = 0; g < 2; ++g) add_vulkan(si, t, T, g);
  for (int t = kAllShapeTypes; t < static_cast<int>(std::size(kTypes)); ++t)
    for (int T : {1, 512}) add_vulkan(0, t, T, 0);
#endif
#ifdef MOEROUTE_BENCH_GGML_VULKAN
  for (const char* tn : kGgmlTypes) {
    int t = 0;
    while (std::string(kTypes[t].name) != tn) ++t;
    for (int T : {1, 512})
      for (int v = 0; v < 2; ++v)
        benchmark::RegisterBenchmark((std::string("ggml_vulkan/") + kShapes[0].name + "/" + tn + "/T:" + std::to_string(T) +
                                      (v ? "/ffn" : "/mmid")).c_str(),
                                     BM_ggml_vulkan)
            ->Args({0, t, T, v})->Iterations(T >= 512 ? 1 : 20)->MeasureProcessCPUTime()->UseRealTime()
            ->Unit(benchmark::kMillisecond);
  }
#endif
#ifdef MOEROUTE_BENCH_EIGEN
  for (int si : shapes)
    for (int T : tokens)
      for (int g = 0; g < 2; ++g)
        benchmark::RegisterBenchmark(name("eigen", si, 0, T, g).c_str(), BM_eigen)
            ->Args({si, 0, T, g})->Iterations(iters(T))->UseRealTime()->Unit(benchmark::kMillisecond);
#endif
  register_cpu_quant();
}

// Forwards everything to the display reporter chosen by --benchmark_format and, at the end,
// prints the ratios between cases of this run to stderr (stdout stays valid JSON):
// Vulkan / Eigen time (target <= 2 at T = 512 f32), zero-gated / full time (bound 5.4/8 + 0.1),
// and moeroute's whole-FFN GFLOPS against ggml's Vulkan MUL_MAT_ID (mmid) and whole FFN (ffn)
// measured in the same run on the same device (target >= 3x the MUL_MAT_ID at T = 1 for q4_k,
// q6_k, iq4_xs, mxfp4). With repetitions, medians.
class ratio_reporter : public benchmark::BenchmarkReporter {
 public:
  explicit ratio_reporter(benchmark::BenchmarkReporter* display) : display_(display) {}
  bool ReportContext(const Context& c) override { return display_->ReportContext(c); }
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      // the repetitions, or only their median with --benchmark_report_aggregates_only
      const bool median_run = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      if ((r.run_type != Run::RT_Iteration && !median_run) || r.error_occurred) continue;
      const std::string key = case_key(r.benchmark_name());
      auto& m = median_run ? med_ : all_;
      m.times[key].push_back(r.GetAdjustedRealTime());
      m.cpu_times[key].push_back(r.GetAdjustedCPUTime());
      const auto g = r.counters.find("GFLOPS");
      if (g != r.counters.end()) m.gflops[key].push_back(g->second.value);
      for (const char* c : {"weight_GBps", "GBps"}) {
        const auto b = r.counters.find(c);
        if (b != r.counters.end()) m.gbps[key].push_back(b->second.value);
      }
      if (!r.report_label.empty()) label_[key] = r.report_label;
    }
    display_->ReportRuns(runs);
  }
  void Finalize() override {
    display_->Finalize();
    // Google Benchmark's own median where it gave one, else the median of the repetitions
    times_ = merged(all_.times, med_.times);
    cpu_times_ = merged(all_.cpu_times, med_.cpu_times);
    gflops_ = merged(all_.gflops, med_.gflops);
    gbps_ = merged(all_.gbps, med_.gbps);
    std::ostream& out = GetErrorStream();
    bool header = false;
    auto line = [&](const std::string& what, double v, const char* unit, const std::string& verdict) {
      if (!header) out << "ratios between cases of this run (medians):\n";
      header = true;
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.2f%s", v, unit);
      out << "  " << what << ": " << buf << (verdict.empty() ? "" : "  " + verdict) << "\n";
    };
    for (const auto& [key, t] : times_) {
      if (key.rfind("vulkan/", 0) != 0) continue;
      const std::string rest = key.substr(7);  // shape/type/T:n/variant
      const double vt = median(t);
      const auto eig = times_.find("eigen/" + rest);
      if (eig != times_.end()) {
        const double r = vt / median(eig->second);
        const bool target = rest.find("/f32/T:512/full") != std::string::npos;
        line("vulkan / eigen time, " + rest, r, "x", target ? (r <= 2 ? "(target <= 2x: met)" : "(target <= 2x: NOT met)") : "");
      }
      const std::string full_suffix = "/full";
      if (key.size() > full_suffix.size() && key.compare(key.size() - full_suffix.size(), full_suffix.size(), full_suffix) == 0) {
        const std::string base = key.substr(0, key.size() - full_suffix.size());
        const auto gated = times_.find(base + "/gated_5.4");
        if (gated != times_.end()) {
          const double q = median(gated->second) / vt;
          line("zero-gated (5.4 of 8) / full time, " + base.substr(7), q, "",
               q <= 5.4 / 8 + 0.1 ? "(bound 0.775: met)" : "(bound 0.775: NOT met)");
        }
        for (const char* v : {"/mmid", "/ffn"}) {
          const std::string peer = "ggml_" + base + v;  // ggml_vulkan/shape/type/T:n/variant
          if (!gflops_.count(key) || !gflops_.count(peer)) continue;
          const double ratio = median(gflops_[key]) / median(gflops_[peer]);
          const bool targeted = std::string(v) == "/mmid" && base.size() > 4 && base.compare(base.size() - 4, 4, "/T:1") == 0 &&
                                (base.find("/q4_k/") != std::string::npos || base.find("/q6_k/") != std::string::npos ||
                                 base.find("/iq4_xs/") != std::string::npos || base.find("/mxfp4/") != std::string::npos);
          line(std::string("GFLOPS moeroute FFN / ggml ") + (v[1] == 'm' ? "MUL_MAT_ID" : "FFN") + " (same run), " +
                   base.substr(7),
               ratio, "x", targeted ? (ratio >= 3 ? "(target >= 3x: met)" : "(target >= 3x: NOT met)") : "");
        }
      }
    }
    // quantized CPU FFN: GFLOPS / ggml's (target >= 1x), and T = 1 weight bytes/s / bandwidth
    for (const auto& [key, gf] : gflops_) {
      if (key.rfind("cpu/", 0) != 0) continue;
      const std::string rest = key.substr(4);  // shape/type/T:n/threads:n
      const auto peer = gflops_.find("ggml_cpu/" + rest);
      if (peer != gflops_.end()) {
        const double q = median(gf) / median(peer->second);
        line("cpu / ggml_cpu GFLOPS, " + rest + " (" + fmt(median(gf)) + " / " + fmt(median(peer->second)) + ")", q, "x",
             q >= 1.0 ? "(target >= 1x: met)" : "(target >= 1x: NOT met)");
      }
      if (peer != gflops_.end() && rest.find("/threads:1") != std::string::npos) {
        // one thread: the calling thread's CPU time, steadier than wall time on a shared machine
        const double q = median(cpu_times_["ggml_cpu/" + rest]) / median(cpu_times_[key]);
        line("cpu / ggml_cpu per CPU-second (1 thread), " + rest, q, "x",
             q >= 1.0 ? "(target >= 1x: met)" : "(target >= 1x: NOT met)");
      }
      const std::string th = rest.substr(rest.rfind('/') + 1);  // threads:n
      auto bw = gbps_.lower_bound("membw/read/" + th + "/");
      if (bw != gbps_.end() && bw->first.rfind("membw/read/" + th + "/", 0) != 0) bw = gbps_.end();
      if (rest.find("/T:1/") != std::string::npos && bw != gbps_.end() && gbps_.count(key)) {
        const double share = 100.0 * median(gbps_[key]) / median(bw->second);
        line("cpu weight bytes/s / memory bandwidth (" + th + ", " + fmt(median(bw->second)) + " GB/s), " + rest, share,
             "%", share >= 60.0 ? "(target >= 60%: met)" : "(target >= 60%: NOT met)");
      }
    }
  }

 private:
  static std::string case_key(const std::string& name) {  // impl/shape/type/T:n/variant
    std::size_t pos = 0;
    for (int i = 0; i < 5 && pos != std::string::npos; ++i) pos = name.find('/', pos + (i ? 1 : 0));
    return pos == std::string::npos ? name : name.substr(0, pos);
  }
  static std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.1f", v);
    return b;
  }
  static double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
  }

  using series = std::map<std::string, std::vector<double>>;
  static series merged(series all, const series& med) {
    for (const auto& [k, v] : med) all[k] = v;
    return all;
  }

  std::unique_ptr<benchmark::BenchmarkReporter> display_;
  struct samples {
    series times, cpu_times, gflops, gbps;
  } all_, med_;
  series times_, cpu_times_, gflops_, gbps_;
  std::map<std::string, std::string> label_;
};

}  // namespace

int main(int argc, char** argv) {
  register_all();
#ifdef MOEROUTE_BENCH_NATIVE
  benchmark::AddCustomContext("moeroute_native", "-march=native");
#else
  benchmark::AddCustomContext("moeroute_native", "off");
#endif
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  ratio_reporter reporter(benchmark::CreateDefaultDisplayReporter());
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
