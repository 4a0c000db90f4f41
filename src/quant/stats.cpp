#include "quant/stats.h"

#include <cblas.h>

#include "base/error.h"
#include "detail/blas_threads.h"

namespace lsb::quant {

InputStats::InputStats(int64_t c, bool full) : cols(c), diag(static_cast<size_t>(c), 0.0) {
  if (c <= 0) fail("input statistics", "{} columns", c);
  if (full) gram.assign(static_cast<size_t>(c) * static_cast<size_t>(c), 0.0f);
}

void InputStats::add(const float* x, int64_t n) {
  if (n <= 0) return;
  // Per call from zero, then added: so merging two accumulations equals one accumulation.
  std::vector<double> sum(static_cast<size_t>(cols), 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < cols; ++j) sum[static_cast<size_t>(j)] += static_cast<double>(x[t * cols + j]) * x[t * cols + j];
  for (int64_t j = 0; j < cols; ++j) diag[static_cast<size_t>(j)] += sum[static_cast<size_t>(j)];
  if (full()) {
    // gram += Xᵀ X on the lower triangle (one thread: the same bytes whatever the thread count of
    // the caller).
    const int c = static_cast<int>(cols);
    const detail::BlasOneThread one_thread;
    cblas_ssyrk(CblasRowMajor, CblasLower, CblasTrans, c, static_cast<int>(n), 1.0f, x, c, 1.0f, gram.data(), c);
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
