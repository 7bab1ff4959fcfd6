#pragma once
/// gla/detail/chunk_backward_kernels.hpp: the per-chunk building blocks of the chunked GLA backward: the
/// reverse state-gradient step of chunk_bwd_dh and the gradients of one chunk (dq, dk, dv, dg) on [L×D] blocks
/// through Eigen matrix products, with every exponent <= 0 (docs/chunk_backward.md).

#include <gla/chunk_h.hpp>

namespace gla::detail {

/// Scratch matrices of one thread of the backward, sized once per call so that no hot loop allocates.
template <class Acc>
struct ChunkBwdWorkspace {
  RowMat<Acc> A, dA, qg, kg, tmp, expg, decl, dq, dk, dv, dg, qdec, dodec;
  RowVec<Acc> f, qf, gl, gvl, dgl;
  // The gate cumsum of the chunk being differentiated, in double for every input scalar (see chunk_gla_bwd_block).
  RowMat<double> Gd;
  RowVec<double> gn, gld;
  ChunkBwdWorkspace() = default;
  ChunkBwdWorkspace(Index BT, Index K, Index V) { reserve(BT, K, V); }
  void reserve(Index BT, Index K, Index V) {
    A.resize(BT, BT);
    dA.resize(BT, BT);
    qg.resize(BT, K);
    kg.resize(BT, K);
    tmp.resize(BT, K);
    expg.resize(BT, K);
    decl.resize(BT, K);
    dq.resize(BT, K);
    dk.resize(BT, K);
    dv.resize(BT, V);
    dg.resize(BT, K);
    qdec.resize(BT, K);
    dodec.resize(BT, V);
    Gd.resize(BT, K);
    gn.resize(K);
    gld.resize(K);
    f.resize(K);
    qf.resize(K);
    gl.resize(K);
    gvl.resize(V);
    dgl.resize(K);
  }
};

/// Moves the state gradient dS (K×V; ∂L/∂ the state AFTER the chunk on entry, ∂L/∂ the state BEFORE it on
/// return) back across one chunk of L tokens — the transpose of chunk_state_update plus the outputs' term:
///   dS ← e^{g_l+γL} diag(e^{gk_l}) dS diag(e^{gv_l}) + scale Σ_t (q_t ⊙ e^{gk_t} e^{g_t+γ(t+1)}) (do_t ⊙ e^{gv_t})ᵀ
/// q [L×K], do_ [L×V]; gates chunk-local inclusive cumsums (l = last row), every exponent <= 0.
template <class Acc>
void chunk_dh_update(RowMat<Acc>& dS, const ConstStridedMap<Acc>& q, const ConstStridedMap<Acc>& do_,
                     const ChunkGates<Acc>& gt, Acc scale, Index L, ChunkBwdWorkspace<Acc>& ws) {
  if (L == 0) return;
  const Index K = dS.rows(), V = dS.cols();
  Acc scalar_last = 0;
  if (gt.g) scalar_last += gt.g[(L - 1) * gt.ldg];
  if (gt.gamma) scalar_last += *gt.gamma * static_cast<Acc>(L);
  if (gt.gk) {
    ws.gl = Eigen::Map<const RowVec<Acc>>(gt.gk + (L - 1) * gt.ldgk, K);
    dS.array().colwise() *= ws.gl.transpose().array().exp();
  }
  if (gt.gv) {
    ws.gvl = Eigen::Map<const RowVec<Acc>>(gt.gv + (L - 1) * gt.ldgv, V);
    dS.array().rowwise() *= ws.gvl.array().exp();
  }
  if (gt.g || gt.gamma) dS *= std::exp(scalar_last);

  auto qdec = ws.qdec.topRows(L);
  for (Index t = 0; t < L; ++t) {
    Acc sc = 0;  // scalar log decay from the chunk start to token t (inclusive)
    if (gt.g) sc += gt.g[t * gt.ldg];
    if (gt.gamma) sc += *gt.gamma * static_cast<Acc>(t + 1);
    if (gt.gk)
      qdec.row(t) =
          q.row(t).array() * (Eigen::Map<const RowVec<Acc>>(gt.gk + t * gt.ldgk, K).array() + sc).exp() * scale;
    else
      qdec.row(t) = q.row(t) * (scale * std::exp(sc));
  }
  if (gt.gv) {
    auto dodec = ws.dodec.topRows(L);
    for (Index t = 0; t < L; ++t)
      dodec.row(t) = do_.row(t).array() * Eigen::Map<const RowVec<Acc>>(gt.gv + t * gt.ldgv, V).array().exp();
    dS.noalias() += qdec.transpose() * dodec;
  } else {
    dS.noalias() += qdec.transpose() * do_;
  }
}

/// The reverse sweep over chunks for every (sequence, head), in parallel over the pairs: dS starts at dht (or
/// 0); before each chunk is stepped back, dh[c] = dS (∂L/∂ the state after chunk c) is stored
/// ([ΣNT,H,K,V], V-first with dh_v_first; may be null); the gradient before the first chunk goes to dh0
/// ([N,H,K,V], V-first with v_first; may be null). q [B,T,H,K], do_ [B,T,H,V]; dht float [N,H,K,V]
/// (V-first with v_first) or null.
template <class Acc, class DhOut>
void chunk_bwd_dh_impl(const OpShape& s, Index BT, const Acc* q, const Acc* do_, const FullGates<Acc>& gates, Acc scale,
                       const float* dht, bool v_first, DhOut* dh, bool dh_v_first, float* dh0) {
  const Index K = s.K, V = s.V, H = s.H;
  const std::vector<Index> off = chunk_offsets(s, BT);
  const std::vector<Index> order = pairs_longest_first(s);
  const Index items = static_cast<Index>(order.size());
  auto ws = per_worker(items, ChunkBwdWorkspace<Acc>(BT, K, V));
  auto dSw = per_worker(items, RowMat<Acc>(K, V));
  parallel_for(items, [&](Index i, int w) {
    const Index p = order[static_cast<std::size_t>(i)];
    RowMat<Acc>& dS = dSw[static_cast<std::size_t>(w)];
    const Index n = p / H, hh = p % H;
    const Seq& sq = s.seqs[static_cast<std::size_t>(n)];
    if (dht)
      load_state(dS, dht + p * K * V, K, V, v_first);
    else
      dS.setZero();
    const Index nchunks = (sq.len + BT - 1) / BT;
    for (Index c = nchunks - 1; c >= 0; --c) {
      const Index c0 = c * BT, L = std::min(BT, sq.len - c0);
      if (dh) store_state(dS, dh + ((off[static_cast<std::size_t>(n)] + c) * H + hh) * K * V, K, V, dh_v_first);
      chunk_dh_update(dS, rows(q, s, sq, hh, c0, L, K), rows(do_, s, sq, hh, c0, L, V), gates.chunk(s, sq, hh, c0),
                      scale, L, ws[static_cast<std::size_t>(w)]);
    }
    if (dh0) store_state(dS, dh0 + p * K * V, K, V, v_first);
  });
}

/// Per-worker scratch of the chunked backward's per-chunk gradients (carved from a workspace), for chunks of at
/// most BT rows. Operand-typed buffers are unused (size 0) when Op is Acc.
template <class Acc, class Op>
struct BwdScratch {
  static constexpr bool kLowp = !std::is_same_v<Acc, Op>;
  // Float products take v transposed (vT), formed once per chunk: dA = do_ vᵀ and (dH v_s)ᵀ = dH vᵀ then multiply
  // plain operands, where each would otherwise transpose one inside (v, and the 128×128 dH at fla's shapes).
  // bfloat16 operands keep v as it is: their kernels pack every operand anyway.
  static constexpr bool kValuesTransposed = std::is_same_v<Op, float>;
  double* Gd = nullptr;  // [BT×K] gate cumsum in double
  double* gn = nullptr;  // [K]
  Acc* eg = nullptr;     // [BT×K] e^{G} (factored path) or e^{g} (sub-chunk path)
  Acc* qa = nullptr;     // [BT×K] q in Acc (low precision or strided inputs)
  Acc* ka = nullptr;     // [BT×K] k in Acc
  Acc* dA = nullptr;     // [BT×BT]
  Acc* A = nullptr;      // [BT×BT]
  Op* dAop = nullptr;    // [BT×BT]
  Op* Aop = nullptr;     // [BT×BT]
  Op* qg = nullptr;      // [BT×K] decayed queries (operand)
  Op* kg = nullptr;      // [BT×K] decayed keys (operand)
  Acc* dec = nullptr;    // [BT×K] e^{−G} (factored path) or e^{gn − G_s} (sub-chunk path), then e^{Gl − G_s}
  Acc* tmp = nullptr;    // [BT×K]
  Acc* dq = nullptr;     // [BT×K]
  Acc* dk = nullptr;     // [BT×K]
  Acc* dg = nullptr;     // [BT×K]
  Acc* dv = nullptr;     // [BT×V]
  Op* vop = nullptr;     // [BT×V] v as an operand (when converted; unused when kValuesTransposed)
  Acc* vT = nullptr;     // [V×BT] v transposed (kValuesTransposed)
  Acc* tmpT = nullptr;   // [K×BT] (dH v_s)ᵀ for s in the chunk, as columns (kValuesTransposed)
  Op* doop = nullptr;    // [BT×V] do as an operand (when converted)
  Op* Sop = nullptr;     // [K×V]
  Op* dHop = nullptr;    // [K×V]
  Acc* f = nullptr;      // [K]
  Acc* qf = nullptr;     // [K]
  Acc* dgl = nullptr;    // [K]
  Acc* dAd = nullptr;    // [BT] the diagonal of dA
  Acc* Ad = nullptr;     // [BT] the diagonal of A (factored path)

