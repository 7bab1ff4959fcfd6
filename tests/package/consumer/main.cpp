// Consumer check: the library links from two translation units and computes a correct forward.
#include <gla/gla.hpp>

#include <cmath>
#include <cstdio>

double second_tu_forward();  // second_tu.cpp

int main() {
  gla::Tensor<float, 4> q(1, 70, 2, 8), k(1, 70, 2, 8), v(1, 70, 2, 4), g(1, 70, 2, 8);
  q.setConstant(0.5f);
  k.setConstant(0.25f);
  v.setConstant(1.0f);
  g.setConstant(-0.1f);
  gla::GLAOptions opts;
  opts.output_final_state = true;
  const auto r = gla::chunk_gla(q, k, v, g, opts);
  const auto ref = gla::naive_recurrent_gla(q, k, v, g, std::nullopt, opts);
  const double err = std::abs(r.o(0, 69, 1, 3) - ref.o(0, 69, 1, 3));
  const double other = second_tu_forward();
  std::printf("consumer: chunk_gla o[-1] = %.6f (reference %.6f), second TU %.6f\n", r.o(0, 69, 1, 3),
              ref.o(0, 69, 1, 3), other);
  return err < 1e-5 && std::abs(other - r.o(0, 69, 1, 3)) < 1e-5 ? 0 : 1;
}
