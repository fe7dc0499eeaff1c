// offload/: the offloaded MoE layer (offloaded_moe) against the all-resident Eigen reference on
// every golden model, in every miss mode, with tiny budgets and prefetch; its counters against a
// plain LRU replay; the hit/miss planning of miss_plan.hpp; errors that name sizes.
#include <gtest/gtest.h>

#include <moeroute/offload/miss_plan.hpp>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <memory>
#include <cstdint>
#include <list>
#include <random>
#include <string>
#include <vector>

#include "moeroute/error.hpp"

// Expects `expr` to throw moeroute::error with `code` and a message containing `needle`.
#define EXPECT_MOEROUTE_ERROR(expr, code_, needle)                                       \
  do {                                                                                   \
    try {                                                                                \
      (void)(expr);                                                                      \
      ADD_FAILURE() << "no error; expected one mentioning '" << (needle) << "'";         \
    } catch (const moeroute::error& e_) {                                                \
      EXPECT_EQ(e_.code(), code_) << e_.message();                                       \
      EXPECT_NE(e_.message().find(needle), std::string::npos) << e_.message();           \
    }                                                                                    \
  } while (0)

TEST(MissPlan, BatchCountsDistinctExpertsInFirstAppearanceOrder) {
  const std::uint32_t off[4] = {0, 2, 4, 5};
  const std::int32_t ids[5] = {3, 1, 1, 0, 3};
  const float w[5] = {1, 1, 1, 1, 1};
  moeroute::layer_batch b;
  b.reserve(4);
  b.build({3, 4, off, ids, w});
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b.expert(0), 3);
  EXPECT_EQ(b.expert(1), 1);
  EXPECT_EQ(b.expert(2), 0);
  EXPECT_EQ(b.count(0), 2u);
  EXPECT_EQ(b.count(1), 2u);
  EXPECT_EQ(b.count(2), 1u);
  // the split: expert 1 is a hit, 3 uploaded, 0 on the CPU
  moeroute::expert_route route[3] = {moeroute::expert_route::upload, moeroute::expert_route::hit,
                                     moeroute::expert_route::cpu};
  std::uint32_t o[4];
  std::int32_t si[5];
  float sw[5];
  using moeroute::route_bit;
  EXPECT_EQ(moeroute::csr_subset({3, 4, off, ids, w}, b, route, route_bit(moeroute::expert_route::upload), o, si, sw), 2u);
  EXPECT_EQ(std::vector<std::uint32_t>(o, o + 4), (std::vector<std::uint32_t>{0, 1, 1, 2}));
  EXPECT_EQ(si[0], 3);
  EXPECT_EQ(si[1], 3);
  // hits and uploads together (one device pass): every entry but expert 0's
  const unsigned device = route_bit(moeroute::expert_route::hit) | route_bit(moeroute::expert_route::upload);
  EXPECT_EQ(moeroute::csr_subset({3, 4, off, ids, w}, b, route, device, o, si, sw), 4u);
  EXPECT_EQ(std::vector<std::uint32_t>(o, o + 4), (std::vector<std::uint32_t>{0, 2, 3, 4}));
  EXPECT_EQ(std::vector<std::int32_t>(si, si + 4), (std::vector<std::int32_t>{3, 1, 1, 3}));
}

// pass_split: one pass unless the call has both hits and uploads; auto splits only on a device
// that overlaps passes with copies (a GPU), never on a CPU device (lavapipe).
TEST(MissPlan, PassesSplitOnlyWhereTheDeviceOverlaps) {
  using moeroute::pass_split;
  using moeroute::split_passes;
  EXPECT_TRUE(split_passes(pass_split::auto_, 1, 2, true));
  EXPECT_FALSE(split_passes(pass_split::auto_, 1, 2, false));
  EXPECT_FALSE(split_passes(pass_split::auto_, 0, 8, true));  // no hits: one pass
  EXPECT_FALSE(split_passes(pass_split::two, 3, 0, true));    // no uploads: one pass
  EXPECT_TRUE(split_passes(pass_split::two, 1, 1, false));
  EXPECT_FALSE(split_passes(pass_split::one, 1, 8, true));
  EXPECT_EQ(moeroute::parse_pass_split("one"), pass_split::one);
  EXPECT_EQ(moeroute::parse_pass_split("two"), pass_split::two);
  EXPECT_STREQ(moeroute::pass_split_name(pass_split::auto_), "auto");
  EXPECT_MOEROUTE_ERROR(moeroute::parse_pass_split("three"), moeroute::errc::invalid_argument, "device passes 'three'");
}

