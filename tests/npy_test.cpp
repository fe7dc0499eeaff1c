// .npy reader/writer: round trips and every malformed header or size.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "moeroute/io/npy.hpp"

using namespace moeroute;

namespace {
std::string raw_npy(const std::string& dict, std::size_t data_bytes, int major = 1) {
  std::string h = dict;
  const std::size_t pre = major == 1 ? 10 : 12;
  h.append((64 - (pre + h.size() + 1) % 64) % 64, ' ');
  h.push_back('\n');
  std::string out("\x93NUMPY", 6);
  out.push_back(static_cast<char>(major));
  out.push_back(0);
  if (major == 1) {
    out.push_back(static_cast<char>(h.size() & 0xff));
    out.push_back(static_cast<char>(h.size() >> 8));
  } else {
    const auto n = static_cast<std::uint32_t>(h.size());
    for (int b = 0; b < 4; ++b) out.push_back(static_cast<char>((n >> (8 * b)) & 0xff));
  }
  return out + h + std::string(data_bytes, '\0');
}

void expect_error(const std::string& bytes, const std::string& needle) {
  try {
    parse_npy(bytes, "x.npy");
    ADD_FAILURE() << "accepted; expected: " << needle;
  } catch (const error& e) {
    EXPECT_NE(e.message().find(needle), std::string::npos) << e.message();
    EXPECT_EQ(e.message().rfind("x.npy", 0), 0u) << e.message();
  }
}
}  // namespace

TEST(Npy, RoundTripsFloat32AndFloat16) {
  std::vector<float> v = {1.5f, -2.25f, 0.0f, 3.0f, -0.5f, 7.0f};
  auto a = parse_npy(format_npy(v.data(), 2, 3), "a.npy");
  EXPECT_EQ(a.dtype, npy_dtype::f32);
  EXPECT_EQ(a.rows, 2u);
  EXPECT_EQ(a.cols, 3u);
  EXPECT_EQ(a.f32, v);
  auto h = parse_npy(format_npy(v.data(), 3, 2, true), "h.npy");
  EXPECT_EQ(h.dtype, npy_dtype::f16);
  ASSERT_EQ(h.f16.size(), 6u);
  for (std::size_t i = 0; i < v.size(); ++i) EXPECT_EQ(half_to_float(h.f16[i].bits), v[i]);
  // the header is padded so that data starts at a multiple of 64 bytes
  EXPECT_EQ((format_npy(v.data(), 2, 3).size() - 24) % 64, 0u);
}

TEST(Npy, AcceptsVersion2AndKeyOrder) {
  auto a = parse_npy(raw_npy("{'shape': (2, 2), 'fortran_order': False, 'descr': '<f4'}", 16, 2), "v2.npy");
  EXPECT_EQ(a.rows, 2u);
  auto e = parse_npy(raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (0, 5), }", 0), "empty.npy");
  EXPECT_EQ(e.rows, 0u);
}

TEST(Npy, RejectsEveryMalformedHeaderAndSize) {
  const std::string ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  expect_error("not a numpy file at all", "bad magic");
  expect_error(std::string("\x93NUMPY\x09\x00\x10\x00", 10), "version 9");
  {
    auto b = raw_npy(ok, 24);
    b[8] = '\xff';
    b[9] = '\x7f';  // header length 32767 > file
    expect_error(b, "runs past the end");
  }
  expect_error(raw_npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", 24), "'descr' = '>f4'");
  expect_error(raw_npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3), }", 48), "not supported");
  expect_error(raw_npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", 24), "fortran_order");
  expect_error(raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", 24), "1 dimensions");
  expect_error(raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }", 24), "3 dimensions");
  expect_error(raw_npy("{'descr': '<f4', 'fortran_order': False}", 24), "missing field 'shape'");
  expect_error(raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", 24), "non-negative");
  expect_error(raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x': 1}", 24), "unknown key 'x'");
  expect_error(raw_npy(ok, 20), "needs more data than the file holds (20 bytes)");
  expect_error(raw_npy(ok, 28), "needs 24 data bytes but the file holds 28");
  // a hostile shape must not allocate: (2^40, 2^40) over 24 bytes
  expect_error(raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }", 24),
               "needs more data than the file holds");
  expect_error(raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 1), }", 24),
               "overflows");
  EXPECT_THROW(read_npy("/nonexistent/logits.npy"), error);
}

// Expert ids: int32 and int64 arrays (read_npy_ints / parse_npy with ints), int32 written back.
TEST(Npy, IntegerIdsInt32AndInt64) {
  const std::vector<std::int32_t> ids = {3, 0, -1, 7, 2147483647, 5};
  auto a = parse_npy(format_npy_i32(ids.data(), 3, 2), "i.npy", false, true);
  EXPECT_EQ(a.dtype, npy_dtype::i32);
  EXPECT_EQ(a.rows, 3u);
  EXPECT_EQ(a.cols, 2u);
  EXPECT_EQ(a.ints, (std::vector<std::int64_t>{3, 0, -1, 7, 2147483647, 5}));
  EXPECT_EQ((format_npy_i32(ids.data(), 3, 2).size() - 24) % 64, 0u);
  std::string b = raw_npy("{'descr': '<i8', 'fortran_order': False, 'shape': (1, 2), }", 16);
  const std::int64_t v[2] = {-5, std::int64_t{1} << 40};
  std::memcpy(&b[b.size() - 16], v, 16);
  a = parse_npy(b, "l.npy", false, true);
  EXPECT_EQ(a.dtype, npy_dtype::i64);
  EXPECT_EQ(a.ints, (std::vector<std::int64_t>{-5, std::int64_t{1} << 40}));
  // floats where ints are wanted, and ints where floats are wanted, name what is expected
  try {
    parse_npy(format_npy(std::vector<float>{1.0f}.data(), 1, 1), "f.npy", false, true);
    ADD_FAILURE() << "accepted floats as ids";
  } catch (const error& e) {
    EXPECT_NE(e.message().find("'<f4' is not supported (expected '<i4' or '<i8')"), std::string::npos) << e.message();
  }
  expect_error(format_npy_i32(ids.data(), 3, 2), "'<i4' is not supported (expected '<f4' or '<f2')");
  EXPECT_THROW(parse_npy(raw_npy("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }", 16), "s.npy", false, true),
               error);  // 4 int64 values need 32 bytes
}
