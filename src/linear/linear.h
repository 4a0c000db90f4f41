// A weight matrix the forward pass multiplies by. The forward pass only sees this interface, so
// a compressed tensor replaces a dense one without touching it. Which class multiplies which
// stored scheme is this floor's table (one row per scheme, like quant's; see docs/DESIGN.md).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <memory_resource>
#include <span>
#include <string>

#include "io/tensor_source.h"
#include "quant/stats.h"

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

// How a stored tensor is turned into a Linear.
struct LinearLoad {
  // Where the arrays built at load (repacked outliers, float coefficients) are allocated; it
  // must outlive the Linear.
  std::pmr::memory_resource* arena = std::pmr::get_default_resource();
  // false: skip the checks of the blob's values (finite scales and outliers, outlier sign bits)
  // that cannot affect memory safety; every size and offset is still checked. For blobs whose
  // content was checked before (the streaming runtime re-reading a unit it has checked once).
  bool check_content = true;
};

// Reads `len` bytes at `offset` of a tensor's blob into `out`: lets a Linear say what it will
// allocate before the blob itself is in memory (the streaming runtime reads from the file).
using BlobPeek = std::function<void(uint64_t offset, uint64_t len, void* out)>;

// One row per stored scheme.
struct LinearOps {
  DType id;
  // Builds the Linear over `blob`, which must outlive it (and be 8-byte aligned for packed
  // schemes). Validates the blob; throws lsb::Error naming `where` and the tensor.
  std::unique_ptr<Linear> (*make)(const TensorInfo& info, std::span<const std::byte> blob, const std::string& where,
                                  const LinearLoad& load);
  // Bytes make() takes from load.arena for this tensor, alignment included: what a streaming
  // slot must reserve for it.
  uint64_t (*arena_bytes)(const TensorInfo& info, const BlobPeek& peek, const std::string& where);
};

std::span<const LinearOps* const> all_linear_ops();
const LinearOps& linear_ops(DType t);  // throws for a scheme without a Linear

// Builds the Linear of a stored matrix through the table (dense tensors are used in place).
std::unique_ptr<Linear> make_linear(const TensorInfo& info, std::span<const std::byte> data, const std::string& where,
                                    const LinearLoad& load = {});
uint64_t linear_arena_bytes(const TensorInfo& info, const BlobPeek& peek, const std::string& where);

// Passes every input to `inner` after adding it to `stats`: how calibration sees what a layer
// multiplies. One forward at a time (the model calls its Linears in order).
class RecordingLinear final : public Linear {
 public:
  RecordingLinear(std::unique_ptr<Linear> inner, quant::InputStats& stats);
  void forward(const float* x, int64_t n, float* y) const override;
  void row(int64_t r, float* out) const override { inner_->row(r, out); }
  uint64_t weight_bytes() const override { return inner_->weight_bytes(); }
  std::string kind() const override { return inner_->kind(); }

 private:
  std::unique_ptr<Linear> inner_;
  quant::InputStats& stats_;
};

}  // namespace lsb
