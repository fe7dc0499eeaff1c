// Fuzz target: routing-trace JSONL -> counts / router-weight mass -> gpu-container trace ->
// concentration, and a JSONL rewrite that must parse back (see fuzz_target.hpp).
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_target.hpp"
#include "moeroute/io/container_trace.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/metrics/concentration.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
    const auto r = moeroute::parse_routing_trace_jsonl(in, "fuzz.jsonl");
    std::ostringstream os;
    moeroute::write_routing_trace_jsonl(os, r);
    std::istringstream back(os.str());
    const auto r2 = moeroute::parse_routing_trace_jsonl(back, "rewrite.jsonl");
    if (r2.size() != r.size() || r2.experts != r.experts) __builtin_trap();
    const auto ct = moeroute::container_trace_from_routing(r, "fuzz");
    (void)moeroute::concentration_verdict(moeroute::analyze_concentration(ct.layers));
    if (r.has_weights) {
      const auto w = moeroute::container_trace_from_routing(r, "fuzz", 0, true);
      (void)moeroute::analyze_concentration(w.layers);
    }
  } catch (const moeroute::error&) {
  }
  return 0;
}

std::vector<std::string> moeroute_fuzz_seeds() {
  return {
      "{\"layer\": 0, \"experts\": [6, 5], \"gating_probs\": [0.69, 0.31], \"token_idx\": 0}\n"
      "{\"layer\": 1, \"experts\": [6, 2], \"gating_probs\": [0.57, 0.43], \"token_idx\": 0}\n"
      "{\"layer\": 0, \"experts\": [1, 5], \"gating_probs\": [0.5, 0.5], \"token_idx\": 1}\n",
      "{\"step\": 0, \"token_idx\": 3, \"layer\": 8, \"experts\": [42, 18, 38, 6], \"weights\": [0.12, 0.06, 0.04, 0.04]}\n"
      "\n"
      "{\"layer\": 8, \"experts\": [1]}\n",
      "{\"layer\": 2, \"experts\": []}\n",
  };
}
