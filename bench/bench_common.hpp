#pragma once
// bench/bench_common.hpp: what every gla benchmark shares: the named shapes, seeded inputs, FLOP and byte
// counts, the counters and run settings, and the Eigen-GEMM skeleton of one chunk that kernels are quoted against.

#include <gla/core.hpp>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <sys/resource.h>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace gla::bench {

/// A named problem size. `decode` adds an initial state h0 [B,H,K,V] and requests the final state, as one
/// step of incremental decoding does.
struct Shape {
  const char* name;
  Index B, T, H, K, V;
  bool decode;
};

inline constexpr Shape kPrefill{"prefill", 1, 4096, 16, 128, 128, false};
inline constexpr Shape kDecode{"decode", 8, 1, 16, 128, 128, true};
inline constexpr Shape kLong{"long", 1, 16384, 8, 64, 64, false};
/// Small enough for the scalar float64 reference to finish in well under a second.
inline constexpr Shape kSmall{"small", 1, 1024, 4, 64, 64, false};

/// The shapes every forward operator is measured at.
inline const std::vector<Shape>& forward_shapes() {
  static const std::vector<Shape> shapes{kPrefill, kDecode, kLong};
  return shapes;
}

/// The chunk size of the chunked kernels (GLAOptions' default) and of the FLOP model.
inline constexpr Index kChunk = 64;
inline constexpr std::uint64_t kSeed = 20240611;

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Inputs of one shape: q, k uniform in [-1, 1), v standard normal, g = logsigmoid(U[0,1)) / 16 (fla's test
/// gates, a per-step decay of about 0.97); h0 standard normal for decode shapes.
struct Inputs {
  Tensor<float, 4> q, k, v, g;
  std::optional<Tensor<float, 4>> h0;
};

inline Inputs make_inputs(const Shape& s, std::uint64_t seed = kSeed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> sym(-1.f, 1.f), unit(0.f, 1.f);
  std::normal_distribution<float> normal(0.f, 1.f);
  Inputs in;
  in.q = Tensor<float, 4>(s.B, s.T, s.H, s.K);
  in.k = Tensor<float, 4>(s.B, s.T, s.H, s.K);
  in.v = Tensor<float, 4>(s.B, s.T, s.H, s.V);
  in.g = Tensor<float, 4>(s.B, s.T, s.H, s.K);
  for (Index i = 0; i < in.q.size(); ++i) in.q.data()[i] = sym(rng);
  for (Index i = 0; i < in.k.size(); ++i) in.k.data()[i] = sym(rng);
  for (Index i = 0; i < in.v.size(); ++i) in.v.data()[i] = normal(rng);
  for (Index i = 0; i < in.g.size(); ++i) in.g.data()[i] = -std::log1p(std::exp(-unit(rng))) / 16.f;
  if (s.decode) {
    in.h0 = Tensor<float, 4>(s.B, s.H, s.K, s.V);
    for (Index i = 0; i < in.h0->size(); ++i) in.h0->data()[i] = normal(rng);
  }
  return in;
}

/// The inputs of a shape, generated once per process: Google Benchmark calls a benchmark function once per
/// repetition and per iteration-count probe, and generating 128 MB of random numbers each time would dominate.
inline const Inputs& inputs(const Shape& s) {
  static std::map<std::string, std::unique_ptr<Inputs>> cache;
  auto& slot = cache[s.name];
  if (!slot) slot = std::make_unique<Inputs>(make_inputs(s));
  return *slot;
}

/// The options a shape runs with: defaults, plus h0 and output_final_state for decode shapes.
inline GLAOptions options(const Shape& s, const Inputs& in) {
  GLAOptions o;
  o.chunk_size = static_cast<int>(kChunk);
  if (s.decode) {
    o.initial_state = *in.h0;
    o.output_final_state = true;
  }
  return o;
}

/// Preallocated outputs, so that the timed loop measures the kernel and not the allocator.
struct Outputs {
  Tensor<float, 4> o;
  std::optional<Tensor<float, 4>> ht;
  /// Filled once so that first-touch page faults land here and not in the first timed call.
  explicit Outputs(const Shape& s) : o(s.B, s.T, s.H, s.V) {
    o.setZero();
    if (s.decode) {
      ht = Tensor<float, 4>(s.B, s.H, s.K, s.V);
      ht->setZero();
    }
  }
  std::optional<gla::View<float, 4>> ht_view() {
    std::optional<gla::View<float, 4>> m;
    if (ht) m.emplace(mut_view(*ht));
    return m;
  }
};

/// FLOPs of the chunked form, per chunk of L tokens (L = BT except a sequence's last chunk) and head:
///   2·L·K·V (q·S) + 2·L·L·K (Q·Kᵀ, the full square although half is masked) + 2·L·L·V (A·V) + 2·L·K·V (state update).
/// Gate exponentials and elementwise work are not counted: this is the GEMM work a chunk needs.
inline double chunk_flops(const Shape& s, Index BT = kChunk) {
  double per_head = 0;
  for (Index c0 = 0; c0 < s.T; c0 += BT) {
    const double L = static_cast<double>(std::min(BT, s.T - c0));
    per_head += 4 * L * s.K * s.V + 2 * L * L * (s.K + s.V);
  }
  return per_head * static_cast<double>(s.B * s.H);
}

/// FLOPs of the recurrent form: 4·K·V per token and head (the rank-1 update k vᵀ and q·S; decay multiplies
/// not counted).
inline double recurrent_flops(const Shape& s) { return 4.0 * s.K * s.V * static_cast<double>(s.B * s.T * s.H); }

/// The bytes an operator must move at least: q, k, g and v read, o written, plus h0 read and ht written for
/// decode shapes (for a decode step the states dominate: 8 MB each way at the decode shape).
inline double io_bytes(const Shape& s) {
  const double tokens = static_cast<double>(s.B * s.T * s.H);
  double b = 4.0 * tokens * (3.0 * s.K + 2.0 * s.V);
  if (s.decode) b += 2.0 * 4.0 * static_cast<double>(s.B * s.H * s.K * s.V);
  return b;
}

/// The counters of every operator benchmark: tokens/s (B·T per iteration), FLOP/s from the given model,
/// bytes/s of the given byte count (the forward's io_bytes() when omitted; the backward passes
/// backward_io_bytes()), and the OpenMP thread count. Rates use real time (set by configure()).
inline void set_counters(benchmark::State& st, const Shape& s, double flops, double bytes) {
  using benchmark::Counter;
  st.counters["tokens/s"] = Counter(static_cast<double>(s.B * s.T), Counter::kIsIterationInvariantRate);
  st.counters["FLOP/s"] = Counter(flops, Counter::kIsIterationInvariantRate);
  st.counters["bytes/s"] = Counter(bytes, Counter::kIsIterationInvariantRate);
  st.counters["threads"] = Counter(max_threads());
  st.SetLabel(s.name);
}
inline void set_counters(benchmark::State& st, const Shape& s, double flops) { set_counters(st, s, flops, io_bytes(s)); }

// ---- The backward ----

/// The upstream gradients of one shape: do_ [B,T,H,V] standard normal (∂L/∂o), and for decode shapes dht
/// [B,H,K,V] standard normal (∂L/∂final_state), so that a decode backward is the one-token backward of a
/// step that continued from h0. Seeded apart from the inputs.
struct Upstream {
  Tensor<float, 4> do_;
  std::optional<Tensor<float, 4>> dht;
};

inline Upstream make_upstream(const Shape& s, std::uint64_t seed = kSeed + 1) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  Upstream u;
  u.do_ = Tensor<float, 4>(s.B, s.T, s.H, s.V);
  for (Index i = 0; i < u.do_.size(); ++i) u.do_.data()[i] = normal(rng);
  if (s.decode) {
    u.dht = Tensor<float, 4>(s.B, s.H, s.K, s.V);
    for (Index i = 0; i < u.dht->size(); ++i) u.dht->data()[i] = normal(rng);
  }
  return u;
}

