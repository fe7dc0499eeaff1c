// Outside project: uses the installed (or add_subdirectory'd) moeroute headers.
#include <moeroute/moeroute.hpp>

#include <cstdio>
#include <cstring>

int main() {
  if (std::strcmp(moeroute::version_string(), MOEROUTE_VERSION_STRING) != 0) return 1;
  moeroute::residency_set s(2, 8);
  s.insert(1, 3);
  if (s.count() != 1 || !s.contains(1, 3)) return 1;
  // Mixtral routing of one token: expert 7 (logit ln 3) and expert 2 (logit 0) share 3:1.
  const float logits[8] = {-5, -5, 0, -5, -5, -5, -5, 1.0986123f};
  auto r = moeroute::any_router(moeroute::preset("mixtral-8x7b"))
               .route(moeroute::logits_view<float>(logits, 1, 8));
  if (r.ids.size() != 2 || r.ids[0] != 7 || r.ids[1] != 2) return 1;
  if (r.weights[0] < 0.7499f || r.weights[0] > 0.7501f) return 1;
  std::printf("consumer: moeroute %s ok, routed token to experts %d and %d\n", moeroute::version_string(),
              r.ids[0], r.ids[1]);
  return 0;
}
