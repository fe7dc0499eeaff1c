// Core: version, error, float16/bfloat16 conversion, residency_set, routing-trace JSONL reader.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <regex>
#include <set>
#include <sstream>

#include "moeroute/moeroute.hpp"

using namespace moeroute;
using cell_set = std::set<std::pair<int, int>>;

TEST(Version, MatchesCMakeProjectVersion) {
  std::ifstream f(std::string(MOEROUTE_SOURCE_DIR) + "/CMakeLists.txt");
  std::stringstream ss;
  ss << f.rdbuf();
  std::smatch m;
  const std::string text = ss.str();
  ASSERT_TRUE(std::regex_search(text, m, std::regex(R"(project\(moeroute VERSION (\d+)\.(\d+)\.(\d+))")));
  EXPECT_EQ(std::stoi(m[1]), MOEROUTE_VERSION_MAJOR);
  EXPECT_EQ(std::stoi(m[2]), MOEROUTE_VERSION_MINOR);
  EXPECT_EQ(std::stoi(m[3]), MOEROUTE_VERSION_PATCH);
  EXPECT_EQ(std::string(version_string()),
            std::string(m[1]) + "." + std::string(m[2]) + "." + std::string(m[3]));
}

TEST(Error, CarriesCodeAndLocatedMessage) {
  try {
    MOEROUTE_CHECK(1 + 1 == 3, errc::bad_input, "logits.npy: row ", 3, ": NaN");
    FAIL() << "no throw";
  } catch (const error& e) {
    EXPECT_EQ(e.code(), errc::bad_input);
    EXPECT_EQ(e.message(), "logits.npy: row 3: NaN");
    EXPECT_STREQ(e.what(), "[moeroute.bad_input] logits.npy: row 3: NaN");
  }
}

// The reference for half precision: the compiler's _Float16 where it has one (GCC; clang 15+ on
// x86-64), else IEEE 754 binary16 decoded with ldexp and narrowed by nearest search over every
// finite half (ties to the even significand), independent of detail/float16.hpp either way.
#if defined(__FLT16_MANT_DIG__) && !defined(MOEROUTE_TEST_PORTABLE_HALF)
float ref_half_to_float(std::uint16_t h) {
  _Float16 x;
  std::memcpy(&x, &h, 2);
  return static_cast<float>(x);
}
std::uint16_t ref_float_to_half(float f) {
  const _Float16 x = static_cast<_Float16>(f);
  std::uint16_t b;
  std::memcpy(&b, &x, 2);
  return b;
}
#else
float ref_half_to_float(std::uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  double v;
  if (exp == 0x1f)
    v = man ? std::nan("") : HUGE_VAL;
  else if (exp == 0)
    v = std::ldexp(static_cast<double>(man), -24);
  else
    v = std::ldexp(static_cast<double>(man + 1024), exp - 25);
  return static_cast<float>(sign ? -v : v);
}
std::uint16_t ref_float_to_half(float f) {
  const std::uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  const double a = std::fabs(static_cast<double>(f));
  // Finite non-negative halves 0x0000..0x7bff are increasing in their bits; 65520 = 65504 + half
  // an ulp rounds to infinity.
  if (a >= 65520.0) return static_cast<std::uint16_t>(sign | 0x7c00);
  std::uint16_t lo = 0, hi = 0x7bff;
  while (lo < hi) {  // largest half <= a
    const std::uint16_t mid = static_cast<std::uint16_t>((lo + hi + 1) / 2);
    if (ref_half_to_float(mid) <= a) lo = mid; else hi = static_cast<std::uint16_t>(mid - 1);
  }
  std::uint16_t best = lo;
  if (lo < 0x7bff) {
    const double dlo = a - ref_half_to_float(lo), dhi = ref_half_to_float(static_cast<std::uint16_t>(lo + 1)) - a;
    if (dhi < dlo || (dhi == dlo && (lo & 1))) best = static_cast<std::uint16_t>(lo + 1);
  }
  return static_cast<std::uint16_t>(sign | best);
}
#endif

TEST(Float16, EveryHalfRoundTripsThroughFloat) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const float f = half_to_float(static_cast<std::uint16_t>(h));
    const float ref = ref_half_to_float(static_cast<std::uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(ref));
      continue;
    }
    ASSERT_EQ(f, ref) << "half bits " << h;
    ASSERT_EQ(float_to_half(f), h) << "half bits " << h;
  }
}

