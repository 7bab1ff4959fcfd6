#pragma once
/// gla/detail/packed_linear.hpp: nn.Linear-style products y[M,out] = x[M,in] · Wᵀ (W [out,in] as fla stores it)
/// over weights packed once, when they are loaded, into oneDNN's preferred matmul layout; fp32 or bf16 weights.
///
/// Layout (the one oneDNN 2.6's brgemm matmul prefers on AVX-512 machines for a K×N weight, checked by
/// onednn_layout_is_preferred()): W is seen as K×N (K = in, N = out) and cut into panels of kPanel = 64 output
/// columns; K is padded to Kp (a multiple of 16 for fp32, of 32 for bf16, as oneDNN pads) and N to a multiple
/// of 64 with zeros.
///   fp32  oneDNN tag BA16a64b:   element (k, n) at  (n/64)·Kp·64 + k·64 + n%64
///   bf16  oneDNN tag BA16a64b2a: element (k, n) at  (n/64)·Kp·64 + (k/2)·128 + (n%64)·2 + k%2  (VNNI pairs)
/// so each panel is one contiguous Kp×64 slab that both oneDNN and the small-M kernel below stream.
///
/// Backends, chosen per call by forward():
///   M ≤ kSmallM (decoding): one pass over the weights, a register-blocked kernel (AVX-512 when compiled for
///     it, scalar loops otherwise) whose work items are panels on the parallel engine (detail::parallel_for).
///     bf16 weights are widened to fp32 in registers (exact) and multiplied with the fp32 activations. Allocates
///     nothing.
///   M > kSmallM with oneDNN (GLA_HAVE_ONEDNN, i.e. gla::gla built with GLA_WITH_ONEDNN=ON, and
///     GLA_LAYER_FORCE_EIGEN not defined): a oneDNN matmul primitive per M (cached here, a few entries) on the
///     packed weights, called from the caller's thread with OpenMP's thread count set to gla::get_num_threads()
///     (1 when called from inside an engine work item: no nested teams). bf16 weights multiply bf16-rounded
///     activations (bf16 × bf16 products, fp32 accumulation: oneDNN 2.6 has no f32 × bf16 matmul).
///   M > kSmallM without oneDNN: Eigen products per panel on the parallel engine (bf16 panels widened to fp32 in
///     per-worker scratch first).
/// Defining GLA_LAYER_FORCE_EIGEN before including this header compiles the Eigen backend only (every
/// translation unit of a program must agree; tests/test_layer_eigen.cpp uses it).

#include <gla/core.hpp>
#include <gla/detail/parallel.hpp>
#include <gla/workspace.hpp>

#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#if defined(GLA_HAVE_ONEDNN) && !defined(GLA_LAYER_FORCE_EIGEN)
#define GLA_LINEAR_WITH_ONEDNN 1
#include <oneapi/dnnl/dnnl.hpp>
#else
#define GLA_LINEAR_WITH_ONEDNN 0
#endif

#if defined(__AVX512F__) && !defined(GLA_GEMM_NO_INTRINSICS)
#define GLA_LINEAR_AVX512 1
#include <immintrin.h>
#else
#define GLA_LINEAR_AVX512 0
#endif

#ifdef _OPENMP
#include <omp.h>
#endif

