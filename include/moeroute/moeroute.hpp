#pragma once
// Umbrella header: the core of moeroute (no Eigen, no Vulkan). Backends are included separately:
// <moeroute/backends/cpu_eigen.hpp>, <moeroute/backends/vulkan.hpp>.

#include "moeroute/version.hpp"
#include "moeroute/error.hpp"
#include "moeroute/detail/float16.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/io/trace_counts.hpp"
#include "moeroute/routing/result.hpp"
#include "moeroute/routing/scoring.hpp"
#include "moeroute/routing/selection.hpp"
#include "moeroute/routing/gating.hpp"
#include "moeroute/routing/router.hpp"
#include "moeroute/routing/presets.hpp"
#include "moeroute/routing/dispatch.hpp"
#include "moeroute/io/npy.hpp"
#include "moeroute/residency/residency_set.hpp"
