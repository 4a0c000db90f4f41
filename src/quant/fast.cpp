// Multi-threaded quantizers/dequantizers. Rows are independent work items; every floating
// point sum runs in the same order as in reference.cpp (per group / per row in column order, in
// double, rows combined in row order), so the bytes do not depend on the thread count.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "io/fp16.h"
#include "lsb/error.h"
#include "quant/outlier_coding.h"
#include "quant/scheme.h"

namespace lsb::quant {
namespace {

constexpr const char* kWhere = "quantize";

void require_finite(const float* w, int64_t rows, int64_t cols) {
  int64_t bad = -1;
#pragma omp parallel for schedule(static) reduction(max : bad)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      if (!std::isfinite(w[r * cols + c])) {
        bad = std::max(bad, r);
        break;
      }
  if (bad < 0) return;
  // Report the first bad element, as the reference does.
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(w[i])) fail(kWhere, "weight at row {} column {} is not finite", i / cols, i % cols);
}

// Per-row outlier columns and gap-code sizes, then one prefix sum to place every row's gap
// bytes and values; the second pass writes them in parallel.
struct OutlierRows {
  std::vector<std::vector<uint32_t>> columns;
  std::vector<uint64_t> gap_start, value_start;  // rows + 1 prefix sums
};

std::vector<std::byte> finish_blob(std::vector<std::byte>& blob, const BlobLayout& L, const float* w,
                                   int64_t rows, int64_t cols, OutlierRows& o) {
  o.gap_start.assign(rows + 1, 0);
  o.value_start.assign(rows + 1, 0);
  for (int64_t r = 0; r < rows; ++r) {
    o.gap_start[r + 1] = o.gap_start[r] + gap_code_bytes(o.columns[r]);
    o.value_start[r + 1] = o.value_start[r] + o.columns[r].size();
  }
  const uint64_t values_off = align_section(L.gaps + o.gap_start[rows]);
  blob.resize(values_off + 2 * o.value_start[rows], std::byte{0});
  auto* base = reinterpret_cast<uint8_t*>(blob.data());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const auto& cs = o.columns[r];
    write_gap_code(cs, base + L.gaps + o.gap_start[r]);
    const uint16_t count = static_cast<uint16_t>(cs.size());
    std::memcpy(base + L.counts + 2 * r, &count, 2);
    for (size_t i = 0; i < cs.size(); ++i) {
      const uint16_t h = f16_nearest(w[r * cols + cs[i]]);
      std::memcpy(base + values_off + 2 * (o.value_start[r] + i), &h, 2);
    }
  }
  return std::move(blob);
}

std::vector<std::byte> quantize_lsb1(const float* w, int64_t rows, int64_t cols, const SchemeParams& p,
                                     const BlobLayout& L) {
  const int64_t k = lsb1_outliers_per_row(cols, p.outlier_ratio);
  if (k > 65535) fail(kWhere, "{} outliers per row do not fit the u16 counts", k);
  std::vector<std::byte> blob(L.gaps, std::byte{0});
  auto* base = reinterpret_cast<uint8_t*>(blob.data());
  OutlierRows o;
  o.columns.resize(rows);
#pragma omp parallel
  {
    std::vector<uint32_t> scratch;
    std::vector<uint64_t> out_mask(L.words), words(L.words);
#pragma omp for schedule(dynamic, 16)
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = w + r * cols;
      auto& sel = o.columns[r];
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
      std::memcpy(base + L.signs + 8 * r * L.words, words.data(), 8 * L.words);
    }
  }
  return finish_blob(blob, L, w, rows, cols, o);
}

// The q-th smallest |w| (0-based), i.e. the reference's sorted(|W|)[q], without a copy of the
// tensor: |w| of finite floats orders like its bit pattern, so a radix select over the top and
// then the bottom 16 bits finds it in two counting passes (2 x 512 KB of counters).
float kth_magnitude(const float* w, int64_t n, int64_t q) {
  auto bits = [&](int64_t i) {
    uint32_t u;
    std::memcpy(&u, &w[i], 4);
    return u & 0x7fffffffu;
  };
  std::vector<uint64_t> hist(1 << 16);
  for (int64_t i = 0; i < n; ++i) ++hist[bits(i) >> 16];
  uint64_t below = 0;
  uint32_t hi = 0;
  while (below + hist[hi] <= static_cast<uint64_t>(q)) below += hist[hi++];
  std::fill(hist.begin(), hist.end(), 0);
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = bits(i);
    if ((u >> 16) == hi) ++hist[u & 0xffffu];
  }
  uint32_t lo = 0;
  while (below + hist[lo] <= static_cast<uint64_t>(q)) below += hist[lo++];
  const uint32_t u = (hi << 16) | lo;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::vector<std::byte> quantize_paper(const float* w, int64_t rows, int64_t cols, const SchemeParams& p,
                                      const BlobLayout& L) {
  const int64_t n = rows * cols;
  const auto q = std::clamp<int64_t>(
      static_cast<int64_t>(std::floor((1.0 - static_cast<double>(p.outlier_ratio)) * static_cast<double>(n - 1))),
      0, n - 1);
  const float tau = kth_magnitude(w, n, q);

  std::vector<double> row_sum(rows), row_sq(rows);
  std::vector<int64_t> row_n(rows);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    int64_t cnt = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = w[r * cols + c];
      if (std::fabs(v) <= tau) {
        s += v;
        ++cnt;
      }
    }
    row_sum[r] = s;
    row_n[r] = cnt;
  }
  double sum = 0;
  int64_t n_in = 0;
  for (int64_t r = 0; r < rows; ++r) {
    sum += row_sum[r];
    n_in += row_n[r];
  }
  const double mu = n_in > 0 ? sum / static_cast<double>(n_in) : 0.0;
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = w[r * cols + c];
      if (std::fabs(v) <= tau) s += (v - mu) * (v - mu);
    }
    row_sq[r] = s;
  }
  double sq = 0;
  for (int64_t r = 0; r < rows; ++r) sq += row_sq[r];
  const double sigma = n_in > 0 ? std::sqrt(sq / static_cast<double>(n_in)) : 0.0;
  const auto mu_f = static_cast<float>(mu), sigma_f = static_cast<float>(sigma);

  std::vector<std::byte> blob(L.gaps, std::byte{0});
  auto* base = reinterpret_cast<uint8_t*>(blob.data());
  std::memcpy(base + 0, &mu_f, 4);
  std::memcpy(base + 4, &sigma_f, 4);
  std::memcpy(base + 8, &tau, 4);
  OutlierRows o;
  o.columns.resize(rows);
  int64_t too_many = -1;
