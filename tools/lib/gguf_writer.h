// Minimal GGUF v3 writer, used by tests (and fuzz seeds) to produce files the way llama.cpp's
// convert_hf_to_gguf.py lays them out. Metadata is written in the order added; tensors are
// aligned to general.alignment (32) inside the data section.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/tensor_source.h"

namespace lsb {

class GgufWriter {
 public:
  void add_string(const std::string& key, const std::string& value);
  void add_u32(const std::string& key, uint32_t value);
  void add_i32(const std::string& key, int32_t value);
  void add_f32(const std::string& key, float value);
  void add_bool(const std::string& key, bool value);
  void add_string_array(const std::string& key, const std::vector<std::string>& values);
  void add_f32_array(const std::string& key, const std::vector<float>& values);
  void add_i32_array(const std::string& key, const std::vector<int32_t>& values);
  // ne is innermost first (ne[0] = row length), bytes already in the ggml type's layout.
  void add_tensor(const std::string& name, uint32_t ggml_type, std::vector<uint64_t> ne, std::vector<std::byte> bytes);
  // Writes the whole file; throws lsb::Error naming the path on I/O errors.
  void write(const std::string& path, uint32_t version = 3) const;
  // The file as bytes (what write() writes).
  std::vector<std::byte> bytes(uint32_t version = 3) const;

 private:
  struct Tensor {
    std::string name;
    uint32_t type;
    std::vector<uint64_t> ne;
    std::vector<std::byte> bytes;
  };
  std::vector<std::byte> kv_;  // encoded key/value pairs
  uint64_t n_kv_ = 0;
  std::vector<Tensor> tensors_;
};

// ggml encodings of float rows.
std::vector<std::byte> encode_ggml(const std::vector<float>& values, uint32_t ggml_type, const std::string& where);

// llama.cpp's q/k permutation (convert_hf_to_gguf.py LlamaModel.permute): rows of each head go
// from rotate-half order (i, i + head_dim/2) to interleaved pairs (2i, 2i+1).
std::vector<float> permute_rope_rows(const std::vector<float>& w, int64_t rows, int64_t cols, int n_heads);

// Converts a Hugging Face Llama model (source with rope_interleaved = false) to a GGUF file in
// llama.cpp's layout: llama.* keys, llama.cpp tensor names, permuted q/k, the SentencePiece
// vocabulary (tokenizer.ggml.model "llama", tokens, scores, token types, bos/eos) when
// `tokenizer` is a SentencePiece blob. Matrices are stored as `matrix_type` (F32, F16, BF16 or
// Q8_0); norms stay F32, as llama.cpp does.
void write_gguf_from_source(const TensorSource& src, const TokenizerBlob& tokenizer, const std::string& path,
                            uint32_t matrix_type);

}  // namespace lsb
