// GatedLinearAttention beyond the golden data: config and weight validation, state_dict round trips, random init,
// and the equivalences fla's layer guarantees (padding = rows alone, packed = padded, prefill + decode = one
// forward, recurrent path = chunk path, masked decode steps).

#include <gla/layers/gated_linear_attention.hpp>

#include "support/catch.hpp"
#include "support/test_utils.hpp"

#include <cmath>
#include <vector>

namespace {

using gla::Index;
using gla::Tensor;
using Config = gla::GatedLinearAttentionConfig;
template <class T>
using Layer = gla::GatedLinearAttention<T>;
template <class T>
using Cache = gla::GatedLinearAttentionCache<T>;

/// A small layer that takes every optional path: short conv with bias, GQA (4 query heads over 2 kv heads),
/// relu feature map, clamp_min.
Config small_config() {
  Config c;
  c.hidden_size = 64;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.use_short_conv = true;
  c.conv_bias = true;
  c.feature_map = "relu";
  c.clamp_min = -0.2;
  return c;
}

template <class T>
Layer<T> make_layer(const Config& c, std::uint64_t seed = 7) {
  Layer<T> layer(c);
  // std 0.1 instead of fla's 0.02 keeps the gates and conv outputs away from their trivial regime on 64 channels.
  layer.init_random(seed, 0.1);
  return layer;
}

template <class T>
Tensor<T, 3> random_x(Index B, Index T_, Index D, std::uint64_t salt) {
  Tensor<T, 3> x(B, T_, D);
  auto g = gla::test::rng(salt);
  gla::test::fill_normal(x, g);
  return x;
}

/// Left-padding mask [B,S]: row b has pads[b] leading zeros.
Tensor<std::int64_t, 2> left_pad_mask(Index S, const std::vector<Index>& pads) {
  Tensor<std::int64_t, 2> m(static_cast<Index>(pads.size()), S);
  for (Index b = 0; b < m.dimension(0); ++b)
    for (Index s = 0; s < S; ++s) m(b, s) = s >= pads[static_cast<std::size_t>(b)] ? 1 : 0;
  return m;
}

/// Rows [t0, t0+len) of batch row b of x [B,T,D], as a [1,len,D] tensor.
template <class T>
Tensor<T, 3> slice_row(const Tensor<T, 3>& x, Index b, Index t0, Index len) {
  const Index T_ = x.dimension(1), D = x.dimension(2);
  Tensor<T, 3> out(1, len, D);
  std::copy_n(x.data() + (b * T_ + t0) * D, len * D, out.data());
  return out;
}

template <class A, class B>
double rel(const A& got, const B& ref) {
  const auto d = gla::test::compare(got, ref);
  INFO(d.str());
  CHECK(d.non_finite == 0);
  CHECK(d.size_mismatch == 0);
  return d.rel_rms;
}

/// The first len tokens of every row of x [B,T,D], as [B,len,D].
template <class T>
Tensor<T, 3> prefix_tokens(const Tensor<T, 3>& x, Index len) {
  const Index B = x.dimension(0), T_ = x.dimension(1), D = x.dimension(2);
  Tensor<T, 3> out(B, len, D);
  for (Index b = 0; b < B; ++b) std::copy_n(x.data() + b * T_ * D, len * D, out.data() + b * len * D);
  return out;
}

std::optional<gla::ConstTensorMap<std::int64_t, 2>> mv(const Tensor<std::int64_t, 2>& m) { return gla::view(m); }

}  // namespace

