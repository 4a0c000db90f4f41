// Hessian-aware rounding (GPTQ, Frantar et al. 2022, in the LDLQ form) for any scheme whose
// code is "per (row, group) parameters + an index per weight or per vector of weights".
//
// With X the inputs a matrix W sees (calibration) and H = XᵀX, the expected output error of a
// rounded W' is tr((W - W') H (W - W')ᵀ). GPTQ rounds the columns in order and, after each
// column, spreads its rounding error over the columns not yet rounded through the upper Cholesky
// factor U of (H + λ·mean(diag H)·I)⁻¹: w[j] -= e / U[i][i] * U[i][j]. Rows are independent, so
// they run in parallel and the result does not depend on the number of threads. Without a full H
// (no statistics, or only their diagonal), it is plain rounding with the group fits weighted by
// the diagonal (llama.cpp's importance matrix) — "RTN".
#pragma once
#include <cstdint>
#include <vector>

#include "quant/stats.h"

namespace lsb::quant {

// The parameters of one (row, group): reconstruction levels are derived from them by the code.
struct GroupFit {
  uint16_t scale = 0;  // f16 bits of the group scale
};

// What a scheme's code does for GPTQ.
class GroupCoder {
 public:
  virtual ~GroupCoder() = default;
  virtual int64_t group() const = 0;     // columns per group (a multiple of vec_dim())
  virtual int vec_dim() const { return 1; }
  // Group parameters for the (current, error-updated) weights w[0, n) with importances imp.
  virtual GroupFit fit(const float* w, const float* imp, int64_t n) const = 0;
  // Rounds vec_dim() weights: the index of their code and its reconstruction q[0, vec_dim()).
  virtual uint32_t round(const GroupFit& g, const float* w, const float* imp, float* q) const = 0;
};

struct GptqOptions {
  double damp = 0.01;  // λ, relative to the mean of diag H
  int block = 128;     // columns per lazy update (rounded up to a multiple of the group)
  bool measure = true; // compute GptqResult::rel_error (as much work again as the rounding)
};

struct GptqResult {
  std::vector<uint32_t> index;  // rows x (cols / vec_dim), row-major
  std::vector<GroupFit> fits;   // rows x ngroups
  // tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) with the undamped H; with diagonal statistics only, the same with
  // diag H; without statistics, the relative squared Frobenius error.
  double rel_error = 0;  // 0 when not measured
};

// The fast version: blocked lazy updates (a GEMM per block), rows in parallel.
GptqResult gptq(const float* w, int64_t rows, int64_t cols, const InputStats* stats, const GroupCoder& coder,
                const GptqOptions& opt = {});
// The specification: plain loops in double, every update applied at once. Equal to gptq() up to
// float rounding (their errors agree closely, tested); its bytes may differ.
GptqResult gptq_reference(const float* w, int64_t rows, int64_t cols, const InputStats* stats, const GroupCoder& coder,
                          const GptqOptions& opt = {});

// tr(D H Dᵀ) and tr(W H Wᵀ), D = W - Q, for any reconstruction Q of W (rows in parallel); with
// diagonal statistics, the same with diag H; without statistics, |D|² and |W|². Sums over blocks
// of rows add up.
struct ErrorTerms {
  double num = 0, den = 0;
  double ratio() const { return den > 0 ? num / den : 0.0; }
  void add(const ErrorTerms& o) {
    num += o.num;
    den += o.den;
  }
};
ErrorTerms output_error(const float* w, const float* q, int64_t rows, int64_t cols, const InputStats* stats);

// Importance of each column: diag H when statistics are given, else 1.
std::vector<float> column_importance(const InputStats* stats, int64_t cols);

}  // namespace lsb::quant
