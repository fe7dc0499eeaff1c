#pragma once
// offloaded_moe<Eviction>: the offloaded MoE layer an engine calls, one object per model and one
// forward() per MoE layer. It owns, for every MoE layer (each with its own types: per-tensor
// types, fused gate/up, gpt-oss biases and activation), the device side of the expert FFN: one
// device pool of slots under a byte budget shared by all layers, an expert_cache<Eviction> over
// the (layer, expert) cells (any eviction policy of cache/; pinned cells, e.g. from an ATX policy,
// are loaded at construction and never evicted), a staging ring of host-visible memory with its
// transfer commands, the Vulkan FFN of each layer type, and, when misses may be computed on the
// host, the quantized CPU FFN of each layer (backends/cpu_quant.hpp). Expert weights stay where
// the caller keeps them (the mapped GGUF, or caller memory): the object holds views.
//
// This header pulls in Vulkan (backends/vulkan.hpp) and belongs to the moeroute::vulkan target;
// the device-independent logic (hit/miss split, cost model, counters) is in offload/miss_plan.hpp.
//
//   auto host = moeroute::offload_weights_from_gguf(gguf, gguf.num_layers());
//   moeroute::offload_options o;
//   o.budget_bytes = 8ull << 30;  o.max_tokens = 1;  o.miss = moeroute::miss_mode::auto_;
//   moeroute::offloaded_moe<moeroute::lru_eviction> moe(ctx, host.layers, o);
//   moe.use_coactivation_prefetch();                       // optional
//   for each layer l: moe.forward(l, routing, x, y);       // y = sum_k w_k FFN_k(x), T x H
//
// forward(layer, routing, x, y), T tokens (decode or prefill):
//  1. the distinct routed experts are hits (resident) or misses; each miss is uploaded or left to
//     the CPU by the miss mode (upload / cpu / auto, miss_plan.hpp); the cache hears the device
//     experts (hits and uploads) as one request, so a call never evicts its own experts;
//  2. the device pass over the hit entries is submitted first, then the uploads of the misses
//     (staging ring -> slots), then the device pass over the uploaded entries, which waits for
//     them with a pipeline barrier (one queue; see "What overlaps"); on a CPU Vulkan device, where
//     nothing overlaps, one pass over all device entries runs after the uploads instead
//     (offload_options::passes, rule in miss_plan.hpp);
//  3. the prefetch hook, when set, names the next layer's likely experts; the cache loads them
//     (prefetch(), never evicting this call's experts) and their uploads are submitted at once;
//  4. the host computes the CPU entries (cpu_quant_ffn::run with a per-entry selection) while
//     the device works, then waits for the device passes and adds the partial sums.
// y is the all-resident FFN up to float rounding (the partial sums are added in another order):
// the CPU entries are computed with float32 activations by default (cpu_activations::f32, each
// weight row dequantized and dotted in float32), so upload, cpu and auto modes agree with the
// all-resident device result to NMSE <= 1e-5 (measured ~1e-13 on the golden models, see
// docs/offload.md); offload_options::cpu_activations = int8 trades that for ggml's faster 8-bit
// activation arithmetic (NMSE ~1e-4 on quantized types).
//
// What overlaps: everything is submitted to the context's one queue without waiting, and the host
// waits only at the end of the call (or when a staging buffer or a slot is still being written:
// a stall). The CPU entries, the staging copies of the prefetch and the caller's work between
// calls run on the host while the device executes. On a GPU the copies of step 2 have no
// dependency on the hit pass, so the driver may run them together; on lavapipe the queue executes
// submissions one after another on the CPU, so only host work overlaps device work there.
// A dedicated transfer queue is not used (one queue family is assumed).
//
// Counters (offload_counters, totals and per layer): accesses = hits + misses (distinct experts per
// call), misses = miss_uploads + miss_cpu, uploads = miss_uploads + prefetch_loads, bytes_uploaded =
// sum of their expert bytes; prefetch_useful: prefetched cells hit before eviction; stalls: host
// waits on a transfer not yet done (a staging entry or a slot being rewritten) plus device passes
// that had to wait for an upload (the uploaded-entries pass, a hit pass whose cell's prefetch was
// still in flight); overlapped_uploads: uploads submitted after a device pass they do not depend on
// (demand uploads behind a hit pass) or ahead of their use (prefetch). The cache's own statistics
// (cache().stats()) count only the device-side requests.
//
// Contract. Thread safety: one object is used by one thread at a time; no other thread may submit
// to the context's queue while forward() or the constructor runs (Vulkan queues are externally
// synchronized). Lifetimes: the host weights (the views) must outlive the object; the context may
// be destroyed first (the device state is shared). forward() allocates nothing after its first
// call (scratch is sized at construction for max_tokens and max_entries). Errors: bad arguments,
// a budget that holds no slot, a call that needs more slots than are free in upload mode, layers
// the Vulkan kernels cannot run: moeroute::error (invalid_argument, capacity, unsupported) naming
// the layer and sizes, nothing changed. Out of device memory, a failed allocation or a lost
// device: moeroute::error (errc::device) naming the bytes being allocated or moved; after a device
// error the object may only be destroyed.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <moeroute/backends/cpu_quant.hpp>
#include <moeroute/backends/ffn_types.hpp>
#include <moeroute/backends/vulkan.hpp>
#include <moeroute/cache/eviction.hpp>
#include <moeroute/cache/expert_cache.hpp>
#include <moeroute/cache/prefetch.hpp>
#include <moeroute/error.hpp>
#include <moeroute/io/gguf_experts.hpp>
#include <moeroute/offload/miss_plan.hpp>
#include <moeroute/residency/residency_set.hpp>

