// gla::GLAConfig: fla's model config with its defaults, read from config.json (unknown keys kept and listed,
// wrong types and contradictions as gla::Error naming the key), and its mapping onto the layer's config.

#include <gla/models/gla_model_config.hpp>

#include "support/catch.hpp"
#include "support/golden.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

namespace {

using gla::GLAConfig;
using json = nlohmann::json;

GLAConfig from(const std::string& text) { return GLAConfig::from_json(json::parse(text)); }

}  // namespace

TEST_CASE("model config defaults are fla's") {
  const GLAConfig c;
  CHECK(c.hidden_size == 2048);
  CHECK(c.expand_k == 0.5);
  CHECK(c.expand_v == 1.0);
  CHECK(c.hidden_ratio == 4.0);
  CHECK(!c.intermediate_size);
  CHECK(c.num_hidden_layers == 24);
  CHECK(c.num_heads == 4);
  CHECK(!c.num_kv_heads);
  CHECK(!c.feature_map);
  CHECK(c.attn_mode == "chunk");
  CHECK(!c.use_short_conv);
  CHECK(c.conv_size == 4);
  CHECK(c.use_output_gate);
  CHECK(!c.clamp_min);
  CHECK(c.hidden_act == "swish");
  CHECK(c.max_position_embeddings == 2048);
  CHECK(c.elementwise_affine);
  CHECK(c.norm_eps == 1e-6);
  CHECK(c.use_gk);
  CHECK(!c.use_gv);
  CHECK(c.attn.is_null());
  CHECK(c.use_cache);
  CHECK(!c.pad_token_id);
  CHECK(c.bos_token_id == 1);
  CHECK(c.eos_token_id == std::vector<std::int64_t>{2});
  CHECK(!c.tie_word_embeddings);
  CHECK(c.initializer_range == 0.02);
  CHECK(c.fuse_norm);
  CHECK(c.fuse_swiglu);
  CHECK(c.fuse_cross_entropy);
  CHECK(!c.fuse_linear_cross_entropy);
  CHECK(!c.use_l2warp);
  CHECK(c.vocab_size == 32000);
  CHECK(!c.attnres_block_size);
  CHECK_NOTHROW(c.validate());
  // An empty config.json is the default config.
  CHECK(GLAConfig::from_json(json::object()).to_json() == c.to_json());
}

TEST_CASE("model config MLP size rounding") {
  auto sized = [](std::int64_t hidden) {
    GLAConfig c;
    c.hidden_size = hidden;
    return c.mlp_intermediate_size();
  };
  CHECK(sized(1024) == 2816);
  CHECK(sized(2048) == 5632);
  CHECK(sized(128) == 512);  // int(341.33) = 341 -> 512
  CHECK(sized(96) == 256);
  GLAConfig c;
  c.hidden_ratio.reset();  // null means 4
  CHECK(c.mlp_intermediate_size() == 5632);
  c.hidden_ratio = 2.0;
  CHECK(c.mlp_intermediate_size() == 2816);  // int(2730.67) = 2730 -> 2816
  c.intermediate_size = 100;
  CHECK(c.mlp_intermediate_size() == 100);
  CHECK(from(R"({"hidden_size": 64, "hidden_ratio": null})").mlp_intermediate_size() == 256);
}

TEST_CASE("model config reads the golden config") {
  const gla::test::Golden g("model");
  const GLAConfig c = GLAConfig::from_json(g.meta("model")["config"]);
  CHECK(c.hidden_size == 128);
  CHECK(c.num_hidden_layers == 2);
  CHECK(c.num_heads == 2);
  CHECK(c.use_short_conv);
  CHECK(c.vocab_size == 512);
  CHECK(!c.fuse_cross_entropy);
  CHECK(c.eos_token_id == std::vector<std::int64_t>{2});
  CHECK(c.mlp_intermediate_size() == 512);
  // Its transformers keys are kept, and none of them is reported as unknown.
  CHECK(c.extra.contains("transformers_version"));
  CHECK(c.extra.contains("id2label"));
  CHECK(c.unknown_keys().empty());
  CHECK(c.warnings().empty());
}

