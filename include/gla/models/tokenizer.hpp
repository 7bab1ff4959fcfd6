#pragma once
/// gla/models/tokenizer.hpp: SentencePieceTokenizer, a thin wrapper over SentencePiece's processor for the
/// tokenizer.model that fla's checkpoints ship (Llama-style: bos added in front of a prompt, no eos).
///
/// Optional: it needs SentencePiece's headers and its library (Debian: libsentencepiece-dev; link
/// -lsentencepiece, or gla::sentencepiece in this project's CMake build, which GLA_WITH_SENTENCEPIECE enables).
/// Nothing else in the library uses it: without it, generation works on token ids.

#if !__has_include(<sentencepiece_processor.h>)
#error "gla/models/tokenizer.hpp needs SentencePiece (<sentencepiece_processor.h>; Debian/Ubuntu: apt-get install libsentencepiece-dev); without it, generate from token ids"
#endif

#include <gla/core.hpp>

#include <sentencepiece_processor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace gla {

/// A loaded SentencePiece model: text ↔ token ids.
class SentencePieceTokenizer {
 public:
  /// Loads a tokenizer.model; gla::Error naming the path and SentencePiece's message when it cannot.
  static SentencePieceTokenizer load(const std::string& path) {
    SentencePieceTokenizer t;
    t.sp_ = std::make_shared<sentencepiece::SentencePieceProcessor>();
    const auto status = t.sp_->Load(path);
    if (!status.ok())
      detail::fail("gla::SentencePieceTokenizer::load", "cannot load '" + path + "': " + status.ToString());
    return t;
  }

  /// Number of pieces (token ids are 0 .. vocab_size() - 1).
  std::int64_t vocab_size() const { return sp_->GetPieceSize(); }
  /// The model's bos / eos ids (-1 when it has none).
  std::int64_t bos_id() const { return sp_->bos_id(); }
  std::int64_t eos_id() const { return sp_->eos_id(); }

  /// Token ids of text; with add_bos, bos_id() first (when the model has one).
  std::vector<std::int64_t> encode(const std::string& text, bool add_bos = false) const {
    std::vector<int> ids;
    const auto status = sp_->Encode(text, &ids);
    if (!status.ok()) detail::fail("gla::SentencePieceTokenizer::encode", status.ToString());
    std::vector<std::int64_t> out;
    if (add_bos && sp_->bos_id() >= 0) out.push_back(sp_->bos_id());
    out.insert(out.end(), ids.begin(), ids.end());
    return out;
  }

  /// The text of token ids (control tokens such as bos/eos decode to nothing); gla::Error naming the first id
  /// outside [0, vocab_size()).
  std::string decode(const std::vector<std::int64_t>& ids) const {
    std::vector<int> v;
    v.reserve(ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] < 0 || ids[i] >= vocab_size())
        detail::fail("gla::SentencePieceTokenizer::decode", "ids[" + std::to_string(i) + "] is " +
                                                                std::to_string(ids[i]) + ", expected a token id in [0, " +
                                                                std::to_string(vocab_size()) + ")");
      v.push_back(static_cast<int>(ids[i]));
    }
    std::string text;
    const auto status = sp_->Decode(v, &text);
    if (!status.ok()) detail::fail("gla::SentencePieceTokenizer::decode", status.ToString());
    return text;
  }

 private:
  SentencePieceTokenizer() = default;
  std::shared_ptr<sentencepiece::SentencePieceProcessor> sp_;
};

}  // namespace gla