TEST(MissPlan, AutoBalancesUploadAndCpuTime) {
  // four misses with 8, 4, 1, 1 entries; an upload costs 1 s, an entry 0.25 s on the CPU
  const std::uint32_t off[2] = {0, 14};
  std::vector<std::int32_t> ids;
  for (int i = 0; i < 8; ++i) ids.push_back(0);
  for (int i = 0; i < 4; ++i) ids.push_back(1);
  ids.push_back(2);
  ids.push_back(3);
  const std::vector<float> w(ids.size(), 1.0f);
  moeroute::layer_batch b;
  b.reserve(4);
  b.build({1, 4, off, ids.data(), w.data()});
  moeroute::miss_costs c;
  c.upload_bytes_per_s = 1000;  // 1000 bytes: 1 s
  std::vector<moeroute::expert_route> r(4, moeroute::expert_route::upload);
  std::uint32_t order[4];
  moeroute::plan_misses(moeroute::miss_mode::auto_, b, 1000, c, 0.25, 4, r.data(), order);
  // by hand: e0 (2 s CPU) -> upload (dev 1); e1 (1 s) -> upload? dev 2 vs cpu 1 -> cpu (cpu 1);
  // e2 (0.25) dev 2 vs cpu 1.25 -> cpu; e3 dev 2 vs cpu 1.5 -> cpu
  EXPECT_EQ(r[0], moeroute::expert_route::upload);
  EXPECT_EQ(r[1], moeroute::expert_route::cpu);
  EXPECT_EQ(r[2], moeroute::expert_route::cpu);
  EXPECT_EQ(r[3], moeroute::expert_route::cpu);
  // no free slot: everything on the CPU; upload mode with one free slot: the first miss uploads
  std::fill(r.begin(), r.end(), moeroute::expert_route::upload);
  moeroute::plan_misses(moeroute::miss_mode::auto_, b, 1000, c, 0.25, 0, r.data(), order);
  EXPECT_EQ(std::count(r.begin(), r.end(), moeroute::expert_route::cpu), 4);
  std::fill(r.begin(), r.end(), moeroute::expert_route::upload);
  r[0] = moeroute::expert_route::hit;
  moeroute::plan_misses(moeroute::miss_mode::upload, b, 1000, c, 0.25, 1, r.data(), order);
  EXPECT_EQ(r[0], moeroute::expert_route::hit);
  EXPECT_EQ(r[1], moeroute::expert_route::upload);
  EXPECT_EQ(r[2], moeroute::expert_route::cpu);
  // a device pass that costs more than all the CPU work keeps every miss on the host
  c.device_s_per_pass = 10;
  std::fill(r.begin(), r.end(), moeroute::expert_route::upload);
  moeroute::plan_misses(moeroute::miss_mode::auto_, b, 1000, c, 0.25, 4, r.data(), order);
  EXPECT_EQ(std::count(r.begin(), r.end(), moeroute::expert_route::cpu), 4);
  EXPECT_EQ(moeroute::parse_miss_mode("auto"), moeroute::miss_mode::auto_);
  EXPECT_MOEROUTE_ERROR(moeroute::parse_miss_mode("gpu"), moeroute::errc::invalid_argument, "miss mode 'gpu'");
}

#if defined(MOEROUTE_TEST_HAS_VULKAN) && defined(MOEROUTE_TEST_HAS_EIGEN)
#include <moeroute/backends/cpu_eigen.hpp>
#include <moeroute/offload/offloaded_moe.hpp>

#include "golden_support.hpp"

