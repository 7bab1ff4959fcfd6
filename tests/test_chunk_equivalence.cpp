// chunk_gla / fused_chunk_gla: equivalences (varlen = per-sequence calls; one call = two calls carrying the
// final state; state_v_first = transpose; thread-count independence) and every gla::Error path, with
// outputs untouched on error.

#include <gla/chunk.hpp>
#include <gla/fused_chunk.hpp>

#include "support/catch.hpp"
#include "support/test_utils.hpp"

using namespace gla;
using gla::test::compare;

namespace {

struct Data {
  Tensor<float, 4> q, k, v, g, h0;
};

Data make(Index B, Index T, Index H, Index K, Index V, Index N, std::uint64_t seed) {
  auto rng = gla::test::rng(seed);
  Data d{Tensor<float, 4>(B, T, H, K), Tensor<float, 4>(B, T, H, K), Tensor<float, 4>(B, T, H, V),
         Tensor<float, 4>(B, T, H, K), Tensor<float, 4>(N, H, K, V)};
  gla::test::fill_uniform(d.q, rng);
  gla::test::fill_uniform(d.k, rng);
  gla::test::fill_normal(d.v, rng);
  gla::test::fill_gate(d.g, rng, 1.0);
  gla::test::fill_normal(d.h0, rng);
  return d;
}

/// Tokens [t0, t0+len) of a [1,T,H,D] tensor.
Tensor<float, 4> slice_t(const Tensor<float, 4>& x, Index t0, Index len) {
  return x.slice(std::array<Index, 4>{0, t0, 0, 0}, std::array<Index, 4>{1, len, x.dimension(2), x.dimension(3)});
}

GLAResult<float> run(bool fused, const Data& d, const GLAOptions& o) {
  return fused ? fused_chunk_gla(view(d.q), view(d.k), view(d.v), view(d.g), o)
               : chunk_gla(view(d.q), view(d.k), view(d.v), view(d.g), o);
}

}  // namespace

TEST_CASE("chunk equivalence: varlen equals per-sequence calls", "[chunk][varlen]") {
  const bool fused = GENERATE(false, true);
  const std::vector<std::int64_t> cu{0, 1, 1, 65, 200, 330};
  const Index N = static_cast<Index>(cu.size()) - 1;
  const Data d = make(1, cu.back(), 2, 20, 12, N, 11);
  GLAOptions o;
  o.cu_seqlens = cu;
  o.initial_state = d.h0;
  o.output_final_state = true;
  const auto packed = run(fused, d, o);
  for (Index n = 0; n < N; ++n) {
    const Index t0 = cu[static_cast<std::size_t>(n)], len = cu[static_cast<std::size_t>(n) + 1] - t0;
    Data one{slice_t(d.q, t0, len), slice_t(d.k, t0, len), slice_t(d.v, t0, len), slice_t(d.g, t0, len),
             d.h0.slice(std::array<Index, 4>{n, 0, 0, 0}, std::array<Index, 4>{1, 2, 20, 12})};
    GLAOptions o1;
    o1.initial_state = one.h0;
    o1.output_final_state = true;
    const auto r = run(fused, one, o1);
    const Tensor<float, 4> part = slice_t(packed.o, t0, len);
    const Tensor<float, 4> st = packed.final_state->slice(std::array<Index, 4>{n, 0, 0, 0}, std::array<Index, 4>{1, 2, 20, 12});
    INFO("sequence " << n << " len " << len);
    CHECK(gla::test::ok(compare(part, r.o), 1e-6));
    CHECK(gla::test::ok(compare(st, *r.final_state), 1e-6));
  }
}

TEST_CASE("chunk equivalence: one call equals two calls carrying the final state", "[chunk]") {
  const bool fused = GENERATE(false, true);
  const Index split = GENERATE(1, 64, 100);
  const Data d = make(1, 200, 3, 16, 24, 1, 12);
  GLAOptions o;
  o.output_final_state = true;
  o.initial_state = d.h0;
  const auto whole = run(fused, d, o);
  Data a{slice_t(d.q, 0, split), slice_t(d.k, 0, split), slice_t(d.v, 0, split), slice_t(d.g, 0, split), d.h0};
  Data b{slice_t(d.q, split, 200 - split), slice_t(d.k, split, 200 - split), slice_t(d.v, split, 200 - split),
         slice_t(d.g, split, 200 - split), d.h0};
  const auto ra = run(fused, a, o);
  GLAOptions ob = o;
  ob.initial_state = *ra.final_state;
  const auto rb = run(fused, b, ob);
  CHECK(gla::test::ok(compare(ra.o, slice_t(whole.o, 0, split)), 1e-6));
  CHECK(gla::test::ok(compare(rb.o, slice_t(whole.o, split, 200 - split)), 1e-6));
  CHECK(gla::test::ok(compare(*rb.final_state, *whole.final_state), 1e-6));
}

