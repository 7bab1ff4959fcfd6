// Regression tests of the public contract every operator shares: views with value semantics (the decode loop),
// the aliasing rule of the `*_into` forms, the output contract (an optional output is given iff its flag is),
// bounded chunk sizes, exceptions carried out of the parallel engine, bit-identical results for any thread count,
// workers that find no free core leaving the job to the caller, non-finite gates on the chunk paths, and
// overflow-safe varlen helpers. Each case failed before the fix, except the workspace sizes, which hold the
// *_workspace_size functions to what the calls carve on every path.

#include <gla/gla.hpp>

#include "support/catch.hpp"
#include "support/recurrent_cases.hpp"
#include "support/test_utils.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <new>
#include <stdexcept>
#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif

using namespace gla;
using gla::test::compare;

namespace {

/// Small random inputs [B,T,H,K] / [B,T,H,V] with fla's test gates.
struct Inputs {
  Tensor<float, 4> q, k, v, g, do_;
  Inputs(Index B, Index T, Index H, Index K, Index V, std::uint64_t salt = 1)
      : q(B, T, H, K), k(B, T, H, K), v(B, T, H, V), g(B, T, H, K), do_(B, T, H, V) {
    auto gen = gla::test::rng(salt);
    gla::test::fill_normal(q, gen);
    gla::test::fill_normal(k, gen);
    gla::test::fill_normal(v, gen);
    gla::test::fill_normal(do_, gen);
    gla::test::fill_gate(g, gen, 16.0);
  }
};

template <class TA, class TB>
bool bit_equal(const TA& a, const TB& b) {
  if (a.size() != b.size()) return false;
  for (Index i = 0; i < a.size(); ++i)
    if (!(a.data()[i] == b.data()[i])) return false;
  return true;
}

using gla::test::ThreadCountGuard;

}  // namespace

TEST_CASE("views: the natural decode loop re-points the initial state instead of writing through it", "[api]") {
  const Index B = 2, T = 6, H = 2, K = 8, V = 4;
  const Inputs in(B, T, H, K, V);
  GLAOptions full_opts;
  full_opts.output_final_state = true;
  const auto full = fused_recurrent_gla(in.q, in.k, in.v, in.g, std::nullopt, full_opts);

  // One token at a time, carrying the state with a plain assignment.
  const auto token = [&](const Tensor<float, 4>& x, Index t) {
    Tensor<float, 4> out(B, 1, H, x.dimension(3));
    for (Index b = 0; b < B; ++b)
      for (Index h = 0; h < H; ++h)
        for (Index d = 0; d < x.dimension(3); ++d) out(b, 0, h, d) = x(b, t, h, d);
    return out;
  };
  const Tensor<float, 4> h0_const = [&] {
    Tensor<float, 4> z(B, H, K, V);
    z.setZero();
    return z;
  }();
  GLAOptions opts;
  opts.output_final_state = true;
  opts.initial_state = h0_const;
  std::vector<GLAResult<float>> steps;
  steps.reserve(static_cast<std::size_t>(T));
  for (Index t = 0; t < T; ++t) {
    const Tensor<float, 4> qt = token(in.q, t), kt = token(in.k, t), vt = token(in.v, t), gt = token(in.g, t);
    steps.push_back(fused_recurrent_gla(qt, kt, vt, gt, std::nullopt, opts));
    opts.initial_state = *steps.back().final_state;  // must re-point, not copy into the previous buffer
  }
  // The caller's const initial tensor and every earlier state are untouched.
  CHECK(gla::test::all_equal_to(h0_const, 0.0f));
  CHECK(opts.initial_state->data() == steps.back().final_state->data());
  for (Index t = 0; t + 1 < T; ++t) CHECK_FALSE(bit_equal(*steps[t].final_state, *steps[t + 1].final_state));
  CHECK(gla::test::ok(compare(*steps.back().final_state, *full.final_state), 1e-6));

  // ChunkHGates behave the same way.
  Tensor<float, 4> a = in.g, b = in.g;
  b.setZero();
  ChunkHGates gates;
  gates.gk = a;
  gates.gk = b;
  CHECK(gates.gk->data() == b.data());
  CHECK(bit_equal(a, in.g));

  // A temporary tensor cannot be held by an option (it would dangle).
  static_assert(!std::is_assignable_v<std::optional<HeldView<float, 4>>&, Tensor<float, 4>&&>);
  static_assert(std::is_assignable_v<std::optional<HeldView<float, 4>>&, Tensor<float, 4>&>);
  static_assert(std::is_assignable_v<std::optional<HeldView<float, 4>>&, const Tensor<float, 4>&>);
}

