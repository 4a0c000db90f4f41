// Element types of stored tensors: the id a tensor's bytes are tagged with in every file. Dense
// ids (F32, F16, BF16) are plain arrays of elements; every other id names a quantization scheme,
// whose layout, parameters and operations live in the scheme table (quant/scheme.h).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace lsb {

enum class DType : uint8_t {
  F32 = 0,
  F16 = 1,
  BF16 = 2,
  Q8 = 16,     // int8 with one f32 scale per row
  LSB1 = 17,   // sign bits x per-group scale + sparse fp16 outliers
  PAPER = 18,  // the seed paper's method: per-tensor mu/sigma, sign bits, fp16 outliers
  NU = 19,     // learned non-uniform scalar levels x per-group scale
  VQ4 = 20,    // learned codebook of 4-weight vectors x per-group scale
};

// Bytes of one element of a dense type; 0 for every other id (quantized blobs).
size_t dtype_size(DType t);
inline bool dtype_is_dense(DType t) { return dtype_size(t) != 0; }
// "F32", "F16", "BF16" (the safetensors spelling) for dense types; "dtype N" for any other id.
std::string_view dtype_name(DType t);
// Inverse of dtype_name for the dense types, case-insensitive ("bf16" -> BF16).
std::optional<DType> dense_dtype_from_name(std::string_view name);

}  // namespace lsb
