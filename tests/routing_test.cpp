// Router: scoring, selection, gating, presets, statistics, input types; against tests/routing_reference.hpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "moeroute/routing/presets.hpp"
#include "moeroute/routing/router.hpp"
#include "routing_reference.hpp"

using namespace moeroute;

namespace {
constexpr float ninf = -std::numeric_limits<float>::infinity();

router_config make_config(const ref::config& c, int E) {
  router_config rc;
  rc.name = "test";
  rc.num_experts = E;
  rc.top_k = c.K;
  rc.scoring = parse_scoring(c.scoring);
  rc.renorm = c.renorm;
  rc.scale = static_cast<float>(c.scale);
  rc.groups = c.groups;
  rc.topk_groups = c.topk_groups;
  rc.cum_prob = c.cum_prob;
  rc.min_k = c.min_k;
  rc.max_k = c.max_k;
  return rc;
}

std::vector<float> to_f(const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); }

// Routes T x E logits with the library and the reference and compares ids exactly and weights
// to a relative 2e-5 (the library computes in float32).
void expect_matches_reference(const std::vector<float>& x, int T, int E, const ref::config& c) {
  any_router r(make_config(c, E), to_f(c.bias));
  auto res = r.route(logits_view<float>(x.data(), T, E));
  ASSERT_EQ(res.offsets.size(), static_cast<std::size_t>(T) + 1);
  for (int t = 0; t < T; ++t) {
    std::vector<double> row(x.begin() + t * E, x.begin() + (t + 1) * E);
    auto want = ref::route_row(row, c);
    const auto b = res.offsets[t], e = res.offsets[t + 1];
    ASSERT_EQ(e - b, want.ids.size()) << "row " << t;
    for (std::size_t i = 0; i < want.ids.size(); ++i) {
      EXPECT_EQ(res.ids[b + i], want.ids[i]) << "row " << t << " slot " << i;
      EXPECT_NEAR(res.weights[b + i], want.w[i], 2e-5 * std::max(1.0, std::fabs(want.w[i])))
          << "row " << t << " slot " << i;
    }
  }
}

// Every instruction-set path of the router this CPU runs (routing/isa.hpp), portable first.
std::vector<routing_isa> supported_isas() {
  std::vector<routing_isa> v;
  for (auto isa : {routing_isa::portable, routing_isa::avx2, routing_isa::avx512})
    if (routing_isa_supported(isa)) v.push_back(isa);
  return v;
}

// Sets a path for the scope of a test, and back to best after it.
struct isa_scope {
  explicit isa_scope(routing_isa isa) { set_routing_isa(isa); }
  ~isa_scope() { set_routing_isa(routing_isa::best); }
  isa_scope(const isa_scope&) = delete;
  isa_scope& operator=(const isa_scope&) = delete;
};

std::vector<float> random_logits(std::mt19937& rng, int T, int E, float sd = 2.0f) {
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> x(static_cast<std::size_t>(T) * E);
  for (auto& v : x) v = d(rng);
  return x;
}
}  // namespace

TEST(Router, RandomRowsMatchReferenceForEveryPolicyCombination) {
  std::mt19937 rng(11);
  for (const char* scoring : {"softmax", "sigmoid", "sqrt-softplus"})
    for (int grouped = 0; grouped < 2; ++grouped)
      for (int bias = 0; bias < 2; ++bias)
        for (int renorm = 0; renorm < 2; ++renorm)
          for (int gated = 0; gated < 2; ++gated) {
            const int E = 64, T = 40;
            ref::config c;
            c.scoring = scoring;
            c.K = 6;
            c.renorm = renorm;
            c.scale = bias ? 2.5 : 1.0;
            if (grouped) {
              c.groups = 8;
              c.topk_groups = 3;
            }
            if (bias) {
              std::uniform_real_distribution<double> u(-0.1, 0.1);
              c.bias.resize(E);
              for (auto& v : c.bias) v = static_cast<float>(u(rng));  // float-representable
            }
            if (gated) {
              c.cum_prob = 0.7;
              c.min_k = 2;
              c.max_k = 5;
            }
            SCOPED_TRACE(std::string(scoring) + " grouped=" + std::to_string(grouped) +
                         " bias=" + std::to_string(bias) + " renorm=" + std::to_string(renorm) +
                         " gated=" + std::to_string(gated));
            expect_matches_reference(random_logits(rng, T, E), T, E, c);
          }
}

TEST(Router, ExactTiesGoToTheLowerIndex) {
  // experts 5 and 2 tie for first, 7 and 1 tie for third
  std::vector<float> x = {0, 1, 3, 0, 0, 3, 0, 1};
  router<softmax_scoring> r(8, 3);
  auto res = r.route(logits_view<float>(x.data(), 1, 8));
  EXPECT_EQ(res.ids, (std::vector<std::int32_t>{2, 5, 1}));
  EXPECT_FLOAT_EQ(res.weights[0], res.weights[1]);
}

// Unequal logits can give equal weights (exp(x - max) is the same below the clamp at -104): the
// chosen come from the top-K in logit order, and the equal weights must still go lower id first.
TEST(Router, EqualWeightsOfUnequalLogitsGoToTheLowerIndex) {
  std::vector<float> x = {-300, -290, -280, -270, -260, -250, -240, -1000, -2000, 0};
  router<softmax_scoring> r(10, 8, router_params(/*renorm=*/true, /*scale=*/2.0f));
  for (auto isa : supported_isas()) {
    isa_scope scope(isa);
    SCOPED_TRACE(routing_isa_name(isa));
    auto res = r.route(logits_view<float>(x.data(), 1, 10));
    EXPECT_EQ(res.ids, (std::vector<std::int32_t>{9, 0, 1, 2, 3, 4, 5, 6}));
    ASSERT_EQ(res.weights.size(), 8u);
    EXPECT_EQ(res.weights[0], 2.0f);  // exp(0) / (1 + 7 * (at most the smallest subnormal)) * 2
    for (int i = 2; i < 8; ++i) EXPECT_EQ(res.weights[i], res.weights[1]);
    EXPECT_LE(res.weights[1], 2 * std::numeric_limits<float>::denorm_min());
  }
}

TEST(Router, AllEqualRowChoosesTheFirstK) {
  std::vector<float> x(16, 0.25f);
  for (auto cfg : {"softmax", "sigmoid", "sqrt-softplus"}) {
    ref::config c;
    c.scoring = cfg;
    c.K = 5;
    any_router r(make_config(c, 16));
    auto res = r.route(logits_view<float>(x.data(), 1, 16));
    EXPECT_EQ(res.ids, (std::vector<std::int32_t>{0, 1, 2, 3, 4})) << cfg;
  }
  // grouped: all groups tie, so the lowest topk_groups groups are kept
  router<sigmoid_scoring, grouped_topk_selection> g(16, 4, {}, {}, {4, 2});
  auto res = g.route(logits_view<float>(x.data(), 1, 16));
  EXPECT_EQ(res.ids, (std::vector<std::int32_t>{0, 1, 2, 3}));
}

TEST(Router, OneHotExpertBatchRoutesEveryTokenToIt) {
  std::mt19937 rng(3);
  const int T = 32, E = 128;
  auto x = random_logits(rng, T, E, 0.5f);
  for (int t = 0; t < T; ++t) x[t * E + 77] = 30.0f;
  router<softmax_scoring> r(E, 8, {true});
  auto res = r.route(logits_view<float>(x.data(), T, E));
  for (int t = 0; t < T; ++t) {
    EXPECT_EQ(res.ids[res.offsets[t]], 77);
    EXPECT_GT(res.weights[res.offsets[t]], 0.999f);
  }
}

TEST(Router, MaskedExpertsAreNeverChosen) {
  std::mt19937 rng(5);
  const int T = 20, E = 32;
  auto x = random_logits(rng, T, E);
  for (int t = 0; t < T; ++t)
    for (int e = 0; e < E; e += 2) x[t * E + e] = ninf;  // mask the even experts
  ref::config c;
  c.K = 4;
  c.renorm = true;
  expect_matches_reference(x, T, E, c);
  router<softmax_scoring> r(E, 4, {true});
  auto res = r.route(logits_view<float>(x.data(), T, E));
  for (auto id : res.ids) EXPECT_EQ(id % 2, 1);
  // with K = the number of unmasked experts every one of them is chosen; one more is an error
  router<softmax_scoring> r16(E, 16);
  EXPECT_EQ(r16.route(logits_view<float>(x.data(), 1, E)).ids.size(), 16u);
  router<softmax_scoring> r17(E, 17);
  EXPECT_THROW(r17.route(logits_view<float>(x.data(), 1, E)), error);
}

