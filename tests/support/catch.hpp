#pragma once
// One include for Catch2 v2 (Debian 12) and v3.
#if GLA_CATCH_V3
#include <catch2/catch_all.hpp>
using Catch::Approx;  // v2 has it at global scope
#else
#include <catch2/catch.hpp>
#endif

#include <gla/core.hpp>

#include <string>

#if GLA_CATCH_V3
#define GLA_CONTAINS(s) Catch::Matchers::ContainsSubstring(s)
#else
#define GLA_CONTAINS(s) Catch::Matchers::Contains(s)
#endif

namespace gla::test {
/// The message of the gla::Error that f throws, or a marker that fails every substring check.
template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const gla::Error& e) {
    return e.what();
  }
  return "<no gla::Error was thrown>";
}
}  // namespace gla::test

/// Checks that the expression (given last, so it may contain commas) throws gla::Error containing substr.
#define CHECK_GLA_ERROR(substr, ...) \
  CHECK_THAT(gla::test::error_message([&] { (void)(__VA_ARGS__); }), GLA_CONTAINS(substr))
