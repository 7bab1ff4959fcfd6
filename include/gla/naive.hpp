#pragma once
/// gla/naive.hpp: the token-by-token GLA recurrence and its reverse-mode gradient with a chosen accumulator
/// (double in tests); every fast path in this library is tested against it. Mirrors fla/ops/gla/naive.py,
/// extended to gv, reverse, varlen, scale and the fused_recurrent extras (gamma, state clamps).

#include <gla/detail/recurrent_common.hpp>

namespace gla {

/// Result of the reference: o [B,T,H,V] and the final state [N,H,K,V] (or V-first), both in Acc.
template <class Acc>
struct NaiveResult {
  Tensor<Acc, 4> o;
  Tensor<Acc, 4> final_state;
};

/// Gradients of the reference, all in Acc, for the loss L = Σ o·do + Σ final_state·dht:
/// dq, dk [B,T,H,K]; dv [B,T,H,V]; dgk [B,T,H,K] iff gk was given; dgv [B,T,H,V] iff gv was given;
/// dh0 [N,H,K,V] (or V-first) always: the gradient w.r.t. the initial state, which is zero when none is given.
template <class Acc>
struct NaiveGrads {
  Tensor<Acc, 4> dq, dk, dv;
  std::optional<Tensor<Acc, 4>> dgk, dgv;
  Tensor<Acc, 4> dh0;
};

namespace detail {

/// exp of one gate row [n] as Acc, or ones when the gate is absent.
template <class Acc, class T>
void recurrent_gate_factors(std::vector<Acc>& out, const std::optional<ConstView<T, 4>>& g, Index offset, Index n) {
  for (Index i = 0; i < n; ++i)
    out[static_cast<std::size_t>(i)] = g ? std::exp(static_cast<Acc>(g->data()[offset + i])) : Acc(1);
}

}  // namespace detail

/// Plain recurrence, per sequence and head, in Acc:
///   S_t = diag(exp(gk_t)) · S_{t-1} · diag(exp(gv_t)) · gamma + k_t v_tᵀ  (then clamped), o_t = scale · q_tᵀ S_t.
/// q, k [B,T,H,K]; v [B,T,H,V]; gk [B,T,H,K] and gv [B,T,H,V] optional; options as fused_recurrent_gla.
/// Single-threaded and allocation-light; meant for tests, not speed.
/// The accumulator is the first template argument (`naive_recurrent_gla<double>(q, k, v, gk)`); the input
/// scalar is deduced from q.
template <class Acc = double, class Q>
NaiveResult<Acc> naive_recurrent_gla(const Q& q_in, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v,
                                     std::optional<ConstViewOf<Q, 4>> gk = std::nullopt,
                                     std::optional<ConstViewOf<Q, 4>> gv = std::nullopt, const GLAOptions& opts = {}) {
  static_assert(is_supported_scalar_v<scalar_type_t<Q>>,
                "naive_recurrent_gla: inputs must be float, double, Eigen::bfloat16 or Eigen::half");
  const std::string fn = "naive_recurrent_gla";
  const ConstViewOf<Q, 4> q(q_in);
  const detail::OpShape s = detail::check_qkv(fn, q.dimensions(), k.dimensions(), v.dimensions(), opts);
  if (gk) detail::expect_dims(fn, "gk", gk->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  if (gv) detail::expect_dims(fn, "gv", gv->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  detail::check_state_extras(fn, opts, s.H);
  const Index T_ = s.T, H = s.H, K = s.K, V = s.V;
  const Acc scale = detail::recurrent_scale<Acc>(opts, K);

  NaiveResult<Acc> r;
  r.o = Tensor<Acc, 4>(s.B, T_, H, V);
  r.o.setZero();
  const auto sd = detail::state_dims(s, opts.state_v_first);
  r.final_state = Tensor<Acc, 4>(sd[0], sd[1], sd[2], sd[3]);

  detail::RowMat<Acc> S(K, V);
  std::vector<Acc> ek(static_cast<std::size_t>(K)), ev(static_cast<std::size_t>(V));
  for (Index n = 0; n < s.N; ++n) {
    const detail::Seq sq = s.seqs[static_cast<std::size_t>(n)];
    for (Index h = 0; h < H; ++h) {
      if (opts.initial_state)
        detail::load_state(S, opts.initial_state->data() + (n * H + h) * K * V, K, V, opts.state_v_first);
      else
        S.setZero();
      const Acc gam = detail::gamma_for_head<Acc>(opts.gamma, h);
      for (Index i = 0; i < sq.len; ++i) {
        const Index t = detail::recurrent_step_time(sq, i, opts.reverse);
        const Index rowk = ((sq.b * T_ + t) * H + h) * K, rowv = ((sq.b * T_ + t) * H + h) * V;
        detail::recurrent_gate_factors(ek, gk, rowk, K);
        detail::recurrent_gate_factors(ev, gv, rowv, V);
        for (Index a = 0; a < K; ++a) {
          for (Index c = 0; c < V; ++c) {
            Acc x = S(a, c) * ek[static_cast<std::size_t>(a)] * ev[static_cast<std::size_t>(c)] * gam +
                    static_cast<Acc>(k.data()[rowk + a]) * static_cast<Acc>(v.data()[rowv + c]);
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

/// Reference gradient of naive_recurrent_gla for L = Σ o·do_ + Σ final_state·dht, in Acc, written as fla's
/// fused_recurrent backward (docs/fused_recurrent.md) with every forward state stored:
///   dq_t = scale · S_t · do_t;  dS ← dht, then for t from last to first processed:
///   dS += scale · q_t do_tᵀ;  dk_t = dS v_t;  dv_t = dSᵀ k_t;  dS = diag(exp(gk_t)) dS diag(exp(gv_t));  dh0 = dS
///   dgk_t = Σ_v (S_last ⊙ dht) + Σ_{s at or after t} (q_s ⊙ dq_s − k_s ⊙ dk_s)   (reverse cumulative sum)
///   dgv_t = Σ_k (S_last ⊙ dht) + Σ_{s at or after t} (o_s ⊙ do_s − v_s ⊙ dv_s).
/// The fused_recurrent kernel uses the un-telescoped form of dgk/dgv instead, so the two check each other.
/// q, k [B,T,H,K]; v, do_ [B,T,H,V]; gk [B,T,H,K], gv [B,T,H,V] optional; dht float [N,H,K,V] (or V-first)
/// optional (absent: zero). gamma and the state clamps are rejected (forward-only extras).
/// Stores (len+1)·K·V values of Acc per sequence and head; meant for tests, not speed.
template <class Acc = double, class Q>
NaiveGrads<Acc> naive_recurrent_gla_backward(const Q& q_in, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v,
                                             std::optional<ConstViewOf<Q, 4>> gk, std::optional<ConstViewOf<Q, 4>> gv,
                                             ConstViewOf<Q, 4> do_,
                                             std::optional<ConstView<float, 4>> dht = std::nullopt,
                                             const GLAOptions& opts = {}) {
  static_assert(is_supported_scalar_v<scalar_type_t<Q>>,
                "naive_recurrent_gla_backward: inputs must be float, double, Eigen::bfloat16 or Eigen::half");
  const std::string fn = "naive_recurrent_gla_backward";
  const ConstViewOf<Q, 4> q(q_in);
  const detail::OpShape s = detail::check_qkv(fn, q.dimensions(), k.dimensions(), v.dimensions(), opts);
  if (gk) detail::expect_dims(fn, "gk", gk->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  if (gv) detail::expect_dims(fn, "gv", gv->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  detail::expect_dims(fn, "do_", do_.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  const auto sd = detail::state_dims(s, opts.state_v_first);
  if (dht) detail::expect_state_dims(fn, "dht", dht->dimensions(), s, opts.state_v_first);
  detail::reject_forward_only_extras(fn, opts);
  const Index T_ = s.T, H = s.H, K = s.K, V = s.V;
  const Acc scale = detail::recurrent_scale<Acc>(opts, K);
  const auto in = [](const auto& t, Index i) { return static_cast<Acc>(t.data()[i]); };

  NaiveGrads<Acc> g;
  g.dq = Tensor<Acc, 4>(s.B, T_, H, K);
  g.dk = Tensor<Acc, 4>(s.B, T_, H, K);
  g.dv = Tensor<Acc, 4>(s.B, T_, H, V);
  g.dq.setZero();
  g.dk.setZero();
  g.dv.setZero();
  if (gk) {
    g.dgk = Tensor<Acc, 4>(s.B, T_, H, K);
    g.dgk->setZero();
  }
  if (gv) {
    g.dgv = Tensor<Acc, 4>(s.B, T_, H, V);
    g.dgv->setZero();
  }
  g.dh0 = Tensor<Acc, 4>(sd[0], sd[1], sd[2], sd[3]);

  std::vector<detail::RowMat<Acc>> states;  // states[i] = S after i processed tokens (states[0] = h0)
  std::vector<Acc> o_row(static_cast<std::size_t>(V)), ek(static_cast<std::size_t>(K)), ev(static_cast<std::size_t>(V));
  std::vector<Acc> rk(static_cast<std::size_t>(K)), rv(static_cast<std::size_t>(V));
  std::vector<Acc> o_seq;  // o of the sequence in processing order, needed by dgv
  detail::RowMat<Acc> dS(K, V), ST(K, V);
  for (Index n = 0; n < s.N; ++n) {
    const detail::Seq sq = s.seqs[static_cast<std::size_t>(n)];
    const auto rows = [&](Index i) {
      const Index t = detail::recurrent_step_time(sq, i, opts.reverse);
      return std::pair<Index, Index>{((sq.b * T_ + t) * H) * K, ((sq.b * T_ + t) * H) * V};
    };
    for (Index h = 0; h < H; ++h) {
      // Forward: every state, and o for dgv.
      states.assign(static_cast<std::size_t>(sq.len + 1), detail::RowMat<Acc>(K, V));
      o_seq.assign(static_cast<std::size_t>(sq.len * V), Acc(0));
      if (opts.initial_state)
        detail::load_state(states[0], opts.initial_state->data() + (n * H + h) * K * V, K, V, opts.state_v_first);
      else
        states[0].setZero();
      for (Index i = 0; i < sq.len; ++i) {
        const auto [bk, bv] = rows(i);
        const Index rowk = bk + h * K, rowv = bv + h * V;
        detail::recurrent_gate_factors(ek, gk, rowk, K);
        detail::recurrent_gate_factors(ev, gv, rowv, V);
        const auto& P = states[static_cast<std::size_t>(i)];
        auto& S = states[static_cast<std::size_t>(i + 1)];
        for (Index a = 0; a < K; ++a)
          for (Index c = 0; c < V; ++c)
            S(a, c) = P(a, c) * ek[static_cast<std::size_t>(a)] * ev[static_cast<std::size_t>(c)] +
                      in(k, rowk + a) * in(v, rowv + c);
        for (Index c = 0; c < V; ++c) {
          Acc acc = 0;
          for (Index a = 0; a < K; ++a) acc += in(q, rowk + a) * S(a, c);
          o_seq[static_cast<std::size_t>(i * V + c)] = scale * acc;
        }
        // dq_t = scale · S_t · do_t
        for (Index a = 0; a < K; ++a) {
          Acc acc = 0;
          for (Index c = 0; c < V; ++c) acc += S(a, c) * in(do_, rowv + c);
          g.dq.data()[rowk + a] = scale * acc;
        }
      }
      // Reverse sweep for dS, dk, dv, dh0.
      if (dht)
        detail::load_state(dS, dht->data() + (n * H + h) * K * V, K, V, opts.state_v_first);
      else
        dS.setZero();
      // Boundary terms of dgk/dgv: row and column sums of S_last ⊙ dht.
      ST = states.back().cwiseProduct(dS);
      for (Index a = 0; a < K; ++a) rk[static_cast<std::size_t>(a)] = ST.row(a).sum();
      for (Index c = 0; c < V; ++c) rv[static_cast<std::size_t>(c)] = ST.col(c).sum();
      for (Index i = sq.len - 1; i >= 0; --i) {
        const auto [bk, bv] = rows(i);
        const Index rowk = bk + h * K, rowv = bv + h * V;
        for (Index a = 0; a < K; ++a)
          for (Index c = 0; c < V; ++c) dS(a, c) += scale * in(q, rowk + a) * in(do_, rowv + c);
        for (Index a = 0; a < K; ++a) {
          Acc acc = 0;
          for (Index c = 0; c < V; ++c) acc += dS(a, c) * in(v, rowv + c);
          g.dk.data()[rowk + a] = acc;
        }
        for (Index c = 0; c < V; ++c) {
          Acc acc = 0;
          for (Index a = 0; a < K; ++a) acc += dS(a, c) * in(k, rowk + a);
          g.dv.data()[rowv + c] = acc;
        }
        detail::recurrent_gate_factors(ek, gk, rowk, K);
        detail::recurrent_gate_factors(ev, gv, rowv, V);
        for (Index a = 0; a < K; ++a)
          for (Index c = 0; c < V; ++c) dS(a, c) *= ek[static_cast<std::size_t>(a)] * ev[static_cast<std::size_t>(c)];
        // Reverse cumulative sums (the sums run over s at or after t in processing order).
        if (gk)
          for (Index a = 0; a < K; ++a) {
            rk[static_cast<std::size_t>(a)] +=
                in(q, rowk + a) * g.dq.data()[rowk + a] - in(k, rowk + a) * g.dk.data()[rowk + a];
            g.dgk->data()[rowk + a] = rk[static_cast<std::size_t>(a)];
          }
        if (gv)
          for (Index c = 0; c < V; ++c) {
            rv[static_cast<std::size_t>(c)] += o_seq[static_cast<std::size_t>(i * V + c)] * in(do_, rowv + c) -
                                               in(v, rowv + c) * g.dv.data()[rowv + c];
            g.dgv->data()[rowv + c] = rv[static_cast<std::size_t>(c)];
          }
      }
      detail::store_state(dS, g.dh0.data() + (n * H + h) * K * V, K, V, opts.state_v_first);
    }
  }
  return g;
}

}  // namespace gla
