#pragma once
/// gla/detail/chunk_kernels.hpp: the per-chunk building blocks shared by chunk_fwd_h, chunk_gla and
/// fused_chunk_gla: the state update across one chunk and the output of one chunk, on contiguous tiles through
/// the small-GEMM layer (detail/gemm.hpp), with fla's stability scheme (docs/chunk_algorithm.md). Inputs are
/// read in their own scalar; bf16 inputs feed bf16 operands to the products (fp32 accumulation), everything
/// else is computed in acc_t of the input.

#include <gla/core.hpp>
#include <gla/detail/convert.hpp>
#include <gla/detail/gemm.hpp>
#include <gla/detail/parallel.hpp>
#include <gla/workspace.hpp>

#include <initializer_list>
#include <memory>
#include <numeric>

namespace gla::detail {

/// Sub-chunk size of the intra-chunk attention: reference points every kSubChunk rows keep every
/// exponent <= 0 (docs/chunk_algorithm.md).
inline constexpr Index kSubChunk = 16;

/// The floor of per-step log gates on the chunk paths: a gate below it (down to −inf, a hard reset) acts as
/// the floor. exp(floor) is far below the scalar's resolution, so the result equals the exact one to rounding,
/// and the chunk-local cumsums stay finite (−inf would make G_t − G_s = −inf − (−inf) = NaN). The recurrent
/// path needs no floor. docs/chunk_algorithm.md measures the accuracy near the floor.
template <class Acc>
inline constexpr Acc kChunkGateFloor = std::is_same_v<Acc, double> ? Acc(-60) : Acc(-30);

/// The scalar of the products' operands, chosen per call by with_operand_scalar. bfloat16 inputs keep bfloat16
/// operands where they make gemm() faster (bf16_operands_faster: AMX tiles compiled in, or libxsmm's bfloat16 kernels
/// on a CPU whose bfloat16 dot products run at twice the float rate): the products then take bfloat16 operands with
/// fp32 accumulation, as fla's tl.dot does on a GPU. Everywhere else, and for half, the operands are acc_t<In>: rows
/// are widened once per chunk as they are read (exact) and the products run on the float kernels, because there
/// bfloat16 products are no faster than float ones (bench_small_gemm measures both). With bfloat16 operands the
/// factors q ⊙ e^{G}, k ⊙ e^{−G}, A and the state are rounded to bfloat16 before each product, as on the GPU; the
/// state itself and every accumulator stay fp32.
template <class Op>
struct OperandScalar {
  using type = Op;
};

/// Returns f(OperandScalar<Op>{}) with Op the products' operand scalar for inputs of scalar In (see OperandScalar):
/// every kernel of one call, and its workspace size, takes the same. The choice is fixed for the process.
template <class In, class F>
decltype(auto) with_operand_scalar(F&& f) {
  if constexpr (std::is_same_v<In, Eigen::bfloat16> && (gemm_compiled_with_amx() || gemm_uses_libxsmm())) {
    if (bf16_operands_faster()) return f(OperandScalar<Eigen::bfloat16>{});
  }
  return f(OperandScalar<acc_t<In>>{});
}

/// The scale of q: opts.scale, else 1/sqrt(K) (fla's default).
template <class Acc>
Acc resolve_scale(const GLAOptions& opts, Index K) {
  return opts.scale ? static_cast<Acc>(*opts.scale) : Acc(1) / std::sqrt(static_cast<Acc>(K));
}

/// The bound on |G| (chunk-local gate cumsum, natural log) under which a chunk takes the factored path:
/// A = tril((q ⊙ e^{G})(k ⊙ e^{−G})ᵀ) as one product, with every factor within [e^{−8}, e^{8}] — no overflow,
/// no denormals, and the same rounding as the sub-chunk path (both multiply exponentials of the same rounded
/// cumsum). fla's own gates (logsigmoid/16) decay by about 3 over a 64-token chunk; stronger decay takes the
/// sub-chunk path. docs/chunk_algorithm.md, "Two paths".
inline constexpr double kFactoredDecayBound = 8.0;

/// True when every |G[r,k]| of the L×K chunk-local cumsum is within kFactoredDecayBound (false for NaN).
template <class Acc>
bool decay_is_bounded(const Acc* G, Index L, Index K) {
  // Counts the values outside the bound (a NaN fails the comparison, so it counts): a loop the compiler
  // vectorises with no dependency between iterations but an add, where Eigen's NaN-propagating maxCoeff chains
  // a compare and a blend through every packet (3% of the bfloat16 sweep's time in a profile).
  const Acc bound = static_cast<Acc>(kFactoredDecayBound);
  int outside = 0;
  for (Index i = 0; i < L * K; ++i) outside += !(std::abs(G[i]) <= bound);
  return outside == 0;
}

#if GLA_CONVERT_AVX512
/// 1 / v for 16 positive normal floats: the 14-bit estimate VRCP14PS refined by one Newton step,
/// r ← r + r (1 − v r), which takes the relative error ε of r to about ε² (reciprocal_row's arithmetic).
inline __m512 reciprocal16(__m512 v) {
  const __m512 r = _mm512_rcp14_ps(v);
  return _mm512_fmadd_ps(r, _mm512_fnmadd_ps(v, r, _mm512_set1_ps(1.0f)), r);
}
#endif

/// y[0, n) = 1 / x[0, n) for positive normal x, e.g. e^{−G} from e^{G} at a fraction of another exponential's
/// cost. float where the including code targets AVX-512: the 14-bit estimate VRCP14PS (specified bit for bit, so
/// the same on every AVX-512 CPU) refined by one Newton step, within 2 ulp of the quotient; otherwise the
/// division itself. y may be x.
template <class Acc>
void reciprocal_row(const Acc* x, Acc* y, Index n) {
  Index i = 0;
#if GLA_CONVERT_AVX512
  if constexpr (std::is_same_v<Acc, float>) {
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, reciprocal16(_mm512_loadu_ps(x + i)));
    if (i < n) {
      const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
      _mm512_mask_storeu_ps(y + i, m, reciprocal16(_mm512_mask_loadu_ps(_mm512_set1_ps(1.0f), m, x + i)));
    }
    return;
  }
#endif
  for (; i < n; ++i) y[i] = Acc(1) / x[i];
}

/// Gate sets of the state update as compile-time flags (a bitwise or): the scalar gate g, the constant decay
/// gamma, the key gate gk, the value gate gv.
inline constexpr unsigned kGateG = 1u, kGateGamma = 2u, kGateGk = 4u, kGateGv = 8u;