/// The upstream gradients of a shape, generated once per process (as inputs()).
inline const Upstream& upstream(const Shape& s) {
  static std::map<std::string, std::unique_ptr<Upstream>> cache;
  auto& slot = cache[s.name];
  if (!slot) slot = std::make_unique<Upstream>(make_upstream(s));
  return *slot;
}

/// Preallocated gradients dq, dk, dg [B,T,H,K], dv [B,T,H,V], and dh0 [B,H,K,V] for decode shapes (which
/// have an initial state), zero-filled once so that first-touch page faults land outside the timed loop.
struct Grads {
  Tensor<float, 4> dq, dk, dv, dg;
  std::optional<Tensor<float, 4>> dh0;
  explicit Grads(const Shape& s)
      : dq(s.B, s.T, s.H, s.K), dk(s.B, s.T, s.H, s.K), dv(s.B, s.T, s.H, s.V), dg(s.B, s.T, s.H, s.K) {
    dq.setZero();
    dk.setZero();
    dv.setZero();
    dg.setZero();
    if (s.decode) {
      dh0 = Tensor<float, 4>(s.B, s.H, s.K, s.V);
      dh0->setZero();
    }
  }
  std::optional<gla::View<float, 4>> dh0_view() {
    std::optional<gla::View<float, 4>> m;
    if (dh0) m.emplace(mut_view(*dh0));
    return m;
  }
};

