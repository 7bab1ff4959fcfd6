// GLAForCausalLM against fla: the tiny reference model's logits from checkpoint directories written here
// (single file, sharded, bf16 / f16 weights), tied embeddings, state_dict names, and every loading error path.

#include <gla/models/gla_model.hpp>

#include "support/catch.hpp"
#include "support/checkpoint_dir.hpp"
#include "support/golden.hpp"
#include "support/test_utils.hpp"

#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace {

using gla::GLAConfig;
using gla::Index;
using gla::Tensor;
using Model = gla::GLAForCausalLM<float>;
using gla::test::TempDir;
using json = nlohmann::json;

Tensor<std::int64_t, 2> golden_ids() { return gla::test::Golden("model").get<std::int64_t, 2>("model.input_ids"); }
Tensor<float, 3> golden_logits() { return gla::test::Golden("model").get<float, 3>("model.logits"); }

/// The same weights with every tensor stored as To (rounded once from the f32 values).
template <class To>
gla::io::StateDict converted(const gla::io::StateDict& d) {
  gla::io::StateDict out;
  for (const std::string& n : d.names()) {
    const auto& s = d.shape(n);
    if (s.size() == 1) out.set(n, Tensor<To, 1>(d.get<float, 1>(n).cast<To>()));
    if (s.size() == 2) out.set(n, Tensor<To, 2>(d.get<float, 2>(n).cast<To>()));
    if (s.size() == 3) out.set(n, Tensor<To, 3>(d.get<float, 3>(n).cast<To>()));
  }
  return out;
}

/// A tensor of the given shape filled with v.
template <class X, int R>
Tensor<X, R> full(const std::array<Index, R>& dims, X v) {
  Tensor<X, R> t(dims);
  t.setConstant(v);
  return t;
}

/// A small random model's config (fast to run in tests).
json small_config(bool tied) {
  return {{"hidden_size", 64}, {"num_hidden_layers", 2}, {"num_heads", 2}, {"vocab_size", 97},
          {"use_short_conv", true}, {"tie_word_embeddings", tied}, {"fuse_cross_entropy", false}};
}

}  // namespace

TEST_CASE("model golden logits from a checkpoint directory") {
  const TempDir dir("model_golden");
  gla::test::write_checkpoint(dir.path(), gla::test::tiny_config(), gla::test::tiny_weights());
  const Model m = Model::from_pretrained(dir.path());
  CHECK(m.num_layers() == 2);
  const auto ids = golden_ids();
  const Tensor<float, 3> logits = m.forward(ids);
  const Tensor<float, 3> ref = golden_logits();
  REQUIRE(logits.dimensions() == ref.dimensions());
  const auto d = gla::test::compare(logits, ref);
  INFO(d.str());
  CHECK(gla::test::ok(d, 2e-5));

  // In double, too.
  const gla::GLAForCausalLM<double> md = gla::GLAForCausalLM<double>::from_pretrained(dir.path());
  const auto dd = gla::test::compare(md.forward(ids), ref);
  INFO(dd.str());
  CHECK(gla::test::ok(dd, 2e-5));

  // logits_to_keep keeps the last positions, as fla's lm_head(h[:, -k:]).
  const Tensor<float, 3> last = m.forward(ids, std::nullopt, nullptr, false, 3);
  REQUIRE(last.dimension(1) == 3);
  CHECK(gla::test::compare(last, Tensor<float, 3>(logits.slice(std::array<Index, 3>{0, 93, 0},
                                                               std::array<Index, 3>{2, 3, 512})))
            .max_abs == 0);
}

TEST_CASE("model sharded equals single file") {
  const TempDir one("model_one"), sharded("model_sharded");
  gla::test::write_checkpoint(one.path(), gla::test::tiny_config(), gla::test::tiny_weights());
  gla::test::write_checkpoint(sharded.path(), gla::test::tiny_config(), gla::test::tiny_weights(), 3);
  CHECK(gla::CheckpointTensors::weight_files(sharded.path()).size() == 3);
  const auto t = gla::CheckpointTensors::open(sharded.path());
  CHECK(t.mapped());
  CHECK(t.files().size() == 3);
  const auto ids = golden_ids();
  const auto a = Model::from_pretrained(one.path()).forward(ids);
  const auto b = Model::from_pretrained(sharded.path()).forward(ids);
  CHECK(gla::test::compare(a, b).max_abs == 0);
}