namespace {

// The Vulkan context of the file's tests, destroyed when the tests end (before the process exits).
class vulkan_environment : public ::testing::Environment {
 public:
  void TearDown() override { ctx.reset(); }
  static std::unique_ptr<moeroute::vulkan_context> ctx;
};
std::unique_ptr<moeroute::vulkan_context> vulkan_environment::ctx;
[[maybe_unused]] const auto* const env = ::testing::AddGlobalTestEnvironment(new vulkan_environment);

std::unique_ptr<moeroute::vulkan_context>& context() {
  static bool tried = false;
  if (!tried) {
    tried = true;
    try {
      vulkan_environment::ctx = std::make_unique<moeroute::vulkan_context>();
    } catch (const moeroute::error&) {
    }
  }
  return vulkan_environment::ctx;
}
#define NEED_VULKAN() \
  if (!context()) GTEST_SKIP() << "no Vulkan device"

// Under MOEROUTE_VK_VALIDATION=1 the Khronos validation layer reports every misuse: none expected.
void expect_no_validation_messages() {
  for (const auto& m : context()->validation_messages()) ADD_FAILURE() << "validation: " << m;
}

// The all-resident reference: Eigen's FFN with every expert of the layer decoded.
std::vector<float> eigen_ffn(const moeroute::offload_layer_source& src, const moeroute::routing_result_view& r,
                             const float* x) {
  const moeroute::ffn_layer& s = src.shape;
  moeroute::cpu_ffn op(s, s.num_experts);
  std::vector<unsigned char> blob(s.expert_bytes(), 0);
  std::vector<std::int32_t> table;
  const auto F = static_cast<std::size_t>(s.ffn), H = static_cast<std::size_t>(s.hidden);
  for (int e = 0; e < s.num_experts; ++e) {
    const auto& v = src.experts[static_cast<std::size_t>(e)];
    std::memcpy(blob.data() + s.gate_offset(), v.gate, s.gate_bytes());
    std::memcpy(blob.data() + s.up_offset(), v.up, s.up_bytes());
    std::memcpy(blob.data() + s.down_offset(), v.down, s.down_bytes());
    if (s.has_bias) {
      std::memcpy(blob.data() + s.bias_offset(), v.gate_bias, F * 4);
      std::memcpy(blob.data() + s.bias_offset() + F * 4, v.up_bias, F * 4);
      std::memcpy(blob.data() + s.bias_offset() + 2 * F * 4, v.down_bias, H * 4);
    }
    op.upload_expert(e, blob.data(), blob.size());
    table.push_back(e);
  }
  op.set_slot_table(table.data(), table.size());
  std::vector<float> y(r.num_tokens * H);
  const moeroute::ffn_args a{r, x, y.data()};
  std::vector<unsigned char> ws(op.workspace_size(a) + 16);
  op.initialize(a, ws.data());
  op.run();
  return y;
}

// One token's rows of a routing result as a view.
moeroute::routing_result_view token_view(const moeroute::routing_result& r, std::size_t t, std::uint32_t* off) {
  off[0] = 0;
  off[1] = r.offsets[t + 1] - r.offsets[t];
  return {1, r.num_experts, off, r.ids.data() + r.offsets[t], r.weights.data() + r.offsets[t]};
}

}  // namespace

