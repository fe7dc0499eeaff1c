// Router throughput on every instruction-set path (routing/isa.hpp), against the time to stream
// the same logits from memory and, when the benchmarks link a ggml peer (MOEROUTE_HAVE_GGML), ggml's
// CPU routing graph for the same router, all in the same run.
//   bench_routing_router --benchmark_format=json
// Cases: router/<router>/<isa>/E:<E>/T:<T> and ggml/<router>/E:<E>/T:<T>. Counters: ns_per_token
// (router, thread CPU time: the figure that holds on a shared machine), wall_ns_per_token,
// us_per_call (CPU), stream_ns_per_token (a plain read of the logits, CPU), x_stream (their ratio:
// 1.0 would be routing at memory speed). At the end, a table of the paths' ratios to portable and
// to ggml per router (E = 256, T = 512 and T = 1) goes to stderr.

#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <ctime>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "moeroute/routing/presets.hpp"

#if MOEROUTE_HAVE_GGML
#include <ggml-cpu.h>
#include <ggml.h>
#endif

namespace {
using clk = std::chrono::steady_clock;

double thread_cpu_s() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}
constexpr int kTopK = 8;

std::vector<float> make_logits(std::size_t T, int E) {
  std::mt19937 rng(42);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> x(T * static_cast<std::size_t>(E));
  for (auto& v : x) v = d(rng);
  return x;
}

std::vector<float> make_bias(int E) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-0.05f, 0.05f);
  std::vector<float> bias;
  for (int e = 0; e < E; ++e) bias.push_back(u(rng));
  return bias;
}

// Reads every byte of the logits once (integer xor: vectorizes, no float dependency chain).
std::uint32_t stream_read(const float* x, std::size_t n) {
  std::uint32_t acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) {
      std::uint32_t u;
      std::memcpy(&u, x + i + j, 4);
      acc[j] ^= u;
    }
  for (; i < n; ++i) {
    std::uint32_t u;
    std::memcpy(&u, x + i, 4);
    acc[0] ^= u;
  }
  return acc[0] ^ acc[1] ^ acc[2] ^ acc[3] ^ acc[4] ^ acc[5] ^ acc[6] ^ acc[7];
}

// ns per token of every case, for the ratio table at the end
std::map<std::string, double>& results() {
  static std::map<std::string, double> r;
  return r;
}

void finish(benchmark::State& state, const std::string& key, double route_s, double wall_s,
            std::size_t iters, const float* x, std::size_t n, std::size_t T) {
  std::uint32_t sink = 0;  // the baseline: the same number of passes over the same bytes
  const double t0 = thread_cpu_s();
  for (std::size_t i = 0; i < iters; ++i) {
    sink ^= stream_read(x, n);
    benchmark::DoNotOptimize(sink);
  }
  const double stream_s = thread_cpu_s() - t0;
  const double tokens = static_cast<double>(T) * static_cast<double>(iters);
  const double ns = route_s * 1e9 / tokens;
  state.counters["ns_per_token"] = ns;
  state.counters["wall_ns_per_token"] = wall_s * 1e9 / tokens;
  state.counters["us_per_call"] = route_s * 1e6 / static_cast<double>(iters);
  state.counters["stream_ns_per_token"] = stream_s * 1e9 / tokens;
  state.counters["x_stream"] = route_s / stream_s;
  state.SetItemsProcessed(static_cast<std::int64_t>(tokens));
  state.SetBytesProcessed(static_cast<std::int64_t>(static_cast<double>(n) / static_cast<double>(T) * tokens * sizeof(float)));
  results()[key] = ns;
}

void run(benchmark::State& state, const moeroute::router_config& cfg, moeroute::routing_isa isa,
         std::size_t T, const std::string& key) {
  const int E = cfg.num_experts;
  const auto x = make_logits(T, E);
  moeroute::any_router r(cfg, cfg.uses_bias ? make_bias(E) : std::vector<float>{});
  std::vector<std::uint32_t> off(T + 1);
  std::vector<std::int32_t> ids(r.max_nnz(T));
  std::vector<float> w(r.max_nnz(T));
  std::vector<unsigned char> ws(r.workspace_size());
  const moeroute::logits_view<float> view(x.data(), T, static_cast<std::size_t>(E));
  const moeroute::routing_output out{off.data(), ids.data(), w.data(), ids.size()};
  moeroute::set_routing_isa(isa);

  // timed around the whole loop: reading the thread CPU clock is a system call, too slow per call
  std::size_t iters = 0;
  const auto w0 = clk::now();
  const double t0 = thread_cpu_s();
  for (auto _ : state) {
    r.route(view, out, ws.data());
    benchmark::ClobberMemory();
    ++iters;
  }
  const double route_s = thread_cpu_s() - t0;
  const double wall_s = std::chrono::duration<double>(clk::now() - w0).count();
  moeroute::set_routing_isa(moeroute::routing_isa::best);
  state.counters["mean_active"] = static_cast<double>(off[T]) / static_cast<double>(T);
  finish(state, key, route_s, wall_s, iters, x.data(), x.size(), T);
}

