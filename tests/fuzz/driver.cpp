// Portable fuzz driver: a deterministic, bounded mutation loop around one LLVMFuzzerTestOneInput.
//   fuzzdrv_<name> [--seconds S] [--max-iters N] [--seed N] [--artifacts DIR] [--write-seeds DIR]
//                  [DIR_OR_FILE ...]
// Runs every given file (corpus and regression crashers) once as is, then mutates the built-in
// seeds and those files with a fixed-seed PRNG until S seconds or N iterations have passed. The
// input being run is kept so a fatal signal (sanitizer abort, segfault) writes it to
// DIR/crash-<iteration> before the process dies; an unexpected exception does the same and exits 1.

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "fuzz_target.hpp"

namespace {

// What the signal handler writes: the current input and where to put it.
std::string g_current;
char g_artifact_path[4096] = "";

void on_fatal_signal(int sig) {
  if (g_artifact_path[0]) {
    const int fd = ::open(g_artifact_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      const char* p = g_current.data();
      std::size_t left = g_current.size();
      while (left > 0) {
        const ssize_t w = ::write(fd, p, left);
        if (w <= 0) break;
        p += w;
        left -= static_cast<std::size_t>(w);
      }
      ::close(fd);
      const char msg[] = "fuzz driver: fatal signal; input written to ";
      (void)!::write(2, msg, sizeof msg - 1);
      (void)!::write(2, g_artifact_path, std::strlen(g_artifact_path));
      (void)!::write(2, "\n", 1);
    }
  }
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void collect(const std::string& path, std::vector<std::pair<std::string, std::string>>& out) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return;  // a missing corpus dir is fine
  if (S_ISREG(st.st_mode)) {
    out.emplace_back(path, read_file(path));
    return;
  }
  if (!S_ISDIR(st.st_mode)) return;
  DIR* d = ::opendir(path.c_str());
  if (!d) return;
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n == "." || n == ".." || n == "README.md") continue;
    names.push_back(n);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());  // deterministic order
  for (const auto& n : names) collect(path + "/" + n, out);
}

// Values that tend to break size and offset checks.
const std::uint64_t kInteresting[] = {0, 1, 2, 3, 7, 8, 16, 31, 32, 64, 127, 128, 255, 256,
                                      0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000u,
                                      0xffffffffu, 0x100000000ull, 0x7fffffffffffffffull,
                                      0x8000000000000000ull, 0xffffffffffffffffull};
const char* const kTokens[] = {"{", "}", "[", "]", ",", ":", "\"", "\n", "0", "-1", "1e308", "-0",
                               "null", "true", "false", "1.5", "NaN", "9999999999999999999",
                               "\"layer\"", "\"experts\"", "\"layers\"", "\"expert_counts\"",
                               "\"layer_index\"", "\"gating_probs\"", "\"num_experts\"", "\\u0000"};

