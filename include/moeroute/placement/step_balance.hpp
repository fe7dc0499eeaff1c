#pragma once
// moeroute's placement: balances the load each GPU sees in each batch step, not only the totals.
//
// Contract (per layer):
// - Sample steps: windows of `batch` consecutive tokens of the build trace, one starting every
//   `stride` tokens (0 = batch/4), plus the last window; a layer with fewer tokens than `batch`
//   has one window of all of them. Each window gives per-expert access counts c_s[e]. A layer
//   without trace records uses its row of the load table as its only sample.
// - Objective: the mean over samples of mean/max GPU load, where a GPU's load in sample s is the
//   sum over its physical experts of c_s[e] / replicas(e). Experts that fire together in the same
//   steps raise the max when they share a GPU, so the objective pushes them apart.
// - Start: DeepSeek EPLB on the layer's total load (hierarchical when N > 1 and N divides GR,
//   else global). Then first-improvement local search, deterministic, until no move improves
//   the objective or `max_passes` passes ran. Moves: swap two physical experts of different
//   GPUs (of the same node when N > 1); move a redundant replica from one logical expert to
//   another (on a node that already holds the new expert when N > 1). Before the search, replicas
//   of one expert that EPLB stacked on one GPU are swapped apart; a move never stacks them again
//   (both unless the expert has more replicas than there are GPUs).
// - Same options and requirements as EPLB (eplb.hpp); the result is a valid placement.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "moeroute/error.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/placement/eplb.hpp"
#include "moeroute/placement/load_sources.hpp"
#include "moeroute/placement/placement.hpp"

namespace moeroute {

/// Parameters of moeroute's step-balanced placement.
struct step_balance_options {
  std::size_t batch = 64;   ///< tokens per step (as replayed)
  std::size_t stride = 0;   ///< tokens between sample windows; 0 = batch / 4 (at least 1)
  int max_passes = 50;      ///< local-search passes per layer
  std::size_t random_batches = 256;  ///< batches of `batch` tokens drawn with replacement
  bool windows = true;      ///< also use the sliding windows
  bool retarget = true;     ///< also move redundant replicas between experts
  double prior_tokens = 64.0;  ///< weight, in tokens, of the uniform prior mixed into the draws
  std::uint64_t seed = 0x9e3779b97f4a7c15ULL;  ///< of the draws (fixed: same input, same output)
};

namespace detail {

// Local search over one layer's physical -> logical row.
class step_balance_layer {
 public:
  step_balance_layer(std::vector<std::int32_t> row, std::vector<std::vector<double>> samples, std::size_t E,
                     std::size_t G, std::size_t N)
      : row_(std::move(row)), S_(std::move(samples)), E_(E), G_(G), N_(N), per_gpu_(row_.size() / G) {
    cnt_.assign(E_, 0);
    for (auto e : row_) ++cnt_[static_cast<std::size_t>(e)];
    on_gpu_.assign(G_ * E_, 0);
    for (std::size_t p = 0; p < row_.size(); ++p) ++on_gpu_[gpu(p) * E_ + static_cast<std::size_t>(row_[p])];
    for (const auto& s : S_) {
      double tot = 0.0;
      for (double x : s) tot += x;
      total_.push_back(tot);
    }
    load_.assign(S_.size() * G_, 0.0);
    recompute();
  }

  void optimize(int max_passes) {
    for (int pass = 0; pass < max_passes; ++pass) {
      bool improved = false;
      for (std::size_t p = 0; p < row_.size(); ++p)
        for (std::size_t q = p + 1; q < row_.size(); ++q) improved |= try_swap(p, q);
      if (retarget_)
        for (std::size_t p = 0; p < row_.size(); ++p)
          for (std::size_t b = 0; b < E_; ++b) improved |= try_retarget(p, b);
      if (!improved) break;
    }
  }

  const std::vector<std::int32_t>& row() const { return row_; }
  bool retarget_ = true;

 private:
  std::size_t gpu(std::size_t p) const { return p / per_gpu_; }
  std::size_t node(std::size_t g) const { return g / (G_ / N_); }
  double share(std::size_t s, std::size_t e) const { return S_[s][e] / cnt_[e]; }

  void recompute() {
    std::fill(load_.begin(), load_.end(), 0.0);
    for (std::size_t s = 0; s < S_.size(); ++s)
      for (std::size_t p = 0; p < row_.size(); ++p)
        load_[s * G_ + gpu(p)] += share(s, static_cast<std::size_t>(row_[p]));
    score_ = 0.0;
    for (std::size_t s = 0; s < S_.size(); ++s) score_ += step_score(s, &load_[s * G_]);
  }

  double step_score(std::size_t s, const double* l) const {
    if (total_[s] <= 0.0) return 0.0;
    double mx = 0.0;
    for (std::size_t g = 0; g < G_; ++g) mx = std::max(mx, l[g]);
    return total_[s] / static_cast<double>(G_) / mx;
  }

  // May logical e gain one more replica on GPU g?
  bool fits(std::size_t e, std::size_t g, int new_count) const {
    return on_gpu_[g * E_ + e] == 0 || static_cast<std::size_t>(new_count) > G_;
  }