namespace moeroute {

/// One MoE layer's host-resident experts: its description and a view of each expert's weights.
struct offload_layer_source {
  ffn_layer shape;
  std::vector<expert_weights_view> experts;  ///< shape.num_experts views
};

/// Host weights with the storage some views point into (biases decoded to float, or blobs read
/// from a file that is not in memory). Movable; the views stay valid while it and the source live.
struct offload_host_weights {
  std::vector<offload_layer_source> layers;
  std::vector<std::vector<unsigned char>> owned;
};

/// Views of E consecutive expert blobs (weights/layer.hpp layout) starting at `blobs`.
inline offload_layer_source offload_layer_from_blobs(const ffn_layer& s, const void* blobs) {
  offload_layer_source src;
  src.shape = s;
  const auto* base = static_cast<const unsigned char*>(blobs);
  for (int e = 0; e < s.num_experts; ++e) {
    const unsigned char* b = base + static_cast<std::size_t>(e) * s.expert_bytes();
    expert_weights_view v;
    v.gate = b + s.gate_offset();
    v.up = b + s.up_offset();
    v.down = b + s.down_offset();
    if (s.has_bias) {
      const auto* f = reinterpret_cast<const float*>(b + s.bias_offset());
      v.gate_bias = f;
      v.up_bias = f + s.ffn;
      v.down_bias = f + 2 * s.ffn;
    }
    src.experts.push_back(v);
  }
  return src;
}

/// Views of the first `num_layers` MoE layers of a GGUF: gguf_expert_weights::expert_weights (the
/// rows and F32 biases in the mapping, nothing copied); a layer whose biases are not F32, or a file
/// not in memory, is read into the returned storage as expert blobs.
inline offload_host_weights offload_weights_from_gguf(const gguf_expert_weights& w, int num_layers) {
  MOEROUTE_CHECK(num_layers > 0 && num_layers <= w.num_layers(), errc::invalid_argument, w.file().name(), ": ",
                 num_layers, " MoE layers asked for, the file has ", w.num_layers());
  offload_host_weights h;
  for (int l = 0; l < num_layers; ++l) {
    const auto& t = w.layer(l);
    bool in_place = w.file().in_memory();
    for (const gguf_tensor_info* b : {t.gate_bias, t.up_bias, t.down_bias})
      if (b != nullptr && b->type != static_cast<std::uint32_t>(weight_type::f32)) in_place = false;
    if (!in_place) {
      h.owned.emplace_back(t.shape.expert_bytes() * static_cast<std::size_t>(t.shape.num_experts));
      w.read_layer(l, h.owned.back().data());
      h.layers.push_back(offload_layer_from_blobs(t.shape, h.owned.back().data()));
      continue;
    }
    offload_layer_source src;
    src.shape = t.shape;
    for (int e = 0; e < t.shape.num_experts; ++e) src.experts.push_back(w.expert_weights(l, e));
    h.layers.push_back(std::move(src));
  }
  return h;
}

/// Construction options of offloaded_moe.
struct offload_options {
  std::uint64_t budget_bytes = 0;  ///< device bytes for expert slots (slots = budget / slot_bytes())
  std::size_t max_tokens = 1;      ///< T per forward()
  std::size_t max_entries = 0;     ///< routed entries per forward() (0: max_tokens x min(E, 16))
  miss_mode miss = miss_mode::upload;
  pass_split passes = pass_split::auto_;  ///< one or two device passes for a call with hits and uploads (miss_plan.hpp)
  bool cache = true;               ///< false: no reuse across calls, every device expert is uploaded (streaming)
  residency_set pinned;            ///< cells loaded at construction and never evicted (cache mode)
  std::size_t staging_experts = 16;  ///< staging ring entries (one expert each), >= 1
  int cpu_threads = 1;             ///< host threads of the CPU miss path
  /// activation precision of the CPU miss path: f32 = the device's result to float rounding;
  /// int8 = ggml's 8-bit activations, faster, NMSE ~1e-4 against the device on quantized types
  moeroute::cpu_activations cpu_activations = moeroute::cpu_activations::f32;
  miss_costs costs;                ///< zero fields are measured at construction (the CPU cost only when miss is auto)
};

/// Caller-supplied prefetch predictor: given the layer just routed and its distinct experts,
/// writes (expert, probability) pairs of the layer expected next, most likely first, into `out`
/// (cleared by the callee) and returns that layer, or -1 for no prediction.
using offload_prefetch_fn =
    std::function<int(int layer, const std::int32_t* experts, std::size_t n, std::vector<std::pair<std::int32_t, double>>& out)>;

namespace detail {
/// A command buffer and a fence for submit-now, wait-later transfers and passes.
struct offload_submission {
  VkCommandBuffer cmd = VK_NULL_HANDLE;
  VkFence fence = VK_NULL_HANDLE;
  bool pending = false;
  std::uint64_t gen = 0;
};

/// The command pool and fences of an offload engine: the staging ring's submissions and the two
/// device passes. Destroying it waits until the queue is idle.
class offload_commands {
 public:
  offload_commands(std::shared_ptr<vk7_device_state> st, std::size_t ring) : st_(std::move(st)) {
    auto pi = vk7_make<VkCommandPoolCreateInfo>(VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO);
    pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pi.queueFamilyIndex = st_->queue_family;
    vk7_check(vkCreateCommandPool(st_->device, &pi, nullptr, &pool_), "vkCreateCommandPool");
    ring_.resize(ring);
    try {
      for (auto& r : ring_) make(r);
      for (auto& p : pass_) make(p);
    } catch (...) {
      destroy();
      throw;
    }
  }
  offload_commands(const offload_commands&) = delete;
  offload_commands& operator=(const offload_commands&) = delete;
  ~offload_commands() { destroy(); }
  std::vector<offload_submission>& ring() noexcept { return ring_; }
  offload_submission& pass(int p) noexcept { return pass_[p]; }

