#include "eval/stats.h"

#include <algorithm>
#include <cmath>

namespace lsb {

double log_sum_exp(const float* logits, int n) {
  const float mx = *std::max_element(logits, logits + n);
  double sum = 0.0;
  for (int i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  return std::log(sum) + mx;
}

void log_softmax(const float* logits, int n, std::vector<double>& out) {
  out.resize(static_cast<size_t>(n));
  const double lse = log_sum_exp(logits, n);
  for (int i = 0; i < n; ++i) out[i] = logits[i] - lse;
}

double MeanAccumulator::stderr_of_mean() const {
  if (n_ < 2) return 0.0;
  const double m = mean(), var = sum2_ / static_cast<double>(n_) - m * m;
  return var > 0 ? std::sqrt(var / static_cast<double>(n_ - 1)) : 0.0;
}

}  // namespace lsb