TEST_CASE("model config keeps and lists unknown keys") {
  const GLAConfig c = from(R"({"hidden_size": 64, "rope_theta": 10000, "my_flag": true, "model_type": "gla"})");
  CHECK(c.unknown_keys() == std::vector<std::string>{"my_flag", "rope_theta"});
  CHECK(c.extra["rope_theta"] == 10000);
  CHECK(c.extra["model_type"] == "gla");
  REQUIRE(c.warnings().size() == 2);
  CHECK_THAT(c.warnings()[0], GLA_CONTAINS("my_flag"));
  // Written back, they are still there, and the config reads back equal.
  const json j = c.to_json();
  CHECK(j["rope_theta"] == 10000);
  CHECK(GLAConfig::from_json(j).to_json() == j);
  // use_gk / use_gv are stored, with a warning that fla ignores them.
  const GLAConfig g = from(R"({"use_gk": false, "use_gv": true})");
  CHECK(!g.use_gk);
  CHECK(g.use_gv);
  CHECK(g.warnings().size() == 2);
}

TEST_CASE("model config eos_token_id forms") {
  CHECK(from(R"({"eos_token_id": 7})").eos_token_id == std::vector<std::int64_t>{7});
  CHECK(from(R"({"eos_token_id": [2, 5]})").eos_token_id == std::vector<std::int64_t>{2, 5});
  CHECK(from(R"({"eos_token_id": null})").eos_token_id.empty());
  CHECK(from(R"({"eos_token_id": [2, 5]})").to_json()["eos_token_id"] == json::array({2, 5}));
  CHECK_GLA_ERROR("eos_token_id[1] is JSON \"x\", expected an integer", from(R"({"eos_token_id": [2, "x"]})"));
  CHECK_GLA_ERROR("eos_token_id is JSON 2.5, expected an integer", from(R"({"eos_token_id": 2.5})"));
}

TEST_CASE("model config wrong types name the key") {
  CHECK_GLA_ERROR("GLAConfig::from_json: hidden_size is JSON \"1024\", expected an integer",
                  from(R"({"hidden_size": "1024"})"));
  CHECK_GLA_ERROR("num_heads is JSON 2.5, expected an integer (it has a fractional part)",
                  from(R"({"num_heads": 2.5})"));
  CHECK_GLA_ERROR("use_short_conv is JSON 1, expected true or false", from(R"({"use_short_conv": 1})"));
  CHECK_GLA_ERROR("attn_mode is JSON 3, expected a string", from(R"({"attn_mode": 3})"));
  CHECK_GLA_ERROR("norm_eps is JSON \"1e-6\", expected a number", from(R"({"norm_eps": "1e-6"})"));
  CHECK_GLA_ERROR("tie_word_embeddings is JSON null, expected true or false",
                  from(R"({"tie_word_embeddings": null})"));
  CHECK_GLA_ERROR("attn is JSON [1], expected an object or null", from(R"({"attn": [1]})"));
  CHECK_GLA_ERROR("the config is JSON array, expected an object", GLAConfig::from_json(json::array()));
  // Integers written as floats are accepted when exact.
  CHECK(from(R"({"hidden_size": 256.0})").hidden_size == 256);
}