TEST_CASE("GatedLinearAttentionConfig: fla's defaults and derived sizes", "[layer][config]") {
  const Config c;
  CHECK(c.mode == "chunk");
  CHECK(c.hidden_size == 1024);
  CHECK(c.expand_k == 0.5);
  CHECK(c.expand_v == 1.0);
  CHECK(c.num_heads == 4);
  CHECK(!c.num_kv_heads);
  CHECK(!c.feature_map);
  CHECK(!c.use_short_conv);
  CHECK(c.conv_size == 4);
  CHECK(!c.conv_bias);
  CHECK(c.use_output_gate);
  CHECK(c.gate_fn == "swish");
  CHECK(c.elementwise_affine);
  CHECK(c.norm_eps == 1e-5);
  CHECK(c.gate_logit_normalizer == 16);
  CHECK(c.gate_low_rank_dim == 16);
  CHECK(!c.clamp_min);
  CHECK(c.fuse_norm);
  CHECK(!c.layer_idx);
  CHECK(c.key_dim() == 512);
  CHECK(c.value_dim() == 1024);
  CHECK(c.head_k_dim() == 128);
  CHECK(c.head_v_dim() == 256);
  CHECK(c.fused_norm_gate());
  const Config s = small_config();
  CHECK(s.num_kv_groups() == 2);
  CHECK(s.key_dim_per_group() == 16);
  CHECK(s.value_dim_per_group() == 32);
  CHECK_NOTHROW(c.validate());
}

TEST_CASE("GatedLinearAttentionConfig: every invalid setting is a gla::Error naming the field", "[layer][config]") {
  auto with = [](auto f) {
    Config c;
    f(c);
    return c;
  };
  CHECK_GLA_ERROR("mode is 'auto'", with([](Config& c) { c.mode = "auto"; }).validate());
  CHECK_GLA_ERROR("hidden_size is 0", with([](Config& c) { c.hidden_size = 0; }).validate());
  CHECK_GLA_ERROR("num_heads is -1", with([](Config& c) { c.num_heads = -1; }).validate());
  CHECK_GLA_ERROR("num_kv_heads is 0", with([](Config& c) { c.num_kv_heads = 0; }).validate());
  CHECK_GLA_ERROR("conv_size is 0", with([](Config& c) { c.conv_size = 0; }).validate());
  CHECK_GLA_ERROR("gate_low_rank_dim is 0", with([](Config& c) { c.gate_low_rank_dim = 0; }).validate());
  CHECK_GLA_ERROR("expand_k is -0.5", with([](Config& c) { c.expand_k = -0.5; }).validate());
  CHECK_GLA_ERROR("expand_v is 0", with([](Config& c) { c.expand_v = 0; }).validate());
  CHECK_GLA_ERROR("num_heads = 4 is not divisible by num_kv_heads = 3",
                  with([](Config& c) { c.num_kv_heads = 3; }).validate());
  CHECK_GLA_ERROR("key_dim = int(hidden_size * expand_k) = 510, expected a positive multiple of num_heads = 4",
                  with([](Config& c) { c.hidden_size = 1020; c.expand_k = 0.5; c.expand_v = 2.0; }).validate());
  CHECK_GLA_ERROR("value_dim = int(hidden_size * expand_v) = 1030",
                  with([](Config& c) { c.expand_v = 1030.0 / 1024; }).validate());
  CHECK_GLA_ERROR("feature_map: ", with([](Config& c) { c.feature_map = "tanh"; }).validate());
  CHECK_GLA_ERROR("gate_fn: ", with([](Config& c) { c.gate_fn = "Swish"; }).validate());
  CHECK_GLA_ERROR("norm_eps is -1", with([](Config& c) { c.norm_eps = -1; }).validate());
  CHECK_GLA_ERROR("gate_logit_normalizer is 0", with([](Config& c) { c.gate_logit_normalizer = 0; }).validate());
  CHECK_GLA_ERROR("clamp_min is nan", with([](Config& c) { c.clamp_min = std::nan(""); }).validate());
  // The layer's constructor validates too.
  CHECK_GLA_ERROR("mode is 'recurrent'", Layer<float>(with([](Config& c) { c.mode = "recurrent"; })));
}

