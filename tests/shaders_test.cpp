// The committed SPIR-V headers must be generated from the GLSL sources as they are now: each
// header embeds the text it was compiled from, and this test compares it with the .comp file.
// When it fails: cmake --build <build> --target moeroute_shaders, and commit the headers.
#include <moeroute/backends/vulkan/spirv/group.hpp>
#include <moeroute/backends/vulkan/spirv/matmul.hpp>
#include <moeroute/backends/vulkan/spirv/reduce.hpp>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>

namespace {
const std::string kGlslDir = std::string(MOEROUTE_SOURCE_DIR) + "/include/moeroute/backends/vulkan/glsl/";

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

template <std::size_t N>
void expect_spirv(const std::uint32_t (&words)[N], const char* name) {
  ASSERT_GT(N, 5u) << name;
  EXPECT_EQ(words[0], 0x07230203u) << name << ": not SPIR-V (magic number)";
}
}  // namespace

TEST(Shaders, HeadersMatchTheirGlslSources) {
  namespace sp = moeroute::detail::spirv;
  EXPECT_EQ(read_file(kGlslDir + "group.comp"), std::string(sp::vk7_group_glsl))
      << "group.comp changed without regenerating spirv/group.hpp (target moeroute_shaders)";
  EXPECT_EQ(read_file(kGlslDir + "matmul.comp"), std::string(sp::vk7_matmul_glsl))
      << "matmul.comp changed without regenerating spirv/matmul.hpp (target moeroute_shaders)";
  EXPECT_EQ(read_file(kGlslDir + "reduce.comp"), std::string(sp::vk7_reduce_glsl))
      << "reduce.comp changed without regenerating spirv/reduce.hpp (target moeroute_shaders)";
}

TEST(Shaders, EveryGlslSourceHasAHeader) {
  std::set<std::string> comps;
  for (const auto& entry : std::filesystem::directory_iterator(kGlslDir))
    if (entry.path().extension() == ".comp") comps.insert(entry.path().stem().string());
  EXPECT_EQ(comps, (std::set<std::string>{"group", "matmul", "reduce"}))
      << "a .comp was added or removed: list it in cmake/moerouteShaders.cmake and in this test";
  for (const auto& c : comps)
    EXPECT_TRUE(std::filesystem::exists(std::string(MOEROUTE_SOURCE_DIR) + "/include/moeroute/backends/vulkan/spirv/" + c + ".hpp")) << c;
}

TEST(Shaders, EmbeddedWordsAreSpirv) {
  namespace sp = moeroute::detail::spirv;
  expect_spirv(sp::vk7_group_spv, "group");
  expect_spirv(sp::vk7_reduce_spv, "reduce");
  expect_spirv(sp::vk7_gate_up_f32_spv, "gate_up_f32");
  expect_spirv(sp::vk7_gate_up_f16_spv, "gate_up_f16");
  expect_spirv(sp::vk7_gate_up_q8_0_spv, "gate_up_q8_0");
  expect_spirv(sp::vk7_gate_up_q4_0_spv, "gate_up_q4_0");
  expect_spirv(sp::vk7_gate_up_mv_f32_spv, "gate_up_mv_f32");
  expect_spirv(sp::vk7_gate_up_mv_q4_0_spv, "gate_up_mv_q4_0");
  expect_spirv(sp::vk7_down_mv_f16_spv, "down_mv_f16");
  expect_spirv(sp::vk7_down_mv_q8_0_spv, "down_mv_q8_0");
  expect_spirv(sp::vk7_down_f32_spv, "down_f32");
  expect_spirv(sp::vk7_down_f16_spv, "down_f16");
  expect_spirv(sp::vk7_down_q8_0_spv, "down_q8_0");
  expect_spirv(sp::vk7_down_q4_0_spv, "down_q4_0");
  expect_spirv(sp::vk7_gate_up_q4_k_spv, "gate_up_q4_k");
  expect_spirv(sp::vk7_gate_up_mv_mxfp4_spv, "gate_up_mv_mxfp4");
  expect_spirv(sp::vk7_down_q6_k_spv, "down_q6_k");
  expect_spirv(sp::vk7_down_mv_iq4_xs_spv, "down_mv_iq4_xs");
}
