#pragma once
/// gla/detail/gemm_common.hpp: what gemm()'s backends share (gla/detail/gemm.hpp and gla/detail/gemm_amx.hpp):
/// the transpose flag, the per-thread scratch buffer, the AVX-512 loads and 16×16 transpose, and the bfloat16
/// VNNI packs (vectorised with AVX-512BW, scalar loops otherwise: one implementation for every backend).

#include <gla/core.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>

#if defined(__AVX512F__) && !defined(GLA_GEMM_NO_INTRINSICS)
#define GLA_GEMM_AVX512 1
#include <immintrin.h>
// For helpers on arrays of registers: a call out of line would pass them through memory.
#if defined(_MSC_VER) && !defined(__clang__)
#define GLA_GEMM_ALWAYS_INLINE __forceinline
#else
#define GLA_GEMM_ALWAYS_INLINE inline __attribute__((always_inline))
#endif
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

/// r[0..16) ← their transpose: 16 registers of 16 floats read as a 16×16 matrix, row i in r[i].
GLA_GEMM_ALWAYS_INLINE void transpose16_in_registers(__m512 r[16]) {
  __m512 t[16];
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
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
  }
}

/// d (16×16, row stride ld) = transpose of s (16×16, row stride ls), converted to float. With `stream`, each row of
/// d that starts a 64-byte line is written with a non-temporal store (weakly ordered: the caller fences).
template <class In>
inline void transpose16x16(const In* s, Index ls, float* d, Index ld, bool stream = false) {
  __m512 r[16];
  for (int i = 0; i < 16; ++i) r[i] = load16_as_float(s + i * ls);
  transpose16_in_registers(r);
  for (int i = 0; i < 16; ++i) {
    float* const di = d + i * ld;
    if (stream && reinterpret_cast<std::uintptr_t>(di) % 64 == 0)
      _mm512_stream_ps(di, r[i]);
    else
      _mm512_storeu_ps(di, r[i]);
  }
}

#endif  // GLA_GEMM_AVX512

// The packs' byte shuffles (vpermt2w) are AVX-512BW; without it they run as the scalar loops below.
#if GLA_GEMM_AVX512 && defined(__AVX512BW__)
#define GLA_GEMM_VNNI_PACKS 1
#else
#define GLA_GEMM_VNNI_PACKS 0
#endif

/// One VNNI word: two bfloat16 bit patterns, lo in the low half.
inline std::uint32_t vnni_word(std::uint16_t lo, std::uint16_t hi) {
  return std::uint32_t{lo} | (std::uint32_t{hi} << 16);
}

