// gla::detail::gemm and its backends (gemm_eigen, gemm_libxsmm with both bfloat16 routes) against a double-precision
// reference: every transpose combination, accumulate on and off, the chunk kernels' shapes and arbitrary ones (1, 15,
// 63, 130, ... and beyond libxsmm's size limit), contiguous and strided operands, float/double/bfloat16/half,
// concurrent calls, the kernel cache under eviction, and the argument checks.
//
// tests/test_gemm_eigen.cpp compiles this file again with GLA_GEMM_FORCE_EIGEN, so the Eigen-only build of
// gemm() (what a build without libxsmm gets) is tested in every configuration; tests/test_gemm_scalar.cpp with
// GLA_GEMM_NO_INTRINSICS (the scalar packing loops).
//
// Tolerance: the inputs are exact in the reference (it multiplies the stored float/bfloat16/half values in
// double), and the products of two bfloat16 or half values are exact in float, so the only error is the
// accumulation's: |C - ref| <= (k + 2)·u·(sum_p |a_ip·b_pj| + |C0_ij|), u = 2^-24 (float accumulation) or 2^-53
// (double), for every element, whatever the summation order. Any element taken from a wrong place misses it by
// orders of magnitude. Padding beyond each operand's width holds NaN (a read there poisons C), C's padding a
// sentinel that must survive, and C holds NaN before a non-accumulating call (it must not be read).
// Eigen runs single-threaded, as in the parallel engine's work items where the kernels call gemm().

#include <gla/detail/gemm.hpp>
#include <gla/detail/parallel.hpp>

#include "support/catch.hpp"
#include "support/test_utils.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace {

using gla::acc_t;
using gla::Index;
using gla::detail::Trans;
using bf16 = Eigen::bfloat16;
using half = Eigen::half;

constexpr float kCPadding = -7.25f;  // C's padding sentinel

/// gemm(), gemm_eigen(), gemm_libxsmm() (bfloat16: its default route), gemm_libxsmm(..., Bf16Kernel::Vnni),
/// gemm_amx() (bfloat16 only).
enum class Backend { Auto, Eigen, Libxsmm, LibxsmmVnni, Amx };

const char* backend_name(Backend b) {
  switch (b) {
    case Backend::Auto:
      return "gemm";
    case Backend::Eigen:
      return "gemm_eigen";
    case Backend::Libxsmm:
      return "gemm_libxsmm";
    case Backend::LibxsmmVnni:
      return "gemm_libxsmm(Vnni)";
    case Backend::Amx:
      return "gemm_amx";
  }
  return "?";
}

/// A stored row-major rows×cols matrix with row stride ld; the padding beyond cols holds NaN.
template <class T>
struct Stored {
  Index rows = 0, cols = 0, ld = 0;
  std::vector<T> v;
  double at(Index r, Index c) const { return static_cast<double>(v[static_cast<std::size_t>(r * ld + c)]); }
};

template <class T>
Stored<T> random_stored(Index rows, Index cols, Index ld, std::mt19937_64& g) {
  Stored<T> s{rows, cols, ld, {}};
  s.v.assign(static_cast<std::size_t>(std::max<Index>(rows * ld, 1)), T(std::numeric_limits<float>::quiet_NaN()));
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  for (Index r = 0; r < rows; ++r)
    for (Index c = 0; c < cols; ++c) s.v[static_cast<std::size_t>(r * ld + c)] = T(static_cast<float>(u(g)));
  return s;
}

struct Case {
  Trans ta, tb;
  Index m, n, k;
  Index lda, ldb, ldc;  // row strides (>= the stored widths)
  bool accumulate;
  std::string str() const {
    std::ostringstream s;
    s << (ta == Trans::N ? 'N' : 'T') << (tb == Trans::N ? 'N' : 'T') << " m=" << m << " n=" << n << " k=" << k
      << " lda=" << lda << " ldb=" << ldb << " ldc=" << ldc << (accumulate ? " accumulate" : "");
    return s.str();
  }
};

