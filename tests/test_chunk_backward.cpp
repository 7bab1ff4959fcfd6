// chunk_gla_backward, fused_chunk_gla_backward and chunk_bwd_dh against float64 references: the token-by-token
// backward (naive_recurrent_gla_backward), central finite differences of the forward recurrence, fla's golden
// float64 gradients, and a token-by-token reverse recurrence for every gate mode of chunk_bwd_dh.

#include <gla/chunk_backward.hpp>
#include <gla/cumsum.hpp>
#include <gla/naive.hpp>

#include "support/catch.hpp"
#include "support/golden.hpp"
#include "support/test_utils.hpp"

#include <array>
#include <cstdlib>
#include <iostream>

using namespace gla;
using gla::test::compare;
using gla::test::Diff;

namespace {

// ChunkSaved: chunk_gla_backward taking the states chunk_gla kept in the forward instead of recomputing them.
enum class Op { Chunk, FusedChunk, ChunkSaved };

const char* op_name(Op op) {
  switch (op) {
    case Op::Chunk:
      return "chunk_gla_backward";
    case Op::FusedChunk:
      return "fused_chunk_gla_backward";
    default:
      return "chunk_gla_backward_from_states";
  }
}

/// One backward problem; the inputs are generated in double and rounded to the tested scalar.
struct Case {
  Index B = 1, T = 64, H = 1, K = 16, V = 16;
  double gate_norm = 1.0;  // logsigmoid(U)/gate_norm; <= 0 → strong decay (per-step log gate near −5)
  bool h0 = true;
  bool dht = true;
  std::vector<std::int64_t> cu;
  std::optional<float> scale;
  bool v_first = false;
  int chunk_size = 64;
  std::uint64_t seed = 1;
  // When set: the per-step log gate of chunk j (64 tokens) is chunk_gate[j % size] · U[0.9, 1.1).
  std::vector<double> chunk_gate;
};

struct Inputs {
  Tensor<double, 4> q, k, v, g, do_;
  Tensor<float, 4> h0, dht;
};

Index num_seqs(const Case& c) { return c.cu.empty() ? c.B : static_cast<Index>(c.cu.size()) - 1; }

Inputs make_inputs(const Case& c) {
  auto rng = gla::test::rng(c.seed);
  Inputs in;
  in.q = Tensor<double, 4>(c.B, c.T, c.H, c.K);
  in.k = Tensor<double, 4>(c.B, c.T, c.H, c.K);
  in.v = Tensor<double, 4>(c.B, c.T, c.H, c.V);
  in.g = Tensor<double, 4>(c.B, c.T, c.H, c.K);
  in.do_ = Tensor<double, 4>(c.B, c.T, c.H, c.V);
  gla::test::fill_uniform(in.q, rng);
  gla::test::fill_uniform(in.k, rng);
  gla::test::fill_normal(in.v, rng);
  if (!c.chunk_gate.empty()) {
    gla::test::fill_chunk_gates(in.g, rng, c.chunk_gate);
  } else if (c.gate_norm > 0) {
    gla::test::fill_gate(in.g, rng, c.gate_norm);
  } else {
    gla::test::fill_strong_gate(in.g, rng);
  }
  gla::test::fill_normal(in.do_, rng);
  const Index N = num_seqs(c);
  in.h0 = c.v_first ? Tensor<float, 4>(N, c.H, c.V, c.K) : Tensor<float, 4>(N, c.H, c.K, c.V);
  in.dht = Tensor<float, 4>(in.h0.dimensions());
  gla::test::fill_normal(in.h0, rng);
  gla::test::fill_normal(in.dht, rng);
  return in;
}

GLAOptions options(const Case& c, const Inputs& in) {
  GLAOptions o;
  o.scale = c.scale;
  if (c.h0) o.initial_state = in.h0;
  o.state_v_first = c.v_first;
  o.cu_seqlens = c.cu;
  o.chunk_size = c.chunk_size;
  return o;
}

std::optional<ConstTensorMap<float, 4>> dht_of(const Case& c, const Inputs& in) {
  if (!c.dht) return std::nullopt;
  return view(in.dht);
}

/// The relative RMS errors of every gradient of one run.
struct GradDiffs {
  Diff dq, dk, dv, dg, dh0;
  std::string str() const {
    return "\n dq: " + dq.str() + "\n dk: " + dk.str() + "\n dv: " + dv.str() + "\n dg: " + dg.str() +
           "\n dh0: " + dh0.str();
  }
  bool ok(double tol, double tol_dh0) const {
    return gla::test::ok(dq, tol) && gla::test::ok(dk, tol) && gla::test::ok(dv, tol) && gla::test::ok(dg, tol) &&
           gla::test::ok(dh0, tol_dh0);
  }
};

/// GLA_TEST_VERBOSE=1 prints every case's errors (how the report's worst errors were measured).
void report(const std::string& what, const GradDiffs& d) {
  static const bool verbose = std::getenv("GLA_TEST_VERBOSE") != nullptr;
  if (verbose)
    std::cerr << "[chunk_backward] " << what << " dq " << d.dq.rel_rms << " dk " << d.dk.rel_rms << " dv "
              << d.dv.rel_rms << " dg " << d.dg.rel_rms << " dh0 " << d.dh0.rel_rms << "\n";
}

template <class T>
struct Grads {
  Tensor<T, 4> dq, dk, dv, dg;
  Tensor<float, 4> dh0;
};

/// Runs the `_into` API on NaN-filled outputs (so an element left unwritten fails), asking for dh0 when there is
/// an initial state (the output contract: dh0 is given iff initial_state is).
template <class T>
Grads<T> run_op(Op op, const Tensor<T, 4>& q, const Tensor<T, 4>& k, const Tensor<T, 4>& v, const Tensor<T, 4>& g,
                const Tensor<T, 4>& do_, std::optional<ConstTensorMap<float, 4>> dht, const GLAOptions& o,
                const std::array<Index, 4>& state_dims) {
  Grads<T> r{Tensor<T, 4>(q.dimensions()), Tensor<T, 4>(k.dimensions()), Tensor<T, 4>(v.dimensions()),
             Tensor<T, 4>(g.dimensions()), Tensor<float, 4>(state_dims)};
  gla::test::fill_nan(r.dq);
  gla::test::fill_nan(r.dk);
  gla::test::fill_nan(r.dv);
  gla::test::fill_nan(r.dg);
  gla::test::fill_nan(r.dh0);
  std::optional<gla::View<float, 4>> dh0;
  if (o.initial_state) dh0 = r.dh0;
  if (op == Op::Chunk) {
    chunk_gla_backward_into(q, k, v, g, do_, dht, o, mut_view(r.dq), mut_view(r.dk), mut_view(r.dv), mut_view(r.dg),
                            dh0);
  } else if (op == Op::ChunkSaved) {
    const auto fwd = chunk_gla_keep_states(q, k, v, g, o);
    chunk_gla_backward_from_states_into(q, k, v, g, view(fwd.h), do_, dht, o, mut_view(r.dq), mut_view(r.dk),
                                        mut_view(r.dv), mut_view(r.dg), dh0);
  } else {
    fused_chunk_gla_backward_into(q, k, v, g, do_, dht, o, mut_view(r.dq), mut_view(r.dk), mut_view(r.dv),
                                  mut_view(r.dg), dh0);
  }
  return r;
}

/// Runs op in scalar T against naive_recurrent_gla_backward in double on the same (rounded) inputs.
template <class T>
GradDiffs check_case(Op op, const Case& c) {
  const Inputs in = make_inputs(c);
  const GLAOptions o = options(c, in);
  const Tensor<T, 4> q = in.q.cast<T>(), k = in.k.cast<T>(), v = in.v.cast<T>(), g = in.g.cast<T>(),
                     do_ = in.do_.cast<T>();
  const Tensor<double, 4> qd = q.template cast<double>(), kd = k.template cast<double>(),
                          vd = v.template cast<double>(), gd = g.template cast<double>(),
                          dod = do_.template cast<double>();
  const auto ref = naive_recurrent_gla_backward<double>(qd, kd, vd, view(gd), std::nullopt, dod, dht_of(c, in), o);
  const Grads<T> got = run_op<T>(op, q, k, v, g, do_, dht_of(c, in), o, in.h0.dimensions());
  return {compare(got.dq, ref.dq), compare(got.dk, ref.dk), compare(got.dv, ref.dv), compare(got.dg, *ref.dgk),
          o.initial_state ? compare(got.dh0, ref.dh0) : gla::test::Diff{}};
}

constexpr double kFloatTol = 1e-5;
constexpr double kDoubleTol = 1e-10;
// dh0 is float in this library (as fla's); in the double runs it is as exact as a float can be.
constexpr double kDoubleDh0Tol = 1e-7;
constexpr double kLowpTol = 5e-3;

template <class T>
bool tensors_equal(const Tensor<T, 4>& a, const Tensor<T, 4>& b) {
  if (a.size() != b.size()) return false;
  for (Index i = 0; i < a.size(); ++i)
    if (!(static_cast<double>(a.data()[i]) == static_cast<double>(b.data()[i]))) return false;
  return true;
}

}  // namespace

