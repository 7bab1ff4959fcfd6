// Tests of the fused_recurrent_gla forward against the float64 reference, its equivalences (layouts, state
// carry, varlen, threads), the extras (gamma, clamps), fla's golden data, and every gla::Error path.

#include <gla/fused_recurrent.hpp>
#include <gla/naive.hpp>

#include "support/catch.hpp"
#include "support/golden.hpp"
#include "support/recurrent_cases.hpp"
#include "support/test_utils.hpp"

#include <algorithm>
#include <array>
#include <string>

using namespace gla;
using test::RecCase;
using test::RecInputs;
using test::type_name;

namespace {

/// o: fp32 1e-5, fp64 1e-12, bf16/half 5e-3 (o is rounded to the input type) vs the float64 reference on the
/// same (rounded) inputs.
template <class T>
double o_tol() {
  if constexpr (std::is_same_v<T, float>) return 1e-5;
  else if constexpr (std::is_same_v<T, double>) return 1e-12;
  else return 5e-3;
}
/// final_state is float for every T: fp64 is limited to float rounding (1e-7), the others compute in float.
template <class T>
double state_tol() {
  return std::is_same_v<T, double> ? 1e-7 : 1e-5;
}

template <class T>
Tensor<float, 4> state_tensor(const RecCase& c) {
  const auto sd = test::rec_state_dims(c);
  return Tensor<float, 4>(sd[0], sd[1], sd[2], sd[3]);
}

/// Runs the `_into` core on NaN-filled outputs and compares o and the final state with the reference.
template <class T>
void check_forward(const RecCase& c, std::uint64_t salt) {
  RecInputs<T> in;
  test::make_rec_inputs(in, c, salt);
  in.opts.output_final_state = true;
  Tensor<T, 4> o(c.B, c.T, c.H, c.V);
  Tensor<float, 4> ht = state_tensor<T>(c);
  test::fill_nan(o);
  test::fill_nan(ht);
  fused_recurrent_gla_into(view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c), in.opts, mut_view(o),
                              mut_view(ht));
  const auto ref = naive_recurrent_gla<double>(view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c),
                                                  in.opts);
  INFO(type_name<T>() << " " << c.str());
  test::check_close("forward o " + type_name<T>(), "o", o, ref.o, o_tol<T>());
  test::check_close("forward final_state (float) from " + type_name<T>(), "final_state", ht, ref.final_state,
                    state_tol<T>());
}

}  // namespace

TEMPLATE_TEST_CASE("fused_recurrent_gla forward: T sweep around block sizes", "[fused_recurrent][forward]", float,
                   double, Eigen::bfloat16, Eigen::half) {
  const std::array<Index, 11> Ts{1, 15, 16, 17, 63, 64, 65, 127, 128, 129, 1000};
  const std::array<double, 4> norms{1.0, 0.1, 16.0, 0.0};
  std::uint64_t salt = 1;
  for (std::size_t i = 0; i < Ts.size(); ++i) {
    RecCase c;
    c.B = 2;
    c.T = Ts[i];
    c.H = i % 2 ? 1 : 3;
    c.K = 16;
    c.V = 60;
    c.gates = static_cast<int>(i % 4);
    c.normalizer = norms[i % 4];
    c.reverse = i % 3 == 1;
    c.h0 = i % 2 == 0;
    check_forward<TestType>(c, salt++);
  }
}

TEMPLATE_TEST_CASE("fused_recurrent_gla forward: K, V sweep (K != V)", "[fused_recurrent][forward]", float, double,
                   Eigen::bfloat16, Eigen::half) {
  // {32, 300}: value tiles of whole register blocks of the step (128 floats) and a remainder, at any thread count
  const std::array<std::pair<Index, Index>, 7> kv{
      {{16, 60}, {60, 16}, {64, 100}, {100, 128}, {128, 64}, {60, 64}, {32, 300}}};
  std::uint64_t salt = 50;
  for (const auto& [K, V] : kv) {
    RecCase c;
    c.B = 2;
    c.T = 65;
    c.H = 3;
    c.K = K;
    c.V = V;
    c.gates = test::kBothGates;
    check_forward<TestType>(c, salt++);
  }
}

TEMPLATE_TEST_CASE("fused_recurrent_gla forward: gate modes x gate strengths", "[fused_recurrent][forward]", float,
                   double, Eigen::bfloat16, Eigen::half) {
  std::uint64_t salt = 100;
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
      check_forward<TestType>(c, salt++);
    }
}