TEST_CASE("GatedLinearAttentionConfig::from_json reads fla's names and rejects wrong types", "[layer][config]") {
  const auto c = Config::from_json(nlohmann::json::parse(
      R"({"hidden_size": 256, "num_kv_heads": 2, "feature_map": "relu", "clamp_min": -0.1, "use_short_conv": true,
          "conv_bias": true, "mode": "fused_chunk", "B": 3, "left_pads": [0, 10], "layer_idx": null})"));
  CHECK(c.hidden_size == 256);
  CHECK(c.num_kv_heads == 2);
  CHECK(c.feature_map == "relu");
  CHECK(c.clamp_min == -0.1);
  CHECK(c.use_short_conv);
  CHECK(c.conv_bias);
  CHECK(c.mode == "fused_chunk");
  CHECK(c.num_heads == 4);  // default kept
  CHECK_GLA_ERROR("num_heads is JSON \"4\"", Config::from_json(nlohmann::json::parse(R"({"num_heads": "4"})")));
  CHECK_GLA_ERROR("expected an object", Config::from_json(nlohmann::json::parse("[1]")));
  CHECK_GLA_ERROR("mode is 'x'", Config::from_json(nlohmann::json::parse(R"({"mode": "x"})")));
}

TEST_CASE("GatedLinearAttention state_dict: fla's names, exact round trip, strict loading", "[layer][weights]") {
  const Config c = small_config();
  const Layer<float> a = make_layer<float>(c, 11);
  const gla::io::StateDict d = a.state_dict();
  const std::vector<std::string> names = d.names();
  CHECK(names == std::vector<std::string>{"g_norm_swish_gate.weight", "g_proj.weight", "gk_proj.0.weight",
                                          "gk_proj.1.bias", "gk_proj.1.weight", "k_conv1d.bias", "k_conv1d.weight",
                                          "k_proj.weight", "o_proj.weight", "q_conv1d.bias", "q_conv1d.weight",
                                          "q_proj.weight", "v_conv1d.bias", "v_conv1d.weight", "v_proj.weight"});
  CHECK(d.shape("k_proj.weight") == std::vector<Index>{16, 64});
  CHECK(d.shape("v_conv1d.weight") == std::vector<Index>{32, 1, 4});
  CHECK(d.shape("gk_proj.1.weight") == std::vector<Index>{16, 16});
  CHECK(d.shape("o_proj.weight") == std::vector<Index>{64, 64});

  // Presence rules: which parameters exist for a config (docs/layer.md, Weights).
  auto names_of = [](Config cc) { return Layer<float>(cc).state_dict().names(); };
  auto has = [](const std::vector<std::string>& v, const std::string& n) {
    return std::find(v.begin(), v.end(), n) != v.end();
  };
  Config unfused = c;
  unfused.fuse_norm = false;
  CHECK(has(names_of(unfused), "g_norm.weight"));
  CHECK(!has(names_of(unfused), "g_norm_swish_gate.weight"));
  Config no_gate = c;
  no_gate.use_output_gate = false;
  CHECK(!has(names_of(no_gate), "g_proj.weight"));
  CHECK(has(names_of(no_gate), "g_norm.weight"));
  Config no_affine = c;
  no_affine.elementwise_affine = false;
  CHECK(!has(names_of(no_affine), "g_norm.weight"));
  CHECK(!has(names_of(no_affine), "g_norm_swish_gate.weight"));
  Config plain;
  plain.hidden_size = 64;
  CHECK(names_of(plain).size() == 9);

  // Round trip with a prefix, and bit-identical outputs.
  gla::io::StateDict prefixed;
  for (const std::string& n : names)  // every tensor flattened to 1-D: each one has the wrong shape
    prefixed.set_raw("model.layers.0.attn." + n, d.dtype(n), {static_cast<Index>(d.bytes(n).size() / 4)}, d.bytes(n));
  Layer<float> b(c);
  CHECK_GLA_ERROR("wrong shape or dtype: model.layers.0.attn.g_proj.weight is [4096], expected [64,64]",
                  b.load_state_dict(prefixed, "model.layers.0.attn."));
  gla::io::StateDict good;
  for (const std::string& n : names) good.set_raw("model.layers.0.attn." + n, d.dtype(n), d.shape(n), d.bytes(n));
  good.set_raw("model.layers.0.mlp.up_proj.weight", d.dtype("q_proj.weight"), d.shape("q_proj.weight"),
               d.bytes("q_proj.weight"));  // another module's tensor: ignored
  b.load_state_dict(good, "model.layers.0.attn.");
  const Tensor<float, 3> x = random_x<float>(2, 20, 64, 1);
  const Tensor<float, 3> ya = a.forward(x), yb = b.forward(x);
  CHECK(gla::test::compare(ya, yb).max_abs == 0);

  // F64 and BF16 tensors are converted.
  gla::io::StateDict as_double;
  for (const std::string& n : names) {
    const auto& shp = d.shape(n);
    if (shp.size() == 1) as_double.set(n, d.get<double, 1>(n));
    if (shp.size() == 2) as_double.set(n, d.get<double, 2>(n));
    if (shp.size() == 3) as_double.set(n, d.get<double, 3>(n));
  }
  Layer<float> e(c);
  e.load_state_dict(as_double);
  CHECK(gla::test::compare(e.forward(x), ya).max_abs == 0);
}

