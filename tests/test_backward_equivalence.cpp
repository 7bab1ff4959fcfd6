// The backward of every operator agrees with the others: chunk_gla_backward = fused_chunk_gla_backward =
// fused_recurrent_gla_backward (gk only) on every gradient, fixed-length and varlen, with h0 and dht.

#include <gla/chunk_backward.hpp>
#include <gla/fused_recurrent.hpp>

#include "support/catch.hpp"
#include "support/test_utils.hpp"

using namespace gla;
using gla::test::compare;

TEST_CASE("backward equivalence: chunk = fused_chunk = fused_recurrent on every gradient", "[backward][equivalence]") {
  const std::vector<std::int64_t> cu = GENERATE(std::vector<std::int64_t>{}, std::vector<std::int64_t>{0, 1, 64, 64, 200});
  const double norm = GENERATE(1.0, 16.0, -1.0);  // -1: strong decay
  const Index B = cu.empty() ? 2 : 1, T = cu.empty() ? 150 : cu.back(), H = 2, K = 60, V = 36;
  const Index N = cu.empty() ? B : static_cast<Index>(cu.size()) - 1;
  auto rng = gla::test::rng(static_cast<std::uint64_t>(31 + cu.size() + norm * 3));
  Tensor<float, 4> q(B, T, H, K), k(B, T, H, K), v(B, T, H, V), g(B, T, H, K), do_(B, T, H, V), h0(N, H, K, V),
      dht(N, H, K, V);
  gla::test::fill_uniform(q, rng);
  gla::test::fill_uniform(k, rng);
  gla::test::fill_normal(v, rng);
  if (norm > 0)
    gla::test::fill_gate(g, rng, norm);
  else
    gla::test::fill_strong_gate(g, rng);
  gla::test::fill_normal(do_, rng);
  gla::test::fill_normal(h0, rng);
  gla::test::fill_normal(dht, rng);
  GLAOptions o;
  o.cu_seqlens = cu;
  o.initial_state = h0;
  o.output_final_state = true;

  const auto chunk = chunk_gla_backward(view(q), view(k), view(v), view(g), view(do_), view(dht), o);
  const auto fused = fused_chunk_gla_backward(view(q), view(k), view(v), view(g), view(do_), view(dht), o);
  const auto rec = fused_recurrent_gla_backward(view(q), view(k), view(v), view(g), std::nullopt, view(do_),
                                                       view(dht), o);
  REQUIRE(rec.dgk);
  REQUIRE(chunk.dh0);
  REQUIRE(rec.dh0);
  const std::vector<std::pair<const char*, std::pair<gla::test::Diff, gla::test::Diff>>> diffs{
      {"dq", {compare(chunk.dq, rec.dq), compare(fused.dq, rec.dq)}},
      {"dk", {compare(chunk.dk, rec.dk), compare(fused.dk, rec.dk)}},
      {"dv", {compare(chunk.dv, rec.dv), compare(fused.dv, rec.dv)}},
      {"dg", {compare(chunk.dg, *rec.dgk), compare(fused.dg, *rec.dgk)}},
      {"dh0", {compare(*chunk.dh0, *rec.dh0), compare(*fused.dh0, *rec.dh0)}}};
  for (const auto& [name, d] : diffs) {
    INFO(name << " cu.size=" << cu.size() << " norm=" << norm << "\n chunk vs recurrent: " << d.first.str()
              << "\n fused_chunk vs recurrent: " << d.second.str());
    // Both sides are within ~1e-6 of the float64 truth; their difference is held to the same 1e-5 bar.
    CHECK(gla::test::ok(d.first, 1e-5));
    CHECK(gla::test::ok(d.second, 1e-5));
  }
}