/// A case with row strides `width + pad` (pad < 0: the given absolute stride, e.g. 2048 like H·D).
Case make_case(Trans ta, Trans tb, Index m, Index n, Index k, Index pad, bool acc) {
  const auto ld = [&](Index width) { return pad < 0 ? std::max(-pad, width) : width + pad; };
  return {ta, tb, m, n, k, ld(ta == Trans::N ? k : m), ld(tb == Trans::N ? n : k), ld(n), acc};
}

/// The inputs of one case for one scalar type, with the reference result and its error bound per element.
template <class In>
struct Problem {
  using Acc = acc_t<In>;
  Case c;
  Stored<In> A, B;
  std::vector<Acc> C0;  // initial C, ldc-strided
  std::vector<double> ref, bound;

  Problem(const Case& cs, std::uint64_t salt) : c(cs) {
    std::mt19937_64 g = gla::test::rng(salt);
    A = random_stored<In>(c.ta == Trans::N ? c.m : c.k, c.ta == Trans::N ? c.k : c.m, c.lda, g);
    B = random_stored<In>(c.tb == Trans::N ? c.k : c.n, c.tb == Trans::N ? c.n : c.k, c.ldb, g);
    C0.assign(static_cast<std::size_t>(std::max<Index>(c.m * c.ldc, 1)), static_cast<Acc>(kCPadding));
    std::uniform_real_distribution<double> u(-1.0, 1.0);
    for (Index i = 0; i < c.m; ++i)
      for (Index j = 0; j < c.n; ++j)
        C0[static_cast<std::size_t>(i * c.ldc + j)] =
            c.accumulate ? static_cast<Acc>(u(g)) : std::numeric_limits<Acc>::quiet_NaN();
    // reference: op(A) (m×k) and op(B) (k×n) in double, then an (i, p, j) loop
    std::vector<double> a(static_cast<std::size_t>(c.m * c.k)), b(static_cast<std::size_t>(c.k * c.n));
    for (Index i = 0; i < c.m; ++i)
      for (Index p = 0; p < c.k; ++p)
        a[static_cast<std::size_t>(i * c.k + p)] = c.ta == Trans::N ? A.at(i, p) : A.at(p, i);
    for (Index p = 0; p < c.k; ++p)
      for (Index j = 0; j < c.n; ++j)
        b[static_cast<std::size_t>(p * c.n + j)] = c.tb == Trans::N ? B.at(p, j) : B.at(j, p);
    ref.assign(static_cast<std::size_t>(c.m * c.n), 0.0);
    bound.assign(ref.size(), 0.0);
    for (Index i = 0; i < c.m; ++i) {
      double* r = ref.data() + i * c.n;
      double* s = bound.data() + i * c.n;
      for (Index p = 0; p < c.k; ++p) {
        const double aip = a[static_cast<std::size_t>(i * c.k + p)];
        const double* bp = b.data() + p * c.n;
        for (Index j = 0; j < c.n; ++j) {
          r[j] += aip * bp[j];
          s[j] += std::abs(aip * bp[j]);
        }
      }
      if (c.accumulate)
        for (Index j = 0; j < c.n; ++j) {
          const double c0 = static_cast<double>(C0[static_cast<std::size_t>(i * c.ldc + j)]);
          r[j] += c0;
          s[j] += std::abs(c0);
        }
    }
    const double u_acc = std::is_same_v<Acc, double> ? std::ldexp(1.0, -53) : std::ldexp(1.0, -24);
    for (double& s : bound) s *= static_cast<double>(c.k + 2) * u_acc;
  }