TEST_CASE("GatedLinearAttention::load_state_dict: missing, unexpected, mis-shaped and I64 tensors", "[layer][weights]") {
  const Config c = small_config();
  const Layer<float> src = make_layer<float>(c, 3);
  const gla::io::StateDict d = src.state_dict();
  Layer<float> dst = make_layer<float>(c, 4);
  const Tensor<float, 3> x = random_x<float>(1, 10, 64, 2);
  const Tensor<float, 3> y_before = dst.forward(x);

  gla::io::StateDict missing = d;
  missing.erase("q_proj.weight");
  missing.erase("v_conv1d.bias");
  CHECK_GLA_ERROR("missing: q_proj.weight, v_conv1d.bias;", dst.load_state_dict(missing));
  CHECK_GLA_ERROR("missing: p.g_norm_swish_gate.weight", dst.load_state_dict(d, "p."));

  gla::io::StateDict extra = d;
  extra.set("g_norm.weight", d.get<float, 1>("g_norm_swish_gate.weight"));
  CHECK_GLA_ERROR("unexpected: g_norm.weight", dst.load_state_dict(extra));

  gla::io::StateDict bad_shape = d;
  bad_shape.set("k_proj.weight", d.get<float, 2>("q_proj.weight"));
  CHECK_GLA_ERROR("k_proj.weight is [32,64], expected [16,64]", dst.load_state_dict(bad_shape));
  gla::io::StateDict bad_conv = d;
  bad_conv.set_raw("q_conv1d.weight", gla::io::DType::F32, {32, 4}, d.bytes("q_conv1d.weight"));
  CHECK_GLA_ERROR("q_conv1d.weight is [32,4], expected [32,1,4]", dst.load_state_dict(bad_conv));

  gla::io::StateDict ints = d;
  Tensor<std::int64_t, 1> bias_i(16);
  bias_i.setZero();
  ints.set("gk_proj.1.bias", bias_i);
  CHECK_GLA_ERROR("gk_proj.1.bias is I64", dst.load_state_dict(ints));

  // A failed load leaves the layer as it was.
  CHECK(gla::test::compare(dst.forward(x), y_before).max_abs == 0);
}

