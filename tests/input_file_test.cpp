// The input-file mechanism (include/moeroute/io/input_file.hpp) and every library reader built on
// it: only regular files of known size are opened; directories, FIFOs and devices are refused by
// name before anything blocks or is allocated; a file over the reader's cap is refused.

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <string>

#include "moeroute/io/container_trace.hpp"
#include "moeroute/io/gguf.hpp"
#include "moeroute/io/input_file.hpp"
#include "moeroute/io/npy.hpp"
#include "moeroute/io/routing_trace.hpp"
#include "moeroute/residency/atx_policy.hpp"

using namespace moeroute;

namespace {

std::string tmp(const std::string& name) { return std::string(MOEROUTE_TEST_TMP_DIR) + "/input_file_" + name; }

void expect_io_error(const std::function<void()>& f, const std::string& needle, errc code = errc::io_error) {
  try {
    f();
    FAIL() << "no error (wanted '" << needle << "')";
  } catch (const error& e) {
    EXPECT_EQ(e.code(), code) << e.message();
    EXPECT_NE(e.message().find(needle), std::string::npos) << "wanted '" << needle << "' in: " << e.message();
  }
}

std::string fifo() {
  const std::string p = tmp("fifo");
  std::remove(p.c_str());
  EXPECT_EQ(::mkfifo(p.c_str(), 0600), 0);
  return p;
}

}  // namespace

TEST(InputFile, RegularFileIsReadWhole) {
  const std::string p = tmp("plain.txt");
  {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << std::string("ab\0cd", 5);
  }
  EXPECT_EQ(input_file_size(p), 5u);
  EXPECT_EQ(read_input_file(p), std::string("ab\0cd", 5));
  const std::string empty = tmp("empty.txt");
  std::ofstream(empty, std::ios::trunc).close();
  EXPECT_EQ(read_input_file(empty), "");
}

TEST(InputFile, NonRegularFilesAreRefusedByName) {
  const std::string dir = std::string(MOEROUTE_TEST_TMP_DIR);
  expect_io_error([&] { read_input_file(dir); }, dir + ": is a directory, not a regular file");
  const std::string f = fifo();  // opening it for reading would block forever
  expect_io_error([&] { read_input_file(f); }, f + ": is a FIFO (named pipe)");
  expect_io_error([] { read_input_file("/dev/zero"); }, "/dev/zero: is a character device");
  expect_io_error([&] { read_input_file(tmp("missing")); }, "missing: cannot open file");
  expect_io_error([] { read_input_file(""); }, "empty");
}

TEST(InputFile, CapIsCheckedBeforeReading) {
  const std::string p = tmp("big.txt");
  {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f << std::string(100, 'x');
  }
  expect_io_error([&] { read_input_file(p, 99); }, "100 bytes is more than the 99 bytes", errc::bad_input);
  EXPECT_EQ(read_input_file(p, 100).size(), 100u);
}

// Every reader of the library goes through the same check (a FIFO would hang, /dev/zero would be
// read until memory runs out, a directory used to be reported as a format error).
TEST(InputFile, EveryReaderRefusesFifoDeviceAndDirectory) {
  const std::string f = fifo();
  const std::string dir = std::string(MOEROUTE_TEST_TMP_DIR);
  const std::vector<std::pair<std::string, std::function<void(const std::string&)>>> readers = {
      {"npy", [](const std::string& p) { read_npy(p); }},
      {"routing trace", [](const std::string& p) { read_routing_trace_jsonl(p); }},
      {"container trace", [](const std::string& p) { read_container_trace_json(p); }},
      {"atx policy", [](const std::string& p) { read_atx_policy(p); }},
      {"gguf", [](const std::string& p) { gguf_file::open(p); }},
  };
  for (const auto& r : readers) {
    SCOPED_TRACE(r.first);
    expect_io_error([&] { r.second(f); }, "is a FIFO");
    expect_io_error([&] { r.second("/dev/zero"); }, "is a character device");
    expect_io_error([&] { r.second(dir); }, "is a directory");
  }
}