  static BwdScratch plan(Arena& a, Index BT, Index K, Index V) {
    BwdScratch w;
    w.Gd = a.take<double>(BT * K);
    w.gn = a.take<double>(K);
    w.eg = a.take<Acc>(BT * K);
    w.qa = a.take<Acc>(BT * K);
    w.ka = a.take<Acc>(BT * K);
    w.dA = a.take<Acc>(BT * BT);
    w.A = a.take<Acc>(BT * BT);
    w.dAop = a.take<Op>(kLowp ? BT * BT : 0);
    w.Aop = a.take<Op>(kLowp ? BT * BT : 0);
    w.qg = a.take<Op>(BT * K);
    w.kg = a.take<Op>(BT * K);
    w.dec = a.take<Acc>(BT * K);
    w.tmp = a.take<Acc>(BT * K);
    w.dq = a.take<Acc>(BT * K);
    w.dk = a.take<Acc>(BT * K);
    w.dg = a.take<Acc>(BT * K);
    w.dv = a.take<Acc>(BT * V);
    w.vop = a.take<Op>(kValuesTransposed ? 0 : BT * V);
    w.vT = a.take<Acc>(kValuesTransposed ? V * BT : 0);
    w.tmpT = a.take<Acc>(kValuesTransposed ? K * BT : 0);
    w.doop = a.take<Op>(BT * V);
    w.Sop = a.take<Op>(kLowp ? K * V : 0);
    w.dHop = a.take<Op>(kLowp ? K * V : 0);
    w.f = a.take<Acc>(K);
    w.qf = a.take<Acc>(K);
    w.dgl = a.take<Acc>(K);
    w.dAd = a.take<Acc>(BT);
    w.Ad = a.take<Acc>(BT);
    return w;
  }

