// Element types of tensors as stored in files. Dense types are read directly; quantized types
// (Q8, LSB1, PAPER) are blobs whose layout is given in docs/FORMAT.md.
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
  Q8 = 16,     // int8 with one fp32 scale per row
  LSB1 = 17,   // sign bits x per-group scale + sparse fp16 outliers
  PAPER = 18,  // the seed paper's method: per-tensor mu/sigma, sign bits, fp16 outliers
};

// Size of one element for dense types; 0 for quantized blobs (their size comes from the scheme).
size_t dtype_size(DType t);
bool dtype_is_dense(DType t);
std::string_view dtype_name(DType t);
std::optional<DType> dtype_from_name(std::string_view name);  // "F32", "bf16", ... (case-insensitive)

}  // namespace lsb
