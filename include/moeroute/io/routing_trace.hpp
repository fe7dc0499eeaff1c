#pragma once
// Routing trace JSONL (one object per (token, layer) record, in inference order):
//   {"layer": 3, "experts": [6, 2], "gating_probs": [0.57, 0.43], "token_idx": 0, ...}
// `experts` are the chosen ids, best first; `gating_probs` (or `weights`) optional, same length;
// `token_idx` optional; other keys are ignored. Blank lines are skipped. Errors name file and line.

#include <cmath>
#include <cstdint>
#include <limits>
#include <fstream>
#include <istream>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeroute/error.hpp"
#include "moeroute/io/input_file.hpp"

namespace moeroute {

/// Largest layer index and expert id a trace may name (bounds dense L x E tables built from it).
inline constexpr std::int64_t max_trace_layer = 65535;
inline constexpr std::int64_t max_trace_expert = 65535;

/// A routing trace held as CSR: record r touched experts[offsets[r] .. offsets[r+1]) of layer[r].
struct routing_trace {
  std::vector<std::int32_t> layer;      ///< per record
  std::vector<std::int64_t> token;      ///< per record; -1 when the line had no token_idx
  std::vector<std::uint32_t> offsets{0};  ///< records + 1 entries
  std::vector<std::int32_t> experts;    ///< chosen ids, best first within a record
  std::vector<float> weights;           ///< same length as experts when has_weights, else empty
  bool has_weights = false;             ///< every record carried gating_probs/weights

  std::size_t size() const noexcept { return layer.size(); }
  std::size_t num_accesses() const noexcept { return experts.size(); }
  /// 1 + the largest layer index seen (0 for an empty trace).
  int num_layers() const noexcept {
    int m = -1;
    for (auto l : layer) m = l > m ? l : m;
    return m + 1;
  }
  /// 1 + the largest expert id seen (0 for a trace without accesses).
  int num_experts() const noexcept {
    int m = -1;
    for (auto e : experts) m = e > m ? e : m;
    return m + 1;
  }
};

namespace detail {
inline std::int64_t trace_int_field(const nlohmann::json& obj, const char* key, const std::string& where,
                                    std::int64_t lo, std::int64_t hi) {
  const auto& v = obj.at(key);
  MOEROUTE_CHECK(v.is_number_integer(), errc::parse_error, where, ": field '", key,
                 "' must be an integer");
  const std::int64_t x = v.get<std::int64_t>();
  MOEROUTE_CHECK(x >= lo && x <= hi, errc::bad_input, where, ": field '", key, "' = ", x,
                 " out of range [", lo, ", ", hi, "]");
  return x;
}
}  // namespace detail

/// Parses a routing-trace JSONL stream; `name` is used in error messages ("file.jsonl:LINE: ...").
inline routing_trace parse_routing_trace_jsonl(std::istream& in, const std::string& name) {
  routing_trace t;
  std::string line;
  std::size_t lineno = 0;
  bool any_weights = false, all_weights = true;
  std::vector<float> w;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = name + ":" + std::to_string(lineno);
    nlohmann::json obj = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    MOEROUTE_CHECK(!obj.is_discarded(), errc::parse_error, where, ": not valid JSON");
    MOEROUTE_CHECK(obj.is_object(), errc::parse_error, where, ": expected a JSON object");
    MOEROUTE_CHECK(obj.contains("layer"), errc::parse_error, where, ": missing field 'layer'");
    MOEROUTE_CHECK(obj.contains("experts"), errc::parse_error, where, ": missing field 'experts'");
    const auto layer = detail::trace_int_field(obj, "layer", where, 0, max_trace_layer);
    std::int64_t token = -1;
    if (obj.contains("token_idx") && !obj["token_idx"].is_null())
      token = detail::trace_int_field(obj, "token_idx", where, 0, INT64_MAX);
    const auto& ex = obj["experts"];
    MOEROUTE_CHECK(ex.is_array(), errc::parse_error, where, ": field 'experts' must be an array");
    const char* wkey = obj.contains("gating_probs") ? "gating_probs"
                       : obj.contains("weights")    ? "weights"
                                                    : nullptr;
    w.clear();
    if (wkey) {
      const auto& wv = obj[wkey];
      MOEROUTE_CHECK(wv.is_array(), errc::parse_error, where, ": field '", wkey, "' must be an array");
      MOEROUTE_CHECK(wv.size() == ex.size(), errc::bad_input, where, ": field '", wkey, "' has ",
                     wv.size(), " entries but 'experts' has ", ex.size());
      for (std::size_t i = 0; i < wv.size(); ++i) {
        MOEROUTE_CHECK(wv[i].is_number(), errc::parse_error, where, ": ", wkey, "[", i,
                       "] is not a number");
        const double x = wv[i].get<double>();
        MOEROUTE_CHECK(std::isfinite(x) && std::fabs(x) <= static_cast<double>(std::numeric_limits<float>::max()),
                       errc::bad_input, where, ": ", wkey, "[", i, "] is not a finite float32 (", x, ")");
        w.push_back(static_cast<float>(x));
      }
      any_weights = true;
    } else {
      all_weights = false;
    }
    for (std::size_t i = 0; i < ex.size(); ++i) {
      MOEROUTE_CHECK(ex[i].is_number_integer(), errc::parse_error, where, ": experts[", i,
                     "] is not an integer");
      const auto e = ex[i].get<std::int64_t>();
      MOEROUTE_CHECK(e >= 0 && e <= max_trace_expert, errc::bad_input, where, ": experts[", i,
                     "] = ", e, " out of range [0, ", max_trace_expert, "]");
      t.experts.push_back(static_cast<std::int32_t>(e));
    }
    MOEROUTE_CHECK(t.experts.size() <= UINT32_MAX, errc::capacity, where, ": too many accesses");
    t.weights.insert(t.weights.end(), w.begin(), w.end());
    if (!wkey) t.weights.resize(t.experts.size(), 0.0f);
    t.layer.push_back(static_cast<std::int32_t>(layer));
    t.token.push_back(token);
    t.offsets.push_back(static_cast<std::uint32_t>(t.experts.size()));
  }
  MOEROUTE_CHECK(!in.bad(), errc::io_error, name, ": read error");
  t.has_weights = any_weights && all_weights && !t.layer.empty();
  if (!t.has_weights) t.weights.clear();
  return t;
}

/// Reads a routing-trace JSONL file.
inline routing_trace read_routing_trace_jsonl(const std::string& path) {
  std::ifstream f = open_input_file(path, input_cap_stream);
  return parse_routing_trace_jsonl(f, path);
}

/// Writes a trace as JSONL (layer, token_idx when known, experts, gating_probs when present).
inline void write_routing_trace_jsonl(std::ostream& out, const routing_trace& t) {
  for (std::size_t r = 0; r < t.size(); ++r) {
    nlohmann::json obj;
    obj["layer"] = t.layer[r];
    if (t.token[r] >= 0) obj["token_idx"] = t.token[r];
    obj["experts"] = std::vector<std::int32_t>(t.experts.begin() + t.offsets[r],
                                               t.experts.begin() + t.offsets[r + 1]);
    if (t.has_weights)
      obj["gating_probs"] = std::vector<float>(t.weights.begin() + t.offsets[r],
                                               t.weights.begin() + t.offsets[r + 1]);
    out << obj.dump() << '\n';
  }
}

}  // namespace moeroute