TEST_CASE("views: the README decode loop updates one state in place with a reused workspace", "[api]") {
  const Index B = 2, T = 7, H = 3, K = 12, V = 10;
  const Inputs in(B, T, H, K, V);
  GLAOptions full_opts;
  full_opts.output_final_state = true;
  const auto full = fused_recurrent_gla(in.q, in.k, in.v, in.g, std::nullopt, full_opts);

  Tensor<float, 4> state(B, H, K, V);
  state.setZero();
  Tensor<float, 4> o1(B, 1, H, V), q1(B, 1, H, K), k1(B, 1, H, K), g1(B, 1, H, K), v1(B, 1, H, V);
  gla::Workspace ws;
  GLAOptions step;
  step.initial_state = state;
  step.output_final_state = true;
  step.workspace = &ws;
  const float* const state_data = state.data();
  for (Index t = 0; t < T; ++t) {
    for (Index b = 0; b < B; ++b)
      for (Index h = 0; h < H; ++h) {
        for (Index d = 0; d < K; ++d) {
          q1(b, 0, h, d) = in.q(b, t, h, d);
          k1(b, 0, h, d) = in.k(b, t, h, d);
          g1(b, 0, h, d) = in.g(b, t, h, d);
        }
        for (Index d = 0; d < V; ++d) v1(b, 0, h, d) = in.v(b, t, h, d);
      }
    gla::fused_recurrent_gla_into(q1, k1, v1, g1, std::nullopt, step, o1, state);
    for (Index b = 0; b < B; ++b)
      for (Index h = 0; h < H; ++h)
        for (Index d = 0; d < V; ++d) CHECK(std::abs(o1(b, 0, h, d) - full.o(b, t, h, d)) <= 1e-5f);
  }
  CHECK(state.data() == state_data);
  CHECK(gla::test::ok(compare(state, *full.final_state), 1e-6));
}

// The *_workspace_size functions must name exactly what a call carves, on each of its paths: chunk_gla's single
// sweep (4 or more (sequence, head) pairs) and two phases, the backward with its chunks' gradients inside the
// reverse sweep and as a separate pass (a long single head is split into value tiles), bf16 operands too.
TEST_CASE("workspace sizes: each *_workspace_size is what the call takes, on every path", "[api][workspace]") {
  const auto round64 = [](std::size_t b) { return (std::max<std::size_t>(b, 1) + 63) / 64 * 64; };
  struct Shape {
    Index B, T, H, K, V;
  };
  for (const Shape sh : {Shape{1, 130, 4, 32, 48}, Shape{1, 300, 1, 32, 128}, Shape{2, 70, 1, 16, 64}}) {
    INFO("B=" << sh.B << " T=" << sh.T << " H=" << sh.H << " K=" << sh.K << " V=" << sh.V);
    const Inputs in(sh.B, sh.T, sh.H, sh.K, sh.V);
    const Tensor<Eigen::bfloat16, 4> qb = in.q.cast<Eigen::bfloat16>(), kb = in.k.cast<Eigen::bfloat16>(),
                                     vb = in.v.cast<Eigen::bfloat16>(), gb = in.g.cast<Eigen::bfloat16>();
    // an empty workspace grows to exactly what the call takes; one sized up front is never grown
    const auto check = [&](const char* what, std::size_t size, const auto& call) {
      INFO(what << ": workspace_size " << size);
      Workspace grown;
      GLAOptions o;
      o.workspace = &grown;
      call(o);
      CHECK(grown.capacity() == round64(size));
      Workspace sized(size);
      const std::byte* before = sized.data();
      o.workspace = &sized;
      call(o);
      CHECK(sized.data() == before);
      CHECK(sized.capacity() == round64(size));
    };
    const Index B = sh.B, T = sh.T, H = sh.H, K = sh.K, V = sh.V;
    check("chunk_gla", chunk_gla_workspace_size<float>(B, T, H, K, V),
          [&](const GLAOptions& o) { (void)chunk_gla(in.q, in.k, in.v, in.g, o); });
    check("chunk_gla bf16", chunk_gla_workspace_size<Eigen::bfloat16>(B, T, H, K, V),
          [&](const GLAOptions& o) { (void)chunk_gla(qb, kb, vb, gb, o); });
    check("fused_chunk_gla", fused_chunk_gla_workspace_size<float>(B, T, H, K, V),
          [&](const GLAOptions& o) { (void)fused_chunk_gla(in.q, in.k, in.v, in.g, o); });
    check("chunk_gla_backward", chunk_gla_backward_workspace_size<float>(B, T, H, K, V),
          [&](const GLAOptions& o) { (void)chunk_gla_backward(in.q, in.k, in.v, in.g, in.do_, std::nullopt, o); });
    // The training pair: the forward keeping its states, the backward taking them (K-first: a slot per thread to
    // transpose each into; V-first: none), in both layouts.
    for (const bool vf : {false, true}) {
      GLAOptions layout;
      layout.state_v_first = vf;
      const auto with_layout = [vf](GLAOptions o) {
        o.state_v_first = vf;
        return o;
      };
      const auto fwd = chunk_gla_keep_states(in.q, in.k, in.v, in.g, layout);
      check(vf ? "chunk_gla_keep_states V-first" : "chunk_gla_keep_states",
            chunk_gla_workspace_size<float>(B, T, H, K, V, layout),
            [&](const GLAOptions& o) { (void)chunk_gla_keep_states(in.q, in.k, in.v, in.g, with_layout(o)); });
      const std::size_t from_states = chunk_gla_backward_from_states_workspace_size<float>(B, T, H, K, V, layout);
      check(vf ? "chunk_gla_backward_from_states V-first" : "chunk_gla_backward_from_states", from_states,
            [&](const GLAOptions& o) {
              (void)chunk_gla_backward_from_states(in.q, in.k, in.v, in.g, view(fwd.h), in.do_, std::nullopt,
                                                   with_layout(o));
            });
      // No states to hold: less scratch wherever the states outweigh the per-thread tiles (the first shape).
      const std::size_t recompute = chunk_gla_backward_workspace_size<float>(B, T, H, K, V, layout);
      CHECK(from_states <= recompute);
      if (T == 130) CHECK(from_states < recompute);
    }
    check("fused_recurrent_gla", fused_recurrent_gla_workspace_size<float>(B, T, H, K, V),
          [&](const GLAOptions& o) { (void)fused_recurrent_gla(in.q, in.k, in.v, in.g, std::nullopt, o); });
    check("fused_recurrent_gla bf16", fused_recurrent_gla_workspace_size<Eigen::bfloat16>(B, T, H, K, V),
          [&](const GLAOptions& o) { (void)fused_recurrent_gla(qb, kb, vb, gb, std::nullopt, o); });
  }
}

