// The offload planner (include/moeroute/plan/): the cost model against hand-computed times on a
// tiny trace and profile, cache strategies' hits against the plain reference simulator, profile
// JSON errors, shape specs and trace mapping, and the `moeroute plan` CLI contract.

#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cache_reference.hpp"
#include "expect_error.hpp"
#include "moeroute/plan/predict.hpp"
#if defined(MOEROUTE_CLI_PATH)
#include "cli_support.hpp"
#endif

using namespace moeroute;

namespace {

routing_trace make_trace(const std::vector<std::pair<int, std::vector<int>>>& recs, int layers_per_token) {
  routing_trace t;
  for (std::size_t r = 0; r < recs.size(); ++r) {
    t.layer.push_back(recs[r].first);
    t.token.push_back(static_cast<std::int64_t>(r / static_cast<std::size_t>(layers_per_token)));
    for (int e : recs[r].second) t.experts.push_back(e);
    t.offsets.push_back(static_cast<std::uint32_t>(t.experts.size()));
  }
  return t;
}

// f32 experts of H = F = 32: each of gate, up, down is 4096 bytes and 2048 FLOP per token.
// Rates chosen so that: device 1 ms per part (d = 3 ms per expert), CPU 2 ms per part (c = 6 ms),
// upload 1 ms latency + 1 ms bytes (u = 2 ms), device call 0.5 ms, CPU call 0.25 ms.
hardware_profile tiny_profile() {
  hardware_profile p;
  p.name = "tiny";
  p.vram_gib = 1;
  p.h2d_gbps = 12288e-9 * 1e3;  // 12288 bytes in 1 ms
  p.h2d_latency_us = 1000;
  p.device_mem_gbps = 4096e-9 * 1e3;  // 4096 bytes in 1 ms
  p.device_gflops.default_gflops = 1e6;
  p.device_call_us = 500;
  p.cpu_mem_gbps = 4096e-9 * 0.5e3;  // 4096 bytes in 2 ms
  p.cpu_gflops.default_gflops = 1e6;
  p.cpu_call_us = 250;
  return p;
}

plan_model tiny_model() { return parse_plan_shape("4,2,32,32,f32,2"); }

// 3 tokens x 2 layers, top-2 of 4 experts.
plan_routing tiny_routing() {
  const routing_trace t =
      make_trace({{0, {0, 1}}, {1, {2, 3}}, {0, {0, 2}}, {1, {2, 3}}, {0, {0, 1}}, {1, {1, 3}}}, 2);
  return plan_map_trace(t, 2, 4, 2, "tiny");
}

const plan_row& row_of(const std::vector<plan_row>& rows, plan_kind k, const std::string& eviction = "",
                       cache_scope scope = cache_scope::global) {
  const auto strategies = default_plan_strategies();
  for (std::size_t i = 0; i < strategies.size(); ++i)
    if (strategies[i].kind == k && (eviction.empty() || strategies[i].eviction == eviction) && strategies[i].scope == scope)
      return rows[i];
  throw std::runtime_error("no such row");
}

}  // namespace

TEST(plan, unit_costs_are_the_documented_formulas) {
  const plan_costs c = plan_unit_costs(tiny_model(), tiny_profile());
  ASSERT_EQ(c.device.size(), 2u);
  EXPECT_NEAR(c.device[0], 3e-3, 1e-12);
  EXPECT_NEAR(c.cpu[0], 6e-3, 1e-12);
  EXPECT_NEAR(c.upload[0], 2e-3, 1e-12);
  EXPECT_NEAR(c.device_call, 0.5e-3, 1e-15);
  EXPECT_NEAR(c.cpu_call, 0.25e-3, 1e-15);
  // FLOP-bound type on the CPU: 2048 FLOP at 0.512 MFLOP/s is 4 ms per part, over the 2 ms of bytes
  hardware_profile p = tiny_profile();
  p.cpu_gflops.by_type[weight_type::f32] = 0.512e-3;
  EXPECT_NEAR(plan_unit_costs(tiny_model(), p).cpu[0], 12e-3, 1e-12);
  p.cpu_gflops = type_rates{};
  p.cpu_gflops.by_type[weight_type::q8_0] = 1;
  EXPECT_THROW(plan_unit_costs(tiny_model(), p), error);  // no rate for f32, no default
}

