#pragma once
/// gla/layers/gla_config.hpp: GatedLinearAttentionConfig, the constructor arguments of fla's GatedLinearAttention
/// layer (gla/layers/gated_linear_attention.hpp includes it), with its checks and its reading from JSON.

#include <gla/core.hpp>
#include <gla/detail/param_limits.hpp>
#include <gla/modules/activations.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
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

/// The strict JSON field readers of the config structs (GatedLinearAttentionConfig::from_json and the model
/// config, gla/models/gla_model_config.hpp), so every config reads its values by the same rules.
namespace config_json {

/// A double as C++ prints it (std::to_string would print 1e-7 as 0.000000).
inline std::string num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}

/// A JSON value for a message: floats as C++ prints them (nlohmann writes NaN and inf as null), and long
/// values cut short.
inline std::string json_str(const nlohmann::json& v) {
  if (v.is_number_float()) return num(v.get<double>());
  std::string s = v.dump();
  constexpr std::size_t kMax = 80;
  return s.size() > kMax ? s.substr(0, kMax) + "..." : s;
}

/// One JSON value as a field of type F (std::int64_t, double, bool or std::string); gla::Error naming fn and key
/// otherwise. Value rules:
///   integer fields  a JSON integer in [-2^63, 2^63), or a JSON float holding such an integer exactly (e.g.
///                   1024.0: JSON has one number type, and some writers emit every number as a float);
///                   64.9, 1e300, 18446744073709551615 and true are rejected, never truncated or wrapped;
///   float fields    a JSON number (integers convert to the nearest double);
///   bool fields     true or false;  string fields  a JSON string.
template <class F>
F read(const std::string& fn, const std::string& key, const nlohmann::json& v) {
  const std::string what = key + " is JSON " + json_str(v);
  if constexpr (std::is_same_v<F, std::int64_t>) {
    if (v.is_number_unsigned()) {  // checked first: is_number_integer() holds for unsigned numbers too
      const auto u = v.get<std::uint64_t>();
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        fail(fn, what + ", expected an integer below 2^63");
      return static_cast<std::int64_t>(u);
    }
    if (v.is_number_integer()) return v.get<std::int64_t>();
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
        fail(fn, what + ", expected an integer in [-2^63, 2^63)");
      if (d != std::trunc(d)) fail(fn, what + ", expected an integer (it has a fractional part)");
      return static_cast<std::int64_t>(d);
    }
    fail(fn, what + ", expected an integer");
  } else if constexpr (std::is_same_v<F, double>) {
    if (!v.is_number()) fail(fn, what + ", expected a number");
    return v.get<double>();
  } else if constexpr (std::is_same_v<F, bool>) {
    if (!v.is_boolean()) fail(fn, what + ", expected true or false");
    return v.get<bool>();
  } else {
    static_assert(std::is_same_v<F, std::string>, "a config field is an integer, double, bool or string");
    if (!v.is_string()) fail(fn, what + ", expected a string");
    return v.get<std::string>();
  }
}

/// field = j[key] by read()'s rules when the key is present (an absent key keeps the field's value); for a
/// std::optional field, JSON null unsets it. Returns whether the key was present.
template <class F>
bool read_field(const std::string& fn, const nlohmann::json& j, const std::string& key, F& field) {
  const auto it = j.find(key);
  if (it == j.end()) return false;
  if constexpr (is_optional<F>::value) {
    if (it->is_null())
      field.reset();
    else
      field = read<typename F::value_type>(fn, key, *it);
  } else {
    field = read<F>(fn, key, *it);
  }
  return true;
}

}  // namespace config_json
}  // namespace detail