/// FLOPs of chunk_gla_backward / fused_chunk_gla_backward (one shared path): the matrix products it issues
/// (include/gla/chunk_backward.hpp, detail/chunk_backward_kernels.hpp), per chunk of L tokens and head:
///   2·L·K·V   recompute of the state update (chunk_fwd_h),
///   2·L·K·V   the state-gradient step (chunk_bwd_dh: (q ⊙ decay)ᵀ · do),
///   2·L·L·V   dA = do·vᵀ (full square),
///   3 · 2·P·K the off-diagonal sub-chunk blocks of dq (dA·k̃), A (q̃·k̃ᵀ) and dk (dAᵀ·q̃), where P = Σ over the
///             16-row sub-chunks of (rows before it) · (its rows) = (L² − 16·L)/2 for L = 64,
///   2·L·L·V   dv = Aᵀ·do (full square),
///   3 · 2·L·K·V  dv += k̃·dH, do·Sᵀ (dq's inter-chunk term), v·dHᵀ (dk's inter-chunk term).
/// Not counted: the 16×16 diagonal blocks (scalar dot products and axpys), gate exponentials, dg's cumsums.
inline double chunk_backward_flops(const Shape& s, Index BT = kChunk, Index sub = 16) {
  const double K = static_cast<double>(s.K), V = static_cast<double>(s.V);
  double per_head = 0;
  for (Index c0 = 0; c0 < s.T; c0 += BT) {
    const Index L = std::min(BT, s.T - c0);
    double P = 0;
    for (Index i0 = 0; i0 < L; i0 += sub) P += static_cast<double>(i0) * static_cast<double>(std::min(sub, L - i0));
    const double l = static_cast<double>(L);
    per_head += 10 * l * K * V + 4 * l * l * V + 6 * P * K;
  }
  return per_head * static_cast<double>(s.B * s.H);
}

/// FLOPs of fused_recurrent_gla_backward (gk gate), per token and head, 2·K·V for each of:
///   the state step of the checkpointing forward sweep; its recompute in the reverse sweep (every block but
///   the last, blocks of C = max(16, ⌈√T⌉) steps); the rank-1 update dS += scale·q doᵀ; the matvecs S·do (dq),
///   dS·v (dk), dSᵀ·k (dv); and dgk's row reduction of dS ⊙ S_{t−1}. About 14·K·V against the forward's 4·K·V
///   (decay multiplies not counted, as in the forward).
inline double recurrent_backward_flops(const Shape& s) {
  const Index C = std::max<Index>(16, static_cast<Index>(std::ceil(std::sqrt(static_cast<double>(s.T)))));
  const Index nblocks = (s.T + C - 1) / C;
  const double recomputed = static_cast<double>(s.T - std::min(C, s.T - (nblocks - 1) * C));  // all but the last block
  const double kv2 = 2.0 * s.K * s.V * static_cast<double>(s.B * s.H);
  return kv2 * (6.0 * static_cast<double>(s.T) + recomputed);
}

/// The bytes a backward must move at least: q, k, g, v and do_ read, dq, dk, dg and dv written, plus h0 and dht
/// read and dh0 written for decode shapes.
inline double backward_io_bytes(const Shape& s) {
  const double tokens = static_cast<double>(s.B * s.T * s.H);
  double b = 4.0 * tokens * (6.0 * s.K + 3.0 * s.V);
  if (s.decode) b += 3.0 * 4.0 * static_cast<double>(s.B * s.H * s.K * s.V);
  return b;
}

