// Tests of the float64 reference (gla/naive.hpp): the forward on hand-computed cases, the backward against
// central finite differences on tiny shapes, both against fla's float64 golden truth, and the error paths.

#include <gla/naive.hpp>

#include "support/catch.hpp"
#include "support/golden.hpp"
#include "support/recurrent_cases.hpp"
#include "support/test_utils.hpp"

#include <functional>
#include <string>

using namespace gla;

namespace {

using test::require_gla_error;

/// A tiny problem in double: inputs, upstream gradients and options.
struct Tiny {
  std::string name;
  Index B, T, H, K, V;
  bool gk, gv, reverse, h0, v_first;
  std::vector<std::int64_t> cu;
  std::optional<float> scale;
};

struct TinyData {
  Tensor<double, 4> q, k, v, gk, gv, do_;
  Tensor<float, 4> h0, dht;
  GLAOptions opts;
  Index N = 0;
};

TinyData make_tiny(const Tiny& c, std::uint64_t salt) {
  auto g = test::rng(salt);
  TinyData d;
  d.N = c.cu.empty() ? c.B : static_cast<Index>(c.cu.size()) - 1;
  d.q = Tensor<double, 4>(c.B, c.T, c.H, c.K);
  d.k = Tensor<double, 4>(c.B, c.T, c.H, c.K);
  d.v = Tensor<double, 4>(c.B, c.T, c.H, c.V);
  d.gk = Tensor<double, 4>(c.B, c.T, c.H, c.K);
  d.gv = Tensor<double, 4>(c.B, c.T, c.H, c.V);
  d.do_ = Tensor<double, 4>(c.B, c.T, c.H, c.V);
  const Index s2 = c.v_first ? c.V : c.K, s3 = c.v_first ? c.K : c.V;
  d.h0 = Tensor<float, 4>(d.N, c.H, s2, s3);
  d.dht = Tensor<float, 4>(d.N, c.H, s2, s3);
  test::fill_uniform(d.q, g, -1, 1);
  test::fill_uniform(d.k, g, -1, 1);
  test::fill_uniform(d.v, g, -1, 1);
  test::fill_gate(d.gk, g, 1.0);
  test::fill_gate(d.gv, g, 1.0);
  test::fill_normal(d.do_, g);
  test::fill_uniform(d.h0, g, -1, 1);
  test::fill_normal(d.dht, g);
  d.opts.scale = c.scale;
  d.opts.reverse = c.reverse;
  d.opts.state_v_first = c.v_first;
  d.opts.cu_seqlens = c.cu;
  d.opts.output_final_state = true;
  if (c.h0) d.opts.initial_state = d.h0;
  return d;
}

/// L = Σ o·do + Σ final_state·dht in double.
double loss(const Tiny& c, const TinyData& d, const GLAOptions& opts) {
  std::optional<ConstTensorMap<double, 4>> gk, gv;
  if (c.gk) gk.emplace(view(d.gk));
  if (c.gv) gv.emplace(view(d.gv));
  const auto r = naive_recurrent_gla<double>(view(d.q), view(d.k), view(d.v), gk, gv, opts);
  double l = 0;
  for (Index i = 0; i < r.o.size(); ++i) l += r.o.data()[i] * d.do_.data()[i];
  for (Index i = 0; i < r.final_state.size(); ++i) l += r.final_state.data()[i] * static_cast<double>(d.dht.data()[i]);
  return l;
}

/// Central differences of the loss w.r.t. every element of x (step 1e-5; the loss is smooth and tiny).
Tensor<double, 4> fd_grad(Tensor<double, 4>& x, const std::function<double()>& f) {
  Tensor<double, 4> g(x.dimensions());
  const double h = 1e-5;
  for (Index i = 0; i < x.size(); ++i) {
    const double x0 = x.data()[i];
    x.data()[i] = x0 + h;
    const double lp = f();
    x.data()[i] = x0 - h;
    const double lm = f();
    x.data()[i] = x0;
    g.data()[i] = (lp - lm) / (2 * h);
  }
  return g;
}

/// The loss is linear in h0, so a large step is exact; h0 is float, so divide by the step actually taken.
Tensor<double, 4> fd_grad_h0(Tensor<float, 4>& h0, const std::function<double()>& f) {
  Tensor<double, 4> g(h0.dimensions());
  for (Index i = 0; i < h0.size(); ++i) {
    const float x0 = h0.data()[i];
    h0.data()[i] = x0 + 0.5f;
    const double xp = h0.data()[i];
    const double lp = f();
    h0.data()[i] = x0 - 0.5f;
    const double xm = h0.data()[i];
    const double lm = f();
    h0.data()[i] = x0;
    g.data()[i] = (lp - lm) / (xp - xm);
  }
  return g;
}

}  // namespace

