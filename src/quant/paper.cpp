#include "quant/paper.h"

#include <algorithm>
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

int64_t quantile_index(float alpha, int64_t n) {
  return std::clamp<int64_t>(
      static_cast<int64_t>(std::floor((1.0 - static_cast<double>(alpha)) * static_cast<double>(n - 1))), 0, n - 1);
}

// Signs of every row and the outlier columns, given the tensor-wide tau and mu.
void signs_and_outliers(const float* w, int64_t rows, int64_t cols, float tau, float mu_f, int64_t words,
                        uint64_t* signs, std::vector<std::vector<uint32_t>>& columns, const char* where) {
  for (int64_t r = 0; r < rows; ++r) {
    auto& sel = columns[r];
    for (int64_t c = 0; c < cols; ++c) {
      const float v = w[r * cols + c];
      const bool outlier = std::fabs(v) > tau;
      if (outlier) sel.push_back(static_cast<uint32_t>(c));
      if (outlier || v >= mu_f) signs[r * words + c / 64] |= uint64_t{1} << (c % 64);
    }
    if (sel.size() > 65535) fail(where, "row {} has {} outliers, more than the u16 count holds", r, sel.size());
  }
}

std::vector<std::byte> assemble(const float* w, int64_t rows, int64_t cols, const PaperLayout& L, float mu,
                                float sigma, float tau, const std::vector<uint64_t>& signs,
                                const std::vector<std::vector<uint32_t>>& columns) {
  std::vector<std::byte> blob(L.gaps, std::byte{0});
  std::memcpy(blob.data() + 0, &mu, 4);
  std::memcpy(blob.data() + 4, &sigma, 4);
  std::memcpy(blob.data() + 8, &tau, 4);
  std::memcpy(blob.data() + L.signs, signs.data(), signs.size() * 8);
  write_outliers(blob, L.counts, L.gaps, w, cols, columns);
  return blob;
}

// The specification: sort |W| for tau, then sums in the documented order.
std::vector<std::byte> quantize_ref(const QuantizeArgs& a) {
  const char* where = "quantize_reference";
  const PaperParams p = PaperParams::parse(a.params, where);
  const PaperLayout L(a.rows, a.cols, where);
  detail::require_finite(a.w, a.rows, a.cols, where);
  const int64_t rows = a.rows, cols = a.cols, n = rows * cols;
  std::vector<float> mags(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) mags[i] = std::fabs(a.w[i]);
  std::sort(mags.begin(), mags.end());
  const float tau = mags[quantile_index(p.alpha, n)];
  double sum = 0;
  int64_t n_in = 0;
  for (int64_t r = 0; r < rows; ++r) {
    double row_sum = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = a.w[r * cols + c];
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
      const float v = a.w[r * cols + c];
      if (std::fabs(v) <= tau) row_sq += (v - mu) * (v - mu);
    }
    sq += row_sq;
  }
  const double sigma = n_in > 0 ? std::sqrt(sq / static_cast<double>(n_in)) : 0.0;
  std::vector<uint64_t> signs(static_cast<size_t>(rows * L.words), 0);
  std::vector<std::vector<uint32_t>> columns(static_cast<size_t>(rows));
  signs_and_outliers(a.w, rows, cols, tau, static_cast<float>(mu), L.words, signs.data(), columns, where);
  return assemble(a.w, rows, cols, L, static_cast<float>(mu), static_cast<float>(sigma), tau, signs, columns);
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

// Rows in parallel: per-row partial sums combined in row order, as the reference adds them.
std::vector<std::byte> quantize_fast(const QuantizeArgs& a) {
  const char* where = "quantize";
  const PaperParams p = PaperParams::parse(a.params, where);
  const PaperLayout L(a.rows, a.cols, where);
  const int64_t rows = a.rows, cols = a.cols, n = rows * cols;
  detail::require_finite_parallel(a.w, rows, cols, where);
  const float tau = kth_magnitude(a.w, n, quantile_index(p.alpha, n));
  std::vector<double> row_sum(static_cast<size_t>(rows)), row_sq(static_cast<size_t>(rows));
  std::vector<int64_t> row_n(static_cast<size_t>(rows));
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    int64_t cnt = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = a.w[r * cols + c];
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
      const float v = a.w[r * cols + c];
      if (std::fabs(v) <= tau) s += (v - mu) * (v - mu);
    }
    row_sq[r] = s;
  }
  double sq = 0;
  for (int64_t r = 0; r < rows; ++r) sq += row_sq[r];
  const double sigma = n_in > 0 ? std::sqrt(sq / static_cast<double>(n_in)) : 0.0;
  const auto mu_f = static_cast<float>(mu);
  std::vector<uint64_t> signs(static_cast<size_t>(rows * L.words), 0);
  std::vector<std::vector<uint32_t>> columns(static_cast<size_t>(rows));
  constexpr int64_t kChunk = 64;  // rows per task; each task reports a bad row through `too_many`
  int64_t too_many = -1;
