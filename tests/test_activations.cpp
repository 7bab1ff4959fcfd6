// Tests of gla/modules/activations.hpp: every ACT2FN function against an independent double formula, name parsing
// and its errors, and application to tensors (all four scalars), Eigen objects and `_into` outputs.

#include <gla/modules/activations.hpp>

#include "support/catch.hpp"
#include "support/test_utils.hpp"

#include <functional>
#include <string>

namespace {

using gla::Activation;
using gla::Index;
using gla::Tensor;

/// Runs f, requires a gla::Error whose message contains every part.
template <class F>
void require_error(F&& f, std::initializer_list<const char*> parts) {
  REQUIRE_THROWS_AS(f(), gla::Error);
  std::string msg;
  try {
    f();
  } catch (const gla::Error& e) {
    msg = e.what();
  }
  INFO("message: " << msg);
  for (const char* p : parts) CHECK(msg.find(p) != std::string::npos);
}

// Independent double references: written in the branchy textbook forms, not the library's formulas.
double ref_sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }
double ref_logsigmoid(double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }
double ref_act(Activation a, double x) {
  switch (a) {
    case Activation::ReLU:
      return x > 0 ? x : 0.0;
    case Activation::Sigmoid:
      return ref_sigmoid(x);
    case Activation::LogSigmoid:
      return ref_logsigmoid(x);
    case Activation::SiLU:
      return x * ref_sigmoid(x);
    case Activation::SqReLU:
      return x > 0 ? x * x : 0.0;
    case Activation::GELU: {
      // fla's constant: sqrt(2/π) rounded to 0.79788456 (the exact value moves outputs by ~1e-9).
      return 0.5 * x * (1.0 + std::tanh(0.79788456 * (x + 0.044715 * x * x * x)));
    }
  }
  return std::nan("");
}

const Activation kAll[] = {Activation::ReLU, Activation::Sigmoid, Activation::LogSigmoid,
                           Activation::SiLU, Activation::SqReLU,  Activation::GELU};

/// Applies act to a random rank-3 tensor of scalar T and compares with the double reference of the same inputs.
template <class T>
void check_tensor_apply(double tol, std::uint64_t salt) {
  auto g = gla::test::rng(salt);
  for (Activation a : kAll) {
    Tensor<T, 3> x(3, 5, 17);
    gla::test::fill_normal(x, g, 3.0);
    Tensor<double, 3> ref(x.dimensions());
    for (Index i = 0; i < x.size(); ++i) ref.data()[i] = ref_act(a, static_cast<double>(x.data()[i]));
    // Out of place into a NaN-filled buffer: every element must be written.
    Tensor<T, 3> y(x.dimensions());
    gla::test::fill_nan(y);
    gla::activate_into(a, gla::view(x), gla::mut_view(y));
    const auto d_into = gla::test::compare(y, ref);
    INFO(gla::activation_name(a) << " activate_into: " << d_into.str());
    CHECK(gla::test::ok(d_into, tol));
    // activate() returns the same numbers; in place on the view and on the owned tensor likewise.
    const Tensor<T, 3> y2 = gla::activate(a, gla::view(x));
    CHECK(gla::test::compare(y2, y).max_abs == 0);
    Tensor<T, 3> x_inplace = x;
    gla::apply_activation(a, gla::mut_view(x_inplace));
    CHECK(gla::test::compare(x_inplace, y).max_abs == 0);
    Tensor<T, 3> x_owned = x;
    gla::apply_activation(a, x_owned);
    CHECK(gla::test::compare(x_owned, y).max_abs == 0);
    // y may be x itself.
    Tensor<T, 3> x_alias = x;
    gla::activate_into(a, gla::view(x_alias), gla::mut_view(x_alias));
    CHECK(gla::test::compare(x_alias, y).max_abs == 0);
  }
}

}  // namespace

TEST_CASE("scalar activations match double references in float and double", "[activations]") {
  auto g = gla::test::rng(101);
  std::normal_distribution<double> n(0.0, 4.0);
  for (Activation a : kAll) {
    for (int i = 0; i < 2000; ++i) {
      const double x = i < 20 ? (i - 10) * 10.0 : n(g);  // includes ±100, ±50, 0
      const double r = ref_act(a, x);
      const double tol_abs = 1e-12 + 1e-12 * std::abs(r);
      INFO(gla::activation_name(a) << "(" << x << ")");
      // The double form differs from the reference only by rounding.
      CHECK(std::abs(gla::apply_activation(a, x) - r) <= tol_abs * 8);
      const float xf = static_cast<float>(x);
      const double rf = ref_act(a, static_cast<double>(xf));
      CHECK(std::abs(static_cast<double>(gla::apply_activation(a, xf)) - rf) <= 1e-6 * (1.0 + std::abs(rf)));
    }
  }
}

TEST_CASE("named scalar functions equal apply_activation and fla's formulas", "[activations]") {
  for (double x : {-7.5, -1.0, -0.25, 0.0, 0.3, 2.0, 9.0}) {
    CHECK(gla::relu(x) == gla::apply_activation(Activation::ReLU, x));
    CHECK(gla::sigmoid(x) == gla::apply_activation(Activation::Sigmoid, x));
    CHECK(gla::logsigmoid(x) == gla::apply_activation(Activation::LogSigmoid, x));
    CHECK(gla::silu(x) == gla::apply_activation(Activation::SiLU, x));
    CHECK(gla::swish(x) == gla::silu(x));
    CHECK(gla::sqrelu(x) == gla::apply_activation(Activation::SqReLU, x));
    CHECK(gla::gelu(x) == gla::apply_activation(Activation::GELU, x));
    // fla's exact expressions, term by term.
    CHECK(gla::logsigmoid(x) == std::min(0.0, x) - std::log1p(std::exp(-std::abs(x))));
    CHECK(gla::gelu(x) == 0.5 * x * (1.0 + std::tanh(0.79788456 * x * (1.0 + 0.044715 * x * x))));
  }
}

