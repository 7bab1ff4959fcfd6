#pragma once
/// gla/naive.hpp: the token-by-token GLA recurrence with a chosen accumulator (double in tests); every fast
/// path in this library is tested against it. Mirrors fla/ops/gla/naive.py, extended to gv, reverse, varlen,
/// scale and the fused_recurrent extras (gamma, state clamps).

#include <gla/core.hpp>

namespace gla {

/// Result of the reference: o [B,T,H,V] and the final state [N,H,K,V] (or V-first), both in Acc.
template <class Acc>
struct NaiveResult {
  Tensor<Acc, 4> o;
  Tensor<Acc, 4> final_state;
};

namespace detail {

/// Multiplies the extra per-head decay gamma into one head's state (fused_recurrent_gla's `gamma`).
template <class Acc>
Acc gamma_for_head(const std::vector<float>& gamma, Index h) {
  if (gamma.empty()) return Acc(1);
  return static_cast<Acc>(gamma.size() == 1 ? gamma[0] : gamma[static_cast<std::size_t>(h)]);
}

inline void check_state_extras(const std::string& fn, const GLAOptions& opts, Index H) {
  if (!opts.gamma.empty() && opts.gamma.size() != 1 && static_cast<Index>(opts.gamma.size()) != H)
    fail(fn, "gamma has " + std::to_string(opts.gamma.size()) + " values, expected 1 or H = " + std::to_string(H));
  for (float gm : opts.gamma)
    if (!std::isfinite(gm)) fail(fn, "gamma holds " + std::to_string(gm) + ", expected finite values");
  if (opts.state_clamp_min && opts.state_clamp_max && *opts.state_clamp_min > *opts.state_clamp_max)
    fail(fn, "state_clamp_min is " + std::to_string(*opts.state_clamp_min) + ", expected <= state_clamp_max = " +
                 std::to_string(*opts.state_clamp_max));
}

}  // namespace detail

/// Plain recurrence, per sequence and head, in Acc:
///   S_t = diag(exp(gk_t)) · S_{t-1} · diag(exp(gv_t)) · gamma + k_t v_tᵀ  (then clamped), o_t = scale · q_tᵀ S_t.
/// q, k [B,T,H,K]; v [B,T,H,V]; gk [B,T,H,K] and gv [B,T,H,V] optional; options as fused_recurrent_gla.
/// Single-threaded and allocation-light; meant for tests, not speed.
template <class T, class Acc = double>
NaiveResult<Acc> naive_recurrent_gla(ConstTensorMap<T, 4> q, ConstTensorMap<T, 4> k, ConstTensorMap<T, 4> v,
                                     std::optional<ConstTensorMap<T, 4>> gk, std::optional<ConstTensorMap<T, 4>> gv,
                                     const GLAOptions& opts = {}) {
  const std::string fn = "naive_recurrent_gla";
  const detail::OpShape s = detail::check_qkv(fn, q.dimensions(), k.dimensions(), v.dimensions(), opts);
  if (gk) detail::expect_dims(fn, "gk", gk->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  if (gv) detail::expect_dims(fn, "gv", gv->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  detail::check_state_extras(fn, opts, s.H);
  const Index B = s.B, T_ = s.T, H = s.H, K = s.K, V = s.V;
  const Acc scale = opts.scale ? static_cast<Acc>(*opts.scale) : Acc(1) / std::sqrt(static_cast<Acc>(K));

  NaiveResult<Acc> r;
  r.o = Tensor<Acc, 4>(B, T_, H, V);
  r.o.setZero();
  const auto sd = detail::state_dims(s, opts.state_v_first);
  r.final_state = Tensor<Acc, 4>(sd[0], sd[1], sd[2], sd[3]);

  detail::RowMat<Acc> S(K, V);
  for (Index n = 0; n < s.N; ++n) {
    const detail::Seq sq = s.seqs[static_cast<std::size_t>(n)];
    for (Index h = 0; h < H; ++h) {
      if (opts.initial_state)
        detail::load_state(S, opts.initial_state->data() + (n * H + h) * K * V, K, V, opts.state_v_first);
      else
        S.setZero();
      const Acc gam = detail::gamma_for_head<Acc>(opts.gamma, h);
      for (Index i = 0; i < sq.len; ++i) {
        const Index t = sq.t0 + (opts.reverse ? sq.len - 1 - i : i);
        const Index rowk = ((sq.b * T_ + t) * H + h) * K, rowv = ((sq.b * T_ + t) * H + h) * V;
        for (Index a = 0; a < K; ++a) {
          const Acc dk = gk ? std::exp(static_cast<Acc>(gk->data()[rowk + a])) : Acc(1);
          for (Index c = 0; c < V; ++c) {
            const Acc dv = gv ? std::exp(static_cast<Acc>(gv->data()[rowv + c])) : Acc(1);
            Acc x = S(a, c) * dk * dv * gam + static_cast<Acc>(k.data()[rowk + a]) * static_cast<Acc>(v.data()[rowv + c]);
            if (opts.state_clamp_min) x = std::max(x, static_cast<Acc>(*opts.state_clamp_min));
            if (opts.state_clamp_max) x = std::min(x, static_cast<Acc>(*opts.state_clamp_max));
            S(a, c) = x;
          }
        }
        for (Index c = 0; c < V; ++c) {
          Acc acc = 0;
          for (Index a = 0; a < K; ++a) acc += static_cast<Acc>(q.data()[rowk + a]) * S(a, c);
          r.o.data()[rowv + c] = scale * acc;
        }
      }
      detail::store_state(S, r.final_state.data() + (n * H + h) * K * V, K, V, opts.state_v_first);
    }
  }
  return r;
}

}  // namespace gla
