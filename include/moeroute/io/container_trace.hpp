#pragma once
// gpu-container trace JSON: per-layer expert counts of one workload,
//   {"model": "...", "num_experts": 128, "experts_per_token": 8, "n_tokens": 1024,
//    "layers": [{"layer_index": 0, "expert_counts": [E numbers]}, ...],
//    "gate_weighted": false, "created": "...", "rig": "...", "source": "..."}
// model, num_experts, experts_per_token, n_tokens and layers are required (a file without one is
// bad input, as in gpu-container-concentration); the other keys are optional.
// Read, write, and build from a routing-trace JSONL (activation counts, or router-weight mass).
// Errors name the file and the field ("t.json: layers[2].expert_counts[5] is negative"); JSON
// syntax errors name the line and column. Keys other than the known ones are kept on rewrite.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <istream>
#include <ostream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeroute/error.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/io/trace_counts.hpp"

namespace moeroute {

/// A gpu-container trace: per-layer expert counts (each layer's E is its own counts length).
struct container_trace {
  std::string model;                  ///< empty when the file has "model": null
  int num_experts = 0;
  int experts_per_token = 0;
  std::int64_t n_tokens = 0;
  bool gate_weighted = false;         ///< counts are router-weight mass, not activation counts
  std::vector<layer_counts> layers;   ///< in file order
  nlohmann::json extra = nlohmann::json::object();  ///< created, rig, source and unknown keys
};

namespace detail {
inline std::pair<std::size_t, std::size_t> ct_line_col(const std::string& text, std::size_t byte) {
  std::size_t line = 1, col = 1;
  for (std::size_t i = 0; i < byte && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return {line, col};
}

inline std::int64_t ct_int(const nlohmann::json& v, const std::string& where, std::int64_t lo,
                           std::int64_t hi) {
  MOEROUTE_CHECK(v.is_number_integer(), errc::parse_error, where, " must be an integer");
  if (v.is_number_unsigned())
    MOEROUTE_CHECK(v.get<std::uint64_t>() <= static_cast<std::uint64_t>(hi), errc::bad_input, where,
                   " = ", v.get<std::uint64_t>(), " out of range [", lo, ", ", hi, "]");
  const std::int64_t x = v.get<std::int64_t>();
  MOEROUTE_CHECK(x >= lo && x <= hi, errc::bad_input, where, " = ", x, " out of range [", lo, ", ",
                 hi, "]");
  return x;
}
}  // namespace detail

/// Deepest JSON nesting accepted in a gpu-container trace file.
inline constexpr int container_trace_max_depth = 64;

/// Parses gpu-container trace JSON text; `name` is used in error messages. Throws parse_error for
/// malformed JSON or a field of the wrong type, bad_input for a missing required field or a value
/// out of range.
inline container_trace parse_container_trace_json(const std::string& text, const std::string& name) {
  nlohmann::json j;
  try {
    // Nesting is bounded so that copying and writing the kept keys cannot exhaust the stack.
    j = nlohmann::json::parse(text, [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
      MOEROUTE_CHECK(depth <= container_trace_max_depth, errc::parse_error, name,
                     ": JSON nested deeper than ", container_trace_max_depth, " levels");
      return true;
    });
  } catch (const nlohmann::json::parse_error& e) {
    const auto lc = detail::ct_line_col(text, e.byte > 0 ? e.byte - 1 : 0);
    detail::fail(errc::parse_error, name, ":", lc.first, ":", lc.second, ": not valid JSON");
  } catch (const nlohmann::json::exception& e) {
    // Number overflow (out_of_range.406) carries the literal, not its position: locate it.
    const std::string w = e.what();
    const std::size_t q0 = w.find('\''), q1 = w.rfind('\'');
    const std::string lit = q0 != std::string::npos && q1 > q0 ? w.substr(q0 + 1, q1 - q0 - 1) : "";
    const std::size_t at = lit.empty() ? std::string::npos : text.find(lit);
    if (at != std::string::npos) {
      const auto lc = detail::ct_line_col(text, at);
      detail::fail(errc::parse_error, name, ":", lc.first, ":", lc.second, ": number '", lit,
                   "' is out of range");
    }
    detail::fail(errc::parse_error, name, ": not valid JSON (number out of range)");
  }
  MOEROUTE_CHECK(j.is_object(), errc::parse_error, name, ": expected a JSON object at the top level");
  container_trace t;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const nlohmann::json& v = it.value();
    const std::string where = name + ": field '" + k + "'";
    if (k == "model") {
      MOEROUTE_CHECK(v.is_string() || v.is_null(), errc::parse_error, where, " must be a string");
      if (v.is_string()) t.model = v.get<std::string>();
    } else if (k == "num_experts") {
      t.num_experts = static_cast<int>(detail::ct_int(v, where, 1, max_trace_expert + 1));
    } else if (k == "experts_per_token") {
      t.experts_per_token = static_cast<int>(detail::ct_int(v, where, 1, max_trace_expert + 1));
    } else if (k == "n_tokens") {
      t.n_tokens = detail::ct_int(v, where, 0, INT64_MAX);
    } else if (k == "gate_weighted") {
      MOEROUTE_CHECK(v.is_boolean() || v.is_null(), errc::parse_error, where, " must be a bool");
      t.gate_weighted = v.is_boolean() && v.get<bool>();
    } else if (k != "layers") {
      t.extra[k] = v;
    }
  }
  MOEROUTE_CHECK(j.contains("layers"), errc::parse_error, name, ": missing field 'layers'");
  for (const char* k : {"model", "num_experts", "experts_per_token", "n_tokens"})
    MOEROUTE_CHECK(j.contains(k), errc::bad_input, name, ": missing field '", k, "'");
  const auto& layers = j["layers"];
  MOEROUTE_CHECK(layers.is_array(), errc::parse_error, name, ": field 'layers' must be an array");
  std::set<std::int64_t> seen;
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const auto& L = layers[i];
    const std::string where = detail::concat(name, ": layers[", i, "]");
    MOEROUTE_CHECK(L.is_object(), errc::parse_error, where, " must be an object");
    MOEROUTE_CHECK(L.contains("layer_index"), errc::parse_error, where, ": missing 'layer_index'");
    MOEROUTE_CHECK(L.contains("expert_counts"), errc::parse_error, where,
                   ": missing 'expert_counts'");
    const auto li = detail::ct_int(L["layer_index"], where + ".layer_index", 0, max_trace_layer);
    MOEROUTE_CHECK(seen.insert(li).second, errc::bad_input, where, ": layer_index ", li,
                   " appears twice");
    const auto& ec = L["expert_counts"];
    MOEROUTE_CHECK(ec.is_array(), errc::parse_error, where, ".expert_counts must be an array");
    MOEROUTE_CHECK(!ec.empty() && ec.size() <= static_cast<std::size_t>(max_trace_expert) + 1,
                   errc::bad_input, where, ".expert_counts has ", ec.size(),
                   " entries (must be 1 to ", max_trace_expert + 1, ")");
    layer_counts c;
    c.layer_index = static_cast<int>(li);
    c.counts.reserve(ec.size());
    double sum = 0.0;
    for (std::size_t e = 0; e < ec.size(); ++e) {
      MOEROUTE_CHECK(ec[e].is_number(), errc::parse_error, where, ".expert_counts[", e,
                     "] is not a number");
      const double x = ec[e].get<double>();
      MOEROUTE_CHECK(std::isfinite(x) && x >= 0.0, errc::bad_input, where, ".expert_counts[", e,
                     "] = ", x, " (must be finite and >= 0)");
      sum += x;
      MOEROUTE_CHECK(std::isfinite(sum), errc::bad_input, where, ".expert_counts: the counts up to [", e,
                     "] sum past the double range");
      c.counts.push_back(x);
    }
    t.layers.push_back(std::move(c));
  }
  return t;
}