TEST_CASE("chunk backward: float against the float64 backward around chunk boundaries", "[chunk][backward]") {
  const Op op = GENERATE(Op::Chunk, Op::ChunkSaved);
  const Index T = GENERATE(1, 15, 16, 17, 63, 64, 65, 127, 128, 129);
  const auto [K, V] =
      GENERATE(std::pair<Index, Index>{16, 60}, std::pair<Index, Index>{100, 64}, std::pair<Index, Index>{64, 128});
  const double norm = GENERATE(0.1, 1.0, 16.0);
  Case c;
  c.T = T;
  c.K = K;
  c.V = V;
  c.gate_norm = norm;
  c.B = 2;
  c.H = 3;
  c.seed = static_cast<std::uint64_t>(T * 7 + K + norm * 10);
  const GradDiffs d = check_case<float>(op, c);
  report(std::string(op_name(op)) + " float T=" + std::to_string(T) + " K=" + std::to_string(K) +
             " V=" + std::to_string(V) + " norm=" + std::to_string(norm),
         d);
  INFO(op_name(op) << " T=" << T << " K=" << K << " V=" << V << " norm=" << norm << d.str());
  CHECK(d.ok(kFloatTol, kFloatTol));
}

// A chunk whose gate cumsum stays within ±8 takes the factored intra-chunk products, any other the 16-row
// sub-chunks (docs/chunk_backward.md); this sequence crosses the bound both ways.
TEST_CASE("chunk backward: factored and sub-chunk intra-chunk paths in one sequence", "[chunk][backward]") {
  const Op op = GENERATE(Op::Chunk, Op::FusedChunk);
  // K = 64: the rows' per-chunk work in the fused passes (AVX-512), K = 100 in the separate loops.
  const Index K = GENERATE(100, 64);
  Case c;
  c.T = 5 * 64 + 17;
  c.H = 2;
  c.K = K;
  c.V = 60;
  c.chunk_gate = gla::test::kGatesAcrossFactoredBound;
  const GradDiffs df = check_case<float>(op, c);
  report(std::string(op_name(op)) + " float mixed paths K=" + std::to_string(K), df);
  INFO(op_name(op) << " float K=" << K << df.str());
  CHECK(df.ok(kFloatTol, kFloatTol));
  const GradDiffs dd = check_case<double>(op, c);
  report(std::string(op_name(op)) + " double mixed paths", dd);
  INFO(op_name(op) << " double" << dd.str());
  CHECK(dd.ok(kDoubleTol, kDoubleDh0Tol));
}

TEST_CASE("chunk backward: T=1000 and K, V up to 128", "[chunk][backward]") {
  const Op op = GENERATE(Op::Chunk, Op::ChunkSaved);
  const auto [K, V] = GENERATE(std::pair<Index, Index>{128, 64}, std::pair<Index, Index>{60, 128});
  Case c;
  c.T = 1000;
  c.K = K;
  c.V = V;
  c.H = 1;
  c.gate_norm = 16.0;
  const GradDiffs d = check_case<float>(op, c);
  report(std::string(op_name(op)) + " float T=1000 K=" + std::to_string(K) + " V=" + std::to_string(V), d);
  INFO(op_name(op) << " K=" << K << " V=" << V << d.str());
  CHECK(d.ok(kFloatTol, kFloatTol));
}

// Gradients of 4 MiB and more are written with non-temporal stores (kStreamingOutputBytes); the float64 reference
// here is the double backward, exact to 1e-10 elsewhere, as the naive recurrence would keep T states per head.
// H=4: gradients streamed from inside the reverse sweep, the states kept per head group in the worker's scratch;
// H=1: value tiles, the states h and their gradients dh stored (streamed) for a separate pass; V=100: rows that
// start mid-line.
TEST_CASE("chunk backward: outputs of 4 MiB and more (non-temporal stores) against the double backward",
          "[chunk][backward]") {
  using gla::test::HeadShape;
  const HeadShape sh =
      GENERATE(HeadShape{4, 2048, 128, 128}, HeadShape{1, 4096, 128, 128}, HeadShape{4, 2700, 100, 100});
  Case c;
  sh.apply_to(c);
  c.gate_norm = 16.0;
  const Inputs in = make_inputs(c);
  const GLAOptions o = options(c, in);
  const Tensor<float, 4> q = in.q.cast<float>(), k = in.k.cast<float>(), v = in.v.cast<float>(), g = in.g.cast<float>(),
                         do_ = in.do_.cast<float>();
  const Tensor<double, 4> qd = q.cast<double>(), kd = k.cast<double>(), vd = v.cast<double>(), gd = g.cast<double>(),
                          dod = do_.cast<double>();
  const Grads<float> got = run_op<float>(Op::Chunk, q, k, v, g, do_, view(in.dht), o, in.h0.dimensions());
  const Grads<double> ref = run_op<double>(Op::Chunk, qd, kd, vd, gd, dod, view(in.dht), o, in.h0.dimensions());
  const GradDiffs d{compare(got.dq, ref.dq), compare(got.dk, ref.dk), compare(got.dv, ref.dv),
                    compare(got.dg, ref.dg), compare(got.dh0, ref.dh0)};
  INFO(sh.str() << d.str());
  CHECK(d.ok(kFloatTol, kFloatTol));
}

TEST_CASE("chunk backward: strong decay (per-step log gate near -5) stays finite and accurate", "[chunk][backward]") {
  const Op op = GENERATE(Op::Chunk, Op::ChunkSaved);
  const Index T = GENERATE(16, 64, 65, 300);
  const int chunk = GENERATE(16, 64, 128);
  const Index K = GENERATE(60, 64);  // the separate row loops and the fused passes
  Case c;
  c.T = T;
  c.K = K;
  c.V = 32;
  c.H = 2;
  c.gate_norm = -1;
  c.chunk_size = chunk;
  const GradDiffs d = check_case<float>(op, c);
  report(std::string(op_name(op)) + " float strong T=" + std::to_string(T) + " K=" + std::to_string(K) +
             " chunk=" + std::to_string(chunk),
         d);
  INFO(op_name(op) << " T=" << T << " K=" << K << " chunk=" << chunk << d.str());
  CHECK(d.ok(kFloatTol, kFloatTol));
}

TEST_CASE("chunk backward: varlen with zero-length, length-1 and chunk-straddling sequences",
          "[chunk][backward][varlen]") {
  const Op op = GENERATE(Op::Chunk, Op::ChunkSaved);
  const std::vector<std::int64_t> cu =
      GENERATE(std::vector<std::int64_t>{0, 0, 16}, std::vector<std::int64_t>{0, 1, 1, 65, 200, 201, 330},
               std::vector<std::int64_t>{0, 15, 100, 257, 400}, std::vector<std::int64_t>{0, 0, 0});
  const bool h0 = GENERATE(true, false);
  const bool dht = GENERATE(true, false);
  Case c;
  c.T = cu.back();
  c.cu = cu;
  c.K = 60;
  c.V = 100;
  c.H = 3;
  c.h0 = h0;
  c.dht = dht;
  const GradDiffs d = check_case<float>(op, c);
  report(
      "float varlen N=" + std::to_string(cu.size() - 1) + " h0=" + std::to_string(h0) + " dht=" + std::to_string(dht),
      d);
  INFO(op_name(op) << " cu.size=" << cu.size() << " h0=" << h0 << " dht=" << dht << d.str());
  CHECK(d.ok(kFloatTol, kFloatTol));
}

TEST_CASE("chunk backward: scale, state_v_first, h0/dht on and off, chunk sizes 16 to 128", "[chunk][backward]") {
  const Op op = GENERATE(Op::Chunk, Op::ChunkSaved);
  const int chunk = GENERATE(16, 32, 64, 128);
  const bool v_first = GENERATE(false, true);
  const bool h0 = GENERATE(true, false);
  const bool dht = GENERATE(true, false);
  Case c;
  c.T = 200;
  c.B = 2;
  c.K = 64;
  c.V = 16;
  c.H = 3;
  c.scale = 0.3f;
  c.v_first = v_first;
  c.chunk_size = chunk;
  c.h0 = h0;
  c.dht = dht;
  const GradDiffs d = check_case<float>(op, c);
  report(std::string(op_name(op)) + " float chunk=" + std::to_string(chunk) + " v_first=" + std::to_string(v_first), d);
  INFO(op_name(op) << " chunk=" << chunk << " v_first=" << v_first << " h0=" << h0 << " dht=" << dht << d.str());
  CHECK(d.ok(kFloatTol, kFloatTol));
}

