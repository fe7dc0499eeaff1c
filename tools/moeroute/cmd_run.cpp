// moeroute run: an offloaded MoE layer stack as an engine runs it, on the Vulkan backend. Expert
// weights live in host memory; an expert_cache decides which (layer, expert) cells sit in the
// device pool's slots under a VRAM budget; misses are uploaded through staging before each
// layer's grouped FFN. Routing is replayed from a trace or computed by the router from logits of
// random router weights (optionally zero-gated). Expert weights are random with a fixed seed, or the
// real ffn_{gate,up,down}_exps tensors of a GGUF model (--model). Every policy runs on the same
// inputs, side by side.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli.hpp"

#if MOEROUTE_CLI_HAS_VULKAN
#include "moeroute/backends/vulkan.hpp"
#include "moeroute/cache/expert_cache.hpp"
#include "moeroute/cache/policies.hpp"
#include "moeroute/cache/simulate.hpp"
#include "moeroute/io/gguf_experts.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/residency/atx_policy.hpp"
#include "moeroute/routing/router.hpp"
#include "report.hpp"
#endif

namespace {

struct run_args {
  std::string trace, pin, policies = "none,lru,layer-cycle,pinned", json, report, type = "q8_0", model;
  bool router = false;
  int hidden = 256, ffn = 512, layers = 16, experts = 64, topk = 8, tokens = 48, min_k = 1;
  double vram_mib = 0, cum_prob = 0;
  unsigned seed = 1;
  int max_tokens = 0;
  bool per_layer = false;
};

#if MOEROUTE_CLI_HAS_VULKAN
using namespace moeroute;

/// One token's routing at one layer (ids best first and their weights).
struct step {
  int layer;
  std::vector<std::int32_t> ids;
  std::vector<float> w;
};

/// The SwiGLU expert weights of every (layer, expert) cell, encoded once, in host memory.
struct host_model {
  ffn_layer shape;
  int layers = 0;
  std::vector<unsigned char> blobs;  // layers x E x expert_bytes
  const unsigned char* blob(int l, int e) const {
    return blobs.data() + (static_cast<std::size_t>(l) * static_cast<std::size_t>(shape.num_experts) +
                           static_cast<std::size_t>(e)) * shape.expert_bytes();
  }
};

host_model make_model(const ffn_layer& s, int layers, unsigned seed) {
  host_model m;
  m.shape = s;
  m.layers = layers;
  const std::size_t eb = s.expert_bytes();
  m.blobs.resize(static_cast<std::size_t>(layers) * static_cast<std::size_t>(s.num_experts) * eb);
  const std::size_t H = static_cast<std::size_t>(s.hidden), F = static_cast<std::size_t>(s.ffn);
  std::vector<float> g(F * H), u(F * H), d(H * F);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const float sg = 1.0f / std::sqrt(static_cast<float>(H)), sd = 1.0f / std::sqrt(static_cast<float>(F));
  for (int l = 0; l < layers; ++l)
    for (int e = 0; e < s.num_experts; ++e) {
      for (auto& v : g) v = sg * dist(rng);
      for (auto& v : u) v = sg * dist(rng);
      for (auto& v : d) v = sd * dist(rng);
      encode_expert(s, g.data(), u.data(), d.data(), const_cast<unsigned char*>(m.blob(l, e)));
    }
  return m;
}

/// The expert tensors of the first `layers` MoE layers of a GGUF model, as stored. The run loop
/// drives one layer description per device pool, so the layers must share one.
host_model load_model(const gguf_expert_weights& w, int layers) {
  for (int l = 1; l < layers; ++l)
    MOEROUTE_CHECK(w.layer_shape(l) == w.shape(), errc::unsupported, w.file().name(), ": blk.", w.layer(l).block, " (",
                   weight_type_name(w.layer_shape(l).gate_type), "/", weight_type_name(w.layer_shape(l).up_type), "/",
                   weight_type_name(w.layer_shape(l).down_type), ") differs from blk.", w.layer(0).block, " (",
                   weight_type_name(w.shape().gate_type), "/", weight_type_name(w.shape().up_type), "/",
                   weight_type_name(w.shape().down_type), "); run takes layers of one description (--layers 1 runs the first)");
  host_model m;
  m.shape = w.shape();
  m.layers = layers;
  const std::size_t eb = m.shape.expert_bytes();
  m.blobs.resize(static_cast<std::size_t>(layers) * static_cast<std::size_t>(m.shape.num_experts) * eb);
  for (int l = 0; l < layers; ++l) w.read_layer(l, const_cast<unsigned char*>(m.blob(l, 0)));
  return m;
}

weight_type parse_type(const std::string& t) {
  if (t == "f32") return weight_type::f32;
  if (t == "f16") return weight_type::f16;
  if (t == "q8_0") return weight_type::q8_0;
  if (t == "q4_0") return weight_type::q4_0;
  detail::fail(errc::invalid_argument, "--type '", t, "' (expected f32, f16, q8_0 or q4_0)");
}

/// One layer's share of a policy's run.
struct layer_row {
  std::uint64_t accesses = 0, hits = 0, bytes = 0;
  double seconds = 0;  // uploads + FFN of this layer
};

/// What one policy's run measured.
struct run_row {
  std::string name;
  double seconds = 0, tokens = 0;
  std::uint64_t accesses = 0, hits = 0, bytes = 0, routed = 0;
  std::uint64_t preload_bytes = 0;  // pinned cells loaded before the timed run
  bool measured = true;  // false: a bound from the simulator, not a timed run
  std::vector<layer_row> layers;
};

class progress {
 public:
  progress(std::size_t total, std::string label) : total_(total), label_(std::move(label)), tty_(isatty(2)) {}
  void tick(std::size_t done) {
    if (!tty_ || total_ == 0) return;
    const int pct = static_cast<int>(100 * done / total_);
    if (pct == last_) return;
    last_ = pct;
    std::cerr << "\r  " << std::left << std::setw(28) << label_ << " [" << std::string(static_cast<std::size_t>(pct / 4), '#')
              << std::string(static_cast<std::size_t>(25 - pct / 4), ' ') << "] " << std::right << std::setw(3) << pct << "%"
              << std::flush;
  }
  ~progress() {
    if (tty_ && total_) std::cerr << "\r" << std::string(70, ' ') << "\r" << std::flush;
  }

