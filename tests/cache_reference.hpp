#pragma once
// A plain, slow reference expert-cache simulator for the cache tests. It shares no code with
// include/moeroute/cache/: resident cells are a std::vector scanned linearly, Belady's next use is
// found by scanning the access list forward. Written from the issue 6 contract:
// accesses in file order and listed order; global scope = one cache, per-layer = one per layer;
// pinned cells always hit, take capacity, never evicted; a miss loads the cell, evicting one cell
// when the cache is full (lru: least recently accessed, fifo: earliest loaded, lfu: fewest
// accesses since loaded with ties to the least recently accessed, belady: farthest next use);
// with no evictable cell the miss loads nothing. protect: cells of the current record are not
// evicted.

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace cache_ref {

struct access {
  int layer, expert;
  std::size_t record;
};

struct result {
  std::uint64_t accesses = 0, hits = 0, misses = 0;
};

inline result simulate(const std::vector<access>& acc, const std::string& policy, std::size_t capacity,
                       bool per_layer, const std::set<std::pair<int, int>>& pinned, bool protect) {
  struct entry {
    int layer, expert;
    std::size_t last, loaded, count;
  };
  auto part = [&](int layer) { return per_layer ? layer : 0; };
  std::vector<std::vector<entry>> caches(1);
  std::vector<std::size_t> pinned_in(1, 0);
  auto grow = [&](int p) {
    if (static_cast<std::size_t>(p) >= caches.size()) {
      caches.resize(static_cast<std::size_t>(p) + 1);
      pinned_in.resize(static_cast<std::size_t>(p) + 1, 0);
    }
  };
  for (const auto& c : pinned) {
    grow(part(c.first));
    ++pinned_in[static_cast<std::size_t>(part(c.first))];
  }
  // next[i]: index of the next access to the same cell after access i (acc.size() + 1: never).
  std::vector<std::size_t> next(acc.size(), acc.size() + 1);
  std::map<std::pair<int, int>, std::size_t> later;
  for (std::size_t i = acc.size(); i-- > 0;) {
    auto it = later.find({acc[i].layer, acc[i].expert});
    if (it != later.end()) next[i] = it->second;
    later[{acc[i].layer, acc[i].expert}] = i;
  }
  result r;
  for (std::size_t i = 0; i < acc.size(); ++i) {
    const auto& a = acc[i];
    ++r.accesses;
    if (pinned.count({a.layer, a.expert})) {
      ++r.hits;
      continue;
    }
    grow(part(a.layer));
    auto& cache = caches[static_cast<std::size_t>(part(a.layer))];
    const std::size_t room = capacity - pinned_in[static_cast<std::size_t>(part(a.layer))];
    bool found = false;
    for (auto& e : cache)
      if (e.layer == a.layer && e.expert == a.expert) {
        e.last = i;
        ++e.count;
        found = true;
      }
    if (found) {
      ++r.hits;
      continue;
    }
    ++r.misses;
    if (room == 0) continue;
    if (cache.size() >= room) {
      auto in_record = [&](const entry& e) {
        if (!protect) return false;
        for (std::size_t j = i; j < acc.size() && acc[j].record == a.record; ++j)
          if (acc[j].layer == e.layer && acc[j].expert == e.expert) return true;
        for (std::size_t j = i; j-- > 0 && acc[j].record == a.record;)
          if (acc[j].layer == e.layer && acc[j].expert == e.expert) return true;
        return false;
      };
      auto next_use = [&](const entry& e) { return next[e.last]; };
      std::size_t victim = cache.size();
      for (std::size_t k = 0; k < cache.size(); ++k) {
        if (in_record(cache[k])) continue;
        if (victim == cache.size()) {
          victim = k;
          continue;
        }
        const auto& e = cache[k];
        const auto& v = cache[victim];
        bool better = false;
        if (policy == "lru") better = e.last < v.last;
        if (policy == "fifo") better = e.loaded < v.loaded;
        if (policy == "lfu") better = e.count < v.count || (e.count == v.count && e.last < v.last);
        if (policy == "belady") better = next_use(e) > next_use(v);
        if (better) victim = k;
      }
      if (victim == cache.size()) continue;  // everything protected: served without loading
      cache.erase(cache.begin() + static_cast<std::ptrdiff_t>(victim));
    }
    cache.push_back(entry{a.layer, a.expert, i, i, 1});
  }
  return r;
}

}  // namespace cache_ref