/// Gate cumsums of one chunk, each optional (nullptr), natural log, chunk-local and inclusive, in Acc:
/// g [L] (stride ldg), gk [L×K] (stride ldgk), gv [L×Vt] (stride ldgv, starting at the tile's first column);
/// gamma = per-step log decay.
template <class Acc>
struct ChunkGates {
  const Acc* g = nullptr;
  Index ldg = 0;
  const Acc* gk = nullptr;
  Index ldgk = 0;
  const Acc* gv = nullptr;
  Index ldgv = 0;
  std::optional<Acc> gamma;
};

/// A strided block of rows: row r at p + r·ld.
template <class T>
struct Rows {
  const T* p = nullptr;
  Index ld = 0;
  const T* row(Index r) const { return p + r * ld; }
};

/// The rows of (sequence sq, head h) of a [B,T,H,D] tensor from token c0 of the sequence, starting at column d0
/// (empty rows for an absent tensor, base == nullptr).
template <class T>
Rows<T> head_rows(const T* base, const OpShape& s, const Seq& sq, Index h, Index c0, Index D, Index d0 = 0) {
  if (!base) return {};
  return {base + ((sq.b * s.T + sq.t0 + c0) * s.H + h) * D + d0, s.H * D};
}

template <class S>
using RowArr = Eigen::Array<S, 1, Eigen::Dynamic>;
template <class S>
using RowArrMap = Eigen::Map<RowArr<S>>;
template <class S>
using ConstRowArrMap = Eigen::Map<const RowArr<S>>;

/// Per-worker scratch of the chunk kernels, carved from a workspace, for chunks of at most BT rows, K key columns
/// and value tiles of at most Vt columns. Buffers of operand type are unused (size 0) when Op is Acc.
template <class Acc, class Op>
struct ChunkScratch {
  static constexpr bool kLowp = !std::is_same_v<Acc, Op>;
  Acc* G = nullptr;    // [BT×K] chunk-local gate cumsum (floored)
  Acc* eg = nullptr;   // [BT×K] e^{g}: the diagonal blocks' running-product factors
  Acc* tmp = nullptr;  // [BT×K] exponents, then decay factors
  Acc* qa = nullptr;   // [BT×K] q in Acc (diagonal blocks)
  Acc* ka = nullptr;   // [BT×K] k in Acc (diagonal blocks)
  Op* qg = nullptr;    // [BT×K] scale · q ⊙ e^{G}
  Op* qs = nullptr;    // [kSubChunk×K] scale · q ⊙ e^{G − gn} of one query sub-chunk
  Op* kd = nullptr;    // [BT×K] k ⊙ decay
  Acc* A = nullptr;    // [BT×BT] intra-chunk attention (zero above the diagonal)
  Op* Aop = nullptr;   // [BT×BT] A as an operand (low precision only)
  Op* vop = nullptr;   // [BT×Vt] a value tile as an operand (converted or decayed by gv)
  Op* Sop = nullptr;   // [K×Vt] the state tile as an operand (low precision only)
  Acc* O = nullptr;    // [BT×Vt] the chunk's outputs
  Acc* S = nullptr;    // [K×Vt] the carried state tile
  Acc* el = nullptr;   // [K] e^{gk of the chunk's last row}
  Acc* ev = nullptr;   // [Vt]
  Acc* e = nullptr;    // [K]

  /// states: the number of K×Vt state tiles S holds (one per head of a group that sweeps together).
  static ChunkScratch plan(Arena& a, Index BT, Index K, Index Vt, Index states = 1) {
    ChunkScratch w;
    w.G = a.take<Acc>(BT * K);
    w.eg = a.take<Acc>(BT * K);
    w.tmp = a.take<Acc>(BT * K);
    w.qa = a.take<Acc>(BT * K);
    w.ka = a.take<Acc>(BT * K);
    w.qg = a.take<Op>(BT * K);
    w.qs = a.take<Op>(kSubChunk * K);
    w.kd = a.take<Op>(BT * K);
    w.A = a.take<Acc>(BT * BT);
    w.Aop = a.take<Op>(kLowp ? BT * BT : 0);
    w.vop = a.take<Op>(BT * Vt);
    w.Sop = a.take<Op>(kLowp ? K * Vt : 0);
    w.O = a.take<Acc>(BT * Vt);
    w.S = a.take<Acc>(states * K * Vt);
    w.el = a.take<Acc>(K);
    w.ev = a.take<Acc>(Vt);
    w.e = a.take<Acc>(K);
    return w;
  }
};

/// One scratch per worker of a parallel_for over `items` items.
template <class Acc, class Op>
std::vector<ChunkScratch<Acc, Op>> plan_workers(Arena& a, Index items, Index BT, Index K, Index Vt, Index states = 1) {
  return a.worker_plans(parallel_workers(items),
                        [&](Arena& arena) { return ChunkScratch<Acc, Op>::plan(arena, BT, K, Vt, states); });
}

/// Which cache a software prefetch asks for: L2 for rows wanted one work item ahead, L1 for rows wanted a few
/// rows ahead inside a loop.
enum class CacheLevel { L1, L2 };

/// Asks for rows [0, L) × [0, W) of a strided block to be brought into the cache ahead of their use (for_write:
/// rows about to be stored). A head's rows lie H·D elements apart, more than a page for fla's shapes, and the
/// hardware prefetchers stop at page boundaries, so without this every row's first touch waits on memory (a third
/// of fused_chunk_gla's time at prefill in a profile). The kernels ask for the next (chunk, head)'s rows into L2
/// (prefetcht1), and the row loops that read them (prefetch_row_ahead) ask for each row a few rows ahead into L1
/// (prefetcht0): rows asked into L1 a whole item ahead are evicted by the item's own tiles before their use on a
/// 32 KiB L1 (Zen 4), and rows left in L2 until the loop reaches them stall each row's first loads: the bf16
/// chunked forwards ran 1.13–1.47× faster with both than with one-item-ahead prefetcht0 (docs/PERFORMANCE.md). A
/// hint only: no effect on results.
template <CacheLevel Level = CacheLevel::L2, class T>
void prefetch_rows(Rows<T> rows, Index L, Index W, bool for_write = false) {
#if defined(__GNUC__) || defined(__clang__)
  if (!rows.p) return;
  constexpr int kLocality = Level == CacheLevel::L1 ? 3 : 2;  // __builtin_prefetch: 3 = prefetcht0, 2 = prefetcht1
  const Index bytes = W * static_cast<Index>(sizeof(T));
  for (Index r = 0; r < L; ++r) {
    const char* p = reinterpret_cast<const char*>(rows.row(r));
    for (Index b = 0; b < bytes; b += 64) {
      if (for_write)
        __builtin_prefetch(p + b, 1, kLocality);
      else
        __builtin_prefetch(p + b, 0, kLocality);
    }
  }
#else
  (void)rows;
  (void)L;
  (void)W;
  (void)for_write;
#endif
}

/// How many rows ahead the row loops ask for their input rows into L1 (prefetch_row_ahead): 2–8 measured alike.
inline constexpr Index kRowsAheadIntoL1 = 4;

