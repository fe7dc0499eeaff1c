#pragma once
// Instruction set of the router's hot loops, chosen at run time.
//
// A header-only library cannot assume the consumer's -march, so the router carries three code
// paths and picks one when it runs:
//   portable  4-lane vectors of the compiler's vector extension (SSE2 on x86-64, NEON on ARM,
//             scalar elsewhere); always available
//   avx2      8 lanes, functions compiled with __attribute__((target("avx2,fma,...")))
//   avx512    16 lanes (AVX-512 F/BW/DQ/VL)
//   best      the widest the CPU and the OS support, found once (__builtin_cpu_supports)
// The AVX paths exist on x86-64 with GCC or Clang only; elsewhere only portable (and best, which
// means portable) is supported.
//
// Contract: every path returns bit-identical ids AND weights for the same input. Selection is
// exact comparison whatever the lane count; scores use one exp polynomial whose every lane runs
// the same IEEE operations in the same order (products are kept out of fused multiply-adds on
// every path), and sums keep the portable path's eight partial sums in element order.
//
// The choice is process-wide (an atomic): set_routing_isa() before routing, typically once, or
// per test/benchmark case. Routing calls read it at the start of each hot loop.

#include <atomic>

#include "moeroute/error.hpp"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MOEROUTE_ROUTING_X86 1
#else
#define MOEROUTE_ROUTING_X86 0
#endif

namespace moeroute {

enum class routing_isa : int { portable = 0, avx2 = 1, avx512 = 2, best = 3 };

/// "portable", "avx2", "avx512" or "best".
inline const char* routing_isa_name(routing_isa isa) noexcept {
  switch (isa) {
    case routing_isa::portable: return "portable";
    case routing_isa::avx2: return "avx2";
    case routing_isa::avx512: return "avx512";
    case routing_isa::best: return "best";
  }
  return "?";
}

/// The widest path this CPU (and its OS) supports; detected once.
inline routing_isa routing_isa_best() noexcept {
  static const routing_isa best = [] {
#if MOEROUTE_ROUTING_X86
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("bmi");
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
      return routing_isa::avx512;
    if (avx2) return routing_isa::avx2;
#endif
    return routing_isa::portable;
  }();
  return best;
}

/// Whether `isa` can run here (portable and best always can).
inline bool routing_isa_supported(routing_isa isa) noexcept {
  if (isa == routing_isa::best || isa == routing_isa::portable) return true;
  if (isa != routing_isa::avx2 && isa != routing_isa::avx512) return false;
  return static_cast<int>(isa) <= static_cast<int>(routing_isa_best());
}

namespace detail {
inline std::atomic<int>& routing_isa_state() noexcept {
  static std::atomic<int> s{static_cast<int>(routing_isa::best)};
  return s;
}
}  // namespace detail

/// Chooses the path of every later routing call in the process. Throws moeroute::error
/// (invalid_argument) when `isa` is not supported on this CPU.
inline void set_routing_isa(routing_isa isa) {
  MOEROUTE_CHECK(routing_isa_supported(isa), errc::invalid_argument, "routing isa ",
                 routing_isa_name(isa), " is not supported on this CPU (best: ",
                 routing_isa_name(routing_isa_best()), ")");
  detail::routing_isa_state().store(static_cast<int>(isa), std::memory_order_relaxed);
}

/// The path routing calls take now (never best: best resolved).
inline routing_isa routing_isa_in_use() noexcept {
  const auto isa = static_cast<routing_isa>(detail::routing_isa_state().load(std::memory_order_relaxed));
  return isa == routing_isa::best ? routing_isa_best() : isa;
}

}  // namespace moeroute
