#pragma once
/// gla/core.hpp: tensor aliases, gla::Error, the options/result structs of every GLA operator and the
/// small internals (shape checks, sequence layout, strided block maps) that the operators share.

#include <Eigen/Core>
#include <unsupported/Eigen/CXX11/Tensor>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace gla {

using Index = Eigen::Index;

/// Row-major owned tensor; every layout in this library is row-major like PyTorch's contiguous tensors.
template <class T, int R>
using Tensor = Eigen::Tensor<T, R, Eigen::RowMajor, Eigen::Index>;
/// Mutable view over a caller's contiguous row-major buffer (outputs of the `*_into` core API).
template <class T, int R>
using TensorMap = Eigen::TensorMap<Tensor<T, R>>;
/// Read-only view; every input is taken this way so owned tensors and caller buffers both work.
template <class T, int R>
using ConstTensorMap = Eigen::TensorMap<const Tensor<T, R>>;

/// The one exception type of the library: the message names the function, the argument, expected vs actual.
class Error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// Accumulation type for an input scalar: double stays double, float/bf16/half accumulate in float.
template <class T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class T>
inline constexpr bool is_supported_scalar_v = std::is_same_v<T, float> || std::is_same_v<T, double> ||
                                              std::is_same_v<T, Eigen::bfloat16> || std::is_same_v<T, Eigen::half>;

/// A read-only Eigen map of an owned tensor or of a mutable map (Eigen has no implicit map→const-map conversion).
template <class T, int R>
ConstTensorMap<T, R> view(const Tensor<T, R>& t) {
  return ConstTensorMap<T, R>(t.data(), t.dimensions());
}
template <class T, int R>
ConstTensorMap<T, R> view(const TensorMap<T, R>& t) {
  return ConstTensorMap<T, R>(t.data(), t.dimensions());
}
template <class T, int R>
ConstTensorMap<T, R> view(const ConstTensorMap<T, R>& t) {
  return t;
}
/// A mutable Eigen map of an owned tensor.
template <class T, int R>
TensorMap<T, R> mut_view(Tensor<T, R>& t) {
  return TensorMap<T, R>(t.data(), t.dimensions());
}

/// A non-owning view of a contiguous row-major tensor: a data pointer and R dimensions. `View<const T, R>`
/// (alias ConstView<T, R>) reads, `View<T, R>` writes. Every operator takes its tensors as views.
///
/// Copying or assigning a View re-points it (value semantics) — unlike Eigen::TensorMap, whose assignment
/// copies the viewed data. So `opts.initial_state = *result.final_state;` makes the option view the new
/// state. A View converts implicitly from an owned gla::Tensor, an Eigen TensorMap or a mutable View; the viewed
/// buffer must outlive its use (a temporary tensor passed as a function argument lives until the call returns).
template <class T, int R>
class View {
  static_assert(R >= 0, "gla::View: negative rank");

 public:
  using Scalar = std::remove_const_t<T>;
  using Dimensions = std::array<Index, static_cast<std::size_t>(R)>;
  static constexpr int rank = R;
  static constexpr bool is_const = std::is_const_v<T>;

  /// A null view (data() == nullptr, every dimension 0).
  View() noexcept : dims_{} {}
  View(T* data, const Dimensions& dims) noexcept : data_(data), dims_(dims) {}
  /// View(ptr, d0, d1, ...) with exactly R dimensions.
  template <class... I,
            class = std::enable_if_t<sizeof...(I) == static_cast<std::size_t>(R) && (std::is_integral_v<I> && ...)>>
  View(T* data, I... dims) noexcept : data_(data), dims_{static_cast<Index>(dims)...} {}

  /// From an owned tensor (const tensors only give read-only views).
  View(std::conditional_t<is_const, const Tensor<Scalar, R>&, Tensor<Scalar, R>&> t) noexcept
      : data_(t.data()), dims_(to_array(t.dimensions())) {}
  /// From Eigen maps (a mutable map also gives a read-only view).
  View(const TensorMap<Scalar, R>& m) noexcept : data_(m.data()), dims_(to_array(m.dimensions())) {}
  template <bool C = is_const, class = std::enable_if_t<C>>
  View(const ConstTensorMap<Scalar, R>& m) noexcept : data_(m.data()), dims_(to_array(m.dimensions())) {}
  /// A mutable view converts to a read-only one.
  template <bool C = is_const, class = std::enable_if_t<C>>
  View(const View<Scalar, R>& v) noexcept : data_(v.data()), dims_(v.dimensions()) {}

