// The table of Linear implementations, one row per scheme, and the generic entry points.
#include "linear/linear.h"

#include <array>

#include "base/error.h"
#include "quant/scheme.h"

namespace lsb {

// One row per scheme, defined beside each implementation.
extern const LinearOps kDenseF32Linear, kDenseF16Linear, kDenseBF16Linear, kQ8Linear, kLsb1Linear, kPaperLinear,
    kNuLinear, kVq4Linear;

namespace {
constexpr std::array<const LinearOps*, 8> kLinears = {&kDenseF32Linear, &kDenseF16Linear, &kDenseBF16Linear,
                                                      &kQ8Linear,       &kLsb1Linear,     &kPaperLinear,
                                                      &kNuLinear,       &kVq4Linear};
}  // namespace

std::span<const LinearOps* const> all_linear_ops() { return kLinears; }

const LinearOps& linear_ops(DType t) {
  for (const LinearOps* o : kLinears)
    if (o->id == t) return *o;
  fail("linear", "no Linear for scheme {}", quant::scheme_name(t));
}

std::unique_ptr<Linear> make_linear(const TensorInfo& info, std::span<const std::byte> data, const std::string& where,
                                    const LinearLoad& load) {
  if (info.shape.size() != 2) fail(where, "tensor '{}' is not a matrix", info.name);
  return linear_ops(info.dtype).make(info, data, where, load);
}

uint64_t linear_arena_bytes(const TensorInfo& info, const BlobPeek& peek, const std::string& where) {
  return linear_ops(info.dtype).arena_bytes(info, peek, where);
}

RecordingLinear::RecordingLinear(std::unique_ptr<Linear> inner, quant::InputStats& stats)
    : Linear(inner->name(), inner->rows(), inner->cols()), inner_(std::move(inner)), stats_(stats) {
  if (stats.cols != inner_->cols())
    fail("calibration", "statistics of {} columns for tensor '{}' with {} columns", stats.cols, inner_->name(),
         inner_->cols());
}

void RecordingLinear::forward(const float* x, int64_t n, float* y) const {
  stats_.add(x, n);
  inner_->forward(x, n, y);
}

}  // namespace lsb
