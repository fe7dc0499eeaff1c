#pragma once
// measure_hardware: a hardware profile (plan/hardware.hpp) of the machine it runs on, measured
// the way `moeroute run` incurs each cost: through the offload engine (offload/offloaded_moe.hpp),
// one token per forward() call, on the planned layer shapes. Every figure comes from patterns of
// calls timed back to back in each of `reps` rounds (each pattern a batch of calls lasting about
// 25 ms, so all see the same load of the machine and time slicing counts as in a sustained run);
// each pattern's time is its median over the rounds, so a round slowed down by other processes
// does not move it, and the figures are solved from those medians:
//  - cpu.mem_gbps: memcpy of a 64 MiB buffer, counted as read + write traffic (2 x bytes / time);
//  - device, per probed layer (the planned layers, or a copy narrowed to H, F <= 1024 with the
//    same types when an expert is larger than 16 MiB), S experts with at least 64 MiB of host
//    copies so every call reads weights no recent call touched: forward() of 1 and of k =
//    max(top_k, 2) resident experts gives per expert d = (t_k - t_1) / (k - 1) and call_us =
//    t_1 - d (forward() and one device pass), so call_us + n d reproduces both measured calls; gflops[type] = 2 * 3 * H * F / d for each type of
//    that layer (the later layer wins for a type in several); mem_gbps = the larger of the memcpy
//    figure and expert bytes / d, so the planner reproduces the measured time;
//  - host_to_device: forward() of one expert uploaded by a streaming engine (staging copy, copy
//    command, the pass after it), less the same call with the expert resident, for a 12 KiB f32
//    expert and an expert of the first probed layer (12 MiB when none): gbps is the slope of the
//    line through the two points and latency_us its intercept through the larger one;
//  - cpu: forward() in miss mode cpu (cpu_quant_ffn, `cpu_threads` threads, the best path of this
//    CPU, the engine's float32 activations) of 1 and k experts, as for the device;
//  - unified_memory: true when the Vulkan device is the CPU (lavapipe): its queue executes passes
//    and copies on the host's cores and memory, so device, copy and CPU times add.
// The per-layer figures, and the cost of the second pass of a call with hits and uploads (forward()
// of 1 resident + 1 uploaded expert, less the uploaded call, less d), are written to sources.
// Throws moeroute::error (errc::device) when the device fails. Takes a few seconds per probed layer
// on a CPU Vulkan device (lavapipe: 9-13 s for one layer type on 2 loaded cores).

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include <moeroute/backends/cpu_quant.hpp>
#include <moeroute/backends/vulkan.hpp>
#include <moeroute/offload/offloaded_moe.hpp>
#include <moeroute/plan/hardware.hpp>

