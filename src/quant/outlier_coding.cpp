// Outlier selection, gap code and fp16 rounding shared by the LSB1 and PAPER quantizers.
#include "quant/outlier_coding.h"

#include <algorithm>
#include <cmath>

#include "io/fp16.h"
#include "lsb/error.h"

namespace lsb::quant {

void select_top_k(const float* row, int64_t cols, int64_t k, std::vector<uint32_t>& scratch,
                  std::vector<uint32_t>& out) {
  out.clear();
  if (k <= 0) return;
  if (k >= cols) {
    out.resize(static_cast<size_t>(cols));
    for (int64_t c = 0; c < cols; ++c) out[c] = static_cast<uint32_t>(c);
    return;
  }
  scratch.resize(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c) scratch[c] = static_cast<uint32_t>(c);
  auto before = [row](uint32_t a, uint32_t b) {
    const float fa = std::fabs(row[a]), fb = std::fabs(row[b]);
    return fa > fb || (fa == fb && a < b);
  };
  std::nth_element(scratch.begin(), scratch.begin() + (k - 1), scratch.end(), before);
  out.assign(scratch.begin(), scratch.begin() + k);
  std::sort(out.begin(), out.end());
}

uint64_t gap_code_bytes(std::span<const uint32_t> columns) {
  uint64_t bytes = 0;
  int64_t prev = -1;
  for (uint32_t c : columns) {
    const uint64_t g = static_cast<uint64_t>(static_cast<int64_t>(c) - prev - 1);
    bytes += g / 255 + 1;
    prev = c;
  }
  return bytes;
}

uint8_t* write_gap_code(std::span<const uint32_t> columns, uint8_t* dst) {
  int64_t prev = -1;
  for (uint32_t c : columns) {
    uint64_t g = static_cast<uint64_t>(static_cast<int64_t>(c) - prev - 1);
    for (; g >= 255; g -= 255) *dst++ = 255;
    *dst++ = static_cast<uint8_t>(g);
    prev = c;
  }
  return dst;
}

void append_gap_code(std::span<const uint32_t> columns, std::vector<uint8_t>& out) {
  const size_t at = out.size();
  out.resize(at + gap_code_bytes(columns));
  write_gap_code(columns, out.data() + at);
}

uint64_t decode_gap_code(const uint8_t* gaps, uint64_t pos, uint64_t end, uint32_t count,
                         int64_t cols, uint32_t* out, const std::string& where, int64_t row) {
  // Columns strictly increase, so the row's last column is its largest: one check after the row
  // covers them all (col is 64-bit and bounded by the bytes read, so it cannot wrap). Columns are
  // written before that check, so callers must not use `out` when this throws.
  int64_t col = -1;
  for (uint32_t i = 0; i < count; ++i) {
    ++col;
    uint8_t b;
    do {
      if (pos >= end) fail(where, "row {}: gap stream ends inside outlier {} of {}", row, i, count);
      b = gaps[pos++];
      col += b;
    } while (b == 255);
    if (out) out[i] = static_cast<uint32_t>(col);
  }
  if (col >= cols) fail(where, "row {}: outlier columns reach {} >= {} columns (corrupt gap stream)", row, col, cols);
  return pos;
}

uint16_t f16_nearest(double x) {
  if (std::isnan(x)) return 0x7e00;
  if (x >= 65504.0) return 0x7bff;
  if (x <= -65504.0) return 0xfbff;
  // The float rounding of x is within one fp16 step of the answer; pick the nearest of it and
  // its two neighbours, judged on the exact double distance.
  const uint16_t h = f32_to_f16(static_cast<float>(x));
  const uint16_t sign = h & 0x8000u, mag = h & 0x7fffu;
  uint16_t best = h;
  double best_d = std::fabs(static_cast<double>(f16_to_f32(h)) - x);
  for (int delta : {-1, 1}) {
    const int m = static_cast<int>(mag) + delta;
    if (m < 0 || m > 0x7bff) continue;
    const uint16_t c = static_cast<uint16_t>(sign | m);
    const double d = std::fabs(static_cast<double>(f16_to_f32(c)) - x);
    if (d < best_d || (d == best_d && (c & 1u) == 0 && (best & 1u) != 0)) {
      best = c;
      best_d = d;
    }
  }
  return best;
}

}  // namespace lsb::quant
