// Outlier handling shared by LSB1 and PAPER: top-k selection by magnitude, the gap code of
// outlier columns (see scheme.h), and rounding of double results to stored fp16 values.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace lsb::quant {

// Columns of the k largest |row[c]| (ties: lower column first), in increasing column order.
// The order (|w| descending, column ascending) is a strict total order, so the selected set is
// unique: any correct selection algorithm returns the same columns. `scratch` is reused.
void select_top_k(const float* row, int64_t cols, int64_t k, std::vector<uint32_t>& scratch,
                  std::vector<uint32_t>& out);

// Bytes the gap code of `columns` (strictly increasing) takes.
uint64_t gap_code_bytes(std::span<const uint32_t> columns);
// Appends the gap code of `columns` (strictly increasing) to `out`.
void append_gap_code(std::span<const uint32_t> columns, std::vector<uint8_t>& out);
// Writes the gap code at `dst` (gap_code_bytes(columns) bytes); returns the end pointer.
uint8_t* write_gap_code(std::span<const uint32_t> columns, uint8_t* dst);

// Decodes `count` columns starting at gaps[pos], never reading at or past gaps[end]. Checks
// that every column stays < cols; throws lsb::Error "where: row R: ..." otherwise. Writes the
// columns to `out` (may be null; its contents are unspecified when this throws) and returns the
// position after the last byte read.
// Column of the next outlier of a row from its gap code: start with col = -1; advances gp past
// the gap's bytes (255 means "add 255 and read on").
inline int64_t next_outlier_column(const uint8_t*& gp, int64_t col) {
  int64_t gap = 0;
  uint8_t b;
  do {
    b = *gp++;
    gap += b;
  } while (b == 255);
  return col + gap + 1;
}

uint64_t decode_gap_code(const uint8_t* gaps, uint64_t pos, uint64_t end, uint32_t count,
                         int64_t cols, uint32_t* out, const std::string& where, int64_t row);

// The fp16 nearest to x (ties to even mantissa), saturated to +-65504 so stored scales and
// outliers stay finite. Deciding on the double itself (not a float rounding of it) avoids
// double rounding, which keeps the stored scale the L2-optimal fp16 value.
uint16_t f16_nearest(double x);

}  // namespace lsb::quant
