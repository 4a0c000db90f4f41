// A weight matrix the forward pass multiplies by. The forward pass only sees this interface,
// so a compressed tensor replaces a dense one without touching it.
#pragma once
#include <cstdint>
#include <memory>
#include <memory_resource>
#include <span>
#include <string>

#include "lsb/tensor_source.h"

namespace lsb {

class Linear {
 public:
  Linear(std::string name, int64_t rows, int64_t cols) : name_(std::move(name)), rows_(rows), cols_(cols) {}
  virtual ~Linear() = default;

  // y: (n, rows) = x: (n, cols) · Wᵀ, for n tokens at once. Uses the OpenMP thread team.
  virtual void forward(const float* x, int64_t n, float* y) const = 0;
  // Row r of W as float (used for embedding lookups).
  virtual void row(int64_t r, float* out) const = 0;
  // Bytes of weights one full pass reads (for GB/s figures).
  virtual uint64_t weight_bytes() const = 0;
  virtual std::string kind() const = 0;

  const std::string& name() const { return name_; }
  int64_t rows() const { return rows_; }  // out_features
  int64_t cols() const { return cols_; }  // in_features

 private:
  std::string name_;
  int64_t rows_, cols_;
};

// How a quantized tensor is turned into a Linear.
struct LinearLoad {
  // Where the arrays built at load (repacked outliers, float coefficients) are allocated; it
  // must outlive the Linear.
  std::pmr::memory_resource* arena = std::pmr::get_default_resource();
  // false: skip the checks of the blob's values (finite scales and outliers, outlier sign bits)
  // that cannot affect memory safety; every size and offset is still checked. For blobs whose
  // content was checked before (the streaming runtime re-reading a unit it has checked once).
  bool check_content = true;
};

// Builds the Linear for a stored tensor: dense (f32/f16/bf16, used in place, no copy) or a
// quantized blob. `data` must outlive the returned object.
std::unique_ptr<Linear> make_linear(const TensorInfo& info, std::span<const std::byte> data,
                                    const std::string& where, const LinearLoad& load = {});

}  // namespace lsb
