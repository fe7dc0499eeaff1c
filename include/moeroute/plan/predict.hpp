#pragma once
// The offload planner: replays a routing trace (plan/model.hpp) under each offloading strategy
// and predicts the decode tokens/s of the MoE FFN on a hardware profile (plan/hardware.hpp), with
// the model's exact bytes per expert (core: no Eigen, no Vulkan).
//
// Cost model. Every record of the replayed trace is one token at one MoE layer l with k routed
// experts. Per expert of layer l (s = that layer's ffn_layer; GB/s and GFLOPS as 1e9 units):
//   device compute   d_l = sum over gate, up, down of max(bytes_p / device.mem, 2 H F / device.gflops[type_p])
//                          + bias bytes / device.mem
//   CPU compute      c_l = the same with cpu.mem and cpu.gflops
//   upload           u_l = host_to_device.latency + expert_bytes / host_to_device.gbps
// and per layer call: o_d = device.call_us, o_c = cpu.call_us. With h experts that hit on the
// device, x that are uploaded (misses) and y computed on the CPU (h + x + y = k):
//   device chain     D = o_d + max(h d_l, x u_l) + x d_l        (0 when h + x = 0): the hits
//                        compute while the misses upload; an uploaded expert computes after it
//   CPU side         C = o_c + y c_l                            (0 when y = 0)
//   record time      T = max(D, C)                              the CPU runs concurrently with the device
// except where a strategy says otherwise below. Prefetch shares the host-to-device link with the
// demand and background uploads: with z prefetch uploads issued at a record (for the next layer
// l'), its time is max(T, (x + a) u_l + z u_l'). Predicted tokens/s = tokens / sum of record times: the MoE FFN alone
// (attention, the router and the dense layers are not counted); caches start empty, pinned cells
// are loaded before the clock starts.
//
// Strategies (plan_kind; V = the VRAM budget for experts in bytes):
//  cpu_all           every expert on the CPU (llama.cpp --cpu-moe): T = o_c + k c_l.
//  cpu_first_layers  the first N layers' experts on the CPU, the rest resident (--n-cpu-moe N),
//                    N the smallest that fits the rest in V: T = o_c + k c_l (l < N) or o_d + k d_l.
//  static_pin        the first cells of a ranked list (an ATX policy's order, or the trace's
//                    access counts, most accessed first) that fit V stay resident; every other
//                    expert is computed on the CPU: x = 0.
//  engine_upload     the offload engine (offload/offloaded_moe.hpp) with miss mode upload, which
//                    `moeroute run --miss upload` drives: an upload cache (expert_cache::request
//                    with the named eviction) whose forward() submits a device pass over the hits,
//                    then the misses' uploads, then a second pass over the uploaded experts, and
//                    waits once. Each pass pays the call cost: with P = [h > 0] + [x > 0] passes,
//                    D = P o_d + max(h d_l, x u_l) + x d_l. A unified-memory profile (a CPU
//                    Vulkan device whose queue runs everything on the host) overlaps nothing, so
//                    the engine runs one pass after the uploads (pass_split, offload/miss_plan.hpp):
//                    D = o_d + h d_l + x u_l + x d_l; y = 0. `moeroute run --miss cpu` never
//                    uploads (its cache stays empty), which is the cpu_all row.
//  engine_auto       the offload engine with miss mode auto (`moeroute run --miss auto`): per
//                    record the distinct experts in routing order; hits compute on the device;
//                    each miss, in order, is uploaded when the device side then finishes no later
//                    than the CPU side with it, else computed on the CPU (offload/miss_plan.hpp's
//                    rule, with a pass = o_d + d_l, an upload = u_l, a CPU entry = o_c + c_l); the
//                    cache hears the hits and uploads as one request; D as engine_upload (a second
//                    pass when a record has hits and uploads, except on unified memory),
//                    C = o_c + y c_l, T = max(D, C)
//                    (unified memory: D + C). With `prefetch` (`--prefetch coactivation`), the
//                    co-activation prefetch of `best` with this cache.
//  upload            the same cache as one device call with the overlap of D: y = 0.
//  hybrid            the same cache; per record, of its m misses the first x (routing order) are
//                    uploaded and m - x computed on the CPU, x in 0..m minimising T (ties: more
//                    uploads). CPU-computed misses are also uploaded in the background, in routing
//                    order, while the link stays within the record: the first a with
//                    (x + a) u_l <= T load into the cache (requested with the hits and the x);
//                    the others are not requested (they neither load nor age the cache).
//  best              moeroute's recommended eviction (global) with co-activation prefetch
//                    (cache/prefetch.hpp: after each record, up to k predicted experts of the next
//                    layer with probability >= the threshold) and the hybrid miss path.
//  all_resident      every expert resident (a bound: infeasible when the model exceeds V).
// Global caches hold V over all layers; per-layer caches V / L each. A cache whose budget cannot
// hold one record's experts, and pinning or layer offload that V cannot serve, give an infeasible
// row (feasible = false, why says it) instead of an error.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <type_traits>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "moeroute/cache/expert_cache.hpp"
#include "moeroute/cache/policies.hpp"
#include "moeroute/cache/prefetch.hpp"
#include "moeroute/cache/simulate.hpp"
#include "moeroute/error.hpp"
#include "moeroute/plan/hardware.hpp"
#include "moeroute/plan/model.hpp"

