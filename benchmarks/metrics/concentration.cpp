// Concentration and its readers, each next to a baseline measured in the same run:
//   analyze_concentration on a Qwen3-30B-A3B-shaped 48 x 128 count matrix  vs  summing the counts;
//   GGUF header parse of an imatrix-shaped file (151,936 vocab strings, 96 MoE layers' tensors)
//     vs  copying the same bytes;
//   routing JSONL (shipped Mixtral trace) to per-layer counts  vs  splitting it into lines.
// Run: bench_metrics_concentration --benchmark_format=json
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../../tests/fuzz/gguf_writer.hpp"
#include "moeroute/io/gguf.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/io/trace_counts.hpp"
#include "moeroute/metrics/concentration.hpp"

namespace {

std::vector<moeroute::layer_counts> zipf_counts(int L, int E) {
  std::mt19937 rng(7);
  std::vector<moeroute::layer_counts> out;
  for (int l = 0; l < L; ++l) {
    std::vector<double> c(static_cast<std::size_t>(E));
    std::vector<int> perm(static_cast<std::size_t>(E));
    for (int e = 0; e < E; ++e) perm[static_cast<std::size_t>(e)] = e;
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int e = 0; e < E; ++e)
      c[static_cast<std::size_t>(perm[static_cast<std::size_t>(e)])] = std::floor(8192.0 / (1.0 + e * 0.3));
    out.push_back({l, std::move(c)});
  }
  return out;
}

void BM_Concentration_48x128(benchmark::State& st) {
  const auto counts = zipf_counts(48, 128);
  for (auto _ : st) benchmark::DoNotOptimize(moeroute::analyze_concentration(counts));
}
BENCHMARK(BM_Concentration_48x128);

void BM_Baseline_SumCounts_48x128(benchmark::State& st) {
  const auto counts = zipf_counts(48, 128);
  for (auto _ : st) {
    double s = 0;
    for (const auto& L : counts)
      for (double x : L.counts) s += x;
    benchmark::DoNotOptimize(s);
  }
}
BENCHMARK(BM_Baseline_SumCounts_48x128);

const std::string& big_gguf() {
  static const std::string bytes = [] {
    moeroute_test::gguf_writer w;
    w.kv_string("general.type", "imatrix");
    std::vector<std::string> vocab;
    for (int i = 0; i < 151936; ++i) vocab.push_back("tok" + std::to_string(i));
    w.kv_string_array("tokenizer.ggml.tokens", vocab);
    for (int l = 0; l < 96; ++l)
      for (const char* p : {"ffn_down_exps", "ffn_gate_exps", "ffn_up_exps"}) {
        const std::string base = "blk." + std::to_string(l) + "." + p + ".weight";
        w.tensor_f32(base + ".in_sum2", {4, 128}, std::vector<float>(512, 1.0f));
        w.tensor_f32(base + ".counts", {1, 128}, std::vector<float>(128, 2.0f));
      }
    return w.bytes();
  }();
  return bytes;
}

void BM_GgufParse_ImatrixShaped(benchmark::State& st) {
  const std::string& b = big_gguf();
  for (auto _ : st) benchmark::DoNotOptimize(moeroute::gguf_file::parse(b, "bench.gguf"));
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * static_cast<int64_t>(b.size()));
}
BENCHMARK(BM_GgufParse_ImatrixShaped)->Unit(benchmark::kMillisecond);

void BM_Baseline_CopyBytes_ImatrixShaped(benchmark::State& st) {
  const std::string& b = big_gguf();
  for (auto _ : st) {
    std::string c = b;
    benchmark::DoNotOptimize(c.data());
  }
  st.SetBytesProcessed(static_cast<int64_t>(st.iterations()) * static_cast<int64_t>(b.size()));
}
BENCHMARK(BM_Baseline_CopyBytes_ImatrixShaped)->Unit(benchmark::kMillisecond);

const std::string& mixtral_text() {
  static const std::string text = [] {
    std::ifstream f(std::string(MOEROUTE_DATA_DIR) + "/traces/mixtral-8x7b_humaneval_routing.jsonl");
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }();
  return text;
}

void BM_RoutingJsonlToCounts_Mixtral(benchmark::State& st) {
  const std::string& t = mixtral_text();
  for (auto _ : st) {
    std::istringstream in(t);
    const auto r = moeroute::parse_routing_trace_jsonl(in, "mixtral.jsonl");
    benchmark::DoNotOptimize(moeroute::trace_activation_counts(r, 8));
  }
}
BENCHMARK(BM_RoutingJsonlToCounts_Mixtral)->Unit(benchmark::kMillisecond);

void BM_Baseline_SplitLines_Mixtral(benchmark::State& st) {
  const std::string& t = mixtral_text();
  for (auto _ : st) {
    std::istringstream in(t);
    std::string line;
    std::size_t n = 0;
    while (std::getline(in, line)) n += line.size();
    benchmark::DoNotOptimize(n);
  }
}
BENCHMARK(BM_Baseline_SplitLines_Mixtral)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
