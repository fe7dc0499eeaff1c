#pragma once
// Routing concentration: is an expert cache worth building for this model and workload?
//
// Per layer with non-zero mass (each layer's E is its own counts length):
//   total_mass            sum of the counts
//   top1_share            max / total
//   hot_frac_for_coverage the smallest k such that the k hottest experts' cumulative count is
//                         >= coverage * total, divided by E (1.0 when no k reaches it)
//   concentration_score   1 - normalized entropy: 1 - H / ln(E), H the entropy of counts / total
//                         (0 = uniform, 1 = one expert). The normalized entropy is 0 when E = 1 or
//                         at most one expert has a non-zero count, so such a layer scores 1.0
//   gini                  Gini coefficient of the counts (0 = uniform, -> 1 = one expert)
//   coverage curve        experts needed for each level of `curve_levels`
//   hot experts           ids of the k hottest experts, hottest first (ties: lower id first)
// Overall: hot_frac_for_coverage = median over analyzed layers (mean of the two middle values for
// an even count), concentration_score = mean, top1_share = median, cache_helps =
// hot_frac_for_coverage < threshold (strict). Zero-mass layers are skipped; with none left the
// result is hot_frac 1.0, concentration 0, top1 0, cache_helps false and n_layers() 0.
// These are the gpu-container-concentration semantics for its fields; the rest is added here.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "moeroute/error.hpp"
#include "moeroute/io/trace_counts.hpp"

namespace moeroute {

/// Parameters of analyze_concentration.
struct concentration_options {
  double coverage = 0.90;   ///< routing coverage the resident experts must reach, in (0, 1]
  double threshold = 0.50;  ///< cache_helps when the median hot fraction is below it, in (0, 1]
  std::vector<double> curve_levels{0.50, 0.80, 0.90, 0.95, 0.99};  ///< each in (0, 1]
  std::uint64_t cell_bytes = 0;  ///< bytes of one (layer, expert) cell; 0 = no byte sizes
  /// Per-layer totals whose max exceeds (1 + this) x min get a note.
  double total_spread_note = 0.20;
};

/// The concentration of one layer.
struct layer_concentration {
  int layer_index = 0;
  int num_experts = 0;
  double total_mass = 0.0;
  double top1_share = 0.0;
  double hot_frac_for_coverage = 1.0;
  int hot_experts_for_coverage = 0;     ///< k: hot_frac_for_coverage * num_experts
  double concentration_score = 0.0;
  double gini = 0.0;
  std::vector<int> coverage_curve;      ///< experts needed per options.curve_levels entry
  std::vector<int> hot_experts;         ///< the k hottest ids, hottest first
  std::uint64_t recommended_cells = 0;  ///< = k
  std::uint64_t recommended_bytes = 0;  ///< k * cell_bytes (0 without cell_bytes)
};

/// The whole analysis.
struct concentration_report {
  double coverage_target = 0.90;
  double threshold = 0.50;
  std::vector<double> curve_levels;
  std::vector<layer_concentration> per_layer;  ///< analyzed layers, input order
  std::vector<int> skipped_layers;             ///< layer indices with zero mass
  double hot_frac_for_coverage = 1.0;          ///< median over per_layer
  double concentration_score = 0.0;            ///< mean over per_layer
  double top1_share = 0.0;                     ///< median over per_layer
  double gini = 0.0;                           ///< mean over per_layer
  bool cache_helps = false;
  int num_experts = 0;        ///< E when every analyzed layer has the same E, else 0
  std::uint64_t recommended_cells = 0;  ///< sum over layers of their k
  std::uint64_t recommended_bytes = 0;  ///< recommended_cells * cell_bytes
  std::uint64_t total_cells = 0;        ///< sum over analyzed layers of E
  std::vector<std::string> notes;