TEST_CASE("model bf16 and f16 weights") {
  const auto ids = golden_ids();
  const gla::io::StateDict w = gla::test::tiny_weights();
  auto run = [&](const gla::io::StateDict& weights, const std::string& name) {
    const TempDir dir(name);
    gla::test::write_checkpoint(dir.path(), gla::test::tiny_config(), weights, name == "model_bf16" ? 2 : 1);
    return Model::from_pretrained(dir.path()).forward(ids);
  };
  // bf16 weights give exactly the model whose f32 weights are those values.
  const auto bf16 = run(converted<Eigen::bfloat16>(w), "model_bf16");
  const auto rounded = run(converted<float>(converted<Eigen::bfloat16>(w)), "model_bf16_as_f32");
  CHECK(gla::test::compare(bf16, rounded).max_abs == 0);
  const auto f16 = run(converted<Eigen::half>(w), "model_f16");
  const auto f16_rounded = run(converted<float>(converted<Eigen::half>(w)), "model_f16_as_f32");
  CHECK(gla::test::compare(f16, f16_rounded).max_abs == 0);
  // And rounding the weights moves the logits by about bf16's precision, not more.
  const auto d = gla::test::compare(bf16, golden_logits());
  INFO(d.str());
  CHECK(d.rel_rms > 1e-5);
  CHECK(d.rel_rms < 5e-2);
}

TEST_CASE("model with attention weights held in bf16") {
  const auto ids = golden_ids();
  const TempDir dir("model_bf16_held");
  gla::test::write_checkpoint(dir.path(), gla::test::tiny_config(),
                              converted<Eigen::bfloat16>(gla::test::tiny_weights()));
  const Model f32 = Model::from_pretrained(dir.path());
  const Model held = Model::from_pretrained(dir.path(), gla::WeightPrecision::BF16);
  CHECK(held.weight_precision() == gla::WeightPrecision::BF16);
  CHECK(held.block(0).attn().weight_precision() == gla::WeightPrecision::BF16);
  CHECK(f32.block(0).attn().weight_precision() == gla::WeightPrecision::F32);
  // The weights are the same bf16 values; only the products differ (bf16 activations in oneDNN's prefill).
  const auto d = gla::test::compare(held.forward(ids), f32.forward(ids));
  INFO(d.str());
  CHECK(gla::test::ok(d, 5e-3));
  // Incremental decoding with bf16-held weights still equals its own full forward.
  const Index B = ids.dimension(0), T = ids.dimension(1);
  Tensor<std::int64_t, 2> head(B, T - 1), last(B, 1);
  for (Index b = 0; b < B; ++b) {
    for (Index t = 0; t + 1 < T; ++t) head(b, t) = ids(b, t);
    last(b, 0) = ids(b, T - 1);
  }
  auto cache = held.make_cache();
  held.forward(head, std::nullopt, &cache, true);
  const Tensor<float, 3> step = held.forward(last, std::nullopt, &cache, true);
  const Tensor<float, 3> full_last = held.forward(ids, std::nullopt, nullptr, false, 1);
  const auto ds = gla::test::compare(step, full_last);
  INFO(ds.str());
  CHECK(gla::test::ok(ds, 1e-2));  // prefill products round activations to bf16 (oneDNN), steps do not
  CHECK_THROWS_AS(gla::GLAForCausalLM<double>(GLAConfig::from_json(gla::test::tiny_config()), gla::WeightPrecision::BF16),
                  gla::Error);
}

TEST_CASE("model tied and untied lm_head") {
  for (const bool tied : {true, false}) {
    Model m(GLAConfig::from_json(small_config(tied)));
    m.init_random(7);
    const gla::io::StateDict sd = m.state_dict();
    CHECK(sd.contains("model.embeddings.weight"));
    CHECK(sd.contains("model.layers.1.attn.q_conv1d.weight"));
    CHECK(sd.contains("model.layers.0.mlp.down_proj.weight"));
    CHECK(sd.contains("model.layers.0.attn_norm.weight"));
    CHECK(sd.contains("model.layers.0.mlp_norm.weight"));
    CHECK(sd.contains("model.norm.weight"));
    CHECK(sd.contains("lm_head.weight") == !tied);
    CHECK(sd.size() == m.parameter_shapes().size());
    std::int64_t elements = 0;
    for (const auto& [n, shape] : m.parameter_shapes()) {
      std::int64_t e = 1;
      for (Index s : shape) e *= s;
      elements += e;
    }
    CHECK(elements == m.config().parameter_count());
    if (tied) CHECK(m.lm_head_weight() == m.embeddings());
    // Round trip through a directory gives the same logits.
    const TempDir dir(tied ? "model_tied" : "model_untied");
    gla::test::write_checkpoint(dir.path(), m.config().to_json(), sd);
    const Model back = Model::from_pretrained(dir.path());
    Tensor<std::int64_t, 2> ids(1, 5);
    ids.setValues({{1, 5, 9, 96, 0}});
    CHECK(gla::test::compare(m.forward(ids), back.forward(ids)).max_abs == 0);
  }
  // A tied model accepts a stored lm_head.weight (transformers writes it sometimes) and ignores it.
  Model m(GLAConfig::from_json(small_config(true)));
  gla::io::StateDict sd = m.state_dict();
  sd.set("lm_head.weight", full<float, 2>({97, 64}, 5.f));
  CHECK_NOTHROW(m.load_state_dict(sd));
}

