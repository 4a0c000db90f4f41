// PackedView: validated, zero-copy view of a quantized blob, and single-row dequantization
// (used by the fast dequantizer and by embedding lookups).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "io/fp16.h"
#include "lsb/error.h"
#include "quant/outlier_coding.h"
#include "quant/scheme.h"

namespace lsb::quant {
namespace {

bool f16_is_finite(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }

}  // namespace

PackedView PackedView::parse(DType t, std::span<const std::byte> blob, int64_t rows, int64_t cols,
                             const SchemeParams& p, const std::string& where, const OutlierSink* sink,
                             std::pmr::memory_resource* mr, bool check_content) {
  const BlobLayout L = blob_layout(t, rows, cols, p, where);
  PackedView v{.row_value_start = std::pmr::vector<uint64_t>(mr), .row_gap_start = std::pmr::vector<uint64_t>(mr)};
  v.dtype = t;
  v.rows = rows;
  v.cols = cols;
  v.params = p;
  v.words = L.words;
  v.ngroups = L.ngroups;
  const auto* base = reinterpret_cast<const uint8_t*>(blob.data());
  const uint64_t size = blob.size();
  if (dtype_is_dense(t)) {
    if (size != L.gaps) fail(where, "{} blob is {} bytes, expected {}", traits(t).name, size, L.gaps);
    return v;
  }
  // Section pointers are dereferenced as u64/f32/u16: demand the alignment the writer promises.
  if (reinterpret_cast<uintptr_t>(base) % 8 != 0) fail(where, "{} blob is not 8-byte aligned", traits(t).name);
  if (t == DType::Q8) {
    if (size != L.gaps) fail(where, "q8 blob is {} bytes, expected {}", size, L.gaps);
    v.q8_scales = reinterpret_cast<const float*>(base);
    v.q8 = reinterpret_cast<const int8_t*>(base + L.q8);
    for (int64_t r = 0; r < rows; ++r)
      if (!std::isfinite(v.q8_scales[r]) || v.q8_scales[r] < 0)
        fail(where, "q8 row {} has invalid scale {}", r, v.q8_scales[r]);
    return v;
  }

  // LSB1 / PAPER: fixed sections first.
  if (size < L.gaps) fail(where, "{} blob is {} bytes, its fixed sections need {}", traits(t).name, size, L.gaps);
  v.signs = reinterpret_cast<const uint64_t*>(base + L.signs);
  v.counts = reinterpret_cast<const uint16_t*>(base + L.counts);
  if (t == DType::PAPER) {
    uint32_t pad;
    std::memcpy(&v.mu, base + 0, 4);
    std::memcpy(&v.sigma, base + 4, 4);
    std::memcpy(&v.tau, base + 8, 4);
    std::memcpy(&pad, base + 12, 4);
    if (!std::isfinite(v.mu) || !std::isfinite(v.sigma) || !std::isfinite(v.tau) || v.sigma < 0 || v.tau < 0 || pad != 0)
      fail(where, "paper header invalid (mu {}, sigma {}, tau {}, pad {})", v.mu, v.sigma, v.tau, pad);
  } else {
    v.scales = reinterpret_cast<const uint16_t*>(base + L.scales);
    if (p.use_mean) v.means = reinterpret_cast<const uint16_t*>(base + L.means);
    const int64_t nscales = check_content ? rows * L.ngroups : 0;
    for (int64_t i = 0; i < nscales; ++i) {
      if (!f16_is_finite(v.scales[i]) || (v.scales[i] & 0x8000u && v.scales[i] != 0x8000u))
        fail(where, "lsb1 scale {} (row {}) is negative or not finite", i, i / L.ngroups);
      if (v.means && !f16_is_finite(v.means[i])) fail(where, "lsb1 mean {} (row {}) is not finite", i, i / L.ngroups);
    }
  }
  // Sign padding bits past the last column must be 0 (kernels may sum whole words).
  if (cols % 64 != 0) {
    const uint64_t pad_mask = ~uint64_t{0} << (cols % 64);
    for (int64_t r = 0; r < rows; ++r)
      if (v.signs[r * L.words + L.words - 1] & pad_mask) fail(where, "row {}: sign padding bits are set", r);
  }

  // Gap stream: per row, counts[r] columns, each < cols, strictly increasing (by construction
  // of the code); every outlier's sign bit must be 1, as the kernels assume.
  v.row_value_start.assign(static_cast<size_t>(rows) + 1, 0);
  v.row_gap_start.assign(static_cast<size_t>(rows) + 1, 0);
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t count = v.counts[r];
    if (count > cols) fail(where, "row {}: {} outliers in {} columns", r, count, cols);
    v.row_value_start[r + 1] = v.row_value_start[r] + count;
  }
  if (sink) sink->reserve(v.row_value_start[rows]);
  std::vector<uint32_t> columns(static_cast<size_t>(std::min<int64_t>(cols, 65535)));
  uint64_t pos = L.gaps;
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t count = v.counts[r];
    v.row_gap_start[r] = pos - L.gaps;
    pos = decode_gap_code(base, pos, size, count, cols, columns.data(), where, r);
    const uint64_t* row_signs = v.signs + r * L.words;
    for (uint32_t i = 0; check_content && i < count; ++i) {
      const uint32_t c = columns[i];
      if (!((row_signs[c / 64] >> (c % 64)) & 1u)) fail(where, "row {}: sign bit of outlier column {} is 0", r, c);
    }
    if (sink) sink->row(r, v.row_value_start[r], columns.data(), count);
  }
  v.row_gap_start[rows] = pos - L.gaps;
  v.gaps = base + L.gaps;
  const uint64_t values_off = align_section(pos);
  const uint64_t nvalues = v.row_value_start[rows];
  if (values_off > size || (size - values_off) / 2 != nvalues || (size - values_off) % 2 != 0)
    fail(where, "{} blob is {} bytes; {} outlier values after the gap stream need {}", traits(t).name, size,
         nvalues, values_off + 2 * nvalues);
  for (uint64_t i = pos; i < values_off; ++i)
    if (base[i] != 0) fail(where, "non-zero padding byte after the gap stream at offset {}", i);
  v.values = reinterpret_cast<const uint16_t*>(base + values_off);
  for (uint64_t i = 0; check_content && i < nvalues; ++i)
    if (!f16_is_finite(v.values[i])) fail(where, "outlier value {} is not finite", i);
  return v;
}

