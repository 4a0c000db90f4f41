// Tensor error metrics used by the quantization tests, the measurements in docs/QUANT.md and
// the CLI's quality reports.
#include "quant/metrics.h"

#include <cmath>
#include <limits>

namespace lsb::quant {

void MetricsAccumulator::add(const float* ref, const float* q, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const double w = ref[i], v = q[i], d = w - v;
    abs_sum_ += std::fabs(d);
    err2_ += d * d;
    ref2_ += w * w;
    q2_ += v * v;
    dot_ += w * v;
    max_err_ = std::fmax(max_err_, std::fabs(d));
  }
  n_ += n;
}

TensorMetrics MetricsAccumulator::result() const {
  TensorMetrics m;
  m.n = n_;
  const double inf = std::numeric_limits<double>::infinity();
  if (n_ > 0) {
    m.mae = abs_sum_ / static_cast<double>(n_);
    m.mse = err2_ / static_cast<double>(n_);
  }
  m.max_abs_err = max_err_;
  m.rel_l2 = ref2_ > 0 ? std::sqrt(err2_ / ref2_) : (err2_ > 0 ? inf : 0.0);
  m.snr_db = err2_ > 0 ? (ref2_ > 0 ? 10.0 * std::log10(ref2_ / err2_) : -inf) : inf;
  if (ref2_ > 0 && q2_ > 0)
    m.cosine = dot_ / (std::sqrt(ref2_) * std::sqrt(q2_));
  else
    m.cosine = (ref2_ == 0 && q2_ == 0) ? 1.0 : 0.0;
  return m;
}

TensorMetrics compare(const float* ref, const float* q, size_t n) {
  MetricsAccumulator acc;
  acc.add(ref, q, n);
  return acc.result();
}

}  // namespace lsb::quant
