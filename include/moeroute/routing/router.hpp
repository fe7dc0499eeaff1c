#pragma once
// The router: logits [T, E] -> CSR routing result, following the routing semantics of
// docs/design.md ("Routing semantics"):
//   1. scores s = Scoring(logits)            (softmax | sigmoid | sqrt-softplus)
//   2. selection score = s + bias            (bias optional; only affects selection)
//   3-4. Selection chooses K experts         (top-k | grouped top-k), ties -> lower index
//   5. weights w = s of the chosen; renorm: w /= sum(w)
//   6. Gating keeps the first n by weight    (none | cumulative probability); renorm again
//   7. w *= scale
// -inf logits are masked experts. NaN or +inf logits, or fewer than K choosable experts, are bad
// input naming the row. Output rows are in descending weight order (ties: lower id first), and a
// row's result does not depend on the other rows of the batch.
//
// Usage (no allocation per call):
//   moeroute::router<moeroute::softmax_scoring> r(E, K, {/*renorm=*/true});
//   std::vector<std::byte> ws(r.workspace_size());
//   r.route(logits_view<float>{x, T, E}, {offsets, ids, weights, r.max_nnz(T)}, ws.data());

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "moeroute/detail/float16.hpp"
#include "moeroute/error.hpp"
#include "moeroute/routing/contracts.hpp"
#include "moeroute/routing/gating.hpp"
#include "moeroute/routing/result.hpp"
#include "moeroute/routing/scoring.hpp"
#include "moeroute/routing/selection.hpp"

namespace moeroute {

/// A [rows, cols] view of logits (float, float16_t or bfloat16_t) with a row stride in elements.
template <class T>
struct logits_view {
  const T* data = nullptr;
  std::size_t rows = 0;
  std::size_t cols = 0;
  std::size_t row_stride = 0;  ///< elements between row starts; 0 means cols (contiguous)

  logits_view() = default;
  logits_view(const T* d, std::size_t r, std::size_t c, std::size_t stride = 0)
      : data(d), rows(r), cols(c), row_stride(stride ? stride : c) {}
  const T* row(std::size_t i) const noexcept { return data + i * row_stride; }
};

/// Caller-provided output buffers. ids and weights hold `capacity` entries (>= max_nnz(T)).
struct routing_output {
  std::uint32_t* offsets = nullptr;  ///< T + 1 entries
  std::int32_t* ids = nullptr;
  float* weights = nullptr;
  std::size_t capacity = 0;
};

/// Optional per-token statistics.
struct token_stats {
  std::uint32_t active = 0;  ///< experts kept after gating
  float entropy = 0;         ///< Shannon entropy (nats) of the scores normalized over all experts
  float kept_mass = 0;       ///< share of the normalized scores held by the kept experts
};

/// Run-time parameters shared by every policy combination.
struct router_params {
  bool renorm = false;      ///< normalize the chosen (and again the kept) weights to sum 1
  float scale = 1.0f;       ///< multiplies the final weights (DeepSeek's routed_scaling_factor)
  std::vector<float> bias;  ///< selection bias per expert (empty: none)

  router_params(bool renorm_ = false, float scale_ = 1.0f, std::vector<float> bias_ = {})
      : renorm(renorm_), scale(scale_), bias(std::move(bias_)) {}
};

template <class Scoring = softmax_scoring, class Selection = topk_selection,
          class Gating = no_gating>
class router {
  static_assert(is_scoring_policy_v<Scoring>,
                "moeroute::router: Scoring does not meet the Scoring policy contract (routing/scoring.hpp): "
                "name, row_normalized, and noexcept prepare(const float*, float*, int), finish(float, float), "
                "unnormalized(float, float) returning float");
  static_assert(is_selection_policy_v<Selection>,
                "moeroute::router: Selection does not meet the Selection policy contract (routing/selection.hpp): "
                "name, order_only, validate(int, int), and noexcept workspace_bytes(int) and "
                "select(const float*, int, int, float*, std::int32_t*, void*) returning int");
  static_assert(is_gating_policy_v<Gating>,
                "moeroute::router: Gating does not meet the Gating policy contract (routing/gating.hpp): "
                "name, validate(int), and noexcept keep(const float*, int) returning int");

