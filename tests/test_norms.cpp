// Tests of gla/modules/norms.hpp: RMSNorm and FusedRMSNormGated against a double reference written here (all
// scalars, residual/prenorm, any rank, `_into` outputs), every gla::Error path, and fla's outputs in
// modules.safetensors.

#include <gla/modules/norms.hpp>

#include "support/catch.hpp"
#include "support/golden.hpp"
#include "support/test_utils.hpp"

#include <string>
#include <vector>

namespace {

using gla::Activation;
using gla::ConstTensorMap;
using gla::Index;
using gla::Tensor;
using gla::TensorMap;

/// Runs f, requires a gla::Error whose message contains every part.
template <class F>
void require_error(F&& f, std::initializer_list<const char*> parts) {
  REQUIRE_THROWS_AS(f(), gla::Error);
  const std::string msg = gla::test::error_message(f);
  INFO("message: " << msg);
  for (const char* p : parts) CHECK(msg.find(p) != std::string::npos);
}

enum class Gate { None, Swish, Sigmoid };

/// The double reference of both norms over the rows of [rows, D] data: x' = x + residual,
/// y = x'/sqrt(mean(x'²) + eps)·w + b, then ·g·σ(g) or ·σ(g). Inputs are read as double from any scalar.
struct Ref {
  Tensor<double, 2> y, sum;
};
template <class T, class R = T, class P = float>
Ref reference(const T* x, const R* residual, const T* g, Index rows, Index D, const P* w, const P* b, double eps,
              Gate gate) {
  Ref r{Tensor<double, 2>(rows, D), Tensor<double, 2>(rows, D)};
  for (Index i = 0; i < rows; ++i) {
    double ss = 0;
    for (Index j = 0; j < D; ++j) {
      const double v = static_cast<double>(x[i * D + j]) + (residual ? static_cast<double>(residual[i * D + j]) : 0.0);
      r.sum(i, j) = v;
      ss += v * v;
    }
    const double rstd = 1.0 / std::sqrt(ss / static_cast<double>(D) + eps);
    for (Index j = 0; j < D; ++j) {
      double v = r.sum(i, j) * rstd;
      if (w) v *= static_cast<double>(w[j]);
      if (b) v += static_cast<double>(b[j]);
      if (gate != Gate::None) {
        const double gj = static_cast<double>(g[i * D + j]);
        const double s = 1.0 / (1.0 + std::exp(-gj));
        v *= gate == Gate::Swish ? gj * s : s;
      }
      r.y(i, j) = v;
    }
  }
  return r;
}

template <class T>
double tol_for() {
  if constexpr (std::is_same_v<T, double>) return 1e-12;
  if constexpr (std::is_same_v<T, float>) return 1e-6;
  return 5e-3;  // bf16 / half: one rounding of the output (and of the inputs, which the reference shares)
}

template <class T>
Tensor<T, 2> random_rows(Index rows, Index D, std::mt19937_64& g, double sd = 1.0) {
  Tensor<T, 2> t(rows, D);
  gla::test::fill_normal(t, g, sd);
  return t;
}

/// RMSNorm on one shape and configuration, through forward_into (NaN-filled outputs) and the convenience API.
template <class T>
void check_rmsnorm(Index rows, Index D, bool affine, bool bias, double eps, std::uint64_t salt) {
  auto g = gla::test::rng(salt);
  gla::RMSNorm<float> norm(D, affine, bias, eps);
  if (norm.weight) gla::test::fill_normal(*norm.weight, g, 1.0);
  if (norm.bias) gla::test::fill_normal(*norm.bias, g, 0.5);
  const Tensor<T, 2> x = random_rows<T>(rows, D, g, 2.0);
  const Tensor<T, 2> res = random_rows<T>(rows, D, g, 1.0);
  const float* w = norm.weight ? norm.weight->data() : nullptr;
  const float* b = norm.bias ? norm.bias->data() : nullptr;
  const double tol = tol_for<T>();
  INFO("rows=" << rows << " D=" << D << " affine=" << affine << " bias=" << bias << " eps=" << eps);

  // Plain.
  const Ref ref = reference<T>(x.data(), static_cast<const T*>(nullptr), nullptr, rows, D, w, b, eps, Gate::None);
  Tensor<T, 2> y(rows, D);
  gla::test::fill_nan(y);
  norm.forward_into(gla::view(x), gla::mut_view(y));
  const auto d = gla::test::compare(y, ref.y);
  INFO("plain: " << d.str());
  CHECK(gla::test::ok(d, tol));
  CHECK(gla::test::compare(norm.forward(gla::view(x)), y).max_abs == 0);

  // Residual with prenorm: y of x + residual, and the sum itself.
  const Ref refr = reference<T>(x.data(), res.data(), nullptr, rows, D, w, b, eps, Gate::None);
  Tensor<T, 2> yr(rows, D), sum(rows, D);
  gla::test::fill_nan(yr);
  gla::test::fill_nan(sum);
  norm.forward_into(gla::view(x), gla::mut_view(yr), std::optional<ConstTensorMap<T, 2>>(gla::view(res)),
                    std::optional<TensorMap<T, 2>>(gla::mut_view(sum)));
  const auto dr = gla::test::compare(yr, refr.y);
  const auto ds = gla::test::compare(sum, refr.sum);
  INFO("residual: y " << dr.str() << " | sum " << ds.str());
  CHECK(gla::test::ok(dr, tol));
  CHECK(gla::test::ok(ds, tol));
  const auto pre = norm.forward_prenorm(gla::view(x), gla::view(res));
  CHECK(gla::test::compare(pre.y, yr).max_abs == 0);
  CHECK(gla::test::compare(pre.residual, sum).max_abs == 0);
  CHECK(gla::test::compare(norm.forward(gla::view(x), gla::view(res)), yr).max_abs == 0);

  // prenorm without a residual returns x itself (in T, or exactly in float = residual_in_fp32).
  const auto pre_x = norm.forward_prenorm(gla::view(x));
  CHECK(gla::test::compare(pre_x.y, y).max_abs == 0);
  CHECK(gla::test::compare(pre_x.residual, x).max_abs == 0);
  const auto pre_f = norm.template forward_prenorm<float>(gla::view(x));
  static_assert(std::is_same_v<typename decltype(pre_f.residual)::Scalar, float>);
  // x rounded to float once (exact for float/bf16/half inputs).
  CHECK(gla::test::compare(pre_f.residual, Tensor<float, 2>(x.template cast<float>())).max_abs == 0);

  // In place: y is x.
  Tensor<T, 2> inplace = x;
  norm.forward_into(gla::view(inplace), gla::mut_view(inplace));
  CHECK(gla::test::compare(inplace, y).max_abs == 0);
}

template <class T>
void check_gated(Index rows, Index D, bool affine, Activation act, double eps, std::uint64_t salt) {
  auto g = gla::test::rng(salt);
  gla::FusedRMSNormGated<float> norm(D, affine, eps, act);
  if (norm.weight) gla::test::fill_normal(*norm.weight, g, 1.0);
  const Tensor<T, 2> x = random_rows<T>(rows, D, g, 2.0);
  const Tensor<T, 2> gate = random_rows<T>(rows, D, g, 2.0);
  const Tensor<T, 2> res = random_rows<T>(rows, D, g, 1.0);
  const float* w = norm.weight ? norm.weight->data() : nullptr;
  const Gate kind = act == Activation::Sigmoid ? Gate::Sigmoid : Gate::Swish;
  const double tol = tol_for<T>();
  INFO("rows=" << rows << " D=" << D << " affine=" << affine << " act=" << gla::activation_name(act));

  const Ref ref = reference<T>(x.data(), static_cast<const T*>(nullptr), gate.data(), rows, D, w,
                               static_cast<const float*>(nullptr), eps, kind);
  Tensor<T, 2> y(rows, D);
  gla::test::fill_nan(y);
  norm.forward_into(gla::view(x), gla::view(gate), gla::mut_view(y));
  const auto d = gla::test::compare(y, ref.y);
  INFO("plain: " << d.str());
  CHECK(gla::test::ok(d, tol));
  CHECK(gla::test::compare(norm.forward(gla::view(x), gla::view(gate)), y).max_abs == 0);

  const Ref refr =
      reference<T>(x.data(), res.data(), gate.data(), rows, D, w, static_cast<const float*>(nullptr), eps, kind);
  Tensor<T, 2> yr(rows, D), sum(rows, D);
  gla::test::fill_nan(yr);
  gla::test::fill_nan(sum);
  norm.forward_into(gla::view(x), gla::view(gate), gla::mut_view(yr),
                    std::optional<ConstTensorMap<T, 2>>(gla::view(res)),
                    std::optional<TensorMap<T, 2>>(gla::mut_view(sum)));
  const auto dr = gla::test::compare(yr, refr.y);
  INFO("residual: " << dr.str());
  CHECK(gla::test::ok(dr, tol));
  CHECK(gla::test::ok(gla::test::compare(sum, refr.sum), tol));
  const auto pre = norm.forward_prenorm(gla::view(x), gla::view(gate), gla::view(res));
  CHECK(gla::test::compare(pre.y, yr).max_abs == 0);
  CHECK(gla::test::compare(pre.residual, sum).max_abs == 0);
  CHECK(gla::test::compare(norm.forward(gla::view(x), gla::view(gate), gla::view(res)), yr).max_abs == 0);
  const auto pre_f = norm.template forward_prenorm<float>(gla::view(x), gla::view(gate));
  CHECK(gla::test::compare(pre_f.y, y).max_abs == 0);
  // x rounded to float once (exact for float/bf16/half inputs).
  CHECK(gla::test::compare(pre_f.residual, Tensor<float, 2>(x.template cast<float>())).max_abs == 0);

  // In place over the gate buffer (the layer may reuse g's storage for the output).
  Tensor<T, 2> gbuf = gate;
  norm.forward_into(gla::view(x), gla::view(gbuf), gla::mut_view(gbuf));
  CHECK(gla::test::compare(gbuf, y).max_abs == 0);
}

template <class T>
void check_all_rmsnorm() {
  std::uint64_t salt = 1000;
  for (Index D : {1, 3, 64, 100})
    for (Index rows : {1, 7, 37}) {
      check_rmsnorm<T>(rows, D, true, false, 1e-5, ++salt);
      check_rmsnorm<T>(rows, D, true, true, 1e-6, ++salt);
      check_rmsnorm<T>(rows, D, false, false, 1e-5, ++salt);
    }
  check_rmsnorm<T>(0, 16, true, true, 1e-5, ++salt);  // no rows: nothing to do, nothing to fail
  check_rmsnorm<T>(5, 32, true, false, 0.0, ++salt);  // eps = 0 is legal (fla's own reference uses it)
}

template <class T>
void check_all_gated() {
  std::uint64_t salt = 2000;
  for (Activation act : {Activation::SiLU, Activation::Sigmoid})
    for (Index D : {1, 5, 64, 100})
      for (Index rows : {1, 9, 37}) {
        check_gated<T>(rows, D, true, act, 1e-5, ++salt);
        check_gated<T>(rows, D, false, act, 1e-6, ++salt);
      }
  check_gated<T>(0, 8, true, Activation::SiLU, 1e-5, ++salt);
}

}  // namespace

