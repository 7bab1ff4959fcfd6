#pragma once
/// gla/router.hpp: the mode router: one entry point, gla_forward, that unpads a masked batch, picks the
/// kernel (chunk, fused_chunk or fused_recurrent) as fla's layer does, and pads the output back with zeros.

#include <gla/chunk.hpp>
#include <gla/fused_chunk.hpp>
#include <gla/fused_recurrent.hpp>
#include <gla/varlen.hpp>

#include <string_view>

namespace gla {

/// Which GLA kernel runs: Auto picks FusedRecurrent for short inputs and FusedChunk otherwise (select_gla_mode).
enum class Mode { Auto, Chunk, FusedChunk, FusedRecurrent };

/// fla's mode names: "auto", "chunk", "fused_chunk", "fused_recurrent"; anything else → gla::Error.
inline Mode parse_mode(std::string_view name) {
  if (name == "auto") return Mode::Auto;
  if (name == "chunk") return Mode::Chunk;
  if (name == "fused_chunk") return Mode::FusedChunk;
  if (name == "fused_recurrent") return Mode::FusedRecurrent;
  detail::fail("parse_mode", "mode is '" + std::string(name) +
                                 "', expected one of 'auto', 'chunk', 'fused_chunk', 'fused_recurrent'");
}

inline std::string_view to_string(Mode m) {
  switch (m) {
    case Mode::Auto:
      return "auto";
    case Mode::Chunk:
      return "chunk";
    case Mode::FusedChunk:
      return "fused_chunk";
    case Mode::FusedRecurrent:
      return "fused_recurrent";
  }
  return "unknown";
}

/// Auto → FusedRecurrent when seq_len <= chunk_threshold (fla's layer rule; the fastest for decoding and short
/// inputs), else FusedChunk, the fastest or within a few percent of the fastest chunked form on every shape
/// bench_targets measures (README "Which mode, when"; fla would pick Chunk there: the numbers agree to fp32
/// rounding either way). Explicit modes are kept.
inline Mode select_gla_mode(Mode mode, std::int64_t seq_len, std::int64_t chunk_threshold = 64) {
  if (seq_len < 0) detail::fail("select_gla_mode", "seq_len is " + std::to_string(seq_len) + ", expected >= 0");
  if (mode != Mode::Auto) return mode;
  return seq_len <= chunk_threshold ? Mode::FusedRecurrent : Mode::FusedChunk;
}

namespace detail {

/// Gathers the valid tokens of x [B,T,H,D] into a packed [1,total,H,D].
template <class T>
Tensor<T, 4> pack_tokens(const ConstView<T, 4>& x, const std::vector<std::int64_t>& indices) {
  const Index H = x.dimension(2), D = x.dimension(3), row = H * D;
  Tensor<T, 4> out(1, static_cast<Index>(indices.size()), H, D);
  for (std::size_t i = 0; i < indices.size(); ++i)
    std::copy_n(x.data() + indices[i] * row, row, out.data() + static_cast<Index>(i) * row);
  return out;
}

}  // namespace detail

/// One GLA forward for any mode, batch form and gate set:
///   q, k [B,T,H,K]; v [B,T,H,V]; gk [B,T,H,K] optional (absent = no decay on K); gv [B,T,H,V] optional;
///   attention_mask int64 [B,S] with S >= T (1 = token, 0 = padding; the last T columns are used, as fla's
///   layer does), exclusive with opts.cu_seqlens.
/// With a mask the valid tokens are packed into one varlen batch (each row a sequence: N = B), run, and the
/// output is padded back with exact zeros. The mode is select_gla_mode(mode, T), T = q.dimension(1) (the padded
/// or packed length). gv or opts.reverse need the recurrent kernel: Auto routes them there; explicit Chunk or
/// FusedChunk → gla::Error. Without gk the chunk kernels run with no decay (plain linear attention).
template <class Q>
GLAResult<scalar_type_t<Q>> gla_forward(const Q& q_in, ConstViewOf<Q, 4> k, ConstViewOf<Q, 4> v,
                                        std::optional<ConstViewOf<Q, 4>> gk = std::nullopt,
                                        std::optional<ConstViewOf<Q, 4>> gv = std::nullopt, const GLAOptions& opts = {},
                                        Mode mode = Mode::Auto,
                                        std::optional<ConstView<std::int64_t, 2>> attention_mask = std::nullopt) {
  using T = scalar_type_t<Q>;
  const std::string fn = "gla_forward";
  const ConstView<T, 4> q(q_in);
  const detail::OpShape s = detail::check_qkv(fn, q.dimensions(), k.dimensions(), v.dimensions(), opts);
  if (gk) detail::expect_dims(fn, "gk", gk->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  if (gv) detail::expect_dims(fn, "gv", gv->dimensions(), {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", s.V}});
  const bool needs_recurrent =
      gv.has_value() || opts.reverse || !opts.gamma.empty() || opts.state_clamp_min || opts.state_clamp_max;
  Mode m = select_gla_mode(mode, s.T);
  if (needs_recurrent) {
    if (mode == Mode::Chunk || mode == Mode::FusedChunk)
      detail::fail(fn, "mode is '" + std::string(to_string(mode)) +
                           "', but gv, reverse, gamma or state clamps need 'fused_recurrent' (or 'auto')");
    m = Mode::FusedRecurrent;
  }

  // Runs the selected kernel on (possibly packed) inputs. Without gk the chunk kernels run with no decay (no
  // zero gate is materialised).
  auto run = [&](ConstView<T, 4> q_, ConstView<T, 4> k_, ConstView<T, 4> v_, std::optional<ConstView<T, 4>> gk_,
                 std::optional<ConstView<T, 4>> gv_, const GLAOptions& o) -> GLAResult<T> {
    if (m == Mode::FusedRecurrent) return fused_recurrent_gla(q_, k_, v_, gk_, gv_, o);
    const std::string kfn = m == Mode::Chunk ? "chunk_gla" : "fused_chunk_gla";
    const detail::OpShape ks = detail::check_chunk_args(kfn, q_, k_, v_, gk_ ? *gk_ : q_, o);
    if (m == Mode::FusedChunk) detail::check_max_seqlen(kfn, ks, o);
    GLAResult<T> r = detail::allocate_result(q_, v_, o);
    const View<T, 4> out(r.o);
    float* ht = r.final_state ? r.final_state->data() : nullptr;
    if (m == Mode::Chunk)
      detail::chunk_gla_run(ks, q_, k_, v_, gk_ ? gk_->data() : static_cast<const T*>(nullptr), o, out, ht);
    else
      detail::fused_chunk_run(ks, q_, k_, v_, gk_ ? gk_->data() : static_cast<const T*>(nullptr), o, out, ht,
                              o.heuristic_fallback);
    return r;
  };

  if (!attention_mask) return run(q, k, v, gk, gv, opts);

  if (!opts.cu_seqlens.empty()) detail::fail(fn, "attention_mask and cu_seqlens were both given, expected one");
  const UnpadData u = detail::unpad_mask_tail(fn, *attention_mask, s.B, s.T);
  const Tensor<T, 4> qp = detail::pack_tokens(q, u.indices), kp = detail::pack_tokens(k, u.indices),
                     vp = detail::pack_tokens(v, u.indices);
  Tensor<T, 4> gkp, gvp;
  std::optional<ConstView<T, 4>> gk_packed, gv_packed;
  if (gk) gk_packed = (gkp = detail::pack_tokens(*gk, u.indices));
  if (gv) gv_packed = (gvp = detail::pack_tokens(*gv, u.indices));
  GLAOptions o = opts;
  o.cu_seqlens = u.cu_seqlens;
  GLAResult<T> packed = run(qp, kp, vp, gk_packed, gv_packed, o);

  GLAResult<T> r;
  r.o =
      pad_input(ConstView<T, 3>(packed.o.data(), static_cast<Index>(u.indices.size()), s.H, s.V), u.indices, s.B, s.T);
  r.final_state = std::move(packed.final_state);
  return r;
}

}  // namespace gla
