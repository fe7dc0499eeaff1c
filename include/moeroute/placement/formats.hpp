#pragma once
// Placement files: what SGLang and vLLM load, and moeroute's own record.
//
// Contract:
// - SGLang (`--init-expert-location FILE.json`): {"physical_to_logical_map": [[P ids] per layer]}
//   and no other key (SGLang passes the keys as arguments to ExpertLocationMetadata.init_by_mapping;
//   a rank holds P / ep_size consecutive physical experts, so P must be divisible by the GPU count).
// - vLLM (EPLB static mapping, one JSON line): {"record_type": "eplb_initial_mapping", "version":
//   1, "num_redundant_experts": R, "num_slots": P, "initial_global_assignments": {"<layer>":
//   [P ids]}} with keys "0" .. "L-1".
// - moeroute (`format: moeroute-expert-placement-v1`): shape, physical_to_logical_map,
//   logical_to_physical_map, replica_counts, gpu_of_physical, and the predicted balancedness.
// - read_placement_json() takes any of the three. SGLang and vLLM files do not record the GPU
//   count: `gpus` must then be given (> 0); for a moeroute file a given `gpus` must match it.
//   Errors (moeroute::error) name the file and field; the result passes check_placement().

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeroute/error.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/placement/load_sources.hpp"
#include "moeroute/placement/placement.hpp"

