#pragma once
/// gla/modules/norms.hpp: fla's RMSNorm and FusedRMSNormGated over the last dimension of a tensor, with fla's
/// residual/prenorm options, float math for float/bf16/half inputs and double math for double inputs.

#include <gla/core.hpp>
#include <gla/detail/param_limits.hpp>
#include <gla/modules/activations.hpp>

#include <sstream>
#include <string>
#include <string_view>

namespace gla {

/// Output of a prenorm call: y [..., D] T the normalized rows and residual [..., D] R = x + residual (the sum
/// before normalization, rounded to R once), which the next block adds its output to.
template <class T, class R, int Rank>
struct PrenormResult {
  Tensor<T, Rank> y;
  Tensor<R, Rank> residual;
};

namespace detail {

/// The gate a fused norm multiplies in after the weight: none (RMSNorm), g·σ(g) (swish/silu) or σ(g).
enum class NormGate { None, Swish, Sigmoid };

/// The pointers and sizes of one norm call; null pointers are absent tensors.
template <class T, class R, class P>
struct NormArgs {
  Index rows = 0, D = 0;
  const T* x = nullptr;
  const T* g = nullptr;
  const R* residual = nullptr;
  R* residual_out = nullptr;
  T* y = nullptr;
  const P* weight = nullptr;
  const P* bias = nullptr;
  double eps = 0;
  NormGate gate = NormGate::None;
};

/// Per row, in acc_t<T>: x' = x (+ residual); y = x'·rsqrt(mean(x'²) + eps) (·weight) (+bias) (·gate(g)).
/// y may be x and residual_out may be residual (each row is read fully before it is written).
template <class T, class R, class P>
void rms_norm_rows(const NormArgs<T, R, P>& a) {
  using A = acc_t<T>;
  using Arr = Eigen::Array<A, Eigen::Dynamic, 1>;
  const Index D = a.D;
  Arr w, b;
  if (a.weight) w = Eigen::Map<const Eigen::Array<P, Eigen::Dynamic, 1>>(a.weight, D).template cast<A>();
  if (a.bias) b = Eigen::Map<const Eigen::Array<P, Eigen::Dynamic, 1>>(a.bias, D).template cast<A>();
  const A eps = static_cast<A>(a.eps);
  Arr xr(D), gr;
  if (a.g) gr.resize(D);
  for (Index r = 0; r < a.rows; ++r) {
    const Index off = r * D;
    for (Index j = 0; j < D; ++j) xr(j) = static_cast<A>(a.x[off + j]);
    if (a.residual)
      for (Index j = 0; j < D; ++j) xr(j) += static_cast<A>(a.residual[off + j]);
    if (a.residual_out)
      for (Index j = 0; j < D; ++j) a.residual_out[off + j] = static_cast<R>(xr(j));
    // fla: var = sum(x²)/D; rstd = 1/sqrt(var + eps); eps inside the sqrt, sum then divide.
    const A rstd = A(1) / std::sqrt(xr.square().sum() / static_cast<A>(D) + eps);
    xr *= rstd;
    if (a.weight) xr *= w;
    if (a.bias) xr += b;
    if (a.g) {
      for (Index j = 0; j < D; ++j) gr(j) = static_cast<A>(a.g[off + j]);
      // σ(g) = 1 / (1 + e^{−g}) on Eigen's vectorised exp (a per-element std::exp was most of the norm's time);
      // e^{−g} = inf for very negative g gives σ = 0, the correct limit, as the scalar form does.
      if (a.gate == NormGate::Swish)
        xr *= gr * (A(1) + (-gr).exp()).inverse();
      else
        xr *= (A(1) + (-gr).exp()).inverse();
    }
    for (Index j = 0; j < D; ++j) a.y[off + j] = static_cast<T>(xr(j));
  }
}

/// Throws `fn: name is [actual], expected [rows=..,D=..]` unless a 2-D view is exactly that shape (rows may be 0).
template <class Dims>
void expect_rows(const std::string& fn, const std::string& name, const Dims& d, Index rows, Index D) {
  if (rows < 0) fail(fn, name + " is " + shape_str(d) + ", expected [rows,D=" + std::to_string(D) + "] with rows >= 0");
  if (d[0] != rows || d[1] != D)
    fail(fn,
         name + " is " + shape_str(d) + ", expected [rows=" + std::to_string(rows) + ",D=" + std::to_string(D) + "]");
}

/// The rows of a rank-`Rank` tensor normalized over its last dimension: size / D, after checking that dimension
/// (and that no dimension is negative). Called before anything is sized from the tensor.
template <class Dims>
Index rows_of(const std::string& fn, const std::string& name, const Dims& d, Index D) {
  expect_nonnegative_dims(fn, name, d);
  if (static_cast<Index>(d.size()) < 1 || d[d.size() - 1] != D)
    fail(fn,
         name + " is " + shape_str(d) + ", expected [...,D=" + std::to_string(D) + "] (normalized over the last dim)");
  Index rows = 1;
  for (std::size_t i = 0; i + 1 < static_cast<std::size_t>(d.size()); ++i) rows *= d[i];
  return rows;
}

template <class DA, class DB>
void expect_same_shape(const std::string& fn, const std::string& name, const DA& got, const DB& want,
                       const std::string& want_name) {
  bool same = got.size() == want.size();
  for (std::size_t i = 0; same && i < static_cast<std::size_t>(got.size()); ++i) same = got[i] == want[i];
  if (!same) fail(fn, name + " is " + shape_str(got) + ", expected the shape of " + want_name + " " + shape_str(want));
}

/// Checks an optional [D] parameter tensor (it is a public member, so a caller may have replaced it).
template <class P>
void check_param(const std::string& fn, const char* name, const std::optional<Tensor<P, 1>>& p, Index D) {
  if (p && p->dimension(0) != D)
    fail(fn, std::string(name) + " is " + shape_str(p->dimensions()) + ", expected [D=" + std::to_string(D) + "]");
}

inline void check_norm_config(const std::string& fn, Index D, double eps) {
  if (D <= 0) fail(fn, "hidden_size is " + std::to_string(D) + ", expected > 0");
  // Checked before the [D] weight and bias are allocated.
  if (D > kMaxParameterElements)
    fail(fn, "hidden_size is " + std::to_string(D) + ", expected at most 2^40 = " +
                 std::to_string(kMaxParameterElements) + " (gla::kMaxParameterElements)");
  if (!(eps >= 0) || !std::isfinite(eps)) {
    std::ostringstream s;  // std::to_string would print 1e-7 as 0.000000
    s << "eps is " << eps << ", expected a finite number >= 0";
    fail(fn, s.str());
  }
}

}  // namespace detail

/// fla.modules.RMSNorm: y = x'·rsqrt(mean(x'²) + eps)·weight + bias over the last dim, x' = x (+ residual).
/// P is the scalar the parameters are stored in (fla keeps the layer's g_norm weight in fp32; any supported
/// scalar works and is converted to the compute type).
template <class P = float>
class RMSNorm {
 public:
  /// weight [D] P, ones; present when elementwise_affine (nullopt otherwise, as fla's None).
  std::optional<Tensor<P, 1>> weight;
  /// bias [D] P, zeros; present when bias and elementwise_affine (fla creates it only with the weight).
  std::optional<Tensor<P, 1>> bias;