TEST_CASE("RMSNorm matches the double reference", "[norms]") {
  SECTION("float") { check_all_rmsnorm<float>(); }
  SECTION("double") { check_all_rmsnorm<double>(); }
  SECTION("bfloat16") { check_all_rmsnorm<Eigen::bfloat16>(); }
  SECTION("half") { check_all_rmsnorm<Eigen::half>(); }
}

TEST_CASE("FusedRMSNormGated matches the double reference", "[norms]") {
  SECTION("float") { check_all_gated<float>(); }
  SECTION("double") { check_all_gated<double>(); }
  SECTION("bfloat16") { check_all_gated<Eigen::bfloat16>(); }
  SECTION("half") { check_all_gated<Eigen::half>(); }
}

TEST_CASE("norms act on the last dim of any rank", "[norms]") {
  auto g = gla::test::rng(3001);
  gla::RMSNorm<float> norm(8);
  gla::test::fill_normal(*norm.weight, g);
  Tensor<float, 4> x(2, 3, 5, 8);
  gla::test::fill_normal(x, g);
  const Tensor<float, 4> y4 = norm.forward(gla::view(x));
  const Tensor<float, 2> y2 = norm.forward(ConstTensorMap<float, 2>(x.data(), 30, 8));
  CHECK(gla::test::compare(y4, y2).max_abs == 0);
  const Tensor<float, 1> y1 = norm.forward(ConstTensorMap<float, 1>(x.data(), 8));
  CHECK(gla::test::compare_ptr(y1.data(), y2.data(), 8).max_abs == 0);

  gla::FusedRMSNormGated<float> gated(8, true, 1e-5, "sigmoid");
  Tensor<float, 3> xg(4, 6, 8), gg(4, 6, 8);
  gla::test::fill_normal(xg, g);
  gla::test::fill_normal(gg, g);
  const Tensor<float, 3> yg3 = gated.forward(gla::view(xg), gla::view(gg));
  const Tensor<float, 2> yg2 =
      gated.forward(ConstTensorMap<float, 2>(xg.data(), 24, 8), ConstTensorMap<float, 2>(gg.data(), 24, 8));
  CHECK(gla::test::compare(yg3, yg2).max_abs == 0);
}

