// Fuzz target: imatrix GGUF -> expert counts -> concentration (see fuzz_target.hpp).
#include <string>
#include <vector>

#include "fuzz_target.hpp"
#include "gguf_writer.hpp"
#include "moeroute/io/imatrix.hpp"
#include "moeroute/metrics/concentration.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto g = moeroute::gguf_file::parse(std::string(reinterpret_cast<const char*>(data), size),
                                              "fuzz.imatrix.gguf");
    const auto m = moeroute::read_imatrix(g);
    const auto counts = moeroute::imatrix_expert_counts(m);
    const auto rep = moeroute::analyze_concentration(counts);
    (void)moeroute::concentration_verdict(rep);
    (void)moeroute::imatrix_n_tokens(m, 8);
    for (const auto& L : m.layers) (void)moeroute::read_imatrix_activations(g, L);
  } catch (const moeroute::error&) {
  }
  return 0;
}

std::vector<std::string> moeroute_fuzz_seeds() {
  using namespace moeroute_test;
  std::vector<std::string> s;
  s.push_back(make_imatrix({0, 1}, {{1, 2, 3, 0}, {4.5f, 5, 6, 1}}).bytes());
  s.push_back(make_imatrix({3}, {{7, 0}}, 3, "ffn_gate_exps").bytes());
  gguf_writer w = make_imatrix({2}, {{1, 1, 1}}, 1, "ffn_up_exps");
  w.tensor_f32("blk.2.ffn_down_exps.weight.in_sum2", {1, 3}, {1, 2, 3});
  w.tensor_f32("blk.2.ffn_down_exps.weight.counts", {1, 3}, {0, 0, 9});
  s.push_back(w.bytes());
  return s;
}