TEST_CASE("naive_recurrent_gla: hand-computed steps with gates, gamma and clamps", "[naive]") {
  // B=1, T=2, H=1, K=V=1: S1 = e^{gk1+gv1}·gamma·h0 + k1 v1, S2 = e^{gk2+gv2}·gamma·S1 + k2 v2, o_t = scale·q_t·S_t.
  Tensor<double, 4> q(1, 2, 1, 1), k(1, 2, 1, 1), v(1, 2, 1, 1), gk(1, 2, 1, 1), gv(1, 2, 1, 1);
  q.setValues({{{{2.0}}, {{-1.0}}}});
  k.setValues({{{{0.5}}, {{3.0}}}});
  v.setValues({{{{4.0}}, {{0.25}}}});
  gk.setValues({{{{-0.5}}, {{-1.0}}}});
  gv.setValues({{{{-0.25}}, {{-2.0}}}});
  Tensor<float, 4> h0(1, 1, 1, 1);
  h0.setConstant(1.5f);
  GLAOptions o;
  o.initial_state = h0;
  o.scale = 0.5f;
  o.gamma = {0.75f};
  const double S1 = std::exp(-0.75) * 0.75 * 1.5 + 2.0, S2 = std::exp(-3.0) * 0.75 * S1 + 0.75;
  const auto r = naive_recurrent_gla<double>(view(q), view(k), view(v), view(gk), view(gv), o);
  CHECK(r.o(0, 0, 0, 0) == Approx(0.5 * 2.0 * S1).epsilon(1e-14));
  CHECK(r.o(0, 1, 0, 0) == Approx(0.5 * -1.0 * S2).epsilon(1e-14));
  CHECK(r.final_state(0, 0, 0, 0) == Approx(S2).epsilon(1e-14));

  SECTION("reverse processes t = 1 first") {
    o.reverse = true;
    const double R1 = std::exp(-3.0) * 0.75 * 1.5 + 0.75, R0 = std::exp(-0.75) * 0.75 * R1 + 2.0;
    const auto rr = naive_recurrent_gla<double>(view(q), view(k), view(v), view(gk), view(gv), o);
    CHECK(rr.o(0, 1, 0, 0) == Approx(0.5 * -1.0 * R1).epsilon(1e-14));
    CHECK(rr.o(0, 0, 0, 0) == Approx(0.5 * 2.0 * R0).epsilon(1e-14));
    CHECK(rr.final_state(0, 0, 0, 0) == Approx(R0).epsilon(1e-14));
  }
  SECTION("clamps apply after each step and o uses the clamped state") {
    o.state_clamp_max = 2.2f;  // S1 ≈ 2.53 is clamped to 2.2 before step 2
    const double C1 = 2.2, C2 = std::exp(-3.0) * 0.75 * C1 + 0.75;
    const auto rc = naive_recurrent_gla<double>(view(q), view(k), view(v), view(gk), view(gv), o);
    CHECK(rc.o(0, 0, 0, 0) == Approx(0.5 * 2.0 * C1).epsilon(1e-7));
    CHECK(rc.final_state(0, 0, 0, 0) == Approx(C2).epsilon(1e-7));
    o.state_clamp_max.reset();
    o.state_clamp_min = 1.0f;  // S2 ≈ 0.85 is lifted to 1
    const auto rm = naive_recurrent_gla<double>(view(q), view(k), view(v), view(gk), view(gv), o);
    CHECK(rm.final_state(0, 0, 0, 0) == 1.0);
    CHECK(rm.o(0, 1, 0, 0) == -0.5);
  }
}

