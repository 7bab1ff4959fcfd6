#pragma once
/// gla/detail/gemm_amx.hpp: the bfloat16 products of gemm() on Intel AMX tiles (TDPBF16PS), fp32 accumulation.
/// gemm() (gla/detail/gemm.hpp) calls it first for bfloat16 inputs.
///
/// Compiled when the including code targets AVX-512BW, AMX-TILE and AMX-BF16 (e.g. -march=native on Sapphire Rapids or
/// later, as the project's own targets are) on Linux, unless GLA_GEMM_NO_AMX, GLA_GEMM_NO_INTRINSICS or
/// GLA_GEMM_FORCE_EIGEN is defined (each, like those two, must agree across a program's translation units);
/// used when the CPU reports AMX and Linux grants the process the tile data state (arch_prctl
/// ARCH_REQ_XCOMP_PERM, asked once). Otherwise amx_bf16() returns false and gemm() takes its other backends.
///
/// Why: the chunk kernels' products at K = V = 128 are 64×128×128 and smaller; a TDPBF16PS multiplies a 16×32
/// by a 32×16 bfloat16 tile (16 K FLOP) per instruction, an order of magnitude more per cycle than AVX-512 FMA,
/// so with bfloat16 inputs the products stop being the chunk kernels' main cost (docs/PERFORMANCE.md).
///
/// Layout of one call, C (m×n, float, row stride ldc) = op(A) (m×k) · op(B) (k×n) [+ C]:
///   - every tile is 16 rows × 64 bytes: A tiles 16×32 bfloat16, C tiles 16×16 float, and B tiles 16 rows of
///     16 VNNI words (a word holds op(B)(2q, j) and op(B)(2q+1, j), low half first), i.e. 32 k by 16 columns.
///   - op(B) is packed into VNNI words, kp/2 rows of np words (k rounded up to 32, n to 16, zero padded).
///   - op(A) is read in place when ta == N, k is a multiple of 32 and m of 16 (the chunk kernels' q/k tiles);
///     otherwise packed row-major mp×kp (m rounded up to 16), zero padded.
///   - C is loaded/stored in place for whole 16×16 tiles, through a 16×16 buffer at the edges.
///   - blocks of 2×2 C tiles (32×32 of C) run over k in steps of 32: 4 accumulator, 2 A and 2 B tiles.
/// The tile configuration is loaded at the start of every call and released at its end, so code between calls
/// (oneDNN's own AMX kernels, say) may configure the tiles as it likes — except inside an AmxTileScope
/// (gla/detail/gemm.hpp), a block of the library's own code that runs no other AMX code: there the first call
/// loads the configuration and the scope's end releases it (loading it costs as much as a small product).
///
/// Results: the products of two bfloat16 values are exact in float and TDPBF16PS adds them in float, so the error
/// bound is that of any float-accumulated product; TDPBF16PS treats denormal inputs and results as zero (values
/// below 1.2e-38, far under bfloat16's own resolution of any O(1) sum).

#include <gla/core.hpp>
#include <gla/detail/gemm_common.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>

#if GLA_GEMM_AVX512 && defined(__AMX_TILE__) && defined(__AMX_BF16__) && defined(__AVX512BW__) && \
    defined(__linux__) && defined(__x86_64__) && !defined(GLA_GEMM_NO_AMX) && !defined(GLA_GEMM_FORCE_EIGEN)
#define GLA_GEMM_WITH_AMX 1
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#define GLA_GEMM_WITH_AMX 0
#endif

