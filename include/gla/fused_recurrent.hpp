#pragma once
/// gla/fused_recurrent.hpp: fused_recurrent_gla, the token-by-token GLA recurrence (forward and backward) with
/// fla's semantics: one K×V state per (sequence, head), optional gk/gv gates, reverse time, varlen.

#include <gla/core.hpp>
#include <gla/detail/parallel.hpp>
#include <gla/detail/recurrent_common.hpp>

#include <cstring>

namespace gla {

/// Gradients of fused_recurrent_gla for L = Σ o·do + Σ final_state·dht: dq, dk [B,T,H,K] T; dv [B,T,H,V] T;
/// dgk [B,T,H,K] T iff gk was given; dgv [B,T,H,V] T iff gv was given; dh0 float [N,H,K,V] (V-first with
/// state_v_first) iff opts.initial_state was given (as fla, whose dh0 exists only for a given h0).
template <class T>
struct FusedRecurrentGLAGrads {
  Tensor<T, 4> dq, dk, dv;
  std::optional<Tensor<T, 4>> dgk, dgv;
  std::optional<Tensor<float, 4>> dh0;
};

namespace detail::recurrent {

/// The input checks shared by the forward and the backward.
template <class T>
OpShape check_inputs(const std::string& fn, const ConstView<T, 4>& q, const ConstView<T, 4>& k,
                     const ConstView<T, 4>& v, const std::optional<ConstView<T, 4>>& gk,
                     const std::optional<ConstView<T, 4>>& gv, const GLAOptions& opts) {
  static_assert(is_supported_scalar_v<T>,
                "fused_recurrent_gla: inputs must be float, double, Eigen::bfloat16 or Eigen::half");
  OpShape s = check_qkv(fn, q.dimensions(), k.dimensions(), v.dimensions(), opts);
  if (gk) expect_dims(fn, "gk", gk->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  if (gv) expect_dims(fn, "gv", gv->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  return s;
}

/// Inputs of one call as Acc pointers (bf16/half converted once, before any per-token work).
template <class Acc, class T>
struct AccInputs {
  AccInput<Acc, T> q, k, v, gk, gv, do_;
};

/// Per-row decay of one step: ek[a] = exp(gk_t[a]) · gamma (or gamma), ev[c] = exp(gv_t[c]).
/// Returns whether the rows need scaling at all (false: no gk and gamma = 1, so S·1 is skipped).
template <class Acc>
bool step_decay(Eigen::Array<Acc, Eigen::Dynamic, 1>& ek, Eigen::Array<Acc, Eigen::Dynamic, 1>& ev, const Acc* gk,
                const Acc* gv, Index K, Index V, Acc gamma) {
  using MapA = Eigen::Map<const Eigen::Array<Acc, Eigen::Dynamic, 1>>;
  if (gv) ev = MapA(gv, V).exp();
  if (gk) {
    ek = MapA(gk, K).exp();
    if (gamma != Acc(1)) ek *= gamma;
    return true;
  }
  if (gamma == Acc(1)) return false;
  ek.setConstant(gamma);
  return true;
}

/// One step of the recurrence, out of place (next may equal prev):
///   next = diag(ek) · prev · diag(ev) + k vᵀ.
template <class Acc>
void state_step(const Acc* prev, Acc* next, const Acc* kt, const Acc* vt,
                const Eigen::Array<Acc, Eigen::Dynamic, 1>& ek, const Eigen::Array<Acc, Eigen::Dynamic, 1>& ev,
                bool scale_rows, bool has_gv, Index K, Index V) {
  using RowA = Eigen::Map<Eigen::Array<Acc, 1, Eigen::Dynamic>>;
  using CRowA = Eigen::Map<const Eigen::Array<Acc, 1, Eigen::Dynamic>>;
  const CRowA vr(vt, V);
  const auto evr = ev.transpose();
  for (Index a = 0; a < K; ++a) {
    const CRowA p(prev + a * V, V);
    RowA x(next + a * V, V);
    if (has_gv)
      x = p * evr * (scale_rows ? ek(a) : Acc(1)) + kt[a] * vr;
    else if (scale_rows)
      x = p * ek(a) + kt[a] * vr;
    else
      x = p + kt[a] * vr;
  }
}

}  // namespace detail::recurrent

/// Multiplies one head's state [K×V] by gamma: the extra decay fused_recurrent_gla applies per step with
/// opts.gamma (the kernel folds it into the per-row gate factor instead of a separate pass over the state).
template <class Derived>
void apply_gamma_decay(Eigen::DenseBase<Derived>& state, typename Derived::Scalar gamma) {
  state.derived() *= gamma;
}

/// Multiplies every state of states float [N,H,K,V] (or [N,H,V,K]) in place by gamma: empty = unchanged,
/// 1 value = every head, H values = per head (the values of opts.gamma). Throws gla::Error on a wrong count.
inline void apply_gamma_decay(View<float, 4> states, const std::vector<float>& gamma) {
  const Index N = states.dimension(0), H = states.dimension(1), D = states.dimension(2) * states.dimension(3);
  GLAOptions checked;
  checked.gamma = gamma;
  detail::check_state_extras("apply_gamma_decay", checked, H);
  if (gamma.empty()) return;
  for (Index n = 0; n < N; ++n)
    for (Index h = 0; h < H; ++h) {
      Eigen::Map<Eigen::ArrayXf> x(states.data() + (n * H + h) * D, D);
      x *= detail::gamma_for_head<float>(gamma, h);
    }
}

/// fused_recurrent_gla core: writes o and the final states into caller-provided views.
///   S_t = diag(exp(gk_t)) · S_{t-1} · diag(exp(gv_t)) · gamma + k_t v_tᵀ  (then clamped), o_t = scale · q_tᵀ S_t
/// per (sequence, head), S_0 = initial_state (or 0), time running backwards with opts.reverse.
/// q, k [B,T,H,K] T; v [B,T,H,V] T; gk [B,T,H,K] T and gv [B,T,H,V] T optional log-space gates (≤ 0 assumed);
/// o [B,T,H,V] T output; final_state float [N,H,K,V] (or [N,H,V,K] with state_v_first) output, given if and
/// only if opts.output_final_state. final_state may be the very buffer of opts.initial_state (in-place state
/// update, as in decoding); no other output may overlap an input or another output.
/// Options: scale (default 1/sqrt(K), explicit 0 kept), initial_state, state_v_first, cu_seqlens (B = 1,
/// zero-length sequences pass their state through), reverse; extras gamma (empty, 1 or H values, multiplied
/// into the state with the gates before adding k vᵀ) and state_clamp_min/max (applied after each step, min
/// first); unset extras give exactly fla's result. chunk_size, max_seqlen and heuristic_fallback are ignored.
/// T = float, double, Eigen::bfloat16, Eigen::half; bf16/half are converted to float once up front, states
/// and arithmetic are in acc_t<T>. Threads: the parallel engine over (sequence, head) pairs, longest sequences
/// first; deterministic. Allocates its workspace (and bf16/half conversions) before any thread starts.
/// Throws gla::Error before writing anything.
template <class Q>
void fused_recurrent_gla_into(const Q& q_in, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v,
                              std::optional<ConstViewOf<Q, 4>> gk, std::optional<ConstViewOf<Q, 4>> gv,
                              const GLAOptions& opts, ViewOf<Q, 4> o,
                              std::optional<View<float, 4>> final_state = std::nullopt) {
  namespace rd = detail::recurrent;
  using T = scalar_type_t<Q>;
  using Acc = acc_t<T>;
  const std::string fn = "fused_recurrent_gla";
  const ConstView<T, 4> q(q_in);
  const detail::OpShape s = rd::check_inputs<T>(fn, q, k, v, gk, gv, opts);
  detail::check_state_extras(fn, opts, s.H);
  detail::expect_dims(fn, "o", o.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  detail::expect_output_iff(fn, "final_state", final_state, opts.output_final_state, "output_final_state is true",
                            "output_final_state is false");
  if (final_state) detail::expect_state_dims(fn, "final_state", final_state->dimensions(), s, opts.state_v_first);
  detail::check_aliasing(
      fn,
      {detail::buffer("q", q), detail::buffer("k", k), detail::buffer("v", v), detail::buffer("gk", gk),
       detail::buffer("gv", gv), detail::buffer("initial_state", opts.initial_state)},
      {detail::buffer("o", o), detail::buffer("final_state", final_state)}, {{"final_state", "initial_state"}});

  const Index T_ = s.T, H = s.H, K = s.K, V = s.V, KV = K * V;
  const Acc scale = detail::recurrent_scale<Acc>(opts, K);
  const bool clamp_lo = opts.state_clamp_min.has_value(), clamp_hi = opts.state_clamp_max.has_value();
  const Acc lo = clamp_lo ? static_cast<Acc>(*opts.state_clamp_min) : Acc(0);
  const Acc hi = clamp_hi ? static_cast<Acc>(*opts.state_clamp_max) : Acc(0);

  rd::AccInputs<Acc, T> in;
  in.q = detail::AccInput<Acc, T>(q);
  in.k = detail::AccInput<Acc, T>(k);
  in.v = detail::AccInput<Acc, T>(v);
  if (gk) in.gk = detail::AccInput<Acc, T>(*gk);
  if (gv) in.gv = detail::AccInput<Acc, T>(*gv);

  // Per-thread scratch, allocated here so that nothing is allocated (or can throw) inside the parallel loop.
  struct Scratch {
    detail::RowMat<Acc> S;
    Eigen::Array<Acc, Eigen::Dynamic, 1> ek, ev;
    Eigen::Array<Acc, 1, Eigen::Dynamic> o_acc;
  };
  const std::vector<Index> order = detail::pairs_longest_first(s);
  const Index items = static_cast<Index>(order.size());
  Scratch init;
  init.S.resize(K, V);
  init.ek.resize(K);
  init.ev.resize(V);
  init.o_acc.resize(V);
  auto scratch = detail::per_worker(items, init);

  const bool has_gv = gv.has_value();
  T* o_data = o.data();
  float* ht_data = final_state ? final_state->data() : nullptr;
  const float* h0_data = opts.initial_state ? opts.initial_state->data() : nullptr;

  detail::parallel_for(items, [&](Index item, int worker) {
    using RowA = Eigen::Map<Eigen::Array<Acc, 1, Eigen::Dynamic>>;
    using CRowA = Eigen::Map<const Eigen::Array<Acc, 1, Eigen::Dynamic>>;
    const Index p = order[static_cast<std::size_t>(item)];
    Scratch& w = scratch[static_cast<std::size_t>(worker)];
    const Index n = p / H, h = p % H;
    const detail::Seq sq = s.seqs[static_cast<std::size_t>(n)];
    if (h0_data)
      detail::load_state(w.S.data(), h0_data + p * KV, K, V, opts.state_v_first);
    else
      w.S.setZero();
    const Acc gam = detail::gamma_for_head<Acc>(opts.gamma, h);
    for (Index i = 0; i < sq.len; ++i) {
      const Index t = detail::recurrent_step_time(sq, i, opts.reverse);
      const Index rowk = ((sq.b * T_ + t) * H + h) * K, rowv = ((sq.b * T_ + t) * H + h) * V;
      const Acc* qt = in.q.data() + rowk;
      const Acc* kt = in.k.data() + rowk;
      const bool scale_rows = rd::step_decay<Acc>(w.ek, w.ev, gk ? in.gk.data() + rowk : nullptr,
                                                  gv ? in.gv.data() + rowv : nullptr, K, V, gam);
      const CRowA vt(in.v.data() + rowv, V);
      const auto evr = w.ev.transpose();
      // One pass over the state per step: decay, add k vᵀ, clamp, and accumulate o_t = scale · q_tᵀ S_t
      // while the row is hot (this is state_step fused with the output and the clamps).
      w.o_acc.setZero();
      for (Index a = 0; a < K; ++a) {
        RowA x(w.S.data() + a * V, V);
        if (has_gv)
          x = x * evr * (scale_rows ? w.ek(a) : Acc(1)) + kt[a] * vt;
        else if (scale_rows)
          x = x * w.ek(a) + kt[a] * vt;
        else
          x += kt[a] * vt;
        if (clamp_lo) x = x.max(lo);
        if (clamp_hi) x = x.min(hi);
        w.o_acc += qt[a] * x;
      }
      detail::store_row(o_data + rowv, (scale * w.o_acc).matrix());
    }
    if (ht_data) detail::store_state(w.S, ht_data + p * KV, K, V, opts.state_v_first);
  });
}

/// fused_recurrent_gla, fla's API: returns o [B,T,H,V] T and, with opts.output_final_state, the final states
/// float [N,H,K,V] (or [N,H,V,K]). Inputs, options and semantics as fused_recurrent_gla_into.
template <class Q>
GLAResult<scalar_type_t<Q>> fused_recurrent_gla(const Q& q_in, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v,
                                                std::optional<ConstViewOf<Q, 4>> gk = std::nullopt,
                                                std::optional<ConstViewOf<Q, 4>> gv = std::nullopt,
                                                const GLAOptions& opts = {}) {
  using T = scalar_type_t<Q>;
  const ConstView<T, 4> q(q_in);
  const detail::OpShape s = detail::recurrent::check_inputs<T>("fused_recurrent_gla", q, k, v, gk, gv, opts);
  GLAResult<T> r;
  r.o = Tensor<T, 4>(s.B, s.T, s.H, s.V);
  if (opts.output_final_state) r.final_state = Tensor<float, 4>(detail::state_dims(s, opts.state_v_first));
  fused_recurrent_gla_into(q, k, v, gk, gv, opts, r.o, detail::optional_output(r.final_state));
  return r;
}

/// Backward core of fused_recurrent_gla for L = Σ o·do_ + Σ final_state·dht, writing into caller views.
/// q, k [B,T,H,K] T; v [B,T,H,V] T; gk [B,T,H,K] T, gv [B,T,H,V] T optional; do_ [B,T,H,V] T upstream grad of o;
/// dht float [N,H,K,V] (or V-first) optional upstream grad of the final state (absent: 0; accepted whatever
/// opts.output_final_state says). Outputs: dq, dk [B,T,H,K] T; dv [B,T,H,V] T; dgk [B,T,H,K] T given iff gk;
/// dgv [B,T,H,V] T given iff gv; dh0 float (state layout) given iff opts.initial_state. dh0 may be the very
/// buffer of dht; no other output may overlap an input or another output.
///
/// Per (sequence, head), with S_t the state after processed step t and S̃_t = diag(exp(gk_t)) S_{t-1}
/// diag(exp(gv_t)) its decayed predecessor (docs/fused_recurrent.md derives this):
///   dS ← dht; for t from last to first processed: dS += scale · q_t do_tᵀ (now dS = ∂L/∂S_t);
///   dq_t = scale · S_t do_t;  dk_t = dS v_t;  dv_t = dSᵀ k_t;  dgk_t = rowsum(dS ⊙ S̃_t);  dgv_t = colsum(dS ⊙ S̃_t);
///   dS = diag(exp(gk_t)) dS diag(exp(gv_t));   finally dh0 = dS.
/// dgk/dgv are the reverse cumulative sums of the reference backward before telescoping; summed directly they do not
/// cancel, which keeps strong decay (per-step log gate ≈ −5) accurate in fp32. Saved vs recomputed: nothing is saved by
/// the forward. A first forward sweep stores the state before every block of C = max(16, ceil(sqrt(len))) steps
/// (checkpoints); the reverse sweep re-runs the forward from each checkpoint over its block, keeping the block's C+1
/// states, and walks them backwards (the last block's states are kept from the first sweep). The forward is never
/// undone (dividing by exp(g) would overflow under strong decay). Workspace per thread: (ceil(len/C) + C + 1)·K·V
/// values of acc_t<T>, allocated before the token loop. OpenMP over (sequence, head) pairs, deterministic. gamma and
/// the state clamps are rejected with gla::Error: they are forward-only extras (gamma is an option, not a tensor, so it
/// has no gradient output; a clamp is not differentiable at its bounds; fla has neither to match). Throws gla::Error
/// before writing anything.
template <class Q>
void fused_recurrent_gla_backward_into(const Q& q_in, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v,
                                       std::optional<ConstViewOf<Q, 4>> gk, std::optional<ConstViewOf<Q, 4>> gv,
                                       ConstViewOf<Q, 4> do_, std::optional<ConstView<float, 4>> dht,
                                       const GLAOptions& opts, ViewOf<Q, 4> dq, ViewOf<Q, 4> dk, ViewOf<Q, 4> dv,
                                       std::optional<ViewOf<Q, 4>> dgk = std::nullopt,
                                       std::optional<ViewOf<Q, 4>> dgv = std::nullopt,
                                       std::optional<View<float, 4>> dh0 = std::nullopt) {
  namespace rd = detail::recurrent;
  using T = scalar_type_t<Q>;
  using Acc = acc_t<T>;
  using ArrayA = Eigen::Array<Acc, Eigen::Dynamic, 1>;
  const std::string fn = "fused_recurrent_gla_backward";
  const ConstView<T, 4> q(q_in);
  const detail::OpShape s = rd::check_inputs<T>(fn, q, k, v, gk, gv, opts);
  detail::reject_forward_only_extras(fn, opts);
  detail::expect_dims(fn, "do_", do_.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  if (dht) detail::expect_state_dims(fn, "dht", dht->dimensions(), s, opts.state_v_first);
  detail::expect_dims(fn, "dq", dq.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  detail::expect_dims(fn, "dk", dk.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  detail::expect_dims(fn, "dv", dv.dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  detail::expect_output_iff(fn, "dgk", dgk, gk.has_value(), "gk is given", "gk is not given");
  detail::expect_output_iff(fn, "dgv", dgv, gv.has_value(), "gv is given", "gv is not given");
  detail::expect_output_iff(fn, "dh0", dh0, opts.initial_state.has_value(), "initial_state is given",
                            "initial_state is not given");
  if (dgk) detail::expect_dims(fn, "dgk", dgk->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  if (dgv) detail::expect_dims(fn, "dgv", dgv->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  if (dh0) detail::expect_state_dims(fn, "dh0", dh0->dimensions(), s, opts.state_v_first);
  detail::check_aliasing(fn,
                         {detail::buffer("q", q), detail::buffer("k", k), detail::buffer("v", v),
                          detail::buffer("do_", do_), detail::buffer("gk", gk), detail::buffer("gv", gv),
                          detail::buffer("dht", dht), detail::buffer("initial_state", opts.initial_state)},
                         {detail::buffer("dq", dq), detail::buffer("dk", dk), detail::buffer("dv", dv),
                          detail::buffer("dgk", dgk), detail::buffer("dgv", dgv), detail::buffer("dh0", dh0)},
                         {{"dh0", "dht"}});

  const Index T_ = s.T, H = s.H, K = s.K, V = s.V, KV = K * V;
  const Acc scale = detail::recurrent_scale<Acc>(opts, K);
  const auto block_len = [](Index len) {
    return std::max<Index>(16, static_cast<Index>(std::ceil(std::sqrt(static_cast<double>(len)))));
  };
  Index max_blocks = 0, max_block = 0;
  for (const detail::Seq& sq : s.seqs) {
    const Index C = block_len(sq.len);
    max_blocks = std::max(max_blocks, (sq.len + C - 1) / C);
    max_block = std::max(max_block, std::min(C, sq.len));
  }

  rd::AccInputs<Acc, T> in;
  in.q = detail::AccInput<Acc, T>(q);
  in.k = detail::AccInput<Acc, T>(k);
  in.v = detail::AccInput<Acc, T>(v);
  in.do_ = detail::AccInput<Acc, T>(do_);
  if (gk) in.gk = detail::AccInput<Acc, T>(*gk);
  if (gv) in.gv = detail::AccInput<Acc, T>(*gv);

  struct Scratch {
    std::vector<Acc> ckpt;   // [blocks][K·V]: the state before each block
    std::vector<Acc> block;  // [C+1][K·V]: the state before the block, then after each of its steps
    detail::RowMat<Acc> dS;
    ArrayA ek, ev, dv_acc, dgv_acc, dq_row, dk_row, dgk_row;
  };
  const std::vector<Index> order = detail::pairs_longest_first(s);
  const Index items = static_cast<Index>(order.size());
  Scratch init;
  init.ckpt.resize(static_cast<std::size_t>(max_blocks * KV));
  init.block.resize(static_cast<std::size_t>((max_block + 1) * KV));
  init.dS.resize(K, V);
  init.ek.resize(K);
  init.ev.resize(V);
  init.dv_acc.resize(V);
  init.dgv_acc.resize(V);
  init.dq_row.resize(K);
  init.dk_row.resize(K);
  init.dgk_row.resize(K);
  auto scratch = detail::per_worker(items, init);

  const float* h0_data = opts.initial_state ? opts.initial_state->data() : nullptr;
  const float* dht_data = dht ? dht->data() : nullptr;
  T* dq_data = dq.data();
  T* dk_data = dk.data();
  T* dv_data = dv.data();
  T* dgk_data = dgk ? dgk->data() : nullptr;
  T* dgv_data = dgv ? dgv->data() : nullptr;
  float* dh0_data = dh0 ? dh0->data() : nullptr;
  const bool has_gk = gk.has_value(), has_gv = gv.has_value(), gated = has_gk || has_gv;

  detail::parallel_for(items, [&](Index item, int worker) {
    using RowA = Eigen::Map<Eigen::Array<Acc, 1, Eigen::Dynamic>>;
    using CRowA = Eigen::Map<const Eigen::Array<Acc, 1, Eigen::Dynamic>>;
    const Index p = order[static_cast<std::size_t>(item)];
    Scratch& w = scratch[static_cast<std::size_t>(worker)];
    const Index n = p / H, h = p % H;
    const detail::Seq sq = s.seqs[static_cast<std::size_t>(n)];
    const Index C = block_len(sq.len), nblocks = (sq.len + C - 1) / C;
    const auto offsets = [&](Index i) {
      const Index t = detail::recurrent_step_time(sq, i, opts.reverse);
      return std::pair<Index, Index>{((sq.b * T_ + t) * H + h) * K, ((sq.b * T_ + t) * H + h) * V};
    };
    const auto decay = [&](Index rowk, Index rowv) {
      return rd::step_decay<Acc>(w.ek, w.ev, has_gk ? in.gk.data() + rowk : nullptr,
                                 has_gv ? in.gv.data() + rowv : nullptr, K, V, Acc(1));
    };
    // Runs block j forward from w.block[0], filling w.block[1..len].
    const auto run_block = [&](Index j) {
      const Index i0 = j * C, len = std::min(C, sq.len - i0);
      for (Index i = 0; i < len; ++i) {
        const auto [rowk, rowv] = offsets(i0 + i);
        const bool scale_rows = decay(rowk, rowv);
        rd::state_step<Acc>(w.block.data() + i * KV, w.block.data() + (i + 1) * KV, in.k.data() + rowk,
                            in.v.data() + rowv, w.ek, w.ev, scale_rows, has_gv, K, V);
      }
      return len;
    };

    // Forward sweep: checkpoints before every block; the last block's states stay in w.block.
    if (h0_data)
      detail::load_state(w.block.data(), h0_data + p * KV, K, V, opts.state_v_first);
    else
      std::fill(w.block.begin(), w.block.begin() + KV, Acc(0));
    const std::size_t state_bytes = static_cast<std::size_t>(KV) * sizeof(Acc);
    for (Index j = 0; j < nblocks; ++j) {
      // Block j starts from the last state of block j-1 (still in the buffer); remember it as checkpoint j.
      if (j > 0) std::memcpy(w.block.data(), w.block.data() + std::min(C, sq.len - (j - 1) * C) * KV, state_bytes);
      std::memcpy(w.ckpt.data() + j * KV, w.block.data(), state_bytes);
      run_block(j);
    }

    if (dht_data)
      detail::load_state(w.dS.data(), dht_data + p * KV, K, V, opts.state_v_first);
    else
      w.dS.setZero();
    for (Index j = nblocks - 1; j >= 0; --j) {
      if (j != nblocks - 1) {
        std::memcpy(w.block.data(), w.ckpt.data() + j * KV, state_bytes);
        run_block(j);
      }
      const Index i0 = j * C, len = std::min(C, sq.len - i0);
      for (Index i = len - 1; i >= 0; --i) {
        const auto [rowk, rowv] = offsets(i0 + i);
        const Acc* qt = in.q.data() + rowk;
        const Acc* kt = in.k.data() + rowk;
        const CRowA vt(in.v.data() + rowv, V), dot(in.do_.data() + rowv, V);
        const bool scale_rows = decay(rowk, rowv);
        const auto evr = w.ev.transpose();
        const Acc* prev = w.block.data() + i * KV;       // S_{t-1}
        const Acc* cur = w.block.data() + (i + 1) * KV;  // S_t
        w.dv_acc.setZero();
        if (has_gv) w.dgv_acc.setZero();
        for (Index a = 0; a < K; ++a) {
          RowA dSa(w.dS.data() + a * V, V);
          dSa += (scale * qt[a]) * dot;  // dS = ∂L/∂S_t
          w.dq_row(a) = scale * (CRowA(cur + a * V, V) * dot).sum();
          w.dk_row(a) = (dSa * vt).sum();
          w.dv_acc += kt[a] * dSa.transpose();
          if (gated) {
            const Acc ra = scale_rows ? w.ek(a) : Acc(1);
            const CRowA pa(prev + a * V, V);
            if (has_gv) {
              // S̃_t[a,:] = ra · S_{t-1}[a,:] ⊙ ev, so dS ⊙ S̃_t = ra · (dS ⊙ ev) ⊙ S_{t-1}.
              const auto dSe = dSa * evr;
              if (has_gk) w.dgk_row(a) = ra * (dSe * pa).sum();
              w.dgv_acc += ra * (dSe * pa).transpose();
              dSa = ra * dSe;
            } else {
              w.dgk_row(a) = ra * (dSa * pa).sum();
              dSa *= ra;
            }
          }
        }
        detail::store_row(dq_data + rowk, w.dq_row.matrix().transpose());
        detail::store_row(dk_data + rowk, w.dk_row.matrix().transpose());
        detail::store_row(dv_data + rowv, w.dv_acc.matrix().transpose());
        if (has_gk) detail::store_row(dgk_data + rowk, w.dgk_row.matrix().transpose());
        if (has_gv) detail::store_row(dgv_data + rowv, w.dgv_acc.matrix().transpose());
      }
    }
    if (dh0_data) detail::store_state(w.dS, dh0_data + p * KV, K, V, opts.state_v_first);
  });
}

/// fused_recurrent_gla backward, allocating the gradients: see fused_recurrent_gla_backward_into.
template <class Q>
FusedRecurrentGLAGrads<scalar_type_t<Q>> fused_recurrent_gla_backward(
    const Q& q_in, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v, std::optional<ConstViewOf<Q, 4>> gk,
    std::optional<ConstViewOf<Q, 4>> gv, ConstViewOf<Q, 4> do_, std::optional<ConstView<float, 4>> dht = std::nullopt,
    const GLAOptions& opts = {}) {
  using T = scalar_type_t<Q>;
  const ConstView<T, 4> q(q_in);
  const detail::OpShape s = detail::recurrent::check_inputs<T>("fused_recurrent_gla_backward", q, k, v, gk, gv, opts);
  FusedRecurrentGLAGrads<T> g;
  g.dq = Tensor<T, 4>(s.B, s.T, s.H, s.K);
  g.dk = Tensor<T, 4>(s.B, s.T, s.H, s.K);
  g.dv = Tensor<T, 4>(s.B, s.T, s.H, s.V);
  if (gk) g.dgk = Tensor<T, 4>(s.B, s.T, s.H, s.K);
  if (gv) g.dgv = Tensor<T, 4>(s.B, s.T, s.H, s.V);
  if (opts.initial_state) g.dh0 = Tensor<float, 4>(detail::state_dims(s, opts.state_v_first));
  fused_recurrent_gla_backward_into(q, k, v, gk, gv, do_, dht, opts, g.dq, g.dk, g.dv, detail::optional_output(g.dgk),
                                    detail::optional_output(g.dgv), detail::optional_output(g.dh0));
  return g;
}

}  // namespace gla