TEST_CASE("naive_recurrent_gla_backward matches central finite differences", "[naive][backward]") {
  const Tiny cases[] = {
      {"gk, h0", 2, 5, 2, 3, 2, true, false, false, true, false, {}, {}},
      {"gk+gv, reverse, h0, scale", 2, 5, 2, 3, 2, true, true, true, true, false, {}, 0.7f},
      {"gv only, no h0", 1, 4, 2, 2, 3, false, true, false, false, false, {}, {}},
      {"no gates", 1, 4, 1, 3, 3, false, false, false, true, false, {}, {}},
      {"varlen with an empty sequence, gk+gv, h0", 1, 5, 2, 2, 3, true, true, false, true, false, {0, 2, 2, 5}, {}},
      {"varlen reverse, gk", 1, 5, 1, 3, 2, true, false, true, true, false, {0, 1, 5}, 0.4f},
      {"state_v_first, gk+gv, reverse", 2, 3, 1, 3, 2, true, true, true, true, true, {}, {}},
      {"T = 1", 1, 1, 2, 2, 2, true, true, false, true, false, {}, {}},
  };
  std::uint64_t salt = 100;
  for (const Tiny& c : cases) {
    SECTION(c.name) {
      TinyData d = make_tiny(c, salt);
      std::optional<ConstTensorMap<double, 4>> gk, gv;
      if (c.gk) gk.emplace(view(d.gk));
      if (c.gv) gv.emplace(view(d.gv));
      const auto g = naive_recurrent_gla_backward<double>(view(d.q), view(d.k), view(d.v), gk, gv,
                                                                   view(d.do_), view(d.dht), d.opts);
      REQUIRE(g.dgk.has_value() == c.gk);
      REQUIRE(g.dgv.has_value() == c.gv);
      const auto f = [&] { return loss(c, d, d.opts); };
      const double tol = 1e-8;
      const auto check = [&](const char* what, const Tensor<double, 4>& got, const Tensor<double, 4>& fd) {
        INFO(c.name);
        test::check_close("naive backward vs central differences (fp64)", what, got, fd, tol);
      };
      check("dq", g.dq, fd_grad(d.q, f));
      check("dk", g.dk, fd_grad(d.k, f));
      check("dv", g.dv, fd_grad(d.v, f));
      if (c.gk) check("dgk", *g.dgk, fd_grad(d.gk, f));
      if (c.gv) check("dgv", *g.dgv, fd_grad(d.gv, f));
      // dh0: with no initial state the gradient is taken at h0 = 0.
      GLAOptions o0 = d.opts;
      Tensor<float, 4> h0 = d.h0;
      if (!c.h0) h0.setZero();
      o0.initial_state = h0;
      check("dh0", g.dh0, fd_grad_h0(h0, [&] { return loss(c, d, o0); }));
    }
    ++salt;
  }
}

