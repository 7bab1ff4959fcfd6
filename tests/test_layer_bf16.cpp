// The layer's packed projections (gla/detail/packed_linear.hpp): every backend against a plain product, bf16
// weights (against the fp32 path with the same bf16-rounded weights, relative RMS <= 5e-3, and their distance to
// fla's fp32 golden outputs, printed), the allocation-free decode step (a counting global operator new), in-place
// state updates, and step_into's errors. tests/test_layer_bf16_eigen.cpp compiles this file again with the Eigen
// backend forced (GLA_LAYER_FORCE_EIGEN).

#include <gla/layers/gated_linear_attention.hpp>

#include "support/catch.hpp"
#include "support/golden.hpp"
#include "support/test_utils.hpp"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <new>
#include <string>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__)
// The replaced operator new is malloc and operator delete is free, a matching pair GCC cannot see once inlined.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

// ---- allocation counting: every operator new of this program (oneDNN's and the standard library's included)
namespace {
std::atomic<long> g_allocs{0};
}  // namespace
void* operator new(std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
// The nothrow forms too (std::stable_sort's temporary buffer uses them): the default ones would pair a sanitizer's
// allocation with the free() above.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept { return operator new(n, t); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

using gla::Index;
using gla::Tensor;
using gla::WeightPrecision;
using Config = gla::GatedLinearAttentionConfig;
using Layer = gla::GatedLinearAttention<float>;
using Cache = gla::GatedLinearAttentionCache<float>;

constexpr double kBf16Tol = 5e-3;

/// fla's 340M layer shape scaled down (hidden 256) with every optional path of the decode step: short conv with
/// bias, GQA, fused gated norm.
Config conv_config() {
  Config c;
  c.hidden_size = 256;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.use_short_conv = true;
  c.conv_bias = true;
  return c;
}

Tensor<float, 3> random_x(Index B, Index T, Index D, std::uint64_t salt) {
  Tensor<float, 3> x(B, T, D);
  auto g = gla::test::rng(salt);
  gla::test::fill_normal(x, g);
  return x;
}

double rel_rms(const float* got, const float* ref, Index n) {
  const auto d = gla::test::compare_ptr(got, ref, n);
  INFO(d.str());
  CHECK(d.non_finite == 0);
  return d.rel_rms;
}

/// The state dict with every linear weight (the *_proj weights) rounded to bf16: what a bf16 layer holds.
gla::io::StateDict rounded(const gla::io::StateDict& d, const std::map<std::string, std::vector<Index>>& shapes) {
  gla::io::StateDict out;
  for (const auto& [name, shape] : shapes) {
    const bool linear = name.find("proj") != std::string::npos && name.size() > 7 &&
                        name.compare(name.size() - 7, 7, ".weight") == 0;
    if (shape.size() == 1) {
      out.set(name, d.get<float, 1>(name));
    } else if (shape.size() == 2) {
      Tensor<float, 2> w = d.get<float, 2>(name);
      if (linear)
        for (Index i = 0; i < w.size(); ++i) w.data()[i] = gla::detail::round_to_bf16(w.data()[i]);
      out.set(name, w);
    } else {
      out.set(name, d.get<float, 3>(name));
    }
  }
  return out;
}

/// y = x · Wᵀ in double.
std::vector<float> reference_product(const std::vector<float>& x, const std::vector<float>& w, Index M, Index K,
                                     Index N) {
  std::vector<float> y(static_cast<std::size_t>(M * N));
  for (Index m = 0; m < M; ++m)
    for (Index n = 0; n < N; ++n) {
      double acc = 0;
      for (Index k = 0; k < K; ++k)
        acc += static_cast<double>(x[static_cast<std::size_t>(m * K + k)]) * w[static_cast<std::size_t>(n * K + k)];
      y[static_cast<std::size_t>(m * N + n)] = static_cast<float>(acc);
    }
  return y;
}

}  // namespace

