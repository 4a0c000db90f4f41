#include "quant/nu.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "base/checked.h"
#include "base/error.h"
#include "base/fp16.h"
#include "detail/checks.h"
#include "quant/table_grid.h"
#include "quant/gptq.h"
#include "quant/outliers.h"

namespace lsb::quant {
namespace {

// Samples (normalised weights and their importances) the levels are learned from: at most this
// many, taken as whole groups spread evenly over the matrix.
constexpr int64_t kMaxSamples = int64_t{1} << 20;


// GPTQ's view of the code: a group's scale, and the nearest of the scaled levels.
class NuCoder final : public GroupCoder {
 public:
  NuCoder(const std::vector<float>& levels, int64_t group) : c_(levels), group_(group) {}
  int64_t group() const override { return group_; }

  GroupFit fit(const float* w, const float* imp, int64_t n) const override {
    double hs = 0;
    for (int64_t i = 0; i < n; ++i) hs += imp[i];
    const bool weighted = hs > 0;  // columns that never saw an input: unweighted
    auto h = [&](int64_t i) { return weighted ? static_cast<double>(imp[i]) : 1.0; };
    double ss = 0;
    hs = 0;
    for (int64_t i = 0; i < n; ++i) {
      ss += h(i) * w[i] * w[i];
      hs += h(i);
    }
    const double rms = std::sqrt(ss / hs);
    GroupFit best;
    if (!(rms > 0)) return best;
    double best_e = std::numeric_limits<double>::infinity(), best_s = rms;
    auto try_scale = [&](double s) {
      const uint16_t bits = f16_nearest(s);
      const double e = error(f16_to_f32(bits), w, imp, n, weighted);
      if (e < best_e) {
        best_e = e;
        best.scale = bits;
        best_s = f16_to_f32(bits);
      }
    };
    for (int t = 0; t <= 20; ++t) try_scale(rms * (0.6 + 0.04 * t));
    // Least-squares refits of the scale for the current assignment.
    for (int it = 0; it < 4; ++it) {
      double num = 0, den = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double c = c_[nearest(static_cast<float>(best_s), w[i])];
        num += h(i) * c * w[i];
        den += h(i) * c * c;
      }
      if (!(den > 0)) break;
      const double before = best_e;
      try_scale(num / den);
      if (!(best_e < before)) break;
    }
    return best;
  }

  uint32_t round(const GroupFit& g, const float* w, const float*, float* q) const override {
    const float s = f16_to_f32(g.scale);
    const int k = nearest(s, w[0]);
    q[0] = s * c_[k];
    return static_cast<uint32_t>(k);
  }

 private:
  // Index of the level nearest to w among s * c (ties: the lower).
  int nearest(float s, float w) const {
    int best = 0;
    float bd = std::fabs(w - s * c_[0]);
    for (size_t k = 1; k < c_.size(); ++k) {
      const float d = std::fabs(w - s * c_[k]);
      if (d < bd) {
        bd = d;
        best = static_cast<int>(k);
      }
    }
    return best;
  }
  double error(float s, const float* w, const float* imp, int64_t n, bool weighted) const {
    double e = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double d = w[i] - s * c_[nearest(s, w[i])];
      e += (weighted ? imp[i] : 1.0) * d * d;
    }
    return e;
  }
  std::vector<float> c_;
  int64_t group_;
};

std::vector<std::byte> pack(const NuLayout& L, const NuParams& p, int64_t rows, int64_t cols,
                            const std::vector<float>& levels, const GptqResult& g) {
  std::vector<std::byte> blob(L.size, std::byte{0});
  std::memcpy(blob.data() + L.levels, levels.data(), levels.size() * 4);
  auto* scales = reinterpret_cast<uint16_t*>(blob.data() + L.scales);
  for (size_t i = 0; i < g.fits.size(); ++i) scales[i] = g.fits[i].scale;
  auto* planes = reinterpret_cast<uint64_t*>(blob.data() + L.planes);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const uint32_t k = g.index[r * cols + c];
      for (int b = 0; b < p.bits; ++b)
        if ((k >> b) & 1u) planes[(r * p.bits + b) * L.words + c / 64] |= uint64_t{1} << (c % 64);
    }
  return blob;
}

