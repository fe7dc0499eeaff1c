#pragma once
// The Vulkan context a benchmark program shares across its cases: created on first use and kept
// until the program exits (objects made from it must be destroyed first: create them after the
// first call, so that static destruction runs in the reverse order). Where no Vulkan device exists,
// the case is skipped with the reason and nullptr is returned.

#include <benchmark/benchmark.h>

#include <memory>
#include <string>

#include "moeroute/backends/vulkan.hpp"

inline moeroute::vulkan_context* bench_vulkan_context(benchmark::State& state) {
  static std::unique_ptr<moeroute::vulkan_context> ctx;
  static std::string why;
  if (!ctx && why.empty()) {
    try {
      ctx = std::make_unique<moeroute::vulkan_context>();
    } catch (const moeroute::error& e) {
      why = e.message();
    }
  }
  if (!ctx) state.SkipWithError(why.c_str());
  return ctx.get();
}
