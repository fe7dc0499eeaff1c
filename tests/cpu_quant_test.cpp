// The quantized CPU expert FFN (backends/cpu_quant.hpp): every golden model of
// tests/data/ggml_golden against its exact answer within 2x ggml's own error, on every
// instruction-set path this CPU has, straight from the mapped GGUF; the paths against each other;
// select / accumulate and thread counts against a plain loop over the same weights.
#include "ffn_test_common.hpp"
#include "golden_support.hpp"

#include <moeroute/backends/cpu_quant.hpp>
#include <moeroute/io/gguf_experts.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

using moeroute::cpu_isa;

std::vector<cpu_isa> paths() {
  std::vector<cpu_isa> p;
  for (cpu_isa i : {cpu_isa::portable, cpu_isa::avx2, cpu_isa::avx512})
    if (moeroute::cpu_supports(i)) p.push_back(i);
  return p;
}

// ggml's own NMSE of each golden stem (y_ggml vs y_exact), from NMSE.txt.
std::map<std::string, double> ggml_nmse() {
  std::ifstream f(golden::path("NMSE.txt"));
  std::map<std::string, double> out;
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream ss(line);
    std::string name, blk;
    ss >> name >> blk;
    const auto at = line.find("nmse(ggml vs exact)=");
    if (at == std::string::npos) continue;
    out[name + "." + blk] = std::stod(line.substr(at + 20));
  }
  return out;
}

moeroute::routing_result golden_routing(const golden::variant& v, int E, std::size_t& T) {
  const golden::array ids = golden::load(golden::stem(v) + ".ids.npy");
  moeroute::routing_result r;
  T = ids.shape[0];
  const std::size_t K = ids.shape[1];
  r.num_tokens = T;
  r.num_experts = E;
  r.ids = ids.i32();
  r.weights = golden::load(golden::stem(v) + ".w.npy").f32();
  for (std::size_t t = 1; t <= T; ++t) r.offsets.push_back(static_cast<std::uint32_t>(t * K));
  return r;
}

// One golden model's MoE block, mapped, with its routing, input and exact answer.
struct golden_case {
  moeroute::gguf_expert_weights m;
  int l = -1;
  std::size_t T = 0;
  moeroute::routing_result r;
  std::vector<float> x;
  std::vector<double> exact;
  const moeroute::ffn_layer& shape() const { return m.layer_shape(l); }
};
std::unique_ptr<golden_case> load_golden_case(const golden::variant& v) {
  auto c = std::make_unique<golden_case>(
      golden_case{moeroute::gguf_expert_weights::open(golden::path(std::string(v.name) + ".gguf")), -1, 0, {}, {}, {}});
  c->l = c->m.layer_of_block(v.block);
  EXPECT_GE(c->l, 0);
  if (c->l < 0) return nullptr;
  c->r = golden_routing(v, c->shape().num_experts, c->T);
  c->x = golden::load(std::string(v.name) + ".x.npy").f32();
  c->exact = golden::load(golden::stem(v) + ".y_exact.npy").f64();
  return c;
}

}  // namespace

TEST(CpuQuant, GoldenModelsWithinTwiceGgmlErrorOnEveryPath) {
  const auto bound = ggml_nmse();
  ASSERT_EQ(bound.size(), 15u);
  for (const auto& v : golden::kVariants) {
    SCOPED_TRACE(golden::stem(v));
    const auto c = load_golden_case(v);
    ASSERT_TRUE(c);
    const auto& [m, l, T, r, x, exact] = *c;
    ASSERT_TRUE(m.file().in_memory());
    const moeroute::ffn_layer& s = c->shape();
    const double ggml = bound.at(golden::stem(v));
    std::vector<float> first;
    for (cpu_isa isa : paths()) {
      SCOPED_TRACE(moeroute::cpu_isa_name(isa));
      moeroute::cpu_quant_ffn op(s, {2, isa});
      ASSERT_EQ(op.isa(), isa);
      for (int e = 0; e < s.num_experts; ++e) {
        const moeroute::expert_weights_view w = m.expert_weights(l, e);
        // views into the mapping, not copies
        const auto* base = m.file().tensor_data(*m.layer(l).gate);
        ASSERT_GE(static_cast<const unsigned char*>(w.gate), base);
        ASSERT_LT(static_cast<const unsigned char*>(w.gate), base + m.layer(l).gate->nbytes);
        op.set_expert(e, w);
      }
      std::vector<float> y(T * static_cast<std::size_t>(s.hidden), 123.0f);
      op.run({r.view(), x.data(), y.data()});
      const double e = golden::nmse(y, exact);
      EXPECT_LE(e, 2.0 * ggml) << "ggml's own NMSE " << ggml;
      std::printf("  %-12s %-8s NMSE vs y_exact %.3e (ggml %.3e)\n", golden::stem(v).c_str(),
                  moeroute::cpu_isa_name(isa), e, ggml);
      if (first.empty()) {
        first = y;
      } else {
        // same integer sums; the float order differs (NMSE ~1e-13), which can move an 8-bit code
        // of the quantized intermediate by one step (~1e-6 each at these sizes): far below the
        // quantization error itself (~1e-4)
        const double d = golden::nmse(y, first);
        EXPECT_LE(d, 1e-5) << "path differs from the portable one";
        std::printf("  %-12s %-8s NMSE vs portable %.3e\n", golden::stem(v).c_str(), moeroute::cpu_isa_name(isa), d);
      }
    }
  }
}

