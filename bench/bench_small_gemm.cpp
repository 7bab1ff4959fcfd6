// bench/bench_small_gemm.cpp: gla::detail::gemm's backends on the chunk kernels' four products, single-threaded,
// next to oneDNN's f32 GEMM at 1024³ (1 and 2 threads) as the same-process yardstick, and the per-call overhead
// of gemm() on a tiny product.
//
//   small/<product>/<layout>/<backend>: one product per iteration on operands that stay in cache.
//     product  QKt (Q·Kᵀ: BT×BT×K, NT), AV (A·V: BT×V×BT, NN), QS (Q·S: BT×V×K, NN), KtV (Kᵀ·V: K×V×BT, TN),
//              at BT = 64 and K = V = 128 or 64 (the name carries m×n×k);
//     layout   contig: every matrix contiguous (row stride = width); strided: A, B and C all with row stride
//              2048, as views of one head in a [B,T,H,D] tensor with H·D = 2048;
//     backend  eigen_f32 (gemm_eigen<float>), xsmm_f32 (gemm_libxsmm<float>), xsmm_bf16 (gemm_libxsmm<bfloat16>,
//              Bf16Kernel::ViaF32: tiles converted to float, float kernel), xsmm_bf16_vnni (Bf16Kernel::Vnni:
//              libxsmm's bfloat16 kernel, VNNI packing included), eigen_bf16 (gemm_eigen<bfloat16>: bf16→float
//              tile conversion included, the bf16 path of a build without libxsmm), amx_bf16 (gemm_amx<bfloat16>:
//              AMX tiles, VNNI packing included; skipped where AMX is not available). Conversions and packs are
//              part of every call, as in gemm().
//   yardstick/onednn_sgemm_1024/threads:<t>: dnnl_sgemm 1024³ on t OpenMP threads.
//   square/<N>/<eigen_f32|libxsmm_kernel>: N³ float products, one thread, for the size limit of gemm()'s
//     libxsmm route (gemm_impl::kXsmmMaxDim).
//   kernel_only/QS_64x128x128/<libxsmm_f32|libxsmm_bf16_vnni>: libxsmm's float and bfloat16 kernels alone on
//     pre-packed operands; isa/<vfmadd231ps_zmm|vdpbf16ps_zmm>: each instruction's peak FLOP/s on one core
//     (AVX-512 BF16 builds only): why the bfloat16 route follows the CPU (default_bf16_kernel).
//   overhead/<what>: ns per call of a 4×4×4 float product: gemm(), a direct call of the dispatched libxsmm
//     kernel, libxsmm_smmdispatch + call on every call (a wrapper without the thread-local table), gemm_eigen().
// Counter: FLOP/s (2·m·n·k per product). bench/small_gemm_table.py turns a JSON run into the table of
// docs/PERFORMANCE.md with GFLOP/s and ratios to the 1-thread yardstick of the same process.

#include "bench_common.hpp"

#include <gla/detail/gemm.hpp>
#include <gla/detail/parallel.hpp>

#if defined(GLA_HAVE_ONEDNN)
#include <oneapi/dnnl/dnnl.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using gla::Index;
using gla::detail::Trans;
using bf16 = Eigen::bfloat16;

struct Product {
  const char* name;
  Trans ta, tb;
  Index m, n, k;
};

std::vector<Product> products() {
  std::vector<Product> ps;
  for (const Index K : {128, 64}) {
    const Index BT = 64, V = K;
    ps.push_back({"QKt", Trans::N, Trans::T, BT, BT, K});
    ps.push_back({"AV", Trans::N, Trans::N, BT, V, BT});
    ps.push_back({"QS", Trans::N, Trans::N, BT, V, K});
    ps.push_back({"KtV", Trans::T, Trans::N, K, V, BT});
  }
  return ps;
}

enum class Backend { EigenF32, XsmmF32, XsmmBf16, XsmmBf16Vnni, EigenBf16, AmxBf16 };
const char* backend_name(Backend b) {
  switch (b) {
    case Backend::EigenF32:
      return "eigen_f32";
    case Backend::XsmmF32:
      return "xsmm_f32";
    case Backend::XsmmBf16:
      return "xsmm_bf16";
    case Backend::XsmmBf16Vnni:
      return "xsmm_bf16_vnni";
    case Backend::EigenBf16:
      return "eigen_bf16";
    case Backend::AmxBf16:
      return "amx_bf16";
  }
  return "?";
}

