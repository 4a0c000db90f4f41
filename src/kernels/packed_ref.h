// Scalar reference kernels on packed LSB1 / PAPER / Q8 blobs: the specification the SIMD
// kernels (packed_simd.cpp) are tested against. They read the blob exactly as stored (sign
// bits, f16 scales/means, gap-coded outliers) and reconstruct each weight as
// quant::dequantize_reference does, one weight at a time, never a whole row or matrix.
#pragma once
#include <cstdint>

#include "quant/scheme.h"

namespace lsb::kernels {

// y[t * rows + r] = sum_c W[r, c] * x[t * cols + c] for t < n, all rows; accumulated in double.
void packed_gemm_ref(const quant::PackedView& v, const float* x, int64_t n, float* y);
inline void packed_gemv_ref(const quant::PackedView& v, const float* x, float* y) { packed_gemm_ref(v, x, 1, y); }

}  // namespace lsb::kernels