// A random layer of type t: select, accumulate and thread counts against the plain-loop
// reference of ffn_test_common.hpp over the same blobs.
void check_random_layer(const moeroute::ffn_layer& s, std::size_t T, int K, double tol,
                        moeroute::cpu_activations act = moeroute::cpu_activations::int8) {
  ffn_test::problem p;
  p.shape = s;
  ffn_test::random_weights(p, 7);
  ffn_test::random_x(p, T, 11);
  p.routing = ffn_test::random_routing(T, s.num_experts, K, 13);
  std::vector<std::uint8_t> sel(p.routing.nnz());
  for (std::size_t j = 0; j < sel.size(); ++j) sel[j] = static_cast<std::uint8_t>(j % 3 != 1);
  ffn_test::problem ps = p;  // the reference of the selected entries only
  ps.routing.ids.clear();
  ps.routing.weights.clear();
  ps.routing.offsets = {0};
  for (std::size_t t = 0; t < T; ++t) {
    for (std::uint32_t j = p.routing.offsets[t]; j < p.routing.offsets[t + 1]; ++j)
      if (sel[j]) {
        ps.routing.ids.push_back(p.routing.ids[j]);
        ps.routing.weights.push_back(p.routing.weights[j]);
      }
    ps.routing.offsets.push_back(static_cast<std::uint32_t>(ps.routing.ids.size()));
  }
  const std::vector<double> want = ffn_test::reference(p), want_sel = ffn_test::reference(ps);
  const std::size_t H = static_cast<std::size_t>(s.hidden);
  for (cpu_isa isa : paths()) {
    SCOPED_TRACE(moeroute::cpu_isa_name(isa));
    std::vector<float> y1;
    for (int threads : {1, 2, 3}) {
      SCOPED_TRACE(threads);
      moeroute::cpu_quant_ffn op(s, {threads, isa, act});
      ASSERT_EQ(op.activations(), act);
      for (int e = 0; e < s.num_experts; ++e) op.set_expert_blob(e, p.blobs[static_cast<std::size_t>(e)].data());
      std::vector<float> y(T * H, 5.0f);
      op.run({p.routing.view(), p.x.data(), y.data()});
      EXPECT_LE(ffn_test::nmse(y, want), tol);
      if (threads == 1)
        y1 = y;
      else
        EXPECT_EQ(y, y1) << "results depend on the thread count";
      // select + accumulate: y += the selected entries' sum
      std::vector<float> ya(T * H, 0.0f);
      for (std::size_t i = 0; i < ya.size(); ++i) ya[i] = static_cast<float>(i % 7) - 3.0f;
      op.run({p.routing.view(), p.x.data(), ya.data()}, sel.data(), true);
      std::vector<double> want_acc = want_sel;
      for (std::size_t i = 0; i < want_acc.size(); ++i) want_acc[i] += static_cast<double>(i % 7) - 3.0;
      EXPECT_LE(ffn_test::nmse(ya, want_acc), tol);
    }
  }
}

TEST(CpuQuant, EveryTypeSelectAccumulateAndThreadsAgainstPlainLoop) {
  for (moeroute::weight_type t : moeroute::all_weight_types) {
    SCOPED_TRACE(moeroute::weight_type_name(t));
    const bool k = moeroute::block_elems(t) == 256;
    // quantized activations: the error is that of an 8-bit activation (about 1e-4 NMSE at most)
    const double tol = moeroute::detail::cq::type_is_float(t) ? 1e-10 : 5e-4;
    check_random_layer(moeroute::ffn_layer(6, k ? 256 : 64, k ? 256 : 96, t), 5, 2, tol);
  }
}