TEST_CASE("norm parameters in double and bf16, and mixed residual scalars", "[norms]") {
  auto g = gla::test::rng(3101);
  // double parameters with double inputs: the whole computation is double.
  gla::RMSNorm<double> nd(12, true, true, 1e-6);
  gla::test::fill_normal(*nd.weight, g);
  gla::test::fill_normal(*nd.bias, g);
  const Tensor<double, 2> xd = random_rows<double>(6, 12, g);
  const Ref rd = reference<double, double, double>(xd.data(), nullptr, nullptr, 6, 12, nd.weight->data(),
                                                   nd.bias->data(), 1e-6, Gate::None);
  CHECK(gla::test::ok(gla::test::compare(nd.forward(gla::view(xd)), rd.y), 1e-13));

  // bf16 parameters (fla's gated norm weight in the model dtype) with bf16 inputs.
  gla::FusedRMSNormGated<Eigen::bfloat16> nb(16);
  gla::test::fill_normal(*nb.weight, g);
  const Tensor<Eigen::bfloat16, 2> xb = random_rows<Eigen::bfloat16>(5, 16, g);
  const Tensor<Eigen::bfloat16, 2> gb = random_rows<Eigen::bfloat16>(5, 16, g);
  const Ref rb = reference<Eigen::bfloat16, Eigen::bfloat16, Eigen::bfloat16>(
      xb.data(), nullptr, gb.data(), 5, 16, nb.weight->data(), nullptr, 1e-5, Gate::Swish);
  CHECK(gla::test::ok(gla::test::compare(nb.forward(gla::view(xb), gla::view(gb)), rb.y), 5e-3));

  // bf16 x with a float residual stream: the sum is kept in float, y from the unrounded sum (as fla).
  gla::RMSNorm<float> nf(16);
  gla::test::fill_normal(*nf.weight, g);
  const Tensor<float, 2> rf = random_rows<float>(5, 16, g);
  const auto pre = nf.forward_prenorm(gla::view(xb), gla::view(rf));
  static_assert(std::is_same_v<typename decltype(pre.residual)::Scalar, float>);
  const Ref rm = reference<Eigen::bfloat16, float, float>(xb.data(), rf.data(), nullptr, 5, 16, nf.weight->data(),
                                                          nullptr, 1e-5, Gate::None);
  CHECK(gla::test::ok(gla::test::compare(pre.residual, rm.sum), 1e-7));
  CHECK(gla::test::ok(gla::test::compare(pre.y, rm.y), 5e-3));
}

