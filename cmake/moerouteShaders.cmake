# Shaders of the Vulkan backend: GLSL under include/moeroute/backends/vulkan/glsl/, compiled with
# glslc into SPIR-V that is embedded in committed headers under .../vulkan/spirv/. Consumers and
# ordinary builds need no glslc; maintainers who change a .comp run
#   cmake --build <build> --target moeroute_shaders
# and commit the regenerated headers. Each header also embeds its GLSL source text, and
# tests/shaders_test.cpp fails when a .comp differs from the text its header was generated from.
#
# Included from the top-level CMakeLists.txt (defines the target), and run in script mode
# (cmake -DGLSLC=... -DSOURCE_DIR=... -P moerouteShaders.cmake) to do the generation.

# Each entry: <source stem>|<variant name>|<glslc defines separated by ':'>. matmul: one variant per
# (kernel, weight type), TA in ggml's type numbering, plus two gate+up variants (mixed) whose gate
# and up types are specialization constants, for layers whose gate and up types differ.
set(MOEROUTE_SHADER_VARIANTS
  "group|group|"
  "reduce|reduce|"
  "matmul|gate_up_f32|-DGATE_UP=1:-DTA=0:-DMV=0"
  "matmul|gate_up_f16|-DGATE_UP=1:-DTA=1:-DMV=0"
  "matmul|gate_up_bf16|-DGATE_UP=1:-DTA=30:-DMV=0"
  "matmul|gate_up_q8_0|-DGATE_UP=1:-DTA=8:-DMV=0"
  "matmul|gate_up_q4_0|-DGATE_UP=1:-DTA=2:-DMV=0"
  "matmul|gate_up_q4_1|-DGATE_UP=1:-DTA=3:-DMV=0"
  "matmul|gate_up_q5_0|-DGATE_UP=1:-DTA=6:-DMV=0"
  "matmul|gate_up_q5_1|-DGATE_UP=1:-DTA=7:-DMV=0"
  "matmul|gate_up_q2_k|-DGATE_UP=1:-DTA=10:-DMV=0"
  "matmul|gate_up_q3_k|-DGATE_UP=1:-DTA=11:-DMV=0"
  "matmul|gate_up_q4_k|-DGATE_UP=1:-DTA=12:-DMV=0"
  "matmul|gate_up_q5_k|-DGATE_UP=1:-DTA=13:-DMV=0"
  "matmul|gate_up_q6_k|-DGATE_UP=1:-DTA=14:-DMV=0"
  "matmul|gate_up_iq4_nl|-DGATE_UP=1:-DTA=20:-DMV=0"
  "matmul|gate_up_iq4_xs|-DGATE_UP=1:-DTA=23:-DMV=0"
  "matmul|gate_up_mxfp4|-DGATE_UP=1:-DTA=39:-DMV=0"
  "matmul|gate_up_mixed|-DGATE_UP=1:-DMIXED=1:-DMV=0"
  "matmul|gate_up_mv_mixed|-DGATE_UP=1:-DMIXED=1:-DMV=1"
  "matmul|gate_up_mv_f32|-DGATE_UP=1:-DTA=0:-DMV=1"
  "matmul|gate_up_mv_f16|-DGATE_UP=1:-DTA=1:-DMV=1"
  "matmul|gate_up_mv_bf16|-DGATE_UP=1:-DTA=30:-DMV=1"
  "matmul|gate_up_mv_q8_0|-DGATE_UP=1:-DTA=8:-DMV=1"
  "matmul|gate_up_mv_q4_0|-DGATE_UP=1:-DTA=2:-DMV=1"
  "matmul|gate_up_mv_q4_1|-DGATE_UP=1:-DTA=3:-DMV=1"
  "matmul|gate_up_mv_q5_0|-DGATE_UP=1:-DTA=6:-DMV=1"
  "matmul|gate_up_mv_q5_1|-DGATE_UP=1:-DTA=7:-DMV=1"
  "matmul|gate_up_mv_q2_k|-DGATE_UP=1:-DTA=10:-DMV=1"
  "matmul|gate_up_mv_q3_k|-DGATE_UP=1:-DTA=11:-DMV=1"
  "matmul|gate_up_mv_q4_k|-DGATE_UP=1:-DTA=12:-DMV=1"
  "matmul|gate_up_mv_q5_k|-DGATE_UP=1:-DTA=13:-DMV=1"
  "matmul|gate_up_mv_q6_k|-DGATE_UP=1:-DTA=14:-DMV=1"
  "matmul|gate_up_mv_iq4_nl|-DGATE_UP=1:-DTA=20:-DMV=1"
  "matmul|gate_up_mv_iq4_xs|-DGATE_UP=1:-DTA=23:-DMV=1"
  "matmul|gate_up_mv_mxfp4|-DGATE_UP=1:-DTA=39:-DMV=1"
  "matmul|down_f32|-DGATE_UP=0:-DTA=0:-DMV=0"
  "matmul|down_f16|-DGATE_UP=0:-DTA=1:-DMV=0"
  "matmul|down_bf16|-DGATE_UP=0:-DTA=30:-DMV=0"
  "matmul|down_q8_0|-DGATE_UP=0:-DTA=8:-DMV=0"
  "matmul|down_q4_0|-DGATE_UP=0:-DTA=2:-DMV=0"
  "matmul|down_q4_1|-DGATE_UP=0:-DTA=3:-DMV=0"
  "matmul|down_q5_0|-DGATE_UP=0:-DTA=6:-DMV=0"
  "matmul|down_q5_1|-DGATE_UP=0:-DTA=7:-DMV=0"
  "matmul|down_q2_k|-DGATE_UP=0:-DTA=10:-DMV=0"
  "matmul|down_q3_k|-DGATE_UP=0:-DTA=11:-DMV=0"
  "matmul|down_q4_k|-DGATE_UP=0:-DTA=12:-DMV=0"
  "matmul|down_q5_k|-DGATE_UP=0:-DTA=13:-DMV=0"
  "matmul|down_q6_k|-DGATE_UP=0:-DTA=14:-DMV=0"
  "matmul|down_iq4_nl|-DGATE_UP=0:-DTA=20:-DMV=0"
  "matmul|down_iq4_xs|-DGATE_UP=0:-DTA=23:-DMV=0"
  "matmul|down_mxfp4|-DGATE_UP=0:-DTA=39:-DMV=0"
  "matmul|down_mv_f32|-DGATE_UP=0:-DTA=0:-DMV=1"
  "matmul|down_mv_f16|-DGATE_UP=0:-DTA=1:-DMV=1"
  "matmul|down_mv_bf16|-DGATE_UP=0:-DTA=30:-DMV=1"
  "matmul|down_mv_q8_0|-DGATE_UP=0:-DTA=8:-DMV=1"
  "matmul|down_mv_q4_0|-DGATE_UP=0:-DTA=2:-DMV=1"
  "matmul|down_mv_q4_1|-DGATE_UP=0:-DTA=3:-DMV=1"
  "matmul|down_mv_q5_0|-DGATE_UP=0:-DTA=6:-DMV=1"
  "matmul|down_mv_q5_1|-DGATE_UP=0:-DTA=7:-DMV=1"
  "matmul|down_mv_q2_k|-DGATE_UP=0:-DTA=10:-DMV=1"
  "matmul|down_mv_q3_k|-DGATE_UP=0:-DTA=11:-DMV=1"
  "matmul|down_mv_q4_k|-DGATE_UP=0:-DTA=12:-DMV=1"
  "matmul|down_mv_q5_k|-DGATE_UP=0:-DTA=13:-DMV=1"
  "matmul|down_mv_q6_k|-DGATE_UP=0:-DTA=14:-DMV=1"
  "matmul|down_mv_iq4_nl|-DGATE_UP=0:-DTA=20:-DMV=1"
  "matmul|down_mv_iq4_xs|-DGATE_UP=0:-DTA=23:-DMV=1"
  "matmul|down_mv_mxfp4|-DGATE_UP=0:-DTA=39:-DMV=1"
)

