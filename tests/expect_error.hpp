#pragma once
// Expects a call to throw moeroute::error whose message starts with `prefix` (the file name the
// input was given) and contains `needle`.
#include <gtest/gtest.h>

#include <string>

#include "moeroute/error.hpp"

namespace moeroute_test {

template <class Fn>
void expect_error_message(Fn&& fn, const std::string& needle, const std::string& prefix) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
  } catch (const moeroute::error& e) {
    EXPECT_NE(e.message().find(needle), std::string::npos) << e.message();
    EXPECT_EQ(e.message().rfind(prefix, 0), 0u) << e.message();
  }
}

}  // namespace moeroute_test
