// Tests of gla/modules/short_conv.hpp: ShortConvolution against a double reference written here (fixed-length and
// packed batches, T < W, T = 0/1, caches, residual, mask, all scalars), decode steps against one long forward,
// fla's B·T == N shortcut case, every gla::Error path, and fla's outputs and caches in modules.safetensors.

#include <gla/modules/short_conv.hpp>

#include "support/catch.hpp"
#include "support/golden.hpp"
#include "support/test_utils.hpp"

#include <optional>
#include <string>
#include <vector>

namespace {

using gla::ConstTensorMap;
using gla::Index;
using gla::Tensor;
using gla::TensorMap;
using Cu = std::vector<std::int64_t>;

/// Runs f, requires a gla::Error whose message contains every part.
template <class F>
void require_error(F&& f, std::initializer_list<const char*> parts) {
  REQUIRE_THROWS_AS(f(), gla::Error);
  const std::string msg = gla::test::error_message(f);
  INFO("message: " << msg);
  for (const char* p : parts) CHECK(msg.find(p) != std::string::npos);
}

/// Double reference: y [B,T,D] and final caches [N,D,W]. Per sequence the history is the W cache slots (or zeros)
/// followed by the sequence's (masked) inputs; y_i = act(Σ_w weight[d,w]·hist[i+1+w] + bias) + residual and the
/// final cache is the last W entries of the history.
struct ConvRef {
  Tensor<double, 3> y, fin;
};
template <class T, class P>
ConvRef conv_reference(const Tensor<T, 3>& x, const gla::ShortConvolution<P>& conv, const Tensor<T, 3>* cache,
                       const Cu& cu, const Tensor<T, 3>* residual = nullptr, const Tensor<T, 2>* mask = nullptr) {
  const Index B = x.dimension(0), TT = x.dimension(1), D = x.dimension(2), W = conv.kernel_size();
  const std::vector<gla::detail::Seq> seqs = gla::detail::make_sequences(B, TT, cu);
  const Index N = static_cast<Index>(seqs.size());
  ConvRef r{Tensor<double, 3>(B, TT, D), Tensor<double, 3>(N, D, W)};
  r.y.setZero();
  for (Index n = 0; n < N; ++n) {
    const auto sq = seqs[static_cast<std::size_t>(n)];
    for (Index d = 0; d < D; ++d) {
      std::vector<double> hist(static_cast<std::size_t>(W + sq.len));
      for (Index w = 0; w < W; ++w)
        hist[static_cast<std::size_t>(w)] = cache ? static_cast<double>((*cache)(n, d, w)) : 0.0;
      for (Index i = 0; i < sq.len; ++i) {
        const double m = mask ? static_cast<double>((*mask)(sq.b, sq.t0 + i)) : 1.0;
        hist[static_cast<std::size_t>(W + i)] = static_cast<double>(x(sq.b, sq.t0 + i, d)) * m;
      }
      for (Index i = 0; i < sq.len; ++i) {
        double pre = conv.bias ? static_cast<double>((*conv.bias)(d)) : 0.0;
        for (Index w = 0; w < W; ++w)
          pre += static_cast<double>(conv.weight(d, 0, w)) * hist[static_cast<std::size_t>(i + 1 + w)];
        double v = conv.activation() ? pre / (1.0 + std::exp(-pre)) : pre;
        if (residual) v += static_cast<double>((*residual)(sq.b, sq.t0 + i, d));
        r.y(sq.b, sq.t0 + i, d) = v;
      }
      for (Index w = 0; w < W; ++w) r.fin(n, d, w) = hist[static_cast<std::size_t>(sq.len + w)];
    }
  }
  return r;
}

template <class T>
double tol_for() {
  if constexpr (std::is_same_v<T, double>) return 1e-12;
  if constexpr (std::is_same_v<T, float>) return 1e-6;
  return 5e-3;
}

template <class P>
gla::ShortConvolution<P> random_conv(Index D, Index W, bool bias, bool silu, std::mt19937_64& g) {
  gla::ShortConvolution<P> conv(D, W, bias,
                                silu ? std::optional<gla::Activation>(gla::Activation::SiLU) : std::nullopt);
  gla::test::fill_normal(conv.weight, g, 0.6);
  if (conv.bias) gla::test::fill_normal(*conv.bias, g, 0.3);
  return conv;
}

/// One configuration through forward_into (NaN-filled outputs) and forward, against the reference.
template <class T>
void check_forward(Index B, Index TT, Index D, Index W, const Cu& cu, bool bias, bool silu, bool with_cache,
                   bool with_residual, std::uint64_t salt) {
  auto g = gla::test::rng(salt);
  const auto conv = random_conv<float>(D, W, bias, silu, g);
  const Index N = cu.empty() ? B : static_cast<Index>(cu.size()) - 1;
  Tensor<T, 3> x(B, TT, D), cache(N, D, W), res(B, TT, D);
  gla::test::fill_normal(x, g);
  gla::test::fill_normal(cache, g);
  gla::test::fill_normal(res, g);
  INFO("B=" << B << " T=" << TT << " D=" << D << " W=" << W << " N=" << N << " bias=" << bias << " silu=" << silu
            << " cache=" << with_cache << " residual=" << with_residual);
  const ConvRef ref = conv_reference(x, conv, with_cache ? &cache : nullptr, cu, with_residual ? &res : nullptr);

  Tensor<T, 3> y(B, TT, D), fin(N, D, W);
  gla::test::fill_nan(y);
  gla::test::fill_nan(fin);
  std::optional<ConstTensorMap<T, 3>> c;
  if (with_cache) c.emplace(gla::view(cache));
  std::optional<ConstTensorMap<T, 3>> r;
  if (with_residual) r.emplace(gla::view(res));
  conv.forward_into(gla::view(x), gla::mut_view(y), c, gla::mut_view(fin), cu, r);
  const auto dy = gla::test::compare(y, ref.y);
  INFO("y: " << dy.str());
  CHECK(gla::test::ok(dy, tol_for<T>()));
  // The cache holds copies of inputs: exact in every scalar.
  const auto dc = gla::test::compare(fin, ref.fin);
  INFO("cache: " << dc.str());
  CHECK(dc.non_finite == 0);
  CHECK(dc.max_abs == 0);

  const auto out = conv.forward(gla::view(x), c, true, cu, r);
  CHECK(gla::test::compare(out.y, y).max_abs == 0);
  REQUIRE(out.final_state.has_value());
  CHECK(gla::test::compare(*out.final_state, fin).max_abs == 0);
  CHECK_FALSE(conv.forward(gla::view(x), c, false, cu, r).final_state.has_value());
}

template <class T>
void check_all_forward() {
  std::uint64_t salt = 5000;
  struct Shape {
    Index B, L, D, W;
  };
  // T < W, T = 1, T = 0, W = 1, a length beyond fla's 64-token tiles.
  const Shape shapes[] = {{2, 16, 8, 4}, {3, 5, 7, 3}, {1, 1, 5, 4},   {2, 2, 6, 4},
                          {2, 3, 4, 1},  {1, 0, 4, 3}, {2, 70, 33, 4}, {1, 3, 3, 5}};
  for (const Shape& s : shapes)
    for (int mode = 0; mode < 16; ++mode)
      check_forward<T>(s.B, s.L, s.D, s.W, {}, mode & 1, mode & 2, mode & 4, mode & 8, ++salt);
  // Packed batches with zero-length and one-token sequences.
  const Cu cus[] = {{0, 0, 1, 4, 4, 9, 10}, {0, 1, 2, 3}, {0, 0}, {0, 10, 10}, {0, 2, 2, 3, 10}};
  for (const Cu& cu : cus)
    for (int mode = 0; mode < 16; ++mode)
      check_forward<T>(1, cu.back(), 6, 4, cu, mode & 1, mode & 2, mode & 4, mode & 8, ++salt);
}

}  // namespace