  /// Runs one backend; returns "" when the result is right, else what is wrong ("declined" when gemm_libxsmm
  /// had no kernel).
  std::string run(Backend be, std::vector<Acc>& C) const {
    C = C0;
    const In* a = A.v.data();
    const In* b = B.v.data();
    switch (be) {
      case Backend::Auto:
        gla::detail::gemm(c.ta, c.tb, c.m, c.n, c.k, a, c.lda, b, c.ldb, c.accumulate, C.data(), c.ldc);
        break;
      case Backend::Eigen:
        gla::detail::gemm_eigen(c.ta, c.tb, c.m, c.n, c.k, a, c.lda, b, c.ldb, c.accumulate, C.data(), c.ldc);
        break;
      case Backend::Libxsmm:
      case Backend::LibxsmmVnni:
        if (!gla::detail::gemm_libxsmm(
                c.ta, c.tb, c.m, c.n, c.k, a, c.lda, b, c.ldb, c.accumulate, C.data(), c.ldc,
                be == Backend::LibxsmmVnni ? gla::detail::Bf16Kernel::Vnni : gla::detail::Bf16Kernel::ViaF32))
          return "declined";
        break;
      case Backend::Amx:
        if (!gla::detail::gemm_amx(c.ta, c.tb, c.m, c.n, c.k, a, c.lda, b, c.ldb, c.accumulate, C.data(), c.ldc))
          return "declined";
        break;
    }
    return verify(C);
  }

  std::string verify(const std::vector<Acc>& C) const {
    double worst = 0;  // error / bound
    Index wi = -1, wj = -1;
    long double num = 0, den = 0;
    for (Index i = 0; i < c.m; ++i) {
      for (Index j = 0; j < c.n; ++j) {
        const double got = static_cast<double>(C[static_cast<std::size_t>(i * c.ldc + j)]);
        const double r = ref[static_cast<std::size_t>(i * c.n + j)];
        const double bd = bound[static_cast<std::size_t>(i * c.n + j)];
        const double e = std::abs(got - r);
        if (!(e <= bd)) {  // also catches NaN
          const double ratio = std::isfinite(e) ? e / std::max(bd, 1e-300) : std::numeric_limits<double>::infinity();
          if (ratio > worst || wi < 0) {
            worst = ratio;
            wi = i;
            wj = j;
          }
        }
        num += static_cast<long double>(e) * e;
        den += static_cast<long double>(r) * r;
      }
      for (Index j = c.n; j < c.ldc; ++j)
        if (!(C[static_cast<std::size_t>(i * c.ldc + j)] == static_cast<Acc>(kCPadding)))
          return "wrote C's padding at row " + std::to_string(i) + " column " + std::to_string(j);
    }
    if (wi >= 0) {
      std::ostringstream s;
      s << "C(" << wi << "," << wj << ") = " << C[static_cast<std::size_t>(wi * c.ldc + wj)] << ", reference "
        << ref[static_cast<std::size_t>(wi * c.n + wj)] << ", error " << worst << "x the bound "
        << bound[static_cast<std::size_t>(wi * c.n + wj)];
      return s.str();
    }
    // and over enough elements for a statistic, a relative RMS error below 1e-6 (1e-14 for double)
    if (c.m * c.n < 256) return "";
    const double rel = den > 0 ? static_cast<double>(std::sqrt(num / den)) : 0.0;
    const double rel_tol = std::is_same_v<Acc, double> ? 1e-14 : 1e-6;
    if (!(rel <= rel_tol)) return "relative RMS error " + std::to_string(rel);
    return "";
  }
};

/// True when gemm_libxsmm (or gemm_amx) must accept the call (libxsmm compiled in, its size limits met, and for
/// bfloat16 kernels a CPU that libxsmm 1.17 generates them for; AMX: see the branch).
template <class In>
bool libxsmm_expected(const Case& c, Backend be) {
  if (be == Backend::Amx) {  // bfloat16 on a CPU and OS with AMX, within its size limit
#if GLA_GEMM_WITH_AMX
    const Index lim = gla::detail::gemm_impl::kAmxMaxDim;
    return std::is_same_v<In, bf16> && gla::detail::amx_available() && c.m <= lim && c.n <= lim && c.k <= lim;
#else
    return false;
#endif
  }
#if GLA_GEMM_WITH_LIBXSMM
  if constexpr (std::is_same_v<In, double>) {
    return false;
  } else {
    const Index lim = gla::detail::gemm_impl::kXsmmMaxDim;
    if (c.m > lim || c.n > lim || c.k > lim) return false;
    if (std::is_same_v<In, bf16> && be == Backend::LibxsmmVnni)
      return libxsmm_get_target_archid() >= LIBXSMM_X86_AVX512_CORE;
    return true;
  }
#else
  (void)c, (void)be;
  return false;
#endif
}