TEST(Router, NaNAndInfinityAreRejectedNamingTheRow) {
  const int E = 8;
  std::vector<float> x(4 * E, 0.5f);
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    auto y = x;
    y[3 * E + 6] = bad;
    router<softmax_scoring> r(E, 2);
    try {
      r.route(logits_view<float>(y.data(), 4, E));
      ADD_FAILURE() << "accepted a bad logit";
    } catch (const error& e) {
      EXPECT_EQ(e.code(), errc::bad_input);
      EXPECT_NE(e.message().find("row 3"), std::string::npos) << e.message();
      EXPECT_NE(e.message().find("expert 6"), std::string::npos) << e.message();
      EXPECT_NE(e.message().find(std::isnan(bad) ? "NaN" : "+inf"), std::string::npos);
    }
    // the no-throw entry point reports the same as a status
    std::vector<std::uint32_t> off(5);
    std::vector<std::int32_t> ids(8);
    std::vector<float> w(8);
    std::vector<unsigned char> ws(r.workspace_size());
    auto st = r.try_route(logits_view<float>(y.data(), 4, E), {off.data(), ids.data(), w.data(), 8}, ws.data());
    EXPECT_FALSE(st.ok());
    EXPECT_EQ(st.row, 3);
    EXPECT_EQ(st.column, 6);
  }
}

// A finite weight times a finite scale past the float range is bad input naming the row and the
// expert of the first such entry (the largest weight: weights come in descending order); rows
// before it are written. K = 1 .. 6 covers the 4-wide check and the one-at-a-time tail.
TEST(Router, WeightTimesScaleOverflowNamesTheRowAndTheExpert) {
  const int E = 8;
  // sqrt-softplus without renormalization: weight ~ sqrt(x); expert 6 of row 1 gives ~7e8, times
  // 1e30 past FLT_MAX; every other weight stays below 10, times 1e30 finite
  std::vector<float> x(2 * E);
  for (int e = 0; e < 2 * E; ++e) x[static_cast<std::size_t>(e)] = static_cast<float>(e % E);
  x[E + 6] = 5e17f;
  for (int K = 1; K <= 6; ++K) {
    router<sqrt_softplus_scoring> r(E, K, router_params(false, 1e30f));
    std::vector<std::uint32_t> off(3);
    std::vector<std::int32_t> ids(static_cast<std::size_t>(2 * K));
    std::vector<float> w(static_cast<std::size_t>(2 * K));
    std::vector<unsigned char> ws(r.workspace_size());
    const auto st = r.try_route(logits_view<float>(x.data(), 2, E),
                                {off.data(), ids.data(), w.data(), ids.size()}, ws.data());
    EXPECT_FALSE(st.ok()) << "K " << K;
    EXPECT_EQ(st.code, static_cast<int>(errc::bad_input)) << "K " << K;
    EXPECT_EQ(st.row, 1) << "K " << K;
    EXPECT_EQ(st.column, 6) << "K " << K;
    EXPECT_EQ(off[1], static_cast<std::uint32_t>(K)) << "K " << K;  // row 0 routed
    for (int i = 0; i < K; ++i) {
      EXPECT_EQ(ids[static_cast<std::size_t>(i)], E - 1 - i) << "K " << K;  // row 0: 7, 6, ...
      const double want = std::sqrt(std::log1p(std::exp(static_cast<double>(E - 1 - i)))) * 1e30;
      EXPECT_NEAR(w[static_cast<std::size_t>(i)], want, 1e-5 * want) << "K " << K;
    }
  }
}

TEST(Router, KEqualsE) {
  std::mt19937 rng(8);
  auto x = random_logits(rng, 10, 12);
  ref::config c;
  c.K = 12;
  c.renorm = true;
  expect_matches_reference(x, 10, 12, c);
}

TEST(Router, RejectsBadShapesAndParameters) {
  EXPECT_THROW((router<softmax_scoring, grouped_topk_selection>(10, 2, {}, {}, {3, 1})), error);  // 10 % 3
  EXPECT_THROW((router<softmax_scoring, grouped_topk_selection>(16, 2, {}, {}, {4, 5})), error);  // TG > G
  EXPECT_THROW((router<softmax_scoring, grouped_topk_selection>(16, 9, {}, {}, {4, 2})), error);  // K > 8 eligible
  EXPECT_THROW(router<softmax_scoring>(8, 9), error);
  EXPECT_THROW(router<softmax_scoring>(8, 0), error);
  EXPECT_THROW((router<softmax_scoring, topk_selection, cumulative_gating>(8, 4, {}, {}, {}, {1.5, 1, 0})), error);
  EXPECT_THROW((router<softmax_scoring, topk_selection, cumulative_gating>(8, 4, {}, {}, {}, {0.5, 3, 2})), error);
  EXPECT_THROW((router<softmax_scoring, topk_selection, cumulative_gating>(8, 4, {}, {}, {}, {0.5, 1, 5})), error);
  router_params p;
  p.bias = {1.0f, 2.0f};
  EXPECT_THROW(router<softmax_scoring>(8, 2, p), error);  // bias size
  try {
    router<softmax_scoring, grouped_topk_selection>(10, 2, {}, {}, {3, 1});
  } catch (const error& e) {
    EXPECT_NE(e.message().find("not divisible by groups = 3"), std::string::npos) << e.message();
  }
}

TEST(ZeroGating, BoundariesMinKMaxKAndExactThreshold) {
  cumulative_gating g{0.75, 1, 0};
  const float w1[] = {0.5f, 0.25f, 0.25f};
  EXPECT_EQ(g.keep(w1, 3), 2);  // 0.5 + 0.25 reaches 0.75 exactly
  const float w2[] = {0.5f, 0.24f, 0.26f};
  EXPECT_EQ((cumulative_gating{0.75, 1, 0}.keep(w2, 3)), 3);  // 0.74 < 0.75
  const float w3[] = {0.95f, 0.03f, 0.02f};
  EXPECT_EQ((cumulative_gating{0.9, 2, 0}.keep(w3, 3)), 2);   // reached at 1, min_k 2
  const float w4[] = {0.3f, 0.3f, 0.2f, 0.2f};
  EXPECT_EQ((cumulative_gating{0.99, 1, 2}.keep(w4, 4)), 2);  // never reached before max_k

  // Through the router, with exact dyadic shares: sigmoid(0) = 0.5 for four experts -> shares
  // 0.25 each; P = 0.5 is reached exactly at n = 2.
  std::vector<float> x = {0, 0, -40, 0, 0, -40, -40, -40};
  router<sigmoid_scoring, topk_selection, cumulative_gating> r(8, 4, {true}, {}, {}, {0.5, 1, 0});
  auto res = r.route(logits_view<float>(x.data(), 1, 8));
  EXPECT_EQ(res.ids, (std::vector<std::int32_t>{0, 1}));
  EXPECT_EQ(res.weights, (std::vector<float>{0.5f, 0.5f}));
  // min_k = 3 forces a third; max_k = 1 caps at one
  router<sigmoid_scoring, topk_selection, cumulative_gating> r3(8, 4, {true}, {}, {}, {0.5, 3, 0});
  EXPECT_EQ(r3.route(logits_view<float>(x.data(), 1, 8)).ids, (std::vector<std::int32_t>{0, 1, 3}));
  router<sigmoid_scoring, topk_selection, cumulative_gating> r1(8, 4, {false}, {}, {}, {0.9, 1, 1});
  auto one = r1.route(logits_view<float>(x.data(), 1, 8));
  EXPECT_EQ(one.ids, (std::vector<std::int32_t>{0}));
  EXPECT_EQ(one.weights, (std::vector<float>{0.5f}));  // no renorm: the unnormalized score
}

namespace {
// The documented zero-gating rule, plainly: the first n >= min_k whose share cum / total (divided
// in double) reaches p, else all of w.
int plain_keep(const std::vector<float>& w, double total, double p, int min_k) {
  int n = 0;
  double cum = 0;
  while (n < static_cast<int>(w.size())) {
    cum += w[static_cast<std::size_t>(n)];
    ++n;
    if (n >= min_k && cum / total >= p) break;
  }
  return n;
}
}  // namespace

// keep() against the documented rule computed plainly (the share cum / total divided in double,
// the first n >= min_k that reaches cum_prob), with cum_prob set to the shares themselves and to
// their neighbouring doubles: the cases where the division, not a bound on it, decides.
TEST(ZeroGating, ThresholdsAtAndBesideTheSharesMatchThePlainRule) {
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int rep = 0; rep < 300; ++rep) {
    const int k = 1 + rep % 8;
    std::vector<float> w(static_cast<std::size_t>(k));
    for (auto& v : w) v = rep % 5 == 0 ? 0.125f * static_cast<float>(1 + rep % 3) : u(rng);
    std::sort(w.begin(), w.end(), std::greater<float>());
    double total = 0;
    for (float v : w) total += v;
    std::vector<double> ps;
    double c = 0;
    for (float v : w) {
      c += v;
      const double share = c / total;
      for (double p : {share, std::nextafter(share, 0.0), std::nextafter(share, 2.0)})
        if (p > 0 && p <= 1) ps.push_back(p);
    }
    for (double p : ps)
      for (int min_k = 1; min_k <= k; ++min_k) {
        const int want = plain_keep(w, total, p, min_k);
        EXPECT_EQ((cumulative_gating{p, min_k, 0}.keep(w.data(), k)), want)
            << "rep " << rep << " p " << p << " min_k " << min_k;
      }
  }
}

