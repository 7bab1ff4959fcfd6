// gla-generate: text generation on a CPU with an fla GLA checkpoint directory (config.json + model.safetensors or
// shards) or a randomly initialised model of a given shape.
//
//   gla-generate --model DIR --prompt "text" [options]        (needs tokenizer.model in DIR and SentencePiece)
//   gla-generate --model DIR --prompt-ids 1,2,3 [options]     (token ids in, token ids out)
//   gla-generate --random 340M --prompt-ids 1,2,3 [options]   (random weights: 340M, 1B, 7B, tiny or a config.json)
//
// The new text (or ids) is streamed to stdout as it is produced; prefill and decode speeds go to stderr at the end.

#include <gla/models/generation.hpp>
#include <gla/models/gla_model.hpp>
#if GLA_WITH_SENTENCEPIECE
#include <gla/models/tokenizer.hpp>
#endif

#include <Eigen/Core>

#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {

const char* const kUsage =
    "usage: gla-generate (--model DIR | --random 340M|1B|7B|tiny|CONFIG.json) (--prompt TEXT | --prompt-ids 1,2,3)\n"
    "                    [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--threads N]\n"
    "  --model DIR        an fla GLA checkpoint directory: config.json, model.safetensors (or shards with\n"
    "                     model.safetensors.index.json), and tokenizer.model for --prompt\n"
    "  --random SHAPE     random weights (fla's init, from --seed) of a preset or a config.json\n"
    "  --prompt TEXT      encoded with DIR/tokenizer.model (bos added); the output is text\n"
    "  --prompt-ids IDS   comma-separated token ids; the output is token ids\n"
    "  --max-new-tokens N tokens to generate at most (default 32); generation also stops at the config's eos\n"
    "  --temperature T    0 (default): greedy; > 0: sampling with this temperature\n"
    "  --top-k K          sampling: keep the K most likely tokens (default 0: all)\n"
    "  --top-p P          sampling: nucleus probability in (0, 1] (default 1)\n"
    "  --seed S           seed of the sampler and of --random's weights (default 0)\n"
    "  --threads N        threads for the kernels and matrix products (default: all)\n";

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::int64_t parse_int(const std::string& opt, const std::string& v) {
  std::size_t pos = 0;
  long long x = 0;
  try {
    x = std::stoll(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (v.empty() || pos != v.size()) throw UsageError(opt + " is '" + v + "', expected an integer");
  return x;
}

double parse_double(const std::string& opt, const std::string& v) {
  std::size_t pos = 0;
  double x = 0;
  try {
    x = std::stod(v, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (v.empty() || pos != v.size()) throw UsageError(opt + " is '" + v + "', expected a number");
  return x;
}

std::vector<std::int64_t> parse_ids(const std::string& v) {
  std::vector<std::int64_t> ids;
  std::stringstream ss(v);
  std::string item;
  while (std::getline(ss, item, ',')) ids.push_back(parse_int("--prompt-ids item", item));
  if (ids.empty()) throw UsageError("--prompt-ids is '" + v + "', expected comma-separated token ids");
  return ids;
}

struct Options {
  std::string model_dir, random, prompt;
  std::optional<std::vector<std::int64_t>> prompt_ids;
  bool have_prompt = false;
  std::int64_t max_new_tokens = 32, top_k = 0, threads = 0;
  double temperature = 0, top_p = 1;
  std::uint64_t seed = 0;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      std::exit(0);
    }
    if (i + 1 >= argc) throw UsageError("unknown option or missing value: '" + a + "'");
    const std::string v = argv[++i];
    if (a == "--model")
      o.model_dir = v;
    else if (a == "--random")
      o.random = v;
    else if (a == "--prompt")
      o.prompt = v, o.have_prompt = true;
    else if (a == "--prompt-ids")
      o.prompt_ids = parse_ids(v);
    else if (a == "--max-new-tokens")
      o.max_new_tokens = parse_int(a, v);
    else if (a == "--temperature")
      o.temperature = parse_double(a, v);
    else if (a == "--top-k")
      o.top_k = parse_int(a, v);
    else if (a == "--top-p")
      o.top_p = parse_double(a, v);
    else if (a == "--seed")
      o.seed = static_cast<std::uint64_t>(parse_int(a, v));
    else if (a == "--threads")
      o.threads = parse_int(a, v);
    else
      throw UsageError("unknown option '" + a + "'");
  }
  if (o.model_dir.empty() == o.random.empty()) throw UsageError("give exactly one of --model DIR and --random SHAPE");
  if (o.have_prompt == o.prompt_ids.has_value()) throw UsageError("give exactly one of --prompt and --prompt-ids");
  if (o.temperature < 0) throw UsageError("--temperature is " + std::to_string(o.temperature) + ", expected >= 0");
  if (o.threads < 0) throw UsageError("--threads is " + std::to_string(o.threads) + ", expected >= 1");
  return o;
}

int run(const Options& o) {
  namespace fs = std::filesystem;
  if (o.threads > 0) {
    gla::set_num_threads(static_cast<int>(o.threads));
    Eigen::setNbThreads(static_cast<int>(o.threads));
  }
  std::optional<gla::GLAForCausalLM<float>> model;
  if (!o.model_dir.empty()) {
    model.emplace(gla::GLAForCausalLM<float>::from_pretrained(o.model_dir));
  } else {
    const bool is_file = o.random.find(".json") != std::string::npos || fs::exists(o.random);
    const gla::GLAConfig cfg = is_file ? gla::GLAConfig::from_file(o.random) : gla::GLAConfig::preset(o.random);
    model.emplace(cfg);
    model->init_random(o.seed);
  }
  for (const std::string& w : model->config().warnings()) std::cerr << "gla-generate: warning: " << w << "\n";

  std::vector<std::int64_t> ids;
  [[maybe_unused]] bool text_mode = false;  // read only with SentencePiece
#if GLA_WITH_SENTENCEPIECE
  std::optional<gla::SentencePieceTokenizer> tok;
#endif
  if (o.have_prompt) {
    const std::string tpath = o.model_dir.empty() ? std::string() : (fs::path(o.model_dir) / "tokenizer.model").string();
#if GLA_WITH_SENTENCEPIECE
    if (tpath.empty() || !fs::exists(tpath))
      throw UsageError("--prompt needs a tokenizer.model in the --model directory; give --prompt-ids instead");
    tok.emplace(gla::SentencePieceTokenizer::load(tpath));
    ids = tok->encode(o.prompt, true);
    text_mode = true;
#else
    (void)tpath;
    throw UsageError("--prompt needs SentencePiece, and this gla-generate was built without it "
                     "(GLA_WITH_SENTENCEPIECE=OFF); give --prompt-ids instead");
#endif
  } else {
    ids = *o.prompt_ids;
  }

  gla::GenerationConfig g;
  g.max_new_tokens = o.max_new_tokens;
  g.do_sample = o.temperature > 0;
  if (g.do_sample) g.temperature = o.temperature;
  g.top_k = o.top_k;
  g.top_p = o.top_p;
  g.seed = o.seed;

  std::vector<std::int64_t> produced;
  std::string printed;
  auto on_token = [&](std::size_t, std::int64_t t) {
    produced.push_back(t);
#if GLA_WITH_SENTENCEPIECE
    if (text_mode) {
      // Decode the prompt and everything produced so far and print what is new (a piece's leading space
      // shows only in context).
      std::vector<std::int64_t> all = ids;
      all.insert(all.end(), produced.begin(), produced.end());
      const std::string text = tok->decode(all);
      if (text.compare(0, printed.size(), printed) == 0) {
        std::cout << text.substr(printed.size()) << std::flush;
        printed = text;
      }
      return;
    }
#endif
    std::cout << (produced.size() > 1 ? " " : "") << t << std::flush;
  };
#if GLA_WITH_SENTENCEPIECE
  if (text_mode) {
    printed = tok->decode(ids);
    std::cout << printed << std::flush;
  }
#endif
  const auto out = gla::generate(*model, {ids}, g, on_token);
  std::cout << "\n";
  auto rate = [](std::int64_t n, double s) { return s > 0 ? static_cast<double>(n) / s : 0.0; };
  std::fprintf(stderr, "prefill: %lld tokens in %.3f s (%.1f tokens/s)\n", static_cast<long long>(out.prefill_tokens),
               out.prefill_seconds, rate(out.prefill_tokens, out.prefill_seconds));
  std::fprintf(stderr, "decode: %lld tokens in %.3f s (%.1f tokens/s)%s\n", static_cast<long long>(out.decode_tokens),
               out.decode_seconds, rate(out.decode_tokens, out.decode_seconds),
               out.stopped_at_eos[0] ? ", stopped at eos" : "");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const UsageError& e) {
    std::cerr << "gla-generate: " << e.what() << "\n" << kUsage;
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "gla-generate: " << e.what() << "\n";
    return 1;
  }
}