  /// dA [L×L] (row stride BT) as a product operand: itself, or converted to Op.
  const Op* dA_operand(Index L, Index BT) const { return operand(dA, dAop, L, BT); }
  /// A likewise.
  const Op* A_operand(Index L, Index BT) const { return operand(A, Aop, L, BT); }
  /// A state [K×V] as a product operand (fla multiplies its states in the inputs' precision too).
  const Op* state_operand(const Acc* src, Op* dst, Index K, Index V) const {
    if constexpr (!kLowp) {
      (void)dst;
      (void)K;
      (void)V;
      return src;
    } else {
      convert_operand_n(src, dst, K * V);
      return dst;
    }
  }

 private:
  static const Op* operand(Acc* src, Op* dst, Index L, Index BT) {
    if constexpr (!kLowp) {
      (void)dst;
      (void)L;
      (void)BT;
      return src;
    } else {
      for (Index r = 0; r < L; ++r) convert_operand_n(src + r * BT, dst + r * BT, L);
      return dst;
    }
  }
};

/// What the reverse sweep's step back over a (chunk, head) multiplies by, when the chunk's gradients (chunk_bwd_tile,
/// run just before it) already formed it: do_ as a product operand, and on the factored path qg = scale · q ⊙ e^{G}
/// as product operands [L×K] and eG = e^{G} [L×K] (its last row decays dS). Null / empty: the step forms its own.
template <class Acc, class Op>
struct StepOperands {
  const Op* qg = nullptr;
  const Acc* eG = nullptr;
  Rows<Op> do_op;
};

/// chunk_bwd_tile's first pass over the chunk's rows, fused, for K a multiple of 16 (kFusesFactoredOperands; false,
/// with nothing written, otherwise): per row r, 16 columns at a time and while they are in registers, the gate
/// cumsum G_r = G_{r−1} + floored g_r in double (running in ws.gn; the rows are not kept), its bound check, e^{G_r}
/// (exponentiated in Acc from G
/// rounded to Acc, ws.eg) and its reciprocal (ws.dec), qg_r = scale q_r ⊙ e^{G_r}, kg_r = k_r ⊙ e^{−G_r} and A's
/// diagonal scale q_r·k_r (ws.Ad); and q_r, k_r copied into qa, ka where those are not null (the contiguous tiles
/// rows_in would make). Each value but A's diagonal (summed in another order) is the separate loop's, operation for
/// operation: against the separate loops, float dq, dk and dg came out bit-identical and dv differed in its last bits
/// (through A's diagonal); bfloat16 outputs were identical. `bounded`: decay_is_bounded over the whole chunk; when
/// false, the factored operands are not to be used (their factors may overflow) but the copies are right for the
/// sub-chunk path (which forms G's rows in ws.Gd again).
template <class Acc, class Op, class In>
bool backward_row_operands(Rows<In> q, Rows<In> k, Rows<In> g, Acc floor, Acc scale, Index L, Index K, Acc* qa, Acc* ka,
                           const BwdScratch<Acc, Op>& ws, bool& bounded) {
#if GLA_GEMM_AVX512 && defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (kFusesFactoredOperands<Acc, Op>) {
    if (K % 16 != 0) return false;
    using gemm_impl::load16_as_float;
    const __m512 vfloor = _mm512_set1_ps(floor), vscale = _mm512_set1_ps(scale);
    const __m512d bound = _mm512_set1_pd(kFactoredDecayBound);
    __mmask8 within = 0xFF;
    double* const Gr = ws.gn;  // G_{r−1}, then G_r
    for (Index r = 0; r < L; ++r) {
      for (const Rows<In>& rows : {g, q, k}) prefetch_row_ahead(rows, r, L, K);
      __m512 diag = _mm512_setzero_ps();
      for (Index j = 0; j < K; j += 16) {
        const __m512 x = g.p ? floored_gate16(g.row(r) + j, vfloor) : _mm512_setzero_ps();
        __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
        __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
        if (r > 0) {
          lo = _mm512_add_pd(lo, _mm512_loadu_pd(Gr + j));
          hi = _mm512_add_pd(hi, _mm512_loadu_pd(Gr + j + 8));
        }
        _mm512_storeu_pd(Gr + j, lo);
        _mm512_storeu_pd(Gr + j + 8, hi);
        within &= _mm512_cmp_pd_mask(_mm512_abs_pd(lo), bound, _CMP_LE_OQ);  // NaN fails
        within &= _mm512_cmp_pd_mask(_mm512_abs_pd(hi), bound, _CMP_LE_OQ);
        const __m512 Gf = _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo)), _mm512_cvtpd_ps(hi), 1);
        const __m512 e = Eigen::internal::pexp<Eigen::internal::Packet16f>(Gf), d = reciprocal16(e);
        _mm512_storeu_ps(ws.eg + r * K + j, e);
        _mm512_storeu_ps(ws.dec + r * K + j, d);
        const __m512 qv = load16_as_float(q.row(r) + j), kv = load16_as_float(k.row(r) + j);
        if (qa) _mm512_storeu_ps(qa + r * K + j, qv);
        if (ka) _mm512_storeu_ps(ka + r * K + j, kv);
        store16_operand(ws.qg + r * K + j, _mm512_mul_ps(_mm512_mul_ps(qv, e), vscale));
        store16_operand(ws.kg + r * K + j, _mm512_mul_ps(kv, d));
        diag = _mm512_fmadd_ps(qv, kv, diag);
      }
      ws.Ad[r] = scale * _mm512_reduce_add_ps(diag);
    }
    bounded = within == 0xFF;
    return true;
  }