// Softmax + renorm + zero-gating at K = 8 (the vector paths keep the kept count and the second
// renormalization in registers) against the plain rule on the router's own ungated weights, with
// cum_prob at and beside each share, min_k and max_k: the same kept count, ids and weight bits on
// every path.
TEST(ZeroGating, KEquals8ThroughTheRouterMatchesThePlainRuleOnEveryPath) {
  std::mt19937 rng(31);
  const int E = 64, K = 8;
  const float scale = 1.5f;
  router<softmax_scoring> plain(E, K, {true});
  for (int row = 0; row < 12; ++row) {
    auto x = random_logits(rng, 1, E, row % 3 == 0 ? 0.5f : 2.0f);
    if (row == 5)
      for (int e = 0; e < E; ++e) x[static_cast<std::size_t>(e)] = static_cast<float>(e % 4);  // ties
    const auto base = plain.route(logits_view<float>(x.data(), 1, E));
    const auto& w = base.weights;  // renormalized, descending: what the gating sees
    double total = 0;
    for (float v : w) total += v;
    std::vector<double> ps{1.0, 1e-3};  // at, beside and between the shares (the register path
    double c = 0, prev = 0;             // decides those between, the generic steps the others)
    for (float v : w) {
      c += v;
      const double share = c / total;
      for (double p : {share, std::nextafter(share, 0.0), std::nextafter(share, 2.0), (prev + share) / 2})
        if (p > 0 && p <= 1) ps.push_back(p);
      prev = share;
    }
    for (double p : ps)
      for (int min_k : {1, 3})
        for (int max_k : {0, 5}) {
          const int want = std::min(plain_keep(w, total, p, min_k), max_k == 0 ? K : max_k);
          float s2 = 0;
          for (int i = 0; i < want; ++i) s2 += w[static_cast<std::size_t>(i)];
          router<softmax_scoring, topk_selection, cumulative_gating> r(E, K, {true, scale}, {}, {},
                                                                      {p, min_k, max_k});
          for (auto isa : supported_isas()) {
            isa_scope scope(isa);
            SCOPED_TRACE(std::string(routing_isa_name(isa)) + " row " + std::to_string(row) +
                         " p " + std::to_string(p) + " min_k " + std::to_string(min_k) +
                         " max_k " + std::to_string(max_k));
            const auto got = r.route(logits_view<float>(x.data(), 1, E));
            ASSERT_EQ(got.ids.size(), static_cast<std::size_t>(want));
            for (int i = 0; i < want; ++i) {
              const auto ui = static_cast<std::size_t>(i);
              EXPECT_EQ(got.ids[ui], base.ids[ui]);
              const float wi = want < K ? w[ui] / s2 : w[ui];
              EXPECT_EQ(got.weights[ui], wi * scale) << "slot " << i;
            }
          }
        }
  }
}

// ---- presets, each on a hand-checked row ----

TEST(Presets, MixtralTop2Renormalized) {
  const auto& p = preset("mixtral-8x7b");
  EXPECT_EQ(p.num_experts, 8);
  EXPECT_EQ(p.top_k, 2);
  std::vector<float> x = {-5, -5, 0, -5, -5, -5, -5, std::log(3.0f)};
  auto res = any_router(p).route(logits_view<float>(x.data(), 1, 8));
  EXPECT_EQ(res.ids, (std::vector<std::int32_t>{7, 2}));
  EXPECT_NEAR(res.weights[0], 0.75, 1e-6);  // e^ln3 / (e^ln3 + e^0)
  EXPECT_NEAR(res.weights[1], 0.25, 1e-6);
}

TEST(Presets, QwenAndGptOssSoftmaxRenormalized) {
  for (const char* name : {"qwen3-30b-a3b", "qwen3-235b-a22b", "qwen3.6-35b-a3b", "gpt-oss-120b", "gpt-oss-20b"}) {
    const auto& p = preset(name);
    const int E = p.num_experts, K = p.top_k;
    std::vector<float> x(E, -20.0f);
    for (int i = 0; i < K; ++i) x[10 + i] = std::log(static_cast<float>(K - i));  // weights K, K-1, ..., 1
    auto res = any_router(p).route(logits_view<float>(x.data(), 1, E));
    const double total = K * (K + 1) / 2.0;
    ASSERT_EQ(res.ids.size(), static_cast<std::size_t>(K)) << name;
    for (int i = 0; i < K; ++i) {
      EXPECT_EQ(res.ids[i], 10 + i) << name;
      EXPECT_NEAR(res.weights[i], (K - i) / total, 1e-6) << name;
    }
  }
  EXPECT_EQ(preset("qwen3-30b-a3b").num_experts, 128);
  EXPECT_EQ(preset("qwen3.6-35b-a3b").num_experts, 256);
  EXPECT_EQ(preset("gpt-oss-120b").top_k, 4);
  EXPECT_EQ(preset("gpt-oss-20b").num_experts, 32);
}

TEST(Presets, OlmoeKeepsUnnormalizedSoftmaxProbabilities) {
  const auto& p = preset("olmoe-1b-7b");
  EXPECT_EQ(p.num_experts, 64);
  EXPECT_FALSE(p.renorm);
  std::vector<float> x(64, ninf);
  for (int i = 0; i < 8; ++i) x[i] = std::log(static_cast<float>(i + 1));  // probabilities (i+1)/36
  auto res = any_router(p).route(logits_view<float>(x.data(), 1, 64));
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(res.ids[i], 7 - i);
    EXPECT_NEAR(res.weights[i], (8 - i) / 36.0, 1e-6);
  }
}

TEST(Presets, DeepSeekV3GroupedSigmoidWithBiasAndScale) {
  const auto& p = preset("deepseek-v3");
  EXPECT_EQ(p.num_experts, 256);
  EXPECT_EQ(p.groups, 8);
  EXPECT_EQ(p.topk_groups, 4);
  EXPECT_FLOAT_EQ(p.scale, 2.5f);
  // Groups of 32. sigmoid(0) = .5, sigmoid(ln 3) = .75, sigmoid(-ln 3) = .25, sigmoid(-30) ~ 9.4e-14.
  std::vector<float> x(256, -30.0f);
  x[32] = x[33] = 0.0f;                          // group 1: 1.0
  x[96] = x[97] = std::log(3.0f);                // group 3: 1.5
  x[128] = 0.0f;                                 // group 4: 0.5
  x[192] = -std::log(3.0f);                      // group 6: 0.25
  auto res = any_router(p).route(logits_view<float>(x.data(), 1, 256));
  // kept groups {3, 1, 4, 6}; the last two slots are the lowest ids among the ~0 scores
  EXPECT_EQ(res.ids, (std::vector<std::int32_t>{96, 97, 32, 33, 128, 192, 34, 35}));
  const double total = 0.75 * 2 + 0.5 * 3 + 0.25;  // renormalized, then x 2.5
  EXPECT_NEAR(res.weights[0], 0.75 / total * 2.5, 1e-5);
  EXPECT_NEAR(res.weights[4], 0.5 / total * 2.5, 1e-5);
  EXPECT_NEAR(res.weights[5], 0.25 / total * 2.5, 1e-5);
  EXPECT_LT(res.weights[7], 1e-10);

  // A bias of +1 on expert 200 (group 6) wins it a slot, but its weight stays its own score.
  std::vector<float> bias(256, 0.0f);
  bias[200] = 1.0f;
  auto biased = any_router(p, bias).route(logits_view<float>(x.data(), 1, 256));
  EXPECT_EQ(biased.ids, (std::vector<std::int32_t>{96, 97, 32, 33, 128, 192, 34, 200}));
  EXPECT_LT(biased.weights[7], 1e-10);
}

TEST(Presets, AdaptiveQwenKeepsExpertsUntil90Percent) {
  const auto& p = preset("qwen3.6-35b-a3b-adaptive");
  EXPECT_EQ(p.top_k, 12);
  EXPECT_DOUBLE_EQ(p.cum_prob, 0.90);
  const double w[12] = {40, 20, 10, 10, 8, 4, 3, 2, 1, 1, 0.5, 0.5};  // cumulative 40 60 70 80 88 92 ...
  std::vector<float> x(256, ninf);
  for (int i = 0; i < 12; ++i) x[100 + i] = static_cast<float>(std::log(w[i]));
  auto res = any_router(p).route(logits_view<float>(x.data(), 1, 256));
  ASSERT_EQ(res.ids.size(), 6u);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(res.ids[i], 100 + i);
    EXPECT_NEAR(res.weights[i], w[i] / 92.0, 1e-6);
  }
}

