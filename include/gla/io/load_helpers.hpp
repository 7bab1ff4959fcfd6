#pragma once
/// gla/io/load_helpers.hpp: what every loader of fla files shares — reading a JSON file, and the one error that
/// lists every missing, unexpected and mis-shaped tensor of a state dict or checkpoint (needs nlohmann-json).

#include <gla/core.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace gla {
namespace detail {

/// The parsed JSON of a file; gla::Error (from fn) naming the path when it cannot be read or is not JSON.
inline nlohmann::json read_json_file(const std::string& fn, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(fn, "cannot open '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail(fn, "'" + path + "' is not valid JSON: " + e.what());
  }
}

/// Throws gla::Error "<what>: missing: a, b; unexpected: c; wrong shape or dtype: d;" (empty lists left out)
/// unless all three lists are empty.
inline void fail_unless_tensors_fit(const std::string& fn, const std::string& what,
                                    const std::vector<std::string>& missing,
                                    const std::vector<std::string>& unexpected, const std::vector<std::string>& bad) {
  if (missing.empty() && unexpected.empty() && bad.empty()) return;
  std::string msg = what + ":";
  auto list = [&](const char* kind, const std::vector<std::string>& v) {
    if (v.empty()) return;
    msg += std::string(" ") + kind + ": ";
    for (std::size_t i = 0; i < v.size(); ++i) msg += (i ? ", " : "") + v[i];
    msg += ";";
  };
  list("missing", missing);
  list("unexpected", unexpected);
  list("wrong shape or dtype", bad);
  fail(fn, msg);
}

}  // namespace detail
}  // namespace gla