/// v (kp/2 rows of np words, np >= n, kp >= k even) = op(B) in VNNI words, zero padded: word q·np + j holds
/// op(B)(2q, j) and op(B)(2q+1, j), low half first — the left operand of libxsmm's and AMX's bfloat16 products.
/// b16: B's bfloat16 bits, row stride ldb.
inline void pack_vnni_b(Trans tb, Index k, Index n, const std::uint16_t* b16, Index ldb, Index kp, Index np,
                        std::uint32_t* v) {
  const Index kh = k / 2;
  if (tb == Trans::N) {  // B is k×n: interleave rows 2q and 2q+1
#if GLA_GEMM_VNNI_PACKS
    // word j of the output = (r0[j], r1[j]): 16-bit lane 2j takes r0[j] (index j), lane 2j+1 takes r1[j]
    // (index 32 + j); lo covers columns 0..15 of the 32 loaded, hi columns 16..31.
    alignas(64) static constexpr std::uint16_t idx_lo[32] = {0,  32, 1,  33, 2,  34, 3,  35, 4,  36, 5,
                                                             37, 6,  38, 7,  39, 8,  40, 9,  41, 10, 42,
                                                             11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
    alignas(64) static constexpr std::uint16_t idx_hi[32] = {16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21,
                                                             53, 22, 54, 23, 55, 24, 56, 25, 57, 26, 58,
                                                             27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
    const __m512i lo = _mm512_load_si512(idx_lo), hi = _mm512_load_si512(idx_hi);
#endif
    for (Index q = 0; q < kh; ++q) {
      const std::uint16_t* r0 = b16 + 2 * q * ldb;
      const std::uint16_t* r1 = r0 + ldb;
      std::uint32_t* d = v + q * np;
      Index j = 0;
#if GLA_GEMM_VNNI_PACKS
      for (; j + 32 <= n; j += 32) {
        const __m512i x0 = _mm512_loadu_si512(r0 + j), x1 = _mm512_loadu_si512(r1 + j);
        _mm512_storeu_si512(d + j, _mm512_permutex2var_epi16(x0, lo, x1));
        _mm512_storeu_si512(d + j + 16, _mm512_permutex2var_epi16(x0, hi, x1));
      }
#endif
      for (; j < n; ++j) d[j] = vnni_word(r0[j], r1[j]);
      for (; j < np; ++j) d[j] = 0;
    }
    if (k & 1) {
      const std::uint16_t* r0 = b16 + (k - 1) * ldb;
      std::uint32_t* d = v + kh * np;
      for (Index j = 0; j < n; ++j) d[j] = r0[j];
      for (Index j = n; j < np; ++j) d[j] = 0;
    }
  } else {  // B is n×k: row j's consecutive pairs are the words of column j, so Bv is a 32-bit transpose
    Index j0 = 0;
#if GLA_GEMM_AVX512
    if ((ldb & 1) == 0 && (reinterpret_cast<std::uintptr_t>(b16) & 3u) == 0) {  // words aligned: 16×16 blocks
      const auto* w = reinterpret_cast<const float*>(b16);                      // bit patterns only, no arithmetic
      const Index ldw = ldb / 2;
      for (; j0 + 16 <= n; j0 += 16) {
        Index q0 = 0;
        for (; q0 + 16 <= kh; q0 += 16)
          transpose16x16(w + j0 * ldw + q0, ldw, reinterpret_cast<float*>(v + q0 * np + j0), np);
        for (Index q = q0; q < kh; ++q)
          for (Index j = j0; j < j0 + 16; ++j)
            v[q * np + j] = vnni_word(b16[j * ldb + 2 * q], b16[j * ldb + 2 * q + 1]);
      }
    }
#endif
    for (Index q = 0; q < kh; ++q)
      for (Index j = j0; j < n; ++j) v[q * np + j] = vnni_word(b16[j * ldb + 2 * q], b16[j * ldb + 2 * q + 1]);
    if (k & 1)
      for (Index j = 0; j < n; ++j) v[kh * np + j] = b16[j * ldb + k - 1];
    for (Index q = 0; q < (k + 1) / 2; ++q)
      for (Index j = n; j < np; ++j) v[q * np + j] = 0;
  }
  for (Index q = (k + 1) / 2; q < kp / 2; ++q) std::memset(v + q * np, 0, static_cast<std::size_t>(np) * 4);
}

/// p (mp × kp, row-major) = op(A), zero padded; with ta == T, mp must be a multiple of 16 and kp of 32, and w
/// must hold kp/2 × mp words. a16: A's bfloat16 bits, row stride lda. For ta == T (A stored k×m) the vectorised
/// pack first interleaves rows 2q and 2q+1 into words (pack_vnni_b's layout, in w), whose 32-bit transpose is
/// op(A) row-major: word (i, q) = (A(2q, i), A(2q+1, i)) = op(A)(i, 2q), op(A)(i, 2q+1).
inline void pack_rows_a(Trans ta, Index m, Index k, const std::uint16_t* a16, Index lda, Index mp, Index kp,
                        std::uint16_t* p, std::uint32_t* w) {
  if (ta == Trans::N) {
    for (Index i = 0; i < m; ++i) {
      std::uint16_t* d = p + i * kp;
      std::memcpy(d, a16 + i * lda, static_cast<std::size_t>(k) * 2);
      std::memset(d + k, 0, static_cast<std::size_t>(kp - k) * 2);
    }
    for (Index i = m; i < mp; ++i) std::memset(p + i * kp, 0, static_cast<std::size_t>(kp) * 2);
    return;
  }
#if GLA_GEMM_VNNI_PACKS
  pack_vnni_b(Trans::N, k, m, a16, lda, kp, mp, w);  // kp/2 × mp words, zero padded
  auto* pw = reinterpret_cast<float*>(p);           // mp × kp/2 words; bit patterns only
  const auto* ww = reinterpret_cast<const float*>(w);
  const Index kh = kp / 2;
  for (Index q0 = 0; q0 < kh; q0 += 16)
    for (Index i0 = 0; i0 < mp; i0 += 16) transpose16x16(ww + q0 * mp + i0, mp, pw + i0 * kh + q0, kh);
#else
  (void)w;
  for (Index i = 0; i < m; ++i) {
    std::uint16_t* d = p + i * kp;
    for (Index q = 0; q < k; ++q) d[q] = a16[q * lda + i];
    std::memset(d + k, 0, static_cast<std::size_t>(kp - k) * 2);
  }
  for (Index i = m; i < mp; ++i) std::memset(p + i * kp, 0, static_cast<std::size_t>(kp) * 2);
#endif
}

}  // namespace gemm_impl
}  // namespace detail
}  // namespace gla
