#pragma once
/// gla/layers/gated_linear_attention.hpp: fla's GatedLinearAttention layer (fla/layers/gla.py): its config
/// (gla/layers/gla_config.hpp), its per-layer decoding cache, fla state_dict loading/export, fla-style random init,
/// and the forward over padded, masked or packed batches.

#include <gla/chunk.hpp>
#include <gla/core.hpp>
#include <gla/io/load_helpers.hpp>
#include <gla/detail/packed_linear.hpp>
#include <gla/detail/parallel.hpp>
#include <gla/fused_chunk.hpp>
#include <gla/fused_recurrent.hpp>
#include <gla/io/safetensors.hpp>
#include <gla/layers/gla_config.hpp>
#include <gla/modules/activations.hpp>
#include <gla/modules/norms.hpp>
#include <gla/modules/short_conv.hpp>
#include <gla/varlen.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace gla {

/// The decoding cache of one GatedLinearAttention layer (one entry of fla's per-layer cache). Every tensor is unset
/// until a forward with use_cache writes it; unset tensors mean "start from zeros", as fla's None.
///   recurrent_state [N,H,V,K] float  the GLA state after each sequence, fla's state_v_first layout (exchangeable
///                                    with fla's cache); H = num_heads (after the head repeat), K/V = head dims;
///   conv_state_q    [N,key_dim,W] T, conv_state_k [N,key_dim/G,W] T, conv_state_v [N,value_dim/G,W] T  the last W
///                                    raw conv inputs of each sequence, newest in slot W−1 (use_short_conv only);
///   seen_tokens                      fla's offset: padded tokens processed so far (the T of each cached call).
/// N is the batch size (or the number of cu_seqlens sequences) and must stay the same across calls.
namespace detail {
/// Scratch of GatedLinearAttention::step(): grown on the first step and reused, so later steps of the same batch
/// size allocate nothing. A copy starts empty (copies of a cache never share scratch).
struct LayerStepScratch {
  Workspace ws;
  LayerStepScratch() = default;
  LayerStepScratch(const LayerStepScratch&) {}
  LayerStepScratch& operator=(const LayerStepScratch&) { return *this; }
  LayerStepScratch(LayerStepScratch&&) noexcept = default;
  LayerStepScratch& operator=(LayerStepScratch&&) noexcept = default;
};
}  // namespace detail

template <class T>
struct GatedLinearAttentionCache {
  std::optional<Tensor<float, 4>> recurrent_state;
  std::optional<Tensor<T, 3>> conv_state_q, conv_state_k, conv_state_v;
  std::int64_t seen_tokens = 0;
  /// step()'s buffers (not part of the state: empty() and copies ignore it).
  detail::LayerStepScratch step_scratch;

  bool empty() const { return !recurrent_state && !conv_state_q && !conv_state_k && !conv_state_v; }
  void reset() {
    recurrent_state.reset();
    conv_state_q.reset();
    conv_state_k.reset();
    conv_state_v.reset();
    seen_tokens = 0;
  }
};