  explicit RMSNorm(Index hidden_size, bool elementwise_affine = true, bool with_bias = false, double eps = 1e-5)
      : D_(hidden_size), eps_(eps) {
    detail::check_norm_config("RMSNorm", D_, eps_);
    if (elementwise_affine) {
      weight.emplace(D_);
      weight->setConstant(P(1));
      if (with_bias) {
        bias.emplace(D_);
        bias->setZero();
      }
    }
  }

  Index hidden_size() const { return D_; }
  double eps() const { return eps_; }

  /// Core: y [rows,D] T ← norm(x [rows,D] T (+ residual [rows,D] R)); residual_out [rows,D] R ← x + residual
  /// (prenorm). T ∈ {float, double, bf16, half}, math in acc_t<T>; R defaults to T (`forward_into<float>(...)`
  /// keeps the residual in float). In place: y may be exactly x, residual_out exactly residual; no other
  /// overlap. rows may be 0.
  template <class R = void, class X>
  void forward_into(const X& x_in, ViewOf<X, 2> y,
                    std::optional<ConstView<scalar_or_t<R, X>, 2>> residual = std::nullopt,
                    std::optional<View<scalar_or_t<R, X>, 2>> residual_out = std::nullopt) const {
    const ConstViewOf<X, 2> x(x_in);
    const std::string fn = "RMSNorm::forward_into";
    const Index rows = x.dimension(0);
    detail::expect_rows(fn, "x", x.dimensions(), rows, D_);
    detail::expect_rows(fn, "y", y.dimensions(), rows, D_);
    if (residual) detail::expect_rows(fn, "residual", residual->dimensions(), rows, D_);
    if (residual_out) detail::expect_rows(fn, "residual_out", residual_out->dimensions(), rows, D_);
    detail::check_aliasing(fn, {detail::buffer("x", x), detail::buffer("residual", residual)},
                           {detail::buffer("y", y), detail::buffer("residual_out", residual_out)},
                           {{"y", "x"}, {"residual_out", "residual"}});
    run(fn, x.data(), nullptr, y.data(), residual ? residual->data() : nullptr,
        residual_out ? residual_out->data() : nullptr, rows);
  }

