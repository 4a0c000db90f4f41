// Q8 tensors as a Linear: int8 weights used in place.
#include "base/error.h"
#include "detail/row_blocks.h"
#include "kernels/packed.h"
#include "linear/linear.h"

namespace lsb {
namespace {

class Q8Linear final : public Linear {
 public:
  Q8Linear(const TensorInfo& info, std::span<const std::byte> blob, const std::string& where, const LinearLoad& load)
      : Linear(info.name, info.rows(), info.cols()),
        v_(quant::Q8View::parse(blob, info.rows(), info.cols(),
                                {.where = where + ": tensor '" + info.name + "'", .check_content = load.check_content})) {}

  void forward(const float* x, int64_t n, float* y) const override {
    const int64_t R = rows(), C = cols();
    detail::for_row_blocks(R, n, [&](int64_t t, int64_t nt, int64_t r0, int64_t r1) {
      kernels::q8_gemm(v_, x + t * C, nt, r0, r1, y + t * R, R);
    });
  }
  void row(int64_t r, float* out) const override { v_.dequantize_row(r, out); }
  uint64_t weight_bytes() const override { return static_cast<uint64_t>(rows()) * 4 + static_cast<uint64_t>(rows() * cols()); }
  std::string kind() const override { return "q8"; }

 private:
  quant::Q8View v_;
};

std::unique_ptr<Linear> make(const TensorInfo& info, std::span<const std::byte> blob, const std::string& where,
                             const LinearLoad& load) {
  return std::make_unique<Q8Linear>(info, blob, where, load);
}

uint64_t no_arena(const TensorInfo&, const BlobPeek&, const std::string&) { return 0; }

}  // namespace

extern const LinearOps kQ8Linear{DType::Q8, make, no_arena};

}  // namespace lsb
