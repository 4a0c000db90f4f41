// Reader for one .safetensors file: u64 little-endian header length N, N bytes of JSON header
// ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}), then the
// data section; offsets are relative to the data section. Only F32, F16 and BF16 are accepted.
// The file is memory-mapped; only the header is read when opening.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/mmap_file.h"
#include "io/tensor_source.h"

namespace lsb {

class SafetensorsFile {
 public:
  // Parses and checks the header (every length, offset and size against the file); throws
  // lsb::Error naming the file.
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  uint64_t file_size() const { return file_.size(); }
  // Tensors in file order (ascending data offset).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const;
  // Bytes of the named tensor inside the map; throws naming the file if there is no such tensor.
  std::span<const std::byte> data(std::string_view name) const;
  // "__metadata__" (string values only).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  MappedFile file_;
  uint64_t data_start_ = 0;        // absolute file offset of the data section
  std::vector<TensorInfo> tensors_;
  std::vector<uint64_t> begins_;   // data-section offset of each tensor, parallel to tensors_
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// One safetensors file as a TensorSource. It carries no model config: config() returns a
// default ModelConfig (all sizes 0), so this is for tensor-level work (e.g. gpt2-attn-proj),
// not for running a model.
class SafetensorsSource : public TensorSource {
 public:
  explicit SafetensorsSource(const std::string& path) : file_(path) {}
  const ModelConfig& config() const override { return config_; }
  const std::vector<TensorInfo>& tensors() const override { return file_.tensors(); }
  std::span<const std::byte> data(const TensorInfo& t) const override { return file_.data(t.name); }
  std::string describe() const override { return file_.path(); }
  std::string_view format_name() const override { return "safetensors"; }

 private:
  SafetensorsFile file_;
  ModelConfig config_;
};

std::unique_ptr<TensorSource> open_safetensors(const std::string& path);

}  // namespace lsb
