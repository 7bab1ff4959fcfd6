#pragma once
/// gla/detail/gemm.hpp: the small matrix products of the chunk kernels, C = op(A)·op(B) (+ C), row-major.
///
/// Layouts (all row-major, like every tensor of the library):
///   op(A) is m×k. ta == N: A is stored m×k with row stride lda >= k; ta == T: A is stored k×m, lda >= m.
///   op(B) is k×n. tb == N: B is stored k×n with row stride ldb >= n; tb == T: B is stored n×k, ldb >= k.
///   C is m×n with row stride ldc >= n. accumulate == false overwrites C without reading it (it may hold NaN);
///   accumulate == true adds the product to it. C must not overlap A or B.
///   Strides may exceed the widths: one head's rows of a [B,T,H,D] tensor are ld = H·D apart.
///   Accumulation is in float for float, bfloat16 and half inputs (C is float) and in double for double.
///
/// Backends, chosen per call by gemm():
///   AMX (bfloat16 inputs only; gla/detail/gemm_amx.hpp): when compiled for a target with AMX-TILE/AMX-BF16 and
///     the CPU and Linux allow it at run time, bfloat16 products with every dimension up to kAmxMaxDim run on the
///     tile unit (TDPBF16PS, float accumulation). Otherwise the backends below, in order.
///   libxsmm (when the build defines GLA_HAVE_LIBXSMM, as gla::gla does with GLA_WITH_LIBXSMM=ON): float,
///     bfloat16 and half products run JIT-generated kernels. libxsmm is column-major, and a row-major matrix read
///     column-major is its transpose, so the row-major C = op(A)·op(B) is computed as the column-major
///     Cᵀ = op(B)ᵀ·op(A)ᵀ: B is libxsmm's left operand, A its right one, m and n swap. What libxsmm 1.17 offers
///     and how each case maps onto it:
///       - only its right operand can be transposed (flag TRANS_B; TRANS_A gets no kernel), and only for
///         float/double: ta == T sets TRANS_B; tb == T packs B into a contiguous k×n copy (per-thread scratch).
///       - alpha must be 1 and beta 0 or 1: accumulate selects beta (BETA_0 flag when false).
///       - bfloat16 inputs with float C: libxsmm's bfloat16 kernels (AVX-512 BF16 dot products, float
///         accumulation) need their left operand in VNNI layout, pairs of consecutive k side by side:
///         Bv[(p/2)·2n + 2j + p%2] = op(B)(p, j) (uint32 word q·n + j holds rows 2q and 2q+1 of column j) with
///         k even, and cannot transpose either operand. Bf16Kernel::Vnni packs so (an odd k padded with a zero
///         row; the right operand read in place when ta == N and k and lda are even, else packed m×k' with
///         k' = k rounded up to even). Bf16Kernel::ViaF32 converts the tiles to float (exact) in per-thread
///         scratch and runs the float kernel instead. Both give the exact products of the bfloat16 values summed
///         in float (in different orders). The default (default_bf16_kernel) follows the CPU: Vnni where VDPBF16PS
///         retires at the float FMA's instruction rate, so at twice its FLOP rate (bf16_dot_full_rate: AMD's Zen 4
///         and Zen 5; there libxsmm's bfloat16 kernels ran at 1.85x (Zen 4) and about 2x (Zen 5) its float ones,
///         packing included); ViaF32 elsewhere (on the Intel Xeon of docs/PERFORMANCE.md's "Small products" it
///         retires at half the float FLOP rate, and the bfloat16 kernels lose to the float ones once packing is
///         counted; that CPU runs bfloat16 on AMX tiles anyway). GLA_GEMM_BF16_VNNI makes Vnni the default
///         everywhere. Half inputs always take the float kernels on converted tiles.
///       - dimensions up to INT_MAX (32-bit libxsmm_blasint); products with a dimension above
///         kXsmmMaxDim go to Eigen, whose cache-blocked GEMM is faster there.
///     Kernels are dispatched once per thread and (type, m, n, k, strides, transposes, accumulate): a
///     thread-local table of kXsmmCacheSets sets of kXsmmCacheWays entries answers repeated calls without locks
///     (libxsmm's own registry, thread-safe but a longer lookup, is asked on a miss). libxsmm_init() runs once,
///     on the first miss of any thread. A shape libxsmm declines (null kernel) falls back to Eigen.
///   Eigen (always available; the only backend without libxsmm, and the one for double): Map products with
///     noalias(). Eigen must be single-threaded inside (the parallel engine pins it in its work items). Half and
///     bfloat16 tiles are converted to float in per-thread scratch first (never whole tensors).
///   Defining GLA_GEMM_FORCE_EIGEN before including this header compiles the Eigen backend only, even when the
///   build defines GLA_HAVE_LIBXSMM (every translation unit of a program must agree; tests/test_gemm_eigen.cpp
///   uses it).
///
/// Scratch (packs and converted tiles) is thread_local, 64-byte aligned, grown on demand and never shrunk, so
/// the steady state allocates nothing. Packing and conversion use AVX-512 when the including code is compiled
/// for it (the project's own targets are, -march=native) unless GLA_GEMM_NO_INTRINSICS is defined, scalar loops
/// otherwise (tests/test_gemm_scalar.cpp; like GLA_GEMM_FORCE_EIGEN, every translation unit must agree). Every
/// function here is safe to call concurrently from several threads.

