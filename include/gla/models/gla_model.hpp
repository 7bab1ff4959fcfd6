#pragma once
/// gla/models/gla_model.hpp: fla's GLA language model (fla/models/gla/modeling_gla.py) for inference:
/// GatedMLP, GLABlock, GLAModel (embeddings, blocks, final norm) and GLAForCausalLM (lm_head, tied or not), with
/// fla's state_dict names, per-layer decoding caches, loading from a checkpoint directory and fla-style random
/// init. The attention of every block is the library's GatedLinearAttention layer.

#include <gla/core.hpp>
#include <gla/io/load_helpers.hpp>
#include <gla/io/safetensors.hpp>
#include <gla/layers/gated_linear_attention.hpp>
#include <gla/models/checkpoint.hpp>
#include <gla/models/gla_model_config.hpp>
#include <gla/modules/activations.hpp>
#include <gla/modules/norms.hpp>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace gla {

namespace detail {

/// y = x·rsqrt(mean(x²) + eps)·w per row of x [rows, D]; with `residual`, x is first replaced by x + residual and
/// that sum is written to residual (fla's fused prenorm RMSNorm).
template <class T>
void model_rms_norm(RowMat<T>& y, const RowMat<T>& x, RowMat<T>* residual, const RowVec<T>& w, double eps) {
  y.resize(x.rows(), x.cols());
  NormArgs<T, T, T> a;
  a.rows = x.rows();
  a.D = x.cols();
  a.x = x.data();
  a.residual = residual ? residual->data() : nullptr;
  a.residual_out = residual ? residual->data() : nullptr;
  a.y = y.data();
  a.weight = w.data();
  a.eps = eps;
  rms_norm_rows(a);
}

/// Loads a 1-D or 2-D tensor into an Eigen row vector / row-major matrix (same layout as stored).
template <class T>
RowVec<T> load_vec(const CheckpointTensors& src, const std::string& name) {
  const Tensor<T, 1> t = src.get<T, 1>(name);
  return Eigen::Map<const RowVec<T>>(t.data(), t.size());
}
template <class T>
RowMat<T> load_mat(const CheckpointTensors& src, const std::string& name, bool transpose) {
  const Tensor<T, 2> t = src.get<T, 2>(name);
  const Eigen::Map<const RowMat<T>> m(t.data(), t.dimension(0), t.dimension(1));
  if (transpose) return m.transpose();
  return m;
}

template <class T>
void store_mat(io::StateDict& d, const std::string& name, const RowMat<T>& m, bool transpose) {
  const Index r = transpose ? m.cols() : m.rows(), c = transpose ? m.rows() : m.cols();
  Tensor<T, 2> t(r, c);
  Eigen::Map<RowMat<T>> out(t.data(), r, c);
  if (transpose)
    out = m.transpose();
  else
    out = m;
  d.set(name, t);
}

template <class T>
void store_vec(io::StateDict& d, const std::string& name, const RowVec<T>& v) {
  Tensor<T, 1> t(v.size());
  std::copy_n(v.data(), v.size(), t.data());
  d.set(name, t);
}

}  // namespace detail

/// The decoding cache of a model: one GatedLinearAttentionCache per layer (fla's past_key_values), and the
/// number of (padded) tokens processed so far.
template <class T>
struct GLAModelCache {
  std::vector<GatedLinearAttentionCache<T>> layers;
  std::int64_t seen_tokens = 0;
  bool empty() const { return seen_tokens == 0; }
};

/// fla's GatedMLP with SwiGLU: y = down_proj(silu(gate_proj(x)) ⊙ up_proj(x)), no biases. Weights are stored
/// transposed ([in,out]) and exchanged in fla's [out,in] layout.
template <class T = float>
class GatedMLP {
 public:
  using Mat = detail::RowMat<T>;

  GatedMLP(Index hidden_size, Index intermediate_size)
      : w_gate_(Mat::Zero(hidden_size, intermediate_size)),
        w_up_(Mat::Zero(hidden_size, intermediate_size)),
        w_down_(Mat::Zero(intermediate_size, hidden_size)) {}

  Index hidden_size() const { return w_gate_.rows(); }
  Index intermediate_size() const { return w_gate_.cols(); }

  /// x [n, hidden] → y [n, hidden].
  Mat forward(const Mat& x) const {
    Mat gate = x * w_gate_;
    const Mat up = x * w_up_;
    using A = acc_t<T>;
    gate = gate.binaryExpr(up, [](T g, T u) {
      return static_cast<T>(silu(static_cast<A>(g)) * static_cast<A>(u));
    });
    return gate * w_down_;
  }

