#pragma once
/// gla/chunk_h.hpp: chunk_fwd_h, the inter-chunk state recurrence of the chunked GLA algorithm
/// (fla's ops/common/chunk_h.py) with the gate modes g, g_gamma, gk and gv, in the natural-log domain.

#include <gla/detail/chunk_kernels.hpp>
#include <gla/varlen.hpp>

namespace gla {

/// The gates of chunk_fwd_h, each optional and combinable, all natural-log CHUNK-LOCAL CUMSUMS computed with
/// the same chunk_size (what chunk_local_cumsum returns with no scale), except g_gamma:
///   g  float [B,T,H]   scalar gate per head;      gk float [B,T,H,K]  gate on the state's K axis;
///   gv float [B,T,H,V] gate on the state's V axis; g_gamma float [H]  constant per-step log decay per head.
/// fla's kernels take log2-domain values (× 1/ln 2); ours take natural logs (do not rescale).
/// The fields are views (assignment re-points them); the viewed buffers must outlive the call.
/// g_gamma must be finite and <= 0 (a decay).
struct ChunkHGates {
  std::optional<HeldView<float, 3>> g;
  std::optional<HeldView<float, 1>> g_gamma;
  std::optional<HeldView<float, 4>> gk;
  std::optional<HeldView<float, 4>> gv;
};

/// Result of chunk_fwd_h: h float [B,NT,H,K,V] (varlen [1,ΣNT,H,K,V]; [..,V,K] with state_v_first), the state
/// BEFORE each chunk, each sequence's chunks aligned to its start; final_state float [N,H,K,V] when requested.
struct ChunkHResult {
  Tensor<float, 5> h;
  std::optional<Tensor<float, 4>> final_state;
};

namespace detail {

/// Pointers to the whole-tensor gates in the accumulator type (nullptr = absent).
template <class Acc>
struct FullGates {
  const Acc* g = nullptr;                   // [B,T,H]
  const Acc* gk = nullptr;                  // [B,T,H,K]
  const Acc* gv = nullptr;                  // [B,T,H,V]
  const std::vector<Acc>* gamma = nullptr;  // [H]