  /// y [..., D] T = norm(x [..., D] T), any rank ≥ 1.
  template <class X>
  Tensor<scalar_type_t<X>, rank_of_v<X>> forward(const X& x_in) const {
    using T = scalar_type_t<X>;
    const ConstView<T, rank_of_v<X>> x(x_in);
    const std::string fn = "RMSNorm::forward";
    const Index rows = detail::rows_of(fn, "x", x.dimensions(), D_);
    Tensor<T, rank_of_v<X>> y(x.dimensions());
    run(fn, x.data(), nullptr, y.data(), static_cast<const T*>(nullptr), static_cast<T*>(nullptr), rows);
    return y;
  }
  /// y [..., D] T = norm(x + residual), residual [..., D] of any supported scalar (fla's prenorm=False with a
  /// residual).
  template <class X, class Res>
  Tensor<scalar_type_t<X>, rank_of_v<X>> forward(const X& x_in, const Res& residual_in) const {
    using T = scalar_type_t<X>;
    constexpr int Rank = rank_of_v<X>;
    const ConstView<T, Rank> x(x_in);
    const ConstView<scalar_type_t<Res>, rank_of_v<Res>> residual(residual_in);
    const std::string fn = "RMSNorm::forward";
    const Index rows = detail::rows_of(fn, "x", x.dimensions(), D_);
    detail::expect_same_shape(fn, "residual", residual.dimensions(), x.dimensions(), "x");
    Tensor<T, Rank> y(x.dimensions());
    run(fn, x.data(), nullptr, y.data(), residual.data(), static_cast<scalar_type_t<Res>*>(nullptr), rows);
    return y;
  }
  /// fla's prenorm=True with a residual: {y = norm(x + residual), residual = x + residual in the residual's
  /// scalar}.
  template <class X, class Res>
  PrenormResult<scalar_type_t<X>, scalar_type_t<Res>, rank_of_v<X>> forward_prenorm(const X& x_in,
                                                                                    const Res& residual_in) const {
    using T = scalar_type_t<X>;
    using R = scalar_type_t<Res>;
    constexpr int Rank = rank_of_v<X>;
    const ConstView<T, Rank> x(x_in);
    const ConstView<R, rank_of_v<Res>> residual(residual_in);
    const std::string fn = "RMSNorm::forward_prenorm";
    const Index rows = detail::rows_of(fn, "x", x.dimensions(), D_);
    detail::expect_same_shape(fn, "residual", residual.dimensions(), x.dimensions(), "x");
    PrenormResult<T, R, Rank> out{Tensor<T, Rank>(x.dimensions()), Tensor<R, Rank>(x.dimensions())};
    run(fn, x.data(), nullptr, out.y.data(), residual.data(), out.residual.data(), rows);
    return out;
  }
  /// fla's prenorm=True without a residual: the residual returned is x in R (default T; R = float is fla's
  /// residual_in_fp32=True), e.g. `norm.forward_prenorm<float>(x)`.
  template <class R = void, class X>
  auto forward_prenorm(const X& x_in) const {
    using T = scalar_type_t<X>;
    using Out = scalar_or_t<R, X>;
    constexpr int Rank = rank_of_v<X>;
    const ConstView<T, Rank> x(x_in);
    const std::string fn = "RMSNorm::forward_prenorm";
    const Index rows = detail::rows_of(fn, "x", x.dimensions(), D_);
    PrenormResult<T, Out, Rank> out{Tensor<T, Rank>(x.dimensions()), Tensor<Out, Rank>(x.dimensions())};
    run(fn, x.data(), nullptr, out.y.data(), static_cast<const Out*>(nullptr), out.residual.data(), rows);
    return out;
  }

