#pragma once
// Test cases of fused_recurrent_gla: a case description, seeded inputs in any scalar type (fla's distributions),
// views of the optional inputs, a gla::Error checker, and a registry of the worst error per tolerance class.

#include <gla/core.hpp>

#include "catch.hpp"
#include "test_utils.hpp"

#include <algorithm>
#include <cstdint>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace gla::test {

enum GateMode { kNoGates = 0, kGkOnly = 1, kGvOnly = 2, kBothGates = 3 };

/// One problem: shapes, which gates, gate strength (normalizer for fill_gate; 0 = fill_strong_gate), options.
struct RecCase {
  Index B = 1, T = 16, H = 1, K = 16, V = 32;
  int gates = kBothGates;
  double normalizer = 1.0;
  bool reverse = false, h0 = true, v_first = false;
  std::vector<std::int64_t> cu;
  std::optional<float> scale;

  Index N() const { return cu.empty() ? B : static_cast<Index>(cu.size()) - 1; }
  bool has_gk() const { return gates & kGkOnly; }
  bool has_gv() const { return gates & kGvOnly; }
  std::string str() const {
    std::ostringstream s;
    s << "B=" << B << " T=" << T << " H=" << H << " K=" << K << " V=" << V << " gates="
      << (gates == kNoGates ? "none" : gates == kGkOnly ? "gk" : gates == kGvOnly ? "gv" : "gk+gv")
      << " norm=" << (normalizer == 0 ? std::string("strong") : std::to_string(normalizer)) << " reverse=" << reverse
      << " h0=" << h0 << " v_first=" << v_first;
    if (!cu.empty()) {
      s << " cu=[";
      for (std::size_t i = 0; i < cu.size(); ++i) s << (i ? "," : "") << cu[i];
      s << "]";
    }
    if (scale) s << " scale=" << *scale;
    return s.str();
  }
};

/// Inputs of a case in scalar T: q, k, v U[0,1) (as fla's tests), gates per the case, do N(0,1),
/// h0 U[0,1) and dht N(0,1) in float and in the case's state layout.
template <class T>
struct RecInputs {
  Tensor<T, 4> q, k, v, gk, gv, do_;
  Tensor<float, 4> h0, dht;
  GLAOptions opts;  // scale, reverse, v_first, cu_seqlens and h0 (pointing into this object: do not copy it)

  RecInputs() = default;
  RecInputs(const RecInputs&) = delete;
  RecInputs& operator=(const RecInputs&) = delete;

  std::optional<ConstTensorMap<T, 4>> gk_view(const RecCase& c) const {
    return c.has_gk() ? std::optional<ConstTensorMap<T, 4>>(view(gk)) : std::nullopt;
  }
  std::optional<ConstTensorMap<T, 4>> gv_view(const RecCase& c) const {
    return c.has_gv() ? std::optional<ConstTensorMap<T, 4>>(view(gv)) : std::nullopt;
  }
};

inline std::array<Index, 4> rec_state_dims(const RecCase& c) {
  return c.v_first ? std::array<Index, 4>{c.N(), c.H, c.V, c.K} : std::array<Index, 4>{c.N(), c.H, c.K, c.V};
}

template <class T>
void make_rec_inputs(RecInputs<T>& in, const RecCase& c, std::uint64_t salt) {
  auto g = rng(salt);
  Tensor<double, 4> q(c.B, c.T, c.H, c.K), k(c.B, c.T, c.H, c.K), v(c.B, c.T, c.H, c.V), gk(c.B, c.T, c.H, c.K),
      gv(c.B, c.T, c.H, c.V), d(c.B, c.T, c.H, c.V);
  fill_uniform(q, g);
  fill_uniform(k, g);
  fill_uniform(v, g);
  if (c.normalizer == 0) {
    fill_strong_gate(gk, g);
    fill_strong_gate(gv, g);
  } else {
    fill_gate(gk, g, c.normalizer);
    fill_gate(gv, g, c.normalizer);
  }
  fill_normal(d, g);
  in.q = q.cast<T>();
  in.k = k.cast<T>();
  in.v = v.cast<T>();
  in.gk = gk.cast<T>();
  in.gv = gv.cast<T>();
  in.do_ = d.cast<T>();
  const auto sd = rec_state_dims(c);
  in.h0 = Tensor<float, 4>(sd[0], sd[1], sd[2], sd[3]);
  in.dht = Tensor<float, 4>(sd[0], sd[1], sd[2], sd[3]);
  fill_uniform(in.h0, g);
  fill_normal(in.dht, g);
  in.opts = GLAOptions{};
  in.opts.scale = c.scale;
  in.opts.reverse = c.reverse;
  in.opts.state_v_first = c.v_first;
  in.opts.cu_seqlens = c.cu;
  if (c.h0) in.opts.initial_state = in.h0;
}

/// Requires a gla::Error whose message contains every needle.
template <class F>
void require_gla_error(F&& f, std::initializer_list<const char*> needles) {
  REQUIRE_THROWS_AS(f(), gla::Error);
  std::string msg;
  try {
    f();
  } catch (const gla::Error& e) {
    msg = e.what();
  }
  INFO("message: " << msg);
  for (const char* n : needles) CHECK(msg.find(n) != std::string::npos);
}

/// The worst relative RMS error seen per tolerance class; printed to stderr when the executable exits.
struct WorstErrors {
  std::map<std::string, double> by_class;
  ~WorstErrors() {
    if (by_class.empty()) return;
    std::cerr << "worst relative RMS error per tolerance class:\n";
    for (const auto& [k, v] : by_class) std::cerr << "  " << k << ": " << v << "\n";
  }
};
inline std::map<std::string, double>& worst_errors() {
  static WorstErrors w;
  return w.by_class;
}

/// Compares, records the error under `klass`, and checks it against tol (no NaN/Inf allowed).
template <class A, class B>
void check_close(const std::string& klass, const std::string& what, const A& got, const B& ref, double tol) {
  const Diff d = compare(got, ref);
  double& w = worst_errors()[klass];
  w = std::max(w, d.rel_rms);
  INFO(what << ": " << d.str() << " (tolerance " << tol << ")");
  CHECK(ok(d, tol));
}

/// True when every element equals `value` bit for bit (NaN sentinels compare by isnan).
template <class Tens>
bool all_equal_to(const Tens& t, float value) {
  for (Index i = 0; i < t.size(); ++i) {
    const float x = static_cast<float>(t.data()[i]);
    if (std::isnan(value) ? !std::isnan(x) : x != value) return false;
  }
  return true;
}

}  // namespace gla::test
