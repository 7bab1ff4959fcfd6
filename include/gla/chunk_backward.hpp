#pragma once
/// gla/chunk_backward.hpp: the backward of the chunked GLA (fla's chunk_gla_bwd): chunk_bwd_dh, the reverse
/// state-gradient recurrence over chunks (fla's ops/common/chunk_h.py), and chunk_gla_backward /
/// fused_chunk_gla_backward, the gradients of chunk_gla / fused_chunk_gla w.r.t. q, k, v, g and h0.

#include <gla/chunk.hpp>
#include <gla/fused_chunk.hpp>
#include <gla/detail/chunk_backward_kernels.hpp>

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

/// Checks dht [N,H,K,V] (or [N,H,V,K] with state_v_first) against the problem shape.
inline void check_dht(const std::string& fn, const OpShape& s, const std::optional<ConstTensorMap<float, 4>>& dht,
                      bool v_first) {
  if (!dht) return;
  if (v_first)
    expect_dims(fn, "dht (state_v_first)", dht->dimensions(), {{"N", s.N}, {"H", s.H}, {"V", s.V}, {"K", s.K}});
  else
    expect_dims(fn, "dht", dht->dimensions(), {{"N", s.N}, {"H", s.H}, {"K", s.K}, {"V", s.V}});
}