 private:
  Index D_;
  double eps_;

  template <class T, class R>
  void run(const std::string& fn, const T* x, std::nullptr_t, T* y, const R* residual, R* residual_out,
           Index rows) const {
    static_assert(is_supported_scalar_v<T>, "gla supports float, double, Eigen::bfloat16 and Eigen::half");
    static_assert(is_supported_scalar_v<R>, "the residual must be float, double, Eigen::bfloat16 or Eigen::half");
    detail::check_param(fn, "weight", weight, D_);
    detail::check_param(fn, "bias", bias, D_);
    detail::NormArgs<T, R, P> a;
    a.rows = rows;
    a.D = D_;
    a.x = x;
    a.residual = residual;
    a.residual_out = residual_out;
    a.y = y;
    a.weight = weight ? weight->data() : nullptr;
    a.bias = bias ? bias->data() : nullptr;
    a.eps = eps_;
    detail::rms_norm_rows(a);
  }
};

/// fla.modules.FusedRMSNormGated: y = x'·rsqrt(mean(x'²) + eps)·weight, THEN ·g·σ(g) (swish/silu) or ·σ(g)
/// (sigmoid), over the last dim; x' = x (+ residual). The gate g is not normalized. No bias (as fla).
template <class P = float>
class FusedRMSNormGated {
 public:
  /// weight [D] P, ones; present when elementwise_affine.
  std::optional<Tensor<P, 1>> weight;

  /// activation must be Activation::SiLU (= Swish) or Activation::Sigmoid, else gla::Error.
  explicit FusedRMSNormGated(Index hidden_size, bool elementwise_affine = true, double eps = 1e-5,
                             Activation activation = Activation::SiLU)
      : D_(hidden_size), eps_(eps), act_(activation) {
    const std::string fn = "FusedRMSNormGated";
    detail::check_norm_config(fn, D_, eps_);
    if (act_ != Activation::SiLU && act_ != Activation::Sigmoid)
      detail::fail(fn, std::string("activation '") + activation_name(act_) +
                           "' is not supported, expected one of swish, silu, sigmoid");
    if (elementwise_affine) {
      weight.emplace(D_);
      weight->setConstant(P(1));
    }
  }
  /// The same with fla's activation name: 'swish', 'silu' or 'sigmoid', else gla::Error.
  FusedRMSNormGated(Index hidden_size, bool elementwise_affine, double eps, std::string_view activation)
      : FusedRMSNormGated(hidden_size, elementwise_affine, eps, parse_gate(activation)) {}