TEST_CASE("PackedLinear: every backend equals a plain product, f32 and bf16 weights", "[layer][linear]") {
  const WeightPrecision prec = GENERATE(WeightPrecision::F32, WeightPrecision::BF16);
  // K odd and not a multiple of 16, N not a multiple of 64 (padding in both directions).
  const Index K = 37, N = 130;
  std::vector<float> w(static_cast<std::size_t>(N * K));
  auto g = gla::test::rng(3);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (float& v : w) v = normal(g);
  gla::detail::PackedLinear lin(K, N, prec);
  lin.set_rows(0, N, w.data(), K);
  std::vector<float> held(w.size());
  lin.get_rows(0, N, held.data(), K);
  std::vector<float> wr = w;
  if (prec == WeightPrecision::BF16)
    for (float& v : wr) v = gla::detail::round_to_bf16(v);
  CHECK(held == wr);  // the weights as held: exact (bf16: rounded to nearest even)
  for (const Index M : {1, 3, 4, 8, 64, 65, 130}) {
    std::vector<float> x(static_cast<std::size_t>(M * K)), y(static_cast<std::size_t>(M * N), -1.f);
    for (float& v : x) v = normal(g);
    lin.forward(x.data(), M, K, y.data(), N);
    const std::vector<float> ref = reference_product(x, wr, M, K, N);
    // bf16 weights with oneDNN at M > 64 multiply bf16-rounded activations too.
    const bool rounds_x = prec == WeightPrecision::BF16 && M > gla::detail::PackedLinear::kSmallM &&
                          gla::detail::linear_uses_onednn();
    INFO("M = " << M << ", precision " << gla::to_string(prec));
    CHECK(rel_rms(y.data(), ref.data(), M * N) < (rounds_x ? kBf16Tol : 1e-6));
  }
}

TEST_CASE("PackedLinear: the packed layout is oneDNN's preferred one at the 340M layer shape", "[layer][linear]") {
  const WeightPrecision prec = GENERATE(WeightPrecision::F32, WeightPrecision::BF16);
  const gla::detail::PackedLinear lin(1024, 3088, prec);
  const std::string backend = lin.large_m_backend();
  std::cerr << "PackedLinear " << gla::to_string(prec) << " large-M backend: " << backend << "\n";
  if (!gla::detail::linear_uses_onednn()) {
    CHECK(backend == "eigen");
    CHECK_FALSE(lin.onednn_layout_is_preferred());
  } else if (backend.rfind("brg:avx512", 0) == 0) {
    CHECK(lin.onednn_layout_is_preferred(1));
    CHECK(lin.onednn_layout_is_preferred(2048));
  }
}

TEST_CASE("GatedLinearAttention with bf16 weights: half the bytes, the fp32 path's outputs with the same rounded "
          "weights",
          "[layer][bf16]") {
  const Config c = conv_config();
  Layer f32(c);
  f32.init_random(11, 0.05);
  const gla::io::StateDict d = f32.state_dict();
  Layer b16(c, WeightPrecision::BF16);
  b16.load_state_dict(d);
  Layer ref(c);  // the fp32 path with the bf16-rounded weights
  ref.load_state_dict(rounded(d, f32.parameter_shapes()));
  CHECK(b16.weight_precision() == WeightPrecision::BF16);
  CHECK(b16.linear_weight_bytes() * 2 <= f32.linear_weight_bytes() + 8192);

  // What a bf16 layer exports is exactly the rounded weights.
  const gla::io::StateDict e = b16.state_dict();
  for (const auto& [name, shape] : f32.parameter_shapes())
    if (shape.size() == 2) {
      const Tensor<float, 2> got = e.get<float, 2>(name), want = ref.state_dict().get<float, 2>(name);
      CHECK(gla::test::compare(got, want).max_abs == 0);
    }

  SECTION("prefill (the large-M products) and decode steps") {
    const Index B = 2, T = 96, D = c.hidden_size;
    const Tensor<float, 3> x = random_x(B, T, D, 5);
    Cache cb, cr;
    const Tensor<float, 3> yb = b16.forward(x, std::nullopt, &cb, true), yr = ref.forward(x, std::nullopt, &cr, true);
    const double prefill = rel_rms(yb.data(), yr.data(), yb.size());
    std::cerr << "bf16 weights vs fp32 path with the same rounded weights: prefill rel_rms " << prefill << "\n";
    CHECK(prefill <= kBf16Tol);
    for (int s = 0; s < 4; ++s) {
      const Tensor<float, 3> xs3 = random_x(B, 1, D, 100 + s);
      const gla::ConstTensorMap<float, 2> xs(xs3.data(), B, D);
      const Tensor<float, 2> ysb = b16.step(xs, cb), ysr = ref.step(xs, cr);
      const double step = rel_rms(ysb.data(), ysr.data(), ysb.size());
      std::cerr << "  step " << s << " rel_rms " << step << "\n";
      CHECK(step <= kBf16Tol);
    }
  }
}

