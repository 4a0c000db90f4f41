// The specification every multiplication kernel is tested against: y = W x with W reconstructed
// row by row exactly as its scheme defines it (BlobView::dequantize_row), products accumulated
// in double. Slow on purpose: plain loops, one row at a time, any scheme of the table.
#pragma once
#include <cstdint>

#include "quant/scheme.h"

namespace lsb::kernels {

// y[t * rows + r] = sum_c W[r, c] * x[t * cols + c] for t < n and every row.
void reference_gemm(const quant::BlobView& w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y);

}  // namespace lsb::kernels