  Index hidden_size() const { return D_; }
  double eps() const { return eps_; }
  /// Activation::SiLU (swish/silu) or Activation::Sigmoid.
  Activation activation() const { return act_; }

  /// Core: y [rows,D] T ← norm(x [rows,D] T (+ residual [rows,D] R))·weight·gate(g [rows,D] T); residual_out
  /// [rows,D] R ← x + residual; R defaults to T. In place: y may be exactly x or exactly g, residual_out exactly
  /// residual; no other overlap (e.g. residual_out = g is rejected). rows may be 0.
  template <class R = void, class X>
  void forward_into(const X& x_in, ConstViewOf<X, 2> g, ViewOf<X, 2> y,
                    std::optional<ConstView<scalar_or_t<R, X>, 2>> residual = std::nullopt,
                    std::optional<View<scalar_or_t<R, X>, 2>> residual_out = std::nullopt) const {
    const ConstViewOf<X, 2> x(x_in);
    const std::string fn = "FusedRMSNormGated::forward_into";
    const Index rows = x.dimension(0);
    detail::expect_rows(fn, "x", x.dimensions(), rows, D_);
    detail::expect_rows(fn, "g", g.dimensions(), rows, D_);
    detail::expect_rows(fn, "y", y.dimensions(), rows, D_);
    if (residual) detail::expect_rows(fn, "residual", residual->dimensions(), rows, D_);
    if (residual_out) detail::expect_rows(fn, "residual_out", residual_out->dimensions(), rows, D_);
    detail::check_aliasing(fn, {detail::buffer("x", x), detail::buffer("g", g), detail::buffer("residual", residual)},
                           {detail::buffer("y", y), detail::buffer("residual_out", residual_out)},
                           {{"y", "x"}, {"y", "g"}, {"residual_out", "residual"}});
    run(fn, x.data(), g.data(), y.data(), residual ? residual->data() : nullptr,
        residual_out ? residual_out->data() : nullptr, rows);
  }