TEST_CASE("GatedLinearAttention with bf16 weights against fla's fp32 golden outputs", "[layer][bf16][golden]") {
  const std::string name = GENERATE(as<std::string>{}, "chunk_default", "short_seq", "conv_gqa_relu_mask",
                                    "unfused_sigmoid", "no_gate_no_affine", "decode_conv");
  const gla::test::Golden g("layer-" + name);
  const auto cfg = Config::from_json(g.meta(name));
  const auto dict = gla::io::StateDict::from_safetensors(g.file(), name + ".weight.");
  Layer b16(cfg, WeightPrecision::BF16), ref(cfg);
  b16.load_state_dict(dict);
  ref.load_state_dict(rounded(dict, b16.parameter_shapes()));
  const Tensor<float, 3> x = g.get<float, 3>(name + ".x");
  std::optional<Tensor<std::int64_t, 2>> mask;
  if (g.has(name + ".attention_mask")) mask = g.get<std::int64_t, 2>(name + ".attention_mask");
  std::optional<gla::ConstTensorMap<std::int64_t, 2>> mv;
  if (mask) mv.emplace(gla::view(*mask));
  const Tensor<float, 3> yb = b16.forward(x, mv), yr = ref.forward(x, mv);
  const auto fla = gla::test::compare(yb, g.get<float, 3>(name + ".y"));
  const double same_weights = rel_rms(yb.data(), yr.data(), yb.size());
  std::cerr << "layer golden " << name << " bf16 weights: vs fla fp32 " << fla.str()
            << "; vs fp32 path with the same rounded weights rel_rms=" << same_weights << "\n";
  CHECK(same_weights <= kBf16Tol);
  // The distance to fla's fp32 weights is the weights' own rounding (documented in docs/layer.md); it is bounded
  // here only loosely, as a regression guard.
  CHECK(gla::test::ok(fla, 3e-2));
}

TEST_CASE("GatedLinearAttention::step: allocation-free after the first step, for B = 1 and B = 8", "[layer][decode]") {
  const WeightPrecision prec = GENERATE(WeightPrecision::F32, WeightPrecision::BF16);
  const Index B = GENERATE(1, 8);
  const int threads = GENERATE(1, 2);
  gla::set_num_threads(threads);
  const Config c = conv_config();
  Layer layer(c, prec);
  layer.init_random(3, 0.05);
  const Index D = c.hidden_size;
  Cache cache;
  layer.forward(random_x(B, 8, D, 1), std::nullopt, &cache, true);  // a prompt
  const Tensor<float, 3> x3 = random_x(B, 1, D, 2);
  const gla::ConstTensorMap<float, 2> x(x3.data(), B, D);
  Tensor<float, 2> y(B, D);
  Tensor<std::int64_t, 2> mask(B, 9);
  mask.setConstant(1);
  layer.step_into(x, cache, gla::View<float, 2>(y));  // the first step grows the cache's scratch
  layer.step_into(x, cache, gla::View<float, 2>(y), gla::view(mask));
  const float* state = cache.recurrent_state->data();
  const float* conv_q = cache.conv_state_q->data();
  const long before = g_allocs.load();
  for (int s = 0; s < 3; ++s) layer.step_into(x, cache, gla::View<float, 2>(y));
  layer.step_into(x, cache, gla::View<float, 2>(y), gla::view(mask));
  const long allocs = g_allocs.load() - before;
  INFO("precision " << gla::to_string(prec) << ", B = " << B << ", threads " << threads);
  CHECK(allocs == 0);
  // The states were updated in place.
  CHECK(cache.recurrent_state->data() == state);
  CHECK(cache.conv_state_q->data() == conv_q);
  CHECK(cache.seen_tokens == 8 + 6);
  gla::set_num_threads(gla::detail::default_num_threads());
}

