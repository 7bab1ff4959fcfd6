// bench/bench_layer.cpp: the GatedLinearAttention layer at fla's 340M layer shape (hidden 1024, 4 heads, expand_k
// 0.5, expand_v 1, low-rank gate 16, fused gated norm: head_k 128, head_v 256) with fp32 and bf16 weights:
// B1 T2048 prefill and single-token decode steps (step_into, allocation-free) at B1 and B8, at 1 and 2 threads
// (the benchmark argument), with same-process yardsticks:
//   proj_onednn  the layer's projections alone through oneDNN's matmul (the fused q|k|v|g|gk0 product and o_proj,
//                weights reordered once into oneDNN's preferred layout, activations already in the weights'
//                type), or Eigen's products in a build without oneDNN (then the name says eigen);
//   weight_read  one memory-bound pass over as many bytes as the layer's linear weights (the same precision).
// Each layer benchmark ends with interleaved manual rounds (layer, yardstick, layer, ...; medians) and reports
// the ratios as counters: x_proj = layer ÷ projections alone, x_wread = layer ÷ weight-read pass, and for bf16
// weights f32_over_bf16 = fp32-weight layer ÷ bf16-weight layer. Interleaving keeps the ratios fair when other
// processes share the cores.

#include <gla/layers/gated_linear_attention.hpp>

#include "bench_common.hpp"

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>

