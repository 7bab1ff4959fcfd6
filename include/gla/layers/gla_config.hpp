#pragma once
/// gla/layers/gla_config.hpp: GatedLinearAttentionConfig, the constructor arguments of fla's GatedLinearAttention
/// layer (gla/layers/gated_linear_attention.hpp includes it), with its checks and its reading from JSON.

#include <gla/core.hpp>
#include <gla/modules/activations.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>

namespace gla {

namespace detail {
/// Whether a config field is optional (from_json maps JSON null to unset for those).
template <class X>
struct is_optional : std::false_type {};
template <class X>
struct is_optional<std::optional<X>> : std::true_type {};
}  // namespace detail

/// fla's GatedLinearAttention constructor arguments, with fla's defaults. validate() applies fla's checks
/// (mode, divisibility) and ours (sizes > 0, num_heads % num_kv_heads, known activation names) as gla::Error.
struct GatedLinearAttentionConfig {
  /// "chunk", "fused_chunk" or "fused_recurrent": the kernel for inputs longer than 64 (padded) tokens.
  std::string mode = "chunk";
  std::int64_t hidden_size = 1024;
  /// key_dim = int(hidden_size·expand_k), value_dim = int(hidden_size·expand_v), as Python's int() truncates.
  double expand_k = 0.5;
  double expand_v = 1.0;
  std::int64_t num_heads = 4;
  /// Unset: num_heads (no GQA). Query head i reads kv head i / (num_heads / num_kv_heads).
  std::optional<std::int64_t> num_kv_heads;
  /// An ACT2FN name applied to q and k after the head repeat (e.g. "relu"); unset: none.
  std::optional<std::string> feature_map;
  bool use_short_conv = false;
  std::int64_t conv_size = 4;
  bool conv_bias = false;
  bool use_output_gate = true;
  /// ACT2FN name of the output gate; "swish" with fuse_norm takes the fused FusedRMSNormGated path.
  std::string gate_fn = "swish";
  bool elementwise_affine = true;
  double norm_eps = 1e-5;
  /// gk = logsigmoid(gk_proj(x)) / gate_logit_normalizer.
  double gate_logit_normalizer = 16;
  std::int64_t gate_low_rank_dim = 16;
  /// Lower bound applied to gk after the normalizer; unset: none.
  std::optional<double> clamp_min;
  bool fuse_norm = true;
  /// Kept for parity with fla; a GatedLinearAttentionCache belongs to one layer, so the layer does not use it.
  std::optional<std::int64_t> layer_idx;

  std::int64_t kv_heads() const { return num_kv_heads ? *num_kv_heads : num_heads; }
  std::int64_t num_kv_groups() const { return num_heads / kv_heads(); }
  std::int64_t key_dim() const { return static_cast<std::int64_t>(static_cast<double>(hidden_size) * expand_k); }
  std::int64_t value_dim() const { return static_cast<std::int64_t>(static_cast<double>(hidden_size) * expand_v); }
  std::int64_t key_dim_per_group() const { return key_dim() / num_kv_groups(); }
  std::int64_t value_dim_per_group() const { return value_dim() / num_kv_groups(); }
  std::int64_t head_k_dim() const { return key_dim() / num_heads; }
  std::int64_t head_v_dim() const { return value_dim() / num_heads; }
  /// fla's fuse_norm_and_gate: the FusedRMSNormGated module named g_norm_swish_gate.
  bool fused_norm_gate() const { return gate_fn == "swish" && fuse_norm && use_output_gate; }

