#pragma once
/// gla/detail/fused_chunk_sweep.hpp: the single chunked sweep that fused_chunk_gla runs, and chunk_gla for most
/// shapes: per group of consecutive heads of one sequence, each chunk's output from the carried state, then the
/// state advanced; no per-chunk states are stored.

#include <gla/detail/chunk_kernels.hpp>

namespace gla {
namespace detail {

/// The token-by-token recurrence of one (sequence, head) and value tile on rows [0, L) — the short-sequence path
/// of fused_chunk_gla (heuristic_fallback). S [K×Vt] is the state tile in and out; o rows go to ws.O [L×Vt].
template <class Acc, class Op, class In>
void recurrent_rows(Rows<In> q, Rows<In> k, Rows<In> v, Rows<In> g, Acc scale, Index L, Index K, Index Vt,
                    const ChunkScratch<Acc, Op>& ws) {
  RowArrMap<Acc> e(ws.e, K), vr(ws.ev, Vt);
  for (Index t = 0; t < L; ++t) {
    if (g.p) {
      convert_n(g.row(t), ws.e, K);
      e = e.exp();
    } else {
      e.setOnes();
    }
    convert_n(v.row(t), ws.ev, Vt);
    for (Index a = 0; a < K; ++a) {
      RowArrMap<Acc> row(ws.S + a * Vt, Vt);
      row = row * e(a) + static_cast<Acc>(k.row(t)[a]) * vr;
    }
    RowArrMap<Acc> out(ws.O + t * Vt, Vt);
    out.setZero();
    for (Index a = 0; a < K; ++a) out += (scale * static_cast<Acc>(q.row(t)[a])) * RowArrMap<Acc>(ws.S + a * Vt, Vt);
  }
}

/// The work items of fused_chunk_gla: groups of (sequence, head) pairs that sweep together (head_groups), each pair
/// split into at most 2 value tiles when few pairs carry most of the work (each tile recomputes the chunk's
/// intra-chunk attention, so tiles cost extra work). A group's states stay within 1 MiB, half the L2 of the
/// machines docs/PERFORMANCE.md reports.
template <class Acc>
std::vector<HeadGroup> fused_chunk_groups(const OpShape& s) {
  const Index state_bytes = std::max<Index>(1, s.K * s.V * static_cast<Index>(sizeof(Acc)));
  return head_groups(s, /*target=*/2, /*max_tiles=*/2, std::max<Index>(1, (Index(1) << 20) / state_bytes));
}

/// The per-worker scratch of the single sweep over `groups` (fused_chunk_groups).
template <class Acc, class Op>
std::vector<ChunkScratch<Acc, Op>> plan_fused_chunk(Arena& a, const OpShape& s, Index BT,
                                                    const std::vector<HeadGroup>& groups) {
  return plan_workers<Acc, Op>(a, static_cast<Index>(groups.size()), BT, s.K, max_group_width(groups),
                               max_group_heads(groups));
}

/// Bytes of scratch of the single sweep for inputs of scalar Scalar (fused_chunk_gla, and chunk_gla when it runs
/// the sweep).
template <class Scalar>
std::size_t fused_chunk_workspace_bytes(const OpShape& s, Index BT) {
  const std::vector<HeadGroup> groups = fused_chunk_groups<acc_t<Scalar>>(s);
  return with_operand_scalar<Scalar>([&](auto operand) {
    using Op = typename decltype(operand)::type;
    return planned_bytes([&](Arena& a) { return plan_fused_chunk<acc_t<Scalar>, Op>(a, s, BT, groups); });
  });
}

/// fused_chunk_gla after validation; g may be null (no decay, plain linear attention). token_fallback: a sequence
/// no longer than one chunk runs token by token (opts.heuristic_fallback for fused_chunk_gla; chunk_gla, which
/// runs this sweep for most shapes, never does). h: when not null, the state before every chunk is also written
/// there, as chunk_fwd_h lays it out ([ΣNT,H,K,V], or [ΣNT,H,V,K] with opts.state_v_first) — what chunk_gla keeps
/// for its backward.
template <class T>
void fused_chunk_run(const OpShape& s, const ConstView<T, 4>& qv, const ConstView<T, 4>& k, const ConstView<T, 4>& v,
                     const T* g, const GLAOptions& opts, const View<T, 4>& o, float* ht, bool token_fallback,
                     acc_t<T>* h = nullptr) {
  using Acc = acc_t<T>;
  with_operand_scalar<T>([&](auto operand) {
    using Op = typename decltype(operand)::type;
    const Index BT = opts.chunk_size, H = s.H, K = s.K, V = s.V;
    const Acc scale = resolve_scale<Acc>(opts, K);
    const Acc floor = kChunkGateFloor<Acc>;
    const std::vector<HeadGroup> groups = fused_chunk_groups<Acc>(s);
    const Index n_groups = static_cast<Index>(groups.size());
    Scratch scratch;
    const auto ws =
        scratch.carve(opts.workspace, [&](Arena& a) { return plan_fused_chunk<Acc, Op>(a, s, BT, groups); });
    const float* h0 = opts.initial_state ? opts.initial_state->data() : nullptr;
    const OutputWrites o_writes = OutputWrites::for_tensor<T>(o.size());
    const std::vector<Index> off = h ? chunk_offsets(s, BT) : std::vector<Index>{};  // h's chunk index per sequence
    const OutputWrites h_writes = OutputWrites::for_tensor<Acc>(h ? off.back() * H * K * V : 0);
    parallel_for(n_groups, [&](Index i, int w) {
      const AmxTileScope tiles;  // the item's bfloat16 products keep one tile configuration
      const HeadGroup& gr = groups[static_cast<std::size_t>(i)];
      const ChunkScratch<Acc, Op>& sc = ws[static_cast<std::size_t>(w)];
      const Index n = gr.n, Wt = gr.width;
      const Seq& sq = s.seqs[static_cast<std::size_t>(n)];
      const auto state_of = [&](Index j) { return sc.S + j * K * Wt; };  // head h0 + j's state tile
      const auto keep_state = [&](Index c, Index hh, const Acc* S) {     // into h, as the state before chunk c
        if (h)
          store_state_tile(S, h + ((off[static_cast<std::size_t>(n)] + c) * H + hh) * K * V, K, V, gr.v0, Wt,
                           opts.state_v_first, h_writes);
      };
      load_group_states(sc.S, gr, h0, H, K, V, opts.state_v_first);
      T* out = o.data() + gr.v0;
      if (token_fallback && sq.len <= BT) {
        for (Index j = 0; j < gr.count && sq.len > 0; ++j) {
          const Index hh = gr.h0 + j;
          ChunkScratch<Acc, Op> hs = sc;  // recurrent_rows works on hs.S
          hs.S = state_of(j);
          keep_state(0, hh, hs.S);
          recurrent_rows(head_rows(qv.data(), s, sq, hh, 0, K), head_rows(k.data(), s, sq, hh, 0, K),
                         head_rows(v.data(), s, sq, hh, 0, V, gr.v0), head_rows(g, s, sq, hh, 0, K), scale, sq.len, K,
                         Wt, hs);
          store_tile_rows(hs.O, sq.len, Wt, out + ((sq.b * s.T + sq.t0) * H + hh) * V, H * V, o_writes);
        }
      } else {
        ChunkGates<Acc> cg;
        cg.gk = sc.G;
        cg.ldgk = K;
        for (Index c0 = 0; c0 < sq.len; c0 += BT) {
          const Index L = std::min(BT, sq.len - c0);
          for (Index j = 0; j < gr.count; ++j) {
            const Index hh = gr.h0 + j;
            Acc* const S = state_of(j);
            const auto kr = head_rows(k.data(), s, sq, hh, c0, K);
            const auto vr = head_rows(v.data(), s, sq, hh, c0, V, gr.v0);
            const auto gt = head_rows(g, s, sq, hh, c0, K);
            {  // the rows of the group's next (chunk, head), fetched while this one computes
              const bool last = j + 1 == gr.count;
              const Index c1 = last ? c0 + BT : c0, h1 = last ? gr.h0 : hh + 1;
              if (c1 < sq.len) {
                const Index L1 = std::min(BT, sq.len - c1);
                prefetch_rows(head_rows(qv.data(), s, sq, h1, c1, K), L1, K);
                prefetch_rows(head_rows(k.data(), s, sq, h1, c1, K), L1, K);
                prefetch_rows(head_rows(v.data(), s, sq, h1, c1, V, gr.v0), L1, Wt);
                prefetch_rows(head_rows(g, s, sq, h1, c1, K), L1, K);
                if (!o_writes.streaming)  // streamed rows are never read: nothing to fetch
                  prefetch_rows(Rows<T>{out + ((sq.b * s.T + sq.t0 + c1) * H + h1) * V, H * V}, L1, Wt,
                                /*for_write=*/true);
              }
            }
            keep_state(c0 / BT, hh, S);
            const Rows<Op> vop = as_operand<Op>(vr, L, Wt, sc.vop);
            const bool factored = chunk_output(head_rows(qv.data(), s, sq, hh, c0, K), kr, gt, floor, vop, S, Wt, scale,
                                               L, K, Wt, sc, BT);
            store_tile_rows(sc.O, L, Wt, out + ((sq.b * s.T + sq.t0 + c0) * H + hh) * V, H * V, o_writes);
            if (factored)
              state_update_factored(S, Wt, vop, L, K, Wt, sc);
            else
              state_update<kGateGk>(S, Wt, kr, vr, cg, L, K, Wt, sc);
          }
        }
      }
      if (ht) store_group_states(sc.S, gr, ht, H, K, V, opts.state_v_first);
    });
  });
}

}  // namespace detail
}  // namespace gla
