#pragma once
// Names of the MoE expert tensors in a llama.cpp model GGUF: the one rule every reader uses
// (the expert-weight view io/gguf_experts.hpp, the residency cell sizes of residency/pareto.hpp).
//   blk.N.ffn_gate_exps.weight, blk.N.ffn_up_exps.weight, blk.N.ffn_down_exps.weight, and the
//   fused blk.N.ffn_gate_up_exps.weight (per expert: the gate rows, then the up rows)
// N is the block (layer) number: 1 to 6 decimal digits, so 0 .. 999999.

#include <cstddef>
#include <string>

namespace moeroute {

/// The expert weight tensors, in the order gate, up, down, fused gate+up.
inline constexpr const char* gguf_expert_suffixes[4] = {".ffn_gate_exps.weight", ".ffn_up_exps.weight",
                                                        ".ffn_down_exps.weight", ".ffn_gate_up_exps.weight"};

/// Largest block number an expert tensor name may carry.
inline constexpr int gguf_expert_max_block = 999999;

/// "blk.N<suffix>" -> N, or -1 when `name` is not of that form (N: 1 to 6 digits).
inline int gguf_expert_block(const std::string& name, const char* suffix) {
  const std::string s(suffix);
  if (name.size() <= 4 + s.size() || name.compare(0, 4, "blk.") != 0 ||
      name.compare(name.size() - s.size(), s.size(), s) != 0)
    return -1;
  const std::size_t n_digits = name.size() - 4 - s.size();
  if (n_digits > 6) return -1;
  int n = 0;
  for (std::size_t i = 4; i < 4 + n_digits; ++i) {
    const char c = name[i];
    if (c < '0' || c > '9') return -1;
    n = n * 10 + (c - '0');
  }
  return n;
}

/// When `name` is an expert weight tensor: its block, and its projection (0 gate, 1 up, 2 down,
/// 3 fused gate+up) in *projection when given. Otherwise -1.
inline int gguf_expert_tensor(const std::string& name, int* projection = nullptr) {
  for (int p = 0; p < 4; ++p)
    if (const int b = gguf_expert_block(name, gguf_expert_suffixes[p]); b >= 0) {
      if (projection) *projection = p;
      return b;
    }
  return -1;
}

}  // namespace moeroute