  T* data() const noexcept { return data_; }
  const Dimensions& dimensions() const noexcept { return dims_; }
  Index dimension(int i) const noexcept { return dims_[static_cast<std::size_t>(i)]; }
  /// Number of elements (1 for rank 0).
  Index size() const noexcept {
    Index n = 1;
    for (Index d : dims_) n *= d;
    return n;
  }
  /// Element access by R row-major indices (unchecked).
  template <class... I, class = std::enable_if_t<sizeof...(I) == static_cast<std::size_t>(R)>>
  T& operator()(I... idx) const noexcept {
    const Index ii[] = {static_cast<Index>(idx)...};
    Index off = 0;
    for (std::size_t d = 0; d < static_cast<std::size_t>(R); ++d) off = off * dims_[d] + ii[d];
    return data_[off];
  }
  /// The same memory as an Eigen TensorMap (for Eigen tensor expressions).
  Eigen::TensorMap<std::conditional_t<is_const, const Tensor<Scalar, R>, Tensor<Scalar, R>>> map() const noexcept {
    return {data_, dims_};
  }

 private:
  template <class D>
  static Dimensions to_array(const D& d) noexcept {
    Dimensions a{};
    for (std::size_t i = 0; i < static_cast<std::size_t>(R); ++i) a[i] = d[i];
    return a;
  }
  T* data_ = nullptr;
  Dimensions dims_;
};

/// A read-only view.
template <class T, int R>
using ConstView = View<const T, R>;

/// A read-only view kept in an options struct (GLAOptions::initial_state, ChunkHGates): a ConstView that cannot
/// be made from a temporary tensor, because the option would dangle as soon as the statement ends.
template <class T, int R>
class HeldView : public ConstView<T, R> {
 public:
  using ConstView<T, R>::ConstView;
  HeldView(const ConstView<T, R>& v) noexcept : ConstView<T, R>(v) {}
  HeldView(Tensor<T, R>&&) = delete;
};

/// The element type of a tensor-like argument (gla::Tensor, Eigen TensorMap, gla::View), without const;
/// operators deduce their scalar type from their first tensor argument with it.
template <class X, class = void>
struct scalar_type {};
template <class S, int R, int O, class I>
struct scalar_type<Eigen::Tensor<S, R, O, I>> {
  using type = S;
};
template <class S, int R, int O, class I, int Opt>
struct scalar_type<Eigen::TensorMap<Eigen::Tensor<S, R, O, I>, Opt>> {
  using type = S;
};
template <class S, int R, int O, class I, int Opt>
struct scalar_type<Eigen::TensorMap<const Eigen::Tensor<S, R, O, I>, Opt>> {
  using type = S;
};
template <class T, int R>
struct scalar_type<View<T, R>> {
  using type = std::remove_const_t<T>;
};
template <class T, int R>
struct scalar_type<HeldView<T, R>> {
  using type = T;
};
template <class X>
using scalar_type_t = typename scalar_type<std::remove_cv_t<std::remove_reference_t<X>>>::type;

/// True for the tensor-like argument types: gla::Tensor, Eigen TensorMaps of them, gla::View.
template <class X, class = void>
struct is_tensor_like : std::false_type {};
template <class X>
struct is_tensor_like<X, std::void_t<typename scalar_type<std::remove_cv_t<std::remove_reference_t<X>>>::type>>
    : std::true_type {};
template <class X>
inline constexpr bool is_tensor_like_v = is_tensor_like<X>::value;

/// The rank of a tensor-like argument.
template <class X>
struct rank_of : std::integral_constant<int, std::remove_cv_t<std::remove_reference_t<X>>::NumDimensions> {};
template <class T, int R>
struct rank_of<View<T, R>> : std::integral_constant<int, R> {};
template <class T, int R>
struct rank_of<HeldView<T, R>> : std::integral_constant<int, R> {};
template <class X>
inline constexpr int rank_of_v = rank_of<std::remove_cv_t<std::remove_reference_t<X>>>::value;

