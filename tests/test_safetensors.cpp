// Tests of gla::io (safetensors reader/writer, StateDict) and of the golden-data helper gla::test::Golden.

#include <gla/io/safetensors.hpp>

#include "support/catch.hpp"
#include "support/golden.hpp"
#include "support/test_utils.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <vector>

namespace {

using gla::Index;
using gla::io::DType;
using gla::io::SafeTensors;
using gla::io::StateDict;
using Bytes = std::vector<std::uint8_t>;

const std::vector<std::string> kGoldenFiles = {"chunk_h",
                                               "cumsum",
                                               "layer-chunk_default",
                                               "layer-conv_gqa_relu_mask",
                                               "layer-decode_conv",
                                               "layer-no_gate_no_affine",
                                               "layer-short_seq",
                                               "layer-unfused_sigmoid",
                                               "model",
                                               "modules",
                                               "ops-chunk_cases",
                                               "ops-gv_reverse",
                                               "ops-gv_varlen"};

std::string golden_path(const std::string& file) {
  return std::string(GLA_TEST_DATA_DIR) + "/fla/" + file + ".safetensors";
}

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// A file made of a given header text (length prefix computed) followed by data_size zero bytes.
Bytes with_header(const std::string& header, std::size_t data_size = 0) {
  Bytes b(8 + header.size() + data_size, 0);
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) b[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(n >> (8 * i));
  std::copy(header.begin(), header.end(), b.begin() + 8);
  return b;
}

void set_header_length(Bytes& b, std::uint64_t n) {
  for (int i = 0; i < 8; ++i) b[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(n >> (8 * i));
}

std::uint64_t header_length(const Bytes& b) {
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | b[static_cast<std::size_t>(i)];
  return n;
}

SafeTensors parse(const Bytes& b) { return SafeTensors::from_bytes(b, "crafted.safetensors"); }

/// The rank-R read of a tensor as double, flattened (R chosen at run time from the stored rank).
template <int R>
std::vector<double> read_rank(const SafeTensors& f, const std::string& name) {
  const auto t = f.get<double, R>(name);
  for (int i = 0; i < R; ++i) REQUIRE(t.dimension(i) == f.info(name).shape[static_cast<std::size_t>(i)]);
  return std::vector<double>(t.data(), t.data() + t.size());
}

std::vector<double> read_any_rank(const SafeTensors& f, const std::string& name) {
  switch (f.info(name).shape.size()) {
    case 0:
      return read_rank<0>(f, name);
    case 1:
      return read_rank<1>(f, name);
    case 2:
      return read_rank<2>(f, name);
    case 3:
      return read_rank<3>(f, name);
    case 4:
      return read_rank<4>(f, name);
    case 5:
      return read_rank<5>(f, name);
    case 6:
      return read_rank<6>(f, name);
  }
  FAIL("unexpected rank " << f.info(name).shape.size() << " of " << name);
  return {};
}

/// A path in the temp directory unique to this run.
std::filesystem::path temp_path(const std::string& stem) {
  std::random_device rd;
  return std::filesystem::temp_directory_path() /
         ("gla_test_safetensors_" + stem + "_" + std::to_string(rd()) + std::to_string(rd()) + ".safetensors");
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Golden files

TEST_CASE("every golden file opens and every tensor reads back with consistent sizes and finite values",
          "[safetensors][golden]") {
  for (const std::string& file : kGoldenFiles) {
    INFO(file);
    const gla::test::Golden g(file);
    const SafeTensors& f = g.file();
    REQUIRE(f.size() > 0);
    REQUIRE(!g.cases().empty());
    std::size_t in_cases = 0;
    for (const std::string& c : g.cases()) {
      INFO(c);
      CHECK(g.meta(c).is_object());
      CHECK(!g.names(c).empty());
      in_cases += g.names(c).size();
      for (const std::string& n : g.names(c)) CHECK(g.has(c + "." + n));
    }
    CHECK(in_cases == f.size());  // every tensor belongs to a case of __metadata__

    std::size_t covered = 0;
    for (const std::string& name : f.names()) {
      INFO(name);
      const gla::io::TensorInfo& ti = f.info(name);
      CHECK(ti.name == name);
      CHECK(ti.end - ti.begin == static_cast<std::size_t>(ti.numel()) * gla::io::dtype_size(ti.dtype));
      CHECK(f.raw(name).size == ti.end - ti.begin);
      covered += ti.end - ti.begin;
      const std::vector<double> v = read_any_rank(f, name);
      CHECK(static_cast<Index>(v.size()) == ti.numel());
      if (ti.dtype == DType::I64) {
        if (ti.shape.size() == 1) CHECK(g.ints(name).size() == v.size());
      } else {
        CHECK(ti.dtype == DType::F32);
        Index bad = 0;
        for (double x : v) bad += std::isfinite(x) ? 0 : 1;
        CHECK(bad == 0);
      }
    }
    // The tensors tile the data section exactly (no gaps, since nothing overlaps).
    const Bytes bytes = read_file(golden_path(file));
    CHECK(covered == bytes.size() - 8 - header_length(bytes));
  }
}

TEST_CASE("Golden: metadata, integer tensors and typed reads", "[safetensors][golden]") {
  const gla::test::Golden g("modules");
  CHECK(g.cases() ==
        std::vector<std::string>{"conv_fixed", "conv_varlen", "norm_gated_sigmoid", "norm_gated_swish", "rmsnorm"});
  const nlohmann::json m = g.meta("conv_varlen");
  CHECK(m.at("D").get<int>() == 96);
  CHECK(m.at("cu_seqlens").get<std::vector<std::int64_t>>() == std::vector<std::int64_t>{0, 3, 40, 77});
  CHECK(g.ints("conv_varlen.cu_seqlens") == std::vector<std::int64_t>{0, 3, 40, 77});
  CHECK(g.file().info("conv_varlen.cu_seqlens").dtype == DType::I64);

  const auto cache = g.get<float, 3>("conv_fixed.cache");
  CHECK(cache.dimension(0) == 2);
  CHECK(cache.dimension(1) == 96);
  CHECK(cache.dimension(2) == 4);
  // A float read as double is exact.
  const auto cache_d = g.get<double, 3>("conv_fixed.cache");
  for (Index i = 0; i < cache.size(); ++i) REQUIRE(static_cast<double>(cache.data()[i]) == cache_d.data()[i]);

  CHECK_GLA_ERROR("no case 'nope' in", g.meta("nope"));
  CHECK_GLA_ERROR("no tensor 'conv_fixed.nope'", g.get<float, 1>("conv_fixed.nope"));
  CHECK_GLA_ERROR("is [2,96,4] (rank 3), expected rank 4", g.get<float, 4>("conv_fixed.cache"));
  CHECK_GLA_ERROR("no-such-file.safetensors", gla::test::Golden("no-such-file"));
}

// ---------------------------------------------------------------------------------------------------------------
// Writing and round trips

TEST_CASE("round trip of every dtype is bit-exact, with a padded header and ordered offsets", "[safetensors][write]") {
  auto g = gla::test::rng(71);
  gla::Tensor<float, 3> f32(2, 3, 5);
  gla::test::fill_normal(f32, g);
  gla::Tensor<double, 2> f64(4, 7);
  gla::test::fill_normal(f64, g);
  gla::Tensor<Eigen::half, 1> f16(11);
  gla::test::fill_normal(f16, g);
  gla::Tensor<Eigen::bfloat16, 4> bf16(1, 2, 3, 4);
  gla::test::fill_normal(bf16, g);
  gla::Tensor<std::int64_t, 1> i64(5);
  i64.setValues({0, -1, std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max(), 42});
  gla::Tensor<float, 0> scalar;
  scalar() = 2.5f;
  gla::Tensor<float, 2> empty(0, 3);

  StateDict d;
  d.set("b.f64", f64);
  d.set("a.f32", f32);
  d.set("c.f16", f16);
  d.set("d.bf16", bf16);
  d.set("e.i64", i64);
  d.set("f.scalar", scalar);
  d.set("g.empty", empty);
  CHECK(d.dtype("a.f32") == DType::F32);
  CHECK(d.dtype("b.f64") == DType::F64);
  CHECK(d.dtype("c.f16") == DType::F16);
  CHECK(d.dtype("d.bf16") == DType::BF16);
  CHECK(d.dtype("e.i64") == DType::I64);
  CHECK(d.shape("d.bf16") == std::vector<Index>{1, 2, 3, 4});
  CHECK(d.shape("f.scalar").empty());

  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "{\"json\": [1, 2]}"}};
  const Bytes bytes = gla::io::to_safetensors_bytes(d, meta);
  const std::uint64_t n = header_length(bytes);
  CHECK(n % 8 == 0);
  CHECK((8 + n) % 8 == 0);  // the data section starts 8-byte aligned
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  CHECK(header.find('\n') == std::string::npos);
  const std::size_t last = header.find_last_not_of(' ');  // the JSON, then fewer than 8 spaces of padding
  CHECK(header[last] == '}');
  CHECK(header.size() - 1 - last < 8);

  const SafeTensors f = SafeTensors::from_bytes(bytes);
  CHECK(f.metadata() == meta);
  CHECK(f.names() == d.names());
  std::size_t prev_end = 0;
  for (const std::string& name : f.names()) {  // offsets follow the (sorted) name order and tile the data
    CHECK(f.info(name).begin == prev_end);
    prev_end = f.info(name).end;
    CHECK(f.info(name).dtype == d.dtype(name));
    CHECK(f.info(name).shape == d.shape(name));
    const gla::io::ByteView raw = f.raw(name);
    CHECK(Bytes(raw.data, raw.data + raw.size) == d.bytes(name));
  }
  CHECK(prev_end == bytes.size() - 8 - n);

  const auto r32 = f.get<float, 3>("a.f32");
  CHECK(std::memcmp(r32.data(), f32.data(), sizeof(float) * 30) == 0);
  const auto r64 = f.get<double, 2>("b.f64");
  CHECK(std::memcmp(r64.data(), f64.data(), sizeof(double) * 28) == 0);
  const auto r16 = f.get<Eigen::half, 1>("c.f16");
  CHECK(std::memcmp(r16.data(), f16.data(), 2 * 11) == 0);
  const auto rbf = f.get<Eigen::bfloat16, 4>("d.bf16");
  CHECK(std::memcmp(rbf.data(), bf16.data(), 2 * 24) == 0);
  const auto ri = f.get<std::int64_t, 1>("e.i64");
  CHECK(std::memcmp(ri.data(), i64.data(), 8 * 5) == 0);
  CHECK(f.get<float, 0>("f.scalar")() == 2.5f);
  CHECK(f.get<float, 2>("g.empty").size() == 0);
  CHECK(f.get<float, 2>("g.empty").dimension(1) == 3);

  // Writing what was read reproduces the same bytes.
  CHECK(gla::io::to_safetensors_bytes(StateDict::from_safetensors(f), f.metadata()) == bytes);

  // An empty dict without metadata is a valid file.
  const Bytes nothing = gla::io::to_safetensors_bytes(StateDict{});
  CHECK(nothing.size() == 16);
  CHECK(SafeTensors::from_bytes(nothing).size() == 0);
  CHECK(SafeTensors::from_bytes(nothing).metadata().empty());
}

TEST_CASE("every F16 and BF16 bit pattern survives a round trip, and decodes like Eigen", "[safetensors][write]") {
  gla::Tensor<Eigen::half, 1> h(65536);
  gla::Tensor<Eigen::bfloat16, 1> b(65536);
  for (Index i = 0; i < 65536; ++i) {
    h(i) = Eigen::numext::bit_cast<Eigen::half>(static_cast<std::uint16_t>(i));
    b(i) = Eigen::numext::bit_cast<Eigen::bfloat16>(static_cast<std::uint16_t>(i));
  }
  StateDict d;
  d.set("h", h);
  d.set("b", b);
  const SafeTensors f = SafeTensors::from_bytes(gla::io::to_safetensors_bytes(d));
  const auto h2 = f.get<Eigen::half, 1>("h");
  const auto b2 = f.get<Eigen::bfloat16, 1>("b");
  const auto hf = f.get<float, 1>("h");
  const auto bf = f.get<float, 1>("b");
  Index bit_mismatch = 0, value_mismatch = 0;
  for (Index i = 0; i < 65536; ++i) {
    bit_mismatch += Eigen::numext::bit_cast<std::uint16_t>(h2(i)) != static_cast<std::uint16_t>(i);
    bit_mismatch += Eigen::numext::bit_cast<std::uint16_t>(b2(i)) != static_cast<std::uint16_t>(i);
    const float eh = static_cast<float>(h(i)), eb = static_cast<float>(b(i));
    value_mismatch += !(hf(i) == eh || (std::isnan(hf(i)) && std::isnan(eh)));
    value_mismatch += !(bf(i) == eb || (std::isnan(bf(i)) && std::isnan(eb)));
  }
  CHECK(bit_mismatch == 0);
  CHECK(value_mismatch == 0);
  // A few patterns by value: 1, −2, +inf, the smallest subnormal, and bfloat16's 3.140625.
  CHECK(hf(0x3C00) == 1.0f);
  CHECK(hf(0xC000) == -2.0f);
  CHECK(hf(0x7C00) == std::numeric_limits<float>::infinity());
  CHECK(hf(0x0001) == std::ldexp(1.0f, -24));
  CHECK(bf(0x3F80) == 1.0f);
  CHECK(bf(0x4049) == 3.140625f);
  CHECK(std::isnan(bf(0x7FC0)));
}

TEST_CASE("save_safetensors and load go through the file system", "[safetensors][write]") {
  auto g = gla::test::rng(72);
  gla::Tensor<float, 2> w(3, 4);
  gla::test::fill_uniform(w, g);
  StateDict d;
  d.set("w", w);
  const std::filesystem::path p = temp_path("save");
  gla::io::save_safetensors(p.string(), d, {{"k", "v"}});
  const SafeTensors f = SafeTensors::load(p.string());
  CHECK(f.origin() == p.string());
  CHECK(f.metadata().at("k") == "v");
  CHECK(gla::test::compare(f.get<float, 2>("w"), w).max_abs == 0);
  const StateDict d2 = StateDict::load(p.string());
  CHECK(d2.bytes("w") == d.bytes("w"));
  std::filesystem::remove(p);

  CHECK_GLA_ERROR("gla::io::save_safetensors: cannot open",
                  gla::io::save_safetensors("/nonexistent-dir/x/y.safetensors", d));
  CHECK_GLA_ERROR("/nonexistent-dir/x/y.safetensors", gla::io::save_safetensors("/nonexistent-dir/x/y.safetensors", d));
  CHECK_GLA_ERROR("gla::io::SafeTensors::load: cannot open '/nonexistent-dir/missing.safetensors'",
                  SafeTensors::load("/nonexistent-dir/missing.safetensors"));
  CHECK_GLA_ERROR("is not a regular file", SafeTensors::load(std::filesystem::temp_directory_path().string()));

  // Names and metadata must be valid UTF-8 to be written as JSON.
  StateDict bad;
  bad.set("bad\xff", w);
  CHECK_GLA_ERROR("gla::io::to_safetensors_bytes: cannot write the header", gla::io::to_safetensors_bytes(bad));
  CHECK_GLA_ERROR("not valid UTF-8", gla::io::to_safetensors_bytes(d, {{"k", "\xc3"}}));
}

// ---------------------------------------------------------------------------------------------------------------
// Conversions

TEST_CASE("reads convert between dtypes and non-integers never become int64", "[safetensors][convert]") {
  StateDict d;
  gla::Tensor<float, 1> f(6);
  f.setValues({1.0f, -2.5f, 3.0e38f, std::numeric_limits<float>::infinity(), 1.0e-40f, 65504.0f});
  d.set("f", f);
  gla::Tensor<double, 1> big(5);
  // ±1e300, 2^128 − 2^103 (half-way between FLT_MAX and 2^128), FLT_MAX + 2^102 (rounds down to FLT_MAX), NaN.
  big.setValues({1e300, -1e300, std::ldexp(1.0, 128) - std::ldexp(1.0, 103),
                 static_cast<double>(std::numeric_limits<float>::max()) + std::ldexp(1.0, 102), std::nan("")});
  d.set("big", big);
  gla::Tensor<std::int64_t, 1> ints(4);
  ints.setValues({3, -7, (std::int64_t{1} << 53) + 1, 0});
  d.set("ints", ints);
  gla::Tensor<float, 1> whole(3);
  whole.setValues({0.0f, 15.0f, -100.0f});
  d.set("whole", whole);

  SECTION("float → double, half, bfloat16") {
    const auto fd = d.get<double, 1>("f");
    for (Index i = 0; i < 6; ++i) CHECK(fd(i) == static_cast<double>(f(i)));
    const auto fh = d.get<Eigen::half, 1>("f");
    for (Index i = 0; i < 6; ++i)
      CHECK(Eigen::numext::bit_cast<std::uint16_t>(fh(i)) == Eigen::numext::bit_cast<std::uint16_t>(Eigen::half(f(i))));
    CHECK(static_cast<float>(fh(0)) == 1.0f);
    CHECK(std::isinf(static_cast<float>(fh(2))));  // 3e38 overflows half
    CHECK(static_cast<float>(fh(5)) == 65504.0f);
    const auto fb = d.get<Eigen::bfloat16, 1>("f");
    for (Index i = 0; i < 6; ++i)
      CHECK(Eigen::numext::bit_cast<std::uint16_t>(fb(i)) ==
            Eigen::numext::bit_cast<std::uint16_t>(Eigen::bfloat16(f(i))));
  }
  SECTION("double → float saturates to inf like IEEE rounding, with no undefined behaviour") {
    const auto bf = d.get<float, 1>("big");
    CHECK(bf(0) == std::numeric_limits<float>::infinity());
    CHECK(bf(1) == -std::numeric_limits<float>::infinity());
    CHECK(bf(2) == std::numeric_limits<float>::infinity());  // 2^128 − 2^103: the tie rounds up to inf
    CHECK(bf(3) == std::numeric_limits<float>::max());
    CHECK(std::isnan(bf(4)));
    CHECK(std::isinf(static_cast<float>(d.get<Eigen::half, 1>("big")(0))));
  }
  SECTION("int64 → floating rounds to nearest") {
    const auto id = d.get<double, 1>("ints");
    CHECK(id(0) == 3.0);
    CHECK(id(1) == -7.0);
    CHECK(id(2) == 9007199254740992.0);
    CHECK(d.get<float, 1>("ints")(1) == -7.0f);
    CHECK(static_cast<float>(d.get<Eigen::bfloat16, 1>("ints")(0)) == 3.0f);
  }
  SECTION("floating → int64 only for exact integers") {
    const auto wi = d.get<std::int64_t, 1>("whole");
    CHECK(wi(1) == 15);
    CHECK(wi(2) == -100);
    CHECK_GLA_ERROR("gla::io::StateDict::get: state-dict tensor 'f' element 1 is -2.5, which is not an exact int64",
                    d.get<std::int64_t, 1>("f"));
    CHECK_GLA_ERROR("'big' element 0 is 1.0000000000000001e+300", d.get<std::int64_t, 1>("big"));
    gla::Tensor<double, 1> nan(1);
    nan(0) = std::nan("");
    StateDict dn;
    dn.set("nan", nan);
    CHECK_GLA_ERROR("not an exact int64", dn.get<std::int64_t, 1>("nan"));
    gla::Tensor<double, 1> edge(2);
    edge.setValues({-9223372036854775808.0, 9223372036854775808.0});
    StateDict de;
    de.set("edge", edge);
    CHECK_GLA_ERROR("element 1", de.get<std::int64_t, 1>("edge"));  // 2^63 is out of range, −2^63 is not
  }
  SECTION("get_int64_vector takes I64 or exactly-integral floats, rank 1 only") {
    const SafeTensors f2 = SafeTensors::from_bytes(gla::io::to_safetensors_bytes(d), "conv.safetensors");
    CHECK(f2.get_int64_vector("ints") == std::vector<std::int64_t>{3, -7, (std::int64_t{1} << 53) + 1, 0});
    CHECK(f2.get_int64_vector("whole") == std::vector<std::int64_t>{0, 15, -100});
    CHECK_GLA_ERROR("gla::io::SafeTensors::get_int64_vector: tensor 'f' in conv.safetensors element 1 is -2.5",
                    f2.get_int64_vector("f"));
    gla::Tensor<std::int64_t, 2> mat(2, 2);
    mat.setZero();
    StateDict m;
    m.set("m", mat);
    const SafeTensors f3 = SafeTensors::from_bytes(gla::io::to_safetensors_bytes(m), "m.safetensors");
    CHECK_GLA_ERROR("tensor 'm' in m.safetensors is [2,2] (rank 2), expected rank 1", f3.get_int64_vector("m"));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// StateDict

TEST_CASE("StateDict: prefix stripping, access, replacement and errors", "[safetensors][statedict]") {
  const SafeTensors f = SafeTensors::load(golden_path("layer-short_seq"));
  const StateDict w = StateDict::from_safetensors(f, "short_seq.weight.");
  CHECK(w.size() == 9);
  CHECK(w.contains("q_proj.weight"));
  CHECK(w.contains("gk_proj.1.bias"));
  CHECK(!w.contains("short_seq.weight.q_proj.weight"));
  CHECK(!w.contains("x"));  // outside the prefix
  CHECK(w.shape("q_proj.weight") == std::vector<Index>{128, 256});
  CHECK(w.dtype("q_proj.weight") == DType::F32);
  const auto q = w.get<float, 2>("q_proj.weight");
  const auto q_ref = f.get<float, 2>("short_seq.weight.q_proj.weight");
  CHECK(std::memcmp(q.data(), q_ref.data(), sizeof(float) * static_cast<std::size_t>(q.size())) == 0);
  const auto q_d = w.get<double, 2>("q_proj.weight");
  CHECK(gla::test::compare(q_d, q_ref).max_abs == 0);

  const StateDict all = StateDict::from_safetensors(f);
  CHECK(all.size() == f.size());
  CHECK(StateDict::from_safetensors(f, "no-match.").empty());
  CHECK_GLA_ERROR("gla::io::StateDict::from_safetensors: tensor 'short_seq.x'",
                  StateDict::from_safetensors(f, "short_seq.x"));

  StateDict d = w;
  CHECK(d.erase("q_proj.weight"));
  CHECK(!d.erase("q_proj.weight"));
  CHECK(d.size() == 8);
  CHECK(w.size() == 9);  // a copy is independent
  CHECK_GLA_ERROR("gla::io::StateDict::get: no tensor 'q_proj.weight' in the state dict",
                  d.get<float, 2>("q_proj.weight"));
  CHECK_GLA_ERROR("gla::io::StateDict::dtype: no tensor 'nope'", d.dtype("nope"));
  CHECK_GLA_ERROR("gla::io::StateDict::shape: no tensor 'nope'", d.shape("nope"));
  CHECK_GLA_ERROR("gla::io::StateDict::get: state-dict tensor 'k_proj.weight' is [128,256] (rank 2), expected rank 3",
                  d.get<float, 3>("k_proj.weight"));

  // set() replaces, and changes the dtype to that of the new tensor.
  gla::Tensor<double, 1> v(3);
  v.setValues({1, 2, 3});
  d.set("k_proj.weight", v);
  CHECK(d.dtype("k_proj.weight") == DType::F64);
  CHECK(d.shape("k_proj.weight") == std::vector<Index>{3});
  CHECK(d.get<float, 1>("k_proj.weight")(2) == 3.0f);

  CHECK_GLA_ERROR("gla::io::StateDict::set: \"__metadata__\" is reserved", d.set("__metadata__", v));
  CHECK_GLA_ERROR("gla::io::StateDict::set: the tensor name is empty", d.set("", v));
  CHECK_GLA_ERROR("'r' has 7 bytes, expected 8 (F32 [2])", d.set_raw("r", DType::F32, {2}, Bytes(7)));
  CHECK_GLA_ERROR("negative or overflowing", d.set_raw("r", DType::F32, {-1}, Bytes{}));
  d.set_raw("r", DType::BF16, {2}, Bytes{0x80, 0x3F, 0x00, 0xC0});
  CHECK(d.get<float, 1>("r")(0) == 1.0f);
  CHECK(d.get<float, 1>("r")(1) == -2.0f);
}

// ---------------------------------------------------------------------------------------------------------------
// Malformed files: every check of the reader, from real files cut or edited and from crafted headers

TEST_CASE("malformed: too short, bad header length, truncated data", "[safetensors][malformed]") {
  const Bytes real = read_file(golden_path("modules"));
  REQUIRE(real.size() > 1000);
  const std::uint64_t n = header_length(real);

  CHECK_GLA_ERROR("gla::io::SafeTensors::from_bytes: crafted.safetensors: the file has 0 bytes, expected at least 8",
                  parse(Bytes{}));
  CHECK_GLA_ERROR("the file has 5 bytes, expected at least 8", parse(Bytes(real.begin(), real.begin() + 5)));
  CHECK_GLA_ERROR("the file has 7 bytes", parse(Bytes(7, 0)));

  // The header cut short: its length points past the end of the file.
  CHECK_GLA_ERROR(
      "header length is " + std::to_string(n) + " bytes, but only " + std::to_string(n - 1) + " bytes follow",
      parse(Bytes(real.begin(), real.begin() + 8 + static_cast<std::ptrdiff_t>(n) - 1)));
  CHECK_GLA_ERROR("but only 0 bytes follow", parse(Bytes(real.begin(), real.begin() + 8)));
  Bytes edited = real;
  set_header_length(edited, real.size());
  CHECK_GLA_ERROR("header length is " + std::to_string(real.size()) + " bytes", parse(edited));
  set_header_length(edited, std::numeric_limits<std::uint64_t>::max());
  CHECK_GLA_ERROR("header length is 18446744073709551615 bytes", parse(edited));
  // A shorter header length cuts the JSON.
  set_header_length(edited, n - 10);
  CHECK_GLA_ERROR("the header is not valid JSON", parse(edited));
  // A longer one pulls binary data into the header: nlohmann would stop at its first NUL byte and accept it.
  set_header_length(edited, n + 8);
  CHECK_GLA_ERROR("the header has a NUL byte at offset " + std::to_string(n), parse(edited));
  CHECK_GLA_ERROR("the header has a NUL byte at offset 2", parse(with_header(std::string("{}\0 {\"a\": 1}", 12))));

  // The data section cut short: the last tensor ends past it.
  CHECK_GLA_ERROR("is past the end of the data section (" + std::to_string(real.size() - 8 - n - 1) + " bytes)",
                  parse(Bytes(real.begin(), real.end() - 1)));
  CHECK_NOTHROW(parse(real));
  // Trailing bytes after the last tensor are tolerated (the format does not forbid gaps).
  Bytes longer = real;
  longer.push_back(0);
  CHECK(parse(longer).size() == parse(real).size());
}

TEST_CASE("malformed: the header is not a JSON object of valid entries", "[safetensors][malformed]") {
  CHECK_GLA_ERROR("crafted.safetensors: the header is not valid JSON", parse(with_header("{")));
  CHECK_GLA_ERROR("the header is not valid JSON", parse(with_header("")));
  CHECK_GLA_ERROR("the header is not valid JSON", parse(with_header("not json")));
  CHECK_GLA_ERROR("the header is not valid JSON", parse(with_header("{\"a\": 1} trailing")));
  CHECK_GLA_ERROR("the header has a NUL byte at offset 3", parse(with_header(std::string("{\"a\0\": 1}", 9))));
  CHECK_GLA_ERROR("the header is not valid JSON", parse(with_header("{\"a\x01\": 1}")));  // raw control character
  CHECK_GLA_ERROR("the header is not valid JSON", parse(with_header("{\"\xff\": 1}")));   // invalid UTF-8
  CHECK_GLA_ERROR("the header is a JSON array, expected a JSON object", parse(with_header("[]")));
  CHECK_GLA_ERROR("the header is a JSON number, expected a JSON object", parse(with_header("3")));
  CHECK_GLA_ERROR("the header is a JSON null, expected a JSON object", parse(with_header("null")));
  // Deep nesting is rejected without exhausting the stack.
  const std::size_t depth = 200000;
  CHECK_GLA_ERROR("the header is a JSON array", parse(with_header(std::string(depth, '[') + std::string(depth, ']'))));
  {
    // Unknown fields of an entry are ignored, even deeply nested ones.
    std::string h = "{\"a\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4], \"x\": ";
    for (std::size_t i = 0; i < depth; ++i) h += "{\"k\":";
    h += "0" + std::string(depth, '}') + "}}";
    CHECK(parse(with_header(h, 4)).size() == 1);
  }

  // Padding with spaces, and an empty header object, are fine.
  CHECK(parse(with_header("{}      ")).size() == 0);
  CHECK(parse(with_header("  {}")).size() == 0);

  CHECK_GLA_ERROR("the header has the key 'a' more than once",
                  parse(with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                                        "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                                    8)));
  CHECK_GLA_ERROR(
      "the key 'dtype' more than once",
      parse(with_header(R"({"a": {"dtype": "F32", "dtype": "I64", "shape": [1], "data_offsets": [0, 4]}})", 8)));
  CHECK_GLA_ERROR("the key 'k' more than once", parse(with_header(R"({"__metadata__": {"k": "1", "k": "2"}})")));
}

TEST_CASE("malformed: metadata", "[safetensors][malformed]") {
  CHECK(parse(with_header(R"({"__metadata__": {"a": "1", "b": "{\"x\": 2}"}})")).metadata().at("b") == "{\"x\": 2}");
  CHECK(parse(with_header(R"({"__metadata__": {}})")).metadata().empty());
  CHECK_GLA_ERROR("crafted.safetensors: __metadata__ is a JSON array, expected a JSON object",
                  parse(with_header(R"({"__metadata__": ["a"]})")));
  CHECK_GLA_ERROR("__metadata__ is a JSON string, expected a JSON object",
                  parse(with_header(R"({"__metadata__": "a"})")));
  CHECK_GLA_ERROR("__metadata__ value 'n' is a JSON number, expected a string",
                  parse(with_header(R"({"__metadata__": {"a": "1", "n": 2}})")));
  CHECK_GLA_ERROR("__metadata__ value 'o' is a JSON object, expected a string",
                  parse(with_header(R"({"__metadata__": {"o": {"x": 1}}})")));
  CHECK_GLA_ERROR("__metadata__ value 'z' is a JSON null", parse(with_header(R"({"__metadata__": {"z": null}})")));
}

TEST_CASE("malformed: tensor entries", "[safetensors][malformed]") {
  auto entry = [](const std::string& fields) { return with_header("{\"t\": {" + fields + "}}", 64); };
  const std::string ok_shape = R"("shape": [2, 3])";
  const std::string ok_off = R"("data_offsets": [0, 24])";
  const std::string ok_dtype = R"("dtype": "F32")";
  CHECK(parse(entry(ok_dtype + "," + ok_shape + "," + ok_off)).info("t").shape == std::vector<Index>{2, 3});

  CHECK_GLA_ERROR("crafted.safetensors: tensor 't' is a JSON number, expected a JSON object",
                  parse(with_header(R"({"t": 3})")));
  CHECK_GLA_ERROR("tensor 't' is a JSON array, expected a JSON object", parse(with_header(R"({"t": []})")));

  // Missing fields.
  CHECK_GLA_ERROR("tensor 't' has no \"dtype\"", parse(entry(ok_shape + "," + ok_off)));
  CHECK_GLA_ERROR("tensor 't' has no \"shape\"", parse(entry(ok_dtype + "," + ok_off)));
  CHECK_GLA_ERROR("tensor 't' has no \"data_offsets\"", parse(entry(ok_dtype + "," + ok_shape)));

  // dtype.
  CHECK_GLA_ERROR("tensor 't': dtype is a JSON number, expected a string",
                  parse(entry(R"("dtype": 4,)" + ok_shape + "," + ok_off)));
  CHECK_GLA_ERROR("tensor 't': dtype 'U8' is not supported, expected F32, F16, BF16, F64 or I64",
                  parse(entry(R"("dtype": "U8",)" + ok_shape + "," + ok_off)));
  CHECK_GLA_ERROR("dtype 'f32' is not supported", parse(entry(R"("dtype": "f32",)" + ok_shape + "," + ok_off)));
  CHECK_GLA_ERROR("dtype 'F8_E4M3' is not supported", parse(entry(R"("dtype": "F8_E4M3",)" + ok_shape + "," + ok_off)));
  CHECK_GLA_ERROR("dtype '" + std::string(80, 'X') + "...' is not supported",  // long strings are cut in messages
                  parse(entry("\"dtype\": \"" + std::string(5000, 'X') + "\"," + ok_shape + "," + ok_off)));

  // shape.
  CHECK_GLA_ERROR("tensor 't': shape is a JSON string, expected an array of integers",
                  parse(entry(ok_dtype + R"(, "shape": "2x3", )" + ok_off)));
  CHECK_GLA_ERROR("shape is a JSON object", parse(entry(ok_dtype + R"(, "shape": {"a": 2}, )" + ok_off)));
  CHECK_GLA_ERROR("tensor 't': shape[1] is a JSON number, expected a non-negative integer",
                  parse(entry(ok_dtype + R"(, "shape": [2, 3.0], )" + ok_off)));
  CHECK_GLA_ERROR("shape[0] is a JSON string", parse(entry(ok_dtype + R"(, "shape": ["2", 3], )" + ok_off)));
  CHECK_GLA_ERROR("shape[0] is a JSON null", parse(entry(ok_dtype + R"(, "shape": [null], )" + ok_off)));
  CHECK_GLA_ERROR("shape[1] is -3, expected a non-negative integer",
                  parse(entry(ok_dtype + R"(, "shape": [2, -3], )" + ok_off)));
  CHECK_GLA_ERROR("shape[0] is 9223372036854775808, expected a non-negative integer below 2^63",
                  parse(entry(ok_dtype + R"(, "shape": [9223372036854775808], )" + ok_off)));
  CHECK_GLA_ERROR("shape[0] is a JSON number",  // beyond uint64: parsed as a float
                  parse(entry(ok_dtype + R"(, "shape": [100000000000000000000], )" + ok_off)));
  CHECK_GLA_ERROR("tensor 't': the element count of shape [4294967296,4294967296] overflows",
                  parse(entry(ok_dtype + R"(, "shape": [4294967296, 4294967296], )" + ok_off)));
  CHECK_GLA_ERROR("the element count of shape [9223372036854775807,2,0] overflows",
                  parse(entry(ok_dtype + R"(, "shape": [9223372036854775807, 2, 0], )" + ok_off)));
  // A zero dimension makes an empty tensor; a rank-0 shape one element.
  CHECK(parse(entry(ok_dtype + R"(, "shape": [0, 5], "data_offsets": [3, 3])")).info("t").numel() == 0);
  CHECK(parse(entry(ok_dtype + R"(, "shape": [], "data_offsets": [0, 4])")).get<float, 0>("t")() == 0.0f);

  // data_offsets.
  const std::string what = "tensor 't': data_offsets is ";
  CHECK_GLA_ERROR(what + "'\"0,24\"', expected [begin, end] (non-negative integers)",
                  parse(entry(ok_dtype + "," + ok_shape + R"(, "data_offsets": "0,24")")));
  CHECK_GLA_ERROR(what + "'[24]'", parse(entry(ok_dtype + "," + ok_shape + R"(, "data_offsets": [24])")));
  CHECK_GLA_ERROR(what + "'[0,24,48]'", parse(entry(ok_dtype + "," + ok_shape + R"(, "data_offsets": [0, 24, 48])")));
  CHECK_GLA_ERROR(what + "'[-24,0]'", parse(entry(ok_dtype + "," + ok_shape + R"(, "data_offsets": [-24, 0])")));
  CHECK_GLA_ERROR(what + "'[0.0,24]'", parse(entry(ok_dtype + "," + ok_shape + R"(, "data_offsets": [0.0, 24])")));
  CHECK_GLA_ERROR(what + "'[0,\"24\"]'", parse(entry(ok_dtype + "," + ok_shape + R"(, "data_offsets": [0, "24"])")));
  CHECK_GLA_ERROR(what + "'{\"begin\":0,\"end\":24}'",
                  parse(entry(ok_dtype + "," + ok_shape + R"(, "data_offsets": {"begin": 0, "end": 24})")));
  CHECK_GLA_ERROR("tensor 't': data_offsets [48,24] has begin > end",
                  parse(entry(ok_dtype + "," + ok_shape + R"(, "data_offsets": [48, 24])")));
  CHECK_GLA_ERROR("tensor 't': data_offsets end 88 is past the end of the data section (64 bytes)",
                  parse(entry(ok_dtype + "," + ok_shape + R"(, "data_offsets": [64, 88])")));
  CHECK_GLA_ERROR(
      "data_offsets end 18446744073709551615 is past the end",
      parse(entry(ok_dtype + "," + ok_shape + R"(, "data_offsets": [18446744073709551591, 18446744073709551615])")));
  CHECK_GLA_ERROR("tensor 't' spans 20 bytes, expected 24 (6 elements of F32, shape [2,3])",
                  parse(entry(ok_dtype + "," + ok_shape + R"(, "data_offsets": [0, 20])")));
  CHECK_GLA_ERROR("tensor 't' spans 24 bytes, expected 12 (6 elements of F16, shape [2,3])",
                  parse(entry(R"("dtype": "F16",)" + ok_shape + "," + ok_off)));
  CHECK_GLA_ERROR("tensor 't' spans 24 bytes, expected 48 (6 elements of I64",
                  parse(entry(R"("dtype": "I64",)" + ok_shape + "," + ok_off)));
}

TEST_CASE("malformed: overlapping tensors", "[safetensors][malformed]") {
  const auto two = [](const std::string& a, const std::string& b) {
    return with_header(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": )" + a +
                           R"(}, "b": {"dtype": "F32", "shape": [2], "data_offsets": )" + b + "}}",
                       32);
  };
  CHECK(parse(two("[0, 8]", "[8, 16]")).size() == 2);
  CHECK(parse(two("[8, 16]", "[0, 8]")).size() == 2);
  CHECK(parse(two("[0, 8]", "[24, 32]")).size() == 2);  // gaps are allowed
  CHECK_GLA_ERROR("crafted.safetensors: tensors 'a' [0,8) and 'b' [4,12) overlap", parse(two("[0, 8]", "[4, 12]")));
  CHECK_GLA_ERROR("tensors 'b' [4,12) and 'a' [8,16) overlap", parse(two("[8, 16]", "[4, 12]")));
  CHECK_GLA_ERROR("overlap", parse(two("[0, 8]", "[0, 8]")));
  // An empty tensor occupies no bytes, so it overlaps nothing.
  CHECK(parse(with_header(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                              "e": {"dtype": "F32", "shape": [0], "data_offsets": [8, 8]}})",
                          16))
            .size() == 2);
}

TEST_CASE("lookup errors name the tensor and the file", "[safetensors][malformed]") {
  const SafeTensors f = SafeTensors::load(golden_path("modules"));
  const std::string path = golden_path("modules");
  CHECK(f.contains("conv_fixed.cache"));
  CHECK(!f.contains("conv_fixed.nope"));
  CHECK_GLA_ERROR("gla::io::SafeTensors::info: no tensor 'conv_fixed.nope' in " + path, f.info("conv_fixed.nope"));
  CHECK_GLA_ERROR("gla::io::SafeTensors::raw: no tensor 'x'", f.raw("x"));
  CHECK_GLA_ERROR("gla::io::SafeTensors::get: no tensor 'x' in " + path, f.get<float, 1>("x"));
  CHECK_GLA_ERROR(
      "gla::io::SafeTensors::get: tensor 'conv_fixed.cache' in " + path + " is [2,96,4] (rank 3), expected rank 4",
      f.get<float, 4>("conv_fixed.cache"));
  CHECK_GLA_ERROR("gla::io::SafeTensors::get_int64_vector: no tensor 'x'", f.get_int64_vector("x"));
  CHECK_GLA_ERROR("gla::io::SafeTensors::get_int64_vector: tensor 'conv_fixed.bias' in " + path + " element 0 is",
                  f.get_int64_vector("conv_fixed.bias"));
}

TEST_CASE("duplicate keys are rejected at every depth, and only within one object", "[safetensors][malformed]") {
  const std::string entry = R"("dtype": "F32", "shape": [1], "data_offsets": [0, 4])";
  const auto with_extra = [&](const std::string& extra) {
    return with_header("{\"t\": {" + entry + ", \"x\": " + extra + "}}", 4);
  };
  // Top level: two tensors of one name, and two __metadata__ objects.
  CHECK_GLA_ERROR("crafted.safetensors: the header has the key 't' more than once",
                  parse(with_header("{\"t\": {" + entry + "}, \"u\": {}, \"t\": {" + entry + "}}", 4)));
  CHECK_GLA_ERROR("the header has the key '__metadata__' more than once",
                  parse(with_header(R"({"__metadata__": {"a": "1"}, "__metadata__": {"b": "2"}})")));
  // In __metadata__ and in an entry.
  CHECK_GLA_ERROR("the header has the key 'k' more than once",
                  parse(with_header(R"({"__metadata__": {"j": "0", "k": "1", "l": "2", "k": "1"}})")));
  CHECK_GLA_ERROR("the key 'shape' more than once", parse(with_header("{\"t\": {" + entry + ", \"shape\": [1]}}", 4)));
  // In objects nested in an entry, inside arrays, and deep down.
  CHECK_GLA_ERROR("the key 'b' more than once", parse(with_extra(R"({"a": {"b": 1, "c": {}, "b": 2}})")));
  CHECK_GLA_ERROR("the key 'k' more than once", parse(with_extra(R"([{"k": 1}, [{"k": 1, "k": 1}]])")));
  std::string deep;
  for (int i = 0; i < 5000; ++i) deep += "{\"k\": ";
  deep += R"({"d": 1, "d": 1})" + std::string(5000, '}');
  CHECK_GLA_ERROR("the key 'd' more than once", parse(with_extra(deep)));
  // In a root that is not an object: the duplicate is reported before the root's type.
  CHECK_GLA_ERROR("the header has the key 'a' more than once", parse(with_header(R"([{"a": 1, "a": 2}])")));

  // The same key in sibling objects, at different depths, or as a tensor name and a field name is not a duplicate.
  CHECK(parse(with_extra(R"([{"k": 1}, {"k": 2}, {"k": {"k": {"k": 3}}}])")).size() == 1);
  const SafeTensors named_like_fields = parse(with_header(
      R"({"dtype": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
          "shape": {"dtype": "I64", "shape": [1], "data_offsets": [4, 12]}})",
      12));
  CHECK(named_like_fields.names() == std::vector<std::string>{"dtype", "shape"});
  CHECK(named_like_fields.info("shape").dtype == DType::I64);
}

TEST_CASE("the order of header problems: JSON syntax, duplicate key, root type, then entries in file order",
          "[safetensors][malformed]") {
  // A syntax error anywhere wins over a duplicate or a bad entry before it.
  CHECK_GLA_ERROR("the header is not valid JSON", parse(with_header(R"({"a": 1, "a": 2} x)")));
  CHECK_GLA_ERROR("the header is not valid JSON", parse(with_header(R"({"t": 3, "u": [})")));
  // A duplicate wins over an invalid entry before it.
  CHECK_GLA_ERROR("the key 'k' more than once", parse(with_header(R"({"t": 3, "u": {"k": 1, "k": 2}})")));
  // Entries are checked in the order the file lists them (not sorted by name).
  CHECK_GLA_ERROR("tensor 'b' is a JSON number", parse(with_header(R"({"b": 3, "a": 4})")));
  CHECK_GLA_ERROR("tensor 'a' is a JSON number", parse(with_header(R"({"a": 4, "b": 3})")));
  CHECK_GLA_ERROR("__metadata__ is a JSON number", parse(with_header(R"({"__metadata__": 1, "a": 4})")));
  CHECK_GLA_ERROR("tensor 'a' is a JSON number", parse(with_header(R"({"a": 4, "__metadata__": 1})")));
}

namespace {
/// A file of n one-element F32 tensors "layers.<i>.w" at consecutive offsets, listed in file order i = 0..n−1,
/// with `tail` (e.g. a further entry, starting with a comma) before the closing brace.
Bytes many_entries(std::size_t n, const std::string& tail = "") {
  std::string h = R"({"__metadata__": {"format": "pt"})";
  h.reserve(n * 72 + tail.size() + 64);
  for (std::size_t i = 0; i < n; ++i)
    h += ",\"layers." + std::to_string(i) + ".w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" +
         std::to_string(4 * i) + "," + std::to_string(4 * i + 4) + "]}";
  h += tail + "}";
  Bytes b = with_header(h, 4 * n);
  for (std::size_t i = 0; i < n; ++i) {
    const float v = static_cast<float>(i);
    std::memcpy(b.data() + 8 + h.size() + 4 * i, &v, 4);
  }
  return b;
}
}  // namespace

TEST_CASE("a header of 100k entries opens, and a duplicate at its end is still found", "[safetensors][large]") {
  // Reading time grows as n log n (a timed run with up to 1M entries is bench/bench_safetensors.cpp).
  const std::size_t n = 100000;
  const SafeTensors f = parse(many_entries(n));
  CHECK(f.size() == n);
  CHECK(f.metadata().at("format") == "pt");
  for (std::size_t i : {std::size_t{0}, std::size_t{1}, std::size_t{54321}, n - 1}) {
    const std::string name = "layers." + std::to_string(i) + ".w";
    CHECK(f.info(name).begin == 4 * i);
    CHECK(f.get<float, 1>(name)(0) == static_cast<float>(i));
  }
  CHECK_GLA_ERROR("the header has the key 'layers.7.w' more than once",
                  parse(many_entries(n, R"(,"layers.7.w":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})")));
  CHECK_GLA_ERROR("the header has the key '__metadata__' more than once",
                  parse(many_entries(n, R"(,"__metadata__":{"format":"np"})")));
  CHECK_GLA_ERROR(
      "the header has the key 'f' more than once",
      parse(many_entries(n, R"(,"late":{"dtype":"F32","shape":[0],"data_offsets":[0,0],"x":{"f":1,"f":2}})")));
  CHECK_GLA_ERROR("tensors 'layers.99998.w' [399992,399996) and 'late' [399994,399998) overlap",
                  parse(many_entries(n, R"(,"late":{"dtype":"F16","shape":[2],"data_offsets":[399994,399998]})")));
}

TEST_CASE("the writer's header text, with escaped names, and a 100k-tensor round trip", "[safetensors][write][large]") {
  StateDict d;
  gla::Tensor<float, 2> w(1, 2);
  w.setValues({{1.f, 2.f}});
  d.set("b.\"quoted\"\\", w);
  d.set("a.\xc3\xa9", gla::Tensor<std::int64_t, 1>(0));  // "a.é"
  const Bytes bytes = gla::io::to_safetensors_bytes(d, {{"k", "line\nbreak"}});
  std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(header_length(bytes)));
  CHECK(header.size() % 8 == 0);
  header.erase(header.find_last_not_of(' ') + 1);  // the padding
  CHECK(header ==
        "{\"__metadata__\":{\"k\":\"line\\nbreak\"},"
        "\"a.\xc3\xa9\":{\"dtype\":\"I64\",\"shape\":[0],\"data_offsets\":[0,0]},"
        "\"b.\\\"quoted\\\"\\\\\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[0,8]}}");
  const SafeTensors f = SafeTensors::from_bytes(bytes);
  CHECK(f.get<float, 2>("b.\"quoted\"\\")(0, 1) == 2.f);
  CHECK(f.metadata().at("k") == "line\nbreak");

  // Many tensors: the writer's time grows linearly (it never searches the header it has written so far).
  const std::size_t n = 100000;
  StateDict many;
  gla::Tensor<float, 1> one(1);
  for (std::size_t i = 0; i < n; ++i) {
    one(0) = static_cast<float>(i);
    many.set("t" + std::to_string(i), one);
  }
  const SafeTensors g = SafeTensors::from_bytes(gla::io::to_safetensors_bytes(many));
  REQUIRE(g.size() == n);
  CHECK(g.get<float, 1>("t0")(0) == 0.f);
  CHECK(g.get<float, 1>("t99999")(0) == 99999.f);
  CHECK(g.info("t10").begin == 8);  // offsets in name order: t0, t1, t10, ...
}

TEST_CASE("the fuzzer's seed corpus: valid_* files open and read, invalid_* files are rejected",
          "[safetensors][malformed]") {
  const std::filesystem::path dir = std::filesystem::path(GLA_TEST_DATA_DIR) / ".." / "fuzz" / "corpus" / "safetensors";
  REQUIRE(std::filesystem::is_directory(dir));
  int valid = 0, invalid = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string stem = entry.path().stem().string();
    INFO(stem);
    if (stem.rfind("valid_", 0) == 0) {
      const SafeTensors f = SafeTensors::load(entry.path().string());
      for (const std::string& name : f.names()) CHECK(read_any_rank(f, name).size() == std::size_t(f.info(name).numel()));
      ++valid;
    } else {
      REQUIRE(stem.rfind("invalid_", 0) == 0);
      CHECK_THROWS_AS(SafeTensors::load(entry.path().string()), gla::Error);
      ++invalid;
    }
  }
  CHECK(valid >= 5);
  CHECK(invalid >= 5);
}
