#pragma once
/// gla/modules/short_conv.hpp: fla's ShortConvolution, a depthwise causal 1-D convolution with optional bias, silu
/// and residual, its [N,D,W] cache of raw inputs, single-token decode steps and packed (cu_seqlens) batches.

#include <gla/core.hpp>
#include <gla/detail/param_limits.hpp>
#include <gla/modules/activations.hpp>

#include <string>
#include <string_view>

namespace gla {

/// Output of ShortConvolution::forward: y [B,T,D] T; final_state [N,D,W] T (the new cache) when requested.
template <class T>
struct ShortConvResult {
  Tensor<T, 3> y;
  std::optional<Tensor<T, 3>> final_state;
};

/// fla.modules.ShortConvolution (nn.Conv1d with groups = D, padding W−1, causal). For channel d of token t:
///   pre_t[d] = Σ_{w<W} weight[d,0,w] · x̃_{t−(W−1)+w}[d] + bias[d],  y_t = act(pre_t) + residual_t,
/// where x̃_j = x_j for j ≥ 0 and, for j < 0, the initial cache slot j+W (or 0 without a cache).
/// weight[:, 0, W−1] multiplies the current token. The cache [N,D,W] holds the last W raw inputs of each sequence
/// (after the mask, before the convolution), oldest first: slot W−1 is the newest; slot 0 is stored but never read.
/// P is the parameter scalar; math is in acc_t<T> of the input scalar T.
template <class P = float>
class ShortConvolution {
 public:
  /// weight [D,1,W] P, fla's layout; zeros until loaded (fla draws it randomly, which has no use for inference).
  Tensor<P, 3> weight;
  /// bias [D] P, zeros; present when constructed with bias.
  std::optional<Tensor<P, 1>> bias;

  /// activation: Activation::SiLU (= Swish) or std::nullopt (none); anything else → gla::Error.
  ShortConvolution(Index hidden_size, Index kernel_size, bool with_bias = false,
                   std::optional<Activation> activation = Activation::SiLU)
      : D_(hidden_size), W_(kernel_size), act_(activation) {
    const std::string fn = "ShortConvolution";
    if (D_ <= 0) detail::fail(fn, "hidden_size is " + std::to_string(D_) + ", expected > 0");
    if (W_ <= 0) detail::fail(fn, "kernel_size is " + std::to_string(W_) + ", expected >= 1");
    // Before allocating: a product that overflows or exceeds kMaxParameterElements is a gla::Error.
    detail::check_parameter_elements(
        fn,
        "the parameters, hidden_size * kernel_size" + std::string(with_bias ? " + hidden_size (bias)" : "") + " = " +
            std::to_string(D_) + " * " + std::to_string(W_) + (with_bias ? " + " + std::to_string(D_) : ""),
        detail::sat_add(detail::sat_mul(D_, W_), with_bias ? D_ : 0), sizeof(P));
    if (act_ && *act_ != Activation::SiLU)
      detail::fail(fn, std::string("activation '") + activation_name(*act_) +
                           "' is not supported, expected silu, swish or none");
    weight = Tensor<P, 3>(D_, 1, W_);
    weight.setZero();
    if (with_bias) {
      bias.emplace(D_);
      bias->setZero();
    }
  }
  /// The same with fla's activation name: "silu", "swish", or "" / "none" for fla's None; else gla::Error.
  ShortConvolution(Index hidden_size, Index kernel_size, bool with_bias, std::string_view activation)
      : ShortConvolution(hidden_size, kernel_size, with_bias, parse_conv_activation(activation)) {}

  Index hidden_size() const { return D_; }
  Index kernel_size() const { return W_; }
  /// Activation::SiLU or std::nullopt.
  std::optional<Activation> activation() const { return act_; }
  /// Elements of one sequence's cache, D·W (fla's state_size).
  Index state_size() const { return D_ * W_; }

  /// The weight as the kernels use it, [D,W] P (a view of `weight`; fla's `weight.view(D, W)`).
  TensorMap<P, 2> weight_dw() { return TensorMap<P, 2>(weight.data(), D_, W_); }
  ConstTensorMap<P, 2> weight_dw() const { return ConstTensorMap<P, 2>(weight.data(), D_, W_); }

