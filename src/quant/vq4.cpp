#include "quant/vq4.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include <nlohmann/json.hpp>

#include "base/checked.h"
#include "base/error.h"
#include "base/fp16.h"
#include "quant/table_grid.h"
#include "detail/checks.h"
#include "quant/gptq.h"
#include "quant/outliers.h"

namespace lsb::quant {
namespace {

constexpr int kDim = 4;

// The codebook as structure-of-arrays, for the nearest-codeword search (scalar for the
// reference quantizer, SIMD for the fast one; the same index either way).
struct Codebook {
  int entries = 0;
  bool simd = false;
  std::vector<float> d[kDim];
  Codebook(const std::vector<float>& aos, bool use_simd)
      : entries(static_cast<int>(aos.size() / kDim)), simd(use_simd) {
    for (int k = 0; k < kDim; ++k) {
      d[k].resize(static_cast<size_t>(entries));
      for (int c = 0; c < entries; ++c) d[k][c] = aos[static_cast<size_t>(c) * kDim + k];
    }
  }
  // argmin_c sum_k h_k (w_k - s cb_ck)^2 (ties: the lower index).
  int nearest(const float* w, const float* h, float s) const {
    const Vq4Soa soa{d[0].data(), d[1].data(), d[2].data(), d[3].data(), entries};
    return simd ? vq4_nearest_simd(soa, w, h, s) : vq4_nearest_scalar(soa, w, h, s);
  }
};

class Vq4Coder final : public GroupCoder {
 public:
  Vq4Coder(const std::vector<float>& codebook, int64_t group, bool simd) : cb_(codebook, simd), group_(group) {}
  int64_t group() const override { return group_; }
  int vec_dim() const override { return kDim; }

  GroupFit fit(const float* w, const float* imp, int64_t n) const override {
    double hs = 0;
    for (int64_t i = 0; i < n; ++i) hs += imp[i];
    const bool weighted = hs > 0;
    std::vector<float> ones;
    if (!weighted) {
      ones.assign(static_cast<size_t>(n), 1.0f);
      imp = ones.data();
    }
    double ss = 0;
    hs = 0;
    for (int64_t i = 0; i < n; ++i) {
      ss += static_cast<double>(imp[i]) * w[i] * w[i];
      hs += imp[i];
    }
    const double rms = std::sqrt(ss / hs);
    GroupFit best;
    if (!(rms > 0)) return best;
    double best_e = std::numeric_limits<double>::infinity(), num = 0, den = 0;
    // Error at scale s, and the least-squares scale for the assignment it gives.
    auto eval = [&](uint16_t bits, double& n_out, double& d_out) {
      const float s = f16_to_f32(bits);
      double e = 0;
      n_out = d_out = 0;
      for (int64_t i = 0; i + kDim <= n; i += kDim) {
        const int c = cb_.nearest(w + i, imp + i, s);
        for (int k = 0; k < kDim; ++k) {
          const double v = cb_.d[k][c], t = w[i + k] - s * v;
          e += imp[i + k] * t * t;
          n_out += imp[i + k] * w[i + k] * v;
          d_out += imp[i + k] * v * v;
        }
      }
      return e;
    };
    auto consider = [&](double s) {
      const uint16_t bits = f16_nearest(s);
      double nn, dd;
      const double e = eval(bits, nn, dd);
      if (e < best_e) {
        best_e = e;
        best.scale = bits;
        num = nn;
        den = dd;
        return true;
      }
      return false;
    };
    for (double f : {0.8, 0.9, 1.0, 1.1, 1.25}) consider(rms * f);
    for (int it = 0; it < 2 && den > 0; ++it)
      if (!consider(num / den)) break;
    return best;
  }

  uint32_t round(const GroupFit& g, const float* w, const float* imp, float* q) const override {
    const float s = f16_to_f32(g.scale);
    float h[kDim];
    const bool any = imp[0] + imp[1] + imp[2] + imp[3] > 0;
    for (int k = 0; k < kDim; ++k) h[k] = any ? imp[k] : 1.0f;
    const int c = cb_.nearest(w, h, s);
    for (int k = 0; k < kDim; ++k) q[k] = s * cb_.d[k][c];
    return static_cast<uint32_t>(c);
  }

