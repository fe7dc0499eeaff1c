#pragma once
// ATX residency policies (`schema_version: atx-moe-residency-policy-v1`), the JSON files the ATX
// llama.cpp fork reads with --moe-residency-policy, and the fork's flag syntax.
//
// A policy keeps either global experts (the same ids hot in every MoE layer: `keep_experts`,
// `keep_experts_ranked`, `keep_experts_compact`) or individual (layer, expert) cells
// (`keep_layer_experts`, `keep_layer_experts_by_layer`, `keep_layer_experts_compact`), plus whole
// layers (`keep_layers`, the fork's hybrid mode). A file may carry several forms of the same set;
// the reader checks that they agree and reports the first entry that does not. Unknown keys are kept
// and written back in their original place.
//
// Flag syntax (the fork's --moe-keep-experts / --moe-keep-layer-experts / --moe-keep-layers values):
//   id-list   := id-item ("," id-item)*        id-item := ID | ID "-" ID      e.g. "0,3-5"
//   cell-list := cell-item ("," cell-item)*    cell-item := LAYER ":" id-item e.g. "0:0-31,37:103"
// IDs are decimal integers without sign or spaces; a range "a-b" is inclusive with a <= b. A cell
// item names one layer; several experts of one layer need several items ("0:0-3,0:7").
// Compact strings (`keep_experts_compact`, `keep_layer_experts_compact`) are the same lists without
// ranges, sorted ascending (cells by layer, then expert). A compact string out of that order is
// rejected on read (bad_input naming the first entry out of order), so writing a policy back can
// never reorder it. Duplicates (also through overlapping ranges) are errors.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "moeroute/error.hpp"
#include "moeroute/io/input_file.hpp"
#include "moeroute/residency/residency_set.hpp"

namespace moeroute {

/// The schema id written into every policy and required (when present) on read.
inline constexpr const char* atx_policy_schema = "atx-moe-residency-policy-v1";
/// Largest layer / expert id a policy may name (bounds the dense sets built from it).
inline constexpr int atx_max_id = 65535;
/// Deepest JSON nesting accepted in a policy file.
inline constexpr int atx_max_json_depth = 64;

/// One ranked unit of a policy: a global expert (layer == -1) or a (layer, expert) cell, with its
/// rank (0 when the entry has none) and every other key of the entry (importance and activation
/// shares, ...) in file order.
struct atx_unit {
  int layer = -1;
  int expert = 0;
  long long rank = 0;
  nlohmann::ordered_json stats = nlohmann::ordered_json::object();

  /// The numeric value of stats[key], or NaN when the entry does not have it.
  double stat(const std::string& key) const {
    auto it = stats.find(key);
    if (it == stats.end() || !it->is_number()) return std::numeric_limits<double>::quiet_NaN();
    return it->get<double>();
  }
};

/// Which of the redundant forms a policy carries (and writes back).
struct atx_forms {
  bool keep_experts = false;
  bool keep_experts_ranked = false;
  bool keep_experts_compact = false;
  bool keep_layer_experts = false;
  bool keep_layer_experts_by_layer = false;
  bool keep_layer_experts_compact = false;
  bool keep_layers = false;
};

/// An ATX residency policy in memory.
struct atx_policy {
  std::string schema_version = atx_policy_schema;  ///< "" when the file had none
  std::string policy_name;
  nlohmann::ordered_json selection;          ///< the `selection` block as read/built; null if absent
  std::vector<int> keep_experts;             ///< global expert ids, in file order
  std::vector<atx_unit> keep_experts_ranked; ///< ranked global experts, in file (rank) order
  std::vector<atx_unit> keep_layer_experts;  ///< cells, in file (rank) order
  std::vector<int> keep_layers;              ///< whole layers kept hot, in file order
  atx_forms forms;                           ///< forms present / to write
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();  ///< unknown keys, file order
  std::vector<std::string> key_order;        ///< top-level key order of the source file

