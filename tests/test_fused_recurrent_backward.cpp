// Tests of fused_recurrent_gla_backward against the float64 reference backward (sweeps over lengths around
// the checkpoint blocks, head sizes, gates, strong decay, options, varlen), its equivalences, fla's golden
// gradients, and every gla::Error path.

#include <gla/fused_recurrent.hpp>
#include <gla/naive.hpp>

#include "support/catch.hpp"
#include "support/golden.hpp"
#include "support/recurrent_cases.hpp"
#include "support/test_utils.hpp"

#include <array>
#include <string>

using namespace gla;
using test::RecCase;
using test::RecInputs;
using test::type_name;

namespace {

/// dq, dk, dv, dgk, dgv: fp32 1e-5, fp64 1e-10, bf16/half 5e-3 (rounded to the input type) vs the float64
/// reference on the same inputs.
template <class T>
double grad_tol() {
  if constexpr (std::is_same_v<T, float>) return 1e-5;
  else if constexpr (std::is_same_v<T, double>) return 1e-10;
  else return 5e-3;
}
/// dh0 is stored as float for every T, so fp64 can only be checked at float precision (1e-7).
template <class T>
double dh0_tol() {
  return std::is_same_v<T, double> ? 1e-7 : 1e-5;
}

/// Owned outputs of the `_into` core for one case, NaN-filled.
template <class T>
struct GradOut {
  Tensor<T, 4> dq, dk, dv, dgk, dgv;
  Tensor<float, 4> dh0;
  GradOut(const RecCase& c) {
    dq = Tensor<T, 4>(c.B, c.T, c.H, c.K);
    dk = Tensor<T, 4>(c.B, c.T, c.H, c.K);
    dv = Tensor<T, 4>(c.B, c.T, c.H, c.V);
    dgk = Tensor<T, 4>(c.B, c.T, c.H, c.K);
    dgv = Tensor<T, 4>(c.B, c.T, c.H, c.V);
    const auto sd = test::rec_state_dims(c);
    dh0 = Tensor<float, 4>(sd[0], sd[1], sd[2], sd[3]);
    test::fill_nan(dq);
    test::fill_nan(dk);
    test::fill_nan(dv);
    test::fill_nan(dgk);
    test::fill_nan(dgv);
    test::fill_nan(dh0);
  }
};

template <class T>
void run_backward_into(const RecCase& c, const RecInputs<T>& in, bool with_dht, GradOut<T>& g) {
  fused_recurrent_gla_backward_into(
      view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c), view(in.do_),
      with_dht ? std::optional<ConstTensorMap<float, 4>>(view(in.dht)) : std::nullopt, in.opts, mut_view(g.dq),
      mut_view(g.dk), mut_view(g.dv), c.has_gk() ? std::optional<TensorMap<T, 4>>(mut_view(g.dgk)) : std::nullopt,
      c.has_gv() ? std::optional<TensorMap<T, 4>>(mut_view(g.dgv)) : std::nullopt,
      c.h0 ? std::optional<gla::View<float, 4>>(mut_view(g.dh0)) : std::nullopt);
}

/// dgk/dgv are exactly zero when no decayed state exists yet (T = 1 without h0): the kernel then returns
/// exact zeros while the reference's cumulative sums leave rounding noise, so a relative error is meaningless
/// and the check is absolute.
template <class T, class R>
void check_gate_grad(const std::string& klass, const std::string& what, const Tensor<T, 4>& got,
                     const Tensor<R, 4>& ref, double tol) {
  long double ss = 0;
  for (Index i = 0; i < ref.size(); ++i) ss += static_cast<long double>(ref.data()[i]) * ref.data()[i];
  if (ref.size() > 0 && std::sqrt(static_cast<double>(ss / ref.size())) < 1e-12) {
    const auto d = test::compare(got, ref);
    INFO(what << " (true value 0): " << d.str());
    CHECK(d.non_finite == 0);
    CHECK(d.max_abs <= 1e-12);
    return;
  }
  test::check_close(klass + " " + what, what, got, ref, tol);
}

