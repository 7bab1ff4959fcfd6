#pragma once
/// gla/models/checkpoint.hpp: CheckpointTensors, the named tensors of a model checkpoint: an in-memory StateDict,
/// or a checkpoint directory as fla / transformers save it (model.safetensors, or model-0000i-of-0000n.safetensors
/// shards listed by model.safetensors.index.json), each file memory-mapped once.

#include <gla/core.hpp>
#include <gla/io/load_helpers.hpp>
#include <gla/io/safetensors.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace gla {

/// The tensors a model loads from, by fla's state_dict names. Reading a tensor converts it from its stored dtype
/// (F32, F16, BF16, F64) to the caller's type; the mapped files are shared by copies of this object and stay
/// mapped while one of them lives.
class CheckpointTensors {
 public:
  /// The weight files of a checkpoint directory, in the order they are opened.
  ///   index (model.safetensors.index.json) present: the distinct files of its weight_map;
  ///   otherwise: model.safetensors.
  /// gla::Error naming the directory when neither exists, and naming the index when it is not valid.
  static std::vector<std::string> weight_files(const std::string& dir) {
    const std::string fn = "gla::CheckpointTensors::open";
    namespace fs = std::filesystem;
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
      detail::fail(fn, "dir is '" + dir + "', expected a checkpoint directory (it does not exist or is not one)");
    const fs::path index = fs::path(dir) / "model.safetensors.index.json";
    if (!fs::exists(index, ec)) {
      const fs::path single = fs::path(dir) / "model.safetensors";
      if (!fs::exists(single, ec))
        detail::fail(fn, "'" + dir + "' has neither model.safetensors nor model.safetensors.index.json, expected one "
                         "of them");
      return {single.string()};
    }
    std::vector<std::string> files;
    for (const auto& [name, file] : read_index(index.string())) {
      (void)name;
      const std::string path = (fs::path(dir) / file).string();
      if (std::find(files.begin(), files.end(), path) == files.end()) files.push_back(path);
    }
    return files;
  }

  /// Opens a checkpoint directory: every weight file (see weight_files) is mapped and its header validated once.
  /// With an index, every tensor it names must be in the file it names, no tensor may be in two files, and
  /// the files may hold no tensor the index does not list; gla::Error naming the tensor and files otherwise.
  static CheckpointTensors open(const std::string& dir) {
    const std::string fn = "gla::CheckpointTensors::open";
    namespace fs = std::filesystem;
    const std::vector<std::string> files = weight_files(dir);
    CheckpointTensors c;
    c.origin_ = dir;
    for (const std::string& path : files) c.shards_.push_back(io::SafeTensors::map(path));
    for (std::size_t s = 0; s < c.shards_.size(); ++s) {
      for (const std::string& name : c.shards_[s].names()) {
        const auto [it, fresh] = c.where_.emplace(name, s);
        if (!fresh)
          detail::fail(fn, "tensor '" + name + "' is in both '" + c.shards_[it->second].origin() + "' and '" +
                               c.shards_[s].origin() + "', expected it in one file");
      }
    }
    const fs::path index = fs::path(dir) / "model.safetensors.index.json";
    std::error_code ec;
    if (fs::exists(index, ec)) {
      const auto map = read_index(index.string());
      for (const auto& [name, file] : map) {
        const std::string path = (fs::path(dir) / file).string();
        const auto it = c.where_.find(name);
        if (it == c.where_.end() || c.shards_[it->second].origin() != path)
          detail::fail(fn, "model.safetensors.index.json says tensor '" + name + "' is in '" + file +
                               "', but that file has no such tensor");
      }
      for (const auto& [name, s] : c.where_)
        if (!map.count(name))
          detail::fail(fn, "tensor '" + name + "' of '" + c.shards_[s].origin() +
                               "' is not in model.safetensors.index.json's weight_map, expected every stored tensor "
                               "to be listed");
    }
    return c;
  }

