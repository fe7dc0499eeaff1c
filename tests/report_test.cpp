// `moeroute report`: the page holds every chart, renders in headless Chromium without console
// errors, and bad input exits 2 without writing the page.
#include <gtest/gtest.h>

#include <cstdio>
#include <regex>
#include <string>

#include "cli_support.hpp"

using namespace clitest;

namespace {
const std::string data = MOEROUTE_TEST_DATA_DIR;
const std::string mixtral = data + "/traces/mixtral-8x7b_humaneval_routing.jsonl";
const std::string pareto = data + "/atx/policy_pareto_comparison.json";

std::size_t count(const std::string& s, const std::string& needle) {
  std::size_t n = 0;
  for (auto p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
  return n;
}

std::string make_report(const std::string& name) {
  const auto container = tmp_path("report_container.json");
  write_text(container,
             R"({"model": "toy", "num_experts": 4, "experts_per_token": 2, "n_tokens": 6,
                 "layers": [{"layer_index": 0, "expert_counts": [6, 3, 2, 1]},
                            {"layer_index": 1, "expert_counts": [3, 3, 3, 3]}]})");
  const auto run = tmp_path("report_run.json");
  write_text(run, R"json({"policies": [{"name": "no cache", "tokens_per_s": 10.5, "hit_rate": 0, "bytes_per_token": 1048576},
                                    {"name": "lru", "tokens_per_s": 14.0, "hit_rate": 0.4, "bytes_per_token": 524288},
                                    {"name": "lru, zero-gated P=0.75 min_k 2", "tokens_per_s": 15.5, "hit_rate": 0.45, "bytes_per_token": 500000},
                                    {"name": "belady (bound)", "measured": false, "tokens_per_s": 0, "hit_rate": 0.6}]})json");
  const auto out = tmp_path(name);
  std::remove(out.c_str());
  auto r = run_cli("report --trace " + mixtral + " --container " + container + " --pareto " + pareto + " --run " +
                       run + " --title 'moeroute test report' -o " + out,
                   "report_ok");
  EXPECT_EQ(r.code, 0) << r.err;
  return out;
}
}  // namespace

TEST(Report, HoldsEveryChartAndTheVerdict) {
  const auto html = read_text(make_report("report.html"));
  // trace: heat map, coverage, hit rate; container: heat map, coverage; pareto; run bars
  EXPECT_EQ(count(html, "<svg"), 7u);
  EXPECT_EQ(count(html, "class=\"heatmap\""), 2u);
  // the Mixtral heat map has one rect per (layer, expert): 32 x 8
  EXPECT_GE(count(html, "<rect"), 32u * 8u);
  EXPECT_NE(html.find("cache NOT justified"), std::string::npos);
  EXPECT_NE(html.find("belady (optimal bound)"), std::string::npos);
  EXPECT_NE(html.find("14.0 tok/s"), std::string::npos);
  // Belady is a bound without a speed: no "0.0 tok/s" bar, a note with its hit rate instead.
  EXPECT_EQ(html.find("0.0 tok/s"), std::string::npos);
  EXPECT_NE(html.find("bound, no speed (hit rate 60.0%)"), std::string::npos);
  EXPECT_EQ(count(html, "<td>bound</td>"), 1u);
  // each heat map carries its colour scale: eleven steps, 0 to 100% of the layer's busiest expert
  EXPECT_EQ(count(html, "class=\"heat-scale\""), 2u);
  EXPECT_EQ(count(html, "% of the layer's busiest expert</title>"), 2u * 11u);
  EXPECT_EQ(html.find("<script"), std::string::npos);  // self-contained, static
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org"));  // no external resources
}

TEST(Report, RendersInHeadlessChromiumWithoutConsoleErrors) {
  const char* chromium = "/usr/bin/chromium";
  if (!file_exists(chromium)) GTEST_SKIP() << "chromium is not installed (scripts/deps.sh installs it): browser check skipped";
  const auto page = read_text(make_report("report_browser.html"));
  // A probe copy: after load, a script measures every SVG's drawn size, and counts the text
  // elements drawn outside their SVG (a label cut at an edge), and writes both into the title,
  // which --dump-dom prints.
  const std::string probe_script =
      "<script>window.addEventListener('load',()=>{const s=[...document.querySelectorAll('svg')];"
      "const ok=s.filter(e=>{const b=e.getBBox();return b.width>10&&b.height>10&&e.childElementCount>2;});"
      "let cut=0,which='';for(const v of s){const r=v.getBoundingClientRect();"
      "for(const t of v.querySelectorAll('text')){const b=t.getBoundingClientRect();"
      "if(b.left<r.left-0.5||b.top<r.top-0.5||b.right>r.right+0.5||b.bottom>r.bottom+0.5){++cut;which+='|'+t.textContent;}}}"
      "document.title='rendered '+ok.length+'/'+s.length+' cut '+cut+which;});</script>";
  std::string probed = page;
  probed.insert(probed.find("</body>"), probe_script);
  const auto probe = tmp_path("report_probe.html");
  write_text(probe, probed);
  const std::string flags =
      " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking"
      " --disable-component-update --disable-sync --enable-logging=stderr --v=0 --user-data-dir=" +
      tmp_path("chromium-profile") + " --window-size=1100,3000 ";
  const auto dom = tmp_path("report_dom.html"), png = tmp_path("report.png"), err = tmp_path("chromium.err");
  std::remove(png.c_str());
  ASSERT_EQ(std::system((std::string(chromium) + flags + "--dump-dom file://" + probe + " >" + dom + " 2>" + err).c_str()), 0);
  const auto dumped = read_text(dom);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(dumped, m, std::regex("<title>rendered (\\d+)/(\\d+) cut (\\d+)([^<]*)</title>")))
      << dumped.substr(0, 300);
  EXPECT_EQ(m[1], m[2]);
  EXPECT_EQ(m[2], "7");
  EXPECT_EQ(m[3], "0") << "text drawn outside its chart (a cut label): " << m[4];
  const auto log = read_text(err);
  EXPECT_EQ(log.find("CONSOLE"), std::string::npos) << log;
  EXPECT_EQ(log.find("Uncaught"), std::string::npos) << log;
  // a screenshot of the page itself
  ASSERT_EQ(std::system((std::string(chromium) + flags + "--screenshot=" + png + " file://" + tmp_path("report_browser.html") +
                         " >/dev/null 2>&1").c_str()), 0);
  EXPECT_GT(read_text(png).size(), 20000u);  // a blank 1100x3000 page compresses to a few KB
}

TEST(Report, BadInputExitsTwoWithoutWritingThePage) {
  const auto not_pareto = tmp_path("report_not_pareto.json");
  write_text(not_pareto, "{\"rows\": 3}");
  const std::pair<std::string, std::string> cases[] = {
      {"--trace /nonexistent.jsonl", "/nonexistent.jsonl: cannot open"},
      {"--pareto " + not_pareto, "not a pareto comparison"},
      {"--run " + not_pareto, "not an offload run result"},
      {"", "nothing to show"},
      {"--trace " + mixtral + " --capacity-percents 0,10", "--capacity-percents: 0"},
  };
  int i = 0;
  for (const auto& c : cases) {
    const auto out = tmp_path("report_bad.html");
    std::remove(out.c_str());
    auto r = run_cli("report " + c.first + " -o " + out, "report_bad_" + std::to_string(i++));
    EXPECT_EQ(r.code, 2) << c.first;
    EXPECT_NE(r.err.find(c.second), std::string::npos) << c.first << ": " << r.err;
    EXPECT_FALSE(file_exists(out)) << c.first;
  }
}