TEST(Float16, NarrowingMatchesReference) {
  std::mt19937 rng(1);
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    std::uint32_t u = bits(rng);
    if (i % 2) u = (u & 0x8fffffffu) | 0x30000000u;  // bias toward the half range
    float f;
    std::memcpy(&f, &u, 4);
    if (std::isnan(f)) continue;
    ASSERT_EQ(float_to_half(f), ref_float_to_half(f)) << "float bits " << std::hex << u;
  }
}

TEST(BFloat16, RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3f80);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1.0).
  EXPECT_EQ(float_to_bf16(1.00390625f), 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even (1 + 2^-6).
  EXPECT_EQ(float_to_bf16(1.01171875f), 0x3f82);
  EXPECT_EQ(bf16_to_float(0x4049), 3.140625f);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
}

TEST(ResidencySet, AgreesWithStdSet) {
  std::mt19937 rng(2);
  const int L = 7, E = 130;
  residency_set a(L, E), b(L, E);
  cell_set ra, rb;
  for (int i = 0; i < 400; ++i) {
    int l = static_cast<int>(rng() % L), e = static_cast<int>(rng() % E);
    if (i % 2) {
      EXPECT_EQ(a.insert(l, e), ra.insert({l, e}).second);
    } else {
      b.insert(l, e);
      rb.insert({l, e});
    }
  }
  a.erase(0, 0);
  ra.erase({0, 0});
  EXPECT_EQ(a.count(), ra.size());
  auto cells = a.cells();
  EXPECT_EQ(cell_set(cells.begin(), cells.end()), ra);
  EXPECT_TRUE(std::is_sorted(cells.begin(), cells.end()));
  std::size_t in_layer3 = 0;
  for (auto& c : ra) in_layer3 += c.first == 3;
  EXPECT_EQ(a.count_in_layer(3), in_layer3);

  cell_set u = ra, i, d;
  u.insert(rb.begin(), rb.end());
  for (auto& c : ra) (rb.count(c) ? i : d).insert(c);
  auto su = (a | b).cells(), si = (a & b).cells(), sd = (a - b).cells();
  EXPECT_EQ(cell_set(su.begin(), su.end()), u);
  EXPECT_EQ(cell_set(si.begin(), si.end()), i);
  EXPECT_EQ(cell_set(sd.begin(), sd.end()), d);

  std::vector<double> per_layer(L);
  double expect = 0;
  for (int l = 0; l < L; ++l) per_layer[l] = 1.5 * (l + 1);
  for (auto& c : ra) expect += per_layer[c.first];
  EXPECT_DOUBLE_EQ(a.bytes(per_layer), expect);
  EXPECT_DOUBLE_EQ(a.bytes(4.0), 4.0 * static_cast<double>(ra.size()));
}

TEST(ResidencySet, RejectsOutOfRangeAndShapeMismatch) {
  residency_set a(2, 4), b(3, 4);
  EXPECT_THROW(a.insert(2, 0), error);
  EXPECT_THROW(a.contains(0, 4), error);
  EXPECT_THROW(a.insert(-1, 0), error);
  EXPECT_THROW(a |= b, error);
}

TEST(RoutingTrace, ReadsShippedMixtralTrace) {
  auto t = read_routing_trace_jsonl(std::string(MOEROUTE_TEST_DATA_DIR) +
                                    "/traces/mixtral-8x7b_humaneval_routing.jsonl");
  EXPECT_EQ(t.size(), 2579u);  // line count of the file, see traces/README.md
  EXPECT_EQ(t.num_accesses(), 2 * 2579u);
  EXPECT_EQ(t.num_layers(), 32);
  EXPECT_EQ(t.num_experts(), 8);
  EXPECT_TRUE(t.has_weights);
  // First line: layer 0, token 0, experts [6, 5], gating_probs [0.6959..., 0.3040...]
  EXPECT_EQ(t.layer[0], 0);
  EXPECT_EQ(t.token[0], 0);
  EXPECT_EQ(t.experts[0], 6);
  EXPECT_EQ(t.experts[1], 5);
  EXPECT_FLOAT_EQ(t.weights[0], 0.6959583759307861f);
}

TEST(RoutingTrace, RoundTripsThroughWriter) {
  std::istringstream in(
      "{\"layer\": 1, \"experts\": [3, 0], \"weights\": [0.75, 0.25], \"token_idx\": 4}\n\n"
      "{\"layer\": 0, \"experts\": [], \"weights\": [], \"extra\": {\"a\": 1}}\n");
  auto t = parse_routing_trace_jsonl(in, "mem");
  ASSERT_EQ(t.size(), 2u);
  std::stringstream out;
  write_routing_trace_jsonl(out, t);
  auto u = parse_routing_trace_jsonl(out, "mem2");
  EXPECT_EQ(u.layer, t.layer);
  EXPECT_EQ(u.token, t.token);
  EXPECT_EQ(u.offsets, t.offsets);
  EXPECT_EQ(u.experts, t.experts);
  EXPECT_EQ(u.weights, t.weights);
  EXPECT_EQ(u.token[1], -1);
}