if(NOT DEFINED CMAKE_SCRIPT_MODE_FILE)
  find_program(MOEROUTE_GLSLC glslc)
  if(MOEROUTE_GLSLC)
    add_custom_target(moeroute_shaders
      COMMAND ${CMAKE_COMMAND} -DGLSLC=${MOEROUTE_GLSLC} -DSOURCE_DIR=${PROJECT_SOURCE_DIR}
        -DWORK_DIR=${PROJECT_BINARY_DIR}/moeroute_shaders
        -P ${CMAKE_CURRENT_LIST_DIR}/moerouteShaders.cmake
      COMMENT "Regenerating the committed SPIR-V headers of the Vulkan backend with glslc"
      VERBATIM)
  endif()
  return()
endif()

set(_glsl_dir ${SOURCE_DIR}/include/moeroute/backends/vulkan/glsl)
set(_out_dir ${SOURCE_DIR}/include/moeroute/backends/vulkan/spirv)
file(MAKE_DIRECTORY ${WORK_DIR})

set(_stems "")
foreach(_entry IN LISTS MOEROUTE_SHADER_VARIANTS)
  string(REPLACE "|" ";" _parts "${_entry}")
  list(GET _parts 0 _stem)
  list(APPEND _stems ${_stem})
endforeach()
list(REMOVE_DUPLICATES _stems)

