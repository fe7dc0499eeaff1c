#pragma once
// Vulkan instance and device for the moeroute backend, with RAII for the objects it creates.
//
// Device choice: discrete GPU first, then integrated, virtual, CPU (lavapipe), other; ties keep
// the driver's order. MOEROUTE_VK_DEVICE overrides it: a decimal index into the driver's list, or
// a substring of the device name. MOEROUTE_VK_VALIDATION=1 enables VK_LAYER_KHRONOS_validation
// with a debug messenger that records every message (validation_messages()); it is an error when
// the layer is requested but not installed.

#include <moeroute/error.hpp>

#include <vulkan/vulkan.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace moeroute {

namespace detail {

/// A zero-initialized Vulkan info struct with its sType set.
template <class T>
T vk7_make(VkStructureType s) noexcept {
  T t{};
  t.sType = s;
  return t;
}

inline const char* vk7_result_name(VkResult r) noexcept {
  switch (r) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    default: return "VkResult error";
  }
}

inline void vk7_check(VkResult r, const char* what) {
  if (r != VK_SUCCESS) fail(errc::device, "vulkan: ", what, " failed: ", vk7_result_name(r), " (", static_cast<int>(r), ")");
}

/// Instance + device state shared (by shared_ptr) by every object made from a context, so that
/// objects may outlive the vulkan_context that created them.
struct vk7_device_state {
  VkInstance instance = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger = VK_NULL_HANDLE;
  VkPhysicalDevice physical = VK_NULL_HANDLE;
  VkDevice device = VK_NULL_HANDLE;
  VkQueue queue = VK_NULL_HANDLE;
  std::uint32_t queue_family = 0;
  VkPhysicalDeviceProperties props{};
  VkPhysicalDeviceMemoryProperties mem_props{};
  VkDeviceSize max_allocation = 0;
  std::mutex messages_mutex;
  std::vector<std::string> messages;

  vk7_device_state() = default;
  vk7_device_state(const vk7_device_state&) = delete;
  vk7_device_state& operator=(const vk7_device_state&) = delete;
  ~vk7_device_state() {
    if (device != VK_NULL_HANDLE) {
      vkDeviceWaitIdle(device);
      vkDestroyDevice(device, nullptr);
    }
    if (messenger != VK_NULL_HANDLE) {
      auto destroy = reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
          vkGetInstanceProcAddr(instance, "vkDestroyDebugUtilsMessengerEXT"));
      if (destroy) destroy(instance, messenger, nullptr);
    }
    if (instance != VK_NULL_HANDLE) vkDestroyInstance(instance, nullptr);
  }
};

inline VKAPI_ATTR VkBool32 VKAPI_CALL vk7_debug_callback(VkDebugUtilsMessageSeverityFlagBitsEXT,
                                                         VkDebugUtilsMessageTypeFlagsEXT,
                                                         const VkDebugUtilsMessengerCallbackDataEXT* data,
                                                         void* user) {
  auto* st = static_cast<vk7_device_state*>(user);
  std::lock_guard<std::mutex> lock(st->messages_mutex);
  st->messages.emplace_back(data && data->pMessage ? data->pMessage : "(no message)");
  return VK_FALSE;
}

inline int vk7_type_rank(VkPhysicalDeviceType t) noexcept {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 0;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 1;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: return 3;
    default: return 4;
  }
}

}  // namespace detail

