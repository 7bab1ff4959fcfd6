#pragma once
/// gla/chunk_backward.hpp: the backward of the chunked GLA (fla's chunk_gla_bwd): chunk_bwd_dh, the reverse
/// state-gradient recurrence over chunks (fla's ops/common/chunk_h.py), and chunk_gla_backward /
/// fused_chunk_gla_backward, the gradients of chunk_gla / fused_chunk_gla w.r.t. q, k, v, g and h0.

#include <gla/chunk.hpp>
#include <gla/detail/chunk_backward_kernels.hpp>
#include <gla/fused_chunk.hpp>

namespace gla {

/// Result of chunk_bwd_dh: dh float [B,NT,H,K,V] (varlen [1,ΣNT,H,K,V]; [..,V,K] with state_v_first),
/// dh[c] = ∂L/∂ the state AFTER chunk c, indexed as chunk_fwd_h's h; dh0 float [N,H,K,V] (or V-first),
/// ∂L/∂ the initial state, present iff opts.initial_state is set (as fla; its values are not read).
struct ChunkBwdDhResult {
  Tensor<float, 5> dh;
  std::optional<Tensor<float, 4>> dh0;
};

/// Gradients of chunk_gla / fused_chunk_gla for the loss L = Σ o·do_ + Σ final_state·dht:
/// dq, dk, dg [B,T,H,K] and dv [B,T,H,V] in the input scalar (dg w.r.t. the raw per-step gate g);
/// dh0 float [N,H,K,V] (or V-first), present iff opts.initial_state is set.
template <class T>
struct ChunkGLAGrads {
  Tensor<T, 4> dq, dk, dv, dg;
  std::optional<Tensor<float, 4>> dh0;
};

namespace detail {

/// Checks every argument of chunk_gla_backward_into / fused_chunk_gla_backward_into (shapes, the output
/// contract — dh0 given iff opts.initial_state — and the aliasing rule: dh0 may be the very buffer of dht);
/// returns the shape. h: the forward's saved states, when given (chunk_states_dims).
template <class T>
OpShape check_chunk_backward_args(const std::string& fn, const ConstView<T, 4>& q, const ConstView<T, 4>& k,
                                  const ConstView<T, 4>& v, const ConstView<T, 4>& g, const ConstView<T, 4>& do_,
                                  const std::optional<ConstView<float, 4>>& dht, const GLAOptions& opts,
                                  const View<T, 4>& dq, const View<T, 4>& dk, const View<T, 4>& dv,
                                  const View<T, 4>& dg, const std::optional<View<float, 4>>& dh0,
                                  const std::optional<ConstView<acc_t<T>, 5>>& h = std::nullopt) {
  const OpShape s = check_chunk_args(fn, q, k, v, g, opts);
  if (h) expect_chunk_states_dims(fn, "h", h->dimensions(), s, opts);
  expect_dims(fn, "do_", do_.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  if (dht) expect_state_dims(fn, "dht", dht->dimensions(), s, opts.state_v_first);
  expect_dims(fn, "dq", dq.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  expect_dims(fn, "dk", dk.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  expect_dims(fn, "dv", dv.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  expect_dims(fn, "dg", dg.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  expect_output_iff(fn, "dh0", dh0, opts.initial_state.has_value(), "initial_state is given",
                    "initial_state is not given");
  if (dh0) expect_state_dims(fn, "dh0", dh0->dimensions(), s, opts.state_v_first);
  check_aliasing(fn,
                 {buffer("q", q), buffer("k", k), buffer("v", v), buffer("g", g), buffer("do_", do_),
                  buffer("dht", dht), buffer("initial_state", opts.initial_state), buffer("h", h)},
                 {buffer("dq", dq), buffer("dk", dk), buffer("dv", dv), buffer("dg", dg), buffer("dh0", dh0)},
                 {{"dh0", "dht"}});
  return s;
}

/// The state before every chunk of one head group (the forward sweep of the in-sweep backward), transposed, written
/// in place: state_at(c, j) is the width×K tile (row stride K) of head gr.h0 + j's state before chunk c, transposed;
/// the first is loaded from h0 (float, state layout; null = 0) and each next one computed from it by
/// state_update_transposed_into. The state after the last chunk is not needed by the backward and is not formed.
template <class Acc, class Op, class In, class StateAt>
void group_chunk_states(const OpShape& s, Index BT, const In* k, const In* v, const In* g, const float* h0,
                        bool v_first, const HeadGroup& gr, const ChunkScratch<Acc, Op>& sc, const StateAt& state_at) {
  const Index H = s.H, K = s.K, V = s.V, Wt = gr.width;
  const Acc floor = kChunkGateFloor<Acc>;
  const Seq& sq = s.seqs[static_cast<std::size_t>(gr.n)];
  const Index nchunks = (sq.len + BT - 1) / BT;
  if (nchunks == 0) return;  // an empty sequence has no chunk to keep a state for (and no slot)
  for (Index j = 0; j < gr.count; ++j) {
    Acc* const S0 = state_at(0, j);
    if (h0)
      load_state_tile_transposed(S0, h0 + (gr.n * H + gr.h0 + j) * K * V, K, V, gr.v0, Wt, v_first);
    else
      std::fill_n(S0, K * Wt, Acc(0));
  }
  ChunkGates<Acc> cg;
  cg.gk = sc.G;
  cg.ldgk = K;
  for (Index c = 0; c + 1 < nchunks; ++c) {
    const Index c0 = c * BT, L = BT;  // every chunk but the last is full
    for (Index j = 0; j < gr.count; ++j) {
      const Index hh = gr.h0 + j;
      {  // the rows of the group's next (chunk, head), fetched while this one computes (see prefetch_rows)
        const bool last = j + 1 == gr.count;
        const Index c1 = last ? c0 + BT : c0, h1 = last ? gr.h0 : hh + 1;
        if (c1 + BT < sq.len) {
          prefetch_rows(head_rows(k, s, sq, h1, c1, K), BT, K);
          prefetch_rows(head_rows(v, s, sq, h1, c1, V, gr.v0), BT, Wt);
          prefetch_rows(head_rows(g, s, sq, h1, c1, K), BT, K);
        }
      }
      gate_cumsum(head_rows(g, s, sq, hh, c0, K), L, K, floor, sc.G);
      state_update_transposed_into(static_cast<const Acc*>(state_at(c, j)), state_at(c + 1, j),
                                   head_rows(k, s, sq, hh, c0, K), head_rows(v, s, sq, hh, c0, V, gr.v0), cg, L, K, Wt,
                                   sc);
    }
  }
}

/// One head group's reverse sweep of the state gradient for the gk-gated recurrence (a work item of
/// chunk_grad_sweep): dS starts at dht (float, state layout; null = 0) and steps back chunk by chunk, every head of
/// the group at one chunk before the previous chunk: at (chunk c, head gr.h0 + j), block(c, j, dS) first runs with
/// the K×width tile dS = ∂L/∂ the state after chunk c (row stride width) and returns StepOperands, then
/// dS ← diag(e^{G_l}) dS + (scale · q ⊙ e^{G})ᵀ do_, with G the chunk-local cumsum of the raw gates. The gradient
/// before the first chunk goes to dh0 (float, state layout; may be null). k and v (may be null) are rows the block
/// reads: they are fetched ahead with the sweep's own.
template <class Acc, class Op, class In, class Block>
void grad_sweep_group(const OpShape& s, Index BT, const In* q, const In* k, const In* v, const In* do_, const In* g,
                      Acc scale, const float* dht, bool v_first, float* dh0, const HeadGroup& gr,
                      const ChunkScratch<Acc, Op>& sc, const Block& block) {
  const Index H = s.H, K = s.K, V = s.V;
  const Acc floor = kChunkGateFloor<Acc>;
  const Index Vt = gr.width;
  const Seq& sq = s.seqs[static_cast<std::size_t>(gr.n)];
  const auto state_of = [&](Index j) { return sc.S + j * K * Vt; };  // head gr.h0 + j's dS tile
  load_group_states(sc.S, gr, dht, H, K, V, v_first);
  const Index nchunks = (sq.len + BT - 1) / BT;
  for (Index c = nchunks - 1; c >= 0; --c) {
    const Index c0 = c * BT, L = std::min(BT, sq.len - c0);
    for (Index j = 0; j < gr.count; ++j) {
      const Index hh = gr.h0 + j;
      Acc* const S = state_of(j);
      const StepOperands<Acc, Op> given = block(c, j, static_cast<const Acc*>(S));
      {  // the rows of the group's next (chunk, head) in sweep order, fetched while this one computes
        const bool last = j + 1 == gr.count;
        const Index c1 = last ? c0 - BT : c0, h1 = last ? gr.h0 : hh + 1;
        if (c1 >= 0) {
          const Index L1 = std::min(BT, sq.len - c1);
          prefetch_rows(head_rows(q, s, sq, h1, c1, K), L1, K);
          prefetch_rows(head_rows(do_, s, sq, h1, c1, V, gr.v0), L1, Vt);
          prefetch_rows(head_rows(g, s, sq, h1, c1, K), L1, K);
          if (k) prefetch_rows(head_rows(k, s, sq, h1, c1, K), L1, K);
          if (v) prefetch_rows(head_rows(v, s, sq, h1, c1, V, gr.v0), L1, Vt);
        }
      }
      const Op* qg = given.qg;
      const Acc* el = given.eG ? given.eG + (L - 1) * K : nullptr;
      if (!qg) {
        gate_cumsum(head_rows(g, s, sq, hh, c0, K), L, K, floor, sc.G);
        Eigen::Map<Eigen::Array<Acc, Eigen::Dynamic, 1>>(sc.tmp, L * K) =
            Eigen::Map<const Eigen::Array<Acc, Eigen::Dynamic, 1>>(sc.G, L * K).exp();
        const Rows<In> qr = head_rows(q, s, sq, hh, c0, K);
        for (Index t = 0; t < L; ++t)
          store_operand_row(sc.qg + t * K, ConstRowArrMap<Acc>(widen_row(qr.row(t), sc.e, K), K) *
                                               RowArrMap<Acc>(sc.tmp + t * K, K) * scale);
        qg = sc.qg;
        el = sc.tmp + (L - 1) * K;
      }
      for (Index a = 0; a < K; ++a) RowArrMap<Acc>(S + a * Vt, Vt) *= el[a];
      const Rows<Op> dop =
          given.do_op.p ? given.do_op : as_operand<Op>(head_rows(do_, s, sq, hh, c0, V, gr.v0), L, Vt, sc.vop);
      gemm<Op>(Trans::T, Trans::N, K, Vt, L, qg, K, dop.p, dop.ld, /*accumulate=*/true, S, Vt);
    }
  }
  if (dh0) store_group_states(sc.S, gr, dh0, H, K, V, v_first);
}

/// The reverse sweep of the state gradient over all head groups (sweep_groups; grad_sweep_group per group):
/// dh[c] (K-first [ΣNT,H,K,V] in Acc) = ∂L/∂ the state after chunk c, for every (chunk, head).
template <class Acc, class Op, class In>
void chunk_grad_sweep(const OpShape& s, Index BT, const In* q, const In* do_, const In* g, Acc scale, const float* dht,
                      bool v_first, Acc* dh, float* dh0, const std::vector<HeadGroup>& groups,
                      const std::vector<ChunkScratch<Acc, Op>>& workers) {
  const Index H = s.H, K = s.K, V = s.V;
  const std::vector<Index> off = chunk_offsets(s, BT);
  const OutputWrites dh_writes = OutputWrites::for_tensor<Acc>(off.back() * H * K * V);
  parallel_for(static_cast<Index>(groups.size()), [&](Index i, int w) {
    const AmxTileScope tiles;  // the item's bfloat16 products keep one tile configuration
    const HeadGroup& gr = groups[static_cast<std::size_t>(i)];
    Acc* const dhn = dh + off[static_cast<std::size_t>(gr.n)] * H * K * V;
    grad_sweep_group(s, BT, q, static_cast<const In*>(nullptr), static_cast<const In*>(nullptr), do_, g, scale, dht,
                     v_first, dh0, gr, workers[static_cast<std::size_t>(w)], [&](Index c, Index j, const Acc* dS) {
                       store_tile_rows(dS, K, gr.width, dhn + (c * H + gr.h0 + j) * K * V + gr.v0, V, dh_writes);
                       return StepOperands<Acc, Op>{};
                     });
  });
}

/// The scratch of the chunked backward: the states before the chunks and (separate pass only) their gradients,
/// and per worker the sweeps' tiles and the per-chunk gradient tiles.
template <class Acc, class Op>
struct ChunkBwdPlan {
  // The states before the chunks, transposed (V×K each, so that the products with them contract over their
  // contiguous dimension): [ΣNT,H,V,K] for the separate pass; with the gradients in the reverse sweep, per worker
  // the states of one head group, [chunk][head of the group][V×K] (h_per_worker accumulators apart). With the
  // forward's states K-first, one V×K slot per worker to transpose each into; V-first, none.
  Acc* h = nullptr;
  Index h_per_worker = 0;
  Acc* dh = nullptr;  // [ΣNT,H,K,V] ∂L/∂ the state after every chunk (separate pass only)
  std::vector<ChunkScratch<Acc, Op>> sweep;
  std::vector<BwdScratch<Acc, Op>> block;
};

/// Whether the backward computes each chunk's gradients inside the reverse sweep (every sweep tile spans all of
/// V, as when there are enough (sequence, head) pairs) instead of storing dh for a separate pass over
/// (chunk, head). A rule on the shape alone (sweep_groups splits V by the shape); the arithmetic of a chunk is
/// the same either way.
inline bool backward_blocks_in_sweep(const OpShape& s, const std::vector<HeadGroup>& sweep) {
  return std::all_of(sweep.begin(), sweep.end(), [&](const HeadGroup& gr) { return gr.width == s.V; });
}

/// The most (chunk, head) states of any head group: the per-worker states of the in-sweep backward.
inline Index max_group_states(const OpShape& s, Index BT, const std::vector<HeadGroup>& groups) {
  Index m = 0;
  for (const HeadGroup& gr : groups)
    m = std::max(m, (s.seqs[static_cast<std::size_t>(gr.n)].len + BT - 1) / BT * gr.count);
  return m;
}

/// Where the chunked backward gets the states before the chunks: recomputed, or the forward's (K-first: each
/// transposed when its chunk comes; V-first: multiplied where they lie).
enum class StatesFrom { Recompute, ForwardKFirst, ForwardVFirst };

inline StatesFrom states_from(bool saved, bool v_first) {
  return !saved ? StatesFrom::Recompute : v_first ? StatesFrom::ForwardVFirst : StatesFrom::ForwardKFirst;
}

/// states: ΣNT (chunks of all sequences); sweep: the head groups of both sweeps; block_items: the (chunk, head)
/// work items of the separate pass. dh is planned only when the chunks' gradients are a separate pass
/// (backward_blocks_in_sweep); otherwise each worker keeps the states of the head group it is on, unless they come
/// from the forward (`from`).
template <class Acc, class Op>
ChunkBwdPlan<Acc, Op> plan_chunk_backward(Arena& a, const OpShape& s, Index BT, Index states,
                                          const std::vector<HeadGroup>& sweep, Index block_items,
                                          StatesFrom from = StatesFrom::Recompute) {
  ChunkBwdPlan<Acc, Op> p;
  const bool in_sweep = backward_blocks_in_sweep(s, sweep);
  const int sweepers = parallel_workers(static_cast<Index>(sweep.size()));
  const int blocks = in_sweep ? sweepers : parallel_workers(block_items);
  // Each worker's states start Arena::kWorkerGap bytes past the previous worker's (see Arena::worker_plans).
  const Index gap = static_cast<Index>(Arena::kWorkerGap / sizeof(Acc));
  if (from == StatesFrom::ForwardKFirst) {
    p.h_per_worker = s.K * s.V + gap;
    p.h = a.take<Acc>(blocks * p.h_per_worker);
  } else if (from == StatesFrom::Recompute) {
    if (in_sweep) {
      p.h_per_worker = max_group_states(s, BT, sweep) * s.K * s.V + gap;
      p.h = a.take<Acc>(sweepers * p.h_per_worker);
    } else {
      p.h = a.take<Acc>(states * s.H * s.K * s.V);
    }
  }
  if (!in_sweep) p.dh = a.take<Acc>(states * s.H * s.K * s.V);
  p.sweep = plan_workers<Acc, Op>(a, static_cast<Index>(sweep.size()), BT, s.K, max_group_width(sweep),
                                  max_group_heads(sweep));
  p.block = a.worker_plans(blocks, [&](Arena& arena) { return BwdScratch<Acc, Op>::plan(arena, BT, s.K, s.V); });
  return p;
}

/// The chunked backward after validation (shared by chunk_gla_backward_into and fused_chunk_gla_backward_into).
/// Recomputes what the forward does not keep, as fla does: the state before every chunk h (fp32, from the raw
/// gates chunk by chunk), then the state gradients dh by a reverse sweep, and every (chunk, head)'s gradients from
/// both. Two ways, chosen by the shape (backward_blocks_in_sweep):
///  * every sweep tile spans all of V: one work item per head group runs the forward sweep of the group, keeping
///    its states in the worker's scratch, then the reverse sweep, computing each chunk's gradients where it steps
///    back. The states are read back in the reverse order of their writing, the latest first, while they are still
///    in cache, and dh is never stored.
///  * else (few (sequence, head) pairs, split into value tiles): h for all chunks, dh stored by the reverse sweep,
///    then a separate pass over (chunk, head).
/// Scratch (chunk_gla_backward_workspace_size): the states (a head group's per worker, or ΣNT·H·K·V accumulators),
/// dh on the separate-pass path as many again, and per-thread tiles, from opts.workspace or allocated for the
/// call; inputs are read in their own scalar. g may be null (no decay; then dg must be null too):
/// fused_recurrent_gla_backward runs its gk-only cases here. h_saved: when not null, the forward's states before
/// every chunk (chunk_states_dims layout, as chunk_gla keeps them), taken instead of recomputed: V-first they are
/// multiplied where they lie; K-first each is transposed into the worker's slot when its chunk comes. The scratch
/// then holds no states (plan_chunk_backward).
template <class T>
void chunk_gla_backward_impl(const OpShape& s, const ConstView<T, 4>& q, const ConstView<T, 4>& k,
                             const ConstView<T, 4>& v, const T* g, const ConstView<T, 4>& do_,
                             const std::optional<ConstView<float, 4>>& dht, const GLAOptions& opts, T* dq, T* dk, T* dv,
                             T* dg, const std::optional<View<float, 4>>& dh0, const acc_t<T>* h_saved = nullptr) {
  using Acc = acc_t<T>;
  with_operand_scalar<T>([&](auto operand) {
    using Op = typename decltype(operand)::type;
    const Index BT = opts.chunk_size, H = s.H, K = s.K, V = s.V;
    const Acc scale = resolve_scale<Acc>(opts, K);
    const std::vector<Index> off = chunk_offsets(s, BT);
    const std::vector<HeadGroup> sweep = sweep_groups<Acc>(s);
    const std::vector<std::array<Index, 2>> chunks = chunk_list(s, off);
    const Index work = static_cast<Index>(chunks.size()) * H;
    Scratch scratch;
    const StatesFrom from = states_from(h_saved != nullptr, opts.state_v_first);
    const ChunkBwdPlan<Acc, Op> pl = scratch.carve(opts.workspace, [&](Arena& a) {
      return plan_chunk_backward<Acc, Op>(a, s, BT, off.back(), sweep, work, from);
    });
    const float* h0_p = opts.initial_state ? opts.initial_state->data() : nullptr;
    const float* dht_p = dht ? dht->data() : nullptr;
    float* dh0_p = dh0 ? dh0->data() : nullptr;

    // One chunk's gradients, from the state before it (St, transposed: V×K) and the gradient of the state after it
    // (dH, K×V).
    const Acc floor = kChunkGateFloor<Acc>;
    const OutputWrites qk_writes = OutputWrites::for_tensor<T>(q.size()),
                       v_writes = OutputWrites::for_tensor<T>(v.size());
    const auto chunk_grads = [&](const BwdScratch<Acc, Op>& ws, Index n, Index c, Index hh, const Acc* St,
                                 const Acc* dH) {
      const Seq& sq = s.seqs[static_cast<std::size_t>(n)];
      const Index c0 = c * BT, L = std::min(BT, sq.len - c0);
      const StepOperands<Acc, Op> step =
          chunk_bwd_tile(head_rows(q.data(), s, sq, hh, c0, K), head_rows(k.data(), s, sq, hh, c0, K),
                         head_rows(v.data(), s, sq, hh, c0, V), head_rows(g, s, sq, hh, c0, K),
                         head_rows(do_.data(), s, sq, hh, c0, V), St, dH, scale, L, K, V, BT, floor, ws);
      const Index row = ((sq.b * s.T + sq.t0 + c0) * H + hh);
      store_tile_rows(ws.dq, L, K, dq + row * K, H * K, qk_writes);
      store_tile_rows(ws.dk, L, K, dk + row * K, H * K, qk_writes);
      store_tile_rows(ws.dv, L, V, dv + row * V, H * V, v_writes);
      if (dg) store_tile_rows(ws.dg, L, K, dg + row * K, H * K, qk_writes);
      return step;
    };

    // One of the forward's states, transposed (V×K): where it lies when V-first, else transposed into the worker's
    // slot (the plan's only states then).
    const auto forward_state = [&](const Acc* saved, Acc* slot) -> const Acc* {
      if (from == StatesFrom::ForwardVFirst) return saved;
      load_state_tile_transposed(slot, saved, K, V, 0, V, /*v_first=*/false);
      return slot;
    };

    if (backward_blocks_in_sweep(s, sweep)) {
      // dh0 may be the very buffer of dht: a group's reverse sweep reads its dht tiles before it writes those of dh0.
      parallel_for(static_cast<Index>(sweep.size()), [&](Index i, int w) {
        const AmxTileScope tiles;  // the item's bfloat16 products keep one tile configuration
        const HeadGroup& gr = sweep[static_cast<std::size_t>(i)];
        const ChunkScratch<Acc, Op>& sc = pl.sweep[static_cast<std::size_t>(w)];
        const BwdScratch<Acc, Op>& ws = pl.block[static_cast<std::size_t>(w)];
        Acc* const hw = pl.h + w * pl.h_per_worker;
        const auto own_state = [&](Index c, Index j) { return hw + (c * gr.count + j) * K * V; };
        const auto saved_state = [&](Index c, Index j) {
          return h_saved + ((off[static_cast<std::size_t>(gr.n)] + c) * H + gr.h0 + j) * K * V;
        };
        if (from == StatesFrom::Recompute)
          group_chunk_states(s, BT, k.data(), v.data(), g, h0_p, opts.state_v_first, gr, sc, own_state);
        grad_sweep_group(
            s, BT, q.data(), k.data(), v.data(), do_.data(), g, scale, dht_p, opts.state_v_first, dh0_p, gr, sc,
            [&](Index c, Index j, const Acc* dS) {
              {  // the state of the next (chunk, head) in sweep order (out of L2 by now, or never read yet)
                const bool last = j + 1 == gr.count;
                if (!last || c > 0) {
                  const Index c1 = last ? c - 1 : c, j1 = last ? 0 : j + 1;
                  const Index row = from == StatesFrom::ForwardKFirst ? V : K;  // K×V as stored, else V×K
                  prefetch_rows(Rows<Acc>{from == StatesFrom::Recompute ? own_state(c1, j1) : saved_state(c1, j1), row},
                                K * V / row, row);
                }
              }
              const Acc* St = from == StatesFrom::Recompute ? own_state(c, j) : forward_state(saved_state(c, j), hw);
              return chunk_grads(ws, gr.n, c, gr.h0 + j, St, dS);
            });
      });
      return;
    }
    if (from == StatesFrom::Recompute)
      chunk_state_sweep(s, BT, k.data(), v.data(), g, h0_p, opts.state_v_first, pl.h, /*h_v_first=*/true,
                        static_cast<float*>(nullptr), sweep, pl.sweep);
    // dh0 may be the very buffer of dht: the reverse sweep reads each dht tile before it writes that dh0 tile.
    chunk_grad_sweep(s, BT, q.data(), do_.data(), g, scale, dht_p, opts.state_v_first, pl.dh, dh0_p, sweep, pl.sweep);
    parallel_for(work, [&](Index w, int worker) {
      const AmxTileScope tiles;  // the item's bfloat16 products keep one tile configuration
      const auto [n, c] = chunks[static_cast<std::size_t>(w / H)];
      const Index hh = w % H;
      const Index state = ((off[static_cast<std::size_t>(n)] + c) * H + hh) * K * V;
      const Acc* St = from == StatesFrom::Recompute ? pl.h + state  // recomputed, V-first
                                                    : forward_state(h_saved + state, pl.h + worker * pl.h_per_worker);
      chunk_grads(pl.block[static_cast<std::size_t>(worker)], n, c, hh, St, pl.dh + state);
    });
  });
}

/// The owned outputs of the convenience API, sized from the inputs before validation (the `_into` call then
/// validates everything): dq like q, dk like k, dv like v, dg like g, dh0 like initial_state when it is set.
template <class T>
ChunkGLAGrads<T> allocate_grads(const ConstView<T, 4>& q, const ConstView<T, 4>& k, const ConstView<T, 4>& v,
                                const ConstView<T, 4>& g, const GLAOptions& opts) {
  ChunkGLAGrads<T> r;
  r.dq = Tensor<T, 4>(q.dimensions());
  r.dk = Tensor<T, 4>(k.dimensions());
  r.dv = Tensor<T, 4>(v.dimensions());
  r.dg = Tensor<T, 4>(g.dimensions());
  if (opts.initial_state) r.dh0 = Tensor<float, 4>(opts.initial_state->dimensions());
  return r;
}

/// The bytes plan_chunk_backward carves for inputs of scalar Scalar and these sizes and options, with the states
/// recomputed or from the forward (`from`); fn names the size query in its errors.
template <class Scalar>
std::size_t chunk_backward_workspace_bytes(const std::string& fn, Index B, Index T, Index H, Index K, Index V,
                                           const GLAOptions& opts, StatesFrom from) {
  const OpShape s = shape_of(fn, B, T, H, K, V, opts);
  const Index BT = opts.chunk_size;
  const std::vector<Index> off = chunk_offsets(s, BT);
  const std::vector<HeadGroup> sweep = sweep_groups<acc_t<Scalar>>(s);
  const Index work = static_cast<Index>(chunk_list(s, off).size()) * H;
  return with_operand_scalar<Scalar>([&](auto operand) {
    using Op = typename decltype(operand)::type;
    return planned_bytes(
        [&](Arena& a) { return plan_chunk_backward<acc_t<Scalar>, Op>(a, s, BT, off.back(), sweep, work, from); });
  });
}

}  // namespace detail

/// Bytes of scratch chunk_gla_backward (and fused_chunk_gla_backward) needs for inputs of the given scalar and
/// shape with these options on the current thread count (see Workspace).
template <class Scalar = float>
std::size_t chunk_gla_backward_workspace_size(Index B, Index T, Index H, Index K, Index V,
                                              const GLAOptions& opts = {}) {
  static_assert(is_supported_scalar_v<Scalar>, "chunk_gla_backward_workspace_size: unsupported scalar type");
  return detail::chunk_backward_workspace_bytes<Scalar>("chunk_gla_backward_workspace_size", B, T, H, K, V, opts,
                                                        detail::StatesFrom::Recompute);
}

/// Bytes of scratch chunk_gla_backward_from_states needs (no states: per-thread tiles, a state slot per thread when
/// the states are K-first, and their gradients when a (sequence, head) pair is split into value tiles).
template <class Scalar = float>
std::size_t chunk_gla_backward_from_states_workspace_size(Index B, Index T, Index H, Index K, Index V,
                                                          const GLAOptions& opts = {}) {
  static_assert(is_supported_scalar_v<Scalar>,
                "chunk_gla_backward_from_states_workspace_size: unsupported scalar type");
  return detail::chunk_backward_workspace_bytes<Scalar>("chunk_gla_backward_from_states_workspace_size", B, T, H, K, V,
                                                        opts, detail::states_from(true, opts.state_v_first));
}

/// The gradient of the loss w.r.t. the state after every chunk, for the recurrence of chunk_fwd_h
///   S ← e^{g+γ} diag(e^{gk}) S diag(e^{gv}) + k vᵀ,  o_t = scale q_tᵀ S_t,  L = Σ o·do_ + Σ final_state·dht:
///   dS ← dht (or 0); per chunk, last to first: dh[c] = dS, then
///   dS ← e^{g_l+γL} diag(e^{gk_l}) dS diag(e^{gv_l}) + scale Σ_t (q_t ⊙ e^{gk_t} e^{g_t+γ(t+1)}) (do_t ⊙ e^{gv_t})ᵀ;
///   dh0 = dS after the first chunk.
/// q, k [B,T,H,K], v, do_ [B,T,H,V] (float, double, bf16, half; accumulated in acc_t of the scalar; k and v
/// give the shape only, as in fla); gates as ChunkHGates (natural-log chunk-local cumsums made with
/// opts.chunk_size; g_gamma the per-step log decay); dht float [N,H,K,V] (or V-first) or absent (= 0).
/// Returns dh float [B,NT,H,K,V] (varlen [1,ΣNT,H,K,V]; V-first with state_v_first) and dh0 iff
/// opts.initial_state is set. Options: scale (default 1/sqrt(K)), initial_state (shape only), state_v_first,
/// cu_seqlens, chunk_size. Threads: the parallel engine over (sequence, head); deterministic.
template <class Q>
ChunkBwdDhResult chunk_bwd_dh(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v, const ChunkHGates& gates,
                              ConstViewOf<Q, 4> do_, std::optional<ConstView<float, 4>> dht = std::nullopt,
                              const GLAOptions& opts = {}) {
  using T = scalar_type_t<Q>;
  static_assert(is_supported_scalar_v<T>, "chunk_bwd_dh: inputs must be float, double, Eigen::bfloat16 or Eigen::half");
  using Acc = acc_t<T>;
  const std::string fn = "chunk_bwd_dh";
  const ConstView<T, 4> qv(q);
  const detail::OpShape s = detail::check_qkv(fn, qv.dimensions(), k.dimensions(), v.dimensions(), opts);
  detail::check_chunk_h_options(fn, opts);
  detail::expect_dims(fn, "do_", do_.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  detail::check_chunk_h_gates(fn, s, gates);
  if (dht) detail::expect_state_dims(fn, "dht", dht->dimensions(), s, opts.state_v_first);

  const Index BT = opts.chunk_size;
  ChunkBwdDhResult r;
  r.dh = Tensor<float, 5>(detail::chunk_states_dims(s, opts));
  // Chunks past the end of a sequence do not exist in a fixed-length batch (all rows have T tokens), so every
  // entry of dh is written by the sweep.
  if (opts.initial_state) r.dh0 = Tensor<float, 4>(detail::state_dims(s, opts.state_v_first));

  const detail::AccInput<Acc, T> qa(qv), doa(do_);
  const detail::AccGates<Acc> acc_gates(gates, s.H);
  detail::chunk_bwd_dh_impl<Acc, float>(
      s, BT, qa.data(), doa.data(), acc_gates.full, detail::resolve_scale<Acc>(opts, s.K), dht ? dht->data() : nullptr,
      opts.state_v_first, r.dh.data(), opts.state_v_first, r.dh0 ? r.dh0->data() : nullptr);
  return r;
}

/// Backward of chunk_gla into caller views (nothing is written when validation fails), for the loss
/// L = Σ o·do_ + Σ final_state·dht of the forward S_t = diag(e^{g_t}) S_{t−1} + k_t v_tᵀ, o_t = scale q_tᵀ S_t:
///   q, k, g [B,T,H,K], v [B,T,H,V]: the forward's inputs (g = per-step natural-log gate, <= 0; below −30 it
///   acts as −30, as in the forward);
///   do_ [B,T,H,V]: ∂L/∂o;  dht float [N,H,K,V] (or [N,H,V,K] with state_v_first): ∂L/∂final_state, or
///   absent (= 0);
///   dq, dk, dg [B,T,H,K] and dv [B,T,H,V] of the inputs' scalar: the gradients (dg w.r.t. the raw per-step g);
///   dh0 float [N,H,K,V] (or V-first): ∂L/∂initial_state, given if and only if opts.initial_state is (as fla);
///   dh0 may be the very buffer of dht; no other output may overlap an input or another output.
/// Options as chunk_gla (scale, initial_state, state_v_first, cu_seqlens, chunk_size); use the forward's.
/// Recomputed, as fla does: the gate cumsum and the state before every chunk (A is recomputed too, since
/// chunk_gla does not return it); nothing but the inputs is saved from the forward (to take the states from the
/// forward instead, see chunk_gla_keep_states_into and chunk_gla_backward_from_states_into). Memory: the states h
/// (ΣNT·H·K·V accumulators), their gradients dh as many again when a (sequence, head) pair is split into value tiles
/// (the separate pass; backward_blocks_in_sweep), and per-thread tiles (chunk_gla_backward_workspace_size). Computes in
/// acc_t of the scalar (bf16 inputs: bf16 product operands where AMX runs them, as chunk_gla). Threads: the parallel
/// engine over groups of consecutive heads of one sequence (and value tiles) for the states and their gradient, then
/// over (chunk, head); results do not depend on the thread count.
template <class Q>
void chunk_gla_backward_into(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v, ConstViewOf<Q, 4> g,
                             ConstViewOf<Q, 4> do_, std::optional<ConstView<float, 4>> dht, const GLAOptions& opts,
                             ViewOf<Q, 4> dq, ViewOf<Q, 4> dk, ViewOf<Q, 4> dv, ViewOf<Q, 4> dg,
                             std::optional<View<float, 4>> dh0 = std::nullopt) {
  using T = scalar_type_t<Q>;
  static_assert(is_supported_scalar_v<T>,
                "chunk_gla_backward: inputs must be float, double, Eigen::bfloat16 or Eigen::half");
  const std::string fn = "chunk_gla_backward";
  const ConstView<T, 4> qv(q);
  const detail::OpShape s = detail::check_chunk_backward_args(fn, qv, k, v, g, do_, dht, opts, dq, dk, dv, dg, dh0);
  detail::chunk_gla_backward_impl<T>(s, qv, k, v, g.data(), do_, dht, opts, dq.data(), dk.data(), dv.data(), dg.data(),
                                     dh0);
}

/// chunk_gla_backward_into that takes the states before every chunk from the forward instead of recomputing them
/// (fla's chunk_gla_bwd takes the forward's h the same way): h as chunk_gla_keep_states_into keeps it (or
/// chunk_fwd_h returns it, for float states), [B,NT,H,K,V] (varlen [1,ΣNT,H,K,V]; [..,V,K] with state_v_first;
/// chunk_gla_states_dims), in the accumulation scalar, for the same k, v, g, initial_state and options. It saves the
/// backward one sweep of the recurrence; with state_v_first the states are multiplied where they lie, otherwise each is
/// transposed when its chunk comes. h is an input: no output may overlap it. Gradients agree with the recomputing form
/// to rounding (the forward's states sum in another order than the backward's recompute).
template <class Q>
void chunk_gla_backward_from_states_into(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v, ConstViewOf<Q, 4> g,
                                         ConstView<acc_t<scalar_type_t<Q>>, 5> h, ConstViewOf<Q, 4> do_,
                                         std::optional<ConstView<float, 4>> dht, const GLAOptions& opts,
                                         ViewOf<Q, 4> dq, ViewOf<Q, 4> dk, ViewOf<Q, 4> dv, ViewOf<Q, 4> dg,
                                         std::optional<View<float, 4>> dh0 = std::nullopt) {
  using T = scalar_type_t<Q>;
  static_assert(is_supported_scalar_v<T>,
                "chunk_gla_backward_from_states: inputs must be float, double, Eigen::bfloat16 or Eigen::half");
  const std::string fn = "chunk_gla_backward_from_states";
  const ConstView<T, 4> qv(q);
  const detail::OpShape s =
      detail::check_chunk_backward_args(fn, qv, k, v, g, do_, dht, opts, dq, dk, dv, dg, dh0, std::optional(h));
  detail::chunk_gla_backward_impl<T>(s, qv, k, v, g.data(), do_, dht, opts, dq.data(), dk.data(), dv.data(), dg.data(),
                                     dh0, h.data());
}

/// Backward of chunk_gla returning {dq, dk, dv, dg, dh0}; dh0 iff opts.initial_state is set.
/// See chunk_gla_backward_into for shapes, options, memory and threading.
template <class Q>
ChunkGLAGrads<scalar_type_t<Q>> chunk_gla_backward(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v,
                                                   ConstViewOf<Q, 4> g, ConstViewOf<Q, 4> do_,
                                                   std::optional<ConstView<float, 4>> dht = std::nullopt,
                                                   const GLAOptions& opts = {}) {
  const ConstViewOf<Q, 4> qv(q);
  detail::check_chunk_args("chunk_gla_backward", qv, k, v, g, opts);  // before sizing the gradients from the inputs
  ChunkGLAGrads<scalar_type_t<Q>> r = detail::allocate_grads(qv, k, v, g, opts);
  chunk_gla_backward_into(qv, k, v, g, do_, dht, opts, r.dq, r.dk, r.dv, r.dg, detail::optional_output(r.dh0));
  return r;
}

/// Backward of chunk_gla from the states its forward kept (chunk_gla_keep_states), returning {dq, dk, dv, dg, dh0}.
/// See chunk_gla_backward_from_states_into.
template <class Q>
ChunkGLAGrads<scalar_type_t<Q>> chunk_gla_backward_from_states(
    const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v, ConstViewOf<Q, 4> g, ConstView<acc_t<scalar_type_t<Q>>, 5> h,
    ConstViewOf<Q, 4> do_, std::optional<ConstView<float, 4>> dht = std::nullopt, const GLAOptions& opts = {}) {
  const ConstViewOf<Q, 4> qv(q);
  detail::check_chunk_args("chunk_gla_backward_from_states", qv, k, v, g, opts);  // before sizing the gradients
  ChunkGLAGrads<scalar_type_t<Q>> r = detail::allocate_grads(qv, k, v, g, opts);
  chunk_gla_backward_from_states_into(qv, k, v, g, h, do_, dht, opts, r.dq, r.dk, r.dv, r.dg,
                                      detail::optional_output(r.dh0));
  return r;
}

/// Backward of fused_chunk_gla into caller views. It shares the chunked path of chunk_gla_backward_into (the
/// forwards compute the same function, so their gradients are the same), hence it stores the per-chunk states
/// (and, on the separate-pass path, their gradients: ΣNT·H·K·V accumulators each) unlike the fused forward. It
/// validates like fused_chunk_gla_into, including opts.max_seqlen (a longer sequence → gla::Error); heuristic_fallback
/// only chooses a forward path and is ignored here. Shapes, options, output contract, aliasing and threading as
/// chunk_gla_backward_into.
template <class Q>
void fused_chunk_gla_backward_into(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v, ConstViewOf<Q, 4> g,
                                   ConstViewOf<Q, 4> do_, std::optional<ConstView<float, 4>> dht,
                                   const GLAOptions& opts, ViewOf<Q, 4> dq, ViewOf<Q, 4> dk, ViewOf<Q, 4> dv,
                                   ViewOf<Q, 4> dg, std::optional<View<float, 4>> dh0 = std::nullopt) {
  using T = scalar_type_t<Q>;
  static_assert(is_supported_scalar_v<T>,
                "fused_chunk_gla_backward: inputs must be float, double, Eigen::bfloat16 or Eigen::half");
  const std::string fn = "fused_chunk_gla_backward";
  const ConstView<T, 4> qv(q);
  const detail::OpShape s = detail::check_chunk_backward_args(fn, qv, k, v, g, do_, dht, opts, dq, dk, dv, dg, dh0);
  detail::check_max_seqlen(fn, s, opts);
  detail::chunk_gla_backward_impl<T>(s, qv, k, v, g.data(), do_, dht, opts, dq.data(), dk.data(), dv.data(), dg.data(),
                                     dh0);
}

/// Backward of fused_chunk_gla returning {dq, dk, dv, dg, dh0}; see fused_chunk_gla_backward_into.
template <class Q>
ChunkGLAGrads<scalar_type_t<Q>> fused_chunk_gla_backward(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v,
                                                         ConstViewOf<Q, 4> g, ConstViewOf<Q, 4> do_,
                                                         std::optional<ConstView<float, 4>> dht = std::nullopt,
                                                         const GLAOptions& opts = {}) {
  const ConstViewOf<Q, 4> qv(q);
  detail::check_chunk_args("fused_chunk_gla_backward", qv, k, v, g, opts);  // before sizing the gradients
  ChunkGLAGrads<scalar_type_t<Q>> r = detail::allocate_grads(qv, k, v, g, opts);
  fused_chunk_gla_backward_into(qv, k, v, g, do_, dht, opts, r.dq, r.dk, r.dv, r.dg, detail::optional_output(r.dh0));
  return r;
}

}  // namespace gla