namespace moeroute {

/// Name of moeroute's own placement format.
inline constexpr const char* placement_format_v1 = "moeroute-expert-placement-v1";

/// SGLang's --init-expert-location file.
inline nlohmann::ordered_json placement_to_sglang_json(const expert_placement& p) {
  nlohmann::ordered_json j;
  j["physical_to_logical_map"] = p.physical_to_logical;
  return j;
}

/// vLLM's EPLB static mapping record.
inline nlohmann::ordered_json placement_to_vllm_json(const expert_placement& p) {
  nlohmann::ordered_json j;
  j["record_type"] = "eplb_initial_mapping";
  j["version"] = 1;
  j["num_redundant_experts"] = p.num_redundant();
  j["num_slots"] = p.num_physical();
  nlohmann::ordered_json a = nlohmann::ordered_json::object();
  for (std::size_t l = 0; l < p.physical_to_logical.size(); ++l) a[std::to_string(l)] = p.physical_to_logical[l];
  j["initial_global_assignments"] = std::move(a);
  return j;
}

/// Extra facts written into moeroute's record.
struct placement_record_info {
  std::string algorithm;
  int groups = 1;
  load_table load;                     ///< the load the placement was built from (may be empty)
  nlohmann::ordered_json source = nlohmann::ordered_json::object();
};

/// moeroute's placement record.
inline nlohmann::ordered_json placement_to_moeroute_json(const expert_placement& p,
                                                         const placement_record_info& info = {}) {
  nlohmann::ordered_json j;
  j["format"] = placement_format_v1;
  j["algorithm"] = info.algorithm;
  j["num_layers"] = p.num_layers();
  j["num_logical_experts"] = p.num_logical;
  j["num_physical_experts"] = p.num_physical();
  j["num_redundant_experts"] = p.num_redundant();
  j["num_gpus"] = p.num_gpus;
  j["num_nodes"] = p.num_nodes;
  j["num_groups"] = info.groups;
  j["experts_per_gpu"] = p.experts_per_gpu();
  j["physical_to_logical_map"] = p.physical_to_logical;
  nlohmann::ordered_json l2p = nlohmann::ordered_json::array(), cnt = nlohmann::ordered_json::array();
  for (const auto& row : p.physical_to_logical) {
    l2p.push_back(logical_to_physical(row, p.num_logical));
    cnt.push_back(replica_counts(row, p.num_logical));
  }
  j["logical_to_physical_map"] = std::move(l2p);
  j["replica_counts"] = std::move(cnt);
  std::vector<int> gpu;
  for (int i = 0; i < p.num_physical(); ++i) gpu.push_back(p.gpu_of(i));
  j["gpu_of_physical"] = gpu;
  if (!info.load.empty()) {
    const auto per = predicted_balancedness(p, info.load);
    double sum = 0.0;
    for (double b : per) sum += b;
    nlohmann::ordered_json pred;
    pred["basis"] = "expected GPU load from the input load, each expert's load split evenly over its replicas";
    pred["balancedness"] = per.empty() ? 1.0 : sum / static_cast<double>(per.size());
    pred["per_layer"] = per;
    j["predicted"] = std::move(pred);
  }
  j["source"] = info.source;
  return j;
}

namespace detail {
inline std::vector<std::int32_t> placement_row(const nlohmann::json& v, const std::string& where) {
  MOEROUTE_CHECK(v.is_array() && !v.empty(), errc::bad_input, where, " must be a non-empty array of ids");
  std::vector<std::int32_t> row;
  for (std::size_t i = 0; i < v.size(); ++i) {
    MOEROUTE_CHECK(v[i].is_number_integer(), errc::bad_input, where, "[", i, "] is not an integer");
    const auto x = v[i].get<std::int64_t>();
    MOEROUTE_CHECK(x >= 0 && x <= max_trace_expert, errc::bad_input, where, "[", i, "] = ", x,
                   " out of range [0, ", max_trace_expert, "]");
    row.push_back(static_cast<std::int32_t>(x));
  }
  return row;
}

inline int placement_int(const nlohmann::json& j, const char* key, const std::string& name) {
  MOEROUTE_CHECK(j.contains(key) && j[key].is_number_integer(), errc::bad_input, name, ": field '", key,
                 "' missing or not an integer");
  const auto x = j[key].get<std::int64_t>();
  MOEROUTE_CHECK(x >= 0 && x <= 1 << 20, errc::bad_input, name, ": field '", key, "' = ", x, " out of range");
  return static_cast<int>(x);
}

inline int max_id_plus_one(const expert_placement& p) {
  int m = -1;
  for (const auto& row : p.physical_to_logical)
    for (auto e : row) m = std::max(m, static_cast<int>(e));
  return m + 1;
}
}  // namespace detail

/// Which file a placement came from.
enum class placement_format { sglang, vllm, moeroute };

/// Parses any of the three placement files (see the contract at the top).
inline expert_placement parse_placement_json(const std::string& text, const std::string& name, int gpus,
                                             placement_format* format = nullptr) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // vLLM writes JSONL: take the eplb_initial_mapping record.
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      nlohmann::json r = nlohmann::json::parse(line, nullptr, false);
      MOEROUTE_CHECK(!r.is_discarded(), errc::parse_error, name, ": not valid JSON or JSONL");
      if (r.is_object() && r.value("record_type", "") == "eplb_initial_mapping") {
        j = std::move(r);
        break;
      }
    }
    MOEROUTE_CHECK(!j.is_discarded(), errc::parse_error, name, ": no eplb_initial_mapping record");
  }
  MOEROUTE_CHECK(j.is_object(), errc::parse_error, name, ": expected a JSON object");
  expert_placement p;
  placement_format f = placement_format::sglang;
  if (j.contains("record_type")) {
    MOEROUTE_CHECK(j["record_type"] == "eplb_initial_mapping", errc::bad_input, name,
                   ": record_type is not eplb_initial_mapping");
    f = placement_format::vllm;
    MOEROUTE_CHECK(detail::placement_int(j, "version", name) == 1, errc::unsupported, name,
                   ": only version 1 of eplb_initial_mapping is read");
    const int R = detail::placement_int(j, "num_redundant_experts", name);
    const int P = detail::placement_int(j, "num_slots", name);
    const auto& a = j.contains("initial_global_assignments") ? j["initial_global_assignments"] : nlohmann::json();
    MOEROUTE_CHECK(a.is_object() && !a.empty(), errc::bad_input, name,
                   ": initial_global_assignments must be a non-empty object");
    for (std::size_t l = 0; l < a.size(); ++l) {
      const std::string key = std::to_string(l);
      MOEROUTE_CHECK(a.contains(key), errc::bad_input, name, ": initial_global_assignments has ", a.size(),
                     " layers but no key \"", key, "\"");
      p.physical_to_logical.push_back(detail::placement_row(a[key], name + ": initial_global_assignments." + key));
      MOEROUTE_CHECK(p.physical_to_logical.back().size() == static_cast<std::size_t>(P), errc::bad_input, name,
                     ": initial_global_assignments.", key, " has ", p.physical_to_logical.back().size(),
                     " slots but num_slots = ", P);
    }
    MOEROUTE_CHECK(R <= P, errc::bad_input, name, ": num_redundant_experts ", R, " > num_slots ", P);
    p.num_logical = P - R;
  } else if (j.contains("format")) {
    MOEROUTE_CHECK(j["format"] == placement_format_v1, errc::unsupported, name, ": format is not ",
                   placement_format_v1);
    f = placement_format::moeroute;
    p.num_logical = detail::placement_int(j, "num_logical_experts", name);
    p.num_gpus = detail::placement_int(j, "num_gpus", name);
    p.num_nodes = detail::placement_int(j, "num_nodes", name);
    MOEROUTE_CHECK(gpus <= 0 || gpus == p.num_gpus, errc::invalid_argument, name, ": the placement is for ",
                   p.num_gpus, " GPUs, not ", gpus);
  } else {
    MOEROUTE_CHECK(j.contains("physical_to_logical_map"), errc::parse_error, name,
                   ": not a placement (no physical_to_logical_map, record_type or format)");
  }
  if (f != placement_format::vllm) {
    const auto& m = j["physical_to_logical_map"];
    MOEROUTE_CHECK(m.is_array() && !m.empty(), errc::bad_input, name,
                   ": physical_to_logical_map must be a non-empty array of layers");
    for (std::size_t l = 0; l < m.size(); ++l)
      p.physical_to_logical.push_back(
          detail::placement_row(m[l], name + ": physical_to_logical_map[" + std::to_string(l) + "]"));
    if (f == placement_format::sglang) p.num_logical = detail::max_id_plus_one(p);
  }
  if (f != placement_format::moeroute) {
    MOEROUTE_CHECK(gpus > 0, errc::invalid_argument, name,
                   ": SGLang and vLLM placement files do not record the GPU count: give --gpus");
    p.num_gpus = gpus;
    p.num_nodes = 1;
  }
  check_placement(p, name + ": ");
  if (format) *format = f;
  return p;
}

/// Reads a placement file (any of the three formats).
inline expert_placement read_placement_json(const std::string& path, int gpus, placement_format* format = nullptr) {
  return parse_placement_json(read_text_file(path), path, gpus, format);
}

}  // namespace moeroute