/// For a loop over rows [0, L) of `rows` about to read row r: asks for row r + kRowsAheadIntoL1 ([0, W)) into L1.
template <class T>
void prefetch_row_ahead(Rows<T> rows, Index r, Index L, Index W) {
  if (rows.p && r + kRowsAheadIntoL1 < L)
    prefetch_rows<CacheLevel::L1>(Rows<T>{rows.row(r + kRowsAheadIntoL1), 0}, 1, W);
}

/// Rows [0, L) × [0, W) of a strided block in another scalar, into a contiguous [L×W] tile.
template <class To, class From>
void convert_rows(Rows<From> src, Index L, Index W, To* dst) {
  for (Index r = 0; r < L; ++r) {
    prefetch_row_ahead(src, r, L, W);
    convert_n(src.row(r), dst + r * W, W);
  }
}

/// Whether as_operand copies a head's strided rows of Op into a contiguous tile: for libxsmm's float kernels, which
/// read the right operand of our row-major products (their column-major left one) with one vector load per step of
/// the inner dimension, when the rows are a page or more apart, so that every step lands on another page. In
/// isolation A·v, kᵀ·v and Aᵀ·do ran 25–30% slower on rows 8 KiB apart than on a copy, which costs a few percent of
/// one product; in the kernels the copy gained 2–4% at the prefill shape (rows 8 KiB apart) and nothing at the long
/// one (2 KiB) (docs/PERFORMANCE.md). Eigen packs its operands itself, and bfloat16 operands on AMX tiles are
/// packed anyway.
template <class Op>
inline constexpr bool kCopiesStridedOperands = gemm_uses_libxsmm() && std::is_same_v<Op, float>;
/// The row stride (bytes) from which rows count as strided: a page.
inline constexpr Index kStridedOperandBytes = 4096;

/// Whether rows_in copies these rows (else it returns them as they are).
template <class To, class In>
bool rows_in_copies(Rows<In> src, Index W, bool copy_strided) {
  if constexpr (std::is_same_v<To, In>)
    return src.p != nullptr && src.ld != W && copy_strided &&
           src.ld * static_cast<Index>(sizeof(In)) >= kStridedOperandBytes;
  else
    return true;
}

/// Rows [0, L) × [0, W) of a strided block in scalar To: the block itself when its scalar is To and its rows are
/// contiguous, or less than kStridedOperandBytes apart, or copy_strided is false; else a contiguous copy, converted
/// to To, in `scratch` [L×W].
template <class To, class In>
Rows<To> rows_in(Rows<In> src, Index L, Index W, To* scratch, bool copy_strided) {
  if constexpr (std::is_same_v<To, In>) {
    if (!rows_in_copies<To>(src, W, copy_strided)) return src;
  }
  convert_rows(src, L, W, scratch);
  return {scratch, W};
}

/// A block of input rows as product operands [L×W] (rows_in, copying strided rows where kCopiesStridedOperands).
template <class Op, class In>
Rows<Op> as_operand(Rows<In> src, Index L, Index W, Op* scratch) {
  return rows_in<Op>(src, L, W, scratch, kCopiesStridedOperands<Op>);
}

/// dst ← row r of the per-step gates g in Acc, each below `floor` raised to it (NaN stays NaN: it must show in
/// its own outputs).
template <class Acc, class In>
void floored_gate_row(Rows<In> g, Index r, Index K, Acc floor, Acc* dst) {
  convert_n(g.row(r), dst, K);
  RowArrMap<Acc> st(dst, K);
  st = (st < floor).select(floor, st);
}

/// G ← the inclusive cumsum over the L rows of the per-step gates g (each floored). Absent gates (g.p == nullptr)
/// are zero: no decay.
template <class Acc, class In>
void gate_cumsum(Rows<In> g, Index L, Index K, Acc floor, Acc* G) {
  if (!g.p) {
    std::fill_n(G, L * K, Acc(0));
    return;
  }
  for (Index r = 0; r < L; ++r) {
    prefetch_row_ahead(g, r, L, K);
    floored_gate_row(g, r, K, floor, G + r * K);
    if (r > 0) RowArrMap<Acc>(G + r * K, K) += RowArrMap<Acc>(G + (r - 1) * K, K);
  }
}

/// eg ← e^{floored g} [L×K]: the one-step decays, exponentiated from the gates themselves, not from differences
/// of the cumsum, which would carry the cumsum's rounding. Absent gates give 1.
template <class Acc, class In>
void step_decays(Rows<In> g, Index L, Index K, Acc floor, Acc* eg) {
  if (!g.p) {
    std::fill_n(eg, L * K, Acc(1));
    return;
  }
  for (Index r = 0; r < L; ++r) floored_gate_row(g, r, K, floor, eg + r * K);
  Eigen::Map<Eigen::Array<Acc, Eigen::Dynamic, 1>> all(eg, L * K);
  all = all.exp();
}

/// Whether factored_operands runs: float accumulation, AVX-512 intrinsics and Eigen's AVX-512 packets (its
/// exponential, so the results are those of the separate passes bit for bit), and bfloat16 operands narrowed by
/// the CPU's instruction (convert_operand_n's rounding).
template <class Acc, class Op>
inline constexpr bool kFusesFactoredOperands =
#if GLA_GEMM_AVX512 && defined(EIGEN_VECTORIZE_AVX512)
    std::is_same_v<Acc, float> &&
    (std::is_same_v<Op, float> || (std::is_same_v<Op, Eigen::bfloat16> && kNarrowsOperandsInHardware));
#else
    false;
#endif

#if GLA_GEMM_AVX512 && defined(EIGEN_VECTORIZE_AVX512)
/// 16 floats as operands: stored as they are, or narrowed to bfloat16 as convert_operand_n narrows
/// (narrow16_operand).
template <class Op>
inline void store16_operand(Op* dst, __m512 x) {
  if constexpr (std::is_same_v<Op, float>) {
    _mm512_storeu_ps(dst, x);
  } else {
#if GLA_CONVERT_AVX512BF16
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), narrow16_operand(x));
#endif
  }
}
#endif

#if GLA_GEMM_AVX512 && defined(EIGEN_VECTORIZE_AVX512)
/// 16 per-step gates from g_row (float or a 16-bit scalar) as floats, each below `vfloor` raised to it:
/// floored_gate_row on one vector (a compare and blend rather than max, so that NaN stays NaN).
template <class In>
inline __m512 floored_gate16(const In* g_row, __m512 vfloor) {
  const __m512 x = gemm_impl::load16_as_float(g_row);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, vfloor, _CMP_LT_OQ), x, vfloor);
}
#endif

