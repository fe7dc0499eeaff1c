#pragma once
// Compile-time checks of the routing policy contracts written at the top of scoring.hpp,
// selection.hpp and gating.hpp. A type meets a contract when it has every member with a usable
// signature (and the noexcept the contract asks for):
//   is_scoring_policy_v<P>    name, row_normalized, prepare, finish, unnormalized (noexcept)
//   is_selection_policy_v<P>  name, order_only, validate(E, K), workspace_bytes(E) and
//                             select(...) (both noexcept)
//   is_gating_policy_v<P>     name, validate(K), keep(w, k) (noexcept)
// Under C++20 the same checks are the concepts scoring_policy, selection_policy and
// gating_policy. moeroute::router static_asserts them, so a policy with a misspelt or missing
// member fails with one message that names the contract.

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

namespace moeroute {

namespace detail {
template <class P, class = void>
struct scoring_contract : std::false_type {};
template <class P>
struct scoring_contract<
    P, std::void_t<decltype(static_cast<const char*>(P::name)), decltype(static_cast<bool>(P::row_normalized)),
                   decltype(std::declval<const P&>().prepare(std::declval<const float*>(), std::declval<float*>(), 0)),
                   decltype(std::declval<const P&>().finish(0.0f, 0.0f)),
                   decltype(std::declval<const P&>().unnormalized(0.0f, 0.0f))>>
    : std::bool_constant<
          std::is_convertible_v<decltype(std::declval<const P&>().prepare(std::declval<const float*>(),
                                                                         std::declval<float*>(), 0)),
                                float> &&
          std::is_convertible_v<decltype(std::declval<const P&>().finish(0.0f, 0.0f)), float> &&
          std::is_convertible_v<decltype(std::declval<const P&>().unnormalized(0.0f, 0.0f)), float> &&
          noexcept(std::declval<const P&>().prepare(std::declval<const float*>(), std::declval<float*>(), 0)) &&
          noexcept(std::declval<const P&>().finish(0.0f, 0.0f)) &&
          noexcept(std::declval<const P&>().unnormalized(0.0f, 0.0f))> {};

template <class P, class = void>
struct selection_contract : std::false_type {};
template <class P>
struct selection_contract<
    P, std::void_t<decltype(static_cast<const char*>(P::name)), decltype(static_cast<bool>(P::order_only)),
                   decltype(std::declval<const P&>().validate(0, 0)),
                   decltype(std::declval<const P&>().workspace_bytes(0)),
                   decltype(std::declval<const P&>().select(std::declval<const float*>(), 0, 0,
                                                            std::declval<float*>(),
                                                            std::declval<std::int32_t*>(),
                                                            std::declval<void*>()))>>
    : std::bool_constant<
          std::is_convertible_v<decltype(std::declval<const P&>().workspace_bytes(0)), std::size_t> &&
          std::is_convertible_v<decltype(std::declval<const P&>().select(
                                    std::declval<const float*>(), 0, 0, std::declval<float*>(),
                                    std::declval<std::int32_t*>(), std::declval<void*>())),
                                int> &&
          noexcept(std::declval<const P&>().workspace_bytes(0)) &&
          noexcept(std::declval<const P&>().select(std::declval<const float*>(), 0, 0, std::declval<float*>(),
                                                   std::declval<std::int32_t*>(), std::declval<void*>()))> {};

template <class P, class = void>
struct gating_contract : std::false_type {};
template <class P>
struct gating_contract<P, std::void_t<decltype(static_cast<const char*>(P::name)),
                                      decltype(std::declval<const P&>().validate(0)),
                                      decltype(std::declval<const P&>().keep(std::declval<const float*>(), 0))>>
    : std::bool_constant<
          std::is_convertible_v<decltype(std::declval<const P&>().keep(std::declval<const float*>(), 0)), int> &&
          noexcept(std::declval<const P&>().keep(std::declval<const float*>(), 0))> {};
}  // namespace detail

/// True when P meets the Scoring policy contract (routing/scoring.hpp).
template <class P>
inline constexpr bool is_scoring_policy_v = detail::scoring_contract<P>::value;
/// True when P meets the Selection policy contract (routing/selection.hpp).
template <class P>
inline constexpr bool is_selection_policy_v = detail::selection_contract<P>::value;
/// True when P meets the Gating policy contract (routing/gating.hpp).
template <class P>
inline constexpr bool is_gating_policy_v = detail::gating_contract<P>::value;

#if defined(__cpp_concepts) && __cpp_concepts >= 201907L
template <class P>
concept scoring_policy = is_scoring_policy_v<P>;
template <class P>
concept selection_policy = is_selection_policy_v<P>;
template <class P>
concept gating_policy = is_gating_policy_v<P>;
#endif

}  // namespace moeroute
