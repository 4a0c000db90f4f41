// Statistics of the inputs a linear layer sees, accumulated over calibration tokens: what
// quantizers that weight their rounding errors need. diag[j] = Σ x_j² over the tokens (llama.cpp's
// importance matrix, up to the token count) and, when kept, the Gram matrix Σ x xᵀ (cols x cols)
// that Hessian-aware rounding (GPTQ) needs: the expected output error of a weight change D is
// tr(D · Gram · Dᵀ) / tokens.
#pragma once
#include <cstdint>
#include <vector>

namespace lsb::quant {

struct InputStats {
  int64_t cols = 0;
  uint64_t tokens = 0;
  std::vector<double> diag;  // (cols)
  std::vector<double> gram;  // (cols, cols) row-major, symmetric; empty when only the diagonal is kept

  InputStats() = default;
  InputStats(int64_t cols, bool full);
  bool full() const { return !gram.empty(); }
  // Adds n inputs, x: (n, cols) row-major. Sums are exact in double up to float rounding of
  // the per-call products, and independent of the number of threads.
  void add(const float* x, int64_t n);
  // Adds another accumulation of the same shape (e.g. another calibration pass).
  void merge(const InputStats& other);
};

}  // namespace lsb::quant
