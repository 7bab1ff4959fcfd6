#pragma once
// Shared test helpers: relative-RMS comparison with a readable report, seeded random inputs (seed printed
// and overridable with GLA_TEST_SEED), NaN-filled outputs, and fla-style gate generators.

#include <gla/core.hpp>
#include <gla/detail/parallel.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace gla::test {

/// Restores the engine's thread count (gla::set_num_threads) when a test that changes it ends. OpenMP's own
/// setting (omp_set_num_threads) does not change the engine's count once the engine has started.
struct ThreadCountGuard {
  int saved = gla::get_num_threads();
  ~ThreadCountGuard() { gla::set_num_threads(saved); }
};

/// What compare() measured: relative RMS error (RMS(a−b) / (RMS(ref) + 1e-30)), max abs error,
/// the flat index of the worst element and the count of non-finite values in the tested tensor.
struct Diff {
  double rel_rms = 0, max_abs = 0;
  Index worst = -1;
  Index non_finite = 0;
  Index size_mismatch = 0;
  std::string str() const {
    std::ostringstream s;
    s << "rel_rms=" << rel_rms << " max_abs=" << max_abs << " worst_index=" << worst << " non_finite=" << non_finite;
    if (size_mismatch) s << " SIZE MISMATCH";
    return s.str();
  }
};

template <class A, class B>
Diff compare_ptr(const A* got, const B* ref, Index n) {
  Diff d;
  long double num = 0, den = 0;
  for (Index i = 0; i < n; ++i) {
    const double g = static_cast<double>(got[i]), r = static_cast<double>(ref[i]);
    if (!std::isfinite(g)) {
      ++d.non_finite;
      continue;
    }
    const double e = std::abs(g - r);
    num += static_cast<long double>(e) * e;
    den += static_cast<long double>(r) * r;
    if (e > d.max_abs || d.worst < 0) {
      d.max_abs = std::max(d.max_abs, e);
      if (e >= d.max_abs) d.worst = i;
    }
  }
  d.rel_rms = n ? static_cast<double>(std::sqrt(num / n) / (std::sqrt(den / n) + 1e-30L)) : 0.0;
  if (n && den == 0 && num == 0) d.rel_rms = 0;
  return d;
}

/// Compares two tensors (owned or mapped) of any scalar types, element by element.
template <class TA, class TB>
Diff compare(const TA& got, const TB& ref) {
  if (got.size() != ref.size()) {
    Diff d;
    d.size_mismatch = 1;
    d.rel_rms = std::numeric_limits<double>::infinity();
    return d;
  }
  return compare_ptr(got.data(), ref.data(), static_cast<Index>(got.size()));
}

/// True when the comparison is within tol and nothing is non-finite.
inline bool ok(const Diff& d, double tol) { return d.size_mismatch == 0 && d.non_finite == 0 && d.rel_rms <= tol; }

/// The seed of this test run: GLA_TEST_SEED from the environment, else a fixed default; printed once.
inline std::uint64_t base_seed() {
  static const std::uint64_t seed = [] {
    const char* env = std::getenv("GLA_TEST_SEED");
    const std::uint64_t s = env ? std::strtoull(env, nullptr, 10) : 20231211ULL;
    std::cerr << "gla tests: GLA_TEST_SEED=" << s << "\n";
    return s;
  }();
  return seed;
}

/// A deterministic generator for one named use, derived from the run's seed.
inline std::mt19937_64 rng(std::uint64_t salt) { return std::mt19937_64(base_seed() * 1000003ULL + salt); }

/// Fills a tensor with U[lo, hi).
template <class Tens>
void fill_uniform(Tens& t, std::mt19937_64& g, double lo = 0.0, double hi = 1.0) {
  using S = typename Tens::Scalar;
  std::uniform_real_distribution<double> u(lo, hi);
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = static_cast<S>(u(g));
}