 public:
  /// Validates the shape and every policy parameter up front (throws moeroute::error).
  router(int num_experts, int top_k, router_params params = {}, Scoring scoring = {},
         Selection selection = {}, Gating gating = {})
      : E_(num_experts),
        K_(top_k),
        params_(std::move(params)),
        scoring_(scoring),
        selection_(selection),
        gating_(gating) {
    MOEROUTE_CHECK(E_ >= 1, errc::invalid_argument, "router: num_experts = ", E_, " must be >= 1");
    selection_.validate(E_, K_);
    gating_.validate(K_);
    MOEROUTE_CHECK(std::isfinite(params_.scale), errc::invalid_argument, "router: scale = ",
                   params_.scale, " is not finite");
    MOEROUTE_CHECK(params_.bias.empty() || params_.bias.size() == static_cast<std::size_t>(E_),
                   errc::invalid_argument, "router: bias has ", params_.bias.size(),
                   " entries for ", E_, " experts");
    for (std::size_t e = 0; e < params_.bias.size(); ++e)
      MOEROUTE_CHECK(std::isfinite(params_.bias[e]), errc::invalid_argument, "router: bias[", e,
                     "] is not finite");
  }

  int num_experts() const noexcept { return E_; }
  int top_k() const noexcept { return K_; }
  const router_params& params() const noexcept { return params_; }
  const Scoring& scoring() const noexcept { return scoring_; }
  const Selection& selection() const noexcept { return selection_; }
  const Gating& gating() const noexcept { return gating_; }

  /// Entries ids/weights need for T tokens (every token keeps at most K).
  std::size_t max_nnz(std::size_t tokens) const noexcept { return tokens * static_cast<std::size_t>(K_); }

  /// Bytes of scratch route() needs, independent of T.
  std::size_t workspace_size() const noexcept { return layout().total; }

  /// Routes every row into `out`. Throws moeroute::error (bad_input naming the row, or capacity).
  template <class T>
  void route(const logits_view<T>& x, const routing_output& out, void* workspace,
             token_stats* stats = nullptr) const {
    const status st = try_route(x, out, workspace, stats);
    if (!st.ok()) raise(st);
  }

