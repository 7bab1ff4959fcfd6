#pragma once
/// gla/io/safetensors.hpp: a validating safetensors reader and writer, and StateDict, the name → tensor
/// container that the modules' load_state_dict() reads.

#include <gla/core.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <cerrno>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#define GLA_IO_HAVE_MMAP 1
#else
#define GLA_IO_HAVE_MMAP 0
#endif

// safetensors data is little-endian and is decoded with memcpy, so the host must be little-endian too.
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "gla/io/safetensors.hpp requires a little-endian host");
#endif

namespace gla::io {

/// The element types this library reads and writes (safetensors dtype strings "F32", "F16", "BF16", "F64", "I64").
enum class DType { F32, F16, BF16, F64, I64 };

/// The safetensors spelling of a dtype ("F32", ...).
inline std::string to_string(DType d) {
  switch (d) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
    case DType::F64:
      return "F64";
    case DType::I64:
      return "I64";
  }
  return "?";
}

/// Bytes per element.
inline std::size_t dtype_size(DType d) {
  switch (d) {
    case DType::F16:
    case DType::BF16:
      return 2;
    case DType::F32:
      return 4;
    case DType::F64:
    case DType::I64:
      return 8;
  }
  return 0;
}

/// The dtype named by a safetensors dtype string; empty when this library does not support it.
inline std::optional<DType> parse_dtype(const std::string& s) {
  for (DType d : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64})
    if (to_string(d) == s) return d;
  return std::nullopt;
}

/// True for the element types a tensor can be read as or written from.
template <class T>
inline constexpr bool is_io_scalar_v =
    std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, Eigen::half> ||
    std::is_same_v<T, Eigen::bfloat16> || std::is_same_v<T, std::int64_t>;

/// The dtype a C++ element type is stored as.
template <class T>
constexpr DType dtype_of() {
  static_assert(is_io_scalar_v<T>,
                "gla::io: element type must be float, double, Eigen::half, Eigen::bfloat16 or int64");
  if constexpr (std::is_same_v<T, float>)
    return DType::F32;
  else if constexpr (std::is_same_v<T, double>)
    return DType::F64;
  else if constexpr (std::is_same_v<T, Eigen::half>)
    return DType::F16;
  else if constexpr (std::is_same_v<T, Eigen::bfloat16>)
    return DType::BF16;
  else
    return DType::I64;
}

/// One tensor of a safetensors file: its dtype, shape and byte range [begin, end) in the data section.
struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<Index> shape;
  std::size_t begin = 0, end = 0;
  /// Number of elements (1 for a rank-0 tensor).
  Index numel() const {
    Index n = 1;
    for (Index d : shape) n *= d;
    return n;
  }
};

/// A read-only view of bytes owned elsewhere.
struct ByteView {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
};