TEST_CASE("norm constructors reject bad configurations", "[norms][errors]") {
  require_error([] { gla::RMSNorm<float>(0); }, {"RMSNorm", "hidden_size is 0"});
  require_error([] { gla::RMSNorm<float>(8, true, false, -1e-5); }, {"RMSNorm", "eps is -1e-05"});
  require_error([] { gla::RMSNorm<float>(8, true, false, std::nan("")); }, {"RMSNorm", "eps is nan"});
  require_error([] { gla::FusedRMSNormGated<float>(-2); }, {"FusedRMSNormGated", "hidden_size is -2"});
  require_error([] { gla::FusedRMSNormGated<float>(8, true, 1e-5, Activation::ReLU); },
                {"FusedRMSNormGated", "activation 'relu'", "swish, silu, sigmoid"});
  require_error([] { gla::FusedRMSNormGated<float>(8, true, 1e-5, "gelu"); },
                {"FusedRMSNormGated", "activation 'gelu'", "swish, silu, sigmoid"});
  CHECK(gla::FusedRMSNormGated<float>(8, true, 1e-5, "swish").activation() == Activation::SiLU);
  CHECK(gla::FusedRMSNormGated<float>(8, true, 1e-5, "silu").activation() == Activation::SiLU);
  CHECK(gla::FusedRMSNormGated<float>(8, true, 1e-5, "sigmoid").activation() == Activation::Sigmoid);
  // Parameters as fla creates them: ones / zeros, none without elementwise_affine, bias only with the weight.
  gla::RMSNorm<float> n(4, true, true);
  CHECK(n.weight->dimension(0) == 4);
  CHECK((*n.weight)(2) == 1.0f);
  CHECK((*n.bias)(3) == 0.0f);
  CHECK_FALSE(gla::RMSNorm<float>(4, false, true).weight.has_value());
  CHECK_FALSE(gla::RMSNorm<float>(4, false, true).bias.has_value());
  CHECK_FALSE(gla::FusedRMSNormGated<float>(4, false).weight.has_value());
}