  std::map<std::string, std::vector<Index>> parameter_shapes() const {
    return {{"gate_proj.weight", {intermediate_size(), hidden_size()}},
            {"up_proj.weight", {intermediate_size(), hidden_size()}},
            {"down_proj.weight", {hidden_size(), intermediate_size()}}};
  }

  void load(const CheckpointTensors& src, const std::string& prefix) {
    w_gate_ = detail::load_mat<T>(src, prefix + "gate_proj.weight", true);
    w_up_ = detail::load_mat<T>(src, prefix + "up_proj.weight", true);
    w_down_ = detail::load_mat<T>(src, prefix + "down_proj.weight", true);
  }

  void store(io::StateDict& d, const std::string& prefix) const {
    detail::store_mat(d, prefix + "gate_proj.weight", w_gate_, true);
    detail::store_mat(d, prefix + "up_proj.weight", w_up_, true);
    detail::store_mat(d, prefix + "down_proj.weight", w_down_, true);
  }

  /// Weights ~ N(0, std) from gen, in the order gate_proj, up_proj, down_proj (each in fla's [out,in] order).
  void init_random(std::mt19937_64& gen, double std) {
    std::normal_distribution<double> normal(0.0, std);
    for (Mat* m : {&w_gate_, &w_up_, &w_down_}) {
      Mat fla(m->cols(), m->rows());
      for (Index i = 0; i < fla.size(); ++i) fla.data()[i] = static_cast<T>(normal(gen));
      *m = fla.transpose();
    }
  }

  /// The three projection matrices ([in,out]), for benchmarks that time the projections alone.
  const Mat& gate_weight() const { return w_gate_; }
  const Mat& up_weight() const { return w_up_; }
  const Mat& down_weight() const { return w_down_; }

 private:
  Mat w_gate_, w_up_, w_down_;
};

/// fla's GLABlock (pre-norm):
///   r = x;  x = attn_norm(x);  x = attn(x);  r = x + r;  x = mlp_norm(r);  y = r + mlp(x)
/// attn_norm and mlp_norm are RMSNorms with weights and eps = norm_eps (fuse_norm only selects fla's fused kernel
/// for the second one: the same math).
template <class T = float>
class GLABlock {
 public:
  using Mat = detail::RowMat<T>;
  using Cache = GatedLinearAttentionCache<T>;

  /// precision: how the attention layer holds its linear weights (GatedLinearAttention's WeightPrecision).
  GLABlock(const GLAConfig& config, std::int64_t layer_idx, WeightPrecision precision = WeightPrecision::F32)
      : attn_(config.layer_config(layer_idx), precision),
        mlp_(config.hidden_size, config.mlp_intermediate_size()),
        attn_norm_(detail::RowVec<T>::Ones(config.hidden_size)),
        mlp_norm_(detail::RowVec<T>::Ones(config.hidden_size)),
        eps_(config.norm_eps) {}

  const GatedLinearAttention<T>& attn() const { return attn_; }
  const GatedMLP<T>& mlp() const { return mlp_; }

  /// x [B·T, hidden] (rows of a [B,T] batch) → the block's output, same shape. mask, cache and use_cache as
  /// GatedLinearAttention::forward.
  Mat forward(const Mat& x, Index B, Index T_, std::optional<ConstView<std::int64_t, 2>> mask, Cache* cache,
              bool use_cache) const {
    const Index D = x.cols();
    Mat h;
    detail::model_rms_norm<T>(h, x, nullptr, attn_norm_, eps_);
    Tensor<T, 3> a = attn_.forward(ConstView<T, 3>(h.data(), B, T_, D), mask, cache, use_cache);
    Mat residual = x;
    const Eigen::Map<const Mat> am(a.data(), B * T_, D);
    Mat attn_out = am;
    detail::model_rms_norm<T>(h, attn_out, &residual, mlp_norm_, eps_);  // residual = attn_out + x
    residual += mlp_.forward(h);
    return residual;
  }

  /// Names (relative to the block, e.g. "attn.q_proj.weight") and fla shapes of every parameter.
  std::map<std::string, std::vector<Index>> parameter_shapes() const {
    std::map<std::string, std::vector<Index>> s;
    for (const auto& [n, shape] : attn_.parameter_shapes()) s["attn." + n] = shape;
    for (const auto& [n, shape] : mlp_.parameter_shapes()) s["mlp." + n] = shape;
    s["attn_norm.weight"] = {attn_norm_.size()};
    s["mlp_norm.weight"] = {mlp_norm_.size()};
    return s;
  }

