#pragma once
// A plain, slow reference expert-cache simulator for the cache tests. It shares no code with
// include/moeroute/cache/: resident cells are a std::vector scanned linearly, Belady's next use is
// found by scanning the access list forward. Written from the issue 6 contract:
// accesses in file order and listed order; global scope = one cache, per-layer = one per layer;
// pinned cells always hit, take capacity, never evicted; a miss loads the cell, evicting one cell
// when the cache is full (lru: least recently accessed, fifo: earliest loaded, lfu: fewest
// accesses since loaded with ties to the least recently accessed, belady: farthest next use);
// with no evictable cell the miss loads nothing. protect: cells of the current record are not
// evicted. Issue 16 adds lfru (lowest accesses-since-load / (1 + accesses of the cache since the
// latest access), ties least recently accessed), least-stale (cells not touched in the current
// forward pass first, earliest loaded first in each tier; a pass starts at a record whose layer
// is below the previous record's, or at every record of a one-layer cache) and, in
// simulate_recommended, the recommended policy (next-use, layer-cycle and LRU rules chosen by
// shadow caches) written out from the contract in
// include/moeroute/cache/recommended.hpp. Times are per cache (every access of that cache,
// pinned ones included, counts one), as the contracts define them.

#include <algorithm>
#include <cmath>
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

// True when the record of access i also names (layer, expert) (protect: not evicted while it runs).
inline bool in_record(const std::vector<access>& acc, std::size_t i, int layer, int expert) {
  for (std::size_t j = i; j < acc.size() && acc[j].record == acc[i].record; ++j)
    if (acc[j].layer == layer && acc[j].expert == expert) return true;
  for (std::size_t j = i; j-- > 0 && acc[j].record == acc[i].record;)
    if (acc[j].layer == layer && acc[j].expert == expert) return true;
  return false;
}

inline result simulate(const std::vector<access>& acc, const std::string& policy, std::size_t capacity,
                       bool per_layer, const std::set<std::pair<int, int>>& pinned, bool protect) {
  struct entry {
    int layer, expert;
    std::size_t last, loaded, count, pass, last_global;
  };
  int max_layer = 0;
  for (const auto& a : acc) max_layer = std::max(max_layer, a.layer);
  for (const auto& c : pinned) max_layer = std::max(max_layer, c.first);
  const bool one_layer_cache = per_layer || max_layer == 0;
  std::vector<std::size_t> clock(1, 0), pass(1, 0), seen_record(1, 0), prev_layer(1, 0);
  std::vector<bool> started(1, false);
  auto part = [&](int layer) { return per_layer ? layer : 0; };
  std::vector<std::vector<entry>> caches(1);
  std::vector<std::size_t> pinned_in(1, 0);
  auto grow = [&](int p) {
    if (static_cast<std::size_t>(p) >= caches.size()) {
      const auto n = static_cast<std::size_t>(p) + 1;
      caches.resize(n);
      pinned_in.resize(n, 0);
      clock.resize(n, 0);
      pass.resize(n, 0);
      seen_record.resize(n, 0);
      prev_layer.resize(n, 0);
      started.resize(n, false);
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
    grow(part(a.layer));
    const auto pi = static_cast<std::size_t>(part(a.layer));
    const std::size_t now = clock[pi]++;
    if (pinned.count({a.layer, a.expert})) {
      ++r.hits;
      continue;
    }
    if (!started[pi] || seen_record[pi] != a.record) {  // least-stale's forward passes
      if (started[pi] && (one_layer_cache || a.layer < static_cast<int>(prev_layer[pi]))) ++pass[pi];
      started[pi] = true;
      seen_record[pi] = a.record;
      prev_layer[pi] = static_cast<std::size_t>(a.layer);
    }
    auto& cache = caches[pi];
    const std::size_t room = capacity - pinned_in[static_cast<std::size_t>(part(a.layer))];
    bool found = false;
    for (auto& e : cache)
      if (e.layer == a.layer && e.expert == a.expert) {
        e.last = now;
        ++e.count;
        e.pass = pass[pi];
        e.last_global = i;
        found = true;
      }
    if (found) {
      ++r.hits;
      continue;
    }
    ++r.misses;
    if (room == 0) continue;
    if (cache.size() >= room) {
      auto in_record = [&](const entry& e) { return protect && cache_ref::in_record(acc, i, e.layer, e.expert); };
      auto next_use = [&](const entry& e) { return next[e.last_global]; };
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
        if (policy == "lfru") {  // count / age, exactly: e.count * age(v) < v.count * age(e)
          const std::size_t age_e = now - e.last + 1, age_v = now - v.last + 1;
          better = e.count * age_v < v.count * age_e || (e.count * age_v == v.count * age_e && e.last < v.last);
        }
        if (policy == "least-stale") {
          const bool se = e.pass < pass[pi], sv = v.pass < pass[pi];
          better = (se && !sv) || (se == sv && e.loaded < v.loaded);
        }
        if (better) victim = k;
      }
      if (victim == cache.size()) continue;  // everything protected: served without loading
      cache.erase(cache.begin() + static_cast<std::ptrdiff_t>(victim));
    }
    cache.push_back(entry{a.layer, a.expert, now, now, 1, pass[pi], i});
  }
  return r;
}