  /// As route(), but reports errors as a status and never throws.
  template <class T>
  status try_route(const logits_view<T>& x, const routing_output& out, void* workspace,
                   token_stats* stats = nullptr) const noexcept {
    if (x.cols != static_cast<std::size_t>(E_))
      return status::failure(errc::invalid_argument, -1, static_cast<long long>(x.cols),
                             "logits have a different number of columns than the router's experts");
    if (out.capacity < max_nnz(x.rows))
      return status::failure(errc::capacity, -1, -1, "output capacity below max_nnz(T)");
    const auto L = layout();
    auto* base = static_cast<unsigned char*>(workspace);
    auto* xrow = reinterpret_cast<float*>(base + L.xrow);
    auto* key = reinterpret_cast<float*>(base + L.key);
    auto* sel = reinterpret_cast<float*>(base + L.sel);
    auto* topv = reinterpret_cast<float*>(base + L.topv);
    auto* topid = reinterpret_cast<std::int32_t*>(base + L.topid);
    void* selws = base + L.selws;

    std::uint32_t nnz = 0;
    out.offsets[0] = 0;
    if constexpr (fused_topk && std::is_same_v<T, float>) {
      if (params_.bias.empty()) {
        // the top-K by logit of up to B rows at once (routing_scan_select_topk_rows), then each
        // row's remaining steps in row order
        constexpr int B = detail::routing_topk_rows_max;
        auto* bval = reinterpret_cast<float*>(base + L.bval);
        auto* bid = reinterpret_cast<std::int32_t*>(base + L.bid);
        // K = 8 softmax + renorm: the rows' remaining steps for the whole block at once where the
        // path has them (routing_softmax_renorm_rows8); the rows it leaves take route_row
        const bool rows8 = tail8 && K_ == 8 && params_.renorm && !stats;
        const detail::routing_gate8 g8 = gate8();
        alignas(64) float w8[B * 8];
        alignas(64) std::int32_t kept8[B];
        for (std::size_t t0 = 0; t0 < x.rows; t0 += B) {
          const int rows = x.rows - t0 < static_cast<std::size_t>(B) ? static_cast<int>(x.rows - t0) : B;
          int n[B], bad[B], masked[B];
          detail::routing_scan_select_topk_rows(x.row(t0), x.row_stride, rows, E_, K_, bval, bid, n,
                                                bad, masked);
          unsigned done = 0;
          if (rows8 && rows >= rows8_min) {
            unsigned full = 0;  // rows with their 8 chosen (no NaN / +inf, 8 choosable)
            for (int r = 0; r < rows; ++r) full |= static_cast<unsigned>(n[r] == 8) << r;
            done = detail::routing_softmax_renorm_rows8(bval, full, params_.scale,
                                                        gated8 ? &g8 : nullptr, w8, kept8);
          }
          for (int r = 0; r < rows; ++r) {
            if ((done >> r) & 1u) {  // the run of done rows from r
              const int end = r + __builtin_ctz(~(done >> r));
              nnz = detail::routing_write_rows8(bid, w8, kept8, r, end, out.ids, out.weights, nnz,
                                                out.offsets + t0 + 1);
              r = end - 1;
              continue;
            }
            const std::size_t t = t0 + static_cast<std::size_t>(r);
            const row_topk pre{n[r], bad[r], masked[r]};
            const status st = route_row(x.row(t), key, sel, bval + r * K_, bid + r * K_, selws,
                                        static_cast<long long>(t), out.ids + nnz, out.weights + nnz,
                                        stats ? stats + t : nullptr, &pre);
            if (!st.ok()) return st;
            nnz += static_cast<std::uint32_t>(st.column);
            out.offsets[t + 1] = nnz;
          }
        }
        return status::success();
      }
    }
    if constexpr (fused_grouped) {
      // steps 1-5 of two rows at a time in one kernel call (routing_sigmoid_grouped_topk), where
      // the shape and the rows allow it; a row it leaves takes the steps below
      auto* p = reinterpret_cast<float*>(base + L.pair);
      const std::size_t fE = static_cast<std::size_t>(E_), fK = static_cast<std::size_t>(K_);
      float* const keys[2] = {key, p};
      float* const sels[2] = {sel, p + fE};
      float* const vals[2] = {topv, p + 2 * fE};
      std::int32_t* const tids[2] = {topid, reinterpret_cast<std::int32_t*>(p + 2 * fE + fK)};
      float* const xbuf[2] = {xrow, p + 2 * fE + 2 * fK};
      const float* bias = params_.bias.empty() ? nullptr : params_.bias.data();
      for (std::size_t t0 = 0; t0 < x.rows; t0 += 2) {
        const int rows = x.rows - t0 < 2 ? 1 : 2;
        const float* x0 = load_row(x.row(t0), xbuf[0]);
        const float* xs[2] = {x0, rows == 2 ? load_row(x.row(t0 + 1), xbuf[1]) : x0};
        int n[2];
        detail::routing_sigmoid_grouped_topk(xs, rows, bias, E_, K_, selection_.groups,
                                             selection_.topk_groups, keys, sels, vals, tids, n);
        for (int r = 0; r < rows; ++r) {
          const std::size_t t = t0 + static_cast<std::size_t>(r);
          const status st =
              n[r] ? finish_row(xs[r], keys[r], 1.0f, vals[r], tids[r], static_cast<long long>(t),
                                out.ids + nnz, out.weights + nnz, stats ? stats + t : nullptr)
                   : route_row(xs[r], key, sel, topv, topid, selws, static_cast<long long>(t),
                               out.ids + nnz, out.weights + nnz, stats ? stats + t : nullptr);
          if (!st.ok()) return st;
          nnz += static_cast<std::uint32_t>(st.column);
          out.offsets[t + 1] = nnz;
        }
      }
      return status::success();
    }
    for (std::size_t t = 0; t < x.rows; ++t) {
      const float* row = load_row(x.row(t), xrow);
      const status st = route_row(row, key, sel, topv, topid, selws, static_cast<long long>(t),
                                  out.ids + nnz, out.weights + nnz, stats ? stats + t : nullptr);
      if (!st.ok()) return st;
      nnz += static_cast<std::uint32_t>(st.column);  // route_row returns the kept count there
      out.offsets[t + 1] = nnz;
    }
    return status::success();
  }

