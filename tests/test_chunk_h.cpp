// chunk_fwd_h: the state before every chunk for each gate mode (g, g_gamma, gk, gv, combined), varlen and
// state_v_first, against a float64 token-by-token recurrence.

#include <gla/chunk_h.hpp>
#include <gla/cumsum.hpp>

#include "support/catch.hpp"
#include "support/test_utils.hpp"

using namespace gla;

namespace {

struct Modes {
  bool g = false, gamma = false, gk = false, gv = false;
};

struct Problem {
  Index B, T, H, K, V;
  std::vector<std::int64_t> cu;
  int chunk = 64;
  Tensor<float, 4> k, v, gk_raw, gv_raw, h0;
  Tensor<float, 3> g_raw;
  Tensor<float, 1> gamma;
};

Problem make(Index B, Index T, Index H, Index K, Index V, std::vector<std::int64_t> cu, std::uint64_t seed) {
  auto rng = gla::test::rng(seed);
  Problem p{B, T, H, K, V, std::move(cu), 64, {}, {}, {}, {}, {}, {}, {}};
  p.k = Tensor<float, 4>(B, T, H, K);
  p.v = Tensor<float, 4>(B, T, H, V);
  p.gk_raw = Tensor<float, 4>(B, T, H, K);
  p.gv_raw = Tensor<float, 4>(B, T, H, V);
  p.g_raw = Tensor<float, 3>(B, T, H);
  p.gamma = Tensor<float, 1>(H);
  const Index N = p.cu.empty() ? B : static_cast<Index>(p.cu.size()) - 1;
  p.h0 = Tensor<float, 4>(N, H, K, V);
  gla::test::fill_uniform(p.k, rng);
  gla::test::fill_normal(p.v, rng);
  gla::test::fill_gate(p.gk_raw, rng, 4.0);
  gla::test::fill_gate(p.gv_raw, rng, 4.0);
  gla::test::fill_gate(p.g_raw, rng, 2.0);
  gla::test::fill_uniform(p.gamma, rng, -0.3, -0.01);
  gla::test::fill_normal(p.h0, rng);
  return p;
}

/// Reference: [ΣNT,H,K,V] states before each chunk and [N,H,K,V] final states, in double, K-first.
std::pair<std::vector<double>, std::vector<double>> reference(const Problem& p, const Modes& m) {
  const auto seqs = detail::make_sequences(p.B, p.T, p.cu);
  std::vector<double> h, ht;
  std::vector<std::vector<double>> per_seq_h(seqs.size());
  for (std::size_t n = 0; n < seqs.size(); ++n) {
    const auto sq = seqs[n];
    const Index NT = (sq.len + p.chunk - 1) / p.chunk;
    per_seq_h[n].assign(static_cast<std::size_t>(NT * p.H * p.K * p.V), 0.0);
    for (Index hh = 0; hh < p.H; ++hh) {
      std::vector<double> S(static_cast<std::size_t>(p.K * p.V));
      for (Index i = 0; i < p.K * p.V; ++i) S[static_cast<std::size_t>(i)] = p.h0.data()[(static_cast<Index>(n) * p.H + hh) * p.K * p.V + i];
      for (Index t = 0; t < sq.len; ++t) {
        if (t % p.chunk == 0)
          std::copy(S.begin(), S.end(), per_seq_h[n].begin() + ((t / p.chunk) * p.H + hh) * p.K * p.V);
        const Index row = sq.b * p.T + sq.t0 + t;
        double sc = 0;
        if (m.g) sc += p.g_raw(sq.b, sq.t0 + t, hh);
        if (m.gamma) sc += p.gamma(hh);
        for (Index a = 0; a < p.K; ++a)
          for (Index c = 0; c < p.V; ++c) {
            double d = std::exp(sc);
            if (m.gk) d *= std::exp(static_cast<double>(p.gk_raw.data()[(row * p.H + hh) * p.K + a]));
            if (m.gv) d *= std::exp(static_cast<double>(p.gv_raw.data()[(row * p.H + hh) * p.V + c]));
            double& s = S[static_cast<std::size_t>(a * p.V + c)];
            s = s * d + static_cast<double>(p.k.data()[(row * p.H + hh) * p.K + a]) *
                            static_cast<double>(p.v.data()[(row * p.H + hh) * p.V + c]);
          }
      }
      ht.insert(ht.end(), S.begin(), S.end());
    }
    h.insert(h.end(), per_seq_h[n].begin(), per_seq_h[n].end());
  }
  // ht was appended per (n, h) in order: already [N,H,K,V].
  return {h, ht};
}

}  // namespace

