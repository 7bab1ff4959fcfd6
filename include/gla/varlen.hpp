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

/// Sequence lengths diff(cu_seqlens) [N] (fla's prepare_lens). cu_seqlens must start at 0 and never
/// decrease (so every difference is a valid length).
inline std::vector<std::int64_t> prepare_lens(const std::vector<std::int64_t>& cu_seqlens) {
  const std::string fn = "prepare_lens";
  if (cu_seqlens.empty()) detail::fail(fn, "cu_seqlens is empty, expected [0, ..., T]");
  detail::check_cu_seqlens(fn, cu_seqlens, cu_seqlens.back(), /*min_entries=*/1);
  std::vector<std::int64_t> lens;
  for (std::size_t i = 0; i + 1 < cu_seqlens.size(); ++i) lens.push_back(cu_seqlens[i + 1] - cu_seqlens[i]);
  return lens;
}

/// cu_seqlens [N+1] from lengths [N]: 0 followed by the running sum (fla's prepare_cu_seqlens_from_lens).
/// Lengths must be >= 0 and their sum must fit in int64.
inline std::vector<std::int64_t> prepare_cu_seqlens_from_lens(const std::vector<std::int64_t>& lens) {
  const std::string fn = "prepare_cu_seqlens_from_lens";
  std::vector<std::int64_t> cu{0};
  for (std::size_t i = 0; i < lens.size(); ++i) {
    const std::int64_t l = lens[i];
    if (l < 0) detail::fail(fn, "lens[" + std::to_string(i) + "] is " + std::to_string(l) + ", expected >= 0");
    if (l > std::numeric_limits<std::int64_t>::max() - cu.back())
      detail::fail(fn, "the sum of lens overflows int64 at lens[" + std::to_string(i) + "] = " + std::to_string(l) +
                           ", expected a total below 2^63");
    cu.push_back(cu.back() + l);
  }
  return cu;
}

/// ceil(a / b) for a >= 0, b > 0, without the overflow of (a + b − 1) / b.
inline std::int64_t cdiv(std::int64_t a, std::int64_t b) { return a / b + (a % b != 0 ? 1 : 0); }

namespace detail {

/// Checks the arguments of prepare_chunk_indices / prepare_chunk_offsets; returns the total chunk count.
inline std::int64_t check_chunking(const std::string& fn, const std::vector<std::int64_t>& cu_seqlens,
                                   std::int64_t chunk_size) {
  if (chunk_size <= 0) fail(fn, "chunk_size is " + std::to_string(chunk_size) + ", expected > 0");
  if (cu_seqlens.size() < 2 || cu_seqlens.front() != 0)
    fail(fn, "cu_seqlens is " + shape_str(cu_seqlens) + ", expected [0, ..., T]");
  check_cu_seqlens(fn, cu_seqlens, cu_seqlens.back());
  // Each count is at most T / chunk_size + 1 and T < 2^63, so the sum cannot overflow before this check trips.
  std::int64_t total = 0;
  for (std::size_t n = 0; n + 1 < cu_seqlens.size(); ++n) {
    total += cdiv(cu_seqlens[n + 1] - cu_seqlens[n], chunk_size);
    if (total > (std::int64_t(1) << 40))
      fail(fn, "cu_seqlens and chunk_size = " + std::to_string(chunk_size) +
                   " give more than 2^40 chunks, expected a chunk list that fits in memory");
  }
  return total;
}

}  // namespace detail

