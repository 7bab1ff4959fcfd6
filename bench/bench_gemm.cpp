// bench/bench_gemm.cpp: Eigen's own float GEMM, large (1024³) and at the chunk shapes through strided views
// like the kernels use: the ceiling the chunked kernels are quoted against.

#include "bench_common.hpp"

namespace {

using namespace gla;

void run_gemm_square(benchmark::State& st) {
  const Index n = st.range(0);
  using Mat = detail::RowMat<float>;
  const Mat a = Mat::Random(n, n), b = Mat::Random(n, n);
  Mat c(n, n);
  // Outside a parallel region Eigen threads its GEMM itself (OpenMP, omp_get_max_threads() threads).
  const bench::ProcessMeter meter;
  for (auto _ : st) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  meter.report(st);
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["threads"] = benchmark::Counter(bench::max_threads());
  st.SetLabel(std::to_string(n) + "^3");
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::RegisterBenchmark("gemm_square", run_gemm_square)->Arg(1024)->Apply(bench::configure);
  using P = bench::ChunkProduct;
  bench::register_chunk_gemms({P::QK, P::AV, P::QS, P::KV, P::Mix}, {bench::kPrefill, bench::kLong});
  return bench::run_main(argc, argv);
}
