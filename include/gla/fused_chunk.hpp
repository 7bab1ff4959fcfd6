#pragma once
/// gla/fused_chunk.hpp: fused_chunk_gla, a single sweep over the chunks of each sequence that carries the
/// state from chunk to chunk and stores no per-chunk states (fla removed its own; this one equals chunk_gla).

#include <gla/chunk.hpp>

namespace gla {

namespace detail {

/// fused_chunk_gla's extra check: no sequence longer than opts.max_seqlen (forward and backward).
inline void check_max_seqlen(const std::string& fn, const OpShape& s, const GLAOptions& opts) {
  if (!opts.max_seqlen) return;
  if (*opts.max_seqlen < 0) fail(fn, "max_seqlen is " + std::to_string(*opts.max_seqlen) + ", expected >= 0");
  for (std::size_t n = 0; n < s.seqs.size(); ++n)
    if (s.seqs[n].len > *opts.max_seqlen)
      fail(fn, "sequence " + std::to_string(n) + " has " + std::to_string(s.seqs[n].len) +
                   " tokens, expected at most max_seqlen = " + std::to_string(*opts.max_seqlen));
}

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

/// fused_chunk_gla after validation; g may be null (no decay, plain linear attention).
template <class T>
void fused_chunk_run(const OpShape& s, const ConstView<T, 4>& qv, const ConstView<T, 4>& k, const ConstView<T, 4>& v,
                     const T* g, const GLAOptions& opts, const View<T, 4>& o, float* ht) {
  using Acc = acc_t<T>;
  using Op = operand_t<T>;
  const Index BT = opts.chunk_size, H = s.H, K = s.K, V = s.V;
  const Acc scale = resolve_scale<Acc>(opts, K);
  const Acc floor = kChunkGateFloor<Acc>;
  const std::vector<HeadGroup> groups = fused_chunk_groups<Acc>(s);
  const Index n_groups = static_cast<Index>(groups.size()), Vt = max_group_width(groups),
              heads = max_group_heads(groups);
  Scratch scratch;
  const auto ws =
      scratch.carve(opts.workspace, [&](Arena& a) { return plan_workers<Acc, Op>(a, n_groups, BT, K, Vt, heads); });
  const float* h0 = opts.initial_state ? opts.initial_state->data() : nullptr;
  parallel_for(n_groups, [&](Index i, int w) {
    const HeadGroup& gr = groups[static_cast<std::size_t>(i)];
    const ChunkScratch<Acc, Op>& sc = ws[static_cast<std::size_t>(w)];
    const Index n = gr.n, Wt = gr.width;
    const Seq& sq = s.seqs[static_cast<std::size_t>(n)];
    const auto state_of = [&](Index j) { return sc.S + j * K * Wt; };  // head h0 + j's state tile
    for (Index j = 0; j < gr.count; ++j) {
      const Index pair = n * H + gr.h0 + j;
      if (h0)
        load_state_tile(state_of(j), h0 + pair * K * V, K, V, gr.v0, Wt, opts.state_v_first);
      else
        std::fill_n(state_of(j), K * Wt, Acc(0));
    }
    T* out = o.data() + gr.v0;
    if (opts.heuristic_fallback && sq.len <= BT) {
      for (Index j = 0; j < gr.count && sq.len > 0; ++j) {
        const Index hh = gr.h0 + j;
        ChunkScratch<Acc, Op> hs = sc;  // recurrent_rows works on hs.S
        hs.S = state_of(j);
        recurrent_rows(head_rows(qv.data(), s, sq, hh, 0, K), head_rows(k.data(), s, sq, hh, 0, K),
                       head_rows(v.data(), s, sq, hh, 0, V, gr.v0), head_rows(g, s, sq, hh, 0, K), scale, sq.len, K, Wt,
                       hs);
        store_tile_rows(hs.O, sq.len, Wt, out + ((sq.b * s.T + sq.t0) * H + hh) * V, H * V);
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
              prefetch_rows(Rows<T>{out + ((sq.b * s.T + sq.t0 + c1) * H + h1) * V, H * V}, L1, Wt, /*for_write=*/true);
            }
          }
          gate_cumsum(gt, L, K, floor, sc.G);
          const Rows<Op> vop = as_operand<Op>(vr, L, Wt, sc.vop);
          const bool factored =
              chunk_output(head_rows(qv.data(), s, sq, hh, c0, K), kr, gt, floor, vop, S, Wt, scale, L, K, Wt, sc, BT);
          store_tile_rows(sc.O, L, Wt, out + ((sq.b * s.T + sq.t0 + c0) * H + hh) * V, H * V);
          if (factored)
            state_update_factored(S, Wt, vop, L, K, Wt, sc);
          else
            state_update<kGateGk>(S, Wt, kr, vr, cg, L, K, Wt, sc);
        }
      }
    }
    if (ht)
      for (Index j = 0; j < gr.count; ++j)
        store_state_tile(state_of(j), Wt, ht + (n * H + gr.h0 + j) * K * V, K, V, gr.v0, Wt, opts.state_v_first);
  });
}

}  // namespace detail