namespace moeroute {

enum class plan_kind { cpu_all, cpu_first_layers, static_pin, engine_upload, engine_auto, upload, hybrid, best, all_resident };

/// One strategy to predict.
struct plan_strategy {
  std::string name;                          ///< row label
  plan_kind kind = plan_kind::upload;
  std::string eviction = "lru";              ///< engine_upload / upload / hybrid: an eviction_policy_names() entry
  cache_scope scope = cache_scope::global;   ///< engine_upload / upload / hybrid
  bool prefetch = false;                     ///< engine_auto: co-activation prefetch (best always prefetches)
};

/// The strategies of the table, in the order the contract lists them.
inline std::vector<plan_strategy> default_plan_strategies() {
  return {
      {"all experts on CPU (--cpu-moe)", plan_kind::cpu_all, "", cache_scope::global},
      {"first N layers on CPU (--n-cpu-moe)", plan_kind::cpu_first_layers, "", cache_scope::global},
      {"static pinning, rest on CPU", plan_kind::static_pin, "", cache_scope::global},
      {"offload engine, LRU global, --miss upload (moeroute run)", plan_kind::engine_upload, "lru", cache_scope::global},
      {"offload engine, LRU global, --miss auto (moeroute run)", plan_kind::engine_auto, "lru", cache_scope::global},
      {"offload engine, LRU global, --miss auto --prefetch coactivation", plan_kind::engine_auto, "lru", cache_scope::global, true},
      {"upload cache LRU global", plan_kind::upload, "lru", cache_scope::global},
      {"upload cache LRU per layer", plan_kind::upload, "lru", cache_scope::per_layer},
      {"upload cache LFRU per layer", plan_kind::upload, "lfru", cache_scope::per_layer},
      {"hybrid miss path, LRU global", plan_kind::hybrid, "lru", cache_scope::global},
      {"moeroute best: recommended + prefetch + hybrid", plan_kind::best, "recommended", cache_scope::global},
      {"all experts resident (bound)", plan_kind::all_resident, "", cache_scope::global},
  };
}

/// Options of a prediction.
struct plan_options {
  std::uint64_t vram_bytes = 0;                      ///< V: device memory for expert weights
  std::vector<std::pair<int, int>> pin_order;        ///< static_pin: (layer, expert), most important first; empty = by trace counts
  std::string pin_source;                            ///< where pin_order came from, for the row's detail
  double prefetch_threshold = default_prefetch_threshold;
};

/// One strategy's prediction.
struct plan_row {
  std::string name, detail;
  plan_kind kind = plan_kind::upload;
  bool feasible = true;
  std::string why;                 ///< why not feasible
  double seconds = 0;              ///< predicted time of the whole replay
  double tokens_per_s = 0;
  double device_s = 0, transfer_s = 0, cpu_s = 0;  ///< sums of D, of the upload times, of C (before overlap)
  std::uint64_t accesses = 0;      ///< routed experts
  std::uint64_t device_hits = 0;   ///< computed on the device without an upload in that record
  std::uint64_t uploads = 0;       ///< demand uploads
  std::uint64_t background_uploads = 0;  ///< hybrid: CPU-computed misses uploaded off the critical path
  std::uint64_t prefetches = 0;    ///< prefetch uploads
  std::uint64_t cpu_experts = 0;   ///< computed on the CPU
  std::uint64_t bytes_uploaded = 0;
  std::uint64_t resident_bytes = 0;  ///< bytes held on the device at the end (static: pinned; caches: used)
};

/// Per-layer unit costs of a model on a profile, seconds (see the cost model).
struct plan_costs {
  std::vector<double> device, cpu, upload;
  double device_call = 0, cpu_call = 0;
  bool shared_memory = false;  ///< the profile's unified_memory: overlaps become sums
};

namespace detail {
inline double plan_side_seconds(const ffn_layer& s, double mem_gbps, const type_rates& r, const std::string& field) {
  const double flops = 2.0 * static_cast<double>(s.hidden) * static_cast<double>(s.ffn);
  const struct {
    std::size_t bytes;
    weight_type t;
  } parts[] = {{s.gate_bytes(), s.gate_type}, {s.up_bytes(), s.up_type}, {s.down_bytes(), s.down_type}};
  double sec = static_cast<double>(s.bias_bytes()) / (mem_gbps * 1e9);
  for (const auto& p : parts) {
    const double g = r.gflops(p.t);
    MOEROUTE_CHECK(g > 0, errc::bad_input, field, " has no entry for ", weight_type_name(p.t), " and no \"default\"");
    sec += std::max(static_cast<double>(p.bytes) / (mem_gbps * 1e9), flops / (g * 1e9));
  }
  return sec;
}
}  // namespace detail

/// The unit costs of every layer (errc::bad_input naming the profile field when a type has no rate).
inline plan_costs plan_unit_costs(const plan_model& m, const hardware_profile& hw) {
  plan_costs c;
  for (const auto& s : m.layers) {
    c.device.push_back(detail::plan_side_seconds(s, hw.device_mem_gbps, hw.device_gflops, hw.name + ": device.gflops"));
    c.cpu.push_back(detail::plan_side_seconds(s, hw.cpu_mem_gbps, hw.cpu_gflops, hw.name + ": cpu.gflops"));
    c.upload.push_back(hw.h2d_latency_us * 1e-6 + static_cast<double>(s.expert_bytes()) / (hw.h2d_gbps * 1e9));
  }
  c.device_call = hw.device_call_us * 1e-6;
  c.cpu_call = hw.cpu_call_us * 1e-6;
  c.shared_memory = hw.unified_memory;
  return c;
}

namespace detail {

/// Times of one record: h hits, x uploads, y CPU experts (cost model at the top).
struct plan_record_time {
  double D = 0, C = 0, U = 0, T = 0;
};
inline plan_record_time plan_time(const plan_costs& c, int l, std::uint64_t h, std::uint64_t x, std::uint64_t y) {
  const auto L = static_cast<std::size_t>(l);
  plan_record_time t;
  t.U = static_cast<double>(x) * c.upload[L];
  const double hits = static_cast<double>(h) * c.device[L];
  if (h + x > 0)
    t.D = c.device_call + (c.shared_memory ? hits + t.U : std::max(hits, t.U)) + static_cast<double>(x) * c.device[L];
  if (y > 0) t.C = c.cpu_call + static_cast<double>(y) * c.cpu[L];
  t.T = c.shared_memory ? t.D + t.C : std::max(t.D, t.C);
  return t;
}

inline void plan_add(plan_row& row, const plan_record_time& t, double T, std::uint64_t h, std::uint64_t x,
                     std::uint64_t y) {
  row.seconds += T;
  row.device_s += t.D;
  row.transfer_s += t.U;
  row.cpu_s += t.C;
  row.device_hits += h;
  row.uploads += x;
  row.cpu_experts += y;
}

inline std::string plan_mib(std::uint64_t b) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(b) / 1048576.0);
  return buf;
}

