// examples/training_step.cpp: a few training steps of chunked GLA with caller-owned buffers: the forward keeps the
// state before every chunk (chunk_gla_keep_states_into), the backward takes them instead of recomputing them
// (chunk_gla_backward_from_states_into), one Workspace sized up front serves both, and every step's gradients are
// checked against the float64 backward of the token-by-token recurrence; exits 1 on a miss.

#include <gla/chunk.hpp>
#include <gla/chunk_backward.hpp>
#include <gla/naive.hpp>
#include <gla/workspace.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>

namespace {

using gla::Index;
using gla::Tensor;

constexpr double kTolerance = 1e-5;  // relative RMS against float64; the kernels measure about 1e-7 here

/// Relative RMS error of `got` against `ref`; NaN when `got` holds a non-finite value, so that the check fails.
template <class A, class B>
double rel_rms(const A& got, const B& ref) {
  double num = 0, den = 0;
  for (Index i = 0; i < ref.size(); ++i) {
    const double g = static_cast<double>(got.data()[i]), r = static_cast<double>(ref.data()[i]);
    if (!std::isfinite(g)) return std::numeric_limits<double>::quiet_NaN();
    num += (g - r) * (g - r);
    den += r * r;
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace

int main() {
  const Index B = 2, T = 300, H = 4, K = 64, V = 100;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> sym(-1.f, 1.f), unit(0.f, 1.f);
  std::normal_distribution<float> normal(0.f, 1.f);

  // Inputs q, k uniform, v normal, g = logsigmoid(U)/16 (fla's test gates); do_ is the upstream gradient of o.
  Tensor<float, 4> q(B, T, H, K), k(B, T, H, K), v(B, T, H, V), g(B, T, H, K), do_(B, T, H, V);
  for (Index i = 0; i < q.size(); ++i) q.data()[i] = sym(rng);
  for (Index i = 0; i < k.size(); ++i) k.data()[i] = sym(rng);
  for (Index i = 0; i < v.size(); ++i) v.data()[i] = normal(rng);
  for (Index i = 0; i < g.size(); ++i) g.data()[i] = -std::log1p(std::exp(-unit(rng))) / 16.f;
  for (Index i = 0; i < do_.size(); ++i) do_.data()[i] = normal(rng);

  // Every buffer of the step, allocated once: outputs, the kept states, gradients, and one workspace large enough
  // for both calls (nothing is allocated inside the loop).
  gla::GLAOptions opts;
  Tensor<float, 4> o(B, T, H, V), dq(B, T, H, K), dk(B, T, H, K), dv(B, T, H, V), dg(B, T, H, K);
  Tensor<float, 5> states(gla::chunk_gla_states_dims(B, T, H, K, V, opts));
  gla::Workspace ws(std::max(gla::chunk_gla_workspace_size<float>(B, T, H, K, V, opts),
                             gla::chunk_gla_backward_from_states_workspace_size<float>(B, T, H, K, V, opts)));
  opts.workspace = &ws;

  std::printf(
      "chunked GLA training steps, B=%lld T=%lld H=%lld K=%lld V=%lld; kept states %.1f MB, workspace %.1f MB\n",
      static_cast<long long>(B), static_cast<long long>(T), static_cast<long long>(H), static_cast<long long>(K),
      static_cast<long long>(V), states.size() * 4.0 / 1e6, ws.capacity() / 1e6);
  std::printf("%-5s %10s %10s %10s %10s %10s %9s\n", "step", "o", "dq", "dk", "dv", "dg", "ms");

  const std::byte* const scratch = ws.data();
  bool all_ok = true;
  const float lr = 0.05f;
  for (int step = 0; step < 3; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    gla::chunk_gla_keep_states_into(q, k, v, g, opts, o, std::nullopt, states);
    gla::chunk_gla_backward_from_states_into(q, k, v, g, states, do_, std::nullopt, opts, dq, dk, dv, dg);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

    // The float64 truth of the same step: the recurrence and its backward, token by token.
    const Tensor<double, 4> qd = q.cast<double>(), kd = k.cast<double>(), vd = v.cast<double>(), gd = g.cast<double>(),
                            dod = do_.cast<double>();
    const auto ref_o = gla::naive_recurrent_gla<double>(qd, kd, vd, gla::view(gd));
    const auto ref = gla::naive_recurrent_gla_backward<double>(qd, kd, vd, gla::view(gd), std::nullopt, dod);
    const double e[] = {rel_rms(o, ref_o.o), rel_rms(dq, ref.dq), rel_rms(dk, ref.dk), rel_rms(dv, ref.dv),
                        rel_rms(dg, *ref.dgk)};
    bool ok = true;
    for (double x : e) ok = ok && x <= kTolerance;  // false for NaN
    all_ok = all_ok && ok;
    std::printf("%-5d %10.2e %10.2e %10.2e %10.2e %10.2e %9.2f  %s\n", step, e[0], e[1], e[2], e[3], e[4], ms,
                ok ? "ok" : "FAIL");

    // A plain gradient step on q and k (the next step's inputs), as an optimiser would take.
    for (Index i = 0; i < q.size(); ++i) q.data()[i] -= lr * dq.data()[i];
    for (Index i = 0; i < k.size(); ++i) k.data()[i] -= lr * dk.data()[i];
  }
  if (ws.data() != scratch) {  // the workspace sized up front was enough for both calls of every step
    std::printf("the workspace grew inside the loop\n");
    all_ok = false;
  }
  std::printf("%s\n", all_ok ? "all steps within 1e-5 of float64, no allocation in the loop" : "FAILED");
  return all_ok ? 0 : 1;
}