TEST_CASE("activations at extreme and special inputs", "[activations]") {
  const float big = 1e4f;
  CHECK(gla::sigmoid(big) == 1.0f);
  CHECK(gla::sigmoid(-big) == 0.0f);
  CHECK(gla::logsigmoid(-big) == -big);
  CHECK(gla::logsigmoid(big) == 0.0f);
  CHECK(gla::silu(-big) == 0.0f);
  CHECK(gla::silu(big) == big);
  CHECK(gla::gelu(-big) == 0.0f);
  CHECK(gla::gelu(big) == big);
  CHECK(gla::sqrelu(-3.0f) == 0.0f);
  CHECK(gla::sqrelu(3.0f) == 9.0f);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // PyTorch propagates NaN through relu and the others; so do these.
  CHECK(std::isnan(gla::relu(nan)));
  CHECK(std::isnan(gla::sqrelu(nan)));
  CHECK(std::isnan(gla::sigmoid(nan)));
  CHECK(std::isnan(gla::logsigmoid(nan)));
  CHECK(std::isnan(gla::silu(nan)));
  CHECK(std::isnan(gla::gelu(nan)));
}

TEST_CASE("parse_activation accepts fla's ACT2FN names", "[activations]") {
  CHECK(gla::parse_activation("relu") == Activation::ReLU);
  CHECK(gla::parse_activation("sigmoid") == Activation::Sigmoid);
  CHECK(gla::parse_activation("logsigmoid") == Activation::LogSigmoid);
  CHECK(gla::parse_activation("silu") == Activation::SiLU);
  CHECK(gla::parse_activation("swish") == Activation::SiLU);
  CHECK(gla::parse_activation("swish") == Activation::Swish);
  CHECK(gla::parse_activation("sqrelu") == Activation::SqReLU);
  CHECK(gla::parse_activation("gelu") == Activation::GELU);
  for (Activation a : kAll) CHECK(gla::parse_activation(gla::activation_name(a)) == a);
}

TEST_CASE("parse_activation rejects unknown names, listing the valid ones", "[activations][errors]") {
  require_error([] { gla::parse_activation("tanh"); },
                {"parse_activation", "'tanh'", "relu, sigmoid, logsigmoid, silu, swish, sqrelu, gelu"});
  require_error([] { gla::parse_activation("SiLU"); }, {"parse_activation", "'SiLU'"});  // case-sensitive like fla
  require_error([] { gla::parse_activation(""); }, {"parse_activation", "''"});
  require_error([] { gla::parse_activation("bias_gelu"); }, {"parse_activation", "bias_gelu", "takes a bias"});
}

TEST_CASE("apply_activation on tensors: float and double", "[activations]") {
  check_tensor_apply<float>(1e-6, 201);
  check_tensor_apply<double>(1e-12, 202);
}

TEST_CASE("apply_activation on tensors: bf16 and half compute in float", "[activations]") {
  check_tensor_apply<Eigen::bfloat16>(5e-3, 203);
  check_tensor_apply<Eigen::half>(5e-3, 204);
}

TEST_CASE("apply_activation on Eigen objects", "[activations]") {
  Eigen::ArrayXXf a = Eigen::ArrayXXf::Random(4, 6) * 5.0f;
  const Eigen::ArrayXXf a0 = a;
  gla::apply_activation(Activation::SiLU, a);
  for (Index j = 0; j < a.cols(); ++j)
    for (Index i = 0; i < a.rows(); ++i) CHECK(a(i, j) == gla::silu(a0(i, j)));

  // A temporary row expression of a matrix (rvalue overload) touches only that row.
  Eigen::MatrixXd m = Eigen::MatrixXd::Random(3, 5) * 4.0;
  const Eigen::MatrixXd m0 = m;
  gla::apply_activation(Activation::GELU, m.row(1));
  for (Index j = 0; j < m.cols(); ++j) {
    CHECK(m(0, j) == m0(0, j));
    CHECK(m(1, j) == gla::gelu(m0(1, j)));
    CHECK(m(2, j) == m0(2, j));
  }

  // A Map over a bf16 buffer: computed in float, rounded once.
  std::vector<Eigen::bfloat16> buf(10);
  for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = Eigen::bfloat16(static_cast<float>(i) - 4.5f);
  const std::vector<Eigen::bfloat16> buf0 = buf;
  gla::apply_activation(Activation::LogSigmoid,
                        Eigen::Map<Eigen::Array<Eigen::bfloat16, Eigen::Dynamic, 1>>(buf.data(), 10));
  for (std::size_t i = 0; i < buf.size(); ++i)
    CHECK(static_cast<float>(buf[i]) ==
          static_cast<float>(Eigen::bfloat16(gla::logsigmoid(static_cast<float>(buf0[i])))));
}

TEST_CASE("activate_into rejects a mismatched output", "[activations][errors]") {
  Tensor<float, 2> x(3, 4), y(4, 3);
  x.setZero();
  require_error([&] { gla::activate_into(Activation::ReLU, gla::view(x), gla::mut_view(y)); },
                {"activate_into", "y is [4,3]", "[3,4]"});
}
