// Tests of gla::io (safetensors reader/writer, StateDict) and of the golden-data helper gla::test::Golden.

#include <gla/io/safetensors.hpp>

#include "support/catch.hpp"
#include "support/golden.hpp"

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace {

using gla::Index;

const std::vector<std::string> kGoldenFiles = {
    "chunk_h",         "cumsum",          "layer-chunk_default", "layer-conv_gqa_relu_mask", "layer-decode_conv",
    "layer-no_gate_no_affine", "layer-short_seq", "layer-unfused_sigmoid", "model", "modules",
    "ops-chunk_cases", "ops-gv_reverse",  "ops-gv_varlen"};

}  // namespace

TEST_CASE("every golden file opens and every tensor reads back finite", "[safetensors][golden]") {
  for (const std::string& file : kGoldenFiles) {
    INFO(file);
    const gla::test::Golden g(file);
    const auto& f = g.file();
    REQUIRE(f.size() > 0);
    REQUIRE(!g.cases().empty());
    for (const std::string& c : g.cases()) {
      INFO(c);
      CHECK(g.meta(c).is_object());
      CHECK(!g.names(c).empty());
    }
    for (const std::string& name : f.names()) {
      INFO(name);
      const gla::io::TensorInfo& ti = f.info(name);
      CHECK(ti.end - ti.begin == static_cast<std::size_t>(ti.numel()) * gla::io::dtype_size(ti.dtype));
      // Read through the generic rank-1 path of a flat copy: reshape the data of the stored rank.
      const gla::io::ByteView raw = f.raw(name);
      gla::io::StateDict d;
      d.set_raw("t", ti.dtype, {ti.numel()}, std::vector<std::uint8_t>(raw.data, raw.data + raw.size));
      if (ti.dtype == gla::io::DType::I64) {
        const auto v = d.get<std::int64_t, 1>("t");
        CHECK(v.size() == ti.numel());
      } else {
        CHECK(ti.dtype == gla::io::DType::F32);
        const auto v = d.get<double, 1>("t");
        Index bad = 0;
        for (Index i = 0; i < v.size(); ++i) bad += std::isfinite(v(i)) ? 0 : 1;
        CHECK(bad == 0);
      }
    }
  }
}