 private:
  std::size_t total_;
  std::string label_;
  bool tty_;
  int last_ = -1;
};

/// The engine loop for one policy. `route_fn(token, layer, x, out)` gives the routing of a step.
template <class Cache, class RouteFn>
run_row run_stack(const std::string& name, const vulkan_context& ctx, const host_model& m, int num_tokens,
                  int max_k, std::size_t slots, Cache* cache, RouteFn&& route_fn, unsigned seed) {
  const ffn_layer& s = m.shape;
  const auto H = static_cast<std::size_t>(s.hidden);
  vulkan_expert_pool pool(ctx, s, static_cast<int>(slots));
  vulkan_ffn op(ctx, pool);
  const vulkan_ffn_config cfg{1, static_cast<std::size_t>(max_k)};
  const std::string why = op.can_implement(cfg);
  MOEROUTE_CHECK(why.empty(), errc::unsupported, "vulkan_ffn: ", why);
  vulkan_buffer ws = ctx.make_buffer(std::max<std::size_t>(op.workspace_size(cfg), 16), false);
  op.initialize(cfg, ws);

  run_row row;
  row.name = name;
  std::vector<float> x(H), y(H);
  std::vector<std::int32_t> table(static_cast<std::size_t>(s.num_experts), -1);
  std::vector<std::uint32_t> slot(static_cast<std::size_t>(max_k));
  step st;
  // pinned cells are resident from the start: load them before the clock starts
  if (cache)
    for (int l = 0; l < m.layers; ++l)
      for (int e = 0; e < s.num_experts; ++e)
        if (cache->is_pinned(l, e))
          pool.upload_expert(static_cast<int>(cache->slot_of(l, e)), m.blob(l, e), s.expert_bytes());
  row.preload_bytes = pool.transfer_bytes();
  row.layers.assign(static_cast<std::size_t>(m.layers), layer_row{});
  progress bar(static_cast<std::size_t>(num_tokens), name);
  const auto t0 = std::chrono::steady_clock::now();
  for (int t = 0; t < num_tokens; ++t) {
    std::mt19937 rng(seed * 7919u + static_cast<unsigned>(t));
    std::normal_distribution<float> nd;
    for (auto& v : x) v = nd(rng);
    for (int l = 0; l < m.layers; ++l) {
      if (!route_fn(t, l, x, st)) continue;  // no routing recorded for this (token, layer)
      const std::size_t k = st.ids.size();
      if (k == 0) continue;
      layer_row& lr = row.layers[static_cast<std::size_t>(l)];
      const auto ls = std::chrono::steady_clock::now();
      const std::uint64_t lb = pool.transfer_bytes();
      if (cache) {
        const auto& loads = cache->request(l, st.ids.data(), k, slot.data());
        for (const auto& ld : loads) pool.upload_expert(static_cast<int>(ld.slot), m.blob(l, ld.expert), s.expert_bytes());
      } else {
        for (std::size_t i = 0; i < k; ++i) {  // no cache: stream every routed expert
          slot[i] = static_cast<std::uint32_t>(i);
          pool.upload_expert(static_cast<int>(i), m.blob(l, st.ids[i]), s.expert_bytes());
        }
      }
      for (std::size_t i = 0; i < k; ++i) table[static_cast<std::size_t>(st.ids[i])] = static_cast<std::int32_t>(slot[i]);
      pool.set_slot_table(table.data(), table.size());
      const std::uint32_t off[2] = {0, static_cast<std::uint32_t>(k)};
      op.forward({routing_result_view{1, s.num_experts, off, st.ids.data(), st.w.data()}, x.data(), y.data()});
      for (std::size_t i = 0; i < k; ++i) table[static_cast<std::size_t>(st.ids[i])] = -1;
      for (std::size_t h = 0; h < H; ++h) x[h] += y[h];  // residual
      row.routed += k;
      lr.accesses += k;
      lr.bytes += pool.transfer_bytes() - lb;
      lr.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - ls).count();
    }
    bar.tick(static_cast<std::size_t>(t + 1));
  }
  row.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  row.tokens = num_tokens;
  row.bytes = pool.transfer_bytes() - row.preload_bytes;
  if (cache) {
    row.accesses = cache->stats().total.accesses;
    row.hits = cache->stats().total.hits;
    for (std::size_t l = 0; l < row.layers.size(); ++l) row.layers[l].hits = cache->stats().per_layer[l].hits;
  } else {
    row.accesses = row.routed;
  }
  return row;
}

