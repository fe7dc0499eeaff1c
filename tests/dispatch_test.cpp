// Dispatch: CSR -> per-expert groups, padding, inverse map, expert parallel counts; against a plain loop.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <vector>

#include "moeroute/routing/dispatch.hpp"
#include "moeroute/routing/presets.hpp"

using namespace moeroute;

namespace {
routing_result random_routing(std::mt19937& rng, int T, int E) {
  std::normal_distribution<float> d;
  std::vector<float> x(static_cast<std::size_t>(T) * E);
  for (auto& v : x) v = d(rng);
  router<softmax_scoring, topk_selection, cumulative_gating> r(E, 6, {true}, {}, {}, {0.6, 1, 0});
  return r.route(logits_view<float>(x.data(), T, E));  // variable k per token
}
}  // namespace

TEST(Dispatch, GroupsMatchAPlainBucketing) {
  std::mt19937 rng(1);
  const int T = 50, E = 16;
  auto r = random_routing(rng, T, E);
  for (std::uint32_t block : {1u, 4u, 16u}) {
    auto plan = make_dispatch_plan(r.view(), {block});
    // plain reference: bucket (token, entry) by expert in token order
    std::vector<std::vector<std::pair<std::uint32_t, std::uint32_t>>> buckets(E);
    for (int t = 0; t < T; ++t)
      for (auto p = r.offsets[t]; p < r.offsets[t + 1]; ++p) buckets[r.ids[p]].push_back({t, p});
    std::uint32_t start = 0;
    for (int e = 0; e < E; ++e) {
      const std::uint32_t n = static_cast<std::uint32_t>(buckets[e].size());
      const std::uint32_t padded = (n + block - 1) / block * block;
      ASSERT_EQ(plan.expert_offsets[e], start) << "expert " << e << " block " << block;
      for (std::uint32_t i = 0; i < padded; ++i) {
        const auto row = start + i;
        if (i < n) {
          EXPECT_EQ(plan.row_token[row], buckets[e][i].first);
          EXPECT_EQ(plan.row_entry[row], buckets[e][i].second);
          EXPECT_EQ(plan.inverse[buckets[e][i].second], row);
        } else {
          EXPECT_EQ(plan.row_entry[row], dispatch_sentinel);
          EXPECT_EQ(plan.row_token[row], dispatch_sentinel);
        }
      }
      start += padded;
    }
    EXPECT_EQ(plan.expert_offsets[E], start);
    EXPECT_EQ(plan.row_entry.size(), start);
  }
}

TEST(Dispatch, AllTokensToOneExpertAndEmptyExperts) {
  const int T = 7, E = 4;
  routing_result r;
  r.num_tokens = T;
  r.num_experts = E;
  for (int t = 0; t < T; ++t) {
    r.ids.push_back(2);
    r.weights.push_back(1.0f);
    r.offsets.push_back(static_cast<std::uint32_t>(r.ids.size()));
  }
  auto plan = make_dispatch_plan(r.view(), {8});
  EXPECT_EQ(plan.expert_offsets, (std::vector<std::uint32_t>{0, 0, 0, 8, 8}));
  for (int t = 0; t < T; ++t) EXPECT_EQ(plan.row_token[t], static_cast<std::uint32_t>(t));
  EXPECT_EQ(plan.row_token[7], dispatch_sentinel);
}

TEST(Dispatch, ExpertParallelDeviceCounts) {
  std::mt19937 rng(2);
  const int T = 40, E = 16;
  auto r = random_routing(rng, T, E);
  std::vector<std::int32_t> dev(E);
  for (int e = 0; e < E; ++e) dev[e] = e % 3;
  auto plan = make_dispatch_plan(r.view(), {4, dev.data(), 3});
  std::vector<std::uint32_t> want(3, 0);
  std::vector<std::uint32_t> count(E, 0);
  for (auto id : r.ids) ++count[id];
  for (int e = 0; e < E; ++e) want[e % 3] += (count[e] + 3) / 4 * 4;
  EXPECT_EQ(plan.device_rows, want);
  dev[5] = 3;
  EXPECT_THROW(make_dispatch_plan(r.view(), {4, dev.data(), 3}), error);
}

TEST(Dispatch, RejectsIdsOutsideTheExpertsAndTooSmallOutput) {
  routing_result r;
  r.num_tokens = 1;
  r.num_experts = 4;
  r.ids = {1, 4};
  r.weights = {0.5f, 0.5f};
  r.offsets = {0, 2};
  EXPECT_THROW(make_dispatch_plan(r.view()), error);
  r.ids = {1, 3};
  std::vector<std::uint32_t> off(5), entry(1), tok(1), inv(2);
  EXPECT_THROW(dispatch(r.view(), {}, {off.data(), entry.data(), tok.data(), inv.data(), nullptr, 1, nullptr}), error);
}
