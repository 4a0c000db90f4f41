// Dense weights (f32 / f16 / bf16) used in place — memory-mapped, read in their stored dtype
// (bf16 stays 2 bytes per weight). Rows are split across threads in blocks; one token uses the
// gemv kernel, a batch the register-tiled gemm kernel.
#include <algorithm>

#include "base/error.h"
#include "kernels/dense.h"
#include "linear/linear.h"

namespace lsb {
namespace {

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

std::unique_ptr<Linear> make(const TensorInfo& info, std::span<const std::byte> data, const std::string& where,
                             const LinearLoad&) {
  const uint64_t need = static_cast<uint64_t>(info.numel()) * dtype_size(info.dtype);
  if (data.size() != need) fail(where, "tensor '{}' has {} bytes, expected {}", info.name, data.size(), need);
  return std::make_unique<DenseLinear>(info, data);
}

uint64_t no_arena(const TensorInfo&, const BlobPeek&, const std::string&) { return 0; }

}  // namespace

extern const LinearOps kDenseF32Linear{DType::F32, make, no_arena};
extern const LinearOps kDenseF16Linear{DType::F16, make, no_arena};
extern const LinearOps kDenseBF16Linear{DType::BF16, make, no_arena};

}  // namespace lsb
