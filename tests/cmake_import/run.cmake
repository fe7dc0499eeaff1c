# Packaging test, run with cmake -P. MODE=find_package: install BUILD_DIR into a prefix and build
# the consumer against it; MODE=add_subdirectory: build the consumer with moeroute's source tree.
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
set(consumer ${SOURCE_DIR}/tests/cmake_import/consumer)

function(run_step)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "step failed (${rc}): ${ARGV}\n${out}\n${err}")
  endif()
  message(STATUS "${out}")
endfunction()

if(MODE STREQUAL "find_package")
  run_step(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix)
  if(EXISTS ${WORK_DIR}/prefix/bin/glslc)
    message(FATAL_ERROR "the install tree must not ship glslc")
  endif()
  run_step(${CMAKE_COMMAND} -S ${consumer} -B ${WORK_DIR}/build
    -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DMOEROUTE_CONSUMER_MODE=find_package
    -DMOEROUTE_REQUIRE_VULKAN=${REQUIRE_VULKAN})
else()
  run_step(${CMAKE_COMMAND} -S ${consumer} -B ${WORK_DIR}/build
    -DMOEROUTE_CONSUMER_MODE=add_subdirectory -DMOEROUTE_SOURCE=${SOURCE_DIR}
    -DMOEROUTE_REQUIRE_VULKAN=${REQUIRE_VULKAN})
endif()
run_step(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run_step(${WORK_DIR}/build/consumer)
if(EXISTS ${WORK_DIR}/build/consumer_vulkan)
  run_step(${WORK_DIR}/build/consumer_vulkan)
endif()
