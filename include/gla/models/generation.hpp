#pragma once
/// gla/models/generation.hpp: text generation with a GLAForCausalLM, as transformers' generate() does for fla's
/// models: a batch of prompts of different lengths is left-padded (with an attention mask), prefilled once, then
/// decoded one token per step with per-layer caches; greedy, or sampling with temperature, top-k and top-p from a
/// seeded std::mt19937_64; rows stop at an eos token, the batch at max_new_tokens or when every row has stopped.

#include <gla/core.hpp>
#include <gla/models/gla_model.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace gla {

/// The options of generate(). Defaults: greedy, 20 new tokens, the model config's eos and pad ids.
struct GenerationConfig {
  /// Tokens generated per row at most (0: prefill only).
  std::int64_t max_new_tokens = 20;
  /// Sample from the processed distribution (true) or take the most likely token (false; lowest id on ties).
  bool do_sample = false;
  /// Sampling only: logits are divided by it (> 0).
  double temperature = 1.0;
  /// Sampling only: keep the k most likely tokens (0: all).
  std::int64_t top_k = 0;
  /// Sampling only: keep the smallest set of most likely tokens whose probability reaches top_p (in (0, 1]).
  double top_p = 1.0;
  /// Seed of the std::mt19937_64 that draws every sample of the call (rows in order, step by step).
  std::uint64_t seed = 0;
  /// Ids that end a row (the token is kept); unset: the model config's eos_token_id; empty: none.
  std::optional<std::vector<std::int64_t>> eos_token_id;
  /// The id written left of shorter prompts and after a row has stopped (it never reaches the attention:
  /// the mask hides it); unset: the config's pad_token_id, else the first eos id, else 0.
  std::optional<std::int64_t> pad_token_id;
  /// Keep every step's logits (GenerationOutput::scores).
  bool output_scores = false;

  /// gla::Error naming the field, expected vs actual, for the first invalid setting.
  void validate() const {
    const std::string fn = "gla::GenerationConfig";
    if (max_new_tokens < 0)
      detail::fail(fn, "max_new_tokens is " + std::to_string(max_new_tokens) + ", expected >= 0");
    if (do_sample && !(temperature > 0 && std::isfinite(temperature)))
      detail::fail(fn, "temperature is " + detail::config_json::num(temperature) +
                           ", expected a finite number > 0 when sampling (greedy: do_sample = false)");
    if (top_k < 0) detail::fail(fn, "top_k is " + std::to_string(top_k) + ", expected >= 0 (0: no top-k)");
    if (!(top_p > 0 && top_p <= 1))
      detail::fail(fn, "top_p is " + detail::config_json::num(top_p) + ", expected a number in (0, 1]");
  }
};

/// What generate() returns.
template <class T>
struct GenerationOutput {
  /// The new tokens of each row (its eos token included when it stopped at one).
  std::vector<std::vector<std::int64_t>> tokens;
  /// Whether each row stopped at an eos token.
  std::vector<bool> stopped_at_eos;
  /// With output_scores: the logits [B, vocab] that chose each step's tokens (rows that had stopped included).
  std::vector<Tensor<T, 2>> scores;
  /// Wall-clock seconds and token counts of the prefill (padded prompt tokens of the batch) and of the decode
  /// steps (one token per row per step).
  double prefill_seconds = 0, decode_seconds = 0;
  std::int64_t prefill_tokens = 0, decode_tokens = 0;
};

/// Picks the next token from one row of logits: greedy (argmax, lowest id on ties) unless cfg.do_sample; sampling
/// applies, in transformers' order, temperature, then top-k, then top-p, then draws from the softmax of what is
/// left with one 53-bit uniform number from gen.
template <class T>
std::int64_t next_token(const T* logits, Index vocab, const GenerationConfig& cfg, std::mt19937_64& gen) {
  if (!cfg.do_sample) {
    Index best = 0;
    for (Index v = 1; v < vocab; ++v)
      if (logits[v] > logits[best]) best = v;
    return best;
  }
  std::vector<std::pair<double, Index>> order(static_cast<std::size_t>(vocab));
  for (Index v = 0; v < vocab; ++v) order[static_cast<std::size_t>(v)] = {static_cast<double>(logits[v]) / cfg.temperature, v};
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::size_t keep = order.size();
  if (cfg.top_k > 0) keep = std::min<std::size_t>(keep, static_cast<std::size_t>(cfg.top_k));
  const double top = order[0].first;
  std::vector<double> p(keep);
  double sum = 0;
  for (std::size_t i = 0; i < keep; ++i) sum += (p[i] = std::exp(order[i].first - top));
  if (cfg.top_p < 1) {
    double cum = 0;
    std::size_t n = 0;
    while (n < keep) {
      cum += p[n] / sum;
      ++n;
      if (cum >= cfg.top_p) break;
    }
    keep = n;
    sum = 0;
    for (std::size_t i = 0; i < keep; ++i) sum += p[i];
  }
  const double u = static_cast<double>(gen() >> 11) * 0x1.0p-53 * sum;
  double cum = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    cum += p[i];
    if (u < cum) return order[i].second;
  }
  return order[keep - 1].second;
}