namespace detail {

using gla::detail::fail;
using gla::detail::shape_str;

/// Quotes a string for an error message, cut short so a hostile header cannot produce a huge message.
inline std::string quote(const std::string& s) {
  constexpr std::size_t kMax = 80;
  return "'" + (s.size() > kMax ? s.substr(0, kMax) + "..." : s) + "'";
}

inline std::string json_type(const nlohmann::json& j) { return std::string("a JSON ") + j.type_name(); }

inline std::string rank_str(const std::vector<Index>& shape) {
  return shape_str(shape) + " (rank " + std::to_string(shape.size()) + ")";
}

template <class S>
S load_le(const std::uint8_t* p) {
  if constexpr (std::is_same_v<S, Eigen::half> || std::is_same_v<S, Eigen::bfloat16>) {
    std::uint16_t bits;
    std::memcpy(&bits, p, 2);
    return Eigen::numext::bit_cast<S>(bits);
  } else {
    S v;
    std::memcpy(&v, p, sizeof(S));
    return v;
  }
}

template <class S>
void store_le(S v, std::uint8_t* p) {
  if constexpr (std::is_same_v<S, Eigen::half> || std::is_same_v<S, Eigen::bfloat16>) {
    const std::uint16_t bits = Eigen::numext::bit_cast<std::uint16_t>(v);
    std::memcpy(p, &bits, 2);
  } else {
    std::memcpy(p, &v, sizeof(S));
  }
}

/// double → float without UB: out-of-range finite values round to ±max or ±inf as IEEE round-to-nearest does.
inline float narrow_to_float(double d) {
  if (std::isnan(d))
    return std::signbit(d) ? -std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::quiet_NaN();
  constexpr double kMax = static_cast<double>(std::numeric_limits<float>::max());
  constexpr double kOverflow = 340282356779733661637539395458142568448.0;  // 2^128 − 2^103: rounds to inf
  const double a = std::abs(d);
  if (a > kMax) {
    const float r = a >= kOverflow ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::max();
    return d < 0 ? -r : r;
  }
  return static_cast<float>(d);
}

/// A floating value as int64 when it is exactly an integer in range (no UB for NaN/inf/huge values).
inline bool exact_int64(double d, std::int64_t& out) {
  if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return false;
  if (d != std::trunc(d)) return false;
  out = static_cast<std::int64_t>(d);
  return true;
}

template <class S>
double widen(S v) {
  if constexpr (std::is_same_v<S, Eigen::half> || std::is_same_v<S, Eigen::bfloat16>)
    return static_cast<double>(static_cast<float>(v));
  else
    return static_cast<double>(v);
}

/// Converts one stored value to T; false when T = int64 cannot hold it exactly.
/// Same-type reads are bit-exact; half ↔ bfloat16 and double → half/bfloat16 go through float.
template <class T, class S>
bool convert_value(S v, T& out) {
  if constexpr (std::is_same_v<T, S>) {
    out = v;
    return true;
  } else if constexpr (std::is_same_v<T, std::int64_t>) {
    return exact_int64(widen(v), out);
  } else if constexpr (std::is_same_v<T, double>) {
    out = widen(v);  // exact for every source but int64 (rounded to nearest)
    return true;
  } else {
    // T is float, half or bfloat16: go through float (exact from half/bfloat16, rounded from int64).
    float f;
    if constexpr (std::is_same_v<S, double>)
      f = narrow_to_float(v);
    else
      f = static_cast<float>(v);
    out = static_cast<T>(f);
    return true;
  }
}

template <class T, class S>
void decode_as(const std::uint8_t* src, Index n, T* dst, const std::string& fn, const std::string& what) {
  for (Index i = 0; i < n; ++i) {
    const S v = load_le<S>(src + static_cast<std::size_t>(i) * sizeof(S));
    if (!convert_value(v, dst[i])) {
      std::ostringstream s;
      s.precision(17);
      s << what << " element " << i << " is " << widen(v) << ", which is not an exact int64";
      fail(fn, s.str());
    }
  }
}

/// Decodes n stored elements of dtype dt into dst.
template <class T>
void decode(DType dt, const std::uint8_t* src, Index n, T* dst, const std::string& fn, const std::string& what) {
  switch (dt) {
    case DType::F32:
      return decode_as<T, float>(src, n, dst, fn, what);
    case DType::F64:
      return decode_as<T, double>(src, n, dst, fn, what);
    case DType::F16:
      return decode_as<T, Eigen::half>(src, n, dst, fn, what);
    case DType::BF16:
      return decode_as<T, Eigen::bfloat16>(src, n, dst, fn, what);
    case DType::I64:
      return decode_as<T, std::int64_t>(src, n, dst, fn, what);
  }
}

/// Builds a Tensor<T,R> from stored bytes; `what` names the tensor (and file) in errors.
template <class T, int R>
Tensor<T, R> make_tensor(const std::string& fn, const std::string& what, DType dt, const std::vector<Index>& shape,
                         ByteView bytes) {
  static_assert(is_io_scalar_v<T>,
                "gla::io: element type must be float, double, Eigen::half, Eigen::bfloat16 or int64");
  if (shape.size() != static_cast<std::size_t>(R))
    fail(fn, what + " is " + rank_str(shape) + ", expected rank " + std::to_string(R));
  std::array<Index, R> dims{};
  Index n = 1;
  for (int i = 0; i < R; ++i) {
    dims[static_cast<std::size_t>(i)] = shape[static_cast<std::size_t>(i)];
    n *= shape[static_cast<std::size_t>(i)];
  }
  // Guards the invariant the containers establish; a mismatch here would read out of bounds.
  if (static_cast<std::size_t>(n) * dtype_size(dt) != bytes.size)
    fail(fn, what + " holds " + std::to_string(bytes.size) + " bytes, expected " +
                 std::to_string(static_cast<std::size_t>(n) * dtype_size(dt)));
  Tensor<T, R> t;
  t.resize(dims);
  decode(dt, bytes.data, n, t.data(), fn, what);
  return t;
}

/// Product of dims with overflow detection; the result also fits size_t byte counts of 8-byte elements.
inline bool checked_numel(const std::vector<Index>& shape, Index& out) {
  constexpr Index kMax = std::numeric_limits<Index>::max() / 8;
  Index n = 1;
  for (Index d : shape) {
    if (d < 0) return false;
    if (d != 0 && n > kMax / d) return false;
    n *= d;
  }
  out = n;
  return true;
}

/// Reads a little-endian u64 (the header length prefix).
inline std::uint64_t load_u64_le(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

/// The bytes of an opened file, kept alive by the SafeTensors objects that share them: bytes read into memory,
/// or a read-only memory mapping of the file.
class FileBytes {
 public:
  virtual ~FileBytes() = default;
  virtual ByteView bytes() const = 0;
};

class OwnedBytes final : public FileBytes {
 public:
  explicit OwnedBytes(std::vector<std::uint8_t> b) : b_(std::move(b)) {}
  ByteView bytes() const override { return {b_.data(), b_.size()}; }

 private:
  std::vector<std::uint8_t> b_;
};

#if GLA_IO_HAVE_MMAP
/// A read-only private mapping of a whole file (unmapped when the last owner goes). Pages are read from the file
/// when first touched and are the page cache's, so mapping a large checkpoint costs no anonymous memory.
class MappedBytes final : public FileBytes {
 public:
  /// Maps `path` (a regular file of `size` bytes, size > 0); gla::Error naming the path and errno's text.
  MappedBytes(const std::string& fn, const std::string& path, std::size_t size) : size_(size) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(fn, "cannot open '" + path + "': " + std::generic_category().message(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || static_cast<std::uintmax_t>(st.st_size) != size) {
      ::close(fd);
      fail(fn, "'" + path + "' changed size while it was being opened");
    }
    void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);  // the mapping keeps the file
    if (p == MAP_FAILED) fail(fn, "cannot map '" + path + "' into memory: " + std::generic_category().message(err));
    data_ = static_cast<const std::uint8_t*>(p);
  }
  ~MappedBytes() override { ::munmap(const_cast<std::uint8_t*>(data_), size_); }
  MappedBytes(const MappedBytes&) = delete;
  MappedBytes& operator=(const MappedBytes&) = delete;
  ByteView bytes() const override { return {data_, size_}; }

 private:
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};
#endif

}  // namespace detail

