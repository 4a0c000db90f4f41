#include "kernels/reference.h"

#include <vector>

namespace lsb::kernels {

void reference_gemm(const quant::BlobView& w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y) {
  std::vector<float> row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    w.dequantize_row(r, row.data());
    for (int64_t t = 0; t < n; ++t) {
      double acc = 0;
      for (int64_t c = 0; c < cols; ++c) acc += static_cast<double>(row[c]) * x[t * cols + c];
      y[t * rows + r] = static_cast<float>(acc);
    }
  }
}

}  // namespace lsb::kernels