TEST_CASE("workspace sizes: a bad shape raises gla::Error naming the query", "[api][workspace][errors]") {
  CHECK_GLA_ERROR("chunk_gla_workspace_size: q is [1,-1,2,8], expected [B,T,H,K] with B, H, K > 0",
                  chunk_gla_workspace_size<float>(1, -1, 2, 8, 8));
  CHECK_GLA_ERROR("fused_chunk_gla_workspace_size: q is [1,10,2,0], expected [B,T,H,K] with B, H, K > 0",
                  fused_chunk_gla_workspace_size<float>(1, 10, 2, 0, 8));
  CHECK_GLA_ERROR("fused_recurrent_gla_workspace_size: q is [1,-1,2,8], expected [B,T,H,K] with B, H, K > 0",
                  fused_recurrent_gla_workspace_size<float>(1, -1, 2, 8, 8));
  GLAOptions two_seqs;
  two_seqs.cu_seqlens = std::vector<std::int64_t>{0, 4, 10};
  CHECK_GLA_ERROR("chunk_gla_backward_workspace_size: the batch size is 2, expected 1 when cu_seqlens is given",
                  chunk_gla_backward_workspace_size<float>(2, 10, 2, 8, 8, two_seqs));
  CHECK_GLA_ERROR(
      "chunk_gla_backward_from_states_workspace_size: the batch size is 2, expected 1 when cu_seqlens "
      "is given",
      chunk_gla_backward_from_states_workspace_size<float>(2, 10, 2, 8, 8, two_seqs));
  CHECK_GLA_ERROR("fused_recurrent_gla_workspace_size: cu_seqlens[N] is 10, expected T = 11 (the packed length)",
                  fused_recurrent_gla_workspace_size<float>(1, 11, 2, 8, 8, two_seqs));
  GLAOptions odd_chunk;
  odd_chunk.chunk_size = 48;
  CHECK_GLA_ERROR("chunk_gla_workspace_size: chunk_size is 48, expected a power of two in [16, 256]",
                  chunk_gla_workspace_size<float>(1, 10, 2, 8, 8, odd_chunk));
  // the recurrent kernel has no chunks: its query ignores chunk_size, as the operator does
  CHECK(fused_recurrent_gla_workspace_size<float>(1, 10, 2, 8, 8, odd_chunk) ==
        fused_recurrent_gla_workspace_size<float>(1, 10, 2, 8, 8));
}

TEST_CASE("operators deduce the scalar type from their arguments, any mix of tensors, maps and views", "[api]") {
  const Inputs in(1, 20, 2, 8, 4);
  const ConstTensorMap<float, 4> kmap(in.k.data(), in.k.dimensions());
  const ConstView<float, 4> vview(in.v);
  const auto a = chunk_gla(in.q, kmap, vview, in.g);
  const auto b = fused_chunk_gla(view(in.q), in.k, in.v, in.g);
  const auto c = fused_recurrent_gla(in.q, in.k, in.v, in.g);
  CHECK(gla::test::ok(compare(a.o, b.o), 1e-6));
  CHECK(gla::test::ok(compare(a.o, c.o), 1e-6));
  const Tensor<double, 4> qd = in.q.cast<double>(), kd = in.k.cast<double>(), vd = in.v.cast<double>(),
                          gd = in.g.cast<double>();
  const GLAResult<double> d = chunk_gla(qd, kd, vd, gd);
  CHECK(gla::test::ok(compare(d.o, a.o), 1e-6));
  static_assert(std::is_same_v<scalar_type_t<ConstTensorMap<Eigen::bfloat16, 4>>, Eigen::bfloat16>);
  static_assert(rank_of_v<View<const float, 3>> == 3);
}