// Every golden model: y of every miss mode with a 2-slot budget (upload: token by token, with
// prefetch; cpu and auto: the 5-token batch at once, more experts than slots) equals the
// all-resident Eigen FFN to NMSE <= 1e-5 in every mode: the CPU entries use float32 activations
// (offload_options::cpu_activations, f32 by default). With int8 activations (ggml's CPU
// arithmetic) cpu mode is held to 2x ggml's own NMSE (NMSE.txt) on q4_k, mixed and gptoss.
TEST(Offload, EveryGoldenModelEveryMissModeMatchesAllResident) {
  NEED_VULKAN();
  const char* files[] = {"f16", "bf16", "q8_0", "q4_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_xs", "mxfp4",
                         "mixed", "fused", "gptoss"};
  for (const char* f : files) {
    SCOPED_TRACE(f);
    const auto m = moeroute::gguf_expert_weights::open(golden::path(std::string(f) + ".gguf"));
    const auto host = moeroute::offload_weights_from_gguf(m, m.num_layers());
    const std::vector<float> x = golden::load(std::string(f) + ".x.npy").f32();
    const std::size_t H = static_cast<std::size_t>(m.shape().hidden), T = x.size() / H;
    const int L = m.num_layers();
    std::vector<moeroute::routing_result> routes;
    std::vector<std::vector<float>> want;
    for (int l = 0; l < L; ++l) {
      routes.push_back(m.route(l, x.data(), T));
      want.push_back(eigen_ffn(host.layers[static_cast<std::size_t>(l)], routes.back().view(), x.data()));
    }
    moeroute::offload_options o;
    o.budget_bytes = 2 * moeroute::offloaded_moe<>::slot_bytes_of(host.layers);  // two slots
    o.max_tokens = T;
    o.max_entries = T * 4;
    o.miss = moeroute::miss_mode::cpu;
    moeroute::offloaded_moe<moeroute::lru_eviction> moe(*context(), host.layers, o);
    ASSERT_EQ(moe.slots(), 2u);
    std::vector<float> y(T * H);
    std::uint32_t off[2];
    for (const auto mode : {moeroute::miss_mode::cpu, moeroute::miss_mode::auto_, moeroute::miss_mode::upload}) {
      SCOPED_TRACE(moeroute::miss_mode_name(mode));
      moe.set_miss_mode(mode);
      const double bound = 1e-5;
      double worst = 0;
      if (mode == moeroute::miss_mode::upload) moe.use_coactivation_prefetch(0.0);  // prefetch never changes y
      for (int l = 0; l < L; ++l) {
        const auto& r = routes[static_cast<std::size_t>(l)];
        const auto& w = want[static_cast<std::size_t>(l)];
        if (mode != moeroute::miss_mode::upload) {  // the whole batch at once: more experts than slots
          moe.forward(l, r.view(), x.data(), y.data());
        } else {  // token by token: a token's two experts fit
          for (std::size_t t = 0; t < T; ++t) moe.forward(l, token_view(r, t, off), x.data() + t * H, y.data() + t * H);
        }
        const double e = golden::nmse(y, w);
        EXPECT_LE(e, bound) << "layer " << l;
        worst = std::max(worst, e);
      }
      std::printf("  %-7s %-6s NMSE vs all-resident (worst layer) %.3e\n", f, moeroute::miss_mode_name(mode), worst);
    }
    // int8 activations on the CPU path (ggml's arithmetic, 2x ggml's own error), on a few models
    if (std::string(f) == "q4_k" || std::string(f) == "mixed" || std::string(f) == "gptoss") {
      moeroute::offload_options o8 = o;
      o8.cpu_activations = moeroute::cpu_activations::int8;
      moeroute::offloaded_moe<moeroute::lru_eviction> moe8(*context(), host.layers, o8);
      double worst8 = 0;
      for (int l = 0; l < L; ++l) {
        moe8.forward(l, routes[static_cast<std::size_t>(l)].view(), x.data(), y.data());
        const double e = golden::nmse(y, want[static_cast<std::size_t>(l)]);
        EXPECT_LE(e, std::max(1e-5, 2.0 * golden::ggml_model_nmse(f))) << "int8, layer " << l;
        worst8 = std::max(worst8, e);
      }
      std::printf("  %-7s cpu, int8 activations: NMSE vs all-resident (worst layer) %.3e\n", f, worst8);
    }
    const auto& c = moe.counters();
    EXPECT_EQ(c.accesses, c.hits + c.misses);
    EXPECT_EQ(c.misses, c.miss_uploads + c.miss_cpu);
    EXPECT_EQ(c.uploads, c.miss_uploads + c.prefetch_loads);
    EXPECT_GT(c.miss_cpu, 0u);
    EXPECT_GT(c.miss_uploads, 0u);
  }
  expect_no_validation_messages();
}