#pragma omp parallel
  {
    std::vector<uint64_t> words(L.words);
#pragma omp for schedule(static) reduction(max : too_many)
    for (int64_t r = 0; r < rows; ++r) {
      std::fill(words.begin(), words.end(), 0);
      auto& sel = o.columns[r];
      for (int64_t c = 0; c < cols; ++c) {
        const float v = w[r * cols + c];
        const bool outlier = std::fabs(v) > tau;
        if (outlier) sel.push_back(static_cast<uint32_t>(c));
        if (outlier || v >= mu_f) words[c >> 6] |= uint64_t{1} << (c & 63);
      }
      if (sel.size() > 65535) too_many = std::max(too_many, r);
      std::memcpy(base + L.signs + 8 * r * L.words, words.data(), 8 * L.words);
    }
  }
  if (too_many >= 0) {
    for (int64_t r = 0; r < rows; ++r)
      if (o.columns[r].size() > 65535)
        fail(kWhere, "row {} has {} outliers, more than the u16 count holds", r, o.columns[r].size());
  }
  return finish_blob(blob, L, w, rows, cols, o);
}

}  // namespace

std::vector<std::byte> quantize(DType t, const float* w, int64_t rows, int64_t cols, const SchemeParams& p) {
  const BlobLayout L = blob_layout(t, rows, cols, p, kWhere);
  const int64_t n = rows * cols;
  switch (t) {
    case DType::F32: {
      std::vector<std::byte> blob(L.gaps);
      if (n > 0) std::memcpy(blob.data(), w, 4 * n);
      return blob;
    }
    case DType::F16:
    case DType::BF16: {
      std::vector<std::byte> blob(L.gaps);
      auto* dst = reinterpret_cast<uint16_t*>(blob.data());
      const bool half = t == DType::F16;
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) dst[i] = half ? f32_to_f16(w[i]) : f32_to_bf16(w[i]);
      return blob;
    }
    case DType::Q8: {
      require_finite(w, rows, cols);
      std::vector<std::byte> blob(L.gaps);
      auto* scales = reinterpret_cast<float*>(blob.data());
      auto* q8 = reinterpret_cast<int8_t*>(blob.data() + L.q8);
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = w + r * cols;
        float amax = 0;
        for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(row[c]));
        const float scale = amax / 127.0f;
        scales[r] = scale;
        for (int64_t c = 0; c < cols; ++c) {
          const float q = scale > 0 ? std::round(row[c] / scale) : 0.0f;
          q8[r * cols + c] = static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f));
        }
      }
      return blob;
    }
    case DType::LSB1:
      require_finite(w, rows, cols);
      return quantize_lsb1(w, rows, cols, p, L);
    case DType::PAPER:
      require_finite(w, rows, cols);
      return quantize_paper(w, rows, cols, p, L);
  }
  fail(kWhere, "unknown dtype code {}", static_cast<int>(t));
}

void dequantize(DType t, std::span<const std::byte> blob, int64_t rows, int64_t cols, const SchemeParams& p,
                float* out) {
  const PackedView v = PackedView::parse(t, blob, rows, cols, p, "dequantize");
  const int64_t n = rows * cols;
  switch (t) {
    case DType::F32:
      if (n > 0) std::memcpy(out, blob.data(), 4 * n);
      return;
    case DType::F16:
    case DType::BF16: {
      const bool half = t == DType::F16;
      const auto* src = reinterpret_cast<const uint8_t*>(blob.data());
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);  // dense blobs may sit at any offset of a file
        out[i] = half ? f16_to_f32(h) : bf16_to_f32(h);
      }
      return;
    }
    default:
#pragma omp parallel for schedule(static)
      for (int64_t r = 0; r < rows; ++r) v.dequantize_row(r, out + r * cols);
      return;
  }
}

}  // namespace lsb::quant
