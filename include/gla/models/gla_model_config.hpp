#pragma once
/// gla/models/gla_model_config.hpp: GLAConfig, fla's model config (fla/models/gla/configuration_gla.py) with every
/// field and fla's defaults, read from a checkpoint's config.json, checked, and mapped onto the layer's
/// GatedLinearAttentionConfig; plus the published fla shapes (340M, 1B, 7B) as presets.

#include <gla/core.hpp>
#include <gla/io/load_helpers.hpp>
#include <gla/detail/param_limits.hpp>
#include <gla/layers/gla_config.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace gla {

/// fla's GLAConfig (model_type "gla"): the model's shape and options, with fla's defaults. Keys of a config.json
/// that are not fields here are kept in `extra` and listed by unknown_keys(); they never change the math (fla
/// ignores them too). validate() applies fla's checks and the limits of this library as gla::Error.
///
/// The layers of a model take layer_config(i): the model's names map onto the layer's as in fla's GLABlock
/// (attn_mode → mode, hidden_act → gate_fn, norm_eps → norm_eps, ...); the layer options fla's model does not
/// expose keep the layer's defaults (gate_logit_normalizer 16, gate_low_rank_dim 16, conv_bias false).
struct GLAConfig {
  std::int64_t hidden_size = 2048;
  double expand_k = 0.5;
  double expand_v = 1.0;
  /// GatedMLP's ratio; unset (JSON null) means 4, as fla. A number: fla computes the MLP size in floating point.
  std::optional<double> hidden_ratio = 4.0;
  /// Unset: 256·ceil(int(hidden_size·hidden_ratio·2/3) / 256) (mlp_intermediate_size()).
  std::optional<std::int64_t> intermediate_size;
  std::int64_t num_hidden_layers = 24;
  std::int64_t num_heads = 4;
  std::optional<std::int64_t> num_kv_heads;
  std::optional<std::string> feature_map;
  /// The layer's mode: "chunk", "fused_recurrent" or "fused_chunk".
  std::string attn_mode = "chunk";
  bool use_short_conv = false;
  std::int64_t conv_size = 4;
  bool use_output_gate = true;
  std::optional<double> clamp_min;
  /// The MLP's activation and the layer's gate_fn; fla's GatedMLP accepts only "swish".
  std::string hidden_act = "swish";
  /// Stored only: GLA has no position embeddings, and generation is not limited by it.
  std::int64_t max_position_embeddings = 2048;
  bool elementwise_affine = true;
  /// Every norm's eps: attn_norm, mlp_norm, the final norm and the layer's output norm (fla's model passes it to
  /// the layer, whose own default is 1e-5).
  double norm_eps = 1e-6;
  /// Stored but never read by fla's layer (it always uses gk and never gv); warnings() names a non-default value.
  bool use_gk = true;
  bool use_gv = false;
  /// Hybrid softmax-attention layers ({"layers": [...], "num_heads": ...}); null or no layers only (others are a
  /// gla::Error: not implemented here).
  nlohmann::json attn = nullptr;
  /// Whether forward() keeps caches by default in fla; the C++ API always takes use_cache explicitly.
  bool use_cache = true;
  std::optional<std::int64_t> pad_token_id;
  std::optional<std::int64_t> bos_token_id = 1;
  /// One id or a list (JSON int or array); empty = null.
  std::vector<std::int64_t> eos_token_id{2};
  /// lm_head shares model.embeddings.weight (and a checkpoint need not store lm_head.weight).
  bool tie_word_embeddings = false;
  /// The standard deviation of init_random() (fla's _init_weights).
  double initializer_range = 0.02;
  /// fuse_norm: fla's fused RMSNorm (with the residual add) instead of nn.RMSNorm; the same math. It also selects
  /// the layer's fused output norm and gate (FusedRMSNormGated), which is the same math as well.
  bool fuse_norm = true;
  /// Kernel fusion and training-loss choices of fla; no effect on the forward.
  bool fuse_swiglu = true;
  bool fuse_cross_entropy = true;
  bool fuse_linear_cross_entropy = false;
  bool use_l2warp = false;
  std::int64_t vocab_size = 32000;
  /// fla's attention-residual mixing; only null is supported (a valid value is a gla::Error: not implemented).
  std::optional<std::int64_t> attnres_block_size;

