// LSB1: sign bits x per-group scale + the top-alpha weights of each row kept as fp16 outliers.
// Parameters: {"alpha": outlier ratio in [0, 1], "group": G >= 0 (0 = whole row), "mean": bool}.
// Blob (sections at multiples of 64 from the blob start):
//   signs   u64[rows * words]    words = ceil(cols/64); bit j of word w <-> column 64*w + j;
//                                1 = +scale, 0 = -scale; padding bits 0; an outlier's bit is 1
//   scales  f16[rows * ngroups]  ngroups = ceil(cols/group); scale of the group's inliers
//   means   f16[rows * ngroups]  only with "mean": w ~ mean + scale * sign(w - mean)
//   counts, gaps, values         the outlier sections (quant/outliers.h)
// Rules (docs/QUANT.md): k = round-half-away(double(alpha) * cols) outliers per row, the k
// largest |w| (ties: lower column first). Per group, over its inliers, in double: without mean,
// scale = mean |w|; with mean, m = fp16(mean w), bit = (w >= m), scale = mean |w - m|. Stored
// values are the fp16 nearest to the double result (saturated to +-65504). Reconstruction in
// float: bit ? m + scale : m - scale (m = 0 without mean), then outliers overwrite.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "quant/outliers.h"
#include "quant/scheme.h"

namespace lsb::quant {

struct Lsb1Params {
  float alpha = 0.02f;
  int group_size = 128;  // 0 = whole row
  bool use_mean = false;
  static Lsb1Params from(const SchemeOptions& o, const std::string& where);  // defaults + checks
  static Lsb1Params parse(std::string_view text, const std::string& where);
  std::string text() const;
};

// Outliers kept in each row: round-half-away(double(alpha) * cols), at most cols.
int64_t lsb1_outliers_per_row(int64_t cols, float alpha);

struct Lsb1Layout {
  int64_t words = 0;    // u64 sign words per row
  int64_t group = 0;    // columns per group (the last may be shorter): the one place G = 0 is resolved
  int64_t ngroups = 0;  // groups per row
  uint64_t signs = 0, scales = 0, means = 0, counts = 0, gaps = 0;  // section offsets; gaps = fixed size
  Lsb1Layout(int64_t rows, int64_t cols, const Lsb1Params& p, const std::string& where);
};

// Validated view of an LSB1 blob (8-byte aligned): section pointers and the outlier index.
class Lsb1View final : public BlobView {
 public:
  // `sink` receives the outlier columns as they are decoded (see OutlierSink).
  static Lsb1View parse(std::span<const std::byte> blob, int64_t rows, int64_t cols, std::string_view params,
                        const OpenArgs& args, const OutlierSink* sink = nullptr);
  void dequantize_row(int64_t r, float* out) const override;
  RowSpans row_spans(int64_t r) const override;
  uint64_t outlier_count() const override { return outliers.total(); }

  int64_t rows = 0, cols = 0;
  Lsb1Params params;
  int64_t words = 0, group = 0, ngroups = 0;
  const uint64_t* signs = nullptr;
  const uint16_t* scales = nullptr;  // f16 bits
  const uint16_t* means = nullptr;   // f16 bits, or null without "mean"
  OutlierSection outliers;
};

}  // namespace lsb::quant