TEST_CASE("model MLP and block structure") {
  // One layer with the attention's output projection zeroed: the block is x + MLP(mlp_norm(x)), so the logits
  // follow from the embeddings, the norms and the MLP alone.
  json cfg = small_config(false);
  cfg["num_hidden_layers"] = 1;
  cfg["intermediate_size"] = 40;
  Model m(GLAConfig::from_json(cfg));
  m.init_random(3);
  gla::io::StateDict sd = m.state_dict();
  sd.set("model.layers.0.attn.o_proj.weight", full<float, 2>({64, 64}, 0));
  sd.set("model.layers.0.mlp_norm.weight", full<float, 1>({64}, 1.5f));
  m.load_state_dict(sd);
  CHECK(m.block(0).mlp().intermediate_size() == 40);
  Tensor<std::int64_t, 2> ids(1, 2);
  ids.setValues({{4, 11}});
  const Tensor<float, 3> logits = m.forward(ids);
  const auto E = sd.get<double, 2>("model.embeddings.weight");
  const auto Wg = sd.get<double, 2>("model.layers.0.mlp.gate_proj.weight");
  const auto Wu = sd.get<double, 2>("model.layers.0.mlp.up_proj.weight");
  const auto Wd = sd.get<double, 2>("model.layers.0.mlp.down_proj.weight");
  const auto Wl = sd.get<double, 2>("lm_head.weight");
  auto rms = [](std::vector<double> x, double w) {
    double s = 0;
    for (double v : x) s += v * v;
    const double r = 1.0 / std::sqrt(s / static_cast<double>(x.size()) + 1e-6);
    for (double& v : x) v *= r * w;
    return x;
  };
  for (Index t = 0; t < 2; ++t) {
    std::vector<double> x(64);
    for (Index j = 0; j < 64; ++j) x[j] = E(ids(0, t), j);
    const std::vector<double> n = rms(x, 1.5);
    std::vector<double> act(40);
    for (Index i = 0; i < 40; ++i) {
      double g = 0, u = 0;
      for (Index j = 0; j < 64; ++j) g += Wg(i, j) * n[j], u += Wu(i, j) * n[j];
      act[i] = g / (1 + std::exp(-g)) * u;
    }
    for (Index j = 0; j < 64; ++j)
      for (Index i = 0; i < 40; ++i) x[j] += Wd(j, i) * act[i];
    const std::vector<double> f = rms(x, 1.0);
    std::vector<double> ref(97);
    for (Index v = 0; v < 97; ++v)
      for (Index j = 0; j < 64; ++j) ref[v] += Wl(v, j) * f[j];
    const auto d = gla::test::compare_ptr(&logits(0, t, 0), ref.data(), 97);
    INFO(d.str());
    CHECK(gla::test::ok(d, 1e-5));
  }
}

TEST_CASE("model forward argument errors") {
  Model m(GLAConfig::from_json(small_config(false)));
  Tensor<std::int64_t, 2> ids(1, 3);
  ids.setValues({{1, 97, 2}});
  CHECK_GLA_ERROR("gla::GLAForCausalLM::forward: input_ids[0,1] is 97, expected a token id in [0, vocab_size = 97)",
                  m.forward(ids));
  ids(0, 1) = -1;
  CHECK_GLA_ERROR("input_ids[0,1] is -1", m.forward(ids));
  ids(0, 1) = 3;
  CHECK_GLA_ERROR("logits_to_keep is 4, expected 0 (all) .. T = 3", m.forward(ids, std::nullopt, nullptr, false, 4));
  CHECK_GLA_ERROR("use_cache is true without a cache", m.forward(ids, std::nullopt, nullptr, true));
  Model::Cache c;
  CHECK_GLA_ERROR("the cache has 0 layer caches, expected 2", m.forward(ids, std::nullopt, &c, true));
  Tensor<std::int64_t, 2> empty(1, 0);
  CHECK_GLA_ERROR("input_ids is [1,0], expected [B,T] with B, T > 0", m.forward(empty));
  GLAConfig bad = GLAConfig::from_json(small_config(false));
  bad.vocab_size = 0;
  CHECK_GLA_ERROR("GLAConfig: vocab_size is 0, expected > 0", Model(bad));
}