namespace moeroute {

namespace detail {
template <class F>
double probe_median_seconds(int reps, F&& f) {
  f();  // warm-up
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto a = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

/// Copies of a `bytes`-byte buffer that make at least 64 MiB (at most 512).
inline std::size_t probe_copies(std::size_t bytes) {
  return std::min<std::size_t>(512, std::max<std::size_t>(2, ((std::size_t{64} << 20) + bytes - 1) / std::max<std::size_t>(bytes, 1)));
}

inline ffn_layer probe_layer(ffn_layer s, int k) {
  s.num_experts = k;
  if (s.expert_bytes() > (std::size_t{16} << 20)) {
    s.hidden = std::min(s.hidden, 1024);
    s.ffn = std::min(s.ffn, 1024);
  }
  return s;
}

inline std::vector<unsigned char> probe_blobs(const ffn_layer& s, int k) {
  std::vector<unsigned char> blobs(static_cast<std::size_t>(k) * s.expert_bytes());
  const std::size_t H = static_cast<std::size_t>(s.hidden), F = static_cast<std::size_t>(s.ffn);
  std::vector<float> g(F * H), d(H * F), b(2 * F + H);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-0.05f, 0.05f);
  for (int e = 0; e < k; ++e) {
    for (auto& v : g) v = u(rng);
    for (auto& v : d) v = u(rng);
    for (auto& v : b) v = u(rng);
    encode_expert(s, g.data(), g.data(), d.data(), blobs.data() + static_cast<std::size_t>(e) * s.expert_bytes(),
                  b.data(), b.data() + F, b.data() + 2 * F);
  }
  return blobs;
}

/// Seconds per call of f, timed over a batch of n calls.
template <class F>
double probe_batch(int n, F&& f) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / static_cast<double>(n);
}

/// Seconds as whole microseconds (for the sources' text).
inline long long probe_us(double seconds) { return std::llround(seconds * 1e6); }

/// Median of v (not empty): the middle value, or the mean of the two middle values.
inline double probe_median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// Timed rounds of several patterns: in each of `rounds` rounds, a batch of calls of every
/// pattern, back to back so all see the same load of the machine; each batch lasts about 25 ms
/// (the batch sizes come from a first, untimed call of each), so time slicing by other processes
/// is counted as in a sustained run. Returns t[round][pattern], seconds per call.
inline std::vector<std::vector<double>> probe_rounds(int rounds, const std::vector<std::function<void()>>& fs) {
  std::vector<int> n;
  for (const auto& f : fs) {
    probe_batch(3, f);  // warm-up: lazily built state, caches
    n.push_back(static_cast<int>(std::min(1000.0, std::max(3.0, 0.025 / std::max(probe_batch(3, f), 1e-9)))));
  }
  std::vector<std::vector<double>> t(static_cast<std::size_t>(rounds));
  for (auto& r : t) {
    for (std::size_t i = 0; i < fs.size(); ++i) r.push_back(probe_batch(n[i], fs[i]));
  }
  return t;
}

/// What an offload engine's calls cost on one layer shape, seconds (probe_engine).
struct probe_engine_costs {
  double call = 0;         ///< a call with one device pass, less its expert: forward() and the pass's fixed cost
  double per_expert = 0;   ///< one more resident expert in the pass
  double upload = 0;       ///< one expert uploaded from cold host memory (staging copy, copy command) before its pass
  double second_pass = 0;  ///< the second pass of a call with hits and uploads (the hit pass's fixed cost)
  double cpu_call = 0;     ///< a call in miss mode cpu, less its expert
  double cpu_per_expert = 0;  ///< one more expert computed on the host (cpu_quant_ffn, the engine's activations)
};

/// Times offloaded_moe::forward on one layer shape (S experts, at least 64 MiB of host copies, so
/// each call reads weights no earlier call touched) as `moeroute run` calls it: one token, one
/// layer. Per round, back to back: 1 and k resident experts (an engine holding all S), 1 expert
/// uploaded per call (a streaming engine), and 1 resident + 1 uploaded (an LRU of 3 slots
/// keeping expert 0), and 1 and k experts computed on the host (miss mode cpu, `cpu_threads`
/// threads). The figures come from each pattern's median time over the rounds, so the model
/// reproduces the median call of every pattern (1 and k experts exactly).
inline probe_engine_costs probe_engine(const vulkan_context& ctx, const ffn_layer& shape, int k, int rounds, int cpu_threads) {
  k = std::max(k, 2);
  ffn_layer s = shape;
  const std::size_t eb = s.expert_bytes(), H = static_cast<std::size_t>(s.hidden);
  s.num_experts = static_cast<int>(std::max<std::size_t>(static_cast<std::size_t>(4 * k + 4), probe_copies(eb)));
  const int S = s.num_experts;
  const std::vector<unsigned char> proto = probe_blobs(s, 8);
  std::vector<unsigned char> blobs(static_cast<std::size_t>(S) * eb);
  for (int e = 0; e < S; ++e)
    std::memcpy(blobs.data() + static_cast<std::size_t>(e) * eb, proto.data() + static_cast<std::size_t>(e % 8) * eb, eb);
  const std::vector<offload_layer_source> layers{offload_layer_from_blobs(s, blobs.data())};
  const std::uint64_t slot = offloaded_moe<lru_eviction>::slot_bytes_of(layers);
  offload_options o;
  o.max_tokens = 1;
  o.max_entries = static_cast<std::size_t>(k);
  o.costs.upload_bytes_per_s = 1e9;  // given: the engines skip their own measurement
  o.costs.device_s_per_pass = 1e-3;
  o.cpu_threads = cpu_threads;
  o.budget_bytes = static_cast<std::uint64_t>(S) * slot;
  offloaded_moe<lru_eviction> resident(ctx, layers, o);
  o.budget_bytes = static_cast<std::uint64_t>(k) * slot;
  o.cache = false;
  offloaded_moe<lru_eviction> streaming(ctx, layers, o);
  o.budget_bytes = 3 * slot;
  o.cache = true;
  o.passes = pass_split::two;  // the second pass's cost, measured even where auto runs one (a CPU device)
  offloaded_moe<lru_eviction> mixed(ctx, layers, o);
  o.passes = pass_split::auto_;
  o.miss = miss_mode::cpu;
  o.budget_bytes = slot;
  offloaded_moe<lru_eviction> host(ctx, layers, o);
  std::vector<float> x(H, 0.5f), y(H), w(static_cast<std::size_t>(k), 1.0f / static_cast<float>(k));
  std::vector<std::int32_t> ids(static_cast<std::size_t>(k));
  int next_r = 0, next_s = 0, next_m = 0, next_c = 0;
  auto call = [&](offloaded_moe<lru_eviction>& m, std::size_t n) {
    const std::uint32_t off[2] = {0, static_cast<std::uint32_t>(n)};
    m.forward(0, routing_result_view{1, S, off, ids.data(), w.data()}, x.data(), y.data());
  };
  auto fill = [&](int& next, std::size_t n, int lo) {  // the next n experts, round robin over [lo, S)
    for (std::size_t i = 0; i < n; ++i) ids[i] = lo + (next++ % (S - lo));
  };
  for (int e = 0; e < S; e += k) {  // every expert resident
    fill(next_r, static_cast<std::size_t>(k), 0);
    call(resident, static_cast<std::size_t>(k));
  }
  const auto t = probe_rounds(rounds, {[&] {
                                         fill(next_r, 1, 0);
                                         call(resident, 1);
                                       },
                                       [&] {
                                         fill(next_r, static_cast<std::size_t>(k), 0);
                                         call(resident, static_cast<std::size_t>(k));
                                       },
                                       [&] {
                                         fill(next_s, 1, 0);
                                         call(streaming, 1);
                                       },
                                       [&] {
                                         ids[0] = 0;
                                         ids[1] = 1 + (next_m++ % (S - 1));
                                         call(mixed, 2);
                                       },
                                       [&] {
                                         fill(next_c, 1, 0);
                                         call(host, 1);
                                       },
                                       [&] {
                                         fill(next_c, static_cast<std::size_t>(k), 0);
                                         call(host, static_cast<std::size_t>(k));
                                       }});
  std::vector<double> med;  // the median time of each pattern
  for (std::size_t i = 0; i < t.front().size(); ++i) {
    std::vector<double> col;
    for (const auto& r : t) col.push_back(r[i]);
    med.push_back(probe_median(col));
  }
  probe_engine_costs c;
  const double kk = static_cast<double>(k - 1);
  c.per_expert = std::max((med[1] - med[0]) / kk, 1e-9);
  c.call = std::max(med[0] - c.per_expert, 0.0);
  c.upload = std::max(med[2] - med[0], 0.0);
  c.second_pass = std::max(med[3] - med[2] - c.per_expert, 0.0);
  c.cpu_per_expert = std::max((med[5] - med[4]) / kk, 1e-9);
  c.cpu_call = std::max(med[4] - c.cpu_per_expert, 0.0);
  return c;
}
}  // namespace detail