TEST(Presets, UnknownNameListsTheKnownOnes) {
  try {
    preset("mixtral-9x9b");
    FAIL();
  } catch (const error& e) {
    EXPECT_NE(e.message().find("mixtral-8x7b"), std::string::npos);
  }
  for (const auto& p : presets()) {
    EXPECT_FALSE(p.source.empty()) << p.name;
    EXPECT_NO_THROW(any_router{p}) << p.name;
  }
}

// ---- batch API ----

TEST(RouterBatch, RowsAreIndependentOfTheBatchAndRepeatable) {
  std::mt19937 rng(21);
  const int T = 64, E = 256;
  auto x = random_logits(rng, T, E);
  any_router r(preset("deepseek-v3"));
  auto all = r.route(logits_view<float>(x.data(), T, E));
  auto again = r.route(logits_view<float>(x.data(), T, E));
  EXPECT_EQ(all.ids, again.ids);
  EXPECT_EQ(all.weights, again.weights);
  for (int t = 0; t < T; ++t) {
    auto one = r.route(logits_view<float>(x.data() + t * E, 1, E));
    for (std::size_t i = 0; i < one.ids.size(); ++i) {
      ASSERT_EQ(one.ids[i], all.ids[all.offsets[t] + i]);
      ASSERT_EQ(one.weights[i], all.weights[all.offsets[t] + i]);  // bit-identical
    }
  }
}

TEST(RouterBatch, HalfAndBFloatInputsRouteLikeTheirFloatValues) {
  std::mt19937 rng(4);
  const int T = 16, E = 64;
  auto x = random_logits(rng, T, E);
  std::vector<float16_t> h(x.size());
  std::vector<bfloat16_t> b(x.size());
  std::vector<float> xh(x.size()), xb(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    h[i].bits = float_to_half(x[i]);
    b[i].bits = float_to_bf16(x[i]);
    xh[i] = half_to_float(h[i].bits);
    xb[i] = bf16_to_float(b[i].bits);
  }
  any_router r(preset("olmoe-1b-7b"));
  auto rh = r.route(logits_view<float16_t>(h.data(), T, E));
  auto rf = r.route(logits_view<float>(xh.data(), T, E));
  EXPECT_EQ(rh.ids, rf.ids);
  EXPECT_EQ(rh.weights, rf.weights);
  auto rb = r.route(logits_view<bfloat16_t>(b.data(), T, E));
  auto rfb = r.route(logits_view<float>(xb.data(), T, E));
  EXPECT_EQ(rb.ids, rfb.ids);
  EXPECT_EQ(rb.weights, rfb.weights);
}

TEST(RouterBatch, StridedViewReadsOnlyItsColumns) {
  std::mt19937 rng(6);
  const int T = 8, E = 32, stride = 40;
  auto dense = random_logits(rng, T, E);
  std::vector<float> padded(static_cast<std::size_t>(T) * stride, std::numeric_limits<float>::quiet_NaN());
  for (int t = 0; t < T; ++t)
    for (int e = 0; e < E; ++e) padded[t * stride + e] = dense[t * E + e];
  router<softmax_scoring> r(E, 4, {true});
  auto a = r.route(logits_view<float>(dense.data(), T, E));
  auto b = r.route(logits_view<float>(padded.data(), T, E, stride));
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.weights, b.weights);
}

TEST(RouterBatch, CapacityAndShapeAreCheckedWithoutThrowingInTryRoute) {
  router<softmax_scoring> r(8, 2);
  std::vector<float> x(3 * 8, 0.0f);
  std::vector<std::uint32_t> off(4);
  std::vector<std::int32_t> ids(5);
  std::vector<float> w(5);
  std::vector<unsigned char> ws(r.workspace_size());
  auto st = r.try_route(logits_view<float>(x.data(), 3, 8), {off.data(), ids.data(), w.data(), 5}, ws.data());
  EXPECT_EQ(st.code, static_cast<int>(errc::capacity));
  auto st2 = r.try_route(logits_view<float>(x.data(), 3, 7), {off.data(), ids.data(), w.data(), 6}, ws.data());
  EXPECT_EQ(st2.code, static_cast<int>(errc::invalid_argument));
}

TEST(RouterBatch, StatisticsMatchAPlainComputation) {
  std::mt19937 rng(9);
  const int T = 12, E = 32;
  auto x = random_logits(rng, T, E);
  router<softmax_scoring, topk_selection, cumulative_gating> r(E, 8, {true}, {}, {}, {0.6, 2, 0});
  std::vector<token_stats> st;
  auto res = r.route(logits_view<float>(x.data(), T, E), &st);
  for (int t = 0; t < T; ++t) {
    double m = -1e30, sum = 0;
    for (int e = 0; e < E; ++e) m = std::max(m, static_cast<double>(x[t * E + e]));
    std::vector<double> p(E);
    for (int e = 0; e < E; ++e) sum += (p[e] = std::exp(x[t * E + e] - m));
    double h = 0, kept = 0;
    for (int e = 0; e < E; ++e) h -= p[e] / sum * std::log(p[e] / sum);
    for (auto i = res.offsets[t]; i < res.offsets[t + 1]; ++i) kept += p[res.ids[i]] / sum;
    EXPECT_EQ(st[t].active, res.offsets[t + 1] - res.offsets[t]);
    EXPECT_NEAR(st[t].entropy, h, 1e-5);
    EXPECT_NEAR(st[t].kept_mass, kept, 1e-5);
  }
}

TEST(RouterBatch, AskingForStatisticsDoesNotChangeTheResult) {
  std::mt19937 rng(10);
  const int T = 16, E = 64;
  auto x = random_logits(rng, T, E);
  for (bool renorm : {false, true}) {
    router<softmax_scoring> r(E, 8, {renorm});
    std::vector<token_stats> st;
    auto with = r.route(logits_view<float>(x.data(), T, E), &st);
    auto without = r.route(logits_view<float>(x.data(), T, E));
    EXPECT_EQ(with.ids, without.ids);
    EXPECT_EQ(with.weights, without.weights);
  }
}

TEST(Scoring, VectorAndScalarPathsAgreeBitForBit) {
  // Rows whose length is not a multiple of the vector width run their tail through the scalar
  // path; every element must come out as it would in a vector lane.
  std::mt19937 rng(12);
  auto x = random_logits(rng, 1, 37);
  std::vector<float> key(37), key1(1);
  softmax_scoring sm;
  sigmoid_scoring sg;
  const float m = *std::max_element(x.begin(), x.end());
  for (auto isa : supported_isas()) {
    isa_scope scope(isa);
    SCOPED_TRACE(routing_isa_name(isa));
    sm.prepare(x.data(), key.data(), 37);
    for (int e = 0; e < 37; ++e) EXPECT_EQ(key[e], sm.unnormalized(x[e], m)) << e;
    sg.prepare(x.data(), key.data(), 37);
    for (int e = 0; e < 37; ++e) EXPECT_EQ(key[e], sg.unnormalized(x[e], 0)) << e;
  }
  // exp down to its subnormal results and its clamp at -104 (max 0: key = exp(x)), and sigmoids
  // that small: each path scales by 2^n its own way
  std::vector<float> lo = {0.0f};
  for (float v = -86.0f; v > -106.0f; v -= 0.0625f + 1e-4f) lo.push_back(v);
  lo.push_back(-1e30f);
  lo.push_back(-std::numeric_limits<float>::infinity());
  const int n = static_cast<int>(lo.size());
  std::vector<float> klo(lo.size());
  for (auto isa : supported_isas()) {
    isa_scope scope(isa);
    SCOPED_TRACE(routing_isa_name(isa));
    sm.prepare(lo.data(), klo.data(), n);
    for (int e = 0; e < n; ++e) EXPECT_EQ(klo[e], sm.unnormalized(lo[e], 0.0f)) << lo[e];
    sg.prepare(lo.data(), klo.data(), n);
    for (int e = 0; e < n; ++e) EXPECT_EQ(klo[e], sg.unnormalized(lo[e], 0)) << lo[e];
  }
}

// The exp polynomial against std::exp in double: every lane of every path within 2 float ulp on
// [-87, 0], and exactly 0 at -inf. Softmax sums: every path equals a plain loop that adds element
// e into partial sum e % 8 in element order, then ((0+1)+(2+3))+((4+5)+(6+7)).
TEST(Scoring, ExpIsWithinTwoUlpAndSumsKeepTheirOrderOnEveryPath) {
  std::vector<float> x;
  for (float v = -87.0f; v <= 0.0f; v += 0.0137f) x.push_back(v);
  x.push_back(0.0f);
  x.push_back(-std::numeric_limits<float>::infinity());
  const int E = static_cast<int>(x.size());
  for (auto isa : supported_isas()) {
    isa_scope scope(isa);
    SCOPED_TRACE(routing_isa_name(isa));
    std::vector<float> key(x.size());
    const float sum = softmax_scoring{}.prepare(x.data(), key.data(), E);  // max is 0: key = exp(x)
    float acc[8] = {};
    for (int e = 0; e < E; ++e) {
      acc[e % 8] += key[e];
      const double want = std::exp(static_cast<double>(x[e]));
      const double ulp = std::nextafter(static_cast<float>(want), 1.0f) - static_cast<float>(want);
      EXPECT_LE(std::fabs(key[e] - want), 2 * ulp) << x[e];
    }
    EXPECT_EQ(key.back(), 0.0f);
    EXPECT_EQ(sum, ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])));
  }
}