TEMPLATE_TEST_CASE("fused_recurrent_gla forward: reverse, h0, scale, state_v_first", "[fused_recurrent][forward]",
                   float, double) {
  std::uint64_t salt = 200;
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
          check_forward<TestType>(c, salt++);
        }
}

TEMPLATE_TEST_CASE("fused_recurrent_gla forward: varlen with empty, single-token and block-straddling sequences",
                   "[fused_recurrent][forward][varlen]", float, double, Eigen::bfloat16) {
  const std::vector<std::vector<std::int64_t>> cus{
      {0, 0, 1, 17, 17, 81, 146},  // lengths 0, 1, 16, 0, 64, 65
      {0, 15},                     // one sequence
      {0, 0, 16},                  // fla's test: an empty sequence first
      {0, 63, 64, 193, 193},       // 63, 1, 129, trailing empty
  };
  std::uint64_t salt = 300;
  for (const auto& cu : cus)
    for (bool reverse : {false, true}) {
      RecCase c;
      c.B = 1;
      c.T = cu.back();
      c.H = 3;
      c.K = 60;
      c.V = 16;
      c.cu = cu;
      c.reverse = reverse;
      c.h0 = !reverse;
      check_forward<TestType>(c, salt++);
    }
}

TEST_CASE("fused_recurrent_gla forward: strong decay stays finite", "[fused_recurrent][forward]") {
  RecCase c;
  c.T = 1000;
  c.H = 2;
  c.K = 64;
  c.V = 48;
  c.normalizer = 0;
  c.reverse = true;
  check_forward<float>(c, 400);
  check_forward<double>(c, 401);
}

TEST_CASE("fused_recurrent_gla forward: the convenience API equals the core", "[fused_recurrent][forward]") {
  RecCase c;
  c.B = 2;
  c.T = 40;
  c.H = 2;
  c.K = 16;
  c.V = 24;
  RecInputs<float> in;
  test::make_rec_inputs(in, c, 410);
  const auto a = fused_recurrent_gla(view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c), in.opts);
  CHECK_FALSE(a.final_state.has_value());
  in.opts.output_final_state = true;
  const auto b = fused_recurrent_gla(view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c), in.opts);
  REQUIRE(b.final_state.has_value());
  CHECK(test::compare(a.o, b.o).max_abs == 0);
  Tensor<float, 4> o(c.B, c.T, c.H, c.V), ht = state_tensor<float>(c);
  test::fill_nan(o);
  test::fill_nan(ht);
  fused_recurrent_gla_into(view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c), in.opts,
                                  mut_view(o), mut_view(ht));
  CHECK(test::compare(o, b.o).max_abs == 0);
  CHECK(test::compare(ht, *b.final_state).max_abs == 0);
  CHECK(test::compare(o, b.o).non_finite == 0);
}

TEST_CASE("fused_recurrent_gla forward: state_v_first is the transpose", "[fused_recurrent][forward]") {
  for (bool reverse : {false, true}) {
    RecCase c;
    c.B = 2;
    c.T = 50;
    c.H = 3;
    c.K = 16;
    c.V = 60;
    c.reverse = reverse;
    RecInputs<float> in;
    test::make_rec_inputs(in, c, 420);
    in.opts.output_final_state = true;
    const auto a = fused_recurrent_gla(view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c), in.opts);
    const std::array<int, 4> swap{0, 1, 3, 2};
    const Tensor<float, 4> h0t = in.h0.shuffle(swap);
    GLAOptions o = in.opts;
    o.state_v_first = true;
    o.initial_state = h0t;
    const auto b = fused_recurrent_gla(view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c), o);
    CHECK(test::compare(b.o, a.o).max_abs == 0);
    const Tensor<float, 4> ht_t = a.final_state->shuffle(swap);
    REQUIRE(b.final_state->dimension(2) == c.V);
    CHECK(test::compare(*b.final_state, ht_t).max_abs == 0);
  }
}

namespace {

/// Tokens [t0, t0+len) of a [B,T,H,D] tensor.
template <class T>
Tensor<T, 4> time_slice(const Tensor<T, 4>& x, Index t0, Index len) {
  const std::array<Index, 4> off{0, t0, 0, 0}, ext{x.dimension(0), len, x.dimension(2), x.dimension(3)};
  return x.slice(off, ext);
}
/// States [n, n+1) of a [N,H,*,*] tensor.
inline Tensor<float, 4> state_slice(const Tensor<float, 4>& x, Index n) {
  const std::array<Index, 4> off{n, 0, 0, 0}, ext{1, x.dimension(1), x.dimension(2), x.dimension(3)};
  return x.slice(off, ext);
}

}  // namespace

