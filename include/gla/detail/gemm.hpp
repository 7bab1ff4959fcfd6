#pragma once
/// gla/detail/gemm.hpp: the small matrix products of the chunk kernels, row-major, through Eigen.

#include <gla/core.hpp>

namespace gla::detail {

enum class Trans { N, T };

/// C[m×n] (row stride ldc) = op(A) · op(B) (+ C when accumulate); op(A) is m×k, op(B) is k×n. A is m×k row-major
/// (lda) when ta == N, else k×m (lda); B is k×n (ldb) when tb == N, else n×k (ldb). C is acc_t<In>.
template <class In>
void gemm(Trans ta, Trans tb, Index m, Index n, Index k, const In* A, Index lda, const In* B, Index ldb,
          bool accumulate, acc_t<In>* C, Index ldc) {
  using Acc = acc_t<In>;
  if (m <= 0 || n <= 0) return;
  Eigen::Map<RowMat<Acc>, Eigen::Unaligned, Eigen::OuterStride<>> c(C, m, n, Eigen::OuterStride<>(ldc));
  if (k <= 0) {
    if (!accumulate) c.setZero();
    return;
  }
  if constexpr (std::is_same_v<In, Acc>) {
    using CMap = Eigen::Map<const RowMat<Acc>, Eigen::Unaligned, Eigen::OuterStride<>>;
    const CMap a(A, ta == Trans::N ? m : k, ta == Trans::N ? k : m, Eigen::OuterStride<>(lda));
    const CMap b(B, tb == Trans::N ? k : n, tb == Trans::N ? n : k, Eigen::OuterStride<>(ldb));
    const auto run = [&](const auto& x, const auto& y) {
      if (accumulate)
        c.noalias() += x * y;
      else
        c.noalias() = x * y;
    };
    if (ta == Trans::N && tb == Trans::N) run(a, b);
    if (ta == Trans::N && tb == Trans::T) run(a, b.transpose());
    if (ta == Trans::T && tb == Trans::N) run(a.transpose(), b);
    if (ta == Trans::T && tb == Trans::T) run(a.transpose(), b.transpose());
  } else {
    // Low-precision operands: widen the tiles (thread-local scratch, grown once) and use the Acc product.
    thread_local std::vector<Acc> wa, wb;
    const Index ar = ta == Trans::N ? m : k, ac = ta == Trans::N ? k : m;
    const Index br = tb == Trans::N ? k : n, bc = tb == Trans::N ? n : k;
    wa.resize(static_cast<std::size_t>(ar * ac));
    wb.resize(static_cast<std::size_t>(br * bc));
    for (Index i = 0; i < ar; ++i)
      for (Index j = 0; j < ac; ++j) wa[static_cast<std::size_t>(i * ac + j)] = static_cast<Acc>(A[i * lda + j]);
    for (Index i = 0; i < br; ++i)
      for (Index j = 0; j < bc; ++j) wb[static_cast<std::size_t>(i * bc + j)] = static_cast<Acc>(B[i * ldb + j]);
    gemm<Acc>(ta, tb, m, n, k, wa.data(), ac, wb.data(), bc, accumulate, C, ldc);
  }
}

}  // namespace gla::detail
