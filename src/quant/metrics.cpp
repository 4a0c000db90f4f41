// Tensor error metrics used by the quantization tests, the measurements in docs/QUANT.md and
// the CLI's quality reports.
#include "quant/metrics.h"

#include <cmath>
#include <limits>

namespace lsb::quant {

TensorMetrics compare(const float* ref, const float* q, size_t n) {
  TensorMetrics m;
  m.n = n;
  double abs_sum = 0, err2 = 0, ref2 = 0, q2 = 0, dot = 0, max_err = 0;
  for (size_t i = 0; i < n; ++i) {
    const double w = ref[i], v = q[i], d = w - v;
    abs_sum += std::fabs(d);
    err2 += d * d;
    ref2 += w * w;
    q2 += v * v;
    dot += w * v;
    max_err = std::fmax(max_err, std::fabs(d));
  }
  const double inf = std::numeric_limits<double>::infinity();
  if (n > 0) {
    m.mae = abs_sum / static_cast<double>(n);
    m.mse = err2 / static_cast<double>(n);
  }
  m.max_abs_err = max_err;
  m.rel_l2 = ref2 > 0 ? std::sqrt(err2 / ref2) : (err2 > 0 ? inf : 0.0);
  m.snr_db = err2 > 0 ? (ref2 > 0 ? 10.0 * std::log10(ref2 / err2) : -inf) : inf;
  if (ref2 > 0 && q2 > 0)
    m.cosine = dot / (std::sqrt(ref2) * std::sqrt(q2));
  else
    m.cosine = (ref2 == 0 && q2 == 0) ? 1.0 : 0.0;
  return m;
}

}  // namespace lsb::quant