#endif
  (void)q, (void)k, (void)g, (void)floor, (void)scale, (void)L, (void)K, (void)qa, (void)ka, (void)ws, (void)bounded;
  return false;
}

/// Whether backward_row_scalings and backward_row_sums run fused for these scalars and K.
template <class Acc, class Op>
constexpr bool fuses_backward_rows(Index K) {
#if GLA_GEMM_AVX512 && defined(EIGEN_VECTORIZE_AVX512)
  return kFusesFactoredOperands<Acc, Op> && K % 16 == 0;
#else
  (void)K;
  return false;
#endif
}

/// The factored path's first row loop of chunk_bwd_tile after its products, fused for K a multiple of 16 (the cases
/// of backward_row_operands; false, with nothing done, otherwise). In the order of the rows, with el = e^{Gl} and
/// dgl = e^{Gl} ⊙ rowsum(S⊙dH) on entry (ws.qf, ws.dgl): dq_t ← dq_t ⊙ e^{G_t} scale, dk_t ← dk_t ⊙ e^{−G_t},
/// decl = e^{−G_t} ⊙ el, kg_t = k_t ⊙ decl (operand), tmp_t ← tmp_t ⊙ decl (dk's inter-chunk term), dg_t = dgl,
/// dgl += k_t ⊙ tmp_t. kr [L×K] rows in Acc. tmp_t is read from ws.tmp, or when tmpT is given from its columns
/// (tmpT [K×BT], row stride BT): 16 rows at a time, each 16×16 block transposed in registers; either way the
/// arithmetic on every element, and the order of dgl's sums, are the same.
template <class Acc, class Op>
bool backward_row_scalings(Rows<Acc> kr, Acc scale, Index L, Index K, const Acc* tmpT, Index BT,
                           const BwdScratch<Acc, Op>& ws) {
#if GLA_GEMM_AVX512 && defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (kFusesFactoredOperands<Acc, Op>) {
    if (!fuses_backward_rows<Acc, Op>(K)) return false;
    const __m512 vscale = _mm512_set1_ps(scale);
    for (Index t0 = 0; t0 < L; t0 += 16) {
      const Index rows = std::min<Index>(16, L - t0);
      const auto in_chunk = static_cast<__mmask16>((1u << rows) - 1u);
      for (Index j = 0; j < K; j += 16) {
        __m512 tr[16];  // tmp rows t0.. at columns j.. (from tmpT's columns)
        if (tmpT) {
          for (int i = 0; i < 16; ++i) tr[i] = _mm512_maskz_loadu_ps(in_chunk, tmpT + (j + i) * BT + t0);
          gemm_impl::transpose16_in_registers(tr);
        }
        for (Index i = 0; i < rows; ++i) {
          const Index t = t0 + i, o = t * K;
          const __m512 dec = _mm512_loadu_ps(ws.dec + o + j), kv = _mm512_loadu_ps(kr.row(t) + j);
          _mm512_storeu_ps(ws.dq + o + j, _mm512_mul_ps(_mm512_loadu_ps(ws.dq + o + j),
                                                        _mm512_mul_ps(_mm512_loadu_ps(ws.eg + o + j), vscale)));
          _mm512_storeu_ps(ws.dk + o + j, _mm512_mul_ps(_mm512_loadu_ps(ws.dk + o + j), dec));
          const __m512 decl = _mm512_mul_ps(dec, _mm512_loadu_ps(ws.qf + j));
          store16_operand(ws.kg + o + j, _mm512_mul_ps(kv, decl));
          const __m512 dki = _mm512_mul_ps(tmpT ? tr[i] : _mm512_loadu_ps(ws.tmp + o + j), decl);
          _mm512_storeu_ps(ws.tmp + o + j, dki);
          const __m512 dgl = _mm512_loadu_ps(ws.dgl + j);
          _mm512_storeu_ps(ws.dg + o + j, dgl);
          _mm512_storeu_ps(ws.dgl + j, _mm512_add_ps(dgl, _mm512_mul_ps(kv, dki)));
        }
      }
    }
    return true;
  }
#endif
  (void)kr, (void)scale, (void)L, (void)K, (void)tmpT, (void)BT, (void)ws;
  return false;
}