 private:
  void make(offload_submission& s) {
    auto ai = vk7_make<VkCommandBufferAllocateInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO);
    ai.commandPool = pool_;
    ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    ai.commandBufferCount = 1;
    vk7_check(vkAllocateCommandBuffers(st_->device, &ai, &s.cmd), "vkAllocateCommandBuffers");
    auto fi = vk7_make<VkFenceCreateInfo>(VK_STRUCTURE_TYPE_FENCE_CREATE_INFO);
    vk7_check(vkCreateFence(st_->device, &fi, nullptr, &s.fence), "vkCreateFence");
  }
  void destroy() noexcept {
    vkQueueWaitIdle(st_->queue);
    for (auto* v : {&ring_}) for (auto& s : *v) if (s.fence != VK_NULL_HANDLE) vkDestroyFence(st_->device, s.fence, nullptr);
    for (auto& s : pass_) if (s.fence != VK_NULL_HANDLE) vkDestroyFence(st_->device, s.fence, nullptr);
    ring_.clear();
    if (pool_ != VK_NULL_HANDLE) vkDestroyCommandPool(st_->device, pool_, nullptr);
    pool_ = VK_NULL_HANDLE;
  }
  std::shared_ptr<vk7_device_state> st_;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  std::vector<offload_submission> ring_;
  offload_submission pass_[2];
};
}  // namespace detail