TEST_CASE("ShortConvolution forward matches the double reference", "[short_conv]") {
  SECTION("float") { check_all_forward<float>(); }
  SECTION("double") { check_all_forward<double>(); }
  SECTION("bfloat16") { check_all_forward<Eigen::bfloat16>(); }
  SECTION("half") { check_all_forward<Eigen::half>(); }
}

TEST_CASE("ShortConvolution packed batch equals each sequence alone", "[short_conv]") {
  auto g = gla::test::rng(5101);
  const auto conv = random_conv<float>(5, 4, true, true, g);
  const Cu cu = {0, 3, 3, 4, 11};
  Tensor<float, 3> x(1, 11, 5), cache(4, 5, 4);
  gla::test::fill_normal(x, g);
  gla::test::fill_normal(cache, g);
  const auto packed = conv.forward(gla::view(x), gla::view(cache), true, cu);
  for (std::size_t n = 0; n + 1 < cu.size(); ++n) {
    const Index t0 = cu[n], len = cu[n + 1] - cu[n];
    const auto alone = conv.forward(ConstTensorMap<float, 3>(x.data() + t0 * 5, 1, len, 5),
                                    ConstTensorMap<float, 3>(cache.data() + static_cast<Index>(n) * 20, 1, 5, 4), true);
    CHECK(gla::test::compare_ptr(alone.y.data(), packed.y.data() + t0 * 5, len * 5).max_abs == 0);
    CHECK(gla::test::compare_ptr(alone.final_state->data(), packed.final_state->data() + static_cast<Index>(n) * 20, 20)
              .max_abs == 0);
  }
}