/// Reads a gpu-container trace JSON file.
inline container_trace read_container_trace_json(const std::string& path) {
  return parse_container_trace_json(read_input_file(path, input_cap_document), path);
}

/// The trace as JSON (counts written as integers when they are whole numbers).
inline nlohmann::json container_trace_to_json(const container_trace& t) {
  nlohmann::json j = nlohmann::json::object();
  j["model"] = t.model;
  j["num_experts"] = t.num_experts;
  j["experts_per_token"] = t.experts_per_token;
  j["n_tokens"] = t.n_tokens;
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& L : t.layers) {
    nlohmann::json counts = nlohmann::json::array();
    for (double x : L.counts) {
      if (x == std::floor(x) && x < 9.0e15)
        counts.push_back(static_cast<std::int64_t>(x));
      else
        counts.push_back(x);
    }
    layers.push_back({{"layer_index", L.layer_index}, {"expert_counts", std::move(counts)}});
  }
  j["layers"] = std::move(layers);
  j["gate_weighted"] = t.gate_weighted;
  for (auto it = t.extra.begin(); it != t.extra.end(); ++it) j[it.key()] = it.value();
  return j;
}

/// Writes the trace as pretty JSON (two-space indent) with a trailing newline.
inline void write_container_trace_json(std::ostream& out, const container_trace& t) {
  out << container_trace_to_json(t).dump(2) << '\n';
}

