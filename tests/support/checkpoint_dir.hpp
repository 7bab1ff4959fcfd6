#pragma once
// Checkpoint directories written at test time (config.json + model.safetensors, or shards with
// model.safetensors.index.json), and the tiny fla GLAForCausalLM of tests/data/fla/model.safetensors.

#include <gla/io/safetensors.hpp>
#include <gla/models/gla_model_config.hpp>

#include "support/golden.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace gla::test {

/// A fresh directory under the system's temp directory, removed with this object.
class TempDir {
 public:
  /// A fresh directory gla_test_<name>_<random> in the system's temp directory: ctest runs the test cases of one
  /// binary as separate processes in parallel, so a fixed name would be removed by one while another uses it.
  explicit TempDir(const std::string& name)
      : path_((std::filesystem::temp_directory_path() / ("gla_test_" + name + "_" + unique_suffix())).string()) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }

 private:
  static std::string unique_suffix() {
    std::random_device rd;
    return std::to_string(rd()) + std::to_string(rd());
  }
  std::string path_;
};

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

/// Writes config.json and the weights: one model.safetensors when shards == 1, else shards
/// model-0000i-of-0000n.safetensors (tensors dealt round-robin in name order) and model.safetensors.index.json.
inline void write_checkpoint(const std::string& dir, const nlohmann::json& config, const gla::io::StateDict& weights,
                             int shards = 1) {
  std::filesystem::create_directories(dir);
  write_text(dir + "/config.json", config.dump(2));
  if (shards == 1) {
    gla::io::save_safetensors(dir + "/model.safetensors", weights, {{"format", "pt"}});
    return;
  }
  std::vector<gla::io::StateDict> parts(static_cast<std::size_t>(shards));
  nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
  const std::vector<std::string> names = weights.names();
  auto file_name = [&](int i) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", i + 1, shards);
    return std::string(buf);
  };
  for (std::size_t i = 0; i < names.size(); ++i) {
    const int s = static_cast<int>(i % static_cast<std::size_t>(shards));
    const std::string& n = names[i];
    parts[static_cast<std::size_t>(s)].set_raw(n, weights.dtype(n), weights.shape(n), weights.bytes(n));
    index["weight_map"][n] = file_name(s);
  }
  for (int s = 0; s < shards; ++s)
    gla::io::save_safetensors(dir + "/" + file_name(s), parts[static_cast<std::size_t>(s)], {{"format", "pt"}});
  write_text(dir + "/model.safetensors.index.json", index.dump(2));
}

/// fla's config of the tiny reference model.
inline nlohmann::json tiny_config() { return Golden("model").meta("model")["config"]; }

/// The tiny reference model's weights under fla's state_dict names (F32).
inline gla::io::StateDict tiny_weights() {
  return gla::io::StateDict::from_safetensors(Golden("model").file(), "model.weight.");
}

}  // namespace gla::test
