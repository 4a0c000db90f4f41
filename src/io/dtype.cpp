#include "lsb/dtype.h"

#include <array>
#include <cctype>

namespace lsb {

namespace {
struct DTypeEntry {
  DType type;
  std::string_view name;
  size_t size;  // 0 for quantized blobs
};
constexpr std::array<DTypeEntry, 6> kDTypes{{
    {DType::F32, "F32", 4},
    {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},
    {DType::Q8, "Q8", 0},
    {DType::LSB1, "LSB1", 0},
    {DType::PAPER, "PAPER", 0},
}};

const DTypeEntry* entry(DType t) {
  for (const auto& e : kDTypes)
    if (e.type == t) return &e;
  return nullptr;
}
}  // namespace

size_t dtype_size(DType t) {
  const DTypeEntry* e = entry(t);
  return e ? e->size : 0;
}

bool dtype_is_dense(DType t) { return dtype_size(t) != 0; }

std::string_view dtype_name(DType t) {
  const DTypeEntry* e = entry(t);
  return e ? e->name : std::string_view("UNKNOWN");
}

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& e : kDTypes) {
    if (e.name.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < name.size() && same; ++i)
      same = std::toupper(static_cast<unsigned char>(name[i])) == static_cast<unsigned char>(e.name[i]);
    if (same) return e.type;
  }
  return std::nullopt;
}

}  // namespace lsb