TEST(plan, strategies_match_hand_computed_times) {
  const plan_model m = tiny_model();
  const std::uint64_t cell = m.expert_bytes(0);
  ASSERT_EQ(cell, 3u * 4096u);
  plan_options o;
  o.vram_bytes = 3 * cell;
  const plan_routing rt = tiny_routing();
  ASSERT_EQ(rt.tokens, 3u);
  const auto rows = predict_plan(m, rt, tiny_profile(), o);
  // every expert on the CPU: 6 records x (0.25 + 2 x 6) ms
  const plan_row& cpu = row_of(rows, plan_kind::cpu_all);
  EXPECT_NEAR(cpu.seconds, 6 * 12.25e-3, 1e-9);
  EXPECT_NEAR(cpu.tokens_per_s, 3 / (6 * 12.25e-3), 1e-6);
  EXPECT_EQ(cpu.cpu_experts, 12u);
  // all resident: 6 x (0.5 + 2 x 3) ms, but 8 cells exceed the 3-cell budget
  const plan_row& all = row_of(rows, plan_kind::all_resident);
  EXPECT_NEAR(all.seconds, 6 * 6.5e-3, 1e-9);
  EXPECT_FALSE(all.feasible);
  // LRU global of 3 cells with the batch protected (worked by hand in docs/plan.md's example):
  // uploads 2, 2, 2, 1, 2, 1; hits 0, 0, 0, 1, 0, 1
  // the offload engine (moeroute run --miss upload): x = 2 -> one pass, 0.5 + max(0, 4) + 6;
  // x = 1, h = 1 -> hit pass and upload pass, 2 x 0.5 + max(3, 2) + 3
  const plan_row& eng = row_of(rows, plan_kind::engine_upload, "lru");
  EXPECT_EQ(eng.uploads, 10u);
  EXPECT_EQ(eng.device_hits, 2u);
  EXPECT_NEAR(eng.seconds, 4 * 10.5e-3 + 2 * 7e-3, 1e-9);
  EXPECT_EQ(eng.bytes_uploaded, 10 * cell);
  // the same cache, hits computing while misses upload: x = 2 -> 0.5 + 4 + 6; x = 1, h = 1 -> 0.5 + 3 + 3
  const plan_row& async = row_of(rows, plan_kind::upload, "lru");
  EXPECT_NEAR(async.seconds, 4 * 10.5e-3 + 2 * 6.5e-3, 1e-9);
  // static pinning from trace counts: (0,0) and (1,3) accessed 3 times, then (0,1) (ties: lower
  // cell); layer-0 records [0,1] all on the device (6.5 ms), the others one CPU expert (6.25 ms)
  const plan_row& pin = row_of(rows, plan_kind::static_pin);
  EXPECT_NEAR(pin.seconds, 2 * 6.5e-3 + 4 * 6.25e-3, 1e-9);
  EXPECT_EQ(pin.device_hits, 8u);
  EXPECT_EQ(pin.cpu_experts, 4u);
  EXPECT_EQ(pin.resident_bytes, 3 * cell);
  // hybrid, LRU global: two misses -> upload one, CPU one (6.25 ms) and the CPU's uploaded in the
  // background (2 x 2 ms <= 6.25); a hit and a miss -> the miss on the CPU (max(3.5, 6.25) beats
  // 6.5), uploaded in the background. Cache states: {00,01} {01,12,13} {13,00,02} {13,02,12}
  // (the one hit) {12,00,01} {01,11,13}; every record 6.25 ms
  const plan_row& hy = row_of(rows, plan_kind::hybrid, "lru");
  EXPECT_NEAR(hy.seconds, 6 * 6.25e-3, 1e-9);
  EXPECT_EQ(hy.uploads, 5u);
  EXPECT_EQ(hy.background_uploads, 6u);
  EXPECT_EQ(hy.device_hits, 1u);
  EXPECT_EQ(hy.cpu_experts, 6u);
  EXPECT_EQ(hy.bytes_uploaded, 11 * cell);
  // the offload engine in miss mode auto (miss_plan.hpp's rule: a pass 0.5 + 3, an upload 2, a CPU
  // entry 0.25 + 6 ms): with no hit the first miss is uploaded (2 + 3.5 <= 6.25) and the second
  // goes to the CPU (7.5 > 6.25); with a hit (3.5) an upload would add 5.5 > 6.25, so the miss goes
  // to the CPU. Cache {00} {00,12} {12,00} {00,12} {12,00} {12,00,11}: records 1, 2 and 6 upload
  // one and compute one on the CPU, 3-5 hit one; every record max(D, 6.25) = 6.25 ms
  const plan_row& au = row_of(rows, plan_kind::engine_auto, "lru");
  EXPECT_NEAR(au.seconds, 6 * 6.25e-3, 1e-9);
  EXPECT_EQ(au.uploads, 3u);
  EXPECT_EQ(au.device_hits, 3u);
  EXPECT_EQ(au.cpu_experts, 6u);
  EXPECT_EQ(au.bytes_uploaded, 3 * cell);
}