  /// The keys of the JSON this config was read from that are not fields of fla's GLAConfig, with their values.
  nlohmann::json extra = nlohmann::json::object();

  /// Keys of `extra` that are neither GLAConfig fields nor the generic keys every transformers config carries
  /// (model_type, architectures, transformers_version, torch_dtype, id2label, ...), sorted.
  std::vector<std::string> unknown_keys() const {
    std::vector<std::string> out;
    for (auto it = extra.begin(); it != extra.end(); ++it)
      if (!is_generic_key(it.key())) out.push_back(it.key());
    std::sort(out.begin(), out.end());
    return out;
  }

  /// Human-readable notes on settings that are accepted but have no effect, as in fla: unknown keys, use_gk =
  /// false, use_gv = true. Empty for a plain fla config.
  std::vector<std::string> warnings() const {
    std::vector<std::string> w;
    for (const std::string& k : unknown_keys())
      w.push_back("config key '" + k + "' is not a field of fla's GLAConfig: kept in GLAConfig::extra, ignored (as fla "
                  "ignores it)");
    if (!use_gk) w.push_back("use_gk = false is ignored: fla's GLA layer always uses its gk gate");
    if (use_gv) w.push_back("use_gv = true is ignored: fla's GLA layer never uses a gv gate");
    return w;
  }

  /// GatedMLP's intermediate size: intermediate_size, else 256·ceil(int(hidden_size·hidden_ratio·2/3)/256) with
  /// hidden_ratio 4 when unset (1024 → 2816, 2048 → 5632, 128 → 512). gla::Error when it cannot be computed.
  std::int64_t mlp_intermediate_size() const {
    if (intermediate_size) return *intermediate_size;
    const double ratio = hidden_ratio ? *hidden_ratio : 4.0;
    const double p = static_cast<double>(hidden_size) * ratio * 2.0 / 3.0;  // Python: hidden * ratio * 2 / 3
    if (!(p >= 0 && p <= static_cast<double>(kMaxParameterElements)))
      detail::fail("GLAConfig::mlp_intermediate_size",
                   "int(hidden_size * hidden_ratio * 2 / 3) = int(" + std::to_string(hidden_size) + " * " +
                       detail::config_json::num(ratio) + " * 2 / 3) = int(" + detail::config_json::num(p) +
                       "), expected a number in [0, 2^40]");
    const auto n = static_cast<std::int64_t>(p);
    return 256 * ((n + 255) / 256);
  }

  /// The GatedLinearAttentionConfig of layer layer_idx, as fla's GLABlock builds it: mode = attn_mode, gate_fn =
  /// hidden_act, norm_eps = norm_eps, layer_idx, and hidden_size, expand_k, expand_v, num_heads, num_kv_heads,
  /// feature_map, use_short_conv, conv_size, use_output_gate, elementwise_affine, clamp_min, fuse_norm as they
  /// are; the rest keeps the layer's defaults. Not validated (validate() validates it).
  GatedLinearAttentionConfig layer_config(std::optional<std::int64_t> layer_idx = std::nullopt) const {
    GatedLinearAttentionConfig c;
    c.mode = attn_mode;
    c.hidden_size = hidden_size;
    c.expand_k = expand_k;
    c.expand_v = expand_v;
    c.num_heads = num_heads;
    c.num_kv_heads = num_kv_heads;
    c.feature_map = feature_map;
    c.use_short_conv = use_short_conv;
    c.conv_size = conv_size;
    c.use_output_gate = use_output_gate;
    c.gate_fn = hidden_act;
    c.elementwise_affine = elementwise_affine;
    c.norm_eps = norm_eps;
    c.clamp_min = clamp_min;
    c.fuse_norm = fuse_norm;
    c.layer_idx = layer_idx;
    return c;
  }