/// The caches of a replay: one global (L x E) or one per layer (1 x E).
template <class Ev>
struct plan_caches {
  std::vector<expert_cache<Ev>> caches;
  bool global = true;
  plan_caches(const plan_model& m, std::uint64_t V, cache_scope scope) : global(scope == cache_scope::global) {
    const int L = m.num_layers(), E = m.num_experts();
    if (global) {
      std::vector<std::uint64_t> bytes;
      for (int l = 0; l < L; ++l) bytes.push_back(m.expert_bytes(l));
      caches.emplace_back(L, E, V, std::move(bytes));
    } else {
      for (int l = 0; l < L; ++l)
        caches.emplace_back(1, E, V / static_cast<std::uint64_t>(L), std::vector<std::uint64_t>{m.expert_bytes(l)});
    }
  }
  expert_cache<Ev>& of(int l) { return caches[global ? 0 : static_cast<std::size_t>(l)]; }
  int layer_in(int l) const { return global ? l : 0; }
  std::uint64_t used() const {
    std::uint64_t s = 0;
    for (const auto& c : caches) s += c.used_bytes();
    return s;
  }
};

/// Replays a cache strategy (engine_upload, upload, hybrid, best) with eviction Ev.
template <class Ev>
void plan_replay_cache(const plan_model& m, const plan_routing& rt, const plan_costs& c, const plan_options& o,
                       const plan_strategy& s, plan_row& row) {
  const routing_trace& t = rt.trace;
  const bool prefetch = s.kind == plan_kind::best || s.prefetch;
  const bool hybrid = s.kind == plan_kind::hybrid || s.kind == plan_kind::best;
  std::vector<std::uint8_t> up;
  plan_caches<Ev> pc(m, o.vram_bytes, prefetch ? cache_scope::global : s.scope);
  coactivation_predictor predictor;
  if (prefetch) predictor.reset(m.num_layers(), m.num_experts());
  std::vector<std::int32_t> ids, req;
  std::vector<std::uint32_t> slots;
  std::vector<std::pair<std::int32_t, double>> pred;
  for (std::size_t r = 0; r < t.size(); ++r) {
    const int l = t.layer[r];
    const std::int32_t* ex = t.experts.data() + t.offsets[r];
    const std::size_t k = t.offsets[r + 1] - t.offsets[r];
    if (k == 0) continue;
    row.accesses += k;
    auto& cache = pc.of(l);
    const int cl = pc.layer_in(l);
    ids.assign(ex, ex + k);
    std::uint64_t h = 0, x = 0, y = 0, bg = 0;
    double T = 0;
    plan_record_time tm;
    if (s.kind == plan_kind::engine_auto) {
      // offloaded_moe in miss mode auto (offload/miss_plan.hpp's rule on the profile's costs):
      // the distinct experts in routing order; each miss, in that order, is uploaded when the
      // device side then finishes no later than the CPU side with it, else computed on the CPU
      const std::size_t L = static_cast<std::size_t>(l);
      const double pass = c.device_call + c.device[L], cpu_entry = c.cpu_call + c.cpu[L];
      req.clear();
      up.assign(k, 0);
      for (std::size_t i = 0; i < k; ++i) {
        if (std::find(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(i), ids[i]) != ids.begin() + static_cast<std::ptrdiff_t>(i)) continue;
        if (cache.contains(cl, ids[i])) {
          ++h;
          up[i] = 1;
        }
      }
      double t_dev = h > 0 ? pass : 0.0, t_cpu = 0;
      for (std::size_t i = 0; i < k; ++i) {
        if (up[i] || std::find(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(i), ids[i]) != ids.begin() + static_cast<std::ptrdiff_t>(i)) continue;
        const double add = c.upload[L] + (x == 0 ? pass : 0.0);
        if (t_dev + add <= t_cpu + cpu_entry) {
          up[i] = 2;
          t_dev += add;
          ++x;
        } else {
          t_cpu += cpu_entry;
          ++y;
        }
      }
      for (std::size_t i = 0; i < k; ++i)
        if (up[i]) req.push_back(ids[i]);
      const auto& loads = cache.request(cl, req.data(), req.size(), (slots.resize(req.size()), slots.data()));
      MOEROUTE_CHECK(loads.size() == x, errc::invalid_argument, "plan: cache loads ", loads.size(), " != ", x);
      tm = plan_time(c, l, h, x, y);
      if (h > 0 && x > 0 && !c.shared_memory) tm.D += c.device_call;  // a second device pass
      tm.T = c.shared_memory ? tm.D + tm.C : std::max(tm.D, tm.C);
      T = tm.T;
    } else if (!hybrid) {
      const auto& loads = cache.request(cl, ids.data(), k, (slots.resize(k), slots.data()));
      x = loads.size();
      h = k - x;
      tm = plan_time(c, l, h, x, 0);
      if (s.kind == plan_kind::engine_upload && h > 0 && x > 0 && !c.shared_memory) {  // a second device pass
        tm.D += c.device_call;
        tm.T = tm.D;
      }
      T = tm.T;
    } else {
      req.clear();
      std::vector<std::int32_t> miss;
      for (std::size_t i = 0; i < k; ++i) {
        // a repeated id in one record counts once on the device
        if (std::find(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(i), ids[i]) != ids.begin() + static_cast<std::ptrdiff_t>(i)) {
          ++h;
          continue;
        }
        if (cache.contains(cl, ids[i])) {
          req.push_back(ids[i]);
          ++h;
        } else {
          miss.push_back(ids[i]);
        }
      }
      const std::uint64_t mcount = miss.size();
      std::uint64_t best_x = 0;
      double best_T = std::numeric_limits<double>::infinity();
      for (std::uint64_t xx = 0; xx <= mcount; ++xx) {
        const double tt = plan_time(c, l, h, xx, mcount - xx).T;
        if (tt <= best_T) {
          best_T = tt;
          best_x = xx;
        }
      }
      x = best_x;
      y = mcount - x;
      const double u = c.upload[static_cast<std::size_t>(l)];
      while (bg < y && static_cast<double>(x + bg + 1) * u <= best_T) ++bg;  // background admission
      for (std::uint64_t i = 0; i < x + bg; ++i) req.push_back(miss[static_cast<std::size_t>(i)]);
      const auto& loads = cache.request(cl, req.data(), req.size(), (slots.resize(req.size()), slots.data()));
      MOEROUTE_CHECK(loads.size() == x + bg, errc::invalid_argument, "plan: cache loads ", loads.size(), " != ", x + bg);
      tm = plan_time(c, l, h, x, y);
      T = tm.T;
      tm.U += static_cast<double>(bg) * u;
      row.background_uploads += bg;
    }
    if (prefetch) {
      predictor.observe(l, ex, k);
      const int nl = predictor.predict(l, ex, k, pred);
      std::uint64_t z = 0;
      if (nl >= 0) {
        auto& target = pc.of(nl);
        std::size_t issued = 0;
        for (const auto& [b, p] : pred) {
          if (p < o.prefetch_threshold || issued == k) break;
          ++issued;
          const std::uint32_t cell = target.cell_index(pc.layer_in(nl), b);
          if constexpr (std::is_same_v<Ev, recommended_eviction>) target.eviction().expect(cell, p);
          if (target.prefetch(cell)) ++z;
        }
      }
      if (z > 0) {
        const double link = static_cast<double>(x + bg) * c.upload[static_cast<std::size_t>(l)] +
                            static_cast<double>(z) * c.upload[static_cast<std::size_t>(nl)];
        T = c.shared_memory ? T + static_cast<double>(z) * c.upload[static_cast<std::size_t>(nl)] : std::max(T, link);
        tm.U += static_cast<double>(z) * c.upload[static_cast<std::size_t>(nl)];
        row.prefetches += z;
        row.bytes_uploaded += z * m.expert_bytes(nl);
      }
    }
    row.bytes_uploaded += (x + bg) * m.expert_bytes(l);
    plan_add(row, tm, T, h, x, y);
  }
  row.resident_bytes = pc.used();
}

}  // namespace detail