TEST(plan, unified_memory_adds_what_would_overlap) {
  const plan_model m = tiny_model();
  hardware_profile hw = tiny_profile();
  hw.unified_memory = true;
  plan_options o;
  o.vram_bytes = 3 * m.expert_bytes(0);
  const auto rows = predict_plan(m, tiny_routing(), hw, o);
  // static pinning as above, but a record with one device and one CPU expert takes 3.5 + 6.25 ms
  EXPECT_NEAR(row_of(rows, plan_kind::static_pin).seconds, 2 * 6.5e-3 + 4 * 9.75e-3, 1e-9);
  // upload cache: x = 2 -> 0.5 + 4 + 6 (as before); x = 1, h = 1 -> 0.5 + 3 + 2 + 3
  EXPECT_NEAR(row_of(rows, plan_kind::upload, "lru").seconds, 4 * 10.5e-3 + 2 * 8.5e-3, 1e-9);
  // the offload engine: x = 1, h = 1 -> one pass after the upload (nothing overlaps on unified
  // memory, offload/miss_plan.hpp's pass_split), 0.5 + 3 + 2 + 3
  EXPECT_NEAR(row_of(rows, plan_kind::engine_upload, "lru").seconds, 4 * 10.5e-3 + 2 * 8.5e-3, 1e-9);
  // the engine in miss mode auto (same decisions as above): upload + CPU records 0.5 + 2 + 3 + 6.25,
  // hit + CPU records 0.5 + 3 + 6.25
  EXPECT_NEAR(row_of(rows, plan_kind::engine_auto, "lru").seconds, 3 * 11.75e-3 + 3 * 9.75e-3, 1e-9);
}

TEST(plan, first_layers_on_cpu_fit_the_budget) {
  const plan_model m = tiny_model();
  plan_options o;
  o.vram_bytes = 5 * m.expert_bytes(0);  // 8 cells do not fit, the last layer's 4 do: N = 1
  const auto rows = predict_plan(m, tiny_routing(), tiny_profile(), o);
  const plan_row& r = row_of(rows, plan_kind::cpu_first_layers);
  EXPECT_NEAR(r.seconds, 3 * 12.25e-3 + 3 * 6.5e-3, 1e-9);
  EXPECT_NE(r.detail.find("N = 1 of 2"), std::string::npos) << r.detail;
}

TEST(plan, pin_order_from_a_policy_takes_the_prefix_that_fits) {
  const plan_model m = tiny_model();
  plan_options o;
  o.vram_bytes = 2 * m.expert_bytes(0);
  o.pin_order = {{1, 3}, {1, 2}, {0, 0}};
  o.pin_source = "policy";
  const auto rows = predict_plan(m, tiny_routing(), tiny_profile(), o);
  const plan_row& r = row_of(rows, plan_kind::static_pin);
  // resident (1,3), (1,2): layer-1 records [2,3] x2 all on the device, [1,3] one on the CPU,
  // layer-0 records entirely on the CPU (12.25 ms)
  EXPECT_NEAR(r.seconds, 2 * 6.5e-3 + 6.25e-3 + 3 * 12.25e-3, 1e-9);
  o.pin_order = {{2, 0}};
  EXPECT_THROW(predict_plan(m, tiny_routing(), tiny_profile(), o), error);
}

