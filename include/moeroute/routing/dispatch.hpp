#pragma once
// Dispatch: a CSR routing result -> per-expert groups of rows, the layout a grouped GEMM wants.
//
// Rows of expert e are permuted positions [expert_offsets[e], expert_offsets[e+1]); each holds the
// CSR entry index p (token t = the row's token, slot = p - offsets[t]) in ascending token order,
// or `dispatch_sentinel` for padding when groups are padded to a block size (as vLLM's
// moe_align_block_size). inverse[p] is the permuted row of CSR entry p, to combine outputs:
//   y[t] += weights[p] * expert_out[inverse[p]]   for p in [offsets[t], offsets[t+1]).
// With an expert -> device map (expert parallelism), device_rows[d] counts the (padded) rows of
// the experts placed on device d.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "moeroute/error.hpp"
#include "moeroute/routing/result.hpp"

namespace moeroute {

inline constexpr std::uint32_t dispatch_sentinel = 0xffffffffu;

struct dispatch_options {
  std::uint32_t block_size = 1;                ///< pad each expert group to a multiple of this
  const std::int32_t* expert_device = nullptr;  ///< optional, num_experts entries in [0, num_devices)
  int num_devices = 1;
};

/// Caller-provided dispatch buffers.
struct dispatch_output {
  std::uint32_t* expert_offsets = nullptr;  ///< num_experts + 1
  std::uint32_t* row_entry = nullptr;       ///< max_rows: CSR entry index, or dispatch_sentinel
  std::uint32_t* row_token = nullptr;       ///< max_rows: token of the row, or dispatch_sentinel
  std::uint32_t* inverse = nullptr;         ///< nnz: permuted row of each CSR entry
  std::uint32_t* device_rows = nullptr;     ///< num_devices (optional: may be null)
  std::size_t capacity = 0;                 ///< entries of row_entry / row_token
  std::uint32_t* scratch = nullptr;         ///< num_experts entries; null: dispatch allocates
};

/// Upper bound on the dispatched (padded) rows for nnz entries over E experts.
inline std::size_t dispatch_max_rows(std::size_t nnz, int num_experts, std::uint32_t block_size) noexcept {
  return nnz + static_cast<std::size_t>(num_experts) * (block_size > 0 ? block_size - 1 : 0);
}

/// Groups the entries of `r` by expert. Returns the number of dispatched rows (with padding).
/// Throws moeroute::error for ids outside [0, E), a bad device map or too little capacity.
inline std::size_t dispatch(const routing_result_view& r, const dispatch_options& opt,
                            const dispatch_output& out) {
  const int E = r.num_experts;
  MOEROUTE_CHECK(E >= 1, errc::invalid_argument, "dispatch: num_experts = ", E);
  MOEROUTE_CHECK(opt.block_size >= 1, errc::invalid_argument, "dispatch: block_size must be >= 1");
  MOEROUTE_CHECK(opt.num_devices >= 1, errc::invalid_argument, "dispatch: num_devices = ",
                 opt.num_devices);
  const std::size_t nnz = r.nnz();
  std::uint32_t* off = out.expert_offsets;
  for (int e = 0; e <= E; ++e) off[e] = 0;
  for (std::size_t p = 0; p < nnz; ++p) {
    const std::int32_t e = r.ids[p];
    MOEROUTE_CHECK(e >= 0 && e < E, errc::bad_input, "dispatch: entry ", p, " names expert ", e,
                   " outside [0, ", E, ")");
    ++off[e + 1];
  }
  // padded group sizes -> offsets
  const std::uint32_t b = opt.block_size;
  for (int e = 0; e < E; ++e) off[e + 1] = off[e] + (off[e + 1] + b - 1) / b * b;
  const std::size_t rows = off[E];
  MOEROUTE_CHECK(rows <= out.capacity, errc::capacity, "dispatch: ", rows,
                 " rows exceed the output capacity ", out.capacity);
  for (std::size_t i = 0; i < rows; ++i) out.row_entry[i] = out.row_token[i] = dispatch_sentinel;
  // stable fill: tokens ascending within each expert
  std::vector<std::uint32_t> own;
  std::uint32_t* cursor = out.scratch;
  if (!cursor) {
    own.resize(static_cast<std::size_t>(E));
    cursor = own.data();
  }
  for (int e = 0; e < E; ++e) cursor[e] = off[e];
  for (std::size_t t = 0; t < r.num_tokens; ++t)
    for (std::uint32_t p = r.offsets[t]; p < r.offsets[t + 1]; ++p) {
      const std::uint32_t row = cursor[static_cast<std::size_t>(r.ids[p])]++;
      out.row_entry[row] = p;
      out.row_token[row] = static_cast<std::uint32_t>(t);
      out.inverse[p] = row;
    }
  if (out.device_rows) {
    for (int d = 0; d < opt.num_devices; ++d) out.device_rows[d] = 0;
    for (int e = 0; e < E; ++e) {
      const int d = opt.expert_device ? opt.expert_device[e] : 0;
      MOEROUTE_CHECK(d >= 0 && d < opt.num_devices, errc::invalid_argument,
                     "dispatch: expert ", e, " mapped to device ", d, " outside [0, ",
                     opt.num_devices, ")");
      out.device_rows[d] += off[e + 1] - off[e];
    }
  }
  return rows;
}

/// Owning convenience result of dispatch().
struct dispatch_plan {
  std::vector<std::uint32_t> expert_offsets, row_entry, row_token, inverse, device_rows;
};

inline dispatch_plan make_dispatch_plan(const routing_result_view& r, const dispatch_options& opt = {}) {
  dispatch_plan p;
  const std::size_t cap = dispatch_max_rows(r.nnz(), r.num_experts, opt.block_size);
  p.expert_offsets.resize(static_cast<std::size_t>(r.num_experts) + 1);
  p.row_entry.resize(cap);
  p.row_token.resize(cap);
  p.inverse.resize(r.nnz());
  p.device_rows.resize(static_cast<std::size_t>(opt.num_devices > 0 ? opt.num_devices : 1));
  const std::size_t rows = dispatch(r, opt,
                                    {p.expert_offsets.data(), p.row_entry.data(), p.row_token.data(),
                                     p.inverse.data(), p.device_rows.data(), cap, nullptr});
  p.row_entry.resize(rows);
  p.row_token.resize(rows);
  return p;
}

}  // namespace moeroute
