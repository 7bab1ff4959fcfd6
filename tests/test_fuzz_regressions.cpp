// Regression tests for the findings of the fuzz_operators libFuzzer target (tests/fuzz/fuzz_operators.cpp): each
// case is the smallest form of an input the fuzzer reported. Every one must end in a gla::Error naming the function
// and the argument; before the fixes they threw std::bad_alloc / std::length_error (a negative dimension sized an
// output before validation) or returned normally although the input was invalid.

#include <gla/gla.hpp>

#include "support/catch.hpp"

#include <cstdint>
#include <vector>

using namespace gla;

namespace {
// A real buffer behind every view below: the views claim a negative dimension, so nothing may be read from them.
std::vector<float> buffer(std::size_t n = 64) { return std::vector<float>(n, 0.5f); }
}  // namespace

TEST_CASE("fuzz regression: the allocating chunk operators validate q/k/v/g before sizing their outputs",
          "[fuzz][errors]") {
  // Finding: chunk_gla(q [-1,2,1,1], ...) threw std::bad_alloc from allocate_result(): o was sized from v's
  // dimensions before check_qkv ran (likewise fused_chunk_gla and both backward forms via allocate_grads()).
  auto buf = buffer();
  const ConstView<float, 4> bad(buf.data(), -1, 2, 1, 1);
  CHECK_GLA_ERROR("chunk_gla: q is [-1,2,1,1]", chunk_gla(bad, bad, bad, bad));
  CHECK_GLA_ERROR("fused_chunk_gla: q is [-1,2,1,1]", fused_chunk_gla(bad, bad, bad, bad));
  CHECK_GLA_ERROR("chunk_gla_backward: q is [-1,2,1,1]", chunk_gla_backward(bad, bad, bad, bad, bad));
  CHECK_GLA_ERROR("fused_chunk_gla_backward: q is [-1,2,1,1]", fused_chunk_gla_backward(bad, bad, bad, bad, bad));
  // A valid q with a v of negative V: the output [B,T,H,V] would have been sized from v.
  const ConstView<float, 4> q(buf.data(), 1, 2, 1, 1), v(buf.data(), 1, 2, 1, -3);
  CHECK_GLA_ERROR("chunk_gla: v is [1,2,1,-3]", chunk_gla(q, q, v, q));
  CHECK_GLA_ERROR("fused_chunk_gla: v is [1,2,1,-3]", fused_chunk_gla(q, q, v, q));
  // An initial_state of negative size: dh0 was sized from it.
  const ConstView<float, 4> h0(buf.data(), 1, 1, -1, 1);
  GLAOptions opts;
  opts.initial_state = h0;
  CHECK_GLA_ERROR("chunk_gla_backward: initial_state is [1,1,-1,1]", chunk_gla_backward(q, q, q, q, q, {}, opts));
}

TEST_CASE("fuzz regression: chunk_local_cumsum rejects a negative dimension", "[fuzz][errors]") {
  // Finding: g [1,-1,1] threw std::bad_alloc, g [2,1,1,-1] std::length_error (a per-worker run of -1 channels).
  auto buf = buffer();
  CHECK_GLA_ERROR("chunk_local_cumsum: g is [1,-1,1], expected non-negative dimensions",
                  chunk_local_cumsum(ConstView<float, 3>(buf.data(), 1, -1, 1), 16));
  CHECK_GLA_ERROR("chunk_local_cumsum: g is [2,1,1,-1]",
                  chunk_local_cumsum(ConstView<float, 4>(buf.data(), 2, 1, 1, -1), 16));
}

TEST_CASE("fuzz regression: the norms reject negative rows", "[fuzz][errors]") {
  auto buf = buffer();
  RMSNorm<float> norm(4);
  FusedRMSNormGated<float> gated(4);
  // Finding: forward_into with x = y = [-1,4] (the documented in-place pair) returned normally and did nothing.
  const View<float, 2> x(buf.data(), -1, 4);
  CHECK_GLA_ERROR("RMSNorm::forward_into: x is [-1,4], expected [rows,D=4] with rows >= 0", norm.forward_into(x, x));
  CHECK_GLA_ERROR("FusedRMSNormGated::forward_into: x is [-1,4]", gated.forward_into(x, x, x));
  // Finding: the allocating forms sized y from x before checking it (std::bad_alloc).
  const ConstView<float, 3> x3(buf.data(), 2, -1, 4);
  CHECK_GLA_ERROR("RMSNorm::forward: x is [2,-1,4], expected non-negative dimensions", norm.forward(x3));
  CHECK_GLA_ERROR("RMSNorm::forward: x is [2,-1,4]", norm.forward(x3, x3));
  CHECK_GLA_ERROR("RMSNorm::forward_prenorm: x is [2,-1,4]", norm.forward_prenorm(x3));
  CHECK_GLA_ERROR("RMSNorm::forward_prenorm: x is [2,-1,4]", norm.forward_prenorm(x3, x3));
  CHECK_GLA_ERROR("FusedRMSNormGated::forward: x is [2,-1,4]", gated.forward(x3, x3));
  CHECK_GLA_ERROR("FusedRMSNormGated::forward: x is [2,-1,4]", gated.forward(x3, x3, x3));
  CHECK_GLA_ERROR("FusedRMSNormGated::forward_prenorm: x is [2,-1,4]", gated.forward_prenorm(x3, x3));
  CHECK_GLA_ERROR("FusedRMSNormGated::forward_prenorm: x is [2,-1,4]", gated.forward_prenorm(x3, x3, x3));
}