/// Predicts every strategy (contract at the top). Rows come back in `strategies` order; sort
/// with rank_plan_rows. The model's expert count and layer count must match the routing.
inline std::vector<plan_row> predict_plan(const plan_model& m, const plan_routing& rt, const hardware_profile& hw,
                                          const plan_options& o,
                                          const std::vector<plan_strategy>& strategies = default_plan_strategies()) {
  MOEROUTE_CHECK(m.num_layers() > 0 && m.num_experts() > 0, errc::invalid_argument, "plan: empty model");
  MOEROUTE_CHECK(rt.trace.num_layers() <= m.num_layers() && rt.trace.num_experts() <= m.num_experts(),
                 errc::invalid_argument, "plan: the routing names layer ", rt.trace.num_layers() - 1, " / expert ",
                 rt.trace.num_experts() - 1, " outside the model's ", m.num_layers(), " x ", m.num_experts());
  const plan_costs c = plan_unit_costs(m, hw);
  const routing_trace& t = rt.trace;
  const int L = m.num_layers(), E = m.num_experts();
  const std::uint64_t V = o.vram_bytes;
  std::vector<plan_row> rows;
  for (const auto& s : strategies) {
    plan_row row;
    row.name = s.name;
    row.kind = s.kind;
    switch (s.kind) {
      case plan_kind::cpu_all:
      case plan_kind::cpu_first_layers:
      case plan_kind::all_resident: {
        int N = s.kind == plan_kind::cpu_all ? L : 0;
        if (s.kind == plan_kind::cpu_first_layers) {
          std::uint64_t rest = m.total_bytes();
          while (N < L && rest > V) rest -= static_cast<std::uint64_t>(E) * m.expert_bytes(N++);
          row.detail = detail::concat("N = ", N, " of ", L, " layers on the CPU");
          row.resident_bytes = rest;
        }
        if (s.kind == plan_kind::all_resident) {
          row.resident_bytes = m.total_bytes();
          row.detail = detail::concat("needs ", detail::plan_mib(m.total_bytes()));
          if (m.total_bytes() > V) {
            row.feasible = false;
            row.why = detail::concat("the experts need ", detail::plan_mib(m.total_bytes()), ", the budget is ",
                             detail::plan_mib(V));
          }
        }
        for (std::size_t r = 0; r < t.size(); ++r) {
          const std::uint64_t k = t.offsets[r + 1] - t.offsets[r];
          if (k == 0) continue;
          row.accesses += k;
          const bool cpu = t.layer[r] < N;
          const auto tm = detail::plan_time(c, t.layer[r], cpu ? 0 : k, 0, cpu ? k : 0);
          detail::plan_add(row, tm, tm.T, cpu ? 0 : k, 0, cpu ? k : 0);
        }
        break;
      }
      case plan_kind::static_pin: {
        std::vector<std::pair<int, int>> order = o.pin_order;
        if (order.empty()) {  // most accessed cells of the trace first (ties: lower layer, expert)
          std::vector<std::uint64_t> n(static_cast<std::size_t>(L) * static_cast<std::size_t>(E), 0);
          for (std::size_t r = 0; r < t.size(); ++r)
            for (auto i = t.offsets[r]; i < t.offsets[r + 1]; ++i)
              ++n[static_cast<std::size_t>(t.layer[r]) * static_cast<std::size_t>(E) + static_cast<std::size_t>(t.experts[i])];
          std::vector<std::size_t> idx;
          for (std::size_t i = 0; i < n.size(); ++i)
            if (n[i] > 0) idx.push_back(i);
          std::stable_sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) { return n[a] > n[b]; });
          for (auto i : idx)
            order.emplace_back(static_cast<int>(i / static_cast<std::size_t>(E)), static_cast<int>(i % static_cast<std::size_t>(E)));
        }
        std::vector<std::uint8_t> pinned(static_cast<std::size_t>(L) * static_cast<std::size_t>(E), 0);
        std::uint64_t used = 0, cells = 0;
        for (const auto& [l, e] : order) {
          MOEROUTE_CHECK(l >= 0 && l < L && e >= 0 && e < E, errc::bad_input, "plan: pinned cell ", l, ":", e,
                         " outside the model's ", L, " layers x ", E, " experts");
          auto& p = pinned[static_cast<std::size_t>(l) * static_cast<std::size_t>(E) + static_cast<std::size_t>(e)];
          if (p) continue;
          if (used + m.expert_bytes(l) > V) break;  // the ranked prefix that fits
          p = 1;
          used += m.expert_bytes(l);
          ++cells;
        }
        row.resident_bytes = used;
        row.detail = detail::concat(cells, " cells pinned (", o.pin_order.empty() ? std::string("trace counts") : o.pin_source, ")");
        for (std::size_t r = 0; r < t.size(); ++r) {
          const int l = t.layer[r];
          std::uint64_t h = 0, y = 0;
          for (auto i = t.offsets[r]; i < t.offsets[r + 1]; ++i)
            (pinned[static_cast<std::size_t>(l) * static_cast<std::size_t>(E) + static_cast<std::size_t>(t.experts[i])] ? h : y) += 1;
          if (h + y == 0) continue;
          row.accesses += h + y;
          const auto tm = detail::plan_time(c, l, h, 0, y);
          detail::plan_add(row, tm, tm.T, h, 0, y);
        }
        break;
      }
      default: {
        try {
          visit_eviction(s.eviction, [&](auto tag) {
            using Ev = typename decltype(tag)::type;
            if constexpr (Ev::needs_future) {
              detail::fail(errc::invalid_argument, "plan: ", s.eviction, " needs the future; not a strategy");
            } else {
              detail::plan_replay_cache<Ev>(m, rt, c, o, s, row);
            }
          });
          row.detail = detail::concat(s.scope == cache_scope::global || s.kind == plan_kind::best
                                  ? detail::concat("global cache of ", detail::plan_mib(V))
                                  : detail::concat(L, " caches of ", detail::plan_mib(V / static_cast<std::uint64_t>(L))),
                              ", ", s.eviction);
        } catch (const error& e) {
          if (e.code() != errc::capacity) throw;
          row = plan_row{};
          row.name = s.name;
          row.kind = s.kind;
          row.feasible = false;
          row.why = detail::concat("the budget cannot hold one token's experts of a layer (", e.message(), ")");
        }
        break;
      }
    }
    row.tokens_per_s = row.seconds > 0 ? static_cast<double>(rt.tokens) / row.seconds : 0.0;
    rows.push_back(std::move(row));
  }
  return rows;
}

/// Feasible rows by predicted tokens/s, fastest first (ties: input order), then the infeasible.
inline void rank_plan_rows(std::vector<plan_row>& rows) {
  std::stable_sort(rows.begin(), rows.end(), [](const plan_row& a, const plan_row& b) {
    if (a.feasible != b.feasible) return a.feasible;
    return a.feasible && a.tokens_per_s > b.tokens_per_s;
  });
}

}  // namespace moeroute