TEST_CASE("fused_recurrent_gla forward: one call equals two calls carrying final_state -> initial_state",
          "[fused_recurrent][forward]") {
  for (bool reverse : {false, true})
    for (int gates : {test::kGkOnly, test::kBothGates}) {
      RecCase c;
      c.B = 2;
      c.T = 100;
      c.H = 2;
      c.K = 16;
      c.V = 24;
      c.reverse = reverse;
      c.gates = gates;
      RecInputs<float> in;
      test::make_rec_inputs(in, c, 430);
      in.opts.output_final_state = true;
      const auto full = fused_recurrent_gla(view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c),
                                                   in.opts);
      const Index T1 = 37;
      // Processing order: [0,T1) then [T1,T); reversed: [T1,T) then [0,T1).
      const Index first0 = reverse ? T1 : 0, first_len = reverse ? c.T - T1 : T1;
      const Index second0 = reverse ? 0 : T1, second_len = c.T - first_len;
      const auto run = [&](Index t0, Index len, const Tensor<float, 4>& h0) {
        const auto q = time_slice(in.q, t0, len), k = time_slice(in.k, t0, len), v = time_slice(in.v, t0, len);
        const auto gk = time_slice(in.gk, t0, len), gv = time_slice(in.gv, t0, len);
        GLAOptions o = in.opts;
        o.initial_state = h0;
        return fused_recurrent_gla(view(q), view(k), view(v), view(gk),
                                          gates == test::kBothGates ? std::optional<ConstTensorMap<float, 4>>(view(gv))
                                                                    : std::nullopt,
                                          o);
      };
      const auto r1 = run(first0, first_len, in.h0);
      const auto r2 = run(second0, second_len, *r1.final_state);
      INFO("reverse=" << reverse << " gates=" << gates);
      CHECK(test::compare(r1.o, time_slice(full.o, first0, first_len)).max_abs == 0);
      CHECK(test::compare(r2.o, time_slice(full.o, second0, second_len)).max_abs == 0);
      CHECK(test::compare(*r2.final_state, *full.final_state).max_abs == 0);
    }
}

TEMPLATE_TEST_CASE("fused_recurrent_gla forward: varlen equals per-sequence calls", "[fused_recurrent][forward][varlen]",
                   float, double) {
  RecCase c;
  c.B = 1;
  c.cu = {0, 0, 1, 17, 17, 81, 146};
  c.T = 146;
  c.H = 2;
  c.K = 16;
  c.V = 40;
  for (bool reverse : {false, true}) {
    c.reverse = reverse;
    RecInputs<TestType> in;
    test::make_rec_inputs(in, c, 440);
    in.opts.output_final_state = true;
    const auto packed = fused_recurrent_gla(view(in.q), view(in.k), view(in.v), in.gk_view(c),
                                                      in.gv_view(c), in.opts);
    for (std::size_t n = 0; n + 1 < c.cu.size(); ++n) {
      const Index t0 = c.cu[n], len = c.cu[n + 1] - c.cu[n];
      const auto q = time_slice(in.q, t0, len), k = time_slice(in.k, t0, len), v = time_slice(in.v, t0, len);
      const auto gk = time_slice(in.gk, t0, len), gv = time_slice(in.gv, t0, len);
      const auto h0 = state_slice(in.h0, static_cast<Index>(n));
      GLAOptions o = in.opts;
      o.cu_seqlens.clear();
      o.initial_state = h0;
      const auto r = fused_recurrent_gla(view(q), view(k), view(v), view(gk), view(gv), o);
      INFO("sequence " << n << " length " << len << " reverse " << reverse);
      CHECK(test::compare(r.o, time_slice(packed.o, t0, len)).max_abs == 0);
      CHECK(test::compare(*r.final_state, state_slice(*packed.final_state, static_cast<Index>(n))).max_abs == 0);
      if (len == 0) CHECK(test::compare(*r.final_state, h0).max_abs == 0);  // an empty sequence passes h0 through
    }
  }
}