TEST_CASE("aliasing: outputs that overlap inputs raise gla::Error and write nothing", "[api][aliasing]") {
  const Index B = 1, T = 70, H = 2, D = 8;  // K == V, so o can be laid over k or v exactly
  Inputs in(B, T, H, D, D);
  const Tensor<float, 4> v0 = in.v, k0 = in.k;
  GLAOptions opts;

  SECTION("fused_chunk_gla_into with o = v or o = k") {
    CHECK_GLA_ERROR("fused_chunk_gla: output o overlaps input v",
                    fused_chunk_gla_into(in.q, in.k, in.v, in.g, opts, in.v));
    CHECK_GLA_ERROR("fused_chunk_gla: output o overlaps input k",
                    fused_chunk_gla_into(in.q, in.k, in.v, in.g, opts, in.k));
    CHECK(bit_equal(in.v, v0));
    CHECK(bit_equal(in.k, k0));
  }
  SECTION("chunk_gla_into with o overlapping v by a shifted view") {
    Tensor<float, 1> big(in.v.size() + 3);
    std::copy_n(in.v.data(), in.v.size(), big.data());
    const ConstView<float, 4> v_in(big.data(), B, T, H, D);
    const View<float, 4> o_shift(big.data() + 3, B, T, H, D);
    CHECK_GLA_ERROR("chunk_gla: output o overlaps input v", chunk_gla_into(in.q, in.k, v_in, in.g, opts, o_shift));
  }
  SECTION("chunk_gla_backward_into with dq = dk") {
    Tensor<float, 4> dq(B, T, H, D), dv(B, T, H, D), dg(B, T, H, D);
    gla::test::fill_nan(dq);
    CHECK_GLA_ERROR("chunk_gla_backward: output dk overlaps output dq",
                    chunk_gla_backward_into(in.q, in.k, in.v, in.g, in.do_, std::nullopt, opts, dq, dq, dv, dg));
    CHECK(gla::test::compare(dq, dq).non_finite == dq.size());  // still all NaN: nothing written
  }
  SECTION("fused_recurrent_gla_backward_into with dv = do_") {
    Tensor<float, 4> dq(B, T, H, D), dk(B, T, H, D), dgk(B, T, H, D);
    CHECK_GLA_ERROR("fused_recurrent_gla_backward: output dv overlaps input do_",
                    fused_recurrent_gla_backward_into(in.q, in.k, in.v, in.g, std::nullopt, in.do_, std::nullopt, opts,
                                                      dq, dk, in.do_, dgk));
  }
  SECTION("ShortConvolution: step_into and forward_into with y = x") {
    ShortConvolution<float> conv(D, 4);
    auto gen = gla::test::rng(7);
    gla::test::fill_normal(conv.weight, gen);
    Tensor<float, 2> x(3, D);
    gla::test::fill_normal(x, gen);
    Tensor<float, 3> cache(3, D, 4);
    cache.setZero();
    const Tensor<float, 3> cache0 = cache;
    CHECK_GLA_ERROR("ShortConvolution::step_into: output y overlaps input x", conv.step_into(x, cache, x));
    CHECK(bit_equal(cache, cache0));  // the cache was not rolled
    Tensor<float, 3> x3(1, 5, D);
    gla::test::fill_normal(x3, gen);
    CHECK_GLA_ERROR("ShortConvolution::forward_into: output y overlaps input x", conv.forward_into(x3, x3));
    // y = x would make every later tap read an output: with a separate y the result differs from the input.
    Tensor<float, 3> y3(1, 5, D);
    conv.forward_into(x3, y3);
    CHECK_FALSE(bit_equal(x3, y3));
  }
  SECTION("FusedRMSNormGated with residual_out = g; RMSNorm with y over residual") {
    FusedRMSNormGated<float> norm(D);
    auto gen = gla::test::rng(8);
    Tensor<float, 2> x(4, D), g(4, D), res(4, D), y(4, D);
    gla::test::fill_normal(x, gen);
    gla::test::fill_normal(g, gen);
    gla::test::fill_normal(res, gen);
    const Tensor<float, 2> g0 = g;
    CHECK_GLA_ERROR("FusedRMSNormGated::forward_into: output residual_out overlaps input g",
                    norm.forward_into(x, g, y, ConstView<float, 2>(res), View<float, 2>(g)));
    CHECK(bit_equal(g, g0));
    RMSNorm<float> plain(D);
    CHECK_GLA_ERROR("RMSNorm::forward_into: output y overlaps input residual",
                    plain.forward_into(x, res, ConstView<float, 2>(res)));
  }
  SECTION("activate_into: a shifted output is rejected, the same buffer is in place") {
    Tensor<float, 1> buf(11);
    buf.setConstant(-1.0f);
    CHECK_GLA_ERROR(
        "activate_into: output y overlaps input x",
        activate_into(Activation::ReLU, ConstView<float, 1>(buf.data(), 10), View<float, 1>(buf.data() + 1, 10)));
    activate_into(Activation::ReLU, ConstView<float, 1>(buf.data(), 10), View<float, 1>(buf.data(), 10));
    CHECK(buf(0) == 0.0f);
  }
}

