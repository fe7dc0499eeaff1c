#pragma once
// Vulkan backend of the grouped SwiGLU expert FFN (see weights/layer.hpp for the math and the
// expert blob layout). Layers it computes: every weight_type (f32, f16, bf16, q8_0, q4_0, q4_1,
// q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs, mxfp4), read on the device as stored
// (no dequantized copy), gate, up and down each of its own type, optional f32 expert biases,
// swiglu or swiglu_oai; hidden and ffn multiples of 32 (256 for the 256-value block types).
// can_implement says why otherwise.
//
//   vulkan_context ctx;                                   // device choice, validation (context.hpp)
//   vulkan_expert_pool pool(ctx, shape, num_slots);       // device slots for expert weights
//   pool.upload_expert(slot, blob, bytes);                // through a staging buffer, bytes counted
//   pool.set_slot_table(table, E);                        // expert -> slot (-1: not resident)
//   vulkan_ffn op(ctx, pool);
//   vulkan_ffn_config cfg{max_tokens, max_nnz};
//   if (auto why = op.can_implement(cfg); !why.empty()) ...
//   vulkan_buffer ws = ctx.make_buffer(op.workspace_size(cfg), false);
//   op.initialize(cfg, ws);
//   op.forward(args);        // or: op.set_inputs(args); op.run(cmd); submit; op.read_output(y)
//
// Kernels: a grouping pre-pass on the device (per-expert entry lists from the CSR result), a fused
// gate+up matmul with SiLU * up, a down matmul that writes w * (W_down a) per (token, slot) entry,
// and a per-token reduction in slot order (deterministic: no float atomics). Each matmul has a
// mat-vec kernel (experts with at most 4 entries; the reduction dimension split across lanes) and
// a tiled kernel (more entries; 4 whole rows x 8 tokens per lane), see glsl/matmul.comp. Weights,
// x and the activations are read as uniform texel buffers. Experts with no tokens cost nothing:
// the grouping pass lists the experts with entries per pool buffer (one list per kernel) and
// writes the indirect dispatch sizes; zero-gated experts are simply absent from the CSR.
// The weight pool is split into buffers of at most maxTexelBufferElements x 16 bytes (and
// maxMemoryAllocationSize, and 2 GiB) with slots never straddling two; the matmuls read them as
// uniform texel buffers and are dispatched once per pool buffer. In a slot, the gate, up and down
// matrices and the biases each start at a multiple of 16 bytes (upload_expert places the parts of
// the blob), so every block starts at a multiple of gcd(16, block bytes).
//
// Pipelines: one SPIR-V module per (kernel, weight type) (spirv/matmul.hpp, generated from
// glsl/matmul.comp with TA = the ggml type id), chosen when the op is built for the pool's layer:
// gate+up for the gate/up type, down for the down type. A layer whose gate and up types differ
// uses the two mixed gate+up modules, with both types as specialization constants.

#include <moeroute/backends/ffn_types.hpp>
#include <moeroute/weights/layer.hpp>
#include <moeroute/weights/types.hpp>
#include <moeroute/backends/vulkan/context.hpp>
#include <moeroute/backends/vulkan/spirv/group.hpp>
#include <moeroute/backends/vulkan/spirv/matmul.hpp>
#include <moeroute/backends/vulkan/spirv/reduce.hpp>
#include <moeroute/error.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace moeroute {

