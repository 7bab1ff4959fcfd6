#pragma once
/// gla/detail/convert.hpp: contiguous runs of elements converted between the input scalars and the accumulator.
///
/// Eigen converts bfloat16 one element at a time through a function call (no packet path), which made reading
/// bfloat16 rows the largest cost of the bfloat16 chunk kernels. A bfloat16 is the upper half of a float, so
/// widening is a 16-bit shift and narrowing is round-to-nearest-even on the bits: plain integer loops the compiler
/// vectorises. Both give exactly Eigen's results (NaN narrows to Eigen's quiet NaN of the same sign).

#include <gla/core.hpp>

#include <cstdint>
#include <cstring>
#include <type_traits>

namespace gla {
namespace detail {

/// dst[i] = To(src[i]) for i in [0, n), rounding as Eigen's casts do.
template <class To, class From>
inline void convert_n(const From* src, To* dst, Index n) {
  if constexpr (std::is_same_v<To, From>) {
    if (n > 0 && src != dst) std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(To));
  } else if constexpr (std::is_same_v<From, Eigen::bfloat16> && std::is_same_v<To, float>) {
    static_assert(sizeof(Eigen::bfloat16) == 2, "bfloat16 is 16 bits");
    const auto* s = reinterpret_cast<const std::uint16_t*>(src);
    auto* d = reinterpret_cast<std::uint32_t*>(dst);
    for (Index i = 0; i < n; ++i) d[i] = static_cast<std::uint32_t>(s[i]) << 16;
  } else if constexpr (std::is_same_v<From, float> && std::is_same_v<To, Eigen::bfloat16>) {
    const auto* s = reinterpret_cast<const std::uint32_t*>(src);
    auto* d = reinterpret_cast<std::uint16_t*>(dst);
    for (Index i = 0; i < n; ++i) {
      const std::uint32_t b = s[i];
      const std::uint32_t rounded = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
      const std::uint32_t nan = (b & 0x80000000u) ? 0xFFC0u : 0x7FC0u;
      d[i] = static_cast<std::uint16_t>((b & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
    }
  } else {
    for (Index i = 0; i < n; ++i) dst[i] = static_cast<To>(src[i]);
  }
}

}  // namespace detail
}  // namespace gla