TEST_CASE("aliasing: the documented in-place updates equal the out-of-place results", "[api][aliasing]") {
  const Index B = 2, T = 70, H = 2, K = 8, V = 4;
  const Inputs in(B, T, H, K, V);
  Tensor<float, 4> h0(B, H, K, V);
  auto gen = gla::test::rng(3);
  gla::test::fill_normal(h0, gen);
  GLAOptions opts;
  opts.output_final_state = true;
  opts.initial_state = h0;
  const auto ref_chunk = chunk_gla(in.q, in.k, in.v, in.g, opts);
  const auto ref_fused = fused_chunk_gla(in.q, in.k, in.v, in.g, opts);
  const auto ref_rec = fused_recurrent_gla(in.q, in.k, in.v, in.g, std::nullopt, opts);
  Tensor<float, 4> o(B, T, H, V);
  for (int which = 0; which < 3; ++which) {
    Tensor<float, 4> state = h0;
    GLAOptions ip = opts;
    ip.initial_state = state;
    if (which == 0) chunk_gla_into(in.q, in.k, in.v, in.g, ip, o, state);
    if (which == 1) fused_chunk_gla_into(in.q, in.k, in.v, in.g, ip, o, state);
    if (which == 2) fused_recurrent_gla_into(in.q, in.k, in.v, in.g, std::nullopt, ip, o, state);
    const auto& ref = which == 0 ? ref_chunk : which == 1 ? ref_fused : ref_rec;
    INFO("operator " << which);
    CHECK(bit_equal(state, *ref.final_state));
    CHECK(bit_equal(o, ref.o));
  }
  // dh0 = dht in place, both backwards.
  Tensor<float, 4> dht(B, H, K, V);
  gla::test::fill_normal(dht, gen);
  GLAOptions bo;
  bo.initial_state = h0;
  const auto ref_b = chunk_gla_backward(in.q, in.k, in.v, in.g, in.do_, ConstView<float, 4>(dht), bo);
  const auto ref_rb =
      fused_recurrent_gla_backward(in.q, in.k, in.v, in.g, std::nullopt, in.do_, ConstView<float, 4>(dht), bo);
  Tensor<float, 4> dq(B, T, H, K), dk(B, T, H, K), dv(B, T, H, V), dg(B, T, H, K);
  Tensor<float, 4> buf = dht;
  chunk_gla_backward_into(in.q, in.k, in.v, in.g, in.do_, ConstView<float, 4>(buf), bo, dq, dk, dv, dg, buf);
  CHECK(bit_equal(buf, *ref_b.dh0));
  buf = dht;
  fused_recurrent_gla_backward_into(in.q, in.k, in.v, in.g, std::nullopt, in.do_, ConstView<float, 4>(buf), bo, dq, dk,
                                    dv, dg, std::nullopt, buf);
  CHECK(bit_equal(buf, *ref_rb.dh0));
}

TEST_CASE("output contract: an optional output is given if and only if its flag is set", "[api]") {
  const Index B = 1, T = 20, H = 2, K = 8, V = 4;
  const Inputs in(B, T, H, K, V);
  Tensor<float, 4> o(B, T, H, V), fs(B, H, K, V), h0(B, H, K, V);
  h0.setZero();
  GLAOptions no_state, want_state;
  want_state.output_final_state = true;
  for (const std::string fn : {"chunk_gla", "fused_chunk_gla", "fused_recurrent_gla"}) {
    const auto call = [&](const GLAOptions& opts, std::optional<View<float, 4>> final_state) {
      if (fn == "chunk_gla") chunk_gla_into(in.q, in.k, in.v, in.g, opts, o, final_state);
      if (fn == "fused_chunk_gla") fused_chunk_gla_into(in.q, in.k, in.v, in.g, opts, o, final_state);
      if (fn == "fused_recurrent_gla")
        fused_recurrent_gla_into(in.q, in.k, in.v, in.g, std::nullopt, opts, o, final_state);
    };
    CHECK_GLA_ERROR(fn + ": final_state is given, expected none since output_final_state is false", call(no_state, fs));
    CHECK_GLA_ERROR(fn + ": final_state is not given, expected a view since output_final_state is true",
                    call(want_state, std::nullopt));
    call(want_state, fs);
    call(no_state, std::nullopt);
  }
  Tensor<float, 4> dq(B, T, H, K), dk(B, T, H, K), dv(B, T, H, V), dg(B, T, H, K), dh0(B, H, K, V);
  GLAOptions with_h0;
  with_h0.initial_state = h0;
  for (const std::string fn : {"chunk_gla_backward", "fused_chunk_gla_backward", "fused_recurrent_gla_backward"}) {
    const auto call = [&](const GLAOptions& opts, std::optional<View<float, 4>> d0) {
      if (fn == "chunk_gla_backward")
        chunk_gla_backward_into(in.q, in.k, in.v, in.g, in.do_, std::nullopt, opts, dq, dk, dv, dg, d0);
      if (fn == "fused_chunk_gla_backward")
        fused_chunk_gla_backward_into(in.q, in.k, in.v, in.g, in.do_, std::nullopt, opts, dq, dk, dv, dg, d0);
      if (fn == "fused_recurrent_gla_backward")
        fused_recurrent_gla_backward_into(in.q, in.k, in.v, in.g, std::nullopt, in.do_, std::nullopt, opts, dq, dk, dv,
                                          dg, std::nullopt, d0);
    };
    CHECK_GLA_ERROR(fn + ": dh0 is given, expected none since initial_state is not given", call(no_state, dh0));
    CHECK_GLA_ERROR(fn + ": dh0 is not given, expected a view since initial_state is given",
                    call(with_h0, std::nullopt));
    call(with_h0, dh0);
  }
}