/// Runs the `_into` core on NaN-filled outputs and compares every gradient with the float64 reference.
template <class T>
void check_backward(const RecCase& c, std::uint64_t salt, bool with_dht = true) {
  RecInputs<T> in;
  test::make_rec_inputs(in, c, salt);
  GradOut<T> g(c);
  run_backward_into(c, in, with_dht, g);
  // The reference computes dgk/dgv with fla's reverse cumulative sums (docs/fused_recurrent.md), which cancel
  // under strong decay (dgk ≈ 1e-4 of the summed terms): in float64 that costs ~1e-10, so fp64 is checked
  // against long double.
  using RefAcc = std::conditional_t<std::is_same_v<T, double>, long double, double>;
  const auto ref = naive_recurrent_gla_backward<RefAcc>(
      view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c), view(in.do_),
      with_dht ? std::optional<ConstTensorMap<float, 4>>(view(in.dht)) : std::nullopt, in.opts);
  INFO(type_name<T>() << " " << c.str() << " dht=" << with_dht);
  const std::string klass = "backward " + type_name<T>();
  test::check_close(klass, "dq", g.dq, ref.dq, grad_tol<T>());
  test::check_close(klass, "dk", g.dk, ref.dk, grad_tol<T>());
  test::check_close(klass, "dv", g.dv, ref.dv, grad_tol<T>());
  if (c.has_gk()) check_gate_grad(klass, "dgk", g.dgk, *ref.dgk, grad_tol<T>());
  if (c.has_gv()) check_gate_grad(klass, "dgv", g.dgv, *ref.dgv, grad_tol<T>());
  if (c.h0) test::check_close("backward dh0 (float) from " + type_name<T>(), "dh0", g.dh0, ref.dh0, dh0_tol<T>());
  // Absent inputs leave their gradient views alone (they are not passed); the NaN fill shows it.
  if (!c.has_gk()) CHECK(test::all_equal_to(g.dgk, std::numeric_limits<float>::quiet_NaN()));
  if (!c.has_gv()) CHECK(test::all_equal_to(g.dgv, std::numeric_limits<float>::quiet_NaN()));
}

}  // namespace

TEMPLATE_TEST_CASE("fused_recurrent_gla_backward: T sweep around block and checkpoint sizes",
                   "[fused_recurrent][backward]", float, double, Eigen::bfloat16, Eigen::half) {
  // Checkpoint blocks are max(16, ceil(sqrt(T))) long: 16 for T <= 256 (so 15/16/17, 63/64/65, ... straddle
  // block ends) and 32 for T = 1000 (a short last block of 8).
  const std::array<Index, 11> Ts{1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 1000};
  const std::array<double, 4> norms{1.0, 0.1, 16.0, 0.0};
  std::uint64_t salt = 1000;
  for (std::size_t i = 0; i < Ts.size(); ++i) {
    RecCase c;
    c.B = 2;
    c.T = Ts[i];
    c.H = i % 2 ? 1 : 3;
    c.K = 16;
    c.V = 60;
    c.gates = static_cast<int>((i + 3) % 4);  // both, none, gk, gv, ...
    c.normalizer = norms[i % 4];
    c.reverse = i % 3 == 2;
    c.h0 = i % 2 == 1;
    check_backward<TestType>(c, salt++);
  }
}

TEMPLATE_TEST_CASE("fused_recurrent_gla_backward: K, V sweep (K != V)", "[fused_recurrent][backward]", float, double,
                   Eigen::bfloat16) {
  const std::array<std::pair<Index, Index>, 6> kv{{{16, 60}, {60, 16}, {64, 100}, {100, 128}, {128, 64}, {60, 64}}};
  std::uint64_t salt = 1100;
  for (const auto& [K, V] : kv) {
    RecCase c;
    c.B = 2;
    c.T = 33;
    c.H = 3;
    c.K = K;
    c.V = V;
    c.gates = test::kBothGates;
    check_backward<TestType>(c, salt++);
  }
}

