#pragma once
// The device-independent half of the offload engine (offload/offloaded_moe.hpp): how one MoE
// layer call is split into hits, uploads and CPU-computed misses, the cost model that makes the
// split, and the counters the engine keeps. Core header: no Eigen, no Vulkan, no allocation in the
// per-call functions (every buffer is sized once by reserve()).
//
//   layer_batch      the distinct experts of a routing result (first appearance order) and how
//                    many (token, expert) entries each has
//   miss_costs       seconds per uploaded byte (+ a fixed latency) and per CPU-computed entry
//   plan_misses      per distinct missing expert: upload or cpu, for miss_mode upload / cpu / auto
//   pass_split       whether a call with hits and uploads runs its device work as two passes (hits
//                    first, overlapping the uploads) or one pass after the uploads
//   csr_subset       the sub-CSR of the entries whose expert has given classes (one device pass)
//   offload_counters what happened: accesses, hits, misses, entries on CPU, bytes moved, uploads,
//                    prefetch loads and how many were used, stalls, overlap
//
// auto's rule: the device work and the CPU work (misses computed on the host) run at the same
// time, so a call takes about max(device seconds, CPU seconds). The device side starts with one
// pass when the call has hits; uploading misses costs their upload time plus one more pass (the
// pass over the uploaded entries). Misses are taken in decreasing entry count (ties: first
// appearance) and each goes to the side whose finishing time is smaller after adding it (ties:
// upload). Device time per entry is not modelled (small next to a pass and an upload). The rule
// prices a call with hits and uploads as two passes; on a device that runs one pass (pass_split
// below) it overstates the device side by one pass.
//
// pass_split's auto rule: a separate hit pass pays when the device can run it while the uploads
// copy, which a GPU can; a CPU Vulkan device (lavapipe) executes its queue's submissions one after
// another on the host, so there nothing overlaps and a second pass only adds its submission and
// dispatch: one pass over every device entry runs after the uploads.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "moeroute/error.hpp"
#include "moeroute/routing/result.hpp"

namespace moeroute {

/// What happens to a routed expert that is not resident in the device pool.
enum class miss_mode {
  upload,  ///< copy its weights to a device slot (evicting as the cache says), compute there
  cpu,     ///< compute its entries on the host (quantized CPU FFN); the device pool is unchanged
  auto_,   ///< per miss, whichever the cost model says finishes first (contract above)
};

inline const char* miss_mode_name(miss_mode m) noexcept {
  return m == miss_mode::upload ? "upload" : m == miss_mode::cpu ? "cpu" : "auto";
}

/// "upload", "cpu" or "auto"; anything else is errc::invalid_argument naming it.
inline miss_mode parse_miss_mode(const std::string& s) {
  if (s == "upload") return miss_mode::upload;
  if (s == "cpu") return miss_mode::cpu;
  if (s == "auto") return miss_mode::auto_;
  detail::fail(errc::invalid_argument, "miss mode '", s, "' (expected upload, cpu or auto)");
}

/// Costs the auto mode weighs. Zero fields are measured by the engine at construction.
struct miss_costs {
  double upload_bytes_per_s = 0;  ///< host -> device copy rate through the staging ring
  double upload_latency_s = 0;    ///< fixed cost per uploaded expert (submission, fence)
  double cpu_s_per_entry = 0;     ///< host seconds per (token, expert) entry of the largest layer
  double device_s_per_pass = 0;   ///< device seconds of one FFN pass (submission, grouping, a few entries)
  /// Seconds to upload `bytes`.
  double upload_s(std::uint64_t bytes) const noexcept {
    return upload_latency_s + (upload_bytes_per_s > 0 ? static_cast<double>(bytes) / upload_bytes_per_s : 0.0);
  }
};

/// Counters of an offload engine (totals, or one layer's share). Every field only grows.
struct offload_counters {
  std::uint64_t forwards = 0;        ///< forward() calls with at least one routed entry
  std::uint64_t accesses = 0;        ///< distinct experts per call, summed (= hits + misses)
  std::uint64_t hits = 0;            ///< resident when the call came (pinned and prefetched included)
  std::uint64_t misses = 0;          ///< not resident (= uploaded + computed on the CPU)
  std::uint64_t miss_uploads = 0;    ///< misses uploaded on demand
  std::uint64_t miss_cpu = 0;        ///< misses computed on the host
  std::uint64_t entries = 0;         ///< routed (token, expert) entries
  std::uint64_t entries_cpu = 0;     ///< of which computed on the host
  std::uint64_t uploads = 0;         ///< expert copies to the device (demand + prefetch)
  std::uint64_t bytes_uploaded = 0;  ///< their bytes (expert bytes, as stored)
  std::uint64_t prefetch_loads = 0;  ///< of the uploads, those a prefetch asked for
  std::uint64_t prefetch_bytes = 0;
  std::uint64_t prefetch_useful = 0;  ///< prefetched cells that were hit before being evicted
  std::uint64_t stalls = 0;           ///< waits on a transfer (see offloaded_moe.hpp)
  double stall_seconds = 0;           ///< host time spent in those waits
  std::uint64_t overlapped_uploads = 0;  ///< uploads submitted with independent work to hide behind
  double cpu_seconds = 0;                ///< host time computing misses
  std::uint64_t device_passes = 0;       ///< device FFN passes submitted (pass_split decides 1 or 2 a call)
  std::uint64_t preload_uploads = 0, preload_bytes = 0;  ///< pinned cells loaded at construction