/// The chunk's gate cumsum and the factored path's operands in one pass over its rows, for K a multiple of 16
/// (kFusesFactoredOperands; false, with nothing written, otherwise): per row r, 16 columns at a time and while
/// they are in registers, G_r = G_{r−1} + floored g_r (into G), e^{G_r}, qg_r = scale q_r ⊙ e^{G_r} and
/// kd_r = k_r ⊙ e^{−G_r} (e^{−G} as reciprocal_row forms it), and the last row's e^{G} into `el`. Each step is
/// the same operation, in the same order, as gate_cumsum, decay_is_bounded, the exponentials and the operand rows
/// of chunk_output's separate passes, so the results are identical; what is saved is the passes' loads, stores
/// and loop overheads (with K = 64 they cost more than the exponentials). `bounded` is decay_is_bounded's answer;
/// when it is false, kd is not the factored path's operand (its factors may overflow) but G and qg are still
/// right for the sub-chunk path, which forms its own.
template <class Acc, class Op, class In>
bool factored_operands(Rows<In> q, Rows<In> k, Rows<In> g, Acc floor, Acc scale, Index L, Index K, Acc* G, Op* qg,
                       Op* kd, Acc* el, bool& bounded) {
#if GLA_GEMM_AVX512 && defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (kFusesFactoredOperands<Acc, Op>) {
    if (K % 16 != 0) return false;
    using gemm_impl::load16_as_float;
    const __m512 vfloor = _mm512_set1_ps(floor), vscale = _mm512_set1_ps(scale);
    const __m512 bound = _mm512_set1_ps(static_cast<float>(kFactoredDecayBound));
    __mmask16 within = 0xFFFF;
    for (Index r = 0; r < L; ++r) {
      Acc* Gr = G + r * K;
      for (const Rows<In>& rows : {g, q, k}) prefetch_row_ahead(rows, r, L, K);
      for (Index j = 0; j < K; j += 16) {
        __m512 x = g.p ? floored_gate16(g.row(r) + j, vfloor) : _mm512_setzero_ps();
        if (r > 0) x = _mm512_add_ps(x, _mm512_loadu_ps(Gr - K + j));
        _mm512_storeu_ps(Gr + j, x);
        within &= _mm512_cmp_ps_mask(_mm512_abs_ps(x), bound, _CMP_LE_OQ);  // NaN fails
        const __m512 e = Eigen::internal::pexp<Eigen::internal::Packet16f>(x);
        if (r == L - 1) _mm512_storeu_ps(el + j, e);
        store16_operand(qg + r * K + j, _mm512_mul_ps(_mm512_mul_ps(load16_as_float(q.row(r) + j), e), vscale));
        store16_operand(kd + r * K + j, _mm512_mul_ps(load16_as_float(k.row(r) + j), reciprocal16(e)));
      }
    }
    bounded = within == 0xFFFF;
    return true;
  }
#endif
  (void)q, (void)k, (void)g, (void)floor, (void)scale, (void)L, (void)K, (void)G, (void)qg, (void)kd, (void)el;
  (void)bounded;
  return false;
}

/// ws.kd = k ⊙ the decay from each row to the chunk's end (e^{G_l − G_s} and/or the scalar gates' part; k itself
/// with no gate), the state update's left operand, row by row: the exponents, their vectorised exp in place (left
/// in ws.tmp) and the product while the row is in L1. Gates, gt, k [L×K] as state_update.
template <unsigned Gates, class Acc, class Op, class In>
void keys_decayed_to_end(Rows<In> k, const ChunkGates<Acc>& gt, Index L, Index K, const ChunkScratch<Acc, Op>& ws) {
  constexpr bool kG = (Gates & kGateG) != 0, kGamma = (Gates & kGateGamma) != 0, kGk = (Gates & kGateGk) != 0;
  if constexpr (kGk || kG || kGamma) {
    for (Index s = 0; s < L; ++s) {
      prefetch_row_ahead(k, s, L, K);
      Acc sc = 0;  // scalar log decay from token s to the chunk end
      if constexpr (kG) sc += gt.g[(L - 1) * gt.ldg] - gt.g[s * gt.ldg];
      if constexpr (kGamma) sc += *gt.gamma * static_cast<Acc>(L - 1 - s);
      RowArrMap<Acc> x(ws.tmp + s * K, K);
      if constexpr (kGk)
        x = ConstRowArrMap<Acc>(gt.gk + (L - 1) * gt.ldgk, K) - ConstRowArrMap<Acc>(gt.gk + s * gt.ldgk, K) + sc;
      else
        x.setConstant(sc);
      x = x.exp();  // materialised first: Eigen vectorises exp of a plain array, not of an expression
      store_operand_row(ws.kd + s * K, ConstRowArrMap<Acc>(widen_row(k.row(s), ws.e, K), K) * x);
    }
  } else {
    convert_rows(k, L, K, ws.kd);
  }
}

/// Advances a state tile across one chunk of L tokens (S is K×Vt with row stride ldS, the state before the chunk):
///   S ← diag(e^{gk_l}) S diag(e^{gv_l}) e^{g_l + γL} + Σ_s (k_s ⊙ e^{gk_l−gk_s} e^{g_l−g_s+γ(L−1−s)}) (v_s ⊙
///   e^{gv_l−gv_s})ᵀ
/// where l is the chunk's last row; every exponent is <= 0 for non-positive gates. k [L×K] and v [L×Vt] are
/// input rows (v starting at the tile's first column); the gates are chunk-local cumsums (Gates says which).
template <unsigned Gates, class Acc, class Op, class In>
void state_update(Acc* S, Index ldS, Rows<In> k, Rows<In> v, const ChunkGates<Acc>& gt, Index L, Index K, Index Vt,
                  const ChunkScratch<Acc, Op>& ws) {
  if (L == 0) return;
  constexpr bool kG = (Gates & kGateG) != 0, kGamma = (Gates & kGateGamma) != 0, kGk = (Gates & kGateGk) != 0,
                 kGv = (Gates & kGateGv) != 0;
  Acc scalar_last = 0;  // g_l + γL: the scalar part of the state's decay
  if constexpr (kG) scalar_last += gt.g[(L - 1) * gt.ldg];
  if constexpr (kGamma) scalar_last += *gt.gamma * static_cast<Acc>(L);
  keys_decayed_to_end<Gates>(k, gt, L, K, ws);
  if constexpr (kGk) {
    RowArrMap<Acc> el(ws.el, K);
    el = ConstRowArrMap<Acc>(gt.gk + (L - 1) * gt.ldgk, K).exp();
    for (Index a = 0; a < K; ++a) RowArrMap<Acc>(S + a * ldS, Vt) *= ws.el[a];
  }
  if constexpr (kG || kGamma) {
    const Acc f = std::exp(scalar_last);
    for (Index a = 0; a < K; ++a) RowArrMap<Acc>(S + a * ldS, Vt) *= f;
  }
  Rows<Op> vop;
  if constexpr (kGv) {
    RowArrMap<Acc> ev(ws.ev, Vt);
    const ConstRowArrMap<Acc> gvl(gt.gv + (L - 1) * gt.ldgv, Vt);
    ev = gvl.exp();
    for (Index a = 0; a < K; ++a) RowArrMap<Acc>(S + a * ldS, Vt) *= ev;
    // v ⊙ e^{gv_l − gv_s}, rows formed in O's memory as exponents (O is free during a state update).
    for (Index s = 0; s < L; ++s) {
      RowArrMap<Acc> x(ws.O + s * Vt, Vt);
      x = (gvl - ConstRowArrMap<Acc>(gt.gv + s * gt.ldgv, Vt)).exp();
      store_operand_row(ws.vop + s * Vt, ConstRowArrMap<In>(v.row(s), Vt).template cast<Acc>() * x);
    }
    vop = {ws.vop, Vt};
  } else {
    vop = as_operand<Op>(v, L, Vt, ws.vop);
  }
  gemm<Op>(Trans::T, Trans::N, K, Vt, L, ws.kd, K, vop.p, vop.ld, /*accumulate=*/true, S, ldS);
}

