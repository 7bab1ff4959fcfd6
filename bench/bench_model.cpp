// GLAForCausalLM end to end at fla's 340M shape with random weights (fla's init): prefill and decode tokens/s
// at B = 1 and 8, next to the same-process time of the model's projections alone (every linear layer of every
// block and lm_head as plain GEMMs of the same shapes), and the process's resident memory as a counter.
// GLA_BENCH_MODEL=<preset> (340M, 1B, 7B, tiny) or a config.json path picks another shape (tiny: a quick check).
// Checkpoint weights stored as bf16 or f16 are converted to float on load, so they run exactly as these.

#include <gla/models/generation.hpp>
#include <gla/models/gla_model.hpp>

#include "bench_common.hpp"

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

namespace {

using gla::Index;
using Model = gla::GLAForCausalLM<float>;
using Mat = gla::detail::RowMat<float>;

/// Resident set size in bytes (VmRSS of /proc/self/status; 0 where that file does not exist).
double resident_bytes() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      double kb = 0;
      in >> kb;
      return kb * 1024.0;
    }
    std::getline(in, key);
  }
  return 0;
}

/// The benchmarked model (GLA_BENCH_MODEL: a preset name or a config.json; default 340M) with random weights;
/// bf16 = its attention layers hold their linear weights in bf16 (the same random values, rounded).
const Model& model(bool bf16 = false) {
  static const auto make = [](gla::WeightPrecision prec) {
    const char* env = std::getenv("GLA_BENCH_MODEL");
    const std::string name = env ? env : "340M";
    const gla::GLAConfig cfg = name.find(".json") != std::string::npos ? gla::GLAConfig::from_file(name)
                                                                       : gla::GLAConfig::preset(name);
    auto p = std::make_unique<Model>(cfg, prec);
    p->init_random(gla::bench::kSeed);
    return p;
  };
  if (bf16) {
    static const std::unique_ptr<Model> m = make(gla::WeightPrecision::BF16);
    return *m;
  }
  static const std::unique_ptr<Model> m = make(gla::WeightPrecision::F32);
  return *m;
}

gla::Tensor<std::int64_t, 2> random_ids(Index B, Index T, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  gla::Tensor<std::int64_t, 2> ids(B, T);
  for (Index i = 0; i < ids.size(); ++i) ids.data()[i] = static_cast<std::int64_t>(gen() % 32000 % model().config().vocab_size);
  return ids;
}

void counters(benchmark::State& st, double tokens) {
  st.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["RSS_bytes"] = benchmark::Counter(resident_bytes());
  st.counters["threads"] = benchmark::Counter(gla::bench::max_threads());
}

/// Prefill of B prompts of T tokens (logits of the last position, caches written, as generate's first call).
void BM_ModelPrefill(benchmark::State& st) {
  const Index B = st.range(0), T = st.range(1);
  const Model& m = model(st.range(2) != 0);
  const auto ids = random_ids(B, T, 1);
  for (auto _ : st) {
    auto cache = m.make_cache();
    auto logits = m.forward(ids, std::nullopt, &cache, true, 1);
    benchmark::DoNotOptimize(logits.data());
  }
  counters(st, static_cast<double>(B * T));
}

/// One decode step of B rows after a 16-token prefill (the cache advances each iteration, as in generation).
void BM_ModelDecode(benchmark::State& st) {
  const Index B = st.range(0);
  const Model& m = model(st.range(1) != 0);
  auto cache = m.make_cache();
  m.forward(random_ids(B, 16, 2), std::nullopt, &cache, true, 1);
  const auto next = random_ids(B, 1, 3);
  for (auto _ : st) {
    auto logits = m.forward(next, std::nullopt, &cache, true, 1);
    benchmark::DoNotOptimize(logits.data());
  }
  counters(st, static_cast<double>(B));
}

/// The model's projections alone for n = B·T token rows: per block q, k, v, g, gk (two low-rank), o, and the MLP's
/// gate, up, down; then lm_head on the B rows whose logits are kept. The yardstick of the forward's cost.
void BM_ModelProjections(benchmark::State& st) {
  const Index B = st.range(0), T = st.range(1), n = B * T;
  const gla::GLAConfig& c = model().config();
  const auto lc = c.layer_config();
  const Index D = c.hidden_size, K = lc.key_dim(), Kg = lc.key_dim_per_group(), Vg = lc.value_dim_per_group(),
              V = lc.value_dim(), I = c.mlp_intermediate_size(), r = lc.gate_low_rank_dim;
  const Mat x = Mat::Random(n, D) * 0.5f;
  const std::vector<std::pair<Index, Index>> shapes = {{D, K}, {D, Kg}, {D, Vg}, {D, V}, {D, r}, {r, Kg}, {V, D},
                                                       {D, I}, {D, I}, {I, D}};
  std::vector<Mat> w;
  for (const auto& [a, b] : shapes) w.push_back(Mat::Random(a, b) * 0.02f);
  const Mat head = Mat::Random(c.vocab_size, D) * 0.02f;
  Mat xi = Mat::Random(n, I), xv = Mat::Random(n, V), xr = Mat::Random(n, r), last = Mat::Random(B, D);
  for (auto _ : st) {
    for (std::int64_t l = 0; l < c.num_hidden_layers; ++l) {
      for (int j = 0; j < 4; ++j) {
        Mat y = x * w[static_cast<std::size_t>(j)];
        benchmark::DoNotOptimize(y.data());
      }
      Mat g0 = x * w[4], g1 = xr * w[5], o = xv * w[6], gate = x * w[7], up = x * w[8], down = xi * w[9];
      benchmark::DoNotOptimize(g0.data());
      benchmark::DoNotOptimize(g1.data());
      benchmark::DoNotOptimize(o.data());
      benchmark::DoNotOptimize(gate.data());
      benchmark::DoNotOptimize(up.data());
      benchmark::DoNotOptimize(down.data());
    }
    Mat logits = last * head.transpose();
    benchmark::DoNotOptimize(logits.data());
  }
  counters(st, static_cast<double>(n));
}

}  // namespace

BENCHMARK(BM_ModelPrefill)->ArgNames({"B", "T", "bf16"})->ArgsProduct({{1}, {256}, {0, 1}})->ArgsProduct({{8}, {64}, {0, 1}})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ModelProjections)->ArgNames({"B", "T"})->Args({1, 256})->Args({8, 64})->Args({1, 1})->Args({8, 1})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_ModelDecode)->ArgNames({"B", "bf16"})->ArgsProduct({{1, 8}, {0, 1}})->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