/// An opened safetensors file: the whole file is held in memory (load, from_bytes) or mapped read-only (map), and
/// every header entry has been validated, so reading a tensor never touches bytes outside its own range.
/// Copies share the same bytes (they are never modified).
class SafeTensors {
 public:
  /// Reads and validates a file; gla::Error naming the path on I/O or format problems.
  static SafeTensors load(const std::string& path) {
    const std::string fn = "gla::io::SafeTensors::load";
    const std::uintmax_t size = regular_file_size(fn, path);
    std::ifstream in(path, std::ios::binary);
    if (!in) detail::fail(fn, "cannot open '" + path + "' for reading");
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
    if (size > 0) {
      in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
      if (static_cast<std::uintmax_t>(in.gcount()) != size)
        detail::fail(
            fn, "read " + std::to_string(in.gcount()) + " of " + std::to_string(size) + " bytes of '" + path + "'");
    }
    return from_bytes(std::move(bytes), path);
  }

  /// Maps a file read-only and validates it, as load() but without reading the tensor data: a tensor's bytes
  /// are read from the file when get()/raw() first touch them, and a checkpoint never needs its size in
  /// anonymous memory. The file must not be truncated or rewritten while a SafeTensors maps it (the process
  /// would get SIGBUS reading a vanished page); replacing it (rename) is safe. Where memory mapping is not
  /// available, or for an empty file, this is load(). gla::Error naming the path on I/O or format problems.
  static SafeTensors map(const std::string& path) {
#if GLA_IO_HAVE_MMAP
    const std::string fn = "gla::io::SafeTensors::map";
    const std::uintmax_t size = regular_file_size(fn, path);
    if (size == 0 || size > std::numeric_limits<std::size_t>::max()) return load(path);  // mmap needs size > 0
    SafeTensors f;
    f.store_ = std::make_shared<detail::MappedBytes>(fn, path, static_cast<std::size_t>(size));
    f.origin_ = path;
    f.mapped_ = true;
    f.parse();
    return f;
#else
    return load(path);
#endif
  }

  /// Validates an in-memory file; `origin` names it in error messages.
  static SafeTensors from_bytes(std::vector<std::uint8_t> bytes, std::string origin = "<memory>") {
    SafeTensors f;
    f.store_ = std::make_shared<detail::OwnedBytes>(std::move(bytes));
    f.origin_ = std::move(origin);
    f.parse();
    return f;
  }

  /// Where the bytes came from (the path, or the origin given to from_bytes).
  const std::string& origin() const { return origin_; }

  /// Whether the file is memory-mapped (map()) rather than held in memory.
  bool mapped() const { return mapped_; }

  /// The file's size in bytes.
  std::size_t file_size() const { return file().size; }

