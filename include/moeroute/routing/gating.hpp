#pragma once
// Gating policies: how many of the K chosen experts a token keeps.
//
// Contract of a Gating policy P:
//   static constexpr const char* name;
//   void validate(int K) const;        // throws moeroute::error on bad parameters
//   int keep(const float* w, int k) const noexcept;
//       w: the chosen experts' weights in descending order (k of them, all >= 0). Returns how
//       many of the first to keep, in [1, k] (the router drops the rest).

#include <algorithm>
#include <cmath>

#include "moeroute/error.hpp"

namespace moeroute {

/// Keep all K.
struct no_gating {
  static constexpr const char* name = "none";
  void validate(int) const {}
  int keep(const float*, int k) const noexcept { return k; }
};

/// Cumulative-probability zero-gating: keep the smallest n with n >= min_k and
/// sum(w[0..n)) / sum(w) >= cum_prob, capped at max_k (max_k = 0 means K). Shares are summed and
/// divided in double. A row whose weights sum to 0 keeps min_k.
struct cumulative_gating {
  static constexpr const char* name = "cum-prob";
  double cum_prob = 1.0;
  int min_k = 1;
  int max_k = 0;

  void validate(int K) const {
    MOEROUTE_CHECK(std::isfinite(cum_prob) && cum_prob > 0.0 && cum_prob <= 1.0,
                   errc::invalid_argument, "zero-gating: cum_prob = ", cum_prob,
                   " must be in (0, 1]");
    const int mk = max_k == 0 ? K : max_k;
    MOEROUTE_CHECK(mk >= 1 && mk <= K, errc::invalid_argument, "zero-gating: max_k = ", max_k,
                   " must be in [1, K = ", K, "]");
    MOEROUTE_CHECK(min_k >= 1 && min_k <= mk, errc::invalid_argument, "zero-gating: min_k = ",
                   min_k, " must be in [1, max_k = ", mk, "]");
  }

  int keep(const float* w, int k) const noexcept {
    const int mk = std::min(max_k == 0 ? k : max_k, k);
    constexpr int kmax = 64;  // up to kmax: the shares' divisions are independent (they pipeline)
    double cum[kmax];
    double total = 0.0;
    for (int i = 0; i < k; ++i) {
      total += static_cast<double>(w[i]);
      if (i < kmax) cum[i] = total;  // the running sum is the cumulative weight of the first i + 1
    }
    if (!(total > 0.0)) return std::min(min_k, mk);
    int n = 0;
    if (k <= kmax) {
      // cum[i] / total >= cum_prob without the division where the product decides: q = cum[i] /
      // total rounds to >= cum_prob when the exact q exceeds cum_prob * (1 + 2^-51), and below it
      // under cum_prob * (1 - 2^-51); the bounds below are that with room for their own rounding
      const double pt = cum_prob * total, hi = pt * (1.0 + 0x1p-50), lo = pt * (1.0 - 0x1p-50);
      bool reached[kmax];
      for (int i = 0; i < k; ++i)
        reached[i] = cum[i] >= hi || (cum[i] > lo && cum[i] / total >= cum_prob);
      while (n < k) {
        ++n;
        if (n >= min_k && reached[n - 1]) break;
      }
      return std::min(n, mk);
    }
    double c = 0.0;
    while (n < k) {
      c += static_cast<double>(w[n]);
      ++n;
      if (n >= min_k && c / total >= cum_prob) break;
    }
    return std::min(n, mk);
  }
};

}  // namespace moeroute
