// examples/layer_decode.cpp: a GatedLinearAttention layer (fla weights from a safetensors file, or random from a
// seed) prefills a prompt with a cache and decodes 16 tokens; each step is checked against one full forward.
//
// Usage: gla_layer_example [file.safetensors] [seed]
//   The file's __metadata__ must hold the layer config as JSON, either under a key "config" with the weights named
//   by fla (q_proj.weight, ...), or under a case name <c> with the weights named "<c>.weight.<fla name>" (the
//   layout of tests/data/fla/layer-*.safetensors). Exit code 1 when a decode step differs from the full forward
//   by more than 1e-4 (relative RMS) or is not finite.

#include <gla/layers/gated_linear_attention.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

namespace {

using gla::Index;
using gla::Tensor;
using Clock = std::chrono::steady_clock;

constexpr double kTolerance = 1e-4;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

/// Loads the config and weights of a file (see the usage above).
gla::GatedLinearAttention<float> layer_from_file(const std::string& path) {
  const gla::io::SafeTensors file = gla::io::SafeTensors::load(path);
  for (const auto& [key, value] : file.metadata()) {
    const std::string prefix = key == "config" ? "" : key + ".weight.";
    bool has_weights = false;
    for (const std::string& n : file.names()) has_weights |= n.compare(0, prefix.size(), prefix) == 0;
    if (!has_weights) continue;
    const auto cfg = gla::GatedLinearAttentionConfig::from_json(nlohmann::json::parse(value));
    gla::GatedLinearAttention<float> layer(cfg);
    // With the "config" layout the whole file is the layer's state dict; otherwise only the case's weights.
    layer.load_state_dict(gla::io::StateDict::from_safetensors(file, prefix));
    std::printf("loaded %s (%s)\n", path.c_str(), key.c_str());
    return layer;
  }
  gla::detail::fail("layer_decode", "no layer config in the __metadata__ of " + path +
                                        " (expected a 'config' entry or a '<case>' entry with '<case>.weight.*' tensors)");
}

gla::GatedLinearAttention<float> layer_from_seed(std::uint64_t seed) {
  gla::GatedLinearAttentionConfig cfg;
  cfg.hidden_size = 256;
  cfg.num_heads = 4;
  cfg.use_short_conv = true;
  gla::GatedLinearAttention<float> layer(cfg);
  layer.init_random(seed);
  std::printf("random layer (seed %llu): hidden 256, 4 heads, short conv\n", static_cast<unsigned long long>(seed));
  return layer;
}

double norm(const float* p, Index n) {
  double s = 0;
  for (Index i = 0; i < n; ++i) s += static_cast<double>(p[i]) * p[i];
  return std::sqrt(s);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 42;
    const gla::GatedLinearAttention<float> layer = argc > 1 ? layer_from_file(argv[1]) : layer_from_seed(seed);
    const Index D = layer.config().hidden_size, B = 2, P = 100, steps = 16, S = P + steps;

    // Inputs of the prompt and of the 16 decoded tokens: x [B,S,D].
    Tensor<float, 3> x(B, S, D);
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.f, 1.f);
    for (Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
    Tensor<float, 3> prompt(B, P, D);
    for (Index b = 0; b < B; ++b) std::copy_n(x.data() + b * S * D, P * D, prompt.data() + b * P * D);

    gla::GatedLinearAttentionCache<float> cache;
    auto t0 = Clock::now();
    const Tensor<float, 3> y_prompt = layer.forward(prompt, std::nullopt, &cache, true);
    const double prefill_ms = ms_since(t0);
    std::printf("prefill B=%ld T=%ld: %.2f ms (%.0f tokens/s), |y| = %.4f\n", static_cast<long>(B),
                static_cast<long>(P), prefill_ms, B * P / (prefill_ms * 1e-3), norm(y_prompt.data(), y_prompt.size()));

    t0 = Clock::now();
    const Tensor<float, 3> full = layer.forward(x);
    std::printf("reference full forward T=%ld: %.2f ms\n", static_cast<long>(S), ms_since(t0));

    bool ok = true;
    double decode_ms = 0;
    for (Index s = 0; s < steps; ++s) {
      Tensor<float, 2> xs(B, D), ref(B, D);
      for (Index b = 0; b < B; ++b) {
        std::copy_n(x.data() + (b * S + P + s) * D, D, xs.data() + b * D);
        std::copy_n(full.data() + (b * S + P + s) * D, D, ref.data() + b * D);
      }
      t0 = Clock::now();
      const Tensor<float, 2> ys = layer.step(gla::view(xs), cache);
      const double ms = ms_since(t0);
      decode_ms += ms;
      double num = 0, den = 0;
      for (Index i = 0; i < ys.size(); ++i) {
        num += std::pow(static_cast<double>(ys.data()[i]) - ref.data()[i], 2);
        den += std::pow(static_cast<double>(ref.data()[i]), 2);
      }
      const double err = std::sqrt(num / den);
      const bool step_ok = std::isfinite(err) && err <= kTolerance;
      ok &= step_ok;
      std::printf("step %2ld: |y| = %.4f  %.3f ms  vs full forward rel_rms %.2e %s\n", static_cast<long>(s),
                  norm(ys.data(), ys.size()), ms, err, step_ok ? "ok" : "MISMATCH");
    }
    std::printf("decode: %ld steps of B=%ld in %.2f ms (%.0f tokens/s); cache seen_tokens = %lld\n",
                static_cast<long>(steps), static_cast<long>(B), decode_ms, steps * B / (decode_ms * 1e-3),
                static_cast<long long>(cache.seen_tokens));
    if (!ok) {
      std::printf("FAILED: decoding disagrees with the full forward by more than %.0e\n", kTolerance);
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "layer_decode: %s\n", e.what());
    return 1;
  }
}
