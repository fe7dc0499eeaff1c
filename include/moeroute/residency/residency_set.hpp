#pragma once
// residency_set: which (layer, expert) cells of an L x E model are resident (kept in VRAM).
// A dense bitset; set operations need equal shapes; iteration is in (layer, expert) order.

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "moeroute/error.hpp"

namespace moeroute {

/// Most cells a residency_set holds (a bit each, 8 MiB): a shape past it comes from an implausible
/// id in the input (a policy naming layer 65535 and expert 65535), never from a real model.
inline constexpr std::uint64_t max_residency_cells = std::uint64_t{1} << 26;

class residency_set {
 public:
  residency_set() = default;
  /// An empty set over num_layers x num_experts cells (at most max_residency_cells, else
  /// errc::bad_input naming the shape).
  residency_set(int num_layers, int num_experts) : layers_(num_layers), experts_(num_experts) {
    MOEROUTE_CHECK(num_layers >= 0 && num_experts >= 0, errc::invalid_argument,
                   "residency_set: negative shape ", num_layers, " x ", num_experts);
    MOEROUTE_CHECK(static_cast<std::uint64_t>(num_layers) * static_cast<std::uint64_t>(num_experts) <=
                       max_residency_cells,
                   errc::bad_input, num_layers, " layers x ", num_experts, " experts is more than the ",
                   max_residency_cells, " cells a residency set holds (is a layer or expert id implausible?)");
    words_per_layer_ = (static_cast<std::size_t>(num_experts) + 63) / 64;
    bits_.assign(words_per_layer_ * static_cast<std::size_t>(num_layers), 0);
  }

  int num_layers() const noexcept { return layers_; }
  int num_experts() const noexcept { return experts_; }
  std::size_t num_cells() const noexcept {
    return static_cast<std::size_t>(layers_) * static_cast<std::size_t>(experts_);
  }

  bool contains(int layer, int expert) const {
    check(layer, expert);
    return (word(layer, expert) >> (expert & 63)) & 1u;
  }
  /// Adds a cell; returns true when it was not present.
  bool insert(int layer, int expert) {
    check(layer, expert);
    auto& w = word(layer, expert);
    const std::uint64_t m = std::uint64_t{1} << (expert & 63);
    const bool fresh = (w & m) == 0;
    w |= m;
    return fresh;
  }
  /// Removes a cell; returns true when it was present.
  bool erase(int layer, int expert) {
    check(layer, expert);
    auto& w = word(layer, expert);
    const std::uint64_t m = std::uint64_t{1} << (expert & 63);
    const bool had = (w & m) != 0;
    w &= ~m;
    return had;
  }
  /// Adds every expert of a layer (a hybrid policy's whole hot layer).
  void insert_layer(int layer) {
    for (int e = 0; e < experts_; ++e) insert(layer, e);
  }

  std::size_t count() const noexcept {
    std::size_t n = 0;
    for (auto w : bits_) n += static_cast<std::size_t>(__builtin_popcountll(w));
    return n;
  }
  std::size_t count_in_layer(int layer) const {
    MOEROUTE_CHECK(layer >= 0 && layer < layers_, errc::invalid_argument,
                   "residency_set: layer ", layer, " outside [0, ", layers_, ")");
    std::size_t n = 0;
    for (std::size_t i = 0; i < words_per_layer_; ++i)
      n += static_cast<std::size_t>(
          __builtin_popcountll(bits_[static_cast<std::size_t>(layer) * words_per_layer_ + i]));
    return n;
  }
  bool empty() const noexcept { return count() == 0; }

  residency_set& operator|=(const residency_set& o) { return combine(o, [](auto a, auto b) { return a | b; }); }
  residency_set& operator&=(const residency_set& o) { return combine(o, [](auto a, auto b) { return a & b; }); }
  residency_set& operator-=(const residency_set& o) { return combine(o, [](auto a, auto b) { return a & ~b; }); }
  friend residency_set operator|(residency_set a, const residency_set& b) { return a |= b; }
  friend residency_set operator&(residency_set a, const residency_set& b) { return a &= b; }
  friend residency_set operator-(residency_set a, const residency_set& b) { return a -= b; }
  friend bool operator==(const residency_set& a, const residency_set& b) {
    return a.layers_ == b.layers_ && a.experts_ == b.experts_ && a.bits_ == b.bits_;
  }
  friend bool operator!=(const residency_set& a, const residency_set& b) { return !(a == b); }

  /// Calls f(layer, expert) for every resident cell in (layer, expert) order.
  template <class F>
  void for_each(F&& f) const {
    for (int l = 0; l < layers_; ++l)
      for (std::size_t i = 0; i < words_per_layer_; ++i) {
        std::uint64_t w = bits_[static_cast<std::size_t>(l) * words_per_layer_ + i];
        while (w) {
          const int b = __builtin_ctzll(w);
          f(l, static_cast<int>(i * 64) + b);
          w &= w - 1;
        }
      }
  }
  std::vector<std::pair<int, int>> cells() const {
    std::vector<std::pair<int, int>> out;
    out.reserve(count());
    for_each([&](int l, int e) { out.emplace_back(l, e); });
    return out;
  }

  /// Bytes of the resident cells when every cell has the same size.
  double bytes(double cell_bytes) const noexcept { return static_cast<double>(count()) * cell_bytes; }
  /// Bytes of the resident cells with a per-layer cell size (size num_layers()).
  double bytes(const std::vector<double>& per_layer_cell_bytes) const {
    MOEROUTE_CHECK(per_layer_cell_bytes.size() == static_cast<std::size_t>(layers_),
                   errc::invalid_argument, "residency_set::bytes: ", per_layer_cell_bytes.size(),
                   " per-layer sizes for ", layers_, " layers");
    double b = 0;
    for (int l = 0; l < layers_; ++l)
      b += static_cast<double>(count_in_layer(l)) * per_layer_cell_bytes[static_cast<std::size_t>(l)];
    return b;
  }

 private:
  void check(int layer, int expert) const {
    MOEROUTE_CHECK(layer >= 0 && layer < layers_ && expert >= 0 && expert < experts_,
                   errc::invalid_argument, "residency_set: cell (", layer, ", ", expert,
                   ") outside ", layers_, " x ", experts_);
  }
  std::uint64_t& word(int l, int e) {
    return bits_[static_cast<std::size_t>(l) * words_per_layer_ + static_cast<std::size_t>(e >> 6)];
  }
  const std::uint64_t& word(int l, int e) const {
    return bits_[static_cast<std::size_t>(l) * words_per_layer_ + static_cast<std::size_t>(e >> 6)];
  }
  template <class Op>
  residency_set& combine(const residency_set& o, Op op) {
    MOEROUTE_CHECK(layers_ == o.layers_ && experts_ == o.experts_, errc::invalid_argument,
                   "residency_set: shapes differ (", layers_, " x ", experts_, " vs ", o.layers_,
                   " x ", o.experts_, ")");
    for (std::size_t i = 0; i < bits_.size(); ++i) bits_[i] = op(bits_[i], o.bits_[i]);
    return *this;
  }

  int layers_ = 0;
  int experts_ = 0;
  std::size_t words_per_layer_ = 0;
  std::vector<std::uint64_t> bits_;
};

}  // namespace moeroute
