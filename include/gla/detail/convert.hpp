#pragma once
/// gla/detail/convert.hpp: contiguous runs of elements converted between the input scalars and the accumulator.
///
/// Eigen converts bfloat16 one element at a time through a function call (no packet path), which made reading
/// bfloat16 rows the largest cost of the bfloat16 chunk kernels. A bfloat16 is the upper half of a float, so
/// widening is a 16-bit shift and narrowing is round-to-nearest-even on the bits: plain integer loops the compiler
/// vectorises (narrowing with AVX-512 intrinsics where the including code targets AVX-512: GCC left that loop
/// scalar). Both give exactly Eigen's results (NaN narrows to Eigen's quiet NaN of the same sign).

#include <gla/core.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__AVX512F__) && !defined(GLA_GEMM_NO_INTRINSICS)
#include <immintrin.h>
#define GLA_CONVERT_AVX512 1
#else
#define GLA_CONVERT_AVX512 0
#endif
#if GLA_CONVERT_AVX512 && defined(__AVX512BF16__)
#define GLA_CONVERT_AVX512BF16 1
#else
#define GLA_CONVERT_AVX512BF16 0
#endif

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
    Index i = 0;
#if GLA_CONVERT_AVX512
    // the scalar loop below, 16 lanes at a time: round to nearest even on the bits, NaN to a quiet NaN
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7FFF);
    const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF), inf = _mm512_set1_epi32(0x7F800000);
    const __m512i sign16 = _mm512_set1_epi32(0x8000), qnan = _mm512_set1_epi32(0x7FC0);
    for (; i + 16 <= n; i += 16) {
      const __m512i b = _mm512_loadu_si512(s + i);
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), one);
      const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(b, bias), lsb), 16);
      const __m512i nan = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(b, 16), sign16), qnan);
      const __mmask16 is_nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(b, abs_mask), inf);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i),
                          _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(is_nan, rounded, nan)));
    }
#endif
    for (; i < n; ++i) {
      const std::uint32_t b = s[i];
      const std::uint32_t rounded = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
      const std::uint32_t nan = (b & 0x80000000u) ? 0xFFC0u : 0x7FC0u;
      d[i] = static_cast<std::uint16_t>((b & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
    }
  } else {
    for (Index i = 0; i < n; ++i) dst[i] = static_cast<To>(src[i]);
  }
}

/// Whether convert_operand_n<Eigen::bfloat16> narrows with the CPU's instruction (VCVTNEPS2BF16).
inline constexpr bool kNarrowsOperandsInHardware = GLA_CONVERT_AVX512BF16 != 0;

#if GLA_CONVERT_AVX512BF16
/// 16 floats narrowed to bfloat16 operands with the CPU's conversion (VCVTNEPS2BF16), as convert_operand_n does.
inline __m256i narrow16_operand(__m512 x) { return (__m256i)_mm512_cvtneps_pbh(x); }
#endif

/// dst[0, n) = Op(src[0, n)) for values about to be a product's operands: convert_n, except that float to
/// bfloat16 uses the CPU's conversion (AVX512-BF16: one instruction per 16 values instead of the bit-level
/// rounding's eight) where the including code targets it. It rounds to nearest even as convert_n does; it differs
/// only where the AMX products that take bfloat16 operands ignore the difference: denormal values (below 1.2e-38)
/// become zeros of their sign, which TDPBF16PS would treat as zero anyway, and a NaN keeps its payload (it is
/// still a NaN). Not for outputs: those keep convert_n's rounding, which is Eigen's.
template <class Op, class From>
inline void convert_operand_n(const From* src, Op* dst, Index n) {
#if GLA_CONVERT_AVX512BF16
  if constexpr (std::is_same_v<Op, Eigen::bfloat16> && std::is_same_v<From, float>) {
    auto* d = reinterpret_cast<std::uint16_t*>(dst);
    Index i = 0;
    for (; i + 16 <= n; i += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), narrow16_operand(_mm512_loadu_ps(src + i)));
    if (i < n) {  // the tail through masks, so every element is narrowed the same way
      const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
      _mm256_mask_storeu_epi16(d + i, m, narrow16_operand(_mm512_maskz_loadu_ps(m, src + i)));
    }
    return;
  }