  /// Allocating convenience: routes into a new routing_result.
  template <class T>
  routing_result route(const logits_view<T>& x, std::vector<token_stats>* stats = nullptr) const {
    routing_result r;
    r.num_tokens = x.rows;
    r.num_experts = E_;
    r.offsets.assign(x.rows + 1, 0);
    r.ids.resize(max_nnz(x.rows));
    r.weights.resize(max_nnz(x.rows));
    std::vector<unsigned char> ws(workspace_size());
    if (stats) stats->assign(x.rows, token_stats{});
    route(x, routing_output{r.offsets.data(), r.ids.data(), r.weights.data(), r.ids.size()},
          ws.data(), stats ? stats->data() : nullptr);
    r.ids.resize(r.offsets.back());
    r.weights.resize(r.offsets.back());
    return r;
  }

 private:
  struct workspace_layout {
    std::size_t xrow, key, sel, topv, topid, selws, bval, bid, pair, total;
  };
  // the plain top-K by logit scans the row in the same pass, for several rows at once on float
  // logits (try_route)
  static constexpr bool fused_topk = std::is_same_v<Selection, topk_selection>;
  // sigmoid scoring with the grouped top-K: scores, bias, selection and the output order in one
  // kernel call where it applies (routing_sigmoid_grouped_topk)
  static constexpr bool fused_grouped = std::is_same_v<Scoring, sigmoid_scoring> &&
                                        std::is_same_v<Selection, grouped_topk_selection>;
  // softmax + renorm at K = 8 with no gating or zero-gating: the kernels' K = 8 tail
  // (routing_softmax_renorm_write8 and its rows-at-once form)
  static constexpr bool gated8 = std::is_same_v<Gating, cumulative_gating>;
  static constexpr bool tail8 = std::is_same_v<Scoring, softmax_scoring> &&
                                (std::is_same_v<Gating, no_gating> || gated8);
  // fewer rows than this take the one-row tail (the block's cost does not depend on its rows)
  static constexpr int rows8_min = 4;
  detail::routing_gate8 gate8() const noexcept {
    if constexpr (gated8)  // max_k validated: <= K
      return {gating_.cum_prob, gating_.min_k, gating_.max_k == 0 ? 8 : gating_.max_k};
    else
      return {};
  }
  // a row's top-K by logit and scan, done ahead (routing_scan_select_topk's results)
  struct row_topk {
    int chosen, bad, masked;
  };
  static std::size_t align64(std::size_t n) noexcept { return (n + 63) & ~std::size_t{63}; }
  workspace_layout layout() const noexcept {
    workspace_layout l{};
    const std::size_t fE = align64(sizeof(float) * static_cast<std::size_t>(E_));
    const std::size_t fK = align64(sizeof(float) * static_cast<std::size_t>(K_));
    l.xrow = 0;
    l.key = l.xrow + fE;
    l.sel = l.key + fE;
    l.topv = l.sel + fE;
    l.topid = l.topv + fK;
    l.selws = l.topid + fK;
    l.bval = l.selws + align64(selection_.workspace_bytes(E_));
    const std::size_t nb = fused_topk ? static_cast<std::size_t>(detail::routing_topk_rows_max) : 0;
    l.bid = l.bval + align64(nb * sizeof(float) * static_cast<std::size_t>(K_));
    l.pair = l.bid + align64(nb * sizeof(std::int32_t) * static_cast<std::size_t>(K_));
    // the second row of a pair: key, sel, its top-K's scores and ids, its logits as float
    const std::size_t np = fused_grouped ? 3 * static_cast<std::size_t>(E_) + 2 * static_cast<std::size_t>(K_) : 0;
    l.total = l.pair + align64(np * sizeof(float)) + 64;
    return l;
  }

  const float* load_row(const float* src, float*) const noexcept { return src; }
  template <class T>
  const float* load_row(const T* src, float* dst) const noexcept {
    for (int e = 0; e < E_; ++e) dst[e] = to_float(src[e]);
    return dst;
  }

  [[noreturn]] void raise(const status& st) const {
    const auto code = static_cast<errc>(st.code);
    if (st.row >= 0 && st.column >= 0)
      detail::fail(code, "row ", st.row, ": ", st.what, " (expert ", st.column, ")");
    if (st.row >= 0) detail::fail(code, "row ", st.row, ": ", st.what);
    detail::fail(code, "router: ", st.what);
  }

