#pragma once
// Test access to fla's golden reference files (tests/data/fla/*.safetensors): tensors by "<case>.<name>" and
// each case's parameters from __metadata__.

#include <gla/io/safetensors.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#ifndef GLA_TEST_DATA_DIR
#error "GLA_TEST_DATA_DIR must be defined (tests/CMakeLists.txt sets it)"
#endif

namespace gla::test {

/// One golden file of tests/data/fla, e.g. Golden("ops-chunk_cases").
class Golden {
 public:
  /// Opens GLA_TEST_DATA_DIR "/fla/" + file + ".safetensors"; gla::Error naming the path when it cannot.
  explicit Golden(const std::string& file)
      : file_(gla::io::SafeTensors::load(std::string(GLA_TEST_DATA_DIR) + "/fla/" + file + ".safetensors")) {}

  /// The case names (keys of __metadata__), sorted.
  std::vector<std::string> cases() const {
    std::vector<std::string> out;
    for (const auto& kv : file_.metadata()) out.push_back(kv.first);
    return out;
  }

  /// A case's parameters, parsed from its __metadata__ JSON string; gla::Error if the case is missing or the
  /// string is not JSON.
  nlohmann::json meta(const std::string& case_name) const {
    const auto it = file_.metadata().find(case_name);
    if (it == file_.metadata().end())
      gla::detail::fail("gla::test::Golden::meta", "no case '" + case_name + "' in " + file_.origin());
    try {
      return nlohmann::json::parse(it->second);
    } catch (const nlohmann::json::exception& e) {
      gla::detail::fail("gla::test::Golden::meta", "the parameters of case '" + case_name + "' in " + file_.origin() +
                                                       " are not JSON: " + e.what());
    }
  }

  /// The tensor names of one case, without the "<case>." prefix, sorted.
  std::vector<std::string> names(const std::string& case_name) const {
    const std::string prefix = case_name + ".";
    std::vector<std::string> out;
    for (const std::string& n : file_.names())
      if (n.compare(0, prefix.size(), prefix) == 0) out.push_back(n.substr(prefix.size()));
    return out;
  }

  /// Whether the full name "<case>.<name>" is stored.
  bool has(const std::string& name) const { return file_.contains(name); }

  /// A tensor by full name "<case>.<name>", converted to T.
  template <class T, int R>
  gla::Tensor<T, R> get(const std::string& name) const {
    return file_.get<T, R>(name);
  }

  /// A 1-D integer tensor (cu_seqlens, input_ids, ...) by full name.
  std::vector<std::int64_t> ints(const std::string& name) const { return file_.get_int64_vector(name); }

  const gla::io::SafeTensors& file() const { return file_; }

 private:
  gla::io::SafeTensors file_;
};

}  // namespace gla::test
