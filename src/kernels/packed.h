// SIMD kernels (Highway, run-time dispatch) on packed weights with float activations: sign
// matrices (LSB1, PAPER) and Q8. They see views over memory, never file metadata. The math is in
// docs/KERNELS.md; the specification they are tested against is reference_gemm
// (kernels/reference.h), which reconstructs every weight the way its scheme defines it.
//
// Sign matrices: every inlier is m_g + s_g * (2 b_j - 1) (b_j the stored bit, m_g = 0 without
// means; PAPER has one group with m = mu, s = sigma). With P_g = sum of x_j over the group's
// columns whose bit is 1 and S_g = sum of x_j over the group,
//   y_r = sum_g [ 2 s_g P_g + (m_g - s_g) S_g ] + sum_outliers (v - (m_g + s_g)) x_c
// because an outlier's bit is 1 (it was counted as m_g + s_g). The kernels compute P_g with one
// masked add per vector of columns; S_g is computed once per token and shared by all rows.
#pragma once
#include <cstddef>
#include <cstdint>

#include "quant/q8.h"

namespace lsb::kernels {

// What the sign kernels see of an LSB1 / PAPER tensor.
struct SignMatrixView {
  int64_t rows = 0, cols = 0;
  int64_t words = 0;    // u64 sign words per row
  int64_t group = 0;    // columns per group (the last group may be shorter)
  int64_t ngroups = 0;  // groups per row
  const uint64_t* signs = nullptr;
  // Per-row, per-group coefficients in float (converted once when the Linear is built):
  // fscale[r * ngroups + g] = s_g and fzero[...] = m_g - s_g, the coefficient of S_g in y;
  // fzero == nullptr means m_g = 0 (the coefficient is -s_g).
  const float* fscale = nullptr;
  const float* fzero = nullptr;
  // Outliers of row r are entries [out_start[r], out_start[r + 1]) of out_col16 (cols <= 65536)
  // or out_col32 (wider matrices), and out_corr (v - (m_g + s_g), in float). The three arrays
  // have kOutlierPad zero entries past the last outlier so that vector loads of a row's last
  // entries never leave them (lanes past the row are masked off).
  const uint64_t* out_start = nullptr;
  const uint16_t* out_col16 = nullptr;
  const uint32_t* out_col32 = nullptr;
  const float* out_corr = nullptr;
};

inline constexpr int64_t kOutlierPad = 64;

// Per-token group sums of x: gsum[t * ngroups + g] = sum of x[t * cols + c] over group g.
void group_sums(const float* x, int64_t n, int64_t cols, int64_t group, int64_t ngroups, float* gsum);

// y[t * ldy + r] = dot(x[t * cols : +cols], W[r, :]) for t < n, r0 <= r < r1. `gsum` comes from
// group_sums(). n == 1 uses the gemv path; n > 1 register-tiles 4 rows x 4 tokens so that each
// decoded sign mask serves four tokens.
void sign_gemm(const SignMatrixView& w, const float* x, int64_t n, const float* gsum, int64_t r0, int64_t r1, float* y,
               int64_t ldy);

// The same product for a Q8 matrix, used in place.
void q8_gemm(const quant::Q8View& w, const float* x, int64_t n, int64_t r0, int64_t r1, float* y, int64_t ldy);

// Codes whose weights are a scale times a table entry (NU, VQ4). The tables and scales are in
// float (converted once when the Linear is built); the indices are used in place.
struct NuMatrixView {
  int64_t rows = 0, cols = 0, words = 0, group = 0, ngroups = 0;
  int bits = 0;
  const float* levels = nullptr;     // [1 << bits]
  const float* scales = nullptr;     // [rows * ngroups]
  const uint64_t* planes = nullptr;  // [rows * bits * words], see quant/nu.h
};
struct Vq4MatrixView {
  int64_t rows = 0, cols = 0, group = 0, ngroups = 0, row_words = 0;
  int bits = 0;
  const float* codebook = nullptr;  // [(1 << bits) * 4]
  const float* scales = nullptr;    // [rows * ngroups]
  const uint64_t* codes = nullptr;  // [rows * row_words], see quant/vq4.h
};
void nu_gemm(const NuMatrixView& w, const float* x, int64_t n, int64_t r0, int64_t r1, float* y, int64_t ldy);
void vq4_gemm(const Vq4MatrixView& w, const float* x, int64_t n, int64_t r0, int64_t r1, float* y, int64_t ldy);

// SIMD target the packed kernels dispatch to now (follows hwy::SetSupportedTargetsForTest).
const char* packed_target_name();
bool packed_target_is_avx512();  // AVX3 or a wider x86 target

}  // namespace lsb::kernels