template <class Eviction = lru_eviction>
class offloaded_moe {
 public:
  /// Builds the device side for `layers` (every layer of the model, E, H and F shared; types per
  /// layer). See the contract at the top for the errors.
  offloaded_moe(const vulkan_context& ctx, std::vector<offload_layer_source> layers, const offload_options& opt)
      : st_(ctx.state()), opt_(opt), src_(std::move(layers)) {
    MOEROUTE_CHECK(!src_.empty(), errc::invalid_argument, "offload: no layers");
    const ffn_layer& s0 = src_.front().shape;
    E_ = s0.num_experts;
    H_ = static_cast<std::size_t>(s0.hidden);
    for (std::size_t l = 0; l < src_.size(); ++l) {
      const ffn_layer& s = src_[l].shape;
      const std::string why = check_ffn_layer(s);
      MOEROUTE_CHECK(why.empty(), errc::invalid_argument, "offload: layer ", l, ": ", why);
      MOEROUTE_CHECK(s.num_experts == E_ && s.hidden == s0.hidden && s.ffn == s0.ffn, errc::invalid_argument,
                     "offload: layer ", l, " has E/H/F ", s.num_experts, "/", s.hidden, "/", s.ffn, ", layer 0 has ", E_,
                     "/", s0.hidden, "/", s0.ffn);
      MOEROUTE_CHECK(src_[l].experts.size() == static_cast<std::size_t>(E_), errc::invalid_argument, "offload: layer ",
                     l, " has ", src_[l].experts.size(), " expert views, expected ", E_);
      for (const auto& v : src_[l].experts)
        MOEROUTE_CHECK(v.gate && v.up && v.down && (!s.has_bias || (v.gate_bias && v.up_bias && v.down_bias)),
                       errc::invalid_argument, "offload: layer ", l, ": an expert view has a null pointer");
    }
    MOEROUTE_CHECK(opt_.max_tokens > 0, errc::invalid_argument, "offload: max_tokens must be positive");
    MOEROUTE_CHECK(opt_.staging_experts > 0, errc::invalid_argument, "offload: staging_experts must be positive");
    if (opt_.max_entries == 0) opt_.max_entries = opt_.max_tokens * static_cast<std::size_t>(std::min(E_, 16));
    overlaps_ = ctx.device_type() != VK_PHYSICAL_DEVICE_TYPE_CPU;  // a CPU device runs its queue on the host
    const auto L = static_cast<int>(src_.size());
    const std::uint64_t cells = static_cast<std::uint64_t>(L) * static_cast<std::uint64_t>(E_);

    // one slot size for every layer: the largest slot layout
    stride_ = 0;
    std::size_t big = 0;
    for (std::size_t l = 0; l < src_.size(); ++l) {
      const VkDeviceSize st = vulkan_expert_pool::slot_layout(src_[l].shape)[3];
      if (st > stride_) {
        stride_ = st;
        big = l;
      }
      max_expert_bytes_ = std::max<std::uint64_t>(max_expert_bytes_, src_[l].shape.expert_bytes());
    }
    slots_ = static_cast<std::size_t>(std::min<std::uint64_t>(opt_.budget_bytes / stride_, cells));
    MOEROUTE_CHECK(slots_ > 0, errc::invalid_argument, "offload: a budget of ", opt_.budget_bytes,
                   " bytes holds no expert slot of ", stride_, " bytes");
    MOEROUTE_CHECK(opt_.cache || opt_.pinned.count() == 0, errc::invalid_argument,
                   "offload: pinned cells need the cache (options.cache)");
    const std::uint64_t pool_bytes = static_cast<std::uint64_t>(slots_) * stride_;
    VkDeviceSize heap = 0;
    for (std::uint32_t i = 0; i < st_->mem_props.memoryHeapCount; ++i)
      if (st_->mem_props.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)
        heap = std::max(heap, st_->mem_props.memoryHeaps[i].size);
    MOEROUTE_CHECK(heap == 0 || pool_bytes <= heap, errc::device, "offload: the device pool of ", slots_, " slots x ",
                   stride_, " bytes = ", pool_bytes, " bytes exceeds the device's largest memory heap of ", heap, " bytes");
    try {
      storage_ = std::make_unique<vulkan_expert_pool>(ctx, src_[big].shape, static_cast<int>(slots_));
      staging_ = ctx.make_buffer(static_cast<VkDeviceSize>(opt_.staging_experts) * chunk_bytes(), true);
    } catch (const error& e) {
      detail::fail(e.code(), "offload: allocating the device pool of ", slots_, " slots x ", stride_, " bytes = ",
                   pool_bytes, " bytes and a staging ring of ", opt_.staging_experts, " x ", chunk_bytes(), " bytes: ",
                   e.what());
    }

    // one pool view and two FFN ops (hit pass, upload pass) per distinct layer type
    const vulkan_ffn_config cfg{opt_.max_tokens, opt_.max_entries};
    layer_shape_.resize(src_.size());
    for (std::size_t l = 0; l < src_.size(); ++l) {
      std::size_t k = 0;
      while (k < types_.size() && types_[k].shape != src_[l].shape) ++k;
      if (k == types_.size()) {
        type_state t;
        t.shape = src_[l].shape;
        t.pool = std::make_unique<vulkan_expert_pool>(ctx, *storage_, t.shape);
        for (int p = 0; p < 2; ++p) {
          t.op[p] = std::make_unique<vulkan_ffn>(ctx, *t.pool);
          const std::string why = t.op[p]->can_implement(cfg);
          MOEROUTE_CHECK(why.empty(), errc::unsupported, "offload: layer ", l, " (", weight_type_name(t.shape.gate_type),
                         "/", weight_type_name(t.shape.up_type), "/", weight_type_name(t.shape.down_type), "): ", why);
          t.ws[p] = ctx.make_buffer(std::max<VkDeviceSize>(t.op[p]->workspace_size(cfg), 16), false);
          t.op[p]->initialize(cfg, t.ws[p]);
        }
        types_.push_back(std::move(t));
      }
      layer_shape_[l] = k;
    }

    // the CPU FFN of each layer (views, no copies) for misses computed on the host
    costs_ = opt_.costs;
    layer_cpu_s_.assign(src_.size(), opt_.costs.cpu_s_per_entry);
    cpu_ffn_options co;
    co.threads = std::max(1, opt_.cpu_threads);
    co.activations = opt_.cpu_activations;  // measure_cpu() times this precision
    for (std::size_t l = 0; l < src_.size(); ++l) {
      cpu_.push_back(std::make_unique<cpu_quant_ffn>(src_[l].shape, co));
      for (int e = 0; e < E_; ++e) cpu_.back()->set_expert(e, src_[l].experts[static_cast<std::size_t>(e)]);
    }

    // transfer and compute submissions
    cmds_ = std::make_unique<detail::offload_commands>(st_, opt_.staging_experts);

    // scratch: nothing is allocated per call
    const std::size_t T = opt_.max_tokens, nnz = opt_.max_entries, E = static_cast<std::size_t>(E_);
    batch_.reserve(E_);
    route_.resize(E);
    order_.resize(E);
    dev_.resize(E);
    slot_out_.resize(E);
    table_.assign(E, -1);
    for (auto& c : csr_) {
      c.offsets.resize(T + 1);
      c.ids.resize(nnz);
      c.weights.resize(nnz);
    }
    select_.resize(nnz);
    ybuf_.resize(T * H_);
    slot_sub_.assign(slots_, no_sub);
    slot_gen_.assign(slots_, 0);
    layer_counters_.assign(src_.size(), offload_counters{});
    pred_out_.reserve(E);
    if (opt_.cache) {
      cache_ = std::make_unique<expert_cache<Eviction>>(L, E_, slots_, opt_.pinned);
      prefetched_.assign(static_cast<std::size_t>(cells), 0);
    }

    if (costs_.upload_bytes_per_s <= 0 || costs_.device_s_per_pass <= 0) measure_upload();  // slot 0 is free until the preload
    if (opt_.miss == miss_mode::auto_) measure_cpu();
    if (cache_)  // pinned cells are resident from the start
      for (int l = 0; l < L; ++l)
        for (int e = 0; e < E_; ++e)
          if (cache_->is_pinned(l, e)) {
            upload(l, e, cache_->slot_of(l, e));
            counters_.preload_uploads++;
            counters_.preload_bytes += src_[static_cast<std::size_t>(l)].shape.expert_bytes();
          }
    wait_all();
  }

  offloaded_moe(const offloaded_moe&) = delete;
  offloaded_moe& operator=(const offloaded_moe&) = delete;

  /// Bytes of one device slot for these layers: the largest slot layout (backends/vulkan.hpp).
  /// A budget of n x slot_bytes_of(layers) holds n experts.
  static std::uint64_t slot_bytes_of(const std::vector<offload_layer_source>& layers) {
    VkDeviceSize m = 0;
    for (const auto& l : layers) m = std::max(m, vulkan_expert_pool::slot_layout(l.shape)[3]);
    return m;
  }

  /// Changes the miss mode for the next calls (auto measures the costs not given, once).
  void set_miss_mode(miss_mode m) {
    opt_.miss = m;
    if (m == miss_mode::auto_ && !measured_) measure_cpu();
  }