/// Runs every case on every backend for one scalar type; returns the failures (at most `max_report`).
template <class In>
std::vector<std::string> run_cases(const std::vector<Case>& cases, std::uint64_t salt, std::size_t max_report = 8) {
  std::vector<std::string> failures;
  std::vector<acc_t<In>> C;
  for (std::size_t ci = 0; ci < cases.size(); ++ci) {
    const Problem<In> p(cases[ci], salt + ci);
    for (const Backend be : {Backend::Auto, Backend::Eigen, Backend::Libxsmm, Backend::LibxsmmVnni, Backend::Amx}) {
      if ((be == Backend::LibxsmmVnni || be == Backend::Amx) && !std::is_same_v<In, bf16>) continue;
      std::string why = p.run(be, C);
      if (why == "declined" && !libxsmm_expected<In>(p.c, be)) why.clear();
      if (!why.empty() && failures.size() < max_report)
        failures.push_back(gla::test::type_name<In>() + " " + backend_name(be) + " " + p.c.str() + ": " + why);
    }
  }
  return failures;
}

template <class In>
void check_cases(const std::vector<Case>& cases, std::uint64_t salt) {
  const gla::detail::EigenSingleThreaded pin;  // as inside the parallel engine, which is where gemm() runs
  const std::vector<std::string> failures = run_cases<In>(cases, salt);
  INFO(gla::test::type_name<In>() << ", " << cases.size() << " cases, backend " << gla::detail::gemm_backend_name());
  for (const std::string& f : failures) UNSCOPED_INFO(f);
  CHECK(failures.empty());
}

constexpr Trans kTrans[2] = {Trans::N, Trans::T};

/// The chunk kernels' products: at BT = 64 and K = V in {64, 128}, Q·Kᵀ (BT×BT×K), A·V (BT×V×BT), Q·S (BT×V×K)
/// and Kᵀ·V (K×V×BT); at K = V = 128 the same for BT in {16, 32, 48, 128, 256}; plus the squares 16..256.
std::vector<Case> chunk_cases(Index pad) {
  std::vector<std::array<Index, 3>> shapes;
  for (const Index K : {64, 128}) {
    const Index BT = 64, V = K;
    shapes.push_back({BT, BT, K});
    shapes.push_back({BT, V, BT});
    shapes.push_back({BT, V, K});
    shapes.push_back({K, V, BT});
  }
  for (const Index BT : {16, 32, 48, 128, 256}) {
    shapes.push_back({BT, BT, 128});
    shapes.push_back({BT, 128, BT});
    shapes.push_back({BT, 128, 128});
    shapes.push_back({128, 128, BT});
  }
  for (const Index s : {16, 32, 48, 64, 128, 256}) shapes.push_back({s, s, s});
  std::vector<Case> cases;
  int parity = 0;
  for (const auto& s : shapes)
    for (const Trans ta : kTrans)
      for (const Trans tb : kTrans) cases.push_back(make_case(ta, tb, s[0], s[1], s[2], pad, (parity++ % 2) != 0));
  return cases;
}

/// Arbitrary shapes: every m, n, k in {1, 15, 60, 63, 100, 130}, each transpose pair, alternating accumulate
/// and a row-stride padding of 0, 1 or 3 (odd strides too).
std::vector<Case> odd_cases() {
  const Index sizes[] = {1, 15, 60, 63, 100, 130};
  std::vector<Case> cases;
  int i = 0;
  for (const Index m : sizes)
    for (const Index n : sizes)
      for (const Index k : sizes)
        for (const Trans ta : kTrans)
          for (const Trans tb : kTrans) {
            const Index pads[] = {0, 1, 3};
            cases.push_back(make_case(ta, tb, m, n, k, pads[i % 3], (i / 3) % 2 != 0));
            ++i;
          }
  return cases;
}

