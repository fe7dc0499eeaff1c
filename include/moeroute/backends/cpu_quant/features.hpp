#pragma once
// Instruction-set detection of the quantized CPU expert FFN (backends/cpu_quant.hpp): the paths
// (cpu_isa), the one-time CPU feature check, and the target attributes the x86-64 kernels are
// compiled with (so no -m flag is needed by the includer).
//
// Contract: cpu_supports(i) is true only when this build and this CPU can run path i; features()
// runs the check once (function static) and is safe to call from any thread. MOEROUTE_CQ_X86 is 1
// on x86-64 GCC/Clang builds (unless MOEROUTE_CPU_QUANT_PORTABLE=1), and only then are the
// MOEROUTE_CQ_AVX2 / MOEROUTE_CQ_AVX512 attributes defined; a function carrying one may be called
// only after cpu_supports says the path exists.

// MOEROUTE_CPU_QUANT_PORTABLE=1 compiles the portable path only (what non-x86 targets get).
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__)) && \
    !(defined(MOEROUTE_CPU_QUANT_PORTABLE) && MOEROUTE_CPU_QUANT_PORTABLE)
#define MOEROUTE_CQ_X86 1
#include <immintrin.h>
#else
#define MOEROUTE_CQ_X86 0
#endif

namespace moeroute {

/// The instruction-set path of cpu_quant_ffn: best = the widest the CPU has (checked once).
enum class cpu_isa { portable, avx2, avx512, best };

/// "portable", "avx2", "avx512" or "best".
inline const char* cpu_isa_name(cpu_isa i) {
  switch (i) {
    case cpu_isa::portable: return "portable";
    case cpu_isa::avx2: return "avx2";
    case cpu_isa::avx512: return "avx512";
    case cpu_isa::best: return "best";
  }
  return "unknown";
}

namespace detail::cq {

struct cpu_features {
  bool avx2 = false, avx512 = false, vnni512 = false;
};

inline cpu_features detect_features() noexcept {
  cpu_features f;
#if MOEROUTE_CQ_X86
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = f.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl");
  f.vnni512 = f.avx512 && __builtin_cpu_supports("avx512vnni");
#endif
  return f;
}

inline const cpu_features& features() noexcept {
  static const cpu_features f = detect_features();
  return f;
}

}  // namespace detail::cq

/// True when this CPU (and this build) can run path i; `best` and `portable` always can.
inline bool cpu_supports(cpu_isa i) noexcept {
  switch (i) {
    case cpu_isa::portable: case cpu_isa::best: return true;
    case cpu_isa::avx2: return detail::cq::features().avx2;
    case cpu_isa::avx512: return detail::cq::features().avx512;
  }
  return false;
}

/// The widest path this CPU supports.
inline cpu_isa cpu_best_isa() noexcept {
  if (cpu_supports(cpu_isa::avx512)) return cpu_isa::avx512;
  if (cpu_supports(cpu_isa::avx2)) return cpu_isa::avx2;
  return cpu_isa::portable;
}

}  // namespace moeroute

// ---------------------------------------------------------------------------------------------
// x86-64 paths: compiled for their instruction sets with target attributes, called only after
// the run-time check of features().
#if MOEROUTE_CQ_X86
#define MOEROUTE_CQ_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MOEROUTE_CQ_AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
// the decode helpers of the fused kernels: always inlined into the kernel's loop
#define MOEROUTE_CQ_AVX512_INLINE MOEROUTE_CQ_AVX512 __attribute__((always_inline)) inline
#endif
