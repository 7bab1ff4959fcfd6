// chunk_gla and fused_chunk_gla forward against the float64 recurrence: shapes around chunk boundaries,
// non-power-of-two head dims, varlen with length-0/1 and chunk-straddling sequences, gate strengths, h0,
// scale, state_v_first, state carry, and every scalar type.

#include <gla/chunk.hpp>
#include <gla/fused_chunk.hpp>
#include <gla/naive.hpp>

#include "support/catch.hpp"
#include "support/test_utils.hpp"

#include <cstdlib>
#include <iostream>

using namespace gla;
using gla::test::compare;

namespace {

enum class Op { Chunk, FusedChunk, FusedChunkNoFallback };

const char* op_name(Op op) {
  switch (op) {
    case Op::Chunk:
      return "chunk_gla";
    case Op::FusedChunk:
      return "fused_chunk_gla";
    default:
      return "fused_chunk_gla(no fallback)";
  }
}

/// Inputs of one case in double (the reference's precision) plus their conversion to the tested scalar.
struct Case {
  Index B = 1, T = 64, H = 1, K = 16, V = 16;
  double gate_norm = 1.0;  // logsigmoid(U)/gate_norm; <= 0 → strong decay
  bool h0 = true;
  std::vector<std::int64_t> cu;
  std::optional<float> scale;
  bool v_first = false;
  int chunk_size = 64;
  std::uint64_t seed = 1;
  // When set: the per-step log gate of chunk j (64 tokens) is chunk_gate[j % size] · U[0.9, 1.1) — chunks on
  // either side of the factored path's bound in one sequence.
  std::vector<double> chunk_gate;
};

struct Inputs {
  Tensor<double, 4> q, k, v, g;
  Tensor<float, 4> h0;
};

Inputs make_inputs(const Case& c) {
  auto rng = gla::test::rng(c.seed);
  Inputs in;
  in.q = Tensor<double, 4>(c.B, c.T, c.H, c.K);
  in.k = Tensor<double, 4>(c.B, c.T, c.H, c.K);
  in.v = Tensor<double, 4>(c.B, c.T, c.H, c.V);
  in.g = Tensor<double, 4>(c.B, c.T, c.H, c.K);
  gla::test::fill_uniform(in.q, rng);
  gla::test::fill_uniform(in.k, rng);
  gla::test::fill_normal(in.v, rng);
  if (!c.chunk_gate.empty())
    gla::test::fill_chunk_gates(in.g, rng, c.chunk_gate);
  else if (c.gate_norm > 0)
    gla::test::fill_gate(in.g, rng, c.gate_norm);
  else
    gla::test::fill_strong_gate(in.g, rng);
  const Index N = c.cu.empty() ? c.B : static_cast<Index>(c.cu.size()) - 1;
  in.h0 = c.v_first ? Tensor<float, 4>(N, c.H, c.V, c.K) : Tensor<float, 4>(N, c.H, c.K, c.V);
  gla::test::fill_normal(in.h0, rng);
  return in;
}

GLAOptions options(const Case& c, const Inputs& in) {
  GLAOptions o;
  o.scale = c.scale;
  if (c.h0) o.initial_state = in.h0;
  o.output_final_state = true;
  o.state_v_first = c.v_first;
  o.cu_seqlens = c.cu;
  o.chunk_size = c.chunk_size;
  return o;
}

template <class T>
void run_op(Op op, const Tensor<T, 4>& q, const Tensor<T, 4>& k, const Tensor<T, 4>& v, const Tensor<T, 4>& g,
            GLAOptions o, Tensor<T, 4>& out, Tensor<float, 4>& fs) {
  gla::test::fill_nan(out);
  gla::test::fill_nan(fs);
  std::optional<gla::View<float, 4>> fsv;
  fsv.emplace(mut_view(fs));
  if (op == Op::Chunk) {
    chunk_gla_into(q, k, v, g, o, mut_view(out), fsv);
  } else {
    o.heuristic_fallback = op == Op::FusedChunk;
    fused_chunk_gla_into(q, k, v, g, o, mut_view(out), fsv);
  }
}

/// Runs op in scalar T against the float64 reference; returns the relative RMS errors of o and final state.
template <class T>
std::pair<gla::test::Diff, gla::test::Diff> check_case(Op op, const Case& c) {
  const Inputs in = make_inputs(c);
  const GLAOptions o = options(c, in);
  // The reference sees exactly the values the tested scalar holds.
  const Tensor<T, 4> q = in.q.cast<T>(), k = in.k.cast<T>(), v = in.v.cast<T>(), g = in.g.cast<T>();
  const Tensor<double, 4> qd = q.template cast<double>(), kd = k.template cast<double>(),
                          vd = v.template cast<double>(), gd = g.template cast<double>();
  const auto ref = naive_recurrent_gla<double>(qd, kd, vd, view(gd), std::nullopt, o);
  Tensor<T, 4> out(v.dimensions());
  Tensor<float, 4> fs(in.h0.dimensions());
  run_op<T>(op, q, k, v, g, o, out, fs);
  const gla::test::Diff eo = compare(out, ref.o), es = compare(fs, ref.final_state);
  // GLA_TEST_VERBOSE=1 prints every case's errors (how docs/ACCURACY.md's worst errors are measured).
  static const bool verbose = std::getenv("GLA_TEST_VERBOSE") != nullptr;
  if (verbose)
    std::cerr << "[chunk_forward] " << gla::test::type_name<T>() << " " << op_name(op) << " o " << eo.rel_rms
              << " final_state " << es.rel_rms << "\n";
  return {eo, es};
}

double tol_for_float = 1e-5;

}  // namespace