  /// Tensor names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& kv : tensors_) out.push_back(kv.first);
    return out;
  }

  /// Number of tensors.
  std::size_t size() const { return tensors_.size(); }

  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }

  /// A tensor's dtype, shape and byte range; gla::Error naming the tensor and the file when it is missing.
  const TensorInfo& info(const std::string& name) const { return find("gla::io::SafeTensors::info", name); }

  /// The header's `__metadata__` (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// The stored little-endian bytes of one tensor (valid while this object or a copy of it lives).
  ByteView raw(const std::string& name) const { return raw_of(find("gla::io::SafeTensors::raw", name)); }

  /// A tensor converted to T (float, double, Eigen::half, Eigen::bfloat16, int64). Same-dtype reads are
  /// bit-exact; reading a non-integer float as int64 and a rank other than R are gla::Error.
  template <class T, int R>
  Tensor<T, R> get(const std::string& name) const {
    const std::string fn = "gla::io::SafeTensors::get";
    const TensorInfo& ti = find(fn, name);
    return detail::make_tensor<T, R>(fn, label(name), ti.dtype, ti.shape, raw_of(ti));
  }

  /// A 1-D integer tensor (I64, or a float tensor holding exact integers) as a vector.
  std::vector<std::int64_t> get_int64_vector(const std::string& name) const {
    const std::string fn = "gla::io::SafeTensors::get_int64_vector";
    const TensorInfo& ti = find(fn, name);
    const Tensor<std::int64_t, 1> t =
        detail::make_tensor<std::int64_t, 1>(fn, label(name), ti.dtype, ti.shape, raw_of(ti));
    return std::vector<std::int64_t>(t.data(), t.data() + t.size());
  }

 private:
  SafeTensors() = default;

  /// The size of a regular file; gla::Error naming the path when it is missing or not a regular file.
  static std::uintmax_t regular_file_size(const std::string& fn, const std::string& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::file_status st = fs::status(path, ec);
    if (ec || !fs::exists(st)) detail::fail(fn, "cannot open '" + path + "': " + (ec ? ec.message() : "no such file"));
    if (!fs::is_regular_file(st)) detail::fail(fn, "'" + path + "' is not a regular file");
    const std::uintmax_t size = fs::file_size(path, ec);
    if (ec) detail::fail(fn, "cannot get the size of '" + path + "': " + ec.message());
    return size;
  }

  ByteView file() const { return store_->bytes(); }

  std::string label(const std::string& name) const { return "tensor " + detail::quote(name) + " in " + origin_; }

  const TensorInfo& find(const std::string& fn, const std::string& name) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end())
      detail::fail(fn, "no tensor " + detail::quote(name) + " in " + origin_ + " (it has " +
                           std::to_string(tensors_.size()) + " tensors)");
    return it->second;
  }

  ByteView raw_of(const TensorInfo& ti) const { return {file().data + data_start_ + ti.begin, ti.end - ti.begin}; }

  void parse() {
    using detail::fail;
    using detail::json_type;
    using detail::quote;
    using nlohmann::json;
    const std::string fn = "gla::io::SafeTensors::from_bytes";
    const std::string& src = origin_;
    const std::uint8_t* const bytes = file().data;
    const std::size_t size = file().size;
    if (size < 8)
      fail(fn, src + ": the file has " + std::to_string(size) + " bytes, expected at least 8 (the header length)");
    const std::uint64_t header_len = detail::load_u64_le(bytes);
    if (header_len > size - 8)
      fail(fn, src + ": header length is " + std::to_string(header_len) + " bytes, but only " +
                   std::to_string(size - 8) + " bytes follow the 8-byte length prefix");
    data_start_ = 8 + static_cast<std::size_t>(header_len);
    const std::size_t data_size = size - data_start_;

    // nlohmann treats a NUL byte as the end of its input and would ignore whatever follows it.
    const void* nul = std::memchr(bytes + 8, 0, static_cast<std::size_t>(header_len));
    if (nul != nullptr)
      fail(fn, src + ": the header has a NUL byte at offset " +
                   std::to_string(static_cast<const std::uint8_t*>(nul) - (bytes + 8)) + " of its " +
                   std::to_string(header_len) + " bytes");

    // One pass of nlohmann's SAX parser (HeaderReader) checks the syntax, rejects duplicate keys and converts each
    // entry as soon as its value is complete: O(n log n) in the number of entries, and only one entry's JSON is
    // held at a time. Problems are reported in a fixed order: invalid JSON, a duplicate key, a root that is not
    // an object, then the first invalid entry in file order.
    HeaderReader reader(*this, fn, data_size);
    const std::uint8_t *first = bytes + 8, *last = bytes + data_start_;
    json::sax_parse(first, last, &reader);
    if (!reader.syntax_error.empty())
      fail(fn, src + ": the header is not valid JSON (" + reader.syntax_error + ")");
    if (!reader.duplicate.empty())
      fail(fn, src + ": the header has the key " + quote(reader.duplicate) + " more than once");
    if (!reader.root_object) fail(fn, src + ": the header is a JSON " + reader.root_type + ", expected a JSON object");
    if (reader.entry_error) std::rethrow_exception(reader.entry_error);

    // Tensors must not share bytes (empty tensors share nothing).
    std::vector<const TensorInfo*> order;
    for (const auto& kv : tensors_)
      if (kv.second.end > kv.second.begin) order.push_back(&kv.second);
    std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    for (std::size_t i = 1; i < order.size(); ++i)
      if (order[i]->begin < order[i - 1]->end)
        fail(fn, src + ": tensors " + quote(order[i - 1]->name) + " [" + std::to_string(order[i - 1]->begin) + "," +
                     std::to_string(order[i - 1]->end) + ") and " + quote(order[i]->name) + " [" +
                     std::to_string(order[i]->begin) + "," + std::to_string(order[i]->end) + ") overlap");
  }

  void read_metadata(const std::string& fn, const nlohmann::json& v) {
    using detail::fail;
    using detail::json_type;
    using detail::quote;
    const std::string& src = origin_;
    if (!v.is_object()) fail(fn, src + ": __metadata__ is " + json_type(v) + ", expected a JSON object");
    for (auto m = v.begin(); m != v.end(); ++m) {
      if (!m.value().is_string())
        fail(fn, src + ": __metadata__ value " + quote(m.key()) + " is " + json_type(m.value()) +
                     ", expected a string");
      metadata_[m.key()] = m.value().get<std::string>();
    }
  }

  TensorInfo parse_entry(const std::string& fn, const std::string& name, const nlohmann::json& v,
                         std::size_t data_size) const {
    using detail::fail;
    using detail::json_type;
    using detail::quote;
    const std::string what = origin_ + ": tensor " + quote(name);
    if (!v.is_object()) fail(fn, what + " is " + json_type(v) + ", expected a JSON object");
    for (const char* field : {"dtype", "shape", "data_offsets"})
      if (!v.contains(field)) fail(fn, what + " has no \"" + field + "\"");

    TensorInfo ti;
    ti.name = name;
    const auto& dt = v["dtype"];
    if (!dt.is_string()) fail(fn, what + ": dtype is " + json_type(dt) + ", expected a string");
    const auto parsed = parse_dtype(dt.get<std::string>());
    if (!parsed)
      fail(fn,
           what + ": dtype " + quote(dt.get<std::string>()) + " is not supported, expected F32, F16, BF16, F64 or I64");
    ti.dtype = *parsed;

    const auto& sh = v["shape"];
    if (!sh.is_array()) fail(fn, what + ": shape is " + json_type(sh) + ", expected an array of integers");
    for (std::size_t i = 0; i < sh.size(); ++i) {
      const auto& d = sh[i];
      if (!d.is_number_integer())
        fail(fn, what + ": shape[" + std::to_string(i) + "] is " + json_type(d) + ", expected a non-negative integer");
      if (d.is_number_unsigned()
              ? d.get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<Index>::max())
              : d.get<std::int64_t>() < 0)
        fail(fn, what + ": shape[" + std::to_string(i) + "] is " + d.dump() +
                     ", expected a non-negative integer below 2^63");
      ti.shape.push_back(static_cast<Index>(d.is_number_unsigned() ? static_cast<std::int64_t>(d.get<std::uint64_t>())
                                                                   : d.get<std::int64_t>()));
    }
    Index numel = 0;
    if (!detail::checked_numel(ti.shape, numel))
      fail(fn, what + ": the element count of shape " + detail::shape_str(ti.shape) + " overflows");

    const auto& off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(fn,
           what + ": data_offsets is " + detail::quote(off.dump()) + ", expected [begin, end] (non-negative integers)");
    const std::uint64_t b = off[0].get<std::uint64_t>(), e = off[1].get<std::uint64_t>();
    if (b > e) fail(fn, what + ": data_offsets [" + std::to_string(b) + "," + std::to_string(e) + "] has begin > end");
    if (e > data_size)
      fail(fn, what + ": data_offsets end " + std::to_string(e) + " is past the end of the data section (" +
                   std::to_string(data_size) + " bytes)");
    const std::uint64_t expected = static_cast<std::uint64_t>(numel) * dtype_size(ti.dtype);
    if (e - b != expected)
      fail(fn, what + " spans " + std::to_string(e - b) + " bytes, expected " + std::to_string(expected) + " (" +
                   std::to_string(numel) + " elements of " + to_string(ti.dtype) + ", shape " +
                   detail::shape_str(ti.shape) + ")");
    ti.begin = static_cast<std::size_t>(b);
    ti.end = static_cast<std::size_t>(e);
    return ti;
  }

  /// The nlohmann SAX handler of parse(). It builds the JSON of one top-level value at a time (a tensor entry,
  /// __metadata__, or a root that is not an object) and hands each complete entry to the SafeTensors being parsed,
  /// so the header is never held as one JSON document. A duplicate key is found where its value is inserted into
  /// its object (a map lookup), so no object is scanned more than once. Every nesting level is an entry of
  /// `stack_`, never a C++ call frame, so deep nesting cannot exhaust the call stack.
  class HeaderReader {
   public:
    using json = nlohmann::json;

    HeaderReader(SafeTensors& f, const std::string& fn, std::size_t data_size)
        : f_(f), fn_(fn), data_size_(data_size) {}

    // What parse() reads after the pass.
    std::string syntax_error;        // nlohmann's message; the pass stops there
    std::string duplicate;           // the first key found twice in one object (at any depth)
    bool root_object = false;        // the header is a JSON object
    std::string root_type;           // the JSON type name of a root that is not an object
    std::exception_ptr entry_error;  // the gla::Error of the first invalid entry, in file order

    bool null() { return scalar(json(nullptr)); }
    bool boolean(bool v) { return scalar(json(v)); }
    bool number_integer(json::number_integer_t v) { return scalar(json(v)); }
    bool number_unsigned(json::number_unsigned_t v) { return scalar(json(v)); }
    bool number_float(json::number_float_t v, const json::string_t&) { return scalar(json(v)); }
    bool string(json::string_t& v) { return scalar(json(v)); }
    /// Only binary formats (CBOR, MessagePack, ...) produce binary values, never JSON text.
    template <class Binary>
    bool binary(Binary&) {
      syntax_error = "unexpected binary value";
      return false;
    }
    bool start_object(std::size_t) {
      if (!started_) {
        started_ = true;
        root_object = true;
        return true;
      }
      return open(json::object());
    }
    bool start_array(std::size_t) {
      started_ = true;
      return open(json::array());
    }
    bool key(json::string_t& k) {
      if (stack_.empty()) {  // a key of the root object: a tensor name or __metadata__
        name_ = k;
        bool fresh = false;
        if (k == "__metadata__") {
          fresh = !std::exchange(metadata_seen_, true);
        } else {
          const auto inserted = f_.tensors_.emplace(k, TensorInfo{});
          fresh = inserted.second;
          entry_ = inserted.first;
        }
        if (!fresh) note_duplicate(k);
        return true;
      }
      auto& object = stack_.back()->get_ref<json::object_t&>();
      const auto inserted = object.emplace(k, nullptr);
      if (!inserted.second) note_duplicate(k);
      slot_ = &inserted.first->second;
      return true;
    }
    bool end_object() { return close(); }
    bool end_array() { return close(); }
    template <class Exception>
    bool parse_error(std::size_t, const std::string&, const Exception& e) {
      syntax_error = e.what();
      return false;
    }

   private:
    void note_duplicate(const std::string& k) {
      if (duplicate.empty()) duplicate = k;
    }
    /// Places a value in the innermost open container, or completes a top-level value.
    bool scalar(json v) {
      started_ = true;
      if (stack_.empty()) {
        complete(std::move(v));
      } else if (stack_.back()->is_array()) {
        stack_.back()->push_back(std::move(v));
      } else {
        *slot_ = std::move(v);
      }
      return true;
    }
    /// Places a new container like a value and makes it the innermost open one. Pointers into the tree stay
    /// valid: nothing is added to a container while one of its children is open.
    bool open(json c) {
      json* child = nullptr;
      if (stack_.empty()) {
        value_ = std::move(c);
        child = &value_;
      } else if (stack_.back()->is_array()) {
        stack_.back()->push_back(std::move(c));
        child = &stack_.back()->back();
      } else {
        *slot_ = std::move(c);
        child = slot_;
      }
      stack_.push_back(child);
      return true;
    }
    bool close() {
      if (stack_.empty()) return true;  // the root object ends
      stack_.pop_back();
      if (stack_.empty()) complete(std::move(value_));
      return true;
    }
    /// A top-level value is complete: validate it as the entry name_ (or record the root's type).
    void complete(json v) {
      if (!root_object) {
        root_type = v.type_name();
        return;
      }
      if (!duplicate.empty() || entry_error) return;  // the file is rejected anyway
      try {
        if (name_ == "__metadata__")
          f_.read_metadata(fn_, v);
        else
          entry_->second = f_.parse_entry(fn_, name_, v, data_size_);
      } catch (const Error&) {
        entry_error = std::current_exception();
      }
    }

    SafeTensors& f_;
    const std::string& fn_;
    std::size_t data_size_;
    bool started_ = false, metadata_seen_ = false;
    std::string name_;               // the current top-level key
    std::map<std::string, TensorInfo>::iterator entry_;  // its slot in tensors_ (not for __metadata__)
    json value_;                     // the top-level value being built
    std::vector<json*> stack_;       // its open containers, innermost last
    json* slot_ = nullptr;           // where the value of the last key goes
  };

  std::shared_ptr<const detail::FileBytes> store_;
  std::string origin_;
  bool mapped_ = false;
  std::size_t data_start_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// Named tensors, each held as dtype + shape + little-endian bytes: what a module's load_state_dict() reads