/// Measures this machine (contract at the top). `layers`: the layer shapes to probe (e.g. the
/// distinct layers of the planned model); `name` becomes the profile's name.
inline hardware_profile measure_hardware(const vulkan_context& ctx, const std::vector<ffn_layer>& layers,
                                         const std::string& name = "this", int reps = 9, int cpu_threads = 1,
                                         int top_k = 8) {
  hardware_profile p;
  p.name = name;
  p.description = "measured by moeroute on " + ctx.device_name();
  p.unified_memory = ctx.device_type() == VK_PHYSICAL_DEVICE_TYPE_CPU;
  p.sources["unified_memory"] = p.unified_memory ? "the Vulkan device is the CPU: its queue runs on the host"
                                                 : "the Vulkan device is not the CPU";
  const VkDeviceSize heap = ctx.max_allocation();
  p.vram_gib = static_cast<double>(heap) / (1024.0 * 1024.0 * 1024.0);
  p.sources["vram_gib"] = "the device's largest allocation (maxMemoryAllocationSize), not its total memory";
  // host memory: memcpy traffic
  {
    const std::size_t n = std::size_t{64} << 20;
    std::vector<unsigned char> a(n, 1), b(n, 2);
    const double t = detail::probe_median_seconds(5, [&] {
      std::memcpy(b.data(), a.data(), n);
      a[0] = b[n / 2];
    });
    p.cpu_mem_gbps = 2.0 * static_cast<double>(n) / t / 1e9;
    p.sources["cpu.mem_gbps"] = "measured: memcpy of 64 MiB, read + write bytes / time (median of 5)";
  }
  // the offload engine's calls on each probed layer (the device terms and the large upload point)
  std::vector<detail::probe_engine_costs> eng;
  for (const ffn_layer& full : layers) eng.push_back(detail::probe_engine(ctx, detail::probe_layer(full, 1), top_k, reps, cpu_threads));
  // uploads: a line through a 12 KiB f32 expert and an expert of the first probed layer (else
  // 12 MiB), both uploaded by the engine as run's misses are; the intercept is taken from the
  // large point so that an expert of the probed layer costs exactly what was measured
  {
    const ffn_layer small(1, 32, 32, weight_type::f32),
        large = layers.empty() ? ffn_layer(1, 1024, 1024, weight_type::f32) : detail::probe_layer(layers.front(), 1);
    const double u_s = detail::probe_engine(ctx, small, 2, reps, cpu_threads).upload,
                 u_l = layers.empty() ? detail::probe_engine(ctx, large, 2, reps, cpu_threads).upload : eng.front().upload;
    const double nb_s = static_cast<double>(small.expert_bytes()), nb_l = static_cast<double>(large.expert_bytes());
    const double slope = std::max((u_l - u_s) / (nb_l - nb_s), 1e-15);
    p.h2d_gbps = 1.0 / slope / 1e9;
    p.h2d_latency_us = std::max(u_l - nb_l * slope, 0.0) * 1e6;
    p.sources["host_to_device.gbps"] =
        detail::concat("measured: offloaded_moe::forward of one token with its expert uploaded, less the same call with it resident, for a ",
                       small.expert_bytes(), "-byte and a ", large.expert_bytes(), "-byte expert from cold host memory: slope (",
                       detail::probe_us(u_s), " and ", detail::probe_us(u_l), " us)");
    p.sources["host_to_device.latency_us"] = "measured: the same two uploads, intercept through the larger";
  }
  double dev_bw = p.cpu_mem_gbps, call_d = 0, call_c = 0;
  int probed = 0;
  std::string what;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const ffn_layer s = detail::probe_layer(layers[i], 1);
    const detail::probe_engine_costs& e = eng[i];
    const double flops = s.flops_per_pair(), eb = static_cast<double>(s.expert_bytes());
    for (weight_type t : {s.gate_type, s.up_type, s.down_type}) {
      p.device_gflops.by_type[t] = flops / e.per_expert / 1e9;
      p.cpu_gflops.by_type[t] = flops / e.cpu_per_expert / 1e9;
    }
    dev_bw = std::max(dev_bw, eb / e.per_expert / 1e9);
    p.cpu_mem_gbps = std::max(p.cpu_mem_gbps, eb / e.cpu_per_expert / 1e9);
    call_d += e.call;
    call_c += e.cpu_call;
    ++probed;
    what += detail::concat(what.empty() ? "" : "; ", "H ", s.hidden, " F ", s.ffn, " ", weight_type_name(s.gate_type), "/",
                           weight_type_name(s.up_type), "/", weight_type_name(s.down_type), ": call ", detail::probe_us(e.call),
                           " us + ", detail::probe_us(e.per_expert), " us per expert, upload ", detail::probe_us(e.upload),
                           " us, second pass ", detail::probe_us(e.second_pass), " us; CPU call ", detail::probe_us(e.cpu_call),
                           " us + ", detail::probe_us(e.cpu_per_expert), " us per expert");
  }
  p.device_mem_gbps = dev_bw;
  p.device_call_us = probed ? call_d / probed * 1e6 : 0.0;
  p.cpu_call_us = probed ? call_c / probed * 1e6 : 0.0;
  if (probed == 0) {  // nothing to probe: rates of a default layer
    p.device_gflops.default_gflops = p.cpu_gflops.default_gflops = 1.0;
  }
  const std::string how = detail::concat("one token to 1 and to ", std::max(top_k, 2), " experts (", what, "); median of ", reps,
                                         " rounds of 25 ms batches");
  p.sources["device"] = "measured: offloaded_moe::forward with resident experts, " + how;
  p.sources["cpu"] = detail::concat("measured: offloaded_moe::forward in miss mode cpu (cpu_quant_ffn, ", cpu_isa_name(cpu_best_isa()),
                                    ", ", cpu_threads, cpu_threads == 1 ? " thread" : " threads", "), ", how);
  return p;
}

}  // namespace moeroute
