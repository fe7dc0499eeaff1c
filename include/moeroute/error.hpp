#pragma once
// moeroute::error: the one exception type of the library. Each error has a stable code and a
// message that says what went wrong and where (file, row, field or tensor), e.g.
//   [moeroute.bad_input] logits.npy: row 3: NaN logit at expert 17
//
// Builds without exceptions (-fno-exceptions, or MOEROUTE_NO_EXCEPTIONS defined): every error
// the library would throw goes to a hook instead, which must not return:
//  - MOEROUTE_THROW_USER(err): a macro the user defines before including moeroute, called with
//    the moeroute::error (as nlohmann/json's JSON_THROW_USER); it is also used with exceptions on;
//  - otherwise the handler installed with set_error_handler(), called with the error;
//  - with neither (or when the handler returns), the message goes to stderr and std::abort().
// Hot-path calls that must not fail this way have status-returning forms (router::try_route).

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace moeroute {

/// Stable error codes. Values never change meaning; new codes are appended.
enum class errc : int {
  invalid_argument = 1,  ///< a parameter outside its documented domain (K > E, P > 1, ...)
  bad_input = 2,         ///< data that violates its contract (NaN logit, id out of range, ...)
  parse_error = 3,       ///< a file or string that is not in the expected format
  io_error = 4,          ///< a file that cannot be opened, read or written
  unsupported = 5,       ///< valid input that this build does not handle (dtype, version, ...)
  capacity = 6,          ///< a caller-provided buffer or budget too small for the request
  device = 7,            ///< a backend (Vulkan) failure
};

/// Short stable name of a code, used in messages: "bad_input", "parse_error", ...
inline const char* errc_name(errc c) noexcept {
  switch (c) {
    case errc::invalid_argument: return "invalid_argument";
    case errc::bad_input: return "bad_input";
    case errc::parse_error: return "parse_error";
    case errc::io_error: return "io_error";
    case errc::unsupported: return "unsupported";
    case errc::capacity: return "capacity";
    case errc::device: return "device";
  }
  return "unknown";
}

/// The exception thrown for bad input or misuse. what() is "[moeroute.<code>] <message>";
/// message() is the message alone (what the CLI prints).
class error : public std::runtime_error {
 public:
  error(errc code, const std::string& message)
      : std::runtime_error(std::string("[moeroute.") + errc_name(code) + "] " + message),
        code_(code),
        message_(message) {}
  errc code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }

 private:
  errc code_;
  std::string message_;
};

/// Status for hot-path functions that must not throw. ok() when code == 0.
struct status {
  int code = 0;             ///< 0 or a moeroute::errc value
  long long row = -1;       ///< the offending row (token) when the error concerns one
  long long column = -1;    ///< the offending column (expert) when the error concerns one
  const char* what = "";    ///< static description

  bool ok() const noexcept { return code == 0; }
  static status success() noexcept { return {}; }
  static status failure(errc c, long long r, long long col, const char* w) noexcept {
    return status{static_cast<int>(c), r, col, w};
  }
};

#if !defined(MOEROUTE_NO_EXCEPTIONS) && !(defined(__cpp_exceptions) || defined(__EXCEPTIONS) || defined(_CPPUNWIND))
#define MOEROUTE_NO_EXCEPTIONS 1
#endif

/// Receives the library's errors in a build without exceptions; must not return (exit, longjmp
/// out of moeroute's frames, or abort).
using error_handler = void (*)(const error&);

namespace detail {
inline std::atomic<error_handler>& error_handler_slot() noexcept {
  static std::atomic<error_handler> h{nullptr};
  return h;
}
}  // namespace detail

/// Installs the handler for errors in a build without exceptions (nullptr: print and abort) and
/// returns the previous one. Thread-safe; ignored while exceptions are on.
inline error_handler set_error_handler(error_handler h) noexcept { return detail::error_handler_slot().exchange(h); }

namespace detail {
/// Raises `e`: MOEROUTE_THROW_USER when defined, else throw, else (no exceptions) the handler,
/// then stderr + abort.
[[noreturn]] inline void raise_error(const error& e) {
#if defined(MOEROUTE_THROW_USER)
  MOEROUTE_THROW_USER(e);
  std::abort();
#elif !defined(MOEROUTE_NO_EXCEPTIONS)
  throw e;
#else
  if (const error_handler h = error_handler_slot().load()) h(e);
  std::fprintf(stderr, "%s\n", e.what());
  std::abort();
#endif
}

template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

template <class... Args>
[[noreturn]] void fail(errc code, Args&&... args) {
  raise_error(error(code, concat(std::forward<Args>(args)...)));
}
}  // namespace detail
}  // namespace moeroute

/// MOEROUTE_CHECK(cond, code, message parts...): raise moeroute::error(code, message) unless cond
/// (a throw, or the hook of a build without exceptions).
#define MOEROUTE_CHECK(cond, code, ...)                          \
  do {                                                           \
    if (!(cond)) ::moeroute::detail::fail((code), __VA_ARGS__);  \
  } while (0)
