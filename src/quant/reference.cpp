// Scalar reference quantizers and dequantizers: single thread, plain loops, every value read and
// written through memcpy. This file is the specification the fast versions (fast.cpp) and the
// kernels must match bit for bit; docs/QUANT.md describes the same rules in prose.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "io/fp16.h"
#include "lsb/error.h"
#include "quant/outlier_coding.h"
#include "quant/scheme.h"

namespace lsb::quant {
namespace {

static_assert(std::endian::native == std::endian::little, "blobs are little-endian");

template <typename T>
void put(std::vector<std::byte>& blob, uint64_t off, T v) {
  std::memcpy(blob.data() + off, &v, sizeof(T));
}
template <typename T>
T get(std::span<const std::byte> blob, uint64_t off) {
  T v;
  std::memcpy(&v, blob.data() + off, sizeof(T));
  return v;
}

void require_finite(const float* w, int64_t rows, int64_t cols, const char* where) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      if (!std::isfinite(w[r * cols + c])) fail(where, "weight at row {} column {} is not finite", r, c);
}

void check_blob_size(std::span<const std::byte> blob, uint64_t want, const char* where) {
  if (blob.size() != want) fail(where, "blob is {} bytes, expected {}", blob.size(), want);
}

// Sections after the fixed part: gap stream of `gap_bytes`, then values at the next multiple of
// 64. Returns the blob size.
uint64_t packed_blob_size(uint64_t gaps_off, uint64_t gap_bytes, uint64_t nvalues) {
  return align_section(gaps_off + gap_bytes) + 2 * nvalues;
}

std::vector<std::byte> quantize_lsb1(const float* w, int64_t rows, int64_t cols, const SchemeParams& p,
                                     const BlobLayout& L) {
  const char* where = "quantize_reference";
  const int64_t k = lsb1_outliers_per_row(cols, p.outlier_ratio);
  if (k > 65535) fail(where, "{} outliers per row do not fit the u16 counts", k);
  std::vector<uint8_t> gaps;
  std::vector<uint16_t> values;
  std::vector<uint64_t> signs(static_cast<size_t>(rows * L.words), 0);
  std::vector<uint16_t> scales(static_cast<size_t>(rows * L.ngroups), 0), means(scales.size(), 0);
  std::vector<uint32_t> scratch, sel;
  std::vector<uint8_t> is_out(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w + r * cols;
    select_top_k(row, cols, k, scratch, sel);
    append_gap_code(sel, gaps);
    std::fill(is_out.begin(), is_out.end(), 0);
    for (uint32_t c : sel) {
      is_out[c] = 1;
      values.push_back(f16_nearest(row[c]));
    }
    for (int64_t g = 0; g < L.ngroups; ++g) {
      const int64_t c0 = g * L.group, c1 = std::min(cols, c0 + L.group);
      // Mean of the inliers (only used with use_mean), then the scale around the stored mean.
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
  const uint64_t values_off = align_section(L.gaps + gaps.size());
  std::vector<std::byte> blob(packed_blob_size(L.gaps, gaps.size(), values.size()), std::byte{0});
  for (size_t i = 0; i < signs.size(); ++i) put(blob, L.signs + 8 * i, signs[i]);
  for (size_t i = 0; i < scales.size(); ++i) put(blob, L.scales + 2 * i, scales[i]);
  if (p.use_mean)
    for (size_t i = 0; i < means.size(); ++i) put(blob, L.means + 2 * i, means[i]);
  for (int64_t r = 0; r < rows; ++r) put(blob, L.counts + 2 * r, static_cast<uint16_t>(k));
  for (size_t i = 0; i < gaps.size(); ++i) put(blob, L.gaps + i, gaps[i]);
  for (size_t i = 0; i < values.size(); ++i) put(blob, values_off + 2 * i, values[i]);
  return blob;
}

std::vector<std::byte> quantize_paper(const float* w, int64_t rows, int64_t cols, const SchemeParams& p,
                                      const BlobLayout& L) {
  const char* where = "quantize_reference";
  const int64_t n = rows * cols;
  std::vector<float> mags(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) mags[i] = std::fabs(w[i]);
  std::sort(mags.begin(), mags.end());
  const auto q = static_cast<int64_t>(
      std::floor((1.0 - static_cast<double>(p.outlier_ratio)) * static_cast<double>(n - 1)));
  const float tau = mags[std::clamp<int64_t>(q, 0, n - 1)];

  // Inlier statistics: per-row partial sums in column order, then rows in order.
  double sum = 0;
  int64_t n_in = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double row_sum = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = w[r * cols + c];
      if (std::fabs(v) <= tau) {
        row_sum += v;
        ++n_in;
      }
    }
    sum += row_sum;
  }
  const double mu = n_in > 0 ? sum / static_cast<double>(n_in) : 0.0;
  double sq = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double row_sq = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = w[r * cols + c];
      if (std::fabs(v) <= tau) row_sq += (v - mu) * (v - mu);
    }
    sq += row_sq;
  }
  const double sigma = n_in > 0 ? std::sqrt(sq / static_cast<double>(n_in)) : 0.0;
  const auto mu_f = static_cast<float>(mu), sigma_f = static_cast<float>(sigma);

  std::vector<uint64_t> signs(static_cast<size_t>(rows * L.words), 0);
  std::vector<uint16_t> counts(static_cast<size_t>(rows)), values;
  std::vector<uint8_t> gaps;
  std::vector<uint32_t> sel;
  for (int64_t r = 0; r < rows; ++r) {
    sel.clear();
    for (int64_t c = 0; c < cols; ++c) {
      const float v = w[r * cols + c];
      const bool outlier = std::fabs(v) > tau;
      if (outlier) {
        sel.push_back(static_cast<uint32_t>(c));
        values.push_back(f16_nearest(v));
      }
      if (outlier || v >= mu_f) signs[r * L.words + c / 64] |= uint64_t{1} << (c % 64);
    }
    if (sel.size() > 65535) fail(where, "row {} has {} outliers, more than the u16 count holds", r, sel.size());
    counts[r] = static_cast<uint16_t>(sel.size());
    append_gap_code(sel, gaps);
  }
  const uint64_t values_off = align_section(L.gaps + gaps.size());
  std::vector<std::byte> blob(packed_blob_size(L.gaps, gaps.size(), values.size()), std::byte{0});
  put(blob, 0, mu_f);
  put(blob, 4, sigma_f);
  put(blob, 8, tau);
  for (size_t i = 0; i < signs.size(); ++i) put(blob, L.signs + 8 * i, signs[i]);
  for (int64_t r = 0; r < rows; ++r) put(blob, L.counts + 2 * r, counts[r]);
  for (size_t i = 0; i < gaps.size(); ++i) put(blob, L.gaps + i, gaps[i]);
  for (size_t i = 0; i < values.size(); ++i) put(blob, values_off + 2 * i, values[i]);
  return blob;
}

