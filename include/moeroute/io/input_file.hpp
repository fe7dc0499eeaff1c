#pragma once
// The one way moeroute opens an input file.
//
// Contract: an input is a regular file of known size (symbolic links are followed). A directory, a
// FIFO, a socket or a device (/dev/zero, /dev/stdin on a pipe) is refused with
// errc::io_error naming the file and what it is, before it is opened, so a reader can never block
// on a pipe nor read an endless stream. A file larger than the reader's cap is refused with
// errc::bad_input naming the file, its size and the cap, before anything is allocated. Readers
// that stream (routing-trace JSONL, GGUF tensor data) call input_file_size(); readers that parse a
// whole document call read_input_file().
//
// Caps (bytes) of each reader: input_cap_document for JSON documents (policies, container traces,
// pareto and run JSON), input_cap_array for .npy arrays, input_cap_stream for JSONL traces and
// GGUF files (read incrementally, so the cap only bounds work, not memory).

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "moeroute/error.hpp"

namespace moeroute {

inline constexpr std::uint64_t input_cap_document = std::uint64_t{256} << 20;  ///< 256 MiB
inline constexpr std::uint64_t input_cap_array = std::uint64_t{4} << 30;       ///< 4 GiB
inline constexpr std::uint64_t input_cap_stream = std::uint64_t{1} << 40;      ///< 1 TiB

namespace detail {
inline const char* input_kind_name(std::filesystem::file_type t) {
  switch (t) {
    case std::filesystem::file_type::directory: return "is a directory";
    case std::filesystem::file_type::fifo: return "is a FIFO (named pipe)";
    case std::filesystem::file_type::socket: return "is a socket";
    case std::filesystem::file_type::character: return "is a character device";
    case std::filesystem::file_type::block: return "is a block device";
    default: return "is not a regular file";
  }
}
}  // namespace detail

/// Size in bytes of the regular file `path`; anything else (missing, directory, FIFO, device) or
/// a file over `cap` bytes is a moeroute::error naming the file. Never opens the file.
inline std::uint64_t input_file_size(const std::string& path, std::uint64_t cap = input_cap_stream) {
  MOEROUTE_CHECK(!path.empty(), errc::io_error, "an input file name is empty");
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || st.type() == std::filesystem::file_type::not_found) {
    const std::string why = ec ? ec.message() : std::string("no such file");
    detail::fail(errc::io_error, path, ": cannot open file (", why, ")");
  }
  MOEROUTE_CHECK(st.type() == std::filesystem::file_type::regular, errc::io_error, path, ": ",
                 detail::input_kind_name(st.type()), ", not a regular file");
  const std::uintmax_t size = std::filesystem::file_size(path, ec);
  MOEROUTE_CHECK(!ec, errc::io_error, path, ": cannot determine file size (", ec.message(), ")");
  MOEROUTE_CHECK(size <= cap, errc::bad_input, path, ": ", size, " bytes is more than the ", cap,
                 " bytes this reader accepts");
  return static_cast<std::uint64_t>(size);
}

/// Opens the regular file `path` (checked as input_file_size does) for binary reading.
inline std::ifstream open_input_file(const std::string& path, std::uint64_t cap = input_cap_stream,
                                     std::uint64_t* size = nullptr) {
  const std::uint64_t n = input_file_size(path, cap);
  if (size) *size = n;
  std::ifstream f(path, std::ios::binary);
  MOEROUTE_CHECK(f.good(), errc::io_error, path, ": cannot open file");
  return f;
}

/// The whole content of the regular file `path` (checked as input_file_size does). Reads exactly
/// the size found, so a file that grows while read is not followed.
inline std::string read_input_file(const std::string& path, std::uint64_t cap = input_cap_document) {
  std::uint64_t size = 0;
  std::ifstream f = open_input_file(path, cap, &size);
  std::string text(static_cast<std::size_t>(size), '\0');
  if (size) f.read(text.data(), static_cast<std::streamsize>(size));
  MOEROUTE_CHECK(static_cast<std::uint64_t>(f.gcount()) == size || size == 0, errc::io_error, path,
                 ": read error (", f.gcount(), " of ", size, " bytes; file changed while read?)");
  return text;
}

}  // namespace moeroute