  // Routes one row; on success returns status with column = number of experts written.
  status route_row(const float* x, float* key, float* sel, float* topv, std::int32_t* topid,
                   void* selws, long long row, std::int32_t* ids, float* w,
                   token_stats* stats, const row_topk* pre = nullptr) const noexcept {
    constexpr float inf = std::numeric_limits<float>::infinity();
    int bad = 0, masked = 0;
    int chosen = -1;  // the plain top-K by logit scans the row in the same pass (-1: not yet)
    if (pre) {
      chosen = pre->chosen;
      bad = pre->bad;
      masked = pre->masked;
    } else if (fused_topk && params_.bias.empty())
      chosen = detail::routing_scan_select_topk(x, E_, K_, topv, topid, &bad, &masked);
    else
      detail::routing_scan_row(x, E_, &bad, &masked);  // NaN or +inf; -inf
    if (bad) {
      for (int e = 0; e < E_; ++e)
        if (!(x[e] < inf))
          return status::failure(errc::bad_input, row, e,
                                 std::isnan(x[e]) ? "NaN logit" : "+inf logit");
    }
    if (E_ - masked < K_)
      return status::failure(errc::bad_input, row, -1, "fewer than K choosable experts");

    float norm = 1.0f;
    bool have_keys = false;
    if (Selection::order_only && params_.bias.empty()) {
      // Strictly increasing scorings: choose by logit, then score only the chosen.
      const int n = chosen >= 0 ? chosen : selection_.select(x, E_, K_, topv, topid, selws);
      if (n < K_) return status::failure(errc::bad_input, row, -1, "fewer than K choosable experts");
      if (Scoring::row_normalized && !params_.renorm) {
        norm = scoring_.prepare(x, key, E_);
        have_keys = true;
        for (int i = 0; i < K_; ++i) topv[i] = scoring_.finish(key[topid[i]], norm);
      } else {
        // without the normalizer: renormalization below removes the common factor
        const float m = topv[0];
        if constexpr (std::is_same_v<Scoring, softmax_scoring>) {  // every lane exactly the scalar exp
          // K = 8 with renorm, no gating or zero-gating: the exps, the sum, the division, the
          // kept count, the scale and the writes in registers when the chosen need no reordering
          // (nearly always; it has written topv either way); else the steps below
          if (tail8 && K_ == 8 && params_.renorm && !stats) {
            const detail::routing_gate8 g8 = gate8();
            const int wrote = detail::routing_softmax_renorm_write8(x, topid, m, params_.scale,
                                                                    gated8 ? &g8 : nullptr, topv, ids, w);
            if (wrote) return status{0, row, wrote, ""};
          } else {
            detail::routing_exp_chosen(x, topid, K_, m, topv);
          }
        } else
          for (int i = 0; i < K_; ++i) topv[i] = scoring_.unnormalized(x[topid[i]], m);
      }
    } else {
      constexpr bool sigmoid = std::is_same_v<Scoring, sigmoid_scoring>;
      if (!sigmoid || params_.bias.empty()) norm = scoring_.prepare(x, key, E_);
      have_keys = true;
      const float* score = key;
      if (!params_.bias.empty()) {
        if constexpr (sigmoid)  // the scores and the selection scores in one pass (norm is 1)
          detail::routing_sigmoid_select(x, key, params_.bias.data(), sel, E_);
        else if constexpr (builtin_scoring)  // finish(key, norm) is key / norm (norm 1 but for softmax)
          detail::routing_select_scores(x, key, norm, params_.bias.data(), sel, E_);
        else
          for (int e = 0; e < E_; ++e)
            sel[e] = x[e] == -inf ? -inf
                                  : scoring_.finish(key[e], norm) + params_.bias[static_cast<std::size_t>(e)];
        score = sel;
      } else if (masked) {
        detail::routing_select_scores(x, key, norm, nullptr, sel, E_);
        score = sel;
      }
      const int n = selection_.select(score, E_, K_, topv, topid, selws);
      if (n < K_)
        return status::failure(errc::bad_input, row, -1, "fewer than K choosable experts in the kept groups");
      for (int i = 0; i < K_; ++i) topv[i] = scoring_.finish(key[topid[i]], norm);
    }

    // weights of the chosen, in descending weight order (ties: lower id)
    for (int i = 1; i < K_; ++i) {
      const float v = topv[i];
      const std::int32_t id = topid[i];
      int j = i;
      for (; j > 0 && (topv[j - 1] < v || (topv[j - 1] == v && topid[j - 1] > id)); --j) {
        topv[j] = topv[j - 1];
        topid[j] = topid[j - 1];
      }
      topv[j] = v;
      topid[j] = id;
    }
    if (stats && !have_keys) norm = scoring_.prepare(x, key, E_);
    return finish_row(x, key, norm, topv, topid, row, ids, w, stats);
  }

