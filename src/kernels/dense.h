// Kernels for dense (f32 / f16 / bf16) row-major weight matrices with float activations.
// Compiled for several SIMD targets by Highway; the best one is picked at run time.
#pragma once
#include <cstdint>

#include "base/dtype.h"

namespace lsb::kernels {

// y[r - r0] = dot(W[r, :], x) for r in [r0, r1). W: (rows, cols) of dtype t.
void gemv_dense(DType t, const void* w, int64_t cols, int64_t r0, int64_t r1, const float* x, float* y);

// Batched product with strides ("NT": both operands row-major along k):
// y[t * ldy + r] = dot(x[t * ldx .. + k], W[r * ldw .. + k]) for t < n and r0 <= r < r1.
void gemm_nt(DType t, const float* x, int64_t ldx, int64_t n, const void* w, int64_t ldw, int64_t r0, int64_t r1,
             int64_t k, float* y, int64_t ldy);

// out[(r - r0) * cols + c] = float(W[r, c]) for r in [r0, r1).
void rows_to_f32(DType t, const void* w, int64_t cols, int64_t r0, int64_t r1, float* out);

// row[j] = exp(row[j] * scale - m) / sum for j < len, m the largest row[j] * scale (Highway's
// vector exp, within a few ulp of std::exp).
void softmax_scaled(float* row, int64_t len, float scale);

// g[i] = g[i] / (1 + exp(-g[i])) * u[i] for i < len (SwiGLU: silu(gate) * up; Highway's exp).
void silu_mul(float* g, const float* u, int64_t len);

// out[i] = sum_j p[j] * rows[j * ld + i] for i < len, j < n (attention's S · V for one token).
void weighted_row_sum(const float* rows, int64_t ld, int64_t n, const float* p, int64_t len, float* out);

// Name of the SIMD target the dispatcher chose (e.g. "AVX3", "AVX2", "NEON", "EMU128").
const char* simd_target_name();

}  // namespace lsb::kernels