TEST(RoutingTrace, MalformedLinesNameTheLine) {
  const std::pair<const char*, const char*> cases[] = {
      {"{\"layer\": 0, \"experts\": [1]}\nnot json\n", "mem:2: not valid JSON"},
      {"{\"experts\": [1]}\n", "mem:1: missing field 'layer'"},
      {"{\"layer\": 0}\n", "mem:1: missing field 'experts'"},
      {"{\"layer\": 0, \"experts\": [-1]}\n", "mem:1: experts[0] = -1 out of range"},
      {"{\"layer\": -2, \"experts\": [1]}\n", "mem:1: field 'layer' = -2 out of range"},
      {"{\"layer\": 0, \"experts\": [1, 2], \"gating_probs\": [0.5]}\n",
       "mem:1: field 'gating_probs' has 1 entries but 'experts' has 2"},
      {"{\"layer\": 0, \"experts\": [1.5]}\n", "mem:1: experts[0] is not an integer"},
      {"[1, 2]\n", "mem:1: expected a JSON object"},
      {"{\"layer\": 0, \"experts\": [70000]}\n", "mem:1: experts[0] = 70000 out of range"},
      {"{\"layer\": 0, \"experts\": [1], \"weights\": [1e39]}\n", "mem:1: weights[0] is not a finite float32"},
  };
  for (auto& c : cases) {
    std::istringstream in(c.first);
    try {
      parse_routing_trace_jsonl(in, "mem");
      ADD_FAILURE() << "accepted: " << c.first;
    } catch (const error& e) {
      EXPECT_NE(e.message().find(c.second), std::string::npos) << e.message();
    }
  }
  EXPECT_THROW(read_routing_trace_jsonl("/nonexistent/trace.jsonl"), error);
}

TEST(TraceCounts, CountsAndMassMatchAPlainLoop) {
  std::istringstream in(
      "{\"layer\": 2, \"experts\": [3, 0], \"weights\": [0.75, 0.25]}\n"
      "{\"layer\": 0, \"experts\": [3], \"weights\": [1.0]}\n"
      "{\"layer\": 2, \"experts\": [3, 1], \"weights\": [0.5, 0.5]}\n");
  auto t = parse_routing_trace_jsonl(in, "mem");
  auto c = trace_activation_counts(t, 5);
  ASSERT_EQ(c.size(), 2u);  // layer 1 never appears
  EXPECT_EQ(c[0].layer_index, 0);
  EXPECT_EQ(c[0].counts, (std::vector<double>{0, 0, 0, 1, 0}));
  EXPECT_EQ(c[1].layer_index, 2);
  EXPECT_EQ(c[1].counts, (std::vector<double>{1, 1, 0, 2, 0}));
  auto m = trace_weight_mass(t);
  EXPECT_EQ(m[1].counts, (std::vector<double>{0.25, 0.5, 0, 1.25}));
  EXPECT_THROW(trace_activation_counts(t, 3), error);  // expert 3 does not fit E = 3
}

TEST(TraceCounts, RefusesTablesBeyondTheCellLimit) {
  // 1025 layers present x 65536 experts (inferred from id 65535) = 67,174,400 cells > 2^26, from a
  // trace of a few kilobytes: refused before allocating.
  std::string text = "{\"layer\": 0, \"experts\": [65535]}\n";
  for (int l = 1; l < 1025; ++l) text += "{\"layer\": " + std::to_string(l) + ", \"experts\": [0]}\n";
  std::istringstream in(text);
  auto t = parse_routing_trace_jsonl(in, "mem");
  try {
    trace_activation_counts(t);
    ADD_FAILURE() << "a 67M-cell table was accepted";
  } catch (const error& e) {
    EXPECT_EQ(e.code(), errc::capacity);
    EXPECT_NE(e.message().find("67174400 (layer, expert) cells"), std::string::npos) << e.message();
  }
  std::istringstream in2("{\"layer\": 1024, \"experts\": [65535]}\n");  // one layer present: 65536 cells
  EXPECT_EQ(trace_activation_counts(parse_routing_trace_jsonl(in2, "mem")).at(0).counts.size(), 65536u);
}