/// Options of a vulkan_context. The defaults read the environment.
struct vulkan_context_options {
  /// Enable VK_LAYER_KHRONOS_validation (default: MOEROUTE_VK_VALIDATION is "1").
  bool validation = [] {
    const char* v = std::getenv("MOEROUTE_VK_VALIDATION");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  /// Device selector: decimal index or name substring; empty = automatic (default: MOEROUTE_VK_DEVICE).
  std::string device = [] {
    const char* v = std::getenv("MOEROUTE_VK_DEVICE");
    return std::string(v ? v : "");
  }();
};

/// A device buffer with its own memory; host-visible ones stay mapped. Movable, not copyable.
class vulkan_buffer {
 public:
  vulkan_buffer() = default;
  vulkan_buffer(std::shared_ptr<detail::vk7_device_state> st, VkDeviceSize size, bool host_visible) : st_(std::move(st)), size_(size) {
    VkDevice dev = st_->device;
    auto bi = detail::vk7_make<VkBufferCreateInfo>(VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO);
    bi.size = size;
    bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT |
               VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT | VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT;
    bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
    detail::vk7_check(vkCreateBuffer(dev, &bi, nullptr, &buffer_), "vkCreateBuffer");
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(dev, buffer_, &req);
    const VkMemoryPropertyFlags want = host_visible
        ? (VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT)
        : VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
    std::uint32_t type = UINT32_MAX;
    for (std::uint32_t i = 0; i < st_->mem_props.memoryTypeCount && type == UINT32_MAX; ++i)
      if ((req.memoryTypeBits & (1u << i)) && (st_->mem_props.memoryTypes[i].propertyFlags & want) == want) type = i;
    if (type == UINT32_MAX && !host_visible)
      for (std::uint32_t i = 0; i < st_->mem_props.memoryTypeCount && type == UINT32_MAX; ++i)
        if (req.memoryTypeBits & (1u << i)) type = i;
    if (type == UINT32_MAX) {
      reset();
      detail::fail(errc::device, "vulkan: no memory type for a ", host_visible ? "host-visible" : "device", " buffer");
    }
    auto ai = detail::vk7_make<VkMemoryAllocateInfo>(VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO);
    ai.allocationSize = req.size;
    ai.memoryTypeIndex = type;
    const VkResult r = vkAllocateMemory(dev, &ai, nullptr, &memory_);
    if (r != VK_SUCCESS) {
      reset();
      detail::fail(errc::device, "vulkan: allocating ", size, " bytes of ", host_visible ? "host-visible" : "device",
                   " memory failed: ", detail::vk7_result_name(r));
    }
    if (const VkResult b = vkBindBufferMemory(dev, buffer_, memory_, 0); b != VK_SUCCESS) {
      reset();
      detail::vk7_check(b, "vkBindBufferMemory");
    }
    if (host_visible) {
      const VkResult m = vkMapMemory(dev, memory_, 0, VK_WHOLE_SIZE, 0, &mapped_);
      if (m != VK_SUCCESS) {
        reset();
        detail::vk7_check(m, "vkMapMemory");
      }
    }
  }
  vulkan_buffer(const vulkan_buffer&) = delete;
  vulkan_buffer& operator=(const vulkan_buffer&) = delete;
  vulkan_buffer(vulkan_buffer&& o) noexcept { swap(o); }
  vulkan_buffer& operator=(vulkan_buffer&& o) noexcept {
    if (this != &o) {
      reset();
      swap(o);
    }
    return *this;
  }
  ~vulkan_buffer() { reset(); }

  VkBuffer handle() const noexcept { return buffer_; }
  VkDeviceSize size() const noexcept { return size_; }
  /// Host pointer of a host-visible buffer (nullptr otherwise).
  void* mapped() const noexcept { return mapped_; }

 private:
  void swap(vulkan_buffer& o) noexcept {
    std::swap(st_, o.st_);
    std::swap(buffer_, o.buffer_);
    std::swap(memory_, o.memory_);
    std::swap(mapped_, o.mapped_);
    std::swap(size_, o.size_);
  }
  void reset() noexcept {
    if (!st_) return;
    if (buffer_ != VK_NULL_HANDLE) vkDestroyBuffer(st_->device, buffer_, nullptr);
    if (memory_ != VK_NULL_HANDLE) vkFreeMemory(st_->device, memory_, nullptr);  // unmaps
    buffer_ = VK_NULL_HANDLE;
    memory_ = VK_NULL_HANDLE;
    mapped_ = nullptr;
    st_.reset();
  }