TEST_CASE("chunk equivalence: state_v_first is the transpose", "[chunk]") {
  const bool fused = GENERATE(false, true);
  const Data d = make(2, 90, 2, 12, 20, 2, 13);
  GLAOptions o;
  o.output_final_state = true;
  o.initial_state = d.h0;
  const auto kfirst = run(fused, d, o);
  const Tensor<float, 4> h0t = d.h0.shuffle(std::array<int, 4>{0, 1, 3, 2});
  GLAOptions ov = o;
  ov.state_v_first = true;
  ov.initial_state = h0t;
  const auto vfirst = run(fused, d, ov);
  CHECK(vfirst.final_state->dimension(2) == 20);
  const Tensor<float, 4> back = vfirst.final_state->shuffle(std::array<int, 4>{0, 1, 3, 2});
  CHECK(compare(vfirst.o, kfirst.o).max_abs == 0.0);
  CHECK(compare(back, *kfirst.final_state).max_abs == 0.0);
}

TEST_CASE("chunk equivalence: results do not depend on the thread count", "[chunk][threads]") {
  const bool fused = GENERATE(false, true);
  const Data d = make(2, 300, 3, 32, 16, 2, 14);
  GLAOptions o;
  o.output_final_state = true;
  gla::test::ThreadCountGuard guard;
  gla::set_num_threads(1);
  const auto one = run(fused, d, o);
  gla::set_num_threads(2);
  const auto two = run(fused, d, o);
  CHECK(compare(one.o, two.o).max_abs == 0.0);
  CHECK(compare(*one.final_state, *two.final_state).max_abs == 0.0);
}

