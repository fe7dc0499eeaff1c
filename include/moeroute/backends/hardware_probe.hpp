#pragma once
// measure_hardware: a hardware profile (plan/hardware.hpp) of the machine it runs on, measured
// through the backends an offloaded MoE layer uses (Vulkan for the device, the quantized CPU FFN
// cpu_quant_ffn for the CPU, the path of offloaded_moe's CPU misses). The two points of each line (small and large upload; 1 and k experts) are timed
// back to back in each of `reps` rounds, each point a batch of calls lasting about 25 ms, so both
// see the same load of the machine and time slicing counts as in a sustained run; each figure is
// the mean over the rounds:
//  - cpu.mem_gbps: memcpy of a 64 MiB buffer, counted as read + write traffic (2 x bytes / time);
//  - host_to_device: vulkan_expert_pool::upload_expert of a 12 KiB expert and one expert of the
//    first probed layer (12 MiB when none) (staging copy, transfer, wait, as an engine's
//    synchronous upload does): the line through the two points gives latency_us (intercept) and
//    gbps (slope);
//  - device: vulkan_ffn::forward of one token routed to 1 and to k = 8 experts of each probed layer,
//    each call to experts the previous calls did not use (a pool of at least 64 MiB), so weights
//    are read from memory as in an offloaded model
//    (the planned layers, or a copy narrowed to H, F <= 1024 with the same types when an expert
//    is larger than 16 MiB): per expert = (t_k - t_1) / (k - 1), call_us = t_1 - per expert, and
//    gflops[type] = 2 * 3 * H * F / per expert for each type of that layer (the later layer wins
//    for a type in several); mem_gbps = the larger of the memcpy figure and expert bytes / per
//    expert, so the planner reproduces the measured time;
//  - cpu: the same with cpu_quant_ffn (`cpu_threads` threads, the best path of this CPU) reading
//    the quantized weights in place from S host copies (at least 64 MiB), each call to experts
//    the previous calls did not use, as offloaded_moe's CPU misses read the mapped model;
//  - unified_memory: true when the Vulkan device is the CPU (lavapipe): its queue executes passes
//    and copies on the host's cores and memory, so device, copy and CPU times add.
// Throws moeroute::error (errc::device) when the device fails. Takes about a second per probed
// layer on a CPU Vulkan device (lavapipe).

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <moeroute/backends/cpu_quant.hpp>
#include <moeroute/backends/vulkan.hpp>
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

/// Timed pairs: in each of `rounds` rounds, a batch of calls of `a` then a batch of `b`, back to
/// back so both see the same load of the machine; each batch lasts about 25 ms (the batch sizes
/// come from a first, untimed call of each), so time slicing by other processes is counted as
/// in a sustained run. Returns the means over the rounds of (t_b - t_a) and of t_a, per call.
template <class A, class B>
std::pair<double, double> probe_pairs(int rounds, A&& a, B&& b) {
  auto count = [](double t) { return static_cast<int>(std::min(1000.0, std::max(1.0, 0.025 / std::max(t, 1e-9)))); };
  const int na = count(probe_batch(1, a)), nb = count(probe_batch(1, b));
  double diff = 0, first = 0;
  for (int i = 0; i < rounds; ++i) {
    const double ta = probe_batch(na, a), tb = probe_batch(nb, b);
    diff += tb - ta;
    first += ta;
  }
  return {diff / rounds, first / rounds};
}

/// One token routed to 1 and to k experts through `run_k(n)`, paired per round; returns (per
/// expert, fixed cost of the call).
template <class Run>
std::pair<double, double> probe_ffn(int k, int rounds, Run&& run_k) {
  const auto [d, t1] = probe_pairs(rounds, [&] { run_k(1); }, [&] { run_k(k); });
  const double per = std::max(d, 1e-9) / static_cast<double>(k - 1);
  return {per, std::max(t1 - per, 0.0)};
}
}  // namespace detail

