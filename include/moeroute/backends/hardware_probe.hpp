#pragma once
// measure_hardware: a hardware profile (plan/hardware.hpp) of the machine it runs on, measured
// through the backends an offloaded MoE layer uses (Vulkan for the device, the Eigen reference FFN
// for the CPU). Each figure is the median of several timed repetitions after a warm-up:
//  - cpu.mem_gbps: memcpy of a 64 MiB buffer, counted as read + write traffic (2 x bytes / time);
//  - host_to_device: vulkan_expert_pool::upload_expert of a 12 KiB and a 12 MiB expert (staging
//    copy, transfer, wait, as an engine's synchronous upload does): the line through the two
//    points gives latency_us (intercept) and gbps (slope);
//  - device: vulkan_ffn::forward of one token routed to 1 and to k experts of each probed layer
//    (the planned layers, or a copy narrowed to H, F <= 1024 with the same types when an expert
//    is larger than 16 MiB): per expert = (t_k - t_1) / (k - 1), call_us = t_1 - per expert, and
//    gflops[type] = 2 * 3 * H * F / per expert for each type of that layer (the later layer wins
//    for a type in several); mem_gbps = the larger of the memcpy figure and expert bytes / per
//    expert, so the planner reproduces the measured time;
//  - cpu: the same with cpu_ffn (the Eigen reference: weights decoded to float32 at upload, so the
//    rate is that of float32 weights, recorded for each type of the layer).
// Throws moeroute::error (errc::device) when the device fails. Takes about a second per probed
// layer on a CPU Vulkan device (lavapipe).

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <moeroute/backends/cpu_eigen.hpp>
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

/// Times one token routed to 1 and to k experts through `run_k(n)`; returns (per expert, call).
template <class Run>
std::pair<double, double> probe_ffn(int k, int reps, Run&& run_k) {
  const double t1 = probe_median_seconds(reps, [&] { run_k(1); });
  const double tk = probe_median_seconds(reps, [&] { run_k(k); });
  const double per = std::max(tk - t1, 1e-9) / static_cast<double>(k - 1);
  return {per, std::max(t1 - per, 0.0)};
}
}  // namespace detail