TEST_CASE("chunk_size is bounded: a huge valid power of two is a gla::Error, not an abort", "[api]") {
  const Inputs in(1, 40, 2, 8, 4);
  for (const int cs : {1 << 17, 512, 8, 24}) {
    GLAOptions opts;
    opts.chunk_size = cs;
    const std::string what = "chunk_size is " + std::to_string(cs) + ", expected a power of two in [16, 256]";
    CHECK_GLA_ERROR("chunk_gla: " + what, chunk_gla(in.q, in.k, in.v, in.g, opts));
    CHECK_GLA_ERROR("fused_chunk_gla: " + what, fused_chunk_gla(in.q, in.k, in.v, in.g, opts));
    CHECK_GLA_ERROR("chunk_gla_backward: " + what,
                    chunk_gla_backward(in.q, in.k, in.v, in.g, in.do_, std::nullopt, opts));
  }
  GLAOptions largest;
  largest.chunk_size = 256;
  const auto r = chunk_gla(in.q, in.k, in.v, in.g, largest);
  const auto ref = fused_recurrent_gla(in.q, in.k, in.v, in.g);
  CHECK(gla::test::ok(compare(r.o, ref.o), 1e-6));
}

TEST_CASE("parallel engine: an exception in a work item reaches the caller, on every thread count", "[api][engine]") {
  ThreadCountGuard guard;
  for (const int threads : {1, 2, 3}) {
    gla::set_num_threads(threads);
    std::atomic<int> ran{0};
    CHECK_THROWS_AS(detail::parallel_for(64,
                                         [&](Index i, int) {
                                           ++ran;
                                           if (i == 5) throw std::bad_alloc();
                                         }),
                    std::bad_alloc);
    CHECK(ran.load() >= 1);
    CHECK_THROWS_WITH(detail::parallel_for(8,
                                           [&](Index i, int) {
                                             if (i % 2) throw gla::Error("item " + std::to_string(i));
                                           }),
                      Catch::Matchers::Contains("item"));
    // The pool is still usable afterwards, and nested calls run (serially) inside an item.
    std::vector<int> hits(100, 0);
    detail::parallel_for(10, [&](Index i, int) {
      detail::parallel_for(10, [&](Index j, int w) {
        CHECK(w == 0);
        ++hits[static_cast<std::size_t>(i * 10 + j)];
      });
    });
    for (int h : hits) CHECK(h == 1);
  }
  CHECK_GLA_ERROR("set_num_threads: n is 0, expected >= 1", gla::set_num_threads(0));
}

TEST_CASE("parallel engine: results are bit-identical for 1 to 4 threads with unequal work items", "[api][engine]") {
  ThreadCountGuard guard;
  // A varlen batch (one long sequence, several short, one empty) with H = 3 heads, not a multiple of any count.
  const std::vector<std::int64_t> cu{0, 300, 301, 301, 365, 400};
  const Index T = cu.back(), H = 3, K = 20, V = 12;
  const Inputs in(1, T, H, K, V, 11);
  GLAOptions opts;
  opts.cu_seqlens = cu;
  opts.output_final_state = true;
  const auto run_all = [&] {
    std::vector<Tensor<float, 4>> out;
    const auto a = chunk_gla(in.q, in.k, in.v, in.g, opts);
    const auto b = fused_chunk_gla(in.q, in.k, in.v, in.g, opts);
    const auto c = fused_recurrent_gla(in.q, in.k, in.v, in.g, std::nullopt, opts);
    const auto d = chunk_gla_backward(in.q, in.k, in.v, in.g, in.do_, std::nullopt, opts);
    const auto e = fused_recurrent_gla_backward(in.q, in.k, in.v, in.g, std::nullopt, in.do_, std::nullopt, opts);
    for (const auto* r : {&a, &b, &c}) {
      out.push_back(r->o);
      out.push_back(*r->final_state);
    }
    for (const auto* t : {&d.dq, &d.dk, &d.dv, &d.dg, &e.dq, &e.dk, &e.dv, &*e.dgk}) out.push_back(*t);
    return out;
  };
  gla::set_num_threads(1);
  const auto ref = run_all();
  for (const int threads : {2, 3, 4}) {
    gla::set_num_threads(threads);
    const auto got = run_all();
    for (std::size_t i = 0; i < ref.size(); ++i) {
      INFO("threads " << threads << " output " << i);
      CHECK(bit_equal(got[i], ref[i]));
    }
  }
}