TEST_CASE("naive_recurrent_gla_backward: no initial state equals a zero initial state", "[naive][backward]") {
  const Tiny c{"", 1, 6, 2, 3, 4, true, true, false, false, false, {}, {}};
  TinyData d = make_tiny(c, 7);
  const auto a = naive_recurrent_gla_backward<double>(view(d.q), view(d.k), view(d.v), view(d.gk), view(d.gv),
                                                      view(d.do_), view(d.dht), d.opts);
  Tensor<float, 4> zero(d.h0.dimensions());
  zero.setZero();
  GLAOptions o = d.opts;
  o.initial_state = zero;
  const auto b = naive_recurrent_gla_backward<double>(view(d.q), view(d.k), view(d.v), view(d.gk), view(d.gv),
                                                      view(d.do_), view(d.dht), o);
  CHECK(test::compare(a.dq, b.dq).max_abs == 0);
  CHECK(test::compare(a.dk, b.dk).max_abs == 0);
  CHECK(test::compare(*a.dgk, *b.dgk).max_abs == 0);
  CHECK(test::compare(a.dh0, b.dh0).max_abs == 0);
  // Without dht the state terms vanish: dh0 is then the gradient through o alone.
  const auto c0 = naive_recurrent_gla_backward<double>(view(d.q), view(d.k), view(d.v), view(d.gk), view(d.gv),
                                                       view(d.do_), std::nullopt, d.opts);
  Tensor<float, 4> zdht(d.dht.dimensions());
  zdht.setZero();
  const auto c1 = naive_recurrent_gla_backward<double>(view(d.q), view(d.k), view(d.v), view(d.gk), view(d.gv),
                                                       view(d.do_), view(zdht), d.opts);
  CHECK(test::compare(c0.dv, c1.dv).max_abs == 0);
  CHECK(test::compare(*c0.dgv, *c1.dgv).max_abs == 0);
  CHECK(test::compare(c0.dh0, c1.dh0).max_abs == 0);
}

namespace {

/// Runs the reference on one golden case and compares o, ht and every stored *_ref gradient.
void check_golden_case(const test::Golden& gf, const std::string& cs, double tol) {
  const auto m = gf.meta(cs);
  const auto q = gf.get<float, 4>(cs + ".q"), k = gf.get<float, 4>(cs + ".k"), v = gf.get<float, 4>(cs + ".v");
  const auto gk = gf.get<float, 4>(cs + ".gk");
  std::optional<Tensor<float, 4>> gv, h0;
  if (m.value("has_gv", false)) gv = gf.get<float, 4>(cs + ".gv");
  if (m.value("has_h0", false)) h0 = gf.get<float, 4>(cs + ".h0");
  GLAOptions o;
  o.scale = static_cast<float>(m.at("scale").get<double>());
  o.reverse = m.value("reverse", false);
  if (!m.at("cu_seqlens").is_null()) o.cu_seqlens = m.at("cu_seqlens").get<std::vector<std::int64_t>>();
  if (h0) o.initial_state = *h0;
  o.output_final_state = true;
  std::optional<ConstTensorMap<float, 4>> gvv;
  if (gv) gvv.emplace(view(*gv));
  const auto r = naive_recurrent_gla<double>(view(q), view(k), view(v), view(gk), gvv, o);
  const auto do_ = gf.get<float, 4>(cs + ".do"), dht = gf.get<float, 4>(cs + ".dht");
  const auto g = naive_recurrent_gla_backward<double>(view(q), view(k), view(v), view(gk), gvv, view(do_),
                                                             view(dht), o);
  const auto check = [&](const std::string& name, const Tensor<double, 4>& got) {
    test::check_close("naive (fp64) vs golden *_ref (stored as float32)", cs + "." + name, got,
                      gf.get<float, 4>(cs + "." + name + "_ref"), tol);
  };
  check("o", r.o);
  check("ht", r.final_state);
  check("dq", g.dq);
  check("dk", g.dk);
  check("dv", g.dv);
  check("dgk", *g.dgk);
  if (gv) check("dgv", *g.dgv);
  if (gf.has(cs + ".dh0_ref")) check("dh0", g.dh0);
}

}  // namespace

TEST_CASE("naive reference agrees with fla's float64 golden truth", "[naive][golden]") {
  // The *_ref tensors are float64 autograd results stored as float32: agreement is limited to float rounding.
  for (const char* file : {"ops-gv_reverse", "ops-gv_varlen", "ops-chunk_cases"}) {
    const test::Golden gf(file);
    for (const std::string& cs : gf.cases()) check_golden_case(gf, cs, 1e-6);
  }
}

