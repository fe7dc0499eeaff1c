#pragma once
// NumPy .npy reader and writer for 2-D arrays: router logits and activations (float32 or
// float16), expert ids (int32 or int64; read_npy_ints), C order, little-endian, format versions
// 1.0, 2.0 and 3.0. Every header field and size is checked
// against the file before anything is allocated; errors name the file and the field.

#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "moeroute/detail/float16.hpp"
#include "moeroute/error.hpp"

namespace moeroute {

enum class npy_dtype { f32, f16, i32, i64 };

/// A 2-D array read from .npy, kept in its stored type.
struct npy_array {
  npy_dtype dtype = npy_dtype::f32;
  std::size_t rows = 0, cols = 0;
  std::vector<float> f32;      ///< when dtype == f32
  std::vector<float16_t> f16;  ///< when dtype == f16
  std::vector<std::int64_t> ints;  ///< when dtype == i32 or i64 (read_npy_ints)
};

namespace detail {
inline std::size_t npy_skip_ws(const std::string& h, std::size_t i) {
  while (i < h.size() && (h[i] == ' ' || h[i] == '\t' || h[i] == '\n')) ++i;
  return i;
}

/// Parses the header dict {'descr': '<f4', 'fortran_order': False, 'shape': (T, E), }.
/// `ints`: the array holds integers ('<i4', '<i8') instead of floats ('<f4', '<f2').
inline void npy_parse_header(const std::string& h, const std::string& name, npy_array& a,
                             std::uint64_t& rows, std::uint64_t& cols, bool allow_vector, bool ints = false) {
  auto fail_at = [&](const std::string& what) {
    detail::fail(errc::parse_error, name, ": npy header: ", what);
  };
  std::size_t i = npy_skip_ws(h, 0);
  if (i >= h.size() || h[i] != '{') fail_at("expected '{'");
  ++i;
  bool have_descr = false, have_order = false, have_shape = false;
  for (;;) {
    i = npy_skip_ws(h, i);
    if (i < h.size() && h[i] == '}') break;
    if (i >= h.size() || (h[i] != '\'' && h[i] != '"')) fail_at("expected a quoted key");
    const char q = h[i];
    const std::size_t kend = h.find(q, i + 1);
    if (kend == std::string::npos) fail_at("unterminated key");
    const std::string key = h.substr(i + 1, kend - i - 1);
    i = npy_skip_ws(h, kend + 1);
    if (i >= h.size() || h[i] != ':') fail_at("expected ':' after '" + key + "'");
    i = npy_skip_ws(h, i + 1);
    if (key == "descr") {
      if (i >= h.size() || (h[i] != '\'' && h[i] != '"')) fail_at("field 'descr' must be a string");
      const char vq = h[i];
      const std::size_t vend = h.find(vq, i + 1);
      if (vend == std::string::npos) fail_at("unterminated 'descr'");
      const std::string d = h.substr(i + 1, vend - i - 1);
      if (!ints && d == "<f4") a.dtype = npy_dtype::f32;
      else if (!ints && d == "<f2") a.dtype = npy_dtype::f16;
      else if (ints && d == "<i4") a.dtype = npy_dtype::i32;
      else if (ints && d == "<i8") a.dtype = npy_dtype::i64;
      else
        fail_at("field 'descr' = '" + d + "' is not supported (expected " +
                (ints ? "'<i4' or '<i8'" : "'<f4' or '<f2'") + ")");
      have_descr = true;
      i = vend + 1;
    } else if (key == "fortran_order") {
      if (h.compare(i, 5, "False") == 0) {
        i += 5;
      } else if (h.compare(i, 4, "True") == 0) {
        fail_at("field 'fortran_order' is True (only C order is supported)");
      } else {
        fail_at("field 'fortran_order' must be True or False");
      }
      have_order = true;
    } else if (key == "shape") {
      if (i >= h.size() || h[i] != '(') fail_at("field 'shape' must be a tuple");
      ++i;
      std::vector<std::uint64_t> dims;
      for (;;) {
        i = npy_skip_ws(h, i);
        if (i < h.size() && h[i] == ')') break;
        std::uint64_t v = 0;
        std::size_t digits = 0;
        while (i < h.size() && h[i] >= '0' && h[i] <= '9') {
          if (v > (std::numeric_limits<std::uint64_t>::max() - 9) / 10) fail_at("shape dimension overflows");
          v = v * 10 + static_cast<std::uint64_t>(h[i] - '0');
          ++i;
          ++digits;
        }
        if (digits == 0) fail_at("field 'shape' must hold non-negative integers");
        dims.push_back(v);
        if (dims.size() > 8) fail_at("field 'shape' has too many dimensions");
        i = npy_skip_ws(h, i);
        if (i < h.size() && h[i] == ',') ++i;
        else if (i >= h.size() || h[i] != ')') fail_at("malformed 'shape' tuple");
      }
      ++i;
      if (allow_vector && dims.size() == 1) dims.insert(dims.begin(), 1);
      if (dims.size() != 2)
        fail_at("field 'shape' has " + std::to_string(dims.size()) + " dimensions (expected 2: tokens x experts)");
      rows = dims[0];
      cols = dims[1];
      have_shape = true;
    } else {
      fail_at("unknown key '" + key + "'");
    }
    i = npy_skip_ws(h, i);
    if (i < h.size() && h[i] == ',') {
      ++i;
      continue;
    }
    i = npy_skip_ws(h, i);
    if (i < h.size() && h[i] == '}') break;
    fail_at("expected ',' or '}'");
  }
  if (!have_descr) fail_at("missing field 'descr'");
  if (!have_order) fail_at("missing field 'fortran_order'");
  if (!have_shape) fail_at("missing field 'shape'");
}
}  // namespace detail

/// Parses .npy bytes; `name` is used in error messages. With allow_vector a 1-D array of n
/// values is read as 1 x n (a per-expert vector such as a selection bias). `ints`: an int32 or
/// int64 array into npy_array::ints (read_npy_ints), else a float32 or float16 one.
inline npy_array parse_npy(const std::string& bytes, const std::string& name, bool allow_vector = false,
                           bool ints = false) {
  static const char magic[] = "\x93NUMPY";
  MOEROUTE_CHECK(bytes.size() >= 10 && std::memcmp(bytes.data(), magic, 6) == 0, errc::parse_error,
                 name, ": not a .npy file (bad magic)");
  const auto major = static_cast<unsigned char>(bytes[6]);
  std::uint64_t header_len = 0, header_start = 0;
  if (major == 1) {
    header_len = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned>(static_cast<unsigned char>(bytes[9])) << 8);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    MOEROUTE_CHECK(bytes.size() >= 12, errc::parse_error, name, ": truncated npy header length");
    for (int b = 3; b >= 0; --b) header_len = (header_len << 8) | static_cast<unsigned char>(bytes[8 + b]);
    header_start = 12;
  } else {
    detail::fail(errc::unsupported, name, ": npy format version ", static_cast<int>(major), " is not supported");
  }
  MOEROUTE_CHECK(header_len <= bytes.size() - header_start, errc::parse_error, name,
                 ": npy header length ", header_len, " runs past the end of the file (",
                 bytes.size(), " bytes)");
  npy_array a;
  std::uint64_t rows = 0, cols = 0;
  detail::npy_parse_header(bytes.substr(header_start, header_len), name, a, rows, cols, allow_vector, ints);
  const std::uint64_t item = a.dtype == npy_dtype::f16 ? 2 : a.dtype == npy_dtype::i64 ? 8 : 4;
  const std::uint64_t data_start = header_start + header_len;
  const std::uint64_t avail = bytes.size() - data_start;
  MOEROUTE_CHECK(cols == 0 || rows <= avail / item / cols, errc::parse_error, name, ": shape (",
                 rows, ", ", cols, ") needs more data than the file holds (", avail, " bytes)");
  const std::uint64_t need = rows * cols * item;
  MOEROUTE_CHECK(need == avail, errc::parse_error, name, ": shape (", rows, ", ", cols, ") needs ",
                 need, " data bytes but the file holds ", avail);
  a.rows = static_cast<std::size_t>(rows);
  a.cols = static_cast<std::size_t>(cols);
  const char* src = bytes.data() + data_start;
  if (need == 0) return a;  // an empty array: nothing to copy (and no buffer to copy into)
  if (a.dtype == npy_dtype::i32 || a.dtype == npy_dtype::i64) {
    a.ints.resize(a.rows * a.cols);
    for (std::size_t i = 0; i < a.ints.size(); ++i) {
      if (a.dtype == npy_dtype::i32) {
        std::int32_t v;
        std::memcpy(&v, src + 4 * i, 4);
        a.ints[i] = v;
      } else {
        std::memcpy(&a.ints[i], src + 8 * i, 8);
      }
    }
  } else if (a.dtype == npy_dtype::f32) {
    a.f32.resize(a.rows * a.cols);
    std::memcpy(a.f32.data(), src, static_cast<std::size_t>(need));
  } else {
    a.f16.resize(a.rows * a.cols);
    std::memcpy(a.f16.data(), src, static_cast<std::size_t>(need));
  }
  return a;
}

