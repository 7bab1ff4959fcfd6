#pragma once
/// gla/gla.hpp: the umbrella header — the version, every GLA operator and its backward, the mask/varlen
/// helpers, the router, the modules, safetensors I/O, the GatedLinearAttention layer and fla's GLA language model
/// (GLAConfig, GLAForCausalLM, checkpoint loading, generate, make_encoder). The SentencePiece tokenizer
/// (gla/models/tokenizer.hpp) is optional and not included here.
///
/// The layer and safetensors I/O parse JSON with nlohmann-json (3.11 or newer), so this header needs it too.
/// Without it, include the operator headers one by one (gla/chunk.hpp, gla/fused_recurrent.hpp, ...):
/// only the headers under gla/io/ and gla/layers/ use nlohmann-json.

#if !__has_include(<nlohmann/json.hpp>)
#error \
    "gla/gla.hpp needs nlohmann-json 3.11 or newer (<nlohmann/json.hpp>) for the layer and safetensors I/O: install it (Debian/Ubuntu: apt-get install nlohmann-json3-dev; CMake: gla::gla brings it when find_package(nlohmann_json) finds it), or include only the operator headers you use (gla/chunk.hpp, ...), which do not need it."
#endif

#include <gla/version.hpp>

#include <gla/chunk.hpp>
#include <gla/chunk_backward.hpp>
#include <gla/chunk_h.hpp>
#include <gla/core.hpp>
#include <gla/cumsum.hpp>
#include <gla/fused_chunk.hpp>
#include <gla/fused_recurrent.hpp>
#include <gla/modules/activations.hpp>
#include <gla/modules/norms.hpp>
#include <gla/modules/short_conv.hpp>
#include <gla/naive.hpp>
#include <gla/router.hpp>
#include <gla/varlen.hpp>
#if __has_include(<nlohmann/json.hpp>)  // else the #error above has stopped the build: one message, not two
#include <gla/io/safetensors.hpp>
#include <gla/layers/gated_linear_attention.hpp>
#include <gla/models/encoder.hpp>
#include <gla/models/generation.hpp>
#include <gla/models/gla_model.hpp>
#endif
