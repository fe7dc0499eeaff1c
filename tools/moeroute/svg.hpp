#pragma once
// A small SVG line/scatter chart for the CLI's reports: axes with "nice" ticks, axis labels, a
// title, several series (lines and/or point markers) and a legend. Output is deterministic text.

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "moeroute/error.hpp"

namespace moeroute::cli {

/// One series: points (x[i], y[i]); drawn as a polyline (line) and/or circles (markers).
struct svg_series {
  std::string name;
  std::vector<double> x;
  std::vector<double> y;
  bool line = true;
  bool markers = true;
};

/// A chart. Axis ranges cover every finite point (and 0 when *_from_zero); non-finite points are
/// skipped. render() throws moeroute::error when a series' x and y differ in length.
struct svg_chart {
  std::string title;
  std::string x_label;
  std::string y_label;
  std::vector<svg_series> series;
  int width = 760;
  int height = 460;
  bool x_from_zero = true;
  bool y_from_zero = true;

  std::string render() const;
};

namespace detail {

inline std::string svg_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

inline std::string svg_num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

inline std::string svg_tick_label(double v, double step) {
  char buf[32];
  const int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  std::snprintf(buf, sizeof buf, "%.*f", std::min(decimals, 6), std::fabs(v) < step * 1e-9 ? 0.0 : v);
  return buf;
}

// A 1/2/5 x 10^k step giving about `target` intervals over [lo, hi].
inline double svg_nice_step(double lo, double hi, int target) {
  const double raw = (hi - lo) / std::max(1, target);
  if (!(raw > 0) || !std::isfinite(raw)) return 1;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double f = raw / mag;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * mag;
}

inline void svg_range(double& lo, double& hi, bool from_zero) {
  if (from_zero) {
    lo = std::min(lo, 0.0);
    hi = std::max(hi, 0.0);
  }
  if (!(lo < hi)) {
    lo -= 1;
    hi += 1;
  }
  const double step = svg_nice_step(lo, hi, 5);
  lo = std::floor(lo / step + 1e-9) * step;
  hi = std::ceil(hi / step - 1e-9) * step;
}

}  // namespace detail

inline std::string svg_chart::render() const {
  static const char* const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                        "#8c564b", "#e377c2", "#17becf"};
  double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
  for (const auto& s : series) {
    MOEROUTE_CHECK(s.x.size() == s.y.size(), errc::invalid_argument, "svg series '", s.name, "': ",
                   s.x.size(), " x values but ", s.y.size(), " y values");
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      x0 = std::min(x0, s.x[i]);
      x1 = std::max(x1, s.x[i]);
      y0 = std::min(y0, s.y[i]);
      y1 = std::max(y1, s.y[i]);
    }
  }
  if (!std::isfinite(x0)) x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  detail::svg_range(x0, x1, x_from_zero);
  detail::svg_range(y0, y1, y_from_zero);

  const double left = 72, right = 24, top = title.empty() ? 24 : 48, bottom = 60;
  const double pw = width - left - right, ph = height - top - bottom;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + ph - (y - y0) / (y1 - y0) * ph; };
  using detail::svg_num;

  std::string o;
  o += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + std::to_string(width) + "\" height=\"" +
       std::to_string(height) + "\" viewBox=\"0 0 " + std::to_string(width) + " " +
       std::to_string(height) + "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o += "<rect x=\"0\" y=\"0\" width=\"" + std::to_string(width) + "\" height=\"" + std::to_string(height) +
       "\" fill=\"white\"/>\n";
  if (!title.empty())
    o += "<text x=\"" + svg_num(width / 2.0) + "\" y=\"28\" text-anchor=\"middle\" font-size=\"15\">" +
         detail::svg_escape(title) + "</text>\n";
  // Grid and ticks.
  const double xs = detail::svg_nice_step(x0, x1, 5), ys = detail::svg_nice_step(y0, y1, 5);
  for (double t = x0; t <= x1 + xs * 1e-6; t += xs) {
    o += "<line x1=\"" + svg_num(px(t)) + "\" y1=\"" + svg_num(top) + "\" x2=\"" + svg_num(px(t)) +
         "\" y2=\"" + svg_num(top + ph) + "\" stroke=\"#e5e5e5\"/>\n";
    o += "<text x=\"" + svg_num(px(t)) + "\" y=\"" + svg_num(top + ph + 18) +
         "\" text-anchor=\"middle\">" + detail::svg_tick_label(t, xs) + "</text>\n";
  }
  for (double t = y0; t <= y1 + ys * 1e-6; t += ys) {
    o += "<line x1=\"" + svg_num(left) + "\" y1=\"" + svg_num(py(t)) + "\" x2=\"" + svg_num(left + pw) +
         "\" y2=\"" + svg_num(py(t)) + "\" stroke=\"#e5e5e5\"/>\n";
    o += "<text x=\"" + svg_num(left - 8) + "\" y=\"" + svg_num(py(t) + 4) + "\" text-anchor=\"end\">" +
         detail::svg_tick_label(t, ys) + "</text>\n";
  }
  o += "<rect x=\"" + svg_num(left) + "\" y=\"" + svg_num(top) + "\" width=\"" + svg_num(pw) +
       "\" height=\"" + svg_num(ph) + "\" fill=\"none\" stroke=\"#333\"/>\n";
  if (!x_label.empty())
    o += "<text x=\"" + svg_num(left + pw / 2) + "\" y=\"" + svg_num(height - 16.0) +
         "\" text-anchor=\"middle\">" + detail::svg_escape(x_label) + "</text>\n";
  if (!y_label.empty())
    o += "<text x=\"18\" y=\"" + svg_num(top + ph / 2) + "\" text-anchor=\"middle\" transform=\"rotate(-90 18 " +
         svg_num(top + ph / 2) + ")\">" + detail::svg_escape(y_label) + "</text>\n";
  // Series.
  for (std::size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    const std::string color = palette[k % (sizeof palette / sizeof palette[0])];
    std::string pts;
    for (std::size_t i = 0; i < s.x.size(); ++i) {
      if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
      if (!pts.empty()) pts += ' ';
      pts += svg_num(px(s.x[i])) + "," + svg_num(py(s.y[i]));
    }
    o += "<g class=\"series\" data-name=\"" + detail::svg_escape(s.name) + "\">\n";
    if (s.line && !pts.empty())
      o += "<polyline fill=\"none\" stroke=\"" + color + "\" stroke-width=\"2\" points=\"" + pts + "\"/>\n";
    if (s.markers)
      for (std::size_t i = 0; i < s.x.size(); ++i) {
        if (!std::isfinite(s.x[i]) || !std::isfinite(s.y[i])) continue;
        o += "<circle cx=\"" + svg_num(px(s.x[i])) + "\" cy=\"" + svg_num(py(s.y[i])) + "\" r=\"4\" fill=\"" +
             color + "\"/>\n";
      }
    o += "</g>\n";
  }
  // Legend (top left inside the plot).
  for (std::size_t k = 0; k < series.size(); ++k) {
    const std::string color = palette[k % (sizeof palette / sizeof palette[0])];
    const double ly = top + 16 + 18.0 * static_cast<double>(k);
    o += "<line x1=\"" + svg_num(left + 12) + "\" y1=\"" + svg_num(ly) + "\" x2=\"" + svg_num(left + 36) +
         "\" y2=\"" + svg_num(ly) + "\" stroke=\"" + color + "\" stroke-width=\"2\"/>\n";
    o += "<text x=\"" + svg_num(left + 42) + "\" y=\"" + svg_num(ly + 4) + "\">" +
         detail::svg_escape(series[k].name) + "</text>\n";
  }
  o += "</svg>\n";
  return o;
}

}  // namespace moeroute::cli
