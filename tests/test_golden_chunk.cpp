// Conformance with fla's reference data (tests/data/fla, see tests/data/README.md): chunk_local_cumsum
// (`cumsum`), chunk_fwd_h (`chunk_h`) and the chunk_gla / fused_chunk_gla forward (`ops-chunk_cases`).
// `*_ref` tensors are float64 truth stored as float32; fla's own outputs are compared at ~2e-5.

#include <gla/chunk.hpp>
#include <gla/chunk_h.hpp>
#include <gla/cumsum.hpp>
#include <gla/fused_chunk.hpp>

#include "support/catch.hpp"
#include "support/golden.hpp"
#include "support/test_utils.hpp"

using namespace gla;
using gla::test::compare;
using gla::test::Golden;

namespace {
std::vector<std::int64_t> cu_of(const nlohmann::json& meta) {
  if (meta.at("cu_seqlens").is_null()) return {};
  return meta.at("cu_seqlens").get<std::vector<std::int64_t>>();
}
}  // namespace

TEST_CASE("golden cumsum: chunk_local_cumsum equals fla's out and the float64 out_ref", "[golden][cumsum]") {
  const Golden gd("cumsum");
  for (const std::string& c : gd.cases()) {
    const auto meta = gd.meta(c);
    const bool reverse = meta.at("reverse").get<bool>();
    const int chunk = meta.at("chunk_size").get<int>();
    const auto cu = cu_of(meta);
    const std::size_t rank = meta.at("shape").size();
    gla::test::Diff d_fla, d_ref;
    if (rank == 3) {
      const auto g = gd.get<float, 3>(c + ".g");
      const auto out = chunk_local_cumsum(view(g), chunk, reverse, {}, cu);
      d_fla = compare(out, gd.get<float, 3>(c + ".out"));
      d_ref = compare(out, gd.get<float, 3>(c + ".out_ref"));
    } else {
      const auto g = gd.get<float, 4>(c + ".g");
      const auto out = chunk_local_cumsum(view(g), chunk, reverse, {}, cu);
      d_fla = compare(out, gd.get<float, 4>(c + ".out"));
      d_ref = compare(out, gd.get<float, 4>(c + ".out_ref"));
    }
    INFO(c << " vs fla: " << d_fla.str() << "\n vs ref: " << d_ref.str());
    CHECK(gla::test::ok(d_fla, 2e-5));
    CHECK(gla::test::ok(d_ref, 1e-5));
  }
}

TEST_CASE("golden chunk_h: states before each chunk and final states for every gate mode", "[golden][chunk_h]") {
  const Golden gd("chunk_h");
  for (const std::string& c : gd.cases()) {
    const auto meta = gd.meta(c);
    const std::string mode = meta.at("mode").get<std::string>();
    const int chunk = meta.at("chunk_size").get<int>();
    const auto cu = cu_of(meta);
    const auto k = gd.get<float, 4>(c + ".k");
    const auto v = gd.get<float, 4>(c + ".v");
    const auto h0 = gd.get<float, 4>(c + ".h0");
    // fla stores log2-domain cumsums; ours take natural-log cumsums of the raw per-step gate.
    ChunkHGates gates;
    Tensor<float, 3> g3;
    Tensor<float, 4> g4;
    Tensor<float, 1> gamma;
    if (mode == "g") {
      g3 = chunk_local_cumsum(view(gd.get<float, 3>(c + ".gate_raw")), chunk, false, {}, cu);
      gates.g.emplace(view(g3));
    } else if (mode == "g_gamma") {
      gamma = gd.get<float, 1>(c + ".gate_raw");
      gates.g_gamma.emplace(view(gamma));
    } else {
      g4 = chunk_local_cumsum(view(gd.get<float, 4>(c + ".gate_raw")), chunk, false, {}, cu);
      if (mode == "gk")
        gates.gk.emplace(view(g4));
      else
        gates.gv.emplace(view(g4));
    }
    GLAOptions opts;
    opts.initial_state = h0;
    opts.output_final_state = true;
    opts.cu_seqlens = cu;
    opts.chunk_size = chunk;
    const ChunkHResult r = chunk_fwd_h(view(k), view(v), gates, opts);
    const auto dh_ref = compare(r.h, gd.get<float, 5>(c + ".h_ref"));
    const auto dh_fla = compare(r.h, gd.get<float, 5>(c + ".h"));
    const auto dt_ref = compare(*r.final_state, gd.get<float, 4>(c + ".ht_ref"));
    const auto dt_fla = compare(*r.final_state, gd.get<float, 4>(c + ".ht"));
    INFO(c << " h vs ref " << dh_ref.str() << "\n h vs fla " << dh_fla.str() << "\n ht vs ref " << dt_ref.str()
           << "\n ht vs fla " << dt_fla.str());
    CHECK(gla::test::ok(dh_ref, 1e-5));
    CHECK(gla::test::ok(dt_ref, 1e-5));
    CHECK(gla::test::ok(dh_fla, 2e-5));
    CHECK(gla::test::ok(dt_fla, 2e-5));
  }
}

TEST_CASE("golden ops-chunk_cases: chunk_gla and fused_chunk_gla forward against the float64 truth", "[golden][chunk]") {
  const Golden gd("ops-chunk_cases");
  const bool fused = GENERATE(false, true);
  for (const std::string& c : gd.cases()) {
    const auto meta = gd.meta(c);
    const auto q = gd.get<float, 4>(c + ".q"), k = gd.get<float, 4>(c + ".k"), v = gd.get<float, 4>(c + ".v"),
               g = gd.get<float, 4>(c + ".gk");
    GLAOptions opts;
    opts.scale = meta.at("scale").get<float>();
    opts.cu_seqlens = cu_of(meta);
    opts.output_final_state = true;
    Tensor<float, 4> h0;
    if (meta.at("has_h0").get<bool>()) {
      h0 = gd.get<float, 4>(c + ".h0");
      opts.initial_state = h0;
    }
    const auto r = fused ? fused_chunk_gla(view(q), view(k), view(v), view(g), opts)
                         : chunk_gla(view(q), view(k), view(v), view(g), opts);
    const auto d_o = compare(r.o, gd.get<float, 4>(c + ".o_ref"));
    const auto d_s = compare(*r.final_state, gd.get<float, 4>(c + ".ht_ref"));
    INFO((fused ? "fused_chunk_gla " : "chunk_gla ") << c << "\n o: " << d_o.str() << "\n ht: " << d_s.str());
    // The truth is stored as float32, so agreement is bounded by its rounding (~3e-8) plus ours.
    CHECK(gla::test::ok(d_o, 1e-5));
    CHECK(gla::test::ok(d_s, 1e-5));
  }
}