TEST_CASE("ShortConvolution prefill then decode steps equals one long forward", "[short_conv]") {
  auto g = gla::test::rng(5201);
  for (Index prefill : {0, 1, 2, 3, 7}) {
    for (bool with_cache : {false, true}) {
      const Index B = 3, D = 9, W = 4, S = 6;
      const auto conv = random_conv<float>(D, W, true, true, g);
      Tensor<float, 3> x(B, prefill + S, D), cache0(B, D, W), res(B, prefill + S, D);
      gla::test::fill_normal(x, g);
      gla::test::fill_normal(cache0, g);
      gla::test::fill_normal(res, g);
      std::optional<ConstTensorMap<float, 3>> c0;
      if (with_cache) c0.emplace(gla::view(cache0));
      const auto full = conv.forward(gla::view(x), c0, true, {}, gla::view(res));
      const ConvRef ref = conv_reference(x, conv, with_cache ? &cache0 : nullptr, {}, &res);
      INFO("prefill=" << prefill << " cache=" << with_cache);
      CHECK(gla::test::ok(gla::test::compare(full.y, ref.y), 1e-6));

      // Prefill (a copy of the first tokens), then one step per token with the cache updated in place.
      Tensor<float, 3> xp(B, prefill, D), rp(B, prefill, D);
      for (Index b = 0; b < B; ++b)
        for (Index t = 0; t < prefill; ++t)
          for (Index d = 0; d < D; ++d) {
            xp(b, t, d) = x(b, t, d);
            rp(b, t, d) = res(b, t, d);
          }
      auto pre = conv.forward(gla::view(xp), c0, true, {}, gla::view(rp));
      Tensor<float, 3> cache = *pre.final_state;
      Tensor<float, 3> y_inc(B, prefill + S, D);
      gla::test::fill_nan(y_inc);
      for (Index b = 0; b < B; ++b)
        for (Index t = 0; t < prefill; ++t)
          for (Index d = 0; d < D; ++d) y_inc(b, t, d) = pre.y(b, t, d);
      for (Index s = 0; s < S; ++s) {
        Tensor<float, 2> xs(B, D), rs(B, D), ys(B, D);
        for (Index b = 0; b < B; ++b)
          for (Index d = 0; d < D; ++d) {
            xs(b, d) = x(b, prefill + s, d);
            rs(b, d) = res(b, prefill + s, d);
          }
        if (s % 2 == 0) {
          ys = conv.step(gla::view(xs), cache, gla::view(rs));
        } else {
          gla::test::fill_nan(ys);
          conv.step_into(gla::view(xs), gla::mut_view(cache), gla::mut_view(ys), gla::view(rs));
        }
        for (Index b = 0; b < B; ++b)
          for (Index d = 0; d < D; ++d) y_inc(b, prefill + s, d) = ys(b, d);
      }
      const auto dy = gla::test::compare(y_inc, full.y);
      INFO("incremental vs full: " << dy.str());
      CHECK(gla::test::ok(dy, 1e-6));
      CHECK(gla::test::compare(cache, *full.final_state).max_abs == 0);
    }
  }
}