/// Operands of one product: stored shapes with row stride `ld` (0: contiguous), random values in [-1, 1).
struct Operands {
  Index lda, ldb, ldc;
  std::vector<float> A, B, C;
  std::vector<bf16> Ah, Bh;
  Operands(const Product& p, Index ld) {
    const Index ar = p.ta == Trans::N ? p.m : p.k, ac = p.ta == Trans::N ? p.k : p.m;
    const Index br = p.tb == Trans::N ? p.k : p.n, bc = p.tb == Trans::N ? p.n : p.k;
    lda = ld ? ld : ac;
    ldb = ld ? ld : bc;
    ldc = ld ? ld : p.n;
    std::mt19937_64 g(gla::bench::kSeed);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    A.resize(static_cast<std::size_t>(ar * lda));
    B.resize(static_cast<std::size_t>(br * ldb));
    C.assign(static_cast<std::size_t>(p.m * ldc), 0.f);
    for (float& x : A) x = u(g);
    for (float& x : B) x = u(g);
    for (const float x : A) Ah.push_back(bf16(x));
    for (const float x : B) Bh.push_back(bf16(x));
  }
};

void run_small(benchmark::State& st, const Product& p, Index ld, Backend be) {
  Operands o(p, ld);
  const gla::detail::EigenSingleThreaded pin;  // single-threaded, as inside the parallel engine
  const auto call = [&] {
    switch (be) {
      case Backend::EigenF32:
        gla::detail::gemm_eigen(p.ta, p.tb, p.m, p.n, p.k, o.A.data(), o.lda, o.B.data(), o.ldb, false, o.C.data(),
                                o.ldc);
        return true;
      case Backend::XsmmF32:
        return gla::detail::gemm_libxsmm(p.ta, p.tb, p.m, p.n, p.k, o.A.data(), o.lda, o.B.data(), o.ldb, false,
                                         o.C.data(), o.ldc);
      case Backend::XsmmBf16:
      case Backend::XsmmBf16Vnni:
        return gla::detail::gemm_libxsmm(
            p.ta, p.tb, p.m, p.n, p.k, o.Ah.data(), o.lda, o.Bh.data(), o.ldb, false, o.C.data(), o.ldc,
            be == Backend::XsmmBf16 ? gla::detail::Bf16Kernel::ViaF32 : gla::detail::Bf16Kernel::Vnni);
      case Backend::EigenBf16:
        gla::detail::gemm_eigen(p.ta, p.tb, p.m, p.n, p.k, o.Ah.data(), o.lda, o.Bh.data(), o.ldb, false, o.C.data(),
                                o.ldc);
        return true;
      case Backend::AmxBf16:
        return gla::detail::gemm_amx(p.ta, p.tb, p.m, p.n, p.k, o.Ah.data(), o.lda, o.Bh.data(), o.ldb, false,
                                     o.C.data(), o.ldc);
    }
    return false;
  };
  if (!call()) {  // also the warm-up: JIT compilation and scratch growth happen here
    st.SkipWithError("no kernel for this call here (libxsmm or AMX not compiled in, or no AMX on this CPU)");
    return;
  }
  const gla::bench::ProcessMeter meter;  // `cores` below 1: other processes took part of this core
  for (auto _ : st) {
    call();
    benchmark::DoNotOptimize(o.C.data());
    benchmark::ClobberMemory();
  }
  meter.report(st);
  const double flops = 2.0 * static_cast<double>(p.m * p.n * p.k);
  st.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(std::to_string(p.m) + "x" + std::to_string(p.n) + "x" + std::to_string(p.k));
}

