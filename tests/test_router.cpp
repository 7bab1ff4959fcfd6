// The mode router: parse_mode/select_gla_mode, gla_forward in every mode against the float64 reference,
// chunk = fused_chunk = fused_recurrent, a left-padded masked batch = per-row calls with zeros at padding,
// and the router's error paths.

#include <gla/naive.hpp>
#include <gla/router.hpp>

#include "support/catch.hpp"
#include "support/test_utils.hpp"

using namespace gla;
using gla::test::compare;

namespace {
struct Data {
  Tensor<float, 4> q, k, v, g, gv;
};
Data make(Index B, Index T, Index H, Index K, Index V, std::uint64_t seed) {
  auto rng = gla::test::rng(seed);
  Data d{Tensor<float, 4>(B, T, H, K), Tensor<float, 4>(B, T, H, K), Tensor<float, 4>(B, T, H, V),
         Tensor<float, 4>(B, T, H, K), Tensor<float, 4>(B, T, H, V)};
  gla::test::fill_uniform(d.q, rng);
  gla::test::fill_uniform(d.k, rng);
  gla::test::fill_normal(d.v, rng);
  gla::test::fill_gate(d.g, rng, 1.0);
  gla::test::fill_gate(d.gv, rng, 4.0);
  return d;
}
}  // namespace

TEST_CASE("router: parse_mode and select_gla_mode", "[router]") {
  CHECK(parse_mode("auto") == Mode::Auto);
  CHECK(parse_mode("chunk") == Mode::Chunk);
  CHECK(parse_mode("fused_chunk") == Mode::FusedChunk);
  CHECK(parse_mode("fused_recurrent") == Mode::FusedRecurrent);
  CHECK(to_string(Mode::FusedChunk) == "fused_chunk");
  CHECK_GLA_ERROR("parse_mode: mode is 'recurrent', expected one of", parse_mode("recurrent"));
  CHECK(select_gla_mode(Mode::Auto, 64) == Mode::FusedRecurrent);
  CHECK(select_gla_mode(Mode::Auto, 65) == Mode::FusedChunk);
  CHECK(select_gla_mode(Mode::Auto, 100, 128) == Mode::FusedRecurrent);
  CHECK(select_gla_mode(Mode::FusedChunk, 1) == Mode::FusedChunk);
  CHECK(select_gla_mode(Mode::Chunk, 1) == Mode::Chunk);
  CHECK_GLA_ERROR("select_gla_mode: seq_len is -1", select_gla_mode(Mode::Auto, -1));
}

TEST_CASE("router: every mode equals the float64 reference (with and without gk)", "[router]") {
  const Mode mode = GENERATE(Mode::Auto, Mode::Chunk, Mode::FusedChunk, Mode::FusedRecurrent);
  const Index T = GENERATE(40, 130);
  const bool with_gk = GENERATE(true, false);
  const Data d = make(2, T, 2, 24, 16, 21);
  GLAOptions o;
  o.output_final_state = true;
  std::optional<ConstTensorMap<float, 4>> gk;
  if (with_gk) gk.emplace(view(d.g));
  const auto r = gla_forward(view(d.q), view(d.k), view(d.v), gk, std::nullopt, o, mode);
  const Tensor<double, 4> qd = d.q.cast<double>(), kd = d.k.cast<double>(), vd = d.v.cast<double>(),
                          gd = d.g.cast<double>();
  std::optional<ConstTensorMap<double, 4>> gkd;
  if (with_gk) gkd.emplace(view(gd));
  const auto ref = naive_recurrent_gla<double>(view(qd), view(kd), view(vd), gkd, std::nullopt, o);
  INFO("mode " << to_string(mode) << " T " << T << " gk " << with_gk);
  CHECK(gla::test::ok(compare(r.o, ref.o), 1e-5));
  CHECK(gla::test::ok(compare(*r.final_state, ref.final_state), 1e-5));
}

