// libFuzzer target: operator validation. The input bytes choose an entry point (every GLA operator forward and
// backward, chunk_fwd_h / chunk_bwd_dh / chunk_local_cumsum, the reference recurrence, the router, the varlen helpers,
// the modules and the GatedLinearAttention layer), a scalar type, small shapes that include invalid ones (0, negative,
// mismatched between tensors), options (chunk sizes, scales, cu_seqlens, initial states, output contract, extras) with
// invalid and non-finite values, tensor contents with NaN/±inf/huge/denormal values, and output buffers that may
// alias the inputs or each other (exactly, shifted by one element, or partially).
//
// Properties (a violation aborts, so libFuzzer reports it):
//   - every call returns normally or throws gla::Error; any other exception is a finding;
//   - an input the fuzzer knows to be invalid (a negative or mismatched dimension, a forbidden overlap, a broken
//     output contract, a bad option, ...) must be rejected with gla::Error;
//   - after a gla::Error, no byte of any argument buffer (inputs and `_into` outputs) has changed, and a layer's
//     cache is unchanged; the allocating forms never modify their inputs;
//   - with finite moderate inputs and gates <= 0 (float, double and bf16), every output is finite.
// Every tensor is small (at most a few thousand elements). Huge sizes are only passed as claimed sizes (chunk_size,
// hidden_size, kernel_size, first_axis_dim, batch·seqlen, cu_seqlens values) to functions that must reject them
// before allocating; a valid size that would need a huge allocation is never passed.

#include <gla/gla.hpp>

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using gla::Index;
using bf16 = Eigen::bfloat16;
using half = Eigen::half;
constexpr std::int64_t kI64Max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kI64Min = std::numeric_limits<std::int64_t>::min();

bool verbose() {
  static const bool v = std::getenv("GLA_FUZZ_VERBOSE") != nullptr;
  return v;
}

/// GLA_FUZZ_STRICT=1: also a finding when a call the target models completely (every operator, helper and module
/// except gla_forward and the layer, whose rules it does not model in full) throws gla::Error although the target
/// holds it valid. Off by default: it checks the target's model of the rules as much as the library.
bool strict() {
  static const bool s = std::getenv("GLA_FUZZ_STRICT") != nullptr;
  return s;
}
/// Whether the rules of the current call are modelled completely (see strict()).
bool g_modelled = true;

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "fuzz_operators: FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  __builtin_trap();
}

// ---------------------------------------------------------------------------------------------------------------
// Input decoding.

class Input {
 public:
  Input(const std::uint8_t* d, std::size_t n) : d_(d), n_(n) {}
  std::uint8_t u8() { return i_ < n_ ? d_[i_++] : 0; }
  std::uint32_t u32() {
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) v = (v << 8) | u8();
    return v;
  }
  bool bit() { return (u8() & 1) != 0; }
  /// One of the values of a table (the byte modulo its size).
  template <class X, std::size_t N>
  X pick(const X (&table)[N]) {
    return table[u8() % N];
  }

 private:
  const std::uint8_t* d_;
  std::size_t n_;
  std::size_t i_ = 0;
};

/// splitmix64: the tensor contents come from a seed in the input, so a few bytes describe a whole tensor.
class Rng {
 public:
  explicit Rng(std::uint64_t s) : s_(s) {}
  std::uint64_t next() {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform(double lo, double hi) { return lo + (hi - lo) * static_cast<double>(next() >> 11) * 0x1.0p-53; }

 private:
  std::uint64_t s_;
};

/// How a tensor is filled: Moderate and Zero keep the finite-output property; the others do not.
enum class Fill { Moderate, Zero, Specials, Huge };

Fill decode_fill(Input& in) {
  const std::uint8_t b = in.u8();
  if (b < 176) return Fill::Moderate;
  if (b < 200) return Fill::Zero;
  if (b < 240) return Fill::Specials;
  return Fill::Huge;
}

double special_value(Rng& r) {
  static const double kSpecial[] = {std::numeric_limits<double>::quiet_NaN(),
                                    std::numeric_limits<double>::infinity(),
                                    -std::numeric_limits<double>::infinity(),
                                    1e30,
                                    -1e30,
                                    1e-40,
                                    -1e-40,
                                    0.0,
                                    -0.0,
                                    65504.0,
                                    1e5,
                                    3.4e38,
                                    -3.4e38,
                                    1e300,
                                    50.0,
                                    -1e4};
  return kSpecial[r.next() % (sizeof(kSpecial) / sizeof(kSpecial[0]))];
}

/// A value of a data tensor (gate = false: moderate values in [-2, 2]) or of a log gate (gate = true: moderate
/// values <= 0, mostly in [-3, 0] and sometimes down to -200).
double gen_value(Rng& r, Fill f, bool gate) {
  switch (f) {
    case Fill::Zero:
      return 0.0;
    case Fill::Moderate:
      if (!gate) return r.uniform(-2.0, 2.0);
      return (r.next() % 8 == 0) ? r.uniform(-200.0, 0.0) : r.uniform(-3.0, 0.0);
    case Fill::Specials:
      if (r.next() % 4 == 0) return special_value(r);
      return gate ? r.uniform(-3.0, 3.0) : r.uniform(-2.0, 2.0);
    case Fill::Huge:
      return (r.next() % 2 ? 1.0 : -1.0) * std::pow(10.0, r.uniform(5.0, 38.0));
  }
  return 0.0;
}

template <class T>
T to_scalar(double x) {
  return static_cast<T>(static_cast<float>(x));
}
template <>
double to_scalar<double>(double x) {
  return x;
}

template <class T>
bool finite_scalar(T x) {
  return std::isfinite(static_cast<double>(static_cast<float>(x)));
}
template <>
bool finite_scalar<double>(double x) {
  return std::isfinite(x);
}

// ---------------------------------------------------------------------------------------------------------------
// Buffers: every tensor of a call is a region of its own (exactly sized, so ASan sees any overrun), except an output
// that the input places into an earlier tensor's region (exactly, shifted by one element, from the middle, or on the
// last element) to exercise the aliasing rule.

using Dims = std::array<Index, 5>;

struct TensorSlot {
  std::string name;
  int rank = 0;
  Dims d{};
  std::size_t esz = 0;
  bool input = true;
  bool present = true;
  int target = -1;  // -1: own region
  int shift = 0;
  int region = -1;
  std::size_t off = 0;
  void* ptr = nullptr;

  bool negative() const {
    for (int i = 0; i < rank; ++i)
      if (d[static_cast<std::size_t>(i)] < 0) return true;
    return false;
  }
  Index elems() const {
    if (negative()) return 0;
    Index n = 1;
    for (int i = 0; i < rank; ++i) n *= d[static_cast<std::size_t>(i)];
    return n;
  }
  std::size_t bytes() const { return static_cast<std::size_t>(elems()) * esz; }
};

class Layout {
 public:
  int add(const std::string& name, int rank, const Dims& d, std::size_t esz, bool input, bool present = true) {
    TensorSlot t;
    t.name = name;
    t.rank = rank;
    t.d = d;
    t.esz = esz;
    t.input = input;
    t.present = present;
    slots_.push_back(t);
    return static_cast<int>(slots_.size()) - 1;
  }

  /// Where output `o` lives: its own region (most inputs), exactly the `preferred` tensor's buffer (an in-place
  /// pair), or inside any earlier tensor with one of four shifts.
  void place(Input& in, int o, int preferred = -1) {
    const std::uint8_t b = in.u8();
    if (b < 200 || o == 0) return;
    if (b < 224 && preferred >= 0 && preferred < o && slots_[static_cast<std::size_t>(preferred)].present) {
      slots_[static_cast<std::size_t>(o)].target = preferred;
      slots_[static_cast<std::size_t>(o)].shift = 0;
      return;
    }
    const int t = in.u8() % o;
    if (!slots_[static_cast<std::size_t>(t)].present) return;
    slots_[static_cast<std::size_t>(o)].target = t;
    slots_[static_cast<std::size_t>(o)].shift = b & 3;
  }

  void allocate() {
    // Resolve regions and offsets in order (a target always precedes the tensor placed into it).
    std::vector<std::size_t> caps;
    for (auto& t : slots_) {
      if (!t.present) continue;
      if (t.target < 0) {
        t.region = static_cast<int>(caps.size());
        t.off = 0;
        caps.push_back(std::max<std::size_t>(t.bytes(), 1));
      } else {
        const TensorSlot& tg = slots_[static_cast<std::size_t>(t.target)];
        std::size_t shift = 0;
        const std::size_t tb = tg.bytes();
        switch (t.shift) {
          case 0:
            shift = 0;
            break;
          case 1:
            shift = t.esz;
            break;
          case 2:
            shift = (tb / 2) & ~std::size_t(7);
            break;
          default:
            shift = tb >= t.esz ? ((tb - t.esz) & ~std::size_t(7)) : 0;
            break;
        }
        t.region = tg.region;
        t.off = tg.off + shift;
        caps[static_cast<std::size_t>(t.region)] =
            std::max(caps[static_cast<std::size_t>(t.region)], t.off + std::max<std::size_t>(t.bytes(), 1));
      }
    }
    for (std::size_t cap : caps) {
      Region r;
      r.cap = cap;
      r.mem.reset(new unsigned char[cap]);
      std::memset(r.mem.get(), 0xA5, cap);
      regions_.push_back(std::move(r));
    }
    for (auto& t : slots_)
      if (t.present) t.ptr = regions_[static_cast<std::size_t>(t.region)].mem.get() + t.off;
  }

  template <class T>
  T* ptr(int i) const {
    return static_cast<T*>(slots_[static_cast<std::size_t>(i)].ptr);
  }
  const TensorSlot& slot(int i) const { return slots_[static_cast<std::size_t>(i)]; }
  TensorSlot& slot(int i) { return slots_[static_cast<std::size_t>(i)]; }

  template <class T, int R>
  gla::View<T, R> view(int i) const {
    const TensorSlot& t = slot(i);
    std::array<Index, static_cast<std::size_t>(R)> dims{};
    for (int k = 0; k < R; ++k) dims[static_cast<std::size_t>(k)] = t.d[static_cast<std::size_t>(k)];
    return gla::View<T, R>(static_cast<T*>(t.ptr), dims);
  }
  template <class T, int R>
  std::optional<gla::View<T, R>> opt_view(int i) const {
    if (i < 0 || !slot(i).present) return std::nullopt;
    return view<T, R>(i);
  }

  /// Fills an input tensor of scalar T.
  template <class T>
  void fill(int i, Rng& r, Fill f, bool gate) {
    const TensorSlot& t = slot(i);
    if (!t.present) return;
    T* p = static_cast<T*>(t.ptr);
    for (Index k = 0; k < t.elems(); ++k) p[k] = to_scalar<T>(gen_value(r, f, gate));
  }

  void snapshot() {
    for (auto& r : regions_) r.snap.assign(r.mem.get(), r.mem.get() + r.cap);
  }
  /// The first region whose bytes changed since snapshot(), or -1.
  int changed() const {
    for (std::size_t i = 0; i < regions_.size(); ++i)
      if (std::memcmp(regions_[i].snap.data(), regions_[i].mem.get(), regions_[i].cap) != 0) return static_cast<int>(i);
    return -1;
  }
  std::string region_name(int r) const {
    for (const auto& t : slots_)
      if (t.present && t.region == r && t.target < 0) return t.name;
    return "?";
  }

  /// Whether some output overlaps an input or another output other than in an allowed exact in-place pair
  /// (output name, input name): then the call must throw. Tensors with a negative dimension are skipped (they make
  /// the call invalid on their own).
  bool forbidden_overlap(const std::vector<std::pair<std::string, std::string>>& allowed, std::string* why) const {
    auto range = [](const TensorSlot& t) {
      const auto a = reinterpret_cast<std::uintptr_t>(t.ptr);
      return std::pair<std::uintptr_t, std::uintptr_t>{a, a + t.bytes()};
    };
    for (std::size_t i = 0; i < slots_.size(); ++i) {
      const TensorSlot& o = slots_[i];
      if (o.input || !o.present || o.negative() || o.bytes() == 0) continue;
      const auto [oa, ob] = range(o);
      for (std::size_t j = 0; j < slots_.size(); ++j) {
        const TensorSlot& x = slots_[j];
        if (j == i || !x.present || x.negative() || x.bytes() == 0) continue;
        if (!x.input && j > i) continue;  // each output pair once
        const auto [xa, xb] = range(x);
        if (!(oa < xb && xa < ob)) continue;
        bool ok = false;
        if (x.input)
          for (const auto& [on, inn] : allowed)
            if (on == o.name && inn == x.name && oa == xa && ob == xb) ok = true;
        if (!ok) {
          if (why) *why = "output " + o.name + " overlaps " + x.name;
          return true;
        }
      }
    }
    return false;
  }