  /// Elements of all parameters of GLAForCausalLM (lm_head counted once when tied), saturated at INT64_MAX.
  std::int64_t parameter_count() const {
    using detail::sat_add;
    using detail::sat_mul;
    const std::int64_t layer = layer_config().parameter_count();
    const std::int64_t mlp = sat_mul(3, sat_mul(hidden_size, mlp_intermediate_size()));
    const std::int64_t block = sat_add(sat_add(layer, mlp), sat_mul(2, hidden_size));  // + attn_norm, mlp_norm
    const std::int64_t embed = sat_mul(vocab_size, hidden_size);
    std::int64_t n = sat_add(sat_mul(num_hidden_layers, block), sat_add(embed, hidden_size));  // + final norm
    if (!tie_word_embeddings) n = sat_add(n, embed);
    return n;
  }

  /// Throws gla::Error naming the field, expected vs actual, for the first invalid or unsupported setting:
  /// fla's own errors (fuse_cross_entropy with fuse_linear_cross_entropy, attnres_block_size not null/1/even,
  /// attn without layers or num_heads, hidden_act other than swish), the layer's (layer_config().validate()),
  /// sizes (vocab_size > 0, num_hidden_layers >= 0, every tensor within kMaxParameterElements), pad_token_id
  /// within the vocabulary, model_type "gla", and what this library does not implement (hybrid attention
  /// layers, attention-residual mixing).
  void validate() const {
    const std::string fn = "GLAConfig";
    using detail::config_json::num;
    if (const auto it = extra.find("model_type"); it != extra.end() && *it != "gla")
      detail::fail(fn, "model_type is " + detail::config_json::json_str(*it) + ", expected \"gla\"");
    if (hidden_act != "swish")
      detail::fail(fn, "hidden_act is '" + hidden_act +
                           "', expected 'swish' (fla's GatedMLP accepts no other; it is also the layers' gate_fn)");
    if (fuse_cross_entropy && fuse_linear_cross_entropy)
      detail::fail(fn, "fuse_cross_entropy and fuse_linear_cross_entropy are both true, expected at most one "
                       "(fla raises ValueError)");
    if (attnres_block_size) {
      const std::int64_t a = *attnres_block_size;
      if (!(a == 1 || (a >= 2 && a % 2 == 0)))
        detail::fail(fn, "attnres_block_size is " + std::to_string(a) + ", expected null, 1 or an even number >= 2");
      detail::fail(fn, "attnres_block_size is " + std::to_string(a) +
                           ", expected null: fla's attention-residual mixing is not implemented by this library");
    }
    if (!attn.is_null()) {
      if (!attn.is_object()) detail::fail(fn, "attn is JSON " + std::string(attn.type_name()) + ", expected an object");
      if (!attn.contains("layers"))
        detail::fail(fn, "attn has no 'layers', expected the layer indices of the hybrid attention layers");
      if (!attn.contains("num_heads"))
        detail::fail(fn, "attn has no 'num_heads', expected the head count of the hybrid attention layers");
      const auto& layers = attn["layers"];
      if (!layers.is_array() || !layers.empty())
        detail::fail(fn, "attn.layers is " + detail::config_json::json_str(layers) +
                             ", expected []: fla's hybrid softmax-attention layers are not implemented by this library");
    }
    if (vocab_size <= 0) detail::fail(fn, "vocab_size is " + std::to_string(vocab_size) + ", expected > 0");
    if (num_hidden_layers < 0)
      detail::fail(fn, "num_hidden_layers is " + std::to_string(num_hidden_layers) + ", expected >= 0");
    if (hidden_ratio && !(*hidden_ratio > 0 && std::isfinite(*hidden_ratio)))
      detail::fail(fn, "hidden_ratio is " + num(*hidden_ratio) + ", expected a finite number > 0 (or null)");
    if (intermediate_size && *intermediate_size <= 0)
      detail::fail(fn, "intermediate_size is " + std::to_string(*intermediate_size) + ", expected > 0 (or null)");
    if (!(initializer_range >= 0 && std::isfinite(initializer_range)))
      detail::fail(fn, "initializer_range is " + num(initializer_range) + ", expected a finite number >= 0");
    // The layers' options (mode, heads, sizes, feature_map, norm_eps, clamp_min): the layer's own checks.
    try {
      layer_config().validate();
    } catch (const Error& e) {
      detail::fail(fn, std::string("the layers' config: ") + e.what());
    }
    detail::check_parameter_elements(fn, "model.embeddings.weight (vocab_size * hidden_size = " +
                                             std::to_string(vocab_size) + " * " + std::to_string(hidden_size) + ")",
                                     detail::sat_mul(vocab_size, hidden_size), sizeof(double));
    const std::int64_t inter = mlp_intermediate_size();
    if (inter <= 0) detail::fail(fn, "the MLP's intermediate size is " + std::to_string(inter) + ", expected > 0");
    detail::check_parameter_elements(fn, "mlp.gate_proj.weight (intermediate_size * hidden_size = " +
                                             std::to_string(inter) + " * " + std::to_string(hidden_size) + ")",
                                     detail::sat_mul(inter, hidden_size), sizeof(double));
    if (pad_token_id && (*pad_token_id < -vocab_size || *pad_token_id >= vocab_size))
      detail::fail(fn, "pad_token_id is " + std::to_string(*pad_token_id) + ", expected a token id in [-vocab_size, "
                       "vocab_size) = [" + std::to_string(-vocab_size) + ", " + std::to_string(vocab_size) + ")");
  }