/// Beyond libxsmm's size limit (Eigen inside gemm()), dot-product and outer-product extremes.
std::vector<Case> edge_cases() {
  std::vector<Case> cases;
  for (const Trans ta : kTrans)
    for (const Trans tb : kTrans)
      for (const bool acc : {false, true}) {
        cases.push_back(make_case(ta, tb, 300, 64, 257, 2, acc));
        cases.push_back(make_case(ta, tb, 600, 16, 20, 1, acc));
        cases.push_back(make_case(ta, tb, 17, 300, 64, 0, acc));
        cases.push_back(make_case(ta, tb, 5, 7, 1000, 1, acc));
        cases.push_back(make_case(ta, tb, 1, 1, 256, 0, acc));
        cases.push_back(make_case(ta, tb, 1, 1, 1, 0, acc));
        cases.push_back(make_case(ta, tb, 256, 256, 1, 0, acc));
        cases.push_back(make_case(ta, tb, 64, 1, 128, -2048, acc));
        cases.push_back(make_case(ta, tb, 1, 128, 64, -2048, acc));
      }
  return cases;
}

}  // namespace

TEST_CASE("gemm: chunk shapes, contiguous operands", "[gemm]") {
  const auto cases = chunk_cases(0);
  check_cases<float>(cases, 1000);
  check_cases<bf16>(cases, 2000);
  check_cases<double>(cases, 3000);
}

TEST_CASE("gemm: chunk shapes, strided views (ld = 2048 like H·D)", "[gemm]") {
  const auto cases = chunk_cases(-2048);
  check_cases<float>(cases, 4000);
  check_cases<bf16>(cases, 5000);
  check_cases<double>(cases, 6000);
}

TEST_CASE("gemm: arbitrary shapes, odd strides, all transposes", "[gemm]") {
  const auto cases = odd_cases();
  check_cases<float>(cases, 10000);
  check_cases<bf16>(cases, 20000);
  check_cases<double>(cases, 30000);
  check_cases<half>(cases, 40000);
}

TEST_CASE("gemm: large, dot-product and outer-product shapes", "[gemm]") {
  const auto cases = edge_cases();
  check_cases<float>(cases, 50000);
  check_cases<bf16>(cases, 60000);
  check_cases<double>(cases, 70000);
}

TEST_CASE("gemm: the backend in use", "[gemm]") {
  const std::string name = gla::detail::gemm_backend_name();
  INFO(name);
#ifdef GLA_GEMM_FORCE_EIGEN
  CHECK_FALSE(gla::detail::gemm_uses_libxsmm());
#elif defined(GLA_HAVE_LIBXSMM)
  CHECK(gla::detail::gemm_uses_libxsmm());
  CHECK_THAT(name, GLA_CONTAINS("libxsmm"));
#else
  CHECK_FALSE(gla::detail::gemm_uses_libxsmm());
  CHECK_THAT(name, GLA_CONTAINS("Eigen"));
#endif
  // gemm_libxsmm declines whatever is not compiled in, leaving C untouched; double never goes to libxsmm
  std::vector<double> a(4, 1.0), c(4, 5.0);
  CHECK_FALSE(gla::detail::gemm_libxsmm(Trans::N, Trans::N, 2, 2, 2, a.data(), 2, a.data(), 2, false, c.data(), 2));
  CHECK(c == std::vector<double>(4, 5.0));
  // AMX takes bfloat16 only, and only where it is compiled in and the CPU and OS allow it
  std::vector<float> af(4, 1.f), cf(4, 5.f);
  CHECK_FALSE(gla::detail::gemm_amx(Trans::N, Trans::N, 2, 2, 2, af.data(), 2, af.data(), 2, false, cf.data(), 2));
  CHECK(cf == std::vector<float>(4, 5.f));
#if defined(GLA_GEMM_FORCE_EIGEN) || defined(GLA_GEMM_NO_INTRINSICS)
  CHECK_FALSE(gla::detail::gemm_compiled_with_amx());
#endif
  CHECK(gla::detail::amx_available() == (name.find("AMX") != std::string::npos));
  if (!gla::detail::amx_available()) {
    std::vector<bf16> ab(4, bf16(1.f));
    CHECK_FALSE(gla::detail::gemm_amx(Trans::N, Trans::N, 2, 2, 2, ab.data(), 2, ab.data(), 2, false, cf.data(), 2));
    CHECK(cf == std::vector<float>(4, 5.f));
  }
}

