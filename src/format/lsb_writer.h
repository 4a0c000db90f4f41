// Streaming writer of .lsb files (docs/FORMAT.md). Tensors are appended one at a time to a
// temporary file beside the target (TARGET.tmp.<pid>); finish() writes the metadata, tokenizer,
// string table, directory and header, syncs, and renames the temporary file onto the target.
// If finish() is never reached (error, exception), the destructor removes the temporary file, so
// nothing ever appears at the target path unless it is complete.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "format/lsb_format.h"
#include "io/tensor_source.h"

namespace lsb::format {

struct LayerRange {
  int layer = 0;
  uint64_t offset = 0, size = 0;
};

// What a writer makes of a list of tensors, for planning a file to a byte budget: the exact
// size finish() returns for tensors of these sizes (in this order, with these layers), names and
// parameter texts of these lengths, this metadata (before finish() adds "layers") and tokenizer.
// tests/test_format.cpp checks it against files the writer makes.
struct PlannedTensor {
  int layer = -1;
  uint64_t bytes = 0;
  uint64_t name_size = 0, params_size = 0;
};
uint64_t planned_file_size(const std::vector<PlannedTensor>& tensors, const nlohmann::json& metadata,
                           uint64_t tokenizer_bytes);

class LsbWriter {
 public:
  // Creates the temporary file (O_EXCL); throws lsb::Error naming the path.
  explicit LsbWriter(std::string target_path);
  ~LsbWriter();
  LsbWriter(const LsbWriter&) = delete;
  LsbWriter& operator=(const LsbWriter&) = delete;

  const std::string& temp_path() const { return temp_path_; }
  // Name of the temporary file a writer for `target` creates in this process.
  static std::string temp_path_for(const std::string& target);

  void set_tokenizer(const TokenizerBlob& tok) { tokenizer_ = tok; }
  // Appends one tensor. `layer` is the transformer layer (-1 for others); a layer's tensors
  // must come one after another. The scheme's parameters are taken from `info.params`.
  void add_tensor(const TensorInfo& info, int layer, std::span<const std::byte> data);
  // Writes the small sections and the header; `metadata` gets "layers" added. Renames the
  // temporary file to the target. Returns the final file size.
  uint64_t finish(nlohmann::json metadata);
  // Removes the temporary file now (idempotent).
  void abort() noexcept;

 private:
  void write_at_end(const void* p, uint64_t n);
  void pad_to(uint64_t alignment);

  std::string target_, temp_path_;
  int fd_ = -1;
  bool done_ = false;
  uint64_t pos_ = 0;
  TokenizerBlob tokenizer_;
  std::string strings_;
  std::vector<TensorEntry> entries_;
  std::vector<std::string> names_;
  std::vector<LayerRange> layers_;
  int current_layer_ = -2;  // layer of the last tensor written (-2: none yet)
};

}  // namespace lsb::format