TEST_CASE("chunk_fwd_h: every gate mode against the float64 recurrence", "[chunk_h]") {
  const int mode = GENERATE(0, 1, 2, 3, 4, 5);  // g, g_gamma, gk, gv, gk+gv, all
  const std::vector<std::int64_t> cu = GENERATE(std::vector<std::int64_t>{}, std::vector<std::int64_t>{0, 70, 71, 71, 300});
  const bool v_first = GENERATE(false, true);
  Modes m;
  m.g = mode == 0 || mode == 5;
  m.gamma = mode == 1 || mode == 5;
  m.gk = mode == 2 || mode == 4 || mode == 5;
  m.gv = mode == 3 || mode == 4 || mode == 5;
  const Index B = cu.empty() ? 2 : 1;
  const Problem p = make(B, 300, 2, 24, 20, cu, static_cast<std::uint64_t>(mode * 10 + cu.size()));
  ChunkHGates gates;
  Tensor<float, 3> gc;
  Tensor<float, 4> gkc, gvc;
  if (m.g) gates.g.emplace(view(gc = chunk_local_cumsum(view(p.g_raw), 64, false, {}, cu)));
  if (m.gk) gates.gk.emplace(view(gkc = chunk_local_cumsum(view(p.gk_raw), 64, false, {}, cu)));
  if (m.gv) gates.gv.emplace(view(gvc = chunk_local_cumsum(view(p.gv_raw), 64, false, {}, cu)));
  if (m.gamma) gates.g_gamma.emplace(view(p.gamma));
  // The same initial state in the V-first layout when state_v_first is on.
  const Tensor<float, 4> h0_vfirst = p.h0.shuffle(std::array<int, 4>{0, 1, 3, 2});
  GLAOptions opts;
  opts.initial_state = v_first ? h0_vfirst : p.h0;
  opts.output_final_state = true;
  opts.state_v_first = v_first;
  opts.cu_seqlens = cu;
  const ChunkHResult r = chunk_fwd_h(view(p.k), view(p.v), gates, opts);
  // Back to K-first for the comparison.
  const Tensor<float, 5> h = v_first ? Tensor<float, 5>(r.h.shuffle(std::array<int, 5>{0, 1, 2, 4, 3})) : r.h;
  const Tensor<float, 4> ht =
      v_first ? Tensor<float, 4>(r.final_state->shuffle(std::array<int, 4>{0, 1, 3, 2})) : *r.final_state;
  const auto [h_ref, ht_ref] = reference(p, m);
  REQUIRE(static_cast<std::size_t>(h.size()) == h_ref.size());
  const auto dh = gla::test::compare_ptr(h.data(), h_ref.data(), h.size());
  const auto dt = gla::test::compare_ptr(ht.data(), ht_ref.data(), ht.size());
  INFO("mode " << mode << " v_first " << v_first << " h: " << dh.str() << " ht: " << dt.str());
  CHECK(gla::test::ok(dh, 1e-5));
  CHECK(gla::test::ok(dt, 1e-5));
  // Chunks per sequence: 300 → 5 (fixed); 70, 1, 0, 229 → 2 + 1 + 0 + 4 (varlen).
  CHECK(h.dimension(1) == (cu.empty() ? 5 : 7));
}