  bool has_layer_experts() const noexcept { return !keep_layer_experts.empty(); }
  bool has_global_experts() const noexcept { return !keep_experts.empty(); }
};

namespace detail {

inline bool atx_parse_uint(const std::string& s, std::size_t b, std::size_t e, int& out) {
  if (b >= e || e - b > 9) return false;
  long v = 0;
  for (std::size_t i = b; i < e; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  if (v > atx_max_id) return false;
  out = static_cast<int>(v);
  return true;
}

// Parses "a" or "a-b" (when ranges are allowed) into [lo, hi].
inline void atx_parse_item(const std::string& text, std::size_t b, std::size_t e, bool ranges,
                           const std::string& what, std::size_t item, int& lo, int& hi) {
  const std::string tok = text.substr(b, e - b);
  const std::size_t dash = ranges ? tok.find('-') : std::string::npos;
  bool ok;
  if (dash == std::string::npos) {
    ok = atx_parse_uint(tok, 0, tok.size(), lo);
    hi = lo;
  } else {
    ok = atx_parse_uint(tok, 0, dash, lo) && atx_parse_uint(tok, dash + 1, tok.size(), hi);
    MOEROUTE_CHECK(!ok || lo <= hi, errc::parse_error, what, ": item ", item + 1, " '", tok,
                   "': range start is greater than its end");
  }
  MOEROUTE_CHECK(ok, errc::parse_error, what, ": item ", item + 1, " '", tok, "' is not ",
                 ranges ? "an id or a range a-b" : "an id", " (ids are 0..", atx_max_id, ")");
}

inline std::vector<std::pair<std::size_t, std::size_t>> atx_split(const std::string& text,
                                                                   const std::string& what) {
  std::vector<std::pair<std::size_t, std::size_t>> out;
  if (text.empty()) return out;
  std::size_t pos = 0;
  while (true) {
    const std::size_t comma = text.find(',', pos);
    const std::size_t end = comma == std::string::npos ? text.size() : comma;
    MOEROUTE_CHECK(end > pos, errc::parse_error, what, ": empty item ", out.size() + 1);
    out.emplace_back(pos, end);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

inline std::string atx_range_text(int lo, int hi) {
  return lo == hi ? std::to_string(lo) : std::to_string(lo) + "-" + std::to_string(hi);
}

}  // namespace detail

/// Parses an id list ("0,3-5"; with allow_ranges = false only "0,3,4,5"). Ids in text order;
/// a duplicate id is an error. `what` names the source in messages. "" gives an empty list.
inline std::vector<int> parse_atx_id_list(const std::string& text, const std::string& what,
                                          bool allow_ranges = true) {
  std::vector<int> out;
  std::set<int> seen;
  const auto items = detail::atx_split(text, what);
  for (std::size_t i = 0; i < items.size(); ++i) {
    int lo = 0, hi = 0;
    detail::atx_parse_item(text, items[i].first, items[i].second, allow_ranges, what, i, lo, hi);
    for (int v = lo; v <= hi; ++v) {
      MOEROUTE_CHECK(seen.insert(v).second, errc::bad_input, what, ": item ", i + 1, " '",
                     text.substr(items[i].first, items[i].second - items[i].first),
                     "': duplicate id ", v);
      out.push_back(v);
    }
  }
  return out;
}

/// Parses a cell list ("0:0-31,37:103"; with allow_ranges = false only "L:E" items). Cells in
/// text order as (layer, expert); a duplicate cell is an error naming the item.
inline std::vector<std::pair<int, int>> parse_atx_cell_list(const std::string& text,
                                                            const std::string& what,
                                                            bool allow_ranges = true) {
  std::vector<std::pair<int, int>> out;
  std::set<std::pair<int, int>> seen;
  const auto items = detail::atx_split(text, what);
  for (std::size_t i = 0; i < items.size(); ++i) {
    const std::size_t b = items[i].first, e = items[i].second;
    const std::string tok = text.substr(b, e - b);
    const std::size_t colon = text.find(':', b);
    MOEROUTE_CHECK(colon != std::string::npos && colon < e, errc::parse_error, what, ": item ",
                   i + 1, " '", tok, "' is not LAYER:EXPERT");
    int layer = 0;
    MOEROUTE_CHECK(detail::atx_parse_uint(text, b, colon, layer), errc::parse_error, what,
                   ": item ", i + 1, " '", tok, "': layer is not an id 0..", atx_max_id);
    int lo = 0, hi = 0;
    detail::atx_parse_item(text, colon + 1, e, allow_ranges, what, i, lo, hi);
    for (int v = lo; v <= hi; ++v) {
      MOEROUTE_CHECK(seen.insert({layer, v}).second, errc::bad_input, what, ": item ", i + 1,
                     " '", tok, "': duplicate cell ", layer, ":", v);
      out.emplace_back(layer, v);
    }
  }
  return out;
}

/// Formats ids in the fork's flag syntax: sorted, consecutive runs as ranges ("0,3-5").
inline std::string format_atx_id_flag(std::vector<int> ids) {
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  std::string out;
  for (std::size_t i = 0; i < ids.size();) {
    std::size_t j = i;
    while (j + 1 < ids.size() && ids[j + 1] == ids[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += detail::atx_range_text(ids[i], ids[j]);
    i = j + 1;
  }
  return out;
}

/// Formats cells in the fork's flag syntax: (layer, expert) order, runs of consecutive experts of a
/// layer as ranges ("0:0-31,37:103").
inline std::string format_atx_cell_flag(std::vector<std::pair<int, int>> cells) {
  std::sort(cells.begin(), cells.end());
  cells.erase(std::unique(cells.begin(), cells.end()), cells.end());
  std::string out;
  for (std::size_t i = 0; i < cells.size();) {
    std::size_t j = i;
    while (j + 1 < cells.size() && cells[j + 1].first == cells[i].first &&
           cells[j + 1].second == cells[j].second + 1)
      ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(cells[i].first) + ":" + detail::atx_range_text(cells[i].second, cells[j].second);
    i = j + 1;
  }
  return out;
}

/// Formats ids as a compact string: sorted, no ranges ("1,12,14").
inline std::string format_atx_id_compact(std::vector<int> ids) {
  std::sort(ids.begin(), ids.end());
  std::string out;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(ids[i]);
  }
  return out;
}

/// Formats cells as a compact string: (layer, expert) order, no ranges ("1:193,4:59").
inline std::string format_atx_cell_compact(std::vector<std::pair<int, int>> cells) {
  std::sort(cells.begin(), cells.end());
  std::string out;
  for (std::size_t i = 0; i < cells.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(cells[i].first) + ":" + std::to_string(cells[i].second);
  }
  return out;
}

namespace detail {

inline int atx_json_id(const nlohmann::ordered_json& v, const std::string& where, int limit,
                       const char* limit_name) {
  MOEROUTE_CHECK(v.is_number_integer(), errc::parse_error, where, " must be an integer, got ",
                 v.type_name());
  MOEROUTE_CHECK(!v.is_number_unsigned() || v.get<unsigned long long>() <= atx_max_id, errc::bad_input,
                 where, " = ", v.get<unsigned long long>(), " out of range [0, ", atx_max_id, "]");
  const auto x = v.get<long long>();
  MOEROUTE_CHECK(x >= 0 && x <= atx_max_id, errc::bad_input, where, " = ", x,
                 " out of range [0, ", atx_max_id, "]");
  MOEROUTE_CHECK(limit <= 0 || x < limit, errc::bad_input, where, " = ", x, " out of range: ",
                 limit_name, " is ", limit);
  return static_cast<int>(x);
}

inline int atx_selection_int(const nlohmann::ordered_json& sel, const char* key,
                             const std::string& where) {
  if (!sel.is_object()) return 0;
  auto it = sel.find(key);
  if (it == sel.end()) return 0;
  MOEROUTE_CHECK(it->is_number_integer() && it->get<long long>() > 0 &&
                     it->get<long long>() <= atx_max_id + 1LL,
                 errc::bad_input, where, ": selection.", key, " must be a positive integer");
  return static_cast<int>(it->get<long long>());
}

inline atx_unit atx_read_unit(const nlohmann::ordered_json& v, const std::string& where,
                              bool with_layer, int layers, int experts) {
  MOEROUTE_CHECK(v.is_object(), errc::parse_error, where, " must be an object, got ", v.type_name());
  atx_unit u;
  if (with_layer) {
    MOEROUTE_CHECK(v.contains("layer"), errc::parse_error, where, ": missing field 'layer'");
    u.layer = atx_json_id(v["layer"], where + ".layer", layers, "selection.layers");
  }
  MOEROUTE_CHECK(v.contains("expert"), errc::parse_error, where, ": missing field 'expert'");
  u.expert = atx_json_id(v["expert"], where + ".expert", experts,
                         with_layer ? "selection.experts_per_layer" : "selection.total_experts");
  for (auto it = v.begin(); it != v.end(); ++it) {
    const std::string& k = it.key();
    if (k == "layer" || k == "expert") continue;
    if (k == "rank") {
      MOEROUTE_CHECK(it->is_number_integer() && it->get<long long>() >= 1 &&
                         (!it->is_number_unsigned() || it->get<unsigned long long>() <= (1ULL << 62)),
                     errc::parse_error, where, ".rank must be a positive integer");
      u.rank = it->get<long long>();
      continue;
    }
    const bool numeric = k.size() >= 6 && (k.compare(k.size() - 6, 6, "_share") == 0);
    MOEROUTE_CHECK(!numeric || (it->is_number() && std::isfinite(it->get<double>())),
                   errc::parse_error, where, ".", k, " must be a finite number, got ",
                   it->type_name());
    u.stats[k] = *it;
  }
  return u;
}

inline std::string atx_cell_name(int l, int e) { return concat("cell ", l, ":", e); }

}  // namespace detail

/// Parses a policy from a JSON value; `name` (file name) prefixes every error message. Checks types,
/// ids (against selection.total_experts / layers / experts_per_layer when given), duplicates, and
/// that every form present names the same set; throws moeroute::error naming the entry otherwise.
inline atx_policy parse_atx_policy_json(const nlohmann::ordered_json& doc, const std::string& name) {
  using detail::concat;
  MOEROUTE_CHECK(doc.is_object(), errc::parse_error, name, ": a policy must be a JSON object");
  atx_policy p;
  p.schema_version.clear();
  for (auto it = doc.begin(); it != doc.end(); ++it) p.key_order.push_back(it.key());

  if (doc.contains("schema_version")) {
    const auto& v = doc["schema_version"];
    MOEROUTE_CHECK(v.is_string(), errc::parse_error, name, ": schema_version must be a string");
    MOEROUTE_CHECK(v.get<std::string>() == atx_policy_schema, errc::unsupported, name,
                   ": schema_version '", v.get<std::string>(), "' is not '", atx_policy_schema, "'");
    p.schema_version = v.get<std::string>();
  }
  if (doc.contains("policy_name")) {
    MOEROUTE_CHECK(doc["policy_name"].is_string(), errc::parse_error, name,
                   ": policy_name must be a string");
    p.policy_name = doc["policy_name"].get<std::string>();
  }
  if (doc.contains("selection")) {
    MOEROUTE_CHECK(doc["selection"].is_object(), errc::parse_error, name,
                   ": selection must be an object");
    p.selection = doc["selection"];
  }
  const int total_experts = detail::atx_selection_int(p.selection, "total_experts", name);
  const int sel_layers = detail::atx_selection_int(p.selection, "layers", name);
  const int per_layer = detail::atx_selection_int(p.selection, "experts_per_layer", name);

  // Global experts.
  std::set<int> expert_set;
  if (doc.contains("keep_experts")) {
    const auto& v = doc["keep_experts"];
    MOEROUTE_CHECK(v.is_array(), errc::parse_error, name, ": keep_experts must be an array");
    p.forms.keep_experts = true;
    for (std::size_t i = 0; i < v.size(); ++i) {
      const std::string where = concat(name, ": keep_experts[", i, "]");
      const int e = detail::atx_json_id(v[i], where, total_experts, "selection.total_experts");
      MOEROUTE_CHECK(expert_set.insert(e).second, errc::bad_input, where, ": duplicate expert ", e);
      p.keep_experts.push_back(e);
    }
  }
  if (doc.contains("keep_experts_ranked")) {
    const auto& v = doc["keep_experts_ranked"];
    MOEROUTE_CHECK(v.is_array(), errc::parse_error, name, ": keep_experts_ranked must be an array");
    p.forms.keep_experts_ranked = true;
    std::set<int> seen;
    for (std::size_t i = 0; i < v.size(); ++i) {
      const std::string where = concat(name, ": keep_experts_ranked[", i, "]");
      atx_unit u = detail::atx_read_unit(v[i], where, false, 0, total_experts);
      MOEROUTE_CHECK(seen.insert(u.expert).second, errc::bad_input, where, ": duplicate expert ",
                     u.expert);
      MOEROUTE_CHECK(!p.forms.keep_experts || expert_set.count(u.expert), errc::bad_input, where,
                     ": expert ", u.expert, " is not in keep_experts");
      p.keep_experts_ranked.push_back(std::move(u));
    }
    if (p.forms.keep_experts) {
      for (std::size_t i = 0; i < p.keep_experts.size(); ++i)
        MOEROUTE_CHECK(seen.count(p.keep_experts[i]), errc::bad_input, name, ": keep_experts[", i,
                       "] = ", p.keep_experts[i], " is not in keep_experts_ranked");
    } else {
      for (const auto& u : p.keep_experts_ranked) {
        p.keep_experts.push_back(u.expert);
        expert_set.insert(u.expert);
      }
    }
  }
  if (doc.contains("keep_experts_compact")) {
    const auto& v = doc["keep_experts_compact"];
    MOEROUTE_CHECK(v.is_string(), errc::parse_error, name, ": keep_experts_compact must be a string");
    p.forms.keep_experts_compact = true;
    const std::string what = concat(name, ": keep_experts_compact");
    const auto ids = parse_atx_id_list(v.get<std::string>(), what, false);
    for (std::size_t i = 1; i < ids.size(); ++i)
      MOEROUTE_CHECK(ids[i - 1] < ids[i], errc::bad_input, what, ": expert ", ids[i], " after ", ids[i - 1],
                     " (compact lists are sorted ascending)");
    std::set<int> cset;
    for (int e : ids) {
      MOEROUTE_CHECK(total_experts <= 0 || e < total_experts, errc::bad_input, what, ": expert ",
                     e, " out of range: selection.total_experts is ", total_experts);
      MOEROUTE_CHECK(!(p.forms.keep_experts || p.forms.keep_experts_ranked) || expert_set.count(e),
                     errc::bad_input, what, ": expert ", e, " is not in keep_experts");
      cset.insert(e);
    }
    if (p.forms.keep_experts || p.forms.keep_experts_ranked) {
      for (int e : p.keep_experts)
        MOEROUTE_CHECK(cset.count(e), errc::bad_input, name, ": keep_experts names expert ", e,
                       " but keep_experts_compact does not");
    } else {
      p.keep_experts = ids;
    }
  }

  // Layer-expert cells.
  std::set<std::pair<int, int>> cell_set;
  bool have_cells = false;
  if (doc.contains("keep_layer_experts")) {
    const auto& v = doc["keep_layer_experts"];
    MOEROUTE_CHECK(v.is_array(), errc::parse_error, name, ": keep_layer_experts must be an array");
    p.forms.keep_layer_experts = true;
    have_cells = true;
    for (std::size_t i = 0; i < v.size(); ++i) {
      const std::string where = concat(name, ": keep_layer_experts[", i, "]");
      atx_unit u = detail::atx_read_unit(v[i], where, true, sel_layers, per_layer);
      MOEROUTE_CHECK(cell_set.insert({u.layer, u.expert}).second, errc::bad_input, where,
                     ": duplicate ", detail::atx_cell_name(u.layer, u.expert));
      p.keep_layer_experts.push_back(std::move(u));
    }
  }
  if (doc.contains("keep_layer_experts_by_layer")) {
    const auto& v = doc["keep_layer_experts_by_layer"];
    MOEROUTE_CHECK(v.is_object(), errc::parse_error, name,
                   ": keep_layer_experts_by_layer must be an object {\"layer\": [experts]}");
    p.forms.keep_layer_experts_by_layer = true;
    std::set<std::pair<int, int>> bset;
    std::vector<std::pair<int, int>> order;
    for (auto it = v.begin(); it != v.end(); ++it) {
      const std::string where = concat(name, ": keep_layer_experts_by_layer[\"", it.key(), "\"]");
      int layer = 0;
      MOEROUTE_CHECK(detail::atx_parse_uint(it.key(), 0, it.key().size(), layer), errc::parse_error,
                     where, ": key is not a layer id 0..", atx_max_id);
      MOEROUTE_CHECK(sel_layers <= 0 || layer < sel_layers, errc::bad_input, where, ": layer ",
                     layer, " out of range: selection.layers is ", sel_layers);
      MOEROUTE_CHECK(it->is_array(), errc::parse_error, where, " must be an array of experts");
      for (std::size_t i = 0; i < it->size(); ++i) {
        const std::string w2 = concat(where, "[", i, "]");
        const int e = detail::atx_json_id((*it)[i], w2, per_layer, "selection.experts_per_layer");
        MOEROUTE_CHECK(bset.insert({layer, e}).second, errc::bad_input, w2, ": duplicate ",
                       detail::atx_cell_name(layer, e));
        MOEROUTE_CHECK(!have_cells || cell_set.count({layer, e}), errc::bad_input, w2, ": ",
                       detail::atx_cell_name(layer, e), " is not in keep_layer_experts");
        order.emplace_back(layer, e);
      }
    }
    if (have_cells) {
      for (std::size_t i = 0; i < p.keep_layer_experts.size(); ++i) {
        const auto& u = p.keep_layer_experts[i];
        MOEROUTE_CHECK(bset.count({u.layer, u.expert}), errc::bad_input, name,
                       ": keep_layer_experts[", i, "] (", detail::atx_cell_name(u.layer, u.expert),
                       ") is not in keep_layer_experts_by_layer");
      }
    } else {
      std::sort(order.begin(), order.end());
      for (auto& c : order) {
        atx_unit u;
        u.layer = c.first;
        u.expert = c.second;
        p.keep_layer_experts.push_back(std::move(u));
      }
      cell_set = bset;
      have_cells = true;
    }
  }
  if (doc.contains("keep_layer_experts_compact")) {
    const auto& v = doc["keep_layer_experts_compact"];
    MOEROUTE_CHECK(v.is_string(), errc::parse_error, name,
                   ": keep_layer_experts_compact must be a string");
    p.forms.keep_layer_experts_compact = true;
    const std::string what = concat(name, ": keep_layer_experts_compact");
    const auto cells = parse_atx_cell_list(v.get<std::string>(), what, false);
    for (std::size_t i = 1; i < cells.size(); ++i)
      MOEROUTE_CHECK(cells[i - 1] < cells[i], errc::bad_input, what, ": ",
                     detail::atx_cell_name(cells[i].first, cells[i].second), " after ",
                     detail::atx_cell_name(cells[i - 1].first, cells[i - 1].second),
                     " (compact lists are sorted by layer, then expert)");
    std::set<std::pair<int, int>> cset;
    for (const auto& c : cells) {
      MOEROUTE_CHECK((sel_layers <= 0 || c.first < sel_layers) &&
                         (per_layer <= 0 || c.second < per_layer),
                     errc::bad_input, what, ": ", detail::atx_cell_name(c.first, c.second),
                     " outside the selection's ", sel_layers, " x ", per_layer, " cells");
      MOEROUTE_CHECK(!have_cells || cell_set.count(c), errc::bad_input, what, ": ",
                     detail::atx_cell_name(c.first, c.second), " is not in keep_layer_experts");
      cset.insert(c);
    }
    if (have_cells) {
      for (std::size_t i = 0; i < p.keep_layer_experts.size(); ++i) {
        const auto& u = p.keep_layer_experts[i];
        MOEROUTE_CHECK(cset.count({u.layer, u.expert}), errc::bad_input, name,
                       ": keep_layer_experts names ", detail::atx_cell_name(u.layer, u.expert),
                       " but keep_layer_experts_compact does not");
      }
    } else {
      for (const auto& c : cells) {
        atx_unit u;
        u.layer = c.first;
        u.expert = c.second;
        p.keep_layer_experts.push_back(std::move(u));
      }
    }
  }

  if (doc.contains("keep_layers")) {
    const auto& v = doc["keep_layers"];
    MOEROUTE_CHECK(v.is_array(), errc::parse_error, name, ": keep_layers must be an array");
    p.forms.keep_layers = true;
    std::set<int> seen;
    for (std::size_t i = 0; i < v.size(); ++i) {
      const std::string where = concat(name, ": keep_layers[", i, "]");
      const int l = detail::atx_json_id(v[i], where, sel_layers, "selection.layers");
      MOEROUTE_CHECK(seen.insert(l).second, errc::bad_input, where, ": duplicate layer ", l);
      p.keep_layers.push_back(l);
    }
  }

  // Selection counts, when given, must match the lists.
  if (p.selection.is_object()) {
    const auto& s = p.selection;
    auto check_count = [&](const char* key, std::size_t n) {
      auto it = s.find(key);
      if (it == s.end()) return;
      MOEROUTE_CHECK(it->is_number_integer(), errc::parse_error, name, ": selection.", key,
                     " must be an integer");
      MOEROUTE_CHECK(it->get<long long>() == static_cast<long long>(n), errc::bad_input, name,
                     ": selection.", key, " = ", it->get<long long>(), " but the policy lists ", n);
    };
    if (!p.keep_experts.empty() || p.forms.keep_experts) check_count("selected_experts", p.keep_experts.size());
    if (have_cells || p.forms.keep_layer_experts_compact)
      check_count("selected_layer_expert_pairs", p.keep_layer_experts.size());
  }

  static const char* const known[] = {"schema_version", "policy_name", "selection",
                                      "keep_experts", "keep_experts_ranked", "keep_experts_compact",
                                      "keep_layer_experts", "keep_layer_experts_by_layer",
                                      "keep_layer_experts_compact", "keep_layers"};
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    bool is_known = false;
    for (const char* k : known) is_known = is_known || it.key() == k;
    if (!is_known) p.extra[it.key()] = *it;
  }
  return p;
}

/// Parses a policy from JSON text (see parse_atx_policy_json); `name` prefixes error messages.
inline atx_policy parse_atx_policy(const std::string& text, const std::string& name) {
  nlohmann::ordered_json doc;
  try {
    // Nesting is bounded so that copying and writing unknown keys cannot exhaust the stack.
    doc = nlohmann::ordered_json::parse(text, [&](int depth, nlohmann::ordered_json::parse_event_t,
                                                  nlohmann::ordered_json&) {
      MOEROUTE_CHECK(depth <= atx_max_json_depth, errc::parse_error, name, ": JSON nested deeper than ",
                     atx_max_json_depth, " levels");
      return true;
    });
  } catch (const nlohmann::json::parse_error& e) {
    std::size_t line = 1, col = 1;
    for (std::size_t i = 0; i + 1 < e.byte && i < text.size(); ++i) {
      if (text[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    detail::fail(errc::parse_error, name, ":", line, ":", col, ": not valid JSON");
  } catch (const nlohmann::json::exception& e) {
    detail::fail(errc::parse_error, name, ": not valid JSON (", e.what(), ")");
  }
  return parse_atx_policy_json(doc, name);
}

/// Reads a policy file (see parse_atx_policy), opened as io/input_file.hpp says (at most
/// input_cap_document bytes).
inline atx_policy read_atx_policy(const std::string& path) {
  return parse_atx_policy(read_input_file(path, input_cap_document), path);
}

/// The resident cells of a policy on an L x E model: the keep_layer_experts cells if the policy has
/// layer-expert cells, else every (l, e) for e in keep_experts and l in [0, num_layers); plus every
/// expert of each layer in keep_layers. A cell outside the shape is a moeroute::error naming the
/// entry.
inline residency_set atx_policy_cells(const atx_policy& p, int num_layers, int num_experts) {
  residency_set s(num_layers, num_experts);
  const std::string who = p.policy_name.empty() ? std::string("policy") : "policy " + p.policy_name;
  if (p.has_layer_experts()) {
    for (std::size_t i = 0; i < p.keep_layer_experts.size(); ++i) {
      const auto& u = p.keep_layer_experts[i];
      MOEROUTE_CHECK(u.layer >= 0 && u.layer < num_layers && u.expert >= 0 && u.expert < num_experts,
                     errc::bad_input, who, ": keep_layer_experts[", i, "] (",
                     detail::atx_cell_name(u.layer, u.expert), ") outside the model's ", num_layers,
                     " layers x ", num_experts, " experts");
      s.insert(u.layer, u.expert);
    }
  } else {
    for (std::size_t i = 0; i < p.keep_experts.size(); ++i) {
      const int e = p.keep_experts[i];
      MOEROUTE_CHECK(e >= 0 && e < num_experts, errc::bad_input, who, ": keep_experts[", i,
                     "] = ", e, " outside the model's ", num_experts, " experts");
      for (int l = 0; l < num_layers; ++l) s.insert(l, e);
    }
  }
  for (std::size_t i = 0; i < p.keep_layers.size(); ++i) {
    const int l = p.keep_layers[i];
    MOEROUTE_CHECK(l >= 0 && l < num_layers, errc::bad_input, who, ": keep_layers[", i, "] = ", l,
                   " outside the model's ", num_layers, " layers");
    s.insert_layer(l);
  }
  return s;
}

/// The cells of keep_layer_experts as (layer, expert) pairs, in list order.
inline std::vector<std::pair<int, int>> atx_policy_cell_list(const atx_policy& p) {
  std::vector<std::pair<int, int>> out;
  out.reserve(p.keep_layer_experts.size());
  for (const auto& u : p.keep_layer_experts) out.emplace_back(u.layer, u.expert);
  return out;
}

namespace detail {
inline nlohmann::ordered_json atx_unit_json(const atx_unit& u) {
  nlohmann::ordered_json o = nlohmann::ordered_json::object();
  if (u.layer >= 0) o["layer"] = u.layer;
  o["expert"] = u.expert;
  if (u.rank > 0) o["rank"] = u.rank;
  for (auto it = u.stats.begin(); it != u.stats.end(); ++it) o[it.key()] = *it;
  return o;
}

inline bool atx_known_value(const atx_policy& p, const std::string& key, nlohmann::ordered_json& out) {
  if (key == "schema_version") {
    if (p.schema_version.empty()) return false;
    out = p.schema_version;
  } else if (key == "policy_name") {
    if (p.policy_name.empty()) return false;
    out = p.policy_name;
  } else if (key == "selection") {
    if (p.selection.is_null()) return false;
    out = p.selection;
  } else if (key == "keep_experts") {
    if (!p.forms.keep_experts) return false;
    out = p.keep_experts;
  } else if (key == "keep_experts_ranked") {
    if (!p.forms.keep_experts_ranked) return false;
    out = nlohmann::ordered_json::array();
    for (const auto& u : p.keep_experts_ranked) out.push_back(atx_unit_json(u));
  } else if (key == "keep_experts_compact") {
    if (!p.forms.keep_experts_compact) return false;
    out = format_atx_id_compact(p.keep_experts);
  } else if (key == "keep_layer_experts") {
    if (!p.forms.keep_layer_experts) return false;
    out = nlohmann::ordered_json::array();
    for (const auto& u : p.keep_layer_experts) out.push_back(atx_unit_json(u));
  } else if (key == "keep_layer_experts_by_layer") {
    if (!p.forms.keep_layer_experts_by_layer) return false;
    std::vector<int> layer_order;
    std::map<int, std::vector<int>> by;
    for (const auto& u : p.keep_layer_experts) {
      if (!by.count(u.layer)) layer_order.push_back(u.layer);
      by[u.layer].push_back(u.expert);
    }
    out = nlohmann::ordered_json::object();
    for (int l : layer_order) {
      auto v = by[l];
      std::sort(v.begin(), v.end());
      out[std::to_string(l)] = v;
    }
  } else if (key == "keep_layer_experts_compact") {
    if (!p.forms.keep_layer_experts_compact) return false;
    out = format_atx_cell_compact(atx_policy_cell_list(p));
  } else if (key == "keep_layers") {
    if (!p.forms.keep_layers) return false;
    out = p.keep_layers;
  } else {
    return false;
  }
  return true;
}
}  // namespace detail

/// The policy as JSON: known keys regenerated from the policy's fields (only the forms set in
/// p.forms), unknown keys from p.extra; keys in p.key_order first, then the remaining known keys
/// in schema order, then the remaining unknown keys.
inline nlohmann::ordered_json atx_policy_to_json(const atx_policy& p) {
  static const char* const schema_order[] = {
      "schema_version", "policy_name", "selection", "keep_experts", "keep_experts_ranked",
      "keep_experts_compact", "keep_layer_experts", "keep_layer_experts_by_layer",
      "keep_layer_experts_compact", "keep_layers"};
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  std::set<std::string> done;
  auto emit = [&](const std::string& key) {
    if (!done.insert(key).second) return;
    nlohmann::ordered_json v;
    if (detail::atx_known_value(p, key, v)) {
      out[key] = std::move(v);
    } else if (p.extra.is_object() && p.extra.contains(key)) {
      out[key] = p.extra[key];
    }
  };
  for (const auto& k : p.key_order) emit(k);
  for (const char* k : schema_order) emit(k);
  if (p.extra.is_object())
    for (auto it = p.extra.begin(); it != p.extra.end(); ++it) emit(it.key());
  return out;
}

/// The policy as JSON text (2-space indent, trailing newline).
inline std::string write_atx_policy_string(const atx_policy& p) {
  return atx_policy_to_json(p).dump(2) + "\n";
}

}  // namespace moeroute