  /// Throws gla::Error naming the field, expected vs actual, for the first invalid setting.
  void validate() const {
    const std::string fn = "GatedLinearAttentionConfig";
    auto positive = [&](const char* name, std::int64_t v) {
      if (v <= 0) detail::fail(fn, std::string(name) + " is " + std::to_string(v) + ", expected > 0");
    };
    if (mode != "chunk" && mode != "fused_recurrent" && mode != "fused_chunk")
      detail::fail(fn, "mode is '" + mode + "', expected one of 'chunk', 'fused_recurrent', 'fused_chunk'");
    positive("hidden_size", hidden_size);
    positive("num_heads", num_heads);
    if (num_kv_heads) positive("num_kv_heads", *num_kv_heads);
    positive("conv_size", conv_size);
    positive("gate_low_rank_dim", gate_low_rank_dim);
    if (!(expand_k > 0) || !std::isfinite(expand_k)) detail::fail(fn, "expand_k is " + num(expand_k) + ", expected > 0");
    if (!(expand_v > 0) || !std::isfinite(expand_v)) detail::fail(fn, "expand_v is " + num(expand_v) + ", expected > 0");
    if (num_heads % kv_heads() != 0)
      detail::fail(fn, "num_heads = " + std::to_string(num_heads) + " is not divisible by num_kv_heads = " +
                           std::to_string(kv_heads()) + ", expected num_heads % num_kv_heads == 0");
    if (key_dim() <= 0 || key_dim() % num_heads != 0)
      detail::fail(fn, "key_dim = int(hidden_size * expand_k) = " + std::to_string(key_dim()) +
                           ", expected a positive multiple of num_heads = " + std::to_string(num_heads));
    if (value_dim() <= 0 || value_dim() % num_heads != 0)
      detail::fail(fn, "value_dim = int(hidden_size * expand_v) = " + std::to_string(value_dim()) +
                           ", expected a positive multiple of num_heads = " + std::to_string(num_heads));
    if (feature_map) checked_activation("feature_map", *feature_map);
    // fla looks gate_fn up only on the unfused path, but every name other than 'swish' takes that path, so an
    // unknown name is always an error there (KeyError).
    checked_activation("gate_fn", gate_fn);
    if (!(norm_eps >= 0) || !std::isfinite(norm_eps))
      detail::fail(fn, "norm_eps is " + num(norm_eps) + ", expected a finite number >= 0");
    // A non-positive normalizer makes the log gates positive (growing states) or infinite: outside GLA's domain.
    if (!(gate_logit_normalizer > 0) || !std::isfinite(gate_logit_normalizer))
      detail::fail(fn, "gate_logit_normalizer is " + num(gate_logit_normalizer) + ", expected a finite number > 0");
    if (clamp_min && std::isnan(*clamp_min)) detail::fail(fn, "clamp_min is nan, expected a number");
  }

  /// The config from a JSON object with fla's keyword names (e.g. a golden file's or a model config's parameters);
  /// absent keys keep their defaults, null sets an optional to unset, keys that are not layer options are
  /// ignored (such dicts carry more, e.g. shapes or model settings). A wrongly typed value → gla::Error. The result
  /// is validated.
  static GatedLinearAttentionConfig from_json(const nlohmann::json& j) {
    const std::string fn = "GatedLinearAttentionConfig::from_json";
    if (!j.is_object()) detail::fail(fn, "the config is JSON " + std::string(j.type_name()) + ", expected an object");
    GatedLinearAttentionConfig c;
    auto get = [&](const char* key, auto& field) {
      const auto it = j.find(key);
      if (it == j.end()) return;
      using F = std::decay_t<decltype(field)>;
      try {
        if constexpr (detail::is_optional<F>::value) {
          if (it->is_null())
            field.reset();
          else
            field = it->template get<typename F::value_type>();
        } else {
          field = it->template get<F>();
        }
      } catch (const nlohmann::json::exception&) {
        detail::fail(fn, std::string(key) + " is JSON " + it->dump() + ", which has the wrong type");
      }
    };
    get("mode", c.mode);
    get("hidden_size", c.hidden_size);
    get("expand_k", c.expand_k);
    get("expand_v", c.expand_v);
    get("num_heads", c.num_heads);
    get("num_kv_heads", c.num_kv_heads);
    get("feature_map", c.feature_map);
    get("use_short_conv", c.use_short_conv);
    get("conv_size", c.conv_size);
    get("conv_bias", c.conv_bias);
    get("use_output_gate", c.use_output_gate);
    get("gate_fn", c.gate_fn);
    get("elementwise_affine", c.elementwise_affine);
    get("norm_eps", c.norm_eps);
    get("gate_logit_normalizer", c.gate_logit_normalizer);
    get("gate_low_rank_dim", c.gate_low_rank_dim);
    get("clamp_min", c.clamp_min);
    get("fuse_norm", c.fuse_norm);
    get("layer_idx", c.layer_idx);
    c.validate();
    return c;
  }

 private:
  static std::string num(double v) {
    std::ostringstream s;
    s << v;
    return s.str();
  }
  static Activation checked_activation(const char* field, const std::string& name) {
    try {
      return parse_activation(name);
    } catch (const Error& e) {
      detail::fail("GatedLinearAttentionConfig", std::string(field) + ": " + e.what());
    }
  }
};

}  // namespace gla