/// fla's GatedLinearAttention constructor arguments, with fla's defaults. validate() applies fla's checks (mode,
/// divisibility) and ours (sizes > 0, num_heads % num_kv_heads, known activation names, sizes within
/// kMaxParameterElements, clamp_min <= 0) as gla::Error.
///
/// The derived sizes (key_dim() ... head_v_dim()) are defined for every config: where one cannot be computed (a
/// size that does not fit int64, a division by a non-positive count) it throws gla::Error instead of overflowing
/// or dividing by zero, so they are safe to call before validate().
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
  /// Lower bound applied to gk after the normalizer; unset: none. Must be <= 0 (gk is a log decay, and a positive
  /// bound would make every gate grow the state); -inf is allowed and clamps nothing.
  std::optional<double> clamp_min;
  bool fuse_norm = true;
  /// Kept for parity with fla; a GatedLinearAttentionCache belongs to one layer, so the layer does not use it.
  std::optional<std::int64_t> layer_idx;

  std::int64_t kv_heads() const { return num_kv_heads ? *num_kv_heads : num_heads; }
  std::int64_t num_kv_groups() const {
    return quotient("num_kv_groups", "num_heads", num_heads, "num_kv_heads", kv_heads());
  }
  std::int64_t key_dim() const { return truncated_dim("key_dim", "expand_k", expand_k); }
  std::int64_t value_dim() const { return truncated_dim("value_dim", "expand_v", expand_v); }
  std::int64_t key_dim_per_group() const {
    return quotient("key_dim_per_group", "key_dim", key_dim(), "num_kv_groups", num_kv_groups());
  }
  std::int64_t value_dim_per_group() const {
    return quotient("value_dim_per_group", "value_dim", value_dim(), "num_kv_groups", num_kv_groups());
  }
  std::int64_t head_k_dim() const { return quotient("head_k_dim", "key_dim", key_dim(), "num_heads", num_heads); }
  std::int64_t head_v_dim() const { return quotient("head_v_dim", "value_dim", value_dim(), "num_heads", num_heads); }
  /// fla's fuse_norm_and_gate: the FusedRMSNormGated module named g_norm_swish_gate.
  bool fused_norm_gate() const { return gate_fn == "swish" && fuse_norm && use_output_gate; }

  /// Elements of all the layer's parameters (fla's sum of p.numel()), saturated at INT64_MAX; validate() bounds
  /// it by kMaxParameterElements. gla::Error when a derived size cannot be computed (see above).
  std::int64_t parameter_count() const {
    using detail::sat_add;
    using detail::sat_mul;
    const std::int64_t h = hidden_size, r = gate_low_rank_dim, K = key_dim(), V = value_dim();
    const std::int64_t Kg = key_dim_per_group(), Vg = value_dim_per_group();
    if (h < 0 || r < 0 || K < 0 || V < 0 || (use_short_conv && conv_size < 0))
      return std::numeric_limits<std::int64_t>::max();  // not a size: no count (validate() names the field)
    std::int64_t n = sat_add(sat_mul(h, K), sat_mul(h, Kg));  // q_proj, k_proj
    n = sat_add(n, sat_mul(h, Vg));                            // v_proj
    if (use_output_gate) n = sat_add(n, sat_mul(h, V));        // g_proj
    n = sat_add(n, sat_add(sat_mul(h, r), sat_add(sat_mul(r, Kg), Kg)));  // gk_proj: [r,h], [Kg,r] and bias [Kg]
    n = sat_add(n, sat_mul(V, h));                                        // o_proj
    if (use_short_conv) {
      const std::int64_t channels = sat_add(K, sat_add(Kg, Vg));  // q, k, v convolutions [D,1,W] (+ bias [D])
      n = sat_add(n, sat_mul(channels, conv_bias ? sat_add(conv_size, 1) : conv_size));
    }
    if (elementwise_affine) n = sat_add(n, head_v_dim());  // the output norm's weight
    return n;
  }

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
    // The products are bounded before they are truncated to integers (no float → int overflow).
    dim_within_bound(fn, "key_dim", "expand_k", expand_k);
    dim_within_bound(fn, "value_dim", "expand_v", expand_v);
    if (num_heads % kv_heads() != 0)
      detail::fail(fn, "num_heads = " + std::to_string(num_heads) + " is not divisible by num_kv_heads = " +
                           std::to_string(kv_heads()) + ", expected num_heads % num_kv_heads == 0");
    if (key_dim() <= 0 || key_dim() % num_heads != 0)
      detail::fail(fn, "key_dim = int(hidden_size * expand_k) = " + std::to_string(key_dim()) +
                           ", expected a positive multiple of num_heads = " + std::to_string(num_heads));
    if (value_dim() <= 0 || value_dim() % num_heads != 0)
      detail::fail(fn, "value_dim = int(hidden_size * expand_v) = " + std::to_string(value_dim()) +
                           ", expected a positive multiple of num_heads = " + std::to_string(num_heads));
    // Every size is now positive and at most 2^40, so the count below saturates at worst (never overflows).
    detail::check_parameter_elements(
        fn,
        "the layer's parameter count (hidden_size = " + std::to_string(hidden_size) + ", key_dim = " +
            std::to_string(key_dim()) + ", value_dim = " + std::to_string(value_dim()) + ", gate_low_rank_dim = " +
            std::to_string(gate_low_rank_dim) +
            (use_short_conv ? ", conv_size = " + std::to_string(conv_size) : std::string()) + ")",
        parameter_count(), sizeof(double));
    if (feature_map) checked_activation("feature_map", *feature_map);
    // fla looks gate_fn up only on the unfused path, but every name other than 'swish' takes that path, so an
    // unknown name is always an error there (KeyError).
    checked_activation("gate_fn", gate_fn);
    if (!(norm_eps >= 0) || !std::isfinite(norm_eps))
      detail::fail(fn, "norm_eps is " + num(norm_eps) + ", expected a finite number >= 0");
    // A non-positive normalizer makes the log gates positive (growing states) or infinite: outside GLA's domain.
    if (!(gate_logit_normalizer > 0) || !std::isfinite(gate_logit_normalizer))
      detail::fail(fn, "gate_logit_normalizer is " + num(gate_logit_normalizer) + ", expected a finite number > 0");
    // gk = max(gk, clamp_min): a bound above 0 (or +inf, or NaN) would make log gates positive or NaN, and every
    // output non-finite. -inf clamps nothing.
    if (clamp_min && !(*clamp_min <= 0))
      detail::fail(fn, "clamp_min is " + num(*clamp_min) + ", expected a number <= 0 (or -inf for no clamp)");
  }

  /// The config from a JSON object with the layer's fla keyword names (e.g. a golden file's parameters); absent
  /// keys keep their defaults, null sets an optional to unset, keys that are not layer options are ignored (such
  /// dicts carry more, e.g. shapes). A model config is rejected: its keys 'attn_mode' and 'hidden_act' (the
  /// model's names of mode and gate_fn) are a gla::Error pointing to gla::GLAConfig. The result is validated.
  /// Value rules (detail::config_json::read; anything else is a gla::Error naming the key):
  ///   integer fields  a JSON integer in [-2^63, 2^63), or a JSON float holding such an integer exactly (e.g.
  ///                   1024.0: JSON has one number type, and some writers emit every number as a float);
  ///                   64.9, 1e300, 18446744073709551615 and true are rejected, never truncated or wrapped;
  ///   float fields    a JSON number (integers convert to the nearest double); non-finite values, which a JSON
  ///                   value built in C++ can hold, are then judged by validate();
  ///   bool fields     true or false;  string fields  a JSON string.
  static GatedLinearAttentionConfig from_json(const nlohmann::json& j) {
    const std::string fn = "GatedLinearAttentionConfig::from_json";
    if (!j.is_object()) detail::fail(fn, "the config is JSON " + std::string(j.type_name()) + ", expected an object");
    // A model config (fla's GLAConfig) names two of these options differently: reading one here would silently
    // drop its attn_mode and hidden_act. gla::GLAConfig (gla/models/gla_model_config.hpp) maps them.
    for (const char* model_key : {"attn_mode", "hidden_act"})
      if (j.contains(model_key))
        detail::fail(fn, std::string("the key '") + model_key +
                             "' belongs to a model config (fla's GLAConfig), whose names differ from the layer's "
                             "(attn_mode -> mode, hidden_act -> gate_fn), expected a layer config; read a model "
                             "config with gla::GLAConfig::from_json and take its layer_config()");
    GatedLinearAttentionConfig c;
    auto get = [&](const char* key, auto& field) { detail::config_json::read_field(fn, j, key, field); };
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
  static std::string num(double v) { return detail::config_json::num(v); }

  /// int(hidden_size · expand) as Python computes it (a double product, truncated), or gla::Error when the
  /// product is NaN or outside int64 (where the conversion would be undefined behaviour).
  std::int64_t truncated_dim(const char* name, const char* field, double expand) const {
    const double p = static_cast<double>(hidden_size) * expand;
    if (!(p >= -9223372036854775808.0 && p < 9223372036854775808.0))
      detail::fail(std::string("GatedLinearAttentionConfig::") + name,
                   std::string("int(hidden_size * ") + field + ") = int(" + std::to_string(hidden_size) + " * " +
                       num(expand) + ") = int(" + num(p) + "), expected a value that fits int64");
    return static_cast<std::int64_t>(p);
  }

  /// a / b, or gla::Error when b is not positive.
  static std::int64_t quotient(const char* name, const char* a_name, std::int64_t a, const char* b_name,
                               std::int64_t b) {
    if (b <= 0)
      detail::fail(std::string("GatedLinearAttentionConfig::") + name,
                   std::string(a_name) + " / " + b_name + " with " + b_name + " = " + std::to_string(b) +
                       ", expected " + b_name + " > 0");
    return a / b;
  }

  /// gla::Error unless hidden_size · expand (before truncation) is at most kMaxParameterElements.
  void dim_within_bound(const std::string& fn, const char* name, const char* field, double expand) const {
    const double p = static_cast<double>(hidden_size) * expand;
    if (!(p <= static_cast<double>(kMaxParameterElements)))
      detail::fail(fn, std::string(name) + " = int(hidden_size * " + field + ") = int(" + std::to_string(hidden_size) +
                           " * " + num(expand) + ") = int(" + num(p) + "), expected at most 2^40 = " +
                           std::to_string(kMaxParameterElements) + " (gla::kMaxParameterElements)");
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