TEST_CASE("model loading errors") {
  const gla::io::StateDict w = gla::test::tiny_weights();
  const json cfg = gla::test::tiny_config();
  auto load_dir = [&](const TempDir& d) { return Model::from_pretrained(d.path()); };

  SECTION("no directory, no config, no weights") {
    CHECK_GLA_ERROR("gla::GLAForCausalLM::from_pretrained: dir is '/nonexistent/gla', expected a checkpoint directory",
                    Model::from_pretrained("/nonexistent/gla"));
    const TempDir d("load_no_config");
    CHECK_GLA_ERROR("has no config.json", load_dir(d));
    gla::test::write_text(d.file("config.json"), cfg.dump());
    CHECK_GLA_ERROR("gla::CheckpointTensors::open: '" + d.path() +
                        "' has neither model.safetensors nor model.safetensors.index.json",
                    load_dir(d));
    gla::test::write_text(d.file("config.json"), "{\"hidden_size\": true}");
    CHECK_GLA_ERROR("GLAConfig::from_json: hidden_size is JSON true, expected an integer", load_dir(d));
    CHECK_GLA_ERROR("gla::CheckpointTensors::open: dir is '/nonexistent/gla'",
                    gla::CheckpointTensors::open("/nonexistent/gla"));
  }
  SECTION("missing, unexpected and mis-shaped tensors") {
    const TempDir d("load_bad_tensors");
    gla::io::StateDict bad = w;
    bad.erase("model.layers.1.mlp.up_proj.weight");
    bad.erase("lm_head.weight");
    bad.set("model.layers.0.attn.extra.weight", full<float, 1>({3}, 0));
    bad.set("model.norm.weight", full<float, 1>({127}, 0));
    bad.set("model.layers.0.attn.q_proj.weight", full<float, 2>({128, 64}, 0));
    gla::test::write_checkpoint(d.path(), cfg, bad);
    const std::string msg = gla::test::error_message([&] { load_dir(d); });
    CHECK_THAT(msg, GLA_CONTAINS("gla::GLAForCausalLM::load: the tensors of " + d.path() + " do not fit the config"));
    CHECK_THAT(msg, GLA_CONTAINS("missing: lm_head.weight, model.layers.1.mlp.up_proj.weight;"));
    CHECK_THAT(msg, GLA_CONTAINS("unexpected: model.layers.0.attn.extra.weight;"));
    CHECK_THAT(msg, GLA_CONTAINS("model.layers.0.attn.q_proj.weight is [128,64], expected [64,128]"));
    CHECK_THAT(msg, GLA_CONTAINS("model.norm.weight is [127], expected [128]"));
  }
  SECTION("integer tensor") {
    const TempDir d("load_int_tensor");
    gla::io::StateDict bad = w;
    bad.set("model.norm.weight", full<std::int64_t, 1>({128}, 0));
    gla::test::write_checkpoint(d.path(), cfg, bad);
    CHECK_GLA_ERROR("model.norm.weight is I64, expected a floating dtype", load_dir(d));
  }
  SECTION("a config that does not match the weights") {
    const TempDir d("load_wrong_config");
    json c = cfg;
    c["num_hidden_layers"] = 3;
    gla::test::write_checkpoint(d.path(), c, w);
    CHECK_GLA_ERROR("missing: model.layers.2.attn.g_norm_swish_gate.weight", load_dir(d));
  }
  SECTION("corrupt weight file") {
    const TempDir d("load_corrupt");
    gla::test::write_checkpoint(d.path(), cfg, w);
    gla::test::write_text(d.file("model.safetensors"), "abc");
    CHECK_GLA_ERROR("the file has 3 bytes, expected at least 8", load_dir(d));
  }
  SECTION("index errors") {
    const TempDir d("load_index");
    gla::test::write_checkpoint(d.path(), cfg, w, 2);
    const std::string index_path = d.file("model.safetensors.index.json");
    std::ifstream in(index_path);
    const json index = json::parse(in);
    auto with_index = [&](const json& j) {
      gla::test::write_text(index_path, j.dump());
      return gla::test::error_message([&] { load_dir(d); });
    };
    CHECK_THAT(with_index(json::object()), GLA_CONTAINS("has no weight_map object"));
    CHECK_THAT(with_index(json{{"weight_map", json::object()}}), GLA_CONTAINS("weight_map is empty"));
    json j = index;
    j["weight_map"]["model.norm.weight"] = 3;
    CHECK_THAT(with_index(j), GLA_CONTAINS("weight_map['model.norm.weight'] is JSON 3, expected a file name"));
    j = index;
    j["weight_map"]["model.norm.weight"] = "../model-00001-of-00002.safetensors";
    CHECK_THAT(with_index(j), GLA_CONTAINS("expected a file name in the checkpoint directory"));
    j = index;
    j["weight_map"]["model.norm.weight"] = "model-00009-of-00009.safetensors";
    CHECK_THAT(with_index(j), GLA_CONTAINS("gla::io::SafeTensors::map: cannot open '"));
    j = index;
    const std::string other = j["weight_map"]["model.norm.weight"] == "model-00001-of-00002.safetensors"
                                  ? "model-00002-of-00002.safetensors"
                                  : "model-00001-of-00002.safetensors";
    j["weight_map"]["model.norm.weight"] = other;
    CHECK_THAT(with_index(j), GLA_CONTAINS("says tensor 'model.norm.weight' is in '" + other +
                                           "', but that file has no such tensor"));
    j = index;
    j["weight_map"].erase("model.norm.weight");
    CHECK_THAT(with_index(j), GLA_CONTAINS("tensor 'model.norm.weight' of '"));
    CHECK_THAT(with_index(j), GLA_CONTAINS("is not in model.safetensors.index.json's weight_map"));
    gla::test::write_text(index_path, "{");
    CHECK_THAT(gla::test::error_message([&] { load_dir(d); }), GLA_CONTAINS("is not valid JSON"));
    // The same tensor in two shards.
    const TempDir d2("load_dup");
    gla::test::write_checkpoint(d2.path(), cfg, w, 2);
    gla::io::StateDict s1 = gla::io::StateDict::load(d2.file("model-00001-of-00002.safetensors"));
    const gla::io::StateDict s2 = gla::io::StateDict::load(d2.file("model-00002-of-00002.safetensors"));
    const std::string dup = s2.names().front();
    s1.set_raw(dup, s2.dtype(dup), s2.shape(dup), s2.bytes(dup));
    gla::io::save_safetensors(d2.file("model-00001-of-00002.safetensors"), s1);
    CHECK_GLA_ERROR("tensor '" + dup + "' is in both '", Model::from_pretrained(d2.path()));
  }
  SECTION("a failed load leaves the model unchanged") {
    Model m(GLAConfig::from_json(cfg));
    m.load_state_dict(w);
    gla::io::StateDict bad = w;
    bad.erase("model.norm.weight");
    const auto ids = golden_ids();
    const auto before = m.forward(ids);
    CHECK_GLA_ERROR("missing: model.norm.weight", m.load_state_dict(bad));
    CHECK(gla::test::compare(m.forward(ids), before).max_abs == 0);
  }
}

