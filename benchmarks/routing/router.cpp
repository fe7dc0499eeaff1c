// Router throughput against the time to stream the same logits from memory, in the same run.
// Counters: ns_per_token (router), stream_ns_per_token (a plain read of the logits), x_stream
// (their ratio: 1.0 would be routing at memory speed).
//   bench_routing_router --benchmark_format=json

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "moeroute/routing/presets.hpp"

namespace {
using clk = std::chrono::steady_clock;

std::vector<float> make_logits(std::size_t T, int E) {
  std::mt19937 rng(42);
  std::normal_distribution<float> d(0.0f, 2.0f);
  std::vector<float> x(T * static_cast<std::size_t>(E));
  for (auto& v : x) v = d(rng);
  return x;
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

void run(benchmark::State& state, const moeroute::router_config& cfg) {
  const auto T = static_cast<std::size_t>(state.range(0));
  const int E = cfg.num_experts;
  const auto x = make_logits(T, E);
  std::vector<float> bias;
  if (cfg.uses_bias) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-0.05f, 0.05f);
    for (int e = 0; e < E; ++e) bias.push_back(u(rng));
  }
  moeroute::any_router r(cfg, bias);
  std::vector<std::uint32_t> off(T + 1);
  std::vector<std::int32_t> ids(r.max_nnz(T));
  std::vector<float> w(r.max_nnz(T));
  std::vector<unsigned char> ws(r.workspace_size());
  const moeroute::logits_view<float> view(x.data(), T, static_cast<std::size_t>(E));
  const moeroute::routing_output out{off.data(), ids.data(), w.data(), ids.size()};

  double route_s = 0;
  std::size_t iters = 0;
  for (auto _ : state) {
    const auto t0 = clk::now();
    r.route(view, out, ws.data());
    benchmark::ClobberMemory();
    route_s += std::chrono::duration<double>(clk::now() - t0).count();
    ++iters;
  }
  // the baseline: the same number of passes over the same bytes
  double stream_s = 0;
  std::uint32_t sink = 0;
  for (std::size_t i = 0; i < iters; ++i) {
    const auto t0 = clk::now();
    sink ^= stream_read(x.data(), x.size());
    benchmark::DoNotOptimize(sink);
    stream_s += std::chrono::duration<double>(clk::now() - t0).count();
  }
  const double tokens = static_cast<double>(T) * static_cast<double>(iters);
  state.counters["ns_per_token"] = route_s * 1e9 / tokens;
  state.counters["stream_ns_per_token"] = stream_s * 1e9 / tokens;
  state.counters["x_stream"] = route_s / stream_s;
  state.counters["mean_active"] = static_cast<double>(off[T]) / static_cast<double>(T);
  state.SetItemsProcessed(static_cast<std::int64_t>(tokens));
  state.SetBytesProcessed(static_cast<std::int64_t>(tokens * E * sizeof(float)));
}

moeroute::router_config softmax_renorm(int E) {
  moeroute::router_config c;
  c.name = "softmax-renorm";
  c.num_experts = E;
  c.top_k = 8;
  c.renorm = true;
  return c;
}

moeroute::router_config deepseek_like(int E) {
  auto c = moeroute::preset("deepseek-v3");
  c.num_experts = E;  // 8 groups of E/8
  return c;
}

moeroute::router_config zero_gated(int E) {
  auto c = softmax_renorm(E);
  c.cum_prob = 0.75;
  c.min_k = 2;
  return c;
}

void BM_SoftmaxRenorm_E128(benchmark::State& s) { run(s, softmax_renorm(128)); }
void BM_SoftmaxRenorm_E256(benchmark::State& s) { run(s, softmax_renorm(256)); }
void BM_GroupedSigmoidBias_E128(benchmark::State& s) { run(s, deepseek_like(128)); }
void BM_GroupedSigmoidBias_E256(benchmark::State& s) { run(s, deepseek_like(256)); }
void BM_SoftmaxRenormZeroGated_E128(benchmark::State& s) { run(s, zero_gated(128)); }
void BM_SoftmaxRenormZeroGated_E256(benchmark::State& s) { run(s, zero_gated(256)); }
}  // namespace

#define MOEROUTE_ROUTER_BENCH(fn) BENCHMARK(fn)->Arg(1)->Arg(8)->Arg(512)->Arg(4096)
MOEROUTE_ROUTER_BENCH(BM_SoftmaxRenorm_E128);
MOEROUTE_ROUTER_BENCH(BM_SoftmaxRenorm_E256);
MOEROUTE_ROUTER_BENCH(BM_GroupedSigmoidBias_E128);
MOEROUTE_ROUTER_BENCH(BM_GroupedSigmoidBias_E256);
MOEROUTE_ROUTER_BENCH(BM_SoftmaxRenormZeroGated_E128);
MOEROUTE_ROUTER_BENCH(BM_SoftmaxRenormZeroGated_E256);

BENCHMARK_MAIN();
