// The full forward sweep (label "slow"): every operator, T ∈ {1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 1000},
// every K ≠ V pair from {16, 60, 64, 100, 128}, H ∈ {1, 3}, B ∈ {1, 2}, gates logsigmoid(U)/n for
// n ∈ {0.1, 1, 16} and strong decay, against the float64 recurrence at 1e-5 with no NaN/Inf.

#include <gla/naive.hpp>
#include <gla/router.hpp>

#include "support/catch.hpp"
#include "support/test_utils.hpp"

using namespace gla;

TEST_CASE("slow sweep: every forward operator against the float64 reference", "[slow][forward]") {
  const Index T = GENERATE(1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 1000);
  const Index K = GENERATE(16, 60, 64, 100, 128);
  const Index V = GENERATE(16, 60, 64, 100, 128);
  if (K == V) return;
  const Index H = GENERATE(1, 3);
  const Index B = GENERATE(1, 2);
  const double norm = GENERATE(0.1, 1.0, 16.0, -1.0);  // -1: strong decay, per-step log gate near −5
  auto rng = gla::test::rng(static_cast<std::uint64_t>(T * 1000003 + K * 1009 + V * 101 + H * 11 + B));
  Tensor<float, 4> q(B, T, H, K), k(B, T, H, K), v(B, T, H, V), g(B, T, H, K), h0(B, H, K, V);
  gla::test::fill_uniform(q, rng);
  gla::test::fill_uniform(k, rng);
  gla::test::fill_normal(v, rng);
  gla::test::fill_normal(h0, rng);
  if (norm > 0)
    gla::test::fill_gate(g, rng, norm);
  else
    gla::test::fill_strong_gate(g, rng);
  GLAOptions o;
  o.output_final_state = true;
  o.initial_state = h0;
  const Tensor<double, 4> qd = q.cast<double>(), kd = k.cast<double>(), vd = v.cast<double>(), gd = g.cast<double>();
  const auto ref = naive_recurrent_gla<double>(view(qd), view(kd), view(vd), view(gd), std::nullopt, o);
  for (Mode mode : {Mode::Chunk, Mode::FusedChunk, Mode::FusedRecurrent}) {
    const auto r = gla_forward(view(q), view(k), view(v), view(g), std::nullopt, o, mode);
    const auto d_o = gla::test::compare(r.o, ref.o);
    const auto d_s = gla::test::compare(*r.final_state, ref.final_state);
    INFO(to_string(mode) << " B" << B << " T" << T << " H" << H << " K" << K << " V" << V << " norm " << norm
                         << "\n o: " << d_o.str() << "\n final_state: " << d_s.str());
    CHECK(gla::test::ok(d_o, 1e-5));
    CHECK(gla::test::ok(d_s, 1e-5));
  }
}