TEMPLATE_TEST_CASE("fused_recurrent_gla_backward: gate modes x gate strengths", "[fused_recurrent][backward]", float,
                   double, Eigen::half) {
  std::uint64_t salt = 1200;
  for (int gates : {test::kNoGates, test::kGkOnly, test::kGvOnly, test::kBothGates})
    for (double norm : {0.1, 1.0, 16.0, 0.0}) {
      if (gates == test::kNoGates && norm != 1.0) continue;  // nothing to vary
      RecCase c;
      c.T = 129;
      c.H = 2;
      c.K = 64;
      c.V = 100;
      c.gates = gates;
      c.normalizer = norm;
      check_backward<TestType>(c, salt++);
    }
}

TEMPLATE_TEST_CASE("fused_recurrent_gla_backward: strong decay over 1000 steps stays finite and accurate",
                   "[fused_recurrent][backward]", float, double) {
  // Per-step log gates near −5 on both axes: the state forgets within a step or two, so dgk/dgv are ~1e-2..1e-4
  // of the q⊙dq and k⊙dk terms whose telescoped difference they are (see docs/fused_recurrent.md).
  std::uint64_t salt = 1300;
  for (bool reverse : {false, true}) {
    RecCase c;
    c.T = 1000;
    c.H = 2;
    c.K = 64;
    c.V = 48;
    c.normalizer = 0;
    c.reverse = reverse;
    check_backward<TestType>(c, salt++);
  }
}

TEMPLATE_TEST_CASE("fused_recurrent_gla_backward: reverse, h0, scale, state_v_first, dht", "[fused_recurrent][backward]",
                   float, double) {
  std::uint64_t salt = 1400;
  for (bool reverse : {false, true})
    for (bool h0 : {false, true})
      for (bool v_first : {false, true})
        for (std::optional<float> scale : {std::optional<float>{}, std::optional<float>{0.3f}}) {
          RecCase c;
          c.B = 2;
          c.T = 33;
          c.H = 2;
          c.K = 60;
          c.V = 16;
          c.reverse = reverse;
          c.h0 = h0;
          c.v_first = v_first;
          c.scale = scale;
          check_backward<TestType>(c, salt++, /*with_dht=*/!(reverse && h0));
        }
}

TEMPLATE_TEST_CASE("fused_recurrent_gla_backward: varlen with empty, single-token and block-straddling sequences",
                   "[fused_recurrent][backward][varlen]", float, double, Eigen::bfloat16) {
  const std::vector<std::vector<std::int64_t>> cus{
      {0, 0, 1, 17, 17, 81, 146},  // lengths 0, 1, 16, 0, 64, 65
      {0, 0, 16},                  // fla's test: an empty sequence first
      {0, 63, 64, 337, 337},       // 63, 1, 273 (blocks of 17), trailing empty
  };
  std::uint64_t salt = 1500;
  for (const auto& cu : cus)
    for (bool reverse : {false, true}) {
      RecCase c;
      c.B = 1;
      c.T = cu.back();
      c.H = 2;
      c.K = 16;
      c.V = 24;
      c.cu = cu;
      c.reverse = reverse;
      c.gates = reverse ? test::kGvOnly : test::kBothGates;
      check_backward<TestType>(c, salt++);
    }
}

namespace {

template <class T>
Tensor<T, 4> time_slice(const Tensor<T, 4>& x, Index t0, Index len) {
  const std::array<Index, 4> off{0, t0, 0, 0}, ext{x.dimension(0), len, x.dimension(2), x.dimension(3)};
  return x.slice(off, ext);
}
inline Tensor<float, 4> state_slice(const Tensor<float, 4>& x, Index n) {
  const std::array<Index, 4> off{n, 0, 0, 0}, ext{1, x.dimension(1), x.dimension(2), x.dimension(3)};
  return x.slice(off, ext);
}

}  // namespace