/// A read-only (ConstViewOf) or mutable (ViewOf) view with the scalar type of the tensor-like X. Operators
/// deduce their scalar from their first tensor argument and take the others as ConstViewOf<decltype(first)>,
/// so any mix of gla::Tensor, Eigen maps and views is accepted without naming the scalar.
template <class X, int R>
using ConstViewOf = ConstView<scalar_type_t<X>, R>;
template <class X, int R>
using ViewOf = View<scalar_type_t<X>, R>;

/// R, or the scalar of X when R is void: the scalar of an optional second input (e.g. a residual kept in
/// float for bf16 activations) that defaults to the first input's. Used as a non-deduced parameter type.
template <class R, class X>
using scalar_or_t = std::conditional_t<std::is_void_v<R>, scalar_type_t<X>, R>;

/// Options of the GLA operators; field names are fla's keyword arguments.
struct GLAOptions {
  /// Multiplier of q; default 1/sqrt(K). An explicit 0 is kept (as fla).
  std::optional<float> scale;
  /// h0 float [N,H,K,V] (or [N,H,V,K] with state_v_first); N = B, or the number of sequences with cu_seqlens.
  /// A view: the buffer must outlive the call. It may be the very buffer of the call's final_state output
  /// (an in-place state update, e.g. when decoding).
  std::optional<HeldView<float, 4>> initial_state;
  /// Return the state after the last token of every sequence, float [N,H,K,V] (or V-first). The `*_into`
  /// forms take a final_state view if and only if this is true.
  bool output_final_state = false;
  /// Store initial/final states (and their gradients) as [N,H,V,K], the layout of fla's layer caches.
  bool state_v_first = false;
  /// FlashAttention-style packed batch boundaries [N+1] (B must be 1); empty = fixed-length batch.
  std::vector<std::int64_t> cu_seqlens;
  /// Run time backwards (fused_recurrent_gla only).
  bool reverse = false;
  /// Tokens per chunk of the chunked algorithms: a power of two in [16, 256] (fla uses 16 to 64).
  int chunk_size = 64;

  // fused_chunk_gla extras.
  /// A sequence longer than this is rejected with gla::Error (unset: no limit).
  std::optional<std::int64_t> max_seqlen;
  /// A sequence no longer than one chunk takes the recurrent path (the same numbers, less work).
  bool heuristic_fallback = true;

  // fused_recurrent_gla extras (unset: results are exactly fla's).
  /// Extra per-step decay multiplied into the state after the gates: empty = none, 1 value = every head,
  /// H values = per head.
  std::vector<float> gamma;
  /// Clamp every state entry after each step.
  std::optional<float> state_clamp_min;
  std::optional<float> state_clamp_max;
};

/// Output of a forward operator: o [B,T,H,V] in the input scalar; final_state float [N,H,K,V] (or V-first)
/// when requested.
template <class T>
struct GLAResult {
  Tensor<T, 4> o;
  std::optional<Tensor<float, 4>> final_state;
};

