// Small numeric pieces shared by the evaluations: log-softmax of logits in double, and a running
// mean with its standard error (as llama.cpp's perplexity and KL-divergence reports give them).
#pragma once
#include <cstdint>
#include <vector>

namespace lsb {

// log(sum_i exp(logits[i])), computed in double around the maximum.
double log_sum_exp(const float* logits, int n);
// out[i] = logits[i] - log_sum_exp(logits)
void log_softmax(const float* logits, int n, std::vector<double>& out);

class MeanAccumulator {
 public:
  void add(double v) {
    sum_ += v;
    sum2_ += v * v;
    ++n_;
  }
  int64_t count() const { return n_; }
  double mean() const { return n_ > 0 ? sum_ / static_cast<double>(n_) : 0.0; }
  // sqrt(var / (N - 1)), var the population variance of the values.
  double stderr_of_mean() const;

 private:
  double sum_ = 0, sum2_ = 0;
  int64_t n_ = 0;
};

}  // namespace lsb
