// Fuzz target: .npy bytes -> parse_npy -> route the logits (softmax top-2) -> format_npy, which
// must parse back to the same shape (see fuzz_target.hpp).
#include <string>
#include <vector>

#include "fuzz_target.hpp"
#include "moeroute/io/npy.hpp"
#include "moeroute/routing/router.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    const auto a = moeroute::parse_npy(std::string(reinterpret_cast<const char*>(data), size), "fuzz.npy", true);
    if (a.dtype == moeroute::npy_dtype::f32) {
      if (a.f32.size() != a.rows * a.cols) __builtin_trap();
      const auto back = moeroute::parse_npy(moeroute::format_npy(a.f32.data(), a.rows, a.cols), "rewrite.npy");
      if (back.rows != a.rows || back.cols != a.cols || back.f32 != a.f32) {
        // NaN payloads compare unequal; the shape must still match
        if (back.rows != a.rows || back.cols != a.cols) __builtin_trap();
      }
      if (a.cols >= 2 && a.cols <= 4096 && a.rows <= 256) {
        moeroute::router<moeroute::softmax_scoring> r(static_cast<int>(a.cols), 2, {true});
        (void)r.route(moeroute::logits_view<float>(a.f32.data(), a.rows, a.cols));
      }
    } else if (a.f16.size() != a.rows * a.cols) {
      __builtin_trap();
    }
  } catch (const moeroute::error&) {
  }
  return 0;
}

std::vector<std::string> moeroute_fuzz_seeds() {
  const float two_by_three[6] = {0.5f, -1.0f, 2.0f, 0.0f, 3.5f, -0.25f};
  const float one[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  return {
      moeroute::format_npy(two_by_three, 2, 3),
      moeroute::format_npy(two_by_three, 3, 2, /*half=*/true),
      moeroute::format_npy(one, 1, 4),
  };
}