TEST_CASE("fused_recurrent_gla forward: in-place state update (final_state is the initial_state buffer)",
          "[fused_recurrent][forward]") {
  RecCase c;
  c.B = 2;
  c.T = 30;
  c.H = 3;
  c.K = 16;
  c.V = 24;
  RecInputs<float> in;
  test::make_rec_inputs(in, c, 450);
  in.opts.output_final_state = true;
  const auto ref = fused_recurrent_gla(view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c), in.opts);
  Tensor<float, 4> state = in.h0;
  GLAOptions o = in.opts;
  o.initial_state = state;
  Tensor<float, 4> out(c.B, c.T, c.H, c.V);
  test::fill_nan(out);
  fused_recurrent_gla_into(view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c), o, mut_view(out),
                                  mut_view(state));
  CHECK(test::compare(out, ref.o).max_abs == 0);
  CHECK(test::compare(state, *ref.final_state).max_abs == 0);
}

TEST_CASE("fused_recurrent_gla forward: results do not depend on the thread count", "[fused_recurrent][forward]") {
  RecCase c;
  c.B = 2;
  c.T = 70;
  c.H = 3;
  c.K = 64;
  c.V = 16;
  RecInputs<float> in;
  test::make_rec_inputs(in, c, 460);
  in.opts.output_final_state = true;
  const auto run = [&] {
    return fused_recurrent_gla(view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c), in.opts);
  };
  test::ThreadCountGuard guard;
  set_num_threads(1);
  const auto a = run();
  set_num_threads(2);
  const auto b = run();
  CHECK(test::compare(a.o, b.o).max_abs == 0);
  CHECK(test::compare(*a.final_state, *b.final_state).max_abs == 0);
}

// An o of 4 MiB and more is written with non-temporal stores (kStreamingOutputBytes), by every value tile of a
// head when a head splits over threads. B1 H1 T8192 K=V=128: one head in value tiles; V=100: tiles that start
// mid-line; bf16: 4 MiB of bf16 output.
TEST_CASE("fused_recurrent_gla forward: outputs of 4 MiB and more (non-temporal stores) against the float64 reference",
          "[fused_recurrent][forward]") {
  test::ThreadCountGuard guard;
  RecCase one_head;
  one_head.T = 8192;
  one_head.K = one_head.V = 128;
  one_head.gates = test::kGkOnly;
  one_head.h0 = false;
  RecCase mid_line;
  mid_line.T = 2700;
  mid_line.H = 4;
  mid_line.K = 60;
  mid_line.V = 100;
  for (const int threads : {1, 2, 3}) {
    set_num_threads(threads);
    INFO("threads " << threads);
    check_forward<float>(one_head, 470);
    check_forward<float>(mid_line, 471);
  }
  RecCase bf16 = one_head;
  bf16.T = 16384;
  bf16.K = 64;
  set_num_threads(2);
  check_forward<Eigen::bfloat16>(bf16, 472);

  RecInputs<float> in;
  test::make_rec_inputs(in, one_head, 473);
  const auto run = [&] { return fused_recurrent_gla(view(in.q), view(in.k), view(in.v), in.gk_view(one_head)); };
  set_num_threads(1);
  const auto a = run();
  set_num_threads(2);
  const auto b = run();
  CHECK(test::compare(a.o, b.o).max_abs == 0);
}

TEMPLATE_TEST_CASE("fused_recurrent_gla forward: extras gamma and state clamps match the reference",
                   "[fused_recurrent][forward][extras]", float, double) {
  struct Extra {
    const char* name;
    std::vector<float> gamma;
    std::optional<float> lo, hi;
    int gates;
  };
  const Extra extras[] = {
      {"gamma (one value), gk+gv", {0.9f}, {}, {}, test::kBothGates},
      {"gamma per head, gk", {0.5f, 0.95f, 1.0f}, {}, {}, test::kGkOnly},
      {"gamma per head, gv only", {0.7f, 0.8f, 0.99f}, {}, {}, test::kGvOnly},
      {"gamma, no gates", {0.8f}, {}, {}, test::kNoGates},
      {"clamp max", {}, {}, 2.0f, test::kBothGates},
      {"clamp min", {}, 0.6f, {}, test::kGkOnly},
      {"clamp min and max, gamma, no gates", {0.97f}, 0.25f, 3.0f, test::kNoGates},
  };
  std::uint64_t salt = 500;
  for (const Extra& e : extras) {
    RecCase c;
    c.B = 2;
    c.T = 129;
    c.H = 3;
    c.K = 16;
    c.V = 60;
    c.gates = e.gates;
    c.normalizer = 16;
    RecInputs<TestType> in;
    test::make_rec_inputs(in, c, salt++);
    in.opts.output_final_state = true;
    in.opts.gamma = e.gamma;
    in.opts.state_clamp_min = e.lo;
    in.opts.state_clamp_max = e.hi;
    Tensor<TestType, 4> o(c.B, c.T, c.H, c.V);
    Tensor<float, 4> ht = state_tensor<TestType>(c);
    test::fill_nan(o);
    test::fill_nan(ht);
    fused_recurrent_gla_into(view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c), in.opts,
                                       mut_view(o), mut_view(ht));
    const auto ref = naive_recurrent_gla<double>(view(in.q), view(in.k), view(in.v), in.gk_view(c),
                                                           in.gv_view(c), in.opts);
    INFO(e.name);
    test::check_close("forward o " + type_name<TestType>(), "o", o, ref.o, o_tol<TestType>());
    test::check_close("forward final_state (float) from " + type_name<TestType>(), "final_state", ht, ref.final_state,
                      state_tol<TestType>());
    if (e.hi) CHECK(*std::max_element(ht.data(), ht.data() + ht.size()) <= *e.hi);
    if (e.lo) CHECK(*std::min_element(ht.data(), ht.data() + ht.size()) >= *e.lo);
  }
}