namespace detail {

template <class S>
using RowMat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class S>
using RowVec = Eigen::Matrix<S, 1, Eigen::Dynamic>;
/// A [rows × cols] block of a [B,T,H,D] tensor for one (b,h): consecutive rows are H·D apart.
template <class S>
using StridedMap = Eigen::Map<RowMat<S>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <class S>
using ConstStridedMap = Eigen::Map<const RowMat<S>, Eigen::Unaligned, Eigen::OuterStride<>>;

template <class Dims>
std::string shape_str(const Dims& d) {
  std::ostringstream s;
  s << '[';
  for (std::size_t i = 0; i < static_cast<std::size_t>(d.size()); ++i) s << (i ? "," : "") << d[i];
  s << ']';
  return s.str();
}

[[noreturn]] inline void fail(const std::string& fn, const std::string& what) { throw Error(fn + ": " + what); }

/// One expected dimension: a label and a value (< 0: any positive size).
struct Dim {
  const char* label;
  Index value;
};

inline std::string expected_str(std::initializer_list<Dim> dims) {
  std::ostringstream s;
  s << '[';
  bool first = true;
  for (const Dim& d : dims) {
    s << (first ? "" : ",") << d.label;
    if (d.value >= 0) s << '=' << d.value;
    first = false;
  }
  s << ']';
  return s.str();
}

/// Throws `fn: name is [actual], expected [B=2,T=64,H=4,V]` unless the dims match (free dims must be > 0).
template <class Dims>
void expect_dims(const std::string& fn, const std::string& name, const Dims& actual, std::initializer_list<Dim> dims) {
  bool ok = static_cast<std::size_t>(actual.size()) == dims.size();
  std::size_t i = 0;
  for (const Dim& d : dims) {
    if (!ok) break;
    ok = d.value >= 0 ? actual[i] == d.value : actual[i] > 0;
    ++i;
  }
  if (!ok) fail(fn, name + " is " + shape_str(actual) + ", expected " + expected_str(dims));
}

inline bool is_power_of_two(std::int64_t x) { return x > 0 && (x & (x - 1)) == 0; }

/// The chunked algorithms' chunk sizes: powers of two in [kMinChunkSize, kMaxChunkSize]. fla uses 16 to 64;
/// the per-thread scratch grows with chunk_size², and beyond a few hundred the intra-chunk part only costs more.
inline constexpr std::int64_t kMinChunkSize = 16;
inline constexpr std::int64_t kMaxChunkSize = 256;

inline void check_chunk_size(const std::string& fn, std::int64_t chunk_size) {
  if (chunk_size < kMinChunkSize || chunk_size > kMaxChunkSize || !is_power_of_two(chunk_size))
    fail(fn, "chunk_size is " + std::to_string(chunk_size) + ", expected a power of two in [" +
                 std::to_string(kMinChunkSize) + ", " + std::to_string(kMaxChunkSize) + "]");
}

/// One sequence of a (fixed-length or packed) batch: batch row b, first token t0, length len.
struct Seq {
  Index b;
  Index t0;
  Index len;
};

/// Throws unless cu_seqlens starts at 0, never decreases and ends at total (zero-length sequences allowed).
inline void check_cu_seqlens(const std::string& fn, const std::vector<std::int64_t>& cu, Index total,
                             std::size_t min_entries = 2) {
  if (cu.size() < min_entries)
    fail(fn, "cu_seqlens has " + std::to_string(cu.size()) + " entries, expected at least " +
                 std::to_string(min_entries) + " ([0, ..., T])");
  if (cu.front() != 0) fail(fn, "cu_seqlens[0] is " + std::to_string(cu.front()) + ", expected 0");
  for (std::size_t i = 1; i < cu.size(); ++i)
    if (cu[i] < cu[i - 1])
      fail(fn, "cu_seqlens is not non-decreasing: cu_seqlens[" + std::to_string(i) + "] = " + std::to_string(cu[i]) +
                   " < cu_seqlens[" + std::to_string(i - 1) + "] = " + std::to_string(cu[i - 1]));
  if (cu.back() != total)
    fail(fn, "cu_seqlens[N] is " + std::to_string(cu.back()) + ", expected T = " + std::to_string(total) +
                 " (the packed length)");
}

/// The sequences of a batch: B rows of length T, or the packed sequences of cu_seqlens (B == 1).
inline std::vector<Seq> make_sequences(Index B, Index T, const std::vector<std::int64_t>& cu) {
  std::vector<Seq> seqs;
  if (cu.empty()) {
    for (Index b = 0; b < B; ++b) seqs.push_back({b, 0, T});
  } else {
    for (std::size_t n = 0; n + 1 < cu.size(); ++n) seqs.push_back({0, cu[n], cu[n + 1] - cu[n]});
  }
  return seqs;
}

/// The problem size shared by every operator: q/k [B,T,H,K], v [B,T,H,V], N sequences.
struct OpShape {
  Index B = 0, T = 0, H = 0, K = 0, V = 0, N = 0;
  std::vector<Seq> seqs;
};

/// Checks a state-shaped argument: [N,H,K,V], or [N,H,V,K] when v_first.
template <class Dims>
void expect_state_dims(const std::string& fn, const std::string& name, const Dims& d, const OpShape& s, bool v_first) {
  if (v_first)
    expect_dims(fn, name + " (state_v_first)", d, {{"N", s.N}, {"H", s.H}, {"V", s.V}, {"K", s.K}});
  else
    expect_dims(fn, name, d, {{"N", s.N}, {"H", s.H}, {"K", s.K}, {"V", s.V}});
}

/// Checks q, k, v and the options every GLA operator shares (fla's checks plus ours); returns the shape.
template <class QD, class KD, class VD>
OpShape check_qkv(const std::string& fn, const QD& qd, const KD& kd, const VD& vd, const GLAOptions& opts) {
  OpShape s;
  if (qd[0] <= 0 || qd[1] < 0 || qd[2] <= 0 || qd[3] <= 0)
    fail(fn, "q is " + shape_str(qd) + ", expected [B,T,H,K] with B, H, K > 0");
  s.B = qd[0];
  s.T = qd[1];
  s.H = qd[2];
  s.K = qd[3];
  expect_dims(fn, "k", kd, {{"B", s.B}, {"T", s.T}, {"H", s.H}, {"K", s.K}});
  if (vd[0] != s.B || vd[1] != s.T || vd[2] != s.H || vd[3] <= 0)
    fail(fn, "v is " + shape_str(vd) + ", expected " + expected_str({{"B", s.B}, {"T", s.T}, {"H", s.H}, {"V", -1}}));
  s.V = vd[3];
  if (!opts.cu_seqlens.empty()) {
    if (s.B != 1) fail(fn, "the batch size is " + std::to_string(s.B) + ", expected 1 when cu_seqlens is given");
    check_cu_seqlens(fn, opts.cu_seqlens, s.T);
  }
  s.seqs = make_sequences(s.B, s.T, opts.cu_seqlens);
  s.N = static_cast<Index>(s.seqs.size());
  if (opts.initial_state) {
    const auto& d = opts.initial_state->dimensions();
    if (d[0] != s.N)
      fail(fn, "initial_state has " + std::to_string(d[0]) + " states, expected N = " + std::to_string(s.N) +
                   (opts.cu_seqlens.empty() ? " (the batch size)" : " (the number of sequences in cu_seqlens)"));
    expect_state_dims(fn, "initial_state", d, s, opts.state_v_first);
  }
  if (opts.scale && !std::isfinite(*opts.scale))
    fail(fn, "scale is " + std::to_string(*opts.scale) + ", expected a finite number");
  return s;
}

/// The options a kernel does not support must be left at their defaults.
inline void reject_option(const std::string& fn, bool set, const char* what) {
  if (set) fail(fn, std::string(what) + " is not supported here");
}

/// The one output contract of the `*_into` forms: an optional output is given if and only if the flag that
/// asks for it is set (final_state ⇔ output_final_state; dh0 ⇔ initial_state; dgk ⇔ gk; ...).
template <class Out>
void expect_output_iff(const std::string& fn, const char* name, const std::optional<Out>& out, bool wanted,
                       const char* if_wanted, const char* if_not_wanted) {
  if (wanted && !out) fail(fn, std::string(name) + " is not given, expected a view since " + if_wanted);
  if (!wanted && out) fail(fn, std::string(name) + " is given, expected none since " + if_not_wanted);
}

/// The memory of one argument, for the aliasing rule.
struct Buffer {
  const char* name;
  const void* ptr;
  std::size_t bytes;
  bool overlaps(const Buffer& o) const {
    if (bytes == 0 || o.bytes == 0) return false;
    const auto a = reinterpret_cast<std::uintptr_t>(ptr), b = reinterpret_cast<std::uintptr_t>(o.ptr);
    return a < b + o.bytes && b < a + bytes;
  }
  bool same(const Buffer& o) const { return ptr == o.ptr && bytes == o.bytes; }
};
template <class V>
Buffer buffer(const char* name, const V& v) {
  return {name, v.data(), static_cast<std::size_t>(v.size()) * sizeof(scalar_type_t<V>)};
}
/// An absent optional argument occupies no memory.
template <class V>
Buffer buffer(const char* name, const std::optional<V>& v) {
  return v ? buffer(name, *v) : Buffer{name, nullptr, 0};
}

/// The aliasing rule of every `*_into` form: no output may overlap an input or another output, except the
/// in-place pairs (output, input) that the function documents, which must then coincide exactly (same first
/// element, same size). Partial overlaps are always rejected. Absent arguments (size 0) never overlap.
inline void check_aliasing(const std::string& fn, const std::vector<Buffer>& inputs, const std::vector<Buffer>& outputs,
                           const std::vector<std::pair<const char*, const char*>>& in_place = {}) {
  const auto in_place_pair = [&](const Buffer& out, const Buffer& in) {
    for (const auto& [o, i] : in_place)
      if (std::string(o) == out.name && std::string(i) == in.name) return true;
    return false;
  };
  for (std::size_t i = 0; i < outputs.size(); ++i) {
    const Buffer& out = outputs[i];
    for (const Buffer& in : inputs) {
      if (!out.overlaps(in)) continue;
      if (!in_place_pair(out, in))
        fail(fn, std::string("output ") + out.name + " overlaps input " + in.name + ", expected disjoint buffers");
      if (!out.same(in))
        fail(fn, std::string("output ") + out.name + " overlaps input " + in.name +
                     " without being exactly the same buffer, expected disjoint buffers or the very same buffer (an "
                     "in-place update)");
    }
    for (std::size_t j = 0; j < i; ++j)
      if (out.overlaps(outputs[j]))
        fail(fn,
             std::string("output ") + out.name + " overlaps output " + outputs[j].name + ", expected disjoint buffers");
  }
}

/// An optional owned output tensor as the optional output view of an `*_into` call.
template <class X, int R>
std::optional<View<X, R>> optional_output(std::optional<Tensor<X, R>>& t) {
  if (!t) return std::nullopt;
  return View<X, R>(*t);
}

/// Shape of a final-state output: [N,H,K,V] or [N,H,V,K].
inline std::array<Index, 4> state_dims(const OpShape& s, bool v_first) {
  return v_first ? std::array<Index, 4>{s.N, s.H, s.V, s.K} : std::array<Index, 4>{s.N, s.H, s.K, s.V};
}

/// Input data as the accumulation scalar: a pointer into the caller's buffer when the types agree,
/// otherwise an owned converted copy (bf16/half inputs).
template <class Acc, class T>
class AccInput {
 public:
  AccInput() = default;
  AccInput(const T* p, Index n) {
    if constexpr (std::is_same_v<Acc, T>) {
      ptr_ = p;
    } else {
      owned_.resize(static_cast<std::size_t>(n));
      for (Index i = 0; i < n; ++i) owned_[static_cast<std::size_t>(i)] = static_cast<Acc>(p[i]);
      ptr_ = owned_.data();
    }
  }
  template <int R>
  explicit AccInput(const ConstView<T, R>& t) : AccInput(t.data(), t.size()) {}
  const Acc* data() const { return ptr_; }
  explicit operator bool() const { return ptr_ != nullptr; }

