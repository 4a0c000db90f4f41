#include "io/tensor_source.h"

#include "base/error.h"

namespace lsb {

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // readers checked the product for overflow when parsing
  return n;
}

const TensorInfo* TensorSource::find(std::string_view name) const {
  for (const TensorInfo& t : tensors())
    if (t.name == name) return &t;
  return nullptr;
}

const TensorInfo& TensorSource::get(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (!t) fail(describe(), "missing tensor '{}'", name);
  return *t;
}

}  // namespace lsb