/// Checks every argument of chunk_gla_backward_into / fused_chunk_gla_backward_into; returns the shape.
template <class T>
OpShape check_chunk_backward_args(const std::string& fn, const ConstTensorMap<T, 4>& q, const ConstTensorMap<T, 4>& k,
                                  const ConstTensorMap<T, 4>& v, const ConstTensorMap<T, 4>& g,
                                  const ConstTensorMap<T, 4>& do_, const std::optional<ConstTensorMap<float, 4>>& dht,
                                  const GLAOptions& opts, const TensorMap<T, 4>& dq, const TensorMap<T, 4>& dk,
                                  const TensorMap<T, 4>& dv, const TensorMap<T, 4>& dg,
                                  const std::optional<TensorMap<float, 4>>& dh0) {
  const OpShape s = check_chunk_args(fn, q, k, v, g, opts);
  expect_dims(fn, "do_", do_.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  check_dht(fn, s, dht, opts.state_v_first);
  expect_dims(fn, "dq", dq.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  expect_dims(fn, "dk", dk.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  expect_dims(fn, "dv", dv.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  expect_dims(fn, "dg", dg.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  if (dh0) {
    if (opts.state_v_first)
      expect_dims(fn, "dh0 (state_v_first)", dh0->dimensions(), {{"N", s.N}, {"H", s.H}, {"V", s.V}, {"K", s.K}});
    else
      expect_dims(fn, "dh0", dh0->dimensions(), {{"N", s.N}, {"H", s.H}, {"K", s.K}, {"V", s.V}});
  }
  return s;
}

/// The chunked backward after validation (shared by chunk_gla_backward_into and fused_chunk_gla_backward_into).
/// Recomputes what the forward does not keep: the gate cumsum G and the state before every chunk h (fp32-or-
/// better, in acc_t<T>); computes dh by a reverse sweep per (sequence, head); then every (chunk, head)
/// independently. Memory: G (B·T·H·K), h and dh (2·ΣNT·H·K·V) in acc_t<T>, plus acc_t copies of bf16/half inputs.
template <class T>
void chunk_gla_backward_impl(const OpShape& s, const ConstTensorMap<T, 4>& q, const ConstTensorMap<T, 4>& k,
                             const ConstTensorMap<T, 4>& v, const ConstTensorMap<T, 4>& g,
                             const ConstTensorMap<T, 4>& do_, const std::optional<ConstTensorMap<float, 4>>& dht,
                             const GLAOptions& opts, TensorMap<T, 4>& dq, TensorMap<T, 4>& dk, TensorMap<T, 4>& dv,
                             TensorMap<T, 4>& dg, std::optional<TensorMap<float, 4>>& dh0) {
  using Acc = acc_t<T>;
  const Index BT = opts.chunk_size, H = s.H, K = s.K, V = s.V;
  const Acc scale = resolve_scale<Acc>(opts, K);
  const AccInput<Acc, T> qa(q), ka(k), va(v), ga(g), doa(do_);

  // Recomputed: the chunk-local gate cumsum (as the forward) ...
  // Scratch is left uninitialised: every element is written before it is read (zero-filling 100+ MB per call
  // showed up as page faults and a serial section in the benchmarks).
  const auto G = uninitialized_buffer<Acc>(g.size());
  chunk_local_cumsum_into(ga.data(), G.get(), s.B, s.T, H, K, BT, false, 1.0, opts.cu_seqlens);
  FullGates<Acc> fg;
  fg.gk = G.get();
  // ... and the state before every chunk (fla's backward recomputes them in fp32 too).
  const std::vector<Index> off = chunk_offsets(s, BT);
  const Index states = off.back() * H * K * V;
  const auto h = uninitialized_buffer<Acc>(states), dh = uninitialized_buffer<Acc>(states);
  chunk_fwd_h_impl<Acc, Acc>(s, BT, ka.data(), va.data(), fg, opts.initial_state ? opts.initial_state->data() : nullptr,
                             opts.state_v_first, h.get(), /*h_v_first=*/false, /*ht=*/nullptr);
  // dh[c] = ∂L/∂ the state after chunk c, and dh0.
  chunk_bwd_dh_impl<Acc, Acc>(s, BT, qa.data(), doa.data(), fg, scale, dht ? dht->data() : nullptr, opts.state_v_first,
                              dh.get(), /*dh_v_first=*/false, dh0 ? dh0->data() : nullptr);

  std::vector<std::array<Index, 2>> chunks;  // (sequence, chunk within sequence)
  for (Index n = 0; n < s.N; ++n)
    for (Index c = 0; c < off[static_cast<std::size_t>(n) + 1] - off[static_cast<std::size_t>(n)]; ++c)
      chunks.push_back({n, c});
  const Index work = static_cast<Index>(chunks.size()) * H;
#ifdef _OPENMP
#pragma omp parallel num_threads(num_threads_for(work))
#endif
  {
    ChunkBwdWorkspace<Acc> ws;
    ws.reserve(BT, K, V);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (Index w = 0; w < work; ++w) {
      const auto [n, c] = chunks[static_cast<std::size_t>(w / H)];
      const Index hh = w % H;
      const Seq& sq = s.seqs[static_cast<std::size_t>(n)];
      const Index c0 = c * BT, L = std::min(BT, sq.len - c0);
      const Index state = ((off[static_cast<std::size_t>(n)] + c) * H + hh) * K * V;
      const Eigen::Map<const RowMat<Acc>> S(h.get() + state, K, V), dH(dh.get() + state, K, V);
      chunk_gla_bwd_block(rows(qa.data(), s, sq, hh, c0, L, K), rows(ka.data(), s, sq, hh, c0, L, K),
                          rows(va.data(), s, sq, hh, c0, L, V), rows(ga.data(), s, sq, hh, c0, L, K),
                          rows(doa.data(), s, sq, hh, c0, L, V), S, dH, scale, L, ws);
      store_rows(dq.data(), s, sq, hh, c0, L, K, ws.dq);
      store_rows(dk.data(), s, sq, hh, c0, L, K, ws.dk);
      store_rows(dv.data(), s, sq, hh, c0, L, V, ws.dv);
      store_rows(dg.data(), s, sq, hh, c0, L, K, ws.dg);
    }
  }
}

/// The owned outputs of the convenience API, sized from the inputs before validation (the `_into` call then
/// validates everything): dq like q, dk like k, dv like v, dg like g, dh0 like initial_state when it is set.
template <class T>
ChunkGLAGrads<T> allocate_grads(const ConstTensorMap<T, 4>& q, const ConstTensorMap<T, 4>& k,
                                const ConstTensorMap<T, 4>& v, const ConstTensorMap<T, 4>& g, const GLAOptions& opts) {
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
/// q, k [B,T,H,K], v, do_ [B,T,H,V] in T (float, double, bf16, half; accumulated in acc_t<T>; k and v give the
/// shape only, as in fla); gates as ChunkHGates (natural-log chunk-local cumsums made with opts.chunk_size;
/// g_gamma the per-step log decay); dht float [N,H,K,V] (or V-first) or absent (= 0).
/// Returns dh float [B,NT,H,K,V] (varlen [1,ΣNT,H,K,V]; V-first with state_v_first) and dh0 iff
/// opts.initial_state is set. Options: scale (default 1/sqrt(K)), initial_state (shape only), state_v_first,
/// cu_seqlens, chunk_size. Threads: OpenMP over (sequence, head); deterministic.
template <class T>
ChunkBwdDhResult chunk_bwd_dh(ConstTensorMap<T, 4> q, ConstTensorMap<T, 4> k, ConstTensorMap<T, 4> v,
                              ConstTensorMap<T, 4> do_, const ChunkHGates& gates,
                              std::optional<ConstTensorMap<float, 4>> dht = std::nullopt, const GLAOptions& opts = {}) {
  static_assert(is_supported_scalar_v<T>, "chunk_bwd_dh: unsupported scalar type");
  using Acc = acc_t<T>;
  const std::string fn = "chunk_bwd_dh";
  const detail::OpShape s = detail::check_qkv(fn, q.dimensions(), k.dimensions(), v.dimensions(), opts);
  detail::check_chunk_size(fn, opts.chunk_size);
  detail::reject_option(fn, opts.reverse, "reverse");
  detail::reject_option(fn, !opts.gamma.empty() || opts.state_clamp_min || opts.state_clamp_max,
                        "gamma/state_clamp_min/state_clamp_max (fused_recurrent_gla only)");
  detail::expect_dims(fn, "do_", do_.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  if (gates.g) detail::expect_dims(fn, "g", gates.g->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}});
  if (gates.gk) detail::expect_dims(fn, "gk", gates.gk->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  if (gates.gv) detail::expect_dims(fn, "gv", gates.gv->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  if (gates.g_gamma) detail::expect_dims(fn, "g_gamma", gates.g_gamma->dimensions(), {{"H", s.H}});
  detail::check_dht(fn, s, dht, opts.state_v_first);

  const Index BT = opts.chunk_size;
  const std::vector<Index> off = detail::chunk_offsets(s, BT);
  const Index NT = opts.cu_seqlens.empty() ? (s.T + BT - 1) / BT : off.back();
  const Index B = opts.cu_seqlens.empty() ? s.B : 1;
  ChunkBwdDhResult r;
  r.dh = opts.state_v_first ? Tensor<float, 5>(B, NT, s.H, s.V, s.K) : Tensor<float, 5>(B, NT, s.H, s.K, s.V);
  // Chunks past the end of a sequence do not exist in a fixed-length batch (all rows have T tokens), so every
  // entry of dh is written by the sweep.
  if (opts.initial_state) r.dh0 = Tensor<float, 4>(detail::state_dims(s, opts.state_v_first));

  const detail::AccInput<Acc, T> qa(q), doa(do_);
  const detail::AccGates<Acc> acc_gates(gates, s.H);
  const detail::FullGates<Acc>& fg = acc_gates.full;
  detail::chunk_bwd_dh_impl<Acc, float>(s, BT, qa.data(), doa.data(), fg, detail::resolve_scale<Acc>(opts, s.K),
                                        dht ? dht->data() : nullptr, opts.state_v_first, r.dh.data(),
                                        opts.state_v_first, r.dh0 ? r.dh0->data() : nullptr);
  return r;
}

/// Backward of chunk_gla into caller views (nothing is written when validation fails), for the loss
/// L = Σ o·do_ + Σ final_state·dht of the forward S_t = diag(e^{g_t}) S_{t−1} + k_t v_tᵀ, o_t = scale q_tᵀ S_t:
///   q, k, g [B,T,H,K], v [B,T,H,V] in T: the forward's inputs (g = per-step natural-log gate, <= 0);
///   do_ [B,T,H,V] in T: ∂L/∂o;  dht float [N,H,K,V] (or [N,H,V,K] with state_v_first): ∂L/∂final_state, or
///   absent (= 0);
///   dq, dk, dg [B,T,H,K] and dv [B,T,H,V] in T: the gradients (dg w.r.t. the raw per-step g);
///   dh0 float [N,H,K,V] (or V-first): ∂L/∂initial_state, written when given (the gradient w.r.t. a zero
///   initial state when opts.initial_state is unset).
/// Options as chunk_gla (scale, initial_state, state_v_first, cu_seqlens, chunk_size); use the forward's.
/// Recomputed, as fla does: the gate cumsum and the state before every chunk (A is recomputed too, since
/// chunk_gla does not return it); nothing but the inputs is saved from the forward. Memory: 2·ΣNT·H·K·V + B·T·H·K
/// accumulators. Computes in acc_t<T>. Threads: OpenMP over (sequence, head) for the states and their gradient,
/// then over (chunk, head); results do not depend on the thread count.
template <class T>
void chunk_gla_backward_into(ConstTensorMap<T, 4> q, ConstTensorMap<T, 4> k, ConstTensorMap<T, 4> v,
                             ConstTensorMap<T, 4> g, ConstTensorMap<T, 4> do_,
                             std::optional<ConstTensorMap<float, 4>> dht, const GLAOptions& opts, TensorMap<T, 4> dq,
                             TensorMap<T, 4> dk, TensorMap<T, 4> dv, TensorMap<T, 4> dg,
                             std::optional<TensorMap<float, 4>> dh0) {
  static_assert(is_supported_scalar_v<T>, "chunk_gla_backward: unsupported scalar type");
  const std::string fn = "chunk_gla_backward";
  const detail::OpShape s = detail::check_chunk_backward_args(fn, q, k, v, g, do_, dht, opts, dq, dk, dv, dg, dh0);
  detail::chunk_gla_backward_impl<T>(s, q, k, v, g, do_, dht, opts, dq, dk, dv, dg, dh0);
}

/// Backward of chunk_gla returning {dq, dk, dv, dg, dh0}; dh0 iff opts.initial_state is set.
/// See chunk_gla_backward_into for shapes, options, memory and threading.
template <class T>
ChunkGLAGrads<T> chunk_gla_backward(ConstTensorMap<T, 4> q, ConstTensorMap<T, 4> k, ConstTensorMap<T, 4> v,
                                    ConstTensorMap<T, 4> g, ConstTensorMap<T, 4> do_,
                                    std::optional<ConstTensorMap<float, 4>> dht = std::nullopt,
                                    const GLAOptions& opts = {}) {
  ChunkGLAGrads<T> r = detail::allocate_grads<T>(q, k, v, g, opts);
  std::optional<TensorMap<float, 4>> dh0;
  if (r.dh0) dh0.emplace(mut_view(*r.dh0));
  chunk_gla_backward_into<T>(q, k, v, g, do_, dht, opts, mut_view(r.dq), mut_view(r.dk), mut_view(r.dv),
                             mut_view(r.dg), dh0);
  return r;
}

/// Backward of fused_chunk_gla into caller views. It shares the chunked path of chunk_gla_backward_into (the
/// forwards compute the same function, so their gradients are the same), hence it stores the per-chunk states
/// and their gradients (2·ΣNT·H·K·V accumulators) unlike the fused forward. It validates like
/// fused_chunk_gla_into, including opts.max_seqlen (a longer sequence → gla::Error); heuristic_fallback only
/// chooses a forward path and is ignored here. Shapes, options and threading as chunk_gla_backward_into.
template <class T>
void fused_chunk_gla_backward_into(ConstTensorMap<T, 4> q, ConstTensorMap<T, 4> k, ConstTensorMap<T, 4> v,
                                   ConstTensorMap<T, 4> g, ConstTensorMap<T, 4> do_,
                                   std::optional<ConstTensorMap<float, 4>> dht, const GLAOptions& opts,
                                   TensorMap<T, 4> dq, TensorMap<T, 4> dk, TensorMap<T, 4> dv, TensorMap<T, 4> dg,
                                   std::optional<TensorMap<float, 4>> dh0) {
  static_assert(is_supported_scalar_v<T>, "fused_chunk_gla_backward: unsupported scalar type");
  const std::string fn = "fused_chunk_gla_backward";
  const detail::OpShape s = detail::check_chunk_backward_args(fn, q, k, v, g, do_, dht, opts, dq, dk, dv, dg, dh0);
  detail::check_max_seqlen(fn, s, opts);
  detail::chunk_gla_backward_impl<T>(s, q, k, v, g, do_, dht, opts, dq, dk, dv, dg, dh0);
}

/// Backward of fused_chunk_gla returning {dq, dk, dv, dg, dh0}; see fused_chunk_gla_backward_into.
template <class T>
ChunkGLAGrads<T> fused_chunk_gla_backward(ConstTensorMap<T, 4> q, ConstTensorMap<T, 4> k, ConstTensorMap<T, 4> v,
                                          ConstTensorMap<T, 4> g, ConstTensorMap<T, 4> do_,
                                          std::optional<ConstTensorMap<float, 4>> dht = std::nullopt,
                                          const GLAOptions& opts = {}) {
  ChunkGLAGrads<T> r = detail::allocate_grads<T>(q, k, v, g, opts);
  std::optional<TensorMap<float, 4>> dh0;
  if (r.dh0) dh0.emplace(mut_view(*r.dh0));
  fused_chunk_gla_backward_into<T>(q, k, v, g, do_, dht, opts, mut_view(r.dq), mut_view(r.dk), mut_view(r.dv),
                                   mut_view(r.dg), dh0);
  return r;
}

}  // namespace gla