/// and what save_safetensors() writes. Reads convert to the requested element type.
class StateDict {
 public:
  /// Copies the tensors whose names start with strip_prefix, renamed without it
  /// (e.g. prefix "weight." keeps "weight.q_proj.weight" as "q_proj.weight").
  static StateDict from_safetensors(const SafeTensors& f, const std::string& strip_prefix = "") {
    StateDict d;
    for (const std::string& name : f.names()) {
      if (name.compare(0, strip_prefix.size(), strip_prefix) != 0) continue;
      const std::string key = name.substr(strip_prefix.size());
      if (key.empty())
        detail::fail("gla::io::StateDict::from_safetensors",
                     "tensor " + detail::quote(name) + " in " + f.origin() + " is exactly the prefix " +
                         detail::quote(strip_prefix) + ", so its stripped name would be empty");
      const TensorInfo& ti = f.info(name);
      const ByteView raw = f.raw(name);
      d.entries_[key] = Entry{ti.dtype, ti.shape, std::vector<std::uint8_t>(raw.data, raw.data + raw.size)};
    }
    return d;
  }

  /// Reads a file (see from_safetensors). The file is mapped (SafeTensors::map), so only the tensors under
  /// strip_prefix are read from it.
  static StateDict load(const std::string& path, const std::string& strip_prefix = "") {
    return from_safetensors(SafeTensors::map(path), strip_prefix);
  }

