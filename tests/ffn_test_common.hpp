#pragma once
// Helpers shared by ffn_cpu_test.cpp and ffn_vulkan_test.cpp: random problems, an independent
// decoder of the weight formats and a plain-loop reference of the expert FFN.

#include <moeroute/backends/ffn_types.hpp>
#include <moeroute/detail/float16.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace ffn_test {

struct problem {
  moeroute::ffn_layer shape;
  std::vector<std::vector<unsigned char>> blobs;  // per expert
  moeroute::routing_result routing;
  std::vector<float> x;
};

// Decodes one value of row `row` (n values) at column c, written from the ggml block definitions
// independently of moeroute::dequantize_row (f32, f16, q8_0, q4_0).
inline float ref_value(moeroute::weight_type t, const unsigned char* row, std::size_t c) {
  switch (t) {
    case moeroute::weight_type::f32: {
      float v;
      std::memcpy(&v, row + 4 * c, 4);
      return v;
    }
    case moeroute::weight_type::f16: {
      std::uint16_t h = static_cast<std::uint16_t>(row[2 * c] | (row[2 * c + 1] << 8));
      return moeroute::half_to_float(h);
    }
    case moeroute::weight_type::q8_0: {
      const unsigned char* b = row + 34 * (c / 32);
      const float d = moeroute::half_to_float(static_cast<std::uint16_t>(b[0] | (b[1] << 8)));
      const int q = static_cast<int>(b[2 + c % 32]) - ((b[2 + c % 32] & 0x80) ? 256 : 0);
      return d * static_cast<float>(q);
    }
    case moeroute::weight_type::q4_0: {
      const unsigned char* b = row + 18 * (c / 32);
      const float d = moeroute::half_to_float(static_cast<std::uint16_t>(b[0] | (b[1] << 8)));
      const std::size_t i = c % 32;
      const int nib = i < 16 ? (b[2 + i] & 15) : (b[2 + i - 16] >> 4);
      return d * static_cast<float>(nib - 8);
    }
    default: break;
  }
  return 0.0f;
}

// Row `row` of n values of type t, as doubles: ref_value for f32, f16, q8_0 and q4_0; for the
// other types moeroute::dequantize_row, which weights_test checks against ggml's own decoding
// (tests/data/ggml_golden deq_rows) and hand-built blocks.
inline std::vector<double> ref_row(moeroute::weight_type t, const unsigned char* row, std::size_t n) {
  std::vector<double> out(n);
  if (t == moeroute::weight_type::f32 || t == moeroute::weight_type::f16 || t == moeroute::weight_type::q8_0 ||
      t == moeroute::weight_type::q4_0) {
    for (std::size_t c = 0; c < n; ++c) out[c] = ref_value(t, row, c);
  } else {
    std::vector<float> f(n);
    moeroute::dequantize_row(t, row, f.data(), n);
    for (std::size_t c = 0; c < n; ++c) out[c] = f[c];
  }
  return out;
}

// The float32 value at byte offset `at` of a blob.
inline double ref_f32(const unsigned char* blob, std::size_t at) {
  float v;
  std::memcpy(&v, blob + at, 4);
  return v;
}