  /// Loads the block's tensors (names checked beforehand by the model).
  void load(const CheckpointTensors& src, const std::string& prefix) {
    attn_.load_state_dict(src.state_dict(prefix + "attn."));
    mlp_.load(src, prefix + "mlp.");
    attn_norm_ = detail::load_vec<T>(src, prefix + "attn_norm.weight");
    mlp_norm_ = detail::load_vec<T>(src, prefix + "mlp_norm.weight");
  }

  void store(io::StateDict& d, const std::string& prefix) const {
    const io::StateDict a = attn_.state_dict();
    for (const std::string& n : a.names()) d.set_raw(prefix + "attn." + n, a.dtype(n), a.shape(n), a.bytes(n));
    mlp_.store(d, prefix + "mlp.");
    detail::store_vec(d, prefix + "attn_norm.weight", attn_norm_);
    detail::store_vec(d, prefix + "mlp_norm.weight", mlp_norm_);
  }

  void init_random(std::mt19937_64& gen, double std) {
    attn_.init_random(gen(), std);
    mlp_.init_random(gen, std);
    attn_norm_.setOnes();
    mlp_norm_.setOnes();
  }

 private:
  GatedLinearAttention<T> attn_;
  GatedMLP<T> mlp_;
  detail::RowVec<T> attn_norm_, mlp_norm_;
  double eps_;
};

/// fla's GLAForCausalLM for inference (GLAModel inside: embeddings → blocks → final norm; then lm_head).
/// T = float or double; stored weights of any floating dtype (F32, F16, BF16, F64) are converted to T on load.
/// forward() is const and may run concurrently on different caches.
template <class T = float>
class GLAForCausalLM {
 public:
  using Mat = detail::RowMat<T>;
  using Cache = GLAModelCache<T>;

  /// A model with fla's initial norm weights (ones) and zero linear weights; load weights or init_random().
  /// precision: how the attention layers hold their linear weights — WeightPrecision::BF16 keeps fla's bf16
  /// checkpoint weights as bf16 (half their memory, bf16 products with fp32 accumulation; T = float only);
  /// embeddings, MLPs, norms and lm_head stay in T (docs/models.md, "Weight precision").
  explicit GLAForCausalLM(const GLAConfig& config, WeightPrecision precision = WeightPrecision::F32)
      : cfg_(validated(config)), prec_(precision) {
    embed_ = Mat::Zero(cfg_.vocab_size, cfg_.hidden_size);
    if (!cfg_.tie_word_embeddings) lm_head_ = Mat::Zero(cfg_.vocab_size, cfg_.hidden_size);
    norm_ = detail::RowVec<T>::Ones(cfg_.hidden_size);
    blocks_.reserve(static_cast<std::size_t>(cfg_.num_hidden_layers));
    for (std::int64_t i = 0; i < cfg_.num_hidden_layers; ++i) blocks_.emplace_back(cfg_, i, precision);
  }

  /// How the attention layers hold their linear weights.
  WeightPrecision weight_precision() const { return prec_; }

  /// Loads a checkpoint directory: config.json (GLAConfig::from_file) and its weights (CheckpointTensors::open:
  /// model.safetensors, or shards with model.safetensors.index.json), each file mapped and read once.
  static GLAForCausalLM from_pretrained(const std::string& dir, WeightPrecision precision = WeightPrecision::F32) {
    const std::string fn = "gla::GLAForCausalLM::from_pretrained";
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
      detail::fail(fn, "dir is '" + dir + "', expected a checkpoint directory (it does not exist or is not one)");
    const std::string cfg_path = (fs::path(dir) / "config.json").string();
    if (!fs::exists(cfg_path, ec)) detail::fail(fn, "'" + dir + "' has no config.json, expected fla's model config");
    GLAForCausalLM m(GLAConfig::from_file(cfg_path), precision);
    m.load(CheckpointTensors::open(dir));
    return m;
  }

  const GLAConfig& config() const { return cfg_; }
  std::int64_t num_layers() const { return static_cast<std::int64_t>(blocks_.size()); }
  const GLABlock<T>& block(std::int64_t i) const { return blocks_.at(static_cast<std::size_t>(i)); }
  const Mat& embeddings() const { return embed_; }
  /// lm_head's weight [vocab, hidden] (the embeddings when tied).
  const Mat& lm_head_weight() const { return cfg_.tie_word_embeddings ? embed_ : lm_head_; }

