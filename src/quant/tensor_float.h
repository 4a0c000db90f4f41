// Any stored tensor (dense or quantized) as float32 values: what the model computes with.
#pragma once
#include <span>
#include <string>
#include <vector>

#include "lsb/tensor_source.h"

namespace lsb {

std::vector<float> tensor_to_float(const TensorInfo& t, std::span<const std::byte> data);

}  // namespace lsb
