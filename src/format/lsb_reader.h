// A TensorSource over a memory-mapped .lsb file (docs/FORMAT.md). The constructor validates the
// header, the small sections and every directory entry; each tensor's checksum (and, for
// quantized blobs, PackedView::parse) is checked the first time data() returns it.
#pragma once
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "format/lsb_format.h"
#include "format/lsb_writer.h"
#include "io/mmap_file.h"
#include "io/tensor_source.h"

namespace lsb::format {

class LsbReader : public TensorSource {
 public:
  // Throws lsb::Error "PATH: problem" on anything invalid.
  explicit LsbReader(const std::string& path);

  const ModelConfig& config() const override { return config_; }
  const std::vector<TensorInfo>& tensors() const override { return tensors_; }
  // Verifies the tensor's checksum (and blob structure) on first access.
  std::span<const std::byte> data(const TensorInfo& t) const override;
  TokenizerBlob tokenizer() const override;
  // metadata "chat_template" (written by compress from the source's), "" when absent.
  std::string chat_template() const override;
  std::string describe() const override { return file_.path(); }
  std::string_view format_name() const override { return "lsb"; }

  const FileHeader& header() const { return header_; }
  const nlohmann::json& metadata() const { return metadata_; }
  const std::vector<TensorEntry>& entries() const { return entries_; }  // parallel to tensors()
  const std::vector<LayerRange>& layers() const { return layers_; }
  uint64_t file_size() const { return file_.size(); }
  // Checks one tensor's bytes (checksum, then PackedView::parse); throws naming it.
  void verify_tensor(size_t index) const;
  // Checks every tensor in directory order; throws on the first bad one.
  void verify_all() const;
  // Unmaps the file once a streaming session has taken what it needs from the map (config,
  // directory, tokenizer, final norm): it then reads tensors with pread only, and data() and
  // tokenizer() throw (docs/STREAMING.md, what --mem-budget covers).
  void release_map() { file_.release(); }

 private:
  size_t index_of(const TensorInfo& t) const;

  MappedFile file_;
  FileHeader header_{};
  nlohmann::json metadata_;
  ModelConfig config_;
  std::vector<TensorInfo> tensors_;
  std::vector<TensorEntry> entries_;
  std::vector<LayerRange> layers_;
  std::map<std::string, size_t, std::less<>> index_;
  std::unique_ptr<std::atomic<bool>[]> verified_;
};

}  // namespace lsb::format