 private:
  const Acc* ptr_ = nullptr;
  std::vector<Acc> owned_;
};

/// Loads a float state [K,V] (or its V-first transpose [V,K]) into a row-major K×V buffer of Acc.
template <class Acc>
void load_state(Acc* S, const float* p, Index K, Index V, bool v_first) {
  Eigen::Map<RowMat<Acc>> dst(S, K, V);
  if (v_first)
    dst = Eigen::Map<const RowMat<float>>(p, V, K).transpose().template cast<Acc>();
  else
    dst = Eigen::Map<const RowMat<float>>(p, K, V).template cast<Acc>();
}

/// Loads a float state [K,V] (or V-first) into a K×V accumulator matrix.
template <class Acc>
void load_state(RowMat<Acc>& S, const float* p, Index K, Index V, bool v_first) {
  S.resize(K, V);
  load_state(S.data(), p, K, V, v_first);
}

/// Stores a K×V accumulator state as [K,V] (or [V,K] when v_first) of Out.
template <class Acc, class Out>
void store_state(const RowMat<Acc>& S, Out* p, Index K, Index V, bool v_first) {
  if (v_first)
    Eigen::Map<RowMat<Out>>(p, V, K) = S.transpose().template cast<Out>();
  else
    Eigen::Map<RowMat<Out>>(p, K, V) = S.template cast<Out>();
}

/// Converts a row of accumulator values into the output scalar.
template <class T, class Derived>
void store_row(T* dst, const Eigen::MatrixBase<Derived>& row) {
  for (Index j = 0; j < row.size(); ++j) dst[j] = static_cast<T>(row(j));
}

}  // namespace detail
}  // namespace gla
