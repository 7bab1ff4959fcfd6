// tests/test_gemm.cpp once more, compiled with GLA_GEMM_FORCE_EIGEN: gla::detail::gemm() built without its
// libxsmm backend (what a GLA_WITH_LIBXSMM=OFF build gets), whatever this build's configuration.
#define GLA_GEMM_FORCE_EIGEN
#include "test_gemm.cpp"
