// Consumer check: the library links from two translation units, computes a correct forward (also on a
// std::thread), and the consumer sees the expected version and OpenMP setting (GLA_EXPECT_*, set by the test).
#include <gla/gla.hpp>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>

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
  double on_thread = 0.0;
  std::thread worker([&on_thread] { on_thread = second_tu_forward(); });
  worker.join();
  std::printf("consumer: chunk_gla o[-1] = %.6f (reference %.6f), second TU %.6f, on a std::thread %.6f\n",
              r.o(0, 69, 1, 3), ref.o(0, 69, 1, 3), other, on_thread);
  int failures = 0;
  if (!(err < 1e-5 && std::abs(other - r.o(0, 69, 1, 3)) < 1e-5 &&
        std::abs(on_thread - other) < 1e-5)) {
    std::printf("consumer: FAILED: the results differ\n");
    ++failures;
  }

#ifdef _OPENMP
  const bool openmp = true;
#else
  const bool openmp = false;
#endif
  std::printf("consumer: gla %s (GLA_VERSION %d), OpenMP %s\n", GLA_VERSION_STRING, GLA_VERSION,
              openmp ? "on (_OPENMP defined)" : "off (_OPENMP not defined)");
  if (GLA_VERSION != GLA_VERSION_MAJOR * 10000 + GLA_VERSION_MINOR * 100 + GLA_VERSION_PATCH) {
    std::printf("consumer: FAILED: GLA_VERSION disagrees with its parts\n");
    ++failures;
  }
#ifdef GLA_EXPECT_VERSION
  if (std::strcmp(GLA_VERSION_STRING, GLA_EXPECT_VERSION) != 0) {
    std::printf("consumer: FAILED: expected gla %s\n", GLA_EXPECT_VERSION);
    ++failures;
  }
#endif
#ifdef GLA_EXPECT_OPENMP
  if (openmp != (GLA_EXPECT_OPENMP != 0)) {
    std::printf("consumer: FAILED: gla was built %s OpenMP, so its users should be too\n",
                GLA_EXPECT_OPENMP ? "with" : "without");
    ++failures;
  }
#endif
  return failures == 0 ? 0 : 1;
}
