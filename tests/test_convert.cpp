// gla/detail/convert.hpp: the element conversions of the chunk kernels give exactly Eigen's casts, bit for bit,
// on every kind of float (ties, NaN of both signs, infinities, denormals, the largest finite values) and every
// length (the vectorised body and the scalar tail); store_operand_row narrows an expression like Eigen's cast;
// convert_n_streaming (non-temporal stores) writes exactly what convert_n writes.

#include <gla/detail/chunk_kernels.hpp>
#include <gla/detail/convert.hpp>

#include "support/catch.hpp"
#include "support/test_utils.hpp"

#include <algorithm>
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

TEST_CASE("store_operand_row narrows an expression as Eigen's cast, in place too", "[convert]") {
  for (const Index n : {1, 16, 37, 128}) {
    const std::vector<float> a = awkward_floats(static_cast<std::size_t>(n), 100 + n);
    std::vector<float> b(static_cast<std::size_t>(n));
    std::mt19937_64 g = gla::test::rng(200 + n);
    std::uniform_real_distribution<float> u(-3.f, 3.f);
    for (float& x : b) x = u(g);
    const Eigen::Map<const Eigen::Array<float, 1, Eigen::Dynamic>> am(a.data(), n), bm(b.data(), n);
    const Eigen::Array<bf16, 1, Eigen::Dynamic> want = (am * bm + 0.5f).cast<bf16>();
    std::vector<bf16> got(static_cast<std::size_t>(n));
    gla::detail::store_operand_row(got.data(), am * bm + 0.5f);
    Index wrong = 0;
    for (Index i = 0; i < n; ++i) wrong += bits(got[static_cast<std::size_t>(i)]) != bits(want(i));
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
