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
/// chunk's output from the carried state, then advancing the state. Same math, shapes, options, output
/// contract and aliasing rule as chunk_gla_into, plus opts.max_seqlen (a longer sequence → gla::Error) and
/// opts.heuristic_fallback (a sequence no longer than one chunk runs token by token; same numbers within
/// rounding). Extra memory: O(chunk_size·(K+V) + K·V) per thread, independent of T. Threads: the parallel
/// engine over (sequence, head), longest sequences first; deterministic.
template <class Q>
void fused_chunk_gla_into(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v, ConstViewOf<Q, 4> g,
                          const GLAOptions& opts, ViewOf<Q, 4> o,
                          std::optional<View<float, 4>> final_state = std::nullopt) {
  using T = scalar_type_t<Q>;
  static_assert(is_supported_scalar_v<T>,
                "fused_chunk_gla: inputs must be float, double, Eigen::bfloat16 or Eigen::half");
  using Acc = acc_t<T>;
  const std::string fn = "fused_chunk_gla";
  const ConstView<T, 4> qv(q);
  const detail::OpShape s = detail::check_chunk_args(fn, qv, k, v, g, opts);
  detail::check_forward_outputs(
      fn, s, opts, o, final_state,
      {detail::buffer("q", qv), detail::buffer("k", k), detail::buffer("v", v), detail::buffer("g", g)});
  detail::check_max_seqlen(fn, s, opts);
  const Index BT = opts.chunk_size, H = s.H, K = s.K, V = s.V;
  const Acc scale = detail::resolve_scale<Acc>(opts, K);
  // bf16/half inputs are converted once; float/double inputs are read in place.
  const detail::AccInput<Acc, T> qa(qv), ka(k), va(v), ga(g);
  const std::vector<Index> order = detail::pairs_longest_first(s);
  const Index items = static_cast<Index>(order.size());
  auto ws = detail::per_worker(items, detail::ChunkWorkspace<Acc>(BT, K, V));
  auto Sw = detail::per_worker(items, detail::RowMat<Acc>(K, V));
  const float* h0 = opts.initial_state ? opts.initial_state->data() : nullptr;
  float* ht = final_state ? final_state->data() : nullptr;
  detail::parallel_for(items, [&](Index i, int w) {
    const Index p = order[static_cast<std::size_t>(i)];
    detail::ChunkWorkspace<Acc>& wsp = ws[static_cast<std::size_t>(w)];
    detail::RowMat<Acc>& S = Sw[static_cast<std::size_t>(w)];
    const Index n = p / H, hh = p % H;
    const detail::Seq& sq = s.seqs[static_cast<std::size_t>(n)];
    if (h0)
      detail::load_state(S, h0 + p * K * V, K, V, opts.state_v_first);
    else
      S.setZero();
    if (opts.heuristic_fallback && sq.len <= BT) {
      if (sq.len > 0) {
        detail::recurrent_rows(detail::rows(qa.data(), s, sq, hh, 0, sq.len, K),
                               detail::rows(ka.data(), s, sq, hh, 0, sq.len, K),
                               detail::rows(va.data(), s, sq, hh, 0, sq.len, V),
                               detail::rows(ga.data(), s, sq, hh, 0, sq.len, K), S, scale, sq.len, wsp);
        detail::store_rows(o.data(), s, sq, hh, 0, sq.len, V, wsp.O);
      }
    } else {
      for (Index c0 = 0; c0 < sq.len; c0 += BT) {
        const Index L = std::min(BT, sq.len - c0);
        const auto kb = detail::rows(ka.data(), s, sq, hh, c0, L, K);
        const auto vb = detail::rows(va.data(), s, sq, hh, c0, L, V);
        const auto gb = detail::rows(ga.data(), s, sq, hh, c0, L, K);
        detail::local_cumsum_rows(gb.data(), s.H * K, L, K, detail::kChunkGateFloor<Acc>, wsp.G);
        const detail::ConstStridedMap<Acc> G(wsp.G.data(), L, K, Eigen::OuterStride<>(K));
        detail::chunk_output(detail::rows(qa.data(), s, sq, hh, c0, L, K), kb, vb, G, S, scale, L, wsp);
        detail::store_rows(o.data(), s, sq, hh, c0, L, V, wsp.O);
        detail::ChunkGates<Acc> cg;
        cg.gk = wsp.G.data();
        cg.ldgk = K;
        detail::chunk_state_update(S, kb, vb, cg, L, wsp);
      }
    }
    if (ht) detail::store_state(S, ht + p * K * V, K, V, opts.state_v_first);
  });
}

/// Fused-chunk GLA forward returning {o, final_state}; see fused_chunk_gla_into.
template <class Q>
GLAResult<scalar_type_t<Q>> fused_chunk_gla(const Q& q, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v, ConstViewOf<Q, 4> g,
                                            const GLAOptions& opts = {}) {
  const ConstViewOf<Q, 4> qv(q);
  GLAResult<scalar_type_t<Q>> r = detail::allocate_result(qv, v, opts);
  fused_chunk_gla_into(qv, k, v, g, opts, r.o, detail::optional_output(r.final_state));
  return r;
}

}  // namespace gla
