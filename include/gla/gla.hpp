#pragma once
/// gla/gla.hpp: the umbrella header — every GLA operator, the mask/varlen helpers, the router, the modules
/// and, when nlohmann-json is available, safetensors I/O and the GatedLinearAttention layer.

#include <gla/chunk.hpp>
#include <gla/chunk_h.hpp>
#include <gla/core.hpp>
#include <gla/cumsum.hpp>
#include <gla/fused_chunk.hpp>
#include <gla/fused_recurrent.hpp>
#include <gla/naive.hpp>
#include <gla/router.hpp>
#include <gla/varlen.hpp>
#if __has_include(<gla/chunk_backward.hpp>)
#include <gla/chunk_backward.hpp>
#endif
#include <gla/modules/activations.hpp>
#include <gla/modules/norms.hpp>
#include <gla/modules/short_conv.hpp>
#if __has_include(<nlohmann/json.hpp>)
#include <gla/io/safetensors.hpp>
#if __has_include(<gla/layers/gated_linear_attention.hpp>)
#include <gla/layers/gated_linear_attention.hpp>
#endif
#endif