void run_offload(const run_args& a, CLI::App& sub) {
  // Every check of the flags and every output path comes before any work or output line.
  std::unique_ptr<gguf_expert_weights> gguf;
  if (!a.model.empty())
    for (const char* flag : {"--hidden", "--ffn", "--type", "--experts"})
      MOEROUTE_CHECK(sub.count(flag) == 0, errc::invalid_argument, flag, " cannot be combined with --model (",
                     a.model, " sets the model's shape)");
  const weight_type flag_type = parse_type(a.type);
  cli::output_files outs;
  if (!a.json.empty()) outs.declare("--json", a.json);
  if (!a.report.empty()) outs.declare("--report", a.report);
  if (!a.model.empty()) {
    gguf = std::make_unique<gguf_expert_weights>(gguf_file::open(a.model));
    MOEROUTE_CHECK(gguf->ffn_unsupported().empty(), errc::unsupported, a.model, ": ", gguf->ffn_unsupported());
  }
  const weight_type type = gguf ? gguf->shape().gate_type : flag_type;
  const int hidden = gguf ? gguf->shape().hidden : a.hidden, ffn = gguf ? gguf->shape().ffn : a.ffn;
  MOEROUTE_CHECK(hidden > 0 && ffn > 0, errc::invalid_argument, "--hidden and --ffn must be positive");
  std::vector<std::string> policies;
  {
    std::stringstream ss(a.policies);
    std::string p;
    while (std::getline(ss, p, ','))
      if (!p.empty()) policies.push_back(p);
  }
  for (const auto& p : policies)
    MOEROUTE_CHECK(p == "none" || p == "pinned" || is_eviction_policy_name(p), errc::invalid_argument, "--policies: unknown policy '", p,
                   "' (known: none, lru, fifo, lfu, layer-cycle, pinned, belady)");

  // ---- routing source ----
  routing_trace trace;
  int L = 0, E = 0, K = 0, T = 0;
  std::vector<std::vector<int>> by_token;  // trace mode: [token][layer] -> index into steps, or -1
  std::vector<step> steps;
  std::vector<std::vector<float>> router_w;  // router mode: per layer E x H
  std::vector<std::vector<float>> router_b;  // router mode: per layer logit bias (gpt-oss), or empty
  if (!a.router) {
    const std::string path = a.trace.empty() ? std::string(MOEROUTE_DEFAULT_TRACE) : a.trace;
    trace = read_routing_trace_jsonl(path);
    MOEROUTE_CHECK(trace.size() > 0, errc::bad_input, path, ": the trace has no records");
    L = trace.num_layers();
    E = gguf ? gguf->shape().num_experts : sub.count("--experts") ? a.experts : trace.num_experts();
    MOEROUTE_CHECK(trace.num_experts() <= E, errc::bad_input, path, ": the trace names expert ",
                   trace.num_experts() - 1, " but the model has ", E, " experts (", gguf ? a.model : "--experts", ")");
    MOEROUTE_CHECK(!gguf || L <= gguf->num_layers(), errc::bad_input, path, ": the trace routes MoE layer ", L - 1,
                   " but ", a.model, " has ", gguf ? gguf->num_layers() : 0, " MoE layers");
    // group records by token in order of first appearance; without token_idx a token ends when
    // the layer index stops increasing
    std::int64_t cur = -2;
    int last_layer = -1;
    for (std::size_t r = 0; r < trace.size(); ++r) {
      const bool new_token = trace.token[r] >= 0 ? trace.token[r] != cur : trace.layer[r] <= last_layer;
      if (new_token || by_token.empty()) {
        MOEROUTE_CHECK((by_token.size() + 1) * static_cast<std::size_t>(L) <= (std::size_t{1} << 26), errc::capacity, path,
                       ": more than ", by_token.size(), " tokens x ", L, " layers of steps; replay a shorter trace");
        by_token.emplace_back(static_cast<std::size_t>(L), -1);
      }
      cur = trace.token[r];
      last_layer = trace.layer[r];
      step st;
      st.layer = trace.layer[r];
      for (auto i = trace.offsets[r]; i < trace.offsets[r + 1]; ++i) {
        st.ids.push_back(trace.experts[i]);
        st.w.push_back(trace.has_weights ? trace.weights[i] : 1.0f / static_cast<float>(trace.offsets[r + 1] - trace.offsets[r]));
      }
      K = std::max<int>(K, static_cast<int>(st.ids.size()));
      by_token.back()[static_cast<std::size_t>(st.layer)] = static_cast<int>(steps.size());
      steps.push_back(std::move(st));
    }
    T = static_cast<int>(by_token.size());
  } else {
    L = a.layers;
    E = a.experts;
    K = a.topk;
    T = a.tokens;
    if (gguf) {  // the model's layers (the first --layers of them), experts and experts per token
      L = sub.count("--layers") ? std::min(a.layers, gguf->num_layers()) : gguf->num_layers();
      E = gguf->shape().num_experts;
      if (!sub.count("--topk") && gguf->experts_used() > 0) K = gguf->experts_used();
    }
    MOEROUTE_CHECK(L > 0 && E > 0 && K > 0 && K <= E && T > 0, errc::invalid_argument,
                   "--router needs positive --layers, --experts, --tokens and 1 <= --topk <= --experts");
  }
  if (a.max_tokens > 0) T = std::min(T, a.max_tokens);
  MOEROUTE_CHECK(K > 0, errc::bad_input, "the trace routes no token to any expert");

  ffn_layer shape = gguf ? gguf->shape() : ffn_layer(E, hidden, ffn, type);
  shape.num_experts = E;
  const std::string shape_why = check_ffn_layer(shape);
  MOEROUTE_CHECK(shape_why.empty(), errc::invalid_argument, "model shape: ", shape_why);
  const std::uint64_t cell_bytes = shape.expert_bytes();
  const std::uint64_t cells = static_cast<std::uint64_t>(L) * static_cast<std::uint64_t>(E);
  // random weights are generated in host memory: at most 4 GiB of them (a --model is bounded by its file)
  const std::uint64_t host_cap = gguf ? (std::uint64_t{1} << 40) : (std::uint64_t{4} << 30);
  MOEROUTE_CHECK(cell_bytes > 0 && cells <= host_cap / cell_bytes, errc::invalid_argument, L, " layers x ", E,
                 " experts x ", cell_bytes, " bytes is more than the ", host_cap >> 30, " GiB of expert weights run holds",
                 gguf ? "" : " (lower --layers, --experts, --hidden or --ffn)");
  const std::uint64_t all_bytes = cell_bytes * cells;
  const double budget = sub.count("--vram-mib") ? a.vram_mib * 1048576.0 : 0.25 * static_cast<double>(all_bytes);
  // more slots than cells hold nothing more
  const auto slots = static_cast<std::size_t>(std::min(budget / static_cast<double>(cell_bytes), static_cast<double>(cells)));
  MOEROUTE_CHECK(slots >= static_cast<std::size_t>(K), errc::invalid_argument, "--vram-mib ",
                 budget / 1048576.0, " holds ", slots, " experts of ", cell_bytes, " bytes but one token needs ", K,
                 " at a layer");

  residency_set pinned;
  if (!a.pin.empty()) pinned = atx_policy_cells(read_atx_policy(a.pin), L, E);
  MOEROUTE_CHECK(pinned.count() <= slots, errc::invalid_argument, a.pin, ": ", pinned.count(),
                 " pinned cells exceed the ", slots, " slots of the VRAM budget");

  MOEROUTE_CHECK(a.cum_prob <= 0 || a.min_k <= K, errc::invalid_argument, "--min-k ", a.min_k,
                 " is more than the ", K, " experts per token");

  vulkan_context ctx;
  std::cerr << "moeroute run: " << T << " tokens, " << L << " layers x " << E << " experts (top-" << K << ", H "
            << hidden << ", F " << ffn << ", " << weight_type_name(type) << ", " << std::fixed << std::setprecision(2)
            << cell_bytes / 1048576.0 << " MiB/expert) on " << ctx.device_name() << "; VRAM budget "
            << budget / 1048576.0 << " MiB = " << slots << " of " << cells << " cells\n";
  if (gguf)
    std::cerr << "  expert weights: " << a.model << " (" << (gguf->architecture().empty() ? "?" : gguf->architecture())
              << ", MoE blocks " << gguf->layer(0).block << ".." << gguf->layer(L - 1).block << ", "
              << static_cast<double>(all_bytes) / 1048576.0 << " MiB)\n";
  const host_model model = gguf ? load_model(*gguf, L) : make_model(shape, L, a.seed);

  int model_routers = 0;
  if (a.router) {
    std::mt19937 rng(a.seed + 1);
    std::normal_distribution<float> nd(0.0f, 1.0f / std::sqrt(static_cast<float>(hidden)));
    router_w.assign(static_cast<std::size_t>(L), std::vector<float>(static_cast<std::size_t>(E) * hidden));
    router_b.assign(static_cast<std::size_t>(L), {});
    for (int l = 0; l < L; ++l) {
      auto& w = router_w[static_cast<std::size_t>(l)];
      if (gguf) {  // the model's own router (blk.N.ffn_gate_inp.weight) where it is stored as floats
        std::vector<float> r = gguf->router_weights(l);
        if (!r.empty()) {
          w = std::move(r);
          router_b[static_cast<std::size_t>(l)] = gguf->router_bias(l);
          ++model_routers;
          continue;
        }
      }
      for (auto& v : w) v = 2.5f * nd(rng);
    }
    if (gguf)
      std::cerr << "  router weights: " << model_routers << " of " << L << " layers from the model, the rest random\n";
  }
  auto trace_route = [&](int t, int l, const std::vector<float>&, step& out) {
    const int i = by_token[static_cast<std::size_t>(t)][static_cast<std::size_t>(l)];
    if (i < 0) return false;
    out = steps[static_cast<std::size_t>(i)];
    return true;
  };
  auto make_router_route = [&](double cum_prob) {
    return [&, cum_prob](int, int l, const std::vector<float>& x, step& out) {
      std::vector<float> logits(static_cast<std::size_t>(E));
      const auto& w = router_w[static_cast<std::size_t>(l)];
      const auto& b = router_b[static_cast<std::size_t>(l)];
      for (int e = 0; e < E; ++e) {
        float acc = b.empty() ? 0.0f : b[static_cast<std::size_t>(e)];
        for (int h = 0; h < hidden; ++h) acc += w[static_cast<std::size_t>(e) * hidden + h] * x[static_cast<std::size_t>(h)];
        logits[static_cast<std::size_t>(e)] = acc;
      }
      routing_result r = cum_prob > 0
          ? router<softmax_scoring, topk_selection, cumulative_gating>(E, K, {true}, {}, {}, {cum_prob, a.min_k, 0})
                .route(logits_view<float>(logits.data(), 1, static_cast<std::size_t>(E)))
          : router<softmax_scoring>(E, K, {true}).route(logits_view<float>(logits.data(), 1, static_cast<std::size_t>(E)));
      out.layer = l;
      out.ids = r.ids;
      out.w = r.weights;
      return true;
    };
  };

  std::vector<run_row> rows;
  auto run_policy = [&](const std::string& p, auto route, const std::string& suffix) {
    const std::string label = p + suffix;
    if (p == "none") {
      rows.push_back(run_stack<expert_cache<lru_eviction>>(label == "none" ? "no cache" : "no cache" + suffix, ctx, model, T, K,
                                                           static_cast<std::size_t>(K), nullptr, route, a.seed));
    } else if (p == "pinned") {
      if (pinned.count() == 0) return;
      expert_cache<lru_eviction> c(L, E, slots, pinned);
      rows.push_back(run_stack("pinned ATX + lru" + suffix, ctx, model, T, K, slots, &c, route, a.seed));
    } else {  // an online eviction policy (belady, a bound, is simulated below)
      visit_eviction(p, [&](auto tag) {
        using policy = typename decltype(tag)::type;
        if constexpr (!policy::needs_future) {
          expert_cache<policy> c(L, E, slots);
          rows.push_back(run_stack(label, ctx, model, T, K, slots, &c, route, a.seed));
        }
      });
    }
  };
  for (const auto& p : policies) {
    if (p == "belady") continue;
    if (!a.router) {
      run_policy(p, trace_route, "");
    } else {
      run_policy(p, make_router_route(0.0), "");
      if (a.cum_prob > 0) {
        std::ostringstream sfx;
        sfx << ", zero-gated P=" << a.cum_prob << " min_k " << a.min_k;
        run_policy(p, make_router_route(a.cum_prob), sfx.str());
      }
    }
  }
  if (!a.router && std::find(policies.begin(), policies.end(), "belady") != policies.end()) {
    // the optimum for the same accesses (the replayed tokens only), from the simulator
    routing_trace sub_trace;
    for (int t = 0; t < T; ++t)
      for (int l = 0; l < L; ++l)
        if (const int i = by_token[static_cast<std::size_t>(t)][static_cast<std::size_t>(l)]; i >= 0) {
          const step* st = &steps[static_cast<std::size_t>(i)];
          sub_trace.layer.push_back(l);
          sub_trace.token.push_back(t);
          sub_trace.experts.insert(sub_trace.experts.end(), st->ids.begin(), st->ids.end());
          sub_trace.offsets.push_back(static_cast<std::uint32_t>(sub_trace.experts.size()));
        }
    const auto b = simulate_belady(sub_trace, slots);
    run_row r;
    r.name = "belady (bound)";
    r.measured = false;
    r.tokens = T;
    r.accesses = b.accesses;
    r.hits = b.hits;
    r.bytes = b.misses * cell_bytes;
    rows.push_back(r);
  }

  // ---- report ----
  nlohmann::ordered_json j;
  j["device"] = ctx.device_name();
  if (gguf) j["model"] = a.model;
  j["tokens"] = T;
  j["layers"] = L;
  j["experts"] = E;
  j["top_k"] = K;
  j["expert_bytes"] = cell_bytes;
  j["vram_budget_bytes"] = static_cast<std::uint64_t>(budget);
  j["slots"] = slots;
  j["pinned_cells"] = pinned.count();
  j["policies"] = nlohmann::ordered_json::array();
  std::cout << std::left << std::setw(44) << "policy" << std::right << std::setw(10) << "tokens/s" << std::setw(10)
            << "hit rate" << std::setw(14) << "MiB/token" << std::setw(12) << "experts/tok" << "\n";
  for (const auto& r : rows) {
    const double tps = r.measured && r.seconds > 0 ? r.tokens / r.seconds : 0.0;
    const double hr = r.accesses ? static_cast<double>(r.hits) / static_cast<double>(r.accesses) : 0.0;
    const double bpt = r.tokens > 0 ? static_cast<double>(r.bytes) / r.tokens : 0.0;
    const double active = r.tokens > 0 ? static_cast<double>(r.accesses) / r.tokens / L : 0.0;
    std::cout << std::left << std::setw(44) << r.name << std::right << std::setw(10)
              << (r.measured ? [&] { std::ostringstream o; o << std::fixed << std::setprecision(1) << tps; return o.str(); }() : std::string("-"))
              << std::setw(9) << std::fixed << std::setprecision(1) << 100.0 * hr << "%" << std::setw(14)
              << std::setprecision(2) << bpt / 1048576.0 << std::setw(12) << std::setprecision(2) << active << "\n";
    nlohmann::ordered_json o;
    o["name"] = r.name;
    o["measured"] = r.measured;
    o["tokens_per_s"] = tps;
    o["seconds"] = r.seconds;
    o["accesses"] = r.accesses;
    o["hits"] = r.hits;
    o["hit_rate"] = hr;
    o["bytes_uploaded"] = r.bytes;
    o["bytes_preloaded"] = r.preload_bytes;
    o["bytes_per_token"] = bpt;
    o["mean_active_per_layer"] = active;
    if (!r.layers.empty()) {
      o["per_layer"] = nlohmann::ordered_json::array();
      for (std::size_t l = 0; l < r.layers.size(); ++l) {
        const layer_row& lr = r.layers[l];
        nlohmann::ordered_json q;
        q["layer"] = l;
        q["accesses"] = lr.accesses;
        q["hits"] = lr.hits;
        q["hit_rate"] = lr.accesses ? static_cast<double>(lr.hits) / static_cast<double>(lr.accesses) : 0.0;
        q["bytes_uploaded"] = lr.bytes;
        q["mean_active"] = r.tokens > 0 ? static_cast<double>(lr.accesses) / r.tokens : 0.0;
        q["seconds"] = lr.seconds;
        o["per_layer"].push_back(q);
      }
    }
    j["policies"].push_back(o);
  }
  if (a.per_layer) {  // hit rate and MiB uploaded per token, per layer and measured policy
    std::cout << "\nper layer: hit rate / MiB per token\n" << std::left << std::setw(7) << "layer";
    for (const auto& r : rows)
      if (r.measured) std::cout << std::right << std::setw(22) << r.name.substr(0, 21);
    std::cout << "\n";
    for (int l = 0; l < L; ++l) {
      std::cout << std::left << std::setw(7) << l << std::right;
      for (const auto& r : rows) {
        if (!r.measured) continue;
        const layer_row& lr = r.layers[static_cast<std::size_t>(l)];
        std::ostringstream c;
        c << std::fixed << std::setprecision(1)
          << (lr.accesses ? 100.0 * static_cast<double>(lr.hits) / static_cast<double>(lr.accesses) : 0.0) << "% / "
          << std::setprecision(2) << (r.tokens > 0 ? static_cast<double>(lr.bytes) / r.tokens / 1048576.0 : 0.0);
        std::cout << std::setw(22) << c.str();
      }
      std::cout << "\n";
    }
  }
  if (!a.json.empty()) outs.set(a.json, j.dump(2) + "\n");
  if (!a.report.empty()) {
    cli::report_inputs in;
    in.title = "moeroute run: offloaded MoE stack";
    if (!a.router) in.traces.emplace_back(a.trace.empty() ? std::string(MOEROUTE_DEFAULT_TRACE) : a.trace, trace);
    in.runs.emplace_back("moeroute run", nlohmann::json::parse(j.dump()));
    outs.set(a.report, cli::render_report_html(in));
  }
  outs.commit();
}
#endif