TEST_CASE("fused_recurrent_gla forward: explicit scale 0 is kept, T = 0 passes h0 through", "[fused_recurrent][forward]") {
  RecCase c;
  c.B = 2;
  c.T = 20;
  c.H = 2;
  c.K = 16;
  c.V = 8;
  RecInputs<float> in;
  test::make_rec_inputs(in, c, 520);
  in.opts.output_final_state = true;
  const auto def = fused_recurrent_gla(view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c), in.opts);
  in.opts.scale = 0.0f;
  const auto zero = fused_recurrent_gla(view(in.q), view(in.k), view(in.v), in.gk_view(c), in.gv_view(c), in.opts);
  CHECK(test::all_equal_to(zero.o, 0.0f));
  CHECK(test::compare(*zero.final_state, *def.final_state).max_abs == 0);

  Tensor<float, 4> q0(2, 0, 2, 16), v0(2, 0, 2, 8);
  GLAOptions o;
  o.output_final_state = true;
  o.initial_state = in.h0;
  const auto empty = fused_recurrent_gla(view(q0), view(q0), view(v0), view(q0), view(v0), o);
  CHECK(empty.o.size() == 0);
  CHECK(test::compare(*empty.final_state, in.h0).max_abs == 0);
  o.initial_state.reset();
  const auto empty0 = fused_recurrent_gla(view(q0), view(q0), view(v0), std::nullopt, std::nullopt, o);
  CHECK(test::all_equal_to(*empty0.final_state, 0.0f));
}

TEST_CASE("apply_gamma_decay: the helper is the kernel's gamma step", "[fused_recurrent][extras]") {
  // One step with k = 0 and no gates leaves S_1 = gamma · h0, which the helper must reproduce bit for bit.
  for (bool v_first : {false, true}) {
    RecCase c;
    c.B = 2;
    c.T = 1;
    c.H = 3;
    c.K = 16;
    c.V = 24;
    c.gates = test::kNoGates;
    c.v_first = v_first;
    RecInputs<float> in;
    test::make_rec_inputs(in, c, 530);
    in.k.setZero();
    in.opts.output_final_state = true;
    in.opts.gamma = {0.5f, 0.9f, 0.25f};
    const auto r = fused_recurrent_gla(view(in.q), view(in.k), view(in.v), std::nullopt, std::nullopt, in.opts);
    Tensor<float, 4> s = in.h0;
    apply_gamma_decay(mut_view(s), in.opts.gamma);
    CHECK(test::compare(s, *r.final_state).max_abs == 0);
  }
  Tensor<float, 4> s(1, 2, 3, 4), s0;
  s.setConstant(2.0f);
  s0 = s;
  apply_gamma_decay(mut_view(s), {});
  CHECK(test::compare(s, s0).max_abs == 0);
  apply_gamma_decay(mut_view(s), {0.25f});
  CHECK(test::all_equal_to(s, 0.5f));

  detail::RowMat<double> m = detail::RowMat<double>::Constant(3, 5, 4.0);
  apply_gamma_decay(m, 0.5);
  CHECK((m.array() == 2.0).all());
  detail::RowMat<float> mf = detail::RowMat<float>::Constant(2, 2, 1.0f);
  apply_gamma_decay(mf, 0.75f);
  CHECK((mf.array() == 0.75f).all());

  test::require_gla_error([&] { apply_gamma_decay(mut_view(s), {0.5f, 0.5f, 0.5f}); },
                          {"apply_gamma_decay", "gamma has 3 values, expected 1 or H = 2"});
  test::require_gla_error([&] { apply_gamma_decay(mut_view(s), {std::numeric_limits<float>::quiet_NaN()}); },
                          {"apply_gamma_decay", "gamma holds"});
  CHECK(test::all_equal_to(s, 0.5f));
}

