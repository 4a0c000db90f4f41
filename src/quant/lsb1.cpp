#include "quant/lsb1.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "base/checked.h"
#include "base/error.h"
#include "base/fp16.h"
#include "detail/checks.h"

namespace lsb::quant {
namespace {

static_assert(std::endian::native == std::endian::little, "blobs are little-endian");

bool f16_is_finite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

int64_t outliers_checked(int64_t cols, float alpha, const char* where) {
  const int64_t k = lsb1_outliers_per_row(cols, alpha);
  if (k > 65535) fail(where, "{} outliers per row do not fit the u16 counts", k);
  return k;
}

// The specification: plain loops, one row at a time, sums in double in column order.
std::vector<std::byte> quantize_ref(const QuantizeArgs& a) {
  const char* where = "quantize_reference";
  const Lsb1Params p = Lsb1Params::parse(a.params, where);
  const Lsb1Layout L(a.rows, a.cols, p, where);
  detail::require_finite(a.w, a.rows, a.cols, where);
  const int64_t rows = a.rows, cols = a.cols, k = outliers_checked(cols, p.alpha, where);
  std::vector<uint64_t> signs(static_cast<size_t>(rows * L.words), 0);
  std::vector<uint16_t> scales(static_cast<size_t>(rows * L.ngroups), 0), means(scales.size(), 0);
  std::vector<std::vector<uint32_t>> columns(static_cast<size_t>(rows));
  std::vector<uint32_t> scratch;
  std::vector<uint8_t> is_out(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = a.w + r * cols;
    select_top_k(row, cols, k, scratch, columns[r]);
    std::fill(is_out.begin(), is_out.end(), 0);
    for (uint32_t c : columns[r]) is_out[c] = 1;
    for (int64_t g = 0; g < L.ngroups; ++g) {
      const int64_t c0 = g * L.group, c1 = std::min(cols, c0 + L.group);
      // Mean of the inliers (only used with a mean), then the scale around the stored mean.
      double sum = 0;
      int64_t n = 0;
      for (int64_t c = c0; c < c1; ++c)
        if (!is_out[c]) {
          sum += row[c];
          ++n;
        }
      float m = 0.0f;
      if (p.use_mean) {
        const uint16_t mh = f16_nearest(n > 0 ? sum / static_cast<double>(n) : 0.0);
        means[r * L.ngroups + g] = mh;
        m = f16_to_f32(mh);
      }
      double abs_sum = 0;
      for (int64_t c = c0; c < c1; ++c)
        if (!is_out[c]) abs_sum += std::fabs(static_cast<double>(row[c]) - static_cast<double>(m));
      scales[r * L.ngroups + g] = f16_nearest(n > 0 ? abs_sum / static_cast<double>(n) : 0.0);
      for (int64_t c = c0; c < c1; ++c)
        if (is_out[c] || row[c] >= m) signs[r * L.words + c / 64] |= uint64_t{1} << (c % 64);
    }
  }
  std::vector<std::byte> blob(L.gaps, std::byte{0});
  std::memcpy(blob.data() + L.signs, signs.data(), signs.size() * 8);
  std::memcpy(blob.data() + L.scales, scales.data(), scales.size() * 2);
  if (p.use_mean) std::memcpy(blob.data() + L.means, means.data(), means.size() * 2);
  write_outliers(blob, L.counts, L.gaps, a.w, cols, columns);
  return blob;
}

// Rows in parallel; outlier membership as a bit mask, and the inlier count without a mean pass.
std::vector<std::byte> quantize_fast(const QuantizeArgs& a) {
  const char* where = "quantize";
  const Lsb1Params p = Lsb1Params::parse(a.params, where);
  const Lsb1Layout L(a.rows, a.cols, p, where);
  const int64_t rows = a.rows, cols = a.cols, k = outliers_checked(cols, p.alpha, where);
  detail::require_finite_parallel(a.w, rows, cols, where);
  std::vector<std::byte> blob(L.gaps, std::byte{0});
  auto* base = reinterpret_cast<uint8_t*>(blob.data());
  std::vector<std::vector<uint32_t>> columns(static_cast<size_t>(rows));
#pragma omp parallel
  {
    std::vector<uint32_t> scratch;
    std::vector<uint64_t> out_mask(static_cast<size_t>(L.words)), words(static_cast<size_t>(L.words));
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = a.w + r * cols;
      auto& sel = columns[r];
      select_top_k(row, cols, k, scratch, sel);
      std::fill(out_mask.begin(), out_mask.end(), 0);
      for (uint32_t c : sel) out_mask[c >> 6] |= uint64_t{1} << (c & 63);
      auto is_out = [&](int64_t c) { return (out_mask[c >> 6] >> (c & 63)) & 1u; };
      std::fill(words.begin(), words.end(), 0);
      for (int64_t g = 0; g < L.ngroups; ++g) {
        const int64_t c0 = g * L.group, c1 = std::min(cols, c0 + L.group);
        float m = 0.0f;
        int64_t n = c1 - c0;
        if (p.use_mean) {
          double sum = 0;
          n = 0;
          for (int64_t c = c0; c < c1; ++c)
            if (!is_out(c)) {
              sum += row[c];
              ++n;
            }
          const uint16_t mh = f16_nearest(n > 0 ? sum / static_cast<double>(n) : 0.0);
          std::memcpy(base + L.means + 2 * (r * L.ngroups + g), &mh, 2);
          m = f16_to_f32(mh);
        } else {
          for (int64_t c = c0; c < c1; ++c) n -= static_cast<int64_t>(is_out(c));
        }
        const double md = m;
        double abs_sum = 0;
        for (int64_t c = c0; c < c1; ++c) {
          const bool out = is_out(c);
          if (!out) abs_sum += std::fabs(static_cast<double>(row[c]) - md);
          if (out || row[c] >= m) words[c >> 6] |= uint64_t{1} << (c & 63);
        }
        const uint16_t sh = f16_nearest(n > 0 ? abs_sum / static_cast<double>(n) : 0.0);
        std::memcpy(base + L.scales + 2 * (r * L.ngroups + g), &sh, 2);
      }
      std::memcpy(base + L.signs + 8 * r * L.words, words.data(), 8 * static_cast<size_t>(L.words));
    }
  }
  write_outliers(blob, L.counts, L.gaps, a.w, cols, columns);
  return blob;
}

std::string make_params(const SchemeOptions& o, const std::string& where) { return Lsb1Params::from(o, where).text(); }

uint64_t fixed_bytes(int64_t rows, int64_t cols, std::string_view params, const std::string& where) {
  return Lsb1Layout(rows, cols, Lsb1Params::parse(params, where), where).gaps;
}

std::unique_ptr<BlobView> open(std::span<const std::byte> blob, int64_t rows, int64_t cols, std::string_view params,
                               const OpenArgs& args) {
  return std::make_unique<Lsb1View>(Lsb1View::parse(blob, rows, cols, params, args));
}

}  // namespace