TEST_CASE("ShortConvolution step in bf16 and half rolls the cache exactly", "[short_conv]") {
  auto g = gla::test::rng(5301);
  const auto conv = random_conv<float>(7, 3, false, true, g);
  Tensor<Eigen::bfloat16, 3> cache(2, 7, 3);
  gla::test::fill_normal(cache, g);
  const Tensor<Eigen::bfloat16, 3> before = cache;
  Tensor<Eigen::bfloat16, 2> xs(2, 7);
  gla::test::fill_normal(xs, g);
  const Tensor<Eigen::bfloat16, 2> ys = conv.step(gla::view(xs), cache);
  const Tensor<Eigen::bfloat16, 3> x3 = xs.reshape(Eigen::DSizes<Index, 3>(2, 1, 7));
  const ConvRef ref = conv_reference(x3, conv, &before, {});
  CHECK(gla::test::ok(gla::test::compare(ys, ref.y), 5e-3));
  CHECK(gla::test::compare(cache, ref.fin).max_abs == 0);
  for (Index n = 0; n < 2; ++n)
    for (Index d = 0; d < 7; ++d) {
      CHECK(cache(n, d, 0) == before(n, d, 1));
      CHECK(cache(n, d, 1) == before(n, d, 2));
      CHECK(cache(n, d, 2) == xs(n, d));
    }
  Tensor<Eigen::half, 3> hcache(1, 7, 3);
  gla::test::fill_normal(hcache, g);
  const Tensor<Eigen::half, 3> hbefore = hcache;
  Tensor<Eigen::half, 2> hx(1, 7);
  gla::test::fill_normal(hx, g);
  const Tensor<Eigen::half, 2> hy = conv.step(gla::view(hx), hcache);
  const Tensor<Eigen::half, 3> hx3 = hx.reshape(Eigen::DSizes<Index, 3>(1, 1, 7));
  const ConvRef href = conv_reference(hx3, conv, &hbefore, {});
  CHECK(gla::test::ok(gla::test::compare(hy, href.y), 5e-3));
  CHECK(gla::test::compare(hcache, href.fin).max_abs == 0);
}

TEST_CASE("ShortConvolution keeps sequences apart where fla's B*T == N shortcut would not", "[short_conv]") {
  // B=1, T=2 packed as cu = [0, 0, 2]: N = 2 sequences, 2 tokens. fla's forward would take its decode path and treat
  // token i as sequence i; here sequence 0 is empty and sequence 1 sees both of its tokens.
  auto g = gla::test::rng(5401);
  const Index D = 4, W = 3;
  const auto conv = random_conv<float>(D, W, true, true, g);
  const Cu cu = {0, 0, 2};
  Tensor<float, 3> x(1, 2, D), cache(2, D, W);
  gla::test::fill_normal(x, g);
  gla::test::fill_normal(cache, g);
  const auto out = conv.forward(gla::view(x), gla::view(cache), true, cu);
  const ConvRef ref = conv_reference(x, conv, &cache, cu);
  CHECK(gla::test::ok(gla::test::compare(out.y, ref.y), 1e-6));
  CHECK(gla::test::compare(*out.final_state, ref.fin).max_abs == 0);
  // Sequence 0 (empty) keeps its cache; sequence 1's cache ends with both tokens.
  for (Index d = 0; d < D; ++d) {
    for (Index w = 0; w < W; ++w) CHECK((*out.final_state)(0, d, w) == cache(0, d, w));
    CHECK((*out.final_state)(1, d, 0) == cache(1, d, 2));
    CHECK((*out.final_state)(1, d, 1) == x(0, 0, d));
    CHECK((*out.final_state)(1, d, 2) == x(0, 1, d));
  }
  // What the shortcut computes: one step per token against caches 0 and 1. Its second token misses the first.
  Tensor<float, 3> quirk_cache = cache;
  const Tensor<float, 2> quirk_y = conv.step(ConstTensorMap<float, 2>(x.data(), 2, D), quirk_cache);
  CHECK(gla::test::compare_ptr(quirk_y.data() + D, out.y.data() + D, D).max_abs > 1e-3);
  // The input cache is never modified by forward.
  Tensor<float, 3> cache_copy = cache;
  (void)conv.forward(gla::view(x), gla::view(cache), true, cu);
  CHECK(gla::test::compare(cache, cache_copy).max_abs == 0);
}