TEST_CASE("chunk forward: float against the float64 reference around chunk boundaries", "[chunk][forward]") {
  const Op op = GENERATE(Op::Chunk, Op::FusedChunk, Op::FusedChunkNoFallback);
  const Index T = GENERATE(1, 15, 16, 17, 63, 64, 65, 127, 128, 129);
  const auto [K, V] = GENERATE(std::pair<Index, Index>{16, 60}, std::pair<Index, Index>{100, 64});
  const double norm = GENERATE(0.1, 1.0, 16.0);
  // 6 (sequence, head) pairs: chunk_gla runs the single sweep; 2 pairs: its two phases (chunk_gla_single_sweep)
  const auto [B, H] = GENERATE(std::pair<Index, Index>{2, 3}, std::pair<Index, Index>{1, 2});
  Case c;
  c.T = T;
  c.K = K;
  c.V = V;
  c.gate_norm = norm;
  c.B = B;
  c.H = H;
  c.seed = static_cast<std::uint64_t>(T * 7 + K + norm * 10);
  const auto [eo, es] = check_case<float>(op, c);
  INFO(op_name(op) << " B=" << B << " H=" << H << " T=" << T << " K=" << K << " V=" << V << " norm=" << norm
                   << "\n o: " << eo.str() << "\n final_state: " << es.str());
  CHECK(gla::test::ok(eo, tol_for_float));
  CHECK(gla::test::ok(es, tol_for_float));
}

TEST_CASE("chunk forward: long sequence, K=V=128 and K=64,V=100", "[chunk][forward]") {
  const Op op = GENERATE(Op::Chunk, Op::FusedChunk);
  const auto [K, V] = GENERATE(std::pair<Index, Index>{128, 128}, std::pair<Index, Index>{64, 100});
  Case c;
  c.T = 1000;
  c.K = K;
  c.V = V;
  c.H = 1;
  c.gate_norm = 16.0;
  const auto [eo, es] = check_case<float>(op, c);
  INFO(op_name(op) << " o: " << eo.str() << "\n final_state: " << es.str());
  CHECK(gla::test::ok(eo, tol_for_float));
  CHECK(gla::test::ok(es, tol_for_float));
}

// Outputs (and chunk_gla's per-chunk states) of 4 MiB and more are written with non-temporal stores
// (kStreamingOutputBytes). H=4: the single sweep; H=2: chunk_gla's two phases (8 MiB of states); V=100: rows that
// start mid-line; bf16: 4 MiB of bf16 output.
TEST_CASE("chunk forward: outputs of 4 MiB and more (non-temporal stores) against the float64 reference",
          "[chunk][forward]") {
  using gla::test::HeadShape;
  const Op op = GENERATE(Op::Chunk, Op::FusedChunk);
  const HeadShape sh =
      GENERATE(HeadShape{4, 2048, 128, 128}, HeadShape{2, 4096, 128, 128}, HeadShape{4, 2700, 60, 100});
  Case c;
  sh.apply_to(c);
  c.gate_norm = 16.0;
  const auto [eo, es] = check_case<float>(op, c);
  INFO(op_name(op) << " " << sh.str() << "\n o: " << eo.str() << "\n final_state: " << es.str());
  CHECK(gla::test::ok(eo, tol_for_float));
  CHECK(gla::test::ok(es, tol_for_float));
}