TEST_CASE("GatedLinearAttention::init_random: fla's init, deterministic per seed", "[layer][weights]") {
  Config c = small_config();
  c.hidden_size = 256;
  const Layer<double> a = [&] {
    Layer<double> l(c);
    l.init_random(5);
    return l;
  }();
  const gla::io::StateDict d = a.state_dict();
  const Tensor<double, 2> wq = d.get<double, 2>("q_proj.weight");
  double sum = 0, sq = 0;
  for (Index i = 0; i < wq.size(); ++i) {
    sum += wq.data()[i];
    sq += wq.data()[i] * wq.data()[i];
  }
  const double n = static_cast<double>(wq.size()), sd = std::sqrt(sq / n - (sum / n) * (sum / n));
  CHECK(std::abs(sum / n) < 0.002);
  CHECK(std::abs(sd - 0.02) < 0.001);
  const Tensor<double, 1> norm_w = d.get<double, 1>("g_norm_swish_gate.weight");
  const Tensor<double, 1> bias = d.get<double, 1>("gk_proj.1.bias");
  const Tensor<double, 1> conv_b = d.get<double, 1>("q_conv1d.bias");
  for (Index i = 0; i < norm_w.size(); ++i) CHECK(norm_w(i) == 1.0);
  for (Index i = 0; i < bias.size(); ++i) CHECK(bias(i) == 0.0);
  for (Index i = 0; i < conv_b.size(); ++i) CHECK(conv_b(i) == 0.0);
  Layer<double> b(c), other(c);
  b.init_random(5);
  other.init_random(6);
  CHECK(b.state_dict().bytes("o_proj.weight") == d.bytes("o_proj.weight"));
  CHECK(other.state_dict().bytes("o_proj.weight") != d.bytes("o_proj.weight"));
}

TEST_CASE("GatedLinearAttention::forward: invalid inputs and caches", "[layer][errors]") {
  const Config c = small_config();
  const Layer<float> layer = make_layer<float>(c);
  const Tensor<float, 3> x = random_x<float>(2, 5, 64, 3);
  Tensor<float, 3> wrong(2, 5, 63);
  wrong.setZero();
  CHECK_GLA_ERROR("x is [2,5,63], expected [B,T,hidden_size=64]", layer.forward(wrong));
  Tensor<std::int64_t, 2> short_mask(2, 4);
  short_mask.setConstant(1);
  CHECK_GLA_ERROR("attention_mask is [2,4], expected [B=2,S] with S >= T=5", layer.forward(x, mv(short_mask)));
  Tensor<std::int64_t, 2> bad_mask(2, 5);
  bad_mask.setConstant(1);
  bad_mask(1, 2) = 2;
  CHECK_GLA_ERROR("expected 0 or 1", layer.forward(x, mv(bad_mask)));
  CHECK_GLA_ERROR("expected 1 when cu_seqlens is given", layer.forward(x, std::nullopt, nullptr, false, {0, 5}));
  const Tensor<float, 3> x1 = random_x<float>(1, 5, 64, 4);
  CHECK_GLA_ERROR("cu_seqlens[N] is 4, expected T = 5", layer.forward(x1, std::nullopt, nullptr, false, {0, 2, 4}));
  CHECK_GLA_ERROR("use_cache is true but no cache was given", layer.forward(x, std::nullopt, nullptr, true));

  Cache<float> cache;
  layer.forward(x, std::nullopt, &cache, true);
  const Cache<float> saved = cache;
  const Tensor<float, 3> x3 = random_x<float>(3, 1, 64, 5);
  CHECK_GLA_ERROR("cache.recurrent_state is [2,4,16,8], expected [N=3,H=4,V=16,K=8]",
                  layer.forward(x3, std::nullopt, &cache, true));
  Cache<float> bad_conv = saved;
  bad_conv.conv_state_k = Tensor<float, 3>(2, 16, 3);
  CHECK_GLA_ERROR("cache.conv_state_k is [2,16,3], expected [N=2,D=16,W=4]",
                  layer.forward(x, std::nullopt, &bad_conv, true));
  // A failed call leaves the cache untouched.
  CHECK(cache.seen_tokens == saved.seen_tokens);
  CHECK(gla::test::compare(*cache.recurrent_state, *saved.recurrent_state).max_abs == 0);

  Config plain = c;
  plain.use_short_conv = false;
  const Layer<float> no_conv = make_layer<float>(plain);
  Cache<float> conv_cache = saved;
  conv_cache.recurrent_state.reset();
  CHECK_GLA_ERROR("cache.conv_state_q is set, expected none (use_short_conv is false)",
                  no_conv.forward(x, std::nullopt, &conv_cache, true));
}

