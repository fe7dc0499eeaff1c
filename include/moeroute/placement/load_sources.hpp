#pragma once
// Expert load for placement, from any source moeroute reads, and the halves of a routing trace.
//
// Contract:
// - load_table_from_counts: per-layer counts (routing trace, gpu-container trace, imatrix) to a
//   dense L x E table, L = 1 + the largest layer index (absent layers are zero rows). Every layer
//   must have the same E, and E must equal num_experts when that is > 0 (errc::bad_input naming
//   the layer: "layer 3 has 63 experts, expected 64").
// - SGLang's expert-distribution recorder file: {"logical_count": [layers][experts]} or
//   [steps][layers][experts] (summed over steps); numbers finite and >= 0, rows rectangular.
//   Errors name the file and the index ("c.json: logical_count[2][5] is negative").
// - routing_trace_half: the records of each layer in file order are that layer's tokens; the
//   first half keeps the first floor(n/2) records of every layer, the second half the rest, so a
//   placement built on one half can be judged on tokens it never saw.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeroute/error.hpp"
#include "moeroute/io/input_file.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/io/trace_counts.hpp"
#include "moeroute/placement/placement.hpp"

namespace moeroute {

/// Per-layer counts to a dense table; num_experts = 0 takes E from the counts.
inline load_table load_table_from_counts(const std::vector<layer_counts>& layers, int num_experts,
                                         const std::string& what) {
  MOEROUTE_CHECK(!layers.empty(), errc::bad_input, what, ": no expert counts");
  const std::size_t E = num_experts > 0 ? static_cast<std::size_t>(num_experts) : layers.front().counts.size();
  int L = 0;
  for (const auto& c : layers) {
    MOEROUTE_CHECK(c.counts.size() == E, errc::bad_input, what, ": layer ", c.layer_index, " has ",
                   c.counts.size(), " experts, expected ", E,
                   num_experts > 0 ? " (--experts)" : " (as in its first layer)");
    MOEROUTE_CHECK(c.layer_index >= 0 && c.layer_index <= max_trace_layer, errc::bad_input, what,
                   ": layer index ", c.layer_index, " out of range");
    L = std::max(L, c.layer_index + 1);
  }
  load_table t(static_cast<std::size_t>(L), std::vector<double>(E, 0.0));
  for (const auto& c : layers) t[static_cast<std::size_t>(c.layer_index)] = c.counts;
  return t;
}

/// Parses SGLang's expert-distribution JSON ({"logical_count": ...}); `name` is used in errors.
inline load_table parse_logical_count_json(const std::string& text, const std::string& name) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  MOEROUTE_CHECK(!j.is_discarded(), errc::parse_error, name, ": not valid JSON");
  MOEROUTE_CHECK(j.is_object() && j.contains("logical_count"), errc::parse_error, name,
                 ": missing field 'logical_count' (SGLang's expert-distribution record)");
  const auto& lc = j["logical_count"];
  MOEROUTE_CHECK(lc.is_array() && !lc.empty(), errc::bad_input, name,
                 ": logical_count must be a non-empty array");
  const bool stepped = lc[0].is_array() && !lc[0].empty() && lc[0][0].is_array();
  load_table t;
  auto add_matrix = [&](const nlohmann::json& m, const std::string& where) {
    MOEROUTE_CHECK(m.is_array() && !m.empty(), errc::bad_input, name, ": ", where,
                   " must be a non-empty [layers][experts] array");
    if (t.empty()) t.assign(m.size(), {});
    MOEROUTE_CHECK(m.size() == t.size(), errc::bad_input, name, ": ", where, " has ", m.size(),
                   " layers, expected ", t.size());
    for (std::size_t l = 0; l < m.size(); ++l) {
      const auto& row = m[l];
      MOEROUTE_CHECK(row.is_array() && !row.empty(), errc::bad_input, name, ": ", where, "[", l,
                     "] must be a non-empty array of numbers");
      MOEROUTE_CHECK(row.size() <= static_cast<std::size_t>(max_trace_expert) + 1, errc::bad_input, name,
                     ": ", where, "[", l, "] has too many experts (", row.size(), ")");
      if (t[l].empty()) t[l].assign(row.size(), 0.0);
      MOEROUTE_CHECK(row.size() == t[l].size() && row.size() == t[0].size(), errc::bad_input, name, ": ",
                     where, "[", l, "] has ", row.size(), " experts, expected ", t[0].size());
      for (std::size_t e = 0; e < row.size(); ++e) {
        MOEROUTE_CHECK(row[e].is_number(), errc::bad_input, name, ": ", where, "[", l, "][", e,
                       "] is not a number");
        const double x = row[e].get<double>();
        MOEROUTE_CHECK(std::isfinite(x) && x >= 0.0, errc::bad_input, name, ": ", where, "[", l, "][", e,
                       "] = ", x, " (must be finite and >= 0)");
        t[l][e] += x;
      }
    }
  };
  if (stepped) {
    for (std::size_t s = 0; s < lc.size(); ++s) add_matrix(lc[s], "logical_count[" + std::to_string(s) + "]");
  } else {
    add_matrix(lc, "logical_count");
  }
  return t;
}

/// The whole text of a placement input file, opened as io/input_file.hpp says (regular files
/// only, at most input_cap_document bytes).
inline std::string read_text_file(const std::string& path) { return read_input_file(path); }

/// Reads SGLang's expert-distribution JSON file.
inline load_table read_logical_count_json(const std::string& path) {
  return parse_logical_count_json(read_text_file(path), path);
}

/// The records of every layer, in file order (one record = one token of that layer).
inline std::vector<std::vector<std::size_t>> records_by_layer(const routing_trace& t) {
  std::vector<std::vector<std::size_t>> by(static_cast<std::size_t>(t.num_layers()));
  for (std::size_t r = 0; r < t.size(); ++r) by[static_cast<std::size_t>(t.layer[r])].push_back(r);
  return by;
}

/// Which tokens of a trace to use.
enum class trace_half { all, first, second };

/// The first or second half of every layer's tokens (see the contract at the top).
inline routing_trace routing_trace_half(const routing_trace& t, trace_half h) {
  if (h == trace_half::all) return t;
  const auto by = records_by_layer(t);
  std::vector<char> keep(t.size(), 0);
  for (const auto& recs : by)
    for (std::size_t i = 0; i < recs.size(); ++i) keep[recs[i]] = (i < recs.size() / 2) == (h == trace_half::first);
  routing_trace out;
  out.has_weights = t.has_weights;
  for (std::size_t r = 0; r < t.size(); ++r) {
    if (!keep[r]) continue;
    out.layer.push_back(t.layer[r]);
    out.token.push_back(t.token[r]);
    for (std::uint32_t i = t.offsets[r]; i < t.offsets[r + 1]; ++i) {
      out.experts.push_back(t.experts[i]);
      if (t.has_weights) out.weights.push_back(t.weights[i]);
    }
    out.offsets.push_back(static_cast<std::uint32_t>(out.experts.size()));
  }
  if (out.layer.empty()) out.has_weights = false;
  return out;
}

}  // namespace moeroute