/// The gk-gated state update out of place and transposed: St_out = St_in diag(e^{G_l}) + vᵀ (k ⊙ e^{G_l − G}), i.e.
/// S_out = diag(e^{G_l}) S_in + (k ⊙ e^{G_l − G})ᵀ v on the transposes, with G = gt.gk the chunk-local cumsum (l the
/// chunk's last row); St_in and St_out Vt×K (row stride K), distinct; L >= 1 (its caller, group_chunk_states, runs
/// it on full chunks only). The product is written first and St_in's decayed rows added to it in one pass, so St_in
/// is read once and nothing is copied. The backward keeps its recomputed states transposed so that its products
/// with them contract over their contiguous dimension (docs/chunk_backward.md).
template <class Acc, class Op, class In>
void state_update_transposed_into(const Acc* St_in, Acc* St_out, Rows<In> k, Rows<In> v, const ChunkGates<Acc>& gt,
                                  Index L, Index K, Index Vt, const ChunkScratch<Acc, Op>& ws) {
  keys_decayed_to_end<kGateGk>(k, gt, L, K, ws);
  const Rows<Op> vop = as_operand<Op>(v, L, Vt, ws.vop);
  gemm<Op>(Trans::T, Trans::N, Vt, K, L, vop.p, vop.ld, ws.kd, K, /*accumulate=*/false, St_out, K);
  RowArrMap<Acc> el(ws.el, K);
  el = ConstRowArrMap<Acc>(gt.gk + (L - 1) * gt.ldgk, K).exp();
  for (Index c = 0; c < Vt; ++c) RowArrMap<Acc>(St_out + c * K, K) += ConstRowArrMap<Acc>(St_in + c * K, K) * el;
}

/// Where a chunk's L rows are split for its lower-triangular L×L products (A, the backward's dA and their
/// products): rows [0, h) only meet columns [0, h), so the block above the diagonal, a quarter of the work at
/// h = L/2, is never computed. h = L/2 rounded down to a multiple of 16 (0: no split, for L < 32). Not for
/// bfloat16 operands on AMX tiles (Op ≠ Acc and amx_available()), where each product's fixed cost (packing op(B)
/// into VNNI pairs, the tile loads) outweighs the saved quarter: 1.5–3% slower there at the benchmark shapes, 3–4%
/// faster with float products, and 3–7% faster with bfloat16 operands on libxsmm's kernels (Zen 4; forwards and
/// backward, docs/PERFORMANCE.md).
template <class Acc, class Op>
Index triangular_split(Index L) {
  return std::is_same_v<Acc, Op> || !amx_available() ? L / 32 * 16 : 0;
}

/// C [L×L] (row stride ldc) = X Yᵀ for X, Y [L×n], except the block C[0:h, h:L] above the diagonal, which is not
/// written (h = 0: the whole product).
template <class Op, class Acc>
void lower_product(Index h, Index L, Index n, const Op* X, Index ldx, const Op* Y, Index ldy, Acc* C, Index ldc) {
  if (h > 0) gemm<Op>(Trans::N, Trans::T, h, h, n, X, ldx, Y, ldy, false, C, ldc);
  gemm<Op>(Trans::N, Trans::T, L - h, L, n, X + h * ldx, ldx, Y, ldy, false, C + h * ldc, ldc);
}

/// lower_product with Y given transposed: C [L×L] = X Yᵀ from Yt = Yᵀ [n×L] (row stride ldyt), under the same split,
/// as plain products (no operand is transposed inside them).
template <class Op, class Acc>
void lower_product_of_transposed(Index h, Index L, Index n, const Op* X, Index ldx, const Op* Yt, Index ldyt, Acc* C,
                                 Index ldc) {
  if (h > 0) gemm<Op>(Trans::N, Trans::N, h, h, n, X, ldx, Yt, ldyt, false, C, ldc);
  gemm<Op>(Trans::N, Trans::N, L - h, L, n, X + h * ldx, ldx, Yt, ldyt, false, C + h * ldc, ldc);
}

/// C [L×n] = M Y (or C += M Y) for M [L×L] lower triangular by blocks (M[0:h, h:L] = 0, never read) and Y [L×n].
template <class Op, class Acc>
void lower_times(Index h, Index L, Index n, const Op* M, Index ldm, const Op* Y, Index ldy, bool accumulate, Acc* C,
                 Index ldc) {
  if (h > 0) gemm<Op>(Trans::N, Trans::N, h, n, h, M, ldm, Y, ldy, accumulate, C, ldc);
  gemm<Op>(Trans::N, Trans::N, L - h, n, L, M + h * ldm, ldm, Y, ldy, accumulate, C + h * ldc, ldc);
}

/// C [L×n] = Mᵀ Y for M as in lower_times.
template <class Op, class Acc>
void lower_transposed_times(Index h, Index L, Index n, const Op* M, Index ldm, const Op* Y, Index ldy, Acc* C,
                            Index ldc) {
  gemm<Op>(Trans::T, Trans::N, h > 0 ? h : L, n, L, M, ldm, Y, ldy, false, C, ldc);
  if (h > 0)
    gemm<Op>(Trans::T, Trans::N, L - h, n, L - h, M + h * ldm + h, ldm, Y + h * ldy, ldy, false, C + h * ldc, ldc);
}