namespace {

/// fused_recurrent_gla on one golden case: o and ht vs the float64 truth and vs fla's own outputs.
void check_golden_forward(const test::Golden& gf, const std::string& cs) {
  const auto m = gf.meta(cs);
  const auto q = gf.get<float, 4>(cs + ".q"), k = gf.get<float, 4>(cs + ".k"), v = gf.get<float, 4>(cs + ".v");
  const auto gk = gf.get<float, 4>(cs + ".gk");
  std::optional<Tensor<float, 4>> gv, h0;
  if (m.value("has_gv", false)) gv = gf.get<float, 4>(cs + ".gv");
  if (m.value("has_h0", false)) h0 = gf.get<float, 4>(cs + ".h0");
  GLAOptions o;
  o.scale = static_cast<float>(m.at("scale").get<double>());
  o.reverse = m.value("reverse", false);
  if (!m.at("cu_seqlens").is_null()) o.cu_seqlens = gf.ints(cs + ".cu_seqlens");
  if (h0) o.initial_state = *h0;
  o.output_final_state = true;
  const auto o_ref = gf.get<float, 4>(cs + ".o_ref"), ht_ref = gf.get<float, 4>(cs + ".ht_ref");
  Tensor<float, 4> out(o_ref.dimensions()), ht(ht_ref.dimensions());
  test::fill_nan(out);
  test::fill_nan(ht);
  fused_recurrent_gla_into(view(q), view(k), view(v), view(gk),
                                  gv ? std::optional<ConstTensorMap<float, 4>>(view(*gv)) : std::nullopt, o,
                                  mut_view(out), mut_view(ht));
  INFO("golden case " << cs);
  test::check_close("golden forward vs *_ref (fp32)", cs + ".o", out, o_ref, 1e-5);
  test::check_close("golden forward vs *_ref (fp32)", cs + ".ht", ht, ht_ref, 1e-5);
  if (gf.has(cs + ".o_fused_recurrent")) {
    test::check_close("golden forward vs fla fused_recurrent", cs + ".o (fla)", out,
                      gf.get<float, 4>(cs + ".o_fused_recurrent"), 2e-5);
    test::check_close("golden forward vs fla fused_recurrent", cs + ".ht (fla)", ht,
                      gf.get<float, 4>(cs + ".ht_fused_recurrent"), 2e-5);
  }
}

}  // namespace

TEST_CASE("fused_recurrent_gla forward: fla golden data", "[fused_recurrent][forward][golden]") {
  for (const char* file : {"ops-gv_reverse", "ops-gv_varlen", "ops-chunk_cases"}) {
    const test::Golden gf(file);
    for (const std::string& cs : gf.cases()) check_golden_forward(gf, cs);
  }
}

