// Every golden model of tests/data/ggml_golden (ggml's own quantized MoE layers and answers)
// through moeroute: the Eigen reference FFN against y_exact (ggml's to_float weights, exact
// arithmetic) and the model's routing (router logits + the architecture's gating from the GGUF
// metadata) against ggml's chosen ids and weights.
#include "golden_support.hpp"

#include <moeroute/io/gguf_experts.hpp>

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#ifdef MOEROUTE_TEST_HAS_EIGEN
#include <moeroute/backends/cpu_eigen.hpp>
#endif

namespace {

struct golden_layer {
  std::vector<float> x;  // T x H
  std::vector<std::int32_t> ids;
  std::vector<float> w;
  std::size_t T = 0, K = 0;
};

golden_layer load_inputs(const golden::variant& v) {
  golden_layer g;
  const golden::array x = golden::load(std::string(v.name) + ".x.npy");
  const golden::array ids = golden::load(golden::stem(v) + ".ids.npy");
  g.x = x.f32();
  g.ids = ids.i32();
  g.w = golden::load(golden::stem(v) + ".w.npy").f32();
  g.T = ids.shape[0];
  g.K = ids.shape[1];
  return g;
}

}  // namespace

TEST(GoldenRouting, ModelRoutingMatchesGgml) {
  for (const auto& v : golden::kVariants) {
    SCOPED_TRACE(golden::stem(v));
    const auto m = moeroute::gguf_expert_weights::open(golden::path(std::string(v.name) + ".gguf"));
    const int l = m.layer_of_block(v.block);
    ASSERT_GE(l, 0);
    const golden_layer in = load_inputs(v);
    // logits (gpt-oss: with the router bias) as ggml's f32 matmul computes them
    const std::vector<float> want_logits = golden::load(golden::stem(v) + ".logits.npy").f32();
    const std::vector<float> logits = m.router_logits(l, in.x.data(), in.T);
    ASSERT_EQ(logits.size(), want_logits.size());
    for (std::size_t i = 0; i < logits.size(); ++i)
      EXPECT_NEAR(logits[i], want_logits[i], 1e-5 * (1.0 + std::fabs(want_logits[i]))) << i;
    const moeroute::routing_result r = m.route(l, in.x.data(), in.T);
    ASSERT_EQ(r.nnz(), in.T * in.K);
    for (std::size_t j = 0; j < r.nnz(); ++j) {
      EXPECT_EQ(r.ids[j], in.ids[j]) << "entry " << j;
      EXPECT_NEAR(r.weights[j], in.w[j], 1e-5) << "entry " << j;
    }
  }
}

#ifdef MOEROUTE_TEST_HAS_EIGEN
TEST(GoldenFfn, EigenMatchesExactAnswerOfEveryModel) {
  for (const auto& v : golden::kVariants) {
    SCOPED_TRACE(golden::stem(v));
    const auto m = moeroute::gguf_expert_weights::open(golden::path(std::string(v.name) + ".gguf"));
    const int l = m.layer_of_block(v.block);
    ASSERT_GE(l, 0);
    const moeroute::ffn_layer& s = m.layer_shape(l);
    const golden_layer in = load_inputs(v);
    moeroute::cpu_ffn op(s, s.num_experts);
    std::vector<unsigned char> blob(s.expert_bytes());
    std::vector<std::int32_t> table;
    for (int e = 0; e < s.num_experts; ++e) {
      m.read_expert(l, e, blob.data());
      op.upload_expert(e, blob.data(), blob.size());
      table.push_back(e);
    }
    op.set_slot_table(table.data(), table.size());
    moeroute::routing_result r;
    r.num_tokens = in.T;
    r.num_experts = s.num_experts;
    r.ids = in.ids;
    r.weights = in.w;
    for (std::size_t t = 1; t <= in.T; ++t) r.offsets.push_back(static_cast<std::uint32_t>(t * in.K));
    std::vector<float> y(in.T * static_cast<std::size_t>(s.hidden));
    const moeroute::ffn_args a{r.view(), in.x.data(), y.data()};
    ASSERT_EQ(op.can_implement(a), "");
    std::vector<float> ws(op.workspace_size(a) / 4 + 1);
    op.initialize(a, ws.data());
    op.run();
    const std::vector<double> exact = golden::load(golden::stem(v) + ".y_exact.npy").f64();
    const double e = golden::nmse(y, exact);
    EXPECT_LE(e, 1e-9);
    std::printf("  %-12s Eigen NMSE vs y_exact %.3e\n", golden::stem(v).c_str(), e);
  }
}
#endif