  offload_counters& operator+=(const offload_counters& o) noexcept {
    forwards += o.forwards; accesses += o.accesses; hits += o.hits; misses += o.misses;
    miss_uploads += o.miss_uploads; miss_cpu += o.miss_cpu; entries += o.entries; entries_cpu += o.entries_cpu;
    uploads += o.uploads; bytes_uploaded += o.bytes_uploaded; prefetch_loads += o.prefetch_loads;
    prefetch_bytes += o.prefetch_bytes; prefetch_useful += o.prefetch_useful; stalls += o.stalls;
    stall_seconds += o.stall_seconds; overlapped_uploads += o.overlapped_uploads; cpu_seconds += o.cpu_seconds;
    device_passes += o.device_passes;
    preload_uploads += o.preload_uploads; preload_bytes += o.preload_bytes;
    return *this;
  }
};

/// The distinct experts of one routing result and their entry counts. reserve() once, then
/// build() per call without allocating.
class layer_batch {
 public:
  void reserve(int num_experts) {
    MOEROUTE_CHECK(num_experts > 0, errc::invalid_argument, "layer_batch: num_experts must be positive");
    stamp_.assign(static_cast<std::size_t>(num_experts), 0);
    index_.assign(static_cast<std::size_t>(num_experts), 0);
    experts_.reserve(static_cast<std::size_t>(num_experts));
    counts_.reserve(static_cast<std::size_t>(num_experts));
  }
  /// Collects the distinct ids of r (checked by the caller to lie in [0, E)).
  void build(const routing_result_view& r) {
    if (++epoch_ == 0) {
      std::fill(stamp_.begin(), stamp_.end(), 0u);
      epoch_ = 1;
    }
    experts_.clear();
    counts_.clear();
    for (std::size_t j = 0; j < r.nnz(); ++j) {
      const auto e = static_cast<std::size_t>(r.ids[j]);
      if (stamp_[e] != epoch_) {
        stamp_[e] = epoch_;
        index_[e] = static_cast<std::uint32_t>(experts_.size());
        experts_.push_back(r.ids[j]);
        counts_.push_back(0);
      }
      ++counts_[index_[e]];
    }
  }
  std::size_t size() const noexcept { return experts_.size(); }
  const std::int32_t* experts() const noexcept { return experts_.data(); }
  std::int32_t expert(std::size_t i) const noexcept { return experts_[i]; }
  std::uint32_t count(std::size_t i) const noexcept { return counts_[i]; }
  /// Position of expert e in experts() (valid for an expert of the last build()).
  std::uint32_t index_of(std::int32_t e) const noexcept { return index_[static_cast<std::size_t>(e)]; }