/// The factored path's last row loop of chunk_bwd_tile, where the separate loop runs (after dv's products), for the
/// cases of backward_row_scalings (false, with nothing done, otherwise). Last row first: dgl += q_t⊙dq_t − k_t⊙dk_t,
/// dg_t += dgl, dq_t += dA[t,t] k_t, dk_t += tmp_t + dA[t,t] q_t. qr, kr [L×K] rows in Acc.
template <class Acc, class Op>
bool backward_row_sums(Rows<Acc> qr, Rows<Acc> kr, Index L, Index K, const BwdScratch<Acc, Op>& ws) {
#if GLA_GEMM_AVX512 && defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (kFusesFactoredOperands<Acc, Op>) {
    if (!fuses_backward_rows<Acc, Op>(K)) return false;
    std::fill_n(ws.dgl, K, Acc(0));
    for (Index t = L - 1; t >= 0; --t) {
      const Index o = t * K;
      const __m512 dAd = _mm512_set1_ps(ws.dAd[t]);
      for (Index j = 0; j < K; j += 16) {
        const __m512 qv = _mm512_loadu_ps(qr.row(t) + j), kv = _mm512_loadu_ps(kr.row(t) + j);
        const __m512 dq = _mm512_loadu_ps(ws.dq + o + j), dk = _mm512_loadu_ps(ws.dk + o + j);
        const __m512 dgl =
            _mm512_add_ps(_mm512_loadu_ps(ws.dgl + j), _mm512_sub_ps(_mm512_mul_ps(qv, dq), _mm512_mul_ps(kv, dk)));
        _mm512_storeu_ps(ws.dgl + j, dgl);
        _mm512_storeu_ps(ws.dg + o + j, _mm512_add_ps(_mm512_loadu_ps(ws.dg + o + j), dgl));
        _mm512_storeu_ps(ws.dq + o + j, _mm512_add_ps(dq, _mm512_mul_ps(dAd, kv)));
        _mm512_storeu_ps(ws.dk + o + j,
                         _mm512_add_ps(dk, _mm512_add_ps(_mm512_loadu_ps(ws.tmp + o + j), _mm512_mul_ps(dAd, qv))));
      }
    }
    return true;
  }
#endif
  (void)qr, (void)kr, (void)L, (void)K, (void)ws;
  return false;
}

/// out[a] = Σ_v S[a,v] dH[a,v] (the row sums of S ⊙ dH) for S given transposed: St [V×K], dH [K×V] (contiguous).
/// With AVX-512 and K, V multiples of 16, dH's 16×16 blocks are transposed in registers and each out[a] is summed
/// over v in order; otherwise Eigen sums each row its own way.
template <class Acc>
void rowsums_of_product(const Acc* St, const Acc* dH, Index K, Index V, Acc* out) {
#if GLA_GEMM_AVX512 && defined(EIGEN_VECTORIZE_AVX512)
  if constexpr (std::is_same_v<Acc, float>) {
    if (K % 16 == 0 && V % 16 == 0) {
      for (Index a0 = 0; a0 < K; a0 += 16) {
        __m512 acc = _mm512_setzero_ps();
        for (Index v0 = 0; v0 < V; v0 += 16) {
          __m512 r[16];  // rows a0.. of dH's block, then its columns v0..: r[i] = dH[a0..a0+16, v0+i]
          for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(dH + (a0 + i) * V + v0);
          gemm_impl::transpose16_in_registers(r);
          for (int i = 0; i < 16; ++i) acc = _mm512_fmadd_ps(_mm512_loadu_ps(St + (v0 + i) * K + a0), r[i], acc);
        }
        _mm512_storeu_ps(out + a0, acc);
      }
      return;
    }
  }
#endif
  const Eigen::Map<const RowMat<Acc>> Stm(St, V, K), dHm(dH, K, V);
  Eigen::Map<RowVec<Acc>>(out, K) = Stm.transpose().cwiseProduct(dHm).rowwise().sum().transpose();
}