void PackedView::dequantize_row(int64_t r, float* out) const {
  // Dense types have no section pointers in the view: dequantize() handles them directly.
  if (dtype_is_dense(dtype)) fail("PackedView", "dequantize_row on dense dtype {}", dtype_name(dtype));
  if (r < 0 || r >= rows) fail("PackedView", "row {} out of range [0, {})", r, rows);
  if (dtype == DType::Q8) {
    const float scale = q8_scales[r];
    const int8_t* q = q8 + r * cols;
    for (int64_t c = 0; c < cols; ++c) out[c] = static_cast<float>(q[c]) * scale;
    return;
  }
  const uint64_t* sw = signs + r * words;
  auto expand = [&](int64_t c0, int64_t c1, float hi, float lo) {
    for (int64_t c = c0; c < c1; ++c) out[c] = ((sw[c >> 6] >> (c & 63)) & 1u) ? hi : lo;
  };
  if (dtype == DType::PAPER) {
    expand(0, cols, mu + sigma, mu - sigma);
  } else {
    const int64_t group = params.group_size == 0 ? cols : std::min<int64_t>(params.group_size, cols);
    for (int64_t g = 0; g < ngroups; ++g) {
      const float s = f16_to_f32(scales[r * ngroups + g]);
      const float m = means ? f16_to_f32(means[r * ngroups + g]) : 0.0f;
      expand(g * group, std::min(cols, (g + 1) * group), m + s, m - s);
    }
  }
  // Outliers: the stream was validated by parse, so decode without checks.
  const uint8_t* gp = gaps + row_gap_start[r];
  const uint16_t* val = values + row_value_start[r];
  const uint64_t count = row_value_start[r + 1] - row_value_start[r];
  int64_t col = -1;
  for (uint64_t i = 0; i < count; ++i) {
    col = next_outlier_column(gp, col);
    out[col] = f16_to_f32(val[i]);
  }
}

}  // namespace lsb::quant