TEST_CASE("fused_recurrent_gla_backward: varlen equals per-sequence calls", "[fused_recurrent][backward][varlen]") {
  RecCase c;
  c.B = 1;
  c.cu = {0, 0, 1, 17, 17, 81, 146};
  c.T = 146;
  c.H = 2;
  c.K = 16;
  c.V = 40;
  for (bool reverse : {false, true}) {
    c.reverse = reverse;
    RecInputs<float> in;
    test::make_rec_inputs(in, c, 1600);
    const auto packed = fused_recurrent_gla_backward(view(in.q), view(in.k), view(in.v), view(in.gk),
                                                            view(in.gv), view(in.do_), view(in.dht), in.opts);
    for (std::size_t n = 0; n + 1 < c.cu.size(); ++n) {
      const Index t0 = c.cu[n], len = c.cu[n + 1] - c.cu[n];
      const auto sl = [&](const Tensor<float, 4>& x) { return time_slice(x, t0, len); };
      const auto q = sl(in.q), k = sl(in.k), v = sl(in.v), gk = sl(in.gk), gv = sl(in.gv), d = sl(in.do_);
      const auto h0 = state_slice(in.h0, static_cast<Index>(n)), dht = state_slice(in.dht, static_cast<Index>(n));
      GLAOptions o = in.opts;
      o.cu_seqlens.clear();
      o.initial_state = h0;
      const auto r = fused_recurrent_gla_backward(view(q), view(k), view(v), view(gk), view(gv), view(d),
                                                         view(dht), o);
      INFO("sequence " << n << " length " << len << " reverse " << reverse);
      CHECK(test::compare(r.dq, sl(packed.dq)).max_abs == 0);
      CHECK(test::compare(r.dk, sl(packed.dk)).max_abs == 0);
      CHECK(test::compare(r.dv, sl(packed.dv)).max_abs == 0);
      CHECK(test::compare(*r.dgk, sl(*packed.dgk)).max_abs == 0);
      CHECK(test::compare(*r.dgv, sl(*packed.dgv)).max_abs == 0);
      CHECK(test::compare(*r.dh0, state_slice(*packed.dh0, static_cast<Index>(n))).max_abs == 0);
      if (len == 0) CHECK(test::compare(*r.dh0, dht).max_abs == 0);  // an empty sequence passes dht through
    }
  }
}

TEST_CASE("fused_recurrent_gla_backward: state_v_first is the transpose", "[fused_recurrent][backward]") {
  RecCase c;
  c.B = 2;
  c.T = 50;
  c.H = 3;
  c.K = 16;
  c.V = 60;
  RecInputs<float> in;
  test::make_rec_inputs(in, c, 1700);
  const auto a = fused_recurrent_gla_backward(view(in.q), view(in.k), view(in.v), view(in.gk), view(in.gv),
                                                     view(in.do_), view(in.dht), in.opts);
  const std::array<int, 4> swap{0, 1, 3, 2};
  const Tensor<float, 4> h0t = in.h0.shuffle(swap), dhtt = in.dht.shuffle(swap);
  GLAOptions o = in.opts;
  o.state_v_first = true;
  o.initial_state = h0t;
  const auto b = fused_recurrent_gla_backward(view(in.q), view(in.k), view(in.v), view(in.gk), view(in.gv),
                                                     view(in.do_), view(dhtt), o);
  CHECK(test::compare(b.dq, a.dq).max_abs == 0);
  CHECK(test::compare(b.dk, a.dk).max_abs == 0);
  CHECK(test::compare(b.dv, a.dv).max_abs == 0);
  CHECK(test::compare(*b.dgk, *a.dgk).max_abs == 0);
  CHECK(test::compare(*b.dgv, *a.dgv).max_abs == 0);
  const Tensor<float, 4> dh0t = a.dh0->shuffle(swap);
  REQUIRE(b.dh0->dimension(2) == c.V);
  CHECK(test::compare(*b.dh0, dh0t).max_abs == 0);
}

