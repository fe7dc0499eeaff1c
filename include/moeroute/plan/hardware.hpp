#pragma once
// Hardware profile of the offload planner (plan/predict.hpp): the speeds that decide how fast an
// offloaded MoE FFN decodes (core: no Eigen, no Vulkan).
//
// JSON form (schema_version "moeroute-hardware-v1"); every speed is a positive finite number,
// every fixed cost a finite number >= 0; GB/s are 1e9 bytes per second, GFLOPS 1e9 FLOP/s:
//   {
//     "schema_version": "moeroute-hardware-v1",
//     "name": "rtx4090-pcie4-ddr5", "description": "...",          (name required, description optional)
//     "vram_gib": 24,                                              device memory, for checking a budget
//     "unified_memory": false,                                     optional (default false)
//     "host_to_device": {"gbps": 25.0, "latency_us": 10},          expert upload: latency + bytes / rate
//     "device": {"mem_gbps": 1008, "gflops": {"default": 82580}, "call_us": 20},
//     "cpu":    {"mem_gbps": 70,   "gflops": {"default": 900, "q4_k": 700}, "call_us": 5},
//     "sources": {"device.mem_gbps": "NVIDIA RTX 4090 spec sheet ...", ...}   optional, strings
//   }
// gflops: FLOP rate of the FFN kernels reading weights of a type, by weight_type name
// (types.hpp), with "default" for the types not listed; at least one entry. call_us: fixed cost
// of one layer's FFN call on that side (launch and synchronisation on the device, waking the
// threads on the CPU). Unknown keys anywhere are errors (a misspelt field must not silently fall
// back), except inside "sources". Errors are errc::parse_error / errc::bad_input naming the file
// and the field ("rtx.json: device.mem_gbps: ...").

#include <cmath>
#include <initializer_list>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeroute/error.hpp"
#include "moeroute/io/input_file.hpp"
#include "moeroute/weights/types.hpp"

