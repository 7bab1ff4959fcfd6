#pragma once
/// gla/workspace.hpp: gla::Workspace, caller-owned scratch memory that operators reuse across calls, and the
/// planning mechanism that lets one function both size and carve an operator's scratch.

#include <gla/core.hpp>

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

namespace gla {

/// Scratch memory owned by the caller and reused by operator calls (pass it as GLAOptions::workspace). It grows
/// to what a call needs and never shrinks, so once it has seen the largest call of a loop, the operators
/// allocate nothing: no page faults, no allocator in the timings. Size it up front with the operators'
/// `*_workspace_size()` functions, or let the first call grow it. Not thread-safe: one workspace per concurrent
/// call (an operator uses all of it while it runs).
class Workspace {
 public:
  Workspace() = default;
  explicit Workspace(std::size_t bytes) { reserve(bytes); }
  Workspace(Workspace&&) noexcept = default;
  Workspace& operator=(Workspace&&) noexcept = default;

  /// Bytes available without allocating.
  std::size_t capacity() const noexcept { return capacity_; }

  /// Makes at least `bytes` available (contents are not kept when it grows). A request the machine cannot
  /// hold is a gla::Error, not std::bad_alloc.
  void reserve(std::size_t bytes) {
    if (bytes <= capacity_) return;
    const std::size_t rounded = (bytes + kAlign - 1) / kAlign * kAlign;
    if (rounded < bytes) detail::fail("Workspace::reserve", "bytes is " + std::to_string(bytes) + ", too large");
    void* p = nullptr;
#if defined(_MSC_VER)
    p = _aligned_malloc(rounded, kAlign);
#else
    if (posix_memalign(&p, kAlign, rounded) != 0) p = nullptr;
#endif
    if (!p)
      detail::fail("Workspace::reserve", "cannot allocate " + std::to_string(rounded) + " bytes of scratch memory");
    data_.reset(static_cast<std::byte*>(p));
    capacity_ = rounded;
  }

  /// The memory (64-byte aligned), or null before the first reserve().
  std::byte* data() noexcept { return data_.get(); }

  /// Alignment of the start of the memory and of every buffer an operator carves from it.
  static constexpr std::size_t kAlign = 64;

 private:
  struct Free {
    void operator()(std::byte* p) const noexcept {
#if defined(_MSC_VER)
      _aligned_free(p);
#else
      std::free(p);
#endif
    }
  };
  std::unique_ptr<std::byte, Free> data_;
  std::size_t capacity_ = 0;
};

namespace detail {

/// Lays out an operator's scratch: every take<T>(n) reserves n elements, aligned to Workspace::kAlign. Run once
/// without memory to count the bytes (the `*_workspace_size()` functions), then once with memory to get the
/// pointers; the same planning code does both, so the size and the carving cannot disagree.
class Arena {
 public:
  /// A counting arena: take() returns null pointers and only adds up sizes.
  Arena() = default;
  /// A carving arena over `bytes` bytes at `base` (64-byte aligned).
  Arena(std::byte* base, std::size_t bytes) : base_(base), capacity_(bytes) {}

  template <class T>
  T* take(Index n) {
    const std::size_t bytes = static_cast<std::size_t>(std::max<Index>(n, 0)) * sizeof(T);
    const std::size_t at = used_;
    used_ += (bytes + Workspace::kAlign - 1) / Workspace::kAlign * Workspace::kAlign;
    if (!base_) return nullptr;
    if (used_ > capacity_) fail("Arena", "scratch layout exceeds its workspace (internal error)");
    return reinterpret_cast<T*>(base_ + at);
  }
  std::size_t used() const { return used_; }
  bool counting() const { return base_ == nullptr; }

  /// plan(*this) once per worker, each worker's buffers kWorkerGap bytes away from the next worker's and from
  /// whatever is laid out after them, so that what one core writes at every step never lies within a prefetch of
  /// what another writes. The cores' prefetchers fetch lines near the ones they touch, several lines ahead; two
  /// workers' scratch that met at a line boundary passed such lines back and forth between the cores
  /// (fused_recurrent_gla at B1 H1 T8192: 2 threads 1.23x faster than 1 without the gap, 1.47x with it; a gap of
  /// 128 bytes changed nothing, 512 most of it; docs/PERFORMANCE.md).
  template <class Plan>
  auto worker_plans(int workers, Plan&& plan) {
    std::vector<decltype(plan(*this))> w;
    for (int i = 0; i < workers; ++i) {
      if (i > 0) used_ += kWorkerGap;
      w.push_back(plan(*this));
    }
    used_ += kWorkerGap;
    return w;
  }
  static constexpr std::size_t kWorkerGap = 4096;

 private:
  std::byte* base_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t used_ = 0;
};

/// The scratch of one operator call: the caller's workspace when given (grown if needed), else memory owned
/// here for the duration of the call. `plan(Arena&)` is called twice, to count and to carve, and must take the
/// same buffers both times; the carved result is returned.
class Scratch {
 public:
  template <class Plan>
  auto carve(Workspace* ws, Plan&& plan) {
    Arena counter;
    plan(counter);
    const std::size_t bytes = counter.used();
    Workspace& target = ws ? *ws : own_;
    target.reserve(std::max<std::size_t>(bytes, 1));
    Arena arena(target.data(), target.capacity());
    return plan(arena);
  }

 private:
  Workspace own_;
};

/// Bytes of the layout a plan takes.
template <class Plan>
std::size_t planned_bytes(Plan&& plan) {
  Arena counter;
  plan(counter);
  return counter.used();
}

}  // namespace detail
}  // namespace gla
