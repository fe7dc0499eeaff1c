// Compile-time checks of the policy contracts. Built by compile_fail.cmake once per case:
// MOEROUTE_CONTRACT_CASE 0 must compile (every shipped policy meets its contract, and a policy
// with a misspelt member is detected by the traits and, under C++20, the concepts); cases 1-4
// instantiate router / expert_cache with such a policy and must fail with the contract's message.
#include <cstddef>
#include <cstdint>

#include "moeroute/cache/expert_cache.hpp"
#include "moeroute/routing/router.hpp"

namespace {

// A user's scoring whose `finish` is misspelt `finnish`.
struct misspelt_scoring {
  static constexpr const char* name = "mine";
  static constexpr bool row_normalized = false;
  float prepare(const float*, float*, int) const noexcept { return 1.0f; }
  float finnish(float key, float) const noexcept { return key; }
  float unnormalized(float x, float) const noexcept { return x; }
};

// A selection without `order_only`.
struct incomplete_selection {
  static constexpr const char* name = "mine";
  void validate(int, int) const {}
  std::size_t workspace_bytes(int) const noexcept { return 0; }
  int select(const float*, int, int K, float*, std::int32_t*, void*) const noexcept { return K; }
};

// A gating whose keep may throw (the contract asks for noexcept).
struct throwing_gating {
  static constexpr const char* name = "mine";
  void validate(int) const {}
  int keep(const float*, int k) const { return k; }
};

// An eviction policy that names its victim method `pick`.
struct misnamed_eviction {
  static constexpr const char* name = "mine";
  static constexpr bool needs_future = false;
  void reset(std::uint32_t, std::uint32_t) {}
  void on_load(std::uint32_t, const moeroute::access_info&) {}
  void on_hit(std::uint32_t, const moeroute::access_info&) {}
  void on_miss(std::uint32_t, const moeroute::access_info&) {}
  void on_evict(std::uint32_t) {}
  template <class Skip>
  std::uint32_t pick(Skip&&) { return moeroute::no_cell; }
};

}  // namespace

#if MOEROUTE_CONTRACT_CASE == 0
static_assert(moeroute::is_scoring_policy_v<moeroute::softmax_scoring>);
static_assert(moeroute::is_scoring_policy_v<moeroute::sigmoid_scoring>);
static_assert(moeroute::is_scoring_policy_v<moeroute::sqrt_softplus_scoring>);
static_assert(moeroute::is_selection_policy_v<moeroute::topk_selection>);
static_assert(moeroute::is_selection_policy_v<moeroute::grouped_topk_selection>);
static_assert(moeroute::is_gating_policy_v<moeroute::no_gating>);
static_assert(moeroute::is_gating_policy_v<moeroute::cumulative_gating>);
static_assert(moeroute::is_eviction_policy_v<moeroute::lru_eviction>);
static_assert(moeroute::is_eviction_policy_v<moeroute::fifo_eviction>);
static_assert(moeroute::is_eviction_policy_v<moeroute::lfu_eviction>);
static_assert(moeroute::is_eviction_policy_v<moeroute::belady_eviction>);
static_assert(moeroute::is_eviction_policy_v<moeroute::layer_cycle_eviction>);
static_assert(!moeroute::is_scoring_policy_v<misspelt_scoring>);
static_assert(!moeroute::is_selection_policy_v<incomplete_selection>);
static_assert(!moeroute::is_gating_policy_v<throwing_gating>);
static_assert(!moeroute::is_eviction_policy_v<misnamed_eviction>);
static_assert(!moeroute::is_scoring_policy_v<int>);
#if defined(__cpp_concepts) && __cpp_concepts >= 201907L
static_assert(moeroute::scoring_policy<moeroute::softmax_scoring> && !moeroute::scoring_policy<misspelt_scoring>);
static_assert(moeroute::selection_policy<moeroute::topk_selection> &&
              !moeroute::selection_policy<incomplete_selection>);
static_assert(moeroute::gating_policy<moeroute::cumulative_gating> && !moeroute::gating_policy<throwing_gating>);
static_assert(moeroute::eviction_policy<moeroute::lru_eviction> && !moeroute::eviction_policy<misnamed_eviction>);
#endif
int main() {
  moeroute::router<> r(4, 2);
  moeroute::expert_cache<> c(1, 4, 2);
  return r.top_k() == 2 && c.capacity() == 2 ? 0 : 1;
}
#elif MOEROUTE_CONTRACT_CASE == 1
int main() {
  moeroute::router<misspelt_scoring> r(4, 2);
  (void)r;
}
#elif MOEROUTE_CONTRACT_CASE == 2
int main() {
  moeroute::router<moeroute::softmax_scoring, incomplete_selection> r(4, 2);
  (void)r;
}
#elif MOEROUTE_CONTRACT_CASE == 3
int main() {
  moeroute::router<moeroute::softmax_scoring, moeroute::topk_selection, throwing_gating> r(4, 2);
  (void)r;
}
#elif MOEROUTE_CONTRACT_CASE == 4
int main() {
  moeroute::expert_cache<misnamed_eviction> c(1, 4, 2);
  (void)c;
}
#endif
