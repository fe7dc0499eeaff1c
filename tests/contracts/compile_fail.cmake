# Compiles policy_contract.cpp for one case with CXX in C++17 and in C++20 (-fsyntax-only).
# CASE 0 must compile; other cases must fail, and the output must contain EXPECT.
#   cmake -DCXX=... -DINCLUDE=... -DSOURCE=... -DCASE=n [-DEXPECT=text] -P compile_fail.cmake
foreach(std c++17 c++20)
  execute_process(
    COMMAND ${CXX} -std=${std} -fsyntax-only -Wall -Wextra -Wpedantic -I${INCLUDE}
      -DMOEROUTE_CONTRACT_CASE=${CASE} ${SOURCE}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(CASE EQUAL 0)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "case 0 (${std}) must compile:\n${out}${err}")
    endif()
  else()
    if(rc EQUAL 0)
      message(FATAL_ERROR "case ${CASE} (${std}) compiled but must fail with: ${EXPECT}")
    endif()
    string(FIND "${out}${err}" "${EXPECT}" at)
    if(at EQUAL -1)
      message(FATAL_ERROR "case ${CASE} (${std}) failed without the message '${EXPECT}':\n${out}${err}")
    endif()
  endif()
  message(STATUS "case ${CASE} ${std}: as expected")
endforeach()