TEST(RoutingIsa, PortableAndBestAlwaysRunAndTheChoiceSticks) {
  EXPECT_TRUE(routing_isa_supported(routing_isa::portable));
  EXPECT_TRUE(routing_isa_supported(routing_isa::best));
  EXPECT_NE(routing_isa_best(), routing_isa::best);
  for (auto isa : {routing_isa::avx2, routing_isa::avx512}) {
    if (routing_isa_supported(isa)) {
      isa_scope scope(isa);
      EXPECT_EQ(routing_isa_in_use(), isa);
    } else {
      EXPECT_THROW(set_routing_isa(isa), error);
    }
  }
  EXPECT_EQ(routing_isa_in_use(), routing_isa_best());
}

// Every path the CPU supports gives the same ids and the same weight bits as the portable one,
// which matches the independent reference; over every E the vector widths treat differently
// (tails, fewer than 2K groups of lanes), K, scorings, bias, groups, zero-gating, ties, masks,
// all-equal rows, and rows with NaN or +inf (the same error on every path).
TEST(RoutingIsa, EveryPathGivesTheSameIdsAndWeightBits) {
  std::mt19937 rng(21);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::uniform_int_distribution<int> small(-2, 2);
  const auto isas = supported_isas();
  const int T = 8;
  for (int E : {8, 60, 64, 128, 256, 257})
    for (int K : {1, 2, 4, 6, 8})
      for (int cfg = 0; cfg < 5; ++cfg)
        for (int kind = 0; kind < 6; ++kind) {
          ref::config c;
          c.K = K;
          c.renorm = cfg != 1;
          if (cfg >= 2) c.scoring = "sigmoid";
          if (cfg == 3) {  // DeepSeek-style: groups, bias, scale
            if (E % 4 != 0 || K > E / 2) continue;
            c.groups = 4;
            c.topk_groups = 2;
            c.scale = 2.5;
            c.bias.resize(static_cast<std::size_t>(E));
            for (auto& b : c.bias) b = static_cast<float>(nd(rng) * 0.05f);
          }
          if (cfg == 4) {
            c.cum_prob = 0.6;
            c.min_k = 1;
          }
          std::vector<float> x(static_cast<std::size_t>(T * E));
          for (auto& v : x) v = kind == 1 ? static_cast<float>(small(rng)) : nd(rng);
          if (kind == 2)
            for (std::size_t i = 0; i < x.size(); i += 3) x[i] = ninf;
          if (kind == 3) std::fill(x.begin(), x.end(), 0.5f);
          if (kind == 4) x[static_cast<std::size_t>(5 * E + E - 1)] = std::numeric_limits<float>::quiet_NaN();
          if (kind == 5) x[static_cast<std::size_t>(6 * E + E / 2)] = std::numeric_limits<float>::infinity();
          SCOPED_TRACE("E " + std::to_string(E) + " K " + std::to_string(K) + " cfg " +
                       std::to_string(cfg) + " kind " + std::to_string(kind));
          if (kind == 2 && (E - (E + 2) / 3 < K || (cfg == 3 && E < 64))) continue;  // fewer than K choosable
          any_router r(make_config(c, E), to_f(c.bias));
          std::vector<routing_result> res;
          std::vector<std::string> errs;
          for (auto isa : isas) {
            isa_scope scope(isa);
            try {
              res.push_back(r.route(logits_view<float>(x.data(), T, static_cast<std::size_t>(E))));
              errs.emplace_back();
            } catch (const error& e) {
              res.emplace_back();
              errs.push_back(e.message());
            }
          }
          if (kind >= 4) {
            EXPECT_NE(errs[0].find(kind == 4 ? "row 5" : "row 6"), std::string::npos) << errs[0];
          } else {
            ASSERT_EQ(errs[0], "");
            isa_scope scope(routing_isa::portable);
            expect_matches_reference(x, T, E, c);
          }
          for (std::size_t i = 1; i < res.size(); ++i) {
            SCOPED_TRACE(routing_isa_name(isas[i]));
            EXPECT_EQ(errs[i], errs[0]);
            EXPECT_EQ(res[i].offsets, res[0].offsets);
            EXPECT_EQ(res[i].ids, res[0].ids);
            ASSERT_EQ(res[i].weights.size(), res[0].weights.size());
            if (!res[0].weights.empty()) {
              EXPECT_EQ(0, std::memcmp(res[i].weights.data(), res[0].weights.data(),
                                       res[0].weights.size() * sizeof(float)));
            }
          }
        }
}

// topk_selection's branch-light path (chunk maxima, counting threshold, ranked candidates) and its
// fallbacks, against a plain sort: every shape and data kind that changes which path runs.
TEST(TopKSelection, MatchesAPlainSortOnEveryPathAndDataKind) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::uniform_int_distribution<int> small(0, 3);
  std::uniform_int_distribution<int> coin(0, 1);
  const int Es[] = {16, 64, 100, 128, 256, 264, 512, 1024, 1032, 2048};
  const int Ks[] = {1, 2, 7, 8, 16, 32, 33};
  for (int E : Es)
    for (int K : Ks) {
      if (K > E) continue;
      for (int kind = 0; kind < 7; ++kind) {
        std::vector<float> s(static_cast<std::size_t>(E));
        for (int e = 0; e < E; ++e) {
          switch (kind) {
            case 0: s[e] = nd(rng); break;                                    // random
            case 1: s[e] = static_cast<float>(small(rng)); break;             // many ties
            case 2: s[e] = 1.5f; break;                                       // all equal
            case 3: s[e] = coin(rng) ? ninf : nd(rng); break;                 // half masked
            case 4: s[e] = e < E - K ? ninf : nd(rng); break;                 // only K unmasked, at the end
            case 5: s[e] = static_cast<float>(e); break;                      // ascending
            default: s[e] = static_cast<float>(E - e) * 0.25f; break;         // descending
          }
        }
        std::vector<int> order;
        for (int e = 0; e < E; ++e)
          if (s[e] != ninf) order.push_back(e);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return s[a] > s[b]; });
        const int want = std::min<int>(K, static_cast<int>(order.size()));
        std::vector<float> tv(static_cast<std::size_t>(K));
        std::vector<std::int32_t> ti(static_cast<std::size_t>(K));
        for (auto isa : supported_isas()) {
          isa_scope scope(isa);
          SCOPED_TRACE(routing_isa_name(isa));
          const int got = topk_selection{}.select(s.data(), E, K, tv.data(), ti.data(), nullptr);
          ASSERT_EQ(got, want) << "E " << E << " K " << K << " kind " << kind;
          for (int i = 0; i < want; ++i) {
            ASSERT_EQ(ti[i], order[i]) << "E " << E << " K " << K << " kind " << kind << " slot " << i;
            ASSERT_EQ(tv[i], s[order[i]]);
          }
        }
      }
    }
}