// Counters against a plain LRU replay of the distinct experts of each call (upload mode), and the
// CPU mode's split; a synthetic 4-layer f16 model with random routing.
TEST(Offload, CountersMatchPlainLruReplay) {
  NEED_VULKAN();
  const int L = 4, E = 8, K = 2, steps = 40;
  const moeroute::ffn_layer s(E, 64, 64, moeroute::weight_type::f16);  // float: CPU and device agree to rounding
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-0.2f, 0.2f);
  std::vector<unsigned char> blobs(static_cast<std::size_t>(L * E) * s.expert_bytes());
  std::vector<float> g(64 * 64), up(64 * 64), d(64 * 64);
  for (int c = 0; c < L * E; ++c) {
    for (auto* v : {&g, &up, &d})
      for (auto& a : *v) a = u(rng);
    moeroute::encode_expert(s, g.data(), up.data(), d.data(), blobs.data() + static_cast<std::size_t>(c) * s.expert_bytes());
  }
  std::vector<moeroute::offload_layer_source> layers;
  for (int l = 0; l < L; ++l)
    layers.push_back(moeroute::offload_layer_from_blobs(s, blobs.data() + static_cast<std::size_t>(l * E) * s.expert_bytes()));
  const std::size_t cap = 5;
  moeroute::offload_options o;
  o.budget_bytes = cap * moeroute::offloaded_moe<>::slot_bytes_of(layers);
  o.max_tokens = 1;
  moeroute::offloaded_moe<moeroute::lru_eviction> moe(*context(), layers, o);
  moeroute::offload_options oc = o;
  oc.miss = moeroute::miss_mode::cpu;
  moeroute::offloaded_moe<moeroute::lru_eviction> cpu(*context(), layers, oc);
  // the device passes forced (always two, always one) with room for hits (16 cells: 2 per layer)
  const std::size_t cap16 = 16;
  moeroute::offload_options o2 = o, o1p = o;
  o2.budget_bytes = o1p.budget_bytes = cap16 * moeroute::offloaded_moe<>::slot_bytes_of(layers);
  o2.passes = moeroute::pass_split::two;
  o1p.passes = moeroute::pass_split::one;
  moeroute::offloaded_moe<moeroute::lru_eviction> two(*context(), layers, o2), single(*context(), layers, o1p);
  // plain LRU of `cap` cells (list: most recent first); a call's own cells are never evicted.
  // Returns the hits of the call.
  const auto lru_call = [&](std::list<int>& lru, std::size_t capacity, int l, const std::int32_t* ids) {
    int h = 0;
    for (int k = 0; k < K; ++k) {
      const int c = l * E + ids[k];
      const auto it = std::find(lru.begin(), lru.end(), c);
      if (it != lru.end()) {
        ++h;
        lru.erase(it);
      } else if (lru.size() == capacity) {
        auto victim = std::prev(lru.end());
        if (k > 0 && *victim == l * E + ids[0]) --victim;  // protected: this call's first expert
        lru.erase(victim);
      }
      lru.push_front(c);
    }
    return h;
  };
  std::list<int> lru, lru16;
  std::uint64_t hits = 0, misses = 0, hits16 = 0, mixed_calls = 0;  // mixed: a call with a hit and a miss
  std::vector<float> y2(64), y1(64);
  std::vector<std::uint64_t> layer_misses(L, 0);
  std::vector<float> x(64), y(64), yc(64);
  for (int i = 0; i < steps; ++i) {
    const int l = i % L;
    std::int32_t ids[K];
    ids[0] = static_cast<std::int32_t>(rng() % E);
    do ids[1] = static_cast<std::int32_t>(rng() % E); while (ids[1] == ids[0]);
    const float w[K] = {0.7f, 0.3f};
    const std::uint32_t off[2] = {0, K};
    for (auto& v : x) v = u(rng);
    moe.forward(l, {1, E, off, ids, w}, x.data(), y.data());
    cpu.forward(l, {1, E, off, ids, w}, x.data(), yc.data());
    two.forward(l, {1, E, off, ids, w}, x.data(), y2.data());
    single.forward(l, {1, E, off, ids, w}, x.data(), y1.data());
    EXPECT_LE(golden::nmse(yc, y), 1e-5);
    EXPECT_LE(golden::nmse(y2, y), 1e-5);
    EXPECT_LE(golden::nmse(y1, y), 1e-5);
    const int h = lru_call(lru, cap, l, ids);
    hits += static_cast<std::uint64_t>(h);
    misses += static_cast<std::uint64_t>(K - h);
    layer_misses[static_cast<std::size_t>(l)] += static_cast<std::uint64_t>(K - h);
    const int h16 = lru_call(lru16, cap16, l, ids);
    hits16 += static_cast<std::uint64_t>(h16);
    mixed_calls += h16 == 1;  // K = 2: one hit, one miss
  }
  const auto& c = moe.counters();
  EXPECT_EQ(c.accesses, static_cast<std::uint64_t>(steps * K));
  EXPECT_EQ(c.hits, hits);
  EXPECT_EQ(c.misses, misses);
  EXPECT_EQ(c.miss_uploads, misses);
  EXPECT_EQ(c.uploads, misses);
  EXPECT_EQ(c.bytes_uploaded, misses * s.expert_bytes());
  EXPECT_EQ(c.entries, static_cast<std::uint64_t>(steps * K));
  EXPECT_EQ(c.entries_cpu, 0u);
  EXPECT_EQ(c.forwards, static_cast<std::uint64_t>(steps));
  for (int l = 0; l < L; ++l) EXPECT_EQ(moe.layer_counters(l).misses, layer_misses[static_cast<std::size_t>(l)]);
  // passes: two for every call with a hit and a miss when forced, one for every call when forced one;
  // the cache decisions do not depend on it
  ASSERT_GT(mixed_calls, 0u);
  EXPECT_EQ(two.counters().device_passes, static_cast<std::uint64_t>(steps) + mixed_calls);
  EXPECT_EQ(single.counters().device_passes, static_cast<std::uint64_t>(steps));
  EXPECT_EQ(two.counters().overlapped_uploads, mixed_calls);
  EXPECT_EQ(single.counters().overlapped_uploads, 0u);
  for (const auto* m : {&two, &single}) {
    EXPECT_EQ(m->counters().hits, hits16);
    EXPECT_EQ(m->counters().bytes_uploaded, (static_cast<std::uint64_t>(steps * K) - hits16) * s.expert_bytes());
  }
  // CPU mode: nothing is ever resident, every entry runs on the host, nothing moves
  const auto& cc = cpu.counters();
  EXPECT_EQ(cc.hits, 0u);
  EXPECT_EQ(cc.miss_cpu, static_cast<std::uint64_t>(steps * K));
  EXPECT_EQ(cc.entries_cpu, static_cast<std::uint64_t>(steps * K));
  EXPECT_EQ(cc.bytes_uploaded, 0u);

  // one slot: auto and cpu still give upload mode's y (f16: to rounding)
  moeroute::offload_options o1 = o;
  o1.budget_bytes = moeroute::offloaded_moe<>::slot_bytes_of(layers);
  o1.miss = moeroute::miss_mode::auto_;
  moeroute::offloaded_moe<moeroute::lru_eviction> one(*context(), layers, o1);
  ASSERT_EQ(one.slots(), 1u);
  {
    const std::int32_t ids[K] = {1, 6};
    const float w[K] = {0.5f, 0.5f};
    const std::uint32_t off[2] = {0, K};
    for (int l = 0; l < L; ++l) {
      moe.forward(l, {1, E, off, ids, w}, x.data(), y.data());
      for (const auto m : {moeroute::miss_mode::auto_, moeroute::miss_mode::cpu}) {
        one.set_miss_mode(m);
        one.forward(l, {1, E, off, ids, w}, x.data(), yc.data());
        EXPECT_LE(golden::nmse(yc, y), 1e-5) << l;
      }
    }
  }

  // an oracle prefetch (the next call's experts) turns misses into useful prefetches, same y
  moeroute::offloaded_moe<moeroute::lru_eviction> pre(*context(), layers, o);
  std::mt19937 rng2(11);
  std::vector<std::array<std::int32_t, 2>> seq(steps);
  for (auto& p : seq) {
    p[0] = static_cast<std::int32_t>(rng2() % E);
    do p[1] = static_cast<std::int32_t>(rng2() % E); while (p[1] == p[0]);
  }
  int cur = 0;
  pre.set_prefetch([&](int, const std::int32_t*, std::size_t, std::vector<std::pair<std::int32_t, double>>& out) {
    out.clear();
    if (cur + 1 >= steps) return -1;
    for (const auto e : seq[static_cast<std::size_t>(cur + 1)]) out.emplace_back(e, 1.0);
    return (cur + 1) % L;
  });
  moeroute::offloaded_moe<moeroute::lru_eviction> plain(*context(), layers, o);
  for (cur = 0; cur < steps; ++cur) {
    const float w[K] = {0.6f, 0.4f};
    const std::uint32_t off[2] = {0, K};
    for (auto& v : x) v = u(rng2);
    pre.forward(cur % L, {1, E, off, seq[static_cast<std::size_t>(cur)].data(), w}, x.data(), y.data());
    plain.forward(cur % L, {1, E, off, seq[static_cast<std::size_t>(cur)].data(), w}, x.data(), yc.data());
    EXPECT_LE(golden::nmse(y, yc), 1e-5) << cur;
  }
  const auto& pc = pre.counters();
  EXPECT_GT(pc.prefetch_loads, 0u);
  EXPECT_GT(pc.prefetch_useful, 0u);
  EXPECT_LE(pc.prefetch_useful, pc.prefetch_loads);
  EXPECT_LT(pc.misses, plain.counters().misses);
  EXPECT_EQ(pc.uploads, pc.miss_uploads + pc.prefetch_loads);
  EXPECT_EQ(pc.bytes_uploaded, pc.uploads * s.expert_bytes());
  expect_no_validation_messages();
}