/// The output of one chunk of L tokens for one value tile, into ws.O [L×Vt]:
///   o_t = scale (q_t ⊙ e^{G_t}) S + Σ_{s ≤ t in chunk} A[t,s] v_s,  A[t,s] = scale Σ_k q_t k_s e^{G_t − G_s}
/// with S [K×Vt] (row stride ldS) the state before the chunk, g the chunk's raw gate rows and G their chunk-local
/// cumsum, which it forms into ws.G (as gate_cumsum does) and leaves there. v is the value tile as an operand. Two
/// paths (docs/chunk_algorithm.md):
///  * factored, when |G| <= kFactoredDecayBound everywhere: A = tril((scale q ⊙ e^{G})(k ⊙ e^{−G})ᵀ) as one
///    product. Leaves the last row of e^{G} in ws.tmp (row L−1) and ws.kd = k ⊙ e^{−G} for
///    state_update_factored; returns true.
///  * sub-chunk, otherwise: off-diagonal 16×16 blocks use a reference point at the query sub-chunk's first row
///    (both factors ≤ 1); diagonal blocks use e^{G_t − G_s} as a running product of e^{g} (every factor ≤ 1).
///    Returns false.
/// Either way the upper triangle of A is written as 0 (never a multiply by a mask, so no inf·0).
template <class Acc, class Op, class In>
bool chunk_output(Rows<In> q, Rows<In> k, Rows<In> g, Acc floor, Rows<Op> v, const Acc* S, Index ldS, Acc scale,
                  Index L, Index K, Index Vt, const ChunkScratch<Acc, Op>& ws, Index BT) {
  if (L == 0) return false;
  // The gate cumsum, and where possible the factored path's operands with it (factored_operands).
  bool factored = false;
  const bool fused = factored_operands(q, k, g, floor, scale, L, K, ws.G, ws.qg, ws.kd, ws.tmp + (L - 1) * K, factored);
  if (!fused) {
    gate_cumsum(g, L, K, floor, ws.G);
    factored = decay_is_bounded(ws.G, L, K);
  }
  const Acc* G = ws.G;
  // Rows of q and k in Acc (for float/double inputs, the input rows themselves; only the separate passes read
  // them on the factored path).
  Rows<Acc> qa, ka;
  if constexpr (std::is_same_v<In, Acc>) {
    qa = q;
    ka = k;
  } else if (!(fused && factored)) {
    convert_rows(q, L, K, ws.qa);
    convert_rows(k, L, K, ws.ka);
    qa = {ws.qa, K};
    ka = {ws.ka, K};
  }
  const Op* Sop = nullptr;
  Index ldSop = 0;
  if constexpr (std::is_same_v<Op, Acc>) {
    Sop = S;
    ldSop = ldS;
  } else {
    for (Index a = 0; a < K; ++a) convert_operand_n(S + a * ldS, ws.Sop + a * Vt, Vt);
    Sop = ws.Sop;
    ldSop = Vt;
  }
  Acc* A = ws.A;
  const auto zero_upper = [&](Index r0, Index r1) {  // A[r, c] = 0 for c > r, rows [r0, r1)
    for (Index r = r0; r < r1; ++r) std::fill(A + r * BT + r + 1, A + r * BT + L, Acc(0));
  };
  // O = (scale q ⊙ e^{G}) · S: the inter-chunk term; e^{G} stays in ws.tmp (its last row only when fused).
  if (!fused) {
    for (Index r = 0; r < L; ++r) {
      RowArrMap<Acc> e(ws.tmp + r * K, K);
      e = ConstRowArrMap<Acc>(G + r * K, K).exp();
      store_operand_row(ws.qg + r * K, ConstRowArrMap<Acc>(qa.row(r), K) * e * scale);
    }
  }
  gemm<Op>(Trans::N, Trans::N, L, Vt, K, ws.qg, K, Sop, ldSop, /*accumulate=*/false, ws.O, Vt);

  if (factored) {
    // kd = k ⊙ e^{−G} (factors ≤ e^{bound}), e^{−G} as the reciprocal of e^{G} (ws.tmp); A = qg · kdᵀ, its upper
    // triangle then set to 0.
    if (!fused) {  // factored_operands formed kd already
      for (Index r = 0; r < L; ++r) {
        reciprocal_row(ws.tmp + r * K, ws.eg + r * K, K);
        store_operand_row(ws.kd + r * K, ConstRowArrMap<Acc>(ka.row(r), K) * ConstRowArrMap<Acc>(ws.eg + r * K, K));
      }
    }
    lower_product<Op>(triangular_split<Acc, Op>(L), L, K, ws.qg, K, ws.kd, K, A, BT);
    zero_upper(0, L);
  } else {
    step_decays(g, L, K, floor, ws.eg);
    Acc* const x = ws.tmp;  // e^{G} is not needed past the inter-chunk term on this path
    for (Index i0 = 0; i0 < L; i0 += kSubChunk) {
      const Index Li = std::min(kSubChunk, L - i0);
      if (i0 > 0) {
        // Off-diagonal blocks of query sub-chunk i against all earlier keys, reference gn = G[i0].
        const ConstRowArrMap<Acc> gn(G + i0 * K, K);
        for (Index r = 0; r < Li; ++r) {
          RowArrMap<Acc> xr(x + r * K, K);
          xr = (ConstRowArrMap<Acc>(G + (i0 + r) * K, K) - gn).exp();
          store_operand_row(ws.qs + r * K, ConstRowArrMap<Acc>(qa.row(i0 + r), K) * xr * scale);
        }
        for (Index s = 0; s < i0; ++s) {
          RowArrMap<Acc> xs(x + s * K, K);
          xs = (gn - ConstRowArrMap<Acc>(G + s * K, K)).exp();
          store_operand_row(ws.kd + s * K, ConstRowArrMap<Acc>(ka.row(s), K) * xs);
        }
        gemm<Op>(Trans::N, Trans::T, Li, i0, K, ws.qs, K, ws.kd, K, /*accumulate=*/false, A + i0 * BT, BT);
      }
      // Diagonal block: column c, rows r >= c, decay e^{G_r − G_c} = Π_{s=c+1..r} e^{g_s}.
      RowArrMap<Acc> e(ws.e, K);
      for (Index c = i0; c < i0 + Li; ++c) {
        e = ConstRowArrMap<Acc>(ka.row(c), K);
        A[c * BT + c] = scale * (ConstRowArrMap<Acc>(qa.row(c), K) * e).sum();
        for (Index r = c + 1; r < i0 + Li; ++r) {
          e *= ConstRowArrMap<Acc>(ws.eg + r * K, K);
          A[r * BT + c] = scale * (ConstRowArrMap<Acc>(qa.row(r), K) * e).sum();
        }
      }
      zero_upper(i0, i0 + Li);
    }
  }
  // Intra-chunk term: O += A · V (A is zero above its diagonal on both paths).
  const Op* Aop = nullptr;
  if constexpr (std::is_same_v<Op, Acc>) {
    Aop = A;
  } else {
    for (Index r = 0; r < L; ++r) convert_operand_n(A + r * BT, ws.Aop + r * BT, L);
    Aop = ws.Aop;
  }
  lower_times<Op>(triangular_split<Acc, Op>(L), L, Vt, Aop, BT, v.p, v.ld, /*accumulate=*/true, ws.O, Vt);
  return factored;
}