TEST_CASE("GatedLinearAttention: a left-padded batch equals each row alone, with exact zeros at pads",
          "[layer][equivalence]") {
  Config c = small_config();
  const Index S = GENERATE(Index(30), Index(90));  // recurrent (T <= 64) and chunk paths
  c.mode = GENERATE(as<std::string>{}, "chunk", "fused_chunk");
  const Layer<double> layer = make_layer<double>(c);
  const std::vector<Index> pads{0, 7, S - 3, S};  // full, padded, 3 tokens, empty
  const Tensor<double, 3> x = random_x<double>(4, S, 64, 10);
  const auto mask = left_pad_mask(S, pads);
  const Tensor<double, 3> y = layer.forward(x, mv(mask));
  for (Index b = 0; b < 4; ++b) {
    const Index p = pads[static_cast<std::size_t>(b)];
    INFO("row " << b << " pads " << p << " S " << S << " mode " << c.mode);
    Index nonzero = 0;
    for (Index t = 0; t < p; ++t)
      for (Index j = 0; j < 64; ++j) nonzero += y(b, t, j) != 0.0;
    CHECK(nonzero == 0);
    if (p == S) continue;
    // The row alone, on the same kernel (mode fixed so the padded length picks the same path).
    Config alone_cfg = c;
    if (S <= 64) alone_cfg.mode = "fused_recurrent";
    Layer<double> alone(alone_cfg);
    alone.load_state_dict(layer.state_dict());
    const Tensor<double, 3> ya = alone.forward(slice_row(x, b, p, S - p));
    CHECK(rel(slice_row(y, b, p, S - p), ya) < 1e-12);
  }
}

TEST_CASE("GatedLinearAttention: packed cu_seqlens equals the padded mask, and explicit cu_seqlens wins",
          "[layer][equivalence]") {
  const Config c = small_config();
  const Layer<double> layer = make_layer<double>(c);
  const Index S = 80;
  const std::vector<Index> lens{80, 33, 0, 71};
  std::vector<Index> pads;
  for (Index l : lens) pads.push_back(S - l);
  const Tensor<double, 3> x = random_x<double>(4, S, 64, 20);
  const auto mask = left_pad_mask(S, pads);
  Cache<double> cache_pad, cache_packed;
  const Tensor<double, 3> y = layer.forward(x, mv(mask), &cache_pad, true);

  Index total = 0;
  for (Index l : lens) total += l;
  Tensor<double, 3> xp(1, total, 64);
  std::vector<std::int64_t> cu{0};
  Index pos = 0;
  for (Index b = 0; b < 4; ++b) {
    const Index l = lens[static_cast<std::size_t>(b)];
    std::copy_n(x.data() + (b * S + S - l) * 64, l * 64, xp.data() + pos * 64);
    pos += l;
    cu.push_back(pos);
  }
  // A mask is also given: fla lets an explicit cu_seqlens win, so this all-zero mask must be ignored.
  Tensor<std::int64_t, 2> ignored(1, total);
  ignored.setZero();
  const Tensor<double, 3> yp = layer.forward(xp, mv(ignored), &cache_packed, true, cu);
  pos = 0;
  for (Index b = 0; b < 4; ++b) {
    const Index l = lens[static_cast<std::size_t>(b)];
    if (l) CHECK(rel(slice_row(yp, 0, pos, l), slice_row(y, b, S - l, l)) < 1e-12);
    pos += l;
  }
  CHECK(rel(*cache_packed.recurrent_state, *cache_pad.recurrent_state) < 1e-6);
  CHECK(rel(*cache_packed.conv_state_v, *cache_pad.conv_state_v) == 0);
}