namespace gla {

/// How a layer holds its linear weights: fp32, or bf16 (half the memory; products accumulate in fp32).
enum class WeightPrecision { F32, BF16 };

inline const char* to_string(WeightPrecision p) { return p == WeightPrecision::F32 ? "f32" : "bf16"; }

namespace detail {

/// float → bfloat16 bits, round to nearest even (NaN stays NaN).
inline std::uint16_t f32_to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}
inline float bf16_to_f32(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
/// f rounded to the nearest bfloat16 value, as a float.
inline float round_to_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

/// True when this build runs PackedLinear's large-M products through oneDNN.
constexpr bool linear_uses_onednn() noexcept { return GLA_LINEAR_WITH_ONEDNN != 0; }

class PackedLinear {
 public:
  static constexpr Index kPanel = 64;   // output columns per panel
  static constexpr Index kKBlock = 16;  // K is padded to a multiple of this (fp32), of 2·kKBlock (bf16)
  static constexpr Index kSmallM = 64;  // M ≤ kSmallM: the one-pass kernel

  PackedLinear() = default;
  /// in → out with zero weights.
  PackedLinear(Index in, Index out, WeightPrecision p)
      : K_(in), N_(out), Kp_(padded_k(in, p)), panels_((out + kPanel - 1) / kPanel), prec_(p) {
    if (in <= 0 || out <= 0)
      fail("PackedLinear", "in = " + std::to_string(in) + ", out = " + std::to_string(out) + ", expected both > 0");
    buf_.reserve(bytes());
    std::memset(buf_.data(), 0, bytes());
  }
  PackedLinear(const PackedLinear& o) : K_(o.K_), N_(o.N_), Kp_(o.Kp_), panels_(o.panels_), prec_(o.prec_) {
    if (o.bytes()) {
      buf_.reserve(o.bytes());
      std::memcpy(buf_.data(), o.cbuf(), o.bytes());
    }
  }
  PackedLinear& operator=(const PackedLinear& o) {
    if (this != &o) {
      PackedLinear t(o);
      *this = std::move(t);
    }
    return *this;
  }
  PackedLinear(PackedLinear&& o) noexcept
      : K_(o.K_), N_(o.N_), Kp_(o.Kp_), panels_(o.panels_), prec_(o.prec_), buf_(std::move(o.buf_)) {}
  PackedLinear& operator=(PackedLinear&& o) noexcept {
    K_ = o.K_;
    N_ = o.N_;
    Kp_ = o.Kp_;
    panels_ = o.panels_;
    prec_ = o.prec_;
    buf_ = std::move(o.buf_);
#if GLA_LINEAR_WITH_ONEDNN
    std::lock_guard<std::mutex> lock(cache_.mutex);
    cache_.prims.clear();
#endif
    return *this;
  }

  Index in() const { return K_; }
  Index out() const { return N_; }
  WeightPrecision precision() const { return prec_; }
  /// Bytes of the packed weights (with padding).
  std::size_t bytes() const {
    return static_cast<std::size_t>(panels_ * Kp_ * kPanel) * (prec_ == WeightPrecision::F32 ? 4 : 2);
  }
  const void* data() const { return cbuf(); }

  /// Rows [n0, n0+rows) of W [out,in] (fla's layout) from w with row stride ld; bf16 weights are rounded to
  /// nearest even.
  void set_rows(Index n0, Index rows, const float* w, Index ld) {
    for (Index r = 0; r < rows; ++r)
      for (Index k = 0; k < K_; ++k) put(k, n0 + r, w[r * ld + k]);
  }
  /// Rows [n0, n0+rows) of W [out,in] into w (row stride ld), as held (bf16 weights widened exactly).
  void get_rows(Index n0, Index rows, float* w, Index ld) const {
    for (Index r = 0; r < rows; ++r)
      for (Index k = 0; k < K_; ++k) w[r * ld + k] = at(k, n0 + r);
  }

  /// y [M,out] (row stride ldy) = x [M,in] (row stride ldx) · Wᵀ. No allocation when M ≤ kSmallM.
  void forward(const float* x, Index M, Index ldx, float* y, Index ldy) const {
    if (M <= 0) return;
    if (M <= kSmallM) {
      parallel_for(panels_, [&](Index p, int) { small_m_panel(p, x, M, ldx, y, ldy); });
      return;
    }
#if GLA_LINEAR_WITH_ONEDNN
    onednn_forward(x, M, ldx, y, ldy);
#else
    eigen_forward(x, M, ldx, y, ldy);
#endif
  }

  /// Whether oneDNN (when built with it) prefers this object's layout for an M×in·in×out matmul with these
  /// weights' precision: its matmul with weights format 'any' picks exactly BA16a64b (f32) / BA16a64b2a (bf16).
  /// Always false without oneDNN.
  bool onednn_layout_is_preferred(Index M = 256) const {
#if GLA_LINEAR_WITH_ONEDNN
    using tag = dnnl::memory::format_tag;
    const auto dt = wdt();
    const dnnl::memory::desc a({M, K_}, dt, tag::ab), any({K_, N_}, dt, tag::any),
        c({M, N_}, dnnl::memory::data_type::f32, tag::ab);
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, any, c), engine());
    return pd.weights_desc() == wdesc() && wdesc().get_size() == bytes();
#else
    (void)M;
    return false;
#endif
  }

  /// The oneDNN implementation that runs an M-row product (e.g. "brg:avx512_core_amx_bf16"), or "eigen".
  std::string large_m_backend(Index M = 256) const {
#if GLA_LINEAR_WITH_ONEDNN
    const dnnl::matmul::primitive_desc pd = make_pd(M, K_, N_);
    return pd.impl_info_str();
#else
    (void)M;
    return "eigen";
#endif
  }