TEST_CASE("model config contradictions and unsupported settings") {
  CHECK_GLA_ERROR("fuse_cross_entropy and fuse_linear_cross_entropy are both true",
                  from(R"({"fuse_linear_cross_entropy": true})"));
  CHECK_NOTHROW(from(R"({"fuse_linear_cross_entropy": true, "fuse_cross_entropy": false})"));
  CHECK_GLA_ERROR("hidden_act is 'gelu', expected 'swish'", from(R"({"hidden_act": "gelu"})"));
  CHECK_GLA_ERROR("attnres_block_size is 3, expected null, 1 or an even number", from(R"({"attnres_block_size": 3})"));
  CHECK_GLA_ERROR("attnres_block_size is 4, expected null: fla's attention-residual mixing is not implemented",
                  from(R"({"attnres_block_size": 4})"));
  CHECK_GLA_ERROR("attn has no 'layers'", from(R"({"attn": {"num_heads": 4}})"));
  CHECK_GLA_ERROR("attn has no 'num_heads'", from(R"({"attn": {"layers": [1]}})"));
  CHECK_GLA_ERROR("attn.layers is [1], expected []", from(R"({"attn": {"layers": [1], "num_heads": 4}})"));
  CHECK_NOTHROW(from(R"({"attn": {"layers": [], "num_heads": 4}})"));
  CHECK_GLA_ERROR("model_type is \"llama\", expected \"gla\"", from(R"({"model_type": "llama"})"));
  CHECK_GLA_ERROR("vocab_size is 0, expected > 0", from(R"({"vocab_size": 0})"));
  CHECK_GLA_ERROR("num_hidden_layers is -1, expected >= 0", from(R"({"num_hidden_layers": -1})"));
  CHECK_GLA_ERROR("hidden_ratio is 0, expected a finite number > 0", from(R"({"hidden_ratio": 0})"));
  CHECK_GLA_ERROR("intermediate_size is -5, expected > 0", from(R"({"intermediate_size": -5})"));
  CHECK_GLA_ERROR("initializer_range is -1, expected a finite number >= 0", from(R"({"initializer_range": -1})"));
  CHECK_GLA_ERROR("pad_token_id is 512, expected a token id in [-vocab_size, vocab_size)",
                  from(R"({"vocab_size": 512, "pad_token_id": 512})"));
  // The layers' own checks, prefixed.
  CHECK_GLA_ERROR("the layers' config: GatedLinearAttentionConfig: mode is 'parallel'",
                  from(R"({"attn_mode": "parallel"})"));
  CHECK_GLA_ERROR("the layers' config: GatedLinearAttentionConfig: num_heads = 4 is not divisible by num_kv_heads = 3",
                  from(R"({"num_kv_heads": 3})"));
  CHECK_GLA_ERROR("feature_map: ", from(R"({"feature_map": "tanhh"})"));
  CHECK_GLA_ERROR("mlp.gate_proj.weight", from(R"({"intermediate_size": 1099511627776})"));
}

TEST_CASE("model config maps every layer option") {
  // Every option the model passes to its layers, set away from both the model's and the layer's defaults.
  const GLAConfig m = from(R"({"attn_mode": "fused_recurrent", "hidden_size": 96, "expand_k": 1.0, "expand_v": 2.0,
    "num_heads": 6, "num_kv_heads": 3, "feature_map": "relu", "use_short_conv": true, "conv_size": 3,
    "use_output_gate": false, "hidden_act": "swish", "elementwise_affine": false, "norm_eps": 1e-4,
    "clamp_min": -0.5, "fuse_norm": false})");
  const gla::GatedLinearAttentionConfig l = m.layer_config(5);
  CHECK(l.mode == "fused_recurrent");
  CHECK(l.hidden_size == 96);
  CHECK(l.expand_k == 1.0);
  CHECK(l.expand_v == 2.0);
  CHECK(l.num_heads == 6);
  CHECK(l.num_kv_heads == 3);
  CHECK(l.feature_map == "relu");
  CHECK(l.use_short_conv);
  CHECK(l.conv_size == 3);
  CHECK(!l.use_output_gate);
  CHECK(l.gate_fn == "swish");
  CHECK(!l.elementwise_affine);
  CHECK(l.norm_eps == 1e-4);
  CHECK(l.clamp_min == -0.5);
  CHECK(!l.fuse_norm);
  CHECK(l.layer_idx == 5);
  // What fla's model does not expose keeps the layer's defaults.
  CHECK(l.gate_logit_normalizer == 16);
  CHECK(l.gate_low_rank_dim == 16);
  CHECK(!l.conv_bias);
  CHECK_NOTHROW(l.validate());
  // The model's default norm_eps (1e-6) reaches the layer, whose own default is 1e-5.
  CHECK(GLAConfig().layer_config().norm_eps == 1e-6);
  CHECK(GLAConfig().layer_config().mode == "chunk");
  CHECK(!GLAConfig().layer_config().layer_idx);
}