  /// The config from a config.json object with fla's names. Absent keys keep fla's defaults, null unsets an
  /// optional field (hidden_ratio null means 4, as fla), other keys are kept in `extra`. Values follow the rules
  /// of detail::config_json::read (integers exact, bools true/false, ...); eos_token_id is an integer, a list of
  /// integers or null; attn is null or an object. The result is validated. gla::Error names the key.
  static GLAConfig from_json(const nlohmann::json& j) {
    const std::string fn = "GLAConfig::from_json";
    if (!j.is_object()) detail::fail(fn, "the config is JSON " + std::string(j.type_name()) + ", expected an object");
    GLAConfig c;
    c.extra = nlohmann::json::object();
    auto get = [&](const char* key, auto& field) { detail::config_json::read_field(fn, j, key, field); };
    get("hidden_size", c.hidden_size);
    get("expand_k", c.expand_k);
    get("expand_v", c.expand_v);
    get("hidden_ratio", c.hidden_ratio);
    get("intermediate_size", c.intermediate_size);
    get("num_hidden_layers", c.num_hidden_layers);
    get("num_heads", c.num_heads);
    get("num_kv_heads", c.num_kv_heads);
    get("feature_map", c.feature_map);
    get("attn_mode", c.attn_mode);
    get("use_short_conv", c.use_short_conv);
    get("conv_size", c.conv_size);
    get("use_output_gate", c.use_output_gate);
    get("clamp_min", c.clamp_min);
    get("hidden_act", c.hidden_act);
    get("max_position_embeddings", c.max_position_embeddings);
    get("elementwise_affine", c.elementwise_affine);
    get("norm_eps", c.norm_eps);
    get("use_gk", c.use_gk);
    get("use_gv", c.use_gv);
    if (const auto it = j.find("attn"); it != j.end()) {
      if (!it->is_null() && !it->is_object())
        detail::fail(fn, "attn is JSON " + detail::config_json::json_str(*it) + ", expected an object or null");
      c.attn = *it;
    }
    get("use_cache", c.use_cache);
    get("pad_token_id", c.pad_token_id);
    get("bos_token_id", c.bos_token_id);
    if (const auto it = j.find("eos_token_id"); it != j.end()) {
      c.eos_token_id.clear();
      if (it->is_array()) {
        for (std::size_t i = 0; i < it->size(); ++i)
          c.eos_token_id.push_back(
              detail::config_json::read<std::int64_t>(fn, "eos_token_id[" + std::to_string(i) + "]", (*it)[i]));
      } else if (!it->is_null()) {
        c.eos_token_id.push_back(detail::config_json::read<std::int64_t>(fn, "eos_token_id", *it));
      }
    }
    get("tie_word_embeddings", c.tie_word_embeddings);
    get("initializer_range", c.initializer_range);
    get("fuse_norm", c.fuse_norm);
    get("fuse_swiglu", c.fuse_swiglu);
    get("fuse_cross_entropy", c.fuse_cross_entropy);
    get("fuse_linear_cross_entropy", c.fuse_linear_cross_entropy);
    get("use_l2warp", c.use_l2warp);
    get("vocab_size", c.vocab_size);
    get("attnres_block_size", c.attnres_block_size);
    for (auto it = j.begin(); it != j.end(); ++it)
      if (!is_field(it.key())) c.extra[it.key()] = it.value();
    c.validate();
    return c;
  }