  std::shared_ptr<detail::vk7_device_state> st_;
  VkBuffer buffer_ = VK_NULL_HANDLE;
  VkDeviceMemory memory_ = VK_NULL_HANDLE;
  void* mapped_ = nullptr;
  VkDeviceSize size_ = 0;
};

/// A texel-buffer view of (part of) a buffer, in `format` texels. Movable, not copyable.
class vulkan_buffer_view {
 public:
  vulkan_buffer_view() = default;
  /// View of bytes [offset, offset + range) of buf (range VK_WHOLE_SIZE: to the end).
  vulkan_buffer_view(std::shared_ptr<detail::vk7_device_state> st, VkBuffer buf, VkFormat format, VkDeviceSize offset = 0,
                     VkDeviceSize range = VK_WHOLE_SIZE)
      : st_(std::move(st)) {
    auto vi = detail::vk7_make<VkBufferViewCreateInfo>(VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO);
    vi.buffer = buf;
    vi.format = format;
    vi.offset = offset;
    vi.range = range;
    const VkResult r = vkCreateBufferView(st_->device, &vi, nullptr, &view_);
    if (r != VK_SUCCESS) {
      st_.reset();
      detail::vk7_check(r, "vkCreateBufferView");
    }
  }
  vulkan_buffer_view(const vulkan_buffer_view&) = delete;
  vulkan_buffer_view& operator=(const vulkan_buffer_view&) = delete;
  vulkan_buffer_view(vulkan_buffer_view&& o) noexcept { swap(o); }
  vulkan_buffer_view& operator=(vulkan_buffer_view&& o) noexcept {
    if (this != &o) {
      reset();
      swap(o);
    }
    return *this;
  }
  ~vulkan_buffer_view() { reset(); }

  const VkBufferView* handle_ptr() const noexcept { return &view_; }

 private:
  void swap(vulkan_buffer_view& o) noexcept {
    std::swap(st_, o.st_);
    std::swap(view_, o.view_);
  }
  void reset() noexcept {
    if (st_ && view_ != VK_NULL_HANDLE) vkDestroyBufferView(st_->device, view_, nullptr);
    view_ = VK_NULL_HANDLE;
    st_.reset();
  }

  std::shared_ptr<detail::vk7_device_state> st_;
  VkBufferView view_ = VK_NULL_HANDLE;
};

/// A command pool with one primary command buffer and a fence, for record-submit-wait cycles.
class vulkan_commands {
 public:
  explicit vulkan_commands(std::shared_ptr<detail::vk7_device_state> st) : st_(std::move(st)) {
    auto pi = detail::vk7_make<VkCommandPoolCreateInfo>(VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO);
    pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
    pi.queueFamilyIndex = st_->queue_family;
    detail::vk7_check(vkCreateCommandPool(st_->device, &pi, nullptr, &pool_), "vkCreateCommandPool");
    auto ai = detail::vk7_make<VkCommandBufferAllocateInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO);
    ai.commandPool = pool_;
    ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
    ai.commandBufferCount = 1;
    auto fi = detail::vk7_make<VkFenceCreateInfo>(VK_STRUCTURE_TYPE_FENCE_CREATE_INFO);
    if (vkAllocateCommandBuffers(st_->device, &ai, &cmd_) != VK_SUCCESS ||
        vkCreateFence(st_->device, &fi, nullptr, &fence_) != VK_SUCCESS) {
      destroy();
      detail::fail(errc::device, "vulkan: creating a command buffer or fence failed");
    }
  }
  vulkan_commands(const vulkan_commands&) = delete;
  vulkan_commands& operator=(const vulkan_commands&) = delete;
  ~vulkan_commands() { destroy(); }

