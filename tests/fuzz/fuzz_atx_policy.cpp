// Fuzz target: ATX residency policy JSON -> parse -> cells on the policy's shape -> rewrite, which
// must parse back to the same sets (see fuzz_target.hpp).
#include <algorithm>
#include <string>
#include <vector>

#include "fuzz_target.hpp"
#include "moeroute/residency/atx_policy.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto p = moeroute::parse_atx_policy(std::string(reinterpret_cast<const char*>(data), size), "fuzz.json");
    const auto q = moeroute::parse_atx_policy(moeroute::write_atx_policy_string(p), "rewrite.json");
    if (q.keep_experts != p.keep_experts || q.keep_layers != p.keep_layers ||
        q.keep_layer_experts.size() != p.keep_layer_experts.size())
      __builtin_trap();  // a rewrite keeps every set and its order
    int L = 1, E = 1;
    for (const auto& u : p.keep_layer_experts) L = std::max(L, u.layer + 1), E = std::max(E, u.expert + 1);
    for (int e : p.keep_experts) E = std::max(E, e + 1);
    for (int l : p.keep_layers) L = std::max(L, l + 1);
    if (static_cast<long long>(L) * E <= (1 << 20)) {
      const auto s = moeroute::atx_policy_cells(p, L, E);
      if (p.has_layer_experts() && p.keep_layers.empty() && s.count() != p.keep_layer_experts.size())
        __builtin_trap();
    }
  } catch (const moeroute::error&) {
  }
  return 0;
}

std::vector<std::string> moeroute_fuzz_seeds() {
  return {
      R"({"schema_version": "atx-moe-residency-policy-v1", "policy_name": "g",
  "selection": {"total_experts": 8, "layers": 2},
  "keep_experts": [1, 3], "keep_experts_compact": "1,3",
  "keep_experts_ranked": [{"expert": 3, "rank": 1, "mean_importance_share": 0.4}, {"expert": 1, "rank": 2}]})",
      R"({"policy_name": "c", "keep_layer_experts": [{"layer": 0, "expert": 2, "rank": 1}, {"layer": 1, "expert": 0}],
  "keep_layer_experts_by_layer": {"0": [2], "1": [0]}, "keep_layer_experts_compact": "0:2,1:0",
  "keep_layers": [3], "hybrid_note": "x"})",
      R"({"keep_layers": [0, 1]})",
  };
}
