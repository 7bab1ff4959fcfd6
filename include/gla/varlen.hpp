#pragma once
/// gla/varlen.hpp: variable-length batch helpers as fla's `layers/utils.py` and `ops/utils/index.py`:
/// cu_seqlens validation, chunk indices/offsets, unpadding by an attention mask and padding back.

#include <gla/core.hpp>

namespace gla {

/// Throws gla::Error unless cu_seqlens [N+1] starts at 0, is non-decreasing and ends at total_len
/// (zero-length sequences are allowed, as in fla). `fn` names the caller in the message.
inline void validate_cu_seqlens(const std::vector<std::int64_t>& cu_seqlens, std::int64_t total_len,
                                const std::string& fn = "validate_cu_seqlens") {
  detail::check_cu_seqlens(fn, cu_seqlens, total_len);
}

/// Sequence lengths diff(cu_seqlens) [N] (fla's prepare_lens).
inline std::vector<std::int64_t> prepare_lens(const std::vector<std::int64_t>& cu_seqlens) {
  std::vector<std::int64_t> lens;
  for (std::size_t i = 0; i + 1 < cu_seqlens.size(); ++i) lens.push_back(cu_seqlens[i + 1] - cu_seqlens[i]);
  return lens;
}

/// cu_seqlens [N+1] from lengths [N]: 0 followed by the running sum (fla's prepare_cu_seqlens_from_lens).
inline std::vector<std::int64_t> prepare_cu_seqlens_from_lens(const std::vector<std::int64_t>& lens) {
  std::vector<std::int64_t> cu{0};
  for (std::int64_t l : lens) {
    if (l < 0) detail::fail("prepare_cu_seqlens_from_lens", "lens holds " + std::to_string(l) + ", expected >= 0");
    cu.push_back(cu.back() + l);
  }
  return cu;
}

inline std::int64_t cdiv(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

/// Rows (sequence id, chunk index within the sequence) of every chunk of chunk_size tokens, in order;
/// zero-length sequences contribute none. Example: cu = [0,15,100], 64 → {(0,0), (1,0), (1,1)}.
inline std::vector<std::array<std::int64_t, 2>> prepare_chunk_indices(const std::vector<std::int64_t>& cu_seqlens,
                                                                      std::int64_t chunk_size) {
  const std::string fn = "prepare_chunk_indices";
  if (chunk_size <= 0) detail::fail(fn, "chunk_size is " + std::to_string(chunk_size) + ", expected > 0");
  if (cu_seqlens.size() < 2 || cu_seqlens.front() != 0)
    detail::fail(fn, "cu_seqlens is " + detail::shape_str(cu_seqlens) + ", expected [0, ..., T]");
  detail::check_cu_seqlens(fn, cu_seqlens, cu_seqlens.back());
  std::vector<std::array<std::int64_t, 2>> rows;
  for (std::size_t n = 0; n + 1 < cu_seqlens.size(); ++n)
    for (std::int64_t c = 0; c < cdiv(cu_seqlens[n + 1] - cu_seqlens[n], chunk_size); ++c)
      rows.push_back({static_cast<std::int64_t>(n), c});
  return rows;
}

/// Index of each sequence's first chunk [N+1] (the last entry is the total chunk count).
/// Example: cu = [0,15,100], 64 → [0,1,3].
inline std::vector<std::int64_t> prepare_chunk_offsets(const std::vector<std::int64_t>& cu_seqlens,
                                                       std::int64_t chunk_size) {
  const std::string fn = "prepare_chunk_offsets";
  if (chunk_size <= 0) detail::fail(fn, "chunk_size is " + std::to_string(chunk_size) + ", expected > 0");
  if (cu_seqlens.size() < 2 || cu_seqlens.front() != 0)
    detail::fail(fn, "cu_seqlens is " + detail::shape_str(cu_seqlens) + ", expected [0, ..., T]");
  detail::check_cu_seqlens(fn, cu_seqlens, cu_seqlens.back());
  std::vector<std::int64_t> off{0};
  for (std::size_t n = 0; n + 1 < cu_seqlens.size(); ++n)
    off.push_back(off.back() + cdiv(cu_seqlens[n + 1] - cu_seqlens[n], chunk_size));
  return off;
}

/// What get_unpad_data() returns: indices of the valid tokens in the flattened [B·S] mask (row-major),
/// cu_seqlens [B+1] of the packed batch, and the longest row.
struct UnpadData {
  std::vector<std::int64_t> indices;
  std::vector<std::int64_t> cu_seqlens;
  std::int64_t max_seqlen = 0;
};

/// fla's get_unpad_data: attention_mask [B,S] (1 = token, 0 = padding; any integer, bool or float type
/// holding only 0 and 1) → packed indices and cu_seqlens. Other values → gla::Error.
template <class M>
UnpadData get_unpad_data(ConstTensorMap<M, 2> attention_mask) {
  const Index B = attention_mask.dimension(0), S = attention_mask.dimension(1);
  UnpadData u;
  u.cu_seqlens.push_back(0);
  for (Index b = 0; b < B; ++b) {
    std::int64_t len = 0;
    for (Index s = 0; s < S; ++s) {
      const M m = attention_mask.data()[b * S + s];
      if (m != M(0) && m != M(1))
        detail::fail("get_unpad_data", "attention_mask[" + std::to_string(b) + "," + std::to_string(s) +
                                           "] is " + std::to_string(static_cast<double>(m)) + ", expected 0 or 1");
      if (m == M(1)) {
        u.indices.push_back(b * S + s);
        ++len;
      }
    }
    u.cu_seqlens.push_back(u.cu_seqlens.back() + len);
    u.max_seqlen = std::max(u.max_seqlen, len);
  }
  return u;
}

namespace detail {

/// fla's unpad rule for a forward of T tokens: the last T columns of attention_mask [B,S] (S >= T) are unpadded
/// (in decode only the newest column matters). A mask of another batch size or shorter than T → gla::Error.
inline UnpadData unpad_mask_tail(const std::string& fn, const ConstTensorMap<std::int64_t, 2>& attention_mask,
                                 Index B, Index T) {
  const auto& md = attention_mask.dimensions();
  if (md[0] != B || md[1] < T)
    fail(fn, "attention_mask is " + shape_str(md) + ", expected [B=" + std::to_string(B) + ",S] with S >= T=" +
                 std::to_string(T));
  Tensor<std::int64_t, 2> last(B, T);
  for (Index b = 0; b < B; ++b)
    for (Index t = 0; t < T; ++t) last(b, t) = attention_mask(b, md[1] - T + t);
  return get_unpad_data<std::int64_t>(ConstTensorMap<std::int64_t, 2>(last.data(), B, T));
}

inline void check_indices(const std::string& fn, const std::vector<std::int64_t>& indices, Index rows) {
  for (std::size_t i = 0; i < indices.size(); ++i)
    if (indices[i] < 0 || indices[i] >= rows)
      fail(fn, "indices[" + std::to_string(i) + "] is " + std::to_string(indices[i]) + ", expected in [0, " +
                   std::to_string(rows) + ")");
}
}  // namespace detail

/// Gathers rows of the first axis: x [(B·S), ...] → [indices.size(), ...] (fla's index_first_axis).
template <class T, int R>
Tensor<T, R> index_first_axis(ConstTensorMap<T, R> x, const std::vector<std::int64_t>& indices) {
  detail::check_indices("index_first_axis", indices, x.dimension(0));
  auto dims = x.dimensions();
  const Index row = dims[0] ? x.size() / dims[0] : 0;
  dims[0] = static_cast<Index>(indices.size());
  Tensor<T, R> y(dims);
  for (std::size_t i = 0; i < indices.size(); ++i)
    std::copy_n(x.data() + indices[i] * row, row, y.data() + static_cast<Index>(i) * row);
  return y;
}

/// Scatters rows into zeros: x [n, ...] → y [first_axis_dim, ...] with y[indices[i]] = x[i]
/// (fla's index_put_first_axis).
template <class T, int R>
Tensor<T, R> index_put_first_axis(ConstTensorMap<T, R> x, const std::vector<std::int64_t>& indices,
                                  Index first_axis_dim) {
  const std::string fn = "index_put_first_axis";
  if (static_cast<Index>(indices.size()) != x.dimension(0))
    detail::fail(fn, "indices has " + std::to_string(indices.size()) + " entries, expected x.dimension(0) = " +
                         std::to_string(x.dimension(0)));
  detail::check_indices(fn, indices, first_axis_dim);
  auto dims = x.dimensions();
  const Index row = dims[0] ? x.size() / dims[0] : 1;
  dims[0] = first_axis_dim;
  Tensor<T, R> y(dims);
  std::fill_n(y.data(), y.size(), T(0));
  for (std::size_t i = 0; i < indices.size(); ++i)
    std::copy_n(x.data() + static_cast<Index>(i) * row, row, y.data() + indices[i] * row);
  return y;
}

/// Pads packed rows back: hidden [total, ...] → [batch, seqlen, ...], zeros at padding (fla's pad_input).
template <class T, int R>
Tensor<T, R + 1> pad_input(ConstTensorMap<T, R> hidden, const std::vector<std::int64_t>& indices, Index batch,
                           Index seqlen) {
  Tensor<T, R> flat = index_put_first_axis<T, R>(hidden, indices, batch * seqlen);
  std::array<Index, R + 1> dims;
  dims[0] = batch;
  dims[1] = seqlen;
  for (int i = 1; i < R; ++i) dims[static_cast<std::size_t>(i + 1)] = hidden.dimension(i);
  Tensor<T, R + 1> y(dims);
  std::copy_n(flat.data(), flat.size(), y.data());
  return y;
}

}  // namespace gla
