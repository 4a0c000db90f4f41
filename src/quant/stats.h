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
  // (cols, cols) row-major; empty when only the diagonal is kept. Only the lower triangle
  // (row >= column) is kept up to date, the rest stays 0: the matrix is symmetric, and mirroring
  // a 14336-wide matrix after every batch would cost more than the update. Float: that matrix is
  // 0.8 GB as float, and GPTQ is computed in float anyway.
  std::vector<float> gram;
  float gram_at(int64_t i, int64_t j) const { return i >= j ? gram[i * cols + j] : gram[j * cols + i]; }

  InputStats() = default;
  InputStats(int64_t cols, bool full);
  bool full() const { return !gram.empty(); }
  // Adds n inputs, x: (n, cols) row-major. The diagonal is summed in double, the Gram matrix in
  // float (a rank-n update); neither depends on the number of threads.
  void add(const float* x, int64_t n);
  // Adds another accumulation of the same shape (e.g. another calibration pass).
  void merge(const InputStats& other);
};

}  // namespace lsb::quant