/// Rows (sequence id, chunk index within the sequence) of every chunk of chunk_size tokens, in order;
/// zero-length sequences contribute none. Example: cu = [0,15,100], 64 → {(0,0), (1,0), (1,1)}.
inline std::vector<std::array<std::int64_t, 2>> prepare_chunk_indices(const std::vector<std::int64_t>& cu_seqlens,
                                                                      std::int64_t chunk_size) {
  const std::int64_t total = detail::check_chunking("prepare_chunk_indices", cu_seqlens, chunk_size);
  std::vector<std::array<std::int64_t, 2>> rows;
  rows.reserve(static_cast<std::size_t>(total));
  for (std::size_t n = 0; n + 1 < cu_seqlens.size(); ++n)
    for (std::int64_t c = 0; c < cdiv(cu_seqlens[n + 1] - cu_seqlens[n], chunk_size); ++c)
      rows.push_back({static_cast<std::int64_t>(n), c});
  return rows;
}

/// Index of each sequence's first chunk [N+1] (the last entry is the total chunk count).
/// Example: cu = [0,15,100], 64 → [0,1,3].
inline std::vector<std::int64_t> prepare_chunk_offsets(const std::vector<std::int64_t>& cu_seqlens,
                                                       std::int64_t chunk_size) {
  detail::check_chunking("prepare_chunk_offsets", cu_seqlens, chunk_size);
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
template <class MaskT>
UnpadData get_unpad_data(const MaskT& mask) {
  static_assert(rank_of_v<MaskT> == 2, "get_unpad_data: attention_mask must be [B,S]");
  using M = scalar_type_t<MaskT>;
  const ConstView<M, 2> attention_mask(mask);
  const Index B = attention_mask.dimension(0), S = attention_mask.dimension(1);
  UnpadData u;
  u.cu_seqlens.push_back(0);
  for (Index b = 0; b < B; ++b) {
    std::int64_t len = 0;
    for (Index s = 0; s < S; ++s) {
      const M m = attention_mask.data()[b * S + s];
      if (m != M(0) && m != M(1))
        detail::fail("get_unpad_data", "attention_mask[" + std::to_string(b) + "," + std::to_string(s) + "] is " +
                                           std::to_string(static_cast<double>(m)) + ", expected 0 or 1");
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
inline UnpadData unpad_mask_tail(const std::string& fn, const ConstView<std::int64_t, 2>& attention_mask, Index B,
                                 Index T) {
  const auto& md = attention_mask.dimensions();
  if (md[0] != B || md[1] < T)
    fail(fn, "attention_mask is " + shape_str(md) + ", expected [B=" + std::to_string(B) +
                 ",S] with S >= T=" + std::to_string(T));
  Tensor<std::int64_t, 2> last(B, T);
  for (Index b = 0; b < B; ++b)
    for (Index t = 0; t < T; ++t) last(b, t) = attention_mask(b, md[1] - T + t);
  return get_unpad_data(last);
}

inline void check_indices(const std::string& fn, const std::vector<std::int64_t>& indices, Index rows) {
  for (std::size_t i = 0; i < indices.size(); ++i)
    if (indices[i] < 0 || indices[i] >= rows)
      fail(fn, "indices[" + std::to_string(i) + "] is " + std::to_string(indices[i]) + ", expected in [0, " +
                   std::to_string(rows) + ")");
}
}  // namespace detail

namespace detail {

/// Elements per first-axis row of a view (1 for rank 1).
template <class T, int R>
Index row_elements(const ConstView<T, R>& x) {
  Index row = 1;
  for (int i = 1; i < R; ++i) row *= x.dimension(i);
  return row;
}

/// Throws unless a [rows, row] tensor has a size that fits in memory arithmetic (no Index overflow).
inline void check_output_size(const std::string& fn, const char* what, Index rows, Index row) {
  if (rows < 0) fail(fn, std::string(what) + " is " + std::to_string(rows) + ", expected >= 0");
  if (row > 0 && rows > std::numeric_limits<Index>::max() / row / 16)
    fail(fn, std::string(what) + " is " + std::to_string(rows) + ", expected an output of fewer than 2^59 elements");
}

}  // namespace detail

/// Gathers rows of the first axis: x [(B·S), ...] → [indices.size(), ...] (fla's index_first_axis).
template <class X>
Tensor<scalar_type_t<X>, rank_of_v<X>> index_first_axis(const X& x_in, const std::vector<std::int64_t>& indices) {
  using T = scalar_type_t<X>;
  constexpr int R = rank_of_v<X>;
  static_assert(R >= 1, "index_first_axis: x must have a first axis");
  const ConstView<T, R> x(x_in);
  detail::check_indices("index_first_axis", indices, x.dimension(0));
  auto dims = x.dimensions();
  const Index row = detail::row_elements(x);
  dims[0] = static_cast<Index>(indices.size());
  Tensor<T, R> y(dims);
  for (std::size_t i = 0; i < indices.size(); ++i)
    std::copy_n(x.data() + indices[i] * row, row, y.data() + static_cast<Index>(i) * row);
  return y;
}

/// Scatters rows into zeros: x [n, ...] → y [first_axis_dim, ...] with y[indices[i]] = x[i]
/// (fla's index_put_first_axis).
template <class X>
Tensor<scalar_type_t<X>, rank_of_v<X>> index_put_first_axis(const X& x_in, const std::vector<std::int64_t>& indices,
                                                            Index first_axis_dim) {
  using T = scalar_type_t<X>;
  constexpr int R = rank_of_v<X>;
  static_assert(R >= 1, "index_put_first_axis: x must have a first axis");
  const std::string fn = "index_put_first_axis";
  const ConstView<T, R> x(x_in);
  if (static_cast<Index>(indices.size()) != x.dimension(0))
    detail::fail(fn, "indices has " + std::to_string(indices.size()) +
                         " entries, expected x.dimension(0) = " + std::to_string(x.dimension(0)));
  const Index row = detail::row_elements(x);
  detail::check_output_size(fn, "first_axis_dim", first_axis_dim, row);
  detail::check_indices(fn, indices, first_axis_dim);
  auto dims = x.dimensions();
  dims[0] = first_axis_dim;
  Tensor<T, R> y(dims);
  std::fill_n(y.data(), y.size(), T(0));
  for (std::size_t i = 0; i < indices.size(); ++i)
    std::copy_n(x.data() + static_cast<Index>(i) * row, row, y.data() + indices[i] * row);
  return y;
}

/// Pads packed rows back: hidden [total, ...] → [batch, seqlen, ...], zeros at padding (fla's pad_input).
/// batch and seqlen must be >= 0; indices index the flattened [batch·seqlen] positions.
template <class X>
Tensor<scalar_type_t<X>, rank_of_v<X> + 1> pad_input(const X& hidden_in, const std::vector<std::int64_t>& indices,
                                                     Index batch, Index seqlen) {
  using T = scalar_type_t<X>;
  constexpr int R = rank_of_v<X>;
  const std::string fn = "pad_input";
  const ConstView<T, R> hidden(hidden_in);
  if (batch < 0) detail::fail(fn, "batch is " + std::to_string(batch) + ", expected >= 0");
  if (seqlen < 0) detail::fail(fn, "seqlen is " + std::to_string(seqlen) + ", expected >= 0");
  if (seqlen > 0 && batch > std::numeric_limits<Index>::max() / seqlen)
    detail::fail(fn, "batch * seqlen = " + std::to_string(batch) + " * " + std::to_string(seqlen) +
                         " overflows, expected a product below 2^63");
  const Index rows = batch * seqlen;
  detail::check_output_size(fn, "batch * seqlen", rows, detail::row_elements(hidden));
  Tensor<T, R> flat = index_put_first_axis(hidden, indices, rows);
  std::array<Index, R + 1> dims;
  dims[0] = batch;
  dims[1] = seqlen;
  for (int i = 1; i < R; ++i) dims[static_cast<std::size_t>(i + 1)] = hidden.dimension(i);
  Tensor<T, R + 1> y(dims);
  std::copy_n(flat.data(), flat.size(), y.data());
  return y;
}

}  // namespace gla
