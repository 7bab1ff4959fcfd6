#pragma once
/// gla/cumsum.hpp: chunk_local_cumsum, the inclusive per-chunk cumulative sum of log gates (fla's
/// ops/utils/cumsum.py) in the natural-log domain.

#include <gla/core.hpp>
#include <gla/detail/parallel.hpp>

namespace gla {

namespace detail {

/// out_t = scale · Σ g_s over the chunk of t (forward: from the chunk start to t; reverse: from t to the
/// chunk end), for each of the `width` channels of g [B,T,H,width] (width = 1 for [B,T,H]).
/// With a finite `floor`, every g_s below it counts as `floor` (the chunk operators' bound on per-step gates;
/// NaN stays NaN). Parallel over (sequence, chunk).
template <class T, class Out>
void chunk_local_cumsum_into(const T* g, Out* out, Index B, Index T_, Index H, Index width, Index chunk_size,
                             bool reverse, double scale, const std::vector<std::int64_t>& cu,
                             acc_t<T> floor = -std::numeric_limits<acc_t<T>>::infinity()) {
  using Acc = acc_t<T>;
  const std::vector<Seq> seqs = make_sequences(B, T_, cu);
  std::vector<std::array<Index, 2>> chunks;  // (first token row in [B·T], length)
  for (const Seq& sq : seqs)
    for (Index c0 = 0; c0 < sq.len; c0 += chunk_size)
      chunks.push_back({sq.b * T_ + sq.t0 + c0, std::min(chunk_size, sq.len - c0)});
  const Index ld = H * width;
  const Acc sc = static_cast<Acc>(scale);
  const Index items = static_cast<Index>(chunks.size());
  auto runs = per_worker(items, std::vector<Acc>(static_cast<std::size_t>(width)));
  parallel_for(items, [&](Index c, int w) {
    const auto [row0, L] = chunks[static_cast<std::size_t>(c)];
    Acc* run = runs[static_cast<std::size_t>(w)].data();
    for (Index h = 0; h < H; ++h) {
      std::fill_n(run, width, Acc(0));
      for (Index i = 0; i < L; ++i) {
        const Index off = (row0 + (reverse ? L - 1 - i : i)) * ld + h * width;
        for (Index d = 0; d < width; ++d) {
          const Acc x = static_cast<Acc>(g[off + d]);
          run[d] += x < floor ? floor : x;
          out[off + d] = static_cast<Out>(sc * run[d]);
        }
      }
    }
  });
}

}  // namespace detail

/// Chunk-local inclusive cumsum of a gate: g float/double/bf16/half [B,T,H] or [B,T,H,K] → float of the same
/// shape, out_t = scale · Σ_{s = chunk start..t} g_s (reverse: Σ_{s = t..chunk end}).
/// Chunks of chunk_size (a power of two) restart at every sequence start of cu_seqlens (B must be 1).
/// Accumulates in float (double for double inputs); `scale` (unset = 1) multiplies after the sum.
/// With no scale the result is what chunk_fwd_h expects (natural log; fla's chunk kernels use scale = 1/ln 2).
template <class G>
Tensor<float, rank_of_v<G>> chunk_local_cumsum(const G& g, std::int64_t chunk_size, bool reverse = false,
                                               std::optional<float> scale = {},
                                               const std::vector<std::int64_t>& cu_seqlens = {}) {
  using T = scalar_type_t<G>;
  constexpr int R = rank_of_v<G>;
  static_assert(R == 3 || R == 4, "chunk_local_cumsum: g must be [B,T,H] or [B,T,H,K]");
  static_assert(is_supported_scalar_v<T>,
                "chunk_local_cumsum: g must be float, double, Eigen::bfloat16 or Eigen::half");
  const std::string fn = "chunk_local_cumsum";
  const ConstView<T, R> gv(g);
  if (!detail::is_power_of_two(chunk_size))
    detail::fail(fn, "chunk_size is " + std::to_string(chunk_size) + ", expected a power of two");
  const Index B = gv.dimension(0), T_ = gv.dimension(1), H = gv.dimension(2);
  const Index width = R == 4 ? gv.dimension(R - 1) : 1;
  if (!cu_seqlens.empty()) {
    if (B != 1) detail::fail(fn, "the batch size is " + std::to_string(B) + ", expected 1 when cu_seqlens is given");
    detail::check_cu_seqlens(fn, cu_seqlens, T_);
  }
  if (scale && !std::isfinite(*scale)) detail::fail(fn, "scale is " + std::to_string(*scale) + ", expected finite");
  Tensor<float, R> out(gv.dimensions());
  detail::chunk_local_cumsum_into(gv.data(), out.data(), B, T_, H, width, chunk_size, reverse,
                                  scale ? static_cast<double>(*scale) : 1.0, cu_seqlens);
  return out;
}

}  // namespace gla