moeroute::router_config softmax_renorm(int E) {
  moeroute::router_config c;
  c.name = "softmax-renorm";
  c.num_experts = E;
  c.top_k = kTopK;
  c.renorm = true;
  return c;
}

moeroute::router_config deepseek_like(int E) {
  auto c = moeroute::preset("deepseek-v3");  // sigmoid + bias, 8 groups (of E/8), 4 kept, K = 8
  c.num_experts = E;
  return c;
}

moeroute::router_config zero_gated(int E) {
  auto c = softmax_renorm(E);
  c.cum_prob = 0.75;
  c.min_k = 2;
  return c;
}

#if MOEROUTE_HAVE_GGML
// ggml's CPU routing graph as llama.cpp's build_moe_ffn builds it from the router logits, written
// against ggml's public API: probs = softmax | sigmoid; selection = probs (+ bias); with expert
// groups: each group's two largest (argsort_top_k + get_rows), their sum (sum_rows), the best groups
// (argsort_top_k), the other groups' experts set to -inf (fill + get_rows + set_rows); then the
// K experts (argsort_top_k), their probs (get_rows), renorm (sum_rows + div) and the scale.
void run_ggml(benchmark::State& state, const moeroute::router_config& cfg, std::size_t T,
              const std::string& key) {
  const int E = cfg.num_experts, K = cfg.top_k;
  const auto x = make_logits(T, E);
  const auto bias = make_bias(E);
  ggml_init_params ip{};
  ip.mem_size = 64u * 1024 * 1024 + T * static_cast<std::size_t>(E) * 4 * 16;
  ip.no_alloc = false;
  ggml_context* ctx = ggml_init(ip);
  const auto t = static_cast<std::int64_t>(T);
  ggml_tensor* logits = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, E, t);
  std::memcpy(logits->data, x.data(), x.size() * sizeof(float));
  const bool sigmoid = cfg.scoring == moeroute::scoring_kind::sigmoid;
  ggml_tensor* probs = sigmoid ? ggml_sigmoid(ctx, logits) : ggml_soft_max(ctx, logits);
  ggml_tensor* selection = probs;
  if (cfg.uses_bias) {
    ggml_tensor* b = ggml_new_tensor_1d(ctx, GGML_TYPE_F32, E);
    std::memcpy(b->data, bias.data(), bias.size() * sizeof(float));
    selection = ggml_add(ctx, probs, b);
  }
  if (cfg.groups > 1) {
    const int per = E / cfg.groups;
    ggml_tensor* groups = ggml_reshape_3d(ctx, selection, per, cfg.groups, t);
    ggml_tensor* top2 = ggml_argsort_top_k(ctx, groups, 2);  // [2, G, T]
    ggml_tensor* vals = ggml_get_rows(ctx, ggml_reshape_4d(ctx, groups, 1, per, cfg.groups, t), top2);
    ggml_tensor* gscore = ggml_sum_rows(ctx, ggml_reshape_3d(ctx, vals, 2, cfg.groups, t));  // [1, G, T]
    gscore = ggml_reshape_2d(ctx, gscore, cfg.groups, t);
    ggml_tensor* kept = ggml_argsort_top_k(ctx, gscore, cfg.topk_groups);  // [TG, T]
    ggml_tensor* kept_rows = ggml_get_rows(ctx, groups, kept);               // [per, TG, T]
    selection = ggml_set_rows(ctx, ggml_fill(ctx, groups, -INFINITY), kept_rows, kept);
    selection = ggml_reshape_2d(ctx, selection, E, t);
  }
  ggml_tensor* chosen = ggml_argsort_top_k(ctx, selection, K);  // [K, T]
  ggml_tensor* weights = ggml_get_rows(ctx, ggml_reshape_3d(ctx, probs, 1, E, t), chosen);  // [1, K, T]
  weights = ggml_reshape_2d(ctx, weights, K, t);
  if (cfg.renorm) weights = ggml_div(ctx, weights, ggml_sum_rows(ctx, weights));
  if (cfg.scale != 1.0f) weights = ggml_scale(ctx, weights, cfg.scale);
  ggml_cgraph* gf = ggml_new_graph(ctx);
  ggml_build_forward_expand(gf, weights);
  ggml_build_forward_expand(gf, chosen);

  // timed around the whole loop: reading the thread CPU clock is a system call, too slow per call
  std::size_t iters = 0;
  const auto w0 = clk::now();
  const double t0 = thread_cpu_s();
  for (auto _ : state) {
    ggml_graph_compute_with_ctx(ctx, gf, 1);
    benchmark::ClobberMemory();
    ++iters;
  }
  const double route_s = thread_cpu_s() - t0;
  const double wall_s = std::chrono::duration<double>(clk::now() - w0).count();
  // the same experts as moeroute for the first token (a check that the graph routes, not a test)
  moeroute::any_router r(cfg, cfg.uses_bias ? bias : std::vector<float>{});
  const auto res = r.route(moeroute::logits_view<float>(x.data(), 1, static_cast<std::size_t>(E)));
  const auto* gi = static_cast<const std::int32_t*>(chosen->data);
  int same = 0;
  for (int i = 0; i < K; ++i)
    for (int j = 0; j < K; ++j) same += gi[i] == res.ids[static_cast<std::size_t>(j)];
  state.counters["same_experts_token0"] = same;
  finish(state, key, route_s, wall_s, iters, x.data(), x.size(), T);
  ggml_free(ctx);
}
#endif

