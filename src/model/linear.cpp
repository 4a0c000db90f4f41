#include "model/linear.h"


#include <algorithm>
#include <vector>

#include "kernels/dense.h"
#include "kernels/packed_linear.h"
#include "lsb/error.h"
#include "quant/scheme.h"

namespace lsb {
namespace {

// Dense weights used in place (memory-mapped), read in their stored dtype (bf16 stays 2 bytes
// per weight). Rows are split across threads in blocks; one token uses the gemv kernel, a batch
// the register-tiled gemm kernel.
class DenseLinear final : public Linear {
 public:
  DenseLinear(const TensorInfo& info, std::span<const std::byte> data)
      : Linear(info.name, info.rows(), info.cols()), dtype_(info.dtype), w_(data.data()) {}

  void forward(const float* x, int64_t n, float* y) const override {
    const int64_t R = rows(), C = cols();
    constexpr int64_t block = 64;
    const int64_t nblocks = (R + block - 1) / block;
    if (n == 1) {
#pragma omp parallel for schedule(static)
      for (int64_t b = 0; b < nblocks; ++b) {
        const int64_t r0 = b * block, r1 = std::min(R, r0 + block);
        kernels::gemv_dense(dtype_, w_, C, r0, r1, x, y + r0);
      }
      return;
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t b = 0; b < nblocks; ++b) {
      const int64_t r0 = b * block, r1 = std::min(R, r0 + block);
      kernels::gemm_nt(dtype_, x, C, n, w_, C, r0, r1, C, y, R);  // y[:, r0:r1] = x · W[r0:r1]ᵀ
    }
  }

  void row(int64_t r, float* out) const override { kernels::rows_to_f32(dtype_, w_, cols(), r, r + 1, out); }
  uint64_t weight_bytes() const override { return static_cast<uint64_t>(rows() * cols()) * dtype_size(dtype_); }
  std::string kind() const override { return std::string(dtype_name(dtype_)); }

 private:
  DType dtype_;
  const std::byte* w_;
};

}  // namespace

std::unique_ptr<Linear> make_linear(const TensorInfo& info, std::span<const std::byte> data,
                                    const std::string& where, const LinearLoad& load) {
  if (info.shape.size() != 2) fail(where, "tensor '{}' is not a matrix", info.name);
  if (dtype_is_dense(info.dtype)) {
    const uint64_t need = static_cast<uint64_t>(info.numel()) * dtype_size(info.dtype);
    if (data.size() != need)
      fail(where, "tensor '{}' has {} bytes, expected {}", info.name, data.size(), need);
    return std::make_unique<DenseLinear>(info, data);
  }
  // Quantized tensor: multiplied in its packed form (the constructors validate the blob).
  if (info.dtype == DType::Q8) return std::make_unique<kernels::Q8Linear>(info, data, where, load);
  return std::make_unique<kernels::SignLinear>(info, data, where, load);
}

}  // namespace lsb