  /// Stores a copy of t in its own dtype (float → F32, double → F64, half → F16, bfloat16 → BF16, int64 → I64),
  /// replacing any tensor of that name.
  template <class T, int R>
  void set(const std::string& name, const Tensor<T, R>& t) {
    static_assert(is_io_scalar_v<T>,
                  "gla::io::StateDict::set: element type must be float, double, Eigen::half, "
                  "Eigen::bfloat16 or int64");
    check_name("gla::io::StateDict::set", name);
    Entry e;
    e.dtype = dtype_of<T>();
    for (int i = 0; i < R; ++i) e.shape.push_back(t.dimension(i));
    e.bytes.resize(static_cast<std::size_t>(t.size()) * sizeof(T));
    for (Index i = 0; i < t.size(); ++i)
      detail::store_le<T>(t.data()[i], e.bytes.data() + static_cast<std::size_t>(i) * sizeof(T));
    entries_[name] = std::move(e);
  }

  /// Stores raw little-endian bytes; gla::Error unless their size is numel(shape) · dtype_size(dtype).
  void set_raw(const std::string& name, DType dtype, std::vector<Index> shape, std::vector<std::uint8_t> bytes) {
    const std::string fn = "gla::io::StateDict::set_raw";
    check_name(fn, name);
    Index n = 0;
    if (!detail::checked_numel(shape, n))
      detail::fail(fn,
                   detail::quote(name) + ": shape " + detail::shape_str(shape) + " has a negative or overflowing size");
    if (static_cast<std::size_t>(n) * dtype_size(dtype) != bytes.size())
      detail::fail(fn, detail::quote(name) + " has " + std::to_string(bytes.size()) + " bytes, expected " +
                           std::to_string(static_cast<std::size_t>(n) * dtype_size(dtype)) + " (" + to_string(dtype) +
                           " " + detail::shape_str(shape) + ")");
    entries_[name] = Entry{dtype, std::move(shape), std::move(bytes)};
  }