TEST_CASE("fused_recurrent_gla_backward: convenience API, absent gradients, dh0 in place over dht, threads",
          "[fused_recurrent][backward]") {
  RecCase c;
  c.B = 2;
  c.T = 45;
  c.H = 3;
  c.K = 16;
  c.V = 24;
  c.gates = test::kGkOnly;
  RecInputs<float> in;
  test::make_rec_inputs(in, c, 1800);
  const auto run = [&] {
    return fused_recurrent_gla_backward(view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c),
                                               view(in.do_), view(in.dht), in.opts);
  };
  const auto a = run();
  CHECK(a.dgk.has_value());
  CHECK_FALSE(a.dgv.has_value());
  REQUIRE(a.dh0.has_value());

  GradOut<float> g(c);
  run_backward_into(c, in, true, g);
  CHECK(test::compare(g.dq, a.dq).max_abs == 0);
  CHECK(test::compare(g.dgk, *a.dgk).max_abs == 0);
  CHECK(test::compare(g.dh0, *a.dh0).max_abs == 0);

  // dh0 written over the dht buffer.
  Tensor<float, 4> buf = in.dht;
  GradOut<float> g2(c);
  fused_recurrent_gla_backward_into(view(in.q), view(in.k), view(in.v), in.gk_view(c), std::nullopt,
                                           view(in.do_), view(buf), in.opts, mut_view(g2.dq), mut_view(g2.dk),
                                           mut_view(g2.dv), mut_view(g2.dgk), std::nullopt, mut_view(buf));
  CHECK(test::compare(buf, *a.dh0).max_abs == 0);
  CHECK(test::compare(g2.dk, a.dk).max_abs == 0);

  // Without an initial state there is no dh0; the other gradients do not change (h0 = 0 vs none differ in S).
  GLAOptions no_h0 = in.opts;
  no_h0.initial_state.reset();
  const auto b = fused_recurrent_gla_backward(view(in.q), view(in.k), view(in.v), in.gk_view(c), std::nullopt,
                                                     view(in.do_), view(in.dht), no_h0);
  CHECK_FALSE(b.dh0.has_value());
  CHECK(test::compare(b.dk, a.dk).max_abs == 0);  // dk, dv do not depend on the states
  CHECK(test::compare(b.dv, a.dv).max_abs == 0);

  test::ThreadCountGuard guard;
  set_num_threads(1);
  const auto t1 = run();
  set_num_threads(2);
  const auto t2 = run();
  CHECK(test::compare(t1.dq, t2.dq).max_abs == 0);
  CHECK(test::compare(*t1.dgk, *t2.dgk).max_abs == 0);
  CHECK(test::compare(*t1.dh0, *t2.dh0).max_abs == 0);
}

namespace {

/// The backward on one golden case: gradients vs the float64 truth and, when stored, vs fla's own.
void check_golden_backward(const test::Golden& gf, const std::string& cs) {
  const auto m = gf.meta(cs);
  const auto q = gf.get<float, 4>(cs + ".q"), k = gf.get<float, 4>(cs + ".k"), v = gf.get<float, 4>(cs + ".v");
  const auto gk = gf.get<float, 4>(cs + ".gk"), do_ = gf.get<float, 4>(cs + ".do");
  const auto dht = gf.get<float, 4>(cs + ".dht");
  std::optional<Tensor<float, 4>> gv, h0;
  if (m.value("has_gv", false)) gv = gf.get<float, 4>(cs + ".gv");
  if (m.value("has_h0", false)) h0 = gf.get<float, 4>(cs + ".h0");
  GLAOptions o;
  o.scale = static_cast<float>(m.at("scale").get<double>());
  o.reverse = m.value("reverse", false);
  if (!m.at("cu_seqlens").is_null()) o.cu_seqlens = gf.ints(cs + ".cu_seqlens");
  if (h0) o.initial_state = *h0;
  std::optional<ConstTensorMap<float, 4>> gvv;
  if (gv) gvv.emplace(view(*gv));
  const auto g = fused_recurrent_gla_backward(view(q), view(k), view(v), view(gk), gvv, view(do_), view(dht), o);
  INFO("golden case " << cs);
  const auto check = [&](const std::string& name, const Tensor<float, 4>& got) {
    test::check_close("golden backward vs *_ref (fp32)", cs + "." + name, got, gf.get<float, 4>(cs + "." + name + "_ref"),
                      1e-5);
    if (gf.has(cs + "." + name + "_fused_recurrent"))
      test::check_close("golden backward vs fla fused_recurrent", cs + "." + name + " (fla)", got,
                        gf.get<float, 4>(cs + "." + name + "_fused_recurrent"), 2e-5);
  };
  check("dq", g.dq);
  check("dk", g.dk);
  check("dv", g.dv);
  check("dgk", *g.dgk);
  if (gv) check("dgv", *g.dgv);
  REQUIRE(g.dh0.has_value() == h0.has_value());
  if (h0) check("dh0", *g.dh0);
}

}  // namespace