  /// Loads the weight from fla's [D,1,W] layout.
  void set_weight(ConstView<P, 3> w) {
    detail::expect_dims("ShortConvolution::set_weight", "weight", w.dimensions(), {{"D", D_}, {"1", 1}, {"W", W_}});
    std::copy(w.data(), w.data() + w.size(), weight.data());
  }
  /// Loads the weight from the [D,W] view.
  void set_weight(ConstView<P, 2> w) {
    detail::expect_dims("ShortConvolution::set_weight", "weight", w.dimensions(), {{"D", D_}, {"W", W_}});
    std::copy(w.data(), w.data() + w.size(), weight.data());
  }
  /// Loads the bias [D]; gla::Error if the module was built without one.
  void set_bias(ConstView<P, 1> b) {
    const std::string fn = "ShortConvolution::set_bias";
    if (!bias) detail::fail(fn, "the module has no bias (constructed with bias = false)");
    detail::expect_dims(fn, "bias", b.dimensions(), {{"D", D_}});
    std::copy(b.data(), b.data() + b.size(), bias->data());
  }

  /// Core of forward: x [B,T,D] T → y [B,T,D] T.
  ///   cache        [N,D,W] T  optional initial cache (N = B, or the number of sequences of cu_seqlens);
  ///   final_state  [N,D,W] T  optional output: the cache after the last token of each sequence. It may be exactly
  ///                           the cache buffer (update in place; this is how step() works);
  ///   cu_seqlens   [N+1]      packed sequences (B must be 1); zero-length sequences leave their cache unchanged;
  ///   residual     [B,T,D] T  optional, added after the activation; y may be exactly the residual buffer;
  ///   mask         [B,T]   T  optional multiplier of the inputs (0 = padding) applied before the convolution and
  ///                           the cache, like fla's in-place `x.mul_(mask)` but without touching x; not with
  ///                           cu_seqlens (gla::Error, as fla's ValueError).
  /// y must not overlap x, the cache or the mask (every output token reads W inputs); no other overlap is
  /// allowed. Every sequence is convolved on its own, even when the total length equals the number of
  /// sequences (where fla's decode shortcut would mix tokens of different sequences; see docs/modules.md).
  template <class X>
  void forward_into(const X& x, ViewOf<X, 3> y, std::optional<ConstViewOf<X, 3>> cache = std::nullopt,
                    std::optional<ViewOf<X, 3>> final_state = std::nullopt,
                    const std::vector<std::int64_t>& cu_seqlens = {},
                    std::optional<ConstViewOf<X, 3>> residual = std::nullopt,
                    std::optional<ConstViewOf<X, 2>> mask = std::nullopt) const {
    run<scalar_type_t<X>>("ShortConvolution::forward_into", ConstViewOf<X, 3>(x), y, cache, final_state, cu_seqlens,
                          residual, mask);
  }

  /// fla's forward(x, residual, mask, cache, output_final_state, cu_seqlens) with the arguments reordered:
  /// x [B,T,D] T → {y [B,T,D] T, final_state [N,D,W] T if output_final_state}. The cache is never modified; a new
  /// final_state is returned (fla's decode shortcut updates the passed cache in place; step() does that here).
  template <class X>
  ShortConvResult<scalar_type_t<X>> forward(const X& x_in, std::optional<ConstViewOf<X, 3>> cache = std::nullopt,
                                            bool output_final_state = false,
                                            const std::vector<std::int64_t>& cu_seqlens = {},
                                            std::optional<ConstViewOf<X, 3>> residual = std::nullopt,
                                            std::optional<ConstViewOf<X, 2>> mask = std::nullopt) const {
    using T = scalar_type_t<X>;
    const ConstView<T, 3> x(x_in);
    ShortConvResult<T> r;
    r.y = Tensor<T, 3>(x.dimensions());
    const Index N = cu_seqlens.empty() ? x.dimension(0) : std::max<Index>(0, static_cast<Index>(cu_seqlens.size()) - 1);
    if (output_final_state) r.final_state.emplace(N, D_, W_);
    run<T>("ShortConvolution::forward", x, View<T, 3>(r.y), cache, detail::optional_output(r.final_state), cu_seqlens,
           residual, mask);
    return r;
  }

  /// One decode token per sequence: x [N,D] T; cache [N,D,W] T in/out is rolled left in place and x is written
  /// into slot W−1; y [N,D] T = act(Σ_w cache[:,:,w]·weight[:,w] + bias) (+ residual [N,D] T). y may be exactly
  /// the residual buffer; it must not overlap x or the cache.
  template <class X>
  void step_into(const X& x, ViewOf<X, 3> cache, ViewOf<X, 2> y,
                 std::optional<ConstViewOf<X, 2>> residual = std::nullopt) const {
    step_impl("ShortConvolution::step_into", ConstViewOf<X, 2>(x), cache, y, residual);
  }
  /// step_into() returning y [N,D] T.
  template <class X>
  Tensor<scalar_type_t<X>, 2> step(const X& x_in, ViewOf<X, 3> cache,
                                   std::optional<ConstViewOf<X, 2>> residual = std::nullopt) const {
    const ConstViewOf<X, 2> x(x_in);
    Tensor<scalar_type_t<X>, 2> y(x.dimensions());
    step_impl("ShortConvolution::step", x, cache, View<scalar_type_t<X>, 2>(y), residual);
    return y;
  }

