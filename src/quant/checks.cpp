#include "detail/checks.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace lsb::quant::detail {

void require_finite(const float* w, int64_t rows, int64_t cols, const char* where) {
  for (int64_t i = 0; i < rows * cols; ++i)
    if (!std::isfinite(w[i])) fail(where, "weight at row {} column {} is not finite", i / cols, i % cols);
}

void require_finite_parallel(const float* w, int64_t rows, int64_t cols, const char* where) {
  int64_t bad = -1;
#pragma omp parallel for schedule(static) reduction(max : bad)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      if (!std::isfinite(w[r * cols + c])) {
        bad = std::max(bad, r);
        break;
      }
  if (bad >= 0) require_finite(w, rows, cols, where);  // names the first bad weight
}

void check_sign_padding(const uint64_t* signs, int64_t rows, int64_t words, int64_t cols, const std::string& where) {
  if (cols % 64 == 0) return;
  const uint64_t pad_mask = ~uint64_t{0} << (cols % 64);
  for (int64_t r = 0; r < rows; ++r)
    if (signs[r * words + words - 1] & pad_mask) fail(where, "row {}: sign padding bits are set", r);
}

OutlierSection parse_sign_outliers(std::span<const std::byte> blob, int64_t rows, int64_t cols, uint64_t counts_off,
                                   uint64_t gaps_off, const uint64_t* signs, int64_t words, const OpenArgs& args,
                                   const OutlierSink* sink) {
  return parse_outliers({.blob = blob,
                         .rows = rows,
                         .cols = cols,
                         .counts_off = counts_off,
                         .gaps_off = gaps_off,
                         .signs = signs,
                         .words = words,
                         .where = args.where,
                         .check_content = args.check_content,
                         .sink = sink,
                         .mr = args.mr});
}

}  // namespace lsb::quant::detail