template <bool kReference>
std::vector<std::byte> quantize_impl(const QuantizeArgs& a) {
  const char* where = kReference ? "quantize_reference" : "quantize";
  const NuParams p = NuParams::parse(a.params, where);
  const NuLayout L(a.rows, a.cols, p, where);
  if (kReference) detail::require_finite(a.w, a.rows, a.cols, where);
  else detail::require_finite_parallel(a.w, a.rows, a.cols, where);
  const std::vector<float> imp = column_importance(a.stats, a.cols);
  const std::vector<float> levels = nu_learn_levels(a.w, a.rows, a.cols, p.levels(), L.group, imp.data());
  const NuCoder coder(levels, L.group);
  const GptqResult g = kReference ? gptq_reference(a.w, a.rows, a.cols, a.stats, coder)
                                  : gptq(a.w, a.rows, a.cols, a.stats, coder);
  return pack(L, p, a.rows, a.cols, levels, g);
}

std::string make_params(const SchemeOptions& o, const std::string& where) { return NuParams::from(o, where).text(); }

uint64_t fixed_bytes(int64_t rows, int64_t cols, std::string_view params, const std::string& where) {
  return NuLayout(rows, cols, NuParams::parse(params, where), where).size;
}

std::unique_ptr<BlobView> open(std::span<const std::byte> blob, int64_t rows, int64_t cols, std::string_view params,
                               const OpenArgs& args) {
  return std::make_unique<NuView>(NuView::parse(blob, rows, cols, params, args));
}

}  // namespace

NuParams NuParams::from(const SchemeOptions& o, const std::string& where) {
  NuParams p;
  if (o.bits) p.bits = *o.bits;
  if (o.group_size) p.group_size = *o.group_size;
  if (p.bits < 2 || p.bits > 4) fail(where, "nu: {} bits per weight (2, 3 or 4 are supported)", p.bits);
  if (p.group_size < 16 || p.group_size % 16 != 0)
    fail(where, "nu: group size {} must be a positive multiple of 16", p.group_size);
  return p;
}

NuParams NuParams::parse(std::string_view text, const std::string& where) {
  return from(SchemeOptions::parse(text, where), where);
}

std::string NuParams::text() const { return nlohmann::json{{"bits", bits}, {"group", group_size}}.dump(); }

NuLayout::NuLayout(int64_t rows, int64_t cols, const NuParams& p, const std::string& where) {
  if (rows < 1 || cols < 1) fail(where, "nu needs a non-empty matrix, got {} x {}", rows, cols);
  const auto r = static_cast<uint64_t>(rows);
  words = (cols + 63) / 64;
  group = std::min<int64_t>(p.group_size, cols);
  ngroups = (cols + group - 1) / group;
  levels = 0;
  scales = align_section(4ull * static_cast<uint64_t>(p.levels()));
  planes = align_section(checked_add(scales, checked_mul(checked_mul(r, static_cast<uint64_t>(ngroups), where), 2, where), where));
  size = checked_add(planes,
                     checked_mul(checked_mul(checked_mul(r, static_cast<uint64_t>(p.bits), where),
                                             static_cast<uint64_t>(words), where),
                                 8, where),
                     where);
}