  int num_layers() const noexcept { return static_cast<int>(src_.size()); }
  int num_experts() const noexcept { return E_; }
  /// Device slots (budget / slot_bytes(), at most layers x experts) and the bytes of one slot
  /// (the largest slot layout of any layer, backends/vulkan.hpp).
  std::size_t slots() const noexcept { return slots_; }
  std::uint64_t slot_bytes() const noexcept { return stride_; }
  /// The cache (nullptr in streaming mode).
  const expert_cache<Eviction>* cache() const noexcept { return cache_.get(); }
  const offload_options& options() const noexcept { return opt_; }
  /// The costs auto mode uses (given or measured); cpu_s_per_entry is the largest layer's.
  const miss_costs& costs() const noexcept { return costs_; }
  /// Measured or given CPU seconds per entry of layer l.
  double cpu_s_per_entry(int l) const { return layer_cpu_s_.at(static_cast<std::size_t>(l)); }
  const offload_counters& counters() const noexcept { return counters_; }
  const offload_counters& layer_counters(int l) const { return layer_counters_.at(static_cast<std::size_t>(l)); }
  void reset_counters() {
    counters_ = offload_counters{};
    std::fill(layer_counters_.begin(), layer_counters_.end(), offload_counters{});
  }

  /// Prefetch with a caller-supplied predictor: after each call, the predicted experts with
  /// probability >= threshold (at most as many as the call had distinct experts) are loaded into
  /// the cache and uploaded. An empty function turns prefetch off. Needs cache mode.
  void set_prefetch(offload_prefetch_fn fn, double threshold = default_prefetch_threshold) {
    MOEROUTE_CHECK(!fn || cache_, errc::invalid_argument, "offload: prefetch needs the cache (options.cache)");
    prefetch_ = std::move(fn);
    threshold_ = threshold;
  }
  /// Prefetch with cache/prefetch.hpp's coactivation_predictor, learned online from the calls.
  void use_coactivation_prefetch(double threshold = default_prefetch_threshold) {
    predictor_.reset(num_layers(), E_);
    set_prefetch(
        [this](int layer, const std::int32_t* ex, std::size_t n, std::vector<std::pair<std::int32_t, double>>& out) {
          predictor_.observe(layer, ex, n);
          return predictor_.predict(layer, ex, n, out);
        },
        threshold);
  }

