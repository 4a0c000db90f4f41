#include "quant/tensor_float.h"

#include "quant/scheme.h"

namespace lsb {

std::vector<float> tensor_to_float(const TensorInfo& t, std::span<const std::byte> data) {
  std::vector<float> w(static_cast<size_t>(t.numel()));
  const quant::SchemeParams p{t.outlier_ratio, t.group_size, t.use_mean};
  quant::dequantize(t.dtype, data, t.rows(), t.cols(), p, w.data());
  return w;
}

}  // namespace lsb
