// moeroute ffn: one MoE layer of a GGUF model on given activations, with given or the model's own
// routing, on the Eigen reference, the quantized CPU FFN or the Vulkan backend:
//   y_t = sum_k W_tk * FFN_{I_tk}(x_t)    (FFN as in weights/layer.hpp, per the model's layer)
// Inputs and outputs are .npy: X [T, H] float32, I [T, K] int32/int64, W [T, K] float32, Y [T, H]
// float32. Every input is checked before anything is computed; nothing is written on error.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cli.hpp"
#include "moeroute/io/gguf_experts.hpp"
#include "moeroute/backends/cpu_quant.hpp"
#include "moeroute/io/npy.hpp"

#if MOEROUTE_CLI_HAS_EIGEN
#include "moeroute/backends/cpu_eigen.hpp"
#endif
#if MOEROUTE_CLI_HAS_VULKAN
#include "moeroute/backends/vulkan.hpp"
#endif

namespace {

struct ffn_cmd_args {
  std::string model, x, ids, weights, ids_out, weights_out, backend = "eigen", out, activations = "int8";
  int block = -1, threads = 1;
  bool route = false;
};

// X as T x H float32 (float16 files are widened), every value finite.
std::vector<float> ffn_cmd_read_x(const std::string& path, std::size_t H, std::size_t& T) {
  using namespace moeroute;
  const npy_array a = read_npy(path);
  MOEROUTE_CHECK(a.cols == H, errc::bad_input, path, ": X has ", a.cols, " columns but the model's hidden size is ", H);
  T = a.rows;
  std::vector<float> x = a.f32;
  if (a.dtype == npy_dtype::f16) {
    x.resize(a.f16.size());
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = half_to_float(a.f16[i].bits);
  }
  for (std::size_t i = 0; i < x.size(); ++i)
    MOEROUTE_CHECK(std::isfinite(x[i]), errc::bad_input, path, ": X row ", i / H, " column ", i % H, " is not finite");
  return x;
}

// The routing of --ids / --weights as a CSR result with K entries per token.
moeroute::routing_result ffn_cmd_read_routing(const ffn_cmd_args& a, std::size_t T, int E) {
  using namespace moeroute;
  const npy_array ids = read_npy_ints(a.ids);
  const npy_array w = read_npy(a.weights);
  MOEROUTE_CHECK(w.dtype == npy_dtype::f32, errc::bad_input, a.weights, ": W must be float32");
  MOEROUTE_CHECK(ids.rows == T, errc::bad_input, a.ids, ": I has ", ids.rows, " rows but X has ", T, " tokens");
  MOEROUTE_CHECK(w.rows == ids.rows && w.cols == ids.cols, errc::bad_input, a.weights, ": W has shape (", w.rows, ", ",
                 w.cols, ") but I has shape (", ids.rows, ", ", ids.cols, ")");
  routing_result r;
  r.num_tokens = T;
  r.num_experts = E;
  const std::size_t K = ids.cols;
  for (std::size_t t = 0; t < T; ++t) {
    for (std::size_t k = 0; k < K; ++k) {
      const std::int64_t id = ids.ints[t * K + k];
      MOEROUTE_CHECK(id >= 0 && id < E, errc::bad_input, a.ids, ": row ", t, " column ", k, ": expert id ", id,
                     " outside [0, ", E, ")");
      const float wt = w.f32[t * K + k];
      MOEROUTE_CHECK(std::isfinite(wt), errc::bad_input, a.weights, ": row ", t, " column ", k, " is not finite");
      r.ids.push_back(static_cast<std::int32_t>(id));
      r.weights.push_back(wt);
    }
    r.offsets.push_back(static_cast<std::uint32_t>(r.ids.size()));
  }
  return r;
}

void run_ffn_cmd(const ffn_cmd_args& a, CLI::App& sub) {
  using namespace moeroute;
  const bool given_ids = sub.count("--ids") > 0, given_w = sub.count("--weights") > 0;
  MOEROUTE_CHECK(a.route != (given_ids || given_w), errc::invalid_argument,
                 "give either --ids and --weights, or --route");
  MOEROUTE_CHECK(a.route || (given_ids && given_w), errc::invalid_argument, "--ids and --weights go together");
  MOEROUTE_CHECK(a.route || (a.ids_out.empty() && a.weights_out.empty()), errc::invalid_argument,
                 "--ids-out and --weights-out need --route");
  MOEROUTE_CHECK(a.backend == "eigen" || a.backend == "cpu" || a.backend == "vulkan", errc::invalid_argument,
                 "--backend '", a.backend, "' (expected eigen, cpu or vulkan)");
  MOEROUTE_CHECK(a.backend == "cpu" || sub.count("--threads") == 0, errc::invalid_argument,
                 "--threads applies to --backend cpu only");
  MOEROUTE_CHECK(a.activations == "int8" || a.activations == "f32", errc::invalid_argument, "--activations '",
                 a.activations, "' (expected int8 or f32)");
  MOEROUTE_CHECK(a.backend == "cpu" || sub.count("--activations") == 0, errc::invalid_argument,
                 "--activations applies to --backend cpu only");

  // Every output is declared (and its place checked) before any work; all are written at the end.
  cli::output_files outs;
  outs.declare("--output", a.out);
  if (!a.ids_out.empty()) outs.declare("--ids-out", a.ids_out);
  if (!a.weights_out.empty()) outs.declare("--weights-out", a.weights_out);

  const auto w = gguf_expert_weights::open(a.model);
  const int layer = w.layer_of_block(a.block);
  if (layer < 0) {
    std::string blocks;
    for (int l = 0; l < w.num_layers(); ++l) blocks += (l ? ", " : "") + std::to_string(w.layer(l).block);
    detail::fail(errc::bad_input, a.model, ": blk.", a.block, " has no expert tensors (MoE blocks: ", blocks, ")");
  }
  MOEROUTE_CHECK(w.ffn_unsupported().empty(), errc::unsupported, a.model, ": ", w.ffn_unsupported());
  const ffn_layer& s = w.layer_shape(layer);
  const auto H = static_cast<std::size_t>(s.hidden);
  std::size_t T = 0;
  const std::vector<float> x = ffn_cmd_read_x(a.x, H, T);
  const routing_result r = a.route ? w.route(layer, x.data(), T) : ffn_cmd_read_routing(a, T, s.num_experts);
  const std::size_t K = T ? r.offsets[1] : 0;
  if (a.route)
    for (std::size_t t = 0; t < T; ++t)
      MOEROUTE_CHECK(r.offsets[t + 1] - r.offsets[t] == K, errc::bad_input, a.x, ": token ", t, " was routed to ",
                     r.offsets[t + 1] - r.offsets[t], " experts, not ", K, " (fewer eligible experts than K)");

  std::vector<float> y(T * H, 0.0f);
  const ffn_args args{r.view(), x.data(), y.data()};
  std::string path = a.backend;
  const std::size_t eb = s.expert_bytes();
  std::vector<unsigned char> all;  // the Eigen and Vulkan backends take copies of the expert blobs
  std::vector<std::int32_t> table(static_cast<std::size_t>(s.num_experts));
  for (int e = 0; e < s.num_experts; ++e) table[static_cast<std::size_t>(e)] = e;
  if (a.backend != "cpu") {
    all.resize(static_cast<std::size_t>(s.num_experts) * eb);
    w.read_layer(layer, all.data());
  }
  if (a.backend == "cpu") {  // straight from the mapped file: views, no copy
    const cpu_activations act = a.activations == "f32" ? cpu_activations::f32 : cpu_activations::int8;
    cpu_quant_ffn op(s, {a.threads, cpu_isa::best, act});
    for (int e = 0; e < s.num_experts; ++e) op.set_expert(e, w.expert_weights(layer, e));
    op.run(args);
    path = std::string("cpu (") + cpu_isa_name(op.isa()) + ", " + std::to_string(a.threads) + " thread" +
           (a.threads == 1 ? ", " : "s, ") + cpu_activations_name(act) + " activations)";
  } else if (a.backend == "eigen") {
#if MOEROUTE_CLI_HAS_EIGEN
    cpu_ffn op(s, s.num_experts);
    for (int e = 0; e < s.num_experts; ++e) op.upload_expert(e, all.data() + static_cast<std::size_t>(e) * eb, eb);
    op.set_slot_table(table.data(), table.size());
    std::vector<float> ws(op.workspace_size(args) / 4 + 1);
    op.initialize(args, ws.data());
    op.run();
#else
    detail::fail(errc::unsupported, "--backend eigen: this moeroute was built without Eigen");
#endif
  } else {
#if MOEROUTE_CLI_HAS_VULKAN
    vulkan_context ctx;
    vulkan_expert_pool pool(ctx, s, s.num_experts);
    vulkan_ffn op(ctx, pool);
    const vulkan_ffn_config cfg{std::max<std::size_t>(T, 1), std::max<std::size_t>(r.nnz(), 1)};
    const std::string why = op.can_implement(cfg);
    MOEROUTE_CHECK(why.empty(), errc::unsupported, a.model, ": blk.", a.block, " on --backend vulkan: ", why);
    for (int e = 0; e < s.num_experts; ++e) pool.upload_expert(e, all.data() + static_cast<std::size_t>(e) * eb, eb);
    pool.set_slot_table(table.data(), table.size());
    vulkan_buffer ws = ctx.make_buffer(std::max<std::size_t>(op.workspace_size(cfg), 16), false);
    op.initialize(cfg, ws);
    op.forward(args);
#else
    detail::fail(errc::unsupported, "--backend vulkan: this moeroute was built without Vulkan");
#endif
  }

  if (!a.ids_out.empty()) outs.set(a.ids_out, format_npy_i32(r.ids.data(), T, K));
  if (!a.weights_out.empty()) outs.set(a.weights_out, format_npy(r.weights.data(), T, K));
  outs.set(a.out, format_npy(y.data(), T, H));
  outs.commit();
  std::cerr << "moeroute ffn: " << a.model << " blk." << a.block << " (" << weight_type_name(s.gate_type) << "/"
            << weight_type_name(s.up_type) << "/" << weight_type_name(s.down_type)
            << (s.has_bias ? ", biases" : "") << ", " << ffn_activation_name(s.act) << "), " << T << " tokens x "
            << K << " experts" << (a.route ? " (model routing)" : "") << " on " << path << "\n";
}

void setup_ffn(CLI::App& app, int&) {
  auto a = std::make_shared<ffn_cmd_args>();
  CLI::App* sub = app.add_subcommand("ffn", "One MoE layer of a GGUF model on X (.npy): Y = sum_k W_k FFN_{I_k}(x)");
  sub->add_option("--model", a->model, "model GGUF (llama.cpp layout)")->required();
  sub->add_option("--block", a->block, "GGUF block index N (blk.N) of an MoE layer")
      ->required()
      ->check(moeroute::cli::int_in(0, 999999));
  sub->add_option("--x", a->x, "activations, .npy float32 [T, H]")->required();
  sub->add_option("--ids", a->ids, "expert ids, .npy int32/int64 [T, K]");
  sub->add_option("--weights", a->weights, "routing weights, .npy float32 [T, K]");
  sub->add_flag("--route", a->route, "route X with the model's own router and gating");
  sub->add_option("--ids-out", a->ids_out, "with --route: write the chosen ids, .npy int32 [T, K]");
  sub->add_option("--weights-out", a->weights_out, "with --route: write their weights, .npy float32 [T, K]");
  sub->add_option("--backend", a->backend, "eigen (default) | cpu (quantized, from the mapped file) | vulkan");
  sub->add_option("--threads", a->threads, "threads of --backend cpu (default 1)")->check(moeroute::cli::int_in(1, 1024));
  sub->add_option("--activations", a->activations,
                  "activations of --backend cpu: int8 (default; ggml's CPU arithmetic) | f32 (dequantized rows, "
                  "float32 dots: the float backends' result)");
  sub->add_option("-o,--output", a->out, "output Y, .npy float32 [T, H]")->required();
  sub->callback([a, sub] { run_ffn_cmd(*a, *sub); });
}

}  // namespace

MOEROUTE_CLI_COMMAND("ffn", setup_ffn);