  // Steps 5-7 of a row whose K chosen are in output order (topv: their scores, descending; ties
  // by id): renormalization, gating, scale, the writes and the statistics (key, norm: the
  // scoring's keys of the whole row). Returns the kept count as route_row does.
  status finish_row(const float* x, const float* key, float norm, float* topv,
                    const std::int32_t* topid, long long row, std::int32_t* ids, float* w,
                    token_stats* stats) const noexcept {
    if (params_.renorm) normalize(topv, K_);
    const int kept = gating_.keep(topv, K_);
    if (params_.renorm && kept < K_) normalize(topv, kept);
    // the weights x scale, then one check that they are finite (a finite score times a finite
    // scale past the float range: the first such entry is reported)
    bool finite = true;
    int i = 0;
#if MOEROUTE_VECTOR_EXT
    const float lim = std::numeric_limits<float>::max();
    const detail::vf4 sv = detail::vf4_splat(params_.scale), lv = detail::vf4_splat(lim);
    detail::vi4 ok = {-1, -1, -1, -1};
    for (; i + 4 <= kept; i += 4) {
      const detail::vf4 v = detail::vf4_load(topv + i) * sv;
      std::memcpy(ids + i, topid + i, 4 * sizeof(std::int32_t));
      detail::vf4_store(w + i, v);
      ok &= (v <= lv) & (v >= -lv);
    }
    finite = (ok[0] & ok[1] & ok[2] & ok[3]) != 0;
#endif
    for (; i < kept; ++i) {
      ids[i] = topid[i];
      w[i] = topv[i] * params_.scale;
      finite = finite && std::isfinite(w[i]);
    }
    if (!finite)
      for (i = 0; i < kept; ++i)
        if (!std::isfinite(w[i]))
          return status::failure(errc::bad_input, row, topid[i], "weight x scale overflows float");
    if (stats) fill_stats(key, norm, x, topid, kept, stats);
    return status{0, row, kept, ""};
  }

  // v[0, n) /= their sum, summed in index order. The loops run K_ times whatever n (n < K_ after
  // gating; +0.0 added past n leaves the sum as it is, lanes past n are scratch), so their
  // branches do not depend on the row.
  void normalize(float* v, int n) const noexcept {
    float s = 0;
    for (int i = 0; i < K_; ++i) s += i < n ? v[i] : 0.0f;
    if (!(s > 0)) return;
    int i = 0;
#if MOEROUTE_VECTOR_EXT
    const detail::vf4 sv = detail::vf4_splat(s);  // IEEE quotients: the same bits as one at a time
    for (; i + 4 <= K_; i += 4) detail::vf4_store(v + i, detail::vf4_load(v + i) / sv);
#endif
    for (; i < K_; ++i) v[i] /= s;
  }

  void fill_stats(const float* key, float norm, const float* x, const std::int32_t* kept_ids,
                  int kept, token_stats* st) const noexcept {
    double total = 0;
    for (int e = 0; e < E_; ++e)
      if (x[e] != -std::numeric_limits<float>::infinity())
        total += static_cast<double>(scoring_.finish(key[e], norm));
    double h = 0, kept_s = 0;
    if (total > 0) {
      for (int e = 0; e < E_; ++e) {
        if (x[e] == -std::numeric_limits<float>::infinity()) continue;
        const double q = static_cast<double>(scoring_.finish(key[e], norm)) / total;
        if (q > 0) h -= q * std::log(q);
      }
      for (int i = 0; i < kept; ++i)
        kept_s += static_cast<double>(scoring_.finish(key[kept_ids[i]], norm));
    }
    st->active = static_cast<std::uint32_t>(kept);
    st->entropy = static_cast<float>(h);
    st->kept_mass = total > 0 ? static_cast<float>(kept_s / total) : 0.0f;
  }

  static constexpr bool builtin_scoring = std::is_same_v<Scoring, softmax_scoring> ||
                                          std::is_same_v<Scoring, sigmoid_scoring> ||
                                          std::is_same_v<Scoring, sqrt_softplus_scoring>;

  int E_;
  int K_;
  router_params params_;
  Scoring scoring_;
  Selection selection_;
  Gating gating_;
};

}  // namespace moeroute
