#pragma once
/// gla/detail/parallel.hpp: the one parallel engine of the library. Every operator, backward and module hands
/// it a list of independent work items; a pool of std::threads, with the calling thread taking part, claims
/// them one at a time in the order given (callers list the longest items first). Each item runs on exactly one
/// thread, so results never depend on the thread count. Waiting threads sleep (a busy machine costs a late
/// worker nothing: the caller finishes the items it did not take), exceptions are carried back to the caller,
/// and Eigen is kept single-threaded inside items.

#include <gla/core.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__linux__)
#include <sched.h>
#endif

namespace gla {
namespace detail {

/// Keeps Eigen's own OpenMP threads out of a region (Eigen's GEMMs read omp_get_max_threads(), a per-thread
/// setting): a GEMM inside a work item must not start a second team.
class EigenSingleThreaded {
 public:
#ifdef _OPENMP
  EigenSingleThreaded() : saved_(omp_get_max_threads()) {
    if (saved_ != 1) omp_set_num_threads(1);
  }
  ~EigenSingleThreaded() {
    if (saved_ != 1) omp_set_num_threads(saved_);
  }

 private:
  int saved_;
#else
  EigenSingleThreaded() = default;
#endif
  EigenSingleThreaded(const EigenSingleThreaded&) = delete;
  EigenSingleThreaded& operator=(const EigenSingleThreaded&) = delete;
};

/// The default thread count: OpenMP's (OMP_NUM_THREADS) when built with OpenMP, else the hardware's.
inline int default_num_threads() {
#ifdef _OPENMP
  return std::max(1, omp_get_max_threads());
#else
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
#endif
}

/// The CPU the calling thread is running on, or -1 where the system does not say (sched_getcpu is Linux's).
inline int current_cpu() {
#if defined(__linux__)
  return sched_getcpu();
#else
  return -1;
#endif
}

/// True on a thread that is running a work item (nested parallel_for calls then run serially).
inline bool& in_parallel_item() {
  thread_local bool flag = false;
  return flag;
}

/// A fixed set of worker threads that execute the items of one job at a time together with the caller.
///
/// Claiming: one 64-bit atomic holds (job generation << 32 | next item). A worker claims an item only if the
/// generation is still the one it woke up for, so a worker that wakes late can never run an item of a later
/// job; and it touches the job's function only after claiming an item, which the caller waits for. The caller
/// waits for *items*, never for workers to arrive, so a worker that is descheduled (another process on its
/// core) delays nothing it has not started.
///
/// A worker that wakes on the caller's own CPU stands aside for a short job. The scheduler puts a woken thread there
/// when no other CPU is free (another process busy on the rest): the two would then share one core, the worker
/// taking the caller's place and being preempted in the middle of items, which the caller must wait for. On a
/// two-core machine with one core busy that made the decode step 1.15–1.3× slower on 2 threads than on 1
/// (docs/PERFORMANCE.md). Waking it costs the caller a context switch all the same, so after a job a worker stood
/// aside for, the next jobs run on the caller without waking anyone: 2, then 4, ... up to 16 jobs while workers keep
/// standing aside, every window ending with a job that wakes them again to see whether a core has come free. A long
/// job (the previous one took kLongJobNs or more) is shared as usual: within it the scheduler moves the worker next
/// to the other process, where it still adds half a core (2-thread prefill 0.82–0.94× the 1-thread time there).
/// Which thread runs an item never changes its result.
class ThreadPool {
 public:
  explicit ThreadPool(int threads) { resize(threads); }
  ~ThreadPool() { stop_all(); }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  /// Total threads including the caller.
  int size() const { return static_cast<int>(workers_.size()) + 1; }

  /// A job at least this long (judged by the previous one) lasts long enough for the scheduler to move a worker
  /// that woke on the caller's CPU to another one, where it adds throughput even beside another process.
  static constexpr std::int64_t kLongJobNs = 2'000'000;