TEST_CASE("chunk errors: every bad argument raises gla::Error and leaves outputs untouched", "[chunk][errors]") {
  const bool fused = GENERATE(false, true);
  const std::string fn = fused ? "fused_chunk_gla" : "chunk_gla";
  const Data d = make(2, 20, 2, 8, 4, 2, 15);
  auto call = [&](const Tensor<float, 4>& q, const Tensor<float, 4>& k, const Tensor<float, 4>& v,
                  const Tensor<float, 4>& g, const GLAOptions& o) {
    return fused ? fused_chunk_gla(view(q), view(k), view(v), view(g), o)
                 : chunk_gla(view(q), view(k), view(v), view(g), o);
  };
  const GLAOptions none;
  Tensor<float, 4> k_bad(2, 20, 2, 9), v_bad(2, 19, 2, 4), g_bad(2, 20, 1, 8), v_zero(2, 20, 2, 0), q_zero(2, 20, 2, 0);
  CHECK_GLA_ERROR(fn + ": k is [2,20,2,9], expected [B=2,T=20,H=2,K=8]", call(d.q, k_bad, d.v, d.g, none));
  CHECK_GLA_ERROR(fn + ": v is [2,19,2,4], expected [B=2,T=20,H=2,V]", call(d.q, d.k, v_bad, d.g, none));
  CHECK_GLA_ERROR(fn + ": g is [2,20,1,8], expected [B=2,T=20,H=2,K=8]", call(d.q, d.k, d.v, g_bad, none));
  CHECK_GLA_ERROR(fn + ": v is [2,20,2,0]", call(d.q, d.k, v_zero, d.g, none));
  CHECK_GLA_ERROR(fn + ": q is [2,20,2,0], expected [B,T,H,K] with B, H, K > 0", call(q_zero, q_zero, d.v, q_zero, none));

  GLAOptions o;
  o.chunk_size = 48;
  CHECK_GLA_ERROR(fn + ": chunk_size is 48, expected a power of two in [16, 256]", call(d.q, d.k, d.v, d.g, o));
  o.chunk_size = 8;
  CHECK_GLA_ERROR("chunk_size is 8", call(d.q, d.k, d.v, d.g, o));
  o = GLAOptions{};
  o.reverse = true;
  CHECK_GLA_ERROR(fn + ": reverse", call(d.q, d.k, d.v, d.g, o));
  o = GLAOptions{};
  o.gamma = {0.9f};
  CHECK_GLA_ERROR(fn + ": gamma", call(d.q, d.k, d.v, d.g, o));
  o = GLAOptions{};
  o.scale = std::numeric_limits<float>::infinity();
  CHECK_GLA_ERROR(fn + ": scale is inf", call(d.q, d.k, d.v, d.g, o));
  o = GLAOptions{};
  o.cu_seqlens = {0, 20, 40};
  CHECK_GLA_ERROR(fn + ": the batch size is 2, expected 1 when cu_seqlens is given", call(d.q, d.k, d.v, d.g, o));

  // Initial state: wrong count, wrong layout.
  Tensor<float, 4> h0_count(3, 2, 8, 4), h0_vfirst(2, 2, 4, 8);
  o = GLAOptions{};
  o.initial_state = h0_count;
  CHECK_GLA_ERROR(fn + ": initial_state has 3 states, expected N = 2 (the batch size)", call(d.q, d.k, d.v, d.g, o));
  o.initial_state = h0_vfirst;
  CHECK_GLA_ERROR(fn + ": initial_state is [2,2,4,8], expected [N=2,H=2,K=8,V=4]", call(d.q, d.k, d.v, d.g, o));
  o.state_v_first = true;
  o.initial_state = d.h0;
  CHECK_GLA_ERROR(fn + ": initial_state (state_v_first) is [2,2,8,4], expected [N=2,H=2,V=4,K=8]",
                  call(d.q, d.k, d.v, d.g, o));

  // Varlen: cu_seqlens problems with B = 1.
  const Data one = make(1, 20, 2, 8, 4, 2, 16);
  for (const auto& [cu, what] : std::vector<std::pair<std::vector<std::int64_t>, std::string>>{
           {{0, 25}, "cu_seqlens[N] is 25, expected T = 20"},
           {{0, 12, 8, 20}, "cu_seqlens is not non-decreasing"},
           {{3, 20}, "cu_seqlens[0] is 3, expected 0"},
           {{20}, "cu_seqlens has 1 entries"}}) {
    GLAOptions ov;
    ov.cu_seqlens = cu;
    CHECK_GLA_ERROR(fn + ": " + what, call(one.q, one.k, one.v, one.g, ov));
  }
  GLAOptions ov;
  ov.cu_seqlens = {0, 5, 20};
  Tensor<float, 4> h0_three(3, 2, 8, 4);
  ov.initial_state = h0_three;
  CHECK_GLA_ERROR("initial_state has 3 states, expected N = 2 (the number of sequences in cu_seqlens)",
                  call(one.q, one.k, one.v, one.g, ov));

  // The core API: output views of the wrong shape, and nothing written on error.
  Tensor<float, 4> o_bad(2, 20, 2, 5), o_ok(2, 20, 2, 4), fs_bad(2, 2, 4, 8);
  gla::test::fill_nan(o_ok);
  auto into = [&](Tensor<float, 4>& out, std::optional<gla::View<float, 4>> fs, const GLAOptions& oo) {
    if (fused)
      fused_chunk_gla_into(view(d.q), view(d.k), view(d.v), view(d.g), oo, mut_view(out), fs);
    else
      chunk_gla_into(view(d.q), view(d.k), view(d.v), view(d.g), oo, mut_view(out), fs);
  };
  CHECK_GLA_ERROR(fn + ": o is [2,20,2,5], expected [B=2,T=20,H=2,V=4]", into(o_bad, std::nullopt, none));
  GLAOptions want_state;
  want_state.output_final_state = true;
  CHECK_GLA_ERROR(fn + ": final_state is [2,2,4,8], expected [N=2,H=2,K=8,V=4]",
                  into(o_ok, mut_view(fs_bad), want_state));
  GLAOptions bad_chunk;
  bad_chunk.chunk_size = 3;
  CHECK_GLA_ERROR("chunk_size is 3", into(o_ok, std::nullopt, bad_chunk));
  for (Index i = 0; i < o_ok.size(); ++i) REQUIRE(std::isnan(o_ok.data()[i]));

  if (fused) {
    GLAOptions om;
    om.max_seqlen = 10;
    CHECK_GLA_ERROR("fused_chunk_gla: sequence 0 has 20 tokens, expected at most max_seqlen = 10",
                    call(d.q, d.k, d.v, d.g, om));
    om.max_seqlen = -1;
    CHECK_GLA_ERROR("max_seqlen is -1", call(d.q, d.k, d.v, d.g, om));
  }
}
