// examples/forward_varlen.cpp: one GLA forward over a random variable-length batch in every mode of gla_forward,
// packed (cu_seqlens) and padded (attention mask), each checked against the float64 recurrence; exits 1 on a miss.

#include <gla/naive.hpp>
#include <gla/router.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using gla::Index;
using gla::Tensor;

constexpr double kTolerance = 1e-5;  // relative RMS; the kernels measure about 1e-7 at this shape

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

/// Runs f three times and returns the last result with the best wall time in ms (the first call pays page faults).
template <class F>
auto best_of_3(F f, double& ms) {
  ms = std::numeric_limits<double>::infinity();
  for (int rep = 0;; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = f();
    ms = std::min(ms, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    if (rep == 2) return r;
  }
}

bool report(const char* batch, gla::Mode mode, gla::Mode ran, double err_o, double err_ht, double ms) {
  const bool ok = err_o <= kTolerance && err_ht <= kTolerance;  // false for NaN
  std::printf("%-7s %-16s %-16s %10.2e %10.2e %9.2f  %s\n", batch, std::string(gla::to_string(mode)).c_str(),
              std::string(gla::to_string(ran)).c_str(), err_o, err_ht, ms, ok ? "ok" : "FAIL");
  return ok;
}

}  // namespace

int main() {
  const std::vector<std::int64_t> cu_seqlens{0, 1, 100, 357, 1000};
  const Index H = 4, K = 60, V = 100;
  const Index N = static_cast<Index>(cu_seqlens.size()) - 1, total = cu_seqlens.back();
  const std::uint32_t seed = 1234;
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> sym(-1.f, 1.f), unit(0.f, 1.f);
  std::normal_distribution<float> normal(0.f, 1.f);

  // The packed batch [1,total,H,D]: q, k uniform, v normal, gk = logsigmoid(U)/16 (fla's test gates), h0 normal.
  Tensor<float, 4> q(1, total, H, K), k(1, total, H, K), v(1, total, H, V), gk(1, total, H, K), h0(N, H, K, V);
  for (Index i = 0; i < q.size(); ++i) q.data()[i] = sym(rng);
  for (Index i = 0; i < k.size(); ++i) k.data()[i] = sym(rng);
  for (Index i = 0; i < v.size(); ++i) v.data()[i] = normal(rng);
  for (Index i = 0; i < gk.size(); ++i) gk.data()[i] = -std::log1p(std::exp(-unit(rng))) / 16.f;
  for (Index i = 0; i < h0.size(); ++i) h0.data()[i] = normal(rng);

  gla::GLAOptions packed_opts;
  packed_opts.cu_seqlens = cu_seqlens;
  packed_opts.initial_state = h0;
  packed_opts.output_final_state = true;

  const auto t0 = std::chrono::steady_clock::now();
  const gla::NaiveResult<double> ref = gla::naive_recurrent_gla<double>(
      gla::view(q), gla::view(k), gla::view(v), gla::view(gk), std::nullopt, packed_opts);
  const double ref_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  std::printf("GLA forward, %lld sequences (cu_seqlens 0 1 100 357 1000), H=%lld K=%lld V=%lld, seed %u\n",
              static_cast<long long>(N), static_cast<long long>(H), static_cast<long long>(K),
              static_cast<long long>(V), seed);
  std::printf("reference naive_recurrent_gla<float, double>: %.2f ms; each mode below runs 3 times\n\n", ref_ms);
  std::printf("%-7s %-16s %-16s %10s %10s %9s\n", "batch", "mode", "kernel", "o rel_rms", "ht rel_rms", "best ms");

  const gla::Mode modes[] = {gla::Mode::Chunk, gla::Mode::FusedChunk, gla::Mode::FusedRecurrent, gla::Mode::Auto};
  bool all_ok = true;

  // Packed: the sequences back to back in one row, delimited by cu_seqlens.
  for (gla::Mode mode : modes) {
    double ms = 0;
    const gla::GLAResult<float> r = best_of_3(
        [&] {
          return gla::gla_forward(gla::view(q), gla::view(k), gla::view(v), gla::view(gk), std::nullopt, packed_opts, mode);
        },
        ms);
    all_ok &= report("packed", mode, gla::select_gla_mode(mode, total), rel_rms(r.o, ref.o),
                     rel_rms(*r.final_state, ref.final_state), ms);
  }

  // Padded: one row per sequence, left-padded to the longest (as for batched generation); the padding holds NaN,
  // which must never reach an output, and the output there must be exact zeros.
  Index T_pad = 0;
  for (Index n = 0; n < N; ++n) T_pad = std::max<Index>(T_pad, cu_seqlens[n + 1] - cu_seqlens[n]);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  Tensor<float, 4> qp(N, T_pad, H, K), kp(N, T_pad, H, K), vp(N, T_pad, H, V), gkp(N, T_pad, H, K);
  qp.setConstant(nan);
  kp.setConstant(nan);
  vp.setConstant(nan);
  gkp.setConstant(nan);
  Tensor<std::int64_t, 2> mask(N, T_pad);
  mask.setZero();
  std::vector<Index> src_token(static_cast<std::size_t>(N * T_pad), -1);  // packed token of each padded slot
  for (Index n = 0; n < N; ++n) {
    const Index len = cu_seqlens[n + 1] - cu_seqlens[n];
    for (Index i = 0; i < len; ++i) {
      const Index t = T_pad - len + i, src = cu_seqlens[n] + i;
      mask(n, t) = 1;
      src_token[static_cast<std::size_t>(n * T_pad + t)] = src;
      for (Index h = 0; h < H; ++h) {
        for (Index d = 0; d < K; ++d) {
          qp(n, t, h, d) = q(0, src, h, d);
          kp(n, t, h, d) = k(0, src, h, d);
          gkp(n, t, h, d) = gk(0, src, h, d);
        }
        for (Index d = 0; d < V; ++d) vp(n, t, h, d) = v(0, src, h, d);
      }
    }
  }
  gla::GLAOptions padded_opts;
  padded_opts.initial_state = h0;
  padded_opts.output_final_state = true;
  const gla::ConstTensorMap<std::int64_t, 2> mask_view(mask.data(), mask.dimensions());

  for (gla::Mode mode : modes) {
    double ms = 0;
    const gla::GLAResult<float> r = best_of_3(
        [&] {
          return gla::gla_forward(gla::view(qp), gla::view(kp), gla::view(vp), gla::view(gkp), std::nullopt, padded_opts, mode, mask_view);
        },
        ms);
    // Gather the valid outputs into packed order; any non-zero at padding counts as a failure.
    Tensor<float, 4> o_packed(1, total, H, V);
    Index bad_padding = 0;
    for (Index n = 0; n < N; ++n)
      for (Index t = 0; t < T_pad; ++t) {
        const Index src = src_token[static_cast<std::size_t>(n * T_pad + t)];
        for (Index h = 0; h < H; ++h)
          for (Index d = 0; d < V; ++d) {
            if (src >= 0)
              o_packed(0, src, h, d) = r.o(n, t, h, d);
            else if (r.o(n, t, h, d) != 0.f)
              ++bad_padding;
          }
      }
    const double err_o = bad_padding ? std::numeric_limits<double>::quiet_NaN() : rel_rms(o_packed, ref.o);
    all_ok &= report("padded", mode, gla::select_gla_mode(mode, T_pad), err_o,
                     rel_rms(*r.final_state, ref.final_state), ms);
    if (bad_padding) std::printf("  %lld padded outputs are not exactly zero\n", static_cast<long long>(bad_padding));
  }

  std::printf("\n%s (tolerance %.0e relative RMS)\n", all_ok ? "all modes match the reference" : "MISMATCH",
              kTolerance);
  return all_ok ? 0 : 1;
}