// The 32-value-block kernels of the AVX-512 path work per 256 values with a per-chunk tail: rows of
// 320 values (one group + a 64-value tail) and 512 (two groups), tiles of 8 and of 1-4 tokens.
TEST(CpuQuant, BlockKernelsGroupsTailsAndTilesAgainstPlainLoop) {
  using moeroute::weight_type;
  for (weight_type t : {weight_type::q4_0, weight_type::q8_0, weight_type::mxfp4, weight_type::iq4_nl}) {
    SCOPED_TRACE(moeroute::weight_type_name(t));
    check_random_layer(moeroute::ffn_layer(3, 320, 512, t), 13, 2, 5e-4);
  }
}

// The one-token kernels of the AVX-512 path (a decode step: every row of a range in one call, rows
// r and r + rows / 2 in one pass, an odd last row alone), with and without VNNI, rows of whole
// 256-value groups and with a 64-value tail: every row against the plain loop over the dequantized
// row and the quantized activations, and bit for bit against the same row computed alone, so a
// row's result does not depend on the thread's row range.
TEST(CpuQuant, OneTokenRowKernelsAgainstPlainLoop) {
#if MOEROUTE_CQ_X86
  if (!moeroute::cpu_supports(cpu_isa::avx512)) GTEST_SKIP() << "no AVX-512 on this CPU";
  namespace cq = moeroute::detail::cq;
  using moeroute::weight_type;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  constexpr std::size_t rows = 7;
  for (weight_type t : {weight_type::q4_0, weight_type::q8_0, weight_type::mxfp4, weight_type::iq4_nl,
                        weight_type::q4_k, weight_type::q6_k}) {
    for (std::size_t n : {std::size_t{256}, std::size_t{320}, std::size_t{512}}) {
      if (n % moeroute::block_elems(t) != 0) continue;
      SCOPED_TRACE(std::string(moeroute::weight_type_name(t)) + " n=" + std::to_string(n));
      const std::size_t rb = moeroute::row_bytes(t, n);
      std::vector<float> w(rows * n), x(n), wd(n);
      for (auto& v : w) v = nd(rng);
      for (auto& v : x) v = nd(rng);
      std::vector<unsigned char> bytes(rows * rb);
      for (std::size_t r = 0; r < rows; ++r) moeroute::encode_row(t, w.data() + r * n, n, bytes.data() + r * rb);
      std::vector<std::int8_t> q(n);
      std::vector<float> dx(n / 16), xs(n / 16), e(n / 4);
      cq::quantize_act_portable(x.data(), n, q.data(), dx.data(), xs.data(), e.data());
      const cq::act_tile tile{q.data(), e.data(), xs.data(), dx.data()};  // one token: the row's own layout
      std::vector<double> want(rows), mag(rows);
      for (std::size_t r = 0; r < rows; ++r) {
        moeroute::dequantize_row(t, bytes.data() + r * rb, wd.data(), n);
        for (std::size_t i = 0; i < n; ++i) {
          const double p = static_cast<double>(wd[i]) * q[i] * dx[i / 16];
          want[r] += p;
          mag[r] += std::fabs(p);
        }
      }
      for (const bool vnni : {false, true}) {
        if (vnni && !cq::features().vnni512) continue;
        SCOPED_TRACE(vnni ? "vnni" : "no vnni");
        const cq::rows1_fn k = vnni ? cq::rows1_avx512_for<true>(t) : cq::rows1_avx512_for<false>(t);
        ASSERT_NE(k, nullptr);
        std::vector<float> alone(rows);
        for (std::size_t r = 0; r < rows; ++r) {
          k(bytes.data() + r * rb, rb, 1, n, tile, &alone[r]);
          EXPECT_NEAR(alone[r], want[r], 1e-5 * mag[r]) << "row " << r;
        }
        for (std::size_t count : {2, 3, 4, 5, 6, 7})
          for (std::size_t r0 = 0; r0 + count <= rows; r0 += rows - count > 0 ? rows - count : 1) {
            std::vector<float> out(count, -1.0f);
            k(bytes.data() + r0 * rb, rb, count, n, tile, out.data());
            for (std::size_t r = 0; r < count; ++r) EXPECT_EQ(out[r], alone[r0 + r]) << count << " rows from " << r0;
          }
      }
    }
  }
#else
  GTEST_SKIP() << "x86 only";
#endif
}