 private:
  Codebook cb_;
  int64_t group_;
};

void put_bits(uint64_t* row, int64_t at, int bits, uint32_t v) {
  const int64_t word = at / 64, shift = at % 64;
  row[word] |= static_cast<uint64_t>(v) << shift;
  if (shift + bits > 64) row[word + 1] |= static_cast<uint64_t>(v) >> (64 - shift);
}

std::vector<std::byte> pack(const Vq4Layout& L, const Vq4Params& p, int64_t rows, int64_t cols,
                            const std::vector<float>& codebook, const GptqResult& g) {
  std::vector<std::byte> blob(L.size, std::byte{0});
  auto* cb = reinterpret_cast<uint16_t*>(blob.data() + L.codebook);
  for (size_t i = 0; i < codebook.size(); ++i) cb[i] = f32_to_f16(codebook[i]);  // f16-exact already
  auto* scales = reinterpret_cast<uint16_t*>(blob.data() + L.scales);
  for (size_t i = 0; i < g.fits.size(); ++i) scales[i] = g.fits[i].scale;
  auto* codes = reinterpret_cast<uint64_t*>(blob.data() + L.codes);
  const int64_t nv = cols / kDim;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < nv; ++j) put_bits(codes + r * L.row_words, j * p.bits, p.bits, g.index[r * nv + j]);
  return blob;
}

template <bool kReference>
std::vector<std::byte> quantize_impl(const QuantizeArgs& a) {
  const char* where = kReference ? "quantize_reference" : "quantize";
  const Vq4Params p = Vq4Params::parse(a.params, where);
  const Vq4Layout L(a.rows, a.cols, p, where);
  if (kReference) detail::require_finite(a.w, a.rows, a.cols, where);
  else detail::require_finite_parallel(a.w, a.rows, a.cols, where);
  const std::vector<float> imp = column_importance(a.stats, a.cols);
  const std::vector<float> codebook = vq4_learn_codebook(a.w, a.rows, a.cols, p.bits, L.group, imp.data(), !kReference, p.sym);
  const Vq4Coder coder(codebook, L.group, !kReference);
  const GptqResult g = kReference ? gptq_reference(a.w, a.rows, a.cols, a.stats, coder)
                                  : gptq(a.w, a.rows, a.cols, a.stats, coder);
  return pack(L, p, a.rows, a.cols, codebook, g);
}

std::string make_params(const SchemeOptions& o, const std::string& where) { return Vq4Params::from(o, where).text(); }

uint64_t fixed_bytes(int64_t rows, int64_t cols, std::string_view params, const std::string& where) {
  return Vq4Layout(rows, cols, Vq4Params::parse(params, where), where).size;
}

std::unique_ptr<BlobView> open(std::span<const std::byte> blob, int64_t rows, int64_t cols, std::string_view params,
                               const OpenArgs& args) {
  return std::make_unique<Vq4View>(Vq4View::parse(blob, rows, cols, params, args));
}

}  // namespace

Vq4Params Vq4Params::from(const SchemeOptions& o, const std::string& where) {
  Vq4Params p;
  if (o.bits) p.bits = *o.bits;
  if (o.group_size) p.group_size = *o.group_size;
  if (o.sign_symmetric) p.sym = *o.sign_symmetric;
  if (p.bits < 4 || p.bits > 10) fail(where, "vq4: {} bits per vector of 4 (4 to 10 are supported)", p.bits);
  if (p.group_size < 16 || p.group_size % 16 != 0)
    fail(where, "vq4: group size {} must be a positive multiple of 16", p.group_size);
  return p;
}

Vq4Params Vq4Params::parse(std::string_view text, const std::string& where) {
  return from(SchemeOptions::parse(text, where), where);
}

std::string Vq4Params::text() const {
  nlohmann::json j{{"bits", bits}, {"group", group_size}};
  if (sym) j["sym"] = true;  // absent when false: the parameters of files made before it are unchanged
  return j.dump();
}

Vq4Layout::Vq4Layout(int64_t rows, int64_t cols, const Vq4Params& p, const std::string& where) {
  if (rows < 1 || cols < 1) fail(where, "vq4 needs a non-empty matrix, got {} x {}", rows, cols);
  if (cols % kDim != 0) fail(where, "vq4 needs a multiple of 4 columns, got {}", cols);
  const auto r = static_cast<uint64_t>(rows);
  group = std::min<int64_t>(p.group_size, cols);
  ngroups = (cols + group - 1) / group;
  row_words = (cols / kDim * p.bits + 63) / 64;
  codebook = 0;
  scales = align_section(2ull * kDim * static_cast<uint64_t>(p.entries()));
  codes = align_section(
      checked_add(scales, checked_mul(checked_mul(r, static_cast<uint64_t>(ngroups), where), 2, where), where));
  size = checked_add(codes, checked_mul(checked_mul(r, static_cast<uint64_t>(row_words), where), 8, where), where);
}

