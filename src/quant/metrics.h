// Error metrics between a reference tensor and its (de)quantized version, computed in double.
#pragma once
#include <cstddef>

namespace lsb::quant {

struct TensorMetrics {
  size_t n = 0;
  double mae = 0;          // mean |w - q|
  double mse = 0;          // mean (w - q)^2
  double rel_l2 = 0;       // ||w - q|| / ||w||   (0 when both are 0, +inf when only w is 0)
  double snr_db = 0;       // 10 log10(||w||^2 / ||w - q||^2)   (+inf when q == w)
  double cosine = 0;       // <w, q> / (||w|| ||q||)  (1 when both are 0, 0 when only one is)
  double max_abs_err = 0;  // max |w - q|
};

// Sums run in index order in double, so the result does not depend on threads.
TensorMetrics compare(const float* ref, const float* q, size_t n);

// The same sums fed in pieces (a large tensor needs no second full-size buffer); pieces added in
// index order give exactly compare()'s result.
class MetricsAccumulator {
 public:
  void add(const float* ref, const float* q, size_t n);
  TensorMetrics result() const;

 private:
  size_t n_ = 0;
  double abs_sum_ = 0, err2_ = 0, ref2_ = 0, q2_ = 0, dot_ = 0, max_err_ = 0;
};

}  // namespace lsb::quant
