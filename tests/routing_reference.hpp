#pragma once
// A plain, unoptimized reading of the routing semantics of docs/design.md, written independently of
// include/moeroute/routing/ (double precision, std::exp, sort with an explicit comparator). The
// tests compare the library against it.

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace ref {

struct config {
  std::string scoring = "softmax";  // softmax | sigmoid | sqrt-softplus
  int K = 1;
  bool renorm = false;
  double scale = 1.0;
  std::vector<double> bias;  // empty: none
  int groups = 0, topk_groups = 0;
  double cum_prob = 0;  // 0: off
  int min_k = 1, max_k = 0;
};

struct row_result {
  std::vector<int> ids;
  std::vector<double> w;
};

inline row_result route_row(const std::vector<double>& x, const config& c) {
  const int E = static_cast<int>(x.size());
  const double ninf = -std::numeric_limits<double>::infinity();
  for (double v : x)
    if (std::isnan(v) || v == std::numeric_limits<double>::infinity()) throw std::runtime_error("bad logit");
  std::vector<double> s(E);
  if (c.scoring == "softmax") {
    double m = ninf;
    for (double v : x) m = std::max(m, v);
    double sum = 0;
    for (int e = 0; e < E; ++e) sum += (s[e] = std::exp(x[e] - m));
    for (auto& v : s) v /= sum;
  } else if (c.scoring == "sigmoid") {
    for (int e = 0; e < E; ++e) s[e] = 1.0 / (1.0 + std::exp(-x[e]));
  } else {
    for (int e = 0; e < E; ++e) s[e] = std::sqrt(std::log1p(std::exp(x[e])));
  }
  std::vector<double> sel(E);
  for (int e = 0; e < E; ++e) sel[e] = x[e] == ninf ? ninf : s[e] + (c.bias.empty() ? 0.0 : c.bias[e]);
  std::vector<bool> eligible(E, true);
  for (int e = 0; e < E; ++e) eligible[e] = x[e] != ninf;
  if (c.groups > 0) {
    const int per = E / c.groups;
    std::vector<std::pair<double, int>> gs;
    for (int g = 0; g < c.groups; ++g) {
      std::vector<double> v(sel.begin() + g * per, sel.begin() + (g + 1) * per);
      std::sort(v.rbegin(), v.rend());
      gs.push_back({per == 1 ? v[0] : v[0] + v[1], g});
    }
    std::stable_sort(gs.begin(), gs.end(), [](auto& a, auto& b) { return a.first > b.first; });
    std::vector<bool> keep_group(c.groups, false);
    for (int i = 0; i < c.topk_groups; ++i) keep_group[gs[i].second] = true;
    for (int e = 0; e < E; ++e) eligible[e] = eligible[e] && keep_group[e / per];
  }
  std::vector<int> order;
  for (int e = 0; e < E; ++e)
    if (eligible[e]) order.push_back(e);
  if (static_cast<int>(order.size()) < c.K) throw std::runtime_error("fewer than K");
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return sel[a] > sel[b]; });
  order.resize(c.K);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return s[a] > s[b] || (s[a] == s[b] && a < b);
  });
  row_result r;
  for (int e : order) {
    r.ids.push_back(e);
    r.w.push_back(s[e]);
  }
  auto normalize = [](std::vector<double>& w) {
    const double t = std::accumulate(w.begin(), w.end(), 0.0);
    if (t > 0)
      for (auto& v : w) v /= t;
  };
  if (c.renorm) normalize(r.w);
  if (c.cum_prob > 0) {
    const int maxk = c.max_k ? c.max_k : c.K;
    const double total = std::accumulate(r.w.begin(), r.w.end(), 0.0);
    int n = 0;
    double cum = 0;
    while (n < c.K) {
      cum += r.w[n];
      ++n;
      if (n >= c.min_k && cum / total >= c.cum_prob) break;
    }
    n = std::min(n, maxk);
    r.ids.resize(n);
    r.w.resize(n);
    if (c.renorm) normalize(r.w);
  }
  for (auto& v : r.w) v *= c.scale;
  return r;
}

}  // namespace ref
