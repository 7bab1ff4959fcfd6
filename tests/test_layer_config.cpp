// GatedLinearAttentionConfig at the edges: derived sizes that cannot be computed, sizes beyond
// gla::kMaxParameterElements, JSON values that do not fit their field, and clamp_min's domain. Every case is a
// gla::Error naming the field, never undefined behaviour, std::bad_alloc or a silently changed value.

#include <gla/layers/gated_linear_attention.hpp>

#include "support/catch.hpp"
#include "support/test_utils.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>

namespace {

using gla::Index;
using gla::Tensor;
using Config = gla::GatedLinearAttentionConfig;
using json = nlohmann::json;

template <class F>
Config with(F f) {
  Config c;
  f(c);
  return c;
}

Config from(const std::string& text) { return Config::from_json(json::parse(text)); }

constexpr std::int64_t kTwo40 = std::int64_t{1} << 40;
constexpr std::int64_t kTwo62 = std::int64_t{1} << 62;
constexpr double kInf = std::numeric_limits<double>::infinity();

/// Elements of every tensor of a layer's state dict (what fla's sum(p.numel() for p in layer.parameters()) counts).
std::int64_t state_dict_elements(const gla::GatedLinearAttention<float>& layer) {
  const gla::io::StateDict d = layer.state_dict();
  std::int64_t n = 0;
  for (const std::string& name : d.names()) {
    std::int64_t e = 1;
    for (Index s : d.shape(name)) e *= s;
    n += e;
  }
  return n;
}

}  // namespace

TEST_CASE("GatedLinearAttentionConfig: derived sizes throw instead of overflowing or dividing by zero",
          "[layer][config]") {
  // hidden_size · expand beyond int64: the conversion to an integer would be undefined behaviour.
  const Config huge_k = with([](Config& c) { c.expand_k = 1e30; });
  CHECK_GLA_ERROR("GatedLinearAttentionConfig::key_dim: int(hidden_size * expand_k) = int(1024 * 1e+30) = "
                  "int(1.024e+33), expected a value that fits int64",
                  huge_k.key_dim());
  CHECK_GLA_ERROR("GatedLinearAttentionConfig::key_dim", huge_k.head_k_dim());
  CHECK_GLA_ERROR("GatedLinearAttentionConfig::key_dim", huge_k.key_dim_per_group());
  CHECK(huge_k.value_dim() == 1024);  // the other sizes are unaffected

  const Config huge_v = with([](Config& c) {
    c.hidden_size = kTwo62;
    c.expand_v = 4;
  });
  CHECK_GLA_ERROR("GatedLinearAttentionConfig::value_dim: int(hidden_size * expand_v) = int(4611686018427387904 * 4)",
                  huge_v.value_dim());
  CHECK_GLA_ERROR("GatedLinearAttentionConfig::value_dim", huge_v.head_v_dim());
  CHECK_GLA_ERROR("GatedLinearAttentionConfig::value_dim", huge_v.value_dim_per_group());
  CHECK(huge_v.key_dim() == kTwo62 / 2);  // 2^61 is exact in double and in int64

  CHECK_GLA_ERROR("int(1024 * nan)", with([](Config& c) { c.expand_k = std::nan(""); }).key_dim());
  CHECK_GLA_ERROR("int(1024 * -inf)", with([](Config& c) { c.expand_v = -kInf; }).value_dim());
  // The largest magnitudes that do fit are computed exactly as Python's int(float) would.
  CHECK(with([](Config& c) { c.hidden_size = std::numeric_limits<std::int64_t>::min(); c.expand_k = 1; }).key_dim() ==
        std::numeric_limits<std::int64_t>::min());
  CHECK(with([](Config& c) { c.hidden_size = 1000; c.expand_k = 0.3333; }).key_dim() == 333);

  // Divisions by a count that is not positive.
  const Config no_kv = with([](Config& c) { c.num_kv_heads = 0; });
  CHECK_GLA_ERROR("GatedLinearAttentionConfig::num_kv_groups: num_heads / num_kv_heads with num_kv_heads = 0, "
                  "expected num_kv_heads > 0",
                  no_kv.num_kv_groups());
  CHECK_GLA_ERROR("num_kv_heads = 0", no_kv.key_dim_per_group());
  CHECK_GLA_ERROR("num_kv_heads = -2", with([](Config& c) { c.num_kv_heads = -2; }).value_dim_per_group());
  // More kv heads than query heads: zero groups per kv head.
  const Config more_kv = with([](Config& c) { c.num_kv_heads = 8; });
  CHECK(more_kv.num_kv_groups() == 0);
  CHECK_GLA_ERROR("GatedLinearAttentionConfig::key_dim_per_group: key_dim / num_kv_groups with num_kv_groups = 0",
                  more_kv.key_dim_per_group());
  CHECK_GLA_ERROR("GatedLinearAttentionConfig::head_v_dim: value_dim / num_heads with num_heads = 0",
                  with([](Config& c) { c.num_heads = 0; c.num_kv_heads = 1; }).head_v_dim());
  CHECK_GLA_ERROR("num_heads / num_kv_heads with num_kv_heads = -4",  // unset num_kv_heads: kv_heads() = num_heads
                  with([](Config& c) { c.num_heads = -4; }).num_kv_groups());
  CHECK_GLA_ERROR("GatedLinearAttentionConfig::num_kv_groups", with([](Config& c) { c.num_heads = -4; }).parameter_count());
}

