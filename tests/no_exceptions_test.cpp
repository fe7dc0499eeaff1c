// The core built without exceptions (this file is compiled with -fno-exceptions and
// MOEROUTE_NO_EXCEPTIONS, see CMakeLists.txt): router, dispatch, expert cache, cache simulation
// and concentration give the same hand-computed results, try_route reports a status, and an
// error reaches the user's hook (set_error_handler) or, without one, stderr and abort.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "moeroute/cache/expert_cache.hpp"
#include "moeroute/cache/simulate.hpp"
#include "moeroute/metrics/concentration.hpp"
#include "moeroute/routing/dispatch.hpp"
#include "moeroute/routing/router.hpp"

#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
#error "no_exceptions_test must be compiled with -fno-exceptions"
#endif
#ifndef MOEROUTE_NO_EXCEPTIONS
#error "MOEROUTE_NO_EXCEPTIONS is defined by error.hpp when exceptions are off"
#endif

using namespace moeroute;

namespace {

TEST(NoExceptions, RouterSoftmaxTop2HandComputed) {
  // Row 0: logits (0, ln 3, -inf, ln 1) -> softmax over the unmasked (1, 3, 0, 1) / 5; top-2 is
  // expert 1 (0.6) then experts 0 and 3 tie at 0.2 -> the lower id 0. Renormalized: 0.75, 0.25.
  const float x[4] = {0.0f, std::log(3.0f), -INFINITY, 0.0f};
  const router<> r(4, 2, {true});
  const routing_result out = r.route(logits_view<float>(x, 1, 4));
  ASSERT_EQ(out.offsets, (std::vector<std::uint32_t>{0, 2}));
  EXPECT_EQ(out.ids, (std::vector<std::int32_t>{1, 0}));
  EXPECT_NEAR(out.weights[0], 0.75f, 1e-6f);
  EXPECT_NEAR(out.weights[1], 0.25f, 1e-6f);
}

TEST(NoExceptions, TryRouteReportsAStatusWithoutTheHook) {
  const float x[8] = {0, 1, 2, 3, 0, NAN, 2, 3};
  const router<> r(4, 2);
  std::vector<std::uint32_t> offsets(3);
  std::vector<std::int32_t> ids(r.max_nnz(2));
  std::vector<float> w(ids.size());
  std::vector<unsigned char> ws(r.workspace_size());
  const status st = r.try_route(logits_view<float>(x, 2, 4), {offsets.data(), ids.data(), w.data(), ids.size()},
                                ws.data());
  EXPECT_EQ(st.code, static_cast<int>(errc::bad_input));
  EXPECT_EQ(st.row, 1);
  EXPECT_EQ(st.column, 1);
}

TEST(NoExceptions, DispatchGroupsByExpert) {
  // Tokens 0: {2, 0}, 1: {2}: expert 0 gets entry 1, expert 2 gets entries 0 and 2.
  routing_result rr;
  rr.num_tokens = 2;
  rr.num_experts = 3;
  rr.offsets = {0, 2, 3};
  rr.ids = {2, 0, 2};
  rr.weights = {0.5f, 0.5f, 1.0f};
  const dispatch_plan p = make_dispatch_plan(rr.view());
  EXPECT_EQ(p.expert_offsets, (std::vector<std::uint32_t>{0, 1, 1, 3}));
  EXPECT_EQ(p.row_token, (std::vector<std::uint32_t>{0, 0, 1}));
}

TEST(NoExceptions, LruCacheAndSimulatorHandComputed) {
  // One layer, 2 slots, accesses 0 1 0 2 1: miss miss hit miss(evicts 1) miss(evicts 0).
  expert_cache<lru_eviction> c(1, 3, 2);
  for (int e : {0, 1, 0, 2, 1}) c.access(0, e);
  EXPECT_EQ(c.stats().total.hits, 1u);
  EXPECT_EQ(c.stats().total.misses, 4u);
  EXPECT_EQ(c.stats().total.evictions, 2u);
  // The same accesses as a trace. At the 4th access OPT evicts 0 (never used again) and keeps 1,
  // which hits on the last access: 2 hits.
  routing_trace t;
  for (int e : {0, 1, 0, 2, 1}) {
    t.layer.push_back(0);
    t.token.push_back(static_cast<std::int64_t>(t.token.size()));
    t.experts.push_back(e);
    t.offsets.push_back(static_cast<std::uint32_t>(t.experts.size()));
  }
  EXPECT_EQ(simulate_cache_named("lru", t, {2}).at(0).hits, 1u);
  EXPECT_EQ(simulate_cache_named("belady", t, {2}).at(0).hits, 2u);
}

TEST(NoExceptions, ConcentrationHandComputed) {
  // 6, 3, 1, 0: 90% of 10 needs 6 + 3 -> 2 of 4 experts; top1 0.6.
  const auto r = analyze_concentration({{0, {6, 3, 1, 0}}});
  EXPECT_DOUBLE_EQ(r.hot_frac_for_coverage, 0.5);
  EXPECT_DOUBLE_EQ(r.top1_share, 0.6);
}

[[noreturn]] void exit_three(const error& e) {
  std::fprintf(stderr, "hook: %s\n", e.message().c_str());
  std::_Exit(3);
}

TEST(NoExceptionsDeathTest, ErrorsGoToTheUserHook) {
  EXPECT_EXIT(
      {
        set_error_handler(exit_three);
        const router<> r(0, 1);
        (void)r;
      },
      ::testing::ExitedWithCode(3), "hook: router: num_experts = 0 must be >= 1");
  EXPECT_EXIT(
      {
        set_error_handler(exit_three);
        expert_cache<lru_eviction> c(1, 2, 1);
        c.access(0, 5);
      },
      ::testing::ExitedWithCode(3), "hook: expert_cache: cell \\(0, 5\\) outside 1 x 2");
}

TEST(NoExceptionsDeathTest, WithoutAHookTheMessageGoesToStderrAndAborts) {
  EXPECT_DEATH(
      {
        set_error_handler(nullptr);
        const router<> r(4, 5);
        (void)r;
      },
      "\\[moeroute\\.invalid_argument\\]");
}

}  // namespace
