#pragma once
// Shared plumbing of the moeroute CLI: subcommand registry, and the three mechanisms every
// subcommand (tools/moeroute/cmd_*.cpp) uses for what comes in and goes out:
//
// 1. Inputs: files are opened only through moeroute/io/input_file.hpp (a regular file of known
//    size, under a per-reader cap; directories, FIFOs and devices are refused by name). The
//    library readers (read_npy, read_routing_trace_jsonl, read_atx_policy, gguf_file::open, ...)
//    already do; a command that reads a file itself calls read_input_file().
// 2. Flags: every numeric option gets a validator when it is declared (finite_in, finite_above,
//    int_in below) and contradictory options are declared with CLI11's excludes()/needs(), so
//    CLI11 refuses bad flags while parsing, before any callback runs. Checks that need several
//    values (list flags, a shape) come first in the callback, before any output or work.
// 3. Outputs: a command declares all its output paths in an output_files before it reads or
//    computes anything (each is checked by creating its temporary file next to it), sets their
//    contents, and commit() renames them all at the end. A failure anywhere removes every
//    temporary: nothing is written unless everything is.
//
// Contract for every subcommand: bad input or usage throws moeroute::error (main prints one line
// starting "moeroute:" and exits 2) and leaves no output file.

#include <CLI/CLI.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <system_error>
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

// ------------------------------------------------------------------------------- flags

namespace detail {
// "" when `s` is a finite number in [lo, hi] (or (lo, hi] when lo_open), else the reason.
inline std::string check_number(const std::string& s, double lo, double hi, bool lo_open) {
  double v = 0;
  std::size_t used = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::logic_error&) {
    used = 0;
  }
  if (s.empty() || used != s.size()) return "'" + s + "' is not a number";
  if (!std::isfinite(v)) return "'" + s + "' is not a finite number";
  if (v < lo || v > hi || (lo_open && v <= lo)) {
    std::ostringstream o;
    o.precision(16);
    o << s << " is not in " << (lo_open ? "(" : "[") << lo << ", " << hi << "]";
    return o.str();
  }
  return std::string();
}
}  // namespace detail

/// Validator: a number (CLI11 then converts it to the option's type) that is finite and lies in
/// [lo, hi]; NaN and infinities are refused. Attach with ->check(cli::finite_in(lo, hi)).
inline CLI::Validator finite_in(double lo, double hi) {
  return CLI::Validator([lo, hi](std::string& s) { return detail::check_number(s, lo, hi, false); }, "NUMBER");
}

/// Validator: a finite number in (lo, hi].
inline CLI::Validator finite_above(double lo, double hi = std::numeric_limits<double>::max()) {
  return CLI::Validator([lo, hi](std::string& s) { return detail::check_number(s, lo, hi, true); }, "NUMBER");
}

/// Validator for an integer option: in [lo, hi] (CLI11 refuses non-integers itself).
inline CLI::Validator int_in(long long lo, long long hi) { return finite_in(static_cast<double>(lo), static_cast<double>(hi)); }

// ----------------------------------------------------------------------------- outputs

/// The output files of one command: declared (and checked) before any work, written all or
/// nothing at the end. A path "" or "-" is stdout (at most one output may be stdout).
class output_files {
 public:
  output_files() = default;
  output_files(const output_files&) = delete;
  output_files& operator=(const output_files&) = delete;
  ~output_files() {
    for (auto& f : files_)
      if (!f.tmp.empty()) std::remove(f.tmp.c_str());
  }

  /// Declares the output of option `flag` at `path` ("" or "-" = stdout). A directory, a missing
  /// folder, an unwritable place, or a path (or stdout) named twice is errc::io_error /
  /// errc::invalid_argument naming the flag and the path. Writability is probed now by creating
  /// and removing the temporary file.
  void declare(const std::string& flag, const std::string& path) {
    const bool out = path.empty() || path == "-";
    for (const auto& f : files_)
      MOEROUTE_CHECK(!(f.stdout_ && out) && (out || f.stdout_ || f.path != path), errc::invalid_argument, flag,
                     " and ", f.flag, " both write to ", out ? std::string("stdout") : path);
    entry e;
    e.flag = flag;
    e.path = path;
    e.stdout_ = out;
    if (!out) {
      std::error_code ec;
      MOEROUTE_CHECK(!std::filesystem::is_directory(path, ec), errc::io_error, flag, " ", path,
                     ": is a directory, cannot write the output there");
      e.tmp = path + ".moeroute-tmp." + std::to_string(static_cast<long long>(::getpid()));
      {
        std::ofstream f(e.tmp, std::ios::binary | std::ios::trunc);
        MOEROUTE_CHECK(f.good(), errc::io_error, flag, " ", path, ": cannot open for writing");
      }
      // The probe is removed at once: the temporary exists again only while commit() writes,
      // so a run killed by a signal during its work leaves nothing beside the output.
      std::remove(e.tmp.c_str());
    }
    files_.push_back(std::move(e));
  }

  /// Sets the content of a declared output (by path, as declared).
  void set(const std::string& path, std::string content) {
    for (auto& f : files_)
      if (f.path == path || (f.stdout_ && (path.empty() || path == "-"))) {
        f.content = std::move(content);
        f.has_content = true;
        return;
      }
    ::moeroute::detail::fail(errc::invalid_argument, "output ", path, " was not declared");
  }

  /// Writes every output that has content: files to their temporaries, then renames them all;
  /// stdout last. Any failure removes all temporaries and throws errc::io_error naming the file.
  void commit() {
    for (auto& f : files_) {
      if (f.stdout_ || !f.has_content) continue;
      std::ofstream o(f.tmp, std::ios::binary | std::ios::trunc);
      o << f.content;
      o.flush();
      MOEROUTE_CHECK(o.good(), errc::io_error, f.path, ": write failed");
    }
    for (auto& f : files_) {
      if (f.stdout_ || f.tmp.empty()) continue;
      if (!f.has_content) {
        std::remove(f.tmp.c_str());
        f.tmp.clear();
        continue;
      }
      MOEROUTE_CHECK(std::rename(f.tmp.c_str(), f.path.c_str()) == 0, errc::io_error, f.path,
                     ": cannot write (rename failed)");
      f.tmp.clear();
    }
    for (auto& f : files_)
      if (f.stdout_ && f.has_content) {
        std::cout << f.content;
        std::cout.flush();
      }
  }

 private:
  struct entry {
    std::string flag, path, tmp, content;
    bool stdout_ = false, has_content = false;
  };
  std::vector<entry> files_;
};

/// One output: write_output(path, content) = declare + set + commit (for commands whose only
/// output is computed at once; commands with work between must declare first).
inline void write_output(const std::string& path, const std::string& content) {
  output_files o;
  o.declare("output", path);
  o.set(path, content);
  o.commit();
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
        if (used == item.size() && !std::isfinite(v)) used = 0;
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
                   "' is not a (finite) number");
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