#pragma omp parallel for schedule(static) reduction(max : too_many)
  for (int64_t r0 = 0; r0 < rows; r0 += kChunk) {
    for (int64_t r = r0; r < std::min(rows, r0 + kChunk); ++r) {
      auto& sel = columns[r];
      for (int64_t c = 0; c < cols; ++c) {
        const float v = a.w[r * cols + c];
        const bool outlier = std::fabs(v) > tau;
        if (outlier) sel.push_back(static_cast<uint32_t>(c));
        if (outlier || v >= mu_f) signs[r * L.words + c / 64] |= uint64_t{1} << (c % 64);
      }
      if (sel.size() > 65535) too_many = std::max(too_many, r);
    }
  }
  if (too_many >= 0)
    for (int64_t r = 0; r < rows; ++r)
      if (columns[r].size() > 65535)
        fail(where, "row {} has {} outliers, more than the u16 count holds", r, columns[r].size());
  return assemble(a.w, rows, cols, L, mu_f, static_cast<float>(sigma), tau, signs, columns);
}

std::string make_params(const SchemeOptions& o, const std::string& where) { return PaperParams::from(o, where).text(); }

uint64_t fixed_bytes(int64_t rows, int64_t cols, std::string_view params, const std::string& where) {
  (void)PaperParams::parse(params, where);
  return PaperLayout(rows, cols, where).gaps;
}

std::unique_ptr<BlobView> open(std::span<const std::byte> blob, int64_t rows, int64_t cols, std::string_view params,
                               const OpenArgs& args) {
  return std::make_unique<PaperView>(PaperView::parse(blob, rows, cols, params, args));
}

}  // namespace

PaperParams PaperParams::from(const SchemeOptions& o, const std::string& where) {
  PaperParams p;
  if (o.outlier_ratio) p.alpha = *o.outlier_ratio;
  if (!std::isfinite(p.alpha) || p.alpha < 0.0f || p.alpha > 1.0f) fail(where, "outlier ratio {} outside [0, 1]", p.alpha);
  return p;
}

PaperParams PaperParams::parse(std::string_view text, const std::string& where) {
  return from(SchemeOptions::parse(text, where), where);
}

std::string PaperParams::text() const { return nlohmann::json{{"alpha", static_cast<double>(alpha)}}.dump(); }

PaperLayout::PaperLayout(int64_t rows, int64_t cols, const std::string& where) {
  if (rows < 1 || cols < 1) fail(where, "paper needs a non-empty matrix, got {} x {}", rows, cols);
  if (cols > std::numeric_limits<int32_t>::max())
    fail(where, "{} columns exceed {} (column indices are 32-bit)", cols, std::numeric_limits<int32_t>::max());
  const auto r = static_cast<uint64_t>(rows);
  words = (cols + 63) / 64;
  signs = kSectionAlign;  // after the 16-byte header, padded to the section alignment
  counts = align_section(
      checked_add(signs, checked_mul(checked_mul(r, static_cast<uint64_t>(words), where), 8, where), where));
  gaps = align_section(checked_add(counts, checked_mul(r, 2, where), where));
}

PaperView PaperView::parse(std::span<const std::byte> blob, int64_t rows, int64_t cols, std::string_view params,
                           const OpenArgs& args, const OutlierSink* sink) {
  const std::string& where = args.where;
  (void)PaperParams::parse(params, where);
  const PaperLayout L(rows, cols, where);
  const auto* base = reinterpret_cast<const uint8_t*>(blob.data());
  if (reinterpret_cast<uintptr_t>(base) % 8 != 0) fail(where, "paper blob is not 8-byte aligned");
  if (blob.size() < L.gaps) fail(where, "paper blob is {} bytes, its fixed sections need {}", blob.size(), L.gaps);
  PaperView v;
  v.rows = rows;
  v.cols = cols;
  v.words = L.words;
  uint32_t pad;
  std::memcpy(&v.mu, base + 0, 4);
  std::memcpy(&v.sigma, base + 4, 4);
  std::memcpy(&v.tau, base + 8, 4);
  std::memcpy(&pad, base + 12, 4);
  if (!std::isfinite(v.mu) || !std::isfinite(v.sigma) || !std::isfinite(v.tau) || v.sigma < 0 || v.tau < 0 || pad != 0)
    fail(where, "paper header invalid (mu {}, sigma {}, tau {}, pad {})", v.mu, v.sigma, v.tau, pad);
  v.signs = reinterpret_cast<const uint64_t*>(base + L.signs);
  detail::check_sign_padding(v.signs, rows, L.words, cols, where);
  v.outliers = detail::parse_sign_outliers(blob, rows, cols, L.counts, L.gaps, v.signs, L.words, args, sink);
  return v;
}

void PaperView::dequantize_row(int64_t r, float* out) const {
  const uint64_t* sw = signs + r * words;
  const float hi = mu + sigma, lo = mu - sigma;
  for (int64_t c = 0; c < cols; ++c) out[c] = ((sw[c >> 6] >> (c & 63)) & 1u) ? hi : lo;
  outliers.apply_row(r, out);
}

RowSpans PaperView::row_spans(int64_t r) const {
  RowSpans s;  // mu, sigma and tau were copied out of the header by parse
  s.add(signs + r * words, 8 * static_cast<uint64_t>(words));
  outliers.add_row_spans(r, s);
  return s;
}

extern const SchemeOps kPaperOps{DType::PAPER, "paper",
                                 "seed method: per-tensor quantile outliers, sign bits around mu, scale sigma", false,
                                 make_params, fixed_bytes, quantize_ref, quantize_fast, open};

}  // namespace lsb::quant