namespace detail {
inline std::string npy_read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  MOEROUTE_CHECK(f.good(), errc::io_error, path, ": cannot open file");
  std::ostringstream ss;
  ss << f.rdbuf();
  MOEROUTE_CHECK(!f.bad(), errc::io_error, path, ": read error");
  return ss.str();
}
}  // namespace detail

/// Reads a .npy file (see parse_npy).
inline npy_array read_npy(const std::string& path, bool allow_vector = false) {
  return parse_npy(detail::npy_read_file(path), path, allow_vector);
}

/// Reads a .npy file of int32 or int64 values (expert ids) into npy_array::ints.
inline npy_array read_npy_ints(const std::string& path) {
  return parse_npy(detail::npy_read_file(path), path, false, true);
}

namespace detail {
/// The version 1.0 header of a rows x cols array of dtype `descr`, padded to 64 bytes.
inline std::string npy_header(const char* descr, std::size_t rows, std::size_t cols) {
  std::string header = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (" +
                       std::to_string(rows) + ", " + std::to_string(cols) + "), }";
  const std::size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  return out + header;
}
}  // namespace detail

/// Serializes a rows x cols int32 array as .npy version 1.0.
inline std::string format_npy_i32(const std::int32_t* data, std::size_t rows, std::size_t cols) {
  std::string out = detail::npy_header("<i4", rows, cols);
  out.append(reinterpret_cast<const char*>(data), rows * cols * 4);
  return out;
}

/// Serializes a rows x cols float32 (or float16 when `half`) array as .npy version 1.0.
inline std::string format_npy(const float* data, std::size_t rows, std::size_t cols, bool half = false) {
  std::string out = detail::npy_header(half ? "<f2" : "<f4", rows, cols);
  for (std::size_t i = 0; i < rows * cols; ++i) {
    if (half) {
      const std::uint16_t h = float_to_half(data[i]);
      out.append(reinterpret_cast<const char*>(&h), 2);
    } else {
      out.append(reinterpret_cast<const char*>(&data[i]), 4);
    }
  }
  return out;
}

}  // namespace moeroute