// The top-K by logit of several rows at once (the router's float path; on AVX-512 a threshold
// from the column maxima, candidates compressed, read back after every row is scanned) against a
// plain sort row by row: ties at the threshold within and past the 16-candidate list, all-equal
// rows, masked experts, NaN / +inf rows (no choice, scan counts), fewer than K choosable, shapes
// off the 16-lane grid, a row stride wider than the row, K past 16.
TEST(TopKSelection, RowsAtOnceMatchAPlainSortRowByRow) {
  std::mt19937 rng(17);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::uniform_int_distribution<int> small(0, 3);
  constexpr float nan = std::numeric_limits<float>::quiet_NaN();
  constexpr float pinf = std::numeric_limits<float>::infinity();
  const int kinds = 10;
  for (int E : {16, 48, 256, 257, 1024, 1040})
    for (int K : {1, 2, 8, 13, 16, 17})
      for (int rows : {1, 5, 16}) {
        if (K > E) continue;
        const int stride = E + 3;
        std::vector<float> x(static_cast<std::size_t>(rows) * stride, 7.0f);  // 7: past the row
        std::vector<int> kind(static_cast<std::size_t>(rows));
        for (int r = 0; r < rows; ++r) {
          float* s = x.data() + static_cast<std::size_t>(r) * stride;
          kind[r] = (r + E + K) % kinds;
          for (int e = 0; e < E; ++e) s[e] = nd(rng);
          switch (kind[r]) {
            case 1: for (int e = 0; e < E; ++e) s[e] = static_cast<float>(small(rng)); break;  // many ties
            case 2: for (int e = 0; e < E; ++e) s[e] = 0.5f; break;                            // all equal
            case 3:  // the K-th value tied a few times across the candidates: K - 1 above, 3 equal
            case 4:  // ... and 20 equal (more candidates than 16)
              for (int e = 0; e < E; ++e) s[e] = -1.0f - static_cast<float>(e % 5);
              for (int i = 0; i < K - 1; ++i) s[(i * 7 + 3) % E] = 10.0f + static_cast<float>(i % 3);
              for (int i = 0, n = kind[r] == 3 ? 3 : 20, e = E - 1; i < n && e >= 0; --e)
                if (s[e] < 0) s[e] = 2.0f, ++i;
              break;
            case 5: for (int e = 0; e < E; e += 3) s[e] = ninf; break;                   // masked
            case 6: s[(r * 5) % E] = nan; break;
            case 7: s[E - 1] = pinf; break;
            case 8: for (int e = 0; e < E; ++e) if (e % 16 != 1) s[e] = ninf; break;  // fewer than K?
            default: break;                                                          // random
          }
        }
        std::vector<float> val(static_cast<std::size_t>(rows) * K);
        std::vector<std::int32_t> id(static_cast<std::size_t>(rows) * K);
        std::vector<int> n(static_cast<std::size_t>(rows)), bad(n), masked(n);
        for (auto isa : supported_isas()) {
          isa_scope scope(isa);
          SCOPED_TRACE(std::string(routing_isa_name(isa)) + " E " + std::to_string(E) + " K " +
                       std::to_string(K) + " rows " + std::to_string(rows));
          std::fill(n.begin(), n.end(), -5);
          detail::routing_scan_select_topk_rows(x.data(), static_cast<std::size_t>(stride), rows, E, K,
                                                val.data(), id.data(), n.data(), bad.data(), masked.data());
          for (int r = 0; r < rows; ++r) {
            SCOPED_TRACE("row " + std::to_string(r) + " kind " + std::to_string(kind[r]));
            const float* s = x.data() + static_cast<std::size_t>(r) * stride;
            int want_bad = 0, want_masked = 0;
            std::vector<int> order;
            for (int e = 0; e < E; ++e) {
              want_bad |= std::isnan(s[e]) || s[e] == pinf;
              want_masked += s[e] == ninf;
              if (s[e] != ninf) order.push_back(e);
            }
            ASSERT_EQ(bad[r] != 0, want_bad != 0);
            ASSERT_EQ(masked[r], want_masked);
            if (want_bad || E - want_masked < K) {
              ASSERT_EQ(n[r], 0);
              continue;
            }
            std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return s[a] > s[b]; });
            ASSERT_EQ(n[r], K);
            for (int i = 0; i < K; ++i) {
              ASSERT_EQ(id[static_cast<std::size_t>(r * K + i)], order[i]) << "slot " << i;
              ASSERT_EQ(val[static_cast<std::size_t>(r * K + i)], s[order[i]]) << "slot " << i;
            }
          }
        }
      }
}

// The router over more rows than it takes at once, with a masked block, ties and a bad row late in
// the batch: every path the same bits and the same first error; the good batch against the reference.
TEST(RouterBatch, BlocksOfRowsGiveTheSameBitsAndTheFirstErrorOnEveryPath) {
  std::mt19937 rng(23);
  const int T = 40, E = 64;
  auto x = random_logits(rng, T, E);
  for (int e = 0; e < E; e += 2) x[static_cast<std::size_t>(17 * E + e)] = ninf;
  for (int e = 0; e < E; ++e) x[static_cast<std::size_t>(18 * E + e)] = static_cast<float>(e % 3);
  ref::config c;
  c.K = 8;
  c.renorm = true;
  {
    isa_scope scope(routing_isa::portable);
    expect_matches_reference(x, T, E, c);
  }
  any_router r(make_config(c, E));
  std::vector<routing_result> res;
  for (auto isa : supported_isas()) {
    isa_scope scope(isa);
    res.push_back(r.route(logits_view<float>(x.data(), T, E)));
  }
  for (std::size_t i = 1; i < res.size(); ++i) {
    EXPECT_EQ(res[i].ids, res[0].ids);
    ASSERT_EQ(res[i].weights.size(), res[0].weights.size());
    EXPECT_EQ(0, std::memcmp(res[i].weights.data(), res[0].weights.data(), res[0].weights.size() * sizeof(float)));
  }
  x[static_cast<std::size_t>(37 * E + 5)] = std::numeric_limits<float>::quiet_NaN();
  for (auto isa : supported_isas()) {
    isa_scope scope(isa);
    try {
      (void)r.route(logits_view<float>(x.data(), T, E));
      ADD_FAILURE() << routing_isa_name(isa) << ": no error";
    } catch (const error& e) {
      EXPECT_NE(e.message().find("row 37"), std::string::npos) << e.message();
      EXPECT_NE(e.message().find("expert 5"), std::string::npos) << e.message();
    }
  }
}

namespace {
struct plain_row {
  std::vector<std::int32_t> ids;
  std::vector<float> w;
};
// Softmax + renorm at K = 8, one row, plainly: the 8 largest logits (ties: lower id), their
// numerators exp(x - max) with the library's scalar exp (routing_exp_nonpos: the weights' bits
// depend on its polynomial), ordered by numerator (ties: lower id), divided by their sum taken in
// that order; with cum_prob > 0 the plain zero-gating rule (plain_keep, capped at max_k) and the
// kept divided again by their sum; then times scale.
plain_row plain_softmax_renorm8(const float* x, int E, float scale, double cum_prob, int min_k,
                                int max_k) {
  std::vector<std::int32_t> order;
  for (int e = 0; e < E; ++e)
    if (x[e] != ninf) order.push_back(e);
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) { return x[a] > x[b]; });
  order.resize(8);
  std::vector<std::pair<float, std::int32_t>> v;
  for (std::int32_t e : order) v.push_back({detail::routing_exp_nonpos(x[e] - x[order[0]]), e});
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  std::vector<float> w;
  float s = 0;
  for (const auto& p : v) s += p.first;
  for (const auto& p : v) w.push_back(p.first / s);
  std::size_t n = 8;
  if (cum_prob > 0) {
    double total = 0;
    for (float u : w) total += u;
    n = static_cast<std::size_t>(std::min(plain_keep(w, total, cum_prob, min_k), max_k == 0 ? 8 : max_k));
    if (n < 8) {
      float s2 = 0;
      for (std::size_t i = 0; i < n; ++i) s2 += w[i];
      for (auto& u : w) u /= s2;
    }
  }
  plain_row r;
  for (std::size_t i = 0; i < n; ++i) {
    r.ids.push_back(v[i].second);
    r.w.push_back(w[i] * scale);
  }
  return r;
}
}  // namespace

