// Legacy llama2.c checkpoint (.bin): 7 little-endian int32 header fields (dim, hidden_dim,
// n_layers, n_heads, n_kv_heads, vocab_size — negative when the classifier is not shared —,
// seq_len), then fp32 arrays stacked over layers: token_embedding, rms_att, wq, wk, wv, wo,
// rms_ffn, w1, w2, w3, rms_final, two legacy RoPE tables (skipped), then wcls if not shared.
// Exposed per layer under canonical HF names (w1 = gate_proj, w2 = down_proj, w3 = up_proj);
// q/k stay in llama2.c's interleaved RoPE layout (config().rope_interleaved = true).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "io/mmap_file.h"
#include "io/tensor_source.h"

namespace lsb {

class Llama2cSource : public TensorSource {
 public:
  // Checks the header and that the file size is exactly what it implies; throws naming the file.
  explicit Llama2cSource(const std::string& path);

  const ModelConfig& config() const override { return config_; }
  const std::vector<TensorInfo>& tensors() const override { return tensors_; }
  std::span<const std::byte> data(const TensorInfo& t) const override;
  std::string describe() const override { return file_.path(); }
  std::string_view format_name() const override { return "llama2c"; }

 private:
  MappedFile file_;
  ModelConfig config_;
  std::vector<TensorInfo> tensors_;
  std::vector<uint64_t> offsets_;  // absolute file offset of each tensor, parallel to tensors_
  std::map<std::string, size_t, std::less<>> index_;
};

}  // namespace lsb