namespace detail {
inline VkDeviceSize vk7_round_up(VkDeviceSize v, VkDeviceSize a) noexcept { return (v + a - 1) / a * a; }

/// Push constants shared by every kernel (must match `Params` in the GLSL sources). rbh / rbu /
/// rbf: bytes per gate / up / down row; flags: bit 0 biases, bit 1 swiglu_oai.
struct vk7_params {
  std::uint32_t T, nnz, E, H, F, buf_index, spb, stride, up_off, down_off, rbh, rbf, nb, rbu, bias_off, flags;
};

/// One SPIR-V module: its words and size in bytes.
struct vk7_spirv {
  const std::uint32_t* words = nullptr;
  std::size_t bytes = 0;
};
template <std::size_t N>
constexpr vk7_spirv vk7_spv(const std::uint32_t (&w)[N]) noexcept {
  return {w, sizeof(w)};
}

/// The matmul modules of one weight type: gate+up tiled / mat-vec, down tiled / mat-vec.
struct vk7_matmul_modules {
  vk7_spirv gate_up, gate_up_mv, down, down_mv;
};
/// The modules of type t (false for a type without kernels).
inline bool vk7_modules(weight_type t, vk7_matmul_modules& m) noexcept {
  namespace sp = spirv;
#define MOEROUTE_VK7_MODULES(name)                                                                            \
  m = {vk7_spv(sp::vk7_gate_up_##name##_spv), vk7_spv(sp::vk7_gate_up_mv_##name##_spv), vk7_spv(sp::vk7_down_##name##_spv), \
       vk7_spv(sp::vk7_down_mv_##name##_spv)};                                                                \
  return true
  switch (t) {
    case weight_type::f32: MOEROUTE_VK7_MODULES(f32);
    case weight_type::f16: MOEROUTE_VK7_MODULES(f16);
    case weight_type::bf16: MOEROUTE_VK7_MODULES(bf16);
    case weight_type::q8_0: MOEROUTE_VK7_MODULES(q8_0);
    case weight_type::q4_0: MOEROUTE_VK7_MODULES(q4_0);
    case weight_type::q4_1: MOEROUTE_VK7_MODULES(q4_1);
    case weight_type::q5_0: MOEROUTE_VK7_MODULES(q5_0);
    case weight_type::q5_1: MOEROUTE_VK7_MODULES(q5_1);
    case weight_type::q2_k: MOEROUTE_VK7_MODULES(q2_k);
    case weight_type::q3_k: MOEROUTE_VK7_MODULES(q3_k);
    case weight_type::q4_k: MOEROUTE_VK7_MODULES(q4_k);
    case weight_type::q5_k: MOEROUTE_VK7_MODULES(q5_k);
    case weight_type::q6_k: MOEROUTE_VK7_MODULES(q6_k);
    case weight_type::iq4_nl: MOEROUTE_VK7_MODULES(iq4_nl);
    case weight_type::iq4_xs: MOEROUTE_VK7_MODULES(iq4_xs);
    case weight_type::mxfp4: MOEROUTE_VK7_MODULES(mxfp4);
  }
#undef MOEROUTE_VK7_MODULES
  return false;
}
}  // namespace detail

/// Device pool of expert weight slots plus the slot table (expert -> slot).
class vulkan_expert_pool {
 public:
  /// num_slots experts of `shape` can be resident at once. max_buffer_bytes (0 = device limit)
  /// caps each pool buffer below the device's limits (maxTexelBufferElements x 16 bytes,
  /// maxMemoryAllocationSize) and 2 GiB.
  vulkan_expert_pool(const vulkan_context& ctx, const ffn_layer& shape, int num_slots, VkDeviceSize max_buffer_bytes = 0)
      : st_(ctx.state()), shape_(shape), cmds_(ctx.state()) {
    const std::string why = check_ffn_layer(shape);
    MOEROUTE_CHECK(why.empty(), errc::invalid_argument, "vulkan_expert_pool: ", why);
    MOEROUTE_CHECK(num_slots > 0, errc::invalid_argument, "vulkan_expert_pool: num_slots must be positive");
    const auto layout = slot_layout(shape);
    up_off_ = layout[0];
    down_off_ = layout[1];
    bias_off_ = layout[2];
    stride_ = layout[3];
    // The kernels read a pool buffer as a texel buffer of 16-byte texels with 32-bit byte offsets.
    const VkDeviceSize texel_cap = static_cast<VkDeviceSize>(ctx.limits().maxTexelBufferElements) * 16;
    VkDeviceSize cap = std::min<VkDeviceSize>({texel_cap, ctx.max_allocation(), VkDeviceSize{1} << 31});
    if (max_buffer_bytes != 0) cap = std::min(cap, max_buffer_bytes);
    spb_ = cap / stride_;
    MOEROUTE_CHECK(spb_ > 0, errc::unsupported, "vulkan_expert_pool: one expert slot (", stride_,
                   " bytes) exceeds the per-buffer limit of ", cap,
                   " bytes (maxTexelBufferElements x 16, maxMemoryAllocationSize, 2 GiB)");
    num_slots_ = num_slots;
    const VkDeviceSize n = static_cast<VkDeviceSize>(num_slots);
    for (VkDeviceSize first = 0; first < n; first += spb_) {
      const VkDeviceSize slots = std::min(spb_, n - first);
      buffers_.push_back(ctx.make_buffer(slots * stride_, false));
      views_.emplace_back(st_, buffers_.back().handle(), VK_FORMAT_R32G32B32A32_UINT);
    }
    staging_ = ctx.make_buffer(std::max<VkDeviceSize>(shape.expert_bytes(), 1), true);
    table_buf_ = ctx.make_buffer(static_cast<VkDeviceSize>(shape.num_experts) * 4, true);
    table_.assign(static_cast<std::size_t>(shape.num_experts), -1);
    loaded_.assign(static_cast<std::size_t>(num_slots), false);
    std::memcpy(table_buf_.mapped(), table_.data(), table_.size() * 4);
  }

  /// A pool for layers of `shape` over the device slots of `storage` (which must outlive it and
  /// must not move): the same buffers, slot count, stride and slots per buffer, with this shape's
  /// offsets inside a slot, its own slot table, staging buffer and loaded flags (all false). Lets
  /// layers of different types share one device pool (offload/offloaded_moe.hpp). A slot of
  /// `shape` larger than storage.slot_stride() is errc::invalid_argument naming both sizes.
  vulkan_expert_pool(const vulkan_context& ctx, const vulkan_expert_pool& storage, const ffn_layer& shape)
      : st_(ctx.state()), shape_(shape), cmds_(ctx.state()), storage_(&storage) {
    const std::string why = check_ffn_layer(shape);
    MOEROUTE_CHECK(why.empty(), errc::invalid_argument, "vulkan_expert_pool: ", why);
    const auto layout = slot_layout(shape);
    MOEROUTE_CHECK(layout[3] <= storage.slot_stride(), errc::invalid_argument, "vulkan_expert_pool: a slot of this layer needs ",
                   layout[3], " bytes but the shared pool's slots hold ", storage.slot_stride());
    up_off_ = layout[0];
    down_off_ = layout[1];
    bias_off_ = layout[2];
    stride_ = storage.slot_stride();
    spb_ = storage.slots_per_buffer();
    num_slots_ = storage.num_slots();
    staging_ = ctx.make_buffer(std::max<VkDeviceSize>(shape.expert_bytes(), 1), true);
    table_buf_ = ctx.make_buffer(static_cast<VkDeviceSize>(shape.num_experts) * 4, true);
    table_.assign(static_cast<std::size_t>(shape.num_experts), -1);
    loaded_.assign(static_cast<std::size_t>(num_slots_), false);
    std::memcpy(table_buf_.mapped(), table_.data(), table_.size() * 4);
  }

  const ffn_layer& shape() const noexcept { return shape_; }
  int num_slots() const noexcept { return num_slots_; }
  /// Number of device buffers the pool is split into.
  int num_buffers() const noexcept { return storage_ ? storage_->num_buffers() : static_cast<int>(buffers_.size()); }
  std::uint32_t slots_per_buffer() const noexcept { return static_cast<std::uint32_t>(spb_); }
  VkDeviceSize slot_stride() const noexcept { return stride_; }
  /// Slot layout of a layer: offsets of the up rows, the down rows and the biases, then the slot
  /// stride. Gate, up, down rows and biases each start at a multiple of 16 bytes; 2 spare bytes
  /// at the end.
  static std::array<VkDeviceSize, 4> slot_layout(const ffn_layer& s) noexcept {
    std::array<VkDeviceSize, 4> o{};
    o[0] = detail::vk7_round_up(s.gate_bytes(), 16);
    o[1] = detail::vk7_round_up(o[0] + s.up_bytes(), 16);
    o[2] = detail::vk7_round_up(o[1] + s.down_bytes(), 16);
    o[3] = detail::vk7_round_up(o[2] + s.bias_bytes() + 2, 16);
    return o;
  }
  /// Byte offsets of the up rows, the down rows and the biases inside a slot (the gate rows start
  /// at 0); multiples of 16.
  VkDeviceSize slot_up_offset() const noexcept { return up_off_; }
  VkDeviceSize slot_down_offset() const noexcept { return down_off_; }
  VkDeviceSize slot_bias_offset() const noexcept { return bias_off_; }
  /// Bytes copied host -> device by upload_expert so far.
  std::uint64_t transfer_bytes() const noexcept { return transfer_bytes_; }

  /// Copies an expert blob (shape().expert_bytes() bytes, layout in weights/layer.hpp) into a slot
  /// through the staging buffer, each part to its slot offset, and waits for the copy.
  void upload_expert(int slot, const void* blob, std::size_t bytes) {
    MOEROUTE_CHECK(slot >= 0 && slot < num_slots_, errc::invalid_argument, "vulkan_expert_pool: slot ", slot,
                   " outside [0, ", num_slots_, ")");
    MOEROUTE_CHECK(bytes == shape_.expert_bytes(), errc::bad_input, "vulkan_expert_pool: expert blob has ", bytes,
                   " bytes, expected ", shape_.expert_bytes());
    std::memcpy(staging_.mapped(), blob, bytes);
    const auto s = static_cast<VkDeviceSize>(slot);
    VkCommandBuffer cmd = cmds_.begin();
    const VkDeviceSize base = (s % spb_) * stride_;
    const VkBufferCopy regions[4] = {{shape_.gate_offset(), base, shape_.gate_bytes()},
                                     {shape_.up_offset(), base + up_off_, shape_.up_bytes()},
                                     {shape_.down_offset(), base + down_off_, shape_.down_bytes()},
                                     {shape_.bias_offset(), base + bias_off_, shape_.bias_bytes()}};
    vkCmdCopyBuffer(cmd, staging_.handle(), buffer(static_cast<int>(s / spb_)).handle(), shape_.has_bias ? 4 : 3,
                    regions);
    cmds_.submit_and_wait();
    transfer_bytes_ += bytes;
    loaded_[static_cast<std::size_t>(slot)] = true;
  }

  /// Sets the slot of every expert (n == num_experts; -1 = not resident). Takes effect for the
  /// next recorded run.
  void set_slot_table(const std::int32_t* table, std::size_t n) {
    MOEROUTE_CHECK(n == table_.size(), errc::invalid_argument, "vulkan_expert_pool: slot table has ", n,
                   " entries, expected ", table_.size());
    for (std::size_t e = 0; e < n; ++e)
      MOEROUTE_CHECK(table[e] >= -1 && table[e] < num_slots_, errc::invalid_argument,
                     "vulkan_expert_pool: slot table entry ", e, " = ", table[e], " outside [-1, ", num_slots_, ")");
    table_.assign(table, table + n);
    std::memcpy(table_buf_.mapped(), table_.data(), n * 4);
  }

  /// The slot of expert e, or -1.
  int slot_of(int e) const { return table_[static_cast<std::size_t>(e)]; }
  /// Whether a slot has received weights.
  bool slot_loaded(int s) const { return loaded_[static_cast<std::size_t>(s)]; }
  /// Records that the caller copied an expert of this shape into `slot` by its own transfer
  /// (commands it submitted to this device's queue, ordered before any run that reads the slot):
  /// the slot counts as loaded and `bytes` are added to transfer_bytes().
  void mark_loaded(int slot, std::uint64_t bytes) {
    MOEROUTE_CHECK(slot >= 0 && slot < num_slots_, errc::invalid_argument, "vulkan_expert_pool: slot ", slot,
                   " outside [0, ", num_slots_, ")");
    loaded_[static_cast<std::size_t>(slot)] = true;
    transfer_bytes_ += bytes;
  }

  const vulkan_buffer& buffer(int i) const {
    return storage_ ? storage_->buffer(i) : buffers_[static_cast<std::size_t>(i)];
  }
  /// Pool buffer i as a uniform texel buffer of uvec4 texels (how the kernels read weights).
  const vulkan_buffer_view& view(int i) const { return storage_ ? storage_->view(i) : views_[static_cast<std::size_t>(i)]; }
  const vulkan_buffer& table_buffer() const noexcept { return table_buf_; }

 private:
  std::shared_ptr<detail::vk7_device_state> st_;
  ffn_layer shape_;
  vulkan_commands cmds_;
  VkDeviceSize stride_ = 0, spb_ = 0, up_off_ = 0, down_off_ = 0, bias_off_ = 0;
  int num_slots_ = 0;
  std::vector<vulkan_buffer> buffers_;
  std::vector<vulkan_buffer_view> views_;
  vulkan_buffer staging_, table_buf_;
  std::vector<std::int32_t> table_;
  std::vector<bool> loaded_;
  std::uint64_t transfer_bytes_ = 0;
  const vulkan_expert_pool* storage_ = nullptr;  // the pool whose buffers this one shares, or null
};

/// Capacity an initialized vulkan_ffn accepts per call.
struct vulkan_ffn_config {
  std::size_t max_tokens = 1;  ///< T per call
  std::size_t max_nnz = 1;     ///< routed (token, expert) pairs per call
};

/// The grouped SwiGLU expert FFN op (CUTLASS-style: can_implement, workspace_size, initialize, run).
class vulkan_ffn {
 public:
  static constexpr int kMaxExperts = 4096;  ///< limit of the grouping pre-pass (shared counters)

  vulkan_ffn(const vulkan_context& ctx, const vulkan_expert_pool& pool)
      : st_(ctx.state()), ctx_limits_(ctx.limits()), pool_(&pool), cmds_(ctx.state()) {
    create_pipelines();
  }
  vulkan_ffn(const vulkan_ffn&) = delete;
  vulkan_ffn& operator=(const vulkan_ffn&) = delete;
  ~vulkan_ffn() { destroy(); }

  /// Empty when the op can run the pool's shape with this capacity on this device, else the reason.
  std::string can_implement(const vulkan_ffn_config& c) const {
    const ffn_layer& s = pool_->shape();
    const auto& lim = ctx_limits_;
    std::string why = check_ffn_layer(s);
    if (!why.empty()) return why;
    why = unsupported_layer(s);
    if (!why.empty()) return why;
    if (s.hidden % 32 != 0 || s.ffn % 32 != 0)
      return detail::concat("hidden (", s.hidden, ") and ffn (", s.ffn, ") must be multiples of 32");
    if (s.num_experts > kMaxExperts) return detail::concat("num_experts ", s.num_experts, " > ", kMaxExperts);
    if (c.max_tokens == 0 || c.max_nnz == 0) return "max_tokens and max_nnz must be positive";
    if (static_cast<std::uint64_t>(s.num_experts) > lim.maxComputeWorkGroupCount[1] ||
        c.max_tokens > lim.maxComputeWorkGroupCount[1])
      return detail::concat("num_experts or max_tokens above maxComputeWorkGroupCount[1] = ", lim.maxComputeWorkGroupCount[1]);
    if (static_cast<std::uint64_t>(s.hidden) / 64 + 1 > lim.maxComputeWorkGroupCount[0]) return "hidden too large for maxComputeWorkGroupCount[0]";
    if (lim.maxComputeWorkGroupInvocations < 256 || lim.maxComputeWorkGroupSize[0] < 256) return "device allows fewer than 256 invocations per workgroup";
    if (lim.maxComputeSharedMemorySize < static_cast<std::uint32_t>(kMaxExperts) * 4)
      return detail::concat("device has ", lim.maxComputeSharedMemorySize, " bytes of shared memory, the kernels need ", kMaxExperts * 4);
    const std::uint64_t H = static_cast<std::uint64_t>(s.hidden), F = static_cast<std::uint64_t>(s.ffn);
    const std::uint64_t biggest = std::max<std::uint64_t>({c.max_tokens * H * 4, c.max_nnz * H * 4, c.max_nnz * F * 4});
    if (biggest > lim.maxStorageBufferRange)
      return detail::concat("a per-call buffer needs ", biggest, " bytes > maxStorageBufferRange ", lim.maxStorageBufferRange,
                            ": split the batch into smaller calls");
    if (std::max(c.max_tokens * H, c.max_nnz * F) / 4 > lim.maxTexelBufferElements)
      return detail::concat("x or the activations need more than maxTexelBufferElements = ", lim.maxTexelBufferElements,
                            " texels: split the batch into smaller calls");
    if (c.max_nnz * std::max(H, F) >= (1ull << 32) || c.max_tokens * H >= (1ull << 32)) return "indices exceed 32 bits";
    return {};
  }

  /// Bytes of device workspace initialize() needs.
  std::size_t workspace_size(const vulkan_ffn_config& c) const {
    return static_cast<std::size_t>(workspace_layout(c).back());
  }

  /// Binds a device workspace of at least workspace_size(c) bytes (it must outlive the op's use),
  /// allocates the host-visible
  /// input/output buffer for c and writes the descriptor sets. Throws with the reason when
  /// can_implement(c) fails.
  void initialize(const vulkan_ffn_config& c, const vulkan_buffer& workspace) {
    const std::string why = can_implement(c);
    MOEROUTE_CHECK(why.empty(), errc::unsupported, "vulkan_ffn: ", why);
    MOEROUTE_CHECK(workspace.size() >= workspace_size(c), errc::capacity, "vulkan_ffn: workspace has ", workspace.size(),
                   " bytes, needs ", workspace_size(c));
    cfg_ = c;
    workspace_ = workspace.handle();
    const auto ws = workspace_layout(c);
    const auto io = io_layout(c);
    io_ = vulkan_buffer(st_, io.back(), true);
    x_view_ = vulkan_buffer_view(st_, io_.handle(), VK_FORMAT_R32G32B32A32_SFLOAT, io[3], io[4] - io[3]);
    act_view_ = vulkan_buffer_view(st_, workspace.handle(), VK_FORMAT_R32G32B32A32_SFLOAT, ws[3], ws[4] - ws[3]);
    if (dpool_ != VK_NULL_HANDLE) vkDestroyDescriptorPool(st_->device, dpool_, nullptr);
    dpool_ = VK_NULL_HANDLE;
    const auto nb = static_cast<std::uint32_t>(pool_->num_buffers());
    const VkDescriptorPoolSize ps[2] = {{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, (kBindings - 3) * nb},
                                        {VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, 3 * nb}};
    auto pi = detail::vk7_make<VkDescriptorPoolCreateInfo>(VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO);
    pi.maxSets = nb;
    pi.poolSizeCount = 2;
    pi.pPoolSizes = ps;
    detail::vk7_check(vkCreateDescriptorPool(st_->device, &pi, nullptr, &dpool_), "vkCreateDescriptorPool");
    sets_.assign(nb, VK_NULL_HANDLE);
    std::vector<VkDescriptorSetLayout> layouts(nb, set_layout_);
    auto ai = detail::vk7_make<VkDescriptorSetAllocateInfo>(VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO);
    ai.descriptorPool = dpool_;
    ai.descriptorSetCount = nb;
    ai.pSetLayouts = layouts.data();
    detail::vk7_check(vkAllocateDescriptorSets(st_->device, &ai, sets_.data()), "vkAllocateDescriptorSets");
    for (std::uint32_t b = 0; b < nb; ++b) {
      std::array<VkDescriptorBufferInfo, kBindings> info{};
      for (int i = 0; i < 5; ++i) info[static_cast<std::size_t>(i)] = {io_.handle(), io[static_cast<std::size_t>(i)], io[static_cast<std::size_t>(i) + 1] - io[static_cast<std::size_t>(i)]};
      info[5] = {pool_->table_buffer().handle(), 0, VK_WHOLE_SIZE};
      for (int i = 0; i < 5; ++i) info[static_cast<std::size_t>(6 + i)] = {workspace.handle(), ws[static_cast<std::size_t>(i)], ws[static_cast<std::size_t>(i) + 1] - ws[static_cast<std::size_t>(i)]};
      std::array<VkWriteDescriptorSet, kBindings> w{};
      for (std::uint32_t i = 0; i < kBindings; ++i) {
        w[i] = detail::vk7_make<VkWriteDescriptorSet>(VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET);
        w[i].dstSet = sets_[b];
        w[i].dstBinding = i;
        w[i].descriptorCount = 1;
        w[i].descriptorType = binding_type(i);
        if (i == kWeights)
          w[i].pTexelBufferView = pool_->view(static_cast<int>(b)).handle_ptr();
        else if (i == kXTexels)
          w[i].pTexelBufferView = x_view_.handle_ptr();
        else if (i == kActTexels)
          w[i].pTexelBufferView = act_view_.handle_ptr();
        else
          w[i].pBufferInfo = &info[i];
      }
      vkUpdateDescriptorSets(st_->device, kBindings, w.data(), 0, nullptr);
    }
    io_off_ = io;
    T_ = 0;
    nnz_ = 0;
  }

  /// Empty when args fit the initialized capacity and every routed expert is resident, else the reason.
  std::string check_args(const ffn_args& a) const {
    if (sets_.empty()) return "vulkan_ffn: initialize() was not called";
    std::string why = check_routing(a.routing, pool_->shape().num_experts);
    if (!why.empty()) return why;
    if (a.routing.num_tokens > cfg_.max_tokens)
      return detail::concat(a.routing.num_tokens, " tokens > max_tokens ", cfg_.max_tokens);
    if (a.routing.nnz() > cfg_.max_nnz) return detail::concat(a.routing.nnz(), " routed pairs > max_nnz ", cfg_.max_nnz);
    if (a.routing.num_tokens > 0 && a.x == nullptr) return "x is null";
    for (std::size_t j = 0; j < a.routing.nnz(); ++j) {
      const int s = pool_->slot_of(a.routing.ids[j]);
      if (s < 0 || !pool_->slot_loaded(s))
        return detail::concat("expert ", a.routing.ids[j], " is routed to but has no loaded slot");
    }
    return {};
  }

  /// Copies the routing result and x into the op's host-visible input buffer. Throws with the
  /// reason when check_args fails.
  void set_inputs(const ffn_args& a) {
    const std::string why = check_args(a);
    MOEROUTE_CHECK(why.empty(), errc::bad_input, "vulkan_ffn: ", why);
    auto* base = static_cast<unsigned char*>(io_.mapped());
    const std::size_t T = a.routing.num_tokens, nnz = a.routing.nnz(), H = static_cast<std::size_t>(pool_->shape().hidden);
    if (T > 0) {
      std::memcpy(base + io_off_[0], a.routing.offsets, (T + 1) * 4);
      std::memcpy(base + io_off_[1], a.routing.ids, nnz * 4);
      std::memcpy(base + io_off_[2], a.routing.weights, nnz * 4);
      std::memcpy(base + io_off_[3], a.x, T * H * 4);
    }
    T_ = T;
    nnz_ = nnz;
  }

  /// Records the FFN for the last set_inputs into cmd (a command buffer in the recording state on
  /// this device's compute queue). No allocation; ends with a barrier that makes y host-readable.
  void run(VkCommandBuffer cmd) const {
    if (T_ == 0) return;
    const ffn_layer& s = pool_->shape();
    detail::vk7_params p{};
    p.T = static_cast<std::uint32_t>(T_);
    p.nnz = static_cast<std::uint32_t>(nnz_);
    p.E = static_cast<std::uint32_t>(s.num_experts);
    p.H = static_cast<std::uint32_t>(s.hidden);
    p.F = static_cast<std::uint32_t>(s.ffn);
    p.spb = pool_->slots_per_buffer();
    p.stride = static_cast<std::uint32_t>(pool_->slot_stride());
    p.up_off = static_cast<std::uint32_t>(pool_->slot_up_offset());
    p.down_off = static_cast<std::uint32_t>(pool_->slot_down_offset());
    p.bias_off = static_cast<std::uint32_t>(pool_->slot_bias_offset());
    p.rbh = static_cast<std::uint32_t>(row_bytes(s.gate_type, static_cast<std::size_t>(s.hidden)));
    p.rbu = static_cast<std::uint32_t>(row_bytes(s.up_type, static_cast<std::size_t>(s.hidden)));
    p.rbf = static_cast<std::uint32_t>(row_bytes(s.down_type, static_cast<std::size_t>(s.ffn)));
    p.flags = (s.has_bias ? 1u : 0u) | (s.act == ffn_activation::swiglu_oai ? 2u : 0u);
    p.nb = static_cast<std::uint32_t>(sets_.size());
    const std::uint32_t gx_h = (p.H + 63) / 64;
    // Indirect dispatch sizes written by the grouping pass (see group.comp).
    const VkDeviceSize ind = (static_cast<VkDeviceSize>(p.E) + 1 + static_cast<VkDeviceSize>(p.nb) * p.E) * 4;

    auto bind = [&](VkPipeline pipe, std::uint32_t b) {
      p.buf_index = b;
      vkCmdBindPipeline(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe);
      vkCmdBindDescriptorSets(cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe_layout_, 0, 1, &sets_[b], 0, nullptr);
      vkCmdPushConstants(cmd, pipe_layout_, VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(p), &p);
    };
    bind(group_, 0);
    vkCmdDispatch(cmd, 1, 1, 1);
    barrier(cmd, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_INDIRECT_COMMAND_READ_BIT,
            VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_DRAW_INDIRECT_BIT);
    // Two variants per matmul over the expert lists of group.comp: mat-vec (experts with one
    // entry) and tiled (more entries); see matmul.comp.
    for (std::uint32_t b = 0; b < sets_.size(); ++b) {
      bind(gate_up_mv_, b);
      vkCmdDispatchIndirect(cmd, workspace_, ind + 48 * b);
      bind(gate_up_, b);
      vkCmdDispatchIndirect(cmd, workspace_, ind + 48 * b + 24);
    }
    barrier(cmd, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT);
    for (std::uint32_t b = 0; b < sets_.size(); ++b) {
      bind(down_mv_, b);
      vkCmdDispatchIndirect(cmd, workspace_, ind + 48 * b + 12);
      bind(down_, b);
      vkCmdDispatchIndirect(cmd, workspace_, ind + 48 * b + 36);
    }
    barrier(cmd, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT);
    bind(reduce_, 0);
    vkCmdDispatch(cmd, gx_h, p.T, 1);
    barrier(cmd, VK_ACCESS_HOST_READ_BIT, VK_PIPELINE_STAGE_HOST_BIT);
  }

  /// Copies y (T x H of the last set_inputs) out of the op's output buffer, after run() completed.
  void read_output(float* y) const {
    const std::size_t n = T_ * static_cast<std::size_t>(pool_->shape().hidden);
    if (n) std::memcpy(y, static_cast<const unsigned char*>(io_.mapped()) + io_off_[4], n * 4);
  }

  /// set_inputs, record run into the op's own command buffer, submit, wait, read_output(args.y).
  void forward(const ffn_args& a) {
    set_inputs(a);
    if (T_ == 0) return;
    MOEROUTE_CHECK(a.y != nullptr, errc::invalid_argument, "vulkan_ffn: y is null");
    run(cmds_.begin());
    cmds_.submit_and_wait();
    read_output(a.y);
  }

 private:
  // Empty when the kernels compute this layer (a type with kernels for each tensor;
  // check_ffn_layer covers the block sizes), else the reason.
  static std::string unsupported_layer(const ffn_layer& s) {
    detail::vk7_matmul_modules m;
    for (weight_type t : {s.gate_type, s.up_type, s.down_type})
      if (!detail::vk7_modules(t, m))
        return detail::concat("no Vulkan kernels for weight type ", static_cast<std::uint32_t>(t));
    if (s.act != ffn_activation::swiglu && s.act != ffn_activation::swiglu_oai)
      return detail::concat("no Vulkan kernels for activation ", static_cast<std::uint32_t>(s.act));
    return {};
  }

  // Bindings of the GLSL sources: storage buffers, except three uniform texel buffers read by the
  // matmuls (lavapipe issues a texel fetch as one vector load per lane, a storage-buffer load as
  // one bounds-checked scalar load per component and lane).
  static constexpr std::uint32_t kBindings = 13;
  static constexpr std::uint32_t kXTexels = 3;     // x, vec4 texels
  static constexpr std::uint32_t kWeights = 11;    // the pool buffer, uvec4 texels
  static constexpr std::uint32_t kActTexels = 12;  // act (read by down), vec4 texels
  static VkDescriptorType binding_type(std::uint32_t i) noexcept {
    return i == kXTexels || i == kWeights || i == kActTexels ? VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER
                                                             : VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
  }

  static void barrier(VkCommandBuffer cmd, VkAccessFlags dst_access, VkPipelineStageFlags dst_stage) {
    auto mb = detail::vk7_make<VkMemoryBarrier>(VK_STRUCTURE_TYPE_MEMORY_BARRIER);
    mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT;
    mb.dstAccessMask = dst_access;
    vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, dst_stage, 0, 1, &mb, 0, nullptr, 0, nullptr);
  }

  VkDeviceSize align() const noexcept {
    return std::max<VkDeviceSize>({16, ctx_limits_.minStorageBufferOffsetAlignment, ctx_limits_.minTexelBufferOffsetAlignment});
  }

  // Offsets of eoff, list, tok, act, partial, then the end.
  std::array<VkDeviceSize, 6> workspace_layout(const vulkan_ffn_config& c) const {
    const ffn_layer& s = pool_->shape();
    const VkDeviceSize a = align(), nnz = c.max_nnz;
    const VkDeviceSize E = static_cast<VkDeviceSize>(s.num_experts), nb = static_cast<VkDeviceSize>(pool_->num_buffers());
    const VkDeviceSize sizes[5] = {(E + 1 + nb * E + 12 * nb) * 4, nnz * 4, nnz * 4,
                                   nnz * static_cast<VkDeviceSize>(s.ffn) * 4, nnz * static_cast<VkDeviceSize>(s.hidden) * 4};
    std::array<VkDeviceSize, 6> off{};
    for (int i = 0; i < 5; ++i) off[static_cast<std::size_t>(i) + 1] = detail::vk7_round_up(off[static_cast<std::size_t>(i)] + sizes[i], a);
    return off;
  }

  // Offsets of offsets, ids, weights, x, y, then the end.
  std::array<VkDeviceSize, 6> io_layout(const vulkan_ffn_config& c) const {
    const VkDeviceSize a = align(), T = c.max_tokens, nnz = c.max_nnz, H = static_cast<VkDeviceSize>(pool_->shape().hidden);
    const VkDeviceSize sizes[5] = {(T + 1) * 4, nnz * 4, nnz * 4, T * H * 4, T * H * 4};
    std::array<VkDeviceSize, 6> off{};
    for (int i = 0; i < 5; ++i) off[static_cast<std::size_t>(i) + 1] = detail::vk7_round_up(off[static_cast<std::size_t>(i)] + sizes[i], a);
    return off;
  }

  // spec: the specialization constants 0, 1, ... (uint32) of the module, if any.
  VkPipeline make_pipeline(detail::vk7_spirv m, const std::vector<std::uint32_t>& spec = {}) {
    auto mi = detail::vk7_make<VkShaderModuleCreateInfo>(VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO);
    mi.codeSize = m.bytes;
    mi.pCode = m.words;
    VkShaderModule mod = VK_NULL_HANDLE;
    detail::vk7_check(vkCreateShaderModule(st_->device, &mi, nullptr, &mod), "vkCreateShaderModule");
    auto ci = detail::vk7_make<VkComputePipelineCreateInfo>(VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO);
    ci.stage = detail::vk7_make<VkPipelineShaderStageCreateInfo>(VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO);
    ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    ci.stage.module = mod;
    ci.stage.pName = "main";
    std::vector<VkSpecializationMapEntry> entries(spec.size());
    for (std::uint32_t i = 0; i < entries.size(); ++i) entries[i] = {i, 4 * i, 4};
    const VkSpecializationInfo si{static_cast<std::uint32_t>(entries.size()), entries.data(), spec.size() * 4, spec.data()};
    if (!spec.empty()) ci.stage.pSpecializationInfo = &si;
    ci.layout = pipe_layout_;
    VkPipeline pipe = VK_NULL_HANDLE;
    const VkResult r = vkCreateComputePipelines(st_->device, VK_NULL_HANDLE, 1, &ci, nullptr, &pipe);
    vkDestroyShaderModule(st_->device, mod, nullptr);
    detail::vk7_check(r, "vkCreateComputePipelines");
    return pipe;
  }

  void create_pipelines() {
    std::array<VkDescriptorSetLayoutBinding, kBindings> b{};
    for (std::uint32_t i = 0; i < kBindings; ++i)
      b[i] = {i, binding_type(i), 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
    auto li = detail::vk7_make<VkDescriptorSetLayoutCreateInfo>(VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO);
    li.bindingCount = kBindings;
    li.pBindings = b.data();
    detail::vk7_check(vkCreateDescriptorSetLayout(st_->device, &li, nullptr, &set_layout_), "vkCreateDescriptorSetLayout");
    VkPushConstantRange pr{VK_SHADER_STAGE_COMPUTE_BIT, 0, sizeof(detail::vk7_params)};
    auto pli = detail::vk7_make<VkPipelineLayoutCreateInfo>(VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO);
    pli.setLayoutCount = 1;
    pli.pSetLayouts = &set_layout_;
    pli.pushConstantRangeCount = 1;
    pli.pPushConstantRanges = &pr;
    try {
      detail::vk7_check(vkCreatePipelineLayout(st_->device, &pli, nullptr, &pipe_layout_), "vkCreatePipelineLayout");
      namespace sp = detail::spirv;
      group_ = make_pipeline(detail::vk7_spv(sp::vk7_group_spv));
      reduce_ = make_pipeline(detail::vk7_spv(sp::vk7_reduce_spv));
      const ffn_layer& s = pool_->shape();
      // Layers unsupported_layer() rejects get no matmul pipelines; can_implement reports why.
      if (!unsupported_layer(s).empty()) return;
      detail::vk7_matmul_modules g, d;
      detail::vk7_modules(s.gate_type, g);
      detail::vk7_modules(s.down_type, d);
      if (s.gate_type == s.up_type) {
        gate_up_ = make_pipeline(g.gate_up);
        gate_up_mv_ = make_pipeline(g.gate_up_mv);
      } else {
        const std::vector<std::uint32_t> types{static_cast<std::uint32_t>(s.gate_type), static_cast<std::uint32_t>(s.up_type)};
        gate_up_ = make_pipeline(detail::vk7_spv(sp::vk7_gate_up_mixed_spv), types);
        gate_up_mv_ = make_pipeline(detail::vk7_spv(sp::vk7_gate_up_mv_mixed_spv), types);
      }
      down_ = make_pipeline(d.down);
      down_mv_ = make_pipeline(d.down_mv);
    } catch (...) {
      destroy();
      throw;
    }
  }

  void destroy() noexcept {
    VkDevice d = st_->device;
    for (VkPipeline* p : {&group_, &reduce_, &gate_up_, &down_, &gate_up_mv_, &down_mv_}) {
      if (*p != VK_NULL_HANDLE) vkDestroyPipeline(d, *p, nullptr);
      *p = VK_NULL_HANDLE;
    }
    if (dpool_ != VK_NULL_HANDLE) vkDestroyDescriptorPool(d, dpool_, nullptr);
    if (pipe_layout_ != VK_NULL_HANDLE) vkDestroyPipelineLayout(d, pipe_layout_, nullptr);
    if (set_layout_ != VK_NULL_HANDLE) vkDestroyDescriptorSetLayout(d, set_layout_, nullptr);
    dpool_ = VK_NULL_HANDLE;
    pipe_layout_ = VK_NULL_HANDLE;
    set_layout_ = VK_NULL_HANDLE;
  }

  std::shared_ptr<detail::vk7_device_state> st_;
  VkPhysicalDeviceLimits ctx_limits_;
  const vulkan_expert_pool* pool_;
  vulkan_commands cmds_;
  VkDescriptorSetLayout set_layout_ = VK_NULL_HANDLE;
  VkPipelineLayout pipe_layout_ = VK_NULL_HANDLE;
  VkPipeline group_ = VK_NULL_HANDLE, reduce_ = VK_NULL_HANDLE, gate_up_ = VK_NULL_HANDLE, down_ = VK_NULL_HANDLE;
  VkPipeline gate_up_mv_ = VK_NULL_HANDLE, down_mv_ = VK_NULL_HANDLE;
  VkDescriptorPool dpool_ = VK_NULL_HANDLE;
  std::vector<VkDescriptorSet> sets_;
  vulkan_buffer io_;
  vulkan_buffer_view x_view_, act_view_;
  VkBuffer workspace_ = VK_NULL_HANDLE;
  std::array<VkDeviceSize, 6> io_off_{};
  vulkan_ffn_config cfg_{};
  std::size_t T_ = 0, nnz_ = 0;
};

}  // namespace moeroute