void setup_run(CLI::App& app, int&) {
  auto a = std::make_shared<run_args>();
  CLI::App* sub = app.add_subcommand("run", "Run an offloaded MoE layer stack on the Vulkan backend under a VRAM budget");
  namespace cli = moeroute::cli;
  auto* trace = sub->add_option("--trace", a->trace, "routing trace JSONL to replay (default: the shipped Mixtral-8x7B trace)");
  auto* router = sub->add_flag("--router", a->router, "route with random router weights instead of a trace (--layers/--experts/--topk/--tokens)");
  router->excludes(trace);
  sub->add_option("--layers", a->layers, "router mode: MoE layers (16; with --model: the first N of the model's)")
      ->check(cli::int_in(1, 65536))
      ->needs(router);
  sub->add_option("--experts", a->experts, "experts per layer (router mode: 64; trace mode: from the trace)")
      ->check(cli::int_in(1, 65536));
  sub->add_option("--topk", a->topk, "router mode: experts per token (8)")->check(cli::int_in(1, 65536))->needs(router);
  sub->add_option("--tokens", a->tokens, "router mode: tokens (48)")->check(cli::int_in(1, 1 << 24))->needs(router);
  auto* cum = sub->add_option("--cum-prob", a->cum_prob,
                              "router mode: also run each policy zero-gated at this cumulative probability, in (0, 1]")
                  ->check(cli::finite_above(0.0, 1.0))
                  ->needs(router);
  sub->add_option("--min-k", a->min_k, "router mode: zero-gating min_k (1)")->check(cli::int_in(1, 65536))->needs(cum);
  sub->add_option("--model", a->model,
                  "GGUF model whose ffn_{gate,up,down}_exps tensors (F32, F16, Q8_0, Q4_0) are the expert weights");
  sub->add_option("--hidden", a->hidden, "model width H (256)")->check(cli::int_in(1, 1 << 16));
  sub->add_option("--ffn", a->ffn, "expert intermediate width F (512)")->check(cli::int_in(1, 1 << 18));
  sub->add_option("--type", a->type, "expert weight type: f32, f16, q8_0 (default), q4_0");
  sub->add_option("--vram-mib", a->vram_mib, "VRAM budget for expert slots in MiB (default: 25% of all experts)")
      ->check(cli::finite_above(0.0, 1 << 30));
  sub->add_option("--pin", a->pin, "ATX residency policy whose cells are pinned (the 'pinned' row)");
  sub->add_option("--policies", a->policies, "comma list: none, lru, fifo, lfu, layer-cycle, pinned, belady");
  sub->add_option("--max-tokens", a->max_tokens, "replay at most this many tokens")->check(cli::int_in(1, 1 << 30));
  sub->add_flag("--per-layer", a->per_layer, "also print hit rate and bytes per token for each layer (always in --json)");
  sub->add_option("--seed", a->seed, "seed of the random weights and hidden states (1)")->check(cli::int_in(0, 4294967295LL));
  sub->add_option("--json", a->json, "write the results as JSON (input of `moeroute report --run`)");
  sub->add_option("--report", a->report, "write an HTML report of this run");
#if MOEROUTE_CLI_HAS_VULKAN
  sub->callback([a, sub] { run_offload(*a, *sub); });
#else
  sub->callback([] {
    moeroute::detail::fail(moeroute::errc::unsupported, "run: this moeroute was built without Vulkan and Eigen");
  });
#endif
}

}  // namespace

MOEROUTE_CLI_COMMAND("run", setup_run);
