// Reader for GGUF v2/v3 files (llama.cpp's format) holding a "llama" architecture model.
//
// Layout (little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count; metadata
// key/value pairs (string key, u32 type, value; arrays are u32 element type, u64 count, elements);
// tensor infos (string name, u32 n_dims, u64 ne[n_dims] innermost first, u32 ggml type, u64 offset
// relative to the data section); padding to general.alignment (default 32); the data section.
//
// Every count, length and offset is checked against the file size (overflow-checked) before
// anything is allocated or read. Tensors of type F32, F16 and BF16 are served from the memory
// map; Q8_0 tensors are dequantized to an owned F32 buffer the first time data() asks for them
// (so they are exposed as F32). Any other ggml type is refused at open, naming the tensor.
// llama.cpp tensor names are mapped to the canonical Hugging Face names (see tensor_source.h);
// q/k weights stay in the interleaved RoPE layout llama.cpp's converter gives them, so
// config().rope_interleaved is true. The vocabulary (tokenizer.ggml.model "llama") is exposed as
// a llama2.c tokenizer blob built from the embedded tokens and scores (see tokenizer()).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/mmap_file.h"
#include "io/tensor_source.h"

namespace lsb {

enum class GgufType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

// ggml tensor types lsb reads (values as in ggml.h).
inline constexpr uint32_t kGgmlF32 = 0, kGgmlF16 = 1, kGgmlQ8_0 = 8, kGgmlBF16 = 30;
inline constexpr uint64_t kGgmlQ8_0Block = 32;       // values per Q8_0 block
inline constexpr uint64_t kGgmlQ8_0BlockBytes = 34;  // f16 scale + 32 int8
// "Q4_K" for 12, "type 77" for an unknown value.
std::string ggml_type_name(uint32_t type);

// An array value. Numeric elements stay in the file (raw points into the map); strings are views
// into the map; nested arrays (one level) are held as GgufArray.
struct GgufArray {
  GgufType elem = GgufType::UINT8;
  uint64_t count = 0;
  std::span<const std::byte> raw;          // numeric and bool elements, count * element size
  std::vector<std::string_view> strings;   // elem == STRING
  std::vector<GgufArray> arrays;           // elem == ARRAY
};

struct GgufValue {
  GgufType type = GgufType::UINT8;
  uint64_t u = 0;       // unsigned integers and bool
  int64_t i = 0;        // signed integers
  double f = 0;         // floats
  std::string_view str; // STRING (view into the map)
  GgufArray arr;        // ARRAY
};

class GgufSource : public TensorSource {
 public:
  // Parses and checks the whole header, metadata and tensor infos; throws lsb::Error naming the file.
  explicit GgufSource(const std::string& path);

  const ModelConfig& config() const override { return config_; }
  const std::vector<TensorInfo>& tensors() const override { return tensors_; }
  std::span<const std::byte> data(const TensorInfo& t) const override;
  // The GGUF vocabulary as a llama2.c tokenizer.bin (pieces with U+2581 turned into spaces,
  // scores kept; control/unknown/unused pieces get a score that never wins a merge). llama2.c's
  // encode is the same algorithm as SentencePiece BPE / llama.cpp's llm_tokenizer_spm. Kind::None
  // when the file has no "llama" vocabulary; throws when the vocabulary breaks the llama
  // conventions that algorithm relies on (bos 1, eos 2, byte pieces <0x00>..<0xFF> at ids 3..258).
  TokenizerBlob tokenizer() const override;
  // Metadata "tokenizer.chat_template" when it is a string.
  std::string chat_template() const override;
  std::string describe() const override { return file_.path(); }
  std::string_view format_name() const override { return "gguf"; }

  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue, std::less<>>& metadata() const { return kv_; }
  // GGUF name of a tensor (e.g. "blk.0.attn_q.weight"), parallel to tensors().
  const std::vector<std::string>& gguf_names() const { return gguf_names_; }

 private:
  MappedFile file_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue, std::less<>> kv_;
  ModelConfig config_;
  std::vector<TensorInfo> tensors_;
  std::vector<std::string> gguf_names_;
  std::vector<uint32_t> types_;
  std::vector<uint64_t> offsets_;   // absolute file offset of each tensor
  std::vector<uint64_t> stored_;    // bytes stored in the file for each tensor
  std::map<std::string, size_t, std::less<>> index_;
  mutable std::mutex mutex_;
  mutable std::map<size_t, std::vector<float>> dequantized_;  // Q8_0 tensors, filled on first data()
};

// Canonical Hugging Face name of a llama.cpp tensor name ("blk.3.ffn_up.weight" ->
// "model.layers.3.mlp.up_proj.weight"); the name unchanged when it is not a llama tensor.
std::string gguf_to_hf_name(const std::string& gguf_name);

// Dequantizes Q8_0 blocks (nblocks * 34 bytes) into nblocks * 32 floats; throws naming `where`
// on a non-finite block scale.
void dequantize_q8_0(std::span<const std::byte> blocks, float* out, const std::string& where);

}  // namespace lsb
