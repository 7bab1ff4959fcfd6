// bench/bench_targets.cpp: the operators' speed targets, each next to its yardstick, in one process and at 1 and
// 2 threads: prefill and long-context chunked forwards (fp32 and bf16 inputs) against a large f32 GEMM, the
// one-token decode step against one read-and-write pass over the state, the cases that used to fall off a cliff
// (one head of one long sequence; one long sequence among short ones), and the backwards next to their
// forwards (chunk_gla_backward also from the states its forward kept); and what writing an operator's output costs with
// plain and with non-temporal stores. bench/summarize_targets.py turns the JSON into docs/PERFORMANCE.md's table.
// GLA_BENCH_BUSY=1 starts a process that keeps one core busy for the whole run (the busy-machine target).

#include "bench_common.hpp"

#include <gla/gla.hpp>

#include <csignal>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <sys/prctl.h>
#include <unistd.h>

#ifdef GLA_HAVE_ONEDNN
#include <dnnl.hpp>
#endif

namespace {

using namespace gla;

/// A problem: B sequences of T tokens (or packed ones with cu), H heads, head dims K and V.
struct Case {
  const char* name;
  Index B, T, H, K, V;
  std::vector<std::int64_t> cu;
  bool decode;  // an initial state in, the final state out (one step of incremental decoding)
};

const std::vector<Case>& cases() {
  static const std::vector<Case> c = [] {
    std::vector<Case> v{{"prefill", 1, 4096, 16, 128, 128, {}, false},
                        {"long", 1, 16384, 8, 64, 64, {}, false},
                        {"decode", 8, 1, 16, 128, 128, {}, true},
                        {"b1h1", 1, 8192, 1, 128, 128, {}, false}};
    Case varlen{"varlen", 1, 9000, 1, 128, 128, {0, 8000}, false};  // one 8000-token sequence, then ten of 100
    for (int i = 1; i <= 10; ++i) varlen.cu.push_back(8000 + 100 * i);
    v.push_back(varlen);
    return v;
  }();
  return c;
}

bench::Shape shape_of(const Case& c) { return {c.name, c.B, c.T, c.H, c.K, c.V, c.decode}; }

/// Inputs in scalar T (fp32 generated once, bf16 rounded from them), an upstream gradient and h0/dht for decode.
template <class T>
struct Data {
  Tensor<T, 4> q, k, v, g, do_;
  Tensor<float, 4> h0, dht;
  explicit Data(const Case& c) {
    const bench::Inputs& in = bench::inputs(shape_of(c));
    q = in.q.template cast<T>();
    k = in.k.template cast<T>();
    v = in.v.template cast<T>();
    g = in.g.template cast<T>();
    do_ = bench::upstream(shape_of(c)).do_.template cast<T>();
    const Index N = c.cu.empty() ? c.B : static_cast<Index>(c.cu.size()) - 1;
    h0 = Tensor<float, 4>(N, c.H, c.K, c.V);
    std::mt19937_64 rng(7);
    std::normal_distribution<float> n(0.f, 1.f);
    for (Index i = 0; i < h0.size(); ++i) h0.data()[i] = n(rng);
    dht = h0;
  }
};

template <class T>
const Data<T>& data(const Case& c) {
  static std::map<std::string, std::unique_ptr<Data<T>>> cache;
  auto& slot = cache[c.name];
  if (!slot) slot = std::make_unique<Data<T>>(c);
  return *slot;
}

GLAOptions options_for(const Case& c, const Tensor<float, 4>& h0) {
  GLAOptions o;
  o.cu_seqlens = c.cu;
  if (c.decode) {
    o.initial_state = h0;
    o.output_final_state = true;
  }
  return o;
}

// ChunkKeepStates: chunk_gla keeping the state before every chunk (a training step's forward); ChunkBackwardFromStates:
// chunk_gla_backward taking them instead of recomputing them.
enum class Op {
  Chunk,
  FusedChunk,
  FusedRecurrent,
  ChunkBackward,
  FusedRecurrentBackward,
  ChunkKeepStates,
  ChunkBackwardFromStates
};
const char* op_name(Op op) {
  switch (op) {
    case Op::Chunk:
      return "chunk_gla";
    case Op::ChunkKeepStates:
      return "chunk_gla_keep_states";
    case Op::ChunkBackwardFromStates:
      return "chunk_gla_backward_from_states";
    case Op::FusedChunk:
      return "fused_chunk_gla";
    case Op::FusedRecurrent:
      return "fused_recurrent_gla";
    case Op::ChunkBackward:
      return "chunk_gla_backward";
    case Op::FusedRecurrentBackward:
      return "fused_recurrent_gla_backward";
  }
  return "?";
}

/// One operator on one case: outputs preallocated, one workspace reused across iterations (grown by a warm-up
/// call before the timed loop, so page faults per iteration show whether anything is allocated per call).
template <class T>
void run_op(benchmark::State& st, Op op, const Case& c) {
  gla::set_num_threads(static_cast<int>(st.range(0)));
  const Data<T>& d = data<T>(c);
  Workspace ws;
  GLAOptions opts = options_for(c, d.h0);
  opts.workspace = &ws;
  const Index N = d.h0.dimension(0);
  Tensor<T, 4> o(c.B, c.T, c.H, c.V), dq(c.B, c.T, c.H, c.K), dk(c.B, c.T, c.H, c.K), dv(c.B, c.T, c.H, c.V),
      dg(c.B, c.T, c.H, c.K);
  Tensor<float, 4> ht(N, c.H, c.K, c.V), dh0(N, c.H, c.K, c.V);
  for (auto* t : {&o, &dq, &dk, &dv, &dg}) t->setZero();
  ht.setZero();
  dh0.setZero();
  const std::optional<View<float, 4>> ht_v = c.decode ? std::optional<View<float, 4>>(ht) : std::nullopt;
  const std::optional<View<float, 4>> dh0_v = c.decode ? std::optional<View<float, 4>>(dh0) : std::nullopt;
  const std::optional<ConstView<float, 4>> dht = c.decode ? std::optional<ConstView<float, 4>>(d.dht) : std::nullopt;
  Tensor<acc_t<T>, 5> states;  // the forward's states before every chunk (the two ops that keep or take them)
  if (op == Op::ChunkKeepStates || op == Op::ChunkBackwardFromStates) {
    states = Tensor<acc_t<T>, 5>(chunk_gla_states_dims(c.B, c.T, c.H, c.K, c.V, opts));
    chunk_gla_keep_states_into(d.q, d.k, d.v, d.g, opts, o, ht_v, states);
  }
  const auto call = [&] {
    switch (op) {
      case Op::Chunk:
        chunk_gla_into(d.q, d.k, d.v, d.g, opts, o, ht_v);
        break;
      case Op::FusedChunk:
        fused_chunk_gla_into(d.q, d.k, d.v, d.g, opts, o, ht_v);
        break;
      case Op::FusedRecurrent:
        fused_recurrent_gla_into(d.q, d.k, d.v, d.g, std::nullopt, opts, o, ht_v);
        break;
      case Op::ChunkKeepStates:
        chunk_gla_keep_states_into(d.q, d.k, d.v, d.g, opts, o, ht_v, states);
        break;
      case Op::ChunkBackward:
        chunk_gla_backward_into(d.q, d.k, d.v, d.g, d.do_, dht, opts, dq, dk, dv, dg, dh0_v);
        break;
      case Op::ChunkBackwardFromStates:
        chunk_gla_backward_from_states_into(d.q, d.k, d.v, d.g, states, d.do_, dht, opts, dq, dk, dv, dg, dh0_v);
        break;
      case Op::FusedRecurrentBackward:
        fused_recurrent_gla_backward_into(d.q, d.k, d.v, d.g, std::nullopt, d.do_, dht, opts, dq, dk, dv, dg,
                                          std::nullopt, dh0_v);
        break;
    }
  };
  bench::time_calls(st, call, o.data());
  const bench::Shape s = shape_of(c);
  double flops = 0;
  switch (op) {
    case Op::Chunk:
    case Op::FusedChunk:
    case Op::ChunkKeepStates:
      flops = bench::chunk_flops(s);
      break;
    case Op::FusedRecurrent:
      flops = bench::recurrent_flops(s);
      break;
    case Op::ChunkBackward:
    case Op::ChunkBackwardFromStates:
      flops = bench::chunk_backward_flops(s);
      break;
    case Op::FusedRecurrentBackward:
      flops = bench::recurrent_backward_flops(s);
      break;
  }
  bench::set_counters(st, s, flops);
  st.counters["threads"] = benchmark::Counter(static_cast<double>(st.range(0)));
  st.counters["workspace_MB"] = benchmark::Counter(static_cast<double>(ws.capacity()) / 1e6);
}

/// The f32 GEMM yardstick: C[1024×1024] = A·B, oneDNN's matmul when the benchmarks are built with it (weights in
/// its preferred layout, reordered once), else Eigen's product. FLOP/s is what the machine's best GEMM reaches.
void run_sgemm(benchmark::State& st, Index n) {
  const int threads = static_cast<int>(st.range(0));
  gla::set_num_threads(threads);
  std::vector<float> a(static_cast<std::size_t>(n * n), 0.5f), b(static_cast<std::size_t>(n * n), 0.25f),
      c(static_cast<std::size_t>(n * n), 0.f);
#ifdef GLA_HAVE_ONEDNN
  bench::OneDnnThreads pin(threads);
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  using dt = dnnl::memory::data_type;
  using tag = dnnl::memory::format_tag;
  const dnnl::memory::dims ad{n, n};
  const dnnl::memory::desc a_md(ad, dt::f32, tag::ab), b_any(ad, dt::f32, tag::any), c_md(ad, dt::f32, tag::ab);
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_any, c_md), eng);
  dnnl::memory am(a_md, eng, a.data()), cm(c_md, eng, c.data()), b_plain({ad, dt::f32, tag::ab}, eng, b.data());
  dnnl::memory bm(pd.weights_desc(), eng);
  dnnl::reorder(b_plain, bm).execute(strm, b_plain, bm);
  const dnnl::matmul mm(pd);
  const auto call = [&] {
    mm.execute(strm, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
    strm.wait();
  };
  st.SetLabel(std::string("onednn ") + pd.impl_info_str());
#else
  const Eigen::Map<const detail::RowMat<float>> A(a.data(), n, n), B(b.data(), n, n);
  Eigen::Map<detail::RowMat<float>> C(c.data(), n, n);
  Eigen::setNbThreads(threads);
  const auto call = [&] { C.noalias() = A * B; };
  st.SetLabel("eigen");
#endif
  bench::time_calls(st, call, c.data());
  st.counters["FLOP/s"] = benchmark::Counter(2.0 * n * n * n, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["threads"] = benchmark::Counter(threads);
}

/// The decode yardstick: one pass that reads every element of the initial state and writes the final state
/// (the least a decode step must move), split over (sequence, head) on the same engine.
void run_state_pass(benchmark::State& st, const Case& c) {
  gla::set_num_threads(static_cast<int>(st.range(0)));
  const Data<float>& d = data<float>(c);
  Tensor<float, 4> out(d.h0.dimensions());
  out.setZero();
  const Index pairs = d.h0.dimension(0) * d.h0.dimension(1), n = c.K * c.V;
  const float f = 0.999f;
  const auto call = [&] {
    detail::parallel_for(pairs, [&](Index p, int) {
      Eigen::Map<Eigen::ArrayXf>(out.data() + p * n, n) = Eigen::Map<const Eigen::ArrayXf>(d.h0.data() + p * n, n) * f;
    });
  };
  bench::time_calls(st, call, out.data());
  st.counters["bytes/s"] =
      benchmark::Counter(2.0 * 4.0 * static_cast<double>(d.h0.size()), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["threads"] = benchmark::Counter(static_cast<double>(st.range(0)));
}

/// What writing an operator's output costs, with plain stores (each line read for ownership first) or the
/// non-temporal stores the chunked kernels use for outputs of kStreamingOutputBytes and more: the case's o,
/// written as the sweep writes it — one L×V tile per (chunk, head), heads split over the engine's threads.
void run_output_write(benchmark::State& st, const Case& c, bool streaming) {
  gla::set_num_threads(static_cast<int>(st.range(0)));
  Tensor<float, 4> out(c.B, c.T, c.H, c.V);
  out.setZero();
  const Index L = 64;
  std::vector<float> tile(static_cast<std::size_t>(L * c.V), 0.5f);
  const detail::OutputWrites how{streaming};
  const auto call = [&] {
    detail::parallel_for(c.B * c.H, [&](Index p, int) {
      const Index b = p / c.H, h = p % c.H;
      for (Index t0 = 0; t0 < c.T; t0 += L)
        detail::store_tile_rows(tile.data(), std::min(L, c.T - t0), c.V, out.data() + ((b * c.T + t0) * c.H + h) * c.V,
                                c.H * c.V, how);
    });
  };
  bench::time_calls(st, call, out.data());
  st.counters["bytes/s"] =
      benchmark::Counter(4.0 * static_cast<double>(out.size()), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["threads"] = benchmark::Counter(static_cast<double>(st.range(0)));
}

void with_threads(benchmark::internal::Benchmark* b) { b->ArgName("threads")->Arg(1)->Arg(2)->Apply(bench::configure); }

const Case& find(const std::string& name) {
  for (const Case& c : cases())
    if (c.name == name) return c;
  throw std::runtime_error("no case " + name);
}

template <class T>
void register_op(Op op, const std::string& case_name, const char* dtype) {
  const Case& c = find(case_name);
  benchmark::RegisterBenchmark((std::string(op_name(op)) + "/" + c.name + "/" + dtype).c_str(),
                               [op, &c](benchmark::State& st) { run_op<T>(st, op, c); })
      ->Apply(with_threads);
}

/// Keeps one core busy until this process exits (the child dies with its parent).
void start_busy_process() {
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(0);
    volatile unsigned long x = 0;
    for (;;) x = x + 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const char* busy = std::getenv("GLA_BENCH_BUSY");
  const bool busy_run = busy && std::string(busy) == "1";
  if (busy_run) start_busy_process();
  benchmark::AddCustomContext("gla_busy_process", busy_run ? "1" : "0");

  benchmark::RegisterBenchmark("yardstick/sgemm_1024", [](benchmark::State& st) {
    run_sgemm(st, 1024);
  })->Apply(with_threads);
  benchmark::RegisterBenchmark("yardstick/state_pass/decode", [](benchmark::State& st) {
    run_state_pass(st, find("decode"));
  })->Apply(with_threads);
  for (const bool streaming : {false, true})
    benchmark::RegisterBenchmark(
        streaming ? "yardstick/output_write/prefill/streaming" : "yardstick/output_write/prefill/plain",
        [streaming](benchmark::State& st) { run_output_write(st, find("prefill"), streaming); })
        ->Apply(with_threads);
  for (const char* name : {"prefill", "long"}) {
    register_op<float>(Op::Chunk, name, "fp32");
    register_op<float>(Op::FusedChunk, name, "fp32");
    register_op<Eigen::bfloat16>(Op::Chunk, name, "bf16");
    register_op<Eigen::bfloat16>(Op::FusedChunk, name, "bf16");
  }
  register_op<float>(Op::FusedRecurrent, "prefill", "fp32");
  register_op<float>(Op::FusedRecurrent, "decode", "fp32");
  register_op<float>(Op::Chunk, "decode", "fp32");
  register_op<float>(Op::FusedChunk, "decode", "fp32");
  for (const char* name : {"b1h1", "varlen"}) {
    register_op<float>(Op::Chunk, name, "fp32");
    register_op<float>(Op::FusedChunk, name, "fp32");
    register_op<float>(Op::FusedRecurrent, name, "fp32");
  }
  register_op<float>(Op::ChunkBackward, "prefill", "fp32");
  register_op<float>(Op::ChunkKeepStates, "prefill", "fp32");
  register_op<float>(Op::ChunkBackwardFromStates, "prefill", "fp32");
  register_op<float>(Op::FusedRecurrentBackward, "prefill", "fp32");
  return bench::run_main(argc, argv);
}