TEST_CASE("fused_recurrent_gla_backward: fla golden data", "[fused_recurrent][backward][golden]") {
  for (const char* file : {"ops-gv_reverse", "ops-gv_varlen", "ops-chunk_cases"}) {
    const test::Golden gf(file);
    for (const std::string& cs : gf.cases()) check_golden_backward(gf, cs);
  }
}

TEST_CASE("fused_recurrent_gla_backward: every gla::Error path, nothing written", "[fused_recurrent][backward][errors]") {
  const Index B = 2, T = 6, H = 2, K = 3, V = 4;
  Tensor<float, 4> q(B, T, H, K), k(B, T, H, K), v(B, T, H, V), gk(B, T, H, K), gv(B, T, H, V), d(B, T, H, V);
  q.setConstant(0.5f);
  k.setConstant(0.5f);
  v.setConstant(0.5f);
  gk.setConstant(-0.1f);
  gv.setConstant(-0.1f);
  d.setConstant(1.0f);
  Tensor<float, 4> h0(B, H, K, V), dht(B, H, K, V);
  h0.setConstant(1.0f);
  dht.setConstant(1.0f);
  Tensor<float, 4> dq(B, T, H, K), dk(B, T, H, K), dv(B, T, H, V), dgk(B, T, H, K), dgv(B, T, H, V), dh0(B, H, K, V);
  const float sentinel = 7.0f;
  const auto reset = [&] {
    for (Tensor<float, 4>* t : {&dq, &dk, &dv, &dgk, &dgv, &dh0}) t->setConstant(sentinel);
  };
  const auto untouched = [&] {
    bool ok = true;
    for (const Tensor<float, 4>* t : {&dq, &dk, &dv, &dgk, &dgv, &dh0}) ok = ok && test::all_equal_to(*t, sentinel);
    return ok;
  };
  GLAOptions opts;
  opts.initial_state = h0;
  // The full argument list, each engaged with a valid value; a test re-points one of them. Every view is held in
  // a std::optional and re-pointed with reset() + emplace(): assigning to an engaged Eigen TensorMap would copy
  // data instead.
  struct Args {
    std::optional<ConstTensorMap<float, 4>> q, k, v, gk, gv, do_, dht;
    GLAOptions opts;
    std::optional<gla::View<float, 4>> dq, dk, dv, dgk, dgv, dh0;
  };
  const auto repoint = [](auto& opt, auto map) {
    opt.reset();
    opt.emplace(map);
  };
  const auto valid = [&] {
    Args a;
    a.q.emplace(view(q));
    a.k.emplace(view(k));
    a.v.emplace(view(v));
    a.gk.emplace(view(gk));
    a.gv.emplace(view(gv));
    a.do_.emplace(view(d));
    a.dht.emplace(view(dht));
    a.opts.initial_state = h0;
    a.dq.emplace(mut_view(dq));
    a.dk.emplace(mut_view(dk));
    a.dv.emplace(mut_view(dv));
    a.dgk.emplace(mut_view(dgk));
    a.dgv.emplace(mut_view(dgv));
    a.dh0.emplace(mut_view(dh0));
    return a;
  };
  const auto call = [](const Args& a) {
    fused_recurrent_gla_backward_into(*a.q, *a.k, *a.v, a.gk, a.gv, *a.do_, a.dht, a.opts, *a.dq, *a.dk, *a.dv,
                                             a.dgk, a.dgv, a.dh0);
  };
  // Builds a valid argument set, lets `modify` change it, and requires a gla::Error and untouched outputs.
  const auto expect = [&](auto&& modify, std::initializer_list<const char*> needles) {
    Args a = valid();
    modify(a);
    reset();
    test::require_gla_error([&] { call(a); }, needles);
    CHECK(untouched());
  };
  const char* fn = "fused_recurrent_gla_backward";

  SECTION("the valid call writes everything") {
    reset();
    call(valid());
    for (const Tensor<float, 4>* t : {&dq, &dk, &dv, &dgk, &dgv, &dh0}) {
      bool none_left = true;
      for (Index i = 0; i < t->size(); ++i) none_left = none_left && t->data()[i] != sentinel;
      CHECK(none_left);
    }
  }
  SECTION("inputs") {
    Tensor<float, 4> kb(B, T, H, K + 1), gkb(B, T, H, V), gvb(B, T, H, K), db(B, T, H, K), dhtb(B, H, V, K);
    for (Tensor<float, 4>* t : {&kb, &gkb, &gvb, &db, &dhtb}) t->setZero();
    expect([&](Args& a) { repoint(a.k, view(kb)); }, {fn, "k is [2,6,2,4], expected [B=2,T=6,H=2,K=3]"});
    expect([&](Args& a) { repoint(a.gk, view(gkb)); }, {fn, "gk is [2,6,2,4], expected [B=2,T=6,H=2,K=3]"});
    expect([&](Args& a) { repoint(a.gv, view(gvb)); }, {fn, "gv is [2,6,2,3], expected [B=2,T=6,H=2,V=4]"});
    expect([&](Args& a) { repoint(a.do_, view(db)); }, {fn, "do_ is [2,6,2,3], expected [B=2,T=6,H=2,V=4]"});
    expect([&](Args& a) { repoint(a.dht, view(dhtb)); }, {fn, "dht is [2,2,4,3], expected [N=2,H=2,K=3,V=4]"});
    expect([&](Args& a) { a.opts.cu_seqlens = {0, 6}; }, {fn, "the batch size is 2"});
    Tensor<float, 4> h3(3, H, K, V);
    h3.setZero();
    expect([&](Args& a) { a.opts.initial_state = h3; }, {fn, "initial_state has 3 states"});
    // The convenience API validates the same way.
    test::require_gla_error(
        [&] {
          fused_recurrent_gla_backward(view(q), view(k), view(v), view(gk), view(gv), view(db), view(dht), opts);
        },
        {fn, "do_ is [2,6,2,3]"});
  }
  SECTION("state_v_first layouts of dht and dh0") {
    Tensor<float, 4> h0t(B, H, V, K), dhtt(B, H, V, K);
    h0t.setZero();
    dhtt.setZero();
    const auto v_first = [&](Args& a) {
      a.opts.state_v_first = true;
      a.opts.initial_state = h0t;
    };
    expect(v_first, {fn, "dht (state_v_first) is [2,2,3,4], expected [N=2,H=2,V=4,K=3]"});
    expect(
        [&](Args& a) {
          v_first(a);
          repoint(a.dht, view(dhtt));
        },
        {fn, "dh0 (state_v_first) is [2,2,3,4], expected [N=2,H=2,V=4,K=3]"});
  }
  SECTION("forward-only extras are rejected") {
    expect([&](Args& a) { a.opts.gamma = {0.9f}; }, {fn, "gamma is set", "forward-only"});
    expect([&](Args& a) { a.opts.state_clamp_min = -1.0f; }, {fn, "state_clamp_min is set", "forward-only"});
    expect([&](Args& a) { a.opts.state_clamp_max = 1.0f; }, {fn, "state_clamp_max is set", "forward-only"});
    GLAOptions clamped = opts;
    clamped.state_clamp_max = 1.0f;
    test::require_gla_error(
        [&] {
          fused_recurrent_gla_backward(view(q), view(k), view(v), view(gk), view(gv), view(d), view(dht), clamped);
        },
        {fn, "state_clamp_max is set"});
  }
  SECTION("output views") {
    Tensor<float, 4> wrong_k(B, T, H, V), wrong_v(B, T, H, K), wrong_s(B, H, V, K);
    for (Tensor<float, 4>* t : {&wrong_k, &wrong_v, &wrong_s}) t->setConstant(sentinel);
    expect([&](Args& a) { repoint(a.dq, mut_view(wrong_k)); }, {fn, "dq is [2,6,2,4], expected [B=2,T=6,H=2,K=3]"});
    expect([&](Args& a) { repoint(a.dk, mut_view(wrong_k)); }, {fn, "dk is [2,6,2,4], expected [B=2,T=6,H=2,K=3]"});
    expect([&](Args& a) { repoint(a.dv, mut_view(wrong_v)); }, {fn, "dv is [2,6,2,3], expected [B=2,T=6,H=2,V=4]"});
    expect([&](Args& a) { repoint(a.dgk, mut_view(wrong_k)); }, {fn, "dgk is [2,6,2,4], expected [B=2,T=6,H=2,K=3]"});
    expect([&](Args& a) { repoint(a.dgv, mut_view(wrong_v)); }, {fn, "dgv is [2,6,2,3], expected [B=2,T=6,H=2,V=4]"});
    expect([&](Args& a) { repoint(a.dh0, mut_view(wrong_s)); }, {fn, "dh0 is [2,2,4,3], expected [N=2,H=2,K=3,V=4]"});
    CHECK(test::all_equal_to(wrong_k, sentinel));
    CHECK(test::all_equal_to(wrong_v, sentinel));
    CHECK(test::all_equal_to(wrong_s, sentinel));
  }
  SECTION("gradient views present iff their inputs are") {
    expect([&](Args& a) { a.dgk.reset(); }, {fn, "dgk is not given", "gk is given"});
    expect([&](Args& a) { a.gk.reset(); }, {fn, "dgk is given", "gk is not given"});
    expect([&](Args& a) { a.dgv.reset(); }, {fn, "dgv is not given", "gv is given"});
    expect([&](Args& a) { a.gv.reset(); }, {fn, "dgv is given", "gv is not given"});
    expect([&](Args& a) { a.dh0.reset(); }, {fn, "dh0 is not given", "initial_state is given"});
    expect([&](Args& a) { a.opts.initial_state.reset(); }, {fn, "dh0 is given", "initial_state is not given"});
  }
  SECTION("overlapping buffers") {
    // dq written over q, dk over dq, dh0 over a shifted dht: each would corrupt the computation.
    Tensor<float, 4> big(B, T, H, 2 * K);
    big.setConstant(0.5f);
    expect(
        [&](Args& a) {
          repoint(a.q, ConstTensorMap<float, 4>(big.data(), B, T, H, K));
          repoint(a.dq, TensorMap<float, 4>(big.data() + 1, B, T, H, K));
        },
        {fn, "output dq overlaps input q"});
    CHECK(test::all_equal_to(big, 0.5f));
    Tensor<float, 4> pool(1, 1, 1, B * T * H * K + 1);
    pool.setConstant(sentinel);
    expect(
        [&](Args& a) {
          repoint(a.dq, TensorMap<float, 4>(pool.data(), B, T, H, K));
          repoint(a.dk, TensorMap<float, 4>(pool.data() + 1, B, T, H, K));
        },
        {fn, "output dk overlaps output dq"});
    CHECK(test::all_equal_to(pool, sentinel));
    Tensor<float, 4> buf(B * H * K * V + 1, 1, 1, 1);
    buf.setConstant(1.0f);
    expect(
        [&](Args& a) {
          repoint(a.dht, ConstTensorMap<float, 4>(buf.data(), B, H, K, V));
          repoint(a.dh0, TensorMap<float, 4>(buf.data() + 1, B, H, K, V));
        },
        {fn, "output dh0 overlaps input dht"});
    CHECK(test::all_equal_to(buf, 1.0f));
  }
}