  /// y (T x H) = the MoE FFN of layer `layer` for the routed tokens (see the contract at the top).
  void forward(int layer, const routing_result_view& r, const float* x, float* y) {
    MOEROUTE_CHECK(layer >= 0 && layer < num_layers(), errc::invalid_argument, "offload: layer ", layer, " outside [0, ",
                   num_layers(), ")");
    const std::string why = check_routing(r, E_);
    MOEROUTE_CHECK(why.empty(), errc::bad_input, "offload: layer ", layer, ": ", why);
    MOEROUTE_CHECK(r.num_tokens <= opt_.max_tokens && r.nnz() <= opt_.max_entries, errc::invalid_argument,
                   "offload: layer ", layer, ": ", r.num_tokens, " tokens and ", r.nnz(), " routed entries exceed max_tokens ",
                   opt_.max_tokens, " / max_entries ", opt_.max_entries);
    MOEROUTE_CHECK(r.num_tokens == 0 || (x && y), errc::invalid_argument, "offload: x or y is null");
    const std::size_t T = r.num_tokens, nnz = r.nnz();
    if (nnz == 0) {
      std::fill(y, y + T * H_, 0.0f);
      return;
    }
    const auto l = static_cast<std::size_t>(layer);
    const ffn_layer& s = src_[l].shape;
    type_state& ts = types_[layer_shape_[l]];
    offload_counters d;
    d.forwards = 1;
    d.entries = nnz;

    // 1. hits and misses, and what happens to each miss
    batch_.build(r);
    const std::size_t n = batch_.size();
    std::size_t unpinned_hits = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const bool hit = cache_ && cache_->contains(layer, batch_.expert(i));
      route_[i] = hit ? expert_route::hit : expert_route::upload;
      if (hit) {
        ++d.hits;
        if (!cache_->is_pinned(layer, batch_.expert(i))) ++unpinned_hits;
      }
    }
    const std::size_t free_slots = cache_ ? cache_->capacity() - cache_->pinned_count() - unpinned_hits : slots_;
    plan_misses(opt_.miss, batch_, s.expert_bytes(), costs_, layer_cpu_s_[l], free_slots, route_.data(), order_.data());
    std::size_t nd = 0, nup = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (route_[i] == expert_route::cpu) continue;
      nup += route_[i] == expert_route::upload;
      dev_[nd++] = batch_.expert(i);
    }
    d.accesses = n;
    d.misses = n - d.hits;
    d.miss_uploads = nup;
    d.miss_cpu = d.misses - nup;
    MOEROUTE_CHECK(opt_.miss != miss_mode::upload || d.miss_cpu == 0, errc::capacity, "offload: layer ", layer, ": ",
                   d.misses, " missing experts of ", s.expert_bytes(), " bytes need slots but only ", free_slots, " of the ",
                   slots_, " slots (", opt_.budget_bytes, " bytes) are free; raise the budget, or use miss mode cpu or auto");

    // the device experts' slots (the cache hears them as one request)
    if (cache_) {
      cache_->request(layer, dev_.data(), nd, slot_out_.data());  // loads exactly the planned uploads
    } else {
      for (std::size_t k = 0; k < nd; ++k) slot_out_[k] = static_cast<std::uint32_t>(k);
    }
    for (std::size_t k = 0; k < nd; ++k) table_[static_cast<std::size_t>(dev_[k])] = static_cast<std::int32_t>(slot_out_[k]);
    ts.pool->set_slot_table(table_.data(), table_.size());
    for (std::size_t k = 0; k < nd; ++k) table_[static_cast<std::size_t>(dev_[k])] = -1;

    // 2. hit pass, uploads, upload pass
    std::size_t nnz_cpu = 0;
    for (std::size_t j = 0; j < nnz; ++j) {
      select_[j] = route_[batch_.index_of(r.ids[j])] == expert_route::cpu ? 1 : 0;
      nnz_cpu += select_[j];
    }
    d.entries_cpu = nnz_cpu;
    bool ran[2] = {false, false};
    bool hit_waits = false;
    for (std::size_t k = 0, i = 0; i < n; ++i) {  // a hit whose prefetch upload is still in flight
      if (route_[i] == expert_route::cpu) continue;
      if (route_[i] == expert_route::hit && slot_busy(slot_out_[k])) hit_waits = true;
      if (route_[i] == expert_route::hit && cache_) {
        const std::uint32_t c = cache_->cell_index(layer, batch_.expert(i));
        if (prefetched_[c]) {
          ++d.prefetch_useful;
          prefetched_[c] = 0;
        }
      }
      ++k;
    }
    if (hit_waits) ++d.stalls;
    const bool split = split_passes(opt_.passes, nd - nup, nup, overlaps_);
    if (split) ran[0] = submit_pass(0, ts, r, x, route_bit(expert_route::hit), hit_waits);
    for (std::size_t k = 0, i = 0; i < n; ++i) {
      if (route_[i] == expert_route::cpu) continue;
      if (route_[i] == expert_route::upload) {
        d.stall_seconds += upload(layer, batch_.expert(i), slot_out_[k], &d.stalls);
        if (cache_) prefetched_[cache_->cell_index(layer, batch_.expert(i))] = 0;
        ++d.uploads;
        d.bytes_uploaded += s.expert_bytes();
        if (ran[0]) ++d.overlapped_uploads;
      }
      ++k;
    }
    if (split)
      ran[1] = submit_pass(1, ts, r, x, route_bit(expert_route::upload), true);
    else  // one pass over every device entry, after the uploads
      ran[0] = submit_pass(0, ts, r, x, route_bit(expert_route::hit) | route_bit(expert_route::upload), nup > 0 || hit_waits);
    if (nup > 0) ++d.stalls;  // the pass over the uploaded entries (either mode) waits for them
    d.device_passes += static_cast<std::uint64_t>(ran[0]) + static_cast<std::uint64_t>(ran[1]);

    // 3. prefetch of the next layer
    if (prefetch_) run_prefetch(layer, n);

    // 4. the CPU entries, while the device works; then the partial sums
    bool y_set = false;
    if (nnz_cpu > 0) {
      const auto c0 = std::chrono::steady_clock::now();
      cpu_[l]->run(ffn_args{r, x, y}, select_.data(), false);
      d.cpu_seconds = seconds_since(c0);
      y_set = true;
    }
    for (int p = 0; p < 2; ++p) {
      if (!ran[p]) continue;
      wait(cmds_->pass(p), "a device FFN pass", 0);
      if (!y_set) {
        ts.op[p]->read_output(y);
        y_set = true;
      } else {
        ts.op[p]->read_output(ybuf_.data());
        for (std::size_t i = 0; i < T * H_; ++i) y[i] += ybuf_[i];
      }
    }
    counters_ += d;
    layer_counters_[l] += d;
  }

 private:
  static constexpr std::uint32_t no_sub = 0xFFFFFFFFu;

  struct type_state {
    ffn_layer shape;
    std::unique_ptr<vulkan_expert_pool> pool;
    std::unique_ptr<vulkan_ffn> op[2];
    vulkan_buffer ws[2];
  };
  struct csr_buffers {
    std::vector<std::uint32_t> offsets;
    std::vector<std::int32_t> ids;
    std::vector<float> weights;
  };

  static double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  VkDeviceSize chunk_bytes() const noexcept { return (max_expert_bytes_ + 15) / 16 * 16; }

  void check(VkResult r, const char* what, std::uint64_t bytes) const {
    if (r == VK_SUCCESS) return;
    if (bytes)
      detail::fail(errc::device, "offload: ", what, " (", bytes, " bytes) failed: ", detail::vk7_result_name(r));
    detail::fail(errc::device, "offload: ", what, " failed: ", detail::vk7_result_name(r));
  }

  VkCommandBuffer begin(detail::offload_submission& s) {
    check(vkResetCommandBuffer(s.cmd, 0), "vkResetCommandBuffer", 0);
    auto bi = detail::vk7_make<VkCommandBufferBeginInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO);
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    check(vkBeginCommandBuffer(s.cmd, &bi), "vkBeginCommandBuffer", 0);
    return s.cmd;
  }
  void submit(detail::offload_submission& s, const char* what, std::uint64_t bytes) {
    check(vkEndCommandBuffer(s.cmd), what, bytes);
    auto si = detail::vk7_make<VkSubmitInfo>(VK_STRUCTURE_TYPE_SUBMIT_INFO);
    si.commandBufferCount = 1;
    si.pCommandBuffers = &s.cmd;
    check(vkResetFences(st_->device, 1, &s.fence), what, bytes);
    check(vkQueueSubmit(st_->queue, 1, &si, s.fence), what, bytes);
    s.pending = true;
    ++s.gen;
  }
  bool done(detail::offload_submission& s) {
    if (!s.pending) return true;
    const VkResult r = vkGetFenceStatus(st_->device, s.fence);
    if (r == VK_NOT_READY) return false;
    check(r, "vkGetFenceStatus", 0);
    s.pending = false;
    return true;
  }
  // Waits for s; returns the seconds waited (0 when it was done).
  double wait(detail::offload_submission& s, const char* what, std::uint64_t bytes) {
    if (done(s)) return 0;
    const auto t0 = std::chrono::steady_clock::now();
    check(vkWaitForFences(st_->device, 1, &s.fence, VK_TRUE, UINT64_MAX), what, bytes);
    s.pending = false;
    return seconds_since(t0);
  }
  void wait_all() {
    for (auto& r : cmds_->ring()) wait(r, "an expert upload", chunk_bytes());
    for (int p = 0; p < 2; ++p) wait(cmds_->pass(p), "a device FFN pass", 0);
  }
  // True while the last upload into slot is still executing.
  bool slot_busy(std::uint32_t slot) {
    const std::uint32_t i = slot_sub_[slot];
    return i != no_sub && cmds_->ring()[i].gen == slot_gen_[slot] && !done(cmds_->ring()[i]);
  }

  // Copies expert (layer, e) into slot through the next staging entry and submits the copy without
  // waiting. Host waits (a staging entry or the slot still being written) add to *stalls; returns
  // the seconds waited.
  double upload(int layer, int e, std::uint32_t slot, std::uint64_t* stalls = nullptr) {
    const offload_layer_source& src = src_[static_cast<std::size_t>(layer)];
    const ffn_layer& s = src.shape;
    const expert_weights_view& v = src.experts[static_cast<std::size_t>(e)];
    type_state& ts = types_[layer_shape_[static_cast<std::size_t>(layer)]];
    double waited = 0;
    const std::uint32_t prev = slot_sub_[slot];
    if (prev != no_sub && cmds_->ring()[prev].gen == slot_gen_[slot] && !done(cmds_->ring()[prev])) {
      waited += wait(cmds_->ring()[prev], "an expert upload", s.expert_bytes());
      if (stalls) ++*stalls;
    }
    const std::uint32_t ri = next_ring_;
    next_ring_ = (next_ring_ + 1) % static_cast<std::uint32_t>(cmds_->ring().size());
    detail::offload_submission& sub = cmds_->ring()[ri];
    if (!done(sub)) {
      waited += wait(sub, "an expert upload", s.expert_bytes());
      if (stalls) ++*stalls;
    }
    const VkDeviceSize off = static_cast<VkDeviceSize>(ri) * chunk_bytes();
    auto* p = static_cast<unsigned char*>(staging_.mapped()) + off;
    std::memcpy(p, v.gate, s.gate_bytes());
    std::memcpy(p + s.up_offset(), v.up, s.up_bytes());
    std::memcpy(p + s.down_offset(), v.down, s.down_bytes());
    const auto F = static_cast<std::size_t>(s.ffn);
    if (s.has_bias) {
      std::memcpy(p + s.bias_offset(), v.gate_bias, F * 4);
      std::memcpy(p + s.bias_offset() + F * 4, v.up_bias, F * 4);
      std::memcpy(p + s.bias_offset() + 2 * F * 4, v.down_bias, H_ * 4);
    }
    const vulkan_expert_pool& pool = *ts.pool;
    const VkDeviceSize spb = pool.slots_per_buffer(), base = (slot % spb) * stride_;
    const VkBufferCopy regions[4] = {{off + s.gate_offset(), base, s.gate_bytes()},
                                     {off + s.up_offset(), base + pool.slot_up_offset(), s.up_bytes()},
                                     {off + s.down_offset(), base + pool.slot_down_offset(), s.down_bytes()},
                                     {off + s.bias_offset(), base + pool.slot_bias_offset(), s.bias_bytes()}};
    VkCommandBuffer cmd = begin(sub);
    vkCmdCopyBuffer(cmd, staging_.handle(), pool.buffer(static_cast<int>(slot / spb)).handle(), s.has_bias ? 4 : 3, regions);
    submit(sub, "an expert upload", s.expert_bytes());
    slot_sub_[slot] = ri;
    slot_gen_[slot] = sub.gen;
    ts.pool->mark_loaded(static_cast<int>(slot), s.expert_bytes());
    return waited;
  }

  // Records and submits the device pass over the entries whose class is in `want` (a mask of
  // route_bit; op p); false when none.
  bool submit_pass(int p, type_state& ts, const routing_result_view& r, const float* x, unsigned want, bool after_uploads) {
    csr_buffers& c = csr_[p];
    const std::size_t nnz = csr_subset(r, batch_, route_.data(), want, c.offsets.data(), c.ids.data(), c.weights.data());
    if (nnz == 0) return false;
    const routing_result_view sub{r.num_tokens, E_, c.offsets.data(), c.ids.data(), c.weights.data()};
    ts.op[p]->set_inputs(ffn_args{sub, x, nullptr});
    VkCommandBuffer cmd = begin(cmds_->pass(p));
    if (after_uploads) {  // the uploads submitted before this pass are visible to it
      auto mb = detail::vk7_make<VkMemoryBarrier>(VK_STRUCTURE_TYPE_MEMORY_BARRIER);
      mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
      mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT;
      vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &mb, 0, nullptr,
                           0, nullptr);
    }
    ts.op[p]->run(cmd);
    submit(cmds_->pass(p), "a device FFN pass", 0);
    return true;
  }

  void run_prefetch(int layer, std::size_t n) {
    const int nl = prefetch_(layer, batch_.experts(), n, pred_out_);
    if (nl < 0 || nl >= num_layers()) return;
    std::size_t issued = 0;
    offload_counters& lc = layer_counters_[static_cast<std::size_t>(nl)];
    const std::uint64_t bytes = src_[static_cast<std::size_t>(nl)].shape.expert_bytes();
    for (const auto& [b, p] : pred_out_) {
      if (p < threshold_ || issued == n) break;
      if (b < 0 || b >= E_) continue;
      ++issued;
      const std::uint32_t cell = cache_->cell_index(nl, b);
      if (!cache_->prefetch(cell)) continue;
      std::uint64_t stalls = 0;
      const double w = upload(nl, b, cache_->slot_of(nl, b), &stalls);
      prefetched_[cell] = 1;
      for (offload_counters* c : {&counters_, &lc}) {
        c->uploads++;
        c->prefetch_loads++;
        c->bytes_uploaded += bytes;
        c->prefetch_bytes += bytes;
        c->overlapped_uploads++;
        c->stalls += stalls;
        c->stall_seconds += w;
      }
    }
  }

  // Upload rate through the staging ring into slot 0 and the time of one device pass (best of three
  // each; each only when not given), before any cell is loaded.
  void measure_upload() {
    std::size_t big = 0;
    for (std::size_t l = 0; l < src_.size(); ++l)
      if (src_[l].shape.expert_bytes() > src_[big].shape.expert_bytes()) big = l;
    double best = 1e30;
    for (int i = 0; i < 3; ++i) {  // through one staging entry: its first touch is not the steady state
      next_ring_ = 0;
      const auto t0 = std::chrono::steady_clock::now();
      upload(static_cast<int>(big), 0, 0);
      wait_all();
      best = std::min(best, seconds_since(t0));
    }
    if (costs_.upload_bytes_per_s <= 0)
      costs_.upload_bytes_per_s = static_cast<double>(src_[big].shape.expert_bytes()) / std::max(best, 1e-9);
    slot_sub_[0] = no_sub;
    if (costs_.device_s_per_pass <= 0) {  // one pass of one entry on the expert just uploaded
      type_state& ts = types_[layer_shape_[big]];
      table_[0] = 0;
      ts.pool->set_slot_table(table_.data(), table_.size());
      table_[0] = -1;
      std::vector<float> x(H_, 0.5f), y(H_);
      const std::uint32_t off[2] = {0, 1};
      const std::int32_t id = 0;
      const float w = 1.0f;
      best = 1e30;
      for (int i = 0; i < 3; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        ts.op[0]->forward(ffn_args{routing_result_view{1, E_, off, &id, &w}, x.data(), y.data()});
        best = std::min(best, seconds_since(t0));
      }
      costs_.device_s_per_pass = best;
    }
  }

  // CPU seconds per entry of each layer (one token, one expert, best of three) unless given.
  void measure_cpu() {
    if (opt_.costs.cpu_s_per_entry <= 0) {
      std::vector<float> x(H_, 0.5f), y(H_);
      const std::uint32_t off[2] = {0, 1};
      const std::int32_t id = 0;
      const float w = 1.0f;
      const routing_result_view one{1, E_, off, &id, &w};
      for (std::size_t l = 0; l < src_.size(); ++l) {
        double best = 1e30;
        for (std::size_t m = 0; m < l && best == 1e30; ++m)  // layers of one type share the figure
          if (src_[m].shape == src_[l].shape) best = layer_cpu_s_[m];
        if (best == 1e30) {
          for (int i = 0; i < 3; ++i) {
            const auto t0 = std::chrono::steady_clock::now();
            cpu_[l]->run(ffn_args{one, x.data(), y.data()}, nullptr, false);
            best = std::min(best, seconds_since(t0));
          }
        }
        layer_cpu_s_[l] = best;
      }
    }
    costs_.cpu_s_per_entry = *std::max_element(layer_cpu_s_.begin(), layer_cpu_s_.end());
    measured_ = true;
  }

  std::shared_ptr<detail::vk7_device_state> st_;
  offload_options opt_;
  std::vector<offload_layer_source> src_;
  int E_ = 0;
  std::size_t H_ = 0;
  VkDeviceSize stride_ = 0;
  std::uint64_t max_expert_bytes_ = 0;
  std::size_t slots_ = 0;
  bool overlaps_ = true;  // the device runs a pass while copies execute (not a CPU Vulkan device)
  std::unique_ptr<vulkan_expert_pool> storage_;
  vulkan_buffer staging_;
  std::vector<type_state> types_;
  std::vector<std::size_t> layer_shape_;
  std::vector<std::unique_ptr<cpu_quant_ffn>> cpu_;
  std::vector<double> layer_cpu_s_;
  miss_costs costs_;
  bool measured_ = false;
  std::unique_ptr<detail::offload_commands> cmds_;  // after the buffers: destroyed (queue idle) first
  std::uint32_t next_ring_ = 0;
  std::unique_ptr<expert_cache<Eviction>> cache_;
  layer_batch batch_;
  std::vector<expert_route> route_;
  std::vector<std::uint32_t> order_, slot_out_, slot_sub_;
  std::vector<std::uint64_t> slot_gen_;
  std::vector<std::int32_t> dev_, table_;
  csr_buffers csr_[2];
  std::vector<std::uint8_t> select_, prefetched_;
  std::vector<float> ybuf_;
  offload_counters counters_;
  std::vector<offload_counters> layer_counters_;
  offload_prefetch_fn prefetch_;
  double threshold_ = default_prefetch_threshold;
  coactivation_predictor predictor_;
  std::vector<std::pair<std::int32_t, double>> pred_out_;
};

}  // namespace moeroute
