#!/usr/bin/env bash
# The test command: installs what is missing, builds with warnings as errors, runs the suite,
# builds and runs it again with clang (the compiler engines often use), then under
# AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/deps.sh
jobs="$(nproc)"

# Vulkan tests run with the Khronos validation layer and fail on any message it reports.
export MOEROUTE_VK_VALIDATION=1

start=$SECONDS
echo "== release build (-Werror) =="
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DMOEROUTE_WERROR=ON >/dev/null
cmake --build build/release -j "$jobs"
ctest --test-dir build/release --output-on-failure -j "$jobs" --timeout 600

echo "== clang build (-Werror) =="
# The whole suite with Debian's clang. Benchmarks, examples and libFuzzer binaries are left out
# (they add compile time, not coverage); the header test and the packaging tests already ran above.
cmake -S . -B build/clang -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++ -DMOEROUTE_WERROR=ON \
  -DMOEROUTE_BUILD_BENCHMARKS=OFF -DMOEROUTE_BUILD_EXAMPLES=OFF -DMOEROUTE_HAVE_LIBFUZZER=OFF \
  -DMOEROUTE_HEADER_CHECK=OFF -DMOEROUTE_INSTALL=OFF >/dev/null
cmake --build build/clang -j "$jobs"
ctest --test-dir build/clang --output-on-failure -j "$jobs" --timeout 600

echo "== ASan + UBSan build =="
# -O1 -g1: line tables for the sanitizer reports at a fraction of -O2 -g's compile time.
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DMOEROUTE_WERROR=ON \
  -DMOEROUTE_SANITIZE=ON -DMOEROUTE_BUILD_BENCHMARKS=OFF -DMOEROUTE_BUILD_EXAMPLES=OFF >/dev/null
cmake --build build/asan -j "$jobs"
# Leaks inside the Vulkan driver (Mesa lavapipe) are not ours: tests/lsan.supp names them.
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
  LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0" \
  ctest --test-dir build/asan --output-on-failure -j "$jobs" --timeout 900
echo "== tests passed in all three builds ($((SECONDS - start)) s) =="