  /// fla's state_dict names and shapes of this config (lm_head.weight only when not tied), sorted.
  std::map<std::string, std::vector<Index>> parameter_shapes() const {
    std::map<std::string, std::vector<Index>> s;
    s["model.embeddings.weight"] = {cfg_.vocab_size, cfg_.hidden_size};
    for (std::size_t i = 0; i < blocks_.size(); ++i)
      for (const auto& [n, shape] : blocks_[i].parameter_shapes())
        s["model.layers." + std::to_string(i) + "." + n] = shape;
    s["model.norm.weight"] = {cfg_.hidden_size};
    if (!cfg_.tie_word_embeddings) s["lm_head.weight"] = {cfg_.vocab_size, cfg_.hidden_size};
    return s;
  }

  /// Loads every parameter from src under fla's names. Strict: every name of parameter_shapes() must be present
  /// with its shape and a floating dtype, and no other tensor may be (with tied embeddings a stored
  /// lm_head.weight is accepted and ignored, as transformers does); otherwise gla::Error lists every missing,
  /// unexpected and mis-shaped tensor. On error the model is unchanged.
  void load(const CheckpointTensors& src) {
    const std::string fn = "gla::GLAForCausalLM::load";
    const auto expected = parameter_shapes();
    std::vector<std::string> missing, unexpected, bad;
    for (const auto& [name, shape] : expected) {
      if (!src.contains(name)) {
        missing.push_back(name);
        continue;
      }
      if (src.shape(name) != shape)
        bad.push_back(name + " is " + detail::shape_str(src.shape(name)) + ", expected " + detail::shape_str(shape));
      else if (src.dtype(name) == io::DType::I64)
        bad.push_back(name + " is I64, expected a floating dtype (F32, F16, BF16, F64)");
    }
    for (const std::string& name : src.names()) {
      if (expected.count(name)) continue;
      if (cfg_.tie_word_embeddings && name == "lm_head.weight") continue;
      unexpected.push_back(name);
    }
    detail::fail_unless_tensors_fit(fn, "the tensors of " + src.origin() + " do not fit the config", missing, unexpected, bad);
    GLAForCausalLM next(*this);
    next.embed_ = detail::load_mat<T>(src, "model.embeddings.weight", false);
    for (std::size_t i = 0; i < next.blocks_.size(); ++i)
      next.blocks_[i].load(src, "model.layers." + std::to_string(i) + ".");
    next.norm_ = detail::load_vec<T>(src, "model.norm.weight");
    if (!cfg_.tie_word_embeddings) next.lm_head_ = detail::load_mat<T>(src, "lm_head.weight", false);
    *this = std::move(next);
  }

  /// Loads an in-memory state dict (see load(CheckpointTensors)).
  void load_state_dict(io::StateDict d) { load(CheckpointTensors::from_state_dict(std::move(d))); }

  /// Every parameter under fla's names, in T's dtype (lm_head.weight only when not tied).
  io::StateDict state_dict() const {
    io::StateDict d;
    detail::store_mat(d, "model.embeddings.weight", embed_, false);
    for (std::size_t i = 0; i < blocks_.size(); ++i) blocks_[i].store(d, "model.layers." + std::to_string(i) + ".");
    detail::store_vec(d, "model.norm.weight", norm_);
    if (!cfg_.tie_word_embeddings) detail::store_mat(d, "lm_head.weight", lm_head_, false);
    return d;
  }

  /// fla's _init_weights: embeddings and every linear / conv weight ~ N(0, initializer_range), biases 0, norm
  /// weights 1. Deterministic for a seed (one std::mt19937_64: embeddings, then each block, then lm_head).
  void init_random(std::uint64_t seed) {
    std::mt19937_64 gen(seed);
    const double std = cfg_.initializer_range;
    std::normal_distribution<double> normal(0.0, std);
    for (Index i = 0; i < embed_.size(); ++i) embed_.data()[i] = static_cast<T>(normal(gen));
    for (auto& b : blocks_) b.init_random(gen, std);
    norm_.setOnes();
    if (!cfg_.tie_word_embeddings)
      for (Index i = 0; i < lm_head_.size(); ++i) lm_head_.data()[i] = static_cast<T>(normal(gen));
  }

