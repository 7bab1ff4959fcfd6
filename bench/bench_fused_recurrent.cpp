// bench/bench_fused_recurrent.cpp: fused_recurrent_gla (the token-by-token recurrence with a K-axis gate) at the
// named shapes.

#include "bench_common.hpp"

#include <gla/fused_recurrent.hpp>

namespace {

using namespace gla;
using gla::bench::Shape;

void run_fused_recurrent(benchmark::State& st, const Shape& s) {
  const bench::Inputs& in = bench::inputs(s);
  const GLAOptions opts = bench::options(s, in);
  bench::Outputs out(s);
  const bench::ProcessMeter meter;
  for (auto _ : st) {
    fused_recurrent_gla_into(view(in.q), view(in.k), view(in.v), view(in.g), std::nullopt, opts,
                                    mut_view(out.o), out.ht_view());
    benchmark::DoNotOptimize(out.o.data());
    benchmark::ClobberMemory();
  }
  meter.report(st);
  bench::set_counters(st, s, bench::recurrent_flops(s));
}

}  // namespace

int main(int argc, char** argv) {
  bench::register_shapes("fused_recurrent_gla", bench::forward_shapes(), run_fused_recurrent);
  return bench::run_main(argc, argv);
}
