// libFuzzer target: arbitrary bytes as a safetensors file. SafeTensors::from_bytes must either reject them with
// gla::Error or return a file whose every tensor reads back as float and as int64 (or fails with gla::Error), and
// whose tensors and metadata survive a write and a second read unchanged. Any other exception, a crash, a
// sanitizer report or a broken invariant (abort) is a finding.

#include <gla/io/safetensors.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using gla::io::SafeTensors;

[[noreturn]] void broken(const char* what, const std::string& name) {
  std::fprintf(stderr, "fuzz_safetensors: invariant broken: %s (tensor '%s')\n", what, name.c_str());
  std::abort();
}

void expect(bool ok, const char* what, const std::string& name) {
  if (!ok) broken(what, name);
}

/// Reads the tensor as T at rank R. A rank other than the stored one, or (for int64) a value that is not an exact
/// integer, is a gla::Error; anything else must succeed with the stored shape.
template <class T, int R>
void read_at_rank(const SafeTensors& f, const std::string& name) {
  const gla::io::TensorInfo& info = f.info(name);
  try {
    const gla::Tensor<T, R> t = f.template get<T, R>(name);
    expect(info.shape.size() == static_cast<std::size_t>(R), "a read at the wrong rank succeeded", name);
    for (int i = 0; i < R; ++i)
      expect(t.dimension(i) == info.shape[static_cast<std::size_t>(i)], "a read changed the shape", name);
    expect(t.size() == info.numel(), "a read changed the element count", name);
  } catch (const gla::Error&) {
    const bool wrong_rank = info.shape.size() != static_cast<std::size_t>(R);
    const bool maybe_inexact = std::is_same_v<T, std::int64_t> && info.dtype != gla::io::DType::I64;
    expect(wrong_rank || maybe_inexact, "a read failed that should not", name);
  }
}

template <class T>
void read_every_rank(const SafeTensors& f, const std::string& name) {
  read_at_rank<T, 0>(f, name);
  read_at_rank<T, 1>(f, name);
  read_at_rank<T, 2>(f, name);
  read_at_rank<T, 3>(f, name);
  read_at_rank<T, 4>(f, name);
}

void check_file(const SafeTensors& f, std::size_t size) {
  for (const std::string& name : f.names()) {
    const gla::io::TensorInfo& info = f.info(name);
    const gla::io::ByteView raw = f.raw(name);
    expect(info.begin <= info.end && info.end <= size, "a byte range outside the file", name);
    expect(raw.size == static_cast<std::size_t>(info.numel()) * gla::io::dtype_size(info.dtype),
           "a byte count that does not match the shape", name);
    read_every_rank<float>(f, name);
    read_every_rank<std::int64_t>(f, name);
    if (info.shape.size() == 1) {
      try {
        expect(f.get_int64_vector(name).size() == static_cast<std::size_t>(info.numel()),
               "get_int64_vector changed the element count", name);
      } catch (const gla::Error&) {
        expect(info.dtype != gla::io::DType::I64, "get_int64_vector failed on an I64 tensor", name);
      }
    }
  }

  // Write what was read and read it again: the same names, dtypes, shapes, bytes and metadata.
  gla::io::StateDict d;
  try {
    d = gla::io::StateDict::from_safetensors(f);
  } catch (const gla::Error&) {
    expect(f.contains(""), "StateDict::from_safetensors failed, but no tensor name is empty", "");
    return;  // an empty tensor name cannot be a state-dict key
  }
  const SafeTensors again = SafeTensors::from_bytes(gla::io::to_safetensors_bytes(d, f.metadata()), "rewritten");
  expect(again.names() == f.names(), "a rewrite changed the names", "");
  expect(again.metadata() == f.metadata(), "a rewrite changed the metadata", "");
  for (const std::string& name : f.names()) {
    const gla::io::ByteView a = f.raw(name), b = again.raw(name);
    expect(again.info(name).dtype == f.info(name).dtype && again.info(name).shape == f.info(name).shape,
           "a rewrite changed a dtype or shape", name);
    expect(a.size == b.size && (a.size == 0 || std::memcmp(a.data, b.data, a.size) == 0),
           "a rewrite changed the bytes", name);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::optional<SafeTensors> f;
  try {
    f.emplace(SafeTensors::from_bytes(std::vector<std::uint8_t>(data, data + size), "fuzz-input"));
  } catch (const gla::Error&) {
    return 0;  // rejected: fine
  }
  check_file(*f, size);
  return 0;
}