TEST_CASE("GatedLinearAttention::step equals forward with one token, on fla's golden decode case", "[layer][decode]") {
  const std::string name = "decode_conv";
  const gla::test::Golden g("layer-" + name);
  const auto meta = g.meta(name);
  const auto cfg = Config::from_json(meta);
  Layer layer(cfg);
  layer.load_state_dict(gla::io::StateDict::from_safetensors(g.file(), name + ".weight."));
  Cache cache;
  layer.forward(g.get<float, 3>(name + ".x"), std::nullopt, &cache, true);
  const Tensor<float, 4> step_x = g.get<float, 4>(name + ".step_x");
  const Tensor<float, 4> step_y = g.get<float, 4>(name + ".step_y");
  const Index B = step_x.dimension(1), D = step_x.dimension(3);
  for (int s = 0; s < meta.value("decode_steps", 0); ++s) {
    const gla::ConstTensorMap<float, 2> xs(step_x.data() + s * B * D, B, D);
    const Tensor<float, 2> ys = layer.step(xs, cache);
    const auto d = gla::test::compare_ptr(ys.data(), step_y.data() + s * B * D, B * D);
    INFO("step " << s << ": " << d.str());
    CHECK(gla::test::ok(d, 2e-5));
  }
  const auto dr = gla::test::compare(*cache.recurrent_state, g.get<float, 4>(name + ".final_recurrent_state"));
  INFO(dr.str());
  CHECK(gla::test::ok(dr, 2e-5));
}

TEST_CASE("GatedLinearAttention::step_into and the precision option: errors name the argument, expected vs actual",
          "[layer][errors]") {
  const Config c = conv_config();
  Layer layer(c);
  const Index D = c.hidden_size;
  Cache cache;
  Tensor<float, 2> x(2, D), y(2, D), y_bad(3, D), x_bad(2, D + 1);
  x.setZero();
  CHECK_GLA_ERROR("GatedLinearAttention::step: x is [2,257], expected [B,hidden_size=256]",
                  layer.step_into(gla::view(x_bad), cache, gla::View<float, 2>(y)));
  CHECK_GLA_ERROR("GatedLinearAttention::step_into: y is [3,256], expected [B=2,hidden_size=256]",
                  layer.step_into(gla::view(x), cache, gla::View<float, 2>(y_bad)));
  CHECK_GLA_ERROR("y overlaps x", layer.step_into(gla::view(x), cache, gla::View<float, 2>(x.data(), 2, D)));
  Tensor<std::int64_t, 2> mask(2, 3);
  mask.setConstant(1);
  mask(1, 2) = 2;
  CHECK_GLA_ERROR("expected 0 or 1", layer.step_into(gla::view(x), cache, gla::View<float, 2>(y), gla::view(mask)));
  Tensor<std::int64_t, 2> mask_b(3, 3);
  mask_b.setConstant(1);
  CHECK_GLA_ERROR("attention_mask is [3,3], expected [B=2,S]",
                  layer.step_into(gla::view(x), cache, gla::View<float, 2>(y), gla::view(mask_b)));
  Cache other;
  layer.step(gla::view(Tensor<float, 2>(Tensor<float, 2>(3, D).setZero())), other);  // a cache of batch size 3
  CHECK_GLA_ERROR("GatedLinearAttention::step: cache.recurrent_state is [3,4,64,32], expected [N=2,H=4,V=64,K=32]",
                  layer.step_into(gla::view(x), other, gla::View<float, 2>(y)));
  CHECK(other.seen_tokens == 1);  // untouched by the failed call
  CHECK(cache.empty());
  CHECK_GLA_ERROR("GatedLinearAttention: precision is bf16, expected f32 for T = double",
                  gla::GatedLinearAttention<double>(c, WeightPrecision::BF16));
}
