// PAPER: the seed paper's method, literally. Per tensor: tau = quantile(|W|, 1 - alpha); outliers
// |w| > tau (kept as fp16); the inliers' mean mu and population standard deviation sigma; every
// inlier becomes mu + sigma * (+1 / -1) by the sign of w - mu.
// Parameters: {"alpha": outlier ratio in [0, 1]}.
// Blob:
//   header  f32 mu, f32 sigma, f32 tau, u32 pad (16 bytes, then padding to 64)
//   signs   u64[rows * words]    1 <-> w >= float(mu) (an outlier's bit is 1)
//   counts, gaps, values         the outlier sections (quant/outliers.h)
// Rules (docs/QUANT.md): tau = sorted(|W|)[floor((1 - double(alpha)) * (n - 1))]; mu, sigma of the
// inliers in double, sums taken per row in column order and then over rows in order; stored f32.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "quant/outliers.h"
#include "quant/scheme.h"

namespace lsb::quant {

struct PaperParams {
  float alpha = 0.02f;
  static PaperParams from(const SchemeOptions& o, const std::string& where);
  static PaperParams parse(std::string_view text, const std::string& where);
  std::string text() const;
};

struct PaperLayout {
  int64_t words = 0;
  uint64_t signs = 0, counts = 0, gaps = 0;  // section offsets; gaps = fixed size
  PaperLayout(int64_t rows, int64_t cols, const std::string& where);
};

class PaperView final : public BlobView {
 public:
  static PaperView parse(std::span<const std::byte> blob, int64_t rows, int64_t cols, std::string_view params,
                         const OpenArgs& args, const OutlierSink* sink = nullptr);
  void dequantize_row(int64_t r, float* out) const override;
  RowSpans row_spans(int64_t r) const override;
  uint64_t outlier_count() const override { return outliers.total(); }

  int64_t rows = 0, cols = 0, words = 0;
  float mu = 0, sigma = 0, tau = 0;
  const uint64_t* signs = nullptr;
  OutlierSection outliers;
};

}  // namespace lsb::quant
