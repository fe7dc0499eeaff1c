#pragma once
// The thread pool of the quantized CPU expert FFN (backends/cpu_quant.hpp) and its row split.
//
// Contract: pool(n) starts n - 1 workers once; run(f) calls f(i) for every i in [0, n) (i = 0 on
// the calling thread) and returns when all calls have returned, so phases separated by run() see
// each other's writes. split() gives part i of n equal contiguous parts, a pure function of its
// arguments (what makes results independent of the thread count).

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace moeroute::detail::cq {

class pool {
 public:
  explicit pool(int n) : n_(n) {
    for (int i = 1; i < n; ++i) workers_.emplace_back([this, i] { loop(i); });
  }
  ~pool() {
    {
      std::lock_guard<std::mutex> lk(m_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
  }
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  int size() const noexcept { return n_; }

  template <class F>
  void run(F& f) {
    if (n_ == 1) {
      f(0);
      return;
    }
    {
      std::lock_guard<std::mutex> lk(m_);
      fn_ = [](void* c, int i) { (*static_cast<F*>(c))(i); };
      ctx_ = &f;
      pending_.store(n_ - 1, std::memory_order_relaxed);
      ++gen_;
    }
    cv_.notify_all();
    f(0);
    // the workers' share is usually short: spin a little before sleeping
    for (int spin = 0; spin < 20000 && pending_.load(std::memory_order_acquire) != 0; ++spin) std::this_thread::yield();
    if (pending_.load(std::memory_order_acquire) != 0) {
      std::unique_lock<std::mutex> lk(m_);
      done_cv_.wait(lk, [this] { return pending_.load(std::memory_order_acquire) == 0; });
    }
  }

 private:
  void loop(int i) {
    std::uint64_t seen = 0;
    for (;;) {
      void (*fn)(void*, int) = nullptr;
      void* ctx = nullptr;
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return stop_ || gen_ != seen; });
        if (stop_) return;
        seen = gen_;
        fn = fn_;
        ctx = ctx_;
      }
      fn(ctx, i);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lk(m_);
        done_cv_.notify_one();
      }
    }
  }

  int n_;
  std::vector<std::thread> workers_;
  std::mutex m_;
  std::condition_variable cv_, done_cv_;
  std::uint64_t gen_ = 0;
  bool stop_ = false;
  void (*fn_)(void*, int) = nullptr;
  void* ctx_ = nullptr;
  std::atomic<int> pending_{0};
};

// [begin, end) of part i of n equal parts of [0, total), rounded to multiples of `align`.
inline void split(std::size_t total, int i, int n, std::size_t align, std::size_t& begin, std::size_t& end) noexcept {
  const std::size_t units = (total + align - 1) / align;
  begin = std::min(total, units * static_cast<std::size_t>(i) / static_cast<std::size_t>(n) * align);
  end = std::min(total, units * static_cast<std::size_t>(i + 1) / static_cast<std::size_t>(n) * align);
}

}  // namespace moeroute::detail::cq
