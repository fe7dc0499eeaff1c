#pragma once
// moeroute version; kept equal to project(moeroute VERSION ...) in CMakeLists.txt (a test checks).

#define MOEROUTE_VERSION_MAJOR 0
#define MOEROUTE_VERSION_MINOR 1
#define MOEROUTE_VERSION_PATCH 0
#define MOEROUTE_VERSION_STRING "0.1.0"

namespace moeroute {
/// Version of the headers in use, as "MAJOR.MINOR.PATCH".
inline constexpr const char* version_string() noexcept { return MOEROUTE_VERSION_STRING; }
}  // namespace moeroute
