// Generation with GLAForCausalLM: every decode step's logits equal a full forward's, a left-padded batch equals
// each row alone, seeded sampling (temperature, top-k, top-p), eos stops, and argument errors.

#include <gla/models/generation.hpp>

#include "support/catch.hpp"
#include "support/checkpoint_dir.hpp"
#include "support/test_utils.hpp"

#include <map>
#include <string>
#include <vector>

namespace {

using gla::Index;
using gla::Tensor;
using Model = gla::GLAForCausalLM<float>;
using Tokens = std::vector<std::int64_t>;

/// fla's tiny reference model (vocab 512, hidden 128, 2 layers, short conv).
const Model& tiny() {
  static const Model m = [] {
    Model x(gla::GLAConfig::from_json(gla::test::tiny_config()));
    x.load_state_dict(gla::test::tiny_weights());
    return x;
  }();
  return m;
}

Tokens prompt(std::size_t n, std::uint64_t salt) {
  auto rng = gla::test::rng(salt);
  Tokens t(n);
  for (auto& v : t) v = static_cast<std::int64_t>(3 + rng() % 500);  // no eos (2) in prompts
  return t;
}

Tensor<std::int64_t, 2> as_ids(const Tokens& t) {
  Tensor<std::int64_t, 2> ids(1, static_cast<Index>(t.size()));
  for (std::size_t i = 0; i < t.size(); ++i) ids(0, static_cast<Index>(i)) = t[i];
  return ids;
}

gla::GenerationConfig greedy(std::int64_t n) {
  gla::GenerationConfig g;
  g.max_new_tokens = n;
  g.eos_token_id = Tokens{};  // never stop early
  g.output_scores = true;
  return g;
}

}  // namespace

TEST_CASE("generation steps equal a full forward") {
  // A prompt longer than 64 tokens (chunk kernel in the prefill), then recurrent decode steps.
  for (const std::size_t len : {std::size_t{70}, std::size_t{9}}) {
    const Tokens p = prompt(len, len);
    const auto out = gla::generate(tiny(), {p}, greedy(12));
    REQUIRE(out.tokens[0].size() == 12);
    REQUIRE(out.scores.size() == 12);
    Tokens all = p;
    all.insert(all.end(), out.tokens[0].begin(), out.tokens[0].end() - 1);
    const Tensor<float, 3> full = tiny().forward(as_ids(all));
    for (std::size_t s = 0; s < 12; ++s) {
      const auto d = gla::test::compare_ptr(&out.scores[s](0, 0), &full(0, static_cast<Index>(len - 1 + s), 0), 512);
      INFO("prompt " << len << " step " << s << ": " << d.str());
      CHECK(gla::test::ok(d, 1e-5));
      // Greedy picks the argmax of the full forward's logits too.
      Index best = 0;
      for (Index v = 1; v < 512; ++v)
        if (full(0, static_cast<Index>(len - 1 + s), v) > full(0, static_cast<Index>(len - 1 + s), best)) best = v;
      CHECK(out.tokens[0][s] == best);
    }
    CHECK(out.prefill_tokens == static_cast<std::int64_t>(len));
    CHECK(out.decode_tokens == 11);
  }
}

TEST_CASE("generation left-padded batch equals each row alone") {
  const std::vector<Tokens> prompts = {prompt(5, 1), prompt(70, 2), prompt(33, 3)};
  std::vector<std::pair<std::size_t, std::int64_t>> streamed;
  const auto batch =
      gla::generate(tiny(), prompts, greedy(8), [&](std::size_t r, std::int64_t t) { streamed.emplace_back(r, t); });
  CHECK(batch.prefill_tokens == 3 * 70);
  REQUIRE(streamed.size() == 24);
  for (std::size_t r = 0; r < 3; ++r) {
    const auto alone = gla::generate(tiny(), {prompts[r]}, greedy(8));
    CHECK(batch.tokens[r] == alone.tokens[0]);
    for (std::size_t s = 0; s < 8; ++s) {
      const auto d = gla::test::compare_ptr(&batch.scores[s](static_cast<Index>(r), 0), &alone.scores[s](0, 0), 512);
      INFO("row " << r << " step " << s << ": " << d.str());
      CHECK(gla::test::ok(d, 1e-5));
      CHECK(streamed[s * 3 + r] == std::make_pair(r, batch.tokens[r][s]));
    }
  }
}

TEST_CASE("generation stops at eos") {
  const Tokens p = prompt(20, 4);
  const auto free_run = gla::generate(tiny(), {p, prompt(6, 5)}, greedy(10));
  gla::GenerationConfig g = greedy(10);
  g.eos_token_id = Tokens{free_run.tokens[0][3]};
  const auto out = gla::generate(tiny(), {p, prompt(6, 5)}, g);
  // Row 0 stops at its 4th token (kept); row 1 runs on unless it meets the same id.
  const auto first = std::find(free_run.tokens[0].begin(), free_run.tokens[0].end(), free_run.tokens[0][3]);
  const std::size_t n0 = static_cast<std::size_t>(first - free_run.tokens[0].begin()) + 1;
  CHECK(out.tokens[0] == Tokens(free_run.tokens[0].begin(), free_run.tokens[0].begin() + static_cast<long>(n0)));
  CHECK(out.stopped_at_eos[0]);
  const auto& r1 = free_run.tokens[1];
  const auto hit = std::find(r1.begin(), r1.end(), free_run.tokens[0][3]);
  CHECK(out.tokens[1] == Tokens(r1.begin(), hit == r1.end() ? r1.end() : hit + 1));
  CHECK(out.stopped_at_eos[1] == (hit != r1.end()));
  // The config's eos (2) is the default; max_new_tokens 0 only prefills.
  gla::GenerationConfig none;
  none.max_new_tokens = 0;
  const auto empty = gla::generate(tiny(), {p}, none);
  CHECK(empty.tokens[0].empty());
  CHECK(empty.prefill_tokens == 20);
}