// layer-cycle's rule (contract: layer_cycle_eviction in include/moeroute/cache/eviction.hpp) over
// a set of cells: the victim comes from the layers in order of most recent visit, the layer of the
// access being served (or else the current one) last; inside a layer, cells not touched during
// the layer's latest visit first, then the fewest touches, then the least recently touched.
struct layer_cycle_ref {
  using key = std::pair<int, int>;
  std::map<key, std::size_t> count, last;
  std::map<int, std::size_t> visit_start;
  std::vector<int> order;  // most recently visited first
  int current = -1, incoming = -1;
  void touch(const key& k, std::size_t now) {
    ++count[k];
    last[k] = now;
    incoming = -1;
    if (k.first == current) return;
    current = k.first;
    visit_start[k.first] = now;
    order.erase(std::remove(order.begin(), order.end(), k.first), order.end());
    order.insert(order.begin(), k.first);
  }
  template <class Excluded>
  std::size_t victim(const std::vector<key>& set, Excluded&& excluded) const {
    auto pick = [&](int l) {
      std::size_t best = set.size();
      for (std::size_t j = 0; j < set.size(); ++j) {
        const auto& c = set[j];
        if (c.first != l || excluded(c)) continue;
        if (best == set.size()) {
          best = j;
          continue;
        }
        const auto& b = set[best];
        const bool sc = last.at(c) < visit_start.at(l), sb = last.at(b) < visit_start.at(l);
        if ((sc && !sb) || (sc == sb && (count.at(c) < count.at(b) || (count.at(c) == count.at(b) && last.at(c) < last.at(b)))))
          best = j;
      }
      return best;
    };
    const int own = incoming >= 0 ? incoming : current;
    for (int l : order) {
      if (l == own) continue;
      const auto v = pick(l);
      if (v != set.size()) return v;
    }
    return own >= 0 ? pick(own) : set.size();
  }
};

