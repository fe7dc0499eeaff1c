// moeroute run: an offloaded MoE layer stack as an engine runs it, a thin client of
// moeroute::offloaded_moe (offload/offloaded_moe.hpp). Expert weights stay in host memory (the
// mapped GGUF of --model, or random weights with a fixed seed); the engine keeps (layer, expert)
// cells in a device pool under a VRAM budget, chosen by an expert_cache, and uploads misses or
// computes them on the CPU (--miss), optionally prefetching the next layer's experts (--prefetch).
// Routing is replayed from a trace or computed by the router from logits of random (or the
// model's) router weights, optionally zero-gated. Every policy runs on the same inputs, side by side.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
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
#include "moeroute/cache/policies.hpp"
#include "moeroute/cache/simulate.hpp"
#include "moeroute/io/gguf_experts.hpp"
#include "moeroute/io/npy.hpp"
#include "moeroute/offload/offloaded_moe.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/residency/atx_policy.hpp"
#include "moeroute/routing/router.hpp"
#include "report.hpp"
#endif

namespace {

struct run_args {
  std::string trace, pin, policies = "none,lru,layer-cycle,pinned", json, report, type = "q8_0", model, dump_y;
  std::string miss = "upload", prefetch = "none", passes = "auto";
  int cpu_threads = 1;
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

/// Random SwiGLU expert weights of every (layer, expert) cell, encoded once, in host memory, and
/// the engine's views of them.
struct host_model {
  std::vector<unsigned char> blobs;  // layers x E x expert_bytes
  offload_host_weights weights;
};

host_model make_model(const ffn_layer& s, int layers, unsigned seed) {
  host_model m;
  const std::size_t eb = s.expert_bytes();
  m.blobs.resize(static_cast<std::size_t>(layers) * static_cast<std::size_t>(s.num_experts) * eb);
  const std::size_t H = static_cast<std::size_t>(s.hidden), F = static_cast<std::size_t>(s.ffn);
  std::vector<float> g(F * H), u(F * H), d(H * F);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const float sg = 1.0f / std::sqrt(static_cast<float>(H)), sd = 1.0f / std::sqrt(static_cast<float>(F));
  for (std::size_t c = 0; c < static_cast<std::size_t>(layers) * static_cast<std::size_t>(s.num_experts); ++c) {
    for (auto& v : g) v = sg * dist(rng);
    for (auto& v : u) v = sg * dist(rng);
    for (auto& v : d) v = sd * dist(rng);
    encode_expert(s, g.data(), u.data(), d.data(), m.blobs.data() + c * eb);
  }
  for (int l = 0; l < layers; ++l)
    m.weights.layers.push_back(
        offload_layer_from_blobs(s, m.blobs.data() + static_cast<std::size_t>(l) * static_cast<std::size_t>(s.num_experts) * eb));
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
  offload_counters counters;  // the engine's (measured rows)
  miss_costs costs;           // the engine's measured costs (measured rows)
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

/// What a policy's run takes beyond the routing: the engine's options and prefetch.
struct stack_setup {
  int num_tokens = 0, max_k = 0;
  offload_options opt;
  std::string prefetch;  // none, coactivation, oracle
  /// oracle: the experts of the step after (token, layer) and its layer, or -1
  std::function<int(int, int, std::vector<std::pair<std::int32_t, double>>&)> next_step;
  std::vector<float>* dump = nullptr;  // the final activations of every token, T x H
  unsigned seed = 1;
};

/// The engine loop for one policy: an engine's decode loop, one offloaded_moe forward per MoE
/// layer and token, a residual add. `route_fn(token, layer, x, out)` gives the routing of a step.
template <class Eviction, class RouteFn>
run_row run_stack(const std::string& name, const vulkan_context& ctx, const offload_host_weights& w, const stack_setup& su,
                  RouteFn&& route_fn) {
  offloaded_moe<Eviction> moe(ctx, w.layers, su.opt);
  const int L = moe.num_layers();
  const auto H = static_cast<std::size_t>(w.layers.front().shape.hidden);
  int cur_t = 0, cur_l = 0;
  if (su.prefetch == "coactivation") moe.use_coactivation_prefetch();
  if (su.prefetch == "oracle")
    moe.set_prefetch([&](int, const std::int32_t*, std::size_t, std::vector<std::pair<std::int32_t, double>>& out) {
      return su.next_step(cur_t, cur_l, out);
    });
  run_row row;
  row.name = name;
  std::vector<float> x(H), y(H);
  step st;
  row.layers.assign(static_cast<std::size_t>(L), layer_row{});
  progress bar(static_cast<std::size_t>(su.num_tokens), name);
  const auto t0 = std::chrono::steady_clock::now();
  for (int t = 0; t < su.num_tokens; ++t) {
    std::mt19937 rng(su.seed * 7919u + static_cast<unsigned>(t));
    std::normal_distribution<float> nd;
    for (auto& v : x) v = nd(rng);
    for (int l = 0; l < L; ++l) {
      if (!route_fn(t, l, x, st)) continue;  // no routing recorded for this (token, layer)
      const std::size_t k = st.ids.size();
      if (k == 0) continue;
      cur_t = t;
      cur_l = l;
      const auto ls = std::chrono::steady_clock::now();
      const std::uint32_t off[2] = {0, static_cast<std::uint32_t>(k)};
      moe.forward(l, routing_result_view{1, moe.num_experts(), off, st.ids.data(), st.w.data()}, x.data(), y.data());
      for (std::size_t h = 0; h < H; ++h) x[h] += y[h];  // residual
      row.routed += k;
      row.layers[static_cast<std::size_t>(l)].seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - ls).count();
    }
    if (su.dump) std::copy(x.begin(), x.end(), su.dump->begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(t) * H));
    bar.tick(static_cast<std::size_t>(t + 1));
  }
  row.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  row.tokens = su.num_tokens;
  row.counters = moe.counters();
  row.costs = moe.costs();
  row.bytes = row.counters.bytes_uploaded;
  row.preload_bytes = row.counters.preload_bytes;
  row.accesses = row.counters.accesses;
  row.hits = row.counters.hits;
  for (int l = 0; l < L; ++l) {
    layer_row& lr = row.layers[static_cast<std::size_t>(l)];
    lr.accesses = moe.layer_counters(l).accesses;
    lr.hits = moe.layer_counters(l).hits;
    lr.bytes = moe.layer_counters(l).bytes_uploaded;
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
  const miss_mode miss = parse_miss_mode(a.miss);
  const pass_split passes = parse_pass_split(a.passes);
  MOEROUTE_CHECK(a.prefetch == "none" || a.prefetch == "coactivation" || a.prefetch == "oracle", errc::invalid_argument,
                 "--prefetch '", a.prefetch, "' (expected none, coactivation or oracle)");
  MOEROUTE_CHECK(a.prefetch != "oracle" || !a.router, errc::invalid_argument,
                 "--prefetch oracle replays a trace's next step; it cannot be combined with --router");
  cli::output_files outs;
  if (!a.json.empty()) outs.declare("--json", a.json);
  if (!a.dump_y.empty()) outs.declare("--dump-y", a.dump_y);
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
  MOEROUTE_CHECK(a.dump_y.empty() || std::any_of(policies.begin(), policies.end(), [&](const std::string& p) {
                   return p != "belady" && (p != "pinned" || !a.pin.empty());
                 }), errc::invalid_argument, "--dump-y needs a policy that runs (not only belady, or pinned without --pin)");

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
  // every layer's bytes (a model's layers may differ in type) and the device slot that holds any of them
  std::uint64_t all_bytes = 0, slot_bytes = 0;
  for (int l = 0; l < L; ++l) {
    const ffn_layer& ls = gguf ? gguf->layer_shape(l) : shape;
    all_bytes += ls.expert_bytes() * static_cast<std::uint64_t>(E);
    slot_bytes = std::max<std::uint64_t>(slot_bytes, vulkan_expert_pool::slot_layout(ls)[3]);
  }
  const double budget = sub.count("--vram-mib") ? a.vram_mib * 1048576.0 : 0.25 * static_cast<double>(all_bytes);
  // more slots than cells hold nothing more
  const auto slots = static_cast<std::size_t>(std::min(budget / static_cast<double>(slot_bytes), static_cast<double>(cells)));
  const std::size_t need = miss == miss_mode::upload ? static_cast<std::size_t>(K) : 1;
  MOEROUTE_CHECK(slots >= need, errc::invalid_argument, "--vram-mib ", budget / 1048576.0, " holds ", slots,
                 " experts of ", slot_bytes, " bytes but one token needs ", need, " at a layer",
                 miss == miss_mode::upload ? " (--miss cpu or auto computes misses on the host)" : "");

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
  host_model model;
  if (gguf)
    model.weights = offload_weights_from_gguf(*gguf, L);
  else
    model = make_model(shape, L, a.seed);

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
  std::vector<float> dump;  // the first policy's final activations, T x H
  stack_setup su;
  su.num_tokens = T;
  su.max_k = K;
  su.seed = a.seed;
  su.prefetch = a.prefetch;
  su.opt.max_tokens = 1;
  su.opt.max_entries = static_cast<std::size_t>(K);
  su.opt.miss = miss;
  su.opt.passes = passes;
  su.opt.cpu_threads = a.cpu_threads;
  su.next_step = [&](int t, int l, std::vector<std::pair<std::int32_t, double>>& out) {
    out.clear();
    for (int tt = t; tt < T; ++tt)
      for (int ll = tt == t ? l + 1 : 0; ll < L; ++ll)
        if (const int i = by_token[static_cast<std::size_t>(tt)][static_cast<std::size_t>(ll)]; i >= 0) {
          for (const std::int32_t e : steps[static_cast<std::size_t>(i)].ids) out.emplace_back(e, 1.0);
          return ll;
        }
    return -1;
  };
  auto run_policy = [&](const std::string& p, auto route, const std::string& suffix) {
    const std::string label = p + suffix;
    stack_setup s = su;
    s.opt.budget_bytes = static_cast<std::uint64_t>(slots) * slot_bytes;
    if (!a.dump_y.empty() && rows.empty()) {
      dump.assign(static_cast<std::size_t>(T) * static_cast<std::size_t>(hidden), 0.0f);
      s.dump = &dump;
    }
    if (p == "none") {  // streaming: every device expert is uploaded for its call
      s.opt.cache = false;
      s.prefetch = "none";
      s.opt.budget_bytes = static_cast<std::uint64_t>(K) * slot_bytes;
      rows.push_back(run_stack<lru_eviction>(label == "none" ? "no cache" : "no cache" + suffix, ctx, model.weights, s, route));
    } else if (p == "pinned") {
      if (pinned.count() == 0) return;
      s.opt.pinned = pinned;
      rows.push_back(run_stack<lru_eviction>("pinned ATX + lru" + suffix, ctx, model.weights, s, route));
    } else {  // an online eviction policy (belady, a bound, is simulated below)
      visit_eviction(p, [&](auto tag) {
        using policy = typename decltype(tag)::type;
        if constexpr (!policy::needs_future) rows.push_back(run_stack<policy>(label, ctx, model.weights, s, route));
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
  j["slot_bytes"] = slot_bytes;
  j["miss"] = miss_mode_name(miss);
  j["prefetch"] = a.prefetch;
  j["passes"] = pass_split_name(passes);
  j["policies"] = nlohmann::ordered_json::array();
  std::cout << std::left << std::setw(44) << "policy" << std::right << std::setw(10) << "tokens/s" << std::setw(10)
            << "hit rate" << std::setw(14) << "MiB/token" << std::setw(12) << "experts/tok" << std::setw(9) << "on CPU" << "\n";
  for (const auto& r : rows) {
    const double tps = r.measured && r.seconds > 0 ? r.tokens / r.seconds : 0.0;
    const double hr = r.accesses ? static_cast<double>(r.hits) / static_cast<double>(r.accesses) : 0.0;
    const double bpt = r.tokens > 0 ? static_cast<double>(r.bytes) / r.tokens : 0.0;
    const double active = r.tokens > 0 ? static_cast<double>(r.accesses) / r.tokens / L : 0.0;
    std::cout << std::left << std::setw(44) << r.name << std::right << std::setw(10)
              << (r.measured ? [&] { std::ostringstream o; o << std::fixed << std::setprecision(1) << tps; return o.str(); }() : std::string("-"))
              << std::setw(9) << std::fixed << std::setprecision(1) << 100.0 * hr << "%" << std::setw(14)
              << std::setprecision(2) << bpt / 1048576.0 << std::setw(12) << std::setprecision(2) << active << std::setw(8)
              << std::setprecision(1)
              << (r.counters.entries ? 100.0 * static_cast<double>(r.counters.entries_cpu) / static_cast<double>(r.counters.entries) : 0.0)
              << "%\n";
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
    if (r.measured) {
      const offload_counters& c = r.counters;
      o["misses"] = c.misses;
      o["miss_uploads"] = c.miss_uploads;
      o["miss_cpu"] = c.miss_cpu;
      o["entries"] = c.entries;
      o["entries_cpu"] = c.entries_cpu;
      o["uploads"] = c.uploads;
      o["prefetch_loads"] = c.prefetch_loads;
      o["prefetch_useful"] = c.prefetch_useful;
      o["stalls"] = c.stalls;
      o["stall_seconds"] = c.stall_seconds;
      o["overlapped_uploads"] = c.overlapped_uploads;
      o["cpu_seconds"] = c.cpu_seconds;
      o["device_passes"] = c.device_passes;
      o["upload_s_per_expert"] = r.costs.upload_s(cell_bytes);
      o["device_s_per_pass"] = r.costs.device_s_per_pass;
    }
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
  for (const auto& r : rows)  // the engine's measured costs, which --passes auto and --miss auto weigh
    if (r.measured) {
      std::cout << "device costs (measured at start): one expert upload " << std::setprecision(3)
                << 1e3 * r.costs.upload_s(cell_bytes) << " ms, one FFN pass " << 1e3 * r.costs.device_s_per_pass
                << " ms; passes: " << pass_split_name(passes) << "\n";
      break;
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
  if (!a.dump_y.empty()) outs.set(a.dump_y, format_npy(dump.data(), static_cast<std::size_t>(T), static_cast<std::size_t>(hidden)));
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
                  "GGUF model whose expert tensors (ffn_{gate,up,down}_exps or ffn_gate_up_exps, any type, biases) are "
                  "the expert weights; its layers may differ in type");
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
  sub->add_option("--miss", a->miss, "what a miss does: upload (default: copy to a device slot), cpu (compute on the host), "
                  "auto (per miss, whichever the measured costs say finishes first)");
  sub->add_option("--passes", a->passes, "device passes of a call with hits and uploads: auto (default: two, the hits' "
                  "pass overlapping the uploads, when the uploads take at least one pass), two, or one after the uploads");
  sub->add_option("--prefetch", a->prefetch, "prefetch the next layer's experts: none (default), coactivation (learned "
                  "online, cache/prefetch.hpp), oracle (trace mode: the trace's next step)");
  sub->add_option("--cpu-threads", a->cpu_threads, "host threads computing misses (1)")->check(cli::int_in(1, 256));
  sub->add_option("--dump-y", a->dump_y, "write the final activations of every token of the first policy, [T, H] float32 .npy");
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
