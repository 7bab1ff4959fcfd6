#pragma once
/// gla/fused_recurrent.hpp: fused_recurrent_gla, the token-by-token GLA recurrence (forward and backward) with
/// fla's semantics: one K×V state per (sequence, head), optional gk/gv gates, reverse time, varlen.

#include <gla/chunk_backward.hpp>
#include <gla/core.hpp>
#include <gla/detail/chunk_kernels.hpp>
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

namespace detail {

/// a · b + c with one rounding when the build has FMA (as Eigen's pmadd then is), else two: the scalar twin of
/// pmadd, so that scalar tails round exactly like the vectorised body.
template <class Acc>
inline Acc madd(Acc a, Acc b, Acc c) {
#ifdef EIGEN_VECTORIZE_FMA
  return std::fma(a, b, c);
#else
  return a * b + c;
#endif
}

/// out[c] ← madd(a, x[c], out[c]) for c < n.
template <class Acc>
void axpy_madd(Acc a, const Acc* x, Acc* out, Index n) {
  namespace ei = Eigen::internal;
  using P = typename ei::packet_traits<Acc>::type;
  constexpr Index PS = ei::packet_traits<Acc>::size;
  Index c = 0;
  if constexpr (PS > 1) {
    const P pa = ei::pset1<P>(a);
    for (; c + PS <= n; c += PS) ei::pstoreu(out + c, ei::pmadd(pa, ei::ploadu<P>(x + c), ei::ploadu<P>(out + c)));
  }
  for (; c < n; ++c) out[c] = madd(a, x[c], out[c]);
}

/// out[j] = Σ_a q[a] · x[j·ld + a] for j < rows, accumulated in ascending a with madd — the same operations, in
/// the same order, as axpy_madd over the rows of the transposed layout. Full panels of one packet of rows
/// transpose packet blocks in registers.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"  // Eigen's packet types as template arguments
#endif
template <class Acc>
void panel_dots(const Acc* x, Index ld, const Acc* q, Index K, Index rows, Acc* out) {
  namespace ei = Eigen::internal;
  using P = typename ei::packet_traits<Acc>::type;
  constexpr Index PS = ei::packet_traits<Acc>::size;
  Index a = 0;
  if constexpr (PS > 1) {
    if (rows == PS) {
      P acc = ei::pset1<P>(Acc(0));
      for (; a + PS <= K; a += PS) {
        ei::PacketBlock<P, PS> b;
        for (Index j = 0; j < PS; ++j) b.packet[j] = ei::ploadu<P>(x + j * ld + a);
        ei::ptranspose(b);
        for (Index i = 0; i < PS; ++i) acc = ei::pmadd(ei::pset1<P>(q[a + i]), b.packet[i], acc);
      }
      ei::pstoreu(out, acc);
    } else {
      for (Index j = 0; j < rows; ++j) out[j] = Acc(0);
    }
  } else {
    for (Index j = 0; j < rows; ++j) out[j] = Acc(0);
  }
  for (; a < K; ++a)
    for (Index j = 0; j < rows; ++j) out[j] = madd(q[a], x[j * ld + a], out[j]);
}
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

/// x[0, w) = the decayed row p of a K-first state tile, (p ⊙ ev) · ek_a as two products (Gv, Gk: which gates
/// apply), before k·v is added: the operations of recurrent_tile_step on every element. x may be p.
template <bool Gk, bool Gv, class Acc>
void decayed_row(const Acc* p, const Acc* ev, Acc ek_a, Acc* x, Index w) {
  const ConstRowArrMap<Acc> pr(p, w);
  RowArrMap<Acc> xr(x, w);
  if constexpr (Gv && Gk)
    xr = pr * ConstRowArrMap<Acc>(ev, w) * ek_a;
  else if constexpr (Gv)
    xr = pr * ConstRowArrMap<Acc>(ev, w);
  else if constexpr (Gk)
    xr = pr * ek_a;
  else
    xr = pr;
}

/// Columns of the K-first step of recurrent_tile_step from a given state without clamps, o unscaled: NP packets
/// from column c0, packet b at c0 + b·PS, except that with Overlap the last one starts at c0 + last (a tile's last
/// PS columns when its width is not a multiple of PS: it shares columns with the packet before it, and both
/// compute the same values there). The block's o stays in NP registers over all K rows, so a row costs one load
/// and one store of the state besides the arithmetic (a row loop through memory stores each new row, reloads it,
/// and loads and stores o). The same operations as recurrent_tile_step's on every element.
template <int NP, bool Overlap, bool Gk, bool Gv, class Acc>
void row_block_step(const Acc* src, Acc* dst, Index ld, Index K, Index c0, const Acc* q, const Acc* k, const Acc* v,
                    const Acc* ek, const Acc* ev, Acc* o, [[maybe_unused]] Index last) {
  namespace ei = Eigen::internal;
  using P = typename ei::packet_traits<Acc>::type;
  constexpr Index PS = ei::packet_traits<Acc>::size;
  static_assert(!Overlap || NP >= 2, "an overlapping packet needs a packet before it");
  const auto at = [&](int b) { return c0 + ((Overlap && b == NP - 1) ? last : b * PS); };
  P acc[NP], vb[NP], eb[NP];
  for (int b = 0; b < NP; ++b) {
    acc[b] = ei::pset1<P>(Acc(0));
    vb[b] = ei::ploadu<P>(v + at(b));
    if constexpr (Gv) eb[b] = ei::ploadu<P>(ev + at(b));
  }
  for (Index a = 0; a < K; ++a) {
    const P ka = ei::pset1<P>(k[a]), qa = ei::pset1<P>(q[a]);
    [[maybe_unused]] const P ea = ei::pset1<P>(Gk ? ek[a] : Acc(1));
    const Acc* pr = src + a * ld;
    Acc* xr = dst + a * ld;
    const auto step = [&](int b) {
      P x = ei::ploadu<P>(pr + at(b));
      if constexpr (Gv) x = ei::pmul(x, eb[b]);
      if constexpr (Gk) x = ei::pmul(x, ea);
      return ei::pmadd(ka, vb[b], x);
    };
    constexpr int kAlone = Overlap ? NP - 2 : NP;  // packets that share no column with another
    for (int b = 0; b < kAlone; ++b) {
      const P x = step(b);
      ei::pstoreu(xr + at(b), x);
      acc[b] = ei::pmadd(qa, x, acc[b]);
    }
    if constexpr (Overlap) {  // both loaded before either is stored: with src == dst the second must read old values
      const P x0 = step(NP - 2), x1 = step(NP - 1);
      ei::pstoreu(xr + at(NP - 2), x0);
      ei::pstoreu(xr + at(NP - 1), x1);
      acc[NP - 2] = ei::pmadd(qa, x0, acc[NP - 2]);
      acc[NP - 1] = ei::pmadd(qa, x1, acc[NP - 1]);
    }
  }
  for (int b = 0; b < NP; ++b) ei::pstoreu(o + at(b), acc[b]);  // shared columns: the same value twice
}

/// row_block_step over `packets` (1 to NP) packets from c0 (Overlap: the last at c0 + last): one instantiation per
/// count.
template <int NP, bool Overlap, bool Gk, bool Gv, class Acc>
void row_block_rest(Index packets, const Acc* src, Acc* dst, Index ld, Index K, Index c0, const Acc* q, const Acc* k,
                    const Acc* v, const Acc* ek, const Acc* ev, Acc* o, Index last) {
  if constexpr (NP > (Overlap ? 1 : 0)) {
    if (packets == NP)
      row_block_step<NP, Overlap, Gk, Gv>(src, dst, ld, K, c0, q, k, v, ek, ev, o, last);
    else
      row_block_rest<NP - 1, Overlap, Gk, Gv>(packets, src, dst, ld, K, c0, q, k, v, ek, ev, o, last);
  }
}

/// The K-first step of recurrent_tile_step from a given state without clamps, o unscaled, in register blocks of up
/// to kMaxBlockPackets packets (row_block_step). A width that is not a multiple of the packet ends in a packet that
/// overlaps the one before it (so the last block has at least two packets); a tile narrower than one packet runs
/// row by row.
template <bool Gk, bool Gv, class Acc>
void row_block_steps(const Acc* src, Acc* dst, Index ld, Index K, Index Vt, const Acc* q, const Acc* k, const Acc* v,
                     const Acc* ek, const Acc* ev, Acc* o) {
  constexpr Index PS = Eigen::internal::packet_traits<Acc>::size;
  constexpr int kMaxBlockPackets = 8;  // 8 accumulators, 8 packets of v and 8 of ev: 24 of AVX-512's 32 registers
  if (PS > 1 && Vt >= PS) {
    const Index packets = (Vt + PS - 1) / PS;
    const bool overlap = Vt % PS != 0;
    Index tail = packets % kMaxBlockPackets;  // the last block's packets
    if (tail == 0) tail = kMaxBlockPackets;
    if (overlap && tail == 1) tail = kMaxBlockPackets + 1;  // split below as 7 + 2
    Index c0 = 0;
    for (; c0 + tail * PS < packets * PS; c0 += kMaxBlockPackets * PS)
      row_block_step<kMaxBlockPackets, false, Gk, Gv>(src, dst, ld, K, c0, q, k, v, ek, ev, o, 0);
    if (tail > kMaxBlockPackets) {
      row_block_step<kMaxBlockPackets - 1, false, Gk, Gv>(src, dst, ld, K, c0, q, k, v, ek, ev, o, 0);
      c0 += (kMaxBlockPackets - 1) * PS;
      tail = 2;
    }
    if (overlap)
      row_block_rest<kMaxBlockPackets, true, Gk, Gv>(tail, src, dst, ld, K, c0, q, k, v, ek, ev, o, Vt - PS - c0);
    else
      row_block_rest<kMaxBlockPackets, false, Gk, Gv>(tail, src, dst, ld, K, c0, q, k, v, ek, ev, o, 0);
    return;
  }
  std::fill_n(o, Vt, Acc(0));  // a tile narrower than one packet (or no vectorisation)
  for (Index a = 0; a < K; ++a) {
    Acc* const x = dst + a * ld;
    decayed_row<Gk, Gv>(src + a * ld, ev, Gk ? ek[a] : Acc(1), x, Vt);
    axpy_madd(k[a], v, x, Vt);
    axpy_madd(q[a], x, o, Vt);
  }
}

/// One step of the recurrence on a state tile, reading `src` (null: the zero state) and writing `dst` (which
/// may be src), with the output row computed in the same pass:
///   dst = diag(ek) · src · diag(ev) + k vᵀ (then clamped),  o = scale · qᵀ dst.
/// K-first tiles are K rows of Vt values (row stride ld); V-first tiles are Vt rows of K values (row stride ld).
/// Gk: rows are scaled by ek (the key gate, gamma folded in); Gv: columns by ev. Both layouts perform the same
/// operations in the same order on every element — the decayed state (src · ev) · ek, then k·v added by madd (one
/// rounding where the build has FMA, written out so that it does not depend on the compiler contracting it) — and o
/// accumulates in ascending key order with one madd per term, so K-first and V-first states give identical bits.
template <bool VFirst, bool Gk, bool Gv, class Acc>
void recurrent_tile_step(const Acc* src, Acc* dst, Index ld, Index K, Index Vt, const Acc* q, const Acc* k,
                         const Acc* v, const Acc* ek, const Acc* ev, Acc scale, const std::optional<Acc>& lo,
                         const std::optional<Acc>& hi, Acc* o) {
  if constexpr (!VFirst) {
    RowArrMap<Acc> out(o, Vt);
    if (src && !lo && !hi) {  // a step from a state without clamps: each decode step, every step after a first
      row_block_steps<Gk, Gv>(src, dst, ld, K, Vt, q, k, v, ek, ev, o);
      out *= scale;
      return;
    }
    const ConstRowArrMap<Acc> vr(v, Vt);
    out.setZero();
    for (Index a = 0; a < K; ++a) {
      RowArrMap<Acc> x(dst + a * ld, Vt);
      if (!src) {
        x = k[a] * vr;
      } else {
        decayed_row<Gk, Gv>(src + a * ld, ev, Gk ? ek[a] : Acc(1), x.data(), Vt);
        axpy_madd(k[a], v, x.data(), Vt);
      }
      if (lo) x = x.max(*lo);
      if (hi) x = x.min(*hi);
      axpy_madd(q[a], x.data(), o, Vt);
    }
    out *= scale;
  } else {
    namespace ei = Eigen::internal;
    constexpr Index PS = ei::packet_traits<Acc>::size;
    const ConstRowArrMap<Acc> kr(k, K);
    const Index ekn = Gk ? K : 0;
    for (Index c0 = 0; c0 < Vt; c0 += PS) {
      const Index rows = std::min(PS, Vt - c0);
      for (Index c = c0; c < c0 + rows; ++c) {
        RowArrMap<Acc> x(dst + c * ld, K);
        if (!src) {
          x = v[c] * kr;
        } else {
          // The same operations in the same order as the K-first branch, element by element.
          const ConstRowArrMap<Acc> p(src + c * ld, K);
          if constexpr (Gv && Gk)
            x = p * ev[c] * ConstRowArrMap<Acc>(ek, ekn);
          else if constexpr (Gv)
            x = p * ev[c];
          else if constexpr (Gk)
            x = p * ConstRowArrMap<Acc>(ek, ekn);
          else
            x = p;
          axpy_madd(v[c], k, x.data(), K);
        }
        if (lo) x = x.max(*lo);
        if (hi) x = x.min(*hi);
      }
      panel_dots(dst + c0 * ld, ld, q, K, rows, o + c0);
      for (Index c = c0; c < c0 + rows; ++c) o[c] *= scale;
    }
  }
}

/// Per-worker scratch of the recurrent forward: a K-first state tile (for double accumulation, or when no
/// final_state buffer can hold the state) and the rows of one token in Acc.
template <class Acc>
struct RecurrentScratch {
  Acc *S, *q, *k, *v, *ek, *ev, *o;
  static RecurrentScratch plan(Arena& a, Index K, Index Vt) {
    return {a.take<Acc>(K * Vt), a.take<Acc>(K),  a.take<Acc>(K), a.take<Acc>(Vt),
            a.take<Acc>(K),      a.take<Acc>(Vt), a.take<Acc>(Vt)};
  }
};

/// The recurrent forward's work items, (sequence, head, value tile): value tiles only where threads would idle,
/// since every tile repeats a token's per-row work (the gate's exponential, the rows' conversion from bf16 or
/// half), so a head splits into no more tiles than threads. Columns evolve independently, so the split does not
/// change any result.
inline std::vector<HeadTile> recurrent_items(const OpShape& s) {
  return head_tiles(s, /*target=*/std::max(1, get_num_threads()), /*max_tiles=*/4);
}

/// One RecurrentScratch per worker of a parallel_for over `items` (Arena::worker_plans).
template <class Acc>
std::vector<RecurrentScratch<Acc>> plan_recurrent(Arena& a, Index K, const std::vector<HeadTile>& items) {
  const Index width = max_tile_width(items);
  return a.worker_plans(parallel_workers(static_cast<Index>(items.size())),
                        [&](Arena& arena) { return RecurrentScratch<Acc>::plan(arena, K, width); });
}

/// The recurrent forward after validation. Work items are (sequence, head, value tile) — value columns evolve
/// independently, so a long sequence splits across threads with no extra work. With float accumulation and a
/// final_state output, the state is updated directly in the final_state buffer in its own layout (K- or
/// V-first): a one-token decode step reads each initial-state element once and writes each final-state
/// element once, with o from the same pass. Double inputs keep their state in double scratch.
template <class T>
void recurrent_forward_run(const OpShape& s, const ConstView<T, 4>& q, const ConstView<T, 4>& k,
                           const ConstView<T, 4>& v, const std::optional<ConstView<T, 4>>& gk,
                           const std::optional<ConstView<T, 4>>& gv, const GLAOptions& opts, const View<T, 4>& o,
                           float* ht) {
  using Acc = acc_t<T>;
  const Index T_ = s.T, H = s.H, K = s.K, V = s.V, KV = K * V;
  const Acc scale = recurrent_scale<Acc>(opts, K);
  std::optional<Acc> lo, hi;
  if (opts.state_clamp_min) lo = static_cast<Acc>(*opts.state_clamp_min);
  if (opts.state_clamp_max) hi = static_cast<Acc>(*opts.state_clamp_max);
  const std::vector<HeadTile> items = recurrent_items(s);
  const Index n_items = static_cast<Index>(items.size());
  Scratch scratch;
  const auto ws = scratch.carve(opts.workspace, [&](Arena& a) { return plan_recurrent<Acc>(a, K, items); });
  const float* h0 = opts.initial_state ? opts.initial_state->data() : nullptr;
  const bool v_first = opts.state_v_first;
  const bool in_place = std::is_same_v<Acc, float> && ht != nullptr;
  const bool any_gk = gk.has_value() || !opts.gamma.empty();
  // A large o streams past the cache as in the chunked kernels. Here it also keeps apart the cores that share a
  // head: each writes its value tile's part of every o row, next to the other's, and plain stores (each line read
  // for ownership, the lines around it prefetched) passed lines between the cores at every token (B1 H1 T8192 on
  // 2 threads: 1.47x the 1-thread speed with plain stores, 1.65x streaming; docs/PERFORMANCE.md).
  const OutputWrites o_writes = OutputWrites::for_tensor<T>(o.size());

  const auto run = [&](auto vfirst_c, auto gk_c, auto gv_c) {
    constexpr bool VFirst = decltype(vfirst_c)::value, Gk = decltype(gk_c)::value, Gv = decltype(gv_c)::value;
    parallel_for(n_items, [&](Index item, int worker) {
      const HeadTile& it = items[static_cast<std::size_t>(item)];
      const RecurrentScratch<Acc>& w = ws[static_cast<std::size_t>(worker)];
      const Index n = it.pair / H, h = it.pair % H, Vt = it.width;
      const Seq sq = s.seqs[static_cast<std::size_t>(n)];
      const Acc gam = gamma_for_head<Acc>(opts.gamma, h);
      // The working tile: inside final_state (its layout) or the K-first scratch tile.
      Acc* dst = nullptr;
      const Acc* src = nullptr;
      Index ld = 0;
      if constexpr (std::is_same_v<Acc, float>) {
        if (in_place) {
          const Index off = it.pair * KV + (VFirst ? it.v0 * K : it.v0);
          dst = ht + off;
          src = h0 ? h0 + off : nullptr;
          ld = VFirst ? K : V;
        }
      }
      if (!in_place) {
        dst = w.S;
        ld = VFirst ? K : Vt;
        if (h0) {
          if constexpr (VFirst)
            Eigen::Map<RowMat<Acc>>(w.S, Vt, K) =
                Eigen::Map<const RowMat<float>>(h0 + it.pair * KV, V, K).middleRows(it.v0, Vt).template cast<Acc>();
          else
            load_state_tile(w.S, h0 + it.pair * KV, K, V, it.v0, Vt, false);
          src = w.S;
        } else {
          src = nullptr;
        }
      }
      // A head's rows of consecutive tokens lie H·K (H·V) elements apart: a page or more at fla's shapes, where the
      // hardware prefetchers stop, so the rows kRowsAhead tokens on are asked for while this token computes.
      constexpr Index kRowsAhead = 4;
      const auto prefetch_token = [&](Index i) {
        const Index t = recurrent_step_time(sq, i, opts.reverse);
        const Index rowk = ((sq.b * T_ + t) * H + h) * K, rowv = ((sq.b * T_ + t) * H + h) * V + it.v0;
        prefetch_rows(Rows<T>{q.data() + rowk, 0}, 1, K);
        prefetch_rows(Rows<T>{k.data() + rowk, 0}, 1, K);
        prefetch_rows(Rows<T>{v.data() + rowv, 0}, 1, Vt);
        if (gk) prefetch_rows(Rows<T>{gk->data() + rowk, 0}, 1, K);
        if (gv) prefetch_rows(Rows<T>{gv->data() + rowv, 0}, 1, Vt);
      };
      // A token's row in Acc: read in place when the inputs are Acc already, else converted into the scratch.
      const auto row = [](const T* in, Index width, Acc* buffer) {
        return rows_in<Acc>(Rows<T>{in, width}, 1, width, buffer, /*copy_strided=*/false).p;
      };
      for (Index i = 0; i < sq.len; ++i) {
        const Index t = recurrent_step_time(sq, i, opts.reverse);
        const Index rowk = ((sq.b * T_ + t) * H + h) * K, rowv = ((sq.b * T_ + t) * H + h) * V + it.v0;
        if (i + kRowsAhead < sq.len) prefetch_token(i + kRowsAhead);
        const Acc *qr = row(q.data() + rowk, K, w.q), *kr = row(k.data() + rowk, K, w.k),
                  *vr = row(v.data() + rowv, Vt, w.v);
        if constexpr (Gk) {
          RowArrMap<Acc> ek(w.ek, K);
          if (gk)
            ek = ConstRowArrMap<Acc>(row(gk->data() + rowk, K, w.ek), K).exp() * gam;
          else
            ek.setConstant(gam);
        }
        if constexpr (Gv) RowArrMap<Acc>(w.ev, Vt) = ConstRowArrMap<Acc>(row(gv->data() + rowv, Vt, w.ev), Vt).exp();
        recurrent_tile_step<VFirst, Gk, Gv>(src, dst, ld, K, Vt, qr, kr, vr, w.ek, w.ev, scale, lo, hi, w.o);
        src = dst;
        if (o_writes.streaming)
          convert_n_streaming(w.o, o.data() + rowv, Vt);
        else
          convert_n(w.o, o.data() + rowv, Vt);
      }
      if (o_writes.streaming) stream_fence();
      if (in_place) {
        if (sq.len == 0) {  // nothing ran: the final state is the initial state (or zero)
          for (Index r = 0; r < (VFirst ? Vt : K); ++r) {
            RowArrMap<Acc> x(dst + r * ld, VFirst ? K : Vt);
            if (src)
              x = ConstRowArrMap<Acc>(src + r * ld, VFirst ? K : Vt);
            else
              x.setZero();
          }
        }
      } else if (ht) {
        if (!src) std::fill_n(w.S, K * Vt, Acc(0));
        if constexpr (VFirst)
          Eigen::Map<RowMat<float>>(ht + it.pair * KV, V, K).middleRows(it.v0, Vt) =
              Eigen::Map<const RowMat<Acc>>(w.S, Vt, K).template cast<float>();
        else
          store_state_tile(w.S, ht + it.pair * KV, K, V, it.v0, Vt, false);
      }
    });
  };
  // The working layout is final_state's when updating in place, else V-first exactly when the state is stored so.
  const auto with_gates = [&](auto vfirst_c) {
    if (any_gk && gv)
      run(vfirst_c, std::true_type{}, std::true_type{});
    else if (any_gk)
      run(vfirst_c, std::true_type{}, std::false_type{});
    else if (gv)
      run(vfirst_c, std::false_type{}, std::true_type{});
    else
      run(vfirst_c, std::false_type{}, std::false_type{});
  };
  if (v_first)
    with_gates(std::true_type{});
  else
    with_gates(std::false_type{});
}

}  // namespace detail

