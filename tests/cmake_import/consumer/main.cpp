// Outside project: uses the installed (or add_subdirectory'd) moeroute headers.
#include <moeroute/moeroute.hpp>

#include <cstdio>
#include <cstring>

int main() {
  if (std::strcmp(moeroute::version_string(), MOEROUTE_VERSION_STRING) != 0) return 1;
  moeroute::residency_set s(2, 8);
  s.insert(1, 3);
  if (s.count() != 1 || !s.contains(1, 3)) return 1;
  std::printf("consumer: moeroute %s ok\n", moeroute::version_string());
  return 0;
}