TEMPLATE_TEST_CASE("gemm: transpose_to_float transposes at any destination stride, padding untouched", "[gemm]", float,
                   bf16, half) {
  using In = TestType;
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> unit(-1.f, 1.f);
  // 16×16 blocks (the AVX-512 path) with scalar edges, and sizes below one block.
  const std::vector<std::array<Index, 2>> shapes{{16, 16}, {64, 128}, {33, 20}, {5, 3}, {1, 17}, {48, 64}};
  for (const auto& [rows, cols] : shapes)
    for (const Index pad : {Index(0), Index(7)}) {
      const Index lds = cols + 5, ldd = rows + pad;
      std::vector<In> src(static_cast<std::size_t>(rows * lds));
      for (In& x : src) x = static_cast<In>(unit(rng));
      const float sentinel = -12345.f;
      std::vector<float> dst(static_cast<std::size_t>(cols * ldd), sentinel);
      gla::detail::gemm_impl::transpose_to_float(src.data(), lds, rows, cols, dst.data(), pad == 0 ? -1 : ldd);
      INFO("rows " << rows << " cols " << cols << " ldd " << ldd);
      bool ok = true;
      for (Index j = 0; j < cols; ++j)
        for (Index i = 0; i < ldd; ++i) {
          const float want = i < rows ? static_cast<float>(src[static_cast<std::size_t>(i * lds + j)]) : sentinel;
          ok = ok && dst[static_cast<std::size_t>(j * ldd + i)] == want;
        }
      CHECK(ok);
    }
}

TEST_CASE("gemm: k = 0 zeroes C or leaves it, m = 0 or n = 0 touches nothing", "[gemm]") {
  std::vector<float> C(6, 3.f);
  gla::detail::gemm<float>(Trans::N, Trans::N, 2, 3, 0, nullptr, 0, nullptr, 3, true, C.data(), 3);
  CHECK(C == std::vector<float>(6, 3.f));
  gla::detail::gemm<float>(Trans::N, Trans::N, 2, 3, 0, nullptr, 0, nullptr, 3, false, C.data(), 3);
  CHECK(C == std::vector<float>(6, 0.f));
  gla::detail::gemm<bf16>(Trans::T, Trans::N, 0, 3, 4, nullptr, 0, nullptr, 3, false, nullptr, 3);
  gla::detail::gemm<double>(Trans::N, Trans::T, 3, 0, 4, nullptr, 4, nullptr, 4, false, nullptr, 0);
}

TEST_CASE("gemm: invalid arguments throw gla::Error naming the argument", "[gemm]") {
  std::vector<float> a(64, 1.f), b(64, 1.f), c(64, 0.f);
  using gla::detail::gemm;
  CHECK_GLA_ERROR("gla::detail::gemm: m is -1, expected >= 0",
                  gemm<float>(Trans::N, Trans::N, -1, 4, 4, a.data(), 4, b.data(), 4, false, c.data(), 4));
  CHECK_GLA_ERROR("k is -3, expected >= 0",
                  gemm<float>(Trans::N, Trans::N, 4, 4, -3, a.data(), 4, b.data(), 4, false, c.data(), 4));
  CHECK_GLA_ERROR("lda is 3, expected >= 4 (A stored row-major 2x4, ta = N)",
                  gemm<float>(Trans::N, Trans::N, 2, 4, 4, a.data(), 3, b.data(), 4, false, c.data(), 4));
  CHECK_GLA_ERROR("lda is 3, expected >= 5 (A stored row-major 4x5, ta = T)",
                  gemm<float>(Trans::T, Trans::N, 5, 4, 4, a.data(), 3, b.data(), 4, false, c.data(), 5));
  CHECK_GLA_ERROR("ldb is 2, expected >= 6 (B stored row-major 3x6, tb = T)",
                  gemm<float>(Trans::N, Trans::T, 2, 3, 6, a.data(), 6, b.data(), 2, false, c.data(), 3));
  CHECK_GLA_ERROR("ldc is 3, expected >= 4 (C row-major 2x4)",
                  gemm<float>(Trans::N, Trans::N, 2, 4, 4, a.data(), 4, b.data(), 4, false, c.data(), 3));
  CHECK_GLA_ERROR("B is null, expected a pointer to a row-major 4x4 matrix",
                  gemm<float>(Trans::N, Trans::N, 4, 4, 4, a.data(), 4, nullptr, 4, false, c.data(), 4));
  CHECK_GLA_ERROR("C is null", gemm<float>(Trans::N, Trans::N, 4, 4, 4, a.data(), 4, b.data(), 4, false, nullptr, 4));
  std::vector<bf16> ha(64);
  CHECK_GLA_ERROR(
      "gla::detail::gemm_eigen: n is -2",
      gla::detail::gemm_eigen<bf16>(Trans::N, Trans::N, 4, -2, 4, ha.data(), 4, ha.data(), 4, false, c.data(), 4));
  CHECK_GLA_ERROR(
      "gla::detail::gemm_libxsmm: ldb is 1",
      gla::detail::gemm_libxsmm<float>(Trans::N, Trans::N, 4, 4, 4, a.data(), 4, b.data(), 1, false, c.data(), 4));
}