TEST_CASE("safetensors map reads like load") {
  const TempDir d("st_map");
  gla::io::save_safetensors(d.file("w.safetensors"), gla::test::tiny_weights());
  const auto mapped = gla::io::SafeTensors::map(d.file("w.safetensors"));
  const auto loaded = gla::io::SafeTensors::load(d.file("w.safetensors"));
  CHECK(mapped.mapped());
  CHECK(!loaded.mapped());
  CHECK(mapped.file_size() == loaded.file_size());
  REQUIRE(mapped.names() == loaded.names());
  for (const std::string& n : mapped.names()) {
    const auto a = mapped.raw(n), b = loaded.raw(n);
    REQUIRE(a.size == b.size);
    CHECK(std::memcmp(a.data, b.data, a.size) == 0);
  }
  // Copies share the mapping, which outlives the original.
  std::optional<gla::io::SafeTensors> copy;
  {
    const auto tmp = gla::io::SafeTensors::map(d.file("w.safetensors"));
    copy.emplace(tmp);
  }
  CHECK(copy->get<float, 1>("model.norm.weight").size() == 128);
  // An empty file is read (and rejected) like load does; a directory and a missing file name the path.
  gla::test::write_text(d.file("empty.safetensors"), "");
  CHECK_GLA_ERROR("the file has 0 bytes, expected at least 8", gla::io::SafeTensors::map(d.file("empty.safetensors")));
  CHECK_GLA_ERROR("gla::io::SafeTensors::map: '" + d.path() + "' is not a regular file",
                  gla::io::SafeTensors::map(d.path()));
  CHECK_GLA_ERROR("gla::io::SafeTensors::map: cannot open '" + d.file("none") + "'",
                  gla::io::SafeTensors::map(d.file("none")));
}
