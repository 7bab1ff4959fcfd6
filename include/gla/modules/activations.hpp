#pragma once
/// gla/modules/activations.hpp: fla's ACT2FN activations (relu, sigmoid, logsigmoid, silu/swish, sqrelu, gelu) as
/// scalar functions, an enum parsed from fla's names, and their application to tensors and Eigen arrays.

#include <gla/core.hpp>

#include <string>
#include <string_view>

namespace gla {

/// The activations of fla's ACT2FN that take one argument ('bias_gelu' takes two and is not offered).
/// `Swish` is another name for `SiLU`, exactly as in fla, so both compare equal.
enum class Activation { ReLU, Sigmoid, LogSigmoid, SiLU, Swish = SiLU, SqReLU, GELU };

// Scalar forms, evaluated in S (callers pass the accumulation type: float for float/bf16/half, double for double).
// The formulas are fla's, so NaN propagates as in PyTorch (relu(NaN) = NaN, not 0).

/// max(0, x), with NaN passed through.
template <class S>
inline S relu(S x) {
  return x < S(0) ? S(0) : x;
}
/// 1 / (1 + exp(−x)); saturates to exactly 0 or 1 instead of overflowing.
template <class S>
inline S sigmoid(S x) {
  return S(1) / (S(1) + std::exp(-x));
}
/// log σ(x) = min(0, x) − log1p(exp(−|x|)), the overflow-free form fla uses.
template <class S>
inline S logsigmoid(S x) {
  return std::min(S(0), x) - std::log1p(std::exp(-std::abs(x)));
}
/// x · σ(x).
template <class S>
inline S silu(S x) {
  return x * sigmoid(x);
}
/// Same function as silu (fla maps both names to it).
template <class S>
inline S swish(S x) {
  return silu(x);
}
/// relu(x)².
template <class S>
inline S sqrelu(S x) {
  const S r = relu(x);
  return r * r;
}
/// The tanh approximation fla uses: 0.5·x·(1 + tanh(0.79788456·x·(1 + 0.044715·x²))).
template <class S>
inline S gelu(S x) {
  return S(0.5) * x * (S(1) + std::tanh(S(0.79788456) * x * (S(1) + S(0.044715) * x * x)));
}

/// fla's name of an activation ("silu" for SiLU/Swish).
inline const char* activation_name(Activation a) {
  switch (a) {
    case Activation::ReLU:
      return "relu";
    case Activation::Sigmoid:
      return "sigmoid";
    case Activation::LogSigmoid:
      return "logsigmoid";
    case Activation::SiLU:
      return "silu";
    case Activation::SqReLU:
      return "sqrelu";
    case Activation::GELU:
      return "gelu";
  }
  return "unknown";
}

/// The names parse_activation() accepts, in fla's ACT2FN order.
inline const char* activation_names() { return "relu, sigmoid, logsigmoid, silu, swish, sqrelu, gelu"; }

/// Looks up an ACT2FN name (case-sensitive, as fla's dict); an unknown name throws gla::Error listing the valid ones.
inline Activation parse_activation(std::string_view name) {
  if (name == "relu") return Activation::ReLU;
  if (name == "sigmoid") return Activation::Sigmoid;
  if (name == "logsigmoid") return Activation::LogSigmoid;
  if (name == "silu" || name == "swish") return Activation::SiLU;
  if (name == "sqrelu") return Activation::SqReLU;
  if (name == "gelu") return Activation::GELU;
  detail::fail("parse_activation", "activation '" + std::string(name) + "' is unknown, expected one of " +
                                       activation_names() +
                                       (name == "bias_gelu" ? " ('bias_gelu' takes a bias and is not offered)" : ""));
}

namespace detail {

/// Calls f with a stateless functor for the activation, so the switch runs once per tensor and not per element.
template <class S, class F>
void with_activation(Activation a, F&& f) {
  switch (a) {
    case Activation::ReLU:
      f([](S x) { return relu(x); });
      return;
    case Activation::Sigmoid:
      f([](S x) { return sigmoid(x); });
      return;
    case Activation::LogSigmoid:
      f([](S x) { return logsigmoid(x); });
      return;
    case Activation::SiLU:
      f([](S x) { return silu(x); });
      return;
    case Activation::SqReLU:
      f([](S x) { return sqrelu(x); });
      return;
    case Activation::GELU:
      f([](S x) { return gelu(x); });
      return;
  }
  fail("apply_activation", "activation value " + std::to_string(static_cast<int>(a)) + " is not an Activation");
}

/// dst[i] = act(src[i]) computed in acc_t<T> and rounded once to T; dst may equal src.
template <class T>
void activate_ptr(Activation a, const T* src, T* dst, Index n) {
  using A = acc_t<T>;
  with_activation<A>(a, [&](auto fn) {
    for (Index i = 0; i < n; ++i) dst[i] = static_cast<T>(fn(static_cast<A>(src[i])));
  });
}

}  // namespace detail

/// act(x) for one scalar, computed in S (float or double). Constrained so tensors and Eigen objects reach their
/// own overloads below.
template <class S, std::enable_if_t<std::is_floating_point_v<S>, int> = 0>
S apply_activation(Activation a, S x) {
  S r{};
  detail::with_activation<S>(a, [&](auto fn) { r = fn(x); });
  return r;
}

/// In place: x [any] T (float, double, bf16, half) ← act(x), computed in acc_t<T>. x is a mutable
/// gla::Tensor, Eigen TensorMap or gla::View.
template <class X, std::enable_if_t<is_tensor_like_v<X>, int> = 0>
void apply_activation(Activation a, X&& x_in) {
  using T = scalar_type_t<X>;
  static_assert(is_supported_scalar_v<T>, "gla supports float, double, Eigen::bfloat16 and Eigen::half");
  const View<T, rank_of_v<X>> x(x_in);
  detail::activate_ptr(a, x.data(), x.data(), x.size());
}
/// In place on any writable Eigen matrix/array expression (a Map, a block, a row, ...), computed in acc_t<Scalar>.
template <class Derived>
void apply_activation(Activation a, Eigen::DenseBase<Derived>& x) {
  using T = typename Derived::Scalar;
  using A = acc_t<T>;
  detail::with_activation<A>(a, [&](auto fn) {
    for (Index j = 0; j < x.cols(); ++j)
      for (Index i = 0; i < x.rows(); ++i) x(i, j) = static_cast<T>(fn(static_cast<A>(x(i, j))));
  });
}
/// Overload for temporaries such as `m.row(0)` or an `Eigen::Map` built in the call.
template <class Derived>
void apply_activation(Activation a, Eigen::DenseBase<Derived>&& x) {
  apply_activation(a, static_cast<Eigen::DenseBase<Derived>&>(x));
}

/// Out of place: y [same shape as x] T ← act(x [any] T). y may be exactly x (in place); no other overlap.
template <class X>
void activate_into(Activation a, const X& x_in, ViewOf<X, rank_of_v<X>> y) {
  using T = scalar_type_t<X>;
  static_assert(is_supported_scalar_v<T>, "gla supports float, double, Eigen::bfloat16 and Eigen::half");
  const std::string fn = "activate_into";
  const ConstView<T, rank_of_v<X>> x(x_in);
  if (x.dimensions() != y.dimensions())
    detail::fail(fn, "y is " + detail::shape_str(y.dimensions()) + ", expected the shape of x " +
                         detail::shape_str(x.dimensions()));
  detail::check_aliasing(fn, {detail::buffer("x", x)}, {detail::buffer("y", y)}, {{"y", "x"}});
  detail::activate_ptr(a, x.data(), y.data(), x.size());
}

/// Returns act(x) as a new tensor of x's shape and scalar.
template <class X>
Tensor<scalar_type_t<X>, rank_of_v<X>> activate(Activation a, const X& x) {
  Tensor<scalar_type_t<X>, rank_of_v<X>> y(ConstViewOf<X, rank_of_v<X>>(x).dimensions());
  activate_into(a, x, y);
  return y;
}

}  // namespace gla
