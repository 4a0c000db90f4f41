// NU: a learned non-uniform scalar code. Each tensor has L = 2^bits levels c_0 < ... < c_{L-1}
// (learned from the tensor itself), each (row, group) an f16 scale s; weight = s * c_index.
// Parameters: {"bits": 2..4, "group": G (a multiple of 16)}.
// Blob (sections at multiples of 64 from the blob start):
//   levels  f32[L]                      ascending, finite
//   scales  f16[rows * ngroups]         finite, >= 0
//   planes  u64[rows * bits * words]    words = ceil(cols/64); row r's bit plane b is at
//                                       (r * bits + b) * words; bit j of word w <-> column
//                                       64*w + j; the column's index = sum_b plane_b(col) << b;
//                                       padding bits 0
// Rules (docs/QUANT.md): levels by importance-weighted Lloyd iterations on the weights divided by
// their group's RMS; scales by a grid search and least-squares refits per group; indices by
// GPTQ when the matrix's input statistics are given (quant/gptq.h), else by plain rounding with
// the diagonal importances.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "quant/scheme.h"

namespace lsb::quant {

struct NuParams {
  int bits = 3;
  int group_size = 128;
  static NuParams from(const SchemeOptions& o, const std::string& where);
  static NuParams parse(std::string_view text, const std::string& where);
  std::string text() const;
  int levels() const { return 1 << bits; }
};

struct NuLayout {
  int64_t words = 0, group = 0, ngroups = 0;
  uint64_t levels = 0, scales = 0, planes = 0, size = 0;
  NuLayout(int64_t rows, int64_t cols, const NuParams& p, const std::string& where);
};

class NuView final : public BlobView {
 public:
  static NuView parse(std::span<const std::byte> blob, int64_t rows, int64_t cols, std::string_view params,
                      const OpenArgs& args);
  void dequantize_row(int64_t r, float* out) const override;
  RowSpans row_spans(int64_t r) const override;
  int index(int64_t r, int64_t c) const;

  int64_t rows = 0, cols = 0, words = 0, group = 0, ngroups = 0;
  int bits = 0;
  const float* levels = nullptr;     // [1 << bits]
  const uint16_t* scales = nullptr;  // f16 [rows * ngroups]
  const uint64_t* planes = nullptr;  // [rows * bits * words]
};

// The levels NU learns for a matrix (exposed for tests): L values, ascending.
std::vector<float> nu_learn_levels(const float* w, int64_t rows, int64_t cols, int levels, int64_t group,
                                   const float* col_imp);

}  // namespace lsb::quant