 private:
  Index K_ = 0, N_ = 0, Kp_ = 0, panels_ = 0;
  /// oneDNN 2.6 pads K of BA16a64b2a to a multiple of 32 (checked by onednn_layout_is_preferred's size test).
  static Index padded_k(Index K, WeightPrecision p) {
    const Index b = p == WeightPrecision::F32 ? kKBlock : 2 * kKBlock;
    return (K + b - 1) / b * b;
  }
  WeightPrecision prec_ = WeightPrecision::F32;
  Workspace buf_;  // 64-byte aligned packed weights

  const std::byte* cbuf() const { return const_cast<Workspace&>(buf_).data(); }
  float* f32() { return reinterpret_cast<float*>(buf_.data()); }
  const float* f32() const { return reinterpret_cast<const float*>(cbuf()); }
  std::uint16_t* b16() { return reinterpret_cast<std::uint16_t*>(buf_.data()); }
  const std::uint16_t* b16() const { return reinterpret_cast<const std::uint16_t*>(cbuf()); }

  Index offset(Index k, Index n) const {
    const Index p = n / kPanel, j = n % kPanel, base = p * Kp_ * kPanel;
    return prec_ == WeightPrecision::F32 ? base + k * kPanel + j : base + (k / 2) * 2 * kPanel + j * 2 + (k % 2);
  }
  void put(Index k, Index n, float v) {
    if (prec_ == WeightPrecision::F32)
      f32()[offset(k, n)] = v;
    else
      b16()[offset(k, n)] = f32_to_bf16(v);
  }
  float at(Index k, Index n) const {
    return prec_ == WeightPrecision::F32 ? f32()[offset(k, n)] : bf16_to_f32(b16()[offset(k, n)]);
  }

  // ---- the one-pass small-M kernel: one panel (64 output columns), R rows of x at a time ----
  void small_m_panel(Index p, const float* x, Index M, Index ldx, float* y, Index ldy) const {
    const Index n0 = p * kPanel, nb = std::min<Index>(kPanel, N_ - n0);
    Index m = 0;
    for (; m + 4 <= M; m += 4) rows_panel<4>(p, x + m * ldx, ldx, y + m * ldy + n0, ldy, nb);
    switch (M - m) {
      case 3: rows_panel<3>(p, x + m * ldx, ldx, y + m * ldy + n0, ldy, nb); break;
      case 2: rows_panel<2>(p, x + m * ldx, ldx, y + m * ldy + n0, ldy, nb); break;
      case 1: rows_panel<1>(p, x + m * ldx, ldx, y + m * ldy + n0, ldy, nb); break;
      default: break;
    }
  }

  template <int R>
  void rows_panel(Index p, const float* x, Index ldx, float* y, Index ldy, Index nb) const {
#if GLA_LINEAR_AVX512
    __m512 acc[R][4];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_setzero_ps();
    if (prec_ == WeightPrecision::F32) {
      const float* W = f32() + p * Kp_ * kPanel;
      for (Index k = 0; k < K_; ++k) {
        const float* w = W + k * kPanel;
        const __m512 w0 = _mm512_load_ps(w), w1 = _mm512_load_ps(w + 16), w2 = _mm512_load_ps(w + 32),
                     w3 = _mm512_load_ps(w + 48);
        for (int r = 0; r < R; ++r) {
          const __m512 xb = _mm512_set1_ps(x[r * ldx + k]);
          acc[r][0] = _mm512_fmadd_ps(xb, w0, acc[r][0]);
          acc[r][1] = _mm512_fmadd_ps(xb, w1, acc[r][1]);
          acc[r][2] = _mm512_fmadd_ps(xb, w2, acc[r][2]);
          acc[r][3] = _mm512_fmadd_ps(xb, w3, acc[r][3]);
        }
      }
    } else {
      const std::uint16_t* W = b16() + p * Kp_ * kPanel;
      const __m512i hi = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
      for (Index k = 0; k < K_; k += 2) {
        const std::uint16_t* w = W + (k / 2) * 2 * kPanel;
        __m512 ev[4], od[4];
        for (int c = 0; c < 4; ++c) {
          const __m512i v = _mm512_load_si512(reinterpret_cast<const void*>(w + c * 32));
          ev[c] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
          od[c] = _mm512_castsi512_ps(_mm512_and_si512(v, hi));
        }
        const bool pair = k + 1 < K_;
        for (int r = 0; r < R; ++r) {
          const __m512 xa = _mm512_set1_ps(x[r * ldx + k]);
          for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_fmadd_ps(xa, ev[c], acc[r][c]);
          if (pair) {
            const __m512 xb = _mm512_set1_ps(x[r * ldx + k + 1]);
            for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_fmadd_ps(xb, od[c], acc[r][c]);
          }
        }
      }
    }
    for (int c = 0; c < 4; ++c) {
      const Index left = nb - c * 16;
      if (left <= 0) break;
      const __mmask16 mask = left >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << left) - 1u);
      for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(y + r * ldy + c * 16, mask, acc[r][c]);
    }