/// The state update after chunk_output's factored path, from what it left in the scratch (ws.tmp row L−1 =
/// e^{Gl}, ws.kd = k ⊙ e^{−G}): S ← diag(e^{Gl}) S + (kd ⊙ e^{Gl})ᵀ v = diag(e^{Gl}) (S + kdᵀ v), the same update as
/// state_update<kGateGk> without forming the exponentials again, and with kd as chunk_output left it (no pass to
/// decay it, and for bfloat16 operands one rounding of k ⊙ e^{−G} instead of two). Both terms are scaled by the
/// same e^{Gl}, so the rounding of their sum is the same relative to the result; kd's factors are at most e^{8}
/// (kFactoredDecayBound), so the sum is at most that much larger than the terms it replaces. vop [L×Vt]: the value tile
/// as an operand (as chunk_output took it).
template <class Acc, class Op>
void state_update_factored(Acc* S, Index ldS, Rows<Op> vop, Index L, Index K, Index Vt,
                           const ChunkScratch<Acc, Op>& ws) {
  if (L == 0) return;
  gemm<Op>(Trans::T, Trans::N, K, Vt, L, ws.kd, K, vop.p, vop.ld, /*accumulate=*/true, S, ldS);
  const Acc* el = ws.tmp + (L - 1) * K;  // e^{Gl}
  for (Index a = 0; a < K; ++a) RowArrMap<Acc>(S + a * ldS, Vt) *= el[a];
}

/// Loads columns [v0, v0+Vt) of a float state [K,V] (or its V-first transpose [V,K]) into a row-major K×Vt tile.
template <class Acc>
void load_state_tile(Acc* S, const float* p, Index K, Index V, Index v0, Index Vt, bool v_first) {
  Eigen::Map<RowMat<Acc>> dst(S, K, Vt);
  if (v_first)
    dst = Eigen::Map<const RowMat<float>>(p, V, K).middleRows(v0, Vt).transpose().template cast<Acc>();
  else
    dst = Eigen::Map<const RowMat<float>>(p, K, V).middleCols(v0, Vt).template cast<Acc>();
}

/// Loads columns [v0, v0+Vt) of a state [K,V] (or its V-first transpose [V,K]) of float or Acc transposed, into a
/// row-major Vt×K tile.
template <class Acc, class Src>
void load_state_tile_transposed(Acc* St, const Src* p, Index K, Index V, Index v0, Index Vt, bool v_first) {
  if constexpr (std::is_same_v<Acc, float> && std::is_same_v<Src, float>) {
    if (!v_first) {  // 16×16 blocks transposed in registers
      gemm_impl::transpose_to_float(p + v0, V, K, Vt, St);
      return;
    }
  }
  Eigen::Map<RowMat<Acc>> dst(St, Vt, K);
  if (v_first)
    dst = Eigen::Map<const RowMat<Src>>(p, V, K).middleRows(v0, Vt).template cast<Acc>();
  else
    dst = Eigen::Map<const RowMat<Src>>(p, K, V).middleCols(v0, Vt).transpose().template cast<Acc>();
}

/// Outputs of at least this many bytes are written with non-temporal stores (OutputWrites::streaming): twice a
/// core's L2 on the machines docs/PERFORMANCE.md reports, so most of such an output has left the cache by the
/// time anything reads it, and fetching each line before overwriting it (what a plain store does, or the
/// prefetch for writing that hid it) is wasted memory traffic and stalls the core: 5–14% of the chunked
/// forwards' time and 8–17% of the backward's at the benchmark shapes (docs/PERFORMANCE.md).
inline constexpr std::size_t kStreamingOutputBytes = std::size_t(4) << 20;

/// How a kernel writes one output tensor of `elements` values of T (from float accumulators): streaming for
/// large ones where convert_n_streaming can stream T (kStreamsNonTemporal; double and half outputs never do).
struct OutputWrites {
  bool streaming = false;
  template <class T>
  static OutputWrites for_tensor(Index elements) {
    return {kStreamsNonTemporal<T, float> && static_cast<std::size_t>(elements) * sizeof(T) >= kStreamingOutputBytes};
  }
};

/// Writes L rows of a contiguous [L×W] tile into strided output rows (converting to the output scalar), with
/// non-temporal stores when `how.streaming` (fenced before returning, so the caller needs no ordering of its own).
template <class T, class Acc>
void store_tile_rows(const Acc* tile, Index L, Index W, T* out, Index ld, OutputWrites how = {}) {
  if (how.streaming) {
    for (Index r = 0; r < L; ++r) convert_n_streaming(tile + r * W, out + r * ld, W);
    stream_fence();
  } else {
    for (Index r = 0; r < L; ++r) convert_n(tile + r * W, out + r * ld, W);
  }
}

/// Index of each sequence's first chunk in the packed chunk list [N+1].
inline std::vector<Index> chunk_offsets(const OpShape& s, Index BT) {
  std::vector<Index> off{0};
  for (const Seq& sq : s.seqs) off.push_back(off.back() + (sq.len + BT - 1) / BT);
  return off;
}

/// Stores a contiguous K×Vt tile as columns [v0, v0+Vt) of a state [K,V] of Out (or rows [v0, v0+Vt) of its
/// V-first transpose [V,K]): a final state, or one chunk's slot of the per-chunk states h that chunk_fwd_h returns
/// and the chunked forwards keep for their backward. Rows are written with non-temporal stores when
/// `how.streaming` allows: K-first as store_tile_rows writes them, V-first float ones as 16×16 blocks transposed in
/// registers (transpose_to_float; Eigen's transposed assignment wrote them element by element, each line read first).
template <class Acc, class Out>
void store_state_tile(const Acc* S, Out* p, Index K, Index V, Index v0, Index Vt, bool v_first, OutputWrites how = {}) {
  if (!v_first) {
    store_tile_rows(S, K, Vt, p + v0, V, how);
  } else if constexpr (std::is_same_v<Acc, float> && std::is_same_v<Out, float>) {
    gemm_impl::transpose_to_float(S, Vt, K, Vt, p + v0 * K, K, how.streaming);
    if (how.streaming) stream_fence();
  } else {
    Eigen::Map<RowMat<Out>>(p, V, K).middleRows(v0, Vt) =
        Eigen::Map<const RowMat<Acc>>(S, K, Vt).transpose().template cast<Out>();
  }
}

/// A (sequence, head) pair and a tile of its value columns [v0, v0 + width): one parallel work item.
struct HeadTile {
  Index pair;  // n·H + h
  Index v0, width;
};

