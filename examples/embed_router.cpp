// How an engine embeds the router: one allocation up front, then route every batch into its
// own buffers. Prints the experts and weights chosen for a few synthetic tokens.
#include <moeroute/routing/presets.hpp>

#include <cstdio>
#include <random>
#include <vector>

int main() {
  const auto& cfg = moeroute::preset("qwen3.6-35b-a3b");  // 256 experts, top-8, softmax + renorm
  moeroute::any_router router(cfg);
  const std::size_t T = 4, E = static_cast<std::size_t>(cfg.num_experts);

  std::vector<float> logits(T * E);  // stands in for the router GEMM's output
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0.0f, 2.0f);
  for (auto& v : logits) v = d(rng);

  // sizes are known up front: nothing allocates per batch
  std::vector<std::uint32_t> offsets(T + 1);
  std::vector<std::int32_t> ids(router.max_nnz(T));
  std::vector<float> weights(router.max_nnz(T));
  std::vector<unsigned char> workspace(router.workspace_size());

  router.route(moeroute::logits_view<float>(logits.data(), T, E),
               {offsets.data(), ids.data(), weights.data(), ids.size()}, workspace.data());

  for (std::size_t t = 0; t < T; ++t) {
    std::printf("token %zu:", t);
    for (auto p = offsets[t]; p < offsets[t + 1]; ++p) std::printf(" %d(%.3f)", ids[p], weights[p]);
    std::printf("\n");
  }
  return 0;
}