TEST_CASE("ShortConvolution mask zeroes inputs without touching x", "[short_conv]") {
  auto g = gla::test::rng(5501);
  const auto conv = random_conv<float>(5, 4, true, true, g);
  Tensor<float, 3> x(2, 6, 5), cache(2, 5, 4);
  gla::test::fill_normal(x, g);
  gla::test::fill_normal(cache, g);
  Tensor<float, 2> mask(2, 6);
  mask.setValues({{0, 0, 1, 1, 1, 1}, {1, 1, 1, 0, 1, 0}});
  const Tensor<float, 3> x_before = x;
  Tensor<float, 3> xm = x;
  for (Index b = 0; b < 2; ++b)
    for (Index t = 0; t < 6; ++t)
      for (Index d = 0; d < 5; ++d) xm(b, t, d) *= mask(b, t);
  const auto masked = conv.forward(gla::view(x), gla::view(cache), true, {}, std::nullopt, gla::view(mask));
  const auto pre_masked = conv.forward(gla::view(xm), gla::view(cache), true);
  CHECK(gla::test::compare(masked.y, pre_masked.y).max_abs == 0);
  CHECK(gla::test::compare(*masked.final_state, *pre_masked.final_state).max_abs == 0);
  const ConvRef ref = conv_reference(x, conv, &cache, {}, static_cast<const Tensor<float, 3>*>(nullptr), &mask);
  CHECK(gla::test::ok(gla::test::compare(masked.y, ref.y), 1e-6));
  CHECK(gla::test::compare(x, x_before).max_abs == 0);
  CHECK((*masked.final_state)(1, 2, 3) == 0.0f);  // row 1's last token is masked: its cache slot holds 0
}

TEST_CASE("ShortConvolution parameters: layouts, loading and accessors", "[short_conv]") {
  gla::ShortConvolution<float> conv(3, 4, true);
  CHECK(conv.hidden_size() == 3);
  CHECK(conv.kernel_size() == 4);
  CHECK(conv.state_size() == 12);
  CHECK(conv.activation() == gla::Activation::SiLU);
  CHECK(conv.weight.dimension(0) == 3);
  CHECK(conv.weight.dimension(1) == 1);
  CHECK(conv.weight.dimension(2) == 4);
  Tensor<float, 2> w2(3, 4);
  for (Index i = 0; i < w2.size(); ++i) w2.data()[i] = static_cast<float>(i);
  conv.set_weight(gla::view(w2));
  CHECK(conv.weight(2, 0, 1) == 9.0f);
  CHECK(conv.weight_dw()(2, 1) == 9.0f);
  conv.weight_dw()(0, 3) = -1.0f;  // the [D,W] view writes through to the [D,1,W] tensor
  CHECK(conv.weight(0, 0, 3) == -1.0f);
  Tensor<float, 3> w3(3, 1, 4);
  w3.setConstant(0.5f);
  conv.set_weight(gla::view(w3));
  CHECK(conv.weight(1, 0, 2) == 0.5f);
  Tensor<float, 1> b(3);
  b.setValues({1, 2, 3});
  conv.set_bias(gla::view(b));
  CHECK((*conv.bias)(2) == 3.0f);
  CHECK_FALSE(gla::ShortConvolution<float>(3, 4, false, "none").activation().has_value());
  CHECK_FALSE(gla::ShortConvolution<float>(3, 4, false, "").activation().has_value());
  CHECK(gla::ShortConvolution<float>(3, 4, false, "swish").activation() == gla::Activation::SiLU);
  CHECK_FALSE(gla::ShortConvolution<float>(3, 4, false, std::nullopt).activation().has_value());
}