/// The gradients of one chunk of L tokens of GLA, into ws.dq, ws.dk, ws.dg [L×K] and ws.dv [L×V] (dg = ∂L/∂ the
/// raw per-step gate):
///   q, k, g (raw per-step log gate; absent = no decay) [L×K] and v, do_ [L×V]: input rows;
///   St [V×K] the state BEFORE the chunk, transposed (row stride K), dH [K×V] = ∂L/∂ the state AFTER the chunk
///   (row stride V).
/// With G the chunk-local inclusive cumsum of g, Gl = G[L−1], dA[t,s] = scale do_t·v_s and
/// A[t,s] = scale Σ q_t k_s e^{G_t−G_s} (s <= t, recomputed here):
///   dq_t = Σ_{s<=t} dA[t,s] k_s ⊙ e^{G_t−G_s} + scale e^{G_t} ⊙ (S do_t)
///   dk_s = Σ_{t>=s} dA[t,s] q_t ⊙ e^{G_t−G_s} + e^{Gl−G_s} ⊙ (dH v_s)
///   dv_s = Σ_{t>=s} A[t,s] do_t + (k_s ⊙ e^{Gl−G_s})ᵀ dH
///   dg_t = Σ_{s>=t} (q_s⊙dq_s − k_s⊙dk_s) + e^{Gl} ⊙ rowsum(S⊙dH) + Σ_s k_s ⊙ e^{Gl−G_s} ⊙ (dH v_s)
/// Off-diagonal 16×16 blocks go through GEMMs with a reference row gn: the FIRST row of the query sub-chunk
/// for dq, the LAST row of the key sub-chunk for dk and A, so that both factors e^{G_q−gn}, e^{gn−G_k} are <= 1.
/// Diagonal blocks use running products of e^{g} (each factor <= 1) over the s <= t half only.
/// G is summed in double here even for float inputs: under strong decay |G| reaches ~300 within a chunk, where a
/// float's spacing is 3e-5, and the one-step differences G_t − G_{t−1} that dominate dg would carry that
/// absolute error as a relative one. The exponents are formed in double and exponentiated in Acc. Products
/// take Op operands (bf16 for bf16 inputs) with Acc accumulation.
/// Returns what the reverse sweep's step back over this chunk can reuse (StepOperands): do_ as a product operand and,
/// when the factored path ran, ws.qg = scale · q ⊙ e^{G} and ws.eg = e^{G}.
template <class Acc, class Op, class In>
StepOperands<Acc, Op> chunk_bwd_tile(Rows<In> q_in, Rows<In> k_in, Rows<In> v_in, Rows<In> g, Rows<In> do_in,
                                     const Acc* St, const Acc* dH, Acc scale, Index L, Index K, Index V, Index BT,
                                     Acc floor, const BwdScratch<Acc, Op>& ws) {
  if (L == 0) return {};
  using MapA = Eigen::Map<RowMat<Acc>, Eigen::Unaligned, Eigen::OuterStride<>>;
  using MapD = Eigen::Map<RowMat<double>>;
  const Eigen::OuterStride<> sK(K), sBT(BT);
  // q and k in Acc for the elementwise work, copied to contiguous tiles where a head's rows are a page or more
  // apart: the dg loop reads them again last row first, which the hardware prefetchers do not follow across pages
  // (the copy made the backward 2–4% faster at the prefill shape). v and do_ as product operands.
  const bool copy_q = rows_in_copies<Acc>(q_in, K, /*copy_strided=*/true),
             copy_k = rows_in_copies<Acc>(k_in, K, /*copy_strided=*/true);
  bool factored = true;
  const bool fused = backward_row_operands(q_in, k_in, g, floor, scale, L, K, copy_q ? ws.qa : nullptr,
                                           copy_k ? ws.ka : nullptr, ws, factored);
  const auto acc_rows = [&](Rows<In> src, Acc* copy, bool copied) -> Rows<Acc> {
    if (!fused) return rows_in<Acc>(src, L, K, copy, /*copy_strided=*/true);
    if constexpr (std::is_same_v<In, Acc>) {
      if (!copied) return src;
    }
    return {copy, K};
  };
  const Rows<Acc> qr = acc_rows(q_in, ws.qa, copy_q), kr = acc_rows(k_in, ws.ka, copy_k);
  const auto q = [&](Index r) { return ConstRowArrMap<Acc>(qr.row(r), K); };
  const auto k = [&](Index r) { return ConstRowArrMap<Acc>(kr.row(r), K); };
  const auto row = [K](Acc* base, Index r) { return RowArrMap<Acc>(base + r * K, K); };
  constexpr bool kVT = BwdScratch<Acc, Op>::kValuesTransposed;
  const Rows<Op> doop = as_operand<Op>(do_in, L, V, ws.doop);
  Rows<Op> vop{};  // v as an operand, or (kVT) transposed in ws.vT
  if constexpr (kVT)
    gemm_impl::transpose_to_float(v_in.p, v_in.ld, L, V, ws.vT, BT);
  else
    vop = as_operand<Op>(v_in, L, V, ws.vop);

  // The gate cumsum G in double, row by row (per-step gates below the floor act as the floor, as in the forward;
  // NaN stays NaN; no gate: G = 0). While every row so far is within kFactoredDecayBound, the same loop forms the
  // factored path's operands from the row while it is in L1: e^{G}, e^{−G}, qg = scale · q ⊙ e^{G}, kg = k ⊙ e^{−G}
  // and A's diagonal; a chunk that leaves the bound takes the sub-chunk path, which forms its own.
  // backward_row_operands did all this in one pass where it runs, but kept only the operands: a chunk it found
  // unbounded forms G's rows here.
  MapD G(ws.Gd, L, K);
  RowArrMap<Acc> gate(ws.f, K);
  for (Index r = 0; r < L && !(fused && factored); ++r) {
    if (g.p) {
      floored_gate_row(g, r, K, floor, ws.f);
      if (r == 0)
        G.row(0) = gate.matrix().template cast<double>();
      else
        G.row(r) = G.row(r - 1) + gate.matrix().template cast<double>();
    } else {
      G.row(r).setZero();
    }
    factored = factored && decay_is_bounded(G.row(r).data(), 1, K);
    if (!factored) continue;
    RowArrMap<Acc> e = row(ws.eg, r);
    e = G.row(r).array().template cast<Acc>();
    e = e.exp();  // materialised first: Eigen vectorises exp of a plain array, not of a cast expression
    reciprocal_row(e.data(), ws.dec + r * K, K);
    store_operand_row(ws.qg + r * K, q(r) * e * scale);
    store_operand_row(ws.kg + r * K, k(r) * row(ws.dec, r));
    ws.Ad[r] = scale * (q(r) * k(r)).sum();
  }
  // out = e^{x − y} for two double gate rows: the difference in double, rounded to Acc, then exponentiated in
  // place (materialising first keeps Eigen's vectorised exp; exp of a cast expression falls back to scalar expf).
  const auto decay_into = [](auto&& out, const auto& x, const auto& y) {
    out = (x - y).template cast<Acc>();
    out.array() = out.array().exp();
  };

  // dA = scale · do_ vᵀ (only the s <= t half is ever read); its diagonal is kept apart for the self terms. On the
  // factored path scale is carried by the decayed queries instead (qg = scale · q ⊙ e^{G}) and by dq's final
  // scaling, which saves a pass over dA and one over A.
  // The factored path's triangular products skip the block above the diagonal: rows [0, h) only meet columns
  // [0, h) (lower_product); the sub-chunk path reads dA in its own blocks and takes the whole product.
  const Index h = factored ? triangular_split<Acc, Op>(L) : 0;
  if constexpr (kVT)
    lower_product_of_transposed<Op>(h, L, V, doop.p, doop.ld, ws.vT, BT, ws.dA, BT);
  else
    lower_product<Op>(h, L, V, doop.p, doop.ld, vop.p, vop.ld, ws.dA, BT);
  MapA dA(ws.dA, L, L, sBT);
  if (!factored) dA *= scale;
  for (Index t = 0; t < L; ++t) ws.dAd[t] = factored ? scale * dA(t, t) : dA(t, t);
  MapA A(ws.A, L, L, sBT);
  MapA dq(ws.dq, L, K, sK), dk(ws.dk, L, K, sK);
  Eigen::Map<RowVec<double>> gn(ws.gn, K);
  Eigen::Map<RowVec<Acc>> f(ws.f, K), qf(ws.qf, K);

  if (factored) {
    // |G| <= kFactoredDecayBound: the intra-chunk terms as whole-chunk products of scale · q ⊙ e^{G} and k ⊙ e^{−G}
    // (docs/chunk_backward.md), with dA (unscaled here) zero on and above its diagonal (the self terms come after
    // dg).
    lower_product<Op>(h, L, K, ws.qg, K, ws.kg, K, ws.A, BT);
    for (Index r = 0; r < L; ++r) {
      A(r, r) = ws.Ad[r];
      A.row(r).tail(L - 1 - r).setZero();
      dA.row(r).tail(L - r).setZero();
    }
    const Op* dAop = ws.dA_operand(L, BT);
    // dq_t = scale e^{G_t} ⊙ (Σ_s dA[t,s] k_s e^{−G_s} + S do_t): the inter-chunk term accumulated into the same
    // product's output; the scaling by scale e^{G_t} comes in the pass below (with dk's by e^{−G_s}).
    lower_times<Op>(h, L, K, dAop, BT, ws.kg, K, false, ws.dq, K);
    gemm<Op>(Trans::N, Trans::N, L, K, V, doop.p, doop.ld, ws.state_operand(St, ws.Sop, V, K), K, true, ws.dq, K);
    lower_transposed_times<Op>(h, L, K, dAop, BT, ws.qg, K, ws.dk, K);  // Σ_t dA[t,s] scale q_t e^{G_t}
  } else {
    dq.setZero();
    dk.setZero();
    const Op* dAop = ws.dA_operand(L, BT);
    // e^{g_r}: the factors of the diagonal blocks' running products (from the gate, not a cumsum difference).
    step_decays(g, L, K, floor, ws.eg);
    MapA expg(ws.eg, L, K, sK);
    for (Index i0 = 0; i0 < L; i0 += kSubChunk) {
      const Index Li = std::min(kSubChunk, L - i0), j1 = i0 + Li, Lr = L - j1;
      if (i0 > 0) {
        // dq of query sub-chunk [i0, j1) from all earlier keys; reference gn = G[i0]:
        // dq_t += (Σ_s dA[t,s] k_s e^{gn−G_s}) ⊙ e^{G_t−gn}.
        gn = G.row(i0);
        MapA dec(ws.dec, i0, K, sK);
        for (Index s = 0; s < i0; ++s) {
          decay_into(dec.row(s), gn, G.row(s));
          store_operand_row(ws.kg + s * K, k(s) * dec.row(s).array());
        }
        gemm<Op>(Trans::N, Trans::N, Li, K, i0, dAop + i0 * BT, BT, ws.kg, K, false, ws.tmp, K);
        MapA tmp(ws.tmp, Li, K, sK);
        for (Index r = 0; r < Li; ++r) {
          decay_into(f, G.row(i0 + r), gn);
          dq.row(i0 + r).array() += tmp.row(r).array() * f.array();
        }
        A.block(0, i0, i0, Li).setZero();  // above the diagonal block: s > t
      }
      if (Lr > 0) {
        // Key sub-chunk [i0, j1) against all later queries; reference gn = G[j1−1], its last valid row:
        // A[t,s] = scale (q_t e^{G_t−gn})·(k_s e^{gn−G_s}),  dk_s += (Σ_t dA[t,s] q_t e^{G_t−gn}) ⊙ e^{gn−G_s}.
        gn = G.row(j1 - 1);
        for (Index t = 0; t < Lr; ++t) {
          decay_into(f, G.row(j1 + t), gn);
          store_operand_row(ws.qg + t * K, q(j1 + t) * f.array());
        }
        MapA dec(ws.dec, Li, K, sK);  // e^{gn−G_s}, shared by A and dk
        for (Index c = 0; c < Li; ++c) {
          decay_into(dec.row(c), gn, G.row(i0 + c));
          store_operand_row(ws.kg + c * K, k(i0 + c) * dec.row(c).array());
        }
        gemm<Op>(Trans::N, Trans::T, Lr, Li, K, ws.qg, K, ws.kg, K, false, ws.A + j1 * BT + i0, BT);
        A.block(j1, i0, Lr, Li) *= scale;
        gemm<Op>(Trans::T, Trans::N, Li, K, Lr, dAop + j1 * BT + i0, BT, ws.qg, K, false, ws.tmp, K);
        MapA tmp(ws.tmp, Li, K, sK);
        dk.middleRows(i0, Li).array() += tmp.array() * dec.array();
      }
      // Diagonal block, column c, rows r >= c: f = e^{G_r−G_c} = Π_{s=c+1..r} e^{g_s}; the r < c half is
      // assigned 0 (never computed, never multiplied by a mask). The r == c terms dA[t,t] k_t (of dq_t) and
      // dA[t,t] q_t (of dk_t) are added after dg (they cancel in it; see below).
      for (Index c = i0; c < j1; ++c) {
        A(c, c) = scale * (q(c) * k(c)).sum();
        f.setOnes();
        for (Index r = c + 1; r < j1; ++r) {
          f.array() *= expg.row(r).array();
          qf = (q(r) * f.array()).matrix();
          A(r, c) = scale * (qf.array() * k(c)).sum();
          const Acc d = dA(r, c);
          dk.row(c) += d * qf;
          dq.row(r).array() += d * k(c) * f.array();
        }
        for (Index r = i0; r < c; ++r) A(r, c) = Acc(0);
      }
    }
    // dq_t += scale e^{G_t} ⊙ (S do_t), the inter-chunk term (the factored path accumulated it into its product).
    gemm<Op>(Trans::N, Trans::N, L, K, V, doop.p, doop.ld, ws.state_operand(St, ws.Sop, V, K), K, false, ws.tmp, K);
    for (Index t = 0; t < L; ++t) {
      RowArrMap<Acc> e(ws.f, K);
      e = G.row(t).template cast<Acc>().array().exp();
      dq.row(t).array() += scale * row(ws.tmp, t) * e;
    }
  }

  // Inter-chunk terms of dk and dv: decl = e^{Gl−G_s} (<= 1) decays every key row to the chunk's end;
  // dk_inter_s = decl_s ⊙ (dH v_s), dv += (k ⊙ decl) dH.
  // (dH v_s)ᵀ, decayed below: as columns of dH vᵀ (kVT; the fused row loop reads them so), else as rows.
  const Op* dHop = ws.state_operand(dH, ws.dHop, K, V);
  const bool fuses_rows = factored && fuses_backward_rows<Acc, Op>(K);
  if constexpr (kVT) {
    gemm<Op>(Trans::N, Trans::N, K, L, V, dHop, V, ws.vT, BT, false, ws.tmpT, BT);
    if (!fuses_rows)
      MapA(ws.tmp, L, K, sK) =
          Eigen::Map<const RowMat<Acc>, Eigen::Unaligned, Eigen::OuterStride<>>(ws.tmpT, K, L, sBT).transpose();
  } else {
    gemm<Op>(Trans::N, Trans::T, L, K, V, vop.p, vop.ld, dHop, V, false, ws.tmp, K);
  }

  // dg_t = Σ_{s>=t} ∂L/∂G_s with ∂L/∂G_s = q_s⊙dq_s − k_s⊙dk_s (+ at s = l: e^{Gl}⊙rowsum(S⊙dH) + Σ_s k_s⊙dk_inter_s).
  // Two groups of terms cancel exactly in that sum, and they are left out rather than added and subtracted,
  // because their rounding would swamp a small dg (strong decay makes dg ~e^{g} times smaller than they are):
  //  * k_s⊙dk_inter_s for s >= t (in the reverse cumsum and in the Gl term): what is left is Σ_{s<t};
  //  * the self terms s == t of the diagonal blocks, q_t⊙dA[t,t]k_t and k_t⊙dA[t,t]q_t (not yet in dq, dk).
  //   dg_t = e^{Gl}⊙rowsum(S⊙dH) + Σ_{s<t} k_s⊙dk_inter_s + Σ_{s>=t} (q_s⊙dq_s − k_s⊙dk_intra_s).
  // Both sums run as row loops that also apply every pending per-row factor, each row's operands in L1.
  RowArrMap<Acc> dgl(ws.dgl, K);
  {
    RowArrMap<Acc> el(ws.qf, K);  // e^{Gl}
    if (factored) {
      el = row(ws.eg, L - 1);
    } else {
      el = G.row(L - 1).array().template cast<Acc>();
      el = el.exp();
    }
    rowsums_of_product(St, dH, K, V, ws.dgl);
    dgl *= el;
  }
  if (!factored) gn = G.row(L - 1);
  const bool fused_rows = fuses_rows && backward_row_scalings(kr, scale, L, K, kVT ? ws.tmpT : nullptr, BT, ws);
  for (Index t = 0; t < L && !fused_rows; ++t) {  // forward: the pending scalings, decl, kg = k ⊙ decl, and Σ_{s<t}
    RowArrMap<Acc> decl = row(ws.dec, t);
    if (factored) {
      row(ws.dq, t) *= row(ws.eg, t) * scale;
      row(ws.dk, t) *= decl;                  // decl holds e^{−G_t} here
      decl *= ConstRowArrMap<Acc>(ws.qf, K);  // e^{−G_t} e^{Gl}
    } else {
      decay_into(decl.matrix(), gn, G.row(t));
    }
    store_operand_row(ws.kg + t * K, k(t) * decl);
    RowArrMap<Acc> dki = row(ws.tmp, t);
    dki *= decl;
    row(ws.dg, t) = dgl;
    dgl += k(t) * dki;
  }
  const Op* Aop = ws.A_operand(L, BT);
  lower_transposed_times<Op>(h, L, V, Aop, BT, doop.p, doop.ld, ws.dv, V);   // dv = Aᵀ do_
  gemm<Op>(Trans::N, Trans::N, L, V, K, ws.kg, K, dHop, V, true, ws.dv, V);  // dv += (k ⊙ decl) dH
  if (fused_rows) {
    backward_row_sums(qr, kr, L, K, ws);
    return {ws.qg, ws.eg, doop};
  }
  dgl.setZero();
  for (Index t = L - 1; t >= 0; --t) {  // reverse: Σ_{s>=t}, then dk_inter and the self terms
    RowArrMap<Acc> dqt = row(ws.dq, t), dkt = row(ws.dk, t);
    dgl += q(t) * dqt - k(t) * dkt;
    row(ws.dg, t) += dgl;
    dqt += ws.dAd[t] * k(t);
    dkt += row(ws.tmp, t) + ws.dAd[t] * q(t);
  }
  if (!factored) return {nullptr, nullptr, doop};
  return {ws.qg, ws.eg, doop};
}

}  // namespace gla::detail