TEST_CASE("chunk backward: double within 1e-10", "[chunk][backward][double]") {
  const Op op = GENERATE(Op::Chunk, Op::ChunkSaved);
  const Index T = GENERATE(1, 17, 63, 65, 129);
  const double norm = GENERATE(0.1, 1.0, 16.0);
  const auto [K, V] = GENERATE(std::pair<Index, Index>{60, 16}, std::pair<Index, Index>{16, 100});
  Case c;
  c.T = T;
  c.B = 2;
  c.H = 3;
  c.K = K;
  c.V = V;
  c.gate_norm = norm;
  const GradDiffs d = check_case<double>(op, c);
  report(std::string(op_name(op)) + " double T=" + std::to_string(T) + " norm=" + std::to_string(norm), d);
  INFO(op_name(op) << " T=" << T << " norm=" << norm << " K=" << K << d.str());
  CHECK(d.ok(kDoubleTol, kDoubleDh0Tol));
}

TEST_CASE("chunk backward: double with strong decay, varlen and state_v_first", "[chunk][backward][double]") {
  const Op op = GENERATE(Op::Chunk, Op::ChunkSaved);
  Case c;
  c.K = 64;
  c.V = 48;
  c.H = 2;
  SECTION("strong decay") {
    c.T = 150;
    c.gate_norm = -1;
  }
  SECTION("varlen") {
    c.cu = {0, 1, 1, 65, 200, 201, 330};
    c.T = 330;
    c.chunk_size = 32;
  }
  SECTION("state_v_first, no dht") {
    c.T = 100;
    c.B = 2;
    c.v_first = true;
    c.dht = false;
    c.chunk_size = 16;
  }
  const GradDiffs d = check_case<double>(op, c);
  report(std::string(op_name(op)) + " double special", d);
  INFO(op_name(op) << d.str());
  CHECK(d.ok(kDoubleTol, kDoubleDh0Tol));
}

TEST_CASE("chunk backward: bf16 and half inputs within 5e-3", "[chunk][backward][lowp]") {
  const Op op = GENERATE(Op::Chunk, Op::ChunkSaved);
  const double norm = GENERATE(1.0, 16.0);
  Case c;
  c.T = 130;
  c.B = 2;
  c.H = 2;
  c.K = 64;
  c.V = 32;
  c.gate_norm = norm;
  {
    const GradDiffs d = check_case<Eigen::bfloat16>(op, c);
    report(std::string(op_name(op)) + " bf16 norm=" + std::to_string(norm), d);
    INFO(op_name(op) << " bf16 norm=" << norm << d.str());
    CHECK(d.ok(kLowpTol, kLowpTol));
  }
  {
    const GradDiffs d = check_case<Eigen::half>(op, c);
    report(std::string(op_name(op)) + " half norm=" + std::to_string(norm), d);
    INFO(op_name(op) << " half norm=" << norm << d.str());
    CHECK(d.ok(kLowpTol, kLowpTol));
  }
}

// bfloat16 inputs (bfloat16 product operands where gla::detail::bf16_operands_faster: AMX builds, or libxsmm on a CPU
// with full-rate bfloat16 dot products): fla's bar of 4e-3 relative RMS on every gradient, over chunk boundaries,
// head dims that are not powers of two, strong decay and a varlen batch.
TEST_CASE("chunk backward: bf16 within 4e-3 around chunk boundaries, strong decay and varlen",
          "[chunk][backward][lowp]") {
  const Op op = GENERATE(Op::Chunk, Op::ChunkSaved);
  Case c;
  c.B = 2;
  c.H = 2;
  SECTION("chunk boundaries") {
    c.T = GENERATE(1, 63, 64, 65, 129);
    c.K = 60;
    c.V = 100;
    c.gate_norm = GENERATE(1.0, 16.0);
  }
  SECTION("strong decay, K = 128") {
    c.T = 150;
    c.K = 128;
    c.V = 64;
    c.gate_norm = -1;
  }
  SECTION("varlen with length-1 and chunk-straddling sequences") {
    c.B = 1;
    c.cu = {0, 1, 66, 67, 200, 263};
    c.T = 263;
    c.K = 100;
    c.V = 60;
  }
  const GradDiffs d = check_case<Eigen::bfloat16>(op, c);
  report(std::string(op_name(op)) + " bf16 T=" + std::to_string(c.T) + " norm=" + std::to_string(c.gate_norm), d);
  INFO(op_name(op) << " bf16 T=" << c.T << " K=" << c.K << " V=" << c.V << " norm=" << c.gate_norm << d.str());
  CHECK(d.ok(4e-3, 4e-3));
}

TEST_CASE("chunk backward: fused_chunk_gla_backward equals chunk_gla_backward", "[chunk][backward]") {
  Case c;
  c.T = 150;
  c.B = 2;
  c.H = 2;
  c.K = 32;
  c.V = 48;
  const bool varlen = GENERATE(false, true);
  if (varlen) {
    c.B = 1;
    c.cu = {0, 15, 100, 150};
  }
  const Inputs in = make_inputs(c);
  const GLAOptions o = options(c, in);
  const Tensor<float, 4> q = in.q.cast<float>(), k = in.k.cast<float>(), v = in.v.cast<float>(), g = in.g.cast<float>(),
                         do_ = in.do_.cast<float>();
  const auto a = run_op<float>(Op::Chunk, q, k, v, g, do_, dht_of(c, in), o, in.h0.dimensions());
  const auto b = run_op<float>(Op::FusedChunk, q, k, v, g, do_, dht_of(c, in), o, in.h0.dimensions());
  CHECK(tensors_equal(a.dq, b.dq));
  CHECK(tensors_equal(a.dk, b.dk));
  CHECK(tensors_equal(a.dv, b.dv));
  CHECK(tensors_equal(a.dg, b.dg));
  CHECK(tensors_equal(a.dh0, b.dh0));
  // And the fused path against the reference on its own.
  const GradDiffs d = check_case<float>(Op::FusedChunk, c);
  INFO(op_name(Op::FusedChunk) << d.str());
  CHECK(d.ok(kFloatTol, kFloatTol));
}

TEST_CASE("chunk backward: the owning API returns dh0 iff initial_state is set and equals the _into API",
          "[chunk][backward]") {
  Case c;
  c.T = 70;
  c.B = 2;
  c.H = 2;
  c.K = 16;
  c.V = 24;
  const bool h0 = GENERATE(true, false);
  c.h0 = h0;
  const Inputs in = make_inputs(c);
  const GLAOptions o = options(c, in);
  const Tensor<float, 4> q = in.q.cast<float>(), k = in.k.cast<float>(), v = in.v.cast<float>(), g = in.g.cast<float>(),
                         do_ = in.do_.cast<float>();
  const auto into = run_op<float>(Op::Chunk, q, k, v, g, do_, view(in.dht), o, in.h0.dimensions());
  for (Op op : {Op::Chunk, Op::FusedChunk}) {
    const ChunkGLAGrads<float> r = op == Op::Chunk ? chunk_gla_backward(q, k, v, g, do_, view(in.dht), o)
                                                   : fused_chunk_gla_backward(q, k, v, g, do_, view(in.dht), o);
    INFO(op_name(op) << " h0=" << h0);
    CHECK(r.dh0.has_value() == h0);
    if (r.dh0) CHECK(tensors_equal(*r.dh0, into.dh0));
    CHECK(tensors_equal(r.dq, into.dq));
    CHECK(tensors_equal(r.dk, into.dk));
    CHECK(tensors_equal(r.dv, into.dv));
    CHECK(tensors_equal(r.dg, into.dg));
  }
}

