#include "quant/q8.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/checked.h"
#include "base/error.h"
#include "detail/checks.h"

namespace lsb::quant {
namespace {

std::string make_params(const SchemeOptions&, const std::string&) { return ""; }

uint64_t fixed_bytes(int64_t rows, int64_t cols, std::string_view, const std::string& where) {
  return Q8Layout(rows, cols, where).size;
}

// One row: scale = max|w| / 127, q = round-half-away(w / scale) clamped.
void quantize_row(const float* row, int64_t cols, float* scale, int8_t* q) {
  float amax = 0;
  for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(row[c]));
  *scale = amax / 127.0f;
  for (int64_t c = 0; c < cols; ++c) {
    const float v = *scale > 0 ? std::round(row[c] / *scale) : 0.0f;
    q[c] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
  }
}

std::vector<std::byte> quantize_ref(const QuantizeArgs& a) {
  const char* where = "quantize_reference";
  const Q8Layout L(a.rows, a.cols, where);
  detail::require_finite(a.w, a.rows, a.cols, where);
  std::vector<std::byte> blob(L.size);
  std::vector<int8_t> q(static_cast<size_t>(a.cols));
  for (int64_t r = 0; r < a.rows; ++r) {
    float scale;
    quantize_row(a.w + r * a.cols, a.cols, &scale, q.data());
    std::memcpy(blob.data() + 4 * r, &scale, 4);
    std::memcpy(blob.data() + L.q + r * a.cols, q.data(), static_cast<size_t>(a.cols));
  }
  return blob;
}

std::vector<std::byte> quantize(const QuantizeArgs& a) {
  const char* where = "quantize";
  const Q8Layout L(a.rows, a.cols, where);
  detail::require_finite_parallel(a.w, a.rows, a.cols, where);
  std::vector<std::byte> blob(L.size);
  auto* scales = reinterpret_cast<float*>(blob.data());
  auto* q = reinterpret_cast<int8_t*>(blob.data() + L.q);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < a.rows; ++r) quantize_row(a.w + r * a.cols, a.cols, scales + r, q + r * a.cols);
  return blob;
}

std::unique_ptr<BlobView> open(std::span<const std::byte> blob, int64_t rows, int64_t cols, std::string_view,
                               const OpenArgs& args) {
  return std::make_unique<Q8View>(Q8View::parse(blob, rows, cols, args));
}

}  // namespace

Q8Layout::Q8Layout(int64_t rows, int64_t cols, const std::string& where) {
  if (rows < 1 || cols < 1) fail(where, "q8 needs a non-empty matrix, got {} x {}", rows, cols);
  const auto r = static_cast<uint64_t>(rows), c = static_cast<uint64_t>(cols);
  q = align_section(checked_mul(r, 4, where));
  size = checked_add(q, checked_mul(r, c, where), where);
}

Q8View Q8View::parse(std::span<const std::byte> blob, int64_t rows, int64_t cols, const OpenArgs& args) {
  const Q8Layout L(rows, cols, args.where);
  if (blob.size() != L.size) fail(args.where, "q8 blob is {} bytes, expected {}", blob.size(), L.size);
  if (reinterpret_cast<uintptr_t>(blob.data()) % 8 != 0) fail(args.where, "q8 blob is not 8-byte aligned");
  Q8View v;
  v.rows = rows;
  v.cols = cols;
  v.scales = reinterpret_cast<const float*>(blob.data());
  v.q = reinterpret_cast<const int8_t*>(blob.data() + L.q);
  for (int64_t r = 0; r < rows; ++r)
    if (!std::isfinite(v.scales[r]) || v.scales[r] < 0) fail(args.where, "q8 row {} has invalid scale {}", r, v.scales[r]);
  return v;
}

void Q8View::dequantize_row(int64_t r, float* out) const {
  const float scale = scales[r];
  const int8_t* row = q + r * cols;
  for (int64_t c = 0; c < cols; ++c) out[c] = static_cast<float>(row[c]) * scale;
}

RowSpans Q8View::row_spans(int64_t r) const {
  RowSpans s;
  s.add(scales + r, 4);
  s.add(q + r * cols, static_cast<uint64_t>(cols));
  return s;
}

extern const SchemeOps kQ8Ops{DType::Q8, "q8", "int8 with one f32 scale per row (max|w| / 127)", false,
                              make_params, fixed_bytes, quantize_ref, quantize, open};

}  // namespace lsb::quant