TEST_CASE("generation sampling is seeded") {
  const Tokens p = prompt(12, 6);
  gla::GenerationConfig g = greedy(16);
  g.do_sample = true;
  g.temperature = 1.5;
  g.seed = 42;
  const auto a = gla::generate(tiny(), {p, p}, g);
  const auto b = gla::generate(tiny(), {p, p}, g);
  CHECK(a.tokens == b.tokens);
  CHECK(a.tokens[0] != a.tokens[1]);  // one generator for the batch: rows draw different numbers
  g.seed = 43;
  CHECK(gla::generate(tiny(), {p}, g).tokens[0] != a.tokens[0]);
  // top_k = 1 and a tiny top_p are greedy.
  const auto gr = gla::generate(tiny(), {p}, greedy(16));
  g.top_k = 1;
  CHECK(gla::generate(tiny(), {p}, g).tokens[0] == gr.tokens[0]);
  g.top_k = 0;
  g.top_p = 1e-9;
  CHECK(gla::generate(tiny(), {p}, g).tokens[0] == gr.tokens[0]);
}

TEST_CASE("generation sampler distributions") {
  // logits log(0.5), log(0.3), log(0.15), log(0.05) in shuffled order: ids 2, 0, 3, 1.
  const float logits[4] = {std::log(0.3f), std::log(0.05f), std::log(0.5f), std::log(0.15f)};
  auto freq = [&](gla::GenerationConfig g) {
    g.do_sample = true;
    std::mt19937_64 gen(9);
    std::map<std::int64_t, int> n;
    for (int i = 0; i < 20000; ++i) ++n[gla::next_token(logits, 4, g, gen)];
    return n;
  };
  gla::GenerationConfig g;
  auto n = freq(g);
  CHECK(std::abs(n[2] / 20000.0 - 0.5) < 0.02);
  CHECK(std::abs(n[0] / 20000.0 - 0.3) < 0.02);
  CHECK(std::abs(n[1] / 20000.0 - 0.05) < 0.01);
  g.top_k = 2;  // {2: 0.5, 0: 0.3} renormalised
  n = freq(g);
  CHECK(n.size() == 2);
  CHECK(std::abs(n[2] / 20000.0 - 0.625) < 0.02);
  g.top_k = 0;
  g.top_p = 0.85;  // 0.5 + 0.3 < 0.85 <= 0.95: ids 2, 0, 3
  n = freq(g);
  CHECK(n.size() == 3);
  CHECK(n.count(1) == 0);
  g.top_p = 1;
  g.temperature = 1e-3;  // nearly greedy
  n = freq(g);
  CHECK(n[2] == 20000);
  g.temperature = 1e6;  // nearly uniform
  n = freq(g);
  CHECK(std::abs(n[1] / 20000.0 - 0.25) < 0.02);
  gla::GenerationConfig gr;
  std::mt19937_64 gen(1);
  CHECK(gla::next_token(logits, 4, gr, gen) == 2);
}

TEST_CASE("generation argument errors") {
  const Tokens p = prompt(4, 7);
  gla::GenerationConfig g;
  CHECK_GLA_ERROR("gla::generate: prompts is empty", gla::generate(tiny(), {}, g));
  CHECK_GLA_ERROR("gla::generate: prompts[1] is empty, expected at least one token", gla::generate(tiny(), {p, {}}, g));
  CHECK_GLA_ERROR("gla::generate: prompts[0][1] is 512, expected a token id in [0, vocab_size = 512)",
                  gla::generate(tiny(), {{1, 512}}, g));
  g.pad_token_id = -1;
  CHECK_GLA_ERROR("gla::generate: pad_token_id is -1", gla::generate(tiny(), {p}, g));
  g = {};
  g.max_new_tokens = -1;
  CHECK_GLA_ERROR("gla::GenerationConfig: max_new_tokens is -1, expected >= 0", gla::generate(tiny(), {p}, g));
  g = {};
  g.do_sample = true;
  g.temperature = 0;
  CHECK_GLA_ERROR("gla::GenerationConfig: temperature is 0, expected a finite number > 0 when sampling",
                  gla::generate(tiny(), {p}, g));
  g = {};
  g.top_k = -2;
  CHECK_GLA_ERROR("top_k is -2, expected >= 0", gla::generate(tiny(), {p}, g));
  g = {};
  g.top_p = 0;
  CHECK_GLA_ERROR("top_p is 0, expected a number in (0, 1]", gla::generate(tiny(), {p}, g));
  g.top_p = 1.5;
  CHECK_GLA_ERROR("top_p is 1.5", gla::generate(tiny(), {p}, g));
}
