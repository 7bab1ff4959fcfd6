// SentencePieceTokenizer: a tiny SentencePiece model trained here from tests/data/tokenizer_corpus.txt (nothing is
// downloaded), text round trips, bos handling, and errors.

#include <gla/models/tokenizer.hpp>

#include "support/catch.hpp"
#include "support/checkpoint_dir.hpp"

#include <sentencepiece_trainer.h>

#include <string>
#include <vector>

namespace {

/// Trains (once per process) a unigram model with bos 1, eos 2, unk 0 and returns its path.
const std::string& trained_model() {
  static const gla::test::TempDir dir("tokenizer");
  static const std::string path = [] {
    const std::string prefix = dir.file("tiny");
    const auto status = sentencepiece::SentencePieceTrainer::Train(
        "--input=" GLA_TEST_DATA_DIR "/tokenizer_corpus.txt --model_prefix=" + prefix +
        " --vocab_size=200 --hard_vocab_limit=false --character_coverage=1.0 --model_type=unigram"
        " --bos_id=1 --eos_id=2 --unk_id=0 --pad_id=-1 --minloglevel=2");
    if (!status.ok()) FAIL("training failed: " << status.ToString());
    return prefix + ".model";
  }();
  return path;
}

}  // namespace

TEST_CASE("tokenizer trained at test time round-trips text") {
  const auto tok = gla::SentencePieceTokenizer::load(trained_model());
  CHECK(tok.vocab_size() > 50);
  CHECK(tok.vocab_size() <= 200);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  for (const std::string text : {"the state of a layer", "Greedy decoding takes the most likely token.",
                                 "The quick brown fox jumps over the lazy dog 42 times"}) {
    const std::vector<std::int64_t> ids = tok.encode(text);
    REQUIRE(!ids.empty());
    CHECK(ids.size() < text.size());  // pieces longer than one character
    for (const std::int64_t id : ids) {
      CHECK(id >= 3);  // no unk, bos or eos inside text
      CHECK(id < tok.vocab_size());
    }
    CHECK(tok.decode(ids) == text);
    const std::vector<std::int64_t> with_bos = tok.encode(text, true);
    REQUIRE(with_bos.size() == ids.size() + 1);
    CHECK(with_bos[0] == 1);
    CHECK(tok.decode(with_bos) == text);  // control tokens decode to nothing
  }
}

TEST_CASE("tokenizer errors") {
  const auto tok = gla::SentencePieceTokenizer::load(trained_model());
  CHECK_GLA_ERROR("gla::SentencePieceTokenizer::decode: ids[1] is " + std::to_string(tok.vocab_size()) +
                      ", expected a token id in [0, " + std::to_string(tok.vocab_size()) + ")",
                  tok.decode({3, tok.vocab_size()}));
  CHECK_GLA_ERROR("ids[0] is -1", tok.decode({-1}));
  CHECK_GLA_ERROR("gla::SentencePieceTokenizer::load: cannot load '/nonexistent/tokenizer.model'",
                  gla::SentencePieceTokenizer::load("/nonexistent/tokenizer.model"));
  const gla::test::TempDir dir("tokenizer_bad");
  gla::test::write_text(dir.file("tokenizer.model"), "not a model");
  CHECK_GLA_ERROR("cannot load '" + dir.file("tokenizer.model") + "'",
                  gla::SentencePieceTokenizer::load(dir.file("tokenizer.model")));
}
