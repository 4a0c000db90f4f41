#include "eval/tensor_quality.h"

#include "quant/scheme.h"

namespace lsb {

std::vector<TensorQuality> compare_tensors(const TensorSource& ref, const TensorSource& model) {
  std::vector<TensorQuality> out;
  for (const TensorInfo& t : model.tensors()) {
    const TensorInfo* r = ref.find(t.name);
    if (!r || r->numel() != t.numel()) continue;
    const std::vector<float> a = quant::tensor_to_float(*r, ref.data(*r));
    const std::vector<float> b = quant::tensor_to_float(t, model.data(t));
    out.push_back({t.name, std::string(quant::scheme_name(t.dtype)), t.numel(), t.nbytes, quant::compare(a.data(), b.data(), a.size())});
  }
  return out;
}

}  // namespace lsb
