#pragma once
// Helpers for tests that run the moeroute CLI: run a command line, capture exit code and stderr,
// read and write small files in the test temporary directory.

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>

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

}  // namespace clitest