/// Fills a tensor with N(0, sd).
template <class Tens>
void fill_normal(Tens& t, std::mt19937_64& g, double sd = 1.0) {
  using S = typename Tens::Scalar;
  std::normal_distribution<double> n(0.0, sd);
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = static_cast<S>(n(g));
}

inline double logsigmoid(double x) { return std::min(0.0, x) - std::log1p(std::exp(-std::abs(x))); }

/// fla's test gate: logsigmoid(U[0,1)) / normalizer (normalizer 0.1 gives per-step log gates in (−6.9, −3.1)).
template <class Tens>
void fill_gate(Tens& t, std::mt19937_64& g, double normalizer) {
  using S = typename Tens::Scalar;
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = static_cast<S>(logsigmoid(u(g)) / normalizer);
}

/// Gates whose strength changes chunk by chunk, for a [B,T,H,K] tensor: the per-step log gate of token t is
/// per_chunk[(t / 64) % size] · U[0.9, 1.1) (chunks of 64 tokens on either side of a path's bound).
template <class Tens>
void fill_chunk_gates(Tens& t, std::mt19937_64& g, const std::vector<double>& per_chunk) {
  using S = typename Tens::Scalar;
  std::uniform_real_distribution<double> u(0.9, 1.1);
  const auto& d = t.dimensions();
  for (Index b = 0; b < d[0]; ++b)
    for (Index s = 0; s < d[1]; ++s)
      for (Index h = 0; h < d[2]; ++h)
        for (Index k = 0; k < d[3]; ++k)
          t(b, s, h, k) = static_cast<S>(per_chunk[static_cast<std::size_t>(s / 64) % per_chunk.size()] * u(g));
}

/// Per-chunk gates (for fill_chunk_gates) that put one sequence's chunks on both sides of the chunk kernels' factored
/// path bound (|G| ≤ 8 within a chunk, docs/chunk_algorithm.md): |G| at the chunk's end ≈ 0.6 (factored), 8.6
/// (sub-chunk), 7.4 (factored), 190 (sub-chunk, strong decay), +2.6 (a positive gate, factored).
inline const std::vector<double> kGatesAcrossFactoredBound = {-0.01, -8.6 / 64, -7.4 / 64, -3.0, 0.04};

/// Strong decay: per-step log gate near −5 (uniform in [−5.5, −4.5]).
template <class Tens>
void fill_strong_gate(Tens& t, std::mt19937_64& g) {
  using S = typename Tens::Scalar;
  std::uniform_real_distribution<double> u(-5.5, -4.5);
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = static_cast<S>(u(g));
}

/// Heads, tokens, key and value dims of a case, for GENERATE lists; set on any test's own Case struct.
struct HeadShape {
  Index H, T, K, V;
  template <class Case>
  void apply_to(Case& c) const {
    c.H = H;
    c.T = T;
    c.K = K;
    c.V = V;
  }
  std::string str() const {
    return "H=" + std::to_string(H) + " T=" + std::to_string(T) + " K=" + std::to_string(K) + " V=" + std::to_string(V);
  }
};

/// Fills with quiet NaN so that any element an operator forgets to write fails the comparison.
template <class Tens>
void fill_nan(Tens& t) {
  using S = typename Tens::Scalar;
  for (Index i = 0; i < t.size(); ++i) t.data()[i] = static_cast<S>(std::numeric_limits<float>::quiet_NaN());
}

/// Short name of a scalar type for test messages: fp32, fp64, bf16, half.
template <class T>
std::string type_name() {
  if constexpr (std::is_same_v<T, float>)
    return "fp32";
  else if constexpr (std::is_same_v<T, double>)
    return "fp64";
  else if constexpr (std::is_same_v<T, Eigen::bfloat16>)
    return "bf16";
  else
    return "half";
}

/// Converts a tensor to another scalar type (e.g. float inputs → double for the reference).
template <class To, class From, int R>
Tensor<To, R> cast(const Tensor<From, R>& t) {
  return t.template cast<To>();
}

}  // namespace gla::test
