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

}  // namespace detail

/// Bytes of scratch fused_chunk_gla needs for inputs of the given scalar and shape (see Workspace).
template <class Scalar = float>
std::size_t fused_chunk_gla_workspace_size(Index B, Index T, Index H, Index K, Index V, const GLAOptions& opts = {}) {
  static_assert(is_supported_scalar_v<Scalar>, "fused_chunk_gla_workspace_size: unsupported scalar type");
  const detail::OpShape s = detail::shape_of("fused_chunk_gla_workspace_size", B, T, H, K, V, opts);
  return detail::fused_chunk_workspace_bytes<Scalar>(s, opts.chunk_size);
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
  detail::fused_chunk_run(s, qv, k, v, g.data(), opts, o, final_state ? final_state->data() : nullptr,
                          opts.heuristic_fallback);
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
