// The layer's golden and bf16/decode tests once more, compiled with GLA_LAYER_FORCE_EIGEN: the projections built
// without their oneDNN backend (what a GLA_WITH_ONEDNN=OFF build gets), whatever this build's configuration.
#define GLA_LAYER_FORCE_EIGEN
#include "test_layer_golden.cpp"
#include "test_layer_bf16.cpp"
