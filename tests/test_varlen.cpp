// Mask/varlen helpers (fla's layers/utils.py and ops/utils/index.py) and chunk_local_cumsum.

#include <gla/cumsum.hpp>
#include <gla/varlen.hpp>

#include "support/catch.hpp"
#include "support/test_utils.hpp"

using namespace gla;

TEST_CASE("varlen: validate_cu_seqlens accepts fla's forms and rejects the rest", "[varlen]") {
  CHECK_NOTHROW(validate_cu_seqlens({0, 15, 100}, 100));
  CHECK_NOTHROW(validate_cu_seqlens({0, 0, 16}, 16));  // zero-length sequences are legal
  CHECK_NOTHROW(validate_cu_seqlens({0, 0}, 0));
  auto msg = [](const std::vector<std::int64_t>& cu, std::int64_t T) {
    try {
      validate_cu_seqlens(cu, T);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK_THAT(msg({}, 0), GLA_CONTAINS("cu_seqlens has 0 entries"));
  CHECK_THAT(msg({5}, 5), GLA_CONTAINS("expected at least 2"));
  CHECK_THAT(msg({1, 5}, 5), GLA_CONTAINS("cu_seqlens[0] is 1, expected 0"));
  CHECK_THAT(msg({0, 9, 5}, 5), GLA_CONTAINS("not non-decreasing"));
  CHECK_THAT(msg({0, 4}, 5), GLA_CONTAINS("cu_seqlens[N] is 4, expected T = 5"));
  CHECK_THAT(msg({0, 4}, 5), GLA_CONTAINS("validate_cu_seqlens"));
}

TEST_CASE("varlen: chunk indices and offsets match fla's examples", "[varlen]") {
  const auto idx = prepare_chunk_indices({0, 15, 100}, 64);
  REQUIRE(idx.size() == 3);
  CHECK(idx[0] == std::array<std::int64_t, 2>{0, 0});
  CHECK(idx[1] == std::array<std::int64_t, 2>{1, 0});
  CHECK(idx[2] == std::array<std::int64_t, 2>{1, 1});
  CHECK(prepare_chunk_offsets({0, 15, 100}, 64) == std::vector<std::int64_t>{0, 1, 3});
  // Zero-length sequences contribute no chunks.
  CHECK(prepare_chunk_offsets({0, 0, 64, 65}, 64) == std::vector<std::int64_t>{0, 0, 1, 2});
  CHECK(prepare_chunk_indices({0, 0, 16}, 16).size() == 1);
  CHECK(prepare_lens({0, 3, 3, 10}) == std::vector<std::int64_t>{3, 0, 7});
  CHECK(prepare_cu_seqlens_from_lens({3, 0, 7}) == std::vector<std::int64_t>{0, 3, 3, 10});
  CHECK_THROWS_AS(prepare_chunk_indices({0, 5}, 0), Error);
  CHECK_THROWS_AS(prepare_chunk_offsets({0, 5, 3}, 64), Error);
  CHECK_THROWS_AS(prepare_cu_seqlens_from_lens({3, -1}), Error);
}

TEST_CASE("varlen: get_unpad_data, index_first_axis, index_put_first_axis and pad_input round-trip", "[varlen]") {
  // Left-padded rows: [0 1 1 1], [1 1 1 1], [0 0 0 0] (an all-padding row is a zero-length sequence).
  Tensor<std::int64_t, 2> mask(3, 4);
  mask.setValues({{0, 1, 1, 1}, {1, 1, 1, 1}, {0, 0, 0, 0}});
  const UnpadData u = get_unpad_data(view(mask));
  CHECK(u.indices == std::vector<std::int64_t>{1, 2, 3, 4, 5, 6, 7});
  CHECK(u.cu_seqlens == std::vector<std::int64_t>{0, 3, 7, 7});
  CHECK(u.max_seqlen == 4);

  Tensor<float, 3> x(12, 2, 3);  // [(B·S), H, D]
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(i + 1);
  const Tensor<float, 3> packed = index_first_axis(view(x), u.indices);
  REQUIRE(packed.dimension(0) == 7);
  CHECK(packed(0, 0, 0) == x(1, 0, 0));
  CHECK(packed(6, 1, 2) == x(7, 1, 2));
  const Tensor<float, 4> padded = pad_input(view(packed), u.indices, 3, 4);
  for (Index b = 0; b < 3; ++b)
    for (Index s = 0; s < 4; ++s)
      for (Index h = 0; h < 2; ++h)
        for (Index d = 0; d < 3; ++d) CHECK(padded(b, s, h, d) == (mask(b, s) ? x(b * 4 + s, h, d) : 0.0f));

  Tensor<std::int64_t, 2> bad(1, 2);
  bad.setValues({{1, 2}});
  CHECK_GLA_ERROR("expected 0 or 1", get_unpad_data(view(bad)));
  CHECK_GLA_ERROR("indices[1] is 12", index_first_axis(view(x), {0, 12}));
  CHECK_GLA_ERROR("indices has 2 entries", index_put_first_axis(view(packed), {0, 1}, 12));
}

TEST_CASE("cumsum: chunk_local_cumsum against a plain loop, forward and reverse, varlen", "[cumsum]") {
  auto rng = gla::test::rng(77);
  const bool reverse = GENERATE(false, true);
  const std::vector<std::int64_t> cu = GENERATE(std::vector<std::int64_t>{}, std::vector<std::int64_t>{0, 10, 10, 130, 200});
  const int chunk = GENERATE(16, 64);
  Tensor<float, 4> g(1, 200, 2, 5);
  gla::test::fill_gate(g, rng, 1.0);
  const Tensor<float, 4> out = chunk_local_cumsum(view(g), chunk, reverse, 0.5f, cu);
  const std::vector<std::int64_t> bounds = cu.empty() ? std::vector<std::int64_t>{0, 200} : cu;
  double worst = 0;
  for (std::size_t n = 0; n + 1 < bounds.size(); ++n)
    for (std::int64_t t = bounds[n]; t < bounds[n + 1]; ++t) {
      const std::int64_t c0 = bounds[n] + (t - bounds[n]) / chunk * chunk;
      const std::int64_t c1 = std::min<std::int64_t>(c0 + chunk, bounds[n + 1]);
      for (Index h = 0; h < 2; ++h)
        for (Index d = 0; d < 5; ++d) {
          double s = 0;
          for (std::int64_t u = reverse ? t : c0; u < (reverse ? c1 : t + 1); ++u) s += g(0, u, h, d);
          worst = std::max(worst, std::abs(0.5 * s - out(0, t, h, d)));
        }
    }
  CHECK(worst < 1e-5);

  Tensor<double, 3> g3(2, 33, 3);
  gla::test::fill_gate(g3, rng, 1.0);
  const Tensor<float, 3> o3 = chunk_local_cumsum(view(g3), 16);
  CHECK(std::abs(o3(1, 17, 2) - (g3(1, 16, 2) + g3(1, 17, 2))) < 1e-6);
  CHECK(std::abs(o3(1, 32, 0) - g3(1, 32, 0)) < 1e-6);
}

TEST_CASE("cumsum: bad arguments raise gla::Error", "[cumsum][errors]") {
  Tensor<float, 3> g(2, 10, 1);
  g.setZero();
  CHECK_GLA_ERROR("chunk_size is 48", chunk_local_cumsum(view(g), 48));
  CHECK_GLA_ERROR("the batch size is 2, expected 1", chunk_local_cumsum(view(g), 16, false, {}, {0, 10}));
  Tensor<float, 3> g1(1, 10, 1);
  g1.setZero();
  CHECK_GLA_ERROR("cu_seqlens[N] is 11", chunk_local_cumsum(view(g1), 16, false, {}, {0, 11}));
}
