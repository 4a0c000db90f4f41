// Linear layers that multiply by quantized weights in their packed form (LSB1, PAPER, Q8):
// no tensor is ever expanded to float. See docs/KERNELS.md for the math and measurements.
//
// LSB1 / PAPER ("sign matrices"): every inlier is m_g + s_g * (2 b_j - 1) (b_j the stored bit,
// m_g = 0 without means; PAPER has one group with m = mu, s = sigma). With
// P_g = sum of x_j over the group's columns whose bit is 1 and S_g = sum of x_j over the group,
//   y_r = sum_g [ s_g (2 P_g - S_g) + m_g S_g ] + sum_outliers (v - (m_g + s_g)) x_c
// because an outlier's bit is 1 (it was counted as m_g + s_g). The kernels compute P_g with one
// masked add per vector of columns; S_g is computed once per token and shared by all rows.
//
// At load, the outlier gap stream is repacked into (column, correction) pairs so that the
// kernels need no sequential decoding, and f16 scales/means become float per-group arrays;
// signs are used in place.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory_resource>
#include <span>
#include <string>
#include <vector>

#include "lsb/tensor_source.h"
#include "model/linear.h"
#include "quant/scheme.h"

namespace lsb::kernels {

// What the SIMD kernels see of an LSB1 / PAPER tensor.
struct SignMatrixView {
  int64_t rows = 0, cols = 0;
  int64_t words = 0;    // u64 sign words per row
  int64_t group = 0;    // columns per group (the last group may be shorter)
  int64_t ngroups = 0;  // groups per row
  const uint64_t* signs = nullptr;
  // Per-row, per-group coefficients converted to float once at load (the f16 scales/means of
  // the blob would otherwise be converted on every call): fscale[r * ngroups + g] = s_g and
  // fzero[...] = m_g - s_g, the coefficient of S_g in y; fzero == nullptr means m_g = 0 (-s_g).
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

struct Q8View {
  int64_t rows = 0, cols = 0;
  const float* scales = nullptr;  // [rows]
  const int8_t* q = nullptr;      // [rows * cols]
};

// How the sign kernels accumulate P_g (compared in docs/KERNELS.md; kMaskedAdd is the default).
enum class SignKernel {
  kMaskedAdd,   // acc += bit ? x : 0; y uses 2 P - S
  kSignSelect,  // acc += bit ? x : -x
  kLut,         // per token, a table of the 16 sums of each 4 activations; P = sum of table[nibble]
};

// Per-token group sums of x: gsum[t * ngroups + g] = sum of x[t * cols + c] over group g.
// Each gemm call needs them; compute once per forward() and share across threads.
void group_sums(const float* x, int64_t n, int64_t cols, int64_t group, int64_t ngroups, float* gsum);

// y[t * ldy + r] = dot(x[t * cols : +cols], W[r, :]) for t < n, r0 <= r < r1 (run-time SIMD
// dispatch). `gsum` comes from group_sums(). n == 1 uses the gemv path; n > 1 register-tiles
// 4 rows x 4 tokens so that each decoded sign mask serves four tokens.
void sign_gemm(const SignMatrixView& w, const float* x, int64_t n, const float* gsum, int64_t r0, int64_t r1,
               float* y, int64_t ldy, SignKernel variant = SignKernel::kMaskedAdd);
// Floats of table the kLut variant needs for n tokens (tables are built by the caller with
// build_sign_luts, once per forward(), and shared across threads).
size_t sign_lut_floats(int64_t cols, int64_t n);
void build_sign_luts(const float* x, int64_t n, int64_t cols, float* luts);
void sign_gemm_lut(const SignMatrixView& w, const float* luts, int64_t n, const float* x, const float* gsum,
                   int64_t r0, int64_t r1, float* y, int64_t ldy);

void q8_gemm(const Q8View& w, const float* x, int64_t n, int64_t r0, int64_t r1, float* y, int64_t ldy);

// SIMD target the packed kernels dispatch to now (follows hwy::SetSupportedTargetsForTest).
const char* packed_target_name();

// LSB1 / PAPER tensor as a Linear.
class SignLinear final : public Linear {
 public:
  // Parses and validates the blob (lsb::Error prefixed with `where` on any inconsistency).
  // `blob` must outlive the object and be 8-byte aligned.
  // Arrays it builds (outliers, offsets, float coefficients) come from load.arena.
  SignLinear(const TensorInfo& info, std::span<const std::byte> blob, const std::string& where,
             const LinearLoad& load = {});
  SignLinear(const SignLinear&) = delete;  // the view points into this object's arrays
  SignLinear& operator=(const SignLinear&) = delete;
  void forward(const float* x, int64_t n, float* y) const override;
  void forward_with(const float* x, int64_t n, float* y, SignKernel variant) const;
  void row(int64_t r, float* out) const override;
  uint64_t weight_bytes() const override;  // bytes a full pass reads (signs, scales, outliers)
  std::string kind() const override;
  uint64_t blob_bytes() const { return blob_bytes_; }
  uint64_t repacked_bytes() const;  // memory owned by this object (outlier arrays, offsets, float coefs)
  const SignMatrixView& view() const { return m_; }

 private:
  // Validates the blob; stores outlier columns into col16_/col32_ (sized here) as they decode.
  quant::PackedView parse_blob(const TensorInfo& info, std::span<const std::byte> blob, const std::string& where,
                               const LinearLoad& load);

  uint64_t blob_bytes_ = 0;
  // Declared before pv_: parse_blob (in pv_'s initializer) fills them.
  std::pmr::vector<uint16_t> col16_;
  std::pmr::vector<uint32_t> col32_;
  std::pmr::vector<float> corr_;
  std::pmr::vector<float> fscale_, fzero_;
  quant::PackedView pv_;
  SignMatrixView m_;
};

// Q8 tensor as a Linear (int8 weights used in place).
class Q8Linear final : public Linear {
 public:
  Q8Linear(const TensorInfo& info, std::span<const std::byte> blob, const std::string& where,
           const LinearLoad& load = {});
  void forward(const float* x, int64_t n, float* y) const override;
  void row(int64_t r, float* out) const override;
  uint64_t weight_bytes() const override;
  std::string kind() const override { return std::string(dtype_name(DType::Q8)); }
  const Q8View& view() const { return m_; }

 private:
  quant::PackedView pv_;
  Q8View m_;
};

}  // namespace lsb::kernels
