// bench/bench_layer.cpp: the GatedLinearAttention layer at fla's 340M layer shape (hidden 1024, 4 heads, expand_k
// 0.5, expand_v 1: head_k 128, head_v 256): B1 T2048 prefill and B8 single-token decode, in tokens/s, with the
// layer's five projection GEMMs alone (q, k, v, g, o and the low-rank gk pair) measured beside it at the same shapes.

#include <gla/layers/gated_linear_attention.hpp>

#include "bench_common.hpp"

namespace {

using namespace gla;
using Mat = detail::RowMat<float>;

struct LayerShape {
  const char* name;
  Index B, T;
  bool decode;
};

constexpr LayerShape kLayerPrefill{"prefill_B1_T2048", 1, 2048, false};
constexpr LayerShape kLayerDecode{"decode_B8", 8, 1, true};

GatedLinearAttentionConfig config_340m() {
  GatedLinearAttentionConfig c;  // fla's defaults are the 340M layer: hidden 1024, 4 heads, expand_k 0.5, expand_v 1
  return c;
}

const GatedLinearAttention<float>& layer() {
  static const GatedLinearAttention<float> l = [] {
    GatedLinearAttention<float> x(config_340m());
    x.init_random(bench::kSeed);
    return x;
  }();
  return l;
}

Tensor<float, 3> input(const LayerShape& s) {
  Tensor<float, 3> x(s.B, s.T, config_340m().hidden_size);
  std::mt19937_64 rng(bench::kSeed);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  return x;
}

/// 2·in·out FLOP per token for every linear of the layer.
double projection_flops(Index tokens) {
  const GatedLinearAttentionConfig c = config_340m();
  const double h = static_cast<double>(c.hidden_size);
  const double per_token = 2.0 * (h * c.key_dim() + h * c.key_dim_per_group() + h * c.value_dim_per_group() +
                                  h * c.value_dim() + h * c.gate_low_rank_dim +
                                  static_cast<double>(c.gate_low_rank_dim) * c.key_dim_per_group() +
                                  static_cast<double>(c.value_dim()) * h);
  return per_token * static_cast<double>(tokens);
}

void set_layer_counters(benchmark::State& st, const LayerShape& s) {
  const double tokens = static_cast<double>(s.B * s.T);
  st.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["proj_FLOP/s"] = benchmark::Counter(projection_flops(s.B * s.T), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["threads"] = benchmark::Counter(bench::max_threads());
}

/// The whole layer. Decode: a cache primed by a 64-token prefill, one step per iteration (the cache is copied
/// back each iteration so every step sees the same state; the copy is outside the timing).
void run_layer(benchmark::State& st, const LayerShape& s) {
  const auto& l = layer();
  const Tensor<float, 3> x = input(s);
  if (!s.decode) {
    for (auto _ : st) {
      Tensor<float, 3> y = l.forward(x);
      benchmark::DoNotOptimize(y.data());
    }
  } else {
    GatedLinearAttentionCache<float> primed;
    l.forward(input({"prompt", s.B, 64, false}), std::nullopt, &primed, true);
    GatedLinearAttentionCache<float> cache = primed;
    for (auto _ : st) {
      Tensor<float, 3> y = l.forward(x, std::nullopt, &cache, true);
      benchmark::DoNotOptimize(y.data());
      st.PauseTiming();
      cache = primed;
      st.ResumeTiming();
    }
  }
  set_layer_counters(st, s);
}

/// The projections alone: the same GEMMs the layer issues, on the same token rows, with the layer's weights.
void run_projections(benchmark::State& st, const LayerShape& s) {
  const GatedLinearAttentionConfig c = config_340m();
  const io::StateDict d = layer().state_dict();
  auto wt = [&](const char* name) {
    const Tensor<float, 2> w = d.get<float, 2>(name);
    return Mat(Eigen::Map<const Mat>(w.data(), w.dimension(0), w.dimension(1)).transpose());
  };
  const Mat wq = wt("q_proj.weight"), wk = wt("k_proj.weight"), wv = wt("v_proj.weight"), wg = wt("g_proj.weight"),
            wgk0 = wt("gk_proj.0.weight"), wgk1 = wt("gk_proj.1.weight"), wo = wt("o_proj.weight");
  const Tensor<float, 3> x = input(s);
  const Index n = s.B * s.T;
  const Eigen::Map<const Mat> X(x.data(), n, c.hidden_size);
  Mat q(n, c.key_dim()), k(n, c.key_dim_per_group()), v(n, c.value_dim_per_group()), g(n, c.value_dim()),
      low(n, c.gate_low_rank_dim), gk(n, c.key_dim_per_group()), y(n, c.hidden_size);
  for (auto _ : st) {
    q.noalias() = X * wq;
    k.noalias() = X * wk;
    v.noalias() = X * wv;
    g.noalias() = X * wg;
    low.noalias() = X * wgk0;
    gk.noalias() = low * wgk1;
    y.noalias() = g * wo;  // o_proj's shape: [n, value_dim] · [value_dim, hidden]
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_layer_counters(st, s);
}

}  // namespace

int main(int argc, char** argv) {
  for (const LayerShape& s : {kLayerPrefill, kLayerDecode}) {
    benchmark::RegisterBenchmark((std::string("gla_layer/") + s.name).c_str(),
                                 [s](benchmark::State& st) { run_layer(st, s); })
        ->Apply(bench::configure);
    benchmark::RegisterBenchmark((std::string("gla_layer_projections/") + s.name).c_str(),
                                 [s](benchmark::State& st) { run_projections(st, s); })
        ->Apply(bench::configure);
  }
  return bench::run_main(argc, argv);
}