TEST_CASE("chunk forward: bf16 outputs of 4 MiB (non-temporal stores) within 4e-3", "[chunk][forward][lowp]") {
  const Op op = GENERATE(Op::Chunk, Op::FusedChunk);
  Case c;
  gla::test::HeadShape{4, 4096, 128, 128}.apply_to(c);
  c.gate_norm = 16.0;
  const auto [eo, es] = check_case<Eigen::bfloat16>(op, c);
  INFO(op_name(op) << "\n o: " << eo.str() << "\n final_state: " << es.str());
  CHECK(gla::test::ok(eo, 4e-3));
  CHECK(gla::test::ok(es, 4e-3));
}

TEST_CASE("chunk forward: strong decay stays finite and accurate", "[chunk][forward]") {
  const Op op = GENERATE(Op::Chunk, Op::FusedChunk);
  const Index T = GENERATE(64, 65, 300);
  Case c;
  c.T = T;
  c.K = 60;
  c.V = 32;
  c.H = 2;
  c.gate_norm = -1;  // per-step log gate near −5
  const auto [eo, es] = check_case<float>(op, c);
  INFO(op_name(op) << " T=" << T << " o: " << eo.str() << "\n final_state: " << es.str());
  CHECK(gla::test::ok(eo, tol_for_float));
  CHECK(gla::test::ok(es, tol_for_float));
}

// A chunk whose gate cumsum stays within ±8 computes its intra-chunk attention as one factored product, any other
// through 16-row sub-chunks (docs/chunk_algorithm.md); this sequence crosses the bound both ways.
TEST_CASE("chunk forward: factored and sub-chunk intra-chunk paths in one sequence", "[chunk][forward]") {
  const Op op = GENERATE(Op::Chunk, Op::FusedChunk);
  Case c;
  c.T = 5 * 64 + 17;
  c.B = 1;
  c.H = 2;
  c.K = 100;
  c.V = 60;
  c.chunk_gate = gla::test::kGatesAcrossFactoredBound;
  {
    const auto [eo, es] = check_case<float>(op, c);
    INFO(op_name(op) << " float o: " << eo.str() << "\n final_state: " << es.str());
    CHECK(gla::test::ok(eo, tol_for_float));
    CHECK(gla::test::ok(es, tol_for_float));
  }
  {
    const auto [eo, es] = check_case<double>(op, c);
    INFO(op_name(op) << " double o: " << eo.str() << "\n final_state: " << es.str());
    CHECK(gla::test::ok(eo, 1e-12));
    CHECK(gla::test::ok(es, 1e-7));
  }
}

TEST_CASE("chunk forward: varlen with zero-length, length-1 and chunk-straddling sequences",
          "[chunk][forward][varlen]") {
  const Op op = GENERATE(Op::Chunk, Op::FusedChunk, Op::FusedChunkNoFallback);
  const std::vector<std::int64_t> cu =
      GENERATE(std::vector<std::int64_t>{0, 0, 16}, std::vector<std::int64_t>{0, 1, 1, 65, 200, 201, 330},
               std::vector<std::int64_t>{0, 15, 100, 257, 400});
  const bool h0 = GENERATE(true, false);
  Case c;
  c.T = cu.back();
  c.cu = cu;
  c.K = 60;
  c.V = 100;
  c.H = 3;
  c.h0 = h0;
  const auto [eo, es] = check_case<float>(op, c);
  INFO(op_name(op) << " cu.size=" << cu.size() << " o: " << eo.str() << "\n final_state: " << es.str());
  CHECK(gla::test::ok(eo, tol_for_float));
  CHECK(gla::test::ok(es, tol_for_float));
}

TEST_CASE("chunk forward: scale, state_v_first, chunk sizes 16 and 128", "[chunk][forward]") {
  const Op op = GENERATE(Op::Chunk, Op::FusedChunk);
  const int chunk = GENERATE(16, 32, 128);
  const bool v_first = GENERATE(false, true);
  Case c;
  c.T = 200;
  c.K = 64;
  c.V = 16;
  c.H = 3;
  c.scale = 0.3f;
  c.v_first = v_first;
  c.chunk_size = chunk;
  const auto [eo, es] = check_case<float>(op, c);
  INFO(op_name(op) << " chunk=" << chunk << " v_first=" << v_first << " o: " << eo.str() << "\n fs: " << es.str());
  CHECK(gla::test::ok(eo, tol_for_float));
  CHECK(gla::test::ok(es, tol_for_float));
}