namespace moeroute {

inline constexpr const char* hardware_profile_schema = "moeroute-hardware-v1";

/// FLOP rate per weight type, with a default for the types not listed.
struct type_rates {
  double default_gflops = 0;                 ///< 0 = no default
  std::map<weight_type, double> by_type;     ///< GFLOPS of the kernels for one type
  /// The rate for `t`; 0 when neither t nor a default is given.
  double gflops(weight_type t) const noexcept {
    auto it = by_type.find(t);
    return it != by_type.end() ? it->second : default_gflops;
  }
};

/// One machine's speeds (contract and JSON form at the top of hardware.hpp).
struct hardware_profile {
  std::string name, description;
  double vram_gib = 0;
  bool unified_memory = false;
  double h2d_gbps = 0;        ///< host -> device copy rate of an expert upload
  double h2d_latency_us = 0;  ///< fixed cost of one upload
  double device_mem_gbps = 0; ///< device memory rate the expert FFN reaches reading weights
  type_rates device_gflops;
  double device_call_us = 0;  ///< fixed cost of one layer's FFN call on the device
  double cpu_mem_gbps = 0;    ///< host memory rate the CPU FFN reaches reading weights
  type_rates cpu_gflops;
  double cpu_call_us = 0;     ///< fixed cost of one layer's FFN call on the CPU
  nlohmann::ordered_json sources = nlohmann::ordered_json::object();  ///< field -> where the figure comes from
};

namespace detail {

inline void hw_check_keys(const nlohmann::ordered_json& o, const std::string& where, const std::string& prefix,
                          std::initializer_list<const char*> known) {
  for (auto it = o.begin(); it != o.end(); ++it) {
    bool ok = false;
    for (const char* k : known) ok = ok || it.key() == k;
    MOEROUTE_CHECK(ok, errc::bad_input, where, ": ", prefix, it.key(), ": unknown field");
  }
}

inline const nlohmann::ordered_json& hw_object(const nlohmann::ordered_json& o, const char* key, const std::string& where) {
  MOEROUTE_CHECK(o.contains(key), errc::bad_input, where, ": ", key, ": missing");
  const auto& v = o.at(key);
  MOEROUTE_CHECK(v.is_object(), errc::bad_input, where, ": ", key, ": not an object");
  return v;
}

/// A number field: required unless `dflt` is given (>= 0); positive unless `zero_ok`.
inline double hw_number(const nlohmann::ordered_json& o, const char* key, const std::string& where,
                        const std::string& prefix, bool zero_ok, double dflt = -1.0) {
  if (!o.contains(key)) {
    MOEROUTE_CHECK(dflt >= 0, errc::bad_input, where, ": ", prefix, key, ": missing");
    return dflt;
  }
  const auto& v = o.at(key);
  MOEROUTE_CHECK(v.is_number(), errc::bad_input, where, ": ", prefix, key, ": not a number");
  const double x = v.get<double>();
  MOEROUTE_CHECK(std::isfinite(x) && (zero_ok ? x >= 0 : x > 0) && x < 1e12, errc::bad_input, where, ": ", prefix, key,
                 ": ", x, zero_ok ? " is not a finite number >= 0" : " is not a finite positive number");
  return x;
}

inline type_rates hw_rates(const nlohmann::ordered_json& o, const std::string& where, const std::string& field) {
  MOEROUTE_CHECK(o.is_object() && !o.empty(), errc::bad_input, where, ": ", field,
                 ": not an object of GFLOPS by weight type (with \"default\")");
  type_rates r;
  for (auto it = o.begin(); it != o.end(); ++it) {
    const std::string k = it.key();
    const double v = hw_number(o, k.c_str(), where, field + ".", false);
    if (k == "default") {
      r.default_gflops = v;
      continue;
    }
    weight_type t{};
    MOEROUTE_CHECK(weight_type_from_name(k.c_str(), t), errc::bad_input, where, ": ", field, ".", k,
                   ": not a weight type name (f32, f16, q8_0, q4_k, mxfp4, ...) nor \"default\"");
    r.by_type[t] = v;
  }
  return r;
}

/// One side ("device" or "cpu"): mem_gbps, gflops{...}, call_us (default 0).
inline void hw_side(const nlohmann::ordered_json& doc, const char* key, const std::string& where, double& mem,
                    type_rates& rates, double& call) {
  const auto& o = hw_object(doc, key, where);
  const std::string prefix = std::string(key) + ".";
  hw_check_keys(o, where, prefix, {"mem_gbps", "gflops", "call_us"});
  mem = hw_number(o, "mem_gbps", where, prefix, false);
  MOEROUTE_CHECK(o.contains("gflops"), errc::bad_input, where, ": ", prefix, "gflops: missing");
  rates = hw_rates(o["gflops"], where, prefix + "gflops");
  call = hw_number(o, "call_us", where, prefix, true, 0.0);
}

inline nlohmann::ordered_json hw_rates_json(const type_rates& r) {
  nlohmann::ordered_json o = nlohmann::ordered_json::object();
  if (r.default_gflops > 0) o["default"] = r.default_gflops;
  for (const auto& [t, v] : r.by_type) o[weight_type_name(t)] = v;
  return o;
}

}  // namespace detail

/// Parses and validates a profile document; `where` names it in errors (the file name).
inline hardware_profile parse_hardware_profile(const nlohmann::ordered_json& doc, const std::string& where) {
  MOEROUTE_CHECK(doc.is_object(), errc::bad_input, where, ": a hardware profile is a JSON object");
  detail::hw_check_keys(doc, where, "",
                        {"schema_version", "name", "description", "vram_gib", "unified_memory", "host_to_device", "device",
                         "cpu", "sources"});
  if (doc.contains("schema_version"))
    MOEROUTE_CHECK(doc["schema_version"] == hardware_profile_schema, errc::bad_input, where,
                   ": schema_version: expected \"", hardware_profile_schema, "\"");
  hardware_profile p;
  MOEROUTE_CHECK(doc.contains("name") && doc["name"].is_string() && !doc["name"].get<std::string>().empty(),
                 errc::bad_input, where, ": name: missing or not a non-empty string");
  p.name = doc["name"].get<std::string>();
  if (doc.contains("description")) {
    MOEROUTE_CHECK(doc["description"].is_string(), errc::bad_input, where, ": description: not a string");
    p.description = doc["description"].get<std::string>();
  }
  p.vram_gib = detail::hw_number(doc, "vram_gib", where, "", false);
  if (doc.contains("unified_memory")) {
    MOEROUTE_CHECK(doc["unified_memory"].is_boolean(), errc::bad_input, where, ": unified_memory: not true or false");
    p.unified_memory = doc["unified_memory"].get<bool>();
  }
  const auto& h = detail::hw_object(doc, "host_to_device", where);
  detail::hw_check_keys(h, where, "host_to_device.", {"gbps", "latency_us"});
  p.h2d_gbps = detail::hw_number(h, "gbps", where, "host_to_device.", false);
  p.h2d_latency_us = detail::hw_number(h, "latency_us", where, "host_to_device.", true);
  detail::hw_side(doc, "device", where, p.device_mem_gbps, p.device_gflops, p.device_call_us);
  detail::hw_side(doc, "cpu", where, p.cpu_mem_gbps, p.cpu_gflops, p.cpu_call_us);
  if (doc.contains("sources")) {
    const auto& s = doc["sources"];
    MOEROUTE_CHECK(s.is_object(), errc::bad_input, where, ": sources: not an object of field -> citation");
    for (auto it = s.begin(); it != s.end(); ++it)
      MOEROUTE_CHECK(it->is_string(), errc::bad_input, where, ": sources.", it.key(), ": not a string");
    p.sources = s;
  }
  return p;
}

/// Parses profile text (JSON); `where` names it in errors.
inline hardware_profile parse_hardware_profile(const std::string& text, const std::string& where) {
  nlohmann::ordered_json doc;
  try {
    doc = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    detail::fail(errc::parse_error, where, ": not valid JSON (", e.what(), ")");
  }
  return parse_hardware_profile(doc, where);
}

/// Reads a profile file (input_file.hpp rules, document cap).
inline hardware_profile read_hardware_profile(const std::string& path) {
  return parse_hardware_profile(read_input_file(path), path);
}

/// The JSON form of a profile (parse_hardware_profile reads it back to an equal profile).
inline nlohmann::ordered_json hardware_profile_json(const hardware_profile& p) {
  nlohmann::ordered_json o;
  o["schema_version"] = hardware_profile_schema;
  o["name"] = p.name;
  if (!p.description.empty()) o["description"] = p.description;
  o["vram_gib"] = p.vram_gib;
  o["unified_memory"] = p.unified_memory;
  o["host_to_device"] = {{"gbps", p.h2d_gbps}, {"latency_us", p.h2d_latency_us}};
  auto side = [](double mem, const type_rates& r, double call) {
    nlohmann::ordered_json j;
    j["mem_gbps"] = mem;
    j["gflops"] = detail::hw_rates_json(r);
    j["call_us"] = call;
    return j;
  };
  o["device"] = side(p.device_mem_gbps, p.device_gflops, p.device_call_us);
  o["cpu"] = side(p.cpu_mem_gbps, p.cpu_gflops, p.cpu_call_us);
  if (!p.sources.empty()) o["sources"] = p.sources;
  return o;
}

}  // namespace moeroute