// The recommended policy (contract: include/moeroute/cache/recommended.hpp), one cache per part,
// written out with maps and linear scans.
inline result simulate_recommended(const std::vector<access>& acc, std::size_t capacity, bool per_layer,
                                   const std::set<std::pair<int, int>>& pinned, bool protect) {
  using key = std::pair<int, int>;
  const double beta = 0.9, decay = 1.0 - 1.0 / 512.0;
  struct cell_stat {
    double lambda = 0;
    std::size_t stamp = 0, last = 0;
  };
  struct layer_stat {
    std::size_t start = 0, gap = 0, vlen = 0, visits = 0;
  };
  struct part_state {
    std::vector<key> resident, shadow_next, shadow_lru, shadow_cycle;
    layer_cycle_ref cycle, cycle_shadow;
    std::map<key, cell_stat> cells;
    std::map<int, layer_stat> layers;
    int cur = -1;
    std::size_t record = 0, clock = 0, capacity = 0, pinned = 0;
    bool started = false, capacity_known = false;
    double miss_next = 0, miss_lru = 0, miss_cycle = 0;
  };
  std::map<int, part_state> parts;
  for (const auto& c : pinned) ++parts[per_layer ? c.first : 0].pinned;
  int max_layer = 0;
  for (const auto& a : acc) max_layer = std::max(max_layer, a.layer);
  for (const auto& c : pinned) max_layer = std::max(max_layer, c.first);
  const bool one_layer = per_layer || max_layer == 0;
  result r;
  for (std::size_t i = 0; i < acc.size(); ++i) {
    const auto& a = acc[i];
    auto& P = parts[per_layer ? a.layer : 0];
    const std::size_t now = P.clock++;
    ++r.accesses;
    const key k{a.layer, a.expert};
    if (pinned.count(k)) {
      ++r.hits;
      continue;
    }
    // statistics
    auto lam = [&](const key& c) {
      const auto& s = P.cells.at(c);
      return s.lambda * std::pow(beta, static_cast<double>(P.layers[c.first].visits - s.stamp));
    };
    if (!P.started || P.record != a.record) {
      P.started = true;
      P.record = a.record;
      if (a.layer != P.cur || one_layer) {
        if (P.cur >= 0) P.layers[P.cur].vlen = now - P.layers[P.cur].start;
        auto& ls = P.layers[a.layer];
        if (ls.visits > 0) ls.gap = now - ls.start;
        ls.start = now;
        ++ls.visits;
        P.cur = a.layer;
      }
    }
    {
      const bool seen = P.cells.count(k) != 0;
      const double before = seen ? lam(k) : 0.0;
      auto& s = P.cells[k];
      s.lambda = before + (1.0 - beta);
      s.stamp = P.layers[a.layer].visits;
      s.last = now;
    }
    auto T = [&](const key& c) {
      const auto& ls = P.layers.at(c.first);
      const double l = std::max(lam(c), 1e-6);
      const double p = 1.0 - std::exp(-l);
      const double since = static_cast<double>(now - ls.start);
      const double G = ls.gap ? static_cast<double>(ls.gap) : 2.0 * std::max(since, 1.0);
      const double d = std::max(G - since, 1.0);
      double t = d + (1.0 / p - 1.0) * G;
      if (c.first == P.cur) {
        const double V = ls.vlen ? static_cast<double>(ls.vlen) : 1.0;
        const double m = std::max(V - since, 0.0);
        const double q = 1.0 - std::exp(-l * m / V);
        t = q * m / 2.0 + (1.0 - q) * t;
      }
      return t;
    };
    auto worst = [&](const std::vector<key>& set, bool lru, auto&& excluded) {
      std::size_t best = set.size();
      for (std::size_t j = 0; j < set.size(); ++j) {
        if (excluded(set[j])) continue;
        if (best == set.size()) {
          best = j;
          continue;
        }
        const auto& c = set[j];
        const auto& b = set[best];
        const std::size_t lc = P.cells.at(c).last, lb = P.cells.at(b).last;
        if (lru) {
          if (lc < lb) best = j;
        } else {
          const double tc = T(c), tb = T(b);
          if (tc > tb || (tc == tb && lc < lb)) best = j;
        }
      }
      return best;
    };
    auto not_k = [&](const key& c) { return c == k; };
    // rule 0 next-use, 1 layer-cycle, 2 LRU
    auto pick = [&](int rule, const std::vector<key>& set, const layer_cycle_ref& lc, auto&& excluded) {
      return rule == 1 ? lc.victim(set, excluded) : worst(set, rule == 2, excluded);
    };
    auto shadow = [&](std::vector<key>& set, int rule, double& misses) {
      if (std::find(set.begin(), set.end(), k) != set.end()) {
        if (rule == 1) P.cycle_shadow.touch(k, now);
        return;
      }
      misses += 1.0;
      if (rule == 1) P.cycle_shadow.incoming = k.first;
      if (P.capacity_known && P.capacity != 0 && set.size() >= P.capacity) {
        const auto v = pick(rule, set, P.cycle_shadow, not_k);
        if (v != set.size()) set.erase(set.begin() + static_cast<std::ptrdiff_t>(v));
      }
      set.push_back(k);
      if (rule == 1) P.cycle_shadow.touch(k, now);
    };
    P.miss_next *= decay;
    P.miss_cycle *= decay;
    P.miss_lru *= decay;
    shadow(P.shadow_next, 0, P.miss_next);
    shadow(P.shadow_cycle, 1, P.miss_cycle);
    shadow(P.shadow_lru, 2, P.miss_lru);
    if (std::find(P.resident.begin(), P.resident.end(), k) != P.resident.end()) {
      ++r.hits;
      P.cycle.touch(k, now);
      continue;
    }
    ++r.misses;
    P.cycle.incoming = k.first;
    const std::size_t room = capacity - P.pinned;
    if (room == 0) continue;
    if (P.resident.size() >= room) {
      if (!P.capacity_known) {
        P.capacity_known = true;
        P.capacity = P.resident.size();
        for (int rule = 0; rule < 3; ++rule) {
          auto& set = rule == 0 ? P.shadow_next : rule == 1 ? P.shadow_cycle : P.shadow_lru;
          while (P.capacity != 0 && set.size() > P.capacity) {
            const auto v = pick(rule, set, P.cycle_shadow, not_k);
            set.erase(set.begin() + static_cast<std::ptrdiff_t>(v));
          }
        }
      }
      auto in_record = [&](const key& e) { return protect && cache_ref::in_record(acc, i, e.first, e.second); };
      const int rule = P.miss_next <= P.miss_cycle && P.miss_next <= P.miss_lru ? 0
                       : P.miss_cycle <= P.miss_lru                        ? 1
                                                                           : 2;
      const auto v = pick(rule, P.resident, P.cycle, in_record);
      if (v == P.resident.size()) continue;
      P.resident.erase(P.resident.begin() + static_cast<std::ptrdiff_t>(v));
    }
    P.resident.push_back(k);
    P.cycle.touch(k, now);
  }
  return r;
}

}  // namespace cache_ref
