// bench/bench_backward.cpp: the GLA backwards (chunk_gla_backward, fused_chunk_gla_backward,
// fused_recurrent_gla_backward with a gk gate) at the forward's shapes, each next to its own forward in the same
// process, so that backward/forward time ratios come from one process. Decode shapes run the one-token backward
// of a step that started from h0 and whose final state receives an upstream gradient dht.

#include "bench_common.hpp"

#include <gla/chunk.hpp>
#include <gla/chunk_backward.hpp>
#include <gla/fused_chunk.hpp>
#include <gla/fused_recurrent.hpp>

namespace {

using namespace gla;
using gla::bench::Shape;

std::optional<ConstTensorMap<float, 4>> dht_view(const bench::Upstream& u) {
  std::optional<ConstTensorMap<float, 4>> m;
  if (u.dht) m.emplace(view(*u.dht));
  return m;
}

/// A forward, exactly as bench_chunk / bench_fused_recurrent time it (the sibling the backward is divided by).
template <class Kernel>
void run_forward(benchmark::State& st, const Shape& s, Kernel kernel, double flops) {
  const bench::Inputs& in = bench::inputs(s);
  const GLAOptions opts = bench::options(s, in);
  bench::Outputs out(s);
  const bench::ProcessMeter meter;
  for (auto _ : st) {
    kernel(in, opts, out);
    benchmark::DoNotOptimize(out.o.data());
    benchmark::ClobberMemory();
  }
  meter.report(st);
  bench::set_counters(st, s, flops);
}

/// A backward into preallocated gradients (dh0 for decode shapes, which have an initial state).
template <class Kernel>
void run_backward(benchmark::State& st, const Shape& s, Kernel kernel, double flops) {
  const bench::Inputs& in = bench::inputs(s);
  const bench::Upstream& up = bench::upstream(s);
  const GLAOptions opts = bench::options(s, in);
  bench::Grads grads(s);
  const bench::ProcessMeter meter;
  for (auto _ : st) {
    kernel(in, up, opts, grads);
    benchmark::DoNotOptimize(grads.dq.data());
    benchmark::DoNotOptimize(grads.dg.data());
    benchmark::ClobberMemory();
  }
  meter.report(st);
  bench::set_counters(st, s, flops, bench::backward_io_bytes(s));
}

template <class Into>
auto chunked_forward(Into into) {
  return [into](const bench::Inputs& in, const GLAOptions& opts, bench::Outputs& out) {
    into(view(in.q), view(in.k), view(in.v), view(in.g), opts, mut_view(out.o), out.ht_view());
  };
}

template <class Into>
auto chunked_backward(Into into) {
  return [into](const bench::Inputs& in, const bench::Upstream& up, const GLAOptions& opts, bench::Grads& g) {
    into(view(in.q), view(in.k), view(in.v), view(in.g), view(up.do_), dht_view(up), opts, mut_view(g.dq),
         mut_view(g.dk), mut_view(g.dv), mut_view(g.dg), g.dh0_view());
  };
}

void recurrent_forward(const bench::Inputs& in, const GLAOptions& opts, bench::Outputs& out) {
  fused_recurrent_gla_into(view(in.q), view(in.k), view(in.v), view(in.g), std::nullopt, opts, mut_view(out.o),
                                  out.ht_view());
}

void recurrent_backward(const bench::Inputs& in, const bench::Upstream& up, const GLAOptions& opts, bench::Grads& g) {
  std::optional<gla::View<float, 4>> dgk;
  dgk.emplace(mut_view(g.dg));
  fused_recurrent_gla_backward_into(view(in.q), view(in.k), view(in.v), view(in.g), std::nullopt, view(up.do_),
                                           dht_view(up), opts, mut_view(g.dq), mut_view(g.dk), mut_view(g.dv), dgk,
                                           std::nullopt, g.dh0_view());
}

}  // namespace

int main(int argc, char** argv) {
  const auto& shapes = bench::forward_shapes();
  bench::register_shapes("chunk_gla", shapes, [](benchmark::State& st, const Shape& s) {
    run_forward(st, s, chunked_forward(chunk_gla_into<ConstTensorMap<float, 4>>), bench::chunk_flops(s));
  });
  bench::register_shapes("chunk_gla_backward", shapes, [](benchmark::State& st, const Shape& s) {
    run_backward(st, s, chunked_backward(chunk_gla_backward_into<ConstTensorMap<float, 4>>), bench::chunk_backward_flops(s));
  });
  bench::register_shapes("fused_chunk_gla", shapes, [](benchmark::State& st, const Shape& s) {
    run_forward(st, s, chunked_forward(fused_chunk_gla_into<ConstTensorMap<float, 4>>), bench::chunk_flops(s));
  });
  bench::register_shapes("fused_chunk_gla_backward", shapes, [](benchmark::State& st, const Shape& s) {
    run_backward(st, s, chunked_backward(fused_chunk_gla_backward_into<ConstTensorMap<float, 4>>), bench::chunk_backward_flops(s));
  });
  bench::register_shapes("fused_recurrent_gla", shapes, [](benchmark::State& st, const Shape& s) {
    run_forward(st, s, recurrent_forward, bench::recurrent_flops(s));
  });
  bench::register_shapes("fused_recurrent_gla_backward", shapes, [](benchmark::State& st, const Shape& s) {
    run_backward(st, s, recurrent_backward, bench::recurrent_backward_flops(s));
  });
  return bench::run_main(argc, argv);
}