/// What the process did while a benchmark ran, reported per benchmark run:
///   faults/iter  minor page faults per iteration: a kernel that allocates fresh large buffers on every call pays
///                one per 4 KiB page it touches;
///   cores        process CPU time ÷ wall time: about the thread count on an idle machine, less when other
///                processes take the cores (then the timings of that run are not the kernel's).
class ProcessMeter {
 public:
  ProcessMeter() : start_(now()) {}
  void report(benchmark::State& st) const {
    const Sample end = now();
    st.counters["faults/iter"] =
        benchmark::Counter(static_cast<double>(end.faults - start_.faults), benchmark::Counter::kAvgIterations);
    const double wall = std::chrono::duration<double>(end.wall - start_.wall).count();
    st.counters["cores"] = benchmark::Counter(wall > 0 ? (end.cpu - start_.cpu) / wall : 0.0);
  }

 private:
  struct Sample {
    long faults;
    double cpu;
    std::chrono::steady_clock::time_point wall;
  };
  static Sample now() {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    const auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + 1e-6 * static_cast<double>(t.tv_usec); };
    return {u.ru_minflt, sec(u.ru_utime) + sec(u.ru_stime), std::chrono::steady_clock::now()};
  }
  Sample start_;
};

/// The timed loop of a benchmark whose call writes to `out`: one untimed warm-up call (it grows workspaces and takes
/// the first-touch page faults), then `call` every iteration with its output kept alive, metered by ProcessMeter.
template <class Call>
void time_calls(benchmark::State& st, const Call& call, const void* out) {
  call();
  const ProcessMeter meter;
  for (auto _ : st) {
    call();
    benchmark::DoNotOptimize(out);
    benchmark::ClobberMemory();
  }
  meter.report(st);
}

/// Sets the OpenMP thread count of the calling thread for a scope: oneDNN (built with OpenMP) runs its
/// primitives on that many threads.
class OneDnnThreads {
 public:
  explicit OneDnnThreads(int n) {
#ifdef _OPENMP
    saved_ = omp_get_max_threads();
    omp_set_num_threads(n);
#else
    (void)n;
#endif
  }
  ~OneDnnThreads() {
#ifdef _OPENMP
    omp_set_num_threads(saved_);
#endif
  }
  OneDnnThreads(const OneDnnThreads&) = delete;
  OneDnnThreads& operator=(const OneDnnThreads&) = delete;

 private:
  int saved_ = 1;
};

/// Milliseconds and wall-clock time: the kernels run OpenMP threads, whose work the main thread's CPU
/// time would not include.
inline void configure(benchmark::internal::Benchmark* b) { b->Unit(benchmark::kMillisecond)->UseRealTime(); }

/// Registers `op/<shape>` for each shape.
inline void register_shapes(const std::string& op, const std::vector<Shape>& shapes,
                            const std::function<void(benchmark::State&, const Shape&)>& fn) {
  for (const Shape& s : shapes)
    benchmark::RegisterBenchmark((op + "/" + s.name).c_str(), [fn, s](benchmark::State& st) { fn(st, s); })
        ->Apply(configure);
}

