// gla/detail/convert.hpp: the element conversions of the chunk kernels give exactly Eigen's casts, bit for bit,
// on every kind of float (ties, NaN of both signs, infinities, denormals, the largest finite values) and every
// length (the vectorised body and the scalar tail); convert_operand_n and store_operand_row narrow product
// operands the same way except for what the AMX products ignore (denormals); reciprocal_row's accuracy;
// convert_n_streaming (non-temporal stores) writes exactly what convert_n writes; factored_operands (the
// forward's fused pass over a chunk's rows) gives the separate passes' results bit for bit.

#include <gla/detail/chunk_kernels.hpp>
#include <gla/detail/convert.hpp>

#include "support/catch.hpp"
#include "support/test_utils.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <limits>
#include <vector>

using gla::Index;

namespace {

using bf16 = Eigen::bfloat16;

std::uint16_t bits(bf16 x) {
  std::uint16_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

float from_bits(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

/// Special values first, then random bit patterns (any float, NaN included).
std::vector<float> awkward_floats(std::size_t n, std::uint64_t salt) {
  std::vector<float> v = {0.f,
                          -0.f,
                          1.f,
                          -1.f,
                          std::numeric_limits<float>::infinity(),
                          -std::numeric_limits<float>::infinity(),
                          std::numeric_limits<float>::quiet_NaN(),
                          -std::numeric_limits<float>::quiet_NaN(),
                          from_bits(0x7F800001u),  // signalling NaN
                          from_bits(0xFFBFFFFFu),  // negative NaN with a payload
                          std::numeric_limits<float>::max(),
                          -std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::denorm_min(),
                          from_bits(0x00400000u),  // a denormal
                          std::numeric_limits<float>::min(),
                          from_bits(0x3F808000u),  // a tie that rounds down to even
                          from_bits(0x3F818000u),  // a tie that rounds up to even
                          from_bits(0x3F80FFFFu),
                          from_bits(0x7F7FFFFFu),  // rounds up to infinity
                          from_bits(0x477FE000u)};
  std::mt19937_64 g = gla::test::rng(salt);
  while (v.size() < n) v.push_back(from_bits(static_cast<std::uint32_t>(g())));
  v.resize(n);
  return v;
}

/// What convert_operand_n (and so store_operand_row) must give for x: Eigen's cast, except where the CPU's
/// conversion narrows (kNarrowsOperandsInHardware): there a denormal x gives a zero of its sign and a NaN any NaN.
bool operand_narrowing_ok(float x, bf16 got) {
  if (!gla::detail::kNarrowsOperandsInHardware) return bits(got) == bits(bf16(x));
  if (std::isnan(x)) return Eigen::numext::isnan(got);
  if (x != 0.f && std::abs(x) < std::numeric_limits<float>::min()) return bits(got) == (std::signbit(x) ? 0x8000 : 0);
  return bits(got) == bits(bf16(x));
}

}  // namespace

TEST_CASE("convert_n narrows float to bfloat16 exactly as Eigen's cast, every length", "[convert]") {
  for (const Index n : {0, 1, 15, 16, 17, 31, 32, 33, 100, 1000}) {
    const std::vector<float> src = awkward_floats(static_cast<std::size_t>(std::max<Index>(n, 1)), 7 + n);
    std::vector<bf16> got(src.size(), bf16(123.f));
    gla::detail::convert_n(src.data(), got.data(), n);
    Index wrong = 0, first = -1;
    for (Index i = 0; i < n; ++i)
      if (bits(got[static_cast<std::size_t>(i)]) != bits(bf16(src[static_cast<std::size_t>(i)]))) {
        if (first < 0) first = i;
        ++wrong;
      }
    INFO("n=" << n << ", first differing element " << first);
    CHECK(wrong == 0);
    if (n == 0) CHECK(bits(got[0]) == bits(bf16(123.f)));  // nothing written
  }
}

TEST_CASE("convert_n widens bfloat16 to float exactly", "[convert]") {
  std::vector<bf16> src;
  for (std::uint32_t b = 0; b < 65536; ++b) src.push_back(Eigen::numext::bit_cast<bf16>(static_cast<std::uint16_t>(b)));
  std::vector<float> got(src.size());
  gla::detail::convert_n(src.data(), got.data(), static_cast<Index>(src.size()));
  Index wrong = 0;
  for (std::size_t i = 0; i < src.size(); ++i) {
    const float want = static_cast<float>(src[i]);
    if (std::memcmp(&want, &got[i], sizeof want) != 0) ++wrong;
  }
  CHECK(wrong == 0);
}

TEST_CASE("convert_operand_n rounds as Eigen's cast, and with the CPU's conversion denormals become zeros",
          "[convert]") {
  // Lengths cover the 16-wide body and the masked tail; the element after the last must stay untouched.
  for (const Index n : {0, 1, 15, 16, 17, 31, 33, 64, 100, 1000}) {
    const std::vector<float> src = awkward_floats(static_cast<std::size_t>(n) + 1, 300 + n);
    std::vector<bf16> got(src.size(), bf16(123.f));
    gla::detail::convert_operand_n(src.data(), got.data(), n);
    Index wrong = 0, first = -1;
    for (Index i = 0; i < n; ++i)
      if (!operand_narrowing_ok(src[static_cast<std::size_t>(i)], got[static_cast<std::size_t>(i)])) {
        if (first < 0) first = i;
        ++wrong;
      }
    INFO("n=" << n << ", first wrong element " << first << ", hardware " << gla::detail::kNarrowsOperandsInHardware);
    CHECK(wrong == 0);
    CHECK(bits(got[static_cast<std::size_t>(n)]) == bits(bf16(123.f)));
  }
  // The two differences, where the CPU's conversion is used: denormals of both signs, a NaN with a payload.
  if (gla::detail::kNarrowsOperandsInHardware) {
    const float in[3] = {from_bits(0x00400000u), from_bits(0x80000001u), from_bits(0xFFBFFFFFu)};
    bf16 out[3];
    gla::detail::convert_operand_n(in, out, 3);
    CHECK(bits(out[0]) == 0x0000);
    CHECK(bits(out[1]) == 0x8000);
    CHECK(Eigen::numext::isnan(out[2]));
  }
  // float to float is a copy
  const std::vector<float> f = awkward_floats(37, 9);
  std::vector<float> fc(f.size());
  gla::detail::convert_operand_n(f.data(), fc.data(), static_cast<Index>(f.size()));
  CHECK(std::memcmp(f.data(), fc.data(), f.size() * sizeof(float)) == 0);
}

TEST_CASE("reciprocal_row is within 2 ulp of the quotient over the factored path's range, every length", "[convert]") {
  // x = e^{G} for |G| up to the factored path's bound (and a little beyond), as chunk_output forms e^{−G}.
  std::mt19937_64 g = gla::test::rng(41);
  const double bound = gla::detail::kFactoredDecayBound + 0.5;
  std::uniform_real_distribution<double> u(-bound, bound);
  for (const Index n : {0, 1, 15, 16, 17, 63, 64, 100, 4096}) {
    std::vector<float> x(static_cast<std::size_t>(n) + 1);
    for (float& v : x) v = static_cast<float>(std::exp(u(g)));
    if (n >= 2) {
      x[0] = 1.f;
      x[1] = std::nextafter(static_cast<float>(std::exp(-bound)), 1.f);
    }
    std::vector<float> y(x.size(), -1.f);
    gla::detail::reciprocal_row(x.data(), y.data(), n);
    double worst_ulps = 0;
    for (Index i = 0; i < n; ++i) {
      const double q = 1.0 / static_cast<double>(x[static_cast<std::size_t>(i)]);
      const float qf = static_cast<float>(q);
      const double ulp = static_cast<double>(std::nextafter(qf, 2.f * qf) - qf);
      worst_ulps = std::max(worst_ulps, std::abs(static_cast<double>(y[static_cast<std::size_t>(i)]) - q) / ulp);
    }
    INFO("n=" << n);
    CHECK(worst_ulps <= 2.0);
    CHECK(y[static_cast<std::size_t>(n)] == -1.f);  // nothing past the end
    // in place
    std::vector<float> z = x;
    gla::detail::reciprocal_row(z.data(), z.data(), n);
    CHECK(std::memcmp(z.data(), y.data(), static_cast<std::size_t>(n) * sizeof(float)) == 0);
  }
  // double divides
  const double xd[3] = {0.5, 3.0, 1e-3};
  double yd[3];
  gla::detail::reciprocal_row(xd, yd, 3);
  for (int i = 0; i < 3; ++i) CHECK(yd[i] == 1.0 / xd[i]);
}

TEST_CASE("store_operand_row narrows an expression as convert_operand_n, in place too", "[convert]") {
  for (const Index n : {1, 16, 37, 128}) {
    const std::vector<float> a = awkward_floats(static_cast<std::size_t>(n), 100 + n);
    std::vector<float> b(static_cast<std::size_t>(n));
    std::mt19937_64 g = gla::test::rng(200 + n);
    std::uniform_real_distribution<float> u(-3.f, 3.f);
    for (float& x : b) x = u(g);
    const Eigen::Map<const Eigen::Array<float, 1, Eigen::Dynamic>> am(a.data(), n), bm(b.data(), n);
    const Eigen::Array<float, 1, Eigen::Dynamic> want = am * bm + 0.5f;
    std::vector<bf16> got(static_cast<std::size_t>(n));
    gla::detail::store_operand_row(got.data(), am * bm + 0.5f);
    Index wrong = 0;
    for (Index i = 0; i < n; ++i) wrong += !operand_narrowing_ok(want(i), got[static_cast<std::size_t>(i)]);
    INFO("n=" << n);
    CHECK(wrong == 0);
    // float to float is Eigen's assignment, and the destination may be an operand
    std::vector<float> c = b;
    Eigen::Map<Eigen::Array<float, 1, Eigen::Dynamic>> cm(c.data(), n);
    gla::detail::store_operand_row(c.data(), cm * 2.f);
    for (Index i = 0; i < n; ++i) CHECK(c[static_cast<std::size_t>(i)] == 2.f * b[static_cast<std::size_t>(i)]);
  }
}

TEST_CASE("convert_n_streaming writes exactly what convert_n writes, at every alignment", "[convert]") {
  // from 16 elements before a 64-byte line to 16 after, lengths around whole lines; sentinels on both sides
  for (const Index offset : {0, 1, 2, 7, 15, 16, 17, 31}) {
    for (const Index n : {0, 1, 15, 16, 17, 31, 32, 33, 64, 100, 257}) {
      const std::vector<float> src = awkward_floats(static_cast<std::size_t>(n + 1), 300 + n + offset);
      alignas(64) float f_got[512];
      alignas(64) bf16 b_got[512];
      std::fill(std::begin(f_got), std::end(f_got), 7.f);
      std::fill(std::begin(b_got), std::end(b_got), bf16(7.f));
      gla::detail::convert_n_streaming(src.data(), f_got + offset, n);
      gla::detail::convert_n_streaming(src.data(), b_got + offset, n);
      gla::detail::stream_fence();
      std::vector<float> f_want(static_cast<std::size_t>(n + 1));
      std::vector<bf16> b_want(static_cast<std::size_t>(n + 1));
      gla::detail::convert_n(src.data(), f_want.data(), n);
      gla::detail::convert_n(src.data(), b_want.data(), n);
      Index wrong = 0;
      for (Index i = 0; i < 512; ++i) {
        const bool inside = i >= offset && i < offset + n;
        const float fw = inside ? f_want[static_cast<std::size_t>(i - offset)] : 7.f;
        const bf16 bw = inside ? b_want[static_cast<std::size_t>(i - offset)] : bf16(7.f);
        wrong += std::memcmp(&fw, &f_got[i], sizeof fw) != 0;
        wrong += bits(bw) != bits(b_got[i]);
      }
      INFO("offset=" << offset << " n=" << n);
      CHECK(wrong == 0);
    }
  }
}

TEST_CASE("only float and bfloat16 outputs of float accumulators stream, and only on AVX-512", "[convert]") {
  constexpr bool avx512 = GLA_CONVERT_AVX512 == 1;
  STATIC_REQUIRE(gla::detail::kStreamsNonTemporal<float, float> == avx512);
  STATIC_REQUIRE(gla::detail::kStreamsNonTemporal<bf16, float> == avx512);
  STATIC_REQUIRE_FALSE(gla::detail::kStreamsNonTemporal<double, double>);
  STATIC_REQUIRE_FALSE(gla::detail::kStreamsNonTemporal<Eigen::half, float>);
  // OutputWrites never asks for streaming where the stores would be plain (the output prefetch stays on then)
  CHECK_FALSE(gla::detail::OutputWrites::for_tensor<double>(Index(1) << 24).streaming);
  CHECK(gla::detail::OutputWrites::for_tensor<float>(Index(1) << 24).streaming == avx512);
  CHECK_FALSE(gla::detail::OutputWrites::for_tensor<float>(Index(1) << 10).streaming);
}

namespace {

/// factored_operands against the separate passes it fuses, for inputs of scalar In and operands of scalar Op:
/// G, qg, kd (when bounded), the last row of e^{G} and the bound answer, bit for bit.
template <class In, class Op>
void check_factored_operands(Index L, Index K, const std::string& gates, std::uint64_t salt) {
  using gla::detail::Rows;
  std::mt19937_64 g = gla::test::rng(salt);
  std::uniform_real_distribution<float> sym(-1.f, 1.f), unit(0.f, 1.f);
  std::vector<In> q(static_cast<std::size_t>(L * K)), k(q.size()), gt(q.size());
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] = In(sym(g));
    k[i] = In(sym(g));
    const float logsig = -std::log1p(std::exp(-unit(g)));
    gt[i] = In(gates == "strong" ? -5.f * unit(g) : logsig / 16.f);
  }
  if (gates == "nan") gt[static_cast<std::size_t>(L * K / 2)] = In(std::numeric_limits<float>::quiet_NaN());
  if (gates == "floor") gt[0] = In(-std::numeric_limits<float>::infinity());
  const Rows<In> qr{q.data(), K}, kr{k.data(), K}, gr{gates == "none" ? nullptr : gt.data(), K};
  const float floor = gla::detail::kChunkGateFloor<float>, scale = 0.125f;

  std::vector<float> G(q.size()), el(static_cast<std::size_t>(K));
  std::vector<Op> qg(q.size()), kd(q.size());
  bool bounded = false;
  const bool ran = gla::detail::factored_operands(qr, kr, gr, floor, scale, L, K, G.data(), qg.data(), kd.data(),
                                                  el.data(), bounded);
  INFO("L=" << L << " K=" << K << " gates=" << gates);
  REQUIRE(ran == (gla::detail::kFusesFactoredOperands<float, Op> && K % 16 == 0));
  if (!ran) return;

  // The separate passes: gate_cumsum, decay_is_bounded, Eigen's exp, the operand rows, reciprocal_row. Their
  // rows are 64-byte aligned, as a workspace's are: on an unaligned row Eigen exponentiates the first elements
  // one at a time, with another rounding than its packet exp.
  std::vector<float, Eigen::aligned_allocator<float>> Gw(q.size()), e(q.size()), inv(q.size());
  std::vector<float> row(static_cast<std::size_t>(K));
  std::vector<Op> qgw(q.size()), kdw(q.size());
  gla::detail::gate_cumsum(gr, L, K, floor, Gw.data());
  const bool bounded_want = gla::detail::decay_is_bounded(Gw.data(), L, K);
  using Arr = Eigen::Map<Eigen::Array<float, 1, Eigen::Dynamic>>;
  using CArr = Eigen::Map<const Eigen::Array<float, 1, Eigen::Dynamic>>;
  for (Index r = 0; r < L; ++r) {
    Arr er(e.data() + r * K, K);
    er = CArr(Gw.data() + r * K, K).exp();
    gla::detail::convert_n(qr.row(r), row.data(), K);
    gla::detail::store_operand_row(qgw.data() + r * K, CArr(row.data(), K) * er * scale);
    gla::detail::reciprocal_row(e.data() + r * K, inv.data() + r * K, K);
    gla::detail::convert_n(kr.row(r), row.data(), K);
    gla::detail::store_operand_row(kdw.data() + r * K, CArr(row.data(), K) * CArr(inv.data() + r * K, K));
  }
  CHECK(bounded == bounded_want);
  if (gates == "mild" || gates == "none") CHECK(bounded);
  if (gates == "nan" || gates == "floor" || (gates == "strong" && L >= 17)) CHECK(!bounded);
  const auto same = [](const auto& a, const auto& b, std::size_t n) {
    return std::memcmp(a.data(), b.data(), n * sizeof(a[0])) == 0;
  };
  CHECK(same(G, Gw, G.size()));
  CHECK(same(qg, qgw, qg.size()));
  if (bounded) {
    CHECK(same(kd, kdw, kd.size()));
    CHECK(std::memcmp(el.data(), e.data() + (L - 1) * K, static_cast<std::size_t>(K) * sizeof(float)) == 0);
  }
}

}  // namespace

TEST_CASE("factored_operands gives the separate passes' G, operands and bound bit for bit", "[convert]") {
  std::uint64_t salt = 500;
  for (const Index L : {1, 17, 64})
    for (const Index K : {16, 60, 64, 128})
      for (const std::string gates : {"mild", "strong", "nan", "floor", "none"}) {
        check_factored_operands<float, float>(L, K, gates, ++salt);
        check_factored_operands<Eigen::half, float>(L, K, gates, ++salt);
        check_factored_operands<bf16, float>(L, K, gates, ++salt);
        check_factored_operands<bf16, bf16>(L, K, gates, ++salt);
      }
}
