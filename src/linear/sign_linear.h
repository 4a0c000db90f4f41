// LSB1 and PAPER tensors ("sign matrices") as a Linear, multiplied in their packed form by the
// kernels of kernels/packed.h: no tensor is ever expanded to float.
//
// At load, the outlier gap stream is repacked into (column, correction) pairs so that the
// kernels need no sequential decoding, and f16 scales/means become float per-group arrays;
// signs are used in place. Everything built comes from LinearLoad::arena, and arena_bytes()
// says how much that is before the blob is read (the streaming runtime sizes its slots with it).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <memory_resource>
#include <span>
#include <string>

#include "kernels/packed.h"
#include "linear/linear.h"
#include "quant/scheme.h"

namespace lsb {

class SignLinear final : public Linear {
 public:
  // Parses and validates the blob (lsb::Error prefixed with `where` on any inconsistency).
  // `blob` must outlive the object and be 8-byte aligned.
  SignLinear(const TensorInfo& info, std::span<const std::byte> blob, const std::string& where,
             const LinearLoad& load = {});
  SignLinear(const SignLinear&) = delete;  // the view points into this object's arrays
  SignLinear& operator=(const SignLinear&) = delete;
  void forward(const float* x, int64_t n, float* y) const override;
  void row(int64_t r, float* out) const override;
  uint64_t weight_bytes() const override;  // bytes a full pass reads (signs, coefficients, outliers)
  std::string kind() const override;
  uint64_t repacked_bytes() const;         // memory built by this object (outlier arrays, index, coefficients)
  const kernels::SignMatrixView& view() const { return m_; }

  // What the constructor takes from load.arena for `info` (alignment slack included).
  static uint64_t arena_bytes(const TensorInfo& info, const BlobPeek& peek, const std::string& where);

 private:
  DType dtype_;
  std::pmr::vector<uint16_t> col16_;
  std::pmr::vector<uint32_t> col32_;
  std::pmr::vector<float> corr_;
  std::pmr::vector<float> fscale_, fzero_;
  std::unique_ptr<quant::BlobView> blob_view_;  // for row(); its outlier index is in the arena too
  const std::pmr::vector<uint64_t>* out_start_ = nullptr;  // inside blob_view_
  kernels::SignMatrixView m_;
};

}  // namespace lsb
