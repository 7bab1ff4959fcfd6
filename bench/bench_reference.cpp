// bench/bench_reference.cpp: the scalar reference naive_recurrent_gla (float64 and float32 accumulation) and
// chunk_gla at one small shape, for the speed-up of the fast path over the reference tests compare against.

#include "bench_common.hpp"

#include <gla/chunk.hpp>
#include <gla/naive.hpp>

namespace {

using namespace gla;
using gla::bench::Shape;

template <class Acc>
void run_naive(benchmark::State& st, const Shape& s) {
  const bench::Inputs& in = bench::inputs(s);
  const GLAOptions opts = bench::options(s, in);
  const bench::ProcessMeter meter;
  for (auto _ : st) {
    // The reference has no `_into` form; its allocation is negligible next to its scalar loops.
    NaiveResult<Acc> r = naive_recurrent_gla<Acc>(view(in.q), view(in.k), view(in.v), view(in.g),
                                                         std::nullopt, opts);
    benchmark::DoNotOptimize(r.o.data());
    benchmark::ClobberMemory();
  }
  meter.report(st);
  bench::set_counters(st, s, bench::recurrent_flops(s));
}

void run_chunk(benchmark::State& st, const Shape& s) {
  const bench::Inputs& in = bench::inputs(s);
  const GLAOptions opts = bench::options(s, in);
  bench::Outputs out(s);
  const bench::ProcessMeter meter;
  for (auto _ : st) {
    chunk_gla_into(view(in.q), view(in.k), view(in.v), view(in.g), opts, mut_view(out.o), out.ht_view());
    benchmark::DoNotOptimize(out.o.data());
    benchmark::ClobberMemory();
  }
  meter.report(st);
  bench::set_counters(st, s, bench::chunk_flops(s));
}

}  // namespace

int main(int argc, char** argv) {
  bench::register_shapes("naive_recurrent_gla<double>", {bench::kSmall}, run_naive<double>);
  bench::register_shapes("naive_recurrent_gla<float>", {bench::kSmall}, run_naive<float>);
  bench::register_shapes("chunk_gla", {bench::kSmall}, run_chunk);
  // At this size everything stays in cache: chunk_gla against the GEMM skeleton without memory effects.
  bench::register_chunk_gemms({bench::ChunkProduct::Mix}, {bench::kSmall});
  return bench::run_main(argc, argv);
}