TEST_CASE("naive_recurrent_gla_backward error paths", "[naive][errors]") {
  Tensor<double, 4> q(1, 4, 2, 3), k(1, 4, 2, 3), v(1, 4, 2, 2), do_(1, 4, 2, 2), bad(1, 4, 2, 3);
  q.setConstant(0.1);
  k.setConstant(0.1);
  v.setConstant(0.1);
  do_.setConstant(1.0);
  Tensor<float, 4> dht(1, 2, 3, 2), dht_bad(1, 2, 2, 3);
  dht.setZero();
  dht_bad.setZero();
  GLAOptions o;
  const auto call = [&](const Tensor<double, 4>& d, const Tensor<float, 4>& ht, const GLAOptions& op) {
    return naive_recurrent_gla_backward<double>(view(q), view(k), view(v), std::nullopt, std::nullopt, view(d),
                                                view(ht), op);
  };
  require_gla_error([&] { call(bad, dht, o); }, {"naive_recurrent_gla_backward", "do_ is [1,4,2,3]"});
  require_gla_error([&] { call(do_, dht_bad, o); }, {"naive_recurrent_gla_backward", "dht is [1,2,2,3]"});
  GLAOptions vf;
  vf.state_v_first = true;
  require_gla_error([&] { call(do_, dht, vf); }, {"naive_recurrent_gla_backward", "dht (state_v_first)"});
  require_gla_error(
      [&] {
        naive_recurrent_gla_backward<double>(view(q), view(k), view(v), view(bad), view(bad), view(do_), view(dht), o);
      },
      {"naive_recurrent_gla_backward", "gv is [1,4,2,3]"});
  require_gla_error(
      [&] {
        naive_recurrent_gla_backward<double>(view(q), view(k), view(v), view(v), std::nullopt, view(do_), view(dht), o);
      },
      {"naive_recurrent_gla_backward", "gk is [1,4,2,2]"});
  GLAOptions gm;
  gm.gamma = {0.9f};
  require_gla_error([&] { call(do_, dht, gm); }, {"naive_recurrent_gla_backward", "gamma", "forward-only"});
  GLAOptions cl;
  cl.state_clamp_max = 1.0f;
  require_gla_error([&] { call(do_, dht, cl); }, {"naive_recurrent_gla_backward", "state_clamp_max", "forward-only"});
  cl.state_clamp_max.reset();
  cl.state_clamp_min = -1.0f;
  require_gla_error([&] { call(do_, dht, cl); }, {"naive_recurrent_gla_backward", "state_clamp_min", "forward-only"});
}

TEST_CASE("naive_recurrent_gla error paths of the extras", "[naive][errors]") {
  Tensor<double, 4> q(1, 2, 3, 2), v(1, 2, 3, 2);
  q.setConstant(0.5);
  v.setConstant(0.5);
  GLAOptions o;
  const auto call = [&] { return naive_recurrent_gla<double>(view(q), view(q), view(v), std::nullopt, std::nullopt, o); };
  o.gamma = {0.9f, 0.8f};
  require_gla_error(call, {"naive_recurrent_gla", "gamma has 2 values, expected 1 or H = 3"});
  o.gamma = {std::numeric_limits<float>::infinity()};
  require_gla_error(call, {"naive_recurrent_gla", "gamma holds"});
  o.gamma.clear();
  o.state_clamp_min = 1.0f;
  o.state_clamp_max = 0.0f;
  require_gla_error(call, {"naive_recurrent_gla", "state_clamp_min is 1", "state_clamp_max"});
  o.state_clamp_min = std::numeric_limits<float>::quiet_NaN();
  require_gla_error(call, {"naive_recurrent_gla", "state_clamp_min is NaN"});
  o.state_clamp_min.reset();
  o.state_clamp_max = std::numeric_limits<float>::quiet_NaN();
  require_gla_error(call, {"naive_recurrent_gla", "state_clamp_max is NaN"});
}