TEST(plan, cache_strategy_hits_match_the_reference_simulator) {
  const int L = 4, E = 16, K = 3;
  std::mt19937 rng(5);
  std::vector<std::pair<int, std::vector<int>>> recs;
  std::discrete_distribution<int> pick({8, 6, 5, 4, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1});
  for (int t = 0; t < 150; ++t)
    for (int l = 0; l < L; ++l) {
      std::vector<int> ids;
      while (static_cast<int>(ids.size()) < K) {
        const int e = (pick(rng) + l) % E;
        if (std::find(ids.begin(), ids.end(), e) == ids.end()) ids.push_back(e);
      }
      recs.emplace_back(l, ids);
    }
  const plan_routing rt = plan_map_trace(make_trace(recs, L), L, E, K, "random");
  std::vector<cache_ref::access> acc;
  for (std::size_t r = 0; r < recs.size(); ++r)
    for (int e : recs[r].second) acc.push_back({recs[r].first, e, r});
  const plan_model m = parse_plan_shape("16,3,32,32,f32,4");
  for (std::size_t cap : {3u, 7u, 20u}) {
    plan_options o;
    o.vram_bytes = cap * L * m.expert_bytes(0);  // global: cap x L cells; per layer: cap cells each
    const std::vector<plan_strategy> s = {{"g", plan_kind::upload, "lru", cache_scope::global},
                                          {"p", plan_kind::upload, "lru", cache_scope::per_layer},
                                          {"f", plan_kind::upload, "lfru", cache_scope::per_layer}};
    const auto rows = predict_plan(m, rt, tiny_profile(), o, s);
    const auto g = cache_ref::simulate(acc, "lru", cap * L, false, {}, true);
    const auto p = cache_ref::simulate(acc, "lru", cap, true, {}, true);
    const auto f = cache_ref::simulate(acc, "lfru", cap, true, {}, true);
    EXPECT_EQ(rows[0].device_hits, g.hits) << cap;
    EXPECT_EQ(rows[0].uploads, g.misses) << cap;
    EXPECT_EQ(rows[1].device_hits, p.hits) << cap;
    EXPECT_EQ(rows[2].device_hits, f.hits) << cap;
    EXPECT_EQ(rows[0].accesses, acc.size());
  }
  // a budget below one record's experts is an infeasible row, not an error
  plan_options small;
  small.vram_bytes = 2 * m.expert_bytes(0);
  const auto rows = predict_plan(m, rt, tiny_profile(), small, {{"g", plan_kind::upload, "lru", cache_scope::global}});
  EXPECT_FALSE(rows[0].feasible);
  EXPECT_FALSE(rows[0].why.empty());
}

TEST(plan, ranking_puts_the_fastest_feasible_first) {
  std::vector<plan_row> rows(3);
  rows[0].tokens_per_s = 5;
  rows[1].tokens_per_s = 50;
  rows[1].feasible = false;
  rows[2].tokens_per_s = 9;
  rows[0].name = "a";
  rows[1].name = "b";
  rows[2].name = "c";
  rank_plan_rows(rows);
  EXPECT_EQ(rows[0].name, "c");
  EXPECT_EQ(rows[1].name, "a");
  EXPECT_EQ(rows[2].name, "b");
}

TEST(plan, shape_spec_gives_exact_expert_bytes) {
  const plan_model q = parse_plan_shape("128,8,2048,768,q4_k/q4_k/q6_k,48");
  EXPECT_EQ(q.num_layers(), 48);
  EXPECT_EQ(q.top_k, 8);
  // q4_k: 144 bytes per 256 values; q6_k: 210 bytes per 256 values
  EXPECT_EQ(q.expert_bytes(0), 2u * 768 * (2048 / 256) * 144 + 2048u * (768 / 256) * 210);
  const plan_model g = parse_plan_shape("128,4,2880,2880,mxfp4+bias,36");
  // mxfp4: 17 bytes per 32 values; biases: 2F + H floats after the down rows (16-byte aligned)
  EXPECT_EQ(g.expert_bytes(0), 3u * 2880 * (2880 / 32) * 17 + (2u * 2880 + 2880) * 4);
  EXPECT_TRUE(g.layers[0].has_bias);
  EXPECT_EQ(parse_plan_shape("8,2,256,512,q8_0").num_layers(), 0);
  for (const char* bad : {"8,2,256,512", "8,9,256,512,q8_0", "8,2,256,512,q9_9", "8,2,256,500,q4_k", "8,2,x,512,f32",
                          "8,2,256,512,q8_0/q8_0"})
    moeroute_test::expect_error_message([&] { parse_plan_shape(bad); }, bad, "--shape");
}