std::vector<float> nu_learn_levels(const float* w, int64_t rows, int64_t cols, int nlevels, int64_t group,
                                   const float* col_imp) {
  // Every `step`-th group of the matrix, normalised by its importance-weighted RMS.
  const int64_t ngroups = (cols + group - 1) / group, total = rows * ngroups;
  const int64_t step = std::max<int64_t>(1, rows * cols / kMaxSamples);
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
    for (int64_t i = 0; i < n; ++i) {
      u.push_back(static_cast<float>(wg[i] / rms));
      h.push_back(col_imp[g0 + i]);
    }
  }
  std::vector<float> c(static_cast<size_t>(nlevels), 0.0f);
  if (u.empty()) {
    for (int j = 0; j < nlevels; ++j) c[j] = static_cast<float>(j - (nlevels - 1) * 0.5);
    return c;
  }
  // Start at the quantiles, then weighted Lloyd iterations (1-D k-means): assignment by the
  // midpoints between sorted levels, centroids as weighted means, sums in sample order.
  std::vector<float> sorted = u;
  std::sort(sorted.begin(), sorted.end());
  for (int j = 0; j < nlevels; ++j)
    c[j] = sorted[std::min(sorted.size() - 1, static_cast<size_t>((j + 0.5) / nlevels * sorted.size()))];
  std::vector<double> num(static_cast<size_t>(nlevels)), den(static_cast<size_t>(nlevels));
  for (int it = 0; it < 30; ++it) {
    std::fill(num.begin(), num.end(), 0.0);
    std::fill(den.begin(), den.end(), 0.0);
    for (size_t i = 0; i < u.size(); ++i) {
      int k = 0;
      while (k + 1 < nlevels && u[i] > 0.5f * (c[k] + c[k + 1])) ++k;
      num[k] += static_cast<double>(h[i]) * u[i];
      den[k] += h[i];
    }
    for (int j = 0; j < nlevels; ++j)
      if (den[j] > 0) c[j] = static_cast<float>(num[j] / den[j]);
    std::sort(c.begin(), c.end());
  }
  if (!table_keeps_8_bits(c.data(), nlevels)) {
    // As VQ4's codebook (vq4.cpp): levels far out put the table on the integer kernels' 8-bit
    // grid before the scales and indices are chosen; a pair that rounds to one grid value is
    // kept apart by one step (should that push the top level past the grid's end, the table is
    // off the grid and the Linear keeps the float kernels).
    const float grid = int8_grid_step(c.data(), nlevels);
    put_table_on_int8_grid(c.data(), nlevels);
    for (int j = 1; j < nlevels; ++j)
      if (!(c[j] > c[j - 1])) c[j] = f16_to_f32(f32_to_f16(c[j - 1] + grid));
    return c;
  }
  // Distinct levels: a collapsed pair would waste an index.
  for (int j = 1; j < nlevels; ++j)
    if (!(c[j] > c[j - 1])) c[j] = std::nextafter(c[j - 1], std::numeric_limits<float>::infinity());
  return c;
}

NuView NuView::parse(std::span<const std::byte> blob, int64_t rows, int64_t cols, std::string_view params,
                     const OpenArgs& args) {
  const std::string& where = args.where;
  const NuParams p = NuParams::parse(params, where);
  const NuLayout L(rows, cols, p, where);
  const auto* base = reinterpret_cast<const uint8_t*>(blob.data());
  if (reinterpret_cast<uintptr_t>(base) % 8 != 0) fail(where, "nu blob is not 8-byte aligned");
  if (blob.size() != L.size) fail(where, "nu blob is {} bytes, expected {}", blob.size(), L.size);
  NuView v;
  v.rows = rows;
  v.cols = cols;
  v.words = L.words;
  v.group = L.group;
  v.ngroups = L.ngroups;
  v.bits = p.bits;
  v.levels = reinterpret_cast<const float*>(base + L.levels);
  v.scales = reinterpret_cast<const uint16_t*>(base + L.scales);
  v.planes = reinterpret_cast<const uint64_t*>(base + L.planes);
  if (args.check_content) {
    for (int j = 0; j < p.levels(); ++j)
      if (!std::isfinite(v.levels[j]) || (j > 0 && !(v.levels[j] > v.levels[j - 1])))
        fail(where, "nu levels are not finite and ascending (level {})", j);
    for (int64_t i = 0; i < rows * L.ngroups; ++i)
      if ((v.scales[i] & 0x7c00u) == 0x7c00u || (v.scales[i] & 0x8000u && v.scales[i] != 0x8000u))
        fail(where, "nu scale {} (row {}) is negative or not finite", i, i / L.ngroups);
  }
  detail::check_sign_padding(v.planes, rows * p.bits, L.words, cols, where);
  return v;
}

int NuView::index(int64_t r, int64_t c) const {
  int k = 0;
  for (int b = 0; b < bits; ++b) k |= static_cast<int>((planes[(r * bits + b) * words + c / 64] >> (c % 64)) & 1u) << b;
  return k;
}

void NuView::dequantize_row(int64_t r, float* out) const {
  for (int64_t c = 0; c < cols; ++c) out[c] = f16_to_f32(scales[r * ngroups + c / group]) * levels[index(r, c)];
}

RowSpans NuView::row_spans(int64_t r) const {
  RowSpans s;
  s.add(levels, 4 * (uint64_t{1} << bits));
  s.add(scales + r * ngroups, 2 * static_cast<uint64_t>(ngroups));
  s.add(planes + r * bits * words, 8 * static_cast<uint64_t>(bits) * static_cast<uint64_t>(words));
  return s;
}

extern const SchemeOps kNuOps{DType::NU, "nu",
                              "learned non-uniform levels (2-4 bits) x fp16 scale per group; GPTQ with statistics", true,
                              make_params, fixed_bytes, quantize_impl<true>, quantize_impl<false>, open};

}  // namespace lsb::quant
