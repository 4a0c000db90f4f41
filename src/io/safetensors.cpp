#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/le.h"

namespace lsb {

namespace {

// The reference implementation refuses headers above 100 MB; so do we, which also bounds the
// memory the JSON parser can take.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
constexpr size_t kMaxRank = 8;

uint64_t get_u64(const nlohmann::json& v, const std::string& path, const std::string& name, const char* what) {
  if (!v.is_number_unsigned()) fail(path, "tensor '{}': {} should hold non-negative integers, got {}", name, what, v.dump());
  return v.get<uint64_t>();
}

}  // namespace

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  const uint64_t size = file_.size();
  if (size < 8) fail(path, "file is {} bytes, too short for a safetensors header", size);
  const uint64_t n = load_le64(file_.bytes().data());
  if (n > size - 8) fail(path, "header length {} past end of file (size {})", n, size);
  if (n > kMaxHeaderBytes) fail(path, "header length {} is above the {} byte limit", n, kMaxHeaderBytes);
  data_start_ = 8 + n;
  const uint64_t data_size = size - data_start_;

  auto header_bytes = file_.range(8, n, "safetensors header");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(reinterpret_cast<const char*>(header_bytes.data()),
                                   reinterpret_cast<const char*>(header_bytes.data()) + header_bytes.size());
  } catch (const nlohmann::json::exception& e) {
    fail(path, "header is not valid JSON: {}", e.what());
  }
  if (!header.is_object()) fail(path, "header should be a JSON object, got {}", header.type_name());

  struct Entry {
    TensorInfo info;
    uint64_t begin;
  };
  std::vector<Entry> entries;
  for (const auto& [name, desc] : header.items()) {
    if (name == "__metadata__") {
      // Free-form string to string map (the format says so); anything else is ignored.
      if (desc.is_object())
        for (const auto& [k, v] : desc.items())
          if (v.is_string()) metadata_[k] = v.get<std::string>();
      continue;
    }
    if (!desc.is_object()) fail(path, "tensor '{}': description should be a JSON object", name);
    auto dt = desc.find("dtype");
    auto sh = desc.find("shape");
    auto off = desc.find("data_offsets");
    if (dt == desc.end() || sh == desc.end() || off == desc.end())
      fail(path, "tensor '{}': needs 'dtype', 'shape' and 'data_offsets'", name);
    if (!dt->is_string()) fail(path, "tensor '{}': dtype should be a string", name);
    const std::string dname = dt->get<std::string>();
    DType dtype;
    if (dname == "F32") {
      dtype = DType::F32;
    } else if (dname == "F16") {
      dtype = DType::F16;
    } else if (dname == "BF16") {
      dtype = DType::BF16;
    } else {
      fail(path, "tensor '{}': unsupported dtype '{}' (supported: F32, F16, BF16)", name, dname);
    }

    if (!sh->is_array() || sh->size() > kMaxRank)
      fail(path, "tensor '{}': shape should be a list of at most {} sizes", name, kMaxRank);
    TensorInfo info;
    info.name = name;
    info.dtype = dtype;
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      uint64_t dim = get_u64(d, path, name, "shape");
      if (dim > uint64_t(INT64_MAX) || __builtin_mul_overflow(numel, dim, &numel))
        fail(path, "tensor '{}': shape {} overflows", name, sh->dump());
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    uint64_t want_bytes = 0;
    if (__builtin_mul_overflow(numel, uint64_t(dtype_size(dtype)), &want_bytes))
      fail(path, "tensor '{}': shape {} overflows", name, sh->dump());

    if (!off->is_array() || off->size() != 2) fail(path, "tensor '{}': data_offsets should be [begin, end]", name);
    const uint64_t begin = get_u64((*off)[0], path, name, "data_offsets");
    const uint64_t end = get_u64((*off)[1], path, name, "data_offsets");
    if (begin > end) fail(path, "tensor '{}' data offsets [{},{}] are reversed", name, begin, end);
    if (end > data_size)
      fail(path, "tensor '{}' data offsets [{},{}] outside the file (data section is {} bytes; truncated file?)", name,
           begin, end, data_size);
    if (end - begin != want_bytes)
      fail(path, "tensor '{}': shape {} of {} needs {} bytes but data offsets [{},{}] hold {}", name, sh->dump(), dname,
           want_bytes, begin, end, end - begin);
    info.nbytes = want_bytes;
    entries.push_back({std::move(info), begin});
  }

  // JSON objects iterate in key order; file order makes sequential reads sequential on disk.
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.begin < b.begin; });
  tensors_.reserve(entries.size());
  begins_.reserve(entries.size());
  for (auto& e : entries) {
    index_.emplace(e.info.name, tensors_.size());
    begins_.push_back(e.begin);
    tensors_.push_back(std::move(e.info));
  }
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::span<const std::byte> SafetensorsFile::data(std::string_view name) const {
  auto it = index_.find(name);
  if (it == index_.end()) fail(path(), "no tensor named '{}'", name);
  const TensorInfo& t = tensors_[it->second];
  // Offsets were checked against the file size when the header was parsed.
  return file_.bytes().subspan(data_start_ + begins_[it->second], t.nbytes);
}

std::unique_ptr<TensorSource> open_safetensors(const std::string& path) {
  return std::make_unique<SafetensorsSource>(path);
}

}  // namespace lsb
