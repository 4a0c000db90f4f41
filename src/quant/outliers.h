// Outliers, shared by the schemes that keep a few weights exactly (LSB1, PAPER): top-k
// selection by magnitude, the gap code of outlier columns, the outlier sections of a blob (how
// they are written and parsed), and rounding of double results to stored fp16 values.
//
// Layout of the outlier sections (after a scheme's fixed sections):
//   counts  u16[rows]       outliers in each row, at `counts_off`
//   gaps    u8[...]         at `gaps_off`: outlier columns c_0 < c_1 < ... of each row, rows in
//                           order, as gaps g_0 = c_0, g_i = c_i - c_{i-1} - 1, each written as
//                           floor(g/255) bytes of 255 and one byte g % 255; no stored length
//   values  f16[total]      at the next multiple of 64 after the gap stream (zero padding); the
//                           blob ends exactly after the last value
// The sign bit (where the scheme has one) of an outlier position is 1; kernels rely on it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory_resource>
#include <span>
#include <string>
#include <vector>

#include "quant/scheme.h"

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

// Receives the decoded outlier columns while a blob is parsed, so that callers need not decode
// the gap stream a second time: reserve(total) once, then row() per row with the index of the
// row's first outlier value and its columns (increasing).
struct OutlierSink {
  std::function<void(uint64_t total)> reserve;
  std::function<void(int64_t row, uint64_t first, const uint32_t* columns, uint32_t count)> row;
};

// Parsed outlier sections of a blob (pointers into it, no copies).
struct OutlierSection {
  const uint16_t* counts = nullptr;
  const uint8_t* gaps = nullptr;     // start of the gap stream
  const uint16_t* values = nullptr;  // fp16 bits
  std::pmr::vector<uint64_t> row_value_start;  // rows + 1 prefix sums of counts
  std::pmr::vector<uint64_t> row_gap_start;    // rows + 1 byte offsets into the gap stream
  uint64_t total() const { return row_value_start.empty() ? 0 : row_value_start.back(); }
  // Overwrites the outlier columns of row r in `out` with their values.
  void apply_row(int64_t r, float* out) const;
  // The bytes apply_row(r) reads (its gap code and its values) added to `s`.
  void add_row_spans(int64_t r, RowSpans& s) const {
    s.add(gaps + row_gap_start[r], row_gap_start[r + 1] - row_gap_start[r]);
    s.add(values + row_value_start[r], 2 * (row_value_start[r + 1] - row_value_start[r]));
  }
};

struct OutlierParse {
  std::span<const std::byte> blob;  // 8-byte aligned
  int64_t rows = 0, cols = 0;
  uint64_t counts_off = 0, gaps_off = 0;
  // Sign words of the rows (words per row); when checking content, every outlier's bit must be 1.
  const uint64_t* signs = nullptr;
  int64_t words = 0;
  std::string where;
  bool check_content = true;
  const OutlierSink* sink = nullptr;
  std::pmr::memory_resource* mr = std::pmr::get_default_resource();
};
// Checks every count (<= cols), the gap stream (never read past the blob, every column < cols),
// zero padding after it, finite values (when checking content), and that the blob ends exactly
// after the last value. Throws lsb::Error naming p.where.
OutlierSection parse_outliers(const OutlierParse& p);

// Writes the outlier sections for the given columns of every row (values: fp16 of w) after the
// blob's fixed part, resizing the blob to its final size. Rows are written in parallel; the
// bytes do not depend on the thread count.
void write_outliers(std::vector<std::byte>& blob, uint64_t counts_off, uint64_t gaps_off, const float* w, int64_t cols,
                    const std::vector<std::vector<uint32_t>>& columns);

}  // namespace lsb::quant
