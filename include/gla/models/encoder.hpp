#pragma once
/// gla/models/encoder.hpp: make_encoder(name, config), the encoder stack of the library's original design: a
/// multi-layer sequence mixer over hidden states (no embeddings, no head), with fla's past_key_values /
/// use_cache / layer_idx semantics. "gla" is fla's GLAModel without its embeddings: GLABlocks, then the final norm.

#include <gla/core.hpp>
#include <gla/models/gla_model.hpp>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gla {

/// A stack of sequence-mixing layers over hidden states x [B,T,hidden] → y [B,T,hidden].
template <class T = float>
class Encoder {
 public:
  using Cache = GLAModelCache<T>;
  virtual ~Encoder() = default;

  virtual std::int64_t hidden_size() const = 0;
  virtual std::int64_t num_layers() const = 0;

  /// past_key_values: one cache per layer, layer i reading and writing entry layer_idx = i (make_cache()).
  virtual Cache make_cache() const = 0;

  /// fla's forward(hidden_states, attention_mask, past_key_values, use_cache): with past_key_values, every layer
  /// starts from its entry; with use_cache those entries are replaced by the final states (use_cache without
  /// past_key_values is a gla::Error: the caller owns the cache). attention_mask [B,S] int64 as the layer's.
  virtual Tensor<T, 3> forward(ConstView<T, 3> hidden_states,
                               std::optional<ConstView<std::int64_t, 2>> attention_mask = std::nullopt,
                               Cache* past_key_values = nullptr, bool use_cache = false) const = 0;

  /// Loads fla's tensors named prefix + "layers.{i}...." and prefix + "norm.weight" (e.g. prefix "model." on a
  /// GLAForCausalLM checkpoint with its embeddings and lm_head removed); strict as the model's load.
  virtual void load_state_dict(const io::StateDict& dict, const std::string& prefix = "") = 0;

  virtual void init_random(std::uint64_t seed) = 0;
};

/// The "gla" encoder: GLABlocks with layer_idx 0 .. L-1 and the final RMSNorm of GLAModel.
template <class T = float>
class GLAEncoder final : public Encoder<T> {
 public:
  using Cache = GLAModelCache<T>;
  using Mat = detail::RowMat<T>;

  explicit GLAEncoder(const GLAConfig& config) : cfg_(validated(config)), norm_(detail::RowVec<T>::Ones(cfg_.hidden_size)) {
    for (std::int64_t i = 0; i < cfg_.num_hidden_layers; ++i) blocks_.emplace_back(cfg_, i);
  }

  const GLAConfig& config() const { return cfg_; }
  std::int64_t hidden_size() const override { return cfg_.hidden_size; }
  std::int64_t num_layers() const override { return static_cast<std::int64_t>(blocks_.size()); }
  const GLABlock<T>& block(std::int64_t i) const { return blocks_.at(static_cast<std::size_t>(i)); }

  Cache make_cache() const override {
    Cache c;
    c.layers.resize(blocks_.size());
    return c;
  }

  Tensor<T, 3> forward(ConstView<T, 3> x, std::optional<ConstView<std::int64_t, 2>> attention_mask = std::nullopt,
                       Cache* past_key_values = nullptr, bool use_cache = false) const override {
    const std::string fn = "gla::GLAEncoder::forward";
    const Index B = x.dimension(0), T_ = x.dimension(1), D = cfg_.hidden_size;
    if (B <= 0 || T_ <= 0 || x.dimension(2) != D)
      detail::fail(fn, "hidden_states is " + detail::shape_str(x.dimensions()) + ", expected [B,T,hidden_size=" +
                           std::to_string(D) + "] with B, T > 0");
    if (use_cache && !past_key_values)
      detail::fail(fn, "use_cache is true without past_key_values, expected a cache (make_cache())");
    if (past_key_values && past_key_values->layers.size() != blocks_.size())
      detail::fail(fn, "past_key_values has " + std::to_string(past_key_values->layers.size()) +
                           " layer caches, expected one per layer: " + std::to_string(blocks_.size()));
    Mat h = Eigen::Map<const Mat>(x.data(), B * T_, D);
    for (std::size_t i = 0; i < blocks_.size(); ++i)
      h = blocks_[i].forward(h, B, T_, attention_mask, past_key_values ? &past_key_values->layers[i] : nullptr,
                             use_cache);
    if (past_key_values && use_cache) past_key_values->seen_tokens += T_;
    Tensor<T, 3> out(B, T_, D);
    Mat y;
    detail::model_rms_norm<T>(y, h, nullptr, norm_, cfg_.norm_eps);
    std::copy_n(y.data(), y.size(), out.data());
    return out;
  }

  void load_state_dict(const io::StateDict& dict, const std::string& prefix = "") override {
    const std::string fn = "gla::GLAEncoder::load_state_dict";
    const CheckpointTensors src = CheckpointTensors::from_state_dict(dict);
    std::map<std::string, std::vector<Index>> expected;
    for (std::size_t i = 0; i < blocks_.size(); ++i)
      for (const auto& [n, shape] : blocks_[i].parameter_shapes())
        expected[prefix + "layers." + std::to_string(i) + "." + n] = shape;
    expected[prefix + "norm.weight"] = {cfg_.hidden_size};
    std::vector<std::string> problems;
    for (const auto& [name, shape] : expected) {
      if (!src.contains(name))
        problems.push_back("missing " + name);
      else if (src.shape(name) != shape)
        problems.push_back(name + " is " + detail::shape_str(src.shape(name)) + ", expected " +
                           detail::shape_str(shape));
    }
    for (const std::string& name : src.names())
      if (name.compare(0, prefix.size(), prefix) == 0 && !expected.count(name)) problems.push_back("unexpected " + name);
    if (!problems.empty()) {
      std::string msg = "the state dict does not fit the config (prefix '" + prefix + "'): ";
      for (std::size_t i = 0; i < problems.size(); ++i) msg += (i ? "; " : "") + problems[i];
      detail::fail(fn, msg);
    }
    GLAEncoder next(*this);
    for (std::size_t i = 0; i < next.blocks_.size(); ++i)
      next.blocks_[i].load(src, prefix + "layers." + std::to_string(i) + ".");
    next.norm_ = detail::load_vec<T>(src, prefix + "norm.weight");
    *this = std::move(next);
  }

  void init_random(std::uint64_t seed) override {
    std::mt19937_64 gen(seed);
    for (auto& b : blocks_) b.init_random(gen, cfg_.initializer_range);
    norm_.setOnes();
  }

 private:
  static const GLAConfig& validated(const GLAConfig& c) {
    c.validate();
    return c;
  }

  GLAConfig cfg_;
  detail::RowVec<T> norm_;
  std::vector<GLABlock<T>> blocks_;
};

/// The encoder names make_encoder knows, comma-separated.
inline std::string encoder_names() { return "gla"; }

/// An encoder stack by name: "gla" → GLAEncoder(config). gla::Error listing the known names for any other.
template <class T = float>
std::unique_ptr<Encoder<T>> make_encoder(const std::string& name, const GLAConfig& config) {
  if (name == "gla") return std::make_unique<GLAEncoder<T>>(config);
  detail::fail("gla::make_encoder", "name is '" + name + "', expected one of: " + encoder_names());
}

}  // namespace gla