 private:
  std::vector<std::uint32_t> stamp_, index_, counts_;
  std::vector<std::int32_t> experts_;
  std::uint32_t epoch_ = 0;
};

/// Class of a distinct expert in one call.
enum class expert_route : std::uint8_t { hit = 0, upload = 1, cpu = 2 };

/// Sets route[i] for every i with route[i] != hit (the misses of batch b): upload or cpu by `mode`
/// (auto: the rule at the top).
/// bytes: the layer's expert bytes; cpu_s_per_entry: this layer's CPU cost; max_uploads: at most
/// that many misses are uploaded (free device slots), the rest go to the CPU (in upload mode the
/// caller refuses a call that does not fit). order: scratch of b.size() entries.
inline void plan_misses(miss_mode mode, const layer_batch& b, std::uint64_t bytes, const miss_costs& c,
                        double cpu_s_per_entry, std::size_t max_uploads, expert_route* route,
                        std::uint32_t* order) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < b.size(); ++i)
    if (route[i] != expert_route::hit) order[n++] = static_cast<std::uint32_t>(i);
  if (mode != miss_mode::auto_) {
    std::size_t up = 0;
    for (std::size_t k = 0; k < n; ++k)
      route[order[k]] = mode == miss_mode::upload && up++ < max_uploads ? expert_route::upload : expert_route::cpu;
    return;
  }
  std::stable_sort(order, order + n, [&](std::uint32_t x, std::uint32_t y) { return b.count(x) > b.count(y); });
  double t_dev = n < b.size() ? c.device_s_per_pass : 0.0, t_cpu = 0;
  std::size_t up = 0;
  const double cu = c.upload_s(bytes);
  for (std::size_t k = 0; k < n; ++k) {
    const double cc = static_cast<double>(b.count(order[k])) * cpu_s_per_entry;
    const double add = cu + (up == 0 ? c.device_s_per_pass : 0.0);
    if (up < max_uploads && t_dev + add <= t_cpu + cc) {
      route[order[k]] = expert_route::upload;
      t_dev += add;
      ++up;
    } else {
      route[order[k]] = expert_route::cpu;
      t_cpu += cc;
    }
  }
}

/// How the device work of a call that has both hits and uploads is submitted.
enum class pass_split {
  auto_,  ///< two passes on a device that overlaps them with the uploads (a GPU), one on a CPU device
  two,    ///< always two: the hit pass, the uploads behind it, then the pass over the uploaded entries
  one,    ///< always one pass over every device entry, after the uploads
};

inline const char* pass_split_name(pass_split p) noexcept {
  return p == pass_split::auto_ ? "auto" : p == pass_split::two ? "two" : "one";
}

/// "auto", "two" or "one"; anything else is errc::invalid_argument naming it.
inline pass_split parse_pass_split(const std::string& s) {
  if (s == "auto") return pass_split::auto_;
  if (s == "two") return pass_split::two;
  if (s == "one") return pass_split::one;
  detail::fail(errc::invalid_argument, "device passes '", s, "' (expected auto, two or one)");
}

/// True when a call with `hits` resident and `uploads` uploaded experts runs two device passes (a
/// call without both has one pass whatever the mode). device_overlaps: the device can run a pass
/// while copies execute (false for a CPU Vulkan device, whose queue runs on the host).
inline bool split_passes(pass_split p, std::size_t hits, std::size_t uploads, bool device_overlaps) noexcept {
  if (hits == 0 || uploads == 0 || p == pass_split::one) return false;
  return p == pass_split::two || device_overlaps;
}

/// Bit of an expert class in csr_subset's `want` mask.
constexpr unsigned route_bit(expert_route r) noexcept { return 1u << static_cast<unsigned>(r); }

/// The entries of r whose expert's class is in `want` (a mask of route_bit; route indexed through
/// b.index_of), as a CSR over the same T tokens in offsets/ids/weights (T + 1 and r.nnz()
/// capacity). Returns its nnz.
inline std::size_t csr_subset(const routing_result_view& r, const layer_batch& b, const expert_route* route,
                              unsigned want, std::uint32_t* offsets, std::int32_t* ids, float* weights) {
  std::size_t n = 0;
  offsets[0] = 0;
  for (std::size_t t = 0; t < r.num_tokens; ++t) {
    for (std::uint32_t j = r.offsets[t]; j < r.offsets[t + 1]; ++j)
      if (want & route_bit(route[b.index_of(r.ids[j])])) {
        ids[n] = r.ids[j];
        weights[n] = r.weights[j];
        ++n;
      }
    offsets[t + 1] = static_cast<std::uint32_t>(n);
  }
  return n;
}

}  // namespace moeroute