 private:
  Index D_, W_;
  std::optional<Activation> act_;

  static std::optional<Activation> parse_conv_activation(std::string_view name) {
    if (name.empty() || name == "none" || name == "None") return std::nullopt;
    if (name == "silu" || name == "swish") return Activation::SiLU;
    detail::fail("ShortConvolution",
                 "activation '" + std::string(name) + "' is not supported, expected silu, swish or none");
  }

  template <class Dims>
  void expect_cache(const std::string& fn, const char* name, const Dims& d, Index N, bool packed) const {
    const bool ok = d[0] == N && d[1] == D_ && d[2] == W_;
    if (!ok)
      detail::fail(
          fn,
          std::string(name) + " is " + detail::shape_str(d) + ", expected " +
              detail::expected_str({{"N", N}, {"D", D_}, {"W", W_}}) +
              (d[0] != N ? (packed ? " (N = the number of sequences in cu_seqlens)" : " (N = the batch size)") : ""));
  }

  void check_params(const std::string& fn) const {
    detail::expect_dims(fn, "weight", weight.dimensions(), {{"D", D_}, {"1", 1}, {"W", W_}});
    if (bias) detail::expect_dims(fn, "bias", bias->dimensions(), {{"D", D_}});
  }

  template <class T>
  void step_impl(const std::string& fn, const ConstView<T, 2>& x, const View<T, 3>& cache, const View<T, 2>& y,
                 const std::optional<ConstView<T, 2>>& residual) const {
    const auto& xd = x.dimensions();
    if (xd[0] <= 0 || xd[1] != D_)
      detail::fail(fn, "x is " + detail::shape_str(xd) + ", expected " + detail::expected_str({{"N", -1}, {"D", D_}}));
    const Index N = xd[0];
    detail::expect_dims(fn, "y", y.dimensions(), {{"N", N}, {"D", D_}});
    if (residual) detail::expect_dims(fn, "residual", residual->dimensions(), {{"N", N}, {"D", D_}});
    // A decode step is the general path with T = 1 and the cache updated in place: [N,D] is [N,1,D] in memory.
    std::optional<ConstView<T, 3>> res3;
    if (residual) res3 = ConstView<T, 3>(residual->data(), N, 1, D_);
    run<T>(fn, ConstView<T, 3>(x.data(), N, 1, D_), View<T, 3>(y.data(), N, 1, D_), ConstView<T, 3>(cache), cache, {},
           res3, std::nullopt, "cache");
  }