TEST_CASE("chunk backward: varlen equals per-sequence calls", "[chunk][backward][varlen]") {
  Case c;
  c.cu = {0, 15, 15, 100, 257, 400};
  c.T = 400;
  c.K = 32;
  c.V = 20;
  c.H = 2;
  const Inputs in = make_inputs(c);
  const GLAOptions o = options(c, in);
  const Tensor<float, 4> q = in.q.cast<float>(), k = in.k.cast<float>(), v = in.v.cast<float>(), g = in.g.cast<float>(),
                         do_ = in.do_.cast<float>();
  const auto packed = run_op<float>(Op::Chunk, q, k, v, g, do_, view(in.dht), o, in.h0.dimensions());
  const Index H = c.H, K = c.K, V = c.V;
  for (std::size_t n = 0; n + 1 < c.cu.size(); ++n) {
    const Index t0 = c.cu[n], len = c.cu[n + 1] - c.cu[n];
    const auto slice = [&](const Tensor<float, 4>& t) {
      const std::array<Index, 4> offs{0, t0, 0, 0}, ext{1, len, t.dimension(2), t.dimension(3)};
      return Tensor<float, 4>(t.slice(offs, ext));
    };
    const auto state = [&](const Tensor<float, 4>& t) {
      const std::array<Index, 4> offs{static_cast<Index>(n), 0, 0, 0}, ext{1, H, K, V};
      return Tensor<float, 4>(t.slice(offs, ext));
    };
    const Tensor<float, 4> h0n = state(in.h0), dhtn = state(in.dht);
    GLAOptions on = o;
    on.cu_seqlens.clear();
    on.initial_state = h0n;
    const auto one =
        run_op<float>(Op::Chunk, slice(q), slice(k), slice(v), slice(g), slice(do_), view(dhtn), on, h0n.dimensions());
    INFO("sequence " << n << " len=" << len);
    CHECK(tensors_equal(one.dq, slice(packed.dq)));
    CHECK(tensors_equal(one.dk, slice(packed.dk)));
    CHECK(tensors_equal(one.dv, slice(packed.dv)));
    CHECK(tensors_equal(one.dg, slice(packed.dg)));
    CHECK(tensors_equal(one.dh0, state(packed.dh0)));
    // A zero-length sequence passes the state gradient through unchanged.
    if (len == 0) CHECK(tensors_equal(one.dh0, dhtn));
  }
}

TEST_CASE("chunk backward: results do not depend on the thread count", "[chunk][backward]") {
  const Op op = GENERATE(Op::Chunk, Op::ChunkSaved);
  Case c;
  c.T = 300;
  c.B = 2;
  c.H = 3;
  c.K = 48;
  c.V = 40;
  const Inputs in = make_inputs(c);
  const GLAOptions o = options(c, in);
  const Tensor<float, 4> q = in.q.cast<float>(), k = in.k.cast<float>(), v = in.v.cast<float>(), g = in.g.cast<float>(),
                         do_ = in.do_.cast<float>();
  gla::test::ThreadCountGuard guard;
  gla::set_num_threads(1);
  const auto one = run_op<float>(op, q, k, v, g, do_, view(in.dht), o, in.h0.dimensions());
  gla::set_num_threads(3);
  const auto three = run_op<float>(op, q, k, v, g, do_, view(in.dht), o, in.h0.dimensions());
  INFO(op_name(op));
  CHECK(tensors_equal(one.dq, three.dq));
  CHECK(tensors_equal(one.dk, three.dk));
  CHECK(tensors_equal(one.dv, three.dv));
  CHECK(tensors_equal(one.dg, three.dg));
  CHECK(tensors_equal(one.dh0, three.dh0));
}

namespace {

/// L = Σ o·do_ + Σ final_state·dht of the double recurrence (the function the gradients differentiate).
double loss(const Tensor<double, 4>& q, const Tensor<double, 4>& k, const Tensor<double, 4>& v,
            const Tensor<double, 4>& g, const Tensor<double, 4>& do_, const Tensor<float, 4>& dht,
            const GLAOptions& o) {
  const auto r = naive_recurrent_gla<double>(q, k, v, view(g), std::nullopt, o);
  double l = 0;
  for (Index i = 0; i < r.o.size(); ++i) l += r.o.data()[i] * do_.data()[i];
  for (Index i = 0; i < r.final_state.size(); ++i) l += r.final_state.data()[i] * static_cast<double>(dht.data()[i]);
  return l;
}

/// Central differences of loss() w.r.t. every element of x (step 1e-6, error ~1e-10 relative).
template <class F>
Tensor<double, 4> finite_difference(Tensor<double, 4>& x, F&& f) {
  Tensor<double, 4> d(x.dimensions());
  const double eps = 1e-6;
  for (Index i = 0; i < x.size(); ++i) {
    const double x0 = x.data()[i];
    x.data()[i] = x0 + eps;
    const double lp = f();
    x.data()[i] = x0 - eps;
    const double lm = f();
    x.data()[i] = x0;
    d.data()[i] = (lp - lm) / (2 * eps);
  }
  return d;
}

}  // namespace

TEST_CASE("chunk backward: double gradients equal finite differences of the forward recurrence",
          "[chunk][backward][double]") {
  Case c;
  c.K = 5;
  c.V = 3;
  c.H = 2;
  c.chunk_size = 16;
  c.scale = 0.7f;
  SECTION("fixed length, three chunks") {
    c.B = 2;
    c.T = 37;
  }
  SECTION("varlen with an empty sequence, state_v_first") {
    c.cu = {0, 5, 5, 40};
    c.T = 40;
    c.v_first = true;
  }
  SECTION("strong decay") {
    c.T = 35;
    c.gate_norm = -1;
  }
  Inputs in = make_inputs(c);
  GLAOptions o = options(c, in);
  const auto got = run_op<double>(Op::Chunk, in.q, in.k, in.v, in.g, in.do_, view(in.dht), o, in.h0.dimensions());
  const auto f = [&] { return loss(in.q, in.k, in.v, in.g, in.do_, in.dht, o); };
  const Tensor<double, 4> dq = finite_difference(in.q, f), dk = finite_difference(in.k, f),
                          dv = finite_difference(in.v, f), dg = finite_difference(in.g, f);
  // h0 is float: differentiate through a double copy held by the options.
  Tensor<double, 4> h0d = in.h0.cast<double>();
  Tensor<float, 4> h0f = in.h0;
  const auto fh = [&] {
    for (Index i = 0; i < h0d.size(); ++i) h0f.data()[i] = static_cast<float>(h0d.data()[i]);
    return f();
  };
  o.initial_state = h0f;
  // The h0 step must be representable in float: use a larger step on an exactly representable grid.
  Tensor<double, 4> dh0(h0d.dimensions());
  for (Index i = 0; i < h0d.size(); ++i) {
    const double x0 = h0d.data()[i], eps = 1.0 / 1024;
    h0d.data()[i] = x0 + eps;
    const double lp = fh();
    h0d.data()[i] = x0 - eps;
    const double lm = fh();
    h0d.data()[i] = x0;
    dh0.data()[i] = (lp - lm) / (2 * eps);  // exact: the loss is linear in h0
  }
  const GradDiffs d{compare(got.dq, dq), compare(got.dk, dk), compare(got.dv, dv), compare(got.dg, dg),
                    compare(got.dh0, dh0)};
  report("finite differences", d);
  INFO(d.str());
  // Central differences carry ~1e-16·|L|/1e-6 ≈ 1e-9 absolute noise; under strong decay dg is ~1e-2, hence 1e-6.
  CHECK(d.ok(1e-6, 1e-6));
}

TEST_CASE("chunk backward: fla's golden float64 gradients (ops-chunk_cases)", "[chunk][backward][golden]") {
  const gla::test::Golden gold("ops-chunk_cases");
  for (const char* case_name : {"fixed", "layer_gates", "varlen", "strong_decay", "no_h0"}) {
    const std::string name = case_name;
    const auto meta = gold.meta(name);
    const auto get = [&](const std::string& t) { return gold.get<float, 4>(name + "." + t); };
    const Tensor<float, 4> q = get("q"), k = get("k"), v = get("v"), g = get("gk"), do_ = get("do"), dht = get("dht");
    GLAOptions o;
    o.scale = meta["scale"].get<float>();
    if (!meta["cu_seqlens"].is_null()) o.cu_seqlens = gold.ints(name + ".cu_seqlens");
    Tensor<float, 4> h0;
    if (meta["has_h0"].get<bool>()) {
      h0 = get("h0");
      o.initial_state = h0;
    }
    const auto check = [&](auto tag, double tol, double tol_dh0) {
      using T = decltype(tag);
      const Tensor<T, 4> qt = q.cast<T>(), kt = k.cast<T>(), vt = v.cast<T>(), gt = g.cast<T>(), dot = do_.cast<T>();
      const ChunkGLAGrads<T> r = chunk_gla_backward(qt, kt, vt, gt, dot, view(dht), o);
      GradDiffs d{compare(r.dq, get("dq_ref")),
                  compare(r.dk, get("dk_ref")),
                  compare(r.dv, get("dv_ref")),
                  compare(r.dg, get("dgk_ref")),
                  {}};
      REQUIRE(r.dh0.has_value() == o.initial_state.has_value());
      if (r.dh0) d.dh0 = compare(*r.dh0, get("dh0_ref"));
      report(std::string("golden ") + name + (std::is_same_v<T, float> ? " float" : " double"), d);
      INFO(name << (std::is_same_v<T, float> ? " float" : " double") << d.str());
      CHECK(d.ok(tol, tol_dh0));
    };
    check(float{}, kFloatTol, kFloatTol);
    // The golden gradients are float64 values stored as float32: a double run can only match them to ~1e-7.
    check(double{}, 1e-6, 1e-6);
  }
}

