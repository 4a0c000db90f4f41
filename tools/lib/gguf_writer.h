// GGUF writing: the one encoder of the format in the project. `gguf_encode` holds the pieces
// (little-endian scalars, strings, metadata pairs, and the assembly of a whole file), which tests
// also use to build broken files; GgufWriter writes files the way llama.cpp's converter lays them
// out (metadata in the order added, tensors aligned to 32 inside the data section); and
// write_gguf_from_source converts a model (`lsb convert`, the llama.cpp peer, tests).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "io/gguf.h"
#include "io/tensor_source.h"

namespace lsb {

namespace gguf_encode {

using Bytes = std::vector<uint8_t>;
void put(Bytes& out, uint64_t v, int nbytes);  // little-endian
void put_string(Bytes& out, std::string_view s);  // u64 length, then the bytes
// The start of one metadata pair: key, then its u32 type; the value follows.
void put_key(Bytes& out, std::string_view key, GgufType type);

struct TensorRecord {
  std::string name;
  uint32_t type = 0;
  std::vector<uint64_t> ne;       // innermost first
  Bytes data;                     // already in the type's layout
  std::optional<uint64_t> offset; // default: the next offset aligned to 32 after the previous tensor
  std::optional<uint32_t> n_dims; // default: ne.size()
};
struct Options {
  uint32_t version = 3;
  std::optional<uint64_t> n_tensors, n_kv;  // default: the real counts
};
struct File {
  Bytes bytes;
  // Where each structural piece ends: magic, version, tensor count, metadata count, each pair,
  // each tensor info, the data section's start, each tensor's data.
  std::vector<size_t> boundaries;
};
// The whole file from encoded metadata pairs and tensors. A tensor whose offset lies past the end
// of all the data keeps it only in its info (its bytes are not written).
File assemble(const std::vector<Bytes>& kvs, const std::vector<TensorRecord>& tensors, const Options& options = {});

}  // namespace gguf_encode

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
  gguf_encode::Bytes& pair(const std::string& key, GgufType type);
  std::vector<gguf_encode::Bytes> kvs_;  // encoded key/value pairs
  std::vector<gguf_encode::TensorRecord> tensors_;
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
