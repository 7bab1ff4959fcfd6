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

/// The token-by-token recurrence of one (sequence, head) on rows [0, L) — the short-sequence path of
/// fused_chunk_gla (heuristic_fallback). S is the state in and out; o rows go to ws.O.
template <class Acc>
void recurrent_rows(const ConstStridedMap<Acc>& q, const ConstStridedMap<Acc>& k, const ConstStridedMap<Acc>& v,
                    const ConstStridedMap<Acc>& g, RowMat<Acc>& S, Acc scale, Index L, ChunkWorkspace<Acc>& ws) {
  for (Index t = 0; t < L; ++t) {
    ws.e = g.row(t).array().exp();
    S.array().colwise() *= ws.e.transpose().array();
    S.noalias() += k.row(t).transpose() * v.row(t);
    ws.O.row(t).noalias() = (q.row(t) * scale) * S;
  }
}

}  // namespace detail

/// Fused-chunk GLA forward into caller views: per (sequence, head) one sweep over its chunks computing each
/// chunk's output from the carried state, then advancing the state. Same math, shapes and options as
/// chunk_gla_into, plus opts.max_seqlen (a longer sequence → gla::Error) and opts.heuristic_fallback (a
/// sequence no longer than one chunk runs token by token; same numbers within rounding).
/// Extra memory: O(chunk_size·(K+V) + K·V) per thread, independent of T. Threads: OpenMP over (sequence, head).
template <class T>
void fused_chunk_gla_into(ConstTensorMap<T, 4> q, ConstTensorMap<T, 4> k, ConstTensorMap<T, 4> v,
                          ConstTensorMap<T, 4> g, const GLAOptions& opts, TensorMap<T, 4> o,
                          std::optional<TensorMap<float, 4>> final_state) {
  static_assert(is_supported_scalar_v<T>, "fused_chunk_gla: unsupported scalar type");
  using Acc = acc_t<T>;
  const std::string fn = "fused_chunk_gla";
  const detail::OpShape s = detail::check_chunk_args(fn, q, k, v, g, opts);
  detail::check_forward_outputs(fn, s, o, final_state, opts.state_v_first);
  detail::check_max_seqlen(fn, s, opts);
  const Index BT = opts.chunk_size, H = s.H, K = s.K, V = s.V;
  const Acc scale = detail::resolve_scale<Acc>(opts, K);
  // bf16/half inputs are converted once; float/double inputs are read in place.
  const detail::AccInput<Acc, T> qa(q), ka(k), va(v), ga(g);
  const Index pairs = s.N * H;
#ifdef _OPENMP
#pragma omp parallel num_threads(detail::num_threads_for(pairs))
#endif
  {
    detail::ChunkWorkspace<Acc> ws;
    ws.reserve(BT, K, V);
    detail::RowMat<Acc> S(K, V);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (Index p = 0; p < pairs; ++p) {
      const Index n = p / H, hh = p % H;
      const detail::Seq& sq = s.seqs[static_cast<std::size_t>(n)];
      if (opts.initial_state)
        detail::load_state(S, opts.initial_state->data() + p * K * V, K, V, opts.state_v_first);
      else
        S.setZero();
      if (opts.heuristic_fallback && sq.len <= BT) {
        detail::recurrent_rows(detail::rows(qa.data(), s, sq, hh, 0, sq.len, K),
                               detail::rows(ka.data(), s, sq, hh, 0, sq.len, K),
                               detail::rows(va.data(), s, sq, hh, 0, sq.len, V),
                               detail::rows(ga.data(), s, sq, hh, 0, sq.len, K), S, scale, sq.len, ws);
        detail::store_rows(o.data(), s, sq, hh, 0, sq.len, V, ws.O);
      } else {
        for (Index c0 = 0; c0 < sq.len; c0 += BT) {
          const Index L = std::min(BT, sq.len - c0);
          const auto kb = detail::rows(ka.data(), s, sq, hh, c0, L, K);
          const auto vb = detail::rows(va.data(), s, sq, hh, c0, L, V);
          const auto gb = detail::rows(ga.data(), s, sq, hh, c0, L, K);
          detail::local_cumsum_rows(gb.data(), s.H * K, L, K, ws.G);
          const detail::ConstStridedMap<Acc> G(ws.G.data(), L, K, Eigen::OuterStride<>(K));
          detail::chunk_output(detail::rows(qa.data(), s, sq, hh, c0, L, K), kb, vb, G, S, scale, L, ws);
          detail::store_rows(o.data(), s, sq, hh, c0, L, V, ws.O);
          detail::ChunkGates<Acc> cg;
          cg.gk = ws.G.data();
          cg.ldgk = K;
          detail::chunk_state_update(S, kb, vb, cg, L, ws);
        }
      }
      if (final_state) detail::store_state(S, final_state->data() + p * K * V, K, V, opts.state_v_first);
    }
  }
}

/// Fused-chunk GLA forward returning {o, final_state}; see fused_chunk_gla_into.
template <class T>
GLAResult<T> fused_chunk_gla(ConstTensorMap<T, 4> q, ConstTensorMap<T, 4> k, ConstTensorMap<T, 4> v,
                             ConstTensorMap<T, 4> g, const GLAOptions& opts = {}) {
  GLAResult<T> r = detail::allocate_result<T>(q, v, opts);
  std::optional<TensorMap<float, 4>> fs;
  if (r.final_state) fs.emplace(mut_view(*r.final_state));
  fused_chunk_gla_into<T>(q, k, v, g, opts, mut_view(r.o), fs);
  return r;
}

}  // namespace gla