/// Tokens in a routing trace: the most records any one layer has (one record = one token there).
inline std::int64_t routing_trace_tokens(const routing_trace& r) {
  std::vector<std::int64_t> per(static_cast<std::size_t>(r.num_layers()), 0);
  std::int64_t m = 0;
  for (auto l : r.layer) m = std::max(m, ++per[static_cast<std::size_t>(l)]);
  return m;
}

/// Largest layers x experts table container_trace_from_routing builds (2^26 cells, 512 MiB).
inline constexpr std::uint64_t max_routing_table_cells = std::uint64_t{1} << 26;

/// Converts a routing-trace JSONL (already parsed) to a gpu-container trace. num_experts = 0
/// infers E as 1 + the largest id; gate_weighted uses the router-weight mass (needs weights on
/// every record) instead of activation counts. experts_per_token is the largest record length.
/// Throws errc::capacity when (layers present) x E exceeds max_routing_table_cells.
inline container_trace container_trace_from_routing(const routing_trace& r, const std::string& model,
                                                    int num_experts = 0, bool gate_weighted = false) {
  // The dense per-layer tables cost (layers present) x E cells: refuse sizes a small hostile
  // trace could ask for (65536 layers x 65536 experts would be 34 GB).
  {
    std::vector<char> present(static_cast<std::size_t>(r.num_layers()), 0);
    std::uint64_t n_present = 0;
    for (auto l : r.layer) n_present += present[static_cast<std::size_t>(l)]++ == 0;
    const std::uint64_t E = static_cast<std::uint64_t>(std::max(num_experts, r.num_experts()));
    MOEROUTE_CHECK(n_present * E <= max_routing_table_cells, errc::capacity, "routing trace has ",
                   n_present, " layers x ", E, " experts = ", n_present * E,
                   " count cells, more than the limit of ", max_routing_table_cells);
  }
  container_trace t;
  t.model = model;
  t.layers = gate_weighted ? trace_weight_mass(r, num_experts) : trace_activation_counts(r, num_experts);
  t.num_experts = num_experts > 0 ? num_experts : r.num_experts();
  for (std::size_t i = 0; i + 1 < r.offsets.size(); ++i)
    t.experts_per_token = std::max(t.experts_per_token, static_cast<int>(r.offsets[i + 1] - r.offsets[i]));
  t.n_tokens = routing_trace_tokens(r);
  t.gate_weighted = gate_weighted;
  t.extra["source"] = "routing-trace JSONL";
  return t;
}

}  // namespace moeroute