  /// Reads and parses a config.json; gla::Error naming the path when it cannot be read or is not JSON.
  static GLAConfig from_file(const std::string& path) {
    const std::string fn = "GLAConfig::from_file";
    const nlohmann::json j = detail::read_json_file(fn, path);
    try {
      return from_json(j);
    } catch (const Error& e) {
      detail::fail(fn, "'" + path + "': " + e.what());
    }
  }

  /// Every field under fla's name (optional fields unset as null), then the keys of `extra`: a config.json that
  /// from_json() reads back to an equal config. model_type is "gla" unless `extra` says otherwise.
  nlohmann::json to_json() const {
    nlohmann::json j = nlohmann::json::object();
    auto opt = [](const auto& o) { return o ? nlohmann::json(*o) : nlohmann::json(nullptr); };
    j["hidden_size"] = hidden_size;
    j["expand_k"] = expand_k;
    j["expand_v"] = expand_v;
    j["hidden_ratio"] = opt(hidden_ratio);
    j["intermediate_size"] = opt(intermediate_size);
    j["num_hidden_layers"] = num_hidden_layers;
    j["num_heads"] = num_heads;
    j["num_kv_heads"] = opt(num_kv_heads);
    j["feature_map"] = opt(feature_map);
    j["attn_mode"] = attn_mode;
    j["use_short_conv"] = use_short_conv;
    j["conv_size"] = conv_size;
    j["use_output_gate"] = use_output_gate;
    j["clamp_min"] = opt(clamp_min);
    j["hidden_act"] = hidden_act;
    j["max_position_embeddings"] = max_position_embeddings;
    j["elementwise_affine"] = elementwise_affine;
    j["norm_eps"] = norm_eps;
    j["use_gk"] = use_gk;
    j["use_gv"] = use_gv;
    j["attn"] = attn;
    j["use_cache"] = use_cache;
    j["pad_token_id"] = opt(pad_token_id);
    j["bos_token_id"] = opt(bos_token_id);
    if (eos_token_id.empty())
      j["eos_token_id"] = nullptr;
    else if (eos_token_id.size() == 1)
      j["eos_token_id"] = eos_token_id[0];
    else
      j["eos_token_id"] = eos_token_id;
    j["tie_word_embeddings"] = tie_word_embeddings;
    j["initializer_range"] = initializer_range;
    j["fuse_norm"] = fuse_norm;
    j["fuse_swiglu"] = fuse_swiglu;
    j["fuse_cross_entropy"] = fuse_cross_entropy;
    j["fuse_linear_cross_entropy"] = fuse_linear_cross_entropy;
    j["use_l2warp"] = use_l2warp;
    j["vocab_size"] = vocab_size;
    j["attnres_block_size"] = opt(attnres_block_size);
    j["model_type"] = "gla";
    for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
    return j;
  }