TEST_CASE("GatedLinearAttentionConfig: validate() bounds every size before it is truncated or allocated",
          "[layer][config]") {
  CHECK_GLA_ERROR("GatedLinearAttentionConfig: key_dim = int(hidden_size * expand_k) = int(1024 * 1e+30) = "
                  "int(1.024e+33), expected at most 2^40 = 1099511627776",
                  with([](Config& c) { c.expand_k = 1e30; }).validate());
  CHECK_GLA_ERROR("value_dim = int(hidden_size * expand_v) = int(4611686018427387904 * 4) = int(1.84467e+19), "
                  "expected at most 2^40",
                  with([](Config& c) {
                    c.hidden_size = kTwo62;
                    c.expand_k = std::ldexp(1.0, -30);  // key_dim = 2^32 passes this check
                    c.expand_v = 4;
                  }).validate());
  CHECK_GLA_ERROR("key_dim = int(hidden_size * expand_k) = int(4611686018427387904 * 0.5)",
                  with([](Config& c) { c.hidden_size = kTwo62; }).validate());

  // Sizes that are each fine but make a layer of more than 2^40 parameters (or more than int64 counts).
  CHECK_GLA_ERROR("GatedLinearAttentionConfig: the layer's parameter count (hidden_size = 1099511627776, key_dim = "
                  "549755813888, value_dim = 1099511627776, gate_low_rank_dim = 16) = more than 2^63 - 1 elements, "
                  "expected at most 2^40 = 1099511627776 (gla::kMaxParameterElements)",
                  with([](Config& c) { c.hidden_size = kTwo40; }).validate());
  CHECK_GLA_ERROR("the layer's parameter count (hidden_size = 1048576, key_dim = 524288, value_dim = 1048576, "
                  "gate_low_rank_dim = 16) = 4398072463360 elements",
                  with([](Config& c) { c.hidden_size = 1 << 20; }).validate());
  CHECK_GLA_ERROR("gate_low_rank_dim = 4611686018427387904) = more than 2^63 - 1 elements",
                  with([](Config& c) { c.gate_low_rank_dim = kTwo62; }).validate());
  CHECK_GLA_ERROR("conv_size = 1099511627776) = ",
                  with([](Config& c) { c.use_short_conv = true; c.conv_size = kTwo40; }).validate());
  CHECK_GLA_ERROR("conv_size = 9223372036854775807) = more than 2^63 - 1 elements",
                  with([](Config& c) {
                    c.use_short_conv = true;
                    c.conv_bias = true;
                    c.conv_size = std::numeric_limits<std::int64_t>::max();
                  }).validate());
  // The layer's constructor validates before it allocates anything: a gla::Error, not std::bad_alloc.
  CHECK_GLA_ERROR("the layer's parameter count",
                  gla::GatedLinearAttention<float>(with([](Config& c) { c.hidden_size = kTwo40; })));
  CHECK_GLA_ERROR("the layer's parameter count", gla::GatedLinearAttention<double>(with([](Config& c) {
                    c.use_short_conv = true;
                    c.conv_size = kTwo40;
                  })));

  // conv_size only counts when the convolutions exist (fla ignores it otherwise).
  const Config unused_conv = with([](Config& c) {
    c.hidden_size = 64;
    c.conv_size = kTwo40;
  });
  CHECK_NOTHROW(unused_conv.validate());
  CHECK(gla::GatedLinearAttention<float>(unused_conv).config().conv_size == kTwo40);
}

TEST_CASE("GatedLinearAttentionConfig::parameter_count() is the element count of the layer's state dict",
          "[layer][config]") {
  Config base;
  base.hidden_size = 64;
  base.num_heads = 4;
  for (int variant = 0; variant < 6; ++variant) {
    Config c = base;
    if (variant == 1) c.num_kv_heads = 2;
    if (variant == 2) {
      c.use_short_conv = true;
      c.conv_size = 3;
    }
    if (variant == 3) {
      c.use_short_conv = true;
      c.conv_bias = true;
      c.num_kv_heads = 1;
    }
    if (variant == 4) {
      c.use_output_gate = false;
      c.expand_k = 1.0;
      c.gate_low_rank_dim = 5;
    }
    if (variant == 5) {
      c.elementwise_affine = false;
      c.fuse_norm = false;
      c.expand_v = 2.0;
    }
    INFO("variant " << variant);
    const gla::GatedLinearAttention<float> layer(c);
    CHECK(c.parameter_count() == state_dict_elements(layer));
  }
  // fla's 340M layer (the defaults): 4·1024·512-sized projections and the rest.
  CHECK(Config().parameter_count() == 1024 * 512 + 1024 * 512 + 1024 * 1024 + 1024 * 1024 + 1024 * 16 + 16 * 512 +
                                          512 + 1024 * 1024 + 256);
}

