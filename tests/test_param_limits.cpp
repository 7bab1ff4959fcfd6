// gla::kMaxParameterElements: the modules reject parameter sizes that overflow or exceed 2^40 elements with a
// gla::Error before they allocate (instead of std::bad_alloc, or an overflowed size that allocates too little).

#include <gla/detail/param_limits.hpp>
#include <gla/modules/norms.hpp>
#include <gla/modules/short_conv.hpp>

#include "support/catch.hpp"
#include "support/test_utils.hpp"

#include <cstdint>
#include <limits>

namespace {
constexpr std::int64_t kTwo40 = std::int64_t{1} << 40;
constexpr std::int64_t kMax64 = std::numeric_limits<std::int64_t>::max();
}  // namespace

TEST_CASE("saturating size arithmetic and the parameter bound", "[limits]") {
  using gla::detail::sat_add;
  using gla::detail::sat_mul;
  STATIC_REQUIRE(gla::kMaxParameterElements == kTwo40);
  CHECK(sat_mul(0, kMax64) == 0);
  CHECK(sat_mul(kMax64, 0) == 0);
  CHECK(sat_mul(3, 5) == 15);
  CHECK(sat_mul(std::int64_t{1} << 31, std::int64_t{1} << 31) == std::int64_t{1} << 62);
  CHECK(sat_mul(std::int64_t{1} << 32, std::int64_t{1} << 31) == kMax64);
  CHECK(sat_mul(kMax64, 2) == kMax64);
  CHECK(sat_add(kMax64 - 1, 1) == kMax64);
  CHECK(sat_add(kMax64, 1) == kMax64);
  CHECK(sat_add(2, 3) == 5);

  CHECK_NOTHROW(gla::detail::check_parameter_elements("f", "x", kTwo40, 8));
  CHECK_NOTHROW(gla::detail::check_parameter_elements("f", "x", 0, 4));
  CHECK_GLA_ERROR("f: x = 1099511627777 elements, expected at most 2^40 = 1099511627776 (gla::kMaxParameterElements)",
                  gla::detail::check_parameter_elements("f", "x", kTwo40 + 1, 4));
  CHECK_GLA_ERROR("f: x = more than 2^63 - 1 elements", gla::detail::check_parameter_elements("f", "x", kMax64, 4));
  CHECK_GLA_ERROR("f: x = -1 elements", gla::detail::check_parameter_elements("f", "x", -1, 4));
}

TEST_CASE("ShortConvolution: hidden_size * kernel_size beyond 2^40 is a gla::Error, not an allocation",
          "[limits][short_conv]") {
  using Conv = gla::ShortConvolution<float>;
  CHECK_GLA_ERROR("ShortConvolution: the parameters, hidden_size * kernel_size = 1099511627776 * 4 = 4398046511104 "
                  "elements, expected at most 2^40 = 1099511627776",
                  Conv(kTwo40, 4));
  CHECK_GLA_ERROR("hidden_size * kernel_size = 4 * 1099511627776 = 4398046511104 elements", Conv(4, kTwo40));
  // Products beyond int64 saturate instead of wrapping around to a small (allocatable) size.
  CHECK_GLA_ERROR("= 4294967296 * 4294967296 = more than 2^63 - 1 elements",
                  Conv(std::int64_t{1} << 32, std::int64_t{1} << 32));
  CHECK_GLA_ERROR("= 9223372036854775807 * 9223372036854775807 = more than 2^63 - 1 elements", Conv(kMax64, kMax64));
  // With a bias: D·W + D.
  CHECK_GLA_ERROR("hidden_size * kernel_size + hidden_size (bias) = 549755813888 * 2 + 549755813888 = 1649267441664",
                  Conv(std::int64_t{1} << 39, 2, true));
  CHECK_GLA_ERROR("hidden_size * kernel_size + hidden_size (bias)",
                  gla::ShortConvolution<double>(std::int64_t{1} << 39, 2, true, "silu"));
  // Non-positive sizes are still reported as such, before the product.
  CHECK_GLA_ERROR("ShortConvolution: hidden_size is -1, expected > 0", Conv(-1, kMax64));
  CHECK_GLA_ERROR("ShortConvolution: kernel_size is 0, expected >= 1", Conv(kTwo40, 0));
  // Ordinary sizes are unaffected.
  const Conv ok(96, 4, true);
  CHECK(ok.weight.size() == 96 * 4);
  CHECK(ok.state_size() == 96 * 4);
}

TEST_CASE("RMSNorm and FusedRMSNormGated: hidden_size beyond 2^40 is a gla::Error, not an allocation",
          "[limits][norms]") {
  CHECK_GLA_ERROR("RMSNorm: hidden_size is 2199023255552, expected at most 2^40 = 1099511627776",
                  gla::RMSNorm<float>(2 * kTwo40));
  CHECK_GLA_ERROR("RMSNorm: hidden_size is 9223372036854775807, expected at most 2^40",
                  gla::RMSNorm<double>(kMax64, true, true));
  CHECK_GLA_ERROR("FusedRMSNormGated: hidden_size is 1099511627777, expected at most 2^40",
                  gla::FusedRMSNormGated<float>(kTwo40 + 1));
  CHECK_GLA_ERROR("FusedRMSNormGated: hidden_size is 2199023255552", gla::FusedRMSNormGated<float>(2 * kTwo40, false));
  CHECK(gla::RMSNorm<float>(64).weight->size() == 64);
}
