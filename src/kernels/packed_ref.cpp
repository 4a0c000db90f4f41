#include "kernels/packed_ref.h"

#include "quant/outlier_coding.h"

#include <algorithm>
#include <vector>

#include "io/fp16.h"
#include "lsb/error.h"

namespace lsb::kernels {
namespace {

// Outlier columns of row r, decoded from the gap stream (see scheme.h).
void row_outlier_columns(const quant::PackedView& v, int64_t r, std::vector<int64_t>& cols) {
  const uint64_t count = v.row_value_start[r + 1] - v.row_value_start[r];
  const uint8_t* gp = v.gaps + v.row_gap_start[r];
  cols.clear();
  int64_t col = -1;
  for (uint64_t i = 0; i < count; ++i) {
    col = quant::next_outlier_column(gp, col);
    cols.push_back(col);
  }
}

}  // namespace

void packed_gemm_ref(const quant::PackedView& v, const float* x, int64_t n, float* y) {
  const int64_t R = v.rows, C = v.cols;
  if (v.dtype == DType::Q8) {
    for (int64_t t = 0; t < n; ++t)
      for (int64_t r = 0; r < R; ++r) {
        double acc = 0;
        const float scale = v.q8_scales[r];
        for (int64_t c = 0; c < C; ++c)
          acc += static_cast<double>(static_cast<float>(v.q8[r * C + c]) * scale) * x[t * C + c];
        y[t * R + r] = static_cast<float>(acc);
      }
    return;
  }
  if (v.dtype != DType::LSB1 && v.dtype != DType::PAPER)
    fail("packed_gemm_ref", "dtype {} is not packed", dtype_name(v.dtype));
  const int64_t group = v.dtype == DType::PAPER ? C : (v.params.group_size == 0 ? C : std::min<int64_t>(v.params.group_size, C));
  std::vector<int64_t> ocols;
  for (int64_t r = 0; r < R; ++r) {
    row_outlier_columns(v, r, ocols);
    const uint16_t* vals = v.values + v.row_value_start[r];
    const uint64_t* sw = v.signs + r * v.words;
    for (int64_t t = 0; t < n; ++t) {
      double acc = 0;
      size_t k = 0;  // next outlier
      for (int64_t c = 0; c < C; ++c) {
        float w;
        if (k < ocols.size() && ocols[k] == c) {
          w = f16_to_f32(vals[k++]);
        } else {
          float s, m;
          if (v.dtype == DType::PAPER) {
            s = v.sigma;
            m = v.mu;
          } else {
            const int64_t g = c / group;
            s = f16_to_f32(v.scales[r * v.ngroups + g]);
            m = v.means ? f16_to_f32(v.means[r * v.ngroups + g]) : 0.0f;
          }
          w = ((sw[c >> 6] >> (c & 63)) & 1u) ? m + s : m - s;
        }
        acc += static_cast<double>(w) * x[t * C + c];
      }
      y[t * R + r] = static_cast<float>(acc);
    }
  }
}

}  // namespace lsb::kernels