TEST_CASE("gemm: more kernels than the per-thread cache holds stay correct", "[gemm]") {
  // 3 × 4 × 2 × 6 = 144 distinct kernels (> 64 cache slots), visited twice: evictions and re-dispatches
  std::vector<Case> cases;
  for (const Index m : {8, 24, 40})
    for (const Index n : {8, 16, 24, 40})
      for (const bool acc : {false, true})
        for (const Index pad : {0, 1, 2})
          for (const Trans tb : kTrans) cases.push_back(make_case(Trans::N, tb, m, n, 32, pad, acc));
  std::vector<Case> twice = cases;
  twice.insert(twice.end(), cases.begin(), cases.end());
  check_cases<float>(twice, 80000);
  check_cases<bf16>(twice, 90000);
}

TEST_CASE("gemm: concurrent calls from several threads give the single-thread results", "[gemm]") {
  // Shapes used nowhere else, so the threads also race on the first dispatch of each kernel.
  std::vector<Case> cases;
  for (const Trans ta : kTrans)
    for (const Trans tb : kTrans) {
      cases.push_back(make_case(ta, tb, 24, 72, 88, 0, false));
      cases.push_back(make_case(ta, tb, 72, 40, 56, 5, true));
      cases.push_back(make_case(ta, tb, 33, 47, 29, -520, true));
    }
  std::vector<Problem<float>> pf;
  std::vector<Problem<bf16>> pb;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    pf.emplace_back(cases[i], 100000 + i);
    pb.emplace_back(cases[i], 200000 + i);
  }
  constexpr int kThreads = 4, kRounds = 25;
  std::atomic<int> go{0};
  std::vector<std::vector<std::string>> failures(kThreads);
  // each thread's last result per case and type, compared bitwise with a single-thread run afterwards
  std::vector<std::vector<std::vector<float>>> last(kThreads, std::vector<std::vector<float>>(2 * cases.size()));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      const auto ut = static_cast<std::size_t>(t);
      const gla::detail::EigenSingleThreaded pin;
      go.fetch_add(1);
      while (go.load() < kThreads) std::this_thread::yield();
      std::vector<float> C;
      for (int r = 0; r < kRounds; ++r)
        for (std::size_t i = 0; i < 2 * cases.size(); ++i) {
          const std::size_t j = (i + ut * 5) % (2 * cases.size());  // threads out of step
          const std::size_t c = j % cases.size();
          const std::string w = j < cases.size() ? pf[c].run(Backend::Auto, C) : pb[c].run(Backend::Auto, C);
          if (!w.empty() && failures[ut].size() < 4)
            failures[ut].push_back("thread " + std::to_string(t) + " " + cases[c].str() + ": " + w);
          last[ut][j] = C;
        }
    });
  for (std::thread& th : threads) th.join();
  std::size_t n = 0;
  for (const auto& f : failures)
    for (const std::string& s : f) {
      UNSCOPED_INFO(s);
      ++n;
    }
  const gla::detail::EigenSingleThreaded pin;
  std::vector<float> C;
  for (std::size_t j = 0; j < 2 * cases.size(); ++j) {
    const std::size_t c = j % cases.size();
    (void)(j < cases.size() ? pf[c].run(Backend::Auto, C) : pb[c].run(Backend::Auto, C));
    for (int t = 0; t < kThreads; ++t)
      if (last[static_cast<std::size_t>(t)][j].size() != C.size() ||
          std::memcmp(last[static_cast<std::size_t>(t)][j].data(), C.data(), C.size() * sizeof(float)) != 0) {
        UNSCOPED_INFO("thread " << t << " differs from the single-thread result: " << cases[c].str());
        ++n;
      }
  }
  CHECK(n == 0);
}