  /// y [..., D] T = norm(x [..., D] T)·weight·gate(g [..., D] T), any rank ≥ 1.
  template <class X>
  Tensor<scalar_type_t<X>, rank_of_v<X>> forward(const X& x_in, ConstViewOf<X, rank_of_v<X>> g) const {
    using T = scalar_type_t<X>;
    constexpr int Rank = rank_of_v<X>;
    const ConstView<T, Rank> x(x_in);
    const std::string fn = "FusedRMSNormGated::forward";
    const Index rows = detail::rows_of(fn, "x", x.dimensions(), D_);
    detail::expect_same_shape(fn, "g", g.dimensions(), x.dimensions(), "x");
    Tensor<T, Rank> y(x.dimensions());
    run(fn, x.data(), g.data(), y.data(), static_cast<const T*>(nullptr), static_cast<T*>(nullptr), rows);
    return y;
  }
  /// y = norm(x + residual)·weight·gate(g), residual [..., D] of any supported scalar (prenorm=False with a
  /// residual).
  template <class X, class Res>
  Tensor<scalar_type_t<X>, rank_of_v<X>> forward(const X& x_in, ConstViewOf<X, rank_of_v<X>> g,
                                                 const Res& residual_in) const {
    using T = scalar_type_t<X>;
    constexpr int Rank = rank_of_v<X>;
    const ConstView<T, Rank> x(x_in);
    const ConstView<scalar_type_t<Res>, rank_of_v<Res>> residual(residual_in);
    const std::string fn = "FusedRMSNormGated::forward";
    const Index rows = detail::rows_of(fn, "x", x.dimensions(), D_);
    detail::expect_same_shape(fn, "g", g.dimensions(), x.dimensions(), "x");
    detail::expect_same_shape(fn, "residual", residual.dimensions(), x.dimensions(), "x");
    Tensor<T, Rank> y(x.dimensions());
    run(fn, x.data(), g.data(), y.data(), residual.data(), static_cast<scalar_type_t<Res>*>(nullptr), rows);
    return y;
  }
  /// prenorm=True with a residual: {y, residual = x + residual in the residual's scalar}.
  template <class X, class Res>
  PrenormResult<scalar_type_t<X>, scalar_type_t<Res>, rank_of_v<X>> forward_prenorm(const X& x_in,
                                                                                    ConstViewOf<X, rank_of_v<X>> g,
                                                                                    const Res& residual_in) const {
    using T = scalar_type_t<X>;
    using R = scalar_type_t<Res>;
    constexpr int Rank = rank_of_v<X>;
    const ConstView<T, Rank> x(x_in);
    const ConstView<R, rank_of_v<Res>> residual(residual_in);
    const std::string fn = "FusedRMSNormGated::forward_prenorm";
    const Index rows = detail::rows_of(fn, "x", x.dimensions(), D_);
    detail::expect_same_shape(fn, "g", g.dimensions(), x.dimensions(), "x");
    detail::expect_same_shape(fn, "residual", residual.dimensions(), x.dimensions(), "x");
    PrenormResult<T, R, Rank> out{Tensor<T, Rank>(x.dimensions()), Tensor<R, Rank>(x.dimensions())};
    run(fn, x.data(), g.data(), out.y.data(), residual.data(), out.residual.data(), rows);
    return out;
  }
  /// prenorm=True without a residual: residual = x in R (default T; float is residual_in_fp32=True).
  template <class R = void, class X>
  auto forward_prenorm(const X& x_in, ConstViewOf<X, rank_of_v<X>> g) const {
    using T = scalar_type_t<X>;
    using Out = scalar_or_t<R, X>;
    constexpr int Rank = rank_of_v<X>;
    const ConstView<T, Rank> x(x_in);
    const std::string fn = "FusedRMSNormGated::forward_prenorm";
    const Index rows = detail::rows_of(fn, "x", x.dimensions(), D_);
    detail::expect_same_shape(fn, "g", g.dimensions(), x.dimensions(), "x");
    PrenormResult<T, Out, Rank> out{Tensor<T, Rank>(x.dimensions()), Tensor<Out, Rank>(x.dimensions())};
    run(fn, x.data(), g.data(), out.y.data(), static_cast<const Out*>(nullptr), out.residual.data(), rows);
    return out;
  }

 private:
  Index D_;
  double eps_;
  Activation act_;

  static Activation parse_gate(std::string_view name) {
    if (name == "swish" || name == "silu") return Activation::SiLU;
    if (name == "sigmoid") return Activation::Sigmoid;
    detail::fail("FusedRMSNormGated",
                 "activation '" + std::string(name) + "' is not supported, expected one of swish, silu, sigmoid");
  }

  template <class T, class R>
  void run(const std::string& fn, const T* x, const T* g, T* y, const R* residual, R* residual_out, Index rows) const {
    static_assert(is_supported_scalar_v<T>, "gla supports float, double, Eigen::bfloat16 and Eigen::half");
    static_assert(is_supported_scalar_v<R>, "the residual must be float, double, Eigen::bfloat16 or Eigen::half");
    detail::check_param(fn, "weight", weight, D_);
    detail::NormArgs<T, R, P> a;
    a.rows = rows;
    a.D = D_;
    a.x = x;
    a.g = g;
    a.residual = residual;
    a.residual_out = residual_out;
    a.y = y;
    a.weight = weight ? weight->data() : nullptr;
    a.eps = eps_;
    a.gate = act_ == Activation::Sigmoid ? detail::NormGate::Sigmoid : detail::NormGate::Swish;
    detail::rms_norm_rows(a);
  }
};

}  // namespace gla