std::string mutate(std::string s, std::mt19937_64& rng, const std::vector<std::string>& pool) {
  auto pick = [&](std::size_t n) { return n ? static_cast<std::size_t>(rng() % n) : 0; };
  const int rounds = 1 + static_cast<int>(rng() % 4);
  for (int r = 0; r < rounds; ++r) {
    switch (rng() % 10) {
      case 0:  // flip a bit
        if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:  // random byte
        if (!s.empty()) s[pick(s.size())] = static_cast<char>(rng());
        break;
      case 2: {  // overwrite 1/2/4/8 bytes with an interesting little-endian integer
        const std::size_t w = std::size_t{1} << (rng() % 4);
        if (s.size() < w) break;
        const std::size_t at = pick(s.size() - w + 1);
        std::uint64_t v = kInteresting[pick(sizeof kInteresting / sizeof kInteresting[0])];
        if (rng() % 4 == 0) v += static_cast<std::uint64_t>(static_cast<int>(rng() % 9) - 4);
        for (std::size_t b = 0; b < w; ++b) s[at + b] = static_cast<char>((v >> (8 * b)) & 0xff);
        break;
      }
      case 3:  // truncate
        if (!s.empty()) s.resize(pick(s.size()));
        break;
      case 4: {  // delete a range
        if (s.empty()) break;
        const std::size_t at = pick(s.size());
        s.erase(at, 1 + pick(std::min<std::size_t>(16, s.size() - at)));
        break;
      }
      case 5: {  // duplicate a range
        if (s.empty() || s.size() > (1u << 16)) break;
        const std::size_t at = pick(s.size());
        const std::size_t n = 1 + pick(std::min<std::size_t>(64, s.size() - at));
        s.insert(pick(s.size() + 1), s.substr(at, n));
        break;
      }
      case 6: {  // insert a token (JSON-shaped inputs)
        const char* t = kTokens[pick(sizeof kTokens / sizeof kTokens[0])];
        s.insert(pick(s.size() + 1), t);
        break;
      }
      case 7: {  // splice with another pool entry
        if (pool.empty()) break;
        const std::string& o = pool[pick(pool.size())];
        if (o.empty()) break;
        const std::size_t cut = pick(s.size() + 1), from = pick(o.size());
        s = s.substr(0, cut) + o.substr(from);
        break;
      }
      case 8: {  // random bytes inserted
        const std::size_t n = 1 + pick(8);
        std::string b;
        for (std::size_t i = 0; i < n; ++i) b.push_back(static_cast<char>(rng()));
        s.insert(pick(s.size() + 1), b);
        break;
      }
      default:  // change a digit (numbers in text inputs)
        for (int tries = 0; tries < 8 && !s.empty(); ++tries) {
          const std::size_t at = pick(s.size());
          if (s[at] >= '0' && s[at] <= '9') {
            s[at] = static_cast<char>('0' + rng() % 10);
            break;
          }
        }
        break;
    }
  }
  if (s.size() > (1u << 20)) s.resize(1u << 20);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 3.0;
  unsigned long long max_iters = ~0ull, seed = 1;
  std::string artifacts = ".", write_seeds;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "fuzz driver: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--seconds") seconds = std::atof(next().c_str());
    else if (a == "--max-iters") max_iters = std::strtoull(next().c_str(), nullptr, 10);
    else if (a == "--seed") seed = std::strtoull(next().c_str(), nullptr, 10);
    else if (a == "--artifacts") artifacts = next();
    else if (a == "--write-seeds") write_seeds = next();
    else paths.push_back(a);
  }

  const std::vector<std::string> seeds = moeroute_fuzz_seeds();
  if (!write_seeds.empty()) {
    for (std::size_t i = 0; i < seeds.size(); ++i) {
      std::ofstream f(write_seeds + "/seed-" + std::to_string(i), std::ios::binary);
      f << seeds[i];
    }
    return 0;
  }
  ::mkdir(artifacts.c_str(), 0755);
  for (int sig : {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL}) std::signal(sig, on_fatal_signal);

  std::vector<std::pair<std::string, std::string>> files;
  for (const auto& p : paths) collect(p, files);
  std::vector<std::string> pool = seeds;
  int failures = 0;
  auto guarded = [&](const std::string& input, const std::string& label, const std::string& name) {
    std::snprintf(g_artifact_path, sizeof g_artifact_path, "%s/%s", artifacts.c_str(), name.c_str());
    g_current = input;
    try {
      LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(g_current.data()), g_current.size());
    } catch (const std::exception& e) {
      std::cerr << "fuzz driver: unexpected exception on " << label << ": " << e.what() << "\n";
      std::ofstream(g_artifact_path, std::ios::binary) << input;
      ++failures;
    } catch (...) {
      std::cerr << "fuzz driver: unexpected non-standard exception on " << label << "\n";
      std::ofstream(g_artifact_path, std::ios::binary) << input;
      ++failures;
    }
  };
  for (std::size_t i = 0; i < seeds.size(); ++i) guarded(seeds[i], "seed " + std::to_string(i), "crash-seed-" + std::to_string(i));
  for (const auto& [path, bytes] : files) {
    guarded(bytes, path, "crash-replay");
    pool.push_back(bytes);
  }
  if (pool.empty()) pool.push_back(std::string());

  std::mt19937_64 rng(seed);
  const auto start = std::chrono::steady_clock::now();
  unsigned long long it = 0;
  for (; it < max_iters; ++it) {
    if ((it & 63) == 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >= seconds)
      break;
    const std::string& base = pool[static_cast<std::size_t>(rng() % pool.size())];
    std::string input = mutate(base, rng, pool);
    guarded(input, "iteration " + std::to_string(it), "crash-" + std::to_string(seed) + "-" + std::to_string(it));
    // Keep some mutants as bases so mutations compound (bounded pool, deterministic choice).
    if (rng() % 16 == 0) {
      if (pool.size() < seeds.size() + 256) pool.push_back(std::move(input));
      else pool[seeds.size() + static_cast<std::size_t>(rng() % (pool.size() - seeds.size()))] = std::move(input);
    }
    if (failures >= 5) break;
  }
  std::cerr << "fuzz driver: " << seeds.size() << " seeds, " << files.size() << " files, " << it
            << " mutations (seed " << seed << "), " << failures << " failures\n";
  return failures ? 1 : 0;
}