#if defined(GLA_HAVE_ONEDNN)
void run_onednn(benchmark::State& st) {
  const int threads = static_cast<int>(st.range(0));
  const Index n = 1024;
  std::vector<float> a(static_cast<std::size_t>(n * n)), b(a.size()), c(a.size(), 0.f);
  std::mt19937_64 g(gla::bench::kSeed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (float& x : a) x = u(g);
  for (float& x : b) x = u(g);
#ifdef _OPENMP
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
#endif
  const auto sgemm = [&] { return dnnl_sgemm('N', 'N', n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n); };
  if (sgemm() != dnnl_success) {
    st.SkipWithError("dnnl_sgemm failed");
  } else {
    const gla::bench::ProcessMeter meter;
    for (auto _ : st) {
      sgemm();
      benchmark::DoNotOptimize(c.data());
      benchmark::ClobberMemory();
    }
    meter.report(st);
    const double flops = 2.0 * static_cast<double>(n * n * n);
    st.counters["FLOP/s"] = benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
    st.counters["threads"] = benchmark::Counter(threads);
  }
#ifdef _OPENMP
  omp_set_num_threads(saved);
#endif
}
#endif

// ---- where libxsmm stops paying: N³ float products, Eigen vs a raw libxsmm kernel (gemm() sends products with a
// dimension above gemm_impl::kXsmmMaxDim to Eigen) ----

void run_square_eigen(benchmark::State& st, Index n) {
  using Mat = gla::detail::RowMat<float>;
  const Mat a = Mat::Random(n, n), b = Mat::Random(n, n);
  Mat c(n, n);
  const gla::detail::EigenSingleThreaded pin;
  for (auto _ : st) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  st.counters["FLOP/s"] =
      benchmark::Counter(2.0 * static_cast<double>(n * n * n), benchmark::Counter::kIsIterationInvariantRate);
}

#if GLA_GEMM_WITH_LIBXSMM
void run_square_libxsmm(benchmark::State& st, Index size) {
  const auto n = static_cast<libxsmm_blasint>(size);
  using Mat = gla::detail::RowMat<float>;
  const Mat a = Mat::Random(n, n), b = Mat::Random(n, n);
  Mat c(n, n);
  libxsmm_init();
  const int flags = LIBXSMM_GEMM_FLAG_BETA_0, prefetch = LIBXSMM_GEMM_PREFETCH_NONE;
  const float alpha = 1.f, beta = 0.f;
  const libxsmm_smmfunction fn = libxsmm_smmdispatch(n, n, n, &n, &n, &n, &alpha, &beta, &flags, &prefetch);
  if (!fn) {
    st.SkipWithError("no kernel");
    return;
  }
  for (auto _ : st) {
    fn(b.data(), a.data(), c.data());
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  st.counters["FLOP/s"] =
      benchmark::Counter(2.0 * static_cast<double>(n) * n * n, benchmark::Counter::kIsIterationInvariantRate);
}
#endif

// ---- why bfloat16 goes through the float kernels by default ----

#if GLA_GEMM_WITH_LIBXSMM
/// libxsmm's float and bfloat16 (VNNI) kernels alone on pre-packed contiguous operands, at Q·S 64×128×128: the
/// kernels' own rates, without gemm()'s conversions and packs.
void run_kernel_only(benchmark::State& st, bool bf16_kernel) {
  const libxsmm_blasint m = 64, n = 128, k = 128;  // row-major C m×n = A m×k · B k×n
  std::vector<float> a(static_cast<std::size_t>(m * k), 0.5f), b(static_cast<std::size_t>(k * n), 0.25f),
      c(static_cast<std::size_t>(m * n));
  std::vector<libxsmm_bfloat16> ah(a.size(), 0x3f00), bv(b.size(), 0x3e80);  // 0.5, 0.25; VNNI B: layout irrelevant
  libxsmm_init();
  const int prefetch = LIBXSMM_GEMM_PREFETCH_NONE;
  const float alpha = 1.f, beta = 0.f;
  const int flags = LIBXSMM_GEMM_FLAG_BETA_0 | (bf16_kernel ? LIBXSMM_GEMM_FLAG_VNNI_A : 0);
  if (bf16_kernel) {
    const libxsmm_bsmmfunction fn = libxsmm_bsmmdispatch(n, m, k, &n, &k, &n, &alpha, &beta, &flags, &prefetch);
    if (!fn) return st.SkipWithError("no bfloat16 kernel");
    for (auto _ : st) {
      fn(bv.data(), ah.data(), c.data());
      benchmark::DoNotOptimize(c.data());
      benchmark::ClobberMemory();
    }
  } else {
    const libxsmm_smmfunction fn = libxsmm_smmdispatch(n, m, k, &n, &k, &n, &alpha, &beta, &flags, &prefetch);
    if (!fn) return st.SkipWithError("no float kernel");
    for (auto _ : st) {
      fn(b.data(), a.data(), c.data());
      benchmark::DoNotOptimize(c.data());
      benchmark::ClobberMemory();
    }
  }
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate);
}
#endif

#if defined(__AVX512F__) && defined(__AVX512BF16__)
/// Peak of one instruction on this core: 12 independent zmm accumulator chains (distinct values, kept apart by an
/// empty asm so that the compiler cannot merge them), 12 instructions per loop trip. FLOP/s counts 2 per float
/// lane for vfmadd231ps and 4 per float lane for vdpbf16ps (two products, two adds).
template <bool kBf16>
void run_isa_peak(benchmark::State& st) {
  constexpr std::int64_t kTrips = 1 << 14;
  const __m512 x = _mm512_set1_ps(1e-20f), y = _mm512_set1_ps(1.f);
  const auto step = [&](__m512& a) {
    if constexpr (kBf16)
      a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_castps_si512(x), (__m512bh)_mm512_castps_si512(y));
    else
      a = _mm512_fmadd_ps(x, y, a);
  };
  for (auto _ : st) {
    __m512 a0 = _mm512_set1_ps(0.f), a1 = _mm512_set1_ps(1.f), a2 = _mm512_set1_ps(2.f), a3 = _mm512_set1_ps(3.f),
           a4 = _mm512_set1_ps(4.f), a5 = _mm512_set1_ps(5.f), a6 = _mm512_set1_ps(6.f), a7 = _mm512_set1_ps(7.f),
           a8 = _mm512_set1_ps(8.f), a9 = _mm512_set1_ps(9.f), a10 = _mm512_set1_ps(10.f), a11 = _mm512_set1_ps(11.f);
    for (std::int64_t t = 0; t < kTrips; ++t) {
      step(a0), step(a1), step(a2), step(a3), step(a4), step(a5);
      step(a6), step(a7), step(a8), step(a9), step(a10), step(a11);
      __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5));
      __asm__ volatile("" : "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));
    }
    for (const __m512& r : {a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11}) benchmark::DoNotOptimize(r);
  }
  const double flops_per_instr = kBf16 ? 64.0 : 32.0;
  st.counters["FLOP/s"] =
      benchmark::Counter(flops_per_instr * 12 * kTrips, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["instr/s"] = benchmark::Counter(12.0 * kTrips, benchmark::Counter::kIsIterationInvariantRate);
}
#endif