#include <gla/core.hpp>
#include <gla/detail/gemm_amx.hpp>
#include <gla/detail/gemm_common.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <type_traits>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <cpuid.h>
#endif

#if defined(GLA_HAVE_LIBXSMM) && !defined(GLA_GEMM_FORCE_EIGEN)
#define GLA_GEMM_WITH_LIBXSMM 1
#include <libxsmm.h>
#else
#define GLA_GEMM_WITH_LIBXSMM 0
#endif

namespace gla {
namespace detail {

/// True when gemm() was compiled with its libxsmm backend (a shape libxsmm declines still falls back to Eigen).
constexpr bool gemm_uses_libxsmm() noexcept { return GLA_GEMM_WITH_LIBXSMM != 0; }

/// How the libxsmm backend runs bfloat16 inputs: converted to float tiles on the float kernels, or on libxsmm's
/// bfloat16 kernels with VNNI-packed operands (see the top of this file).
enum class Bf16Kernel { ViaF32, Vnni };

/// True when this CPU has AVX512-BF16 and its dot-product instruction (VDPBF16PS) retires at the float FMA's
/// instruction rate, i.e. at twice the float FLOP rate: AMD family 19h with AVX-512 (Zen 4) and later (measured per
/// core, bench_small_gemm's isa/ rows: Zen 4 231 against 117 GFLOP/s, Zen 5 408 against 221). Intel's retires at half
/// that rate on the CPUs measured here (docs/PERFORMANCE.md, "Small products"). Read from CPUID once per process, never
/// from a timing, so that which kernels run (and so the rounding of bfloat16 results) does not depend on the machine's
/// load.
inline bool bf16_dot_full_rate() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  static const bool full = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
    const bool amd = b == 0x68747541u && d == 0x69746e65u && c == 0x444d4163u;  // "AuthenticAMD"
    if (!amd || !__get_cpuid(1, &a, &b, &c, &d)) return false;
    const unsigned base = (a >> 8) & 0xFu, family = base == 0xFu ? base + ((a >> 20) & 0xFFu) : base;
    if (family < 0x19u || !__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
    return ((a >> 5) & 1u) != 0;  // CPUID.(7,1):EAX bit 5 = AVX512_BF16
  }();
  return full;
#else
  return false;
#endif
}

/// gemm()'s route for bfloat16 inputs on libxsmm: Bf16Kernel::Vnni where bf16_dot_full_rate() (or where the build
/// defines GLA_GEMM_BF16_VNNI), else ViaF32.
inline Bf16Kernel default_bf16_kernel() {
#ifdef GLA_GEMM_BF16_VNNI
  return Bf16Kernel::Vnni;
#else
  static const Bf16Kernel kernel = bf16_dot_full_rate() ? Bf16Kernel::Vnni : Bf16Kernel::ViaF32;
  return kernel;
#endif
}

namespace gemm_impl {

template <class In>
inline constexpr bool is_gemm_scalar_v = is_supported_scalar_v<In>;

inline const char* trans_str(Trans t) { return t == Trans::N ? "N" : "T"; }

#if defined(__GNUC__)
#define GLA_GEMM_COLD __attribute__((noinline, cold))
#else
#define GLA_GEMM_COLD
#endif

/// Throws the gla::Error for the first invalid argument: the function, the argument, expected vs actual.
[[noreturn]] GLA_GEMM_COLD inline void check_failed(const char* fn, Trans ta, Trans tb, Index m, Index n, Index k,
                                                    const void* A, Index lda, const void* B, Index ldb, const void* C,
                                                    Index ldc) {
  const auto dim = [&](const char* name, Index v) {
    if (v < 0) fail(fn, std::string(name) + " is " + std::to_string(v) + ", expected >= 0");
  };
  dim("m", m);
  dim("n", n);
  dim("k", k);
  // name: the matrix; rows × cols: its stored shape; trans: its transpose flag (null for C)
  const auto operand = [&](char name, Index rows, Index cols, const void* p, Index ld, const char* trans) {
    const std::string shape = std::to_string(rows) + "x" + std::to_string(cols);
    const char lower = static_cast<char>(name - 'A' + 'a');
    if (ld < cols)
      fail(fn, std::string("ld") + lower + " is " + std::to_string(ld) + ", expected >= " + std::to_string(cols) +
                   " (" + name +
                   (trans ? " stored row-major " + shape + ", t" + lower + " = " + trans : " row-major " + shape) +
                   ")");
    if (m > 0 && n > 0 && p == nullptr && rows > 0 && cols > 0)
      fail(fn, std::string(1, name) + " is null, expected a pointer to a row-major " + shape + " matrix");
  };
  operand('A', ta == Trans::N ? m : k, ta == Trans::N ? k : m, A, lda, trans_str(ta));
  operand('B', tb == Trans::N ? k : n, tb == Trans::N ? n : k, B, ldb, trans_str(tb));
  operand('C', m, n, C, ldc, nullptr);
  fail(fn, "invalid arguments");  // not reached: check() calls this only when one of the above fails
}

/// Throws gla::Error naming the function and argument, expected vs actual, for any invalid argument: a negative
/// size, a row stride below the stored width, or a null operand that would be read or written. A few compares
/// on every call; the message is built only on failure.
inline void check(const char* fn, Trans ta, Trans tb, Index m, Index n, Index k, const void* A, Index lda,
                  const void* B, Index ldb, const void* C, Index ldc) {
  const Index acols = ta == Trans::N ? k : m, bcols = tb == Trans::N ? n : k;
  const bool bad_size = (m | n | k) < 0 || lda < acols || ldb < bcols || ldc < n;
  const bool bad_ptr = m > 0 && n > 0 && (C == nullptr || (k > 0 && (A == nullptr || B == nullptr)));
  if (bad_size || bad_ptr) check_failed(fn, ta, tb, m, n, k, A, lda, B, ldb, C, ldc);
}

/// The per-thread scratch of gemm(): converted float tiles (Eigen fallback, half) and libxsmm packs.
struct Scratchpad {
  Scratch<float> conv_a, conv_b;  // A and B converted to float and/or repacked, contiguous
  Scratch<std::uint32_t> vnni_b;  // bfloat16 B in VNNI layout, one pair of k per word
  Scratch<std::uint16_t> pack_a;  // bfloat16 A, contiguous m×k' (k' even)
  Scratch<std::uint32_t> a_words;  // ta == T: A's rows interleaved into words before their transpose
};

inline Scratchpad& scratchpad() {
  static thread_local Scratchpad s;
  return s;
}

/// The Eigen backend for S = float or double (inputs and C of the same type); arguments already checked.
template <class S>
void eigen_same(Trans ta, Trans tb, Index m, Index n, Index k, const S* A, Index lda, const S* B, Index ldb,
                bool accumulate, S* C, Index ldc) {
  using In = ConstStridedMap<S>;
  using Stride = Eigen::OuterStride<>;
  StridedMap<S> c(C, m, n, Stride(ldc));
  const auto run = [&](const auto& a, const auto& b) {
    if (accumulate)
      c.noalias() += a * b;
    else
      c.noalias() = a * b;
  };
  if (ta == Trans::N) {
    const In a(A, m, k, Stride(lda));
    if (tb == Trans::N)
      run(a, In(B, k, n, Stride(ldb)));
    else
      run(a, In(B, n, k, Stride(ldb)).transpose());
  } else {
    const In a(A, k, m, Stride(lda));
    if (tb == Trans::N)
      run(a.transpose(), In(B, k, n, Stride(ldb)));
    else
      run(a.transpose(), In(B, n, k, Stride(ldb)).transpose());
  }
}

/// dst (rows × cols, contiguous) = src (rows × cols, row stride lds) converted to float.
template <class In>
void copy_rows_to_float(const In* src, Index lds, Index rows, Index cols, float* dst) {
  for (Index i = 0; i < rows; ++i) {
    const In* s = src + i * lds;
    float* d = dst + i * cols;
    if constexpr (std::is_same_v<In, float>) {
      std::memcpy(d, s, static_cast<std::size_t>(cols) * sizeof(float));
    } else {
      Index j = 0;
#if GLA_GEMM_AVX512
      for (; j + 16 <= cols; j += 16) _mm512_storeu_ps(d + j, load16_as_float(s + j));
#endif
      for (; j < cols; ++j) d[j] = static_cast<float>(s[j]);
    }
  }
}

/// dst (cols × rows, row stride ldd >= rows; contiguous by default) = the transpose of src (rows × cols, row stride
/// lds), converted to float. With `stream`, the 16×16 blocks' rows that start a 64-byte line are written with
/// non-temporal stores (transpose16x16; the caller fences).
template <class In>
void transpose_to_float(const In* src, Index lds, Index rows, Index cols, float* dst, Index ldd = -1,
                        bool stream = false) {
  constexpr Index kb = 16;
  if (ldd < 0) ldd = rows;
  Index i0 = 0;
#if GLA_GEMM_AVX512
  for (; i0 + kb <= rows; i0 += kb) {
    Index j0 = 0;
    for (; j0 + kb <= cols; j0 += kb) transpose16x16(src + i0 * lds + j0, lds, dst + j0 * ldd + i0, ldd, stream);
    for (Index j = j0; j < cols; ++j)
      for (Index i = i0; i < i0 + kb; ++i) dst[j * ldd + i] = static_cast<float>(src[i * lds + j]);
  }
#else
  (void)stream;  // the scalar blocks below use plain stores
#endif
  for (; i0 < rows; i0 += kb)  // blocks of 16×16, scalar
    for (Index j0 = 0; j0 < cols; j0 += kb)
      for (Index j = j0; j < std::min(cols, j0 + kb); ++j)
        for (Index i = i0; i < std::min(rows, i0 + kb); ++i) dst[j * ldd + i] = static_cast<float>(src[i * lds + j]);
}

/// Products with k == 0: C = 0 (or unchanged when accumulating).
template <class S>
void empty_product(Index m, Index n, bool accumulate, S* C, Index ldc) {
  if (!accumulate) StridedMap<S>(C, m, n, Eigen::OuterStride<>(ldc)).setZero();
}

#if GLA_GEMM_WITH_LIBXSMM

/// Products with any dimension above this go to Eigen: libxsmm's kernels are not cache-blocked, and its float
/// kernel, ahead of Eigen up to 512³, falls to half of Eigen's rate at 768³ (bench_small_gemm, square/*).
inline constexpr Index kXsmmMaxDim = 512;
/// The per-thread kernel table: kXsmmCacheSets sets (a power of two) of kXsmmCacheWays keys each. A chunk kernel
/// calls some 10–25 distinct products in turn; with one key per set (direct-mapped, 64 sets) two of them shared a
/// set at the long benchmark shape and evicted each other on every (chunk, head), two registry lookups per item.
inline constexpr std::size_t kXsmmCacheSets = 64;
inline constexpr std::size_t kXsmmCacheWays = 4;

enum class Kind : std::int32_t { F32 = 1, BF16 = 2 };

/// What identifies a libxsmm kernel, in libxsmm's (column-major) terms.
struct XsmmKey {
  std::int32_t kind, m, n, k, lda, ldb, ldc, flags;
  bool operator==(const XsmmKey& o) const noexcept {
    return kind == o.kind && m == o.m && n == o.n && k == o.k && lda == o.lda && ldb == o.ldb && ldc == o.ldc &&
           flags == o.flags;
  }
};

struct XsmmSlot {
  XsmmKey key;
  libxsmm_xmmfunction fn;  // fn.xmm == nullptr: libxsmm declined this key (cached too)
  bool filled;
};

inline std::size_t xsmm_hash(const XsmmKey& k) noexcept {
  std::uint64_t h = 0x9E3779B97F4A7C15ull;
  for (const std::int32_t v : {k.kind, k.m, k.n, k.k, k.lda, k.ldb, k.ldc, k.flags}) {
    h ^= static_cast<std::uint32_t>(v);
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 29;
  }
  return static_cast<std::size_t>(h >> 32);
}

inline void xsmm_init_once() {
  static const bool done = [] {
    libxsmm_init();
    return true;
  }();
  (void)done;
}

inline libxsmm_xmmfunction xsmm_dispatch(const XsmmKey& k) {
  xsmm_init_once();
  const libxsmm_blasint lda = k.lda, ldb = k.ldb, ldc = k.ldc;
  const int flags = k.flags, prefetch = LIBXSMM_GEMM_PREFETCH_NONE;
  const float alpha = 1.f, beta = (k.flags & LIBXSMM_GEMM_FLAG_BETA_0) ? 0.f : 1.f;
  libxsmm_xmmfunction fn;
  fn.xmm = nullptr;
  if (k.kind == static_cast<std::int32_t>(Kind::F32))
    fn.smm = libxsmm_smmdispatch(k.m, k.n, k.k, &lda, &ldb, &ldc, &alpha, &beta, &flags, &prefetch);
  else
    fn.bsmm = libxsmm_bsmmdispatch(k.m, k.n, k.k, &lda, &ldb, &ldc, &alpha, &beta, &flags, &prefetch);
  return fn;
}

/// The kernel for a key: the thread's table, else libxsmm's registry (which JIT-compiles on its first request).
/// A hit moves its key to the front of its set and a miss enters at the front, evicting the set's least recently
/// used key.
inline libxsmm_xmmfunction xsmm_kernel(const XsmmKey& key) {
  static thread_local XsmmSlot table[kXsmmCacheSets][kXsmmCacheWays];  // zero-initialised: no per-thread constructor
  XsmmSlot* const set = table[xsmm_hash(key) & (kXsmmCacheSets - 1)];
  std::size_t way = 0;
  while (way < kXsmmCacheWays && set[way].filled && !(set[way].key == key)) ++way;
  XsmmSlot found;
  if (way < kXsmmCacheWays && set[way].filled) {
    if (way == 0) return set[0].fn;
    found = set[way];
  } else {
    found = {key, xsmm_dispatch(key), true};
    if (way == kXsmmCacheWays) way = kXsmmCacheWays - 1;  // full: the last (least recently used) entry goes
  }
  for (; way > 0; --way) set[way] = set[way - 1];
  set[0] = found;
  return found.fn;
}

/// True when every size fits libxsmm_blasint and no dimension exceeds kXsmmMaxDim.
inline bool xsmm_fits(Index m, Index n, Index k, Index lda, Index ldb, Index ldc) {
  constexpr Index imax = std::numeric_limits<std::int32_t>::max() / 2;  // ldb/k may be rounded up to even
  return m <= kXsmmMaxDim && n <= kXsmmMaxDim && k <= kXsmmMaxDim && lda <= imax && ldb <= imax && ldc <= imax;
}

/// The float kernel of the row-major C = op(A)·B for B k×n with row stride ldb (null when libxsmm declines).
inline libxsmm_smmfunction xsmm_f32_kernel(Trans ta, Index m, Index n, Index k, Index lda, Index ldb, Index ldc,
                                           bool accumulate) {
  const int flags = (ta == Trans::T ? LIBXSMM_GEMM_FLAG_TRANS_B : 0) | (accumulate ? 0 : LIBXSMM_GEMM_FLAG_BETA_0);
  const auto i32 = [](Index v) { return static_cast<std::int32_t>(v); };
  return xsmm_kernel(
             {static_cast<std::int32_t>(Kind::F32), i32(n), i32(m), i32(k), i32(ldb), i32(lda), i32(ldc), flags})
      .smm;
}

inline bool xsmm_f32(Trans ta, Trans tb, Index m, Index n, Index k, const float* A, Index lda, const float* B,
                     Index ldb, bool accumulate, float* C, Index ldc) {
  if (!xsmm_fits(m, n, k, lda, ldb, ldc)) return false;
  const bool pack = tb == Trans::T;  // libxsmm cannot transpose its left operand: B goes k×n into scratch
  const libxsmm_smmfunction fn = xsmm_f32_kernel(ta, m, n, k, lda, pack ? n : ldb, ldc, accumulate);
  if (fn == nullptr) return false;
  const float* left = B;
  if (pack) {
    float* p = scratchpad().conv_b.get(static_cast<std::size_t>(k * n));
    transpose_to_float(B, ldb, n, k, p);
    left = p;
  }
  fn(left, A, C);
  return true;
}

/// bfloat16 or half inputs on the float kernels: A converted as stored (ta kept: TRANS_B), op(B) converted
/// to k×n, both contiguous in per-thread scratch.
template <class In>
bool xsmm_via_f32(Trans ta, Trans tb, Index m, Index n, Index k, const In* A, Index lda, const In* B, Index ldb,
                  bool accumulate, float* C, Index ldc) {
  if (!xsmm_fits(m, n, k, lda, ldb, ldc)) return false;
  const Index ar = ta == Trans::N ? m : k, ac = ta == Trans::N ? k : m;
  const libxsmm_smmfunction fn = xsmm_f32_kernel(ta, m, n, k, ac, n, ldc, accumulate);
  if (fn == nullptr) return false;
  Scratchpad& sp = scratchpad();
  float* a = sp.conv_a.get(static_cast<std::size_t>(m * k));
  float* b = sp.conv_b.get(static_cast<std::size_t>(k * n));
  copy_rows_to_float(A, lda, ar, ac, a);
  if (tb == Trans::N)
    copy_rows_to_float(B, ldb, k, n, b);
  else
    transpose_to_float(B, ldb, n, k, b);
  fn(b, a, C);
  return true;
}

inline bool xsmm_bf16_vnni(Trans ta, Trans tb, Index m, Index n, Index k, const Eigen::bfloat16* A, Index lda,
                           const Eigen::bfloat16* B, Index ldb, bool accumulate, float* C, Index ldc) {
  if (!xsmm_fits(m, n, k, lda, ldb, ldc)) return false;
  const Index kp = k + (k & 1);
  const bool pack_a = ta == Trans::T || (k & 1) != 0 || (lda & 1) != 0;
  // A packed from its transpose: pack_rows_a transposes whole 16×16 blocks of words, so its scratch has m rounded
  // up to 16 rows of k rounded up to 32 (the kernel reads the first m rows and kp columns).
  const bool transpose_a = ta == Trans::T;
  const Index mp = transpose_a ? (m + 15) / 16 * 16 : m, ka = transpose_a ? (k + 31) / 32 * 32 : kp;
  const int flags = LIBXSMM_GEMM_FLAG_VNNI_A | (accumulate ? 0 : LIBXSMM_GEMM_FLAG_BETA_0);
  const XsmmKey key{static_cast<std::int32_t>(Kind::BF16), static_cast<std::int32_t>(n),
                    static_cast<std::int32_t>(m),          static_cast<std::int32_t>(kp),
                    static_cast<std::int32_t>(n),          static_cast<std::int32_t>(pack_a ? ka : lda),
                    static_cast<std::int32_t>(ldc),        flags};
  const libxsmm_xmmfunction fn = xsmm_kernel(key);
  if (fn.bsmm == nullptr) return false;
  Scratchpad& sp = scratchpad();
  const auto* a16 = reinterpret_cast<const std::uint16_t*>(A);
  const auto* b16 = reinterpret_cast<const std::uint16_t*>(B);

  // Left operand: op(B) in VNNI layout, word q·n + j = (op(B)(2q, j), op(B)(2q+1, j)), low half first.
  std::uint32_t* v = sp.vnni_b.get(static_cast<std::size_t>((kp / 2) * n));
  pack_vnni_b(tb, k, n, b16, ldb, kp, n, v);

  // Right operand: op(A) as row-major m×k (libxsmm's column-major k×m), even row stride, zero-padded to kp.
  const std::uint16_t* right = a16;
  if (pack_a) {
    std::uint16_t* p = sp.pack_a.get(static_cast<std::size_t>(mp * ka));
    std::uint32_t* w = transpose_a ? sp.a_words.get(static_cast<std::size_t>(ka / 2 * mp)) : nullptr;
    pack_rows_a(ta, m, k, a16, lda, mp, ka, p, w);
    right = p;
  }
  fn.bsmm(reinterpret_cast<const libxsmm_bfloat16*>(v), reinterpret_cast<const libxsmm_bfloat16*>(right), C);
  return true;
}

#endif  // GLA_GEMM_WITH_LIBXSMM

/// libxsmm for one call: true when done, false when not available (C untouched); arguments already checked,
/// m, n, k > 0.
template <class In>
bool libxsmm_run(Trans ta, Trans tb, Index m, Index n, Index k, const In* A, Index lda, const In* B, Index ldb,
                 bool accumulate, acc_t<In>* C, Index ldc, Bf16Kernel bf16_kernel) {
#if GLA_GEMM_WITH_LIBXSMM
  if constexpr (std::is_same_v<In, float>) {
    return xsmm_f32(ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc);
  } else if constexpr (std::is_same_v<In, Eigen::bfloat16>) {
    if (bf16_kernel == Bf16Kernel::Vnni) return xsmm_bf16_vnni(ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc);
    return xsmm_via_f32(ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc);
  } else if constexpr (std::is_same_v<In, Eigen::half>) {
    return xsmm_via_f32(ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc);
  } else {
    return false;  // double: Eigen
  }
#else
  (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)A, (void)lda, (void)B, (void)ldb, (void)accumulate, (void)C,
      (void)ldc, (void)bf16_kernel;
  return false;
#endif
}

/// AMX for one call (bfloat16 inputs only): true when done, false when not compiled in, not usable on this CPU
/// or the shape is too large (C untouched); arguments already checked, m, n, k > 0.
template <class In>
bool amx_run(Trans ta, Trans tb, Index m, Index n, Index k, const In* A, Index lda, const In* B, Index ldb,
             bool accumulate, acc_t<In>* C, Index ldc) {
#if GLA_GEMM_WITH_AMX
  if constexpr (std::is_same_v<In, Eigen::bfloat16>) {
    if (amx_bf16(ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc)) return true;
    amx_release_scoped();  // the other backends may configure the tiles their own way (libxsmm's may use AMX)
    return false;
  }
#endif
  (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)A, (void)lda, (void)B, (void)ldb, (void)accumulate, (void)C,
      (void)ldc;
  return false;
}

/// The Eigen backend for any input type; arguments already checked, m, n, k > 0. bfloat16 and half operands
/// are converted to float as stored (Eigen's products take the transposes).
template <class In>
void eigen_run(Trans ta, Trans tb, Index m, Index n, Index k, const In* A, Index lda, const In* B, Index ldb,
               bool accumulate, acc_t<In>* C, Index ldc) {
  if constexpr (std::is_same_v<In, acc_t<In>>) {
    eigen_same<In>(ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc);
  } else {
    const Index ar = ta == Trans::N ? m : k, ac = ta == Trans::N ? k : m;
    const Index br = tb == Trans::N ? k : n, bc = tb == Trans::N ? n : k;
    Scratchpad& sp = scratchpad();
    float* a = sp.conv_a.get(static_cast<std::size_t>(m * k));
    float* b = sp.conv_b.get(static_cast<std::size_t>(k * n));
    copy_rows_to_float(A, lda, ar, ac, a);
    copy_rows_to_float(B, ldb, br, bc, b);
    eigen_same<float>(ta, tb, m, n, k, a, ac, b, bc, accumulate, C, ldc);
  }
}

/// Common entry: checks, handles empty products; returns false when the caller's backend must run.
template <class In>
bool trivial(const char* fn, Trans ta, Trans tb, Index m, Index n, Index k, const In* A, Index lda, const In* B,
             Index ldb, bool accumulate, acc_t<In>* C, Index ldc) {
  static_assert(is_gemm_scalar_v<In>, "gla::detail::gemm: In must be float, double, Eigen::bfloat16 or Eigen::half");
  check(fn, ta, tb, m, n, k, A, lda, B, ldb, C, ldc);
  if (m == 0 || n == 0) return true;
  if (k == 0) {
    empty_product(m, n, accumulate, C, ldc);
    return true;
  }
  return false;
}

}  // namespace gemm_impl

/// Keeps AMX's tile configuration loaded from the first bfloat16 product in its lifetime to its end, instead of
/// loading and releasing it in every product (gla/detail/gemm_amx.hpp): for one work item of the chunk kernels,
/// whose small products would otherwise spend as much on the configuration as on their arithmetic. The code in
/// its lifetime must run no AMX code but gemm()'s (no oneDNN primitive, say), which would find the tiles
/// configured for gemm(), or leave them configured its own way. Scopes nest; a no-op where AMX is not compiled in.
class AmxTileScope {
 public:
  AmxTileScope() {
#if GLA_GEMM_WITH_AMX
    ++gemm_impl::amx_thread_state().scopes;
#endif
  }
  ~AmxTileScope() {
#if GLA_GEMM_WITH_AMX
    if (--gemm_impl::amx_thread_state().scopes == 0) gemm_impl::amx_release_scoped();
#endif
  }
  AmxTileScope(const AmxTileScope&) = delete;
  AmxTileScope& operator=(const AmxTileScope&) = delete;
};

/// C[m×n] (row stride ldc) = op(A)·op(B), plus C when `accumulate`; op(A) is m×k, op(B) is k×n (layouts at the
/// top of this file). float/bfloat16/half accumulate in float (C is float), double in double. Runs libxsmm when
/// built with it and it has a kernel for the call, else Eigen. Throws gla::Error on a negative size, a row stride
/// below the stored width or a null operand that would be read.
template <class In>
void gemm(Trans ta, Trans tb, Index m, Index n, Index k, const In* A, Index lda, const In* B, Index ldb,
          bool accumulate, acc_t<In>* C, Index ldc) {
  if (gemm_impl::trivial("gla::detail::gemm", ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc)) return;
  if (gemm_impl::amx_run(ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc)) return;
  if (gemm_impl::libxsmm_run(ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc, default_bf16_kernel())) return;
  gemm_impl::eigen_run(ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc);
}

/// gemm() on the Eigen backend only (the fallback path; for tests and benchmarks).
template <class In>
void gemm_eigen(Trans ta, Trans tb, Index m, Index n, Index k, const In* A, Index lda, const In* B, Index ldb,
                bool accumulate, acc_t<In>* C, Index ldc) {
  if (gemm_impl::trivial("gla::detail::gemm_eigen", ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc)) return;
  gemm_impl::eigen_run(ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc);
}

/// gemm() on the libxsmm backend only (for tests and benchmarks): returns false, leaving C untouched, when
/// libxsmm is not compiled in or has no kernel for the call (always false for double). Empty products are done
/// here (true). bf16_kernel chooses the bfloat16 route (ignored for other types).
template <class In>
bool gemm_libxsmm(Trans ta, Trans tb, Index m, Index n, Index k, const In* A, Index lda, const In* B, Index ldb,
                  bool accumulate, acc_t<In>* C, Index ldc, Bf16Kernel bf16_kernel = default_bf16_kernel()) {
  if (gemm_impl::trivial("gla::detail::gemm_libxsmm", ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc)) return true;
  return gemm_impl::libxsmm_run(ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc, bf16_kernel);
}

/// gemm() on the AMX backend only (for tests and benchmarks): returns false, leaving C untouched, unless In is
/// bfloat16, the AMX backend is compiled in (gemm_compiled_with_amx()), the CPU and OS allow it (amx_available())
/// and no dimension exceeds its limit. Empty products are done here (true).
template <class In>
bool gemm_amx(Trans ta, Trans tb, Index m, Index n, Index k, const In* A, Index lda, const In* B, Index ldb,
              bool accumulate, acc_t<In>* C, Index ldc) {
  if (gemm_impl::trivial("gla::detail::gemm_amx", ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc)) return true;
  return gemm_impl::amx_run(ta, tb, m, n, k, A, lda, B, ldb, accumulate, C, ldc);
}

/// True when bfloat16 operands make gemm() faster than float ones here, so that the chunk kernels keep their
/// bfloat16 inputs' operands in bfloat16 (with_operand_scalar): the AMX backend is compiled in, or libxsmm is and this
/// CPU's bfloat16 dot products run at twice the float rate (bf16_dot_full_rate). Fixed for the process.
inline bool bf16_operands_faster() {
  if constexpr (gemm_compiled_with_amx()) return true;
  return gemm_uses_libxsmm() && bf16_dot_full_rate();
}

/// True when bfloat16 products run on AMX tiles here: compiled in, and this CPU and OS allow it.
inline bool amx_available() {
#if GLA_GEMM_WITH_AMX
  return gemm_impl::amx_usable();
#else
  return false;
#endif
}

/// A one-line description of the backend, e.g. "libxsmm 1.17 (JIT target cpx)" or "Eigen 3.4.0", followed by
/// "; bfloat16 on AMX tiles" when amx_available().
inline std::string gemm_backend_name() {
  const std::string amx = amx_available() ? "; bfloat16 on AMX tiles" : "";
#if GLA_GEMM_WITH_LIBXSMM
  gemm_impl::xsmm_init_once();
  return std::string("libxsmm ") + LIBXSMM_CONFIG_VERSION + " (JIT target " + libxsmm_get_target_arch() + ")" + amx;
#else
  return "Eigen " + std::to_string(EIGEN_WORLD_VERSION) + "." + std::to_string(EIGEN_MAJOR_VERSION) + "." +
         std::to_string(EIGEN_MINOR_VERSION) + amx;
#endif
}

}  // namespace detail
}  // namespace gla