TEST_CASE("chunk forward: double within 1e-12", "[chunk][forward][double]") {
  const Op op = GENERATE(Op::Chunk, Op::FusedChunk);
  const Index T = GENERATE(1, 63, 65, 129);
  const double norm = GENERATE(0.1, 16.0);
  Case c;
  c.T = T;
  c.B = 2;
  c.H = 3;
  c.K = 60;
  c.V = 16;
  c.gate_norm = norm;
  const auto [eo, es] = check_case<double>(op, c);
  INFO(op_name(op) << " T=" << T << " o: " << eo.str() << "\n fs: " << es.str());
  CHECK(gla::test::ok(eo, 1e-12));
  // States are float in this library (as fla's): the final state is as exact as a float can be.
  CHECK(gla::test::ok(es, 1e-7));
}

// bfloat16 inputs where the products take bfloat16 operands (gla::detail::bf16_operands_faster: AMX builds, or
// libxsmm on a CPU with full-rate bfloat16 dot products) or widened float ones (elsewhere): fla's own bar, 4e-3
// relative RMS against the float64 truth of the same rounded inputs, over chunk boundaries, head dims that are not
// powers of two, strong decay and a varlen batch.
TEST_CASE("chunk forward: bf16 within 4e-3 around chunk boundaries, strong decay and varlen",
          "[chunk][forward][lowp]") {
  const Op op = GENERATE(Op::Chunk, Op::FusedChunk);
  const Index T = GENERATE(1, 63, 64, 65, 129);
  const auto [K, V] = GENERATE(std::pair<Index, Index>{60, 100}, std::pair<Index, Index>{128, 64});
  const double norm = GENERATE(1.0, 16.0, -1.0);  // -1: per-step log gates near -5
  const Index H = GENERATE(2, 1);                 // 4 pairs: chunk_gla's single sweep; 2: its two phases
  Case c;
  c.T = T;
  c.K = K;
  c.V = V;
  c.gate_norm = norm;
  c.B = 2;
  c.H = H;
  c.seed = static_cast<std::uint64_t>(T * 5 + K + V + norm * 3 + 100);
  const auto [eo, es] = check_case<Eigen::bfloat16>(op, c);
  INFO(op_name(op) << " H=" << H << " T=" << T << " K=" << K << " V=" << V << " norm=" << norm << "\n o: " << eo.str()
                   << "\n final_state: " << es.str());
  CHECK(gla::test::ok(eo, 4e-3));
  CHECK(gla::test::ok(es, 4e-3));
}

TEST_CASE("chunk forward: bf16 varlen with length-1 and chunk-straddling sequences within 4e-3",
          "[chunk][forward][lowp]") {
  const Op op = GENERATE(Op::Chunk, Op::FusedChunk);
  Case c;
  c.cu = {0, 1, 66, 67, 200, 263};
  c.T = 263;
  c.K = 100;
  c.V = 60;
  c.H = 3;
  c.gate_norm = GENERATE(1.0, -1.0);
  const auto [eo, es] = check_case<Eigen::bfloat16>(op, c);
  INFO(op_name(op) << " gate_norm=" << c.gate_norm << "\n o: " << eo.str() << "\n final_state: " << es.str());
  CHECK(gla::test::ok(eo, 4e-3));
  CHECK(gla::test::ok(es, 4e-3));
}

TEST_CASE("chunk forward: bf16 and half inputs within 5e-3", "[chunk][forward][lowp]") {
  const Op op = GENERATE(Op::Chunk, Op::FusedChunk);
  Case c;
  c.T = 130;
  c.B = 2;
  c.H = 2;
  c.K = 64;
  c.V = 32;
  {
    const auto [eo, es] = check_case<Eigen::bfloat16>(op, c);
    INFO("bf16 " << op_name(op) << " o: " << eo.str() << " fs: " << es.str());
    CHECK(gla::test::ok(eo, 5e-3));
    CHECK(gla::test::ok(es, 5e-3));
  }
  {
    const auto [eo, es] = check_case<Eigen::half>(op, c);
    INFO("half " << op_name(op) << " o: " << eo.str() << " fs: " << es.str());
    CHECK(gla::test::ok(eo, 5e-3));
    CHECK(gla::test::ok(es, 5e-3));
  }
}