/// The work items of a sweep over (sequence, head) pairs, each split into value tiles when the pairs alone are
/// too few to keep threads busy: a pair holding more than 1/target of all tokens gets up to `max_tiles` tiles of
/// at least 32 columns (rounded to 16). The split depends on the shape and `target` only. The chunked sweeps pass a
/// fixed target, so their results are identical for any thread count; fused_recurrent_gla passes the thread count,
/// which it may, because its value columns evolve independently and no split changes its results. Items are
/// ordered by work, largest first.
inline std::vector<HeadTile> head_tiles(const OpShape& s, Index target, Index max_tiles) {
  Index total = 0;
  for (const Seq& sq : s.seqs) total += sq.len;
  total *= s.H;
  std::vector<HeadTile> items;
  for (Index p = 0; p < s.N * s.H; ++p) {
    const Index len = s.seqs[static_cast<std::size_t>(p / s.H)].len;
    Index tiles = 1;
    if (total > 0 && len > 0) tiles = std::max<Index>(1, (target * len + total - 1) / total);
    tiles = std::min({tiles, max_tiles, std::max<Index>(1, s.V / 32)});
    const Index width = std::min(s.V, ((s.V + tiles - 1) / tiles + 15) / 16 * 16);
    for (Index v0 = 0; v0 < s.V; v0 += width) items.push_back({p, v0, std::min(width, s.V - v0)});
  }
  std::stable_sort(items.begin(), items.end(), [&](const HeadTile& a, const HeadTile& b) {
    return s.seqs[static_cast<std::size_t>(a.pair / s.H)].len * a.width >
           s.seqs[static_cast<std::size_t>(b.pair / s.H)].len * b.width;
  });
  return items;
}

/// Heads [h0, h0 + count) of sequence n over value columns [v0, v0 + width): one work item of a sweep that carries
/// the heads' states together, chunk by chunk. A token's rows of all heads are adjacent in a [B,T,H,D] tensor,
/// so a group reads (and writes) count·D contiguous elements per token where a single head reads D: fewer pages
/// and cache lines touched per row, which is what limits a one-head sweep (docs/PERFORMANCE.md). The grouping
/// changes only the order in which heads advance, never a head's arithmetic, so results do not depend on it.
struct HeadGroup {
  Index n, h0, count, v0, width;
};

/// The head groups of a sweep over the tiles of head_tiles(s, target, max_tiles): tiles of one sequence and one
/// column range, consecutive heads, at most `max_heads` per group and enough groups for 2 per thread (so a
/// descheduled thread's share can move); ordered by work, largest first.
inline std::vector<HeadGroup> head_groups(const OpShape& s, Index target, Index max_tiles, Index max_heads) {
  const std::vector<HeadTile> tiles = head_tiles(s, target, max_tiles);
  const Index per_group = std::max<Index>(
      1, std::min<Index>(max_heads, static_cast<Index>(tiles.size()) / (2 * static_cast<Index>(get_num_threads()))));
  // Tiles of equal (sequence, v0) in head order: tiles is sorted by work, stably, so every sequence's heads keep
  // their order; collect them per (sequence, v0).
  std::vector<HeadTile> ordered(tiles);
  std::stable_sort(ordered.begin(), ordered.end(), [&](const HeadTile& a, const HeadTile& b) {
    const Index na = a.pair / s.H, nb = b.pair / s.H;
    if (na != nb) return na < nb;
    if (a.v0 != b.v0) return a.v0 < b.v0;
    return a.pair < b.pair;
  });
  std::vector<HeadGroup> groups;
  for (const HeadTile& t : ordered) {
    const Index n = t.pair / s.H, h = t.pair % s.H;
    if (!groups.empty()) {
      HeadGroup& last = groups.back();
      if (last.n == n && last.v0 == t.v0 && last.h0 + last.count == h && last.count < per_group) {
        ++last.count;
        continue;
      }
    }
    groups.push_back({n, h, 1, t.v0, t.width});
  }
  std::stable_sort(groups.begin(), groups.end(), [&](const HeadGroup& a, const HeadGroup& b) {
    return s.seqs[static_cast<std::size_t>(a.n)].len * a.width * a.count >
           s.seqs[static_cast<std::size_t>(b.n)].len * b.width * b.count;
  });
  return groups;
}

/// The most heads in any group (state tiles per worker) and the widest group.
inline Index max_group_heads(const std::vector<HeadGroup>& groups) {
  Index m = 1;
  for (const HeadGroup& g : groups) m = std::max(m, g.count);
  return m;
}
inline Index max_group_width(const std::vector<HeadGroup>& groups) {
  Index w = 0;
  for (const HeadGroup& g : groups) w = std::max(w, g.width);
  return w;
}

/// The state tiles of a head group, K×width each, head gr.h0 + j's at S + j·K·width (a worker's ChunkScratch::S):
/// loaded from a float state tensor [N,H,K,V] (or [N,H,V,K] with v_first) over the group's columns, or zeros when
/// src is null (no initial state); and stored back to one.
template <class Acc>
void load_group_states(Acc* S, const HeadGroup& gr, const float* src, Index H, Index K, Index V, bool v_first) {
  for (Index j = 0; j < gr.count; ++j) {
    Acc* tile = S + j * K * gr.width;
    if (src)
      load_state_tile(tile, src + (gr.n * H + gr.h0 + j) * K * V, K, V, gr.v0, gr.width, v_first);
    else
      std::fill_n(tile, K * gr.width, Acc(0));
  }
}
template <class Acc>
void store_group_states(const Acc* S, const HeadGroup& gr, float* dst, Index H, Index K, Index V, bool v_first) {
  for (Index j = 0; j < gr.count; ++j)
    store_state_tile(S + j * K * gr.width, dst + (gr.n * H + gr.h0 + j) * K * V, K, V, gr.v0, gr.width, v_first);
}

/// The head groups of the chunked state sweeps (chunk_state_sweep, chunk_grad_sweep): up to 4 value tiles per
/// (sequence, head) pair when few pairs carry the work (a tile of a state sweep costs no extra work), the states
/// of a group within 1 MiB, half the L2 of the machines docs/PERFORMANCE.md reports.
template <class Acc>
std::vector<HeadGroup> sweep_groups(const OpShape& s) {
  const Index state_bytes = std::max<Index>(1, s.K * s.V * static_cast<Index>(sizeof(Acc)));
  return head_groups(s, /*target=*/4, /*max_tiles=*/4, std::max<Index>(1, (Index(1) << 20) / state_bytes));
}

/// The widest tile of a list (the scratch size per worker).
inline Index max_tile_width(const std::vector<HeadTile>& items) {
  Index w = 0;
  for (const HeadTile& t : items) w = std::max(w, t.width);
  return w;
}

}  // namespace gla::detail