Lsb1Params Lsb1Params::from(const SchemeOptions& o, const std::string& where) {
  Lsb1Params p;
  if (o.outlier_ratio) p.alpha = *o.outlier_ratio;
  if (o.group_size) p.group_size = *o.group_size;
  if (o.use_mean) p.use_mean = *o.use_mean;
  if (!std::isfinite(p.alpha) || p.alpha < 0.0f || p.alpha > 1.0f) fail(where, "outlier ratio {} outside [0, 1]", p.alpha);
  if (p.group_size < 0) fail(where, "group size {} is negative", p.group_size);
  return p;
}

Lsb1Params Lsb1Params::parse(std::string_view text, const std::string& where) {
  return from(SchemeOptions::parse(text, where), where);
}

std::string Lsb1Params::text() const {
  // float -> double is exact, so the text round-trips to the same float.
  return nlohmann::json{{"alpha", static_cast<double>(alpha)}, {"group", group_size}, {"mean", use_mean}}.dump();
}

int64_t lsb1_outliers_per_row(int64_t cols, float alpha) {
  // round-half-away of the exact double product: alpha is stored as a float, so 0.02f * 25 is
  // 0.49999999 -> 0; documented in docs/QUANT.md.
  const double k = std::round(static_cast<double>(alpha) * static_cast<double>(cols));
  if (!(k > 0)) return 0;
  if (k >= static_cast<double>(cols)) return cols;
  return static_cast<int64_t>(k);
}