namespace {

/// chunk_bwd_dh's gate modes.
struct Modes {
  bool g = false, gamma = false, gk = false, gv = false;
};

/// Token-by-token reference of chunk_bwd_dh in double from the RAW gates: dh [ΣNT,H,K,V] and dh0 [N,H,K,V],
/// K-first. dS ← dht; for t from last to first: (store at the chunk's last token) dS += scale q_t do_tᵀ;
/// dS ⊙= e^{gk_t[k] + gv_t[v] + g_t + γ}.
std::pair<std::vector<double>, std::vector<double>> dh_reference(
    const Tensor<float, 4>& q, const Tensor<float, 4>& do_, const Tensor<float, 3>& g, const Tensor<float, 1>& gamma,
    const Tensor<float, 4>& gk, const Tensor<float, 4>& gv, const Tensor<float, 4>* dht, const Modes& m,
    const std::vector<std::int64_t>& cu, int chunk, double scale) {
  const Index B = q.dimension(0), T = q.dimension(1), H = q.dimension(2), K = q.dimension(3), V = do_.dimension(3);
  const auto seqs = detail::make_sequences(B, T, cu);
  std::vector<double> dh, dh0;
  for (std::size_t n = 0; n < seqs.size(); ++n) {
    const auto sq = seqs[n];
    const Index NT = (sq.len + chunk - 1) / chunk;
    std::vector<double> seq_dh(static_cast<std::size_t>(NT * H * K * V));
    for (Index hh = 0; hh < H; ++hh) {
      std::vector<double> dS(static_cast<std::size_t>(K * V), 0.0);
      if (dht)
        for (Index i = 0; i < K * V; ++i)
          dS[static_cast<std::size_t>(i)] = dht->data()[(static_cast<Index>(n) * H + hh) * K * V + i];
      for (Index t = sq.len - 1; t >= 0; --t) {
        if (t % chunk == chunk - 1 || t == sq.len - 1)
          std::copy(dS.begin(), dS.end(), seq_dh.begin() + ((t / chunk) * H + hh) * K * V);
        const Index row = (sq.b * T + sq.t0 + t) * H + hh;
        double sc = 0;
        if (m.g) sc += g.data()[row];
        if (m.gamma) sc += gamma(hh);
        for (Index a = 0; a < K; ++a)
          for (Index c = 0; c < V; ++c) {
            double& x = dS[static_cast<std::size_t>(a * V + c)];
            x += scale * q.data()[row * K + a] * static_cast<double>(do_.data()[row * V + c]);
            double e = sc;
            if (m.gk) e += gk.data()[row * K + a];
            if (m.gv) e += gv.data()[row * V + c];
            x *= std::exp(e);
          }
      }
      dh0.insert(dh0.end(), dS.begin(), dS.end());
    }
    dh.insert(dh.end(), seq_dh.begin(), seq_dh.end());
  }
  return {dh, dh0};
}

/// [.., D1, D2] → [.., D2, D1] over the last two axes of a flat buffer of `mats` matrices.
std::vector<double> transpose_last2(const std::vector<double>& x, Index mats, Index d1, Index d2) {
  std::vector<double> y(x.size());
  for (Index m = 0; m < mats; ++m)
    for (Index i = 0; i < d1; ++i)
      for (Index j = 0; j < d2; ++j)
        y[static_cast<std::size_t>(m * d1 * d2 + j * d1 + i)] = x[static_cast<std::size_t>(m * d1 * d2 + i * d2 + j)];
  return y;
}

}  // namespace

TEST_CASE("chunk_bwd_dh: every gate mode against the float64 reverse recurrence", "[chunk][backward][dh]") {
  const int mode = GENERATE(0, 1, 2, 3, 4, 5);  // none, g, g_gamma, gk, gv, all four
  const Modes m{mode == 1 || mode == 5, mode == 2 || mode == 5, mode == 3 || mode == 5, mode == 4 || mode == 5};
  const int layout = GENERATE(0, 1, 2);  // fixed length; varlen; fixed length V-first without dht and h0
  const Index H = 2, K = 20, V = 12;
  const int chunk = 16;
  Index B = 2, T = 50;
  std::vector<std::int64_t> cu;
  if (layout == 1) {
    B = 1;
    cu = {0, 0, 1, 17, 50, 82};
    T = 82;
  }
  const bool v_first = layout == 2, with_dht = layout != 2, with_h0 = layout != 2;
  auto rng = gla::test::rng(static_cast<std::uint64_t>(100 + mode * 3 + layout));
  Tensor<float, 4> q(B, T, H, K), k(B, T, H, K), v(B, T, H, V), do_(B, T, H, V), gk(B, T, H, K), gv(B, T, H, V);
  Tensor<float, 3> g(B, T, H);
  Tensor<float, 1> gamma(H);
  gla::test::fill_uniform(q, rng);
  gla::test::fill_uniform(k, rng);
  gla::test::fill_normal(v, rng);
  gla::test::fill_normal(do_, rng);
  gla::test::fill_gate(gk, rng, 2.0);
  gla::test::fill_gate(gv, rng, 2.0);
  gla::test::fill_gate(g, rng, 1.0);
  gla::test::fill_uniform(gamma, rng, -0.5, -0.01);
  const Index N = cu.empty() ? B : static_cast<Index>(cu.size()) - 1;
  Tensor<float, 4> dht(N, H, K, V), h0(N, H, K, V);
  gla::test::fill_normal(dht, rng);
  gla::test::fill_normal(h0, rng);

  GLAOptions o;
  o.cu_seqlens = cu;
  o.chunk_size = chunk;
  o.scale = 0.4f;
  o.state_v_first = v_first;
  if (with_h0) o.initial_state = h0;
  const Tensor<float, 3> gc = chunk_local_cumsum(g, chunk, false, {}, cu);
  const Tensor<float, 4> gkc = chunk_local_cumsum(gk, chunk, false, {}, cu),
                         gvc = chunk_local_cumsum(gv, chunk, false, {}, cu);
  ChunkHGates gates;
  if (m.g) gates.g.emplace(view(gc));
  if (m.gamma) gates.g_gamma.emplace(view(gamma));
  if (m.gk) gates.gk.emplace(view(gkc));
  if (m.gv) gates.gv.emplace(view(gvc));
  // dht/dh0 follow the state layout: the V-first run gets no dht here, so only dh's layout changes.
  std::optional<ConstTensorMap<float, 4>> dht_v;
  if (with_dht) dht_v.emplace(view(dht));
  const ChunkBwdDhResult r = chunk_bwd_dh(q, k, v, gates, do_, dht_v, o);
  auto [ref_dh, ref_dh0] = dh_reference(q, do_, g, gamma, gk, gv, with_dht ? &dht : nullptr, m, cu, chunk, 0.4);
  Index NT = 0;  // chunks per batch row (fixed length) or in total (varlen)
  if (cu.empty())
    NT = (T + chunk - 1) / chunk;
  else
    for (std::size_t n = 0; n + 1 < cu.size(); ++n) NT += (cu[n + 1] - cu[n] + chunk - 1) / chunk;
  if (v_first) {
    ref_dh = transpose_last2(ref_dh, static_cast<Index>(ref_dh.size()) / (K * V), K, V);
    ref_dh0 = transpose_last2(ref_dh0, N * H, K, V);
  }
  const std::array<Index, 5> expect_dims = v_first ? std::array<Index, 5>{cu.empty() ? B : 1, NT, H, V, K}
                                                   : std::array<Index, 5>{cu.empty() ? B : 1, NT, H, K, V};
  for (int i = 0; i < 5; ++i) CHECK(r.dh.dimension(i) == expect_dims[static_cast<std::size_t>(i)]);
  // Fixed-length batches store chunk c of row b at [b, c]; that is the reference's sequence-major order.
  const Diff d = gla::test::compare_ptr(r.dh.data(), ref_dh.data(), static_cast<Index>(ref_dh.size()));
  INFO("mode=" << mode << " layout=" << layout << " dh: " << d.str());
  CHECK(static_cast<std::size_t>(r.dh.size()) == ref_dh.size());
  CHECK(gla::test::ok(d, 1e-6));
  CHECK(r.dh0.has_value() == with_h0);
  if (r.dh0) {
    const Diff d0 = gla::test::compare_ptr(r.dh0->data(), ref_dh0.data(), static_cast<Index>(ref_dh0.size()));
    INFO("dh0: " << d0.str());
    CHECK(gla::test::ok(d0, 1e-6));
  }
}