TEST_CASE("GatedLinearAttention: the T <= 64 recurrent path equals the chunk paths", "[layer][equivalence]") {
  Config c = small_config();
  const Tensor<float, 3> x = random_x<float>(2, 150, 64, 30);
  c.mode = "fused_recurrent";
  const Layer<float> rec = make_layer<float>(c);
  CHECK(rec.kernel_mode(150) == Layer<float>::Kernel::FusedRecurrent);
  Cache<float> cr;
  const Tensor<float, 3> yr = rec.forward(x, std::nullopt, &cr, true);
  for (const char* mode : {"chunk", "fused_chunk"}) {
    c.mode = mode;
    const Layer<float> chunked = make_layer<float>(c);
    CHECK(chunked.kernel_mode(150) != Layer<float>::Kernel::FusedRecurrent);
    CHECK(chunked.kernel_mode(64) == Layer<float>::Kernel::FusedRecurrent);
    Cache<float> cc;
    INFO(mode);
    CHECK(rel(chunked.forward(x, std::nullopt, &cc, true), yr) < 2e-6);
    CHECK(rel(*cc.recurrent_state, *cr.recurrent_state) < 2e-6);
  }
}

TEST_CASE("GatedLinearAttention: prefill with a cache, then single-token steps, equals one forward",
          "[layer][decode]") {
  Config c = small_config();
  c.mode = GENERATE(as<std::string>{}, "chunk", "fused_chunk");
  const Layer<float> layer = make_layer<float>(c);
  const Index B = 3, P = 70, steps = 12, S = P + steps;
  const Tensor<float, 3> x = random_x<float>(B, S, 64, 40);

  SECTION("no mask") {
    const Tensor<float, 3> full = layer.forward(x);
    Cache<float> cache;
    const Tensor<float, 3> pre = layer.forward(prefix_tokens(x, P), std::nullopt,
                                               &cache, true);
    for (Index b = 0; b < B; ++b) CHECK(rel(slice_row(pre, b, 0, P), slice_row(full, b, 0, P)) < 2e-6);
    Tensor<std::int64_t, 2> ones(B, 5);
    ones.setConstant(1);
    for (Index s = 0; s < steps; ++s) {
      Tensor<float, 2> xs(B, 64);
      for (Index b = 0; b < B; ++b) std::copy_n(x.data() + (b * S + P + s) * 64, 64, xs.data() + b * 64);
      // Alternate between no mask and an all-ones mask (what HF generate passes): identical, since a decode step
      // reads only the mask's last column (docs/layer.md, Cache).
      const Tensor<float, 2> ys = s % 2 ? layer.step(gla::view(xs), cache, mv(ones)) : layer.step(gla::view(xs), cache);
      for (Index b = 0; b < B; ++b) {
        INFO("step " << s << " row " << b);
        const gla::ConstTensorMap<float, 1> got(ys.data() + b * 64, 64), ref(full.data() + (b * S + P + s) * 64, 64);
        CHECK(rel(got, ref) < 1e-5);
      }
    }
    CHECK(cache.seen_tokens == S);
  }

  SECTION("left-padded prompt, decoding with the growing mask, one row skipping a step") {
    const std::vector<Index> pads{0, 9, 40};
    Tensor<std::int64_t, 2> mask = left_pad_mask(S, pads);
    // Row 2 has no token at step 5 (a 0 in the newest column): a zero-length sequence whose state passes through.
    const Index skip_row = 2, skip_step = 5;
    mask(skip_row, P + skip_step) = 0;
    const Tensor<float, 3> full = layer.forward(x, mv(mask));

    Cache<float> cache;
    const Tensor<std::int64_t, 2> prompt_mask = left_pad_mask(P, pads);
    layer.forward(prefix_tokens(x, P), mv(prompt_mask), &cache, true);
    Cache<float> before_skip;
    for (Index s = 0; s < steps; ++s) {
      Tensor<float, 2> xs(B, 64);
      for (Index b = 0; b < B; ++b) std::copy_n(x.data() + (b * S + P + s) * 64, 64, xs.data() + b * 64);
      // The mask so far [B, P+s+1]: only its last column is read.
      Tensor<std::int64_t, 2> m(B, P + s + 1);
      for (Index b = 0; b < B; ++b)
        for (Index t = 0; t <= P + s; ++t) m(b, t) = mask(b, t);
      if (s == skip_step) before_skip = cache;
      const Tensor<float, 2> ys = layer.step(gla::view(xs), cache, mv(m));
      for (Index b = 0; b < B; ++b) {
        INFO("step " << s << " row " << b);
        const gla::ConstTensorMap<float, 1> got(ys.data() + b * 64, 64), ref(full.data() + (b * S + P + s) * 64, 64);
        if (b == skip_row && s == skip_step) {
          Index nonzero = 0;
          for (Index j = 0; j < 64; ++j) nonzero += got(j) != 0.0f;
          CHECK(nonzero == 0);
        } else {
          CHECK(rel(got, ref) < 1e-5);
        }
      }
      if (s == skip_step) {
        // The skipped row's recurrent state and conv caches are unchanged.
        const Index KV = 4 * 16 * 8;
        const gla::ConstTensorMap<float, 1> now(cache.recurrent_state->data() + skip_row * KV, KV),
            then(before_skip.recurrent_state->data() + skip_row * KV, KV);
        CHECK(rel(now, then) == 0);
        const Index CW = 32 * 4;
        const gla::ConstTensorMap<float, 1> cnow(cache.conv_state_q->data() + skip_row * CW, CW),
            cthen(before_skip.conv_state_q->data() + skip_row * CW, CW);
        CHECK(rel(cnow, cthen) == 0);
      }
    }
  }
}

