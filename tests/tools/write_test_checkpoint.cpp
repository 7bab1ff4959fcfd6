// Writes the checkpoint directories gla-generate's ctest entries run on:
//   write_test_checkpoint fla DIR            fla's tiny reference GLAForCausalLM (tests/data/fla/model.safetensors)
//                                            as config.json + model.safetensors;
//   write_test_checkpoint text DIR CORPUS    (SentencePiece builds) a tokenizer.model trained on the text file
//                                            CORPUS and a small random model with the tokenizer's vocabulary.

#include <gla/io/safetensors.hpp>
#include <gla/models/gla_model.hpp>
#if GLA_WITH_SENTENCEPIECE
#include <gla/models/tokenizer.hpp>

#include <sentencepiece_trainer.h>
#endif

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>

#ifndef GLA_TEST_DATA_DIR
#error "GLA_TEST_DATA_DIR must be defined"
#endif

namespace {

void write_config(const std::string& dir, const nlohmann::json& cfg) {
  std::ofstream(dir + "/config.json") << cfg.dump(2);
}

int write_fla(const std::string& dir) {
  const auto file = gla::io::SafeTensors::load(std::string(GLA_TEST_DATA_DIR) + "/fla/model.safetensors");
  const nlohmann::json meta = nlohmann::json::parse(file.metadata().at("model"));
  write_config(dir, meta.at("config"));
  gla::io::save_safetensors(dir + "/model.safetensors", gla::io::StateDict::from_safetensors(file, "model.weight."),
                            {{"format", "pt"}});
  return 0;
}

#if GLA_WITH_SENTENCEPIECE
int write_text(const std::string& dir, const std::string& corpus) {
  const std::string prefix = dir + "/tokenizer";
  const auto status = sentencepiece::SentencePieceTrainer::Train(
      "--input=" + corpus + " --model_prefix=" + prefix +
      " --vocab_size=200 --hard_vocab_limit=false --character_coverage=1.0 --model_type=unigram"
      " --bos_id=1 --eos_id=2 --unk_id=0 --pad_id=-1 --minloglevel=2");
  if (!status.ok()) {
    std::cerr << "write_test_checkpoint: training the tokenizer failed: " << status.ToString() << "\n";
    return 1;
  }
  const auto tok = gla::SentencePieceTokenizer::load(prefix + ".model");
  gla::GLAConfig cfg = gla::GLAConfig::preset("tiny");
  cfg.vocab_size = tok.vocab_size();
  cfg.hidden_size = 64;
  gla::GLAForCausalLM<float> m(cfg);
  m.init_random(1);
  write_config(dir, m.config().to_json());
  gla::io::save_safetensors(dir + "/model.safetensors", m.state_dict(), {{"format", "pt"}});
  return 0;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string what = argc > 1 ? argv[1] : "";
    if (argc >= 3) std::filesystem::create_directories(argv[2]);
    if (what == "fla" && argc == 3) return write_fla(argv[2]);
#if GLA_WITH_SENTENCEPIECE
    if (what == "text" && argc == 4) return write_text(argv[2], argv[3]);
#endif
    std::cerr << "usage: write_test_checkpoint fla DIR | text DIR CORPUS\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "write_test_checkpoint: " << e.what() << "\n";
    return 1;
  }
}
