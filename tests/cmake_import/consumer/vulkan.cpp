// Outside project: compiles and links the Vulkan backend; runs it when a device exists.
#include <moeroute/backends/vulkan.hpp>

#include <cstdio>

int main() {
  const moeroute::ffn_layer shape{4, 32, 32, moeroute::weight_type::f32};
  std::printf("consumer_vulkan: expert blob %zu bytes\n", shape.expert_bytes());
  try {
    moeroute::vulkan_context ctx;
    moeroute::vulkan_expert_pool pool(ctx, shape, 2);
    std::printf("consumer_vulkan: %s, %d pool buffer(s)\n", ctx.device_name().c_str(), pool.num_buffers());
  } catch (const moeroute::error& e) {
    std::printf("consumer_vulkan: no usable device (%s)\n", e.message().c_str());
  }
  return 0;
}