  bool contains(const std::string& name) const { return entries_.count(name) != 0; }

  /// Names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(entries_.size());
    for (const auto& kv : entries_) out.push_back(kv.first);
    return out;
  }

  std::size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }

  /// The stored dtype; gla::Error if missing.
  DType dtype(const std::string& name) const { return find("gla::io::StateDict::dtype", name).dtype; }
  /// The stored shape; gla::Error if missing.
  const std::vector<Index>& shape(const std::string& name) const {
    return find("gla::io::StateDict::shape", name).shape;
  }
  /// The stored little-endian bytes; gla::Error if missing.
  const std::vector<std::uint8_t>& bytes(const std::string& name) const {
    return find("gla::io::StateDict::bytes", name).bytes;
  }

  /// A tensor converted to T; gla::Error when missing, of another rank, or (for int64) not exactly integral.
  template <class T, int R>
  Tensor<T, R> get(const std::string& name) const {
    const std::string fn = "gla::io::StateDict::get";
    const Entry& e = find(fn, name);
    return detail::make_tensor<T, R>(fn, "state-dict tensor " + detail::quote(name), e.dtype, e.shape,
                                     ByteView{e.bytes.data(), e.bytes.size()});
  }

  /// Removes a tensor; returns whether it was present.
  bool erase(const std::string& name) { return entries_.erase(name) != 0; }

 private:
  struct Entry {
    DType dtype = DType::F32;
    std::vector<Index> shape;
    std::vector<std::uint8_t> bytes;
  };

  static void check_name(const std::string& fn, const std::string& name) {
    if (name.empty()) detail::fail(fn, "the tensor name is empty");
    if (name == "__metadata__")
      detail::fail(fn, "\"__metadata__\" is reserved by the safetensors format, not a tensor name");
  }

  const Entry& find(const std::string& fn, const std::string& name) const {
    const auto it = entries_.find(name);
    if (it == entries_.end())
      detail::fail(fn, "no tensor " + detail::quote(name) + " in the state dict (it has " +
                           std::to_string(entries_.size()) + " tensors)");
    return it->second;
  }

  std::map<std::string, Entry> entries_;
};