// Shared by LSB1 and PAPER dequantization: applies the outliers of every row on top of the
// dense reconstruction, with all sizes checked.
void apply_outliers(std::span<const std::byte> blob, const BlobLayout& L, int64_t rows, int64_t cols,
                    float* out) {
  const char* where = "dequantize_reference";
  if (blob.size() < L.gaps) fail(where, "blob is {} bytes, its fixed sections need {}", blob.size(), L.gaps);
  uint64_t nvalues = 0;
  for (int64_t r = 0; r < rows; ++r) nvalues += get<uint16_t>(blob, L.counts + 2 * r);
  const auto* gaps = reinterpret_cast<const uint8_t*>(blob.data());
  // First pass: find the end of the gap stream, so that the values offset is known.
  uint64_t pos = L.gaps;
  for (int64_t r = 0; r < rows; ++r)
    pos = decode_gap_code(gaps, pos, blob.size(), get<uint16_t>(blob, L.counts + 2 * r), cols, nullptr, where, r);
  const uint64_t values_off = align_section(pos);
  check_blob_size(blob, values_off + 2 * nvalues, where);
  pos = L.gaps;
  uint64_t vi = 0;
  std::vector<uint32_t> columns;
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t count = get<uint16_t>(blob, L.counts + 2 * r);
    columns.resize(count);
    pos = decode_gap_code(gaps, pos, blob.size(), count, cols, columns.data(), where, r);
    for (uint32_t i = 0; i < count; ++i, ++vi)
      out[r * cols + columns[i]] = f16_to_f32(get<uint16_t>(blob, values_off + 2 * vi));
  }
}

bool sign_bit(std::span<const std::byte> blob, const BlobLayout& L, int64_t r, int64_t c) {
  const auto word = get<uint64_t>(blob, L.signs + 8 * (r * L.words + c / 64));
  return (word >> (c % 64)) & 1u;
}

}  // namespace