TEST_CASE("fused_recurrent_gla forward: every gla::Error path, nothing written", "[fused_recurrent][forward][errors]") {
  const Index B = 2, T = 6, H = 2, K = 3, V = 4;
  Tensor<float, 4> q(B, T, H, K), k(B, T, H, K), v(B, T, H, V), gk(B, T, H, K), gv(B, T, H, V);
  q.setConstant(0.5f);
  k.setConstant(0.5f);
  v.setConstant(0.5f);
  gk.setConstant(-0.1f);
  gv.setConstant(-0.1f);
  Tensor<float, 4> h0(B, H, K, V), o(B, T, H, V), ht(B, H, K, V);
  h0.setConstant(1.0f);
  const float sentinel = 7.0f;
  const auto reset = [&] {
    o.setConstant(sentinel);
    ht.setConstant(sentinel);
  };
  const auto untouched = [&] { return test::all_equal_to(o, sentinel) && test::all_equal_to(ht, sentinel); };
  GLAOptions opts;
  opts.output_final_state = true;
  // call(q, k, v, gk, gv, opts, o, ht) with defaults for everything not under test.
  const auto call = [&](const Tensor<float, 4>& q_, const Tensor<float, 4>& k_, const Tensor<float, 4>& v_,
                        std::optional<ConstTensorMap<float, 4>> gk_, std::optional<ConstTensorMap<float, 4>> gv_,
                        const GLAOptions& op, TensorMap<float, 4> o_, std::optional<gla::View<float, 4>> ht_) {
    fused_recurrent_gla_into(view(q_), view(k_), view(v_), gk_, gv_, op, o_, ht_);
  };
  const auto expect = [&](auto&& f, std::initializer_list<const char*> needles) {
    reset();
    test::require_gla_error(f, needles);
    CHECK(untouched());
  };
  const auto dflt = [&](const GLAOptions& op) { call(q, k, v, view(gk), view(gv), op, mut_view(o), mut_view(ht)); };

  SECTION("shapes of q, k, v, gk, gv") {
    Tensor<float, 4> q0(0, T, H, K), kb(B, T, H, K + 1), vb(B, T + 1, H, V), gkb(B, T, H, V), gvb(B, T, H, K);
    q0.setZero();
    kb.setZero();
    vb.setZero();
    gkb.setZero();
    gvb.setZero();
    expect([&] { call(q0, k, v, view(gk), view(gv), opts, mut_view(o), mut_view(ht)); },
           {"fused_recurrent_gla", "q is [0,6,2,3]"});
    expect([&] { call(q, kb, v, view(gk), view(gv), opts, mut_view(o), mut_view(ht)); },
           {"fused_recurrent_gla", "k is [2,6,2,4], expected [B=2,T=6,H=2,K=3]"});
    expect([&] { call(q, k, vb, view(gk), view(gv), opts, mut_view(o), mut_view(ht)); },
           {"fused_recurrent_gla", "v is [2,7,2,4], expected [B=2,T=6,H=2,V]"});
    expect([&] { call(q, k, v, view(gkb), view(gv), opts, mut_view(o), mut_view(ht)); },
           {"fused_recurrent_gla", "gk is [2,6,2,4], expected [B=2,T=6,H=2,K=3]"});
    expect([&] { call(q, k, v, view(gk), view(gvb), opts, mut_view(o), mut_view(ht)); },
           {"fused_recurrent_gla", "gv is [2,6,2,3], expected [B=2,T=6,H=2,V=4]"});
    // The convenience API validates the same way.
    expect([&] { fused_recurrent_gla(view(q), view(k), view(v), view(gkb), std::nullopt, opts); },
           {"fused_recurrent_gla", "gk is [2,6,2,4]"});
  }
  SECTION("cu_seqlens") {
    GLAOptions op = opts;
    op.cu_seqlens = {0, 6};
    expect([&] { dflt(op); }, {"fused_recurrent_gla", "the batch size is 2, expected 1 when cu_seqlens"});
    Tensor<float, 4> q1(1, T, H, K), v1(1, T, H, V), o1(1, T, H, V), ht1(1, H, K, V);
    q1.setZero();
    v1.setZero();
    o1.setConstant(sentinel);
    const auto call1 = [&](const GLAOptions& p) {
      ht1.resize(static_cast<Index>(std::max<std::size_t>(p.cu_seqlens.size(), 2) - 1), H, K, V);
      ht1.setConstant(sentinel);
      call(q1, q1, v1, std::nullopt, std::nullopt, p, mut_view(o1), mut_view(ht1));
    };
    op.cu_seqlens = {0};
    test::require_gla_error([&] { call1(op); }, {"fused_recurrent_gla", "cu_seqlens has 1 entries"});
    op.cu_seqlens = {1, 6};
    test::require_gla_error([&] { call1(op); }, {"fused_recurrent_gla", "cu_seqlens[0] is 1"});
    op.cu_seqlens = {0, 4, 3, 6};
    test::require_gla_error([&] { call1(op); }, {"fused_recurrent_gla", "cu_seqlens is not non-decreasing"});
    op.cu_seqlens = {0, 5};
    test::require_gla_error([&] { call1(op); }, {"fused_recurrent_gla", "cu_seqlens[N] is 5, expected T = 6"});
    CHECK(test::all_equal_to(o1, sentinel));
    CHECK(test::all_equal_to(ht1, sentinel));
  }
  SECTION("initial_state and scale") {
    GLAOptions op = opts;
    Tensor<float, 4> h3(3, H, K, V), hb(B, H, V, K);
    h3.setZero();
    hb.setZero();
    op.initial_state = h3;
    expect([&] { dflt(op); }, {"fused_recurrent_gla", "initial_state has 3 states, expected N = 2"});
    op.initial_state = hb;
    expect([&] { dflt(op); }, {"fused_recurrent_gla", "initial_state is [2,2,4,3], expected [N=2,H=2,K=3,V=4]"});
    op.initial_state = h0;
    op.state_v_first = true;
    expect([&] { dflt(op); }, {"fused_recurrent_gla", "initial_state (state_v_first) is [2,2,3,4]"});
    GLAOptions os = opts;
    os.scale = std::numeric_limits<float>::infinity();
    expect([&] { dflt(os); }, {"fused_recurrent_gla", "scale is"});
  }
  SECTION("gamma and clamps") {
    GLAOptions op = opts;
    op.gamma = {0.5f, 0.5f, 0.5f};
    expect([&] { dflt(op); }, {"fused_recurrent_gla", "gamma has 3 values, expected 1 or H = 2"});
    op.gamma = {std::numeric_limits<float>::quiet_NaN()};
    expect([&] { dflt(op); }, {"fused_recurrent_gla", "gamma holds"});
    op.gamma.clear();
    op.state_clamp_min = 2.0f;
    op.state_clamp_max = 1.0f;
    expect([&] { dflt(op); }, {"fused_recurrent_gla", "state_clamp_min is 2", "state_clamp_max"});
    op.state_clamp_min = std::numeric_limits<float>::quiet_NaN();
    expect([&] { dflt(op); }, {"fused_recurrent_gla", "state_clamp_min is NaN"});
    op.state_clamp_min.reset();
    op.state_clamp_max = std::numeric_limits<float>::quiet_NaN();
    expect([&] { dflt(op); }, {"fused_recurrent_gla", "state_clamp_max is NaN"});
  }
  SECTION("output views") {
    Tensor<float, 4> ob(B, T, H, K), hb(B, H, V, K);
    ob.setConstant(sentinel);
    hb.setConstant(sentinel);
    expect([&] { call(q, k, v, view(gk), view(gv), opts, mut_view(ob), mut_view(ht)); },
           {"fused_recurrent_gla", "o is [2,6,2,3], expected [B=2,T=6,H=2,V=4]"});
    expect([&] { call(q, k, v, view(gk), view(gv), opts, mut_view(o), std::nullopt); },
           {"fused_recurrent_gla", "final_state is not given", "output_final_state"});
    GLAOptions nf;
    expect([&] { call(q, k, v, view(gk), view(gv), nf, mut_view(o), mut_view(ht)); },
           {"fused_recurrent_gla", "final_state is given", "output_final_state is false"});
    expect([&] { call(q, k, v, view(gk), view(gv), opts, mut_view(o), mut_view(hb)); },
           {"fused_recurrent_gla", "final_state is [2,2,4,3], expected [N=2,H=2,K=3,V=4]"});
    GLAOptions vf = opts;
    vf.state_v_first = true;
    expect([&] { call(q, k, v, view(gk), view(gv), vf, mut_view(o), mut_view(ht)); },
           {"fused_recurrent_gla", "final_state (state_v_first) is [2,2,3,4]"});
    CHECK(test::all_equal_to(ob, sentinel));
    CHECK(test::all_equal_to(hb, sentinel));
  }
  SECTION("overlapping buffers") {
    // o written over q (same byte range) and the final state over o: both would corrupt the computation.
    Tensor<float, 4> big(B, T, H, V + K);
    big.setConstant(0.5f);
    TensorMap<float, 4> o_over(big.data(), B, T, H, V);
    ConstTensorMap<float, 4> q_over(big.data() + 1, B, T, H, K);
    reset();
    test::require_gla_error(
        [&] { fused_recurrent_gla_into(q_over, view(k), view(v), view(gk), view(gv), opts, o_over, mut_view(ht)); },
        {"fused_recurrent_gla", "output o overlaps input q"});
    CHECK(test::all_equal_to(big, 0.5f));
    TensorMap<float, 4> ht_over(o.data() + 3, B, H, K, V);
    reset();
    test::require_gla_error(
        [&] { call(q, k, v, view(gk), view(gv), opts, mut_view(o), ht_over); },
        {"fused_recurrent_gla", "output final_state overlaps output o"});
    CHECK(untouched());
    // The final state may be exactly the initial-state buffer, but not a shifted view of it.
    Tensor<float, 4> hbuf(B * H * K * V + 1, 1, 1, 1);
    hbuf.setConstant(1.0f);
    GLAOptions op = opts;
    op.initial_state = ConstTensorMap<float, 4>(hbuf.data(), B, H, K, V);
    reset();
    test::require_gla_error(
        [&] { call(q, k, v, view(gk), view(gv), op, mut_view(o), TensorMap<float, 4>(hbuf.data() + 1, B, H, K, V)); },
        {"fused_recurrent_gla", "output final_state overlaps input initial_state"});
    CHECK(test::all_equal_to(hbuf, 1.0f));
    CHECK(untouched());
  }
}
