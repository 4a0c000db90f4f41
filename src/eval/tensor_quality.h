// Tensor-level quality of one model against another (usually compressed vs original): for every
// tensor both have, the error metrics of the values the model computes with.
#pragma once
#include <string>
#include <vector>

#include "io/tensor_source.h"
#include "quant/metrics.h"

namespace lsb {

struct TensorQuality {
  std::string name;
  std::string dtype;  // of the compared model's tensor
  int64_t numel = 0;
  uint64_t bytes = 0;
  quant::TensorMetrics m;
};

std::vector<TensorQuality> compare_tensors(const TensorSource& ref, const TensorSource& model);

}  // namespace lsb
