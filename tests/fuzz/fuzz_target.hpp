#pragma once
// Contract of a moeroute fuzz target (one per parser, fuzz_<name>.cpp):
//   extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
//     feeds the bytes to the parser and the code that consumes its result; moeroute::error is the
//     expected answer to bad input and is caught; anything else (another exception, a sanitizer
//     report, a crash, a huge allocation) is a finding.
//   std::vector<std::string> moeroute_fuzz_seeds();
//     small valid inputs (from the test writers) that the mutation driver starts from.
// The same file links into a libFuzzer binary (clang, -fsanitize=fuzzer) or into driver.cpp, a
// portable deterministic mutation loop that ctest runs for a bounded time.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
std::vector<std::string> moeroute_fuzz_seeds();