// Softmax + renorm at K = 8 finishes up to 16 rows at once on AVX-512
// (routing_softmax_renorm_rows8) and sends the rows it cannot decide to the one-row steps: here
// blocks mix random rows, peaked rows (few kept), nearly flat rows (all 8 kept at the highest
// cum_prob), rows of 8 equal logits (shares landing exactly on cum_prob: the one-row steps), rows
// whose chosen numerators tie from unequal logits (reordered by id: the one-row steps), masked and
// tied logits; T = 45 (a last block of 13) and T = 3 (fewer rows than the block tail takes). Every
// path against a plain loop per row, bit for bit, without gating and with three gating settings; then
// a row with fewer than 8 choosable experts in the middle of a block is the error named, and the
// rows before it are written.
TEST(RouterBatch, RowsOfABlockTakingDifferentPathsMatchAPlainLoop) {
  std::mt19937 rng(41);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  const int E = 64;
  std::vector<float> x(static_cast<std::size_t>(45 * E));
  for (int t = 0; t < 45; ++t) {
    float* row = x.data() + t * E;
    for (int e = 0; e < E; ++e) row[e] = nd(rng);
    switch (t % 9) {
      case 0:  // nearly flat: 8 kept at cum_prob 0.97
        for (int e = 0; e < E; ++e) row[e] *= 0.1f;
        break;
      case 1:  // masked experts
        for (int e = t % 3; e < E; e += 3) row[e] = ninf;
        break;
      case 3:  // 8 equal logits above the rest: weights 1/8 each
        for (int e = 0; e < E; ++e) row[e] -= 20.0f;
        for (int j = 0; j < 8; ++j) row[(t + 7 * j) % E] = 1.0f;
        break;
      case 5:  // one dominant expert
        row[(5 * t) % E] = 12.0f;
        break;
      case 7:  // numerators that tie below the exp's clamp, the lower ids last by logit
        for (int e = 0; e < E; ++e) row[e] = -1000.0f + static_cast<float>(e);
        row[E - 1] = 0.0f;
        break;
      case 8:  // small-integer ties
        for (int e = 0; e < E; ++e) row[e] = static_cast<float>((e * 7 + t) % 5);
        break;
      default: break;
    }
  }
  struct setting {
    double cum_prob;
    int min_k, max_k;
  };
  const float scale = 2.5f;
  for (const setting g : {setting{0, 1, 0}, setting{0.75, 2, 0}, setting{0.5, 1, 5}, setting{0.97, 1, 0}}) {
    router<softmax_scoring> plain_r(E, 8, {true, scale});
    router<softmax_scoring, topk_selection, cumulative_gating> gated_r(E, 8, {true, scale}, {}, {},
                                                                       {g.cum_prob > 0 ? g.cum_prob : 1.0, g.min_k, g.max_k});
    for (const int T : {45, 3})
      for (auto isa : supported_isas()) {
        isa_scope scope(isa);
        SCOPED_TRACE(std::string(routing_isa_name(isa)) + " T " + std::to_string(T) + " cum_prob " +
                     std::to_string(g.cum_prob));
        const logits_view<float> view(x.data(), static_cast<std::size_t>(T), E);
        const auto got = g.cum_prob > 0 ? gated_r.route(view) : plain_r.route(view);
        ASSERT_EQ(got.offsets.size(), static_cast<std::size_t>(T) + 1);
        for (int t = 0; t < T; ++t) {
          const auto want = plain_softmax_renorm8(x.data() + t * E, E, scale, g.cum_prob, g.min_k, g.max_k);
          const auto b = got.offsets[static_cast<std::size_t>(t)];
          ASSERT_EQ(got.offsets[static_cast<std::size_t>(t) + 1] - b, want.ids.size()) << "row " << t;
          for (std::size_t i = 0; i < want.ids.size(); ++i) {
            EXPECT_EQ(got.ids[b + i], want.ids[i]) << "row " << t << " slot " << i;
            std::uint32_t gb, wb;
            std::memcpy(&gb, &got.weights[b + i], 4);
            std::memcpy(&wb, &want.w[i], 4);
            EXPECT_EQ(gb, wb) << "row " << t << " slot " << i << ": " << got.weights[b + i] << " vs " << want.w[i];
          }
        }
      }
  }
  // row 21 (block 1, lane 5) keeps 7 choosable experts
  for (int e = 7; e < E; ++e) x[static_cast<std::size_t>(21 * E + e)] = ninf;
  router<softmax_scoring, topk_selection, cumulative_gating> r(E, 8, {true}, {}, {}, {0.75, 2, 0});
  const int T = 45;
  std::vector<std::uint32_t> off(T + 1, 0);
  std::vector<std::int32_t> ids(r.max_nnz(T));
  std::vector<float> w(r.max_nnz(T));
  std::vector<unsigned char> ws(r.workspace_size());
  for (auto isa : supported_isas()) {
    isa_scope scope(isa);
    SCOPED_TRACE(routing_isa_name(isa));
    const status st = r.try_route(logits_view<float>(x.data(), T, E),
                                  {off.data(), ids.data(), w.data(), ids.size()}, ws.data());
    EXPECT_EQ(st.code, static_cast<int>(errc::bad_input));
    EXPECT_EQ(st.row, 21);
    for (int t = 0; t < 21; ++t) {
      const auto want = plain_softmax_renorm8(x.data() + t * E, E, 1.0f, 0.75, 2, 0);
      ASSERT_EQ(off[static_cast<std::size_t>(t) + 1] - off[static_cast<std::size_t>(t)], want.ids.size()) << "row " << t;
      for (std::size_t i = 0; i < want.ids.size(); ++i) {
        EXPECT_EQ(ids[off[static_cast<std::size_t>(t)] + i], want.ids[i]) << "row " << t;
        EXPECT_EQ(w[off[static_cast<std::size_t>(t)] + i], want.w[i]) << "row " << t;
      }
    }
  }
}

// grouped_topk_selection (top-2 sums without branches, one top-K over the kept groups) against a
// plain computation: group score = sum of its two largest (its only one when a group has one).
TEST(GroupedTopKSelection, MatchesAPlainComputationWithTiesAndMasks) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> small(0, 2);
  struct shape { int E, G, TG, K; };
  const shape shapes[] = {{256, 8, 4, 8}, {256, 8, 8, 32}, {64, 8, 2, 4}, {160, 20, 3, 6}, {8, 8, 3, 2}, {128, 4, 1, 8}, {256, 16, 4, 8},
                         {128, 64, 5, 6}};
  for (const auto& sh : shapes)
    for (int kind = 0; kind < 4; ++kind)
      for (int rep = 0; rep < 20; ++rep) {
        const int per = sh.E / sh.G;
        std::vector<float> s(static_cast<std::size_t>(sh.E));
        for (auto& v : s) v = kind == 0 ? nd(rng) : kind == 1 ? static_cast<float>(small(rng)) : kind == 2 ? 0.5f : nd(rng);
        if (kind == 3)
          for (int e = 0; e < sh.E; e += 3) s[e] = ninf;  // masked experts, some in every group
        std::vector<std::pair<double, int>> gs;
        for (int g = 0; g < sh.G; ++g) {
          std::vector<float> v(s.begin() + g * per, s.begin() + (g + 1) * per);
          std::sort(v.begin(), v.end(), std::greater<float>());
          const double sum = per == 1 ? v[0] : static_cast<double>(v[0]) + v[1];
          gs.push_back({std::isinf(sum) ? -1e300 : sum, g});
        }
        std::stable_sort(gs.begin(), gs.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
        std::vector<int> order;
        for (int e = 0; e < sh.E; ++e)
          for (int i = 0; i < sh.TG; ++i)
            if (e / per == gs[static_cast<std::size_t>(i)].second && s[e] != ninf) order.push_back(e);
        std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return s[a] > s[b]; });
        const int want = std::min<int>(sh.K, static_cast<int>(order.size()));
        grouped_topk_selection sel{sh.G, sh.TG};
        std::vector<unsigned char> ws(sel.workspace_bytes(sh.E));
        std::vector<float> tv(static_cast<std::size_t>(sh.K));
        std::vector<std::int32_t> ti(static_cast<std::size_t>(sh.K));
        for (auto isa : supported_isas()) {
          isa_scope scope(isa);
          SCOPED_TRACE(routing_isa_name(isa));
          const int got = sel.select(s.data(), sh.E, sh.K, tv.data(), ti.data(), ws.data());
          ASSERT_EQ(got, want) << "E " << sh.E << " kind " << kind;
          for (int i = 0; i < want; ++i) ASSERT_EQ(ti[i], order[i]) << "E " << sh.E << " kind " << kind << " slot " << i;
        }
      }
}

