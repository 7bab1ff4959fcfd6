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
/// returns the shape.
template <class T>
OpShape check_chunk_backward_args(const std::string& fn, const ConstView<T, 4>& q, const ConstView<T, 4>& k,
                                  const ConstView<T, 4>& v, const ConstView<T, 4>& g, const ConstView<T, 4>& do_,
                                  const std::optional<ConstView<float, 4>>& dht, const GLAOptions& opts,
                                  const View<T, 4>& dq, const View<T, 4>& dk, const View<T, 4>& dv,
                                  const View<T, 4>& dg, const std::optional<View<float, 4>>& dh0) {
  const OpShape s = check_chunk_args(fn, q, k, v, g, opts);
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
                  buffer("dht", dht), buffer("initial_state", opts.initial_state)},
                 {buffer("dq", dq), buffer("dk", dk), buffer("dv", dv), buffer("dg", dg), buffer("dh0", dh0)},
                 {{"dh0", "dht"}});
  return s;
}

/// The chunked backward after validation (shared by chunk_gla_backward_into and fused_chunk_gla_backward_into).
/// Recomputes what the forward does not keep: the gate cumsum G and the state before every chunk h (fp32-or-
/// better, in acc_t<T>); computes dh by a reverse sweep per (sequence, head); then every (chunk, head)
/// independently. Memory: G (B·T·H·K), h and dh (2·ΣNT·H·K·V) in acc_t<T>, plus acc_t copies of bf16/half
/// inputs, all allocated before any thread starts.
template <class T>
void chunk_gla_backward_impl(const OpShape& s, const ConstView<T, 4>& q, const ConstView<T, 4>& k,
                             const ConstView<T, 4>& v, const ConstView<T, 4>& g, const ConstView<T, 4>& do_,
                             const std::optional<ConstView<float, 4>>& dht, const GLAOptions& opts,
                             const View<T, 4>& dq, const View<T, 4>& dk, const View<T, 4>& dv, const View<T, 4>& dg,
                             const std::optional<View<float, 4>>& dh0) {
  using Acc = acc_t<T>;
  const Index BT = opts.chunk_size, H = s.H, K = s.K, V = s.V;
  const Acc scale = resolve_scale<Acc>(opts, K);
  const AccInput<Acc, T> qa(q), ka(k), va(v), ga(g), doa(do_);

  // Recomputed: the chunk-local gate cumsum (as the forward) ...
  // Scratch is left uninitialised: every element is written before it is read (zero-filling 100+ MB per call
  // showed up as page faults and a serial section in the benchmarks).
  const auto G = uninitialized_buffer<Acc>(g.size());
  chunk_local_cumsum_into(ga.data(), G.get(), s.B, s.T, H, K, BT, false, 1.0, opts.cu_seqlens, kChunkGateFloor<Acc>);
  FullGates<Acc> fg;
  fg.gk = G.get();
  // ... and the state before every chunk (fla's backward recomputes them in fp32 too).
  const std::vector<Index> off = chunk_offsets(s, BT);
  const Index states = off.back() * H * K * V;
  const auto h = uninitialized_buffer<Acc>(states), dh = uninitialized_buffer<Acc>(states);
  // dh0 may be the very buffer of dht: the reverse sweep below reads dht before it writes dh0, pair by pair.
  chunk_fwd_h_impl<Acc, Acc>(s, BT, ka.data(), va.data(), fg, opts.initial_state ? opts.initial_state->data() : nullptr,
                             opts.state_v_first, h.get(), /*h_v_first=*/false, /*ht=*/nullptr);
  // dh[c] = ∂L/∂ the state after chunk c, and dh0.
  chunk_bwd_dh_impl<Acc, Acc>(s, BT, qa.data(), doa.data(), fg, scale, dht ? dht->data() : nullptr, opts.state_v_first,
                              dh.get(), /*dh_v_first=*/false, dh0 ? dh0->data() : nullptr);

  const std::vector<std::array<Index, 2>> chunks = chunk_list(s, off);
  const Index work = static_cast<Index>(chunks.size()) * H;
  auto ws = per_worker(work, ChunkBwdWorkspace<Acc>(BT, K, V));
  parallel_for(work, [&](Index w, int worker) {
    const auto [n, c] = chunks[static_cast<std::size_t>(w / H)];
    const Index hh = w % H;
    const Seq& sq = s.seqs[static_cast<std::size_t>(n)];
    const Index c0 = c * BT, L = std::min(BT, sq.len - c0);
    const Index state = ((off[static_cast<std::size_t>(n)] + c) * H + hh) * K * V;
    const Eigen::Map<const RowMat<Acc>> S(h.get() + state, K, V), dH(dh.get() + state, K, V);
    ChunkBwdWorkspace<Acc>& wsp = ws[static_cast<std::size_t>(worker)];
    chunk_gla_bwd_block(rows(qa.data(), s, sq, hh, c0, L, K), rows(ka.data(), s, sq, hh, c0, L, K),
                        rows(va.data(), s, sq, hh, c0, L, V), rows(ga.data(), s, sq, hh, c0, L, K),
                        rows(doa.data(), s, sq, hh, c0, L, V), S, dH, scale, L, kChunkGateFloor<Acc>, wsp);
    store_rows(dq.data(), s, sq, hh, c0, L, K, wsp.dq);
    store_rows(dk.data(), s, sq, hh, c0, L, K, wsp.dk);
    store_rows(dv.data(), s, sq, hh, c0, L, V, wsp.dv);
    store_rows(dg.data(), s, sq, hh, c0, L, K, wsp.dg);
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

}  // namespace detail

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
  const std::vector<Index> off = detail::chunk_offsets(s, BT);
  const Index NT = opts.cu_seqlens.empty() ? (s.T + BT - 1) / BT : off.back();
  const Index B = opts.cu_seqlens.empty() ? s.B : 1;
  ChunkBwdDhResult r;
  r.dh = opts.state_v_first ? Tensor<float, 5>(B, NT, s.H, s.V, s.K) : Tensor<float, 5>(B, NT, s.H, s.K, s.V);
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
/// chunk_gla does not return it); nothing but the inputs is saved from the forward. Memory: 2·ΣNT·H·K·V + B·T·H·K
/// accumulators. Computes in acc_t of the scalar. Threads: the parallel engine over (sequence, head) for the
/// states and their gradient, then over (chunk, head); results do not depend on the thread count.
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
  detail::chunk_gla_backward_impl<T>(s, qv, k, v, g, do_, dht, opts, dq, dk, dv, dg, dh0);
}

/// Backward of chunk_gla returning {dq, dk, dv, dg, dh0}; dh0 iff opts.initial_state is set.
/// See chunk_gla_backward_into for shapes, options, memory and threading.
template <class Q>
ChunkGLAGrads<scalar_type_t<Q>> chunk_gla_backward(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v,
                                                   ConstViewOf<Q, 4> g, ConstViewOf<Q, 4> do_,
                                                   std::optional<ConstView<float, 4>> dht = std::nullopt,
                                                   const GLAOptions& opts = {}) {
  const ConstViewOf<Q, 4> qv(q);
  ChunkGLAGrads<scalar_type_t<Q>> r = detail::allocate_grads(qv, k, v, g, opts);
  chunk_gla_backward_into(qv, k, v, g, do_, dht, opts, r.dq, r.dk, r.dv, r.dg, detail::optional_output(r.dh0));
  return r;
}

/// Backward of fused_chunk_gla into caller views. It shares the chunked path of chunk_gla_backward_into (the
/// forwards compute the same function, so their gradients are the same), hence it stores the per-chunk states
/// and their gradients (2·ΣNT·H·K·V accumulators) unlike the fused forward. It validates like
/// fused_chunk_gla_into, including opts.max_seqlen (a longer sequence → gla::Error); heuristic_fallback only
/// chooses a forward path and is ignored here. Shapes, options, output contract, aliasing and threading as
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
  detail::chunk_gla_backward_impl<T>(s, qv, k, v, g, do_, dht, opts, dq, dk, dv, dg, dh0);
}

/// Backward of fused_chunk_gla returning {dq, dk, dv, dg, dh0}; see fused_chunk_gla_backward_into.
template <class Q>
ChunkGLAGrads<scalar_type_t<Q>> fused_chunk_gla_backward(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v,
                                                         ConstViewOf<Q, 4> g, ConstViewOf<Q, 4> do_,
                                                         std::optional<ConstView<float, 4>> dht = std::nullopt,
                                                         const GLAOptions& opts = {}) {
  const ConstViewOf<Q, 4> qv(q);
  ChunkGLAGrads<scalar_type_t<Q>> r = detail::allocate_grads(qv, k, v, g, opts);
  fused_chunk_gla_backward_into(qv, k, v, g, do_, dht, opts, r.dq, r.dk, r.dv, r.dg, detail::optional_output(r.dh0));
  return r;
}

}  // namespace gla