#else
    float acc[R][kPanel] = {};
    for (Index k = 0; k < K_; ++k) {
      float w[kPanel];
      for (Index j = 0; j < kPanel; ++j) w[j] = at(k, p * kPanel + j);
      for (int r = 0; r < R; ++r) {
        const float xv = x[r * ldx + k];
        for (Index j = 0; j < kPanel; ++j) acc[r][j] += xv * w[j];
      }
    }
    for (int r = 0; r < R; ++r)
      for (Index j = 0; j < nb; ++j) y[r * ldy + j] = acc[r][j];
#endif
  }

  // ---- large M without oneDNN: Eigen per panel on the engine ----
  void eigen_forward(const float* x, Index M, Index ldx, float* y, Index ldy) const {
    using RowMatF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Stride = Eigen::OuterStride<>;
    const Eigen::Map<const RowMatF, 0, Stride> X(x, M, K_, Stride(ldx));
    std::vector<std::vector<float>> scratch;
    if (prec_ == WeightPrecision::BF16) scratch = per_worker(panels_, std::vector<float>(static_cast<std::size_t>(K_ * kPanel)));
    parallel_for(panels_, [&](Index p, int worker) {
      const Index n0 = p * kPanel, nb = std::min<Index>(kPanel, N_ - n0);
      const float* Wp = nullptr;
      if (prec_ == WeightPrecision::F32) {
        Wp = f32() + p * Kp_ * kPanel;
      } else {
        float* s = scratch[static_cast<std::size_t>(worker)].data();
        const std::uint16_t* W = b16() + p * Kp_ * kPanel;
        for (Index k = 0; k < K_; ++k)
          for (Index j = 0; j < kPanel; ++j) s[k * kPanel + j] = bf16_to_f32(W[(k / 2) * 2 * kPanel + j * 2 + (k % 2)]);
        Wp = s;
      }
      const Eigen::Map<const RowMatF, 0, Stride> Wm(Wp, K_, nb, Stride(kPanel));
      Eigen::Map<RowMatF, 0, Stride> Y(y + n0, M, nb, Stride(ldy));
      Y.noalias() = X * Wm;
    });
  }

