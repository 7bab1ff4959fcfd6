// bench/bench_chunk.cpp: the chunked GLA forwards (chunk_gla, fused_chunk_gla, and chunk_gla's state pass
// chunk_fwd_h alone) next to the Eigen GEMM skeleton of a chunk at the same shapes, so that ratios come from one process.

#include "bench_common.hpp"

#include <gla/chunk.hpp>
#include <gla/chunk_h.hpp>
#include <gla/cumsum.hpp>
#include <gla/fused_chunk.hpp>

namespace {

using namespace gla;
using gla::bench::Shape;

template <class Kernel>
void run_chunked(benchmark::State& st, const Shape& s, Kernel kernel) {
  const bench::Inputs& in = bench::inputs(s);
  const GLAOptions opts = bench::options(s, in);
  bench::Outputs out(s);
  const bench::ProcessMeter meter;
  for (auto _ : st) {
    kernel(view(in.q), view(in.k), view(in.v), view(in.g), opts, mut_view(out.o), out.ht_view());
    benchmark::DoNotOptimize(out.o.data());
    benchmark::ClobberMemory();
  }
  meter.report(st);
  bench::set_counters(st, s, bench::chunk_flops(s));
}

/// chunk_fwd_h alone (chunk_gla's first phase: the state before every chunk) on a precomputed gate cumsum;
/// its FLOPs are the state updates only, 2·L·K·V per chunk and head.
void run_chunk_fwd_h(benchmark::State& st, const Shape& s) {
  const bench::Inputs& in = bench::inputs(s);
  const GLAOptions opts = bench::options(s, in);
  const Tensor<float, 4> gc = chunk_local_cumsum(view(in.g), opts.chunk_size);
  ChunkHGates gates;
  gates.gk.emplace(view(gc));
  const bench::ProcessMeter meter;
  for (auto _ : st) {
    ChunkHResult r = chunk_fwd_h(view(in.k), view(in.v), gates, opts);
    benchmark::DoNotOptimize(r.h.data());
    benchmark::ClobberMemory();
  }
  meter.report(st);
  bench::set_counters(st, s, 2.0 * static_cast<double>(s.B * s.T * s.H * s.K * s.V));
}

}  // namespace

int main(int argc, char** argv) {
  bench::register_shapes("chunk_gla", bench::forward_shapes(), [](benchmark::State& st, const Shape& s) {
    run_chunked(st, s, chunk_gla_into<ConstTensorMap<float, 4>>);
  });
  bench::register_shapes("fused_chunk_gla", bench::forward_shapes(), [](benchmark::State& st, const Shape& s) {
    run_chunked(st, s, fused_chunk_gla_into<ConstTensorMap<float, 4>>);
  });
  bench::register_shapes("chunk_fwd_h", {bench::kPrefill, bench::kLong}, run_chunk_fwd_h);
  // The ceiling the two are quoted against (the decode shape has a single token: no GEMM to compare with).
  bench::register_chunk_gemms({bench::ChunkProduct::Mix}, {bench::kPrefill, bench::kLong});
  return bench::run_main(argc, argv);
}
