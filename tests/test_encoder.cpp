// make_encoder("gla", config): the GLA stack without embeddings and head equals GLAForCausalLM's hidden states,
// caches per layer_idx (incremental = full), and errors.

#include <gla/models/encoder.hpp>

#include "support/catch.hpp"
#include "support/checkpoint_dir.hpp"
#include "support/test_utils.hpp"

#include <string>

namespace {

using gla::Index;
using gla::Tensor;

}  // namespace

TEST_CASE("encoder equals the model without embeddings") {
  const gla::GLAConfig cfg = gla::GLAConfig::from_json(gla::test::tiny_config());
  gla::GLAForCausalLM<float> model(cfg);
  gla::io::StateDict w = gla::test::tiny_weights();
  model.load_state_dict(w);
  const auto enc = gla::make_encoder("gla", cfg);
  CHECK(enc->num_layers() == 2);
  CHECK(enc->hidden_size() == 128);
  w.erase("model.embeddings.weight");
  w.erase("lm_head.weight");
  enc->load_state_dict(w, "model.");

  auto ids = gla::test::Golden("model").get<std::int64_t, 2>("model.input_ids");
  const Index B = 2, T = 96, D = 128;
  Tensor<float, 3> x(B, T, D);
  for (Index b = 0; b < B; ++b)
    for (Index t = 0; t < T; ++t)
      for (Index j = 0; j < D; ++j) x(b, t, j) = model.embeddings()(ids(b, t), j);
  const Tensor<float, 3> y = enc->forward(x);
  const auto h = model.hidden_states(ids);
  CHECK(gla::test::compare_ptr(y.data(), h.data(), y.size()).max_abs == 0);

  // past_key_values with layer_idx: a prefix of 70 tokens, then steps of 1, 5 and 20 equal the full forward.
  auto cache = enc->make_cache();
  REQUIRE(cache.layers.size() == 2);
  CHECK(enc.get() != nullptr);
  Index done = 0;
  for (const Index n : {Index{70}, Index{1}, Index{5}, Index{20}}) {
    Tensor<float, 3> part = x.slice(std::array<Index, 3>{0, done, 0}, std::array<Index, 3>{B, n, D});
    const Tensor<float, 3> yp = enc->forward(part, std::nullopt, &cache, true);
    const Tensor<float, 3> ref = y.slice(std::array<Index, 3>{0, done, 0}, std::array<Index, 3>{B, n, D});
    const auto d = gla::test::compare(yp, ref);
    INFO("tokens " << done << ".." << done + n << ": " << d.str());
    CHECK(gla::test::ok(d, 1e-5));
    done += n;
  }
  CHECK(cache.seen_tokens == 96);
  // Each layer's cache belongs to its layer_idx: the layers' configs carry their index.
  CHECK(dynamic_cast<const gla::GLAEncoder<float>&>(*enc).block(1).attn().config().layer_idx == 1);
}

TEST_CASE("encoder errors") {
  const gla::GLAConfig cfg = gla::GLAConfig::preset("tiny");
  CHECK_GLA_ERROR("gla::make_encoder: name is 'mamba', expected one of: gla", gla::make_encoder("mamba", cfg));
  const auto enc = gla::make_encoder<double>("gla", cfg);
  Tensor<double, 3> x(1, 3, 64);
  x.setZero();
  CHECK_GLA_ERROR("gla::GLAEncoder::forward: hidden_states is [1,3,64], expected [B,T,hidden_size=128]", enc->forward(x));
  Tensor<double, 3> ok(1, 3, 128);
  ok.setConstant(0.1);
  CHECK_GLA_ERROR("use_cache is true without past_key_values", enc->forward(ok, std::nullopt, nullptr, true));
  gla::GLAModelCache<double> c;
  CHECK_GLA_ERROR("past_key_values has 0 layer caches, expected one per layer: 2", enc->forward(ok, std::nullopt, &c));
  gla::io::StateDict w = gla::test::tiny_weights();
  const std::string msg = gla::test::error_message([&] { enc->load_state_dict(w, "model."); });
  CHECK_THAT(msg, GLA_CONTAINS("gla::GLAEncoder::load_state_dict: the state dict does not fit the config"));
  CHECK_THAT(msg, GLA_CONTAINS("unexpected model.embeddings.weight"));
  w.erase("model.embeddings.weight");
  w.erase("model.norm.weight");
  CHECK_GLA_ERROR("missing model.norm.weight", enc->load_state_dict(w, "model."));
}
