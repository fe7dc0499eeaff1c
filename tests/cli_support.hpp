#pragma once
// Helpers for tests that run the moeroute CLI: run a command line, capture exit code and stderr,
// read and write small files in the test temporary directory.

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>

#include <gtest/gtest.h>

namespace clitest {

struct run_result {
  int code = -1;
  std::string out;  ///< stdout, unless the arguments redirect it
  std::string err;
};

inline std::string tmp_path(const std::string& name) {
  return std::string(MOEROUTE_TEST_TMP_DIR) + "/" + name;
}

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
}

inline bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

/// Whether a temporary of output `path` (path + ".moeroute-tmp...") is left in its folder.
inline bool has_temporary(const std::string& path) {
  const std::filesystem::path p(path);
  const std::string prefix = p.filename().string() + ".moeroute-tmp";
  std::error_code ec;
  const auto dir = p.has_parent_path() ? p.parent_path() : std::filesystem::path(".");
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.path().filename().string().rfind(prefix, 0) == 0) return true;
  return false;
}

/// Runs `moeroute <args>`, capturing stdout and stderr in files named after `tag`.
inline run_result run_cli(const std::string& args, const std::string& tag) {
  const std::string out_path = tmp_path(tag + ".stdout"), err_path = tmp_path(tag + ".stderr");
  const std::string cmd = "\"" + std::string(MOEROUTE_CLI_PATH) + "\" " + args + " >" + out_path + " 2>" + err_path;
  const int st = std::system(cmd.c_str());
  run_result r;
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  r.out = read_text(out_path);
  r.err = read_text(err_path);
  return r;
}

/// The bad-input contract of every subcommand: `moeroute <args>` (which names `out_path` as its
/// output) exits 2 with one "moeroute: ..." line on stderr containing `needle`, and leaves no
/// output file (nor its temporary).
inline void expect_bad(const std::string& args, const std::string& out_path, const std::string& needle,
                       const std::string& tag = "bad") {
  std::remove(out_path.c_str());
  const run_result r = run_cli(args, tag);
  EXPECT_EQ(r.code, 2) << args << "\n" << r.err;
  EXPECT_EQ(r.err.rfind("moeroute: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "wanted '" << needle << "' in: " << r.err;
  EXPECT_FALSE(file_exists(out_path)) << args;
  EXPECT_FALSE(has_temporary(out_path)) << args;
}

}  // namespace clitest