// ---- per-call overhead on a 4×4×4 float product ----

constexpr Index kTiny = 4;

struct Tiny {
  float A[kTiny * kTiny], B[kTiny * kTiny], C[kTiny * kTiny];
  Tiny() {
    for (Index i = 0; i < kTiny * kTiny; ++i) A[i] = B[i] = C[i] = 0.5f;
  }
};

void overhead_counters(benchmark::State& st) {  // seconds per call (printed with an SI prefix, e.g. 12.3n)
  st.counters["s/call"] =
      benchmark::Counter(1.0, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void run_overhead_gemm(benchmark::State& st) {
  Tiny t;
  for (auto _ : st) {
    gla::detail::gemm(Trans::N, Trans::N, kTiny, kTiny, kTiny, t.A, kTiny, t.B, kTiny, false, t.C, kTiny);
    benchmark::DoNotOptimize(t.C);
    benchmark::ClobberMemory();
  }
  overhead_counters(st);
  st.SetLabel(gla::detail::gemm_backend_name());
}

void run_overhead_eigen(benchmark::State& st) {
  Tiny t;
  for (auto _ : st) {
    gla::detail::gemm_eigen(Trans::N, Trans::N, kTiny, kTiny, kTiny, t.A, kTiny, t.B, kTiny, false, t.C, kTiny);
    benchmark::DoNotOptimize(t.C);
    benchmark::ClobberMemory();
  }
  overhead_counters(st);
}

#if GLA_GEMM_WITH_LIBXSMM
void run_overhead_kernel(benchmark::State& st) {
  Tiny t;
  libxsmm_init();
  const int flags = LIBXSMM_GEMM_FLAG_BETA_0, prefetch = LIBXSMM_GEMM_PREFETCH_NONE;
  const float alpha = 1.f, beta = 0.f;
  const libxsmm_blasint ld = kTiny;
  const libxsmm_smmfunction fn =
      libxsmm_smmdispatch(kTiny, kTiny, kTiny, &ld, &ld, &ld, &alpha, &beta, &flags, &prefetch);
  if (!fn) {
    st.SkipWithError("no kernel");
    return;
  }
  for (auto _ : st) {
    fn(t.B, t.A, t.C);
    benchmark::DoNotOptimize(t.C);
    benchmark::ClobberMemory();
  }
  overhead_counters(st);
}

void run_overhead_dispatch_each_call(benchmark::State& st) {
  Tiny t;
  libxsmm_init();
  const int flags = LIBXSMM_GEMM_FLAG_BETA_0, prefetch = LIBXSMM_GEMM_PREFETCH_NONE;
  const float alpha = 1.f, beta = 0.f;
  const libxsmm_blasint ld = kTiny;
  for (auto _ : st) {
    const libxsmm_smmfunction fn =
        libxsmm_smmdispatch(kTiny, kTiny, kTiny, &ld, &ld, &ld, &alpha, &beta, &flags, &prefetch);
    fn(t.B, t.A, t.C);
    benchmark::DoNotOptimize(t.C);
    benchmark::ClobberMemory();
  }
  overhead_counters(st);
}
#endif

}  // namespace

int main(int argc, char** argv) {
  using gla::bench::configure;
#if defined(GLA_HAVE_ONEDNN)
  benchmark::RegisterBenchmark("yardstick/onednn_sgemm_1024", run_onednn)
      ->Arg(1)
      ->Arg(2)
      ->ArgName("threads")
      ->Apply(configure);
#endif
  for (const Index ld : {Index(0), Index(2048)})
    for (const Product& p : products())
      for (const Backend be : {Backend::EigenF32, Backend::XsmmF32, Backend::XsmmBf16, Backend::XsmmBf16Vnni,
                               Backend::EigenBf16, Backend::AmxBf16}) {
        const bool xsmm = be == Backend::XsmmF32 || be == Backend::XsmmBf16 || be == Backend::XsmmBf16Vnni;
        if (xsmm && !gla::detail::gemm_uses_libxsmm()) continue;  // built without libxsmm
        const std::string name = std::string("small/") + p.name + "_" + std::to_string(p.m) + "x" +
                                 std::to_string(p.n) + "x" + std::to_string(p.k) + "/" + (ld ? "strided" : "contig") +
                                 "/" + backend_name(be);
        benchmark::RegisterBenchmark(name.c_str(), [p, ld, be](benchmark::State& st) { run_small(st, p, ld, be); })
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
      }
  for (const Index n : {256, 512, 768}) {
    benchmark::RegisterBenchmark(("square/" + std::to_string(n) + "/eigen_f32").c_str(),
                                 [n](benchmark::State& st) { run_square_eigen(st, n); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
#if GLA_GEMM_WITH_LIBXSMM
    benchmark::RegisterBenchmark(("square/" + std::to_string(n) + "/libxsmm_kernel").c_str(),
                                 [n](benchmark::State& st) { run_square_libxsmm(st, n); })
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
#endif
  }
#if GLA_GEMM_WITH_LIBXSMM
  benchmark::RegisterBenchmark("kernel_only/QS_64x128x128/libxsmm_f32",
                               [](benchmark::State& st) { run_kernel_only(st, false); })
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("kernel_only/QS_64x128x128/libxsmm_bf16_vnni",
                               [](benchmark::State& st) { run_kernel_only(st, true); })
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
#endif
#if defined(__AVX512F__) && defined(__AVX512BF16__)
  benchmark::RegisterBenchmark("isa/vfmadd231ps_zmm", run_isa_peak<false>)
      ->Unit(benchmark::kMicrosecond)
      ->UseRealTime();
  benchmark::RegisterBenchmark("isa/vdpbf16ps_zmm", run_isa_peak<true>)->Unit(benchmark::kMicrosecond)->UseRealTime();
#endif
  benchmark::RegisterBenchmark("overhead/gemm_4x4x4", run_overhead_gemm)->Unit(benchmark::kNanosecond);
#if GLA_GEMM_WITH_LIBXSMM
  benchmark::RegisterBenchmark("overhead/libxsmm_kernel_direct_4x4x4", run_overhead_kernel)
      ->Unit(benchmark::kNanosecond);
  benchmark::RegisterBenchmark("overhead/libxsmm_dispatch_every_call_4x4x4", run_overhead_dispatch_each_call)
      ->Unit(benchmark::kNanosecond);
#endif
  benchmark::RegisterBenchmark("overhead/gemm_eigen_4x4x4", run_overhead_eigen)->Unit(benchmark::kNanosecond);
  benchmark::AddCustomContext("gla_gemm_backend", gla::detail::gemm_backend_name());
  return gla::bench::run_main(argc, argv);
}