  /// The shapes of fla's published GLA configs, for random-weight runs and benchmarks:
  ///   "340M"  hidden 1024, 24 layers, 4 heads, expand_k 0.5, expand_v 1, MLP 2816, tied embeddings;
  ///   "1B"    hidden 2048, 24 layers, 4 heads, expand_k 0.5, expand_v 1, MLP 5632;
  ///   "7B"    hidden 4096, 32 layers, 32 heads, 8 kv heads, expand_k 1, expand_v 1, MLP 14336, feature_map
  ///           relu, no output gate, norm_eps 1e-5;
  /// all with vocab 32000, bos 1, eos 2, attn_mode chunk, hidden_act swish, norm_eps 1e-6 unless stated. Also
  ///   "tiny"  hidden 128, 2 layers, 2 heads, short conv, vocab 512 (the shape of the fla reference model in
  ///           tests/data/fla/model.safetensors), for tests.
  /// gla::Error listing the names for any other.
  static GLAConfig preset(const std::string& name) {
    GLAConfig c;
    if (name == "340M") {
      c.hidden_size = 1024;
      c.num_hidden_layers = 24;
      c.tie_word_embeddings = true;
    } else if (name == "1B") {
      c.hidden_size = 2048;
      c.num_hidden_layers = 24;
    } else if (name == "7B") {
      c.hidden_size = 4096;
      c.num_hidden_layers = 32;
      c.num_heads = 32;
      c.num_kv_heads = 8;
      c.expand_k = 1;
      c.expand_v = 1;
      c.intermediate_size = 14336;
      c.feature_map = "relu";
      c.use_output_gate = false;
      c.norm_eps = 1e-5;
    } else if (name == "tiny") {
      c.hidden_size = 128;
      c.num_hidden_layers = 2;
      c.num_heads = 2;
      c.use_short_conv = true;
      c.vocab_size = 512;
    } else {
      detail::fail("GLAConfig::preset", "no preset named '" + name + "', expected one of " + preset_names());
    }
    c.validate();
    return c;
  }

  /// The preset names, comma-separated.
  static std::string preset_names() { return "340M, 1B, 7B, tiny"; }

  /// Whether a key is a field of fla's GLAConfig.
  static bool is_field(const std::string& k) {
    static const char* const kFields[] = {
        "hidden_size",       "expand_k",          "expand_v",           "hidden_ratio",
        "intermediate_size", "num_hidden_layers", "num_heads",          "num_kv_heads",
        "feature_map",       "attn_mode",         "use_short_conv",     "conv_size",
        "use_output_gate",   "clamp_min",         "hidden_act",         "max_position_embeddings",
        "elementwise_affine", "norm_eps",         "use_gk",             "use_gv",
        "attn",              "use_cache",         "pad_token_id",       "bos_token_id",
        "eos_token_id",      "tie_word_embeddings", "initializer_range", "fuse_norm",
        "fuse_swiglu",       "fuse_cross_entropy", "fuse_linear_cross_entropy", "use_l2warp",
        "vocab_size",        "attnres_block_size"};
    for (const char* f : kFields)
      if (k == f) return true;
    return false;
  }

  /// Whether a key is one of the generic keys of every transformers config (PretrainedConfig's own attributes
  /// and what save_pretrained() adds), which do not describe the model's math.
  static bool is_generic_key(const std::string& k) {
    static const char* const kGeneric[] = {
        "model_type", "architectures", "transformers_version", "torch_dtype", "dtype", "_name_or_path",
        "id2label", "label2id", "num_labels", "output_hidden_states", "output_attentions", "return_dict",
        "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder", "add_cross_attention",
        "cross_attention_hidden_size", "tie_encoder_decoder", "problem_type", "prefix", "auto_map",
        "tokenizer_class", "sep_token_id", "decoder_start_token_id", "task_specific_params", "finetuning_task",
        "pruned_heads", "torchscript", "use_bfloat16", "tf_legacy_loss", "_attn_implementation",
        "_attn_implementation_autoset", "_commit_hash"};
    for (const char* g : kGeneric)
      if (k == g) return true;
    return false;
  }
};

}  // namespace gla