  /// Changes the number of threads (>= 1). Waits for a running job to finish.
  void resize(int threads) {
    std::lock_guard<std::mutex> job_lock(job_mutex_);
    stop_all();
    stop_ = false;
    for (int w = 1; w < threads; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
  }

  /// Runs fn(item, worker) for every item in [0, count), worker in [0, threads): 0 is the calling thread.
  /// Returns after every item has finished; rethrows the first exception an item threw (later items are then
  /// skipped). When the pool is busy with another caller's job, or `threads` is 1, runs on the caller alone.
  template <class F>
  void run(Index count, int threads, F&& fn) {
    if (count <= 0) return;
    std::unique_lock<std::mutex> job_lock(job_mutex_, std::try_to_lock);
    const int helpers = job_lock.owns_lock() ? std::min<int>(threads, size()) - 1 : 0;
    if (helpers <= 0 || count == 1 || count >= (Index(1) << 31) || skip_crowded_job()) {
      const auto start = std::chrono::steady_clock::now();
      run_serial(count, fn);
      last_job_ns_.store(elapsed_ns(start), std::memory_order_relaxed);
      return;
    }
    const auto start = std::chrono::steady_clock::now();
    Job job;
    job.count = count;
    job.call = [](void* f, Index i, int w) { (*static_cast<std::remove_reference_t<F>*>(f))(i, w); };
    job.fn = &fn;
    // Only a short job (judged by the previous one) is left to the caller by a worker that wakes on its CPU.
    job.stand_aside_cpu = last_job_ns_.load(std::memory_order_relaxed) < kLongJobNs ? current_cpu() : -1;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++generation_;
      job_ = &job;
      max_worker_ = std::min<Index>(helpers, count - 1);
      count_.store(count, std::memory_order_relaxed);
      claim_.store(static_cast<std::uint64_t>(generation_) << 32, std::memory_order_release);
    }
    const std::uint32_t gen = generation_;
    wake_.notify_all();
    execute(job, gen, 0);
    {
      // Wait for the items other threads claimed (never for threads that claimed nothing).
      std::unique_lock<std::mutex> lock(mutex_);
      done_cv_.wait(lock, [&] { return job.finished.load(std::memory_order_acquire) == job.count; });
      job_ = nullptr;
      // Close the job: a worker that woke for it but has not claimed yet now finds nothing to claim, whatever
      // the count of the next job.
      claim_.store((static_cast<std::uint64_t>(gen) << 32) | 0xffffffffu, std::memory_order_release);
    }
    last_job_ns_.store(elapsed_ns(start), std::memory_order_relaxed);
    if (job.error) std::rethrow_exception(job.error);
  }

 private:
  struct Job {
    Index count = 0;
    void (*call)(void*, Index, int) = nullptr;
    void* fn = nullptr;
    int stand_aside_cpu = -1;  // the caller's CPU for a short job (else -1): a worker woken there stands aside
    std::atomic<Index> finished{0};
    std::atomic<bool> failed{false};
    std::exception_ptr error;
    std::mutex error_mutex;
  };

  /// Whether this job runs on the caller alone because workers found no free core lately (the backoff above).
  /// Called with job_mutex_ held.
  bool skip_crowded_job() {
    const unsigned crowded = crowded_.load(std::memory_order_relaxed);
    if (crowded == 0 || last_job_ns_.load(std::memory_order_relaxed) >= kLongJobNs) {
      skipped_ = 0;
      return false;
    }
    if (skipped_ < (1u << std::min(crowded, 4u))) {
      ++skipped_;
      return true;
    }
    skipped_ = 0;  // the window is over: wake the workers for this job
    return false;
  }

  static std::int64_t elapsed_ns(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count();
  }

  template <class F>
  static void run_serial(Index count, F& fn) {
    const bool outer = in_parallel_item();
    in_parallel_item() = true;
    try {
      EigenSingleThreaded pin;
      for (Index i = 0; i < count; ++i) fn(i, 0);
    } catch (...) {
      in_parallel_item() = outer;
      throw;
    }
    in_parallel_item() = outer;
  }

  /// Claims and runs items of job generation `gen` until none is left. `job` is dereferenced only after an
  /// item was claimed: the job's caller cannot return before that item has finished.
  void execute(Job& job, std::uint32_t gen, int worker) {
    const bool outer = in_parallel_item();
    in_parallel_item() = true;
    EigenSingleThreaded pin;
    for (;;) {
      std::uint64_t c = claim_.load(std::memory_order_acquire);
      Index item;
      for (;;) {
        if (static_cast<std::uint32_t>(c >> 32) != gen) {
          in_parallel_item() = outer;
          return;
        }
        item = static_cast<Index>(c & 0xffffffffu);
        if (item >= count_.load(std::memory_order_relaxed)) {
          in_parallel_item() = outer;
          return;
        }
        if (claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel)) break;
      }
      if (!job.failed.load(std::memory_order_relaxed)) {
        try {
          job.call(job.fn, item, worker);
        } catch (...) {
          std::lock_guard<std::mutex> lock(job.error_mutex);
          if (!job.error) job.error = std::current_exception();
          job.failed.store(true, std::memory_order_relaxed);
        }
      }
      if (job.finished.fetch_add(1, std::memory_order_acq_rel) + 1 == job.count) {
        std::lock_guard<std::mutex> lock(mutex_);  // the caller checks `finished` under this mutex
        done_cv_.notify_all();
      }
    }
  }

