#pragma once
// JSON form of the expert cache's statistics, kept out of cache/expert_cache.hpp so the hot-path
// header does not pull in nlohmann/json.
//   {"accesses","hits","misses","evictions","bytes_loaded","hit_rate",
//    "per_layer": [{"layer", "accesses", ...}]}   (layers without accesses are left out)

#include <cstddef>
#include <utility>

#include <nlohmann/json.hpp>

#include "moeroute/cache/expert_cache.hpp"

namespace moeroute {

/// One counters object: accesses, hits, misses, evictions, bytes_loaded, hit_rate (in that order).
inline void to_json(nlohmann::ordered_json& j, const cache_counters& c) {
  j["accesses"] = c.accesses;
  j["hits"] = c.hits;
  j["misses"] = c.misses;
  j["evictions"] = c.evictions;
  j["bytes_loaded"] = c.bytes_loaded;
  j["hit_rate"] = c.hit_rate();
}

/// The totals, then per_layer with a "layer" key first in each row.
inline void to_json(nlohmann::ordered_json& j, const cache_stats& s) {
  to_json(j, s.total);
  j["per_layer"] = nlohmann::ordered_json::array();
  for (std::size_t l = 0; l < s.per_layer.size(); ++l) {
    if (s.per_layer[l].accesses == 0) continue;
    nlohmann::ordered_json row;
    row["layer"] = l;
    to_json(row, s.per_layer[l]);
    j["per_layer"].push_back(std::move(row));
  }
}

/// cache_stats as ordered JSON (see the header comment).
inline nlohmann::ordered_json cache_stats_json(const cache_stats& s) {
  nlohmann::ordered_json j;
  to_json(j, s);
  return j;
}

}  // namespace moeroute