// y = sum over kept (expert, w) of w * (Wd act(Wg x + bg, Wu x + bu) + bd), in double, plain
// loops; act = silu(g) u or gpt-oss's clamped swiglu (weights/layer.hpp).
inline std::vector<double> reference(const problem& p) {
  const auto& s = p.shape;
  const std::size_t H = static_cast<std::size_t>(s.hidden), F = static_cast<std::size_t>(s.ffn);
  const std::size_t rg = moeroute::row_bytes(s.gate_type, H), ru = moeroute::row_bytes(s.up_type, H),
                    rd = moeroute::row_bytes(s.down_type, F);
  std::vector<double> y(p.routing.num_tokens * H, 0.0);
  std::vector<double> a(F);
  for (std::size_t t = 0; t < p.routing.num_tokens; ++t) {
    for (std::uint32_t j = p.routing.offsets[t]; j < p.routing.offsets[t + 1]; ++j) {
      const unsigned char* blob = p.blobs[static_cast<std::size_t>(p.routing.ids[j])].data();
      const std::size_t bias = s.bias_offset();
      for (std::size_t f = 0; f < F; ++f) {
        const auto wg = ref_row(s.gate_type, blob + s.gate_offset() + f * rg, H);
        const auto wu = ref_row(s.up_type, blob + s.up_offset() + f * ru, H);
        double g = 0, u = 0;
        for (std::size_t h = 0; h < H; ++h) {
          const double xv = p.x[t * H + h];
          g += wg[h] * xv;
          u += wu[h] * xv;
        }
        if (s.has_bias) {
          g += ref_f32(blob, bias + 4 * f);
          u += ref_f32(blob, bias + 4 * (F + f));
        }
        if (s.act == moeroute::ffn_activation::swiglu_oai) {
          const double gc = std::min(g, 7.0), uc = std::min(std::max(u, -7.0), 7.0);
          a[f] = gc / (1.0 + std::exp(-1.702 * gc)) * (uc + 1.0);
        } else {
          a[f] = g / (1.0 + std::exp(-g)) * u;
        }
      }
      for (std::size_t h = 0; h < H; ++h) {
        const auto wd = ref_row(s.down_type, blob + s.down_offset() + h * rd, F);
        double acc = s.has_bias ? ref_f32(blob, bias + 4 * (2 * F + h)) : 0.0;
        for (std::size_t f = 0; f < F; ++f) acc += wd[f] * a[f];
        y[t * H + h] += p.routing.weights[j] * acc;
      }
    }
  }
  return y;
}

// Normalized mean squared error: sum (a - b)^2 / sum b^2 (0 when both are all zero).
inline double nmse(const std::vector<float>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return den == 0 ? num : num / den;
}

inline void random_weights(problem& p, std::uint32_t seed) {
  std::mt19937 rng(seed);
  const auto& s = p.shape;
  const std::size_t H = static_cast<std::size_t>(s.hidden), F = static_cast<std::size_t>(s.ffn);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> g(F * H), u(F * H), d(H * F), bg(F), bu(F), bd(H);
  const float sg = 1.0f / std::sqrt(static_cast<float>(H)), sd = 1.0f / std::sqrt(static_cast<float>(F));
  p.blobs.assign(static_cast<std::size_t>(s.num_experts), {});
  for (auto& b : p.blobs) {
    for (auto& v : g) v = nd(rng) * sg * 2.0f;
    for (auto& v : u) v = nd(rng) * sg * 2.0f;
    for (auto& v : d) v = nd(rng) * sd;
    for (auto* bias : {&bg, &bu, &bd})
      for (auto& v : *bias) v = nd(rng) * 0.5f;
    b.resize(s.expert_bytes());
    moeroute::encode_expert(s, g.data(), u.data(), d.data(), b.data(), bg.data(), bu.data(), bd.data());
  }
}

inline void random_x(problem& p, std::size_t T, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  p.x.resize(T * static_cast<std::size_t>(p.shape.hidden));
  for (auto& v : p.x) v = nd(rng);
}

// Routing with k distinct random experts per token, softmax-like positive weights.
inline moeroute::routing_result random_routing(std::size_t T, int E, int k, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> ud(0.05f, 1.0f);
  moeroute::routing_result r;
  r.num_tokens = T;
  r.num_experts = E;
  std::vector<int> perm(static_cast<std::size_t>(E));
  for (std::size_t t = 0; t < T; ++t) {
    for (int e = 0; e < E; ++e) perm[static_cast<std::size_t>(e)] = e;
    for (int i = 0; i < k; ++i) {
      std::uniform_int_distribution<int> pick(i, E - 1);
      std::swap(perm[static_cast<std::size_t>(i)], perm[static_cast<std::size_t>(pick(rng))]);
      r.ids.push_back(perm[static_cast<std::size_t>(i)]);
      r.weights.push_back(ud(rng));
    }
    r.offsets.push_back(static_cast<std::uint32_t>(r.ids.size()));
  }
  return r;
}

}  // namespace ffn_test