#endif
  convert_n(src, dst, n);
}

/// Whether convert_n_streaming<To, From> writes with non-temporal stores (else it is plain convert_n).
template <class To, class From>
inline constexpr bool kStreamsNonTemporal = GLA_CONVERT_AVX512 && std::is_same_v<From, float> &&
                                            (std::is_same_v<To, float> || std::is_same_v<To, Eigen::bfloat16>);

/// dst[0, n) = To(src[0, n)) as convert_n, with the whole 64-byte lines of dst written by non-temporal stores
/// (float and bfloat16 outputs on AVX-512: kStreamsNonTemporal; otherwise plain convert_n). Such stores skip the
/// read-for-ownership of each output line and do not displace the cache, which pays off when the output is much
/// larger than the cache and is not read back soon. They are weakly ordered: the caller ends the run of them with
/// stream_fence().
template <class To, class From>
inline void convert_n_streaming(const From* src, To* dst, Index n) {
#if GLA_CONVERT_AVX512
  constexpr bool kFloatOut = std::is_same_v<From, float> && std::is_same_v<To, float>;
  if constexpr (kStreamsNonTemporal<To, From>) {
    constexpr Index kLine = 64 / static_cast<Index>(sizeof(To));  // elements per cache line
    const auto misalign = reinterpret_cast<std::uintptr_t>(dst) % 64;
    if (misalign % sizeof(To) != 0) {  // no element boundary on a line boundary: plain stores
      convert_n(src, dst, n);
      return;
    }
    const Index head = std::min<Index>(n, misalign == 0 ? 0 : static_cast<Index>((64 - misalign) / sizeof(To)));
    convert_n(src, dst, head);
    Index i = head;
    for (; i + kLine <= n; i += kLine) {
      if constexpr (kFloatOut) {
        _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
      } else {
        alignas(64) To line[kLine];
        convert_n(src + i, line, kLine);
        _mm512_stream_si512(reinterpret_cast<__m512i*>(dst + i), _mm512_load_si512(line));
      }
    }
    convert_n(src + i, dst + i, n - i);
    return;
  }
#endif
  convert_n(src, dst, n);
}

/// Orders the non-temporal stores of convert_n_streaming before whatever this thread stores next (and so before
/// the parallel region's end publishes them).
inline void stream_fence() {
#if GLA_CONVERT_AVX512
  _mm_sfence();
#endif
}

/// A row of n values of In as Acc: the row itself when In is Acc, else widened into buf (exact). Eigen's
/// cast<float>() of a bfloat16 row inside an expression keeps the whole expression scalar.
template <class Acc, class In>
inline const Acc* widen_row(const In* row, Acc* buf, Index n) {
  if constexpr (std::is_same_v<In, Acc>) {
    (void)buf;
    (void)n;
    return row;
  } else {
    convert_n(row, buf, n);
    return buf;
  }
}

/// dst[0, e.size()) = Op(e), a row of product operands, for a one-dimensional Eigen array expression e: Eigen's
/// assignment when Op is e's scalar; otherwise e is evaluated 16 elements at a time (vectorised) and narrowed by
/// convert_operand_n, because Eigen's cast<bfloat16>() narrows one element at a time through a function call and
/// keeps the whole expression scalar. dst may be one of e's operands (each block is read before it is written).
template <class Op, class Expr>
inline void store_operand_row(Op* dst, const Expr& e) {
  using Acc = typename Expr::Scalar;
  const Index n = e.size();
  if constexpr (std::is_same_v<Op, Acc>) {
    Eigen::Map<Eigen::Array<Op, 1, Eigen::Dynamic>>(dst, n) = e;
  } else {
    constexpr int kBlock = 16;
    Eigen::Array<Acc, 1, kBlock> t;
    Index j = 0;
    for (; j + kBlock <= n; j += kBlock) {
      t = e.template segment<kBlock>(j);
      convert_operand_n(t.data(), dst + j, kBlock);
    }
    if (j < n) {
      const Index r = n - j;
      t.head(r) = e.segment(j, r);
      convert_operand_n(t.data(), dst + j, r);
    }
  }
}

}  // namespace detail
}  // namespace gla