TEST_CASE("gemm: inside AmxTileScopes products are the same, bit for bit, and the tiles are released", "[gemm]") {
  // The chunk kernels open one scope per work item, so the AMX configuration is loaded once for many products.
  // Every shape the other tests run — chunk products, odd shapes with edge tiles, and products beyond AMX's size
  // limit, which leave the scope's configuration for the other backends — must give what it gives outside.
  std::vector<Case> cases = chunk_cases(0);
  for (const Case& c : odd_cases()) cases.push_back(c);
  for (const Case& c : edge_cases()) cases.push_back(c);
  const gla::detail::EigenSingleThreaded pin;
  std::vector<Problem<bf16>> problems;
  for (std::size_t i = 0; i < cases.size(); ++i) problems.emplace_back(cases[i], 300000 + i);
  std::vector<std::vector<float>> outside(problems.size()), inside(problems.size());
  for (std::size_t i = 0; i < problems.size(); ++i) CHECK(problems[i].run(Backend::Auto, outside[i]).empty());
  {
    const gla::detail::AmxTileScope scope;
    const gla::detail::AmxTileScope nested;  // scopes nest: only the outermost releases
    for (std::size_t i = 0; i < problems.size(); ++i) {
      INFO(problems[i].c.str());
      CHECK(problems[i].run(Backend::Auto, inside[i]).empty());
      CHECK(std::memcmp(inside[i].data(), outside[i].data(), inside[i].size() * sizeof(float)) == 0);
    }
#if GLA_GEMM_WITH_AMX
    CHECK(gla::detail::gemm_impl::amx_thread_state().scopes == 2);
#endif
  }
#if GLA_GEMM_WITH_AMX
  CHECK(gla::detail::gemm_impl::amx_thread_state().scopes == 0);
  CHECK_FALSE(gla::detail::gemm_impl::amx_thread_state().configured);
  if (gla::detail::amx_available()) {
    const gla::detail::AmxTileScope scope;
    std::vector<float> C;
    REQUIRE(problems.front().run(Backend::Auto, C).empty());
    CHECK(gla::detail::gemm_impl::amx_thread_state().configured);  // kept for the scope's next product
  }
  CHECK_FALSE(gla::detail::gemm_impl::amx_thread_state().configured);
#endif
  // An error thrown inside a scope unwinds it like any other exit.
  std::vector<bf16> a(64, bf16(1.f));
  std::vector<float> c(64, 0.f);
  try {
    const gla::detail::AmxTileScope scope;
    std::vector<float> C;
    CHECK(problems.front().run(Backend::Auto, C).empty());
    gla::detail::gemm<bf16>(Trans::N, Trans::N, 4, 4, 4, a.data(), 4, a.data(), 1, false, c.data(), 4);
    FAIL("gemm accepted ldb = 1 for a 4×4 B");
  } catch (const gla::Error& e) {
    CHECK_THAT(std::string(e.what()), GLA_CONTAINS("ldb is 1"));
  }
#if GLA_GEMM_WITH_AMX
  CHECK(gla::detail::gemm_impl::amx_thread_state().scopes == 0);
  CHECK_FALSE(gla::detail::gemm_impl::amx_thread_state().configured);
#endif
  std::vector<float> after;
  CHECK(problems.back().run(Backend::Auto, after).empty());
}