std::vector<float> vq4_learn_codebook(const float* w, int64_t rows, int64_t cols, int bits, int64_t group,
                                      const float* col_imp, bool simd, bool sym) {
  const int K = 1 << bits;
  // Sign-symmetric: the first half (H entries) is learned, the second half is its negation. Each
  // training vector is assigned to the nearest of all K codewords (the search is unchanged), and
  // counts for the first-half entry with its sign folded in.
  const int H = sym ? K / 2 : K;
  auto mirror = [&](std::vector<float>& c) {
    if (sym)
      for (int e = 0; e < H; ++e)
        for (int k = 0; k < kDim; ++k) c[(e + H) * kDim + k] = -c[e * kDim + k];
  };
  // Training vectors: every `step`-th group, weights divided by the group's importance-weighted
  // RMS, importances divided by their group mean; at most K * 256 vectors.
  const int64_t ngroups = (cols + group - 1) / group, total = rows * ngroups;
  const int64_t vectors_per_group = group / kDim;
  const int64_t want = std::max<int64_t>(int64_t{K} * 256, 65536);
  const int64_t step = std::max<int64_t>(1, total * vectors_per_group / want);
  std::vector<float> u, h;
  for (int64_t k = 0; k < total; k += step) {
    const int64_t r = k / ngroups, g0 = (k % ngroups) * group, n = std::min(group, cols - g0);
    const float* wg = w + r * cols + g0;
    double ss = 0, hs = 0;
    for (int64_t i = 0; i < n; ++i) {
      ss += static_cast<double>(col_imp[g0 + i]) * wg[i] * wg[i];
      hs += col_imp[g0 + i];
    }
    const double rms = hs > 0 ? std::sqrt(ss / hs) : 0.0;
    if (!(rms > 0)) continue;
    const double hmean = hs / static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) {
      u.push_back(static_cast<float>(wg[i] / rms));
      h.push_back(static_cast<float>(col_imp[g0 + i] / hmean));
    }
  }
  const int64_t ns = static_cast<int64_t>(u.size()) / kDim;
  std::vector<float> cb(static_cast<size_t>(K) * kDim, 0.0f);
  if (ns < K) {  // too little data (a tiny matrix): a fixed spread of codewords
    for (int c = 0; c < H; ++c)
      for (int k = 0; k < kDim; ++k) cb[c * kDim + k] = static_cast<float>(((c >> (2 * k)) & 3) - 1.5) * 0.8f;
  } else {
    for (int c = 0; c < H; ++c)
      for (int k = 0; k < kDim; ++k) cb[c * kDim + k] = u[(static_cast<int64_t>(c) * 7919 % ns) * kDim + k];
  }
  mirror(cb);
  if (ns >= K) {
    std::mt19937 rng(99);
    std::vector<int> assign(static_cast<size_t>(ns));
    std::vector<double> num(cb.size()), den(cb.size());
    std::vector<int64_t> count(static_cast<size_t>(K));
    for (int it = 0; it < 20; ++it) {
      const Codebook soa(cb, simd);
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < ns; ++i) assign[i] = soa.nearest(&u[i * kDim], &h[i * kDim], 1.0f);
      std::fill(num.begin(), num.end(), 0.0);
      std::fill(den.begin(), den.end(), 0.0);
      std::fill(count.begin(), count.end(), 0);
      for (int64_t i = 0; i < ns; ++i) {
        const int c = assign[i] % H;
        const double sign = assign[i] >= H ? -1.0 : 1.0;
        ++count[c];
        for (int k = 0; k < kDim; ++k) {
          num[c * kDim + k] += sign * h[i * kDim + k] * u[i * kDim + k];
          den[c * kDim + k] += h[i * kDim + k];
        }
      }
      for (int c = 0; c < H; ++c) {
        if (count[c] == 0) {  // an empty cell takes a random training vector
          const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(ns));
          for (int k = 0; k < kDim; ++k) cb[c * kDim + k] = u[j * kDim + k];
          continue;
        }
        for (int k = 0; k < kDim; ++k)
          if (den[c * kDim + k] > 0) cb[c * kDim + k] = static_cast<float>(num[c * kDim + k] / den[c * kDim + k]);
      }
      mirror(cb);
    }
  }
  for (float& x : cb) x = f16_to_f32(f32_to_f16(x));  // stored as f16
  // The integer kernels multiply the codebook on its 8-bit grid (quant/table_grid.h). Heavy-tailed
  // weights give a few codewords far out, whose grid would be too coarse for the small ones: such
  // a codebook is put on the grid here, before scales and indices are chosen for it, so that the
  // file holds exactly what those kernels compute (and the error they add is measured as the
  // scheme's own). A codebook that keeps its values on the grid is left as learned.
  if (!table_keeps_8_bits(cb.data(), static_cast<int64_t>(cb.size())))
    put_table_on_int8_grid(cb.data(), static_cast<int64_t>(cb.size()));
  return cb;
}

