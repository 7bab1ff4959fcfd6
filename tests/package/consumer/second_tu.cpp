// The second translation unit of the consumer check (catches non-inline definitions in headers).
#include <gla/gla.hpp>

double second_tu_forward() {
  gla::Tensor<float, 4> q(1, 70, 2, 8), k(1, 70, 2, 8), v(1, 70, 2, 4), g(1, 70, 2, 8);
  q.setConstant(0.5f);
  k.setConstant(0.25f);
  v.setConstant(1.0f);
  g.setConstant(-0.1f);
  return gla::fused_chunk_gla(q, k, v, g).o(0, 69, 1, 3);
}