/// Records the build next to the results (compiler, SIMD, threads) and runs the registered benchmarks.
inline int run_main(int argc, char** argv) {
  benchmark::AddCustomContext("gla_compiler", __VERSION__);
  benchmark::AddCustomContext("gla_eigen", std::to_string(EIGEN_WORLD_VERSION) + "." +
                                               std::to_string(EIGEN_MAJOR_VERSION) + "." +
                                               std::to_string(EIGEN_MINOR_VERSION));
  benchmark::AddCustomContext("gla_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("gla_omp_max_threads", std::to_string(max_threads()));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

// ---- The Eigen GEMM ceiling at the chunk shapes ----

/// The four products of one chunk of BT tokens and one head, as the chunk kernels issue them through Eigen
/// (Mix = all four in a row, the whole GEMM work of a chunk).
enum class ChunkProduct { QS, QK, AV, KV, Mix };

inline const char* product_name(ChunkProduct p) {
  switch (p) {
    case ChunkProduct::QS: return "QS_BTxK.KxV";
    case ChunkProduct::QK: return "QKt_BTxK.KxBT";
    case ChunkProduct::AV: return "AV_BTxBT.BTxV";
    case ChunkProduct::KV: return "KtV_KxBT.BTxV";
    case ChunkProduct::Mix: return "mix";
  }
  return "?";
}

inline double product_flops(ChunkProduct p, Index BT, Index K, Index V) {
  const double bt = static_cast<double>(BT);
  switch (p) {
    case ChunkProduct::QS: return 2 * bt * K * V;
    case ChunkProduct::QK: return 2 * bt * bt * K;
    case ChunkProduct::AV: return 2 * bt * bt * V;
    case ChunkProduct::KV: return 2 * bt * K * V;
    case ChunkProduct::Mix: return 4 * bt * K * V + 2 * bt * bt * (K + V);
  }
  return 0;
}

/// One pass of product p over every (chunk, head) of a shape's q, k, v (T a multiple of BT): operands are
/// strided views into the [B,T,H,D] inputs (row stride H·D), A and S are per-thread contiguous workspaces,
/// OpenMP over (chunk, head) as chunk_gla's output phase. Nothing but the products: the rate this reaches is
/// what a kernel that spent all its time in Eigen's GEMM would reach.
inline void chunk_products(ChunkProduct p, const Shape& s, const Inputs& in, Index BT = kChunk) {
  using Map = detail::ConstStridedMap<float>;
  using Mat = detail::RowMat<float>;
  const Index H = s.H, K = s.K, V = s.V, NT = s.T / BT, work = s.B * NT * H;
#ifdef _OPENMP
#pragma omp parallel num_threads(static_cast<int>(std::max<Index>(1, std::min<Index>(work, max_threads()))))
#endif
  {
    Mat A = Mat::Constant(BT, BT, 0.01f), O(BT, V), S = Mat::Constant(K, V, 0.01f);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (Index w = 0; w < work; ++w) {
      const Index row = (w / H) * BT, h = w % H;  // row = b·T + chunk start
      const Map q(in.q.data() + (row * H + h) * K, BT, K, Eigen::OuterStride<>(H * K));
      const Map k(in.k.data() + (row * H + h) * K, BT, K, Eigen::OuterStride<>(H * K));
      const Map v(in.v.data() + (row * H + h) * V, BT, V, Eigen::OuterStride<>(H * V));
      if (p == ChunkProduct::QS || p == ChunkProduct::Mix) O.noalias() = q * S;
      if (p == ChunkProduct::QK || p == ChunkProduct::Mix) A.noalias() = q * k.transpose();
      if (p == ChunkProduct::AV) O.noalias() = A * v;
      if (p == ChunkProduct::Mix) O.noalias() += A * v;
      if (p == ChunkProduct::KV || p == ChunkProduct::Mix) S.noalias() += k.transpose() * v;
    }
    benchmark::DoNotOptimize(A.data());
    benchmark::DoNotOptimize(O.data());
    benchmark::DoNotOptimize(S.data());
  }
  benchmark::ClobberMemory();
}

/// Registers `gemm_chunk/<product>/<shape>` for the given products and shapes (FLOP/s over all threads).
inline void register_chunk_gemms(const std::vector<ChunkProduct>& products, const std::vector<Shape>& shapes) {
  for (const Shape& s : shapes)
    for (ChunkProduct p : products)
      benchmark::RegisterBenchmark((std::string("gemm_chunk/") + product_name(p) + "/" + s.name).c_str(),
                                   [p, s](benchmark::State& st) {
                                     const Inputs& in = inputs(s);
                                     const ProcessMeter meter;
                                     for (auto _ : st) chunk_products(p, s, in);
                                     meter.report(st);
                                     const double n = static_cast<double>(s.B * (s.T / kChunk) * s.H);
                                     st.counters["FLOP/s"] = benchmark::Counter(
                                         n * product_flops(p, kChunk, s.K, s.V),
                                         benchmark::Counter::kIsIterationInvariantRate);
                                     st.counters["threads"] = benchmark::Counter(max_threads());
                                     st.SetLabel(s.name);
                                   })
          ->Apply(configure);
}

}  // namespace gla::bench