std::vector<std::byte> quantize_reference(DType t, const float* w, int64_t rows, int64_t cols,
                                          const SchemeParams& p) {
  const char* where = "quantize_reference";
  const BlobLayout L = blob_layout(t, rows, cols, p, where);
  const int64_t n = rows * cols;
  switch (t) {
    case DType::F32: {
      std::vector<std::byte> blob(L.gaps);
      for (int64_t i = 0; i < n; ++i) put(blob, 4 * i, w[i]);
      return blob;
    }
    case DType::F16:
    case DType::BF16: {
      std::vector<std::byte> blob(L.gaps);
      for (int64_t i = 0; i < n; ++i) put(blob, 2 * i, t == DType::F16 ? f32_to_f16(w[i]) : f32_to_bf16(w[i]));
      return blob;
    }
    case DType::Q8: {
      require_finite(w, rows, cols, where);
      std::vector<std::byte> blob(L.gaps);
      for (int64_t r = 0; r < rows; ++r) {
        float amax = 0;
        for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(w[r * cols + c]));
        const float scale = amax / 127.0f;
        put(blob, 4 * r, scale);
        for (int64_t c = 0; c < cols; ++c) {
          float q = scale > 0 ? std::round(w[r * cols + c] / scale) : 0.0f;
          q = std::clamp(q, -127.0f, 127.0f);
          put(blob, L.q8 + r * cols + c, static_cast<int8_t>(q));
        }
      }
      return blob;
    }
    case DType::LSB1:
      require_finite(w, rows, cols, where);
      return quantize_lsb1(w, rows, cols, p, L);
    case DType::PAPER:
      require_finite(w, rows, cols, where);
      return quantize_paper(w, rows, cols, p, L);
  }
  fail(where, "unknown dtype code {}", static_cast<int>(t));
}

void dequantize_reference(DType t, std::span<const std::byte> blob, int64_t rows, int64_t cols,
                          const SchemeParams& p, float* out) {
  const char* where = "dequantize_reference";
  const BlobLayout L = blob_layout(t, rows, cols, p, where);
  const int64_t n = rows * cols;
  switch (t) {
    case DType::F32:
      check_blob_size(blob, L.gaps, where);
      for (int64_t i = 0; i < n; ++i) out[i] = get<float>(blob, 4 * i);
      return;
    case DType::F16:
      check_blob_size(blob, L.gaps, where);
      for (int64_t i = 0; i < n; ++i) out[i] = f16_to_f32(get<uint16_t>(blob, 2 * i));
      return;
    case DType::BF16:
      check_blob_size(blob, L.gaps, where);
      for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(get<uint16_t>(blob, 2 * i));
      return;
    case DType::Q8:
      check_blob_size(blob, L.gaps, where);
      for (int64_t r = 0; r < rows; ++r) {
        const float scale = get<float>(blob, 4 * r);
        for (int64_t c = 0; c < cols; ++c)
          out[r * cols + c] = static_cast<float>(get<int8_t>(blob, L.q8 + r * cols + c)) * scale;
      }
      return;
    case DType::LSB1: {
      if (blob.size() < L.gaps) fail(where, "blob is {} bytes, its fixed sections need {}", blob.size(), L.gaps);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t g = 0; g < L.ngroups; ++g) {
          const float s = f16_to_f32(get<uint16_t>(blob, L.scales + 2 * (r * L.ngroups + g)));
          const float m = p.use_mean ? f16_to_f32(get<uint16_t>(blob, L.means + 2 * (r * L.ngroups + g))) : 0.0f;
          const float hi = m + s, lo = m - s;
          for (int64_t c = g * L.group; c < std::min(cols, (g + 1) * L.group); ++c)
            out[r * cols + c] = sign_bit(blob, L, r, c) ? hi : lo;
        }
      apply_outliers(blob, L, rows, cols, out);
      return;
    }
    case DType::PAPER: {
      if (blob.size() < L.gaps) fail(where, "blob is {} bytes, its fixed sections need {}", blob.size(), L.gaps);
      const float mu = get<float>(blob, 0), sigma = get<float>(blob, 4);
      const float hi = mu + sigma, lo = mu - sigma;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) out[r * cols + c] = sign_bit(blob, L, r, c) ? hi : lo;
      apply_outliers(blob, L, rows, cols, out);
      return;
    }
  }
  fail(where, "unknown dtype code {}", static_cast<int>(t));
}

}  // namespace lsb::quant