TEST_CASE("chunk_bwd_dh: double inputs with gk = cumsum(g) give the recurrence's dh0", "[chunk][backward][dh]") {
  // dh0 of chunk_bwd_dh with gk = chunk_local_cumsum(g) is ∂L/∂h0 of the GLA recurrence (the same loss).
  Case c;
  c.T = 100;
  c.B = 2;
  c.H = 2;
  c.K = 24;
  c.V = 16;
  c.chunk_size = 32;
  const Inputs in = make_inputs(c);
  const GLAOptions o = options(c, in);
  const Tensor<float, 4> gkf = chunk_local_cumsum(in.g, 32);
  ChunkHGates gates;
  gates.gk.emplace(view(gkf));
  const ChunkBwdDhResult r = chunk_bwd_dh(in.q, in.k, in.v, gates, in.do_, view(in.dht), o);
  const auto ref =
      naive_recurrent_gla_backward<double>(in.q, in.k, in.v, view(in.g), std::nullopt, in.do_, view(in.dht), o);
  REQUIRE(r.dh0.has_value());
  const Diff d = compare(*r.dh0, ref.dh0);
  INFO(d.str());
  // The gates reach chunk_bwd_dh as float cumsums; that rounding bounds the agreement.
  CHECK(gla::test::ok(d, 1e-6));
}

// ---------------------------------------------------------------------------------------------------------
// Validation: every error path names the function and the argument; nothing is written on error.

namespace {

struct ErrorInputs {
  Index B = 2, T = 20, H = 2, K = 8, V = 6;
  Tensor<float, 4> q{B, T, H, K}, k{B, T, H, K}, v{B, T, H, V}, g{B, T, H, K}, do_{B, T, H, V};
  Tensor<float, 4> dq{B, T, H, K}, dk{B, T, H, K}, dv{B, T, H, V}, dg{B, T, H, K};
  Tensor<float, 4> dht{B, H, K, V}, dh0{B, H, K, V}, h0{B, H, K, V};
  ErrorInputs() {
    for (auto* t : {&q, &k, &v, &do_, &dht, &h0}) t->setConstant(0.5f);
    g.setConstant(-0.1f);
    for (auto* t : {&dq, &dk, &dv, &dg, &dh0}) gla::test::fill_nan(*t);
  }
  bool untouched() const {
    for (const auto* t : {&dq, &dk, &dv, &dg, &dh0})
      for (Index i = 0; i < t->size(); ++i)
        if (!std::isnan(t->data()[i])) return false;
    return true;
  }
};

}  // namespace

TEST_CASE("chunk backward: rowsums_of_product of a transposed state and its gradient", "[chunk][backward]") {
  // out[a] = Σ_v S[a,v] dH[a,v] with S given as St [V×K]: 16×16 register blocks where K and V allow, Eigen else.
  auto rng = gla::test::rng(11);
  std::uniform_real_distribution<float> unit(-1.f, 1.f);
  const std::vector<std::array<Index, 2>> shapes{{16, 16}, {64, 128}, {128, 64}, {60, 100}, {48, 20}, {1, 1}};
  for (const auto& [K, V] : shapes) {
    std::vector<float> St(static_cast<std::size_t>(V * K)), dH(static_cast<std::size_t>(K * V)), out(K, -1.f);
    for (float& x : St) x = unit(rng);
    for (float& x : dH) x = unit(rng);
    gla::detail::rowsums_of_product(St.data(), dH.data(), K, V, out.data());
    INFO("K " << K << " V " << V);
    for (Index a = 0; a < K; ++a) {
      double want = 0, bound = 0;
      for (Index c = 0; c < V; ++c) {
        const double term = double(St[static_cast<std::size_t>(c * K + a)]) * dH[static_cast<std::size_t>(a * V + c)];
        want += term;
        bound += std::abs(term);
      }
      // float accumulation in any order: |error| <= V·2^-24·Σ|terms| (with room for the product's rounding)
      CHECK(std::abs(out[static_cast<std::size_t>(a)] - want) <= (V + 2) * 0x1p-24 * bound);
    }
  }
}