TEST_CASE("GatedLinearAttention: a cache with use_cache = false is read, not written", "[layer][decode]") {
  const Config c = small_config();
  const Layer<double> layer = make_layer<double>(c);
  const Tensor<double, 3> x = random_x<double>(2, 20, 64, 50);
  const Tensor<double, 3> x2 = random_x<double>(2, 3, 64, 51);
  Cache<double> cache;
  layer.forward(x, std::nullopt, &cache, true);
  const Cache<double> saved = cache;
  const Tensor<double, 3> y_read = layer.forward(x2, std::nullopt, &cache, false);
  CHECK(cache.seen_tokens == 20);
  CHECK(rel(*cache.recurrent_state, *saved.recurrent_state) == 0);
  CHECK(rel(*cache.conv_state_k, *saved.conv_state_k) == 0);
  const Tensor<double, 3> y_write = layer.forward(x2, std::nullopt, &cache, true);
  CHECK(rel(y_read, y_write) == 0);
  CHECK(cache.seen_tokens == 23);
}

TEST_CASE("GatedLinearAttention: the unfused and gate-less output paths", "[layer][paths]") {
  // fuse_norm=false with swish must equal the fused path with the same weights (norm, weight, then gate).
  Config fused = small_config(), unfused = small_config();
  unfused.fuse_norm = false;
  const Layer<double> a = make_layer<double>(fused);
  Layer<double> b(unfused);
  gla::io::StateDict d = a.state_dict();
  d.set("g_norm.weight", d.get<double, 1>("g_norm_swish_gate.weight"));
  d.erase("g_norm_swish_gate.weight");
  b.load_state_dict(d);
  const Tensor<double, 3> x = random_x<double>(2, 30, 64, 60);
  CHECK(rel(b.forward(x), a.forward(x)) < 1e-13);
}

TEST_CASE("GatedLinearAttention: an all-padding batch gives zeros and keeps the cache", "[layer][edge]") {
  const Config c = small_config();
  const Layer<float> layer = make_layer<float>(c);
  const Tensor<float, 3> x = random_x<float>(2, 6, 64, 70);
  Cache<float> cache;
  layer.forward(x, std::nullopt, &cache, true);
  const Cache<float> saved = cache;
  Tensor<std::int64_t, 2> zeros(2, 6);
  zeros.setZero();
  const Tensor<float, 3> y = layer.forward(x, mv(zeros), &cache, true);
  Index nonzero = 0;
  for (Index i = 0; i < y.size(); ++i) nonzero += y.data()[i] != 0.0f;
  CHECK(nonzero == 0);
  CHECK(rel(*cache.recurrent_state, *saved.recurrent_state) == 0);
  CHECK(rel(*cache.conv_state_v, *saved.conv_state_v) == 0);
  CHECK(cache.seen_tokens == 12);
}