/// fla.layers.GatedLinearAttention for T = float or double (all math in T; the recurrent state in float as fla).
/// x [B,T,hidden] → y [B,T,hidden]:
///   unpad (by attention_mask, or cu_seqlens) → q,k,v = x·Wᵀ (→ short conv each, with cache) → gk =
///   logsigmoid(gk_proj(x))/normalizer (→ clamp_min) → repeat kv heads (query head i ← kv head i/G) → feature map
///   → GLA kernel (fused_recurrent when the padded T ≤ 64, else config.mode) → per-head RMSNorm with the output
///   gate → o_proj → repad with exact zeros.
/// The projections that read x (q, k, v, g and gk_proj's first factor) are one product over concatenated
/// weights. For T = float the linear weights are packed once at load into oneDNN's matmul layout, fp32 or bf16
/// (WeightPrecision; gla/detail/packed_linear.hpp: oneDNN for prefill when built with it, else Eigen; a
/// one-pass kernel for decoding); for T = double they are Eigen matrices [in,out]. Either way they are
/// exchanged in fla's [out,in] layout by load_state_dict()/state_dict(). See docs/layer.md, "Weight precision
/// and the projections".
/// A default-constructed layer has zero linear weights: call load_state_dict() or init_random().
/// Threads: the operators' parallel engine (gla::set_num_threads) for the layer's own loops and the kernels;
/// oneDNN's OpenMP team for prefill products, started from the caller's thread only. forward() and step() are
/// const and may run concurrently on different caches (forward's scratch is thread-local).
template <class T = float>
class GatedLinearAttention {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "GatedLinearAttention supports float and double");

 public:
  using Config = GatedLinearAttentionConfig;
  using Cache = GatedLinearAttentionCache<T>;
  using Mat = detail::RowMat<T>;

  /// precision: how the linear weights are held (WeightPrecision::BF16 for T = float only): see docs/layer.md,
  /// "Weight precision".
  explicit GatedLinearAttention(const Config& config, WeightPrecision precision = WeightPrecision::F32)
      : cfg_(validated(config)), prec_(checked_precision(precision)) {
    const Index hidden = cfg_.hidden_size, r = cfg_.gate_low_rank_dim;
    lay_ = in_layout(cfg_);
    if constexpr (kPacked) {
      w_in_ = detail::PackedLinear(hidden, lay_.n, prec_);
      w_out_ = detail::PackedLinear(cfg_.value_dim(), hidden, prec_);
    } else {
      w_in_ = Mat::Zero(hidden, lay_.n);
      w_out_ = Mat::Zero(cfg_.value_dim(), hidden);
    }
    wgk1_ = Mat::Zero(r, cfg_.key_dim_per_group());
    bgk1_ = detail::RowVec<T>::Zero(cfg_.key_dim_per_group());
    if (cfg_.use_short_conv) {
      conv_q_.emplace(cfg_.key_dim(), cfg_.conv_size, cfg_.conv_bias, Activation::SiLU);
      conv_k_.emplace(cfg_.key_dim_per_group(), cfg_.conv_size, cfg_.conv_bias, Activation::SiLU);
      conv_v_.emplace(cfg_.value_dim_per_group(), cfg_.conv_size, cfg_.conv_bias, Activation::SiLU);
    }
    if (cfg_.fused_norm_gate())
      fused_norm_.emplace(cfg_.head_v_dim(), cfg_.elementwise_affine, cfg_.norm_eps, Activation::SiLU);
    else
      norm_.emplace(cfg_.head_v_dim(), cfg_.elementwise_affine, false, cfg_.norm_eps);
    if (cfg_.use_output_gate && !cfg_.fused_norm_gate()) gate_act_ = parse_activation(cfg_.gate_fn);
    if (cfg_.feature_map) feature_map_ = parse_activation(*cfg_.feature_map);
  }

  const Config& config() const { return cfg_; }
  /// How the linear weights are held.
  WeightPrecision weight_precision() const { return prec_; }
  /// Bytes of the linear weights as held (the fused input projection, o_proj and gk_proj's second factor).
  std::size_t linear_weight_bytes() const {
    std::size_t b = static_cast<std::size_t>(wgk1_.size()) * sizeof(T);
    if constexpr (kPacked)
      b += w_in_.bytes() + w_out_.bytes();
    else
      b += static_cast<std::size_t>(w_in_.size() + w_out_.size()) * sizeof(T);
    return b;
  }
  /// The backend of the large-M (prefill) projections: oneDNN's implementation name (e.g.
  /// "brg:avx512_core_amx_bf16"), or "eigen".
  std::string projection_backend() const {
    if constexpr (kPacked)
      return w_in_.large_m_backend();
    else
      return "eigen";
  }

  /// fla's parameter names and shapes ([out,in] for linears, [D,1,W] for convs) for this config, sorted by name.
  std::map<std::string, std::vector<Index>> parameter_shapes() const {
    const Index hidden = cfg_.hidden_size, r = cfg_.gate_low_rank_dim, W = cfg_.conv_size;
    std::map<std::string, std::vector<Index>> s;
    s["q_proj.weight"] = {cfg_.key_dim(), hidden};
    s["k_proj.weight"] = {cfg_.key_dim_per_group(), hidden};
    s["v_proj.weight"] = {cfg_.value_dim_per_group(), hidden};
    if (cfg_.use_output_gate) s["g_proj.weight"] = {cfg_.value_dim(), hidden};
    s["gk_proj.0.weight"] = {r, hidden};
    s["gk_proj.1.weight"] = {cfg_.key_dim_per_group(), r};
    s["gk_proj.1.bias"] = {cfg_.key_dim_per_group()};
    s["o_proj.weight"] = {hidden, cfg_.value_dim()};
    if (cfg_.use_short_conv) {
      const std::pair<const char*, Index> convs[] = {{"q_conv1d", cfg_.key_dim()},
                                                     {"k_conv1d", cfg_.key_dim_per_group()},
                                                     {"v_conv1d", cfg_.value_dim_per_group()}};
      for (const auto& [name, D] : convs) {
        s[std::string(name) + ".weight"] = {D, 1, W};
        if (cfg_.conv_bias) s[std::string(name) + ".bias"] = {D};
      }
    }
    if (cfg_.elementwise_affine)
      s[cfg_.fused_norm_gate() ? "g_norm_swish_gate.weight" : "g_norm.weight"] = {cfg_.head_v_dim()};
    return s;
  }

  /// Loads fla's tensors named prefix + <fla name> (e.g. prefix "model.layers.0.attn."). Strict, as PyTorch's
  /// default: every parameter of this config must be present with fla's shape, and no other tensor may start with
  /// prefix; otherwise gla::Error lists every missing, unexpected and mis-shaped name. Stored F32/F16/BF16/F64 are
  /// converted to T; I64 is rejected. On error the layer is unchanged.
  void load_state_dict(const io::StateDict& dict, const std::string& prefix = "") {
    const std::string fn = "GatedLinearAttention::load_state_dict";
    const auto expected = parameter_shapes();
    std::vector<std::string> missing, unexpected, bad;
    for (const auto& [name, shape] : expected) {
      const std::string full = prefix + name;
      if (!dict.contains(full)) {
        missing.push_back(full);
        continue;
      }
      if (dict.shape(full) != shape)
        bad.push_back(full + " is " + detail::shape_str(dict.shape(full)) + ", expected " + detail::shape_str(shape));
      else if (dict.dtype(full) == io::DType::I64)
        bad.push_back(full + " is I64, expected a floating dtype (F32, F16, BF16, F64)");
    }
    for (const std::string& full : dict.names())
      if (full.compare(0, prefix.size(), prefix) == 0 && !expected.count(full.substr(prefix.size())))
        unexpected.push_back(full);
    detail::fail_unless_tensors_fit(fn, "the state dict does not fit this config (prefix '" + prefix + "')", missing, unexpected, bad);
    // Everything is checked: build a copy and swap it in, so a conversion failure cannot leave half a layer.
    GatedLinearAttention next(*this);
    auto linear = [&](const char* name, auto& dst, Index n0) {
      const Tensor<T, 2> w = dict.get<T, 2>(prefix + name);
      set_rows(dst, n0, w.dimension(0), w.data());
    };
    linear("q_proj.weight", next.w_in_, lay_.q);
    linear("k_proj.weight", next.w_in_, lay_.k);
    linear("v_proj.weight", next.w_in_, lay_.v);
    if (cfg_.use_output_gate) linear("g_proj.weight", next.w_in_, lay_.g);
    linear("gk_proj.0.weight", next.w_in_, lay_.low);
    linear("o_proj.weight", next.w_out_, 0);
    {
      const Tensor<T, 2> w = dict.get<T, 2>(prefix + "gk_proj.1.weight");
      next.wgk1_ = Eigen::Map<const Mat>(w.data(), w.dimension(0), w.dimension(1)).transpose();
      if (prec_ == WeightPrecision::BF16)  // held as bf16 values (it is tiny, so in T)
        for (Index i = 0; i < next.wgk1_.size(); ++i)
          next.wgk1_.data()[i] = static_cast<T>(detail::round_to_bf16(static_cast<float>(next.wgk1_.data()[i])));
    }
    const Tensor<T, 1> b = dict.get<T, 1>(prefix + "gk_proj.1.bias");
    next.bgk1_ = Eigen::Map<const detail::RowVec<T>>(b.data(), b.size());
    if (cfg_.use_short_conv) {
      auto conv = [&](const char* name, ShortConvolution<T>& c) {
        c.weight = dict.get<T, 3>(prefix + name + ".weight");
        if (cfg_.conv_bias) c.bias = dict.get<T, 1>(prefix + name + ".bias");
      };
      conv("q_conv1d", *next.conv_q_);
      conv("k_conv1d", *next.conv_k_);
      conv("v_conv1d", *next.conv_v_);
    }
    if (cfg_.elementwise_affine) {
      if (next.fused_norm_)
        next.fused_norm_->weight = dict.get<T, 1>(prefix + "g_norm_swish_gate.weight");
      else
        next.norm_->weight = dict.get<T, 1>(prefix + "g_norm.weight");
    }
    *this = std::move(next);
  }

  /// The parameters under fla's names (prefix + name), in T's dtype and fla's [out,in] / [D,1,W] layouts.
  io::StateDict state_dict(const std::string& prefix = "") const {
    io::StateDict d;
    const auto shapes = parameter_shapes();
    auto linear = [&](const char* name, const auto& src, Index n0) {
      const std::vector<Index>& sh = shapes.at(name);
      Tensor<T, 2> w(sh[0], sh[1]);
      get_rows(src, n0, sh[0], w.data());
      d.set(prefix + name, w);
    };
    linear("q_proj.weight", w_in_, lay_.q);
    linear("k_proj.weight", w_in_, lay_.k);
    linear("v_proj.weight", w_in_, lay_.v);
    if (cfg_.use_output_gate) linear("g_proj.weight", w_in_, lay_.g);
    linear("gk_proj.0.weight", w_in_, lay_.low);
    linear("o_proj.weight", w_out_, 0);
    {
      Tensor<T, 2> w(wgk1_.cols(), wgk1_.rows());
      Eigen::Map<Mat>(w.data(), wgk1_.cols(), wgk1_.rows()) = wgk1_.transpose();
      d.set(prefix + "gk_proj.1.weight", w);
    }
    Tensor<T, 1> b(bgk1_.size());
    std::copy_n(bgk1_.data(), bgk1_.size(), b.data());
    d.set(prefix + "gk_proj.1.bias", b);
    if (cfg_.use_short_conv) {
      auto conv = [&](const char* name, const ShortConvolution<T>& c) {
        d.set(prefix + name + ".weight", c.weight);
        if (c.bias) d.set(prefix + name + ".bias", *c.bias);
      };
      conv("q_conv1d", *conv_q_);
      conv("k_conv1d", *conv_k_);
      conv("v_conv1d", *conv_v_);
    }
    if (fused_norm_ && fused_norm_->weight) d.set(prefix + "g_norm_swish_gate.weight", *fused_norm_->weight);
    if (norm_ && norm_->weight) d.set(prefix + "g_norm.weight", *norm_->weight);
    return d;
  }

  /// fla's GLAPreTrainedModel._init_weights: every linear and conv weight ~ N(0, std), biases 0, norm weights 1.
  /// Deterministic for a seed: tensors are drawn in state_dict name order from one std::mt19937_64(seed).
  void init_random(std::uint64_t seed, double std = 0.02) {
    std::mt19937_64 gen(seed);
    std::normal_distribution<double> normal(0.0, std);
    io::StateDict d;
    for (const auto& [name, shape] : parameter_shapes()) {
      const bool is_bias = name.size() >= 5 && name.compare(name.size() - 5, 5, ".bias") == 0;
      const bool is_norm = name.rfind("g_norm", 0) == 0;
      Index n = 1;
      for (Index s : shape) n *= s;
      std::vector<T> vals(static_cast<std::size_t>(n));
      for (T& v : vals) v = is_norm ? T(1) : is_bias ? T(0) : static_cast<T>(normal(gen));
      std::vector<std::uint8_t> bytes(vals.size() * sizeof(T));
      std::memcpy(bytes.data(), vals.data(), bytes.size());
      d.set_raw(name, std::is_same_v<T, float> ? io::DType::F32 : io::DType::F64, shape, std::move(bytes));
    }
    load_state_dict(d);
  }

  /// fla's forward(hidden_states, attention_mask, past_key_values, use_cache, cu_seqlens=...):
  ///   x              [B,T,hidden] T      input;
  ///   attention_mask [B,S] int64         optional, S >= T, 1 = token, 0 = padding; only the last T columns are
  ///                                      used (so in decode only the newest column matters);
  ///   cache                              optional: its tensors are the initial states (unset = zeros) and, with
  ///                                      use_cache, are replaced by the final ones and seen_tokens += T;
  ///   cu_seqlens     [N+1]               optional packed batch (B = 1); wins over attention_mask, as fla.
  /// Returns y [B,T,hidden] T, exactly 0 at padded positions. Padding tokens never enter the conv or the
  /// recurrence; a row whose newest mask entry is 0 during decode is a zero-length sequence whose state passes
  /// through. Unlike fla, use_cache without a cache is an error, and a cache with use_cache = false is only read
  /// (fla would overwrite its conv state with None; see docs/layer.md). Throws gla::Error before touching the cache.
  Tensor<T, 3> forward(ConstView<T, 3> x, std::optional<ConstView<std::int64_t, 2>> attention_mask = std::nullopt,
                       Cache* cache = nullptr, bool use_cache = false,
                       const std::vector<std::int64_t>& cu_seqlens = {}) const {
    const std::string fn = "GatedLinearAttention::forward";
    const Index hidden = cfg_.hidden_size;
    const auto& xd = x.dimensions();
    if (xd[0] <= 0 || xd[1] < 0 || xd[2] != hidden)
      detail::fail(fn, "x is " + detail::shape_str(xd) + ", expected [B,T,hidden_size=" + std::to_string(hidden) +
                           "] with B > 0");
    const Index B = xd[0], Tq = xd[1];
    if (use_cache && !cache) detail::fail(fn, "use_cache is true but no cache was given");

    // 1. Unpad once for the whole layer: the token rows that enter the layer and the batch form of the kernels.
    std::vector<std::int64_t> cu, indices;
    bool packed = false;
    if (!cu_seqlens.empty()) {
      if (B != 1) detail::fail(fn, "the batch size is " + std::to_string(B) + ", expected 1 when cu_seqlens is given");
      detail::check_cu_seqlens(fn, cu_seqlens, Tq);
      cu = cu_seqlens;
    } else if (attention_mask) {
      UnpadData u = detail::unpad_mask_tail(fn, *attention_mask, B, Tq);
      cu = std::move(u.cu_seqlens);
      indices = std::move(u.indices);
      packed = true;
    }
    const Index N = cu.empty() ? B : static_cast<Index>(cu.size()) - 1;
    const Index Bk = cu.empty() ? B : 1;
    const Index ntok = packed ? static_cast<Index>(indices.size()) : B * Tq;
    const Index Tk = cu.empty() ? Tq : ntok;
    if (cache) check_cache(fn, *cache, N);

    Mat X;  // the gathered token rows when padded; otherwise x itself is read
    const T* xrows = x.data();
    if (packed) {
      X.resize(ntok, hidden);
      for (Index i = 0; i < ntok; ++i)
        std::copy_n(x.data() + indices[static_cast<std::size_t>(i)] * hidden, hidden, X.data() + i * hidden);
      xrows = X.data();
    }

    // 2. Projections and short convolutions (before the head repeat, so conv widths are per kv group).
    const Index H = cfg_.num_heads, G = cfg_.num_kv_groups(), Kh = cfg_.head_k_dim(), Vh = cfg_.head_v_dim();
    // One product over the concatenated weights: Z = [q | k | v | g | low].
    // Z and the kernels' scratch live in this thread's reusable workspaces (grown to the largest call, kept):
    // no page faults for them on repeated calls.
    // So do q, k, v, gk, g and o.
    thread_local Workspace z_ws, kernel_ws;
    const Index nK = cfg_.key_dim(), nKg = cfg_.key_dim_per_group(), nVg = cfg_.value_dim_per_group(),
                nV = cfg_.value_dim();
    auto plan = [&](detail::Arena& a) {
      struct Bufs {
        T *Z, *q, *k, *v, *gk, *g, *o;
      } p{a.take<T>(ntok * lay_.n), a.take<T>(ntok * nK),  a.take<T>(ntok * nKg), a.take<T>(ntok * nVg),
          a.take<T>(ntok * nKg),    a.take<T>(ntok * nV), a.take<T>(ntok * nV)};
      return p;
    };
    z_ws.reserve(std::max<std::size_t>(detail::planned_bytes(plan), 1));
    detail::Arena arena(z_ws.data(), z_ws.capacity());
    const auto buf = plan(arena);
    Eigen::Map<Mat> Z(buf.Z, ntok, lay_.n);
    project(w_in_, xrows, ntok, Z.data());
    // Split Z into contiguous q, k, v, g and compute gk = logsigmoid(low·Wgk1 + b)/normalizer (→ clamp), in
    // blocks of rows on the parallel engine.
    Eigen::Map<Mat> q(buf.q, ntok, nK), k(buf.k, ntok, nKg), v(buf.v, ntok, nVg), gk(buf.gk, ntok, nKg),
        g(buf.g, ntok, cfg_.use_output_gate ? nV : 0);
    {
      constexpr Index kRows = 64;
      const T inv_norm = static_cast<T>(cfg_.gate_logit_normalizer);
      const bool clamp = cfg_.clamp_min.has_value();
      const T lo = clamp ? static_cast<T>(*cfg_.clamp_min) : T(0);
      detail::parallel_for((ntok + kRows - 1) / kRows, [&](Index blk, int) {
        const Index r0 = blk * kRows, nr = std::min(kRows, ntok - r0);
        q.middleRows(r0, nr) = Z.block(r0, lay_.q, nr, q.cols());
        k.middleRows(r0, nr) = Z.block(r0, lay_.k, nr, k.cols());
        v.middleRows(r0, nr) = Z.block(r0, lay_.v, nr, v.cols());
        if (cfg_.use_output_gate) g.middleRows(r0, nr) = Z.block(r0, lay_.g, nr, g.cols());
        auto gb = gk.middleRows(r0, nr);
        gb.noalias() = Z.block(r0, lay_.low, nr, cfg_.gate_low_rank_dim) * wgk1_;
        gb.rowwise() += bgk1_;
        // logsigmoid(z) = min(0, z) − log1p(exp(−|z|)), on Eigen's vectorized exp and log1p.
        Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> a(gk.data() + r0 * gk.cols(), nr * gk.cols());
        a = (a.min(T(0)) - (-a.abs()).exp().log1p()) / inv_norm;
        if (clamp) a = a.max(lo);
      });
    }
    std::optional<Tensor<T, 3>> fin_q, fin_k, fin_v;
    if (cfg_.use_short_conv) {
      conv(*conv_q_, q, Bk, Tk, cu, cache ? &cache->conv_state_q : nullptr, use_cache, fin_q);
      conv(*conv_k_, k, Bk, Tk, cu, cache ? &cache->conv_state_k : nullptr, use_cache, fin_k);
      conv(*conv_v_, v, Bk, Tk, cu, cache ? &cache->conv_state_v : nullptr, use_cache, fin_v);
    }
    // The feature map is elementwise, so applying it to k before the repeat equals fla's order.
    if (feature_map_) {
      detail::activate_ptr(*feature_map_, q.data(), q.data(), q.size());
      detail::activate_ptr(*feature_map_, k.data(), k.data(), k.size());
    }
    const T *kp = k.data(), *gkp = gk.data(), *vp = v.data();
    Mat k_rep, gk_rep, v_rep;
    if (G > 1) {
      k_rep = repeat_heads(k, G, Kh);
      gk_rep = repeat_heads(gk, G, Kh);
      v_rep = repeat_heads(v, G, Vh);
      kp = k_rep.data();
      gkp = gk_rep.data();
      vp = v_rep.data();
    }

    // 3. The GLA kernel on [Bk,Tk,H,D] views of the token rows; the cache state is [N,H,V,K] (state_v_first).
    Eigen::Map<Mat> o(buf.o, ntok, nV);
    std::optional<Tensor<float, 4>> fin_state;
    if (ntok > 0) {
      GLAOptions opts;
      opts.workspace = &kernel_ws;
      opts.state_v_first = true;
      opts.output_final_state = use_cache;
      opts.cu_seqlens = cu;
      if (cache && cache->recurrent_state) opts.initial_state = *cache->recurrent_state;
      const ConstView<T, 4> qm(q.data(), Bk, Tk, H, Kh), km(kp, Bk, Tk, H, Kh), gm(gkp, Bk, Tk, H, Kh),
          vm(vp, Bk, Tk, H, Vh);
      const View<T, 4> om(o.data(), Bk, Tk, H, Vh);
      if (use_cache) fin_state.emplace(N, H, Vh, Kh);
      const std::optional<View<float, 4>> fs = detail::optional_output(fin_state);
      switch (kernel_mode(Tq)) {
        case Kernel::FusedRecurrent:
          fused_recurrent_gla_into(qm, km, vm, gm, std::nullopt, opts, om, fs);
          break;
        case Kernel::Chunk:
          chunk_gla_into(qm, km, vm, gm, opts, om, fs);
          break;
        case Kernel::FusedChunk:
          fused_chunk_gla_into(qm, km, vm, gm, opts, om, fs);
          break;
      }
    } else if (use_cache) {
      // No token at all (every row padded): every state passes through unchanged.
      fin_state.emplace(N, H, Vh, Kh);
      if (cache->recurrent_state)
        *fin_state = *cache->recurrent_state;
      else
        fin_state->setZero();
    }

    // 4. Per-head norm with the output gate, then o_proj.
    {
      const ConstView<T, 2> o_rows(o.data(), ntok * H, Vh);
      const View<T, 2> o_out(o.data(), ntok * H, Vh);
      if (fused_norm_) {
        // Per-head rows in blocks on the engine (the norm itself is serial).
        detail::parallel_for((ntok + 63) / 64, [&](Index blk, int) {
          const Index r0 = blk * 64 * H, nr = std::min<Index>(64, ntok - blk * 64) * H;
          fused_norm_->forward_into(ConstView<T, 2>(o.data() + r0 * Vh, nr, Vh),
                                    ConstView<T, 2>(g.data() + r0 * Vh, nr, Vh), View<T, 2>(o.data() + r0 * Vh, nr, Vh));
        });
      } else {
        norm_->forward_into(o_rows, o_out);
        if (cfg_.use_output_gate) {
          detail::activate_ptr(*gate_act_, g.data(), g.data(), g.size());
          o.array() *= g.array();
        }
      }
    }
    // 5. o_proj, repadded with exact zeros (unpadded: straight into the output); then commit the cache
    // (nothing above touched it).
    Tensor<T, 3> out(B, Tq, hidden);
    if (packed) {
      Mat y(ntok, hidden);
      project(w_out_, o.data(), ntok, y.data());
      out.setZero();
      for (Index i = 0; i < ntok; ++i)
        std::copy_n(y.data() + i * hidden, hidden, out.data() + indices[static_cast<std::size_t>(i)] * hidden);
    } else {
      project(w_out_, o.data(), ntok, out.data());
    }
    if (use_cache) {
      cache->recurrent_state = std::move(fin_state);
      if (cfg_.use_short_conv) {
        cache->conv_state_q = std::move(fin_q);
        cache->conv_state_k = std::move(fin_k);
        cache->conv_state_v = std::move(fin_v);
      }
      cache->seen_tokens += Tq;
    }
    return out;
  }

  /// One decode step: x [B,hidden] T (one new token per row) → y [B,hidden] T, advancing the cache. The optional
  /// attention_mask [B,S] int64 is read only in its last column (0 = that row has no token this step: its output
  /// is 0 and its state passes through). Same results as forward() with T = 1 and use_cache (up to rounding);
  /// see step_into() for the allocation-free form.
  Tensor<T, 2> step(ConstView<T, 2> x, Cache& cache,
                    std::optional<ConstView<std::int64_t, 2>> attention_mask = std::nullopt) const {
    const auto& xd = x.dimensions();
    if (xd[0] <= 0 || xd[1] != cfg_.hidden_size) fail_step_x(xd);
    Tensor<T, 2> out(xd[0], xd[1]);
    step_into(x, cache, View<T, 2>(out), attention_mask);
    return out;
  }

  /// step() into a caller-owned y [B,hidden] T (y must not overlap x). The recurrent and conv states are updated
  /// in place in the cache (allocated, as zeros, only when unset), and the step's buffers live in the cache
  /// (cache.step_scratch): once a cache has made one step at batch size B ≤ 64, further steps at that size
  /// allocate nothing (T = float; tests/test_layer_bf16.cpp counts). The projections are one pass over the weights
  /// (gla/detail/packed_linear.hpp, small-M kernel), the recurrence and the per-head norm are work items on the
  /// parallel engine. Throws gla::Error before touching the cache.
  void step_into(ConstView<T, 2> x, Cache& cache, View<T, 2> y,
                 std::optional<ConstView<std::int64_t, 2>> attention_mask = std::nullopt) const {
    const Index hidden = cfg_.hidden_size;
    const auto& xd = x.dimensions();
    if (xd[0] <= 0 || xd[1] != hidden) fail_step_x(xd);
    const Index B = xd[0];
    if (y.dimension(0) != B || y.dimension(1) != hidden)
      detail::fail("GatedLinearAttention::step_into", "y is " + detail::shape_str(y.dimensions()) + ", expected [B=" +
                                                          std::to_string(B) + ",hidden_size=" +
                                                          std::to_string(hidden) + "]");
    if (y.data() < x.data() + B * hidden && x.data() < y.data() + B * hidden)
      detail::fail("GatedLinearAttention::step_into", "y overlaps x, expected separate buffers");
    const std::int64_t* mcol = nullptr;  // the mask's last column, stride S
    Index mstride = 0;
    if (attention_mask) {
      const auto& md = attention_mask->dimensions();
      bool ok = md[0] == B && md[1] >= 1;
      for (Index b = 0; ok && b < B; ++b) {
        const std::int64_t m = (*attention_mask)(b, md[1] - 1);
        ok = m == 0 || m == 1;
      }
      if (!ok) detail::unpad_mask_tail("GatedLinearAttention::step", *attention_mask, B, 1);  // throws the message
      mcol = attention_mask->data() + (md[1] - 1);
      mstride = md[1];
    }
    if (!cache_fits(cache, B)) check_cache("GatedLinearAttention::step", cache, B);  // throws the message

    const Index H = cfg_.num_heads, G = cfg_.num_kv_groups(), Kh = cfg_.head_k_dim(), Vh = cfg_.head_v_dim();
    const Index Kd = cfg_.key_dim(), Kg = cfg_.key_dim_per_group(), Vg = cfg_.value_dim_per_group(),
                Vd = cfg_.value_dim(), r = cfg_.gate_low_rank_dim, W = cfg_.conv_size;
    // Buffers: Z [B,n] (the fused projection), q [B,K], k [B,Kg], v [B,Vg], exp(gk) [B,Kg], o [B,V].
    auto plan = [&](detail::Arena& a) {
      struct Bufs {
        T *Z, *q, *k, *v, *gk, *o;
      } p{a.take<T>(B * lay_.n), a.take<T>(B * Kd), a.take<T>(B * Kg), a.take<T>(B * Vg), a.take<T>(B * Kg),
          a.take<T>(B * Vd)};
      return p;
    };
    Workspace& ws = cache.step_scratch.ws;
    ws.reserve(detail::planned_bytes(plan));
    detail::Arena arena(ws.data(), ws.capacity());
    const auto buf = plan(arena);
    if (!cache.recurrent_state) {
      cache.recurrent_state.emplace(B, H, Vh, Kh);
      cache.recurrent_state->setZero();
    }
    if (cfg_.use_short_conv) {
      auto ensure = [&](std::optional<Tensor<T, 3>>& st, Index D) {
        if (!st) {
          st.emplace(B, D, W);
          st->setZero();
        }
      };
      ensure(cache.conv_state_q, Kd);
      ensure(cache.conv_state_k, Kg);
      ensure(cache.conv_state_v, Vg);
    }
    auto active = [&](Index b) { return !mcol || mcol[b * mstride] != 0; };

    // 1. The fused projection, one pass over the weights.
    project(w_in_, x.data(), B, buf.Z);
    // 2. Short convolutions over the cached raw inputs (in place), or the plain columns.
    auto conv_or_copy = [&](const std::optional<ShortConvolution<T>>& c, std::optional<Tensor<T, 3>>& st, Index col,
                            Index D, T* dst) {
      for (Index b = 0; b < B; ++b) {
        const T* src = buf.Z + b * lay_.n + col;
        T* out = dst + b * D;
        if (!cfg_.use_short_conv) {
          std::copy_n(src, D, out);
          continue;
        }
        if (!active(b)) continue;
        const T* wt = c->weight.data();
        const T* bias = c->bias ? c->bias->data() : nullptr;
        T* s = st->data() + b * D * W;
        for (Index d = 0; d < D; ++d) {
          T* sd = s + d * W;
          for (Index w = 0; w + 1 < W; ++w) sd[w] = sd[w + 1];
          sd[W - 1] = src[d];
          T acc = bias ? bias[d] : T(0);
          for (Index w = 0; w < W; ++w) acc += wt[d * W + w] * sd[w];
          out[d] = silu(acc);
        }
      }
    };
    conv_or_copy(conv_q_, cache.conv_state_q, lay_.q, Kd, buf.q);
    conv_or_copy(conv_k_, cache.conv_state_k, lay_.k, Kg, buf.k);
    conv_or_copy(conv_v_, cache.conv_state_v, lay_.v, Vg, buf.v);
    // 3. gk = logsigmoid(low·Wgk1 + b) / normalizer (→ clamp), feature map on q and k.
    {
      const T inv_norm = static_cast<T>(cfg_.gate_logit_normalizer);
      const bool clamp = cfg_.clamp_min.has_value();
      const T lo = clamp ? static_cast<T>(*cfg_.clamp_min) : T(0);
      for (Index b = 0; b < B; ++b) {
        Eigen::Map<Eigen::Array<T, 1, Eigen::Dynamic>> g(buf.gk + b * Kg, Kg);
        g = bgk1_.array();
        const T* low = buf.Z + b * lay_.n + lay_.low;
        for (Index j = 0; j < r; ++j) g += low[j] * wgk1_.row(j).array();
        // logsigmoid on Eigen's vectorized exp and log1p, as forward(); the recurrence needs only exp(gk).
        g = (g.min(T(0)) - (-g.abs()).exp().log1p()) / inv_norm;
        if (clamp) g = g.max(lo);
        g = g.exp();
      }
    }
    if (feature_map_) {  // elementwise, so before the head repeat as in forward()
      detail::activate_ptr(*feature_map_, buf.q, buf.q, B * Kd);
      detail::activate_ptr(*feature_map_, buf.k, buf.k, B * Kg);
    }
    // 4. The recurrence, one (row, head) per work item, the state updated in place ([N,H,V,K], V-first):
    //    S ← S·diag(exp gk) + v kᵀ, o = S·(q·scale); fused_norm / norm + gate on the head's row of o.
    const T scale = static_cast<T>(1.0 / std::sqrt(static_cast<double>(Kh)));
    float* state = cache.recurrent_state->data();
    const T eps = static_cast<T>(cfg_.norm_eps);
    const T* nw = fused_norm_ ? (fused_norm_->weight ? fused_norm_->weight->data() : nullptr)
                              : (norm_->weight ? norm_->weight->data() : nullptr);
    detail::parallel_for(B * H, [&](Index item, int) {
      const Index b = item / H, h = item % H, hk = h / G;
      T* o = buf.o + b * Vd + h * Vh;
      if (!active(b)) {
        std::fill_n(o, Vh, T(0));
        return;
      }
      const T* q = buf.q + b * Kd + h * Kh;
      const T* k = buf.k + b * Kg + hk * Kh;
      const T* eg = buf.gk + b * Kg + hk * Kh;  // exp(gk)
      const T* v = buf.v + b * Vg + hk * Vh;
      float* S = state + (b * H + h) * Vh * Kh;
      using Arr = Eigen::Array<T, Eigen::Dynamic, 1>;
      using Row = Eigen::Map<Eigen::Array<float, Eigen::Dynamic, 1>>;
      const Eigen::Map<const Arr> egm(eg, Kh), km(k, Kh), qm(q, Kh);
      for (Index i = 0; i < Vh; ++i) {
        Row Si(S + i * Kh, Kh);  // vectorized: the update, then the dot product with q (packet partial sums)
        Si = (Si.template cast<T>() * egm + km * v[i]).template cast<float>();
        o[i] = (Si.template cast<T>() * qm).sum() * scale;
      }
      // Per-head RMS norm (fla: rstd = 1/sqrt(sum(x²)/D + eps)), weight, then the output gate.
      T ss = 0;
      for (Index i = 0; i < Vh; ++i) ss += o[i] * o[i];
      const T rstd = T(1) / std::sqrt(ss / static_cast<T>(Vh) + eps);
      const T* gate = cfg_.use_output_gate ? buf.Z + b * lay_.n + lay_.g + h * Vh : nullptr;
      for (Index i = 0; i < Vh; ++i) {
        T z = o[i] * rstd;
        if (nw) z *= nw[i];
        if (gate) z *= fused_norm_ ? silu(gate[i]) : apply_activation(*gate_act_, gate[i]);
        o[i] = z;
      }
    });
    // 5. o_proj, then exact zeros for rows without a token.
    project(w_out_, buf.o, B, y.data());
    for (Index b = 0; b < B; ++b)
      if (!active(b)) std::fill_n(y.data() + b * hidden, hidden, T(0));
    cache.seen_tokens += 1;
  }

  /// The kernel a forward of padded length T runs: fused_recurrent when T ≤ 64 (fla's rule), else config.mode.
  enum class Kernel { Chunk, FusedChunk, FusedRecurrent };
  Kernel kernel_mode(Index padded_len) const {
    if (padded_len <= 64 || cfg_.mode == "fused_recurrent") return Kernel::FusedRecurrent;
    return cfg_.mode == "chunk" ? Kernel::Chunk : Kernel::FusedChunk;
  }

 private:
  /// float layers hold their big linear weights packed (gla/detail/packed_linear.hpp: oneDNN's layout, fp32 or
  /// bf16); double layers keep Eigen matrices [in,out].
  static constexpr bool kPacked = std::is_same_v<T, float>;
  using Linear = std::conditional_t<kPacked, detail::PackedLinear, Mat>;

  /// Columns of the fused input projection Z = x·[Wq | Wk | Wv | Wg | Wgk0]ᵀ.
  struct InLayout {
    Index q = 0, k = 0, v = 0, g = 0, low = 0, n = 0;
  };
  static InLayout in_layout(const Config& c) {
    InLayout l;
    l.q = 0;
    l.k = l.q + c.key_dim();
    l.v = l.k + c.key_dim_per_group();
    l.g = l.v + c.value_dim_per_group();
    l.low = l.g + (c.use_output_gate ? c.value_dim() : 0);
    l.n = l.low + c.gate_low_rank_dim;
    return l;
  }

  Config cfg_;
  WeightPrecision prec_ = WeightPrecision::F32;
  InLayout lay_;
  // w_in_: the fused input projection (hidden → lay_.n), w_out_: o_proj (value_dim → hidden); gk_proj's second
  // factor [r, Kg] (in,out) and its bias stay Eigen (tiny).
  Linear w_in_, w_out_;
  Mat wgk1_;
  detail::RowVec<T> bgk1_;
  std::optional<ShortConvolution<T>> conv_q_, conv_k_, conv_v_;
  std::optional<FusedRMSNormGated<T>> fused_norm_;
  std::optional<RMSNorm<T>> norm_;
  std::optional<Activation> gate_act_, feature_map_;

  static const Config& validated(const Config& c) {
    c.validate();
    return c;
  }

  static WeightPrecision checked_precision(WeightPrecision p) {
    if (p != WeightPrecision::F32 && p != WeightPrecision::BF16)
      detail::fail("GatedLinearAttention", "precision is " + std::to_string(static_cast<int>(p)) +
                                               ", expected WeightPrecision::F32 or WeightPrecision::BF16");
    if (p == WeightPrecision::BF16 && !kPacked)
      detail::fail("GatedLinearAttention", "precision is bf16, expected f32 for T = double (bf16 weights need T = float)");
    return p;
  }

  /// Rows [n0, n0+rows) of an [out,in] weight (fla's layout) from w (row stride = in).
  static void set_rows(Linear& dst, Index n0, Index rows, const T* w) {
    if constexpr (kPacked) {
      dst.set_rows(n0, rows, w, dst.in());
    } else {
      dst.middleCols(n0, rows) = Eigen::Map<const Mat>(w, rows, dst.rows()).transpose();
    }
  }
  static void get_rows(const Linear& src, Index n0, Index rows, T* w) {
    if constexpr (kPacked) {
      src.get_rows(n0, rows, w, src.in());
    } else {
      Eigen::Map<Mat>(w, rows, src.rows()) = src.middleCols(n0, rows).transpose();
    }
  }
  /// y [M,out] = x [M,in] · W (contiguous rows).
  static void project(const Linear& w, const T* x, Index M, T* y) {
    if constexpr (kPacked) {
      w.forward(x, M, w.in(), y, w.out());
    } else {
      Eigen::Map<Mat>(y, M, w.cols()).noalias() = Eigen::Map<const Mat>(x, M, w.rows()) * w;
    }
  }

  template <class D>
  [[noreturn]] void fail_step_x(const D& xd) const {
    detail::fail("GatedLinearAttention::step", "x is " + detail::shape_str(xd) + ", expected [B,hidden_size=" +
                                                   std::to_string(cfg_.hidden_size) + "]");
  }

  /// check_cache() without building its messages: true when it would pass.
  bool cache_fits(const Cache& c, Index N) const {
    const Index H = cfg_.num_heads, Kh = cfg_.head_k_dim(), Vh = cfg_.head_v_dim(), W = cfg_.conv_size;
    if (c.recurrent_state) {
      const auto& d = c.recurrent_state->dimensions();
      if (d[0] != N || d[1] != H || d[2] != Vh || d[3] != Kh) return false;
    }
    auto conv_ok = [&](const std::optional<Tensor<T, 3>>& s, Index D) {
      if (!s) return true;
      if (!cfg_.use_short_conv) return false;
      const auto& d = s->dimensions();
      return d[0] == N && d[1] == D && d[2] == W;
    };
    return conv_ok(c.conv_state_q, cfg_.key_dim()) && conv_ok(c.conv_state_k, cfg_.key_dim_per_group()) &&
           conv_ok(c.conv_state_v, cfg_.value_dim_per_group());
  }

  void check_cache(const std::string& fn, const Cache& c, Index N) const {
    const Index H = cfg_.num_heads, Kh = cfg_.head_k_dim(), Vh = cfg_.head_v_dim(), W = cfg_.conv_size;
    if (c.recurrent_state)
      detail::expect_dims(fn, "cache.recurrent_state", c.recurrent_state->dimensions(),
                          {{"N", N}, {"H", H}, {"V", Vh}, {"K", Kh}});
    auto conv_state = [&](const char* name, const std::optional<Tensor<T, 3>>& s, Index D) {
      if (!s) return;
      if (!cfg_.use_short_conv)
        detail::fail(fn, std::string("cache.") + name + " is set, expected none (use_short_conv is false)");
      detail::expect_dims(fn, std::string("cache.") + name, s->dimensions(), {{"N", N}, {"D", D}, {"W", W}});
    };
    conv_state("conv_state_q", c.conv_state_q, cfg_.key_dim());
    conv_state("conv_state_k", c.conv_state_k, cfg_.key_dim_per_group());
    conv_state("conv_state_v", c.conv_state_v, cfg_.value_dim_per_group());
  }

  /// In place: rows [ntok,D] ← ShortConvolution(rows) over the [Bk,Tk,D] batch; the final cache when use_cache.
  template <class Rows>
  static void conv(const ShortConvolution<T>& c, Rows& rows, Index Bk, Index Tk, const std::vector<std::int64_t>& cu,
                   const std::optional<Tensor<T, 3>>* cache, bool use_cache, std::optional<Tensor<T, 3>>& final_out) {
    const Index D = rows.cols();
    std::optional<ConstView<T, 3>> init;
    if (cache && *cache) init = **cache;
    ShortConvResult<T> r = c.forward(ConstView<T, 3>(rows.data(), Bk, Tk, D), init, use_cache, cu);
    std::copy_n(r.y.data(), r.y.size(), rows.data());
    if (use_cache) final_out = std::move(r.final_state);
  }

  /// [n, Hkv·D] → [n, Hkv·G·D] with query head i ← kv head i/G (fla's '... (h d) -> ... (h g) d').
  template <class Src>
  static Mat repeat_heads(const Src& src, Index G, Index D) {
    const Index n = src.rows(), hkv = src.cols() / D;
    Mat dst(n, hkv * G * D);
    for (Index i = 0; i < n; ++i)
      for (Index h = 0; h < hkv; ++h)
        for (Index g = 0; g < G; ++g)
          std::copy_n(src.data() + i * src.cols() + h * D, D, dst.data() + i * dst.cols() + (h * G + g) * D);
    return dst;
  }
};

}  // namespace gla