struct router_case {
  const char* name;
  moeroute::router_config (*make)(int);
  bool ggml;  // llama.cpp builds this router (zero-gating is moeroute's own)
};
const router_case kRouters[] = {{"softmax-renorm", softmax_renorm, true},
                                {"grouped-sigmoid-bias", deepseek_like, true},
                                {"softmax-renorm-zero-gated", zero_gated, false}};
const int kEs[] = {128, 256};
const std::size_t kTs[] = {1, 512, 4096};

void register_all() {
  for (const auto& rc : kRouters)
    for (int E : kEs)
      for (std::size_t T : kTs) {
        const std::string shape = "/E:" + std::to_string(E) + "/T:" + std::to_string(T);
        for (auto isa : {moeroute::routing_isa::portable, moeroute::routing_isa::avx2,
                         moeroute::routing_isa::avx512}) {
          if (!moeroute::routing_isa_supported(isa)) continue;
          const std::string key = std::string("router/") + rc.name + "/" + moeroute::routing_isa_name(isa) + shape;
          benchmark::RegisterBenchmark(key.c_str(), [rc, E, T, isa, key](benchmark::State& s) {
            run(s, rc.make(E), isa, T, key);
          });
        }
#if MOEROUTE_HAVE_GGML
        if (rc.ggml) {
          const std::string key = std::string("ggml/") + rc.name + shape;
          benchmark::RegisterBenchmark(key.c_str(), [rc, E, T, key](benchmark::State& s) {
            run_ggml(s, rc.make(E), T, key);
          });
        }
#endif
      }
}

// moeroute / ggml (and each path / portable) per router at E = 256, T = 512 and T = 1
void print_ratios() {
  const auto& r = results();
  std::fprintf(stderr, "\nrouter (E=256, K=8, one thread)     path      T   ns/token   x portable   moeroute/ggml\n");
  for (const auto& rc : kRouters)
    for (const char* T : {"512", "1"}) {
      const std::string shape = std::string("/E:256/T:") + T;
      const auto port = r.find(std::string("router/") + rc.name + "/portable" + shape);
      const auto gg = r.find(std::string("ggml/") + rc.name + shape);
      for (const char* isa : {"portable", "avx2", "avx512"}) {
        const auto it = r.find(std::string("router/") + rc.name + "/" + isa + shape);
        if (it == r.end()) continue;
        std::fprintf(stderr, "%-36s %-8s %4s %10.1f %12.2f", rc.name, isa, T, it->second,
                     port != r.end() ? it->second / port->second : 0.0);
        if (gg != r.end())
          std::fprintf(stderr, " %15.4f\n", it->second / gg->second);
        else
          std::fprintf(stderr, " %15s\n", "-");
      }
      if (gg != r.end())
        std::fprintf(stderr, "%-36s %-8s %4s %10.1f\n", rc.name, "ggml", T, gg->second);
    }
}
}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("routing_isa_best", moeroute::routing_isa_name(moeroute::routing_isa_best()));
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  print_ratios();
  return 0;
}
