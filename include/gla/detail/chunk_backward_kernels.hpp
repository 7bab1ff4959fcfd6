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

/// The gradients of one chunk of L tokens of GLA, into the top L rows of ws.dq, ws.dk [L×K], ws.dv [L×V] and
/// ws.dg [L×K] (dg = ∂L/∂ the raw per-step gate):
///   q, k, g (raw per-step log gate) [L×K]; v, do_ [L×V];
///   S [K×V] the state BEFORE the chunk, dH [K×V] = ∂L/∂ the state AFTER the chunk.
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
/// absolute error as a relative one. The exponents are formed in double and exponentiated in Acc.
template <class Acc>
void chunk_gla_bwd_block(const ConstStridedMap<Acc>& q, const ConstStridedMap<Acc>& k, const ConstStridedMap<Acc>& v,
                         const ConstStridedMap<Acc>& g, const ConstStridedMap<Acc>& do_,
                         const Eigen::Map<const RowMat<Acc>>& S, const Eigen::Map<const RowMat<Acc>>& dH, Acc scale,
                         Index L, Acc floor, ChunkBwdWorkspace<Acc>& ws) {
  if (L == 0) return;
  // Per-step gates below the floor act as the floor, as in the forward (NaN stays NaN).
  auto expg = ws.expg.topRows(L);
  expg.array() = (g.array() < floor).select(floor, g.array());
  auto G = ws.Gd.topRows(L);
  G.row(0) = expg.row(0).template cast<double>();
  for (Index r = 1; r < L; ++r) G.row(r) = G.row(r - 1) + expg.row(r).template cast<double>();
  // out = e^{x − y} for two double gate rows: the difference in double, rounded to Acc, then exponentiated in
  // place (materialising first keeps Eigen's vectorised exp; exp of a cast expression falls back to scalar expf).
  const auto decay_into = [](auto&& out, const auto& x, const auto& y) {
    out = (x - y).template cast<Acc>();
    out.array() = out.array().exp();
  };

  auto dA = ws.dA.topLeftCorner(L, L);
  dA.noalias() = do_ * v.transpose();
  dA *= scale;  // only the s <= t half is ever read
  auto A = ws.A.topLeftCorner(L, L);
  auto dq = ws.dq.topRows(L);
  auto dk = ws.dk.topRows(L);
  dq.setZero();
  dk.setZero();
  // e^{g_r}: the factors of the diagonal blocks' running products (from the gate, not a cumsum difference).
  expg.array() = expg.array().exp();

  for (Index i0 = 0; i0 < L; i0 += kSubChunk) {
    const Index Li = std::min(kSubChunk, L - i0), j1 = i0 + Li, Lr = L - j1;
    if (i0 > 0) {
      // dq of query sub-chunk [i0, j1) from all earlier keys; reference gn = G[i0]:
      // dq_t += (Σ_s dA[t,s] k_s e^{gn−G_s}) ⊙ e^{G_t−gn}.
      ws.gn = G.row(i0);
      auto kg = ws.kg.topRows(i0);
      for (Index s = 0; s < i0; ++s) {
        decay_into(kg.row(s), ws.gn, G.row(s));
        kg.row(s).array() *= k.row(s).array();
      }
      auto tmp = ws.tmp.topRows(Li);
      tmp.noalias() = dA.block(i0, 0, Li, i0) * kg;
      for (Index r = 0; r < Li; ++r) {
        decay_into(ws.f, G.row(i0 + r), ws.gn);
        dq.row(i0 + r).array() += tmp.row(r).array() * ws.f.array();
      }
      A.block(0, i0, i0, Li).setZero();  // above the diagonal block: s > t
    }
    if (Lr > 0) {
      // Key sub-chunk [i0, j1) against all later queries; reference gn = G[j1−1], its last valid row:
      // A[t,s] = scale (q_t e^{G_t−gn})·(k_s e^{gn−G_s}),  dk_s += (Σ_t dA[t,s] q_t e^{G_t−gn}) ⊙ e^{gn−G_s}.
      ws.gn = G.row(j1 - 1);
      auto qg = ws.qg.topRows(Lr);
      for (Index t = 0; t < Lr; ++t) {
        decay_into(qg.row(t), G.row(j1 + t), ws.gn);
        qg.row(t).array() *= q.row(j1 + t).array();
      }
      auto kg = ws.kg.topRows(Li);
      auto dec = ws.decl.topRows(Li);  // e^{gn−G_s}, shared by A and dk
      for (Index c = 0; c < Li; ++c) {
        decay_into(dec.row(c), ws.gn, G.row(i0 + c));
        kg.row(c) = k.row(i0 + c).cwiseProduct(dec.row(c));
      }
      A.block(j1, i0, Lr, Li).noalias() = qg * kg.transpose();
      A.block(j1, i0, Lr, Li) *= scale;
      auto tmp = ws.tmp.topRows(Li);
      tmp.noalias() = dA.block(j1, i0, Lr, Li).transpose() * qg;
      dk.middleRows(i0, Li).array() += tmp.array() * dec.array();
    }
    // Diagonal block, column c, rows r >= c: f = e^{G_r−G_c} = Π_{s=c+1..r} e^{g_s}; the r < c half is
    // assigned 0 (never computed, never multiplied by a mask). The r == c terms dA[t,t] k_t (of dq_t) and
    // dA[t,t] q_t (of dk_t) are added after dg (they cancel in it; see below).
    for (Index c = i0; c < j1; ++c) {
      A(c, c) = scale * q.row(c).dot(k.row(c));
      ws.f.setOnes();
      for (Index r = c + 1; r < j1; ++r) {
        ws.f.array() *= expg.row(r).array();
        ws.qf = q.row(r).array() * ws.f.array();
        A(r, c) = scale * (ws.qf.array() * k.row(c).array()).sum();
        const Acc d = dA(r, c);
        dk.row(c) += d * ws.qf;
        dq.row(r).array() += d * k.row(c).array() * ws.f.array();
      }
      for (Index r = i0; r < c; ++r) A(r, c) = Acc(0);
    }
  }

  // Inter-chunk terms. decl = e^{Gl−G_s} (<= 1) decays every key row to the chunk's end.
  ws.gld = G.row(L - 1);
  ws.gl = ws.gld.template cast<Acc>();
  auto decl = ws.decl.topRows(L);
  for (Index s = 0; s < L; ++s) decay_into(decl.row(s), ws.gld, G.row(s));
  auto dv = ws.dv.topRows(L);
  dv.noalias() = A.transpose() * do_;
  auto kdec = ws.qg.topRows(L);
  kdec = k.cwiseProduct(decl);
  dv.noalias() += kdec * dH;

  auto tmp = ws.tmp.topRows(L);
  tmp.noalias() = do_ * S.transpose();  // (S do_t)ᵀ
  auto expG = ws.kg.topRows(L);         // e^{G_t}
  expG = G.template cast<Acc>();
  expG.array() = expG.array().exp();
  dq.array() += scale * tmp.array() * expG.array();
  tmp.noalias() = v * dH.transpose();  // (dH v_s)ᵀ
  tmp.array() *= decl.array();         // dk_inter, added to dk after dg

  // dg_t = Σ_{s>=t} ∂L/∂G_s with ∂L/∂G_s = q_s⊙dq_s − k_s⊙dk_s (+ at s = l: e^{Gl}⊙rowsum(S⊙dH) + Σ_s k_s⊙dk_inter_s).
  // Two groups of terms cancel exactly in that sum, and they are left out rather than added and subtracted,
  // because their rounding would swamp a small dg (strong decay makes dg ~e^{g} times smaller than they are):
  //  * k_s⊙dk_inter_s for s >= t (in the reverse cumsum and in the Gl term): what is left is Σ_{s<t};
  //  * the self terms s == t of the diagonal blocks, q_t⊙dA[t,t]k_t and k_t⊙dA[t,t]q_t (not yet in dq, dk).
  //   dg_t = e^{Gl}⊙rowsum(S⊙dH) + Σ_{s<t} k_s⊙dk_inter_s + Σ_{s>=t} (q_s⊙dq_s − k_s⊙dk_intra_s).
  auto dg = ws.dg.topRows(L);
  ws.dgl = ws.gl.array().exp() * S.cwiseProduct(dH).rowwise().sum().transpose().array();
  for (Index t = 0; t < L; ++t) {
    dg.row(t) = ws.dgl;
    ws.dgl.array() += k.row(t).array() * tmp.row(t).array();
  }
  ws.dgl.setZero();
  for (Index t = L - 1; t >= 0; --t) {
    ws.dgl.array() += q.row(t).array() * dq.row(t).array() - k.row(t).array() * dk.row(t).array();
    dg.row(t) += ws.dgl;
  }
  dk += tmp;
  for (Index t = 0; t < L; ++t) {
    dq.row(t) += dA(t, t) * k.row(t);
    dk.row(t) += dA(t, t) * q.row(t);
  }
}

}  // namespace gla::detail