TEST_CASE("ShortConvolution rejects bad configurations and arguments", "[short_conv][errors]") {
  require_error([] { gla::ShortConvolution<float>(0, 4); }, {"ShortConvolution", "hidden_size is 0"});
  require_error([] { gla::ShortConvolution<float>(8, 0); }, {"ShortConvolution", "kernel_size is 0", ">= 1"});
  require_error([] { gla::ShortConvolution<float>(8, 4, false, gla::Activation::ReLU); },
                {"ShortConvolution", "activation 'relu'", "silu, swish or none"});
  require_error([] { gla::ShortConvolution<float>(8, 4, false, "gelu"); },
                {"ShortConvolution", "activation 'gelu'", "silu, swish or none"});

  const gla::ShortConvolution<float> conv(64, 4, true);
  Tensor<float, 3> x(2, 5, 64), x63(2, 5, 63), y(2, 5, 64), y_bad(2, 4, 64), res_bad(2, 5, 32);
  Tensor<float, 3> cache(2, 64, 4), cache_w3(2, 64, 3), cache_n3(3, 64, 4), fin_bad(2, 64, 5);
  Tensor<float, 3> xp(1, 7, 64), xp2(2, 7, 64);
  Tensor<float, 2> mask(2, 5), mask_bad(2, 4);
  for (auto* t : {&x, &x63, &cache, &cache_w3, &cache_n3, &xp, &xp2}) t->setZero();
  mask.setConstant(1.0f);
  mask_bad.setConstant(1.0f);
  const std::string fwd = "ShortConvolution::forward";

  require_error([&] { conv.forward(gla::view(x63)); }, {"ShortConvolution::forward:", "x is [2,5,63]", "D=64"});
  require_error([&] { conv.forward(gla::view(x), gla::view(cache_w3)); },
                {"ShortConvolution::forward: cache is [2,64,3], expected [N=2,D=64,W=4]"});
  require_error([&] { conv.forward(gla::view(x), gla::view(cache_n3)); },
                {"ShortConvolution::forward:", "cache is [3,64,4]", "[N=2,D=64,W=4]", "batch size"});
  require_error(
      [&] {
        conv.forward(gla::view(xp), gla::view(cache), true, {0, 3, 5, 7});
      },
      {"ShortConvolution::forward:", "cache is [2,64,4]", "[N=3,D=64,W=4]", "number of sequences in cu_seqlens"});
  require_error([&] { conv.forward(gla::view(x), std::nullopt, false, {}, gla::view(res_bad)); },
                {"ShortConvolution::forward:", "residual is [2,5,32]", "[B=2,T=5,D=64]"});
  require_error([&] { conv.forward(gla::view(x), std::nullopt, false, {}, std::nullopt, gla::view(mask_bad)); },
                {"ShortConvolution::forward:", "mask is [2,4]", "[B=2,T=5]"});
  require_error(
      [&] {
        conv.forward(gla::view(xp), std::nullopt, false, {0, 7}, std::nullopt,
                     ConstTensorMap<float, 2>(mask.data(), 1, 7));
      },
      {"ShortConvolution::forward:", "mask", "cu_seqlens"});
  require_error(
      [&] {
        conv.forward(gla::view(xp2), std::nullopt, false, {0, 7, 14});
      },
      {"ShortConvolution::forward:", "batch size is 2", "expected 1"});
  require_error(
      [&] {
        conv.forward(gla::view(xp), std::nullopt, false, {1, 7});
      },
      {"ShortConvolution::forward:", "cu_seqlens[0] is 1"});
  require_error(
      [&] {
        conv.forward(gla::view(xp), std::nullopt, false, {0, 5, 3, 7});
      },
      {"ShortConvolution::forward:", "cu_seqlens is not non-decreasing"});
  require_error(
      [&] {
        conv.forward(gla::view(xp), std::nullopt, false, {0, 6});
      },
      {"ShortConvolution::forward:", "cu_seqlens[N] is 6", "T = 7"});
  require_error([&] { conv.forward(gla::view(xp), std::nullopt, false, {0}); },
                {"ShortConvolution::forward:", "cu_seqlens has 1 entries"});

  require_error([&] { conv.forward_into(gla::view(x), gla::mut_view(y_bad)); },
                {"ShortConvolution::forward_into:", "y is [2,4,64]", "[B=2,T=5,D=64]"});
  require_error([&] { conv.forward_into(gla::view(x), gla::mut_view(y), gla::view(cache), gla::mut_view(fin_bad)); },
                {"ShortConvolution::forward_into:", "final_state is [2,64,5]", "[N=2,D=64,W=4]"});
  // Validation precedes every write: the failed calls left y untouched.
  gla::test::fill_nan(y);
  require_error([&] { conv.forward_into(gla::view(x), gla::mut_view(y), gla::view(cache_w3)); },
                {"ShortConvolution::forward_into:", "cache is [2,64,3]"});
  CHECK(gla::test::compare(y, y).non_finite == y.size());

  // Public parameters replaced with the wrong shape are caught at the call.
  gla::ShortConvolution<float> badw(64, 4);
  badw.weight = Tensor<float, 3>(64, 4, 1);
  require_error([&] { badw.forward(gla::view(x)); }, {fwd.c_str(), "weight is [64,4,1]", "[D=64,1=1,W=4]"});
  gla::ShortConvolution<float> badb(64, 4, true);
  badb.bias = Tensor<float, 1>(63);
  require_error([&] { badb.forward(gla::view(x)); }, {fwd.c_str(), "bias is [63]", "[D=64]"});
  gla::ShortConvolution<float> setters(64, 4, false);
  Tensor<float, 2> w_bad(64, 3);
  w_bad.setZero();
  require_error([&] { setters.set_weight(gla::view(w_bad)); },
                {"ShortConvolution::set_weight", "weight is [64,3]", "[D=64,W=4]"});
  Tensor<float, 1> b(64);
  b.setZero();
  require_error([&] { setters.set_bias(gla::view(b)); }, {"ShortConvolution::set_bias", "no bias"});

  // step
  Tensor<float, 2> xs(2, 64), xs_bad(2, 60), ys(2, 64), ys_bad(3, 64), rs_bad(2, 8);
  xs.setZero();
  xs_bad.setZero();
  require_error([&] { conv.step(gla::view(xs_bad), cache); }, {"ShortConvolution::step:", "x is [2,60]", "D=64"});
  require_error([&] { conv.step(gla::view(xs), cache_w3); },
                {"ShortConvolution::step: cache is [2,64,3], expected [N=2,D=64,W=4]"});
  require_error([&] { conv.step(gla::view(xs), cache_n3); }, {"ShortConvolution::step:", "cache is [3,64,4]"});
  require_error([&] { conv.step(gla::view(xs), cache, gla::view(rs_bad)); },
                {"ShortConvolution::step:", "residual is [2,8]", "[N=2,D=64]"});
  require_error([&] { conv.step_into(gla::view(xs), gla::mut_view(cache), gla::mut_view(ys_bad)); },
                {"ShortConvolution::step_into:", "y is [3,64]", "[N=2,D=64]"});
  // A failed step leaves the cache as it was.
  Tensor<float, 3> cache_rand(2, 64, 4);
  auto g = gla::test::rng(5601);
  gla::test::fill_normal(cache_rand, g);
  const Tensor<float, 3> cache_before = cache_rand;
  require_error([&] { conv.step(gla::view(xs), cache_rand, gla::view(rs_bad)); }, {"ShortConvolution::step:"});
  CHECK(gla::test::compare(cache_rand, cache_before).max_abs == 0);
}

