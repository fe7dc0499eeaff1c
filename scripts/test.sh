#!/usr/bin/env bash
# The test command: installs what is missing, builds with warnings as errors and runs the suite
# with g++ (optimized, plus benchmarks, examples, fuzz drivers, header and packaging checks), then
# builds and runs it again with clang under AddressSanitizer + UndefinedBehaviorSanitizer.
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

echo "== clang ASan + UBSan build (-Werror) =="
# The whole suite again, compiled by Debian's clang (the compiler engines often use) with
# AddressSanitizer and UndefinedBehaviorSanitizer: both compilers build every test, and every test
# runs under the sanitizers. -O1 -g1: line tables for the reports at a fraction of -O2 -g's compile
# time. Benchmarks, examples and libFuzzer binaries are left out (compile time, not coverage); the
# header test (each header alone with g++ and clang++) and the packaging tests ran above.
cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DCMAKE_CXX_COMPILER=clang++ -DMOEROUTE_WERROR=ON -DMOEROUTE_SANITIZE=ON \
  -DMOEROUTE_BUILD_BENCHMARKS=OFF -DMOEROUTE_BUILD_EXAMPLES=OFF -DMOEROUTE_HAVE_LIBFUZZER=OFF >/dev/null
cmake --build build/asan -j "$jobs"
# Leaks inside the Vulkan driver (Mesa lavapipe) are not ours: tests/lsan.supp names them.
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
  LSAN_OPTIONS="suppressions=$root/tests/lsan.supp:print_suppressions=0" \
  ctest --test-dir build/asan --output-on-failure -j "$jobs" --timeout 900
echo "== tests passed in both builds ($((SECONDS - start)) s) =="