foreach(_stem IN LISTS _stems)
  file(READ ${_glsl_dir}/${_stem}.comp _source)
  set(_body "")
  foreach(_entry IN LISTS MOEROUTE_SHADER_VARIANTS)
    string(REPLACE "|" ";" _parts "${_entry}")
    list(LENGTH _parts _n)
    list(GET _parts 0 _s)
    if(NOT _s STREQUAL _stem)
      continue()
    endif()
    list(GET _parts 1 _variant)
    set(_defines "")
    if(_n GREATER 2)
      list(GET _parts 2 _d)
      string(REPLACE ":" ";" _defines "${_d}")
    endif()
    set(_spv ${WORK_DIR}/${_variant}.spv)
    execute_process(
      COMMAND ${GLSLC} --target-env=vulkan1.1 -O ${_defines} ${_glsl_dir}/${_stem}.comp -o ${_spv}
      RESULT_VARIABLE _rc ERROR_VARIABLE _err)
    if(NOT _rc EQUAL 0)
      message(FATAL_ERROR "glslc failed on ${_stem}.comp (${_variant}):\n${_err}")
    endif()
    file(READ ${_spv} _hex HEX)
    string(REGEX REPLACE "([0-9a-f][0-9a-f])([0-9a-f][0-9a-f])([0-9a-f][0-9a-f])([0-9a-f][0-9a-f])"
      "0x\\4\\3\\2\\1u," _words "${_hex}")
    string(REPEAT "0x[0-9a-f]+u," 8 _eight)
    string(REGEX REPLACE "(${_eight})" "\\1\n    " _words "${_words}")
    string(REPLACE ";" " " _defines_text "${_defines}")
    string(APPEND _body
      "/// SPIR-V of ${_stem}.comp (${_variant}; glslc defines: ${_defines_text}).\n"
      "inline constexpr std::uint32_t vk7_${_variant}_spv[] = {\n    ${_words}};\n\n")
  endforeach()
  file(WRITE ${_out_dir}/${_stem}.hpp
    "#pragma once\n"
    "// Generated by cmake/moerouteShaders.cmake from glsl/${_stem}.comp with glslc. Do not edit:\n"
    "// change the .comp and run the moeroute_shaders target.\n\n"
    "#include <cstdint>\n\n"
    "namespace moeroute {\nnamespace detail {\nnamespace spirv {\n\n"
    "/// The GLSL text these words were compiled from (tests/shaders_test.cpp compares it to the file).\n"
    "inline constexpr char vk7_${_stem}_glsl[] = R\"moeroute_glsl(${_source})moeroute_glsl\";\n\n"
    "${_body}"
    "}  // namespace spirv\n}  // namespace detail\n}  // namespace moeroute\n")
endforeach()