#if defined(__linux__)
TEST_CASE("parallel engine: workers that share the caller's only CPU leave the job to the caller", "[api][engine]") {
  // Every thread of the pool confined to the caller's CPU, as when another process keeps the other cores busy: a
  // worker woken there would take the caller's place and could be preempted in the middle of an item, so in a short
  // job it must claim nothing. Items yield the CPU, which gives a worker every chance to run and claim one.
  ThreadCountGuard guard;
  cpu_set_t saved;
  const int cpu = sched_getcpu();
  if (cpu < 0 || sched_getaffinity(0, sizeof saved, &saved) != 0) {
    WARN("sched_getcpu/sched_getaffinity unavailable: skipped");
    return;
  }
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  REQUIRE(sched_setaffinity(0, sizeof one, &one) == 0);
  // Workers inherit the affinity of the thread that starts them: grow the pool so that it starts new ones.
  const auto pool_size = [] {
    detail::Engine& e = detail::Engine::get();
    std::lock_guard<std::mutex> lock(e.mutex);
    return e.pool ? e.pool->size() : 1;
  };
  const int threads = pool_size() + 1;
  gla::set_num_threads(threads);
  // Only a job that follows a short one is left to the caller (workers share long jobs: the scheduler has time to
  // move them to another CPU). Whether a job is short is wall-clock time, which another process on this CPU (the
  // rest of a parallel ctest run) can stretch, so a job is checked only when the one before it took less than
  // kLongJobNs as timed here, which includes all the engine times.
  using Clock = std::chrono::steady_clock;
  const auto timed_job = [](auto&& body) {
    const auto start = Clock::now();
    body();
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
  };
  std::int64_t previous_ns = timed_job([] { detail::parallel_for(2, [](Index, int) {}); });
  int checked = 0;
  for (int job = 0; job < 200 && checked < 6; ++job) {
    std::vector<int> ran_on(64, -1);
    const bool after_short = previous_ns < detail::ThreadPool::kLongJobNs;
    previous_ns = timed_job([&] {
      detail::parallel_for(64, [&](Index i, int w) {
        std::this_thread::yield();
        ran_on[static_cast<std::size_t>(i)] = w;
      });
    });
    if (!after_short) continue;
    ++checked;
    INFO("job " << job);
    for (int w : ran_on) CHECK(w == 0);
  }
  if (checked == 0) WARN("every job took longer than kLongJobNs (a loaded machine): nothing to check");
  REQUIRE(sched_setaffinity(0, sizeof saved, &saved) == 0);
  gla::set_num_threads(pool_size() + 1);  // new workers with the restored affinity for the tests that follow
  detail::parallel_for(2, [](Index, int) {});
}
#endif

TEST_CASE("non-finite and extreme gates on the chunk paths: a hard reset (g = -inf) stays finite", "[api][gates]") {
  const Index B = 1, T = 256, H = 2, K = 16, V = 8;
  for (const float X : {-30.0f, -1e3f, -1e4f, -std::numeric_limits<float>::infinity()}) {
    Inputs in(B, T, H, K, V, 5);
    for (Index h = 0; h < H; ++h)
      for (Index c = 0; c < K; ++c) in.g(0, 70, h, c) = X;  // mid-chunk
    in.g(0, 128, 1, 3) = X;                                 // first row of a chunk
    const auto ref = naive_recurrent_gla<double>(in.q, in.k, in.v, in.g);
    const auto a = chunk_gla(in.q, in.k, in.v, in.g);
    const auto b = fused_chunk_gla(in.q, in.k, in.v, in.g);
    INFO("gate " << X);
    // Measured 1.2e-6 for any gate at or below the floor (-30): docs/chunk_algorithm.md.
    CHECK(gla::test::ok(compare(a.o, ref.o), 5e-6));
    CHECK(gla::test::ok(compare(b.o, ref.o), 5e-6));
    const auto gr = chunk_gla_backward(in.q, in.k, in.v, in.g, in.do_);
    for (const auto* t : {&gr.dq, &gr.dk, &gr.dv, &gr.dg}) CHECK(compare(*t, *t).non_finite == 0);
    const auto refb = naive_recurrent_gla_backward<double>(in.q, in.k, in.v, in.g, std::nullopt, in.do_);
    CHECK(gla::test::ok(compare(gr.dq, refb.dq), 1e-5));
    CHECK(gla::test::ok(compare(gr.dv, refb.dv), 1e-5));
  }
  // A NaN gate is not hidden: it reaches the outputs of its own (sequence, head) only.
  Inputs in(2, 40, 2, K, V, 6);
  in.g(1, 10, 0, 2) = std::numeric_limits<float>::quiet_NaN();
  const auto r = chunk_gla(in.q, in.k, in.v, in.g);
  CHECK(std::isnan(r.o(1, 39, 0, 0)));
  CHECK(std::isfinite(r.o(1, 39, 1, 0)));
  CHECK(std::isfinite(r.o(0, 39, 0, 0)));
}