/// Bytes of scratch fused_chunk_gla needs for inputs of the given scalar and shape (see Workspace).
template <class Scalar = float>
std::size_t fused_chunk_gla_workspace_size(Index B, Index T, Index H, Index K, Index V, const GLAOptions& opts = {}) {
  static_assert(is_supported_scalar_v<Scalar>, "fused_chunk_gla_workspace_size: unsupported scalar type");
  const detail::OpShape s = detail::shape_of("fused_chunk_gla_workspace_size", B, T, H, K, V, opts);
  const std::vector<detail::HeadGroup> groups = detail::fused_chunk_groups<acc_t<Scalar>>(s);
  return detail::planned_bytes([&](detail::Arena& a) {
    return detail::plan_workers<acc_t<Scalar>, detail::operand_t<Scalar>>(
        a, static_cast<Index>(groups.size()), opts.chunk_size, K, detail::max_group_width(groups),
        detail::max_group_heads(groups));
  });
}

/// Fused-chunk GLA forward into caller views: per (sequence, head) one sweep over its chunks computing each
/// chunk's output from the carried state, then advancing the state. Same math, shapes, options, output
/// contract and aliasing rule as chunk_gla_into, plus opts.max_seqlen (a longer sequence → gla::Error) and
/// opts.heuristic_fallback (a sequence no longer than one chunk runs token by token; same numbers within
/// rounding). Scratch (fused_chunk_gla_workspace_size): O(chunk_size·(K+V) + G·K·V) per thread, independent of T,
/// with G ≤ H heads per group (their states within 1 MiB). Threads: the parallel engine over groups of
/// consecutive heads of one sequence that advance chunk by chunk together (at least two groups per thread),
/// longest first; when a few sequences hold most of the tokens (e.g. B = 1, H = 1) their value columns are split
/// in two tiles. Deterministic for any thread count: the grouping changes only the order in which heads advance.
template <class Q>
void fused_chunk_gla_into(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v, ConstViewOf<Q, 4> g,
                          const GLAOptions& opts, ViewOf<Q, 4> o,
                          std::optional<View<float, 4>> final_state = std::nullopt) {
  using T = scalar_type_t<Q>;
  static_assert(is_supported_scalar_v<T>,
                "fused_chunk_gla: inputs must be float, double, Eigen::bfloat16 or Eigen::half");
  const std::string fn = "fused_chunk_gla";
  const ConstView<T, 4> qv(q);
  const detail::OpShape s = detail::check_chunk_args(fn, qv, k, v, g, opts);
  detail::check_forward_outputs(
      fn, s, opts, o, final_state,
      {detail::buffer("q", qv), detail::buffer("k", k), detail::buffer("v", v), detail::buffer("g", g)});
  detail::check_max_seqlen(fn, s, opts);
  detail::fused_chunk_run(s, qv, k, v, g.data(), opts, o, final_state ? final_state->data() : nullptr);
}

/// Fused-chunk GLA forward returning {o, final_state}; see fused_chunk_gla_into.
template <class Q>
GLAResult<scalar_type_t<Q>> fused_chunk_gla(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v, ConstViewOf<Q, 4> g,
                                            const GLAOptions& opts = {}) {
  const ConstViewOf<Q, 4> qv(q);
  detail::check_chunk_args("fused_chunk_gla", qv, k, v, g, opts);  // before sizing the outputs from the inputs
  GLAResult<scalar_type_t<Q>> r = detail::allocate_result(qv, v, opts);
  fused_chunk_gla_into(qv, k, v, g, opts, r.o, detail::optional_output(r.final_state));
  return r;
}

}  // namespace gla
