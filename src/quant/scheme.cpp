// Traits table of the quantization schemes and the blob section arithmetic shared by the
// quantizers, PackedView and the kernels.
#include "quant/scheme.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "lsb/error.h"

namespace lsb::quant {
namespace {

constexpr std::array<SchemeTraits, 6> kSchemes = {{
    {DType::F32, "f32", false, false, "dense float32 (no loss)"},
    {DType::F16, "f16", false, false, "dense float16, round to nearest even"},
    {DType::BF16, "bf16", false, false, "dense bfloat16, round to nearest even"},
    {DType::Q8, "q8", false, false, "int8 with one f32 scale per row (max|w| / 127)"},
    {DType::LSB1, "lsb1", true, true,
     "sign bit x fp16 scale per group of G + top-alpha fp16 outliers per row"},
    {DType::PAPER, "paper", true, true,
     "seed method: per-tensor quantile outliers, sign bits around mu, scale sigma"},
}};

// a*b (+c) on uint64 with overflow reported as an error naming the caller.
uint64_t mul_checked(uint64_t a, uint64_t b, const std::string& where) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail(where, "blob size overflows ({} x {})", a, b);
  return r;
}
uint64_t add_checked(uint64_t a, uint64_t b, const std::string& where) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) fail(where, "blob size overflows ({} + {})", a, b);
  // align_section adds up to 63 more; keep headroom so it cannot wrap.
  if (r > std::numeric_limits<uint64_t>::max() - kSectionAlign) fail(where, "blob size overflows");
  return r;
}

}  // namespace

std::span<const SchemeTraits> all_schemes() { return kSchemes; }

const SchemeTraits& traits(DType t) {
  for (const auto& s : kSchemes)
    if (s.dtype == t) return s;
  fail("quant", "no scheme for dtype code {}", static_cast<int>(t));
}

const SchemeTraits* find_scheme(std::string_view name) {
  for (const auto& s : kSchemes) {
    if (s.name.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < name.size(); ++i) {
      char c = name[i];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
      if (c != s.name[i]) same = false;
    }
    if (same) return &s;
  }
  return nullptr;
}

int64_t lsb1_outliers_per_row(int64_t cols, float alpha) {
  // round-half-away of the exact double product: alpha is stored as a float, so 0.02f * 25
  // is 0.49999999 -> 0; documented in docs/QUANT.md.
  double k = std::round(static_cast<double>(alpha) * static_cast<double>(cols));
  if (!(k > 0)) return 0;
  if (k >= static_cast<double>(cols)) return cols;
  return static_cast<int64_t>(k);
}

BlobLayout blob_layout(DType t, int64_t rows, int64_t cols, const SchemeParams& p,
                       const std::string& where) {
  if (rows < 0 || cols < 0) fail(where, "negative matrix shape {} x {}", rows, cols);
  BlobLayout L;
  const uint64_t r = static_cast<uint64_t>(rows), c = static_cast<uint64_t>(cols);
  switch (t) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
      L.gaps = mul_checked(mul_checked(r, c, where), t == DType::F32 ? 4 : 2, where);
      return L;
    case DType::Q8:
    case DType::LSB1:
    case DType::PAPER:
      break;
    default:
      fail(where, "unknown dtype code {}", static_cast<int>(t));
  }
  if (rows < 1 || cols < 1) fail(where, "{} needs a non-empty matrix, got {} x {}", traits(t).name, rows, cols);
  if (cols > std::numeric_limits<int32_t>::max())
    fail(where, "{} columns exceed {} (column indices are 32-bit)", cols, std::numeric_limits<int32_t>::max());
  const uint64_t n = mul_checked(r, c, where);
  if (t == DType::Q8) {
    L.q8 = align_section(add_checked(0, mul_checked(r, 4, where), where));
    L.gaps = add_checked(L.q8, n, where);
    return L;
  }
  if (!std::isfinite(p.outlier_ratio) || p.outlier_ratio < 0.0f || p.outlier_ratio > 1.0f)
    fail(where, "outlier ratio {} outside [0, 1]", p.outlier_ratio);
  L.words = (cols + 63) / 64;
  const uint64_t sign_bytes = mul_checked(mul_checked(r, static_cast<uint64_t>(L.words), where), 8, where);
  uint64_t off = 0;
  if (t == DType::PAPER) {
    L.header = 0;
    off = kSectionAlign;  // 16-byte header, padded to the section alignment
  } else {
    if (p.group_size < 0) fail(where, "group size {} is negative", p.group_size);
    L.group = p.group_size == 0 ? cols : std::min<int64_t>(p.group_size, cols);
    L.ngroups = (cols + L.group - 1) / L.group;
  }
  L.signs = off;
  off = align_section(add_checked(off, sign_bytes, where));
  if (t == DType::LSB1) {
    const uint64_t scale_bytes =
        mul_checked(mul_checked(r, static_cast<uint64_t>(L.ngroups), where), 2, where);
    L.scales = off;
    off = align_section(add_checked(off, scale_bytes, where));
    if (p.use_mean) {
      L.means = off;
      off = align_section(add_checked(off, scale_bytes, where));
    }
  }
  L.counts = off;
  off = align_section(add_checked(off, mul_checked(r, 2, where), where));
  L.gaps = off;
  return L;
}

uint64_t fixed_blob_bytes(DType t, int64_t rows, int64_t cols, const SchemeParams& p) {
  return blob_layout(t, rows, cols, p, "fixed_blob_bytes").gaps;
}

}  // namespace lsb::quant
