// tests/test_gemm.cpp once more, compiled with GLA_GEMM_NO_INTRINSICS: gla::detail::gemm() with its scalar
// packing and conversion loops (what code compiled without AVX-512 gets), whatever this build's flags.
#define GLA_GEMM_NO_INTRINSICS
#include "test_gemm.cpp"