// f32 activations: every type is the float FFN of the dequantized weights up to float32 rounding.
TEST(CpuQuant, F32ActivationsEveryTypeAgainstPlainLoop) {
  for (moeroute::weight_type t : moeroute::all_weight_types) {
    SCOPED_TRACE(moeroute::weight_type_name(t));
    const bool k = moeroute::block_elems(t) == 256;
    check_random_layer(moeroute::ffn_layer(6, k ? 256 : 64, k ? 256 : 96, t), 5, 2, 1e-9,
                       moeroute::cpu_activations::f32);
  }
  using moeroute::weight_type;
  check_random_layer(moeroute::ffn_layer(5, 64, 32, weight_type::mxfp4, weight_type::mxfp4, weight_type::mxfp4, true,
                                         moeroute::ffn_activation::swiglu_oai),
                     9, 3, 1e-9, moeroute::cpu_activations::f32);
  check_random_layer(moeroute::ffn_layer(4, 256, 256, weight_type::q4_k, weight_type::f16, weight_type::q6_k), 7, 2,
                     1e-9, moeroute::cpu_activations::f32);
}

// f32 activations on the golden models: the exact answer (y_exact, float64 over the dequantized
// weights) to float32 rounding, on every path, for 1 and 2 threads (bit-identical).
TEST(CpuQuant, F32ActivationsGoldenModelsMatchExact) {
  for (const auto& v : golden::kVariants) {
    SCOPED_TRACE(golden::stem(v));
    const auto c = load_golden_case(v);
    ASSERT_TRUE(c);
    const auto& [m, l, T, r, x, exact] = *c;
    const moeroute::ffn_layer& s = c->shape();
    for (cpu_isa isa : paths()) {
      SCOPED_TRACE(moeroute::cpu_isa_name(isa));
      std::vector<float> y1;
      for (int threads : {1, 2}) {
        moeroute::cpu_quant_ffn op(s, {threads, isa, moeroute::cpu_activations::f32});
        for (int e = 0; e < s.num_experts; ++e) op.set_expert(e, m.expert_weights(l, e));
        std::vector<float> y(T * static_cast<std::size_t>(s.hidden), 123.0f);
        op.run({r.view(), x.data(), y.data()});
        if (threads == 1) {
          const double e = golden::nmse(y, exact);
          EXPECT_LE(e, 1e-9);
          std::printf("  %-12s %-8s f32 activations: NMSE vs y_exact %.3e\n", golden::stem(v).c_str(),
                      moeroute::cpu_isa_name(isa), e);
          y1 = y;
        } else {
          EXPECT_EQ(y, y1) << "results depend on the thread count";
        }
      }
    }
  }
}

TEST(CpuQuant, BiasesSwigluOaiAndMixedTypes) {
  using moeroute::weight_type;
  check_random_layer(moeroute::ffn_layer(5, 64, 32, weight_type::mxfp4, weight_type::mxfp4, weight_type::mxfp4, true,
                                         moeroute::ffn_activation::swiglu_oai),
                     9, 3, 5e-4);
  check_random_layer(moeroute::ffn_layer(4, 256, 256, weight_type::q4_k, weight_type::f16, weight_type::q6_k), 7, 2,
                     5e-4);
}

// Two experts and 21 tokens: every expert sees more than 8 tokens, so the fused kernels run their
// tiles of 8, 4 and 1-3 tokens.
TEST(CpuQuant, LongTokenTilesAgainstPlainLoop) {
  using moeroute::weight_type;
  check_random_layer(moeroute::ffn_layer(2, 256, 256, weight_type::q4_k, weight_type::q4_k, weight_type::q6_k), 21, 2,
                     5e-4);
  check_random_layer(moeroute::ffn_layer(2, 128, 64, weight_type::q4_0, weight_type::mxfp4, weight_type::q8_0), 21, 2,
                     5e-4);
}

TEST(CpuQuant, RejectsBadUse) {
  moeroute::ffn_layer s(4, 64, 32, moeroute::weight_type::q4_0);
  EXPECT_THROW(moeroute::cpu_quant_ffn(s, {0, cpu_isa::best}), moeroute::error);
  moeroute::cpu_quant_ffn op(s);
  EXPECT_NE(op.isa(), cpu_isa::best);
  EXPECT_EQ(op.activations(), moeroute::cpu_activations::int8);  // the default
  EXPECT_THROW(op.set_expert(4, {}), moeroute::error);
  EXPECT_THROW(op.set_expert(0, {}), moeroute::error);
  moeroute::routing_result r = ffn_test::random_routing(2, 4, 2, 1);
  std::vector<float> x(2 * 64, 1.0f), y(2 * 64);
  EXPECT_NE(op.can_implement({r.view(), x.data(), y.data()}), "");  // experts not set
  EXPECT_THROW(op.run({r.view(), x.data(), y.data()}), moeroute::error);
}