TEST(plan, trace_mapping_places_trace_layers_side_by_side) {
  // trace: layers 2 and 3, 4 experts, top-2; model: 3 layers x 8 experts, top-2 -> m = 2
  const routing_trace t = make_trace({{2, {1, 0}}, {3, {3, 2}}, {2, {2, 1}}, {3, {0, 3}}}, 2);
  const plan_routing rt = plan_map_trace(t, 3, 8, 2, "t");
  EXPECT_EQ(rt.tokens, 2u);
  ASSERT_EQ(rt.trace.size(), 6u);
  // model layer l: trace layers (2l) mod 2 = first, (2l + 1) mod 2 = second (+4); top-1 of each
  const std::vector<std::int32_t> want = {1, 7, 1, 7, 1, 7, 2, 4, 2, 4, 2, 4};
  EXPECT_EQ(rt.trace.experts, want);
  EXPECT_EQ(rt.trace.layer, (std::vector<std::int32_t>{0, 1, 2, 0, 1, 2}));
  // identity: same shape
  const plan_routing id = plan_map_trace(t, 2, 4, 2, "t");
  EXPECT_EQ(id.trace.experts, (std::vector<std::int32_t>{1, 0, 3, 2, 2, 1, 0, 3}));
  EXPECT_EQ(plan_map_trace(t, 2, 4, 2, "t", 1).tokens, 1u);
  // K above the records' experts without a multiple of E: not mappable
  moeroute_test::expect_error_message([&] { plan_map_trace(t, 2, 6, 3, "t.jsonl"); }, "cannot map", "t.jsonl");
}

TEST(plan, profile_json_round_trips_and_errors_name_the_field) {
  const hardware_profile p = tiny_profile();
  const auto j = hardware_profile_json(p);
  const hardware_profile q = parse_hardware_profile(j, "x.json");
  EXPECT_EQ(q.h2d_gbps, p.h2d_gbps);
  EXPECT_EQ(q.cpu_call_us, p.cpu_call_us);
  EXPECT_EQ(q.device_gflops.default_gflops, p.device_gflops.default_gflops);
  auto expect_bad = [&](const std::function<void(nlohmann::ordered_json&)>& edit, const std::string& needle) {
    nlohmann::ordered_json d = j;
    edit(d);
    moeroute_test::expect_error_message([&] { parse_hardware_profile(d, "hw.json"); }, needle, "hw.json");
  };
  expect_bad([](auto& d) { d["host_to_device"].erase("gbps"); }, "host_to_device.gbps: missing");
  expect_bad([](auto& d) { d["device"]["mem_gbps"] = -3; }, "device.mem_gbps");
  expect_bad([](auto& d) { d["device"]["mem_gbps"] = "fast"; }, "device.mem_gbps: not a number");
  expect_bad([](auto& d) { d["cpu"]["gflops"] = nlohmann::ordered_json::object({{"q9_k", 3}}); }, "cpu.gflops.q9_k");
  expect_bad([](auto& d) { d["cpu"]["membw"] = 3; }, "cpu.membw: unknown field");
  expect_bad([](auto& d) { d.erase("cpu"); }, "cpu: missing");
  expect_bad([](auto& d) { d["sources"] = nlohmann::ordered_json::object({{"cpu", 3}}); }, "sources.cpu");
  expect_bad([](auto& d) { d["schema_version"] = "v0"; }, "schema_version");
  moeroute_test::expect_error_message([] { parse_hardware_profile(std::string("{nope"), "b.json"); }, "not valid JSON",
                                      "b.json");
}

TEST(plan, shipped_profiles_parse_and_cite_their_figures) {
  for (const char* n : {"rtx3090-pcie4-ddr4", "rtx4090-pcie4-ddr5", "strix-halo-395-128gb"}) {
    const std::string path = std::string(MOEROUTE_SOURCE_DIR) + "/share/hardware/" + n + ".json";
    const hardware_profile p = read_hardware_profile(path);
    EXPECT_EQ(p.name, n);
    for (const char* f : {"host_to_device.gbps", "device.mem_gbps", "device.gflops", "cpu.mem_gbps", "cpu.gflops", "vram_gib"})
      EXPECT_TRUE(p.sources.contains(f)) << n << ": no source for " << f;
  }
}

#if defined(MOEROUTE_CLI_PATH)
namespace {
std::string tiny_trace_file() {
  const std::string path = clitest::tmp_path("plan_trace.jsonl");
  clitest::write_text(path,
                      "{\"token_idx\":0,\"layer\":0,\"experts\":[0,1]}\n{\"token_idx\":0,\"layer\":1,\"experts\":[2,3]}\n"
                      "{\"token_idx\":1,\"layer\":0,\"experts\":[0,2]}\n{\"token_idx\":1,\"layer\":1,\"experts\":[2,3]}\n"
                      "{\"token_idx\":2,\"layer\":0,\"experts\":[0,1]}\n{\"token_idx\":2,\"layer\":1,\"experts\":[1,3]}\n");
  return path;
}
std::string tiny_profile_file() {
  const std::string path = clitest::tmp_path("plan_tiny_hw.json");
  clitest::write_text(path, hardware_profile_json(tiny_profile()).dump());
  return path;
}
}  // namespace

