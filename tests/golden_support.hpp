#pragma once
// The ggml golden fixtures (tests/data/ggml_golden, see its README): a minimal reader of their
// .npy files (any dtype the fixtures use, any rank) and the error measure of the golden tests.

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace golden {

inline std::string path(const std::string& file) { return std::string(MOEROUTE_TEST_DATA_DIR) + "/ggml_golden/" + file; }

// A .npy array as stored: descr ("<f4", "<f8", "<i4"), shape and the raw little-endian data.
struct array {
  std::string descr;
  std::vector<std::size_t> shape;
  std::string data;

  std::size_t size() const {
    std::size_t n = 1;
    for (auto s : shape) n *= s;
    return n;
  }
  template <class T>
  std::vector<T> as(const char* want) const {
    EXPECT_EQ(descr, want);
    std::vector<T> v(size());
    if (data.size() >= v.size() * sizeof(T)) std::memcpy(v.data(), data.data(), v.size() * sizeof(T));
    return v;
  }
  std::vector<float> f32() const { return as<float>("<f4"); }
  std::vector<double> f64() const { return as<double>("<f8"); }
  std::vector<std::int32_t> i32() const { return as<std::int32_t>("<i4"); }
};

// Reads a version 1.0 .npy (NumPy's format for the fixtures, and what the CLI writes) at `full`.
inline array load_file(const std::string& full) {
  const std::string file = full;
  std::ifstream f(full, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string b = ss.str();
  array a;
  if (b.size() < 10 || b.compare(0, 6, "\x93NUMPY") != 0) {
    ADD_FAILURE() << file << ": not a .npy file";
    return a;
  }
  const std::size_t hlen = static_cast<unsigned char>(b[8]) | static_cast<std::size_t>(static_cast<unsigned char>(b[9])) << 8;
  const std::string h = b.substr(10, hlen);
  const auto d = h.find("'descr': '");
  a.descr = h.substr(d + 10, 3);
  auto s = h.find("'shape': (") + 10;
  while (h[s] != ')') {
    std::size_t n = 0;
    while (h[s] >= '0' && h[s] <= '9') n = n * 10 + static_cast<std::size_t>(h[s++] - '0');
    a.shape.push_back(n);
    while (h[s] == ',' || h[s] == ' ') ++s;
  }
  a.data = b.substr(10 + hlen);
  EXPECT_EQ(a.data.size(), a.size() * static_cast<std::size_t>(a.descr[2] - '0')) << file;
  return a;
}

// A fixture of tests/data/ggml_golden.
inline array load(const std::string& file) { return load_file(path(file)); }

// sum (got - want)^2 / sum want^2.
template <class A, class B>
double nmse(const std::vector<A>& got, const std::vector<B>& want) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < want.size() && i < got.size(); ++i) {
    const double d = static_cast<double>(got[i]) - static_cast<double>(want[i]);
    num += d * d;
    den += static_cast<double>(want[i]) * static_cast<double>(want[i]);
  }
  return den == 0 ? num : num / den;
}

// The variants and MoE blocks of the fixtures.
struct variant {
  const char* name;
  int block;
};
inline const variant kVariants[] = {{"f16", 0},   {"bf16", 0},  {"q8_0", 0},   {"q4_0", 0},  {"q2_k", 0},
                                    {"q3_k", 0},  {"q4_k", 0},  {"q5_k", 0},   {"q6_k", 0},  {"iq4_xs", 0},
                                    {"mxfp4", 0}, {"mixed", 1}, {"mixed", 2}, {"fused", 0}, {"gptoss", 0}};

inline std::string stem(const variant& v) { return std::string(v.name) + ".blk" + std::to_string(v.block); }

// The largest NMSE ggml's own CPU graph has against the exact answer over the blocks of model
// `name` (NMSE.txt): the error of arithmetic that quantizes activations as ggml does.
inline double ggml_model_nmse(const std::string& name) {
  std::ifstream f(path("NMSE.txt"));
  std::string line;
  double m = 0;
  while (std::getline(f, line)) {
    const auto at = line.find("nmse(ggml vs exact)=");
    if (line.compare(0, name.size() + 1, name + " ") == 0 && at != std::string::npos)
      m = std::max(m, std::stod(line.substr(at + 20)));
  }
  return m;
}

}  // namespace golden