TEST_CASE("chunk backward: validation errors name the function and the argument", "[chunk][backward][errors]") {
  const Op op = GENERATE(Op::Chunk, Op::FusedChunk);
  const std::string fn = op_name(op);
  ErrorInputs e;
  const auto call = [&](const Tensor<float, 4>& q, const Tensor<float, 4>& k, const Tensor<float, 4>& v,
                        const Tensor<float, 4>& g, const Tensor<float, 4>& do_,
                        std::optional<ConstTensorMap<float, 4>> dht, const GLAOptions& o, Tensor<float, 4>& dq,
                        Tensor<float, 4>& dk, Tensor<float, 4>& dv, Tensor<float, 4>& dg, Tensor<float, 4>& dh0) {
    std::optional<gla::View<float, 4>> dh0v;
    dh0v.emplace(mut_view(dh0));
    if (op == Op::Chunk)
      chunk_gla_backward_into(q, k, v, g, do_, dht, o, mut_view(dq), mut_view(dk), mut_view(dv), mut_view(dg), dh0v);
    else
      fused_chunk_gla_backward_into(q, k, v, g, do_, dht, o, mut_view(dq), mut_view(dk), mut_view(dv), mut_view(dg),
                                    dh0v);
  };
  const std::optional<ConstTensorMap<float, 4>> dht = view(e.dht);
  GLAOptions o;
  Tensor<float, 4> bad_k(e.B, e.T, e.H, e.K + 1), bad_v(e.B, e.T + 1, e.H, e.V), bad_g(e.B, e.T, e.H, e.K + 2),
      bad_do(e.B, e.T, e.H, e.V + 1), bad_dht(e.B, e.H, e.V, e.K), bad_q(e.B, e.T, e.H, 0);
  const auto expect_error = [&](const std::string& what, auto&& f) {
    REQUIRE_THROWS_AS(f(), gla::Error);
    CHECK_GLA_ERROR(fn + ": " + what, f());
    CHECK(e.untouched());
  };
  expect_error("do_ is [2,20,2,7], expected [B=2,T=20,H=2,V=6]",
               [&] { call(e.q, e.k, e.v, e.g, bad_do, dht, o, e.dq, e.dk, e.dv, e.dg, e.dh0); });
  expect_error("q is [2,20,2,0]", [&] { call(bad_q, e.k, e.v, e.g, e.do_, dht, o, e.dq, e.dk, e.dv, e.dg, e.dh0); });
  expect_error("k is [2,20,2,9], expected [B=2,T=20,H=2,K=8]",
               [&] { call(e.q, bad_k, e.v, e.g, e.do_, dht, o, e.dq, e.dk, e.dv, e.dg, e.dh0); });
  expect_error("v is [2,21,2,6]", [&] { call(e.q, e.k, bad_v, e.g, e.do_, dht, o, e.dq, e.dk, e.dv, e.dg, e.dh0); });
  expect_error("g is [2,20,2,10]", [&] { call(e.q, e.k, e.v, bad_g, e.do_, dht, o, e.dq, e.dk, e.dv, e.dg, e.dh0); });
  expect_error("dht is [2,2,6,8], expected [N=2,H=2,K=8,V=6]",
               [&] { call(e.q, e.k, e.v, e.g, e.do_, view(bad_dht), o, e.dq, e.dk, e.dv, e.dg, e.dh0); });
  {
    GLAOptions vf;
    vf.state_v_first = true;
    expect_error("dht (state_v_first) is [2,2,8,6], expected [N=2,H=2,V=6,K=8]",
                 [&] { call(e.q, e.k, e.v, e.g, e.do_, dht, vf, e.dq, e.dk, e.dv, e.dg, bad_dht); });
  }
  {
    Tensor<float, 4> bdq(e.B, e.T, e.H, e.K + 1), bdv(e.B, e.T, e.H, e.V + 1), bdh0(e.B, e.H, e.K, e.V + 1);
    gla::test::fill_nan(bdq);
    gla::test::fill_nan(bdv);
    gla::test::fill_nan(bdh0);
    expect_error("dq is [2,20,2,9]", [&] { call(e.q, e.k, e.v, e.g, e.do_, dht, o, bdq, e.dk, e.dv, e.dg, e.dh0); });
    expect_error("dk is [2,20,2,9]", [&] { call(e.q, e.k, e.v, e.g, e.do_, dht, o, e.dq, bdq, e.dv, e.dg, e.dh0); });
    expect_error("dv is [2,20,2,7]", [&] { call(e.q, e.k, e.v, e.g, e.do_, dht, o, e.dq, e.dk, bdv, e.dg, e.dh0); });
    expect_error("dg is [2,20,2,9]", [&] { call(e.q, e.k, e.v, e.g, e.do_, dht, o, e.dq, e.dk, e.dv, bdq, e.dh0); });
    Tensor<float, 4> h0(e.B, e.H, e.K, e.V);
    h0.setZero();
    GLAOptions with_h0;
    with_h0.initial_state = h0;
    expect_error("dh0 is [2,2,8,7], expected [N=2,H=2,K=8,V=6]",
                 [&] { call(e.q, e.k, e.v, e.g, e.do_, dht, with_h0, e.dq, e.dk, e.dv, e.dg, bdh0); });
    // The output contract: dh0 is given if and only if initial_state is.
    expect_error("dh0 is given, expected none since initial_state is not given",
                 [&] { call(e.q, e.k, e.v, e.g, e.do_, dht, o, e.dq, e.dk, e.dv, e.dg, e.dh0); });
  }
  {
    GLAOptions bad;
    bad.chunk_size = 24;
    expect_error("chunk_size is 24", [&] { call(e.q, e.k, e.v, e.g, e.do_, dht, bad, e.dq, e.dk, e.dv, e.dg, e.dh0); });
  }
  {
    GLAOptions bad;
    bad.cu_seqlens = {0, 20};
    expect_error("the batch size is 2, expected 1 when cu_seqlens is given",
                 [&] { call(e.q, e.k, e.v, e.g, e.do_, dht, bad, e.dq, e.dk, e.dv, e.dg, e.dh0); });
  }
  {
    GLAOptions bad;
    Tensor<float, 4> h0_wrong(3, e.H, e.K, e.V);
    bad.initial_state = h0_wrong;
    expect_error("initial_state has 3 states, expected N = 2",
                 [&] { call(e.q, e.k, e.v, e.g, e.do_, dht, bad, e.dq, e.dk, e.dv, e.dg, e.dh0); });
  }
  {
    GLAOptions bad;
    bad.reverse = true;
    expect_error("reverse", [&] { call(e.q, e.k, e.v, e.g, e.do_, dht, bad, e.dq, e.dk, e.dv, e.dg, e.dh0); });
  }
  {
    GLAOptions bad;
    bad.gamma = {0.9f};
    expect_error("gamma", [&] { call(e.q, e.k, e.v, e.g, e.do_, dht, bad, e.dq, e.dk, e.dv, e.dg, e.dh0); });
  }
  {
    GLAOptions bad;
    bad.scale = std::numeric_limits<float>::infinity();
    expect_error("scale is inf", [&] { call(e.q, e.k, e.v, e.g, e.do_, dht, bad, e.dq, e.dk, e.dv, e.dg, e.dh0); });
  }
  {
    // Varlen whose cu_seqlens does not end at T.
    Tensor<float, 4> q1(1, e.T, e.H, e.K), k1(1, e.T, e.H, e.K), v1(1, e.T, e.H, e.V), g1(1, e.T, e.H, e.K),
        do1(1, e.T, e.H, e.V), dq1(1, e.T, e.H, e.K), dk1(1, e.T, e.H, e.K), dv1(1, e.T, e.H, e.V),
        dg1(1, e.T, e.H, e.K), dh01(2, e.H, e.K, e.V);
    GLAOptions bad;
    bad.cu_seqlens = {0, 5, 19};
    expect_error("cu_seqlens[N] is 19, expected T = 20",
                 [&] { call(q1, k1, v1, g1, do1, dht, bad, dq1, dk1, dv1, dg1, dh01); });
  }
}

// chunk_gla's forward keeps the state before every chunk (single sweep for >= 4 (sequence, head) pairs, else the
// two phases); the backward takes them in place (state_v_first) or transposes each (K-first), in the reverse sweep
// (enough pairs) or in the separate pass over (chunk, head) (a pair split into value tiles).
TEST_CASE("chunk backward: the forward's states, every forward and backward path and both layouts",
          "[chunk][backward]") {
  const bool v_first = GENERATE(false, true);
  Case c;
  c.K = 60;
  c.V = 100;
  SECTION("one pair: two-phase forward, separate backward pass") { c.T = 300; }
  SECTION("six pairs: single sweep, backward in the reverse sweep") {
    c.B = 2;
    c.H = 3;
    c.T = 130;
  }
  SECTION("varlen, one head: length-1 and chunk-straddling sequences") {
    c.cu = {0, 1, 66, 67, 200};
    c.T = 200;
  }
  SECTION("varlen, three heads, strong decay, chunk 16") {
    c.cu = {0, 1, 66, 67, 200};
    c.T = 200;
    c.H = 3;
    c.gate_norm = -1;
    c.chunk_size = 16;
  }
  c.v_first = v_first;
  const Inputs in = make_inputs(c);
  const GLAOptions o = [&] {
    GLAOptions x = options(c, in);
    x.output_final_state = true;
    return x;
  }();
  const Tensor<float, 4> q = in.q.cast<float>(), k = in.k.cast<float>(), v = in.v.cast<float>(), g = in.g.cast<float>();
  const GLAResult<float> plain = chunk_gla(q, k, v, g, o);
  const GLAResultWithStates<float> kept = chunk_gla_keep_states(q, k, v, g, o);
  INFO("T=" << c.T << " H=" << c.H << " v_first=" << v_first);
  // The outputs do not change when the states are kept.
  CHECK(tensors_equal(plain.o, kept.o));
  CHECK(tensors_equal(*plain.final_state, *kept.final_state));
  // The states are chunk_fwd_h's for the chunk-local cumsum of g.
  const std::array<Index, 5> dims = chunk_gla_states_dims(c.B, c.T, c.H, c.K, c.V, o);
  CHECK(kept.h.dimensions() == Eigen::DSizes<Index, 5>(dims));
  const Tensor<float, 4> gc = chunk_local_cumsum(view(g), c.chunk_size, false, {}, c.cu);
  ChunkHGates gates;
  gates.gk.emplace(view(gc));
  const ChunkHResult ref = chunk_fwd_h(k, view(v), gates, o);
  const Diff dh = compare(kept.h, ref.h);
  INFO("h against chunk_fwd_h: " << dh.str());
  CHECK(gla::test::ok(dh, 1e-6));
  // And the backward from them is as accurate as the recomputing one.
  const GradDiffs d = check_case<float>(Op::ChunkSaved, c);
  INFO(d.str());
  CHECK(d.ok(kFloatTol, kFloatTol));
}