// 8 groups of 32 (DeepSeek-V3's shape) on every path against a plain computation in float and
// against the portable path: ties within and across groups, groups with equal scores from
// different members, whole groups masked, groups with one choosable expert, +inf scores (the
// portable path's answer on every path), several topk_groups and K; NaN scores (the router rejects
// NaN logits and non-finite biases before selecting) give distinct ids in range.
TEST(GroupedTopKSelection, EightGroupsOf32MatchAPlainRuleAndThePortablePath) {
  constexpr int E = 256, G = 8, per = 32;
  std::mt19937 rng(31);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> small(0, 2), grp(0, G - 1), pos(0, per - 1);
  const float pinf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int kind = 0; kind < 8; ++kind)
    for (int rep = 0; rep < 24; ++rep) {
      std::vector<float> s(E);
      for (auto& v : s) v = kind == 1 ? static_cast<float>(small(rng)) : nd(rng);
      if (kind == 2)  // groups with equal scores: permutations of group 0's values
        for (int g = 1; g < G; g += 2) {
          std::vector<float> v(s.begin(), s.begin() + per);
          std::shuffle(v.begin(), v.end(), rng);
          std::copy(v.begin(), v.end(), s.begin() + g * per);
        }
      if (kind == 3)  // equal top-2 sums from different pairs: 3 + 1 = 2 + 2
        for (int g = 0; g < G; ++g) {
          for (int j = 0; j < per; ++j) s[g * per + j] = -1.0f - static_cast<float>(small(rng));
          if (g % 2)
            s[g * per + pos(rng)] = 3.0f, s[g * per + (pos(rng) | 1)] = 1.0f;
          else
            s[g * per + (pos(rng) & ~1)] = 2.0f, s[g * per + (pos(rng) | 1)] = 2.0f;
        }
      if (kind == 4) {  // whole groups masked, and groups with one choosable expert (sum -inf)
        for (int j = 0; j < per; ++j) s[grp(rng) * per + j] = ninf;
        const int g = grp(rng);
        for (int j = 0; j < per; ++j) s[g * per + j] = j == pos(rng) ? s[g * per + j] : ninf;
        for (int e = 0; e < E; e += 5) s[e] = ninf;
      }
      if (kind == 5)  // every group masked but one expert in each of three
        for (int g = 0; g < G; ++g)
          for (int j = 0; j < per; ++j)
            s[g * per + j] = g < 3 && j == g ? static_cast<float>(g) : ninf;
      if (kind == 6) s[grp(rng) * per + pos(rng)] = pinf;
      if (kind == 7) s[grp(rng) * per + pos(rng)] = nan;
      for (int TG : {1, 3, 4, 8})
        for (int K : {1, 8, 16}) {
          if (K > TG * per) continue;
          grouped_topk_selection sel{G, TG};
          std::vector<unsigned char> ws(sel.workspace_bytes(E));
          std::vector<float> tv(static_cast<std::size_t>(K));
          std::vector<std::int32_t> ti(static_cast<std::size_t>(K)), ti0;
          int n0 = -1;
          for (auto isa : supported_isas()) {
            isa_scope scope(isa);
            SCOPED_TRACE(routing_isa_name(isa));
            const int got = sel.select(s.data(), E, K, tv.data(), ti.data(), ws.data());
            if (kind ==
                7) {  // NaN scores (the router never selects on them): distinct ids in range
              ASSERT_LE(got, K);
              std::vector<std::int32_t> u(ti.begin(), ti.begin() + got);
              std::sort(u.begin(), u.end());
              ASSERT_TRUE(std::adjacent_find(u.begin(), u.end()) == u.end());
              for (int i = 0; i < got; ++i) ASSERT_TRUE(ti[i] >= 0 && ti[i] < E);
              continue;
            }
            if (n0 < 0) {
              n0 = got;
              ti0.assign(ti.begin(), ti.begin() + got);
            }
            ASSERT_EQ(got, n0) << "kind " << kind << " TG " << TG << " K " << K;
            for (int i = 0; i < got; ++i)
              ASSERT_EQ(ti[i], ti0[i]) << "kind " << kind << " slot " << i;
          }
          if (kind >= 6) continue;  // no plain rule for +inf + -inf or NaN: the portable path's
          // the plain rule: float sum of each group's two largest (-inf: below every finite
          // group), the TG best (equal: lower group), then the K best kept (equal: lower id)
          std::vector<std::pair<float, int>> gs;
          for (int g = 0; g < G; ++g) {
            std::vector<float> v(s.begin() + g * per, s.begin() + (g + 1) * per);
            std::sort(v.begin(), v.end(), std::greater<float>());
            const float sum = v[0] + v[1];
            gs.push_back({sum == ninf ? -std::numeric_limits<float>::max() : sum, g});
          }
          std::stable_sort(gs.begin(), gs.end(),
                           [](const auto& a, const auto& b) { return a.first > b.first; });
          std::vector<int> order;
          for (int e = 0; e < E; ++e)
            for (int i = 0; i < TG; ++i)
              if (e / per == gs[static_cast<std::size_t>(i)].second && s[e] != ninf)
                order.push_back(e);
          std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return s[a] > s[b]; });
          ASSERT_EQ(n0, std::min<int>(K, static_cast<int>(order.size()))) << "kind " << kind;
          for (int i = 0; i < n0; ++i)
            ASSERT_EQ(ti0[i], order[i]) << "kind " << kind << " TG " << TG << " slot " << i;
        }
    }
}

// Sigmoid scores with the grouped top-K over groups of whole vectors (the shapes the fused AVX-512
// kernel takes, two rows at a time: power-of-two group counts and others, one group, K up to 16),
// with and without bias, renormalization and zero-gating, an odd row count, and rows it leaves to
// the general steps (many ties, masked experts), equal weights: ids and weights against the plain reference,
// and the same bits, statistics included, on every path.
TEST(RouterBatch, GroupedSigmoidOverWholeVectorGroupsMatchesTheReferenceOnEveryPath) {
  struct shape {
    int E, G, TG, K;
  };
  std::mt19937 rng(41);
  for (const shape sh : {shape{256, 8, 4, 8}, shape{128, 8, 3, 6}, shape{64, 4, 2, 4},
                         shape{512, 16, 5, 16}, shape{384, 1, 1, 8}, shape{96, 2, 1, 3},
                         shape{192, 3, 2, 8}, shape{320, 5, 2, 10}})
    for (int variant = 0; variant < 4; ++variant) {
      const bool bias = variant & 1, extra = variant & 2;  // extra: renorm and zero-gating
      ref::config c;
      c.scoring = "sigmoid";
      c.K = sh.K;
      c.groups = sh.G;
      c.topk_groups = sh.TG;
      c.renorm = extra;
      c.scale = 2.5;
      if (extra) {
        c.cum_prob = 0.6;
        c.min_k = 2;
      }
      if (bias) {
        std::uniform_real_distribution<double> u(-0.2, 0.2);
        c.bias.resize(static_cast<std::size_t>(sh.E));
        for (auto& v : c.bias) v = static_cast<float>(u(rng));  // float-representable
      }
      const int T = 7;
      auto x = random_logits(rng, T, sh.E);
      for (int e = 0; e < sh.E; ++e) x[static_cast<std::size_t>(2 * sh.E + e)] = static_cast<float>(e % 3);
      x[static_cast<std::size_t>(4 * sh.E + 5)] = ninf;
      for (int e = 1; e < sh.E; e += 2)  // equal weights in pairs: their order goes by id
        x[static_cast<std::size_t>(5 * sh.E + e)] = x[static_cast<std::size_t>(5 * sh.E + e - 1)];
      {  // row 6: group 0 kept for one large score, its second-largest far below the other kept
         // groups' scores (a threshold from the kept groups' top two would take them all)
        const int per = sh.E / sh.G;
        std::uniform_real_distribution<float> hi(0.0f, 2.0f);
        for (int e = 0; e < sh.E; ++e) {
          const int g = e / per;
          x[static_cast<std::size_t>(6 * sh.E + e)] =
              g == 0 ? (e == 3 ? 4.0f : -3.0f - 0.001f * static_cast<float>(e)) : g < sh.TG ? hi(rng) : -2.5f;
        }
      }
      SCOPED_TRACE("E " + std::to_string(sh.E) + " groups " + std::to_string(sh.G) + " K " +
                   std::to_string(sh.K) + " variant " + std::to_string(variant));
      expect_matches_reference(x, T, sh.E, c);
      any_router r(make_config(c, sh.E), to_f(c.bias));
      std::vector<routing_result> res;
      std::vector<std::vector<token_stats>> st(3);
      for (auto isa : supported_isas()) {
        isa_scope scope(isa);
        res.push_back(r.route(logits_view<float>(x.data(), T, sh.E), &st[res.size()]));
      }
      for (std::size_t i = 1; i < res.size(); ++i) {
        EXPECT_EQ(res[i].offsets, res[0].offsets);
        EXPECT_EQ(res[i].ids, res[0].ids);
        ASSERT_EQ(res[i].weights.size(), res[0].weights.size());
        EXPECT_EQ(0, std::memcmp(res[i].weights.data(), res[0].weights.data(),
                                 res[0].weights.size() * sizeof(float)));
        for (int t = 0; t < T; ++t) {
          EXPECT_EQ(st[i][t].active, st[0][t].active);
          EXPECT_EQ(st[i][t].entropy, st[0][t].entropy);
          EXPECT_EQ(st[i][t].kept_mass, st[0][t].kept_mass);
        }
      }
    }
}

// The DeepSeek-V3 preset over several row counts (ties, masked experts, a NaN row): the same ids,
// weight bits and first error on every path.
TEST(RouterBatch, DeepSeekV3GroupedRowsGiveTheSameBitsOnEveryPath) {
  std::mt19937 rng(37);
  std::normal_distribution<float> nd(0.0f, 0.1f);
  std::vector<float> bias(256);
  for (auto& b : bias) b = nd(rng);
  any_router r(preset("deepseek-v3"), bias);
  for (int T : {1, 3, 17, 40}) {
    auto x = random_logits(rng, T, 256);
    if (T > 3) {
      for (int e = 0; e < 256; e += 3) x[static_cast<std::size_t>(2 * 256 + e)] = ninf;
      for (int e = 0; e < 256; ++e)
        x[static_cast<std::size_t>(3 * 256 + e)] = static_cast<float>(e % 3);
    }
    std::vector<routing_result> res;
    for (auto isa : supported_isas()) {
      isa_scope scope(isa);
      res.push_back(r.route(logits_view<float>(x.data(), T, 256)));
    }
    for (std::size_t i = 1; i < res.size(); ++i) {
      EXPECT_EQ(res[i].ids, res[0].ids) << "T " << T;
      ASSERT_EQ(res[i].weights.size(), res[0].weights.size());
      EXPECT_EQ(0, std::memcmp(res[i].weights.data(), res[0].weights.data(),
                               res[0].weights.size() * sizeof(float)));
    }
    x[static_cast<std::size_t>((T - 1) * 256 + 7)] = std::numeric_limits<float>::quiet_NaN();
    for (auto isa : supported_isas()) {
      isa_scope scope(isa);
      try {
        (void)r.route(logits_view<float>(x.data(), T, 256));
        ADD_FAILURE() << routing_isa_name(isa) << ": no error";
      } catch (const error& e) {
        EXPECT_NE(e.message().find("row " + std::to_string(T - 1)), std::string::npos)
            << e.message();
      }
    }
  }
}
