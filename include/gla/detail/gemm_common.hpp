#pragma once
/// gla/detail/gemm_common.hpp: what gemm()'s backends share (gla/detail/gemm.hpp and gla/detail/gemm_amx.hpp):
/// the transpose flag, the per-thread scratch buffer, and the AVX-512 loads and 16×16 transpose of the packs.

#include <gla/core.hpp>

#include <cstddef>
#include <memory>
#include <new>

#if defined(__AVX512F__) && !defined(GLA_GEMM_NO_INTRINSICS)
#define GLA_GEMM_AVX512 1
#include <immintrin.h>
#else
#define GLA_GEMM_AVX512 0
#endif

namespace gla {
namespace detail {

/// Whether a gemm operand is used as stored (N) or transposed (T).
enum class Trans { N, T };

namespace gemm_impl {

/// A 64-byte aligned buffer grown on demand and never shrunk (contents are not kept across growth).
template <class T>
class Scratch {
 public:
  T* get(std::size_t n) {
    if (n > cap_) {
      const std::size_t cap = (n + 1023) & ~std::size_t{1023};
      buf_.reset(static_cast<T*>(::operator new (cap * sizeof(T), std::align_val_t{64})));
      cap_ = cap;
    }
    return buf_.get();
  }

 private:
  struct Free {
    void operator()(T* p) const noexcept { ::operator delete (p, std::align_val_t{64}); }
  };
  std::unique_ptr<T, Free> buf_;
  std::size_t cap_ = 0;
};

#if GLA_GEMM_AVX512
inline __m512 load16_as_float(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load16_as_float(const Eigen::bfloat16* p) {  // bfloat16 is the upper half of a float
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline __m512 load16_as_float(const Eigen::half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

/// d (16×16, row stride ld) = transpose of s (16×16, row stride ls), converted to float.
template <class In>
inline void transpose16x16(const In* s, Index ls, float* d, Index ld) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = load16_as_float(s + i * ls);
  for (int i = 0; i < 8; ++i) {  // interleave row pairs: 2×2 blocks
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // 4×4 blocks within each 128-bit lane
    r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i + 0], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 2; ++i)  // then the 128-bit lanes: 8×8 blocks
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
      t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xDD);
    }
  for (int j = 0; j < 8; ++j) {  // and 16×16
    _mm512_storeu_ps(d + j * ld, _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88));
    _mm512_storeu_ps(d + (8 + j) * ld, _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD));
  }
}
#endif

}  // namespace gemm_impl
}  // namespace detail
}  // namespace gla