  /// Layers analyzed (with routing mass): the gpu-container report's n_layers.
  std::size_t n_layers() const noexcept { return per_layer.size(); }
};

namespace detail {
inline double conc_median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

inline std::string conc_fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

// Experts needed (hottest first) for cumulative >= level * total; E when none reaches it.
inline int conc_experts_for(const std::vector<double>& sorted_desc, double total, double level) {
  const double target = level * total;
  double cum = 0.0;
  for (std::size_t k = 0; k < sorted_desc.size(); ++k) {
    cum += sorted_desc[k];
    if (cum >= target) return static_cast<int>(k + 1);
  }
  return static_cast<int>(sorted_desc.size());
}

// cells x cell_bytes; a product past 64 bits is bad input naming cell_bytes.
inline std::uint64_t conc_bytes(std::uint64_t cells, std::uint64_t cell_bytes) {
  MOEROUTE_CHECK(cell_bytes == 0 || cells <= UINT64_MAX / cell_bytes, errc::bad_input, "cell_bytes ",
                 cell_bytes, " x ", cells, " cells overflows a 64-bit byte count");
  return cells * cell_bytes;
}
}  // namespace detail

/// Concentration of one layer's counts (E = counts.size() >= 1, every count finite and >= 0).
/// A zero-mass layer gives total_mass 0, hot_frac 1, the other metrics 0 (it is not analyzed).
inline layer_concentration analyze_layer_concentration(const layer_counts& layer,
                                                       const concentration_options& opt = {}) {
  layer_concentration r;
  r.layer_index = layer.layer_index;
  const auto& c = layer.counts;
  const std::size_t E = c.size();
  MOEROUTE_CHECK(E >= 1, errc::bad_input, "layer ", layer.layer_index, ": no expert counts");
  r.num_experts = static_cast<int>(E);
  double total = 0.0, mx = 0.0;
  std::size_t nonzero = 0;
  for (std::size_t e = 0; e < E; ++e) {
    MOEROUTE_CHECK(std::isfinite(c[e]) && c[e] >= 0.0, errc::bad_input, "layer ",
                   layer.layer_index, ": count of expert ", e, " is ", c[e],
                   " (must be finite and >= 0)");
    total += c[e];
    mx = std::max(mx, c[e]);
    nonzero += c[e] > 0.0;
  }
  MOEROUTE_CHECK(std::isfinite(total), errc::bad_input, "layer ", layer.layer_index,
                 ": the expert counts sum past the double range");
  r.total_mass = total;
  r.coverage_curve.assign(opt.curve_levels.size(), static_cast<int>(E));
  if (!(total > 0.0)) {
    r.hot_experts_for_coverage = static_cast<int>(E);
    return r;
  }
  r.top1_share = mx / total;
  std::vector<int> order(E);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return c[static_cast<std::size_t>(a)] > c[static_cast<std::size_t>(b)];
  });
  std::vector<double> sorted(E);
  for (std::size_t i = 0; i < E; ++i) sorted[i] = c[static_cast<std::size_t>(order[i])];
  const int k = detail::conc_experts_for(sorted, total, opt.coverage);
  r.hot_experts_for_coverage = k;
  r.hot_frac_for_coverage = static_cast<double>(k) / static_cast<double>(E);
  r.hot_experts.assign(order.begin(), order.begin() + k);
  for (std::size_t i = 0; i < opt.curve_levels.size(); ++i)
    r.coverage_curve[i] = detail::conc_experts_for(sorted, total, opt.curve_levels[i]);
  r.concentration_score = 1.0;  // normalized entropy 0: one expert, or E = 1
  if (E > 1 && nonzero > 1) {
    double h = 0.0;
    for (double x : c)
      if (x > 0.0) {
        const double p = x / total;
        h -= p * std::log(p);
      }
    r.concentration_score = 1.0 - h / std::log(static_cast<double>(E));
  }
  // Gini over ascending values: (2 * sum_i i * x_(i)) / (E * total) - (E + 1) / E, i from 1.
  double weighted = 0.0;
  for (std::size_t i = 0; i < E; ++i)
    weighted += static_cast<double>(i + 1) * sorted[E - 1 - i];
  const double En = static_cast<double>(E);
  r.gini = std::max(0.0, 2.0 * weighted / (En * total) - (En + 1.0) / En);
  r.recommended_cells = static_cast<std::uint64_t>(k);
  r.recommended_bytes = detail::conc_bytes(r.recommended_cells, opt.cell_bytes);
  return r;
}