TEST_CASE("router: a left-padded masked batch equals per-row calls, with zeros at padding", "[router][mask]") {
  const Mode mode = GENERATE(Mode::Auto, Mode::Chunk, Mode::FusedChunk, Mode::FusedRecurrent);
  const Index B = 3, S = 100, H = 2, K = 12, V = 20;
  const Data d = make(B, S, H, K, V, 22);
  const std::array<Index, 3> pads{0, 37, 100};  // row 2 is all padding (a zero-length sequence)
  Tensor<std::int64_t, 2> mask(B, S);
  for (Index b = 0; b < B; ++b)
    for (Index s = 0; s < S; ++s) mask(b, s) = s >= pads[static_cast<std::size_t>(b)] ? 1 : 0;
  Tensor<float, 4> h0(B, H, K, V);
  auto rng = gla::test::rng(23);
  gla::test::fill_normal(h0, rng);
  GLAOptions o;
  o.output_final_state = true;
  o.initial_state = h0;
  const auto r = gla_forward(view(d.q), view(d.k), view(d.v), view(d.g), std::nullopt, o, mode, view(mask));
  for (Index b = 0; b < B; ++b) {
    const Index p = pads[static_cast<std::size_t>(b)], len = S - p;
    for (Index s = 0; s < p; ++s)
      for (Index h = 0; h < H; ++h)
        for (Index c = 0; c < V; ++c) REQUIRE(r.o(b, s, h, c) == 0.0f);
    const Tensor<float, 4> st = r.final_state->slice(std::array<Index, 4>{b, 0, 0, 0}, std::array<Index, 4>{1, H, K, V});
    const Tensor<float, 4> h0b = h0.slice(std::array<Index, 4>{b, 0, 0, 0}, std::array<Index, 4>{1, H, K, V});
    if (len == 0) {  // the state passes through unchanged
      CHECK(compare(st, h0b).max_abs == 0.0);
      continue;
    }
    auto row = [&](const Tensor<float, 4>& x) {
      return Tensor<float, 4>(x.slice(std::array<Index, 4>{b, p, 0, 0}, std::array<Index, 4>{1, len, H, x.dimension(3)}));
    };
    GLAOptions ob;
    ob.output_final_state = true;
    ob.initial_state = h0b;
    const auto one = gla_forward(view(row(d.q)), view(row(d.k)), view(row(d.v)), view(row(d.g)), std::nullopt, ob, mode);
    const Tensor<float, 4> got = r.o.slice(std::array<Index, 4>{b, p, 0, 0}, std::array<Index, 4>{1, len, H, V});
    INFO("row " << b << " mode " << to_string(mode));
    CHECK(gla::test::ok(compare(got, one.o), 1e-5));
    CHECK(gla::test::ok(compare(st, *one.final_state), 1e-5));
  }
}

TEST_CASE("router: gv and reverse route to fused_recurrent under Auto and are rejected by chunk modes", "[router]") {
  const Data d = make(1, 80, 2, 8, 8, 24);
  GLAOptions o;
  const auto r = gla_forward(view(d.q), view(d.k), view(d.v), view(d.g), view(d.gv), o, Mode::Auto);
  const Tensor<double, 4> qd = d.q.cast<double>(), kd = d.k.cast<double>(), vd = d.v.cast<double>(),
                          gd = d.g.cast<double>(), gvd = d.gv.cast<double>();
  const auto ref = naive_recurrent_gla<double>(view(qd), view(kd), view(vd), view(gd), view(gvd), o);
  CHECK(gla::test::ok(compare(r.o, ref.o), 1e-5));
  CHECK_GLA_ERROR("gla_forward: mode is 'chunk', but gv, reverse",
                  gla_forward(view(d.q), view(d.k), view(d.v), view(d.g), view(d.gv), o, Mode::Chunk));
  GLAOptions rev;
  rev.reverse = true;
  CHECK_GLA_ERROR("gla_forward: mode is 'fused_chunk'",
                  gla_forward(view(d.q), view(d.k), view(d.v), view(d.g), std::nullopt, rev, Mode::FusedChunk));
  const auto rr = gla_forward(view(d.q), view(d.k), view(d.v), view(d.g), std::nullopt, rev, Mode::Auto);
  const auto rref = naive_recurrent_gla<double>(view(qd), view(kd), view(vd), view(gd), std::nullopt, rev);
  CHECK(gla::test::ok(compare(rr.o, rref.o), 1e-5));
}

TEST_CASE("router: bad masks and option combinations raise gla::Error", "[router][errors]") {
  const Data d = make(2, 30, 2, 8, 8, 25);
  Tensor<std::int64_t, 2> short_mask(2, 29), wrong_b(3, 30), ok_mask(2, 30), bad_values(2, 30);
  short_mask.setConstant(1);
  wrong_b.setConstant(1);
  ok_mask.setConstant(1);
  bad_values.setConstant(2);
  const GLAOptions none;
  CHECK_GLA_ERROR("gla_forward: attention_mask is [2,29], expected [B=2,S] with S >= T=30",
                  gla_forward(view(d.q), view(d.k), view(d.v), view(d.g), std::nullopt, none, Mode::Auto, view(short_mask)));
  CHECK_GLA_ERROR("gla_forward: attention_mask is [3,30]",
                  gla_forward(view(d.q), view(d.k), view(d.v), view(d.g), std::nullopt, none, Mode::Auto, view(wrong_b)));
  CHECK_GLA_ERROR("expected 0 or 1",
                  gla_forward(view(d.q), view(d.k), view(d.v), view(d.g), std::nullopt, none, Mode::Auto, view(bad_values)));
  const Data one = make(1, 30, 2, 8, 8, 26);
  GLAOptions cu;
  cu.cu_seqlens = {0, 10, 30};
  Tensor<std::int64_t, 2> m1(1, 30);
  m1.setConstant(1);
  CHECK_GLA_ERROR("gla_forward: attention_mask and cu_seqlens were both given",
                  gla_forward(view(one.q), view(one.k), view(one.v), view(one.g), std::nullopt, cu, Mode::Auto, view(m1)));
  Tensor<float, 4> g_bad(2, 30, 2, 7);
  CHECK_GLA_ERROR("gla_forward: gk is [2,30,2,7], expected [B=2,T=30,H=2,K=8]",
                  gla_forward(view(d.q), view(d.k), view(d.v), view(g_bad), std::nullopt, none, Mode::Auto));
}