namespace {

using namespace gla;
using Mat = detail::RowMat<float>;
using Clock = std::chrono::steady_clock;

struct Case {
  const char* name;
  Index B, T;
  bool decode;
  WeightPrecision prec;
};

GatedLinearAttentionConfig config_340m() {
  return GatedLinearAttentionConfig();  // fla's defaults are the 340M layer
}

const GatedLinearAttention<float>& layer(WeightPrecision p) {
  static std::map<int, std::unique_ptr<GatedLinearAttention<float>>> layers;
  auto& slot = layers[static_cast<int>(p)];
  if (!slot) {
    slot = std::make_unique<GatedLinearAttention<float>>(config_340m(), p);
    slot->init_random(bench::kSeed);
  }
  return *slot;
}

Tensor<float, 3> input(Index B, Index T, std::uint64_t salt = 0) {
  Tensor<float, 3> x(B, T, config_340m().hidden_size);
  std::mt19937_64 rng(bench::kSeed + salt);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = normal(rng);
  return x;
}

void set_threads(int t) {
  gla::set_num_threads(t);
#ifdef _OPENMP
  omp_set_num_threads(t);
#endif
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Median ms of `rounds` interleaved calls of each function (after one warm-up call each).
std::vector<double> interleaved_ms(const std::vector<std::function<void()>>& fns, int rounds) {
  std::vector<std::vector<double>> t(fns.size());
  for (const auto& f : fns) f();
  for (int r = 0; r < rounds; ++r)
    for (std::size_t i = 0; i < fns.size(); ++i) {
      const auto t0 = Clock::now();
      fns[i]();
      t[i].push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
  std::vector<double> out;
  for (auto& v : t) out.push_back(median(v));
  return out;
}

/// A runnable layer call: prefill forward, or one decode step on a cache primed by a 64-token prompt (the state
/// keeps evolving in place; the cost of a step does not depend on it).
struct LayerRun {
  const GatedLinearAttention<float>& l;
  Case c;
  Tensor<float, 3> x;
  GatedLinearAttentionCache<float> cache;
  Tensor<float, 2> y;
  explicit LayerRun(const Case& cs) : l(layer(cs.prec)), c(cs), x(input(cs.B, cs.T)) {
    if (c.decode) {
      l.forward(input(c.B, 64, 1), std::nullopt, &cache, true);
      y = Tensor<float, 2>(c.B, config_340m().hidden_size);
    }
  }
  void operator()() {
    if (c.decode) {
      l.step_into(ConstView<float, 2>(x.data(), c.B, x.dimension(2)), cache, View<float, 2>(y));
      benchmark::DoNotOptimize(y.data());
    } else {
      Tensor<float, 3> out = l.forward(x);
      benchmark::DoNotOptimize(out.data());
    }
  }
};

/// The layer's projections alone: [M,hidden]·[hidden,n_in] (q|k|v|g|gk0) and [M,value_dim]·[value_dim,hidden]
/// (o_proj), through oneDNN with its preferred weight layout, or through Eigen without oneDNN.
struct Projections {
  Index M, hidden, n_in, vdim;
  WeightPrecision prec;
#if GLA_LINEAR_WITH_ONEDNN
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  struct Gemm {
    dnnl::matmul prim;
    dnnl::memory a, w, c;
  };
  Gemm g_in, g_out;
  Gemm make(Index m, Index k, Index n) {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const dt t = prec == WeightPrecision::F32 ? dt::f32 : dt::bf16;
    const dnnl::memory::desc a({m, k}, t, tag::ab), w_any({k, n}, t, tag::any), c({m, n}, dt::f32, tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, w_any, c), eng);
    Gemm gm{dnnl::matmul(pd), dnnl::memory(a, eng), dnnl::memory(pd.weights_desc(), eng), dnnl::memory(c, eng)};
    // Random-ish weights and inputs (values do not matter for the time; zeros might).
    dnnl::memory plain({{k, n}, dt::f32, tag::ab}, eng);
    float* p = static_cast<float*>(plain.get_data_handle());
    for (Index i = 0; i < k * n; ++i) p[i] = static_cast<float>((i * 2654435761u) % 1000) * 1e-3f - 0.5f;
    dnnl::reorder(plain, gm.w).execute(strm, plain, gm.w);
    dnnl::memory aplain({{m, k}, dt::f32, tag::ab}, eng);
    float* q = static_cast<float*>(aplain.get_data_handle());
    for (Index i = 0; i < m * k; ++i) q[i] = static_cast<float>((i * 40503u) % 1000) * 1e-3f - 0.5f;
    dnnl::reorder(aplain, gm.a).execute(strm, aplain, gm.a);
    strm.wait();
    return gm;
  }
  Projections(Index m, WeightPrecision p) : M(m), prec(p) {
    const auto c = config_340m();
    hidden = c.hidden_size;
    vdim = c.value_dim();
    n_in = c.key_dim() + c.key_dim_per_group() + c.value_dim_per_group() + c.value_dim() + c.gate_low_rank_dim;
    g_in = make(M, hidden, n_in);
    g_out = make(M, vdim, hidden);
  }
  void operator()() {
    for (Gemm* g : {&g_in, &g_out})
      g->prim.execute(strm, {{DNNL_ARG_SRC, g->a}, {DNNL_ARG_WEIGHTS, g->w}, {DNNL_ARG_DST, g->c}});
    strm.wait();
  }
  static const char* backend() { return "onednn"; }
#else
  Mat x_in, w_in, y_in, x_out, w_out, y_out;
  Projections(Index m, WeightPrecision p) : M(m), prec(p) {
    const auto c = config_340m();
    hidden = c.hidden_size;
    vdim = c.value_dim();
    n_in = c.key_dim() + c.key_dim_per_group() + c.value_dim_per_group() + c.value_dim() + c.gate_low_rank_dim;
    x_in = Mat::Random(M, hidden);
    w_in = Mat::Random(hidden, n_in);
    y_in = Mat(M, n_in);
    x_out = Mat::Random(M, vdim);
    w_out = Mat::Random(vdim, hidden);
    y_out = Mat(M, hidden);
  }
  void operator()() {
    y_in.noalias() = x_in * w_in;
    y_out.noalias() = x_out * w_out;
    benchmark::DoNotOptimize(y_out.data());
  }
  static const char* backend() { return "eigen"; }
#endif
};

/// One memory-bound pass over `bytes` bytes (the layer's linear weights), on the engine's threads.
struct WeightRead {
  std::vector<std::uint64_t> buf;
  std::vector<std::uint64_t> sums;
  explicit WeightRead(std::size_t bytes) : buf(bytes / 8 + 1), sums(64) {
    for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = i * 0x9e3779b97f4a7c15ull;
  }
  void operator()() {
    constexpr Index kChunk = 1 << 15;  // 256 KB
    const Index n = static_cast<Index>(buf.size()), chunks = (n + kChunk - 1) / kChunk;
    detail::parallel_for(chunks, [&](Index c, int w) {
      std::uint64_t s = 0;
      const Index e = std::min(n, (c + 1) * kChunk);
      for (Index i = c * kChunk; i < e; ++i) s ^= buf[static_cast<std::size_t>(i)];
      sums[static_cast<std::size_t>(w)] ^= s;
    });
    benchmark::DoNotOptimize(sums.data());
  }
};

void run_layer(benchmark::State& st, const Case& c) {
  const int threads = static_cast<int>(st.range(0));
  set_threads(threads);
  LayerRun run(c);
  for (auto _ : st) run();
  // Same-process yardsticks, interleaved with the layer.
  const int rounds = c.decode ? 60 : 5;
  const std::size_t wbytes = layer(c.prec).linear_weight_bytes();
  std::vector<std::function<void()>> fns{std::ref(run)};
  std::unique_ptr<Projections> proj = std::make_unique<Projections>(c.B * c.T, c.prec);
  std::unique_ptr<WeightRead> wread = std::make_unique<WeightRead>(wbytes);
  fns.push_back(std::ref(*proj));
  fns.push_back(std::ref(*wread));
  std::unique_ptr<LayerRun> f32run;
  if (c.prec == WeightPrecision::BF16) {
    Case cf = c;
    cf.prec = WeightPrecision::F32;
    f32run = std::make_unique<LayerRun>(cf);
    fns.push_back(std::ref(*f32run));
  }
  const std::vector<double> ms = interleaved_ms(fns, rounds);
  st.counters["layer_ms"] = ms[0];
  st.counters["proj_ms"] = ms[1];
  st.counters["wread_ms"] = ms[2];
  st.counters["x_proj"] = ms[0] / ms[1];
  st.counters["x_wread"] = ms[0] / ms[2];
  if (f32run) {
    st.counters["f32_layer_ms"] = ms[3];
    st.counters["f32_over_bf16"] = ms[3] / ms[0];
  }
  st.counters["weight_MB"] = static_cast<double>(wbytes) / 1e6;
  st.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(c.B * c.T), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["threads"] = threads;
  st.SetLabel(std::string("proj=") + Projections::backend() + ", layer projections " +
              layer(c.prec).projection_backend());
}

}  // namespace

int main(int argc, char** argv) {
  const Case cases[] = {
      {"prefill_B1_T2048_f32", 1, 2048, false, WeightPrecision::F32},
      {"prefill_B1_T2048_bf16", 1, 2048, false, WeightPrecision::BF16},
      {"decode_B1_f32", 1, 1, true, WeightPrecision::F32},
      {"decode_B1_bf16", 1, 1, true, WeightPrecision::BF16},
      {"decode_B8_f32", 8, 1, true, WeightPrecision::F32},
      {"decode_B8_bf16", 8, 1, true, WeightPrecision::BF16},
  };
  for (const Case& c : cases)
    benchmark::RegisterBenchmark((std::string("gla_layer/") + c.name).c_str(),
                                 [c](benchmark::State& st) { run_layer(st, c); })
        ->Arg(1)
        ->Arg(2)
        ->ArgName("threads")
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime();
  return bench::run_main(argc, argv);
}
