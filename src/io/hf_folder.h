// A Hugging Face model folder: config.json plus model.safetensors, or
// model.safetensors.index.json naming the shards. Tensor names are already canonical.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "io/tensor_source.h"

namespace lsb {

class HfFolderSource : public TensorSource {
 public:
  // Reads config.json, the index (if any) and every shard header; throws lsb::Error naming the
  // offending file.
  explicit HfFolderSource(const std::string& folder);

  const ModelConfig& config() const override { return config_; }
  const std::vector<TensorInfo>& tensors() const override { return tensors_; }
  std::span<const std::byte> data(const TensorInfo& t) const override;
  TokenizerBlob tokenizer() const override;
  // "chat_template" of tokenizer_config.json: a string, or a list of {name, template} (the one
  // named "default", else the first). Throws naming the file when it is present but malformed.
  std::string chat_template() const override;
  std::string describe() const override { return folder_; }
  std::string_view format_name() const override { return "hf-folder"; }

 private:
  std::string folder_;
  ModelConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;  // each shard mapped once
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> shard_of_;   // tensor name -> index in shards_
};

}  // namespace lsb