  /// The gates of chunk [c0, c0+L) of sequence sq, head h.
  ChunkGates<Acc> chunk(const OpShape& s, const Seq& sq, Index h, Index c0) const {
    ChunkGates<Acc> cg;
    const Index row = sq.b * s.T + sq.t0 + c0;
    if (g) {
      cg.g = g + row * s.H + h;
      cg.ldg = s.H;
    }
    if (gk) {
      cg.gk = gk + (row * s.H + h) * s.K;
      cg.ldgk = s.H * s.K;
    }
    if (gv) {
      cg.gv = gv + (row * s.H + h) * s.V;
      cg.ldgv = s.H * s.V;
    }
    if (gamma) cg.gamma = (*gamma)[static_cast<std::size_t>(h)];
    return cg;
  }
};

/// The gates of a ChunkHGates in the accumulator type (converted copies for double, views for float) and
/// the FullGates pointing at them, as chunk_fwd_h and chunk_bwd_dh take them.
template <class Acc>
struct AccGates {
  AccInput<Acc, float> g, gk, gv;
  std::vector<Acc> gamma;
  FullGates<Acc> full;
  AccGates(const ChunkHGates& gates, Index H) {
    if (gates.g) full.g = (g = AccInput<Acc, float>(*gates.g)).data();
    if (gates.gk) full.gk = (gk = AccInput<Acc, float>(*gates.gk)).data();
    if (gates.gv) full.gv = (gv = AccInput<Acc, float>(*gates.gv)).data();
    if (gates.g_gamma) {
      for (Index h = 0; h < H; ++h) gamma.push_back(static_cast<Acc>((*gates.g_gamma)(h)));
      full.gamma = &gamma;
    }
  }
  AccGates(const AccGates&) = delete;  // `full` points into this object
  AccGates& operator=(const AccGates&) = delete;
};

/// Shape of the states before every chunk (chunk_fwd_h's h, and what chunk_gla keeps for its backward):
/// [B,NT,H,K,V] with NT = ⌈T/chunk_size⌉, varlen [1,ΣNT,H,K,V] (each sequence's chunks from its start); K and V
/// swapped with state_v_first.
inline std::array<Index, 5> chunk_states_dims(const OpShape& s, const GLAOptions& opts) {
  const Index BT = opts.chunk_size;
  const bool packed = !opts.cu_seqlens.empty();
  const Index B = packed ? 1 : s.B, NT = packed ? chunk_offsets(s, BT).back() : (s.T + BT - 1) / BT;
  return opts.state_v_first ? std::array<Index, 5>{B, NT, s.H, s.V, s.K} : std::array<Index, 5>{B, NT, s.H, s.K, s.V};
}

/// Checks an argument shaped like chunk_states_dims.
template <class Dims>
void expect_chunk_states_dims(const std::string& fn, const std::string& name, const Dims& d, const OpShape& s,
                              const GLAOptions& opts) {
  const std::array<Index, 5> e = chunk_states_dims(s, opts);
  const bool packed = !opts.cu_seqlens.empty();
  const char* b = packed ? "1" : "B";
  const char* nt = packed ? "ΣNT" : "NT";
  if (opts.state_v_first)
    expect_dims(fn, name + " (state_v_first)", d, {{b, e[0]}, {nt, e[1]}, {"H", e[2]}, {"V", e[3]}, {"K", e[4]}});
  else
    expect_dims(fn, name, d, {{b, e[0]}, {nt, e[1]}, {"H", e[2]}, {"K", e[3]}, {"V", e[4]}});
}

/// Rows of one (sequence, head) block of a [B,T,H,D] tensor starting at token t0 + c0, as an Eigen map.
template <class Acc>
ConstStridedMap<Acc> rows(const Acc* base, const OpShape& s, const Seq& sq, Index h, Index c0, Index L, Index D) {
  return ConstStridedMap<Acc>(base + ((sq.b * s.T + sq.t0 + c0) * s.H + h) * D, L, D, Eigen::OuterStride<>(s.H * D));
}

/// Calls f(std::integral_constant<unsigned, bits>{}) with the gate set of `gates` as a compile-time value.
template <class Acc, class F>
void with_gate_set(const FullGates<Acc>& gates, F&& f) {
  const unsigned bits =
      (gates.g ? kGateG : 0u) | (gates.gamma ? kGateGamma : 0u) | (gates.gk ? kGateGk : 0u) | (gates.gv ? kGateGv : 0u);
  switch (bits) {
#define GLA_GATE_CASE(b)                      \
  case b:                                     \
    f(std::integral_constant<unsigned, b>{}); \
    return;
    GLA_GATE_CASE(0)
    GLA_GATE_CASE(1) GLA_GATE_CASE(2) GLA_GATE_CASE(3) GLA_GATE_CASE(4) GLA_GATE_CASE(5) GLA_GATE_CASE(6)
        GLA_GATE_CASE(7) GLA_GATE_CASE(8) GLA_GATE_CASE(9) GLA_GATE_CASE(10) GLA_GATE_CASE(11) GLA_GATE_CASE(12)
            GLA_GATE_CASE(13) GLA_GATE_CASE(14) GLA_GATE_CASE(15)
#undef GLA_GATE_CASE
  }
}

/// The state recurrence over chunks for every (sequence, head) and value tile, in parallel over the items:
/// writes h (the state before each chunk, [ΣNT,H,K,V] or V-first with h_v_first, may be null) and the final
/// state ([N,H,K,V] or V-first with v_first, may be null). k [B,T,H,K] and v [B,T,H,V] in In; h0 float
/// [N,H,K,V] (or V-first) or null. Scratch comes from `workspace` (or is allocated for the call when null).
template <class Acc, class In, class HOut>
void chunk_fwd_h_impl(const OpShape& s, Index BT, const In* k, const In* v, const FullGates<Acc>& gates,
                      const float* h0, bool v_first, HOut* h, bool h_v_first, float* ht, Workspace* workspace) {
  with_operand_scalar<In>([&](auto operand) {
    using Op = typename decltype(operand)::type;
    const Index K = s.K, V = s.V, H = s.H;
    const std::vector<Index> off = chunk_offsets(s, BT);
    // The sweep has no intra-chunk work to duplicate, so it splits into value tiles freely.
    const std::vector<HeadTile> items = head_tiles(s, /*target=*/4, /*max_tiles=*/4);
    const Index n_items = static_cast<Index>(items.size()), Vt = max_tile_width(items);
    Scratch scratch;
    const auto ws = scratch.carve(workspace, [&](Arena& a) { return plan_workers<Acc, Op>(a, n_items, BT, K, Vt); });
    with_gate_set(gates, [&](auto bits) {
      parallel_for(n_items, [&](Index i, int w) {
        const AmxTileScope tiles;  // the item's bfloat16 products keep one tile configuration
        const HeadTile& it = items[static_cast<std::size_t>(i)];
        const ChunkScratch<Acc, Op>& sc = ws[static_cast<std::size_t>(w)];
        const Index n = it.pair / H, hh = it.pair % H;
        const Seq& sq = s.seqs[static_cast<std::size_t>(n)];
        if (h0)
          load_state_tile(sc.S, h0 + it.pair * K * V, K, V, it.v0, it.width, v_first);
        else
          std::fill_n(sc.S, K * it.width, Acc(0));
        Index c = 0;
        for (Index c0 = 0; c0 < sq.len; c0 += BT, ++c) {
          const Index L = std::min(BT, sq.len - c0);
          if (h)
            store_state_tile(sc.S, h + ((off[static_cast<std::size_t>(n)] + c) * H + hh) * K * V, K, V, it.v0, it.width,
                             h_v_first);
          ChunkGates<Acc> cg = gates.chunk(s, sq, hh, c0);
          if (cg.gv) cg.gv += it.v0;
          state_update<decltype(bits)::value>(sc.S, it.width, head_rows(k, s, sq, hh, c0, K),
                                              head_rows(v, s, sq, hh, c0, V, it.v0), cg, L, K, it.width, sc);
        }
        if (ht) store_state_tile(sc.S, ht + it.pair * K * V, K, V, it.v0, it.width, v_first);
      });
    });
  });
}

/// Checks the gates of chunk_fwd_h / chunk_bwd_dh against the problem shape; g_gamma must be a finite decay.
inline void check_chunk_h_gates(const std::string& fn, const OpShape& s, const ChunkHGates& gates) {
  if (gates.g) expect_dims(fn, "g", gates.g->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}});
  if (gates.gk) expect_dims(fn, "gk", gates.gk->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  if (gates.gv) expect_dims(fn, "gv", gates.gv->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  if (gates.g_gamma) {
    expect_dims(fn, "g_gamma", gates.g_gamma->dimensions(), {{"H", s.H}});
    for (Index h = 0; h < s.H; ++h) {
      const float x = (*gates.g_gamma)(h);
      if (!(std::isfinite(x) && x <= 0.0f))
        fail(fn, "g_gamma[" + std::to_string(h) + "] is " + std::to_string(x) +
                     ", expected a finite per-step log decay <= 0");
    }
  }
}

/// The options chunk_fwd_h and chunk_bwd_dh do not take.
inline void check_chunk_h_options(const std::string& fn, const GLAOptions& opts) {
  check_chunk_size(fn, opts.chunk_size);
  reject_option(fn, opts.reverse, "reverse");
  reject_option(fn, !opts.gamma.empty() || opts.state_clamp_min || opts.state_clamp_max,
                "gamma/state_clamp_min/state_clamp_max (fused_recurrent_gla only)");
}

}  // namespace detail

/// States of the chunked recurrence S ← diag(e^{gk}) S diag(e^{gv}) e^{g + γ} + k vᵀ, stored before every chunk.
/// k [B,T,H,K] and v [B,T,H,V] (float, double, bf16, half; accumulated in acc_t of the scalar); gates as
/// ChunkHGates; uses opts.initial_state, output_final_state, state_v_first, cu_seqlens and chunk_size (the chunk
/// size the gate cumsums were computed with) and workspace. Threads: the parallel engine over (sequence, head, value
/// tile); deterministic.
template <class KT>
ChunkHResult chunk_fwd_h(const KT& k, ConstViewOf<KT, 4> v, const ChunkHGates& gates, const GLAOptions& opts = {}) {
  using T = scalar_type_t<KT>;
  static_assert(is_supported_scalar_v<T>, "chunk_fwd_h: k and v must be float, double, Eigen::bfloat16 or Eigen::half");
  using Acc = acc_t<T>;
  const std::string fn = "chunk_fwd_h";
  const ConstView<T, 4> kv(k);
  const detail::OpShape s = detail::check_qkv(fn, kv.dimensions(), kv.dimensions(), v.dimensions(), opts);
  detail::check_chunk_h_options(fn, opts);
  detail::check_chunk_h_gates(fn, s, gates);

  const Index BT = opts.chunk_size;
  ChunkHResult r;
  r.h = Tensor<float, 5>(detail::chunk_states_dims(s, opts));
  if (opts.output_final_state) r.final_state = Tensor<float, 4>(detail::state_dims(s, opts.state_v_first));

  const detail::AccGates<Acc> acc_gates(gates, s.H);
  detail::chunk_fwd_h_impl<Acc, T, float>(s, BT, kv.data(), v.data(), acc_gates.full,
                                          opts.initial_state ? opts.initial_state->data() : nullptr, opts.state_v_first,
                                          r.h.data(), opts.state_v_first,
                                          r.final_state ? r.final_state->data() : nullptr, opts.workspace);
  return r;
}

}  // namespace gla
