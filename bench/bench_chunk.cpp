// bench/bench_chunk.cpp: the chunked GLA forwards (chunk_gla, fused_chunk_gla) at the named shapes, next to
// the Eigen GEMM skeleton of a chunk at the same shapes, so that their ratio comes from one process.

#include "bench_common.hpp"

#include <gla/chunk.hpp>
#include <gla/fused_chunk.hpp>

namespace {

using namespace gla;
using gla::bench::Shape;

template <class Kernel>
void run_chunked(benchmark::State& st, const Shape& s, Kernel kernel) {
  const bench::Inputs& in = bench::inputs(s);
  const GLAOptions opts = bench::options(s, in);
  bench::Outputs out(s);
  for (auto _ : st) {
    kernel(view(in.q), view(in.k), view(in.v), view(in.g), opts, mut_view(out.o), out.ht_view());
    benchmark::DoNotOptimize(out.o.data());
    benchmark::ClobberMemory();
  }
  bench::set_counters(st, s, bench::chunk_flops(s));
}

}  // namespace

int main(int argc, char** argv) {
  bench::register_shapes("chunk_gla", bench::forward_shapes(), [](benchmark::State& st, const Shape& s) {
    run_chunked(st, s, chunk_gla_into<float>);
  });
  bench::register_shapes("fused_chunk_gla", bench::forward_shapes(), [](benchmark::State& st, const Shape& s) {
    run_chunked(st, s, fused_chunk_gla_into<float>);
  });
  // The ceiling the two are quoted against (the decode shape has a single token: no GEMM to compare with).
  bench::register_chunk_gemms({bench::ChunkProduct::Mix}, {bench::kPrefill, bench::kLong});
  return bench::run_main(argc, argv);
}
