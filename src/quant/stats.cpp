#include "quant/stats.h"

#include <Eigen/Core>

#include "base/error.h"

namespace lsb::quant {

InputStats::InputStats(int64_t c, bool full) : cols(c), diag(static_cast<size_t>(c), 0.0) {
  if (c <= 0) fail("input statistics", "{} columns", c);
  if (full) gram.assign(static_cast<size_t>(c) * static_cast<size_t>(c), 0.0);
}

void InputStats::add(const float* x, int64_t n) {
  if (n <= 0) return;
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const RowMajor> X(x, n, cols);
  for (int64_t j = 0; j < cols; ++j) {
    double s = 0;
    for (int64_t t = 0; t < n; ++t) s += static_cast<double>(X(t, j)) * X(t, j);
    diag[static_cast<size_t>(j)] += s;
  }
  if (full()) {
    // Xᵀ X in float (a rank update of the lower triangle; Eigen is built without its own
    // threads, so the result does not depend on the thread count), mirrored so the sum stays
    // exactly symmetric, and accumulated in double across calls.
    Eigen::MatrixXf g = Eigen::MatrixXf::Zero(cols, cols);
    g.selfadjointView<Eigen::Lower>().rankUpdate(X.transpose());
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t i = j; i < cols; ++i) {
        const double v = g(i, j);
        gram[static_cast<size_t>(i * cols + j)] += v;
        if (i != j) gram[static_cast<size_t>(j * cols + i)] += v;
      }
  }
  tokens += static_cast<uint64_t>(n);
}

void InputStats::merge(const InputStats& o) {
  if (o.cols != cols || o.full() != full())
    fail("input statistics", "cannot merge statistics of {} columns{} into {}{}", o.cols, o.full() ? " (full)" : "",
         cols, full() ? " (full)" : "");
  for (size_t j = 0; j < diag.size(); ++j) diag[j] += o.diag[j];
  for (size_t i = 0; i < gram.size(); ++i) gram[i] += o.gram[i];
  tokens += o.tokens;
}

}  // namespace lsb::quant