namespace gla {
namespace detail {

/// True when gemm() was compiled with its AMX backend for bfloat16 (whether the CPU has AMX is amx_usable()).
constexpr bool gemm_compiled_with_amx() noexcept { return GLA_GEMM_WITH_AMX != 0; }

namespace gemm_impl {

#if GLA_GEMM_WITH_AMX

/// Products with a dimension above this leave AMX for the other backends (the packs are not cache-blocked).
inline constexpr Index kAmxMaxDim = 1024;

/// CPUID says AMX-TILE and AMX-BF16, and Linux lets this process use the tile data (asked once per process).
inline bool amx_usable() {
  static const bool ok = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    const bool amx_bf16 = (d >> 22) & 1u, amx_tile = (d >> 24) & 1u;
    if (!amx_bf16 || !amx_tile) return false;
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return ok;
}

/// The tile configuration (palette 1): tiles 0..7 all 16 rows × 64 bytes.
struct alignas(64) AmxTileConfig {
  std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
  AmxTileConfig() {
    for (int t = 0; t < 8; ++t) {
      colsb[t] = 64;
      rows[t] = 16;
    }
  }
};

inline Index round_up(Index v, Index to) { return (v + to - 1) / to * to; }

/// Per thread: how many AmxTileScopes are open, and whether the tiles hold AmxTileConfig loaded inside them.
struct AmxThreadState {
  int scopes = 0;
  bool configured = false;
};

inline AmxThreadState& amx_thread_state() {
  static thread_local AmxThreadState s;
  return s;
}

/// Releases the tiles if a scope left them configured (before other code that may use AMX, and at a scope's end).
inline void amx_release_scoped() {
  AmxThreadState& t = amx_thread_state();
  if (t.configured) {
    _tile_release();
    t.configured = false;
  }
}

/// The per-thread packs of the AMX backend.
struct AmxScratch {
  Scratch<std::uint32_t> vnni;     // op(B) as kp/2 × np VNNI words
  Scratch<std::uint16_t> a;        // op(A) as mp × kp bfloat16
  Scratch<std::uint32_t> a_words;  // ta == T: op(A)ᵀ interleaved into words before its transpose
  alignas(64) float edge[16 * 16];
};

inline AmxScratch& amx_scratch() {
  static thread_local AmxScratch s;
  return s;
}

/// GCC's tile load/store intrinsics are asm statements without a memory clobber, so the compiler does not know
/// they read or write memory: this barrier orders ordinary stores (packs, edge tiles) before a tile load and a
/// tile store before ordinary loads of what it wrote.
inline void amx_memory_barrier() { __asm__ __volatile__("" ::: "memory"); }

/// One block of MT×NT C tiles (16·MT rows from i0, 16·NT columns from j0): load or zero C, run k, store C.
/// C tile (r, c) is tile 4 + 2r + c; A tiles are 0 and 1, B tiles 2 and 3. Tile numbers are immediates (GCC's
/// intrinsics paste them into the instruction), hence the macros.
template <int MT, int NT>
inline void amx_block(Index i0, Index j0, Index m, Index n, Index kp, const std::uint16_t* a, Index lda_bytes,
                      const std::uint32_t* v, Index np, bool accumulate, float* C, Index ldc, float* edge) {
  const Index ldc_bytes = ldc * static_cast<Index>(sizeof(float));
  const auto full = [&](int r, int c) { return i0 + 16 * (r + 1) <= m && j0 + 16 * (c + 1) <= n; };
  const auto cptr = [&](int r, int c) { return C + (i0 + 16 * r) * ldc + j0 + 16 * c; };
  // An edge tile goes through `edge` (16×16): the valid part of C in, zeros around it.
  const auto edge_in = [&](int r, int c) {
    const Index rows = std::min<Index>(16, m - i0 - 16 * r), cols = std::min<Index>(16, n - j0 - 16 * c);
    std::memset(edge, 0, 16 * 16 * sizeof(float));
    if (accumulate)
      for (Index i = 0; i < rows; ++i) std::memcpy(edge + i * 16, cptr(r, c) + i * ldc, cols * sizeof(float));
  };
  const auto edge_out = [&](int r, int c) {
    const Index rows = std::min<Index>(16, m - i0 - 16 * r), cols = std::min<Index>(16, n - j0 - 16 * c);
    for (Index i = 0; i < rows; ++i) std::memcpy(cptr(r, c) + i * ldc, edge + i * 16, cols * sizeof(float));
  };
#define GLA_AMX_C_IN(T, r, c)                \
  if (full(r, c)) {                          \
    if (accumulate)                          \
      _tile_loadd(T, cptr(r, c), ldc_bytes); \
    else                                     \
      _tile_zero(T);                         \
  } else {                                   \
    edge_in(r, c);                           \
    amx_memory_barrier();                    \
    _tile_loadd(T, edge, 64);                \
  }
#define GLA_AMX_C_OUT(T, r, c)              \
  if (full(r, c)) {                         \
    _tile_stored(T, cptr(r, c), ldc_bytes); \
  } else {                                  \
    _tile_stored(T, edge, 64);              \
    amx_memory_barrier();                   \
    edge_out(r, c);                         \
  }
// OP(tile, r, c) for each accumulator tile of the block: tile 4 + 2r + c holds C's 16×16 tile (r, c).
#define GLA_AMX_EACH_C_TILE(OP)       \
  OP(4, 0, 0)                         \
  if constexpr (NT == 2) {            \
    OP(5, 0, 1)                       \
  }                                   \
  if constexpr (MT == 2) {            \
    OP(6, 1, 0)                       \
  }                                   \
  if constexpr (MT == 2 && NT == 2) { \
    OP(7, 1, 1)                       \
  }
  GLA_AMX_EACH_C_TILE(GLA_AMX_C_IN)
  const Index vrow_bytes = np * 4;
  for (Index kk = 0; kk < kp; kk += 32) {
    const std::uint16_t* ak = a + i0 * (lda_bytes / 2) + kk;
    const std::uint32_t* vk = v + (kk / 2) * np + j0;
    _tile_loadd(0, ak, lda_bytes);
    if constexpr (MT == 2) _tile_loadd(1, ak + 16 * (lda_bytes / 2), lda_bytes);
    _tile_loadd(2, vk, vrow_bytes);
    if constexpr (NT == 2) _tile_loadd(3, vk + 16, vrow_bytes);
    _tile_dpbf16ps(4, 0, 2);
    if constexpr (NT == 2) _tile_dpbf16ps(5, 0, 3);
    if constexpr (MT == 2) _tile_dpbf16ps(6, 1, 2);
    if constexpr (MT == 2 && NT == 2) _tile_dpbf16ps(7, 1, 3);
  }
  GLA_AMX_EACH_C_TILE(GLA_AMX_C_OUT)
#undef GLA_AMX_EACH_C_TILE
#undef GLA_AMX_C_IN
#undef GLA_AMX_C_OUT
}

/// The AMX product; arguments already checked, m, n, k > 0. False (C untouched) when AMX is not usable or a
/// dimension exceeds kAmxMaxDim.
inline bool amx_bf16(Trans ta, Trans tb, Index m, Index n, Index k, const Eigen::bfloat16* A, Index lda,
                     const Eigen::bfloat16* B, Index ldb, bool accumulate, float* C, Index ldc) {
  if (m > kAmxMaxDim || n > kAmxMaxDim || k > kAmxMaxDim || !amx_usable()) return false;
  const Index mp = round_up(m, 16), np = round_up(n, 16), kp = round_up(k, 32);
  AmxScratch& s = amx_scratch();
  const auto* a16 = reinterpret_cast<const std::uint16_t*>(A);
  const auto* b16 = reinterpret_cast<const std::uint16_t*>(B);
  std::uint32_t* v = s.vnni.get(static_cast<std::size_t>(kp / 2 * np));
  pack_vnni_b(tb, k, n, b16, ldb, kp, np, v);
  const std::uint16_t* a = a16;
  Index lda_bytes = lda * 2;
  if (!(ta == Trans::N && k == kp && m == mp)) {
    std::uint16_t* p = s.a.get(static_cast<std::size_t>(mp * kp));
    std::uint32_t* w = ta == Trans::T ? s.a_words.get(static_cast<std::size_t>(kp / 2 * mp)) : nullptr;
    pack_rows_a(ta, m, k, a16, lda, mp, kp, p, w);
    a = p;
    lda_bytes = kp * 2;
  }
  static const AmxTileConfig config;
  amx_memory_barrier();  // the packs and C's current values are in memory before the first tile load
  AmxThreadState& ts = amx_thread_state();
  if (!ts.configured) {
    _tile_loadconfig(&config);
    ts.configured = ts.scopes > 0;  // inside a scope the configuration stays for the next call
  }
  for (Index i0 = 0; i0 < mp; i0 += 32) {
    const bool two_m = i0 + 16 < mp;
    for (Index j0 = 0; j0 < np; j0 += 32) {
      const bool two_n = j0 + 16 < np;
      if (two_m && two_n)
        amx_block<2, 2>(i0, j0, m, n, kp, a, lda_bytes, v, np, accumulate, C, ldc, s.edge);
      else if (two_m)
        amx_block<2, 1>(i0, j0, m, n, kp, a, lda_bytes, v, np, accumulate, C, ldc, s.edge);
      else if (two_n)
        amx_block<1, 2>(i0, j0, m, n, kp, a, lda_bytes, v, np, accumulate, C, ldc, s.edge);
      else
        amx_block<1, 1>(i0, j0, m, n, kp, a, lda_bytes, v, np, accumulate, C, ldc, s.edge);
    }
  }
  if (!ts.configured) _tile_release();
  amx_memory_barrier();  // C's tile stores are done before the caller reads C
  return true;
}

#endif  // GLA_GEMM_WITH_AMX

}  // namespace gemm_impl
}  // namespace detail
}  // namespace gla
