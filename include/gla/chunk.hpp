#pragma once
/// gla/chunk.hpp: chunk_gla, the two-phase chunked GLA forward of fla (ops/gla/chunk.py): first the state
/// before every chunk (chunk_fwd_h), then the outputs of all chunks independently.

#include <gla/chunk_h.hpp>
#include <gla/cumsum.hpp>

namespace gla {

namespace detail {

/// The floor of per-step log gates on the chunk paths: a gate below it (down to −inf, a hard reset) acts as
/// the floor. exp(floor) is far below the scalar's resolution, so the result equals the exact one to rounding,
/// and the chunk-local cumsums stay finite (−inf would make G_t − G_s = −inf − (−inf) = NaN). The recurrent
/// path needs no floor. docs/chunk_algorithm.md measures the accuracy near the floor.
template <class Acc>
inline constexpr Acc kChunkGateFloor = std::is_same_v<Acc, double> ? Acc(-60) : Acc(-30);

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
/// operator's tensor inputs.
template <class T>
void check_forward_outputs(const std::string& fn, const OpShape& s, const GLAOptions& opts, const View<T, 4>& o,
                           const std::optional<View<float, 4>>& final_state, std::initializer_list<Buffer> inputs) {
  expect_dims(fn, "o", o.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  expect_output_iff(fn, "final_state", final_state, opts.output_final_state, "output_final_state is true",
                    "output_final_state is false");
  if (final_state) expect_state_dims(fn, "final_state", final_state->dimensions(), s, opts.state_v_first);
  std::vector<Buffer> ins(inputs);
  ins.push_back(buffer("initial_state", opts.initial_state));
  check_aliasing(fn, ins, {buffer("o", o), buffer("final_state", final_state)}, {{"final_state", "initial_state"}});
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

template <class Acc>
Acc resolve_scale(const GLAOptions& opts, Index K) {
  return opts.scale ? static_cast<Acc>(*opts.scale) : Acc(1) / std::sqrt(static_cast<Acc>(K));
}

/// Writes the top L rows of a workspace block into a strided [B,T,H,D] output at (sequence, head, c0).
template <class T, class Acc>
void store_rows(T* out, const OpShape& s, const Seq& sq, Index h, Index c0, Index L, Index D, const RowMat<Acc>& blk) {
  for (Index r = 0; r < L; ++r) store_row(out + ((sq.b * s.T + sq.t0 + c0 + r) * s.H + h) * D, blk.row(r));
}

/// The (sequence, chunk) pairs of a batch, in order; offsets from chunk_offsets.
inline std::vector<std::array<Index, 2>> chunk_list(const OpShape& s, const std::vector<Index>& off) {
  std::vector<std::array<Index, 2>> chunks;
  for (Index n = 0; n < s.N; ++n)
    for (Index c = 0; c < off[static_cast<std::size_t>(n) + 1] - off[static_cast<std::size_t>(n)]; ++c)
      chunks.push_back({n, c});
  return chunks;
}

}  // namespace detail

/// Chunked GLA forward, writing into caller views (nothing is written when validation fails):
///   S_t = diag(e^{g_t}) S_{t−1} + k_t v_tᵀ,  o_t = scale · q_tᵀ S_t.
/// q, k, g [B,T,H,K] and v [B,T,H,V] (float, double, bf16, half; g = per-step natural-log gate, ≤ 0, values
/// below −30 act as −30, see docs/chunk_algorithm.md); o [B,T,H,V] of the same scalar; final_state float
/// [N,H,K,V] (or [N,H,V,K] with state_v_first), given if and only if opts.output_final_state. final_state may
/// be the very buffer of opts.initial_state (in-place update); no other output may overlap an input.
/// Options: scale, initial_state, output_final_state, state_v_first, cu_seqlens, chunk_size. Memory: the
/// per-chunk states (ΣNT·H·K·V accumulators) and the gate cumsum (B·T·H·K), allocated before any thread
/// starts. Threads: the parallel engine over (sequence, head) for the states, then over (chunk, head) for the
/// outputs; results do not depend on the thread count.
template <class Q>
void chunk_gla_into(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v, ConstViewOf<Q, 4> g, const GLAOptions& opts,
                    ViewOf<Q, 4> o, std::optional<View<float, 4>> final_state = std::nullopt) {
  using T = scalar_type_t<Q>;
  static_assert(is_supported_scalar_v<T>, "chunk_gla: inputs must be float, double, Eigen::bfloat16 or Eigen::half");
  using Acc = acc_t<T>;
  const std::string fn = "chunk_gla";
  const ConstView<T, 4> qv(q);
  const detail::OpShape s = detail::check_chunk_args(fn, qv, k, v, g, opts);
  detail::check_forward_outputs(
      fn, s, opts, o, final_state,
      {detail::buffer("q", qv), detail::buffer("k", k), detail::buffer("v", v), detail::buffer("g", g)});
  const Index BT = opts.chunk_size, H = s.H, K = s.K, V = s.V;
  const Acc scale = detail::resolve_scale<Acc>(opts, K);

  const detail::AccInput<Acc, T> qa(qv), ka(k), va(v), ga(g);
  const auto G = detail::uninitialized_buffer<Acc>(g.size());
  detail::chunk_local_cumsum_into(ga.data(), G.get(), s.B, s.T, H, K, BT, false, 1.0, opts.cu_seqlens,
                                  detail::kChunkGateFloor<Acc>);
  detail::FullGates<Acc> fg;
  fg.gk = G.get();

  // Phase 1: the state before every chunk.
  const std::vector<Index> off = detail::chunk_offsets(s, BT);
  const auto h = detail::uninitialized_buffer<Acc>(off.back() * H * K * V);
  detail::chunk_fwd_h_impl<Acc, Acc>(s, BT, ka.data(), va.data(), fg,
                                     opts.initial_state ? opts.initial_state->data() : nullptr, opts.state_v_first,
                                     h.get(), /*h_v_first=*/false, final_state ? final_state->data() : nullptr);

  // Phase 2: every (chunk, head) independently.
  const std::vector<std::array<Index, 2>> chunks = detail::chunk_list(s, off);
  const Index work = static_cast<Index>(chunks.size()) * H;
  auto ws = detail::per_worker(work, detail::ChunkWorkspace<Acc>(BT, K, V));
  detail::parallel_for(work, [&](Index w, int worker) {
    const auto [n, c] = chunks[static_cast<std::size_t>(w / H)];
    const Index hh = w % H;
    const detail::Seq& sq = s.seqs[static_cast<std::size_t>(n)];
    const Index c0 = c * BT, L = std::min(BT, sq.len - c0);
    const Index ci = off[static_cast<std::size_t>(n)] + c;
    const Eigen::Map<const detail::RowMat<Acc>> S(h.get() + (ci * H + hh) * K * V, K, V);
    detail::ChunkWorkspace<Acc>& wsp = ws[static_cast<std::size_t>(worker)];
    detail::chunk_output(detail::rows(qa.data(), s, sq, hh, c0, L, K), detail::rows(ka.data(), s, sq, hh, c0, L, K),
                         detail::rows(va.data(), s, sq, hh, c0, L, V), detail::rows(G.get(), s, sq, hh, c0, L, K), S,
                         scale, L, wsp);
    detail::store_rows(o.data(), s, sq, hh, c0, L, V, wsp.O);
  });
}

/// Chunked GLA forward (fla's chunk_gla): returns o [B,T,H,V] and, with opts.output_final_state, the final
/// state float [N,H,K,V] (or V-first). The scalar type is the inputs'. See chunk_gla_into for shapes, options
/// and threading.
template <class Q>
GLAResult<scalar_type_t<Q>> chunk_gla(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v, ConstViewOf<Q, 4> g,
                                      const GLAOptions& opts = {}) {
  const ConstViewOf<Q, 4> qv(q);
  GLAResult<scalar_type_t<Q>> r = detail::allocate_result(qv, v, opts);
  chunk_gla_into(qv, k, v, g, opts, r.o, detail::optional_output(r.final_state));
  return r;
}

}  // namespace gla