TEST_CASE("layer config rejects model keys") {
  CHECK_GLA_ERROR("GatedLinearAttentionConfig::from_json: the key 'attn_mode' belongs to a model config",
                  gla::GatedLinearAttentionConfig::from_json(json::parse(R"({"attn_mode": "fused_recurrent"})")));
  CHECK_GLA_ERROR("the key 'hidden_act' belongs to a model config",
                  gla::GatedLinearAttentionConfig::from_json(json::parse(R"({"hidden_act": "swish"})")));
}

TEST_CASE("model config presets") {
  const GLAConfig c340 = GLAConfig::preset("340M");
  CHECK(c340.hidden_size == 1024);
  CHECK(c340.num_hidden_layers == 24);
  CHECK(c340.tie_word_embeddings);
  CHECK(c340.mlp_intermediate_size() == 2816);
  CHECK(c340.layer_config().head_k_dim() == 128);
  CHECK(c340.layer_config().head_v_dim() == 256);
  // fla's 340M model: about 340M parameters with the embedding counted once.
  CHECK(c340.parameter_count() > 300'000'000);
  CHECK(c340.parameter_count() < 400'000'000);
  const GLAConfig c1 = GLAConfig::preset("1B");
  CHECK(c1.mlp_intermediate_size() == 5632);
  CHECK(c1.layer_config().head_v_dim() == 512);
  const GLAConfig c7 = GLAConfig::preset("7B");
  CHECK(c7.layer_config().num_kv_groups() == 4);
  CHECK(c7.layer_config().head_k_dim() == 128);
  CHECK(c7.mlp_intermediate_size() == 14336);
  CHECK(GLAConfig::preset("tiny").mlp_intermediate_size() == 512);
  CHECK_GLA_ERROR("GLAConfig::preset: no preset named '13B', expected one of 340M, 1B, 7B, tiny",
                  GLAConfig::preset("13B"));
}

TEST_CASE("model config from_file errors") {
  namespace fs = std::filesystem;
  std::random_device rd;  // a directory of this process's own (test cases run as parallel processes)
  const fs::path dir = fs::temp_directory_path() / ("gla_test_model_config_" + std::to_string(rd()));
  fs::create_directories(dir);
  const std::string good = (dir / "config.json").string(), bad = (dir / "bad.json").string(),
                    wrong = (dir / "wrong.json").string();
  std::ofstream(good) << R"({"hidden_size": 64, "num_hidden_layers": 1, "vocab_size": 100})";
  std::ofstream(bad) << "{\"hidden_size\": ";
  std::ofstream(wrong) << R"({"hidden_size": "x"})";
  const GLAConfig c = GLAConfig::from_file(good);
  CHECK(c.hidden_size == 64);
  CHECK(c.vocab_size == 100);
  CHECK_GLA_ERROR("GLAConfig::from_file: cannot open '", GLAConfig::from_file((dir / "none.json").string()));
  CHECK_GLA_ERROR("bad.json' is not valid JSON", GLAConfig::from_file(bad));
  CHECK_GLA_ERROR("wrong.json': GLAConfig::from_json: hidden_size is JSON \"x\"", GLAConfig::from_file(wrong));
  fs::remove_all(dir);
}
