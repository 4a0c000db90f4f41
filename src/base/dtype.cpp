#include "base/dtype.h"

#include <array>
#include <cctype>
#include <string>

namespace lsb {

namespace {
struct DenseType {
  DType type;
  std::string_view name;
  size_t size;
};
constexpr std::array<DenseType, 3> kDense{{{DType::F32, "F32", 4}, {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2}}};

const DenseType* dense(DType t) {
  for (const auto& e : kDense)
    if (e.type == t) return &e;
  return nullptr;
}

// Names of non-dense ids for messages; one per possible id so the views stay valid.
const std::array<std::string, 256>& other_names() {
  static const std::array<std::string, 256> names = [] {
    std::array<std::string, 256> n;
    for (int i = 0; i < 256; ++i) n[static_cast<size_t>(i)] = "dtype " + std::to_string(i);
    return n;
  }();
  return names;
}
}  // namespace

size_t dtype_size(DType t) {
  const DenseType* e = dense(t);
  return e ? e->size : 0;
}

std::string_view dtype_name(DType t) {
  if (const DenseType* e = dense(t)) return e->name;
  return other_names()[static_cast<uint8_t>(t)];
}

std::optional<DType> dense_dtype_from_name(std::string_view name) {
  for (const auto& e : kDense) {
    if (e.name.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < name.size() && same; ++i)
      same = std::toupper(static_cast<unsigned char>(name[i])) == static_cast<unsigned char>(e.name[i]);
    if (same) return e.type;
  }
  return std::nullopt;
}

}  // namespace lsb