/// Measures this machine (contract at the top). `layers`: the layer shapes to probe (e.g. the
/// distinct layers of the planned model); `name` becomes the profile's name.
inline hardware_profile measure_hardware(const vulkan_context& ctx, const std::vector<ffn_layer>& layers,
                                         const std::string& name = "this", int reps = 7) {
  hardware_profile p;
  p.name = name;
  p.description = "measured by moeroute on " + ctx.device_name();
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
  // uploads: two expert sizes through the staging path
  {
    const ffn_layer small(1, 32, 32, weight_type::f32), large(1, 1024, 1024, weight_type::f32);
    double t[2], bytes[2];
    int i = 0;
    for (const ffn_layer& s : {small, large}) {
      vulkan_expert_pool pool(ctx, s, 1);
      std::vector<unsigned char> blob(s.expert_bytes(), 3);
      t[i] = detail::probe_median_seconds(reps, [&] { pool.upload_expert(0, blob.data(), blob.size()); });
      bytes[i++] = static_cast<double>(s.expert_bytes());
    }
    const double slope = std::max(t[1] - t[0], 1e-9) / (bytes[1] - bytes[0]);
    p.h2d_gbps = 1.0 / slope / 1e9;
    p.h2d_latency_us = std::max(t[0] - bytes[0] * slope, 0.0) * 1e6;
    p.sources["host_to_device.gbps"] = "measured: vulkan_expert_pool::upload_expert of a 12 KiB and a 12 MiB expert, slope";
    p.sources["host_to_device.latency_us"] = "measured: the same two uploads, intercept";
  }
  double dev_bw = p.cpu_mem_gbps, call_d = 0, call_c = 0;
  int probed = 0;
  std::string what;
  for (const ffn_layer& full : layers) {
    const int k = 8;
    const ffn_layer s = detail::probe_layer(full, k);
    const std::vector<unsigned char> blobs = detail::probe_blobs(s, k);
    const std::size_t H = static_cast<std::size_t>(s.hidden);
    std::vector<float> x(H, 0.5f), y(H);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(k)), table(static_cast<std::size_t>(k));
    std::vector<float> w(static_cast<std::size_t>(k), 1.0f / static_cast<float>(k));
    for (int e = 0; e < k; ++e) ids[static_cast<std::size_t>(e)] = table[static_cast<std::size_t>(e)] = e;
    const double flops = s.flops_per_pair();
    // device
    vulkan_expert_pool pool(ctx, s, k);
    for (int e = 0; e < k; ++e) pool.upload_expert(e, blobs.data() + static_cast<std::size_t>(e) * s.expert_bytes(), s.expert_bytes());
    pool.set_slot_table(table.data(), table.size());
    vulkan_ffn op(ctx, pool);
    const vulkan_ffn_config cfg{1, static_cast<std::size_t>(k)};
    const std::string why = op.can_implement(cfg);
    MOEROUTE_CHECK(why.empty(), errc::unsupported, "measure_hardware: vulkan_ffn: ", why);
    vulkan_buffer ws = ctx.make_buffer(std::max<std::size_t>(op.workspace_size(cfg), 16), false);
    op.initialize(cfg, ws);
    const auto dev = detail::probe_ffn(k, reps, [&](int n) {
      const std::uint32_t off[2] = {0, static_cast<std::uint32_t>(n)};
      op.forward({routing_result_view{1, k, off, ids.data(), w.data()}, x.data(), y.data()});
    });
    // CPU (Eigen reference)
    cpu_ffn cf(s, k);
    for (int e = 0; e < k; ++e) cf.upload_expert(e, blobs.data() + static_cast<std::size_t>(e) * s.expert_bytes(), s.expert_bytes());
    cf.set_slot_table(table.data(), table.size());
    std::vector<float> cws;
    const auto cpu = detail::probe_ffn(k, reps, [&](int n) {
      const std::uint32_t off[2] = {0, static_cast<std::uint32_t>(n)};
      const ffn_args a{routing_result_view{1, k, off, ids.data(), w.data()}, x.data(), y.data()};
      cws.resize(cf.workspace_size(a) / 4 + 1);
      cf.initialize(a, cws.data());
      cf.run();
    });
    for (weight_type t : {s.gate_type, s.up_type, s.down_type}) {
      p.device_gflops.by_type[t] = flops / dev.first / 1e9;
      p.cpu_gflops.by_type[t] = flops / cpu.first / 1e9;
    }
    dev_bw = std::max(dev_bw, static_cast<double>(s.expert_bytes()) / dev.first / 1e9);
    p.cpu_mem_gbps = std::max(p.cpu_mem_gbps, static_cast<double>(s.expert_bytes()) / cpu.first / 1e9);
    call_d += dev.second;
    call_c += cpu.second;
    ++probed;
    what += detail::concat(what.empty() ? "" : "; ", "H ", s.hidden, " F ", s.ffn, " ", weight_type_name(s.gate_type), "/",
                           weight_type_name(s.up_type), "/", weight_type_name(s.down_type));
  }
  p.device_mem_gbps = dev_bw;
  p.device_call_us = probed ? call_d / probed * 1e6 : 0.0;
  p.cpu_call_us = probed ? call_c / probed * 1e6 : 0.0;
  if (probed == 0) {  // nothing to probe: rates of a default layer
    p.device_gflops.default_gflops = p.cpu_gflops.default_gflops = 1.0;
  }
  p.sources["device"] = "measured: vulkan_ffn::forward, 1 token to 1 and to 8 experts (" + what + "); median of " +
                        std::to_string(reps);
  p.sources["cpu"] = "measured: cpu_ffn (Eigen reference, float32 weights after decoding), 1 token to 1 and to 8 experts (" +
                     what + ")";
  return p;
}

}  // namespace moeroute