TEST_CASE("norm calls reject mismatched shapes", "[norms][errors]") {
  gla::RMSNorm<float> norm(8, true, true);
  Tensor<float, 2> x(3, 8), x7(3, 7), y(3, 8), y4(4, 8), r(3, 8), r2(2, 8);
  x.setZero();
  x7.setZero();
  r.setZero();
  r2.setZero();
  require_error([&] { norm.forward_into(gla::view(x7), gla::mut_view(y)); },
                {"RMSNorm::forward_into", "x is [3,7]", "D=8"});
  require_error([&] { norm.forward_into(gla::view(x), gla::mut_view(y4)); },
                {"RMSNorm::forward_into", "y is [4,8]", "[rows=3,D=8]"});
  require_error(
      [&] {
        norm.forward_into(gla::view(x), gla::mut_view(y), std::optional<ConstTensorMap<float, 2>>(gla::view(r2)));
      },
      {"RMSNorm::forward_into", "residual is [2,8]", "[rows=3,D=8]"});
  require_error(
      [&] {
        norm.forward_into(gla::view(x), gla::mut_view(y), std::optional<ConstTensorMap<float, 2>>(gla::view(r)),
                          std::optional<TensorMap<float, 2>>(gla::mut_view(y4)));
      },
      {"RMSNorm::forward_into", "residual_out is [4,8]"});
  // Validation precedes every write: the failed call left y untouched.
  gla::test::fill_nan(y);
  require_error(
      [&] {
        norm.forward_into(gla::view(x), gla::mut_view(y), std::optional<ConstTensorMap<float, 2>>(gla::view(r)),
                          std::optional<TensorMap<float, 2>>(gla::mut_view(y4)));
      },
      {"RMSNorm::forward_into", "residual_out"});
  CHECK(gla::test::compare(y, y).non_finite == y.size());
  require_error([&] { norm.forward(gla::view(x7)); }, {"RMSNorm::forward", "x is [3,7]", "[...,D=8]"});
  require_error([&] { norm.forward(gla::view(x), gla::view(r2)); },
                {"RMSNorm::forward", "residual is [2,8]", "shape of x [3,8]"});
  require_error([&] { norm.forward_prenorm(gla::view(x), gla::view(r2)); },
                {"RMSNorm::forward_prenorm", "residual is [2,8]"});
  require_error([&] { norm.forward_prenorm(gla::view(x7)); }, {"RMSNorm::forward_prenorm", "x is [3,7]"});

  // Public parameters replaced with the wrong size are caught at the call.
  gla::RMSNorm<float> bad(8, true, true);
  bad.weight = Tensor<float, 1>(7);
  require_error([&] { bad.forward(gla::view(x)); }, {"RMSNorm::forward", "weight is [7]", "[D=8]"});
  gla::RMSNorm<float> badb(8, true, true);
  badb.bias = Tensor<float, 1>(9);
  require_error([&] { badb.forward(gla::view(x)); }, {"RMSNorm::forward", "bias is [9]", "[D=8]"});

  gla::FusedRMSNormGated<float> gated(8);
  Tensor<float, 2> g(3, 8), g5(5, 8);
  g.setZero();
  g5.setZero();
  require_error([&] { gated.forward_into(gla::view(x), gla::view(g5), gla::mut_view(y)); },
                {"FusedRMSNormGated::forward_into", "g is [5,8]", "[rows=3,D=8]"});
  require_error([&] { gated.forward_into(gla::view(x7), gla::view(g), gla::mut_view(y)); },
                {"FusedRMSNormGated::forward_into", "x is [3,7]"});
  require_error([&] { gated.forward_into(gla::view(x), gla::view(g), gla::mut_view(y4)); },
                {"FusedRMSNormGated::forward_into", "y is [4,8]"});
  require_error([&] { gated.forward(gla::view(x), gla::view(g5)); },
                {"FusedRMSNormGated::forward", "g is [5,8]", "shape of x [3,8]"});
  require_error([&] { gated.forward(gla::view(x), gla::view(g), gla::view(r2)); },
                {"FusedRMSNormGated::forward", "residual is [2,8]"});
  require_error([&] { gated.forward_prenorm(gla::view(x), gla::view(g5)); },
                {"FusedRMSNormGated::forward_prenorm", "g is [5,8]"});
  gated.weight = Tensor<float, 1>(3);
  require_error([&] { gated.forward(gla::view(x), gla::view(g)); },
                {"FusedRMSNormGated::forward", "weight is [3]", "[D=8]"});
}