  bool accept(double candidate) const { return candidate > score_ * (1.0 + 1e-12) + 1e-12; }

  // Objective after swapping slots p and q (p, q on different GPUs).
  double swap_score(std::size_t p, std::size_t q) {
    const std::size_t g1 = gpu(p), g2 = gpu(q);
    const auto a = static_cast<std::size_t>(row_[p]), b = static_cast<std::size_t>(row_[q]);
    double cand = 0.0;
    std::vector<double>& tmp = tmp_;
    tmp.resize(G_);
    for (std::size_t s = 0; s < S_.size(); ++s) {
      std::copy(&load_[s * G_], &load_[s * G_] + G_, tmp.begin());
      const double d = share(s, b) - share(s, a);
      tmp[g1] += d;
      tmp[g2] -= d;
      cand += step_score(s, tmp.data());
    }
    return cand;
  }

  void apply_swap(std::size_t p, std::size_t q, double cand) {
    const std::size_t g1 = gpu(p), g2 = gpu(q);
    const auto a = static_cast<std::size_t>(row_[p]), b = static_cast<std::size_t>(row_[q]);
    for (std::size_t s = 0; s < S_.size(); ++s) {
      const double d = share(s, b) - share(s, a);
      load_[s * G_ + g1] += d;
      load_[s * G_ + g2] -= d;
    }
    --on_gpu_[g1 * E_ + a];
    ++on_gpu_[g2 * E_ + a];
    --on_gpu_[g2 * E_ + b];
    ++on_gpu_[g1 * E_ + b];
    std::swap(row_[p], row_[q]);
    score_ = cand;
  }

  bool swap_allowed(std::size_t p, std::size_t q) const {
    const std::size_t g1 = gpu(p), g2 = gpu(q);
    const auto a = static_cast<std::size_t>(row_[p]), b = static_cast<std::size_t>(row_[q]);
    return g1 != g2 && a != b && node(g1) == node(g2) && fits(a, g2, cnt_[a]) && fits(b, g1, cnt_[b]);
  }

  bool try_swap(std::size_t p, std::size_t q) {
    if (!swap_allowed(p, q)) return false;
    const double cand = swap_score(p, q);
    if (!accept(cand)) return false;
    apply_swap(p, q, cand);
    return true;
  }

 public:
  // Moves stacked replicas (two of one expert on one GPU, with replicas <= GPUs) apart: each by
  // the allowed swap that keeps the objective highest.
  void spread_replicas() {
    for (std::size_t p = 0; p < row_.size(); ++p) {
      const auto a = static_cast<std::size_t>(row_[p]);
      if (on_gpu_[gpu(p) * E_ + a] < 2 || static_cast<std::size_t>(cnt_[a]) > G_) continue;
      std::size_t best = row_.size();
      double best_score = 0.0;
      for (std::size_t q = 0; q < row_.size(); ++q) {
        if (!swap_allowed(p, q)) continue;
        const double c = swap_score(p, q);
        if (best == row_.size() || c > best_score) best = q, best_score = c;
      }
      if (best < row_.size()) apply_swap(p, best, best_score);
    }
  }

 private:
  bool try_retarget(std::size_t p, std::size_t b) {
    const auto a = static_cast<std::size_t>(row_[p]);
    const std::size_t g = gpu(p);
    if (a == b || cnt_[a] < 2 || !fits(b, g, cnt_[b] + 1)) return false;
    if (static_cast<std::size_t>(cnt_[a] - 1) <= G_) {
      // a drops to G replicas or fewer: none of them may be left stacked.
      for (std::size_t h = 0; h < G_; ++h)
        if (on_gpu_[h * E_ + a] - (h == g ? 1 : 0) > 1) return false;
    }
    if (N_ > 1) {
      bool on_node = false;
      for (std::size_t h = node(g) * (G_ / N_); h < (node(g) + 1) * (G_ / N_); ++h)
        on_node |= on_gpu_[h * E_ + b] > 0;
      if (!on_node) return false;
    }
    // Loads after the move: replicas of a and b change their shares.
    std::vector<double>& tmp = tmp_;
    tmp.resize(G_);
    const double ca = cnt_[a], cb = cnt_[b];
    double cand = 0.0;
    for (std::size_t s = 0; s < S_.size(); ++s) {
      std::copy(&load_[s * G_], &load_[s * G_] + G_, tmp.begin());
      const double da = S_[s][a] / (ca - 1.0) - S_[s][a] / ca;
      const double db = S_[s][b] / (cb + 1.0) - S_[s][b] / cb;
      for (std::size_t h = 0; h < G_; ++h) {
        tmp[h] += static_cast<double>(on_gpu_[h * E_ + a]) * da + static_cast<double>(on_gpu_[h * E_ + b]) * db;
      }
      // The moved slot leaves a's replicas on GPU g and joins b's.
      tmp[g] += S_[s][b] / (cb + 1.0) - S_[s][a] / (ca - 1.0);
      cand += step_score(s, tmp.data());
    }
    if (!accept(cand)) return false;
    --on_gpu_[g * E_ + a];
    ++on_gpu_[g * E_ + b];
    --cnt_[a];
    ++cnt_[b];
    row_[p] = static_cast<std::int32_t>(b);
    recompute();
    return true;
  }

