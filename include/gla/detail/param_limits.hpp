#pragma once
/// gla/detail/param_limits.hpp: the bound on parameter sizes that the modules and the layer check before they
/// allocate, and the overflow-free size arithmetic behind it.

#include <gla/core.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

namespace gla {

/// The most parameter elements one module or layer may hold: 2^40 (4 TiB as float, 8 TiB as double), far beyond
/// any real model layer. A larger size is rejected with gla::Error before anything is allocated: it could not be
/// allocated anyway (std::bad_alloc at best), and within the bound every element count fits Index and every byte
/// count fits std::size_t on a 64-bit host.
inline constexpr std::int64_t kMaxParameterElements = std::int64_t{1} << 40;

namespace detail {

/// a·b for a, b ≥ 0, saturated at INT64_MAX instead of overflowing.
inline std::int64_t sat_mul(std::int64_t a, std::int64_t b) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  if (a == 0 || b == 0) return 0;
  return a > kMax / b ? kMax : a * b;
}

/// a + b for a, b ≥ 0, saturated at INT64_MAX instead of overflowing.
inline std::int64_t sat_add(std::int64_t a, std::int64_t b) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  return a > kMax - b ? kMax : a + b;
}

/// A saturated count for a message: the number, or "more than 2^63 - 1" when it saturated.
inline std::string count_str(std::int64_t n) {
  return n == std::numeric_limits<std::int64_t>::max() ? std::string("more than 2^63 - 1") : std::to_string(n);
}

/// Throws `fn: <what> = <n> elements, expected at most 2^40 = 1099511627776` when n (a saturated element count
/// of parameters stored as `element_bytes`-byte scalars) exceeds kMaxParameterElements, or its byte count would not
/// fit Index and std::size_t (only possible on a host with a 32-bit size_t).
inline void check_parameter_elements(const std::string& fn, const std::string& what, std::int64_t n,
                                     std::size_t element_bytes) {
  const auto index_max = static_cast<std::uint64_t>(std::numeric_limits<Index>::max());
  const auto size_max = static_cast<std::uint64_t>(std::numeric_limits<std::size_t>::max());
  const std::uint64_t byte_max = (index_max < size_max ? index_max : size_max) / element_bytes;
  if (n < 0 || n > kMaxParameterElements || static_cast<std::uint64_t>(n) > byte_max)
    fail(fn, what + " = " + count_str(n) + " elements, expected at most 2^40 = " +
                 std::to_string(kMaxParameterElements) + " (gla::kMaxParameterElements)");
}

}  // namespace detail
}  // namespace gla
