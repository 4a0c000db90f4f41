// One interface over every checkpoint format: names, shapes, dtypes, and lazy access to bytes.
//
// Tensor names are canonical Hugging Face Llama names whatever the file format:
//   model.embed_tokens.weight                       (vocab, dim)
//   model.layers.{i}.input_layernorm.weight         (dim)
//   model.layers.{i}.self_attn.{q,k,v,o}_proj.weight
//   model.layers.{i}.post_attention_layernorm.weight
//   model.layers.{i}.mlp.{gate,up,down}_proj.weight
//   model.norm.weight                               (dim)
//   lm_head.weight                                  (vocab, dim), absent when tied
// Matrices are row-major (out_features, in_features); shape lists the outer dimension first.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/config.h"
#include "base/dtype.h"

namespace lsb {

struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;  // outer dimension first
  DType dtype = DType::F32;
  uint64_t nbytes = 0;         // bytes of the stored tensor (blob size for quantized types)
  // The scheme's parameters in canonical text form (quant/scheme.h); "" for dense types.
  std::string params;
  int64_t numel() const;
  // As a matrix: (rows, cols) = (shape[0], product of the rest); a vector is one row.
  int64_t rows() const { return shape.size() < 2 ? 1 : shape[0]; }
  int64_t cols() const { return shape.empty() ? 1 : (shape.size() < 2 ? shape[0] : numel() / shape[0]); }
};

// Which tokenizer a source carries, as raw bytes, so it can be embedded in a .lsb file.
struct TokenizerBlob {
  enum class Kind : uint8_t { None = 0, SentencePiece = 1, Llama2c = 2 } kind = Kind::None;
  std::string bytes;
  std::string origin;  // path it came from, for messages
};

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual const ModelConfig& config() const = 0;
  virtual const std::vector<TensorInfo>& tensors() const = 0;
  // Bytes of a tensor; the source stays the owner (usually a memory map). Nothing is read from
  // disk before this is called. Throws lsb::Error if the tensor does not exist.
  virtual std::span<const std::byte> data(const TensorInfo& t) const = 0;
  // Tokenizer found with the model (may be Kind::None).
  virtual TokenizerBlob tokenizer() const { return {}; }
  // The chat template that came with the model, as its authors wrote it (Jinja text from a
  // Hugging Face folder's tokenizer_config.json, GGUF's tokenizer.chat_template, kept in .lsb
  // metadata); "" when there is none.
  virtual std::string chat_template() const { return {}; }
  // Path or description used in error messages.
  virtual std::string describe() const = 0;
  // What kind of input this is: "hf-folder", "safetensors", "llama2c", "gguf", "lsb" (provenance).
  virtual std::string_view format_name() const = 0;

  const TensorInfo* find(std::string_view name) const;
  const TensorInfo& get(std::string_view name) const;  // throws naming the source
};

}  // namespace lsb