// ---- fla's outputs (tests/data/fla/modules.safetensors) ----

TEST_CASE("ShortConvolution matches fla's outputs and caches in modules.safetensors", "[short_conv][golden]") {
  const gla::test::Golden gold("modules");
  int checked = 0;
  for (const std::string& c : gold.cases()) {
    if (c.rfind("conv_", 0) != 0) {
      // Every other case must be a norm case, tested in test_norms.cpp; anything new must get a test.
      CHECK((c.rfind("rmsnorm", 0) == 0 || c.rfind("norm_gated", 0) == 0));
      continue;
    }
    const nlohmann::json m = gold.meta(c);
    INFO("case modules." << c << " " << m.dump());
    const Index D = m.at("D").get<Index>(), W = m.at("W").get<Index>();
    const std::string act = m.at("activation").get<std::string>();
    gla::ShortConvolution<float> conv(D, W, m.at("bias").get<bool>(), act);
    conv.set_weight(gla::view(gold.get<float, 3>(c + ".weight")));
    if (conv.bias) conv.set_bias(gla::view(gold.get<float, 1>(c + ".bias")));
    const Tensor<float, 3> x = gold.get<float, 3>(c + ".x");
    const Cu cu = gold.has(c + ".cu_seqlens") ? gold.ints(c + ".cu_seqlens") : Cu{};
    if (m.contains("cu_seqlens")) CHECK(cu == m.at("cu_seqlens").get<Cu>());
    std::optional<Tensor<float, 3>> cache0;
    if (gold.has(c + ".cache0")) cache0 = gold.get<float, 3>(c + ".cache0");
    std::optional<ConstTensorMap<float, 3>> c0;
    if (cache0) c0.emplace(gla::view(*cache0));

    const auto out = conv.forward(gla::view(x), c0, true, cu);
    const auto dy = gla::test::compare(out.y, gold.get<float, 3>(c + ".y"));
    const auto dc = gla::test::compare(*out.final_state, gold.get<float, 3>(c + ".cache"));
    INFO("y vs fla: " << dy.str() << " | cache vs fla: " << dc.str());
    CHECK(gla::test::ok(dy, 2e-5));
    CHECK(dc.non_finite == 0);
    CHECK(dc.max_abs == 0);  // bit-exact

    if (gold.has(c + ".step_x")) {
      // Decode steps from the forward's cache: step_x [S,B,1,D] → step_y [S,B,1,D], then the cache.
      const Tensor<float, 4> sx = gold.get<float, 4>(c + ".step_x");
      const Tensor<float, 4> sy = gold.get<float, 4>(c + ".step_y");
      Tensor<float, 3> cache = *out.final_state;
      const Index S = sx.dimension(0), B = sx.dimension(1), per = B * D;
      for (Index s = 0; s < S; ++s) {
        const Tensor<float, 2> ys = conv.step(ConstTensorMap<float, 2>(sx.data() + s * per, B, D), cache);
        const auto ds = gla::test::compare_ptr(ys.data(), sy.data() + s * per, per);
        INFO("step " << s << " y vs fla: " << ds.str());
        CHECK(gla::test::ok(ds, 2e-5));
      }
      CHECK(gla::test::compare(cache, gold.get<float, 3>(c + ".step_cache")).max_abs == 0);
    }
    if (gold.has(c + ".y_noact")) {
      // The same input through a second module without bias and activation.
      gla::ShortConvolution<float> plain(D, W, false, std::nullopt);
      plain.set_weight(gla::view(gold.get<float, 3>(c + ".weight_noact")));
      const auto o2 = plain.forward(gla::view(x), std::nullopt, false, cu);
      const auto dn = gla::test::compare(o2.y, gold.get<float, 3>(c + ".y_noact"));
      INFO("y_noact vs fla: " << dn.str());
      CHECK(gla::test::ok(dn, 2e-5));
    }
    ++checked;
  }
  CHECK(checked == 2);  // conv_fixed, conv_varlen
}