  bool any_negative() const {
    for (const auto& t : slots_)
      if (t.present && t.negative()) return true;
    return false;
  }

 private:
  struct Region {
    std::unique_ptr<unsigned char[]> mem;
    std::size_t cap = 0;
    std::vector<unsigned char> snap;
  };
  std::vector<TensorSlot> slots_;
  std::vector<Region> regions_;
};

/// Every element of a present tensor of scalar T is finite.
template <class T>
bool all_finite(const Layout& L, int i) {
  if (i < 0 || !L.slot(i).present) return true;
  const T* p = L.ptr<T>(i);
  for (Index k = 0; k < L.slot(i).elems(); ++k)
    if (!finite_scalar(p[k])) return false;
  return true;
}
template <class Tn>
bool tensor_finite(const Tn& t) {
  for (Index k = 0; k < t.size(); ++k)
    if (!finite_scalar(t.data()[k])) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// The call harness: runs f; gla::Error is the only allowed exception. `invalid` (with its reason) says the call must
// throw. After an error no region may have changed; `inputs_only` (allocating forms) means no region may change at all.

struct Outcome {
  bool ok = false;
  std::string error;
};

template <class F>
Outcome call(const char* what, Layout* L, bool invalid, const std::string& why, bool inputs_only, F&& f) {
  if (L) L->snapshot();
  Outcome out;
  try {
    f();
    out.ok = true;
  } catch (const gla::Error& e) {
    out.error = e.what();
  } catch (const std::exception& e) {
    finding(std::string(what) + ": threw a non-gla::Error exception: " + e.what());
  } catch (...) {
    finding(std::string(what) + ": threw a non-std exception");
  }
  if (verbose())
    std::fprintf(stderr, "%s: %s%s%s\n", what, out.ok ? "ok" : "gla::Error: ", out.error.c_str(),
                 invalid ? (" [expected an error: " + why + "]").c_str() : "");
  if (out.ok && invalid) finding(std::string(what) + ": accepted an invalid call (" + why + ")");
  if (!out.ok && !invalid && g_modelled && strict())
    finding(std::string(what) + ": rejected a call the target holds valid: " + out.error);
  if (L && (!out.ok || inputs_only)) {
    const int r = L->changed();
    if (r >= 0)
      finding(std::string(what) + (out.ok ? ": modified its input " : ": wrote into ") + L->region_name(r) +
              (out.ok ? "" : " before throwing gla::Error (" + out.error + ")"));
  }
  return out;
}

/// Collects the first reason a call is invalid.
struct Validity {
  bool invalid = false;
  std::string why;
  void bad(bool cond, const std::string& w) {
    if (cond && !invalid) {
      invalid = true;
      why = w;
    }
  }
};

// ---------------------------------------------------------------------------------------------------------------
// Shapes and options of the GLA operators.

Index dim_B(Input& in) { return in.pick<Index>({1, 2, 1, 3, 1, 2, 0, -1}); }
Index dim_T(Input& in) { return in.pick<Index>({0, 1, 2, 3, 5, 16, 17, 31, 33, 63, 64, 65, 7, 1, 4, -1}); }
Index dim_H(Input& in) { return in.pick<Index>({1, 2, 3, 4, 1, 2, 0, -2}); }
Index dim_D(Input& in) { return in.pick<Index>({1, 2, 4, 8, 3, 1, 0, -1}); }

/// With probability 1/8 one dimension of d (rank r) changes: +1, −1, to 0 or to −1. Returns whether it changed.
bool perturb(Input& in, Dims& d, int r) {
  const std::uint8_t b = in.u8();
  if (b >= 32 || r == 0) return false;
  const std::size_t i = static_cast<std::size_t>(b % r);
  const Index old = d[i];
  switch ((b >> 3) & 3) {
    case 0:
      d[i] += 1;
      break;
    case 1:
      d[i] -= 1;
      break;
    case 2:
      d[i] = 0;
      break;
    default:
      d[i] = -1;
      break;
  }
  return d[i] != old;
}

std::vector<std::int64_t> decode_cu(Input& in, Index T) {
  const std::uint8_t mode = in.u8();
  std::vector<std::int64_t> cu;
  if (mode < 176) return cu;
  if (mode < 232 && T >= 0) {  // a valid split of T
    const int n = 1 + in.u8() % 4;
    cu.push_back(0);
    std::vector<std::int64_t> cuts;
    for (int i = 0; i + 1 < n; ++i) cuts.push_back(T == 0 ? 0 : in.u8() % (T + 1));
    std::sort(cuts.begin(), cuts.end());
    for (auto c : cuts) cu.push_back(c);
    cu.push_back(T);
    return cu;
  }
  const int n = in.u8() % 6;  // anything: non-monotone, negative, huge, not ending at T
  for (int i = 0; i < n; ++i) {
    const std::uint8_t b = in.u8();
    const std::int64_t table[] = {0, T, T + 1, -1, 1, 2, kI64Max, kI64Min, kI64Max - 1, std::int64_t(1) << 62};
    cu.push_back(b < 160 ? table[b % 10] : static_cast<std::int64_t>(b - 160));
  }
  return cu;
}

bool cu_valid(const std::vector<std::int64_t>& cu, Index T) {
  if (cu.size() < 2 || cu.front() != 0 || cu.back() != T) return false;
  for (std::size_t i = 1; i < cu.size(); ++i)
    if (cu[i] < cu[i - 1]) return false;
  return true;
}

std::optional<float> decode_scale(Input& in, bool& moderate) {
  const std::uint8_t b = in.u8();
  moderate = true;
  if (b < 128) return std::nullopt;
  const float table[] = {0.5f,
                         0.0f,
                         -2.0f,
                         1.0f,
                         std::numeric_limits<float>::quiet_NaN(),
                         std::numeric_limits<float>::infinity(),
                         -std::numeric_limits<float>::infinity(),
                         1e30f};
  const float s = table[b % 8];
  moderate = std::isfinite(s) && std::fabs(s) <= 4.0f;
  return s;
}

int decode_chunk_size(Input& in) {
  return in.pick<int>({64,      16,
                       32,      128,
                       256,     64,
                       16,      32,
                       0,       3,
                       24,      512,
                       1 << 17, std::numeric_limits<int>::max(),
                       -16,     8,
                       1,       std::numeric_limits<int>::min(),
                       48,      64});
}

/// The problem of one GLA operator call: shapes, options and what makes it invalid. The shapes the tensors are built
/// from (B..V) are decoded first; once every tensor exists (some with a perturbed dimension), derive() takes the
/// problem shape from the actual q and v as the library does, and the validity rules are evaluated on the actual
/// dimensions of every tensor, so a perturbation that happens to keep the call valid is never called invalid.
struct GlaCase {
  Index B = 1, T = 1, H = 1, K = 1, V = 1, N = 1;
  gla::GLAOptions opts;
  bool cu_ok = true;
  bool want_final = false;       // a final_state view is given (_into forms)
  bool contract_broken = false;  // want_final != output_final_state
  bool extras_moderate = true;   // gamma within [-1, 1]
  bool scale_moderate = true;
  Validity v;
  Fill state_fill = Fill::Moderate;

  bool base_ok() const { return B > 0 && T >= 0 && H > 0 && K > 0 && V > 0; }
  Dims qk() const { return {B, T, H, K, 0}; }
  Dims vv() const { return {B, T, H, V, 0}; }
  Dims state() const { return opts.state_v_first ? Dims{N, H, V, K, 0} : Dims{N, H, K, V, 0}; }
  /// The states before every chunk (chunk_gla_states_dims); any count when chunk_size or cu_seqlens is invalid
  /// (the call is invalid then anyway).
  Dims states() const {
    const Index cs = opts.chunk_size > 0 ? opts.chunk_size : 1;
    Index nt = 0;
    const auto& cu = opts.cu_seqlens;
    if (cu.empty())
      nt = T > 0 ? (T + cs - 1) / cs : 0;
    else if (cu_valid(cu, T))  // (before derive(), lens() would difference arbitrary values)
      for (std::size_t i = 0; i + 1 < cu.size(); ++i) nt += (cu[i + 1] - cu[i] + cs - 1) / cs;
    const Index b = opts.cu_seqlens.empty() ? B : 1;
    return opts.state_v_first ? Dims{b, nt, H, V, K} : Dims{b, nt, H, K, V};
  }
  std::vector<Index> lens() const {
    std::vector<Index> l;
    if (opts.cu_seqlens.empty())
      l.assign(static_cast<std::size_t>(std::max<Index>(B, 0)), T);
    else if (cu_ok)
      for (std::size_t i = 0; i + 1 < opts.cu_seqlens.size(); ++i)
        l.push_back(opts.cu_seqlens[i + 1] - opts.cu_seqlens[i]);
    return l;
  }

  /// The problem shape from the actual q [B,T,H,K] and v [..,V] (as check_qkv), then N from cu_seqlens.
  void derive(const Layout& L, int q, int v_) {
    const Dims& qd = L.slot(q).d;
    B = qd[0];
    T = qd[1];
    H = qd[2];
    K = qd[3];
    const Dims& vd = L.slot(v_).d;
    V = vd[3];
    v.bad(!(B > 0 && T >= 0 && H > 0 && K > 0), "q has a dimension out of range");
    v.bad(vd[0] != B || vd[1] != T || vd[2] != H || V <= 0, "v does not match q");
    cu_ok = true;
    if (!opts.cu_seqlens.empty()) {
      cu_ok = B == 1 && cu_valid(opts.cu_seqlens, T);
      v.bad(!cu_ok, "cu_seqlens is invalid (or B != 1)");
    }
    N = opts.cu_seqlens.empty() ? B : std::max<Index>(0, static_cast<Index>(opts.cu_seqlens.size()) - 1);
    v.bad(opts.scale && !std::isfinite(*opts.scale), "scale is not finite");
  }
  /// A present tensor must have exactly the dims `want` (rank r).
  void expect(const Layout& L, int i, const Dims& want, int r) {
    if (i < 0 || !L.slot(i).present) return;
    const TensorSlot& t = L.slot(i);
    bool same = t.rank == r;
    for (int k = 0; k < r; ++k) same = same && t.d[static_cast<std::size_t>(k)] == want[static_cast<std::size_t>(k)];
    v.bad(!same, t.name + " has a wrong shape");
  }
};

GlaCase decode_case(Input& in) {
  GlaCase c;
  c.B = dim_B(in);
  c.T = dim_T(in);
  c.H = dim_H(in);
  c.K = dim_D(in);
  c.V = dim_D(in);
  c.opts.cu_seqlens = decode_cu(in, c.T);
  c.N = c.opts.cu_seqlens.empty() ? c.B : std::max<Index>(0, static_cast<Index>(c.opts.cu_seqlens.size()) - 1);
  c.opts.scale = decode_scale(in, c.scale_moderate);
  const std::uint8_t flags = in.u8();
  c.opts.output_final_state = flags & 1;
  c.opts.state_v_first = flags & 2;
  c.opts.heuristic_fallback = !(flags & 4);
  c.want_final = c.opts.output_final_state;
  if ((flags & 0xF8) == 0xF8) {  // the output contract broken on purpose (used by the _into forms)
    c.want_final = !c.want_final;
    c.contract_broken = true;
  }
  c.opts.chunk_size = decode_chunk_size(in);
  // Rare extras: one byte, each low bit enables one when the high bit is set.
  const std::uint8_t ex = in.u8();
  if (ex >= 0x80) {
    if (ex & 0x01) c.opts.reverse = true;
    if (ex & 0x02) {
      const int n = in.u8() % 4;  // 0, 1, 2 or 3 values (H is at most 4)
      for (int i = 0; i < n; ++i) {
        const float g = in.pick<float>({0.9f, 1.0f, 0.5f, -0.5f, 0.0f, 2.0f, std::numeric_limits<float>::quiet_NaN(),
                                        std::numeric_limits<float>::infinity()});
        c.opts.gamma.push_back(g);
        if (!(std::fabs(g) <= 1.0f)) c.extras_moderate = false;
      }
    }
    if (ex & 0x04)
      c.opts.state_clamp_min = in.pick<float>({-1.0f, -10.0f, 0.0f, 5.0f, std::numeric_limits<float>::quiet_NaN(),
                                               -std::numeric_limits<float>::infinity()});
    if (ex & 0x08)
      c.opts.state_clamp_max = in.pick<float>(
          {1.0f, 10.0f, 0.0f, -5.0f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()});
    if (ex & 0x10) c.opts.max_seqlen = in.pick<std::int64_t>({64, 0, -1, 1, 16, kI64Max, kI64Min, 65});
  }
  return c;
}

/// The validity rules of the options per operator family (after derive()).
enum class Family { Chunk, FusedChunk, Recurrent, RecurrentBackward, ChunkH, Router };

void check_family(GlaCase& c, Family f) {
  auto& o = c.opts;
  const bool chunked = f == Family::Chunk || f == Family::FusedChunk || f == Family::ChunkH;
  if (chunked) {
    const int cs = o.chunk_size;
    c.v.bad(!(cs >= 16 && cs <= 256 && (cs & (cs - 1)) == 0), "chunk_size is invalid");
    c.v.bad(o.reverse, "reverse with a chunk kernel");
    c.v.bad(!o.gamma.empty() || o.state_clamp_min || o.state_clamp_max, "gamma/clamps with a chunk kernel");
  }
  if (f == Family::FusedChunk && o.max_seqlen) {
    c.v.bad(*o.max_seqlen < 0, "max_seqlen < 0");
    if (!c.v.invalid)
      for (Index l : c.lens()) c.v.bad(l > *o.max_seqlen, "a sequence longer than max_seqlen");
  }
  if (f == Family::Recurrent) {
    c.v.bad(!o.gamma.empty() && o.gamma.size() != 1 && static_cast<Index>(o.gamma.size()) != c.H,
            "gamma has a wrong count");
    for (float g : o.gamma) c.v.bad(!std::isfinite(g), "gamma is not finite");
    c.v.bad(o.state_clamp_min && std::isnan(*o.state_clamp_min), "state_clamp_min is NaN");
    c.v.bad(o.state_clamp_max && std::isnan(*o.state_clamp_max), "state_clamp_max is NaN");
    c.v.bad(o.state_clamp_min && o.state_clamp_max && *o.state_clamp_min > *o.state_clamp_max,
            "state_clamp_min > state_clamp_max");
  }
  if (f == Family::RecurrentBackward)
    c.v.bad(!o.gamma.empty() || o.state_clamp_min || o.state_clamp_max, "gamma/clamps with a backward");
}

/// Adds a rank-4 tensor with dims d, perturbed with probability 1/8.
int add4(Input& in, Layout& L, const std::string& name, Dims d, std::size_t esz, bool input, bool present = true) {
  if (present) perturb(in, d, 4);
  return L.add(name, 4, d, esz, input, present);
}

/// Adds the optional initial state (absent, or present with a possibly perturbed shape).
int add_initial_state(Input& in, Layout& L, GlaCase& c) {
  const bool present = in.u8() >= 160;
  c.state_fill = decode_fill(in);
  return add4(in, L, "initial_state", c.state(), sizeof(float), true, present);
}

/// Sets opts.initial_state from its slot.
void bind_initial_state(GlaCase& c, const Layout& L, int h0) {
  if (L.slot(h0).present) c.opts.initial_state = gla::ConstView<float, 4>(L.view<float, 4>(h0));
}

template <class T>
constexpr bool finite_type() {
  return !std::is_same_v<T, half>;
}

// ---------------------------------------------------------------------------------------------------------------
// Operators.

/// chunk_gla / fused_chunk_gla (allocating or _into) and fused_recurrent_gla (allocating or _into).
template <class T>
void op_forward(Input& in, int kind, bool into) {
  GlaCase c = decode_case(in);
  const bool recurrent = kind == 2;
  Rng rng(in.u32());
  Layout L;
  const Fill fq = decode_fill(in), fk = decode_fill(in), fv = decode_fill(in), fg = decode_fill(in);
  const int q = add4(in, L, "q", c.qk(), sizeof(T), true);
  const int k = add4(in, L, "k", c.qk(), sizeof(T), true);
  const int v = add4(in, L, "v", c.vv(), sizeof(T), true);
  const std::uint8_t gates = in.u8();
  const int g = add4(in, L, recurrent ? "gk" : "g", c.qk(), sizeof(T), true, recurrent ? (gates & 1) : true);
  const int gv = add4(in, L, "gv", c.vv(), sizeof(T), true, recurrent && (gates & 2));
  const int h0 = add_initial_state(in, L, c);
  int o = -1, fs = -1, hk = -1;
  // chunk_gla_keep_states(_into): chunk_gla that also keeps the state before every chunk.
  const bool keep = kind == 0 && in.u8() >= 192;
  if (into) {
    o = add4(in, L, "o", c.vv(), sizeof(T), false);
    L.place(in, o);
    fs = add4(in, L, "final_state", c.state(), sizeof(float), false, c.want_final);
    L.place(in, fs, h0);
    if (keep) {
      Dims hd = c.states();
      perturb(in, hd, 5);
      hk = L.add("h", 5, hd, sizeof(gla::acc_t<T>), false, true);
      L.place(in, hk);
    }
  }
  L.allocate();
  L.fill<T>(q, rng, fq, false);
  L.fill<T>(k, rng, fk, false);
  L.fill<T>(v, rng, fv, false);
  L.fill<T>(g, rng, fg, true);
  L.fill<T>(gv, rng, fg, true);
  L.fill<float>(h0, rng, c.state_fill, false);
  bind_initial_state(c, L, h0);

  c.derive(L, q, v);
  c.expect(L, k, c.qk(), 4);
  c.expect(L, g, c.qk(), 4);
  c.expect(L, gv, c.vv(), 4);
  c.expect(L, h0, c.state(), 4);
  if (into) {
    c.expect(L, o, c.vv(), 4);
    c.expect(L, fs, c.state(), 4);
    c.expect(L, hk, c.states(), 5);
    c.v.bad(c.contract_broken, "final_state given iff output_final_state is broken");
  }
  check_family(c, kind == 0 ? Family::Chunk : kind == 1 ? Family::FusedChunk : Family::Recurrent);
  std::string why;
  c.v.bad(L.any_negative(), "a negative dimension");
  c.v.bad(L.forbidden_overlap({{"final_state", "initial_state"}}, &why), why);
  const bool finite_in = finite_type<T>() && c.scale_moderate && c.extras_moderate && fq <= Fill::Zero &&
                         fk <= Fill::Zero && fv <= Fill::Zero && fg <= Fill::Zero &&
                         (!L.slot(h0).present || c.state_fill <= Fill::Zero);
  const auto qv = L.view<const T, 4>(q);
  const auto kv = L.view<const T, 4>(k);
  const auto vv = L.view<const T, 4>(v);
  const char* names[3][2] = {{"chunk_gla", "chunk_gla_into"},
                             {"fused_chunk_gla", "fused_chunk_gla_into"},
                             {"fused_recurrent_gla", "fused_recurrent_gla_into"}};
  const char* name = keep ? (into ? "chunk_gla_keep_states_into" : "chunk_gla_keep_states") : names[kind][into ? 1 : 0];
  gla::GLAResult<T> res;
  std::optional<gla::Tensor<gla::acc_t<T>, 5>> kept;
  const Outcome out = call(name, &L, c.v.invalid, c.v.why, !into, [&] {
    if (keep && !into) {
      auto r = gla::chunk_gla_keep_states(qv, kv, vv, L.view<const T, 4>(g), c.opts);
      res.o = std::move(r.o);
      res.final_state = std::move(r.final_state);
      kept = std::move(r.h);
    } else if (keep) {
      gla::chunk_gla_keep_states_into(qv, kv, vv, L.view<const T, 4>(g), c.opts, L.view<T, 4>(o),
                                      L.opt_view<float, 4>(fs), L.view<gla::acc_t<T>, 5>(hk));
    } else if (!into) {
      if (kind == 0)
        res = gla::chunk_gla(qv, kv, vv, L.view<const T, 4>(g), c.opts);
      else if (kind == 1)
        res = gla::fused_chunk_gla(qv, kv, vv, L.view<const T, 4>(g), c.opts);
      else
        res = gla::fused_recurrent_gla(qv, kv, vv, L.opt_view<const T, 4>(g), L.opt_view<const T, 4>(gv), c.opts);
    } else {
      const auto ov = L.view<T, 4>(o);
      const auto fsv = L.opt_view<float, 4>(fs);
      if (kind == 0)
        gla::chunk_gla_into(qv, kv, vv, L.view<const T, 4>(g), c.opts, ov, fsv);
      else if (kind == 1)
        gla::fused_chunk_gla_into(qv, kv, vv, L.view<const T, 4>(g), c.opts, ov, fsv);
      else
        gla::fused_recurrent_gla_into(qv, kv, vv, L.opt_view<const T, 4>(g), L.opt_view<const T, 4>(gv), c.opts, ov,
                                      fsv);
    }
  });
  if (!out.ok) return;
  if (!into) {
    if (res.o.dimension(0) != c.B || res.o.dimension(1) != c.T || res.o.dimension(2) != c.H ||
        res.o.dimension(3) != c.V)
      finding(std::string(name) + ": o has a wrong shape");
    if (res.final_state.has_value() != c.opts.output_final_state)
      finding(std::string(name) + ": final_state present iff output_final_state is broken");
    if (kept) {
      const Dims want = c.states();
      for (int i = 0; i < 5; ++i)
        if (kept->dimension(i) != want[static_cast<std::size_t>(i)])
          finding(std::string(name) + ": h has a wrong shape");
    }
  }
  if (finite_in && (into ? !all_finite<gla::acc_t<T>>(L, hk) : kept && !tensor_finite(*kept)))
    finding(std::string(name) + ": non-finite states for finite moderate inputs with gates <= 0");
  if (finite_in) {
    const bool fin = into ? all_finite<T>(L, o) && all_finite<float>(L, fs)
                          : tensor_finite(res.o) && (!res.final_state || tensor_finite(*res.final_state));
    if (!fin) finding(std::string(name) + ": non-finite output for finite moderate inputs with gates <= 0");
  }
}

/// chunk_gla_backward / fused_chunk_gla_backward (allocating or _into).
template <class T>
void op_chunk_backward(Input& in, bool fused, bool into) {
  GlaCase c = decode_case(in);
  Rng rng(in.u32());
  Layout L;
  const Fill fx = decode_fill(in), fg = decode_fill(in), fd = decode_fill(in);
  const int q = add4(in, L, "q", c.qk(), sizeof(T), true);
  const int k = add4(in, L, "k", c.qk(), sizeof(T), true);
  const int v = add4(in, L, "v", c.vv(), sizeof(T), true);
  const int g = add4(in, L, "g", c.qk(), sizeof(T), true);
  const int dO = add4(in, L, "do_", c.vv(), sizeof(T), true);
  const bool has_dht = in.bit();
  const int dht = add4(in, L, "dht", c.state(), sizeof(float), true, has_dht);
  const int h0 = add_initial_state(in, L, c);
  // chunk_gla_backward_from_states(_into): the forward's states h as one more input.
  const bool from_states = !fused && in.u8() >= 192;
  Dims hd = c.states();
  if (from_states) perturb(in, hd, 5);
  const int hs = L.add("h", 5, hd, sizeof(gla::acc_t<T>), true, from_states);
  int dq = -1, dk = -1, dv = -1, dg = -1, dh0 = -1;
  bool contract_broken = false;
  if (into) {
    dq = add4(in, L, "dq", c.qk(), sizeof(T), false);
    L.place(in, dq);
    dk = add4(in, L, "dk", c.qk(), sizeof(T), false);
    L.place(in, dk);
    dv = add4(in, L, "dv", c.vv(), sizeof(T), false);
    L.place(in, dv);
    dg = add4(in, L, "dg", c.qk(), sizeof(T), false);
    L.place(in, dg);
    bool want = L.slot(h0).present;
    if (in.u8() >= 248) {
      want = !want;
      contract_broken = true;
    }
    dh0 = add4(in, L, "dh0", c.state(), sizeof(float), false, want);
    L.place(in, dh0, dht);
  }
  L.allocate();
  L.fill<T>(q, rng, fx, false);
  L.fill<T>(k, rng, fx, false);
  L.fill<T>(v, rng, fx, false);
  L.fill<T>(g, rng, fg, true);
  L.fill<T>(dO, rng, fd, false);
  L.fill<float>(dht, rng, fd, false);
  L.fill<float>(h0, rng, c.state_fill, false);
  L.fill<gla::acc_t<T>>(hs, rng, fx, false);
  bind_initial_state(c, L, h0);

  c.derive(L, q, v);
  c.expect(L, hs, c.states(), 5);
  for (int i : {k, g, dq, dk, dg}) c.expect(L, i, c.qk(), 4);
  for (int i : {dO, dv}) c.expect(L, i, c.vv(), 4);
  for (int i : {dht, h0, dh0}) c.expect(L, i, c.state(), 4);
  c.v.bad(contract_broken, "dh0 given iff initial_state is broken");
  check_family(c, fused ? Family::FusedChunk : Family::Chunk);
  std::string why;
  c.v.bad(L.any_negative(), "a negative dimension");
  c.v.bad(L.forbidden_overlap({{"dh0", "dht"}}, &why), why);
  const bool finite_in = finite_type<T>() && c.scale_moderate && fx <= Fill::Zero && fg <= Fill::Zero &&
                         fd <= Fill::Zero && (!L.slot(h0).present || c.state_fill <= Fill::Zero);
  const auto dhtv = has_dht ? std::optional<gla::ConstView<float, 4>>(L.view<const float, 4>(dht)) : std::nullopt;
  const char* name = fused         ? (into ? "fused_chunk_gla_backward_into" : "fused_chunk_gla_backward")
                     : from_states ? (into ? "chunk_gla_backward_from_states_into" : "chunk_gla_backward_from_states")
                                   : (into ? "chunk_gla_backward_into" : "chunk_gla_backward");
  gla::ChunkGLAGrads<T> r;
  const Outcome out = call(name, &L, c.v.invalid, c.v.why, !into, [&] {
    const auto qv = L.view<const T, 4>(q);
    if (from_states) {
      const auto hv = L.view<const gla::acc_t<T>, 5>(hs);
      if (into)
        gla::chunk_gla_backward_from_states_into(
            qv, L.view<const T, 4>(k), L.view<const T, 4>(v), L.view<const T, 4>(g), hv, L.view<const T, 4>(dO), dhtv,
            c.opts, L.view<T, 4>(dq), L.view<T, 4>(dk), L.view<T, 4>(dv), L.view<T, 4>(dg), L.opt_view<float, 4>(dh0));
      else
        r = gla::chunk_gla_backward_from_states(qv, L.view<const T, 4>(k), L.view<const T, 4>(v), L.view<const T, 4>(g),
                                                hv, L.view<const T, 4>(dO), dhtv, c.opts);
    } else if (into) {
      if (fused)
        gla::fused_chunk_gla_backward_into(qv, L.view<const T, 4>(k), L.view<const T, 4>(v), L.view<const T, 4>(g),
                                           L.view<const T, 4>(dO), dhtv, c.opts, L.view<T, 4>(dq), L.view<T, 4>(dk),
                                           L.view<T, 4>(dv), L.view<T, 4>(dg), L.opt_view<float, 4>(dh0));
      else
        gla::chunk_gla_backward_into(qv, L.view<const T, 4>(k), L.view<const T, 4>(v), L.view<const T, 4>(g),
                                     L.view<const T, 4>(dO), dhtv, c.opts, L.view<T, 4>(dq), L.view<T, 4>(dk),
                                     L.view<T, 4>(dv), L.view<T, 4>(dg), L.opt_view<float, 4>(dh0));
    } else {
      if (fused)
        r = gla::fused_chunk_gla_backward(qv, L.view<const T, 4>(k), L.view<const T, 4>(v), L.view<const T, 4>(g),
                                          L.view<const T, 4>(dO), dhtv, c.opts);
      else
        r = gla::chunk_gla_backward(qv, L.view<const T, 4>(k), L.view<const T, 4>(v), L.view<const T, 4>(g),
                                    L.view<const T, 4>(dO), dhtv, c.opts);
    }
  });
  if (!out.ok || !finite_in) return;
  const bool fin = into ? all_finite<T>(L, dq) && all_finite<T>(L, dk) && all_finite<T>(L, dv) &&
                              all_finite<T>(L, dg) && all_finite<float>(L, dh0)
                        : tensor_finite(r.dq) && tensor_finite(r.dk) && tensor_finite(r.dv) && tensor_finite(r.dg) &&
                              (!r.dh0 || tensor_finite(*r.dh0));
  if (!fin) finding(std::string(name) + ": non-finite gradient for finite moderate inputs with gates <= 0");
}

/// fused_recurrent_gla_backward (allocating or _into) and naive_recurrent_gla_backward<double>.
template <class T>
void op_recurrent_backward(Input& in, int kind /*0 fused, 1 fused_into, 2 naive*/) {
  GlaCase c = decode_case(in);
  Rng rng(in.u32());
  Layout L;
  const Fill fx = decode_fill(in), fg = decode_fill(in), fd = decode_fill(in);
  const int q = add4(in, L, "q", c.qk(), sizeof(T), true);
  const int k = add4(in, L, "k", c.qk(), sizeof(T), true);
  const int v = add4(in, L, "v", c.vv(), sizeof(T), true);
  const std::uint8_t gates = in.u8();
  const int gk = add4(in, L, "gk", c.qk(), sizeof(T), true, gates & 1);
  const int gv = add4(in, L, "gv", c.vv(), sizeof(T), true, gates & 2);
  const int dO = add4(in, L, "do_", c.vv(), sizeof(T), true);
  const bool has_dht = in.bit();
  const int dht = add4(in, L, "dht", c.state(), sizeof(float), true, has_dht);
  const int h0 = add_initial_state(in, L, c);
  const bool into = kind == 1;
  int dq = -1, dk = -1, dv = -1, dgk = -1, dgv = -1, dh0 = -1;
  bool contract_broken = false;
  if (into) {
    dq = add4(in, L, "dq", c.qk(), sizeof(T), false);
    L.place(in, dq);
    dk = add4(in, L, "dk", c.qk(), sizeof(T), false);
    L.place(in, dk);
    dv = add4(in, L, "dv", c.vv(), sizeof(T), false);
    L.place(in, dv);
    const std::uint8_t contract = in.u8();
    bool w_gk = L.slot(gk).present, w_gv = L.slot(gv).present, w_h0 = L.slot(h0).present;
    if (contract >= 240 && (contract & 7)) {
      if (contract & 1) w_gk = !w_gk;
      if (contract & 2) w_gv = !w_gv;
      if (contract & 4) w_h0 = !w_h0;
      contract_broken = true;
    }
    dgk = add4(in, L, "dgk", c.qk(), sizeof(T), false, w_gk);
    L.place(in, dgk);
    dgv = add4(in, L, "dgv", c.vv(), sizeof(T), false, w_gv);
    L.place(in, dgv);
    dh0 = add4(in, L, "dh0", c.state(), sizeof(float), false, w_h0);
    L.place(in, dh0, dht);
  }
  L.allocate();
  L.fill<T>(q, rng, fx, false);
  L.fill<T>(k, rng, fx, false);
  L.fill<T>(v, rng, fx, false);
  L.fill<T>(gk, rng, fg, true);
  L.fill<T>(gv, rng, fg, true);
  L.fill<T>(dO, rng, fd, false);
  L.fill<float>(dht, rng, fd, false);
  L.fill<float>(h0, rng, c.state_fill, false);
  bind_initial_state(c, L, h0);

  c.derive(L, q, v);
  for (int i : {k, gk, dq, dk, dgk}) c.expect(L, i, c.qk(), 4);
  for (int i : {gv, dO, dv, dgv}) c.expect(L, i, c.vv(), 4);
  for (int i : {dht, h0, dh0}) c.expect(L, i, c.state(), 4);
  c.v.bad(contract_broken, "dgk/dgv/dh0 given iff gk/gv/initial_state is broken");
  check_family(c, Family::RecurrentBackward);
  std::string why;
  c.v.bad(L.any_negative(), "a negative dimension");
  if (into) c.v.bad(L.forbidden_overlap({{"dh0", "dht"}}, &why), why);
  const bool finite_in = finite_type<T>() && c.scale_moderate && fx <= Fill::Zero && fg <= Fill::Zero &&
                         fd <= Fill::Zero && (!L.slot(h0).present || c.state_fill <= Fill::Zero);
  const auto dhtv = has_dht ? std::optional<gla::ConstView<float, 4>>(L.view<const float, 4>(dht)) : std::nullopt;
  const char* name = kind == 0   ? "fused_recurrent_gla_backward"
                     : kind == 1 ? "fused_recurrent_gla_backward_into"
                                 : "naive_recurrent_gla_backward";
  bool fin = true;
  const Outcome out = call(name, &L, c.v.invalid, c.v.why, !into, [&] {
    const auto qv = L.view<const T, 4>(q);
    const auto gkv = L.opt_view<const T, 4>(gk), gvv = L.opt_view<const T, 4>(gv);
    if (kind == 0) {
      auto r = gla::fused_recurrent_gla_backward(qv, L.view<const T, 4>(k), L.view<const T, 4>(v), gkv, gvv,
                                                 L.view<const T, 4>(dO), dhtv, c.opts);
      fin = tensor_finite(r.dq) && tensor_finite(r.dk) && tensor_finite(r.dv) && (!r.dgk || tensor_finite(*r.dgk)) &&
            (!r.dgv || tensor_finite(*r.dgv)) && (!r.dh0 || tensor_finite(*r.dh0));
      if (r.dgk.has_value() != L.slot(gk).present || r.dh0.has_value() != L.slot(h0).present)
        finding("fused_recurrent_gla_backward: dgk/dh0 presence is wrong");
    } else if (kind == 1) {
      gla::fused_recurrent_gla_backward_into(qv, L.view<const T, 4>(k), L.view<const T, 4>(v), gkv, gvv,
                                             L.view<const T, 4>(dO), dhtv, c.opts, L.view<T, 4>(dq), L.view<T, 4>(dk),
                                             L.view<T, 4>(dv), L.opt_view<T, 4>(dgk), L.opt_view<T, 4>(dgv),
                                             L.opt_view<float, 4>(dh0));
      fin = all_finite<T>(L, dq) && all_finite<T>(L, dk) && all_finite<T>(L, dv) && all_finite<T>(L, dgk) &&
            all_finite<T>(L, dgv) && all_finite<float>(L, dh0);
    } else {
      auto r = gla::naive_recurrent_gla_backward<double>(qv, L.view<const T, 4>(k), L.view<const T, 4>(v), gkv, gvv,
                                                         L.view<const T, 4>(dO), dhtv, c.opts);
      fin = tensor_finite(r.dq) && tensor_finite(r.dk) && tensor_finite(r.dv) && tensor_finite(r.dh0);
    }
  });
  if (out.ok && finite_in && !fin)
    finding(std::string(name) + ": non-finite gradient for finite moderate inputs with gates <= 0");
}

/// naive_recurrent_gla<double>.
template <class T>
void op_naive(Input& in) {
  GlaCase c = decode_case(in);
  Rng rng(in.u32());
  Layout L;
  const Fill fx = decode_fill(in), fg = decode_fill(in);
  const int q = add4(in, L, "q", c.qk(), sizeof(T), true);
  const int k = add4(in, L, "k", c.qk(), sizeof(T), true);
  const int v = add4(in, L, "v", c.vv(), sizeof(T), true);
  const std::uint8_t gates = in.u8();
  const int gk = add4(in, L, "gk", c.qk(), sizeof(T), true, gates & 1);
  const int gv = add4(in, L, "gv", c.vv(), sizeof(T), true, gates & 2);
  const int h0 = add_initial_state(in, L, c);
  L.allocate();
  L.fill<T>(q, rng, fx, false);
  L.fill<T>(k, rng, fx, false);
  L.fill<T>(v, rng, fx, false);
  L.fill<T>(gk, rng, fg, true);
  L.fill<T>(gv, rng, fg, true);
  L.fill<float>(h0, rng, c.state_fill, false);
  bind_initial_state(c, L, h0);
  c.derive(L, q, v);
  for (int i : {k, gk}) c.expect(L, i, c.qk(), 4);
  c.expect(L, gv, c.vv(), 4);
  c.expect(L, h0, c.state(), 4);
  check_family(c, Family::Recurrent);
  c.v.bad(L.any_negative(), "a negative dimension");
  const bool finite_in = c.scale_moderate && c.extras_moderate && fx <= Fill::Zero && fg <= Fill::Zero &&
                         (!L.slot(h0).present || c.state_fill <= Fill::Zero);
  gla::NaiveResult<double> r;
  const Outcome out = call("naive_recurrent_gla", &L, c.v.invalid, c.v.why, true, [&] {
    r = gla::naive_recurrent_gla<double>(L.view<const T, 4>(q), L.view<const T, 4>(k), L.view<const T, 4>(v),
                                         L.opt_view<const T, 4>(gk), L.opt_view<const T, 4>(gv), c.opts);
  });
  if (out.ok && finite_in && !(tensor_finite(r.o) && tensor_finite(r.final_state)))
    finding("naive_recurrent_gla: non-finite output for finite moderate inputs");
}

/// chunk_fwd_h and chunk_bwd_dh with ChunkHGates (g, g_gamma, gk, gv).
template <class T>
void op_chunk_h(Input& in, bool backward) {
  GlaCase c = decode_case(in);
  Rng rng(in.u32());
  Layout L;
  const Fill fx = decode_fill(in), fg = decode_fill(in);
  const int q = add4(in, L, "q", c.qk(), sizeof(T), true, backward);
  const int k = add4(in, L, "k", c.qk(), sizeof(T), true);
  const int v = add4(in, L, "v", c.vv(), sizeof(T), true);
  const int dO = add4(in, L, "do_", c.vv(), sizeof(T), true, backward);
  const std::uint8_t gates = in.u8();
  Dims g3 = {c.B, c.T, c.H, 0, 0};
  if (gates & 1) perturb(in, g3, 3);
  const int g = L.add("g", 3, g3, sizeof(float), true, gates & 1);
  Dims gg = {c.H, 0, 0, 0, 0};
  if (gates & 2) perturb(in, gg, 1);
  const int gamma = L.add("g_gamma", 1, gg, sizeof(float), true, gates & 2);
  const int gk = add4(in, L, "gk", c.qk(), sizeof(float), true, gates & 4);
  const int gv = add4(in, L, "gv", c.vv(), sizeof(float), true, gates & 8);
  const bool has_dht = backward && in.bit();
  const int dht = add4(in, L, "dht", c.state(), sizeof(float), true, has_dht);
  const int h0 = add_initial_state(in, L, c);
  L.allocate();
  L.fill<T>(q, rng, fx, false);
  L.fill<T>(k, rng, fx, false);
  L.fill<T>(v, rng, fx, false);
  L.fill<T>(dO, rng, fx, false);
  // The gates of chunk_fwd_h are chunk-local cumsums: any values are accepted, except a g_gamma that is no decay.
  L.fill<float>(g, rng, fg, true);
  L.fill<float>(gamma, rng, fg, true);
  L.fill<float>(gk, rng, fg, true);
  L.fill<float>(gv, rng, fg, true);
  L.fill<float>(dht, rng, fx, false);
  L.fill<float>(h0, rng, c.state_fill, false);
  bind_initial_state(c, L, h0);
  c.derive(L, backward ? q : k, v);
  if (backward) c.expect(L, k, c.qk(), 4);
  c.expect(L, dO, c.vv(), 4);
  c.expect(L, g, {c.B, c.T, c.H, 0, 0}, 3);
  c.expect(L, gamma, {c.H, 0, 0, 0, 0}, 1);
  c.expect(L, gk, c.qk(), 4);
  c.expect(L, gv, c.vv(), 4);
  c.expect(L, dht, c.state(), 4);
  c.expect(L, h0, c.state(), 4);
  if (!c.v.invalid && L.slot(gamma).present)
    for (Index h = 0; h < c.H; ++h) {
      const float x = L.ptr<float>(gamma)[h];
      c.v.bad(!(std::isfinite(x) && x <= 0.0f), "g_gamma is not a finite decay");
    }
  check_family(c, Family::ChunkH);
  c.v.bad(L.any_negative(), "a negative dimension");
  gla::ChunkHGates cg;
  if (L.slot(g).present) cg.g = gla::ConstView<float, 3>(L.view<float, 3>(g));
  if (L.slot(gamma).present) cg.g_gamma = gla::ConstView<float, 1>(L.view<float, 1>(gamma));
  if (L.slot(gk).present) cg.gk = gla::ConstView<float, 4>(L.view<float, 4>(gk));
  if (L.slot(gv).present) cg.gv = gla::ConstView<float, 4>(L.view<float, 4>(gv));
  const auto dhtv = has_dht ? std::optional<gla::ConstView<float, 4>>(L.view<const float, 4>(dht)) : std::nullopt;
  call(backward ? "chunk_bwd_dh" : "chunk_fwd_h", &L, c.v.invalid, c.v.why, true, [&] {
    if (backward) {
      auto r = gla::chunk_bwd_dh(L.view<const T, 4>(q), L.view<const T, 4>(k), L.view<const T, 4>(v), cg,
                                 L.view<const T, 4>(dO), dhtv, c.opts);
      if (r.dh0.has_value() != L.slot(h0).present) finding("chunk_bwd_dh: dh0 present iff initial_state is broken");
    } else {
      auto r = gla::chunk_fwd_h(L.view<const T, 4>(k), L.view<const T, 4>(v), cg, c.opts);
      if (r.final_state.has_value() != c.opts.output_final_state)
        finding("chunk_fwd_h: final_state present iff output_final_state is broken");
    }
  });
}

template <class T>
void op_cumsum(Input& in) {
  const bool rank4 = in.bit();
  Dims d = {dim_B(in), dim_T(in), dim_H(in), dim_D(in), 0};
  const std::int64_t cs = in.pick<std::int64_t>(
      {16, 64, 1, 2, 32, 0, -16, 3, 24, std::int64_t(1) << 62, kI64Max, kI64Min, std::int64_t(1) << 17, 256, 512, 4});
  bool moderate = true;
  const std::optional<float> scale = decode_scale(in, moderate);
  const bool reverse = in.bit();
  const auto cu = decode_cu(in, d[1]);
  Validity v;
  v.bad(cs <= 0 || (cs & (cs - 1)) != 0, "chunk_size is not a power of two");
  v.bad(d[0] < 0 || d[1] < 0 || d[2] < 0 || (rank4 && d[3] < 0), "a negative dimension");
  if (!cu.empty()) v.bad(d[0] != 1 || !cu_valid(cu, d[1]), "cu_seqlens is invalid");
  v.bad(scale && !std::isfinite(*scale), "scale is not finite");
  Rng rng(in.u32());
  const Fill f = decode_fill(in);
  Layout L;
  const int g = L.add("g", rank4 ? 4 : 3, d, sizeof(T), true);
  L.allocate();
  L.fill<T>(g, rng, f, true);
  call("chunk_local_cumsum", &L, v.invalid, v.why, true, [&] {
    if (rank4) {
      auto out = gla::chunk_local_cumsum(L.view<const T, 4>(g), cs, reverse, scale, cu);
      if (out.dimensions() != L.view<const T, 4>(g).dimensions()) finding("chunk_local_cumsum: wrong shape");
    } else {
      auto out = gla::chunk_local_cumsum(L.view<const T, 3>(g), cs, reverse, scale, cu);
      if (out.dimensions() != L.view<const T, 3>(g).dimensions()) finding("chunk_local_cumsum: wrong shape");
    }
  });
}

/// The router: gla_forward with a mode, optional gk/gv and an optional attention mask.
template <class T>
void op_router(Input& in) {
  GlaCase c = decode_case(in);
  const gla::Mode mode =
      in.pick<gla::Mode>({gla::Mode::Auto, gla::Mode::Chunk, gla::Mode::FusedChunk, gla::Mode::FusedRecurrent});
  Rng rng(in.u32());
  Layout L;
  const Fill fx = decode_fill(in), fg = decode_fill(in);
  const int q = add4(in, L, "q", c.qk(), sizeof(T), true);
  const int k = add4(in, L, "k", c.qk(), sizeof(T), true);
  const int v = add4(in, L, "v", c.vv(), sizeof(T), true);
  const std::uint8_t gates = in.u8();
  const int gk = add4(in, L, "gk", c.qk(), sizeof(T), true, gates & 1);
  const int gv = add4(in, L, "gv", c.vv(), sizeof(T), true, gates & 2);
  const bool has_mask = gates & 4;
  Dims md = {c.B, c.T + in.pick<Index>({0, 0, 1, 2, -1}), 0, 0, 0};
  perturb(in, md, 2);
  const int mask = L.add("attention_mask", 2, md, sizeof(std::int64_t), true, has_mask);
  const int h0 = add_initial_state(in, L, c);
  L.allocate();
  L.fill<T>(q, rng, fx, false);
  L.fill<T>(k, rng, fx, false);
  L.fill<T>(v, rng, fx, false);
  L.fill<T>(gk, rng, fg, true);
  L.fill<T>(gv, rng, fg, true);
  L.fill<float>(h0, rng, c.state_fill, false);
  const std::uint8_t mfill = in.u8();
  bool other = false;
  if (has_mask)
    for (Index i = 0; i < L.slot(mask).elems(); ++i) {
      const bool odd = mfill >= 240 && rng.next() % 16 == 0;
      L.ptr<std::int64_t>(mask)[i] = odd ? 2 : static_cast<std::int64_t>(rng.next() % 4 != 0);
      other = other || odd;
    }
  bind_initial_state(c, L, h0);
  c.derive(L, q, v);
  for (int i : {k, gk}) c.expect(L, i, c.qk(), 4);
  c.expect(L, gv, c.vv(), 4);
  c.expect(L, h0, c.state(), 4);
  c.v.bad(L.any_negative(), "a negative dimension");
  const bool needs_recurrent =
      L.slot(gv).present || c.opts.reverse || !c.opts.gamma.empty() || c.opts.state_clamp_min || c.opts.state_clamp_max;
  c.v.bad(needs_recurrent && (mode == gla::Mode::Chunk || mode == gla::Mode::FusedChunk),
          "gv/reverse/extras with an explicit chunk mode");
  if (has_mask) {
    c.v.bad(!c.opts.cu_seqlens.empty(), "attention_mask and cu_seqlens");
    c.v.bad(md[0] != c.B || md[1] < c.T, "attention_mask does not fit [B,S >= T]");
    // Only the last T columns are read: a value other than 0/1 there must be rejected.
    if (!c.v.invalid && other)
      for (Index b = 0; b < c.B; ++b)
        for (Index t = md[1] - c.T; t < md[1]; ++t)
          c.v.bad(L.ptr<std::int64_t>(mask)[b * md[1] + t] == 2, "a mask value other than 0 and 1");
  }
  const auto mv =
      has_mask ? std::optional<gla::ConstView<std::int64_t, 2>>(L.view<const std::int64_t, 2>(mask)) : std::nullopt;
  g_modelled = false;  // the kernel's own rules (chunk_size, max_seqlen on the packed batch) are not modelled
  call("gla_forward", &L, c.v.invalid, c.v.why, true, [&] {
    auto r = gla::gla_forward(L.view<const T, 4>(q), L.view<const T, 4>(k), L.view<const T, 4>(v),
                              L.opt_view<const T, 4>(gk), L.opt_view<const T, 4>(gv), c.opts, mode, mv);
    if (r.o.dimension(0) != c.B || r.o.dimension(1) != c.T) finding("gla_forward: o has a wrong shape");
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Varlen helpers.

std::int64_t big_value(Input& in, Index small_max) {
  const std::uint8_t b = in.u8();
  if (b < 200) return static_cast<std::int64_t>(b % (small_max + 1));
  const std::int64_t table[] = {
      -1, -5, kI64Max, kI64Min, std::int64_t(1) << 62, kI64Max - 1, std::int64_t(1) << 40, std::int64_t(1) << 32};
  return table[b % 8];
}

void op_varlen_cu(Input& in) {
  const int which = in.u8() % 5;
  std::vector<std::int64_t> cu;
  const int n = in.u8() % 7;
  for (int i = 0; i < n; ++i) cu.push_back(big_value(in, 70));
  if (in.bit() && !cu.empty()) {  // make it plausibly valid: 0, then non-decreasing
    cu[0] = 0;
    for (std::size_t i = 1; i < cu.size(); ++i)
      if (cu[i] < cu[i - 1]) cu[i] = cu[i - 1];
  }
  bool monotone = !cu.empty() && cu.front() == 0;
  for (std::size_t i = 1; i < cu.size(); ++i)
    if (cu[i] < cu[i - 1]) monotone = false;
  switch (which) {
    case 0: {
      const std::int64_t total = big_value(in, 70);
      Validity v;
      v.bad(!(cu.size() >= 2 && monotone && cu.back() == total), "cu_seqlens is invalid");
      call("validate_cu_seqlens", nullptr, v.invalid, v.why, false, [&] { gla::validate_cu_seqlens(cu, total); });
      break;
    }
    case 1: {
      Validity v;
      v.bad(!monotone, "cu_seqlens is invalid");
      call("prepare_lens", nullptr, v.invalid, v.why, false, [&] {
        auto l = gla::prepare_lens(cu);
        if (l.size() + 1 != cu.size()) finding("prepare_lens: wrong count");
      });
      break;
    }
    case 2: {
      Validity v;
      std::int64_t sum = 0;
      bool overflow = false;
      for (auto l : cu) {
        v.bad(l < 0, "a negative length");
        if (l >= 0) {
          if (l > kI64Max - sum)
            overflow = true;
          else
            sum += l;
        }
      }
      v.bad(overflow, "the lengths overflow int64");
      call("prepare_cu_seqlens_from_lens", nullptr, v.invalid, v.why, false, [&] {
        auto c = gla::prepare_cu_seqlens_from_lens(cu);
        if (c.size() != cu.size() + 1) finding("prepare_cu_seqlens_from_lens: wrong count");
      });
      break;
    }
    default: {
      const std::int64_t cs = in.pick<std::int64_t>({64, 16, 1, 0, -1, 3, std::int64_t(1) << 62, kI64Max, kI64Min, 2});
      Validity v;
      v.bad(cs <= 0, "chunk_size <= 0");
      v.bad(!(cu.size() >= 2 && monotone), "cu_seqlens is invalid");
      // The chunk count: a valid call with a huge count would allocate that many rows, so such a call is skipped.
      if (!v.invalid) {
        long double total = 0;
        for (std::size_t i = 0; i + 1 < cu.size(); ++i) {
          const std::int64_t len = cu[i + 1] - cu[i];
          total += static_cast<long double>(len / cs + (len % cs != 0));
        }
        if (total > static_cast<long double>(std::int64_t(1) << 40))
          v.bad(true, "more than 2^40 chunks");
        else if (total > 100000)
          return;
      }
      const bool indices = which == 3;
      call(indices ? "prepare_chunk_indices" : "prepare_chunk_offsets", nullptr, v.invalid, v.why, false, [&] {
        if (indices)
          (void)gla::prepare_chunk_indices(cu, cs);
        else
          (void)gla::prepare_chunk_offsets(cu, cs);
      });
      break;
    }
  }
}

template <class T>
void op_varlen_index(Input& in) {
  const int which = in.u8() % 4;
  Rng rng(in.u32());
  if (which == 0) {  // get_unpad_data on an int64 or float mask
    const bool as_float = in.bit();
    Dims d = {dim_B(in), dim_T(in), 0, 0, 0};
    const std::uint8_t vals = in.u8();
    Layout L;
    const int m = L.add("mask", 2, d, as_float ? sizeof(float) : sizeof(std::int64_t), true);
    L.allocate();
    bool other = false;
    for (Index i = 0; i < L.slot(m).elems(); ++i) {
      std::int64_t x = static_cast<std::int64_t>(rng.next() % 2);
      if (vals >= 224 && rng.next() % 8 == 0) {
        x = (vals & 1) ? -1 : 2;
        other = true;
      }
      if (as_float)
        L.ptr<float>(m)[i] =
            (vals & 2) && other && x == 2 ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(x);
      else
        L.ptr<std::int64_t>(m)[i] = x;
    }
    Validity v;
    v.bad(other, "a mask value other than 0 and 1");
    v.bad(L.any_negative(), "a negative dimension");
    call("get_unpad_data", &L, v.invalid, v.why, true, [&] {
      gla::UnpadData u = as_float ? gla::get_unpad_data(L.view<const float, 2>(m))
                                  : gla::get_unpad_data(L.view<const std::int64_t, 2>(m));
      if (u.cu_seqlens.size() != static_cast<std::size_t>(d[0]) + 1) finding("get_unpad_data: wrong cu_seqlens size");
    });
    return;
  }
  // x [n, D] (rank 2) or [n] (rank 1); indices from bytes.
  const bool rank1 = in.bit();
  Dims d = {in.pick<Index>({0, 1, 2, 3, 5, 8, -1, 4}), in.pick<Index>({1, 2, 3, 0, 4, -1, 2, 1}), 0, 0, 0};
  const int ni = in.u8() % 6;
  std::vector<std::int64_t> idx;
  for (int i = 0; i < ni; ++i)
    idx.push_back(
        in.pick<std::int64_t>({0, 1, 2, 3, 4, 5, 7, 0, 1, -1, kI64Max, kI64Min, std::int64_t(1) << 62, 9, 2, 1}));
  Layout L;
  const int x = L.add("x", rank1 ? 1 : 2, d, sizeof(T), true);
  L.allocate();
  L.fill<T>(x, rng, Fill::Moderate, false);
  Validity v;
  v.bad(L.any_negative(), "a negative dimension");
  const Index row = rank1 ? 1 : d[1];
  auto run = [&](auto fn, const char* name) {
    call(name, &L, v.invalid, v.why, true, [&] {
      if (rank1)
        fn(L.view<const T, 1>(x));
      else
        fn(L.view<const T, 2>(x));
    });
  };
  if (which == 1) {
    for (auto i : idx) v.bad(i < 0 || i >= d[0], "an index out of range");
    run([&](auto xv) { (void)gla::index_first_axis(xv, idx); }, "index_first_axis");
  } else if (which == 2) {
    const std::int64_t fad =
        in.pick<std::int64_t>({0, 1, 2, 5, 8, 3, -1, -5, kI64Max, std::int64_t(1) << 62, kI64Min, 4});
    v.bad(static_cast<Index>(idx.size()) != d[0], "indices do not match x");
    v.bad(fad < 0, "first_axis_dim < 0");
    if (row > 0) v.bad(fad > kI64Max / row / 16, "first_axis_dim too large");
    for (auto i : idx) v.bad(i < 0 || i >= fad, "an index out of range");
    run([&](auto xv) { (void)gla::index_put_first_axis(xv, idx, fad); }, "index_put_first_axis");
  } else {
    const std::int64_t tbl[] = {
        0, 1, 2, 3, -1, std::int64_t(1) << 31, std::int64_t(1) << 32, kI64Max, std::int64_t(1) << 62, kI64Min, 4, 2};
    const std::int64_t batch = in.pick(tbl), seqlen = in.pick(tbl);
    v.bad(batch < 0 || seqlen < 0, "batch or seqlen < 0");
    v.bad(static_cast<Index>(idx.size()) != d[0], "indices do not match hidden");
    if (!v.invalid) {
      const bool overflow = seqlen > 0 && batch > kI64Max / seqlen;
      const std::int64_t rows = overflow ? kI64Max : batch * seqlen;
      const bool too_big = overflow || (row > 0 && rows > kI64Max / row / 16);
      v.bad(too_big, "batch * seqlen too large");
      if (!too_big) {
        for (auto i : idx) v.bad(i < 0 || i >= rows, "an index out of range");
        // A valid but huge output would be allocated: skip (only claimed sizes that must be rejected are passed).
        if (!v.invalid && row > 0 && rows > 100000) return;
      }
    }
    run([&](auto xv) { (void)gla::pad_input(xv, idx, batch, seqlen); }, "pad_input");
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Modules.

/// A module size: small, invalid, or a claimed huge value that must be rejected before allocating (never a valid
/// size that would need a huge allocation).
Index module_size(Input& in) {
  return in.pick<Index>({1, 2, 3, 4, 8, 4, 2, 16, 0, -1, (Index(1) << 41), kI64Max, (Index(1) << 62), 5, kI64Min, 1});
}

double decode_eps(Input& in) {
  return in.pick<double>({1e-5, 1e-5, 1e-6, 0.0, -1.0, std::numeric_limits<double>::quiet_NaN(),
                          std::numeric_limits<double>::infinity(), 1e-300});
}

/// Every present tensor of `ids` has exactly the dims of tensor `ref` (same rank).
void expect_like(Validity& v, const Layout& L, int ref, std::initializer_list<int> ids) {
  const TensorSlot& r = L.slot(ref);
  for (int i : ids) {
    if (i < 0 || !L.slot(i).present) continue;
    const TensorSlot& t = L.slot(i);
    v.bad(t.rank != r.rank || t.d != r.d, t.name + " does not have the shape of " + r.name);
  }
}
void expect_dims(Validity& v, const Layout& L, int i, const Dims& want) {
  if (i < 0 || !L.slot(i).present) return;
  const TensorSlot& t = L.slot(i);
  bool same = true;
  for (int k = 0; k < t.rank; ++k) same = same && t.d[static_cast<std::size_t>(k)] == want[static_cast<std::size_t>(k)];
  v.bad(!same, t.name + " has a wrong shape");
}

/// RMSNorm (gated = false) or FusedRMSNormGated: the constructor, then forward_into / forward / forward with a
/// residual / forward_prenorm.
template <class T>
void op_norm(Input& in, bool gated) {
  const Index D = module_size(in);
  const bool affine = !in.bit();
  const bool with_bias = in.bit();
  const double eps = decode_eps(in);
  const std::uint8_t act = in.u8() % 6;
  Validity cv;
  cv.bad(D <= 0 || D > gla::kMaxParameterElements, "hidden_size out of range");
  cv.bad(!(eps >= 0) || !std::isfinite(eps), "eps is invalid");
  if (gated) cv.bad(act == 3 || act == 4, "an unsupported activation");
  std::optional<gla::RMSNorm<float>> norm;
  std::optional<gla::FusedRMSNormGated<float>> gnorm;
  const char* ctor = gated ? "FusedRMSNormGated" : "RMSNorm";
  const Outcome made = call(ctor, nullptr, cv.invalid, cv.why, false, [&] {
    if (gated) {
      if (act == 5)
        gnorm.emplace(D, affine, eps, "sigmoid");
      else if (act == 4)
        gnorm.emplace(D, affine, eps, "relu");
      else
        gnorm.emplace(D, affine, eps,
                      act == 3   ? gla::Activation::GELU
                      : act == 1 ? gla::Activation::Sigmoid
                                 : gla::Activation::SiLU);
    } else {
      norm.emplace(D, affine, with_bias, eps);
    }
  });
  if (!made.ok) return;
  Validity v;
  if (in.u8() >= 240) {  // a replaced parameter of the wrong size must be rejected
    gla::Tensor<float, 1> w(D + 1);
    w.setConstant(1.0f);
    if (gated)
      gnorm->weight = w;
    else
      norm->weight = w;
    v.bad(true, "a weight of the wrong size");
  }
  const int form = in.u8() % 4;  // 0: forward_into, 1: forward, 2: forward with residual, 3: forward_prenorm
  const Index rows = in.pick<Index>({1, 2, 3, 0, 5, -1, 4, 1});
  const Dims xd = {rows, D, 0, 0, 0};
  Rng rng(in.u32());
  const Fill fx = decode_fill(in);
  const std::uint8_t opt = in.u8();
  const bool has_res = (opt & 1) && form != 1, has_res_out = (opt & 2) && form == 0;
  Layout L;
  auto add2 = [&](const char* name, bool input, bool present) {
    Dims d = xd;
    if (present) perturb(in, d, 2);
    return L.add(name, 2, d, sizeof(T), input, present);
  };
  const int x = add2("x", true, true);
  const int g = add2("g", true, gated);
  const int res = add2("residual", true, has_res);
  int y = -1, ro = -1;
  if (form == 0) {
    y = add2("y", false, true);
    L.place(in, y, (opt & 4) && gated ? g : x);
    ro = add2("residual_out", false, has_res_out);
    L.place(in, ro, res);
  }
  L.allocate();
  L.fill<T>(x, rng, fx, false);
  L.fill<T>(g, rng, fx, false);
  L.fill<T>(res, rng, fx, false);
  v.bad(L.slot(x).d[1] != D, "x has a wrong last dimension");
  expect_like(v, L, x, {g, res, y, ro});
  v.bad(L.any_negative(), "a negative dimension");
  std::string why;
  if (form == 0) {
    const std::vector<std::pair<std::string, std::string>> allowed =
        gated ? std::vector<std::pair<std::string, std::string>>{{"y", "x"}, {"y", "g"}, {"residual_out", "residual"}}
              : std::vector<std::pair<std::string, std::string>>{{"y", "x"}, {"residual_out", "residual"}};
    v.bad(L.forbidden_overlap(allowed, &why), why);
  }
  const bool finite_in = finite_type<T>() && fx <= Fill::Zero && eps >= 1e-6;
  const std::string name = std::string(ctor) + (form == 0   ? "::forward_into"
                                                : form == 3 ? "::forward_prenorm"
                                                            : "::forward");
  bool fin = true;
  const Outcome out = call(name.c_str(), &L, v.invalid, v.why, form != 0, [&] {
    const auto xv = L.view<const T, 2>(x);
    const auto gv = L.view<const T, 2>(g);
    const auto rv = L.view<const T, 2>(res);
    if (form == 0) {
      const auto resv = L.opt_view<const T, 2>(res);
      if (gated)
        gnorm->forward_into(xv, gv, L.view<T, 2>(y), resv, L.opt_view<T, 2>(ro));
      else
        norm->forward_into(xv, L.view<T, 2>(y), resv, L.opt_view<T, 2>(ro));
      fin = all_finite<T>(L, y) && all_finite<T>(L, ro);
    } else if (form == 1 || (form == 2 && !has_res)) {
      auto yy = gated ? gnorm->forward(xv, gv) : norm->forward(xv);
      fin = tensor_finite(yy);
    } else if (form == 2) {
      auto yy = gated ? gnorm->forward(xv, gv, rv) : norm->forward(xv, rv);
      fin = tensor_finite(yy);
    } else if (has_res) {
      auto p = gated ? gnorm->forward_prenorm(xv, gv, rv) : norm->forward_prenorm(xv, rv);
      fin = tensor_finite(p.y) && tensor_finite(p.residual);
    } else {
      auto p = gated ? gnorm->template forward_prenorm<float>(xv, gv) : norm->template forward_prenorm<float>(xv);
      fin = tensor_finite(p.y) && tensor_finite(p.residual);
    }
  });
  if (out.ok && finite_in && !fin) finding(name + ": non-finite output for finite moderate inputs and eps >= 1e-6");
}

/// ShortConvolution: the constructor, then forward_into / forward / step_into / step.
template <class T>
void op_short_conv(Input& in) {
  const Index D = module_size(in), W = module_size(in);
  const bool with_bias = in.bit();
  const std::uint8_t act = in.u8() % 6;
  Validity cv;
  cv.bad(D <= 0 || W <= 0, "hidden_size or kernel_size <= 0");
  if (D > 0 && W > 0) {
    const long double n = static_cast<long double>(D) * static_cast<long double>(W) + (with_bias ? D : 0);
    cv.bad(n > static_cast<long double>(gla::kMaxParameterElements), "too many parameters");
  }
  cv.bad(act == 3 || act == 5, "an unsupported activation");
  std::optional<gla::ShortConvolution<float>> conv;
  const Outcome made = call("ShortConvolution", nullptr, cv.invalid, cv.why, false, [&] {
    if (act == 0)
      conv.emplace(D, W, with_bias, gla::Activation::SiLU);
    else if (act == 1)
      conv.emplace(D, W, with_bias, std::nullopt);
    else if (act == 2)
      conv.emplace(D, W, with_bias, "none");
    else if (act == 3)
      conv.emplace(D, W, with_bias, gla::Activation::ReLU);
    else if (act == 4)
      conv.emplace(D, W, with_bias, "swish");
    else
      conv.emplace(D, W, with_bias, "gelu");
  });
  if (!made.ok) return;
  Rng rng(in.u32());
  {
    gla::Tensor<float, 2> w(D, W);
    for (Index i = 0; i < w.size(); ++i) w.data()[i] = static_cast<float>(rng.uniform(-1, 1));
    conv->set_weight(gla::ConstView<float, 2>(w));
  }
  Validity v;
  if (in.u8() >= 244) {
    conv->weight = gla::Tensor<float, 3>(D, 1, W + 1);
    conv->weight.setZero();
    v.bad(true, "a weight of the wrong shape");
  }
  const int form = in.u8() % 4;  // 0 forward_into, 1 forward, 2 step_into, 3 step
  const Fill fx = decode_fill(in);
  Layout L;
  std::string why;
  auto addp = [&](const char* name, int rank, Dims d, bool input, bool present) {
    if (present) perturb(in, d, rank);
    return L.add(name, rank, d, sizeof(T), input, present);
  };
  if (form <= 1) {
    const Index B = in.pick<Index>({1, 2, 1, 3, 0, -1, 1, 2}), T_ = dim_T(in);
    const auto cu = decode_cu(in, T_);
    const Index N0 = cu.empty() ? B : std::max<Index>(0, static_cast<Index>(cu.size()) - 1);
    const std::uint8_t opt = in.u8();
    const bool want_final = opt & 8;
    const int x = addp("x", 3, {B, T_, D, 0, 0}, true, true);
    const Dims xd = L.slot(x).d;
    const int cache = addp("cache", 3, {N0, D, W, 0, 0}, true, opt & 1);
    const int res = addp("residual", 3, xd, true, opt & 2);
    const int mask = addp("mask", 2, {xd[0], xd[1], 0, 0, 0}, true, opt & 4);
    int y = -1, fs = -1;
    if (form == 0) {
      y = addp("y", 3, xd, false, true);
      L.place(in, y, res);
      fs = addp("final_state", 3, {N0, D, W, 0, 0}, false, want_final);
      L.place(in, fs, cache);
    }
    L.allocate();
    L.fill<T>(x, rng, fx, false);
    L.fill<T>(cache, rng, fx, false);
    L.fill<T>(res, rng, fx, false);
    L.fill<T>(mask, rng, Fill::Moderate, false);
    // The rules, on the actual dims: x [B,T,D] with B > 0, T >= 0; N = B or the sequences of cu_seqlens.
    v.bad(xd[0] <= 0 || xd[1] < 0 || xd[2] != D, "x is not [B>0,T>=0,D]");
    if (!cu.empty()) {
      v.bad(xd[0] != 1 || !cu_valid(cu, xd[1]), "cu_seqlens is invalid (or B != 1)");
      v.bad(L.slot(mask).present, "mask with cu_seqlens");
    }
    const Index N = cu.empty() ? xd[0] : N0;
    expect_like(v, L, x, {res, y});
    expect_dims(v, L, mask, {xd[0], xd[1], 0, 0, 0});
    expect_dims(v, L, cache, {N, D, W, 0, 0});
    expect_dims(v, L, fs, {N, D, W, 0, 0});
    v.bad(L.any_negative(), "a negative dimension");
    if (form == 0) v.bad(L.forbidden_overlap({{"y", "residual"}, {"final_state", "cache"}}, &why), why);
    const bool finite_in = finite_type<T>() && fx <= Fill::Zero;
    bool fin = true;
    const Outcome out = call(form == 0 ? "ShortConvolution::forward_into" : "ShortConvolution::forward", &L, v.invalid,
                             v.why, form == 1, [&] {
                               const auto xv = L.view<const T, 3>(x);
                               const auto cv = L.opt_view<const T, 3>(cache);
                               const auto rv = L.opt_view<const T, 3>(res);
                               const auto mv = L.opt_view<const T, 2>(mask);
                               if (form == 0) {
                                 conv->forward_into(xv, L.view<T, 3>(y), cv, L.opt_view<T, 3>(fs), cu, rv, mv);
                                 fin = all_finite<T>(L, y) && all_finite<T>(L, fs);
                               } else {
                                 auto r = conv->forward(xv, cv, want_final, cu, rv, mv);
                                 fin = tensor_finite(r.y) && (!r.final_state || tensor_finite(*r.final_state));
                                 if (r.final_state.has_value() != want_final)
                                   finding("ShortConvolution::forward: final_state presence is wrong");
                               }
                             });
    if (out.ok && finite_in && !fin) finding("ShortConvolution: non-finite output for finite moderate inputs");
    return;
  }
  // step_into / step: x [N,D], cache [N,D,W] (in/out), y [N,D], residual [N,D].
  const Index N = in.pick<Index>({1, 2, 3, 1, 0, -1, 2, 1});
  const std::uint8_t opt = in.u8();
  const int x = addp("x", 2, {N, D, 0, 0, 0}, true, true);
  const Dims xd = L.slot(x).d;
  const int res = addp("residual", 2, xd, true, opt & 2);
  // The cache is read and written: an output that is exactly its own input (the documented in-place pair).
  const int cache_in = addp("cache", 3, {xd[0], D, W, 0, 0}, true, true);
  const int cache_out = L.add("cache_out", 3, L.slot(cache_in).d, sizeof(T), false);
  L.slot(cache_out).target = cache_in;
  int y = -1;
  if (form == 2) {
    y = addp("y", 2, xd, false, true);
    L.place(in, y, res);
  }
  L.allocate();
  L.fill<T>(x, rng, fx, false);
  L.fill<T>(cache_in, rng, fx, false);
  L.fill<T>(res, rng, fx, false);
  v.bad(xd[0] <= 0 || xd[1] != D, "x is not [N>0,D]");
  expect_like(v, L, x, {res, y});
  expect_dims(v, L, cache_in, {xd[0], D, W, 0, 0});
  v.bad(L.any_negative(), "a negative dimension");
  if (form == 2) v.bad(L.forbidden_overlap({{"y", "residual"}, {"cache_out", "cache"}}, &why), why);
  const bool finite_in = finite_type<T>() && fx <= Fill::Zero;
  bool fin = true;
  const Outcome out =
      call(form == 2 ? "ShortConvolution::step_into" : "ShortConvolution::step", &L, v.invalid, v.why, false, [&] {
        const auto xv = L.view<const T, 2>(x);
        const auto rv = L.opt_view<const T, 2>(res);
        if (form == 2) {
          conv->step_into(xv, L.view<T, 3>(cache_in), L.view<T, 2>(y), rv);
          fin = all_finite<T>(L, y) && all_finite<T>(L, cache_in);
        } else {
          auto yy = conv->step(xv, L.view<T, 3>(cache_in), rv);
          fin = tensor_finite(yy) && all_finite<T>(L, cache_in);
        }
      });
  if (out.ok && finite_in && !fin) finding("ShortConvolution::step: non-finite output for finite moderate inputs");
}

/// activate / activate_into / apply_activation (tensor, Eigen, scalar) / parse_activation.
template <class T>
void op_activation(Input& in) {
  const int which = in.u8() % 5;
  const std::uint8_t a = in.u8();
  const bool bad_enum = a >= 250;
  const auto act = bad_enum ? static_cast<gla::Activation>(7 + (a & 3)) : static_cast<gla::Activation>(a % 6);
  Rng rng(in.u32());
  const Dims d = {in.pick<Index>({1, 2, 3, 0, 4, -1, 5, 1}), in.pick<Index>({1, 2, 3, 0, 4, -1, 8, 2}), 0, 0, 0};
  const Fill f = decode_fill(in);
  Validity v;
  v.bad(bad_enum, "an invalid Activation value");
  if (which == 4) {
    const char* names[] = {"relu", "sigmoid", "logsigmoid", "silu", "swish", "sqrelu", "gelu", "bias_gelu", "", "ReLU"};
    const std::uint8_t n = in.u8() % 10;
    Validity pv;
    pv.bad(n >= 7, "an unknown activation name");
    call("parse_activation", nullptr, pv.invalid, pv.why, false, [&] { (void)gla::parse_activation(names[n]); });
    call("apply_activation(scalar)", nullptr, v.invalid, v.why, false,
         [&] { (void)gla::apply_activation(act, static_cast<double>(gen_value(rng, f, false))); });
    return;
  }
  Layout L;
  const int x = L.add("x", 2, d, sizeof(T), true);
  int y = -1;
  if (which == 1) {
    Dims yd = d;
    perturb(in, yd, 2);
    y = L.add("y", 2, yd, sizeof(T), false);
    L.place(in, y, x);
  }
  L.allocate();
  L.fill<T>(x, rng, f, false);
  expect_like(v, L, x, {y});
  v.bad(L.any_negative(), "a negative dimension");
  std::string why;
  if (which == 1) v.bad(L.forbidden_overlap({{"y", "x"}}, &why), why);
  if (which == 3 && L.slot(x).negative()) return;  // an Eigen map cannot have a negative size
  const char* name = which == 0   ? "activate"
                     : which == 1 ? "activate_into"
                     : which == 2 ? "apply_activation(tensor)"
                                  : "apply_activation(eigen)";
  // apply_activation works in place on x: an in-place form, so an error must leave x unchanged.
  call(name, &L, v.invalid, v.why, which == 0, [&] {
    if (which == 0) {
      (void)gla::activate(act, L.view<const T, 2>(x));
    } else if (which == 1) {
      gla::activate_into(act, L.view<const T, 2>(x), L.view<T, 2>(y));
    } else if (which == 2) {
      gla::apply_activation(act, L.view<T, 2>(x));
    } else {
      Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> m(L.ptr<T>(x), d[0], d[1]);
      gla::apply_activation(act, m);
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// The layer.

template <class T>
void op_layer(Input& in, bool step) {
  gla::GatedLinearAttentionConfig cfg;
  cfg.mode = in.pick<std::string>({"chunk", "fused_chunk", "fused_recurrent", "chunk", "auto", "fused_recurrent"});
  cfg.hidden_size = in.pick<std::int64_t>({4, 8, 2, 6, 8, 4, 0, -1, std::int64_t(1) << 50, 3, 16, 8});
  cfg.expand_k =
      in.pick<double>({0.5, 1.0, 0.5, 2.0, 0.25, 0.0, -1.0, std::numeric_limits<double>::quiet_NaN(), 1e300, 1.0});
  cfg.expand_v = in.pick<double>({1.0, 0.5, 1.0, 2.0, 0.0, std::numeric_limits<double>::infinity()});
  cfg.num_heads = in.pick<std::int64_t>({1, 2, 1, 4, 2, 0, -1, 3});
  const std::uint8_t kvh = in.u8();
  if (kvh >= 160) cfg.num_kv_heads = std::int64_t(kvh % 5) - 1;
  const std::uint8_t fm = in.u8();
  if (fm >= 192) cfg.feature_map = fm % 4 == 0 ? "relu" : fm % 4 == 1 ? "swish" : fm % 4 == 2 ? "bogus" : "sigmoid";
  const std::uint8_t flags = in.u8();
  cfg.use_short_conv = flags & 1;
  cfg.conv_bias = flags & 2;
  cfg.use_output_gate = !(flags & 4);
  cfg.elementwise_affine = !(flags & 8);
  cfg.fuse_norm = !(flags & 16);
  cfg.conv_size = in.pick<std::int64_t>({4, 2, 1, 3, 0, -1, std::int64_t(1) << 50, 4});
  cfg.gate_fn = in.pick<std::string>({"swish", "swish", "sigmoid", "relu", "gelu", "bogus", "silu", "swish"});
  cfg.norm_eps = in.pick<double>({1e-5, 1e-5, 1e-6, 0.0, -1.0, std::numeric_limits<double>::quiet_NaN()});
  cfg.gate_logit_normalizer =
      in.pick<double>({16.0, 16.0, 1.0, 0.0, -1.0, std::numeric_limits<double>::infinity(), 1e-300, 4.0});
  cfg.gate_low_rank_dim = in.pick<std::int64_t>({16, 2, 4, 1, 0, -1, std::int64_t(1) << 50, 16});
  const std::uint8_t cm = in.u8();
  if (cm >= 200)
    cfg.clamp_min = in.pick<double>(
        {-1.0, 0.0, 1.0, -std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN(), -0.5});
  std::optional<gla::GatedLinearAttention<T>> layer;
  g_modelled = false;  // the config rules are not modelled
  const Outcome made = call("GatedLinearAttention", nullptr, false, "", false, [&] { layer.emplace(cfg); });
  if (!made.ok) return;
  const std::uint64_t seed = in.u32();
  if (seed % 4 != 0) layer->init_random(seed, 0.2);
  const Index hidden = cfg.hidden_size;
  Rng rng(in.u32());
  const Fill fx = decode_fill(in);
  Dims xd = {in.pick<Index>({1, 2, 1, 3, 0, -1, 1, 2}),
             step ? 1 : in.pick<Index>({1, 2, 3, 5, 0, 63, 64, 65, 66, -1, 4, 17}), hidden, 0, 0};
  perturb(in, xd, 3);
  if (step) xd[1] = 1;
  Validity v;
  v.bad(xd[0] <= 0 || xd[1] < 0 || xd[2] != hidden, "x is not [B>0,T>=0,hidden]");
  const std::uint8_t opt = in.u8();
  const bool use_cache = step || (opt & 1);
  const bool give_cache = use_cache || (opt & 2);
  const bool has_mask = opt & 4;
  std::vector<std::int64_t> cu;
  if (!step) cu = decode_cu(in, xd[1]);
  if (!cu.empty()) v.bad(xd[0] != 1 || !cu_valid(cu, xd[1]), "cu_seqlens is invalid (or B != 1)");
  Dims md = {xd[0], xd[1] + in.pick<Index>({0, 0, 1, 3, -1}), 0, 0, 0};
  const bool mask_used = has_mask && cu.empty();
  Layout L;
  const int x = L.add("x", step ? 2 : 3, step ? Dims{xd[0], xd[2], 0, 0, 0} : xd, sizeof(T), true);
  const int mask = L.add("attention_mask", 2, md, sizeof(std::int64_t), true, has_mask);
  L.allocate();
  L.fill<T>(x, rng, fx, false);
  if (has_mask)
    for (Index i = 0; i < L.slot(mask).elems(); ++i)
      L.ptr<std::int64_t>(mask)[i] =
          (opt & 0x80) && rng.next() % 16 == 0 ? 3 : static_cast<std::int64_t>(rng.next() % 4 != 0);
  v.bad(L.slot(x).negative(), "a negative dimension");
  if (mask_used) {
    v.bad(L.slot(mask).negative() || md[1] < xd[1], "attention_mask does not fit [B,S >= T]");
    if (!v.invalid) {  // a value other than 0/1 in the columns that are read must be rejected
      const Index S = md[1];
      for (Index b = 0; b < md[0]; ++b)
        for (Index t = S - xd[1]; t < S; ++t)
          v.bad(L.ptr<std::int64_t>(mask)[b * S + t] == 3, "a mask value other than 0 and 1");
    }
  }
  gla::GatedLinearAttentionCache<T> cache;
  // Optionally a cache holding states already (right or wrong shape, or a conv state without short convs).
  const std::uint8_t cstate = in.u8();
  if (give_cache && cstate >= 200 && !v.invalid) {
    const Index N = cu.empty() ? xd[0] : static_cast<Index>(cu.size()) - 1;
    const Index H = cfg.num_heads, Kh = cfg.head_k_dim(), Vh = cfg.head_v_dim();
    const bool wrong = cstate >= 248;
    cache.recurrent_state = gla::Tensor<float, 4>(N, H, Vh, Kh + (wrong ? 1 : 0));
    cache.recurrent_state->setConstant(0.5f);
    v.bad(wrong, "cache.recurrent_state has a wrong shape");
    if ((cstate & 1) && cfg.conv_size <= 16) {  // conv_size is only bounded with use_short_conv
      cache.conv_state_q = gla::Tensor<T, 3>(N, cfg.key_dim(), cfg.conv_size);
      cache.conv_state_q->setConstant(T(0.25));
      v.bad(!cfg.use_short_conv, "a conv state without use_short_conv");
    }
  }
  const gla::GatedLinearAttentionCache<T> before = cache;
  const bool finite_in = fx <= Fill::Zero && cfg.norm_eps >= 1e-6 && cfg.gate_logit_normalizer >= 0.1;
  bool fin = true;
  const auto mv =
      has_mask ? std::optional<gla::ConstView<std::int64_t, 2>>(L.view<const std::int64_t, 2>(mask)) : std::nullopt;
  const Outcome out =
      call(step ? "GatedLinearAttention::step" : "GatedLinearAttention::forward", &L, v.invalid, v.why, true, [&] {
        if (step) {
          auto y = layer->step(L.view<const T, 2>(x), cache, mv);
          fin = tensor_finite(y);
        } else {
          auto y = layer->forward(L.view<const T, 3>(x), mv, give_cache ? &cache : nullptr, use_cache, cu);
          fin = tensor_finite(y);
        }
      });
  if (!out.ok) {
    auto same = [](const auto& a, const auto& b) {
      if (a.has_value() != b.has_value()) return false;
      if (!a) return true;
      return a->dimensions() == b->dimensions() &&
             std::memcmp(a->data(), b->data(), static_cast<std::size_t>(a->size()) * sizeof(*a->data())) == 0;
    };
    if (!same(cache.recurrent_state, before.recurrent_state) || !same(cache.conv_state_q, before.conv_state_q) ||
        !same(cache.conv_state_k, before.conv_state_k) || !same(cache.conv_state_v, before.conv_state_v) ||
        cache.seen_tokens != before.seen_tokens)
      finding("GatedLinearAttention: the cache changed before gla::Error: " + out.error);
    return;
  }
  if (finite_in && !fin) finding("GatedLinearAttention: non-finite output for finite moderate inputs");
  // A decode step continuing from the cache of a forward (decode after prefill).
  if (use_cache && !step && in.bit()) {
    const Index B2 = cu.empty() ? xd[0] : static_cast<Index>(cu.size()) - 1;
    if (B2 <= 0) return;
    gla::Tensor<T, 2> x2(B2, hidden);
    for (Index i = 0; i < x2.size(); ++i) x2.data()[i] = static_cast<T>(rng.uniform(-1, 1));
    call("GatedLinearAttention::step (after forward)", nullptr, false, "", false, [&] {
      auto y = layer->step(gla::ConstView<T, 2>(x2), cache);
      if (finite_in && !tensor_finite(y)) finding("GatedLinearAttention::step: non-finite output after a forward");
    });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Miscellaneous small entry points.

void op_misc(Input& in) {
  const int which = in.u8() % 3;
  if (which == 0) {
    const std::int64_t len = in.pick<std::int64_t>({0, 1, 64, 65, -1, kI64Min, kI64Max, 100});
    const std::int64_t thr = in.pick<std::int64_t>({64, 0, -1, kI64Max, 16});
    const gla::Mode m = in.pick<gla::Mode>({gla::Mode::Auto, gla::Mode::Chunk, gla::Mode::FusedRecurrent});
    Validity v;
    v.bad(len < 0, "seq_len < 0");
    call("select_gla_mode", nullptr, v.invalid, v.why, false, [&] { (void)gla::select_gla_mode(m, len, thr); });
  } else if (which == 1) {
    const char* names[] = {"auto", "chunk", "fused_chunk", "fused_recurrent", "", "Chunk", "fused"};
    const std::uint8_t n = in.u8() % 7;
    Validity v;
    v.bad(n >= 4, "an unknown mode name");
    call("parse_mode", nullptr, v.invalid, v.why, false, [&] { (void)gla::parse_mode(names[n]); });
  } else {
    Dims d = {in.pick<Index>({1, 2, 0, 3}), in.pick<Index>({1, 2, 3, 4, 0, -1}), 2, 3, 0};
    std::vector<float> gamma;
    const int n = in.u8() % 5;
    for (int i = 0; i < n; ++i)
      gamma.push_back(in.pick<float>(
          {0.5f, 1.0f, std::numeric_limits<float>::quiet_NaN(), -2.0f, std::numeric_limits<float>::infinity()}));
    Validity v;
    v.bad(d[1] < 0, "a negative dimension");
    v.bad(!gamma.empty() && gamma.size() != 1 && static_cast<Index>(gamma.size()) != d[1], "gamma has a wrong count");
    for (float g : gamma) v.bad(!std::isfinite(g), "gamma is not finite");
    Layout L;
    const int s = L.add("states", 4, d, sizeof(float), false);
    L.allocate();
    Rng rng(1);
    L.fill<float>(s, rng, Fill::Moderate, false);
    call("apply_gamma_decay", &L, v.invalid, v.why, false, [&] { gla::apply_gamma_decay(L.view<float, 4>(s), gamma); });
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Dispatch.

template <class T>
void run_typed(Input& in, int op) {
  switch (op) {
    case 0:
    case 1:
      op_forward<T>(in, 0, op == 1);
      break;
    case 2:
    case 3:
      op_forward<T>(in, 1, op == 3);
      break;
    case 4:
    case 5:
      op_forward<T>(in, 2, op == 5);
      break;
    case 6:
    case 7:
      op_chunk_backward<T>(in, false, op == 7);
      break;
    case 8:
    case 9:
      op_chunk_backward<T>(in, true, op == 9);
      break;
    case 10:
    case 11:
      op_recurrent_backward<T>(in, op - 10);
      break;
    case 12:
      op_recurrent_backward<T>(in, 2);
      break;
    case 13:
      op_naive<T>(in);
      break;
    case 14:
    case 15:
      op_chunk_h<T>(in, op == 15);
      break;
    case 16:
      op_cumsum<T>(in);
      break;
    case 17:
      op_router<T>(in);
      break;
    case 18:
      op_varlen_index<T>(in);
      break;
    case 19:
    case 20:
      op_norm<T>(in, op == 20);
      break;
    case 21:
      op_short_conv<T>(in);
      break;
    case 22:
      op_activation<T>(in);
      break;
    default:
      break;
  }
}

constexpr int kOps = 27;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in(data, size);
  g_modelled = true;
  const int op = in.u8() % kOps;
  const std::uint8_t ty = in.u8();
  gla::set_num_threads((ty & 0x80) ? 2 : 1);
  if (op == 23) {
    op_varlen_cu(in);
  } else if (op == 24 || op == 25) {
    if (ty & 1)
      op_layer<double>(in, op == 25);
    else
      op_layer<float>(in, op == 25);
  } else if (op == 26) {
    op_misc(in);
  } else {
    switch (ty & 3) {
      case 0:
        run_typed<float>(in, op);
        break;
      case 1:
        run_typed<double>(in, op);
        break;
      case 2:
        run_typed<bf16>(in, op);
        break;
      default:
        run_typed<half>(in, op);
        break;
    }
  }
  return 0;
}