TEST_CASE("chunk_fwd_h: g_gamma must be a finite per-step log decay <= 0", "[api][gates]") {
  const Inputs in(1, 20, 2, 8, 4);
  Tensor<float, 1> gamma(2);
  for (const float bad :
       {std::numeric_limits<float>::quiet_NaN(), 0.5f, 1e30f, -std::numeric_limits<float>::infinity()}) {
    gamma.setValues({-0.1f, bad});
    ChunkHGates gates;
    gates.g_gamma = gamma;
    CHECK_GLA_ERROR("chunk_fwd_h: g_gamma[1] is", chunk_fwd_h(in.k, in.v, gates));
    CHECK_GLA_ERROR("chunk_bwd_dh: g_gamma[1] is", chunk_bwd_dh(in.q, in.k, in.v, gates, in.do_));
  }
}

TEST_CASE("fused_chunk_gla with T = 0 passes the initial state through", "[api]") {
  Tensor<float, 4> q(2, 0, 2, 8), k(2, 0, 2, 8), v(2, 0, 2, 4), g(2, 0, 2, 8), h0(2, 2, 8, 4);
  auto gen = gla::test::rng(9);
  gla::test::fill_normal(h0, gen);
  GLAOptions opts;
  opts.output_final_state = true;
  opts.initial_state = h0;
  for (const bool fallback : {true, false}) {
    opts.heuristic_fallback = fallback;
    const auto r = fused_chunk_gla(q, k, v, g, opts);
    CHECK(r.o.size() == 0);
    CHECK(bit_equal(*r.final_state, h0));
  }
  const auto c = chunk_gla(q, k, v, g, opts);
  CHECK(bit_equal(*c.final_state, h0));
}

TEST_CASE("varlen helpers: no signed overflow, no std::bad_alloc, gla::Error instead", "[api][varlen]") {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  CHECK_GLA_ERROR("prepare_cu_seqlens_from_lens: the sum of lens overflows int64",
                  prepare_cu_seqlens_from_lens({kMax, 1}));
  CHECK_GLA_ERROR("prepare_lens: cu_seqlens[0] is", prepare_lens({std::numeric_limits<std::int64_t>::min(), kMax}));
  CHECK_GLA_ERROR("prepare_lens: cu_seqlens is not non-decreasing", prepare_lens({0, 5, 3}));
  CHECK(prepare_lens({0}).empty());
  CHECK(prepare_lens({0, 3, 3, 10}) == std::vector<std::int64_t>{3, 0, 7});
  CHECK_GLA_ERROR("prepare_chunk_offsets: cu_seqlens and chunk_size = 1 give more than 2^40 chunks",
                  prepare_chunk_offsets({0, kMax}, 1));
  CHECK_GLA_ERROR("prepare_chunk_indices: cu_seqlens and chunk_size = 1 give more than 2^40 chunks",
                  prepare_chunk_indices({0, kMax}, 1));
  CHECK(prepare_chunk_offsets({0, kMax}, kMax) == std::vector<std::int64_t>{0, 1});
  CHECK(cdiv(kMax, 2) == kMax / 2 + 1);

  const Tensor<float, 2> empty(0, 4);
  CHECK_GLA_ERROR("pad_input: batch is -1, expected >= 0", pad_input(empty, {}, -1, 3));
  CHECK_GLA_ERROR("pad_input: seqlen is -2, expected >= 0", pad_input(empty, {}, 3, -2));
  CHECK_GLA_ERROR("pad_input: batch * seqlen", pad_input(empty, {}, kMax / 2, 4));
  CHECK_GLA_ERROR("index_put_first_axis: first_axis_dim is -1, expected >= 0", index_put_first_axis(empty, {}, -1));
  CHECK_GLA_ERROR("index_put_first_axis: first_axis_dim is", index_put_first_axis(empty, {}, kMax / 2));
  const auto padded = pad_input(empty, {}, 2, 3);
  CHECK(padded.dimension(0) == 2);
  CHECK(gla::test::all_equal_to(padded, 0.0f));
}