TEST_CASE("chunk_fwd_h: bad arguments raise gla::Error", "[chunk_h][errors]") {
  Problem p = make(2, 20, 2, 8, 4, {}, 3);
  ChunkHGates gates;
  Tensor<float, 4> gk_bad(2, 20, 2, 7);
  gk_bad.setZero();
  gates.gk.emplace(view(gk_bad));
  CHECK_GLA_ERROR("chunk_fwd_h: gk is [2,20,2,7], expected [B=2,T=20,H=2,K=8]", chunk_fwd_h(view(p.k), view(p.v), gates));
  ChunkHGates g2;
  Tensor<float, 1> gamma(3);
  gamma.setZero();
  g2.g_gamma.emplace(view(gamma));
  CHECK_GLA_ERROR("g_gamma is [3], expected [H=2]", chunk_fwd_h(view(p.k), view(p.v), g2));
  GLAOptions o;
  o.chunk_size = 24;
  CHECK_GLA_ERROR("chunk_size is 24, expected a power of two in [16, 256]", chunk_fwd_h(view(p.k), view(p.v), ChunkHGates{}, o));
  GLAOptions o2;
  o2.chunk_size = 8;
  CHECK_GLA_ERROR("chunk_size is 8", chunk_fwd_h(view(p.k), view(p.v), ChunkHGates{}, o2));
}

TEST_CASE("store_state_tile: K-first and V-first tiles, streamed or not, at any alignment and width",
          "[chunk_h][store]") {
  // The states chunk_fwd_h returns and the chunked forwards keep are written tile by tile through this one
  // function; V-first float tiles go through 16×16 register transposes, with non-temporal stores where a row
  // segment starts a cache line, and scalar edges. Every element of the destination is checked, so a block
  // written to the wrong place, a dropped edge or a store outside the tile's columns shows.
  auto rng = gla::test::rng(11);
  std::uniform_real_distribution<float> unit(-1.f, 1.f);
  const float sentinel = -777.f;
  struct Shape {
    Index K, V, v0, Vt;
  };
  const std::vector<Shape> shapes{{128, 128, 0, 128}, {128, 128, 64, 64}, {64, 96, 32, 48}, {60, 100, 16, 84},
                                  {100, 60, 0, 60},   {16, 16, 0, 16},    {5, 7, 2, 3},     {17, 33, 16, 17}};
  for (const Shape& sh : shapes)
    for (const bool v_first : {false, true})
      for (const bool streaming : {false, true})
        for (const Index offset : {Index(0), Index(1), Index(8)}) {  // floats past a 64-byte boundary
          std::vector<float> S(static_cast<std::size_t>(sh.K * sh.Vt));
          for (float& x : S) x = unit(rng);
          std::vector<float, Eigen::aligned_allocator<float>> buf(static_cast<std::size_t>(sh.K * sh.V + 16), sentinel);
          float* const p = buf.data() + offset;
          gla::detail::OutputWrites how;
          how.streaming = streaming;
          gla::detail::store_state_tile(S.data(), p, sh.K, sh.V, sh.v0, sh.Vt, v_first, how);
          INFO("K " << sh.K << " V " << sh.V << " v0 " << sh.v0 << " Vt " << sh.Vt << " v_first " << v_first
                    << " streaming " << streaming << " offset " << offset);
          Index wrong = 0;
          for (Index i = 0; i < static_cast<Index>(buf.size()); ++i) {
            const Index e = i - offset;  // element of the [K,V] (or [V,K]) state, if inside it
            float want = sentinel;
            if (e >= 0 && e < sh.K * sh.V) {
              const Index a = v_first ? e % sh.K : e / sh.V, c = v_first ? e / sh.K : e % sh.V;
              if (c >= sh.v0 && c < sh.v0 + sh.Vt) want = S[static_cast<std::size_t>(a * sh.Vt + c - sh.v0)];
            }
            wrong += buf[static_cast<std::size_t>(i)] != want;
          }
          CHECK(wrong == 0);
        }
  // A double tile into float and double states takes the Eigen assignment.
  std::vector<double> Sd(6 * 5);
  for (double& x : Sd) x = unit(rng);
  std::vector<float> pf(6 * 9, sentinel);
  gla::detail::store_state_tile(Sd.data(), pf.data(), 6, 9, 4, 5, /*v_first=*/true);
  for (Index j = 0; j < 9; ++j)
    for (Index a = 0; a < 6; ++a)
      CHECK(pf[static_cast<std::size_t>(j * 6 + a)] ==
            (j >= 4 ? static_cast<float>(Sd[static_cast<std::size_t>(a * 5 + j - 4)]) : sentinel));
}
