#pragma once
/// gla/chunk.hpp: chunk_gla, the two-phase chunked GLA forward of fla (ops/gla/chunk.py): first the state
/// before every chunk (chunk_fwd_h), then the outputs of all chunks independently.

#include <gla/chunk_h.hpp>
#include <gla/cumsum.hpp>
#include <gla/detail/fused_chunk_sweep.hpp>

namespace gla {

namespace detail {

/// Checks shared by chunk_gla and fused_chunk_gla (forward and backward); returns the problem shape.
template <class T>
OpShape check_chunk_args(const std::string& fn, const ConstView<T, 4>& q, const ConstView<T, 4>& k,
                         const ConstView<T, 4>& v, const ConstView<T, 4>& g, const GLAOptions& opts) {
  OpShape s = check_qkv(fn, q.dimensions(), k.dimensions(), v.dimensions(), opts);
  expect_dims(fn, "g", g.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  check_chunk_size(fn, opts.chunk_size);
  reject_option(fn, opts.reverse, "reverse (only fused_recurrent_gla runs backwards)");
  reject_option(fn, !opts.gamma.empty() || opts.state_clamp_min || opts.state_clamp_max,
                "gamma/state_clamp_min/state_clamp_max (fused_recurrent_gla only)");
  return s;
}

/// Checks the caller's output views of a forward operator: shapes, the output contract and the aliasing rule
/// (final_state may be the very buffer of opts.initial_state; nothing else may overlap). `inputs` lists the
/// operator's tensor inputs; `kept` is chunk_gla's optional output of per-chunk states (size 0: none).
template <class T>
void check_forward_outputs(const std::string& fn, const OpShape& s, const GLAOptions& opts, const View<T, 4>& o,
                           const std::optional<View<float, 4>>& final_state, std::initializer_list<Buffer> inputs,
                           const Buffer& kept = Buffer{"h", nullptr, 0}) {
  expect_dims(fn, "o", o.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  expect_output_iff(fn, "final_state", final_state, opts.output_final_state, "output_final_state is true",
                    "output_final_state is false");
  if (final_state) expect_state_dims(fn, "final_state", final_state->dimensions(), s, opts.state_v_first);
  std::vector<Buffer> ins(inputs);
  ins.push_back(buffer("initial_state", opts.initial_state));
  check_aliasing(fn, ins, {buffer("o", o), buffer("final_state", final_state), kept},
                 {{"final_state", "initial_state"}});
}

/// The convenience API's outputs: o shaped like v and, when requested, the final state (sized from the
/// inputs before validation; the `_into` call then validates everything).
template <class T>
GLAResult<T> allocate_result(const ConstView<T, 4>& q, const ConstView<T, 4>& v, const GLAOptions& opts) {
  GLAResult<T> r;
  r.o = Tensor<T, 4>(v.dimensions());
  if (opts.output_final_state) {
    const Index N =
        std::max<Index>(0, opts.cu_seqlens.empty() ? q.dimension(0) : static_cast<Index>(opts.cu_seqlens.size()) - 1);
    r.final_state = opts.state_v_first ? Tensor<float, 4>(N, q.dimension(2), v.dimension(3), q.dimension(3))
                                       : Tensor<float, 4>(N, q.dimension(2), q.dimension(3), v.dimension(3));
  }
  return r;
}

/// The (sequence, chunk) pairs of a batch, in order; offsets from chunk_offsets.
inline std::vector<std::array<Index, 2>> chunk_list(const OpShape& s, const std::vector<Index>& off) {
  std::vector<std::array<Index, 2>> chunks;
  for (Index n = 0; n < s.N; ++n)
    for (Index c = 0; c < off[static_cast<std::size_t>(n) + 1] - off[static_cast<std::size_t>(n)]; ++c)
      chunks.push_back({n, c});
  return chunks;
}

/// The state before every chunk (h [ΣNT,H,K,V] in Acc, K-first; [ΣNT,H,V,K] with h_v_first) and the final state
/// (ht, float, in the options' layout; may be null) of the gk-gated recurrence, per head group (sweep_groups:
/// consecutive heads of one sequence over one value tile, advancing chunk by chunk together); the gate cumsums are
/// formed per chunk from the raw gates g. h0 float (state layout) or null. One scratch per worker, with a state tile
/// per head of the largest group.
template <class Acc, class Op, class In>
void chunk_state_sweep(const OpShape& s, Index BT, const In* k, const In* v, const In* g, const float* h0, bool v_first,
                       Acc* h, bool h_v_first, float* ht, const std::vector<HeadGroup>& groups,
                       const std::vector<ChunkScratch<Acc, Op>>& workers) {
  const Index H = s.H, K = s.K, V = s.V;
  const Acc floor = kChunkGateFloor<Acc>;
  const std::vector<Index> off = chunk_offsets(s, BT);
  const OutputWrites h_writes = OutputWrites::for_tensor<Acc>(off.back() * H * K * V);
  parallel_for(static_cast<Index>(groups.size()), [&](Index i, int w) {
    const AmxTileScope tiles;  // the item's bfloat16 products keep one tile configuration
    const HeadGroup& gr = groups[static_cast<std::size_t>(i)];
    const ChunkScratch<Acc, Op>& sc = workers[static_cast<std::size_t>(w)];
    const Index n = gr.n, Wt = gr.width;
    const Seq& sq = s.seqs[static_cast<std::size_t>(n)];
    const auto state_of = [&](Index j) { return sc.S + j * K * Wt; };  // head gr.h0 + j's state tile
    load_group_states(sc.S, gr, h0, H, K, V, v_first);
    ChunkGates<Acc> cg;
    cg.gk = sc.G;
    cg.ldgk = K;
    Index c = 0;
    for (Index c0 = 0; c0 < sq.len; c0 += BT, ++c) {
      const Index L = std::min(BT, sq.len - c0);
      for (Index j = 0; j < gr.count; ++j) {
        const Index hh = gr.h0 + j;
        Acc* const S = state_of(j);
        store_state_tile(S, h + ((off[static_cast<std::size_t>(n)] + c) * H + hh) * K * V, K, V, gr.v0, Wt, h_v_first,
                         h_writes);
        {  // the rows of the group's next (chunk, head), fetched while this one computes (see prefetch_rows)
          const bool last = j + 1 == gr.count;
          const Index c1 = last ? c0 + BT : c0, h1 = last ? gr.h0 : hh + 1;
          if (c1 < sq.len) {
            const Index L1 = std::min(BT, sq.len - c1);
            prefetch_rows(head_rows(k, s, sq, h1, c1, K), L1, K);
            prefetch_rows(head_rows(v, s, sq, h1, c1, V, gr.v0), L1, Wt);
            prefetch_rows(head_rows(g, s, sq, h1, c1, K), L1, K);
          }
        }
        gate_cumsum(head_rows(g, s, sq, hh, c0, K), L, K, floor, sc.G);
        state_update<kGateGk>(S, Wt, head_rows(k, s, sq, hh, c0, K), head_rows(v, s, sq, hh, c0, V, gr.v0), cg, L, K,
                              Wt, sc);
      }
    }
    if (ht) store_group_states(sc.S, gr, ht, H, K, V, v_first);
  });
}

/// The scratch of chunk_gla: the per-chunk states, then one tile set per worker (shared by both phases).
template <class Acc, class Op>
struct ChunkGlaPlan {
  Acc* h = nullptr;  // [ΣNT,H,K,V] the state before every chunk
  std::vector<ChunkScratch<Acc, Op>> workers;
};

/// states: ΣNT (chunks of all sequences); items: the most work items of either phase; heads: the most heads in a
/// group of the state sweep.
template <class Acc, class Op>
ChunkGlaPlan<Acc, Op> plan_chunk_gla(Arena& a, const OpShape& s, Index BT, Index states, Index items, Index heads) {
  ChunkGlaPlan<Acc, Op> p;
  p.h = a.take<Acc>(states * s.H * s.K * s.V);
  p.workers = plan_workers<Acc, Op>(a, items, BT, s.K, s.V, heads);
  return p;
}

/// Whether chunk_gla runs the single sweep of fused_chunk_gla (true) or fla's two phases. Both compute the same
/// function; on a CPU the two phases cost ≈ 1.4× the sweep, because phase 1 writes every chunk's state
/// (ΣNT·H·K·V floats, 67 MB at B1 T4096 H16 K=V=128) and phase 2 reads it back with the inputs a second time
/// (docs/PERFORMANCE.md). The two phases parallelise over chunks, though, which the sweep cannot: with fewer
/// than 4 (sequence, head) pairs (e.g. B = 1, H = 1) they keep both threads busy. A rule on the shape alone, so
/// results never depend on the thread count.
inline bool chunk_gla_single_sweep(const OpShape& s) { return s.N * s.H >= 4; }

/// chunk_gla after validation: the single sweep or the two phases (chunk_gla_single_sweep); g may be null (no
/// decay, plain linear attention). h: when not null, the state before every chunk is kept there
/// (chunk_states_dims layout) for the backward.
template <class T>
void chunk_gla_run(const OpShape& s, const ConstView<T, 4>& q, const ConstView<T, 4>& k, const ConstView<T, 4>& v,
                   const T* g, const GLAOptions& opts, const View<T, 4>& o, float* ht, acc_t<T>* h_keep = nullptr) {
  if (chunk_gla_single_sweep(s)) {
    fused_chunk_run(s, q, k, v, g, opts, o, ht, /*token_fallback=*/false, h_keep);
    return;
  }
  using Acc = acc_t<T>;
  with_operand_scalar<T>([&](auto operand) {
    using Op = typename decltype(operand)::type;
    const Index BT = opts.chunk_size, H = s.H, K = s.K, V = s.V;
    const Acc scale = resolve_scale<Acc>(opts, K);
    const Acc floor = kChunkGateFloor<Acc>;
    const std::vector<Index> off = chunk_offsets(s, BT);
    const std::vector<HeadGroup> sweep = sweep_groups<Acc>(s);
    const std::vector<std::array<Index, 2>> chunks = chunk_list(s, off);
    const Index work = static_cast<Index>(chunks.size()) * H;
    Scratch scratch;
    const ChunkGlaPlan<Acc, Op> pl = scratch.carve(opts.workspace, [&](Arena& a) {
      return plan_chunk_gla<Acc, Op>(a, s, BT, off.back(), std::max<Index>(work, static_cast<Index>(sweep.size())),
                                     max_group_heads(sweep));
    });
    const float* h0 = opts.initial_state ? opts.initial_state->data() : nullptr;

    // Phase 1: the state before every chunk, per head group (K-first, as phase 2 multiplies it: straight into the
    // caller's h when that is K-first too).
    const bool into_keep = h_keep != nullptr && !opts.state_v_first;
    Acc* const h = into_keep ? h_keep : pl.h;
    chunk_state_sweep(s, BT, k.data(), v.data(), g, h0, opts.state_v_first, h, /*h_v_first=*/false, ht, sweep,
                      pl.workers);

    // Phase 2: every (chunk, head) independently.
    const OutputWrites o_writes = OutputWrites::for_tensor<T>(o.size());
    const OutputWrites keep_writes = OutputWrites::for_tensor<Acc>(h_keep ? off.back() * H * K * V : 0);
    parallel_for(work, [&](Index w, int worker) {
      const AmxTileScope tiles;  // the item's bfloat16 products keep one tile configuration
      const auto [n, c] = chunks[static_cast<std::size_t>(w / H)];
      const Index hh = w % H;
      const Seq& sq = s.seqs[static_cast<std::size_t>(n)];
      const Index c0 = c * BT, L = std::min(BT, sq.len - c0);
      const ChunkScratch<Acc, Op>& sc = pl.workers[static_cast<std::size_t>(worker)];
      const auto gr = head_rows(g, s, sq, hh, c0, K);
      const Rows<Op> vop = as_operand<Op>(head_rows(v.data(), s, sq, hh, c0, V), L, V, sc.vop);
      const Index slot = ((off[static_cast<std::size_t>(n)] + c) * H + hh) * K * V;
      const Acc* S = h + slot;
      if (h_keep && !into_keep) store_state_tile(S, h_keep + slot, K, V, 0, V, /*v_first=*/true, keep_writes);
      chunk_output(head_rows(q.data(), s, sq, hh, c0, K), head_rows(k.data(), s, sq, hh, c0, K), gr, floor, vop, S, V,
                   scale, L, K, V, sc, BT);
      store_tile_rows(sc.O, L, V, o.data() + ((sq.b * s.T + sq.t0 + c0) * H + hh) * V, H * V, o_writes);
    });
  });
}

}  // namespace detail

/// Bytes of scratch chunk_gla (and the forward of chunk_gla_backward's recompute) needs for inputs of the given
/// scalar and shape with these options on the current thread count: size a Workspace with it once (see
/// gla/workspace.hpp). A bad chunk_size is a gla::Error.
template <class Scalar = float>
std::size_t chunk_gla_workspace_size(Index B, Index T, Index H, Index K, Index V, const GLAOptions& opts = {}) {
  static_assert(is_supported_scalar_v<Scalar>, "chunk_gla_workspace_size: unsupported scalar type");
  const detail::OpShape s = detail::shape_of("chunk_gla_workspace_size", B, T, H, K, V, opts);
  const Index BT = opts.chunk_size;
  if (detail::chunk_gla_single_sweep(s)) return detail::fused_chunk_workspace_bytes<Scalar>(s, BT);
  const std::vector<Index> off = detail::chunk_offsets(s, BT);
  const std::vector<detail::HeadGroup> sweep = detail::sweep_groups<acc_t<Scalar>>(s);
  const Index items =
      std::max<Index>(static_cast<Index>(detail::chunk_list(s, off).size()) * H, static_cast<Index>(sweep.size()));
  return detail::with_operand_scalar<Scalar>([&](auto operand) {
    using Op = typename decltype(operand)::type;
    return detail::planned_bytes([&](detail::Arena& a) {
      return detail::plan_chunk_gla<acc_t<Scalar>, Op>(a, s, BT, off.back(), items, detail::max_group_heads(sweep));
    });
  });
}

/// Chunked GLA forward, writing into caller views (nothing is written when validation fails):
///   S_t = diag(e^{g_t}) S_{t−1} + k_t v_tᵀ,  o_t = scale · q_tᵀ S_t.
/// q, k, g [B,T,H,K] and v [B,T,H,V] (float, double, bf16, half; g = per-step natural-log gate, ≤ 0, values
/// below −30 act as −30, see docs/chunk_algorithm.md); o [B,T,H,V] of the same scalar; final_state float
/// [N,H,K,V] (or [N,H,V,K] with state_v_first), given if and only if opts.output_final_state. final_state may
/// be the very buffer of opts.initial_state (in-place update); no other output may overlap an input.
/// Options: scale, initial_state, output_final_state, state_v_first, cu_seqlens, chunk_size, workspace.
/// How: with at least 4 (sequence, head) pairs, the single sweep of fused_chunk_gla (each chunk's output from the
/// carried state, no per-chunk states stored; never token by token); with fewer, fla's two phases (the state
/// before every chunk, then all chunks' outputs in parallel). Same function either way.
/// Scratch (chunk_gla_workspace_size): per-thread tiles and, on the two-phase path, the per-chunk states
/// (ΣNT·H·K·V accumulators); from opts.workspace or allocated for the call. bf16 inputs multiply as bf16 with fp32
/// accumulation where AMX tiles run the products (gla/detail/gemm_amx.hpp; else they are widened to float); states are
/// fp32. Threads: the parallel engine over groups of consecutive heads of one sequence (and value tiles); on the
/// two-phase path then over (chunk, head) for the outputs; results do not depend on the thread count.
template <class Q>
void chunk_gla_into(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v, ConstViewOf<Q, 4> g, const GLAOptions& opts,
                    ViewOf<Q, 4> o, std::optional<View<float, 4>> final_state = std::nullopt) {
  using T = scalar_type_t<Q>;
  static_assert(is_supported_scalar_v<T>, "chunk_gla: inputs must be float, double, Eigen::bfloat16 or Eigen::half");
  const std::string fn = "chunk_gla";
  const ConstView<T, 4> qv(q);
  const detail::OpShape s = detail::check_chunk_args(fn, qv, k, v, g, opts);
  detail::check_forward_outputs(
      fn, s, opts, o, final_state,
      {detail::buffer("q", qv), detail::buffer("k", k), detail::buffer("v", v), detail::buffer("g", g)});
  detail::chunk_gla_run(s, qv, k, v, g.data(), opts, o, final_state ? final_state->data() : nullptr);
}

/// Shape of the per-chunk states that chunk_gla keeps for chunk_gla_backward (and that chunk_fwd_h returns) for
/// inputs of these sizes and options: [B,NT,H,K,V] with NT = ⌈T/chunk_size⌉, varlen [1,ΣNT,H,K,V]; K and V swapped
/// with state_v_first. Bad sizes or options are a gla::Error, as in the operators.
inline std::array<Index, 5> chunk_gla_states_dims(Index B, Index T, Index H, Index K, Index V,
                                                  const GLAOptions& opts = {}) {
  const detail::OpShape s = detail::shape_of("chunk_gla_states_dims", B, T, H, K, V, opts);
  return detail::chunk_states_dims(s, opts);
}

/// chunk_gla_into that also keeps, in h, the state before every chunk, for chunk_gla_backward_from_states_into to
/// take instead of recomputing it (fla's chunk_gla_bwd takes the forward's h the same way): a training step's
/// forward. h [B,NT,H,K,V] (varlen [1,ΣNT,H,K,V]; [..,V,K] with state_v_first; chunk_gla_states_dims) in the
/// accumulation scalar (float; double for double inputs); it may not overlap any input or output. The outputs o
/// and final_state are bit-identical to chunk_gla_into's. Costs one more write of ΣNT·H·K·V accumulators (67 MB at
/// B1 T4096 H16 K=V=128), which saves the backward a sweep of the recurrence (docs/PERFORMANCE.md); the values
/// equal chunk_fwd_h's for the chunk-local cumsum of g, up to rounding.
template <class Q>
void chunk_gla_keep_states_into(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v, ConstViewOf<Q, 4> g,
                                const GLAOptions& opts, ViewOf<Q, 4> o, std::optional<View<float, 4>> final_state,
                                View<acc_t<scalar_type_t<Q>>, 5> h) {
  using T = scalar_type_t<Q>;
  static_assert(is_supported_scalar_v<T>,
                "chunk_gla_keep_states: inputs must be float, double, Eigen::bfloat16 or Eigen::half");
  const std::string fn = "chunk_gla_keep_states";
  const ConstView<T, 4> qv(q);
  const detail::OpShape s = detail::check_chunk_args(fn, qv, k, v, g, opts);
  detail::expect_chunk_states_dims(fn, "h", h.dimensions(), s, opts);
  detail::check_forward_outputs(
      fn, s, opts, o, final_state,
      {detail::buffer("q", qv), detail::buffer("k", k), detail::buffer("v", v), detail::buffer("g", g)},
      detail::buffer("h", h));
  detail::chunk_gla_run(s, qv, k, v, g.data(), opts, o, final_state ? final_state->data() : nullptr, h.data());
}

/// What chunk_gla_keep_states returns: chunk_gla's outputs and the states it keeps for the backward.
template <class T>
struct GLAResultWithStates {
  Tensor<T, 4> o;
  std::optional<Tensor<float, 4>> final_state;
  Tensor<acc_t<T>, 5> h;  ///< the state before every chunk (chunk_gla_states_dims)
};

/// chunk_gla that also returns the state before every chunk, to pass to chunk_gla_backward_from_states (a training
/// step's forward). See chunk_gla_keep_states_into.
template <class Q>
GLAResultWithStates<scalar_type_t<Q>> chunk_gla_keep_states(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v,
                                                            ConstViewOf<Q, 4> g, const GLAOptions& opts = {}) {
  const ConstViewOf<Q, 4> qv(q);
  const detail::OpShape s =
      detail::check_chunk_args("chunk_gla_keep_states", qv, k, v, g, opts);  // before sizing outputs
  GLAResult<scalar_type_t<Q>> r = detail::allocate_result(qv, v, opts);
  GLAResultWithStates<scalar_type_t<Q>> out{std::move(r.o), std::move(r.final_state),
                                            Tensor<acc_t<scalar_type_t<Q>>, 5>(detail::chunk_states_dims(s, opts))};
  chunk_gla_keep_states_into(qv, k, v, g, opts, out.o, detail::optional_output(out.final_state), out.h);
  return out;
}

/// Chunked GLA forward (fla's chunk_gla): returns o [B,T,H,V] and, with opts.output_final_state, the final
/// state float [N,H,K,V] (or V-first). The scalar type is the inputs'. See chunk_gla_into for shapes, options
/// and threading.
template <class Q>
GLAResult<scalar_type_t<Q>> chunk_gla(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v, ConstViewOf<Q, 4> g,
                                      const GLAOptions& opts = {}) {
  const ConstViewOf<Q, 4> qv(q);
  detail::check_chunk_args("chunk_gla", qv, k, v, g, opts);  // before sizing the outputs from the inputs
  GLAResult<scalar_type_t<Q>> r = detail::allocate_result(qv, v, opts);
  chunk_gla_into(qv, k, v, g, opts, r.o, detail::optional_output(r.final_state));
  return r;
}

}  // namespace gla
