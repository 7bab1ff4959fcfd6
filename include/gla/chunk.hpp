#pragma once
/// gla/chunk.hpp: chunk_gla, the two-phase chunked GLA forward of fla (ops/gla/chunk.py): first the state
/// before every chunk (chunk_fwd_h), then the outputs of all chunks independently.

#include <gla/chunk_h.hpp>
#include <gla/cumsum.hpp>

namespace gla {

namespace detail {

/// Checks shared by chunk_gla and fused_chunk_gla; returns the problem shape.
template <class T>
OpShape check_chunk_args(const std::string& fn, const ConstTensorMap<T, 4>& q, const ConstTensorMap<T, 4>& k,
                         const ConstTensorMap<T, 4>& v, const ConstTensorMap<T, 4>& g, const GLAOptions& opts) {
  OpShape s = check_qkv(fn, q.dimensions(), k.dimensions(), v.dimensions(), opts);
  expect_dims(fn, "g", g.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  check_chunk_size(fn, opts.chunk_size);
  reject_option(fn, opts.reverse, "reverse (only fused_recurrent_gla runs backwards)");
  reject_option(fn, !opts.gamma.empty() || opts.state_clamp_min || opts.state_clamp_max,
                "gamma/state_clamp_min/state_clamp_max (fused_recurrent_gla only)");
  return s;
}

/// Checks the caller's output views of a forward operator.
template <class T>
void check_forward_outputs(const std::string& fn, const OpShape& s, const TensorMap<T, 4>& o,
                           const std::optional<TensorMap<float, 4>>& final_state, bool v_first) {
  expect_dims(fn, "o", o.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  if (final_state) {
    if (v_first)
      expect_dims(fn, "final_state (state_v_first)", final_state->dimensions(),
                  {{"N", s.N}, {"H", s.H}, {"V", s.V}, {"K", s.K}});
    else
      expect_dims(fn, "final_state", final_state->dimensions(), {{"N", s.N}, {"H", s.H}, {"K", s.K}, {"V", s.V}});
  }
}

/// The convenience API's outputs: o shaped like v and, when requested, the final state (sized from the
/// inputs before validation; the `_into` call then validates everything).
template <class T>
GLAResult<T> allocate_result(const ConstTensorMap<T, 4>& q, const ConstTensorMap<T, 4>& v, const GLAOptions& opts) {
  GLAResult<T> r;
  r.o = Tensor<T, 4>(v.dimensions());
  if (opts.output_final_state) {
    const Index N = std::max<Index>(
        0, opts.cu_seqlens.empty() ? q.dimension(0) : static_cast<Index>(opts.cu_seqlens.size()) - 1);
    r.final_state = opts.state_v_first ? Tensor<float, 4>(N, q.dimension(2), v.dimension(3), q.dimension(3))
                                       : Tensor<float, 4>(N, q.dimension(2), q.dimension(3), v.dimension(3));
  }
  return r;
}

template <class Acc>
Acc resolve_scale(const GLAOptions& opts, Index K) {
  return opts.scale ? static_cast<Acc>(*opts.scale) : Acc(1) / std::sqrt(static_cast<Acc>(K));
}

/// Writes the top L rows of a workspace block into a strided [B,T,H,D] output at (sequence, head, c0).
template <class T, class Acc>
void store_rows(T* out, const OpShape& s, const Seq& sq, Index h, Index c0, Index L, Index D, const RowMat<Acc>& blk) {
  for (Index r = 0; r < L; ++r) store_row(out + ((sq.b * s.T + sq.t0 + c0 + r) * s.H + h) * D, blk.row(r));
}

}  // namespace detail

/// Chunked GLA forward, writing into caller views (nothing is written when validation fails):
///   S_t = diag(e^{g_t}) S_{t−1} + k_t v_tᵀ,  o_t = scale · q_tᵀ S_t.
/// q, k, g [B,T,H,K] and v [B,T,H,V] in T (g = per-step natural-log gate, ≤ 0); o [B,T,H,V] in T;
/// final_state float [N,H,K,V] (or [N,H,V,K] with state_v_first), written when given.
/// Options: scale, initial_state, state_v_first, cu_seqlens, chunk_size. Memory: the per-chunk states
/// (ΣNT·H·K·V accumulators) and the gate cumsum (B·T·H·K). Threads: OpenMP over (sequence, head) for the
/// states, then over (chunk, head) for the outputs; results do not depend on the thread count.
template <class T>
void chunk_gla_into(ConstTensorMap<T, 4> q, ConstTensorMap<T, 4> k, ConstTensorMap<T, 4> v, ConstTensorMap<T, 4> g,
                    const GLAOptions& opts, TensorMap<T, 4> o, std::optional<TensorMap<float, 4>> final_state) {
  static_assert(is_supported_scalar_v<T>, "chunk_gla: unsupported scalar type");
  using Acc = acc_t<T>;
  const std::string fn = "chunk_gla";
  const detail::OpShape s = detail::check_chunk_args(fn, q, k, v, g, opts);
  detail::check_forward_outputs(fn, s, o, final_state, opts.state_v_first);
  const Index BT = opts.chunk_size, H = s.H, K = s.K, V = s.V;
  const Acc scale = detail::resolve_scale<Acc>(opts, K);

  const detail::AccInput<Acc, T> qa(q), ka(k), va(v), ga(g);
  const auto G = detail::uninitialized_buffer<Acc>(g.size());
  detail::chunk_local_cumsum_into(ga.data(), G.get(), s.B, s.T, H, K, BT, false, 1.0, opts.cu_seqlens);
  detail::FullGates<Acc> fg;
  fg.gk = G.get();

  // Phase 1: the state before every chunk.
  const std::vector<Index> off = detail::chunk_offsets(s, BT);
  const auto h = detail::uninitialized_buffer<Acc>(off.back() * H * K * V);
  detail::chunk_fwd_h_impl<Acc, Acc>(s, BT, ka.data(), va.data(), fg,
                                     opts.initial_state ? opts.initial_state->data() : nullptr, opts.state_v_first,
                                     h.get(), /*h_v_first=*/false, final_state ? final_state->data() : nullptr);

  // Phase 2: every (chunk, head) independently.
  std::vector<std::array<Index, 2>> chunks;  // (sequence, chunk within sequence)
  for (Index n = 0; n < s.N; ++n)
    for (Index c = 0; c < off[static_cast<std::size_t>(n) + 1] - off[static_cast<std::size_t>(n)]; ++c)
      chunks.push_back({n, c});
  const Index work = static_cast<Index>(chunks.size()) * H;
#ifdef _OPENMP
#pragma omp parallel num_threads(detail::num_threads_for(work))
#endif
  {
    detail::ChunkWorkspace<Acc> ws;
    ws.reserve(BT, K, V);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (Index w = 0; w < work; ++w) {
      const auto [n, c] = chunks[static_cast<std::size_t>(w / H)];
      const Index hh = w % H;
      const detail::Seq& sq = s.seqs[static_cast<std::size_t>(n)];
      const Index c0 = c * BT, L = std::min(BT, sq.len - c0);
      const Index ci = off[static_cast<std::size_t>(n)] + c;
      const Eigen::Map<const detail::RowMat<Acc>> S(h.get() + (ci * H + hh) * K * V, K, V);
      detail::chunk_output(detail::rows(qa.data(), s, sq, hh, c0, L, K), detail::rows(ka.data(), s, sq, hh, c0, L, K),
                           detail::rows(va.data(), s, sq, hh, c0, L, V), detail::rows(G.get(), s, sq, hh, c0, L, K),
                           S, scale, L, ws);
      detail::store_rows(o.data(), s, sq, hh, c0, L, V, ws.O);
    }
  }
}

/// Chunked GLA forward (fla's chunk_gla): returns o [B,T,H,V] in T and, with opts.output_final_state, the final
/// state float [N,H,K,V] (or V-first). See chunk_gla_into for shapes, options and threading.
template <class T>
GLAResult<T> chunk_gla(ConstTensorMap<T, 4> q, ConstTensorMap<T, 4> k, ConstTensorMap<T, 4> v, ConstTensorMap<T, 4> g,
                       const GLAOptions& opts = {}) {
  GLAResult<T> r = detail::allocate_result<T>(q, v, opts);
  std::optional<TensorMap<float, 4>> fs;
  if (r.final_state) fs.emplace(mut_view(*r.final_state));
  chunk_gla_into<T>(q, k, v, g, opts, mut_view(r.o), fs);
  return r;
}

}  // namespace gla