Vq4View Vq4View::parse(std::span<const std::byte> blob, int64_t rows, int64_t cols, std::string_view params,
                       const OpenArgs& args) {
  const std::string& where = args.where;
  const Vq4Params p = Vq4Params::parse(params, where);
  const Vq4Layout L(rows, cols, p, where);
  const auto* base = reinterpret_cast<const uint8_t*>(blob.data());
  if (reinterpret_cast<uintptr_t>(base) % 8 != 0) fail(where, "vq4 blob is not 8-byte aligned");
  if (blob.size() != L.size) fail(where, "vq4 blob is {} bytes, expected {}", blob.size(), L.size);
  Vq4View v;
  v.rows = rows;
  v.cols = cols;
  v.group = L.group;
  v.ngroups = L.ngroups;
  v.row_words = L.row_words;
  v.bits = p.bits;
  v.sym = p.sym;
  v.codebook = reinterpret_cast<const uint16_t*>(base + L.codebook);
  v.scales = reinterpret_cast<const uint16_t*>(base + L.scales);
  v.codes = reinterpret_cast<const uint64_t*>(base + L.codes);
  if (args.check_content) {
    for (int64_t i = 0; i < int64_t{kDim} * p.entries(); ++i)
      if ((v.codebook[i] & 0x7c00u) == 0x7c00u) fail(where, "vq4 codebook value {} is not finite", i);
    for (int64_t i = 0; i < rows * L.ngroups; ++i)
      if ((v.scales[i] & 0x7c00u) == 0x7c00u || (v.scales[i] & 0x8000u && v.scales[i] != 0x8000u))
        fail(where, "vq4 scale {} (row {}) is negative or not finite", i, i / L.ngroups);
  }
  if (p.sym) {  // always checked (2^bits * 2 values): the kernels rely on it
    const int64_t half = int64_t{kDim} * p.entries() / 2;
    for (int64_t i = 0; i < half; ++i)
      if (v.codebook[half + i] != (v.codebook[i] ^ 0x8000u))
        fail(where, "vq4 codebook value {} is not value {} negated, as \"sym\" says", half + i, i);
  }
  // Bits past the last index of a row must be 0.
  const int64_t used = cols / kDim * p.bits;
  detail::check_sign_padding(v.codes, rows, L.row_words, used, where);
  return v;
}

uint32_t Vq4View::index(int64_t r, int64_t j) const {
  const uint64_t* row = codes + r * row_words;
  const int64_t at = j * bits, word = at / 64, shift = at % 64;
  uint64_t v = row[word] >> shift;
  if (shift + bits > 64) v |= row[word + 1] << (64 - shift);
  return static_cast<uint32_t>(v & ((uint64_t{1} << bits) - 1));
}

void Vq4View::dequantize_row(int64_t r, float* out) const {
  for (int64_t j = 0; j < cols / kDim; ++j) {
    const float s = f16_to_f32(scales[r * ngroups + (j * kDim) / group]);
    const uint16_t* c = codebook + index(r, j) * kDim;
    for (int k = 0; k < kDim; ++k) out[j * kDim + k] = s * f16_to_f32(c[k]);
  }
}

RowSpans Vq4View::row_spans(int64_t r) const {
  RowSpans s;
  s.add(codebook, 2 * kDim * (uint64_t{1} << bits));
  s.add(scales + r * ngroups, 2 * static_cast<uint64_t>(ngroups));
  s.add(codes + r * row_words, 8 * static_cast<uint64_t>(row_words));
  return s;
}

extern const SchemeOps kVq4Ops{DType::VQ4, "vq4",
                               "learned codebook of 4-weight vectors (1-2.5 bits per weight) x fp16 scale per group; "
                               "GPTQ with statistics",
                               true,
                               make_params, fixed_bytes, quantize_impl<true>, quantize_impl<false>, open};

}  // namespace lsb::quant