  /// A cache for generation: one empty layer cache per block.
  Cache make_cache() const {
    Cache c;
    c.layers.resize(blocks_.size());
    return c;
  }

  /// GLAModel's forward: input_ids [B,T] int64 → the final-normed hidden states, rows of [B,T] as [B·T, hidden].
  /// attention_mask [B,S] int64 (S >= T; 1 = token, 0 = padding, only the last T columns are read), cache and
  /// use_cache as GatedLinearAttention::forward for every layer. Every id must be in [0, vocab_size), padding
  /// included. Padded positions get a value (their own token's path through the norms and MLPs, as fla) that the
  /// caller must ignore; they never affect other positions.
  Mat hidden_states(ConstView<std::int64_t, 2> input_ids,
                    std::optional<ConstView<std::int64_t, 2>> attention_mask = std::nullopt, Cache* cache = nullptr,
                    bool use_cache = false) const {
    const std::string fn = "gla::GLAForCausalLM::forward";
    const Index B = input_ids.dimension(0), T_ = input_ids.dimension(1), D = cfg_.hidden_size;
    if (B <= 0 || T_ <= 0)
      detail::fail(fn, "input_ids is " + detail::shape_str(input_ids.dimensions()) + ", expected [B,T] with B, T > 0");
    if (use_cache && !cache) detail::fail(fn, "use_cache is true without a cache, expected a cache (make_cache())");
    if (cache && cache->layers.size() != blocks_.size())
      detail::fail(fn, "the cache has " + std::to_string(cache->layers.size()) + " layer caches, expected " +
                           std::to_string(blocks_.size()) + " (make_cache())");
    Mat h(B * T_, D);
    for (Index r = 0; r < B * T_; ++r) {
      const std::int64_t id = input_ids.data()[r];
      if (id < 0 || id >= cfg_.vocab_size)
        detail::fail(fn, "input_ids[" + std::to_string(r / T_) + "," + std::to_string(r % T_) + "] is " +
                             std::to_string(id) + ", expected a token id in [0, vocab_size = " +
                             std::to_string(cfg_.vocab_size) + ")");
      h.row(r) = embed_.row(id);
    }
    for (std::size_t i = 0; i < blocks_.size(); ++i)
      h = blocks_[i].forward(h, B, T_, attention_mask, cache ? &cache->layers[i] : nullptr, use_cache);
    if (cache && use_cache) cache->seen_tokens += T_;
    Mat out;
    detail::model_rms_norm<T>(out, h, nullptr, norm_, cfg_.norm_eps);
    return out;
  }

  /// GLAForCausalLM's forward: logits [B, K, vocab] of the last K = logits_to_keep positions (0 = all, as fla).
  /// Arguments as hidden_states(); gla::Error naming the argument for a bad shape, id, mask or cache.
  Tensor<T, 3> forward(ConstView<std::int64_t, 2> input_ids,
                       std::optional<ConstView<std::int64_t, 2>> attention_mask = std::nullopt, Cache* cache = nullptr,
                       bool use_cache = false, Index logits_to_keep = 0) const {
    const std::string fn = "gla::GLAForCausalLM::forward";
    const Index B = input_ids.dimension(0), T_ = input_ids.dimension(1);
    if (logits_to_keep < 0 || logits_to_keep > T_)
      detail::fail(fn, "logits_to_keep is " + std::to_string(logits_to_keep) + ", expected 0 (all) .. T = " +
                           std::to_string(T_));
    const Mat h = hidden_states(input_ids, attention_mask, cache, use_cache);
    const Index K = logits_to_keep == 0 ? T_ : logits_to_keep, V = cfg_.vocab_size, D = cfg_.hidden_size;
    Mat kept(B * K, D);
    for (Index b = 0; b < B; ++b) kept.middleRows(b * K, K) = h.middleRows(b * T_ + (T_ - K), K);
    Tensor<T, 3> logits(B, K, V);
    Eigen::Map<Mat>(logits.data(), B * K, V).noalias() = kept * lm_head_weight().transpose();
    return logits;
  }

 private:
  static const GLAConfig& validated(const GLAConfig& c) {
    c.validate();
    return c;
  }

  GLAConfig cfg_;
  WeightPrecision prec_ = WeightPrecision::F32;
  Mat embed_, lm_head_;
  detail::RowVec<T> norm_;
  std::vector<GLABlock<T>> blocks_;
};

}  // namespace gla
