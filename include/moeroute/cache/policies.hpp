#pragma once
// The eviction policies by name: the one place a policy name ("lru", "recommended", ...) becomes
// a policy type, for the simulator, the CLI and engines that pick a policy at run time.
//
//   moeroute::visit_eviction("lfru", [&](auto tag) {
//     moeroute::expert_cache<typename decltype(tag)::type> cache(L, E, slots);
//     ...
//   });

#include <string>
#include <utility>
#include <vector>

#include "moeroute/cache/anchors.hpp"
#include "moeroute/cache/eviction.hpp"
#include "moeroute/cache/recommended.hpp"
#include "moeroute/error.hpp"

namespace moeroute {

/// Names of the eviction policies visit_eviction knows, in the order the CLI lists them.
inline const std::vector<std::string>& eviction_policy_names() {
  static const std::vector<std::string> names{"lru",         "fifo", "lfu",         "belady",
                                              "layer-cycle", "lfru", "least-stale", "recommended"};
  return names;
}

/// Tag carrying an eviction policy type to a visitor: `typename decltype(tag)::type`.
template <class P>
struct eviction_tag {
  using type = P;
};

/// The one place a policy name becomes a type: calls f(eviction_tag<P>{}) for the policy named
/// `name` (eviction_policy_names()) and returns its result. An unknown name is
/// errc::invalid_argument listing the known ones. belady needs the future (needs_future): only a
/// simulator that knows every next use can run it.
template <class F>
decltype(auto) visit_eviction(const std::string& name, F&& f) {
  if (name == "lru") return std::forward<F>(f)(eviction_tag<lru_eviction>{});
  if (name == "fifo") return std::forward<F>(f)(eviction_tag<fifo_eviction>{});
  if (name == "lfu") return std::forward<F>(f)(eviction_tag<lfu_eviction>{});
  if (name == "belady") return std::forward<F>(f)(eviction_tag<belady_eviction>{});
  if (name == "layer-cycle") return std::forward<F>(f)(eviction_tag<layer_cycle_eviction>{});
  if (name == "lfru") return std::forward<F>(f)(eviction_tag<lfru_eviction>{});
  if (name == "least-stale") return std::forward<F>(f)(eviction_tag<least_stale_eviction>{});
  if (name == "recommended") return std::forward<F>(f)(eviction_tag<recommended_eviction>{});
  std::string known;
  for (const auto& n : eviction_policy_names()) known += (known.empty() ? "" : ", ") + n;
  detail::fail(errc::invalid_argument, "unknown eviction policy '", name, "' (known: ", known, ")");
}

/// True when `name` is one of eviction_policy_names().
inline bool is_eviction_policy_name(const std::string& name) {
  for (const auto& n : eviction_policy_names())
    if (n == name) return true;
  return false;
}

}  // namespace moeroute