/// Serialises a state dict: 8-byte length, a JSON header (metadata first, then tensors in name order with
/// increasing data_offsets) padded with spaces to a multiple of 8 bytes, then the tensor bytes.
inline std::vector<std::uint8_t> to_safetensors_bytes(const StateDict& d,
                                                      const std::map<std::string, std::string>& metadata = {}) {
  const std::string fn = "gla::io::to_safetensors_bytes";
  // The header text is assembled entry by entry: inserting into one nlohmann::ordered_json object would scan all
  // earlier keys for every new one (quadratic in the number of tensors). The text equals that object's dump().
  std::string text = "{";
  std::size_t offset = 0;
  const std::vector<std::string> names = d.names();
  try {
    if (!metadata.empty()) text += "\"__metadata__\":" + nlohmann::ordered_json(metadata).dump();
    for (const std::string& name : names) {
      const std::size_t n = d.bytes(name).size();
      if (text.size() > 1) text += ',';
      text += nlohmann::ordered_json(name).dump();  // quoted and escaped
      text += ":{\"dtype\":\"" + to_string(d.dtype(name)) + "\",\"shape\":[";
      const std::vector<Index>& shape = d.shape(name);
      for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? "," : "") + std::to_string(shape[i]);
      text += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + n) + "]}";
      offset += n;
    }
  } catch (const nlohmann::json::exception& e) {
    detail::fail(fn,
                 std::string("cannot write the header (a name or metadata string is not valid UTF-8): ") + e.what());
  }
  text += '}';
  text.append((8 - text.size() % 8) % 8, ' ');

  std::vector<std::uint8_t> out(8 + text.size() + offset);
  const std::uint64_t len = text.size();
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(len >> (8 * i));
  std::memcpy(out.data() + 8, text.data(), text.size());
  std::size_t pos = 8 + text.size();
  for (const std::string& name : names) {
    const std::vector<std::uint8_t>& b = d.bytes(name);
    if (!b.empty()) std::memcpy(out.data() + pos, b.data(), b.size());
    pos += b.size();
  }
  return out;
}

/// Writes a state dict as a safetensors file; gla::Error naming the path when it cannot be written.
inline void save_safetensors(const std::string& path, const StateDict& d,
                             const std::map<std::string, std::string>& metadata = {}) {
  const std::string fn = "gla::io::save_safetensors";
  const std::vector<std::uint8_t> bytes = to_safetensors_bytes(d, metadata);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) detail::fail(fn, "cannot open '" + path + "' for writing");
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) detail::fail(fn, "writing " + std::to_string(bytes.size()) + " bytes to '" + path + "' failed");
}

}  // namespace gla::io