/// Analyzes every layer and forms the overall verdict (see the header comment for semantics).
/// Throws moeroute::error(invalid_argument) for coverage, threshold or a curve level outside
/// (0, 1], and bad_input for a layer without counts or with a negative or non-finite count.
inline concentration_report analyze_concentration(const std::vector<layer_counts>& layers,
                                                  const concentration_options& opt = {}) {
  MOEROUTE_CHECK(opt.coverage > 0.0 && opt.coverage <= 1.0, errc::invalid_argument,
                 "coverage must be in (0, 1], got ", opt.coverage);
  MOEROUTE_CHECK(opt.threshold > 0.0 && opt.threshold <= 1.0, errc::invalid_argument,
                 "threshold must be in (0, 1], got ", opt.threshold);
  for (double l : opt.curve_levels)
    MOEROUTE_CHECK(l > 0.0 && l <= 1.0, errc::invalid_argument,
                   "coverage curve level must be in (0, 1], got ", l);
  concentration_report rep;
  rep.coverage_target = opt.coverage;
  rep.threshold = opt.threshold;
  rep.curve_levels = opt.curve_levels;
  std::vector<double> hot, top1, totals;
  double conc_sum = 0.0, gini_sum = 0.0;
  int common_e = -1;
  for (const auto& L : layers) {
    layer_concentration r = analyze_layer_concentration(L, opt);
    if (!(r.total_mass > 0.0)) {
      rep.skipped_layers.push_back(L.layer_index);
      continue;
    }
    hot.push_back(r.hot_frac_for_coverage);
    top1.push_back(r.top1_share);
    totals.push_back(r.total_mass);
    conc_sum += r.concentration_score;
    gini_sum += r.gini;
    common_e = common_e == -1 || common_e == r.num_experts ? r.num_experts : 0;
    rep.recommended_cells += r.recommended_cells;
    rep.total_cells += static_cast<std::uint64_t>(r.num_experts);
    rep.per_layer.push_back(std::move(r));
  }
  rep.recommended_bytes = detail::conc_bytes(rep.recommended_cells, opt.cell_bytes);
  rep.num_experts = common_e > 0 ? common_e : 0;
  if (rep.per_layer.empty()) {
    rep.notes.push_back("no layer has routing mass (empty or all-zero counts): nothing to cache");
  } else {
    const double n = static_cast<double>(rep.per_layer.size());
    rep.hot_frac_for_coverage = detail::conc_median(hot);
    rep.top1_share = detail::conc_median(top1);
    rep.concentration_score = conc_sum / n;
    rep.gini = gini_sum / n;
    rep.cache_helps = rep.hot_frac_for_coverage < opt.threshold;
    const auto mm = std::minmax_element(totals.begin(), totals.end());
    if (*mm.second > (1.0 + opt.total_spread_note) * *mm.first)
      rep.notes.push_back(
          "per-layer totals differ by more than " +
          detail::conc_fmt("%.0f", 100.0 * opt.total_spread_note) + "% (min " +
          detail::conc_fmt("%.6g", *mm.first) + ", max " + detail::conc_fmt("%.6g", *mm.second) +
          "): layers were not measured over the same tokens; compare them with care");
  }
  if (!rep.skipped_layers.empty())
    rep.notes.push_back(std::to_string(rep.skipped_layers.size()) +
                        " layer(s) with zero routing mass skipped");
  rep.notes.push_back(
      "the verdict holds only for the workload measured: another prompt mix can route differently");
  return rep;
}

/// The one-line verdict, e.g. "cache NOT justified — 65/128 experts (51%) resident for 90%
/// routing coverage; concentration 0.11, top expert 4.3% (median of 48 layers; ...)".
inline std::string concentration_verdict(const concentration_report& r) {
  const std::string head = r.cache_helps ? "cache could help" : "cache NOT justified";
  if (r.per_layer.empty())
    return head + " \u2014 no routing mass in any layer (empty or all-zero counts)";
  const std::string pct = detail::conc_fmt("%.0f", 100.0 * r.hot_frac_for_coverage) + "%";
  std::string experts;
  if (r.num_experts > 0) {
    const double x = r.hot_frac_for_coverage * r.num_experts;
    experts = (x == std::floor(x) ? detail::conc_fmt("%.0f", x) : detail::conc_fmt("%.1f", x)) +
              "/" + std::to_string(r.num_experts) + " experts (" + pct + ")";
  } else {  // layers of different sizes: no common expert count, the fraction alone
    experts = pct + " of each layer's experts (layers differ in size)";
  }
  return head + " \u2014 " + experts + " resident for " +
         detail::conc_fmt("%g", 100.0 * r.coverage_target) + "% routing coverage; concentration " +
         detail::conc_fmt("%.3f", r.concentration_score) + ", top expert " +
         detail::conc_fmt("%.1f", 100.0 * r.top1_share) + "% (median of " +
         std::to_string(r.per_layer.size()) + " layers; threshold " +
         detail::conc_fmt("%.0f", 100.0 * r.threshold) + "%; holds only for the workload measured)";
}

}  // namespace moeroute
