// Fuzz target: gpu-container trace JSON -> concentration -> rewrite -> reparse (see fuzz_target.hpp).
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_target.hpp"
#include "moeroute/io/container_trace.hpp"
#include "moeroute/metrics/concentration.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto t = moeroute::parse_container_trace_json(
        std::string(reinterpret_cast<const char*>(data), size), "fuzz.json");
    const auto rep = moeroute::analyze_concentration(t.layers);
    (void)moeroute::concentration_verdict(rep);
    std::ostringstream os;
    moeroute::write_container_trace_json(os, t);
    const auto u = moeroute::parse_container_trace_json(os.str(), "rewrite.json");
    if (u.layers.size() != t.layers.size()) __builtin_trap();  // a rewrite must keep every layer
  } catch (const moeroute::error&) {
  }
  return 0;
}

std::vector<std::string> moeroute_fuzz_seeds() {
  return {
      R"({"model": "m", "num_experts": 4, "experts_per_token": 2, "n_tokens": 10,
  "layers": [{"layer_index": 0, "expert_counts": [5, 3, 2, 0]},
             {"layer_index": 1, "expert_counts": [0, 0, 10, 10]}],
  "gate_weighted": false, "created": "2026-01-01T00:00:00Z", "rig": "x", "source": "s"})",
      R"({"model": null, "num_experts": 2, "experts_per_token": 1, "n_tokens": 1,
  "layers": [{"layer_index": 3, "expert_counts": [0.5, 1.25]}], "gate_weighted": true})",
      R"({"model": "e", "num_experts": 1, "experts_per_token": 1, "n_tokens": 0, "layers": []})",
  };
}