TEST_CASE("GatedLinearAttentionConfig: clamp_min must be <= 0 (or -inf)", "[layer][config]") {
  CHECK_GLA_ERROR("GatedLinearAttentionConfig: clamp_min is 0.5, expected a number <= 0 (or -inf for no clamp)",
                  with([](Config& c) { c.clamp_min = 0.5; }).validate());
  CHECK_GLA_ERROR("clamp_min is 1e-30, expected a number <= 0",
                  with([](Config& c) { c.clamp_min = 1e-30; }).validate());
  CHECK_GLA_ERROR("clamp_min is inf, expected a number <= 0", with([](Config& c) { c.clamp_min = kInf; }).validate());
  CHECK_GLA_ERROR("clamp_min is nan", with([](Config& c) { c.clamp_min = std::nan(""); }).validate());
  CHECK_GLA_ERROR("clamp_min is 2", Config::from_json(json{{"clamp_min", 2}}));
  CHECK_GLA_ERROR("clamp_min is inf", Config::from_json(json{{"clamp_min", kInf}}));
  CHECK_GLA_ERROR("clamp_min is 0.5", gla::GatedLinearAttention<float>(with([](Config& c) { c.clamp_min = 0.5; })));
  CHECK_NOTHROW(with([](Config& c) { c.clamp_min = 0.0; }).validate());
  CHECK_NOTHROW(with([](Config& c) { c.clamp_min = -0.0; }).validate());

  // -inf clamps nothing: the same output as no clamp at all, bit for bit.
  Config c;
  c.hidden_size = 32;
  c.num_heads = 2;
  Config clamped = c;
  clamped.clamp_min = -kInf;
  CHECK(Config::from_json(json{{"clamp_min", -kInf}}).clamp_min == -kInf);
  gla::GatedLinearAttention<float> plain(c), with_clamp(clamped);
  plain.init_random(5, 0.1);
  with_clamp.init_random(5, 0.1);
  Tensor<float, 3> x(2, 9, 32);
  auto g = gla::test::rng(3);
  gla::test::fill_normal(x, g);
  const Tensor<float, 3> a = plain.forward(x), b = with_clamp.forward(x);
  REQUIRE(a.size() == b.size());
  bool same = true, finite = true;
  for (Index i = 0; i < a.size(); ++i) {
    same = same && a.data()[i] == b.data()[i];
    finite = finite && std::isfinite(a.data()[i]);
  }
  CHECK(same);
  CHECK(finite);
}