TEST(plan_cli, writes_ranked_json_and_report) {
  const std::string trace = tiny_trace_file(), hw = tiny_profile_file();
  const std::string out = clitest::tmp_path("plan_out.json"), html = clitest::tmp_path("plan_out.html"),
                    saved = clitest::tmp_path("plan_saved.json");
  for (const auto& f : {out, html, saved}) std::remove(f.c_str());
  // 3 cells of 12 KiB = 0.03515625 MiB
  const auto r = clitest::run_cli("plan --trace " + trace + " --shape 4,2,32,32,f32 --vram-mib 0.03515625 --hardware " + hw +
                                      " -o " + out + " --report " + html + " --save-hardware " + saved,
                                  "plan_ok");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(clitest::read_text(out));
  EXPECT_EQ(j["tokens"], 3);
  const auto& rows = j["policies"];
  ASSERT_EQ(rows.size(), default_plan_strategies().size());
  double prev = 1e300;
  bool seen_infeasible = false;
  for (const auto& row : rows) {
    if (!row["feasible"].get<bool>()) {
      seen_infeasible = true;
      continue;
    }
    EXPECT_FALSE(seen_infeasible) << "feasible row after an infeasible one";
    EXPECT_LE(row["tokens_per_s"].get<double>(), prev);
    prev = row["tokens_per_s"].get<double>();
    if (row["name"] == "offload engine, LRU global, --miss upload (moeroute run)") {
      EXPECT_NEAR(row["tokens_per_s"].get<double>(), 3 / (4 * 10.5e-3 + 2 * 7e-3), 1e-6);
    }
  }
  EXPECT_NE(r.out.find("offload engine, LRU global, --miss upload"), std::string::npos) << r.out;
  const std::string page = clitest::read_text(html);
  EXPECT_NE(page.find("<svg"), std::string::npos);
  EXPECT_NE(page.find("Predicted tokens per second by strategy"), std::string::npos);
  EXPECT_EQ(read_hardware_profile(saved).name, "tiny");
  // a shipped profile by name
  const auto s = clitest::run_cli("plan --trace " + trace + " --shape 4,2,32,32,f32 --vram-mib 1 --hardware rtx4090-pcie4-ddr5",
                                  "plan_named");
  EXPECT_EQ(s.code, 0) << s.err;
}

TEST(plan_cli, bad_input_exits_2_and_writes_nothing) {
  const std::string trace = tiny_trace_file(), hw = tiny_profile_file(), out = clitest::tmp_path("plan_bad.json");
  const std::string base = "plan --trace " + trace + " --vram-mib 1 -o " + out;
  clitest::expect_bad(base + " --shape 4,2,32,32,f32 --hardware nosuch", out, "not a shipped profile");
  clitest::expect_bad(base + " --shape 4,2,32,32,q9 --hardware " + hw, out, "not a weight type");
  clitest::expect_bad(base + " --hardware " + hw, out, "--model");
  clitest::expect_bad(base + " --shape 4,2,32,32,f32 --model x.gguf --hardware " + hw, out, "excludes");
  const std::string badhw = clitest::tmp_path("plan_badhw.json");
  clitest::write_text(badhw, "{\"name\":\"x\",\"vram_gib\":1,\"host_to_device\":{\"gbps\":1},\"device\":{},\"cpu\":{}}");
  clitest::expect_bad(base + " --shape 4,2,32,32,f32 --hardware " + badhw, out, "host_to_device.latency_us: missing");
  clitest::expect_bad("plan --trace " + trace + " --vram-mib 0 --shape 4,2,32,32,f32 --hardware " + hw + " -o " + out, out,
                      "--vram-mib");
  clitest::expect_bad(base + " --shape 6,3,32,32,f32 --hardware " + hw, out, "cannot map");
  clitest::expect_bad("plan --trace " + trace + " --shape 4,2,32,32,f32 --vram-mib 1e6 --hardware rtx4090-pcie4-ddr5 -o " + out,
                      out, "GiB of rtx4090");
}
#endif
