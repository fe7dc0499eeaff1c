#pragma once
// A read-only memory mapping of a whole file (POSIX mmap). map() returns nullptr where the
// platform has no mmap or the mapping fails (empty file, special file, resource limits): callers
// then read the file through streams instead.
//
// The mapping is private and read-only. If another process truncates the file while it is mapped,
// touching the lost pages raises SIGBUS: the same contract as every mmap-based model loader.

#include <cstdint>
#include <memory>
#include <string>

#if defined(__unix__) || defined(__APPLE__)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define MOEROUTE_HAVE_MMAP 1
#endif

namespace moeroute::detail {

class mapped_file {
 public:
  /// Maps `path` if it is a regular file of exactly `expected_size` bytes (> 0); else nullptr.
  static std::shared_ptr<const mapped_file> map(const std::string& path, std::uint64_t expected_size) {
#ifdef MOEROUTE_HAVE_MMAP
    if (expected_size == 0 || expected_size > static_cast<std::uint64_t>(SIZE_MAX)) return nullptr;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return nullptr;
    struct stat st {};
    void* p = MAP_FAILED;
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && static_cast<std::uint64_t>(st.st_size) == expected_size)
      p = ::mmap(nullptr, static_cast<std::size_t>(expected_size), PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);  // the mapping keeps its own reference to the file
    if (p == MAP_FAILED) return nullptr;
    return std::shared_ptr<const mapped_file>(new mapped_file(p, static_cast<std::size_t>(expected_size)));
#else
    (void)path;
    (void)expected_size;
    return nullptr;
#endif
  }

  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  ~mapped_file() {
#ifdef MOEROUTE_HAVE_MMAP
    ::munmap(addr_, size_);
#endif
  }

  const unsigned char* data() const noexcept { return static_cast<const unsigned char*>(addr_); }
  std::size_t size() const noexcept { return size_; }

 private:
  mapped_file(void* addr, std::size_t size) noexcept : addr_(addr), size_(size) {}
  void* addr_;
  std::size_t size_;
};

}  // namespace moeroute::detail