/// Measures this machine (contract at the top). `layers`: the layer shapes to probe (e.g. the
/// distinct layers of the planned model); `name` becomes the profile's name.
inline hardware_profile measure_hardware(const vulkan_context& ctx, const std::vector<ffn_layer>& layers,
                                         const std::string& name = "this", int reps = 9, int cpu_threads = 1) {
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
  // uploads: two expert sizes through the staging path, each round from the next of `copies`
  // host copies (at least 64 MiB of them) so the source is not in the CPU's caches, as an
  // engine's host-resident experts are not
  {
    // the large point: an expert of the first probed layer (narrowed as below), else 12 MiB
    const ffn_layer small(1, 32, 32, weight_type::f32),
        large = layers.empty() ? ffn_layer(1, 1024, 1024, weight_type::f32) : detail::probe_layer(layers.front(), 1);
    vulkan_expert_pool ps(ctx, small, 1), pl(ctx, large, 1);
    const std::size_t nb_s = small.expert_bytes(), nb_l = large.expert_bytes(), copies = detail::probe_copies(nb_l);
    std::vector<unsigned char> bs(nb_s * copies, 3), bl(nb_l * copies, 3);
    std::size_t i_s = 0, i_l = 0;
    const auto [d, t_small] = detail::probe_pairs(
        reps, [&] { ps.upload_expert(0, bs.data() + (i_s++ % copies) * nb_s, nb_s); },
        [&] { pl.upload_expert(0, bl.data() + (i_l++ % copies) * nb_l, nb_l); });
    const double slope = std::max(d, 1e-9) / static_cast<double>(nb_l - nb_s);
    p.h2d_gbps = 1.0 / slope / 1e9;
    p.h2d_latency_us = std::max(t_small - static_cast<double>(nb_s) * slope, 0.0) * 1e6;
    p.sources["host_to_device.gbps"] = detail::concat("measured: vulkan_expert_pool::upload_expert of a ", nb_s,
                                                      "-byte and a ", nb_l, "-byte expert from cold host memory, slope");
    p.sources["host_to_device.latency_us"] = "measured: the same two uploads, intercept";
  }
  double dev_bw = p.cpu_mem_gbps, call_d = 0, call_c = 0;
  int probed = 0;
  std::string what;
  for (const ffn_layer& full : layers) {
    // S experts (at least 64 MiB of device weights, 8 distinct blobs repeated), each round routed
    // to experts not used in the previous rounds, so weights come from memory, not from caches
    const int k = 8;
    const int S = static_cast<int>(std::max<std::size_t>(static_cast<std::size_t>(2 * k), detail::probe_copies(detail::probe_layer(full, 1).expert_bytes())));
    const ffn_layer s = detail::probe_layer(full, S);
    const std::vector<unsigned char> blobs = detail::probe_blobs(s, k);
    const std::size_t H = static_cast<std::size_t>(s.hidden), eb = s.expert_bytes();
    std::vector<float> x(H, 0.5f), y(H);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(k)), table(static_cast<std::size_t>(S));
    std::vector<float> w(static_cast<std::size_t>(k), 1.0f / static_cast<float>(k));
    for (int e = 0; e < S; ++e) table[static_cast<std::size_t>(e)] = e;
    int next = 0;
    auto route = [&](int n) {  // the next n experts, round robin over S
      for (int i = 0; i < n; ++i) ids[static_cast<std::size_t>(i)] = next++ % S;
    };
    const double flops = s.flops_per_pair();
    // device
    vulkan_expert_pool pool(ctx, s, S);
    for (int e = 0; e < S; ++e) pool.upload_expert(e, blobs.data() + static_cast<std::size_t>(e % k) * eb, eb);
    pool.set_slot_table(table.data(), table.size());
    vulkan_ffn op(ctx, pool);
    const vulkan_ffn_config cfg{1, static_cast<std::size_t>(k)};
    const std::string why = op.can_implement(cfg);
    MOEROUTE_CHECK(why.empty(), errc::unsupported, "measure_hardware: vulkan_ffn: ", why);
    vulkan_buffer ws = ctx.make_buffer(std::max<std::size_t>(op.workspace_size(cfg), 16), false);
    op.initialize(cfg, ws);
    const auto dev = detail::probe_ffn(k, reps, [&](int n) {
      route(n);
      const std::uint32_t off[2] = {0, static_cast<std::uint32_t>(n)};
      op.forward({routing_result_view{1, S, off, ids.data(), w.data()}, x.data(), y.data()});
    });
    // CPU (cpu_quant_ffn on S host copies of the blobs, 16-byte aligned strides)
    const std::size_t stride = (eb + 15) / 16 * 16;
    std::vector<unsigned char> host(static_cast<std::size_t>(S) * stride + 16);
    auto* base = host.data() + (16 - reinterpret_cast<std::uintptr_t>(host.data()) % 16) % 16;
    cpu_ffn_options co;
    co.threads = cpu_threads;
    cpu_quant_ffn cf(s, co);
    for (int e = 0; e < S; ++e) {
      std::memcpy(base + static_cast<std::size_t>(e) * stride, blobs.data() + static_cast<std::size_t>(e % k) * eb, eb);
      cf.set_expert_blob(e, base + static_cast<std::size_t>(e) * stride);
    }
    next = 0;
    const auto cpu = detail::probe_ffn(k, reps, [&](int n) {
      route(n);
      const std::uint32_t off[2] = {0, static_cast<std::uint32_t>(n)};
      cf.run(ffn_args{routing_result_view{1, S, off, ids.data(), w.data()}, x.data(), y.data()});
    });
    for (weight_type t : {s.gate_type, s.up_type, s.down_type}) {
      p.device_gflops.by_type[t] = flops / dev.first / 1e9;
      p.cpu_gflops.by_type[t] = flops / cpu.first / 1e9;
    }
    dev_bw = std::max(dev_bw, static_cast<double>(eb) / dev.first / 1e9);
    p.cpu_mem_gbps = std::max(p.cpu_mem_gbps, static_cast<double>(eb) / cpu.first / 1e9);
    call_d += dev.second;
    call_c += cpu.second;
    ++probed;
    what += detail::concat(what.empty() ? "" : "; ", "H ", s.hidden, " F ", s.ffn, " ", weight_type_name(s.gate_type), "/",
                           weight_type_name(s.up_type), "/", weight_type_name(s.down_type), " x ", S, " experts");
  }
  p.device_mem_gbps = dev_bw;
  p.device_call_us = probed ? call_d / probed * 1e6 : 0.0;
  p.cpu_call_us = probed ? call_c / probed * 1e6 : 0.0;
  if (probed == 0) {  // nothing to probe: rates of a default layer
    p.device_gflops.default_gflops = p.cpu_gflops.default_gflops = 1.0;
  }
  p.sources["device"] = "measured: vulkan_ffn::forward, 1 token to 1 and to 8 experts (" + what + "); mean of " +
                        std::to_string(reps) + " rounds of 25 ms batches";
  p.sources["cpu"] = detail::concat("measured: cpu_quant_ffn (", cpu_isa_name(cpu_best_isa()), ", ", cpu_threads,
                                    cpu_threads == 1 ? " thread" : " threads", "), 1 token to 1 and to 8 experts (", what,
                                    "); mean of ", reps, " rounds of 25 ms batches");
  return p;
}

}  // namespace moeroute