TEST_CASE("chunk backward: the forward's states are validated on both sides", "[chunk][backward][errors]") {
  ErrorInputs e;
  GLAOptions o;
  Tensor<float, 5> h(chunk_gla_states_dims(e.B, e.T, e.H, e.K, e.V, o));
  CHECK(h.dimensions() == Eigen::DSizes<Index, 5>(2, 1, 2, 8, 6));
  h.setZero();
  Tensor<float, 5> bad_h(2, 2, 2, 8, 6), h_vf(2, 1, 2, 6, 8);
  h_vf.setZero();
  Tensor<float, 4> o_out(e.B, e.T, e.H, e.V);
  gla::test::fill_nan(o_out);
  const auto backward = [&](const GLAOptions& opts, ConstTensorMap<float, 5> hv) {
    chunk_gla_backward_from_states_into(e.q, e.k, e.v, e.g, hv, e.do_, view(e.dht), opts, mut_view(e.dq),
                                        mut_view(e.dk), mut_view(e.dv), mut_view(e.dg));
  };
  const auto forward = [&](const GLAOptions& opts, TensorMap<float, 5> hv) {
    chunk_gla_keep_states_into(e.q, e.k, e.v, e.g, opts, mut_view(o_out), std::nullopt, hv);
  };
  const auto untouched = [&] {
    for (Index i = 0; i < o_out.size(); ++i)
      if (!std::isnan(o_out.data()[i])) return false;
    return e.untouched();
  };
  const auto expect_error = [&](const std::string& what, auto&& f) {
    REQUIRE_THROWS_AS(f(), gla::Error);
    CHECK_GLA_ERROR(what, f());
    CHECK(untouched());
  };
  expect_error("chunk_gla_backward_from_states: h is [2,2,2,8,6], expected [B=2,NT=1,H=2,K=8,V=6]",
               [&] { backward(o, view(bad_h)); });
  expect_error("chunk_gla_keep_states: h is [2,2,2,8,6], expected [B=2,NT=1,H=2,K=8,V=6]",
               [&] { forward(o, mut_view(bad_h)); });
  {
    GLAOptions vf;
    vf.state_v_first = true;
    expect_error("chunk_gla_backward_from_states: h (state_v_first) is [2,1,2,8,6], expected [B=2,NT=1,H=2,V=6,K=8]",
                 [&] { backward(vf, view(h)); });
    Tensor<float, 4> dht_vf(e.B, e.H, e.V, e.K);
    dht_vf.setZero();
    CHECK_NOTHROW(chunk_gla_backward_from_states_into(e.q, e.k, e.v, e.g, view(h_vf), e.do_, view(dht_vf), vf,
                                                      mut_view(e.dq), mut_view(e.dk), mut_view(e.dv), mut_view(e.dg)));
    for (auto* t : {&e.dq, &e.dk, &e.dv, &e.dg}) gla::test::fill_nan(*t);
  }
  {
    GLAOptions packed;
    packed.cu_seqlens = {0, 5, 19, 20};
    Tensor<float, 4> q1(1, e.T, e.H, e.K), k1(1, e.T, e.H, e.K), v1(1, e.T, e.H, e.V), g1(1, e.T, e.H, e.K),
        o1(1, e.T, e.H, e.V);
    q1.setZero();
    k1.setZero();
    v1.setZero();
    g1.setZero();
    CHECK(chunk_gla_states_dims(1, e.T, e.H, e.K, e.V, packed) == std::array<Index, 5>{1, 3, 2, 8, 6});
    Tensor<float, 5> h1(1, 2, 2, 8, 6);
    CHECK_GLA_ERROR("chunk_gla_keep_states: h is [1,2,2,8,6], expected [1=1,ΣNT=3,H=2,K=8,V=6]",
                    chunk_gla_keep_states_into(q1, k1, v1, g1, packed, mut_view(o1), std::nullopt, mut_view(h1)));
  }
  // The forward's h is an output: it may not overlap an input or another output; the backward's is an input: no
  // output may overlap it.
  {
    TensorMap<float, 5> over_o(o_out.data(), 2, 1, 2, 8, 6);  // o has 2·20·2·6 floats, more than h's 192
    expect_error("chunk_gla_keep_states: output h overlaps output o", [&] { forward(o, over_o); });
    TensorMap<float, 5> over_k(e.k.data(), 2, 1, 2, 8, 6);
    expect_error("chunk_gla_keep_states: output h overlaps input k", [&] { forward(o, over_k); });
    ConstTensorMap<float, 5> over_dq(e.dq.data(), 2, 1, 2, 8, 6);
    expect_error("chunk_gla_backward_from_states: output dq overlaps input h", [&] { backward(o, over_dq); });
  }
  CHECK_GLA_ERROR("chunk_gla_states_dims: chunk_size is 24", [&] {
    GLAOptions bad;
    bad.chunk_size = 24;
    return chunk_gla_states_dims(1, 8, 1, 4, 4, bad);
  }());
}

TEST_CASE("fused_chunk_gla_backward: max_seqlen is validated like its forward", "[chunk][backward][errors]") {
  ErrorInputs e;
  GLAOptions o;
  const auto call = [&](const GLAOptions& opts) {
    return fused_chunk_gla_backward(e.q, e.k, e.v, e.g, e.do_, view(e.dht), opts);
  };
  o.max_seqlen = -1;
  REQUIRE_THROWS_AS(call(o), gla::Error);
  CHECK_GLA_ERROR("fused_chunk_gla_backward: max_seqlen is -1, expected >= 0", call(o));
  o.max_seqlen = 19;
  REQUIRE_THROWS_AS(call(o), gla::Error);
  CHECK_GLA_ERROR("fused_chunk_gla_backward: sequence 0 has 20 tokens, expected at most max_seqlen = 19", call(o));
  o.max_seqlen = 20;
  CHECK_NOTHROW(call(o));
  // chunk_gla_backward has no max_seqlen (as chunk_gla): the option is not checked there.
  o.max_seqlen = 19;
  CHECK_NOTHROW(chunk_gla_backward(e.q, e.k, e.v, e.g, e.do_, view(e.dht), o));
}

TEST_CASE("chunk_bwd_dh: validation errors name the function and the argument", "[chunk][backward][dh][errors]") {
  ErrorInputs e;
  Tensor<float, 3> g3(e.B, e.T, e.H), bad_g3(e.B, e.T + 1, e.H);
  Tensor<float, 4> gv(e.B, e.T, e.H, e.V), bad_gk(e.B, e.T, e.H, e.K + 1), bad_gv(e.B, e.T, e.H, e.V + 1),
      bad_do(e.B, e.T, e.H, e.V + 1), bad_dht(e.B + 1, e.H, e.K, e.V);
  Tensor<float, 1> bad_gamma(e.H + 1);
  const std::optional<ConstTensorMap<float, 4>> dht = view(e.dht);
  const auto expect_error = [&](const std::string& what, auto&& f) {
    REQUIRE_THROWS_AS(f(), gla::Error);
    CHECK_GLA_ERROR("chunk_bwd_dh: " + what, f());
  };
  GLAOptions o;
  {
    ChunkHGates gt;
    expect_error("do_ is [2,20,2,7], expected [B=2,T=20,H=2,V=6]",
                 [&] { chunk_bwd_dh(e.q, e.k, e.v, gt, bad_do, dht, o); });
    expect_error("dht is [3,2,8,6], expected [N=2,H=2,K=8,V=6]",
                 [&] { chunk_bwd_dh(e.q, e.k, e.v, gt, e.do_, view(bad_dht), o); });
    expect_error("k is [2,20,2,9]", [&] { chunk_bwd_dh(e.q, bad_gk, e.v, gt, e.do_, dht, o); });
    GLAOptions bad;
    bad.chunk_size = 8;
    expect_error("chunk_size is 8", [&] { chunk_bwd_dh(e.q, e.k, e.v, gt, e.do_, dht, bad); });
    bad = GLAOptions{};
    bad.reverse = true;
    expect_error("reverse", [&] { chunk_bwd_dh(e.q, e.k, e.v, gt, e.do_, dht, bad); });
    bad = GLAOptions{};
    bad.state_clamp_max = 1.0f;
    expect_error("gamma/state_clamp_min/state_clamp_max", [&] { chunk_bwd_dh(e.q, e.k, e.v, gt, e.do_, dht, bad); });
    bad = GLAOptions{};
    bad.state_v_first = true;
    expect_error("dht (state_v_first) is [2,2,8,6], expected [N=2,H=2,V=6,K=8]",
                 [&] { chunk_bwd_dh(e.q, e.k, e.v, gt, e.do_, dht, bad); });
    bad = GLAOptions{};
    Tensor<float, 4> h0_wrong(e.B, e.H, e.K + 1, e.V);
    bad.initial_state = h0_wrong;
    expect_error("initial_state is [2,2,9,6], expected [N=2,H=2,K=8,V=6]",
                 [&] { chunk_bwd_dh(e.q, e.k, e.v, gt, e.do_, dht, bad); });
  }
  {
    ChunkHGates gt;
    gt.g.emplace(view(bad_g3));
    expect_error("g is [2,21,2], expected [B=2,T=20,H=2]", [&] { chunk_bwd_dh(e.q, e.k, e.v, gt, e.do_, dht, o); });
  }
  {
    ChunkHGates gt;
    gt.gk.emplace(view(bad_gk));
    expect_error("gk is [2,20,2,9]", [&] { chunk_bwd_dh(e.q, e.k, e.v, gt, e.do_, dht, o); });
  }
  {
    ChunkHGates gt;
    gt.gv.emplace(view(bad_gv));
    expect_error("gv is [2,20,2,7]", [&] { chunk_bwd_dh(e.q, e.k, e.v, gt, e.do_, dht, o); });
  }
  {
    ChunkHGates gt;
    gt.g_gamma.emplace(view(bad_gamma));
    expect_error("g_gamma is [3], expected [H=2]", [&] { chunk_bwd_dh(e.q, e.k, e.v, gt, e.do_, dht, o); });
  }
}
