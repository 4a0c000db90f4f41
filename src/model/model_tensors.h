// The tensors a Llama-family model needs, derived from its config, and a check of a source
// against them (names present, shapes agreeing), so a model never runs on mismatched weights.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "base/config.h"
#include "io/tensor_source.h"

namespace lsb {

struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;  // logical shape, outer dimension first
};

// Every tensor of the model, in canonical HF names; lm_head.weight only when untied.
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& c);

// Throws lsb::Error naming src.describe() on a missing tensor, a shape that disagrees with the
// config, a tensor the model would not use, or a dense tensor whose byte size disagrees with its shape.
void validate_tensors(const TensorSource& src);

}  // namespace lsb