  void worker_loop(int worker) {
#ifdef _OPENMP
    omp_set_num_threads(1);  // this thread's own setting: Eigen never starts a team from a worker
#endif
    std::uint32_t seen = 0;
    for (;;) {
      Job* job;
      std::uint32_t gen;
      int stand_aside_cpu;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || (job_ != nullptr && generation_ != seen); });
        if (stop_) return;
        seen = gen = generation_;
        if (worker > max_worker_) continue;  // this job needs fewer threads
        job = job_;
        stand_aside_cpu = job->stand_aside_cpu;
      }
      if (stand_aside_cpu >= 0 && current_cpu() == stand_aside_cpu) {
        // no free core: leave the short job to the caller
        crowded_.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      crowded_.store(0, std::memory_order_relaxed);
      execute(*job, gen, worker);
    }
  }

  void stop_all() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (std::thread& t : workers_) t.join();
    workers_.clear();
  }

  std::mutex job_mutex_;  // one job at a time
  std::mutex mutex_;
  std::condition_variable wake_, done_cv_;
  std::vector<std::thread> workers_;
  Job* job_ = nullptr;
  std::uint32_t generation_ = 0;
  Index max_worker_ = 0;
  std::atomic<Index> count_{0};
  std::atomic<std::uint64_t> claim_{0};
  bool stop_ = false;
  std::atomic<std::int64_t> last_job_ns_{0};  // how long the previous job took
  std::atomic<unsigned> crowded_{0};          // jobs in a row that a worker stood aside for (no free core)
  unsigned skipped_ = 0;              // jobs run on the caller alone in the current backoff window (job_mutex_)
};

/// The process-wide engine state: the thread count and the pool (started on first parallel use).
struct Engine {
  std::mutex mutex;
  int threads = default_num_threads();
  std::unique_ptr<ThreadPool> pool;

  static Engine& get() {
    static Engine e;
    return e;
  }
};

/// The pool for `threads` threads, created or resized on demand.
inline ThreadPool& pool_for(int threads) {
  Engine& e = Engine::get();
  std::lock_guard<std::mutex> lock(e.mutex);
  if (!e.pool)
    e.pool = std::make_unique<ThreadPool>(threads);
  else if (e.pool->size() < threads)
    e.pool->resize(threads);
  return *e.pool;
}

}  // namespace detail

/// The number of threads the operators use (default: omp_get_max_threads() when built with OpenMP, i.e.
/// OMP_NUM_THREADS, else the hardware's thread count).
inline int get_num_threads() {
  detail::Engine& e = detail::Engine::get();
  std::lock_guard<std::mutex> lock(e.mutex);
  return e.threads;
}

/// Sets the number of threads the operators use from now on (n >= 1; 1 = the calling thread only). Results do
/// not depend on it: every work item is computed by one thread in the same way.
inline void set_num_threads(int n) {
  if (n < 1) detail::fail("set_num_threads", "n is " + std::to_string(n) + ", expected >= 1");
  detail::Engine& e = detail::Engine::get();
  std::lock_guard<std::mutex> lock(e.mutex);
  e.threads = n;
}

namespace detail {

/// The number of threads a job of `count` items would use (an upper bound on the `worker` argument + 1):
/// size per-worker scratch with it before calling parallel_for.
inline int parallel_workers(Index count) {
  if (count <= 1 || in_parallel_item()) return 1;
  return static_cast<int>(std::min<Index>(count, get_num_threads()));
}

/// Runs fn(item, worker) for item in [0, count) on up to parallel_workers(count) threads; worker identifies
/// the thread's scratch (0 ≤ worker < parallel_workers(count)). Items run in the given order of claiming.
/// Nested calls (from inside an item) run serially. The first exception thrown by an item is rethrown here.
template <class F>
void parallel_for(Index count, F&& fn) {
  const int workers = parallel_workers(count);
  if (workers <= 1) {
    const bool outer = in_parallel_item();
    EigenSingleThreaded pin;
    in_parallel_item() = true;
    try {
      for (Index i = 0; i < count; ++i) fn(i, 0);
    } catch (...) {
      in_parallel_item() = outer;
      throw;
    }
    in_parallel_item() = outer;
    return;
  }
  pool_for(workers).run(count, workers, fn);
}

/// One value per worker of a parallel_for over `items` items, each a copy of `init` (allocated here, before
/// the parallel region, so that nothing in the region allocates or throws std::bad_alloc).
template <class X>
std::vector<X> per_worker(Index items, const X& init) {
  return std::vector<X>(static_cast<std::size_t>(parallel_workers(items)), init);
}

/// The (sequence, head) pairs p = n·H + h of a batch, longest sequence first (stable), as parallel work items:
/// the longest items start first so that a varlen batch does not end with one thread on its longest sequence.
inline std::vector<Index> pairs_longest_first(const OpShape& s) {
  std::vector<Index> order(static_cast<std::size_t>(s.N * s.H));
  std::iota(order.begin(), order.end(), Index(0));
  std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) {
    return s.seqs[static_cast<std::size_t>(a / s.H)].len > s.seqs[static_cast<std::size_t>(b / s.H)].len;
  });
  return order;
}

}  // namespace detail
}  // namespace gla