TEST_CASE("GatedLinearAttentionConfig::from_json: integer fields take exact integers only", "[layer][config][json]") {
  // JSON integers, and floats that hold an integer exactly.
  CHECK(from(R"({"hidden_size": 256})").hidden_size == 256);
  CHECK(from(R"({"hidden_size": 256.0, "num_heads": 4e0, "layer_idx": -3.0})").hidden_size == 256);
  CHECK(from(R"({"layer_idx": -3.0})").layer_idx == -3);
  CHECK(from(R"({"layer_idx": 9223372036854775807})").layer_idx == std::numeric_limits<std::int64_t>::max());
  CHECK(from(R"({"layer_idx": -9223372036854775808})").layer_idx == std::numeric_limits<std::int64_t>::min());
  CHECK(from(R"({"num_kv_heads": 2.0})").num_kv_heads == 2);
  CHECK(!from(R"({"num_kv_heads": null})").num_kv_heads);

  // Never truncated, wrapped or saturated.
  CHECK_GLA_ERROR(
      "GatedLinearAttentionConfig::from_json: hidden_size is JSON 64.9, expected an integer (it has a fractional part)",
      from(R"({"hidden_size": 64.9})"));
  CHECK_GLA_ERROR("num_heads is JSON 0.5, expected an integer", from(R"({"num_heads": 0.5})"));
  CHECK_GLA_ERROR("hidden_size is JSON 1e+300, expected an integer in [-2^63, 2^63)",
                  from(R"({"hidden_size": 1e300})"));
  CHECK_GLA_ERROR("conv_size is JSON -1e+19, expected an integer in [-2^63, 2^63)", from(R"({"conv_size": -1e19})"));
  CHECK_GLA_ERROR("layer_idx is JSON 9.22337e+18, expected an integer in [-2^63, 2^63)",  // exactly 2^63
                  from(R"({"layer_idx": 9223372036854775808.0})"));
  CHECK_GLA_ERROR("hidden_size is JSON 18446744073709551615, expected an integer below 2^63",
                  from(R"({"hidden_size": 18446744073709551615})"));
  CHECK_GLA_ERROR("gate_low_rank_dim is JSON 9223372036854775808, expected an integer below 2^63",
                  from(R"({"gate_low_rank_dim": 9223372036854775808})"));
  CHECK_GLA_ERROR("num_kv_heads is JSON 2.5, expected an integer", from(R"({"num_kv_heads": 2.5})"));
  CHECK_GLA_ERROR("layer_idx is JSON 1e+19", from(R"({"layer_idx": 1e19})"));
  // Other JSON types, booleans included (nlohmann would read true as 1).
  CHECK_GLA_ERROR("hidden_size is JSON true, expected an integer", from(R"({"hidden_size": true})"));
  CHECK_GLA_ERROR("num_heads is JSON \"4\", expected an integer", from(R"({"num_heads": "4"})"));
  CHECK_GLA_ERROR("conv_size is JSON [4], expected an integer", from(R"({"conv_size": [4]})"));
  CHECK_GLA_ERROR("hidden_size is JSON null, expected an integer", from(R"({"hidden_size": null})"));
  // Non-finite values can only come from a JSON value built in C++.
  CHECK_GLA_ERROR("hidden_size is JSON nan, expected an integer", Config::from_json(json{{"hidden_size", NAN}}));
  CHECK_GLA_ERROR("num_heads is JSON -inf, expected an integer", Config::from_json(json{{"num_heads", -kInf}}));

  // A value that passes the JSON rules is still validated.
  CHECK_GLA_ERROR("GatedLinearAttentionConfig: hidden_size is -64, expected > 0", from(R"({"hidden_size": -64.0})"));
  CHECK_GLA_ERROR("the layer's parameter count", from(R"({"hidden_size": 1099511627776})"));
}

TEST_CASE("GatedLinearAttentionConfig::from_json: float, bool and string fields", "[layer][config][json]") {
  CHECK(from(R"({"expand_k": 1})").expand_k == 1.0);  // an integer is a number
  CHECK(from(R"({"norm_eps": 1e-6, "gate_logit_normalizer": 8})").gate_logit_normalizer == 8.0);
  CHECK_GLA_ERROR("expand_k is JSON \"0.5\", expected a number", from(R"({"expand_k": "0.5"})"));
  CHECK_GLA_ERROR("norm_eps is JSON false, expected a number", from(R"({"norm_eps": false})"));
  CHECK_GLA_ERROR("clamp_min is JSON {}, expected a number", from(R"({"clamp_min": {}})"));
  // Non-finite floats are judged by validate(), which names the field.
  CHECK_GLA_ERROR("GatedLinearAttentionConfig: norm_eps is nan, expected a finite number >= 0",
                  Config::from_json(json{{"norm_eps", NAN}}));
  CHECK_GLA_ERROR("gate_logit_normalizer is inf, expected a finite number > 0",
                  Config::from_json(json{{"gate_logit_normalizer", kInf}}));
  CHECK_GLA_ERROR("expand_v is inf, expected > 0", Config::from_json(json{{"expand_v", kInf}}));
  CHECK_GLA_ERROR("value_dim = int(hidden_size * expand_v) = int(1024 * 1e+30)", from(R"({"expand_v": 1e30})"));

  CHECK(from(R"({"use_short_conv": true})").use_short_conv);
  CHECK_GLA_ERROR("use_short_conv is JSON 1, expected true or false", from(R"({"use_short_conv": 1})"));
  CHECK_GLA_ERROR("fuse_norm is JSON \"true\", expected true or false", from(R"({"fuse_norm": "true"})"));
  CHECK_GLA_ERROR("conv_bias is JSON null, expected true or false", from(R"({"conv_bias": null})"));

  CHECK(from(R"({"gate_fn": "sigmoid"})").gate_fn == "sigmoid");
  CHECK(!from(R"({"feature_map": null})").feature_map);
  CHECK_GLA_ERROR("mode is JSON 3, expected a string", from(R"({"mode": 3})"));
  CHECK_GLA_ERROR("feature_map is JSON [\"relu\"], expected a string", from(R"({"feature_map": ["relu"]})"));
  // A long value is cut short in the message.
  const std::string message =
      gla::test::error_message([] { Config::from_json(json{{"num_heads", std::string(5000, 'x')}}); });
  CHECK_THAT(message, GLA_CONTAINS("num_heads is JSON \"xxxx"));
  CHECK_THAT(message, GLA_CONTAINS("..., expected an integer"));
  CHECK(message.size() < 300);
}