/// Generates from a batch of prompts (token ids, each row non-empty). Shorter prompts are left-padded to the
/// longest and masked, as transformers' generate with an attention_mask: every row's tokens and logits are
/// those of the row generated alone. on_token(row, token) is called for every new token of a row still running,
/// in row order, step by step (for streaming). gla::Error naming the argument for invalid prompts or options.
template <class T>
GenerationOutput<T> generate(const GLAForCausalLM<T>& model, const std::vector<std::vector<std::int64_t>>& prompts,
                             const GenerationConfig& cfg = {},
                             const std::function<void(std::size_t, std::int64_t)>& on_token = {}) {
  const std::string fn = "gla::generate";
  cfg.validate();
  const GLAConfig& mc = model.config();
  const Index V = mc.vocab_size;
  if (prompts.empty()) detail::fail(fn, "prompts is empty, expected at least one prompt");
  std::size_t L = 0;
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    if (prompts[b].empty()) detail::fail(fn, "prompts[" + std::to_string(b) + "] is empty, expected at least one token");
    for (std::size_t t = 0; t < prompts[b].size(); ++t)
      if (prompts[b][t] < 0 || prompts[b][t] >= V)
        detail::fail(fn, "prompts[" + std::to_string(b) + "][" + std::to_string(t) + "] is " +
                             std::to_string(prompts[b][t]) + ", expected a token id in [0, vocab_size = " +
                             std::to_string(V) + ")");
    L = std::max(L, prompts[b].size());
  }
  const std::vector<std::int64_t> eos = cfg.eos_token_id ? *cfg.eos_token_id : mc.eos_token_id;
  const std::int64_t pad = cfg.pad_token_id ? *cfg.pad_token_id
                           : mc.pad_token_id ? *mc.pad_token_id
                           : !eos.empty()    ? eos[0]
                                             : 0;
  if (pad < 0 || pad >= V)
    detail::fail(fn, "pad_token_id is " + std::to_string(pad) + ", expected a token id in [0, vocab_size = " +
                         std::to_string(V) + ")");

  const Index B = static_cast<Index>(prompts.size()), Lp = static_cast<Index>(L);
  Tensor<std::int64_t, 2> ids(B, Lp), mask(B, Lp);
  for (Index b = 0; b < B; ++b) {
    const auto& p = prompts[static_cast<std::size_t>(b)];
    const Index off = Lp - static_cast<Index>(p.size());
    for (Index t = 0; t < Lp; ++t) {
      ids(b, t) = t < off ? pad : p[static_cast<std::size_t>(t - off)];
      mask(b, t) = t < off ? 0 : 1;
    }
  }

  GenerationOutput<T> out;
  out.tokens.resize(prompts.size());
  out.stopped_at_eos.assign(prompts.size(), false);
  std::mt19937_64 gen(cfg.seed);
  auto cache = model.make_cache();
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  Tensor<T, 3> logits = model.forward(ids, ConstView<std::int64_t, 2>(mask), &cache, true, 1);
  out.prefill_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  out.prefill_tokens = B * Lp;
  if (cfg.max_new_tokens == 0) return out;

  t0 = clock::now();
  Tensor<std::int64_t, 2> next(B, 1);
  for (std::int64_t step = 0;; ++step) {
    if (cfg.output_scores) {
      Tensor<T, 2> s(B, V);
      std::copy_n(logits.data(), s.size(), s.data());
      out.scores.push_back(std::move(s));
    }
    bool running = false;
    for (Index b = 0; b < B; ++b) {
      const std::size_t r = static_cast<std::size_t>(b);
      if (out.stopped_at_eos[r]) {
        next(b, 0) = pad;
        continue;
      }
      const std::int64_t tok = next_token(&logits(b, 0, 0), V, cfg, gen);
      next(b, 0) = tok;
      out.tokens[r].push_back(tok);
      if (on_token) on_token(r, tok);
      if (std::find(eos.begin(), eos.end(), tok) != eos.end())
        out.stopped_at_eos[r] = true;
      else
        running = true;
    }
    if (!running || step + 1 >= cfg.max_new_tokens) break;
    // Every row's newest token is real (stopped rows feed pad tokens whose outputs are ignored), so no mask.
    logits = model.forward(next, std::nullopt, &cache, true, 1);
    out.decode_tokens += B;
  }
  out.decode_seconds = std::chrono::duration<double>(clock::now() - t0).count();
  return out;
}

}  // namespace gla
