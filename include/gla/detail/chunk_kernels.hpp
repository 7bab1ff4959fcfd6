#pragma once
/// gla/detail/chunk_kernels.hpp: the per-chunk building blocks shared by chunk_fwd_h, chunk_gla and
/// fused_chunk_gla: the state update across one chunk and the output of one chunk, both on [L×D] blocks
/// through Eigen matrix products, with fla's stability scheme (docs/chunk_algorithm.md).

#include <gla/core.hpp>
#include <gla/detail/parallel.hpp>

#include <memory>
#include <numeric>

namespace gla::detail {

/// Sub-chunk size of the intra-chunk attention: reference points every kSubChunk rows keep every
/// exponent <= 0 (docs/chunk_algorithm.md).
inline constexpr Index kSubChunk = 16;

/// Gate cumsums of one chunk, each optional (nullptr), natural log, chunk-local and inclusive:
/// g [L] (stride ldg), gk [L×K] (stride ldgk), gv [L×V] (stride ldgv); gamma = per-step log decay.
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

/// Scratch matrices of one thread, sized once per call so that no hot loop allocates.
template <class Acc>
struct ChunkWorkspace {
  RowMat<Acc> G, qg, kg, qs, kdec, vdec, A, O, expg;
  RowVec<Acc> e, gl, gvl, egl, egvl;
  ChunkWorkspace() = default;
  ChunkWorkspace(Index BT, Index K, Index V) { reserve(BT, K, V); }
  void reserve(Index BT, Index K, Index V) {
    G.resize(BT, K);
    qg.resize(BT, K);
    kg.resize(BT, K);
    qs.resize(kSubChunk, K);
    kdec.resize(BT, K);
    vdec.resize(BT, V);
    A.resize(BT, BT);
    O.resize(BT, V);
    expg.resize(BT, K);
    e.resize(K);
    gl.resize(K);
    gvl.resize(V);
    egl.resize(K);
    egvl.resize(V);
  }
};

/// Inclusive cumsum over the L rows of a strided gate block into G (top L rows); gates below `floor` count as
/// `floor` (NaN stays NaN).
template <class Acc>
void local_cumsum_rows(const Acc* g, Index ldg, Index L, Index K, Acc floor, RowMat<Acc>& G) {
  if (L == 0) return;
  const auto floored = [&](Index r) {
    const auto row = Eigen::Map<const RowVec<Acc>>(g + r * ldg, K).array();
    return (row < floor).select(floor, row);
  };
  G.row(0) = floored(0).matrix();
  for (Index r = 1; r < L; ++r) G.row(r) = G.row(r - 1) + floored(r).matrix();
}

/// Advances the state across one chunk of L tokens (S is K×V, the state before the chunk):
///   S ← diag(e^{gk_l}) S diag(e^{gv_l}) e^{g_l + γL} + Σ_s (k_s ⊙ e^{gk_l−gk_s} e^{g_l−g_s+γ(L−1−s)}) (v_s ⊙
///   e^{gv_l−gv_s})ᵀ
/// where l is the chunk's last row; every exponent is <= 0 for non-positive gates.
template <class Acc>
void chunk_state_update(RowMat<Acc>& S, const ConstStridedMap<Acc>& k, const ConstStridedMap<Acc>& v,
                        const ChunkGates<Acc>& gt, Index L, ChunkWorkspace<Acc>& ws) {
  if (L == 0) return;
  const Index K = S.rows(), V = S.cols();
  Acc scalar_last = 0;  // g_l + γL: the scalar part of the state's decay
  if (gt.g) scalar_last += gt.g[(L - 1) * gt.ldg];
  if (gt.gamma) scalar_last += *gt.gamma * static_cast<Acc>(L);

  auto kdec = ws.kdec.topRows(L);
  if (gt.gk) ws.gl = Eigen::Map<const RowVec<Acc>>(gt.gk + (L - 1) * gt.ldgk, K);
  for (Index s = 0; s < L; ++s) {
    Acc sc = 0;  // scalar log decay from token s to the chunk end
    if (gt.g) sc += gt.g[(L - 1) * gt.ldg] - gt.g[s * gt.ldg];
    if (gt.gamma) sc += *gt.gamma * static_cast<Acc>(L - 1 - s);
    if (gt.gk) {
      kdec.row(s) =
          k.row(s).array() * ((ws.gl - Eigen::Map<const RowVec<Acc>>(gt.gk + s * gt.ldgk, K)).array() + sc).exp();
    } else if (gt.g || gt.gamma) {
      kdec.row(s) = k.row(s) * std::exp(sc);
    } else {
      kdec.row(s) = k.row(s);
    }
  }
  // exp into a vector first: Eigen 3.4 re-evaluates (with scalar code) an exp() inside a broadcast.
  if (gt.gk) {
    ws.egl = ws.gl.array().exp();
    S.array().colwise() *= ws.egl.transpose().array();
  }
  if (gt.g || gt.gamma) S *= std::exp(scalar_last);
  if (gt.gv) {
    ws.gvl = Eigen::Map<const RowVec<Acc>>(gt.gv + (L - 1) * gt.ldgv, V);
    ws.egvl = ws.gvl.array().exp();
    S.array().rowwise() *= ws.egvl.array();
    auto vdec = ws.vdec.topRows(L);
    for (Index s = 0; s < L; ++s)
      vdec.row(s) = v.row(s).array() * (ws.gvl - Eigen::Map<const RowVec<Acc>>(gt.gv + s * gt.ldgv, V)).array().exp();
    S.noalias() += kdec.transpose() * vdec;
  } else {
    S.noalias() += kdec.transpose() * v;
  }
}

/// The output of one chunk of L tokens of GLA, into ws.O (top L rows):
///   o_t = scale (q_t ⊙ e^{G_t}) S + Σ_{s ≤ t in chunk} A[t,s] v_s,  A[t,s] = scale Σ_k q_t k_s e^{G_t − G_s}
/// with S the state before the chunk and G [L×K] the chunk-local gate cumsum.
/// Off-diagonal 16×16 blocks use a reference point at the query sub-chunk's first row (both factors ≤ 1);
/// diagonal blocks use e^{G_t − G_s} as a running product of e^{g} (every factor ≤ 1); the upper triangle is
/// written as 0 (a select, never a multiply by a mask, so no inf·0).
template <class Acc, class StateMat>
void chunk_output(const ConstStridedMap<Acc>& q, const ConstStridedMap<Acc>& k, const ConstStridedMap<Acc>& v,
                  const ConstStridedMap<Acc>& G, const StateMat& S, Acc scale, Index L, ChunkWorkspace<Acc>& ws) {
  if (L == 0) return;
  auto qg = ws.qg.topRows(L);
  for (Index r = 0; r < L; ++r) qg.row(r) = q.row(r).array() * G.row(r).array().exp() * scale;
  auto O = ws.O.topRows(L);
  O.noalias() = qg * S;

  auto A = ws.A.topLeftCorner(L, L);
  // e^{g_r} = e^{G_r − G_{r−1}} for the diagonal blocks' running products.
  auto expg = ws.expg.topRows(L);
  for (Index i0 = 0; i0 < L; i0 += kSubChunk) {
    const Index Li = std::min(kSubChunk, L - i0);
    expg.row(i0).setOnes();
    for (Index r = i0 + 1; r < i0 + Li; ++r) expg.row(r) = (G.row(r) - G.row(r - 1)).array().exp();
  }
  for (Index i0 = 0; i0 < L; i0 += kSubChunk) {
    const Index Li = std::min(kSubChunk, L - i0);
    if (i0 > 0) {
      // Off-diagonal blocks of query sub-chunk i against all earlier keys, reference gn = G[i0].
      auto gn = G.row(i0);
      auto qs = ws.qs.topRows(Li);
      for (Index r = 0; r < Li; ++r) qs.row(r) = q.row(i0 + r).array() * (G.row(i0 + r) - gn).array().exp() * scale;
      auto kg = ws.kg.topRows(i0);
      for (Index s = 0; s < i0; ++s) kg.row(s) = k.row(s).array() * (gn - G.row(s)).array().exp();
      A.block(i0, 0, Li, i0).noalias() = qs * kg.transpose();
    }
    // Diagonal block: column c, rows r >= c, decay e^{G_r − G_c} = Π_{s=c+1..r} e^{g_s}.
    for (Index c = i0; c < i0 + Li; ++c) {
      ws.e = k.row(c);
      A(c, c) = scale * (q.row(c).array() * ws.e.array()).sum();
      for (Index r = c + 1; r < i0 + Li; ++r) {
        ws.e.array() *= expg.row(r).array();
        A(r, c) = scale * (q.row(r).array() * ws.e.array()).sum();
      }
      for (Index r = i0; r < c; ++r) A(r, c) = Acc(0);
    }
    const Index right = L - i0 - Li;
    if (right > 0) A.block(i0, i0 + Li, Li, right).setZero();
  }
  O.noalias() += A * v;
}

/// An uninitialised buffer of n accumulators (std::vector would zero-fill memory that is overwritten anyway).
template <class Acc>
std::unique_ptr<Acc[]> uninitialized_buffer(Index n) {
  return std::unique_ptr<Acc[]>(new Acc[static_cast<std::size_t>(std::max<Index>(n, 1))]);
}

}  // namespace gla::detail