Lsb1Layout::Lsb1Layout(int64_t rows, int64_t cols, const Lsb1Params& p, const std::string& where) {
  if (rows < 1 || cols < 1) fail(where, "lsb1 needs a non-empty matrix, got {} x {}", rows, cols);
  if (cols > std::numeric_limits<int32_t>::max())
    fail(where, "{} columns exceed {} (column indices are 32-bit)", cols, std::numeric_limits<int32_t>::max());
  const auto r = static_cast<uint64_t>(rows);
  words = (cols + 63) / 64;
  group = p.group_size == 0 ? cols : std::min<int64_t>(p.group_size, cols);
  ngroups = (cols + group - 1) / group;
  const uint64_t scale_bytes = checked_mul(checked_mul(r, static_cast<uint64_t>(ngroups), where), 2, where);
  signs = 0;
  uint64_t off = align_section(checked_mul(checked_mul(r, static_cast<uint64_t>(words), where), 8, where));
  scales = off;
  off = align_section(checked_add(off, scale_bytes, where));
  if (p.use_mean) {
    means = off;
    off = align_section(checked_add(off, scale_bytes, where));
  }
  counts = off;
  gaps = align_section(checked_add(off, checked_mul(r, 2, where), where));
}

Lsb1View Lsb1View::parse(std::span<const std::byte> blob, int64_t rows, int64_t cols, std::string_view params,
                         const OpenArgs& args, const OutlierSink* sink) {
  const std::string& where = args.where;
  const Lsb1Params p = Lsb1Params::parse(params, where);
  const Lsb1Layout L(rows, cols, p, where);
  const auto* base = reinterpret_cast<const uint8_t*>(blob.data());
  // Section pointers are dereferenced as u64/u16: demand the alignment the writer promises.
  if (reinterpret_cast<uintptr_t>(base) % 8 != 0) fail(where, "lsb1 blob is not 8-byte aligned");
  if (blob.size() < L.gaps) fail(where, "lsb1 blob is {} bytes, its fixed sections need {}", blob.size(), L.gaps);
  Lsb1View v;
  v.rows = rows;
  v.cols = cols;
  v.params = p;
  v.words = L.words;
  v.group = L.group;
  v.ngroups = L.ngroups;
  v.signs = reinterpret_cast<const uint64_t*>(base + L.signs);
  v.scales = reinterpret_cast<const uint16_t*>(base + L.scales);
  if (p.use_mean) v.means = reinterpret_cast<const uint16_t*>(base + L.means);
  const int64_t nscales = args.check_content ? rows * L.ngroups : 0;
  for (int64_t i = 0; i < nscales; ++i) {
    if (!f16_is_finite(v.scales[i]) || (v.scales[i] & 0x8000u && v.scales[i] != 0x8000u))
      fail(where, "lsb1 scale {} (row {}) is negative or not finite", i, i / L.ngroups);
    if (v.means && !f16_is_finite(v.means[i])) fail(where, "lsb1 mean {} (row {}) is not finite", i, i / L.ngroups);
  }
  detail::check_sign_padding(v.signs, rows, L.words, cols, where);
  v.outliers = detail::parse_sign_outliers(blob, rows, cols, L.counts, L.gaps, v.signs, L.words, args, sink);
  return v;
}

void Lsb1View::dequantize_row(int64_t r, float* out) const {
  const uint64_t* sw = signs + r * words;
  for (int64_t g = 0; g < ngroups; ++g) {
    const float s = f16_to_f32(scales[r * ngroups + g]);
    const float m = means ? f16_to_f32(means[r * ngroups + g]) : 0.0f;
    const float hi = m + s, lo = m - s;
    for (int64_t c = g * group; c < std::min(cols, (g + 1) * group); ++c) out[c] = ((sw[c >> 6] >> (c & 63)) & 1u) ? hi : lo;
  }
  outliers.apply_row(r, out);
}

RowSpans Lsb1View::row_spans(int64_t r) const {
  RowSpans s;
  s.add(signs + r * words, 8 * static_cast<uint64_t>(words));
  s.add(scales + r * ngroups, 2 * static_cast<uint64_t>(ngroups));
  if (means) s.add(means + r * ngroups, 2 * static_cast<uint64_t>(ngroups));
  outliers.add_row_spans(r, s);
  return s;
}

extern const SchemeOps kLsb1Ops{DType::LSB1, "lsb1",
                                "sign bit x fp16 scale per group of G + top-alpha fp16 outliers per row", false,
                                make_params, fixed_bytes, quantize_ref, quantize_fast, open};

}  // namespace lsb::quant