  std::vector<std::int32_t> row_;
  std::vector<std::vector<double>> S_;
  std::size_t E_, G_, N_, per_gpu_;
  std::vector<int> cnt_;
  std::vector<int> on_gpu_;  // [g * E + e]: replicas of e on GPU g
  std::vector<double> total_, load_, tmp_;
  double score_ = 0.0;
};

// splitmix64: a small deterministic generator for the random batches.
inline std::uint64_t splitmix64(std::uint64_t& x) {
  std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Per-expert access counts of sample batches of one layer's records: sliding windows of
// consecutive tokens and batches drawn with replacement.
inline std::vector<std::vector<double>> step_samples(const routing_trace& t, const std::vector<std::size_t>& recs,
                                                     std::size_t E, std::size_t batch, std::size_t stride,
                                                     const step_balance_options& so, std::uint64_t seed) {
  std::vector<std::vector<double>> out;
  if (recs.empty()) return out;
  auto add = [&](std::vector<double>& c, std::size_t j) {
    for (std::uint32_t i = t.offsets[recs[j]]; i < t.offsets[recs[j] + 1]; ++i) {
      const auto e = static_cast<std::size_t>(t.experts[i]);
      MOEROUTE_CHECK(e < E, errc::bad_input, "trace record ", recs[j] + 1, " names expert ", e,
                     " but the load has ", E, " experts");
      c[e] += 1.0;
    }
  };
  auto window = [&](std::size_t b) {
    std::vector<double> c(E, 0.0);
    for (std::size_t j = b; j < std::min(recs.size(), b + batch); ++j) add(c, j);
    out.push_back(std::move(c));
  };
  if (so.windows) {
    if (recs.size() <= batch) {
      window(0);
    } else {
      for (std::size_t b = 0; b + batch <= recs.size(); b += stride) window(b);
      if ((recs.size() - batch) % stride != 0) window(recs.size() - batch);
    }
  }
  // A drawn token is, with probability prior/(n + prior), a token with as many experts as a
  // random recorded one but chosen uniformly: the fewer tokens recorded, the less their exact
  // mix is trusted.
  const double n = static_cast<double>(recs.size());
  const double p_prior = so.prior_tokens / (n + so.prior_tokens);
  std::vector<char> taken(E, 0);
  for (std::size_t k = 0; k < so.random_batches; ++k) {
    std::vector<double> c(E, 0.0);
    for (std::size_t j = 0; j < batch; ++j) {
      const auto r = static_cast<std::size_t>(splitmix64(seed) % recs.size());
      const double u = static_cast<double>(splitmix64(seed) >> 11) * 0x1.0p-53;
      if (u >= p_prior) {
        add(c, r);
        continue;
      }
      const std::size_t kk = std::min<std::size_t>(E, t.offsets[recs[r] + 1] - t.offsets[recs[r]]);
      std::fill(taken.begin(), taken.end(), 0);
      for (std::size_t m = 0; m < kk;) {
        const auto e = static_cast<std::size_t>(splitmix64(seed) % E);
        if (taken[e]) continue;
        taken[e] = 1;
        c[e] += 1.0;
        ++m;
      }
    }
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace detail

/// moeroute's step-balanced placement built from `build` (per-token records) and the total load
/// `w` (L x E; rows without records in `build` are balanced on their totals alone).
inline expert_placement step_balanced_placement(const routing_trace& build, const load_table& w, int num_logical,
                                                const placement_options& o, const step_balance_options& so = {}) {
  MOEROUTE_CHECK(so.batch >= 1, errc::invalid_argument, "batch must be at least 1");
  const bool hierarchical = o.nodes > 1 && o.groups >= 1 && o.groups % o.nodes == 0 &&
                            num_logical % o.groups == 0;
  expert_placement p = hierarchical ? eplb_hierarchical(w, num_logical, o) : eplb_global(w, num_logical, o);
  const std::size_t E = static_cast<std::size_t>(num_logical);
  const std::size_t stride = so.stride > 0 ? so.stride : std::max<std::size_t>(1, so.batch / 4);
  const auto by = records_by_layer(build);
  for (std::size_t l = 0; l < p.physical_to_logical.size(); ++l) {
    std::vector<std::vector<double>> samples;
    if (l < by.size()) samples = detail::step_samples(build, by[l], E, so.batch, stride, so, so.seed + l);
    if (samples.empty()) samples.push_back(w[l]);
    detail::step_balance_layer opt(p.physical_to_logical[l], std::move(samples), E,
                                   static_cast<std::size_t>(o.gpus),
                                   hierarchical ? static_cast<std::size_t>(o.nodes) : 1);
    opt.retarget_ = so.retarget;
    opt.spread_replicas();
    opt.optimize(so.max_passes);
    p.physical_to_logical[l] = opt.row();
  }
  return p;
}

}  // namespace moeroute