TEST_CASE("fuzz regression: ShortConvolution::forward and step check x before sizing y", "[fuzz][errors]") {
  // Finding: forward(x [-1,2,3]) and step(x [-1,3]) threw std::bad_alloc (y was allocated with x's dimensions first).
  auto buf = buffer();
  ShortConvolution<float> conv(3, 2);
  CHECK_GLA_ERROR("ShortConvolution::forward: x is [-1,2,3], expected [B,T,D=3] with B > 0, T >= 0",
                  conv.forward(ConstView<float, 3>(buf.data(), -1, 2, 3)));
  CHECK_GLA_ERROR("ShortConvolution::forward: x is [1,-2,3]", conv.forward(ConstView<float, 3>(buf.data(), 1, -2, 3)));
  std::vector<float> cache(6, 0.0f);
  CHECK_GLA_ERROR("ShortConvolution::step: x is [-1,3]",
                  conv.step(ConstView<float, 2>(buf.data(), -1, 3), View<float, 3>(cache.data(), 1, 3, 2)));
}

TEST_CASE("fuzz regression: the varlen helpers reject negative dimensions", "[fuzz][errors]") {
  auto buf = buffer();
  // Finding: index_first_axis(x [3,-1], {}) returned a [0,-1] tensor; with an index it threw std::bad_alloc.
  CHECK_GLA_ERROR("index_first_axis: x is [3,-1], expected non-negative dimensions",
                  index_first_axis(ConstView<float, 2>(buf.data(), 3, -1), {}));
  CHECK_GLA_ERROR("index_first_axis: x is [3,-1]", index_first_axis(ConstView<float, 2>(buf.data(), 3, -1), {0}));
  CHECK_GLA_ERROR("index_put_first_axis: x is [1,-2]",
                  index_put_first_axis(ConstView<float, 2>(buf.data(), 1, -2), {0}, 4));
  CHECK_GLA_ERROR("pad_input: hidden is [1,-2]", pad_input(ConstView<float, 2>(buf.data(), 1, -2), {0}, 2, 2));
  // Finding: get_unpad_data on a [-1,3] mask returned cu_seqlens [0] (0 sequences for a batch of -1).
  std::vector<std::int64_t> mask(8, 1);
  CHECK_GLA_ERROR("get_unpad_data: attention_mask is [-1,3], expected non-negative dimensions",
                  get_unpad_data(ConstView<std::int64_t, 2>(mask.data(), -1, 3)));
  CHECK_GLA_ERROR("get_unpad_data: attention_mask is [2,-1]",
                  get_unpad_data(ConstView<std::int64_t, 2>(mask.data(), 2, -1)));
}

TEST_CASE("fuzz regression: apply_gamma_decay and the activations reject negative dimensions", "[fuzz][errors]") {
  auto buf = buffer();
  // Finding: apply_gamma_decay(states [1,-1,2,2], {}) returned normally.
  CHECK_GLA_ERROR("apply_gamma_decay: states is [1,-1,2,2], expected non-negative dimensions",
                  apply_gamma_decay(View<float, 4>(buf.data(), 1, -1, 2, 2), std::vector<float>{}));
  // Findings: activate(x [2,-1]) threw std::bad_alloc; activate_into(x, x) with x [-1,2] and apply_activation on a
  // [-2,3] view returned normally.
  CHECK_GLA_ERROR("activate: x is [2,-1]", activate(Activation::ReLU, ConstView<float, 2>(buf.data(), 2, -1)));
  const View<float, 2> x(buf.data(), -1, 2);
  CHECK_GLA_ERROR("activate_into: x is [-1,2]", activate_into(Activation::ReLU, ConstView<float, 2>(x), x));
  CHECK_GLA_ERROR("apply_activation: x is [-2,3]",
                  apply_activation(Activation::SiLU, View<float, 2>(buf.data(), -2, 3)));
}