#if GLA_LINEAR_WITH_ONEDNN
  static const dnnl::engine& engine() {
    static const dnnl::engine e(dnnl::engine::kind::cpu, 0);
    return e;
  }
  dnnl::memory::data_type wdt() const {
    return prec_ == WeightPrecision::F32 ? dnnl::memory::data_type::f32 : dnnl::memory::data_type::bf16;
  }
  dnnl::memory::desc wdesc() const {
    using tag = dnnl::memory::format_tag;
    return dnnl::memory::desc({K_, N_}, wdt(), prec_ == WeightPrecision::F32 ? tag::BA16a64b : tag::BA16a64b2a);
  }
  dnnl::matmul::primitive_desc make_pd(Index M, Index ldx, Index ldy) const {
    const dnnl::memory::desc a({M, K_}, wdt(), dnnl::memory::dims{prec_ == WeightPrecision::F32 ? ldx : K_, 1});
    const dnnl::memory::desc c({M, N_}, dnnl::memory::data_type::f32, dnnl::memory::dims{ldy, 1});
    return dnnl::matmul::primitive_desc(dnnl::matmul::desc(a, wdesc(), c), engine());
  }

  struct PrimCache {
    struct Entry {
      Index M, ldx, ldy;
      int threads;        // OpenMP team size when created: oneDNN fixes its work split for it at creation
      dnnl::matmul prim;  // empty when oneDNN would not take this layout as its own (then Eigen runs)
    };
    std::mutex mutex;
    std::vector<Entry> prims;
    PrimCache() = default;
    PrimCache(const PrimCache&) {}
    PrimCache& operator=(const PrimCache&) {
      std::lock_guard<std::mutex> lock(mutex);
      prims.clear();
      return *this;
    }
  };
  mutable PrimCache cache_;
  static constexpr std::size_t kMaxPrims = 8;

  /// The primitive for this shape and the calling thread's OpenMP team size (set by the caller's OmpThreads):
  /// a primitive created for 1 thread runs on 1 thread's work split even when 2 are given (measured: the layer's
  /// 2-thread prefill took 170 ms instead of 99 after a 1-thread call had created its primitives).
  dnnl::matmul primitive(Index M, Index ldx, Index ldy) const {
#ifdef _OPENMP
    const int threads = omp_get_max_threads();
#else
    const int threads = 1;
#endif
    {
      std::lock_guard<std::mutex> lock(cache_.mutex);
      for (const auto& e : cache_.prims)
        if (e.M == M && e.ldx == ldx && e.ldy == ldy && e.threads == threads) return e.prim;
    }
    // Only when oneDNN's own choice for this shape is the packed layout (e.g. bf16 with an odd K is not, and
    // oneDNN 2.6 then computes wrong products from it): otherwise the Eigen path.
    dnnl::matmul prim;
    if (onednn_layout_is_preferred(M)) prim = dnnl::matmul(make_pd(M, ldx, ldy));
    std::lock_guard<std::mutex> lock(cache_.mutex);
    if (cache_.prims.size() >= kMaxPrims) cache_.prims.erase(cache_.prims.begin());
    cache_.prims.push_back({M, ldx, ldy, threads, prim});
    return prim;
  }

  void onednn_forward(const float* x, Index M, Index ldx, float* y, Index ldy) const {
    try {
      const bool bf16 = prec_ == WeightPrecision::BF16;
      // oneDNN's threads are OpenMP's: the engine's count from the caller's thread, one inside a work item.
      const OmpThreads threads(in_parallel_item() ? 1 : get_num_threads());
      const dnnl::matmul prim = primitive(M, ldx, ldy);
      if (!prim) {
        eigen_forward(x, M, ldx, y, ldy);
        return;
      }
      std::vector<std::uint16_t> xb;
      if (bf16) {  // oneDNN 2.6 multiplies bf16 weights with bf16 activations only
        xb.resize(static_cast<std::size_t>(M * K_));
        parallel_for((M + 63) / 64, [&](Index blk, int) {
          const Index r1 = std::min<Index>(M, (blk + 1) * 64);
          for (Index r = blk * 64; r < r1; ++r) to_bf16_row(x + r * ldx, xb.data() + r * K_, K_);
        });
      }
      const dnnl::engine& eng = engine();
      const dnnl::memory::desc a({M, K_}, wdt(), dnnl::memory::dims{bf16 ? K_ : ldx, 1});
      const dnnl::memory::desc c({M, N_}, dnnl::memory::data_type::f32, dnnl::memory::dims{ldy, 1});
      dnnl::memory am(a, eng, bf16 ? static_cast<void*>(xb.data()) : const_cast<float*>(x));
      dnnl::memory wm(wdesc(), eng, const_cast<std::byte*>(cbuf()));
      dnnl::memory cm(c, eng, y);
      dnnl::stream s(eng);
      prim.execute(s, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, wm}, {DNNL_ARG_DST, cm}});
      s.wait();
    } catch (const dnnl::error& e) {
      fail("PackedLinear::forward", std::string("oneDNN matmul failed: ") + e.what());
    }
  }

  /// OpenMP's thread count of the calling thread (oneDNN's team size) for a scope.
  struct OmpThreads {
#ifdef _OPENMP
    explicit OmpThreads(int n) : saved(omp_get_max_threads()) {
      if (n != saved) omp_set_num_threads(n);
    }
    ~OmpThreads() {
      if (omp_get_max_threads() != saved) omp_set_num_threads(saved);
    }
    int saved;
#else
    explicit OmpThreads(int) {}
#endif
    OmpThreads(const OmpThreads&) = delete;
    OmpThreads& operator=(const OmpThreads&) = delete;
  };

  static void to_bf16_row(const float* src, std::uint16_t* dst, Index n) {
    Index i = 0;
#if GLA_LINEAR_AVX512
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
    for (; i + 16 <= n; i += 16) {
      __m512i u = _mm512_loadu_si512(reinterpret_cast<const void*>(src + i));
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
      u = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(bias, lsb)), 16);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtepi32_epi16(u));
    }
#endif
    for (; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
  }
#endif
};

}  // namespace detail
}  // namespace gla
