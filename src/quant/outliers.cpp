#include "quant/outliers.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/align.h"
#include "base/fp16.h"
#include "base/error.h"

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

namespace {
bool f16_is_finite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }
}  // namespace

OutlierSection parse_outliers(const OutlierParse& p) {
  const auto* base = reinterpret_cast<const uint8_t*>(p.blob.data());
  const uint64_t size = p.blob.size();
  const std::string& where = p.where;
  OutlierSection o{.row_value_start = std::pmr::vector<uint64_t>(p.mr), .row_gap_start = std::pmr::vector<uint64_t>(p.mr)};
  if (p.counts_off + 2 * static_cast<uint64_t>(p.rows) > size || p.gaps_off > size)
    fail(where, "blob is {} bytes, too short for its outlier counts", size);
  o.counts = reinterpret_cast<const uint16_t*>(base + p.counts_off);
  o.row_value_start.assign(static_cast<size_t>(p.rows) + 1, 0);
  o.row_gap_start.assign(static_cast<size_t>(p.rows) + 1, 0);
  for (int64_t r = 0; r < p.rows; ++r) {
    const uint16_t count = o.counts[r];
    if (count > p.cols) fail(where, "row {}: {} outliers in {} columns", r, count, p.cols);
    o.row_value_start[r + 1] = o.row_value_start[r] + count;
  }
  if (p.sink) p.sink->reserve(o.row_value_start[p.rows]);
  std::vector<uint32_t> columns(static_cast<size_t>(std::min<int64_t>(p.cols, 65535)));
  uint64_t pos = p.gaps_off;
  for (int64_t r = 0; r < p.rows; ++r) {
    const uint16_t count = o.counts[r];
    o.row_gap_start[r] = pos - p.gaps_off;
    pos = decode_gap_code(base, pos, size, count, p.cols, columns.data(), where, r);
    if (p.check_content && p.signs) {
      const uint64_t* row_signs = p.signs + r * p.words;
      for (uint32_t i = 0; i < count; ++i) {
        const uint32_t c = columns[i];
        if (!((row_signs[c / 64] >> (c % 64)) & 1u)) fail(where, "row {}: sign bit of outlier column {} is 0", r, c);
      }
    }
    if (p.sink) p.sink->row(r, o.row_value_start[r], columns.data(), count);
  }
  o.row_gap_start[p.rows] = pos - p.gaps_off;
  o.gaps = base + p.gaps_off;
  const uint64_t values_off = align_up(pos, 64);
  const uint64_t nvalues = o.row_value_start[p.rows];
  if (values_off > size || (size - values_off) / 2 != nvalues || (size - values_off) % 2 != 0)
    fail(where, "blob is {} bytes; {} outlier values after the gap stream need {}", size, nvalues,
         values_off + 2 * nvalues);
  for (uint64_t i = pos; i < values_off; ++i)
    if (base[i] != 0) fail(where, "non-zero padding byte after the gap stream at offset {}", i);
  o.values = reinterpret_cast<const uint16_t*>(base + values_off);
  for (uint64_t i = 0; p.check_content && i < nvalues; ++i)
    if (!f16_is_finite(o.values[i])) fail(where, "outlier value {} is not finite", i);
  return o;
}

void OutlierSection::apply_row(int64_t r, float* out) const {
  // The stream was validated by parse_outliers: decode without checks.
  const uint8_t* gp = gaps + row_gap_start[r];
  const uint16_t* val = values + row_value_start[r];
  const uint64_t count = row_value_start[r + 1] - row_value_start[r];
  int64_t col = -1;
  for (uint64_t i = 0; i < count; ++i) {
    col = next_outlier_column(gp, col);
    out[col] = f16_to_f32(val[i]);
  }
}

void write_outliers(std::vector<std::byte>& blob, uint64_t counts_off, uint64_t gaps_off, const float* w, int64_t cols,
                    const std::vector<std::vector<uint32_t>>& columns) {
  const auto rows = static_cast<int64_t>(columns.size());
  // Per-row code lengths, one prefix sum, then every row's bytes in parallel at its place.
  std::vector<uint64_t> gap_start(static_cast<size_t>(rows) + 1, 0), value_start(gap_start.size(), 0);
  for (int64_t r = 0; r < rows; ++r) {
    gap_start[r + 1] = gap_start[r] + gap_code_bytes(columns[r]);
    value_start[r + 1] = value_start[r] + columns[r].size();
  }
  const uint64_t values_off = align_up(gaps_off + gap_start[rows], 64);
  blob.resize(values_off + 2 * value_start[rows], std::byte{0});
  auto* base = reinterpret_cast<uint8_t*>(blob.data());
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const auto& cs = columns[r];
    write_gap_code(cs, base + gaps_off + gap_start[r]);
    const auto count = static_cast<uint16_t>(cs.size());
    std::memcpy(base + counts_off + 2 * r, &count, 2);
    for (size_t i = 0; i < cs.size(); ++i) {
      const uint16_t h = f16_nearest(w[r * cols + cs[i]]);
      std::memcpy(base + values_off + 2 * (value_start[r] + i), &h, 2);
    }
  }
}

}  // namespace lsb::quant
