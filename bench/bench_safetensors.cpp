// bench/bench_safetensors.cpp: opening a safetensors file whose header has many entries (16k, 48k and 1M tiny
// F32 tensors), i.e. the cost of parsing and validating the JSON header, which a hostile or merely large file
// controls; and writing such a file from a StateDict. The file is built in memory once per size; each read
// iteration copies its bytes and runs SafeTensors::from_bytes on them (the copy is outside the timing).

#include <gla/io/safetensors.hpp>

#include "bench_common.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace {

using gla::Index;

/// A file of n one-element F32 tensors "layers.<i>.w" at consecutive offsets, with a short __metadata__.
std::vector<std::uint8_t> many_entries_file(Index n) {
  std::string h = R"({"__metadata__":{"format":"pt"})";
  h.reserve(static_cast<std::size_t>(n) * 64 + 64);
  for (Index i = 0; i < n; ++i) {
    const std::string b = std::to_string(4 * i), e = std::to_string(4 * i + 4);
    h += ",\"layers." + std::to_string(i) + ".w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" + b + "," + e +
         "]}";
  }
  h += "}";
  h.append((8 - h.size() % 8) % 8, ' ');
  std::vector<std::uint8_t> out(8 + h.size() + 4 * static_cast<std::size_t>(n), 0);
  const std::uint64_t len = h.size();
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(len >> (8 * i));
  std::copy(h.begin(), h.end(), out.begin() + 8);
  return out;
}

const std::vector<std::uint8_t>& file_of(Index n) {
  static std::map<Index, std::vector<std::uint8_t>> cache;
  auto& slot = cache[n];
  if (slot.empty()) slot = many_entries_file(n);
  return slot;
}

void parse_header(benchmark::State& st) {
  const Index n = st.range(0);
  const std::vector<std::uint8_t>& file = file_of(n);
  const gla::bench::ProcessMeter meter;
  for (auto _ : st) {
    st.PauseTiming();
    std::vector<std::uint8_t> bytes = file;
    st.ResumeTiming();
    const gla::io::SafeTensors f = gla::io::SafeTensors::from_bytes(std::move(bytes), "bench.safetensors");
    if (f.size() != static_cast<std::size_t>(n)) st.SkipWithError("wrong number of tensors");
    benchmark::DoNotOptimize(&f);
  }
  meter.report(st);
  st.counters["entries/s"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["header_MB"] =
      benchmark::Counter(static_cast<double>(file.size() - 4 * static_cast<std::size_t>(n)) / 1e6);
}

/// to_safetensors_bytes() of a StateDict holding the same n tensors.
void write_header(benchmark::State& st) {
  const Index n = st.range(0);
  const gla::io::StateDict d = gla::io::StateDict::from_safetensors(
      gla::io::SafeTensors::from_bytes(file_of(n), "bench.safetensors"));
  const gla::bench::ProcessMeter meter;
  for (auto _ : st) {
    std::vector<std::uint8_t> bytes = gla::io::to_safetensors_bytes(d);
    benchmark::DoNotOptimize(bytes.data());
  }
  meter.report(st);
  st.counters["entries/s"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::RegisterBenchmark("safetensors_header", parse_header)
      ->Arg(16000)
      ->Arg(48000)
      ->Arg(1000000)
      ->Apply(gla::bench::configure);
  benchmark::RegisterBenchmark("safetensors_write", write_header)
      ->Arg(16000)
      ->Arg(48000)
      ->Arg(1000000)
      ->Apply(gla::bench::configure);
  return gla::bench::run_main(argc, argv);
}
