#pragma once
// Shared plumbing of the moeroute CLI: subcommand registry, output writing, error conventions.
// Contract for every subcommand: bad input or usage throws moeroute::error (main prints one line
// and exits 2); output files are written only after all work succeeded, atomically.

#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "moeroute/error.hpp"

namespace moeroute::cli {

/// A subcommand adds itself to `app` and sets its callback; the callback stores the process exit
/// code in `exit_code` (0 unless the command defines others, e.g. concentration's 5).
using setup_fn = void (*)(CLI::App& app, int& exit_code);

inline std::vector<std::pair<std::string, setup_fn>>& registry() {
  static std::vector<std::pair<std::string, setup_fn>> r;
  return r;
}

struct registrar {
  registrar(const char* name, setup_fn fn) { registry().emplace_back(name, fn); }
};

/// Writes `content` to `path` atomically (temporary file + rename), or to stdout for "" / "-".
inline void write_output(const std::string& path, const std::string& content) {
  if (path.empty() || path == "-") {
    std::cout << content;
    std::cout.flush();
    return;
  }
  const std::string tmp = path + ".moeroute-tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    MOEROUTE_CHECK(f.good(), errc::io_error, path, ": cannot open for writing");
    f << content;
    f.flush();
    if (!f.good()) {
      f.close();
      std::remove(tmp.c_str());
      detail::fail(errc::io_error, path, ": write failed");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    detail::fail(errc::io_error, path, ": cannot write (rename failed)");
  }
}

/// Parses a comma-separated list of numbers ("5,10,15"); `flag` names the option in errors.
template <class T>
std::vector<T> parse_list(const std::string& text, const std::string& flag) {
  std::vector<T> out;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t comma = text.find(',', pos);
    const std::string item = text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    std::size_t used = 0;
    T v{};
    try {
      if constexpr (std::is_floating_point_v<T>) {
        v = static_cast<T>(std::stod(item, &used));
      } else {
        const long long x = std::stoll(item, &used);
        v = static_cast<T>(x);
        MOEROUTE_CHECK(static_cast<long long>(v) == x, errc::invalid_argument, flag, ": '", item,
                       "' out of range");
      }
    } catch (const std::logic_error&) {
      used = 0;
    }
    MOEROUTE_CHECK(!item.empty() && used == item.size(), errc::invalid_argument, flag, ": '", item,
                   "' is not a number");
    out.push_back(v);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

}  // namespace moeroute::cli

/// Registers a subcommand setup function under a name (used to order `moeroute --help`).
#define MOEROUTE_CLI_COMMAND(name, fn) \
  static const ::moeroute::cli::registrar moeroute_cli_registrar_##fn(name, fn)