  /// Tensors held in memory (e.g. a model's own state_dict()).
  static CheckpointTensors from_state_dict(io::StateDict d) {
    CheckpointTensors c;
    c.origin_ = "<state dict>";
    c.dict_ = std::move(d);
    return c;
  }

  /// Where the tensors come from (the directory, or "<state dict>").
  const std::string& origin() const { return origin_; }

  /// The opened files (empty for a state dict).
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (const auto& s : shards_) out.push_back(s.origin());
    return out;
  }

  /// Whether every opened file is memory-mapped.
  bool mapped() const {
    if (shards_.empty()) return false;
    for (const auto& s : shards_)
      if (!s.mapped()) return false;
    return true;
  }

  /// Every tensor name, sorted.
  std::vector<std::string> names() const {
    if (dict_) return dict_->names();
    std::vector<std::string> out;
    for (const auto& kv : where_) out.push_back(kv.first);
    return out;
  }

  bool contains(const std::string& name) const { return dict_ ? dict_->contains(name) : where_.count(name) != 0; }

  io::DType dtype(const std::string& name) const {
    return dict_ ? dict_->dtype(name) : shard(name).info(name).dtype;
  }

  const std::vector<Index>& shape(const std::string& name) const {
    return dict_ ? dict_->shape(name) : shard(name).info(name).shape;
  }

  /// A tensor converted to T; gla::Error when it is missing or of another rank.
  template <class T, int R>
  Tensor<T, R> get(const std::string& name) const {
    return dict_ ? dict_->get<T, R>(name) : shard(name).get<T, R>(name);
  }

  /// A copy of the tensors whose names start with prefix, renamed without it, in their stored dtypes (only those
  /// tensors are read from the files).
  io::StateDict state_dict(const std::string& prefix) const {
    io::StateDict d;
    for (const std::string& name : names()) {
      if (name.compare(0, prefix.size(), prefix) != 0) continue;
      const std::string local = name.substr(prefix.size());
      if (dict_) {
        d.set_raw(local, dict_->dtype(name), dict_->shape(name), dict_->bytes(name));
      } else {
        const io::SafeTensors& f = shard(name);
        const io::ByteView b = f.raw(name);
        d.set_raw(local, f.info(name).dtype, f.info(name).shape, std::vector<std::uint8_t>(b.data, b.data + b.size));
      }
    }
    return d;
  }

 private:
  CheckpointTensors() = default;

  const io::SafeTensors& shard(const std::string& name) const {
    const auto it = where_.find(name);
    if (it == where_.end())
      detail::fail("gla::CheckpointTensors", "no tensor named '" + name + "' in " + origin_);
    return shards_[it->second];
  }

  /// weight_map of an index file: tensor name → file name (a plain file name in the same directory).
  static std::map<std::string, std::string> read_index(const std::string& path) {
    const std::string fn = "gla::CheckpointTensors::open";
    const nlohmann::json j = detail::read_json_file(fn, path);
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
      detail::fail(fn, "'" + path + "' has no weight_map object, expected {\"weight_map\": {tensor: file, ...}}");
    std::map<std::string, std::string> out;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
      if (!it.value().is_string())
        detail::fail(fn, "'" + path + "': weight_map['" + it.key() + "'] is JSON " + it.value().dump() +
                             ", expected a file name");
      const std::string file = it.value().get<std::string>();
      if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos ||
          file == "." || file == "..")
        detail::fail(fn, "'" + path + "': weight_map['" + it.key() + "'] is '" + file +
                             "', expected a file name in the checkpoint directory");
      out[it.key()] = file;
    }
    if (out.empty()) detail::fail(fn, "'" + path + "': weight_map is empty, expected the model's tensors");
    return out;
  }

  std::string origin_;
  std::optional<io::StateDict> dict_;
  std::vector<io::SafeTensors> shards_;
  std::map<std::string, std::size_t> where_;
};

}  // namespace gla