TEST(Offload, ErrorsNameSizes) {
  NEED_VULKAN();
  const moeroute::ffn_layer s(4, 64, 64, moeroute::weight_type::q8_0);
  std::vector<unsigned char> blob(s.expert_bytes(), 0);
  std::vector<moeroute::offload_layer_source> layers;
  moeroute::offload_layer_source src;
  src.shape = s;
  src.experts.assign(4, moeroute::offload_layer_from_blobs(moeroute::ffn_layer(1, 64, 64, s.gate_type), blob.data()).experts[0]);
  layers.push_back(src);
  const std::uint64_t slot = moeroute::offloaded_moe<>::slot_bytes_of(layers);
  moeroute::offload_options o;
  o.budget_bytes = slot - 1;
  EXPECT_MOEROUTE_ERROR((moeroute::offloaded_moe<>(*context(), layers, o)), moeroute::errc::invalid_argument,
                        "holds no expert slot of " + std::to_string(slot) + " bytes");
  o.budget_bytes = slot;  // one slot; a token of two experts cannot be uploaded
  moeroute::offloaded_moe<> one(*context(), layers, o);
  const std::int32_t ids[2] = {0, 1};
  const float w[2] = {0.5f, 0.5f};
  const std::uint32_t off[2] = {0, 2};
  std::vector<float> x(64, 0.1f), y(64);
  EXPECT_MOEROUTE_ERROR(one.forward(0, {1, 4, off, ids, w}, x.data(), y.data()), moeroute::errc::capacity,
                        "2 missing experts of " + std::to_string(s.expert_bytes()) + " bytes need slots but only 1");
  const std::int32_t bad[2] = {0, 4};
  EXPECT_MOEROUTE_ERROR(one.forward(0, {1, 4, off, bad, w}, x.data(), y.data()), moeroute::errc::bad_input, "expert id 4");
  // a pool larger than the device's memory: 64 layers x 4096 experts of views of one blob
  const moeroute::ffn_layer big(4096, 256, 256, moeroute::weight_type::q8_0);
  std::vector<unsigned char> bblob(big.expert_bytes(), 0);
  moeroute::offload_layer_source bs;
  bs.shape = big;
  bs.experts.assign(4096, moeroute::offload_layer_from_blobs(moeroute::ffn_layer(1, 256, 256, big.gate_type), bblob.data()).experts[0]);
  std::vector<moeroute::offload_layer_source> huge(64, bs);
  o.budget_bytes = ~std::uint64_t{0};
  EXPECT_MOEROUTE_ERROR((moeroute::offloaded_moe<>(*context(), huge, o)), moeroute::errc::device,
                        "exceeds the device's largest memory heap of");
}
#endif
