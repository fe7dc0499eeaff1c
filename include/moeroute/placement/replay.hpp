#pragma once
// Replay of a placement against a routing trace: how balanced the GPUs are in each batch step.
//
// Contract:
// - Each layer's records, in file order, are its tokens; steps are consecutive batches of
//   `batch` tokens of that layer (the last one may be shorter). Layers are replayed separately.
// - Every (token, expert) access goes to one physical replica of the expert:
//     round_robin   the access at flat position i of the step (token by token, experts in record
//                   order) takes replica i mod r of the expert's r replicas (ascending physical
//                   id) - the rule vLLM applies to a batch;
//     least_loaded  the replica whose GPU has the fewest accesses so far in this step (equal:
//                   lower physical id).
// - GPU load of a step = accesses sent to its physical experts. Per (layer, step) with at least
//   one access: balancedness = mean GPU load / max GPU load. Results: balancedness, max_gpu_load
//   and mean_gpu_load are means over all such (layer, step) pairs (and per layer over its steps);
//   peak_gpu_load is the largest max seen.
// - tokens_off_gpu: token j of a step of n tokens lives on GPU floor(j*G/n) (attention data
//   parallelism); it is sent once to each other GPU that runs at least one of its experts (how an
//   all-to-all dispatch such as DeepEP's counts); the result is the number of such copies.
// - Bad input (errc::bad_input): a layer the placement does not have, an expert id >= E, batch 0.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "moeroute/error.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/placement/load_sources.hpp"
#include "moeroute/placement/placement.hpp"

namespace moeroute {

/// How an access picks among an expert's replicas.
enum class replica_dispatch { round_robin, least_loaded };

/// Replay parameters.
struct replay_options {
  std::size_t batch = 64;                                   ///< tokens per step
  replica_dispatch dispatch = replica_dispatch::round_robin;
};

/// Replay figures of one layer (or of the whole trace).
struct replay_stats {
  int layer = -1;                ///< -1 for the whole trace
  std::size_t steps = 0;         ///< steps with at least one access
  std::size_t tokens = 0;
  std::size_t accesses = 0;
  double balancedness = 1.0;     ///< mean over steps of mean/max GPU load
  double max_gpu_load = 0.0;     ///< mean over steps of the busiest GPU's load
  double mean_gpu_load = 0.0;    ///< mean over steps of the mean GPU load
  double peak_gpu_load = 0.0;    ///< largest busiest-GPU load of any step
  std::uint64_t tokens_off_gpu = 0;
};

/// Whole-trace figures and one entry per layer present in the trace (ascending).
struct replay_result {
  replay_stats total;
  std::vector<replay_stats> per_layer;
};

/// Replays `t` against `p` (see the contract at the top).
inline replay_result replay_placement(const expert_placement& p, const routing_trace& t,
                                      const replay_options& o = {}) {
  MOEROUTE_CHECK(o.batch >= 1, errc::invalid_argument, "batch must be at least 1");
  check_placement(p);
  const std::size_t G = static_cast<std::size_t>(p.num_gpus);
  const auto by = records_by_layer(t);
  MOEROUTE_CHECK(by.size() <= p.physical_to_logical.size(), errc::bad_input, "trace has layer ", by.size() - 1,
                 " but the placement has ", p.num_layers(), " layers");
  replay_result res;
  double sum_bal = 0.0, sum_max = 0.0, sum_mean = 0.0;
  std::vector<double> load(G);
  std::vector<char> sent(G);
  for (std::size_t l = 0; l < by.size(); ++l) {
    const auto& recs = by[l];
    if (recs.empty()) continue;
    const auto l2p = logical_to_physical(p.physical_to_logical[l], p.num_logical);
    replay_stats s;
    s.layer = static_cast<int>(l);
    double lb = 0.0, lmax = 0.0, lmean = 0.0;
    for (std::size_t b = 0; b < recs.size(); b += o.batch) {
      const std::size_t n = std::min(o.batch, recs.size() - b);
      std::fill(load.begin(), load.end(), 0.0);
      std::size_t pos = 0;
      for (std::size_t j = 0; j < n; ++j) {
        const std::size_t r = recs[b + j];
        const std::size_t home = j * G / n;
        std::fill(sent.begin(), sent.end(), 0);
        for (std::uint32_t i = t.offsets[r]; i < t.offsets[r + 1]; ++i, ++pos) {
          const auto e = t.experts[i];
          MOEROUTE_CHECK(e >= 0 && e < p.num_logical, errc::bad_input, "trace record ", r + 1, " (layer ", l,
                         ") names expert ", e, " but the placement has ", p.num_logical, " experts");
          const auto& reps = l2p[static_cast<std::size_t>(e)];
          std::size_t g = 0;
          if (o.dispatch == replica_dispatch::round_robin) {
            g = static_cast<std::size_t>(p.gpu_of(reps[pos % reps.size()]));
          } else {
            g = static_cast<std::size_t>(p.gpu_of(reps[0]));
            for (std::size_t k = 1; k < reps.size(); ++k) {
              const auto gk = static_cast<std::size_t>(p.gpu_of(reps[k]));
              if (load[gk] < load[g]) g = gk;
            }
          }
          load[g] += 1.0;
          if (g != home && !sent[g]) {
            sent[g] = 1;
            ++s.tokens_off_gpu;
          }
        }
      }
      s.tokens += n;
      if (pos == 0) continue;
      s.accesses += pos;
      ++s.steps;
      const double mx = *std::max_element(load.begin(), load.end());
      const double mean = static_cast<double>(pos) / static_cast<double>(G);
      lb += mean / mx;
      lmax += mx;
      lmean += mean;
      s.peak_gpu_load = std::max(s.peak_gpu_load, mx);
    }
    if (s.steps > 0) {
      const double ns = static_cast<double>(s.steps);
      s.balancedness = lb / ns;
      s.max_gpu_load = lmax / ns;
      s.mean_gpu_load = lmean / ns;
    }
    sum_bal += lb;
    sum_max += lmax;
    sum_mean += lmean;
    res.total.steps += s.steps;
    res.total.tokens += s.tokens;
    res.total.accesses += s.accesses;
    res.total.tokens_off_gpu += s.tokens_off_gpu;
    res.total.peak_gpu_load = std::max(res.total.peak_gpu_load, s.peak_gpu_load);
    res.per_layer.push_back(s);
  }
  if (res.total.steps > 0) {
    const double ns = static_cast<double>(res.total.steps);
    res.total.balancedness = sum_bal / ns;
    res.total.max_gpu_load = sum_max / ns;
    res.total.mean_gpu_load = sum_mean / ns;
  }
  return res;
}

}  // namespace moeroute