// ---- fla's outputs (tests/data/fla/modules.safetensors) ----

TEST_CASE("norms match fla's outputs in modules.safetensors", "[norms][golden]") {
  const gla::test::Golden gold("modules");
  int checked = 0;
  for (const std::string& c : gold.cases()) {
    const bool plain = c.rfind("rmsnorm", 0) == 0, gated = c.rfind("norm_gated", 0) == 0;
    if (!plain && !gated) continue;  // the ShortConvolution cases are tested in test_short_conv.cpp
    const nlohmann::json m = gold.meta(c);
    const Index D = m.at("D").get<Index>();
    const double eps = m.at("eps").get<double>();
    const bool affine = gold.has(c + ".weight");
    const Tensor<float, 2> x = gold.get<float, 2>(c + ".x");
    const Tensor<float, 2> y_fla = gold.get<float, 2>(c + ".y");
    Tensor<float, 2> y(x.dimensions());
    gla::test::fill_nan(y);
    if (plain) {
      gla::RMSNorm<float> norm(D, affine, gold.has(c + ".bias"), eps);
      if (affine) norm.weight = gold.get<float, 1>(c + ".weight");
      if (norm.bias) norm.bias = gold.get<float, 1>(c + ".bias");
      norm.forward_into(gla::view(x), gla::mut_view(y));
    } else {
      gla::FusedRMSNormGated<float> norm(D, affine, eps, m.at("activation").get<std::string>());
      if (affine) norm.weight = gold.get<float, 1>(c + ".weight");
      const Tensor<float, 2> g = gold.get<float, 2>(c + ".g");
      norm.forward_into(gla::view(x), gla::view(g), gla::mut_view(y));
    }
    const auto d = gla::test::compare(y, y_fla);
    INFO("modules." << c << " y vs fla: " << d.str());
    CHECK(gla::test::ok(d, 2e-5));
    ++checked;
  }
  CHECK(checked == 3);  // rmsnorm, norm_gated_swish, norm_gated_sigmoid
}
