#pragma once
// A small GGUF writer for tests and fuzz seeds: builds the bytes of a GGUF v2/v3 file field by field
// (little-endian), so tests can write valid files and, by editing fields, malformed ones.
// Written from the format description (magic, version, counts, KVs, tensor infos, aligned data).

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace moeroute_test {

inline void put_u32(std::string& s, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline void put_u64(std::string& s, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
inline void put_str(std::string& s, const std::string& v) {
  put_u64(s, v.size());
  s += v;
}
inline void put_f32(std::string& s, float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  put_u32(s, u);
}

// GGUF value type ids.
enum : std::uint32_t { T_U8 = 0, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 };

struct gguf_writer {
  struct tensor {
    std::string name;
    std::uint32_t type;
    std::vector<std::uint64_t> ne;
    std::string data;
  };
  std::uint32_t version = 3;
  std::uint64_t n_kv = 0;
  std::string kv_bytes;
  std::vector<tensor> tensors;

  // A KV whose value bytes (after the type id) are given raw.
  void kv_raw(const std::string& key, std::uint32_t type, const std::string& value_bytes) {
    put_str(kv_bytes, key);
    put_u32(kv_bytes, type);
    kv_bytes += value_bytes;
    ++n_kv;
  }
  void kv_string(const std::string& key, const std::string& v) {
    std::string b;
    put_str(b, v);
    kv_raw(key, T_STR, b);
  }
  void kv_u32(const std::string& key, std::uint32_t v) {
    std::string b;
    put_u32(b, v);
    kv_raw(key, T_U32, b);
  }
  void kv_string_array(const std::string& key, const std::vector<std::string>& v) {
    std::string b;
    put_u32(b, T_STR);
    put_u64(b, v.size());
    for (const auto& x : v) put_str(b, x);
    kv_raw(key, T_ARR, b);
  }
  void tensor_raw(const std::string& name, std::uint32_t type, std::vector<std::uint64_t> ne,
                  std::string data) {
    tensors.push_back({name, type, std::move(ne), std::move(data)});
  }
  void tensor_f32(const std::string& name, std::vector<std::uint64_t> ne, const std::vector<float>& v) {
    std::string d;
    for (float f : v) put_f32(d, f);
    tensor_raw(name, 0, std::move(ne), std::move(d));
  }

  // The file bytes: header, KVs, tensor infos (offsets packed at `alignment`), padding, data.
  std::string bytes(std::uint64_t alignment = 32) const {
    std::string s = "GGUF";
    put_u32(s, version);
    put_u64(s, tensors.size());
    put_u64(s, n_kv);
    s += kv_bytes;
    std::uint64_t off = 0;
    std::vector<std::uint64_t> offsets;
    for (const auto& t : tensors) {
      put_str(s, t.name);
      put_u32(s, static_cast<std::uint32_t>(t.ne.size()));
      for (auto n : t.ne) put_u64(s, n);
      put_u32(s, t.type);
      put_u64(s, off);
      offsets.push_back(off);
      off += t.data.size();
      off += (alignment - off % alignment) % alignment;
    }
    if (tensors.empty()) return s;
    s.append((alignment - s.size() % alignment) % alignment, '\0');
    const std::size_t base = s.size();
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      s.resize(base + offsets[i], '\0');
      s += tensors[i].data;
    }
    return s;
  }

  void write(const std::string& path, std::uint64_t alignment = 32) const {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    const std::string b = bytes(alignment);
    f.write(b.data(), static_cast<std::streamsize>(b.size()));
  }
};

// A llama.cpp-style imatrix GGUF for an MoE model: for each layer l in `layers`, tensors
// blk.l.ffn_down_exps.weight.in_sum2 [n_in, E] and .counts [1, E] with counts[l][e].
inline gguf_writer make_imatrix(const std::vector<int>& layers,
                                const std::vector<std::vector<float>>& counts, std::uint64_t n_in = 2,
                                const std::string& proj = "ffn_down_exps") {
  gguf_writer w;
  w.kv_string("general.type", "imatrix");
  w.kv_string_array("imatrix.datasets", {"test.txt"});
  w.kv_u32("imatrix.chunk_count", 4);
  w.kv_u32("imatrix.chunk_size", 512);
  for (std::size_t i = 0; i < layers.size(); ++i) {
    const std::string base = "blk." + std::to_string(layers[i]) + "." + proj + ".weight";
    const std::uint64_t E = counts[i].size();
    std::vector<float> sums(n_in * E);
    for (std::uint64_t e = 0; e < E; ++e)
      for (std::uint64_t j = 0; j < n_in; ++j)
        sums[e * n_in + j] = counts[i][e] * static_cast<float>(j + 1);
    w.tensor_f32(base + ".in_sum2", {n_in, E}, sums);
    w.tensor_f32(base + ".counts", {1, E}, counts[i]);
  }
  return w;
}

// A llama.cpp-style MoE model GGUF: for each block N in `moe_blocks`, tensors
// blk.N.ffn_gate_exps.weight {H, F, E}, blk.N.ffn_up_exps.weight {H, F, E} and
// blk.N.ffn_down_exps.weight {F, H, E} of ggml type `type`, whose data is the concatenation over
// experts e of slice(N, proj, e) (proj 0 gate, 1 up, 2 down), plus the architecture metadata.
template <class SliceFn>
gguf_writer make_moe_model(const std::vector<int>& moe_blocks, std::uint64_t E, std::uint64_t H, std::uint64_t F,
                           std::uint32_t type, SliceFn&& slice, const std::string& arch = "qwen3moe",
                           std::uint32_t experts_used = 2) {
  gguf_writer w;
  w.kv_string("general.architecture", arch);
  w.kv_u32(arch + ".expert_count", static_cast<std::uint32_t>(E));
  w.kv_u32(arch + ".expert_used_count", experts_used);
  static const char* names[3] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
  for (int b : moe_blocks)
    for (int p = 0; p < 3; ++p) {
      std::string data;
      for (std::uint64_t e = 0; e < E; ++e) data += slice(b, p, static_cast<int>(e));
      std::vector<std::uint64_t> ne = p == 2 ? std::vector<std::uint64_t>{F, H, E} : std::vector<std::uint64_t>{H, F, E};
      w.tensor_raw("blk." + std::to_string(b) + "." + names[p] + ".weight", type, std::move(ne), std::move(data));
    }
  return w;
}

}  // namespace moeroute_test