  /// Shared body: validates everything (shapes and the aliasing rule), then convolves each sequence and writes its
  /// final cache.
  template <class T>
  void run(const std::string& fn, const ConstView<T, 3>& x, const View<T, 3>& y,
           const std::optional<ConstView<T, 3>>& cache_view, const std::optional<View<T, 3>>& final_view,
           const std::vector<std::int64_t>& cu, const std::optional<ConstView<T, 3>>& residual,
           const std::optional<ConstView<T, 2>>& mask, const char* final_name = "final_state") const {
    static_assert(is_supported_scalar_v<T>, "gla supports float, double, Eigen::bfloat16 and Eigen::half");
    using A = acc_t<T>;
    using Arr = Eigen::Array<A, Eigen::Dynamic, 1>;
    const auto& xd = x.dimensions();
    if (xd[0] <= 0 || xd[1] < 0 || xd[2] != D_)
      detail::fail(
          fn, "x is " + detail::shape_str(xd) + ", expected [B,T,D=" + std::to_string(D_) + "] with B > 0, T >= 0");
    const Index B = xd[0], T_ = xd[1], D = D_, W = W_;
    detail::expect_dims(fn, "y", y.dimensions(), {{"B", B}, {"T", T_}, {"D", D}});
    if (!cu.empty()) {
      if (B != 1) fail_batch(fn, B);
      detail::check_cu_seqlens(fn, cu, T_);
      if (mask) detail::fail(fn, "mask cannot be used together with cu_seqlens (fla raises ValueError too)");
    }
    if (mask) detail::expect_dims(fn, "mask", mask->dimensions(), {{"B", B}, {"T", T_}});
    if (residual) detail::expect_dims(fn, "residual", residual->dimensions(), {{"B", B}, {"T", T_}, {"D", D}});
    const std::vector<detail::Seq> seqs = detail::make_sequences(B, T_, cu);
    const Index N = static_cast<Index>(seqs.size());
    if (cache_view) expect_cache(fn, "cache", cache_view->dimensions(), N, !cu.empty());
    if (final_view) expect_cache(fn, final_name, final_view->dimensions(), N, !cu.empty());
    check_params(fn);
    detail::check_aliasing(fn,
                           {detail::buffer("x", x), detail::buffer("cache", cache_view),
                            detail::buffer("residual", residual), detail::buffer("mask", mask)},
                           {detail::buffer("y", y), detail::buffer(final_name, final_view)},
                           {{"y", "residual"}, {final_name, "cache"}});
    const T* cache = cache_view ? cache_view->data() : nullptr;
    T* final_state = final_view ? final_view->data() : nullptr;

    // The conv inputs: x, or x·mask rounded to T as fla's in-place multiply stores it.
    Tensor<T, 3> masked;
    const T* xin = x.data();
    if (mask) {
      masked = Tensor<T, 3>(B, T_, D);
      for (Index b = 0; b < B; ++b)
        for (Index t = 0; t < T_; ++t) {
          const A m = static_cast<A>(mask->data()[b * T_ + t]);
          const Index off = (b * T_ + t) * D;
          for (Index d = 0; d < D; ++d) masked.data()[off + d] = static_cast<T>(static_cast<A>(xin[off + d]) * m);
        }
      xin = masked.data();
    }
    const detail::AccInput<A, T> xa(xin, B * T_ * D);

    // Weight columns per tap (contiguous over d, so the inner loop vectorizes), bias, and a history buffer whose
    // first W−1 rows are the initial cache slots 1..W−1 (x̃_{−(W−1)}..x̃_{−1}) followed by the sequence's inputs.
    std::vector<Arr> wcol(static_cast<std::size_t>(W), Arr(D));
    for (Index d = 0; d < D; ++d)
      for (Index w = 0; w < W; ++w) wcol[static_cast<std::size_t>(w)](d) = static_cast<A>(weight.data()[d * W + w]);
    Arr b0 = Arr::Zero(D);
    if (bias) b0 = Eigen::Map<const Eigen::Array<P, Eigen::Dynamic, 1>>(bias->data(), D).template cast<A>();
    Arr prefix(std::max<Index>(W - 1, 0) * D), acc(D);

    for (Index n = 0; n < N; ++n) {
      const detail::Seq sq = seqs[static_cast<std::size_t>(n)];
      const Index base = sq.b * T_ + sq.t0;  // token row of the sequence's first input
      for (Index k = 0; k + 1 < W; ++k)
        for (Index d = 0; d < D; ++d) prefix(k * D + d) = cache ? static_cast<A>(cache[(n * D + d) * W + k + 1]) : A(0);
      for (Index i = 0; i < sq.len; ++i) {
        acc = b0;
        for (Index w = 0; w < W; ++w) {
          const Index j = i - (W - 1) + w;  // time of the input this tap reads, relative to the sequence start
          const A* src = j < 0 ? prefix.data() + (j + W - 1) * D : xa.data() + (base + j) * D;
          acc += wcol[static_cast<std::size_t>(w)] * Eigen::Map<const Arr>(src, D);
        }
        if (act_) acc = acc.unaryExpr([](A z) { return silu(z); });
        const Index off = (base + i) * D;
        if (residual)
          for (Index d = 0; d < D; ++d) acc(d) += static_cast<A>(residual->data()[off + d]);
        for (Index d = 0; d < D; ++d) y.data()[off + d] = static_cast<T>(acc(d));
      }
      if (final_state) {
        // final[w] = x_{L−W+w} when that token exists, else the initial slot w+L (or 0). Copied in T, so caches
        // are bit-exact. Ascending w reads slot w+L ≥ w, so an in-place update (final_state == cache) is safe.
        for (Index d = 0; d < D; ++d) {
          T* f = final_state + (n * D + d) * W;
          for (Index w = 0; w < W; ++w) {
            const Index j = sq.len - W + w;
            f[w] = j >= 0 ? xin[(base + j) * D + d] : (cache ? cache[(n * D + d) * W + w + sq.len] : T(0));
          }
        }
      }
    }
  }

  [[noreturn]] static void fail_batch(const std::string& fn, Index B) {
    detail::fail(fn, "the batch size is " + std::to_string(B) + ", expected 1 when cu_seqlens is given");
  }
};

}  // namespace gla