  /// Resets and begins the command buffer (one-time submit).
  VkCommandBuffer begin() {
    detail::vk7_check(vkResetCommandBuffer(cmd_, 0), "vkResetCommandBuffer");
    auto bi = detail::vk7_make<VkCommandBufferBeginInfo>(VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO);
    bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
    detail::vk7_check(vkBeginCommandBuffer(cmd_, &bi), "vkBeginCommandBuffer");
    return cmd_;
  }
  /// Ends, submits and waits for the command buffer.
  void submit_and_wait() {
    detail::vk7_check(vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
    auto si = detail::vk7_make<VkSubmitInfo>(VK_STRUCTURE_TYPE_SUBMIT_INFO);
    si.commandBufferCount = 1;
    si.pCommandBuffers = &cmd_;
    detail::vk7_check(vkResetFences(st_->device, 1, &fence_), "vkResetFences");
    detail::vk7_check(vkQueueSubmit(st_->queue, 1, &si, fence_), "vkQueueSubmit");
    detail::vk7_check(vkWaitForFences(st_->device, 1, &fence_, VK_TRUE, UINT64_MAX), "vkWaitForFences");
  }

 private:
  void destroy() noexcept {
    if (fence_ != VK_NULL_HANDLE) vkDestroyFence(st_->device, fence_, nullptr);
    if (pool_ != VK_NULL_HANDLE) vkDestroyCommandPool(st_->device, pool_, nullptr);
    fence_ = VK_NULL_HANDLE;
    pool_ = VK_NULL_HANDLE;
  }
  std::shared_ptr<detail::vk7_device_state> st_;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
};

/// The Vulkan instance, the chosen device and its compute queue.
class vulkan_context {
 public:
  /// Creates the instance and device. Throws moeroute::error: errc::unsupported when there is no
  /// Vulkan driver or device (callers such as tests may skip), errc::device for other failures,
  /// errc::invalid_argument when MOEROUTE_VK_DEVICE matches no device.
  explicit vulkan_context(const vulkan_context_options& opt = {}) : st_(std::make_shared<detail::vk7_device_state>()) {
    std::vector<const char*> layers, exts;
    if (opt.validation) {
      std::uint32_t n = 0;
      vkEnumerateInstanceLayerProperties(&n, nullptr);
      std::vector<VkLayerProperties> lp(n);
      vkEnumerateInstanceLayerProperties(&n, lp.data());
      const bool found = std::any_of(lp.begin(), lp.end(), [](const VkLayerProperties& p) {
        return std::strcmp(p.layerName, "VK_LAYER_KHRONOS_validation") == 0;
      });
      MOEROUTE_CHECK(found, errc::device,
                     "vulkan: validation requested (MOEROUTE_VK_VALIDATION=1) but VK_LAYER_KHRONOS_validation is not "
                     "installed (Debian: vulkan-validationlayers)");
      layers.push_back("VK_LAYER_KHRONOS_validation");
      exts.push_back(VK_EXT_DEBUG_UTILS_EXTENSION_NAME);
    }
    auto app = detail::vk7_make<VkApplicationInfo>(VK_STRUCTURE_TYPE_APPLICATION_INFO);
    app.pApplicationName = "moeroute";
    app.pEngineName = "moeroute";
    app.apiVersion = VK_API_VERSION_1_1;
    auto ici = detail::vk7_make<VkInstanceCreateInfo>(VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO);
    ici.pApplicationInfo = &app;
    ici.enabledLayerCount = static_cast<std::uint32_t>(layers.size());
    ici.ppEnabledLayerNames = layers.data();
    ici.enabledExtensionCount = static_cast<std::uint32_t>(exts.size());
    ici.ppEnabledExtensionNames = exts.data();
    const VkResult ir = vkCreateInstance(&ici, nullptr, &st_->instance);
    if (ir == VK_ERROR_INCOMPATIBLE_DRIVER || ir == VK_ERROR_INITIALIZATION_FAILED)
      detail::fail(errc::unsupported, "vulkan: no Vulkan driver (vkCreateInstance: ", detail::vk7_result_name(ir), ")");
    detail::vk7_check(ir, "vkCreateInstance");
    if (opt.validation) {
      auto create = reinterpret_cast<PFN_vkCreateDebugUtilsMessengerEXT>(
          vkGetInstanceProcAddr(st_->instance, "vkCreateDebugUtilsMessengerEXT"));
      MOEROUTE_CHECK(create != nullptr, errc::device, "vulkan: vkCreateDebugUtilsMessengerEXT not available");
      auto mi = detail::vk7_make<VkDebugUtilsMessengerCreateInfoEXT>(VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT);
      mi.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT;
      mi.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT;
      mi.pfnUserCallback = detail::vk7_debug_callback;
      mi.pUserData = st_.get();
      detail::vk7_check(create(st_->instance, &mi, nullptr, &st_->messenger), "vkCreateDebugUtilsMessengerEXT");
    }

    std::uint32_t count = 0;
    detail::vk7_check(vkEnumeratePhysicalDevices(st_->instance, &count, nullptr), "vkEnumeratePhysicalDevices");
    MOEROUTE_CHECK(count > 0, errc::unsupported, "vulkan: no Vulkan device found");
    std::vector<VkPhysicalDevice> devs(count);
    // VK_INCOMPLETE: a device appeared since the count; the first `count` were written.
    if (const VkResult e = vkEnumeratePhysicalDevices(st_->instance, &count, devs.data()); e != VK_INCOMPLETE)
      detail::vk7_check(e, "vkEnumeratePhysicalDevices");
    MOEROUTE_CHECK(count > 0, errc::unsupported, "vulkan: no Vulkan device found");
    devs.resize(count);
    std::vector<VkPhysicalDeviceProperties> props(count);
    for (std::uint32_t i = 0; i < count; ++i) vkGetPhysicalDeviceProperties(devs[i], &props[i]);
    std::uint32_t pick = UINT32_MAX;
    if (!opt.device.empty()) {
      const bool digits = std::all_of(opt.device.begin(), opt.device.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; });
      if (digits && opt.device.size() < 6) {
        const auto idx = static_cast<std::uint32_t>(std::stoul(opt.device));
        if (idx < count) pick = idx;
      } else {
        for (std::uint32_t i = 0; i < count && pick == UINT32_MAX; ++i)
          if (std::string(props[i].deviceName).find(opt.device) != std::string::npos) pick = i;
      }
      if (pick == UINT32_MAX) {
        std::string names;
        for (std::uint32_t i = 0; i < count; ++i) names += detail::concat(i ? ", " : "", i, ": ", props[i].deviceName);
        detail::fail(errc::invalid_argument, "vulkan: MOEROUTE_VK_DEVICE=\"", opt.device, "\" matches no device (", names, ")");
      }
    } else {
      for (std::uint32_t i = 0; i < count; ++i)
        if (pick == UINT32_MAX || detail::vk7_type_rank(props[i].deviceType) < detail::vk7_type_rank(props[pick].deviceType)) pick = i;
    }
    st_->physical = devs[pick];
    st_->props = props[pick];
    vkGetPhysicalDeviceMemoryProperties(st_->physical, &st_->mem_props);
    auto m3 = detail::vk7_make<VkPhysicalDeviceMaintenance3Properties>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES);
    auto p2 = detail::vk7_make<VkPhysicalDeviceProperties2>(VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2);
    p2.pNext = &m3;
    vkGetPhysicalDeviceProperties2(st_->physical, &p2);
    st_->max_allocation = m3.maxMemoryAllocationSize;

