// imatrix GGUF: expert counts per MoE layer (down, then gate/up fallback), half-to-even rounding,
// n_tokens, mean squared activations, and every malformed kind.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "expect_error.hpp"
#include "fuzz/gguf_writer.hpp"
#include "moeroute/io/imatrix.hpp"

using namespace moeroute;
using namespace moeroute_test;

namespace {
imatrix_data parse(const gguf_writer& w) { return read_imatrix(gguf_file::parse(w.bytes(), "m.gguf")); }

void expect_error(const gguf_writer& w, const std::string& needle) {
  expect_error_message([&] { parse(w); }, needle, "m.gguf");
}
}  // namespace

TEST(RoundHalfEven, MatchesPythonRound) {
  EXPECT_EQ(round_half_even(0.5), 0.0);
  EXPECT_EQ(round_half_even(1.5), 2.0);
  EXPECT_EQ(round_half_even(2.5), 2.0);
  EXPECT_EQ(round_half_even(3.5), 4.0);
  EXPECT_EQ(round_half_even(2.4999), 2.0);
  EXPECT_EQ(round_half_even(2.5001), 3.0);
  EXPECT_EQ(round_half_even(7.0), 7.0);
}

TEST(Imatrix, ReadsDownExpsCountsAndMetadata) {
  // Layers 3 and 1 (written out of order), 4 experts; layer 1 also has gate counts (ignored).
  gguf_writer w = make_imatrix({3, 1}, {{1.5f, 2.5f, 0, 4}, {10, 0, 0, 6}});
  w.tensor_f32("blk.1.ffn_gate_exps.weight.in_sum2", {2, 4}, std::vector<float>(8, 1));
  w.tensor_f32("blk.1.ffn_gate_exps.weight.counts", {1, 4}, {99, 99, 99, 99});
  w.tensor_f32("blk.1.attn_q.weight.in_sum2", {2, 1}, {1, 1});
  w.tensor_f32("blk.1.attn_q.weight.counts", {1, 1}, {5});
  const imatrix_data m = parse(w);
  EXPECT_EQ(m.datasets, std::vector<std::string>{"test.txt"});
  EXPECT_EQ(m.chunk_count, 4);
  EXPECT_EQ(m.chunk_size, 512);
  EXPECT_EQ(m.num_experts, 4);
  ASSERT_EQ(m.layers.size(), 2u);
  EXPECT_EQ(m.layers[0].layer_index, 1);
  EXPECT_EQ(m.layers[0].projection, "ffn_down_exps");
  EXPECT_EQ(m.layers[0].counts, (std::vector<float>{10, 0, 0, 6}));
  EXPECT_EQ(m.layers[1].layer_index, 3);
  const auto c = imatrix_expert_counts(m);
  EXPECT_EQ(c[1].counts, (std::vector<double>{2, 2, 0, 4}));  // 1.5 -> 2, 2.5 -> 2
  // n_tokens from the lowest-numbered MoE layer (blk.1): (10 + 6) / 2 = 8; / 3 = 5.
  EXPECT_EQ(imatrix_n_tokens(m, 2), 8);
  EXPECT_EQ(imatrix_n_tokens(m, 3), 5);
  EXPECT_THROW(imatrix_n_tokens(m, 0), moeroute::error);
}

TEST(Imatrix, FallsBackToGateThenUpCounts) {
  gguf_writer w = make_imatrix({0}, {{1, 2}}, 2, "ffn_up_exps");
  gguf_writer g2 = make_imatrix({0}, {{3, 4}}, 2, "ffn_gate_exps");
  for (auto& t : g2.tensors) w.tensors.push_back(t);
  const imatrix_data m = parse(w);
  ASSERT_EQ(m.layers.size(), 1u);
  EXPECT_EQ(m.layers[0].projection, "ffn_gate_exps");
  EXPECT_EQ(m.layers[0].counts, (std::vector<float>{3, 4}));
  const imatrix_data u = parse(make_imatrix({5}, {{1, 2}}, 2, "ffn_up_exps"));
  EXPECT_EQ(u.layers[0].projection, "ffn_up_exps");
  EXPECT_EQ(u.layers[0].layer_index, 5);
}

TEST(Imatrix, MeanSquaredActivationsAreSumsOverCounts) {
  // make_imatrix writes in_sum2[e][j] = counts[e] * (j + 1): the mean is j + 1 where count > 0.
  const gguf_writer w = make_imatrix({0}, {{4, 0, 2}}, 3);
  const gguf_file g = gguf_file::parse(w.bytes(), "m.gguf");
  const imatrix_data m = read_imatrix(g);
  const auto a = read_imatrix_activations(g, m.layers[0]);
  EXPECT_EQ(a.n_in, 3);
  EXPECT_EQ(a.mean_sq, (std::vector<float>{1, 2, 3, 0, 0, 0, 1, 2, 3}));
  EXPECT_EQ(a.expert_mean, (std::vector<double>{2, 0, 2}));
}

TEST(ImatrixMalformed, EveryKind) {
  {
    gguf_writer w;
    w.kv_string("general.type", "model");
    expect_error(w, "not an imatrix GGUF (general.type = 'model')");
  }
  {
    gguf_writer w;
    expect_error(w, "no 'general.type'");
  }
  {
    gguf_writer w = make_imatrix({}, {});
    w.tensor_f32("blk.0.ffn_down.weight.in_sum2", {2, 1}, {1, 1});
    w.tensor_f32("blk.0.ffn_down.weight.counts", {1, 1}, {3});
    expect_error(w, "not an imatrix of an MoE model");
  }
  {
    gguf_writer w = make_imatrix({0, 1}, {{1, 2, 3}, {1, 2}});
    expect_error(w, "'blk.1.ffn_down_exps.weight.counts' has 2 experts but "
                    "'blk.0.ffn_down_exps.weight.counts' has 3");
  }
  {
    gguf_writer w = make_imatrix({}, {});
    w.tensor_f32("blk.0.ffn_down_exps.weight.in_sum2", {2, 3}, std::vector<float>(6, 1));
    w.tensor_f32("blk.0.ffn_down_exps.weight.counts", {1, 4}, {1, 2, 3, 4});
    expect_error(w, "has 4 experts but 'blk.0.ffn_down_exps.weight.in_sum2' has n_mat = 3");
  }
  {
    gguf_writer w = make_imatrix({}, {});
    w.tensor_f32("blk.0.ffn_down_exps.weight.counts", {1, 2}, {1, 2});
    expect_error(w, "has no matching 'blk.0.ffn_down_exps.weight.in_sum2'");
  }
  {
    gguf_writer w = make_imatrix({}, {});
    w.tensor_f32("blk.0.ffn_down_exps.weight.in_sum2", {2, 2}, std::vector<float>(4, 1));
    w.tensor_f32("blk.0.ffn_down_exps.weight.counts", {2, 2}, {1, 2, 3, 4});
    expect_error(w, "must have shape [1, n_mat]");
  }
  {
    gguf_writer w = make_imatrix({0}, {{1, -2}});
    expect_error(w, "count of expert 1 is -2");
  }
  {
    gguf_writer w = make_imatrix({0}, {{1, std::nanf("")}});
    expect_error(w, "count of expert 1 is");
  }
}