/// Multiplies one head's state [K×V] by gamma: the extra decay fused_recurrent_gla applies per step with
/// opts.gamma (the kernel folds it into the per-row gate factor instead of a separate pass over the state).
template <class Derived>
void apply_gamma_decay(Eigen::DenseBase<Derived>& state, typename Derived::Scalar gamma) {
  state.derived() *= gamma;
}

/// Multiplies every state of states float [N,H,K,V] (or [N,H,V,K]) in place by gamma: empty = unchanged,
/// 1 value = every head, H values = per head (the values of opts.gamma). Throws gla::Error on a wrong count.
inline void apply_gamma_decay(View<float, 4> states, const std::vector<float>& gamma) {
  detail::expect_nonnegative_dims("apply_gamma_decay", "states", states.dimensions());
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

/// Bytes of scratch fused_recurrent_gla needs for inputs of the given scalar and shape (see Workspace): one
/// state tile and a token's rows per thread, so it depends on the thread count. chunk_size is ignored here as by
/// the operator.
template <class Scalar = float>
std::size_t fused_recurrent_gla_workspace_size(Index B, Index T, Index H, Index K, Index V,
                                               const GLAOptions& opts = {}) {
  static_assert(is_supported_scalar_v<Scalar>, "fused_recurrent_gla_workspace_size: unsupported scalar type");
  GLAOptions o = opts;
  o.initial_state.reset();
  o.chunk_size = GLAOptions{}.chunk_size;
  const detail::OpShape s = detail::shape_of("fused_recurrent_gla_workspace_size", B, T, H, K, V, o);
  const std::vector<detail::HeadTile> items = detail::recurrent_items(s);
  return detail::planned_bytes([&](detail::Arena& a) { return detail::plan_recurrent<acc_t<Scalar>>(a, K, items); });
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
/// T = float, double, Eigen::bfloat16, Eigen::half; each token's rows are converted as they are read, states
/// and arithmetic are in acc_t<T>. With a final_state output (and float accumulation) the state is updated in
/// that buffer in its own layout, so a one-token step (decoding) reads and writes each state element once.
/// Threads: the parallel engine over (sequence, head, value tile), longest sequences first; deterministic.
/// Scratch (fused_recurrent_gla_workspace_size) from opts.workspace (or allocated for the call), before any thread
/// starts. An o of 4 MiB or more is written with non-temporal stores. Throws gla::Error before writing anything.
template <class Q>
void fused_recurrent_gla_into(const Q& q_in, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v,
                              std::optional<ConstViewOf<Q, 4>> gk, std::optional<ConstViewOf<Q, 4>> gv,
                              const GLAOptions& opts, ViewOf<Q, 4> o,
                              std::optional<View<float, 4>> final_state = std::nullopt) {
  namespace rd = detail::recurrent;
  using T = scalar_type_t<Q>;
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

  detail::recurrent_forward_run<T>(s, q, k, v, gk, gv, opts, o, final_state ? final_state->data() : nullptr);
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

  // Without gv and running forwards, the chunked backward computes the same gradients through matrix products,
  // at about twice the forward's work instead of the recurrent sweep's five times: use it (docs/fused_recurrent.md).
  if (!gv && !opts.reverse) {
    GLAOptions chunked = opts;
    chunked.chunk_size = 64;  // fused_recurrent_gla ignores opts.chunk_size; fla's chunk size
    detail::chunk_gla_backward_impl<T>(s, q, k, v, gk ? gk->data() : nullptr, do_, dht, chunked, dq.data(), dk.data(),
                                       dv.data(), dgk ? dgk->data() : nullptr, dh0);
    return;
  }

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
