// Q8: int8 per weight with one f32 scale per row.
//   scales  f32[rows]        scale = max|w| / 127 of the row (0 for an all-zero row)
//   q       int8[rows*cols]  at the next multiple of 64: q = round-half-away(w / scale), clamped
//                            to [-127, 127] (0 when the scale is 0); weight = q * scale
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "quant/scheme.h"

namespace lsb::quant {

struct Q8Layout {
  uint64_t q = 0;     // offset of the int8 section
  uint64_t size = 0;  // whole blob
  Q8Layout(int64_t rows, int64_t cols, const std::string& where);
};

// Validated view of a Q8 blob (8-byte aligned); the kernels multiply it in place.
class Q8View final : public BlobView {
 public:
  static Q8View parse(std::span<const std::byte> blob, int64_t rows, int64_t cols, const OpenArgs& args);
  void dequantize_row(int64_t r, float* out) const override;
  RowSpans row_spans(int64_t r) const override;
  int64_t rows = 0, cols = 0;
  const float* scales = nullptr;  // [rows]
  const int8_t* q = nullptr;      // [rows * cols]
};

}  // namespace lsb::quant