    std::uint32_t qn = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(st_->physical, &qn, nullptr);
    std::vector<VkQueueFamilyProperties> qf(qn);
    vkGetPhysicalDeviceQueueFamilyProperties(st_->physical, &qn, qf.data());
    std::uint32_t family = UINT32_MAX;
    for (std::uint32_t i = 0; i < qn && family == UINT32_MAX; ++i)
      if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) family = i;
    MOEROUTE_CHECK(family != UINT32_MAX, errc::unsupported, "vulkan: device ", st_->props.deviceName, " has no compute queue");
    st_->queue_family = family;
    const float prio = 1.0f;
    auto qi = detail::vk7_make<VkDeviceQueueCreateInfo>(VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO);
    qi.queueFamilyIndex = family;
    qi.queueCount = 1;
    qi.pQueuePriorities = &prio;
    auto di = detail::vk7_make<VkDeviceCreateInfo>(VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO);
    di.queueCreateInfoCount = 1;
    di.pQueueCreateInfos = &qi;
    detail::vk7_check(vkCreateDevice(st_->physical, &di, nullptr, &st_->device), "vkCreateDevice");
    vkGetDeviceQueue(st_->device, family, 0, &st_->queue);
  }

  /// Name of the chosen device.
  std::string device_name() const { return st_->props.deviceName; }
  /// Limits of the chosen device.
  const VkPhysicalDeviceLimits& limits() const noexcept { return st_->props.limits; }
  VkPhysicalDeviceType device_type() const noexcept { return st_->props.deviceType; }
  /// Largest single allocation (maxMemoryAllocationSize).
  VkDeviceSize max_allocation() const noexcept { return st_->max_allocation; }
  VkDevice device() const noexcept { return st_->device; }
  /// Validation messages received so far (empty unless validation is on).
  std::vector<std::string> validation_messages() const {
    std::lock_guard<std::mutex> lock(st_->messages_mutex);
    return st_->messages;
  }
  /// Creates a buffer; host_visible buffers are coherent and mapped.
  vulkan_buffer make_buffer(VkDeviceSize size, bool host_visible) const { return vulkan_buffer(st_, size, host_visible); }
  const std::shared_ptr<detail::vk7_device_state>& state() const noexcept { return st_; }

 private:
  std::shared_ptr<detail::vk7_device_state> st_;
};

}  // namespace moeroute
