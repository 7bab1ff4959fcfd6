// Conformance of GatedLinearAttention with fla's own outputs (tests/data/fla/layer-*.safetensors): y, every decode
// step, and the final recurrent and conv caches, in float and double, within relative RMS 2e-5.

#include <gla/layers/gated_linear_attention.hpp>

#include "support/catch.hpp"
#include "support/golden.hpp"
#include "support/test_utils.hpp"

#include <iostream>
#include <string>

namespace {

using gla::Index;
using gla::test::compare;
using gla::test::Golden;

constexpr double kTol = 2e-5;

/// Runs one golden case (files hold one case each, named like the file's suffix) in scalar T.
template <class T>
void run_case(const std::string& name) {
  const Golden g("layer-" + name);
  const nlohmann::json meta = g.meta(name);
  const auto cfg = gla::GatedLinearAttentionConfig::from_json(meta);
  gla::GatedLinearAttention<T> layer(cfg);
  layer.load_state_dict(gla::io::StateDict::from_safetensors(g.file(), name + ".weight."));

  const gla::Tensor<T, 3> x = g.get<T, 3>(name + ".x");
  const gla::Tensor<float, 3> y_ref = g.get<float, 3>(name + ".y");
  std::optional<gla::Tensor<std::int64_t, 2>> mask;
  if (g.has(name + ".attention_mask")) mask = g.get<std::int64_t, 2>(name + ".attention_mask");
  std::optional<gla::ConstTensorMap<std::int64_t, 2>> mask_view;
  if (mask) mask_view.emplace(gla::view(*mask));

  const int steps = meta.value("decode_steps", 0);
  gla::GatedLinearAttentionCache<T> cache;
  const gla::Tensor<T, 3> y = layer.forward(x, mask_view, steps > 0 ? &cache : nullptr, steps > 0);
  const auto d = compare(y, y_ref);
  INFO(name << " y: " << d.str());
  std::cerr << "layer golden " << name << (std::is_same_v<T, float> ? " float" : " double") << " y " << d.str()
            << "\n";
  CHECK(gla::test::ok(d, kTol));

  if (mask) {  // padded positions are exactly 0 (docs/layer.md, Forward step 9)
    Index nonzero = 0;
    const Index B = x.dimension(0), S = x.dimension(1), D = x.dimension(2);
    for (Index b = 0; b < B; ++b)
      for (Index t = 0; t < S; ++t)
        if ((*mask)(b, t) == 0)
          for (Index j = 0; j < D; ++j) nonzero += y(b, t, j) != T(0);
    CHECK(nonzero == 0);
  }

  if (steps > 0) {
    const gla::Tensor<T, 4> step_x = g.get<T, 4>(name + ".step_x");
    const gla::Tensor<float, 4> step_y = g.get<float, 4>(name + ".step_y");
    const Index B = step_x.dimension(1), D = step_x.dimension(3);
    for (int s = 0; s < steps; ++s) {
      const gla::ConstTensorMap<T, 3> xs(step_x.data() + s * B * D, B, 1, D);
      const gla::Tensor<T, 3> ys = layer.forward(xs, std::nullopt, &cache, true);
      const auto ds = gla::test::compare_ptr(ys.data(), step_y.data() + s * B * D, B * D);
      INFO(name << " step " << s << ": " << ds.str());
      std::cerr << "layer golden " << name << " step " << s << " " << ds.str() << "\n";
      CHECK(gla::test::ok(ds, kTol));
    }
    CHECK(cache.seen_tokens == x.dimension(1) + steps);
    REQUIRE(cache.recurrent_state);
    const auto dr = compare(*cache.recurrent_state, g.get<float, 4>(name + ".final_recurrent_state"));
    INFO(name << " final_recurrent_state: " << dr.str());
    std::cerr << "layer golden " << name << " final_recurrent_state " << dr.str() << "\n";
    CHECK(gla::test::ok(dr, kTol));
    if (cfg.use_short_conv) {
      const std::pair<const char*, const std::optional<gla::Tensor<T, 3>>*> convs[] = {
          {"q", &cache.conv_state_q}, {"k", &cache.conv_state_k}, {"v", &cache.conv_state_v}};
      for (const auto& [which, st] : convs) {
        REQUIRE(st->has_value());
        const auto dc = compare(**st, g.get<float, 3>(name + ".final_conv_state_" + which));
        INFO(name << " final_conv_state_" << which << ": " << dc.str());
        // The cache holds raw projection outputs: only GEMM rounding separates them from fla's.
        CHECK(gla::test::ok(dc, kTol));
      }
    }
  }
}

}  // namespace

TEST_CASE("GatedLinearAttention matches fla on every golden layer case", "[layer][golden]") {
  const std::string name = GENERATE(as<std::string>{}, "chunk_default", "short_seq", "conv_gqa_relu_mask",
                                    "unfused_sigmoid", "no_gate_no_affine", "decode_conv");
  SECTION("float") { run_case<float>(name); }
  SECTION("double") { run_case<double>(name); }
}
