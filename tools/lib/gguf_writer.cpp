#include "lib/gguf_writer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "base/fp16.h"
#include "base/error.h"
#include "base/le.h"
#include "quant/scheme.h"

namespace lsb {

namespace {

constexpr uint64_t kAlignment = 32;

using gguf_encode::Bytes;
using gguf_encode::put;
using gguf_encode::put_string;

void append(std::vector<std::byte>& out, uint64_t v, int nbytes) { append_le(out, v, nbytes); }

// Q8_0 as llama.cpp's quantize_row_q8_0_ref: per block of 32, d = max|x| / 127 stored as f16,
// q = round(x / d).
void quantize_q8_0(const float* x, uint64_t n, std::vector<std::byte>& out) {
  for (uint64_t b = 0; b < n / kGgmlQ8_0Block; ++b) {
    const float* v = x + b * kGgmlQ8_0Block;
    float amax = 0;
    for (uint64_t k = 0; k < kGgmlQ8_0Block; ++k) amax = std::max(amax, std::fabs(v[k]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    append(out, f32_to_f16(d), 2);
    for (uint64_t k = 0; k < kGgmlQ8_0Block; ++k)
      out.push_back(static_cast<std::byte>(static_cast<int8_t>(std::lround(v[k] * id))));
  }
}

}  // namespace

namespace gguf_encode {

void put(Bytes& out, uint64_t v, int nbytes) { append_le(out, v, nbytes); }

void put_string(Bytes& out, std::string_view s) {
  put(out, s.size(), 8);
  out.insert(out.end(), s.begin(), s.end());
}

void put_key(Bytes& out, std::string_view key, GgufType type) {
  put_string(out, key);
  put(out, static_cast<uint32_t>(type), 4);
}

File assemble(const std::vector<Bytes>& kvs, const std::vector<TensorRecord>& tensors, const Options& o) {
  File f;
  Bytes& b = f.bytes;
  for (char c : {'G', 'G', 'U', 'F'}) b.push_back(static_cast<uint8_t>(c));
  f.boundaries.push_back(b.size());
  put(b, o.version, 4);
  f.boundaries.push_back(b.size());
  put(b, o.n_tensors.value_or(tensors.size()), 8);
  f.boundaries.push_back(b.size());
  put(b, o.n_kv.value_or(kvs.size()), 8);
  f.boundaries.push_back(b.size());
  for (const Bytes& kv : kvs) {
    b.insert(b.end(), kv.begin(), kv.end());
    f.boundaries.push_back(b.size());
  }
  uint64_t next = 0, all_data = 0;  // all_data: the data of every tensor, back to back, aligned
  std::vector<uint64_t> offsets;
  for (const TensorRecord& t : tensors) {
    put_string(b, t.name);
    put(b, t.n_dims.value_or(static_cast<uint32_t>(t.ne.size())), 4);
    for (uint64_t n : t.ne) put(b, n, 8);
    put(b, t.type, 4);
    const uint64_t at = t.offset.value_or(next);
    put(b, at, 8);
    offsets.push_back(at);
    next = std::max(next, (at + t.data.size() + kAlignment - 1) / kAlignment * kAlignment);
    all_data += (t.data.size() + kAlignment - 1) / kAlignment * kAlignment;
    f.boundaries.push_back(b.size());
  }
  while (b.size() % kAlignment) b.push_back(0);
  const size_t data_start = b.size();
  f.boundaries.push_back(data_start);
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (offsets[i] > all_data) continue;  // an offset past all the data lives only in the tensor info
    if (b.size() < data_start + offsets[i]) b.resize(data_start + offsets[i], 0);
    if (b.size() == data_start + offsets[i]) b.insert(b.end(), tensors[i].data.begin(), tensors[i].data.end());
    f.boundaries.push_back(b.size());
  }
  return f;
}

}  // namespace gguf_encode

Bytes& GgufWriter::pair(const std::string& key, GgufType type) {
  kvs_.emplace_back();
  gguf_encode::put_key(kvs_.back(), key, type);
  return kvs_.back();
}

void GgufWriter::add_string(const std::string& key, const std::string& value) {
  put_string(pair(key, GgufType::STRING), value);
}
void GgufWriter::add_u32(const std::string& key, uint32_t value) { put(pair(key, GgufType::UINT32), value, 4); }
void GgufWriter::add_i32(const std::string& key, int32_t value) {
  put(pair(key, GgufType::INT32), static_cast<uint32_t>(value), 4);
}
void GgufWriter::add_f32(const std::string& key, float value) {
  put(pair(key, GgufType::FLOAT32), std::bit_cast<uint32_t>(value), 4);
}
void GgufWriter::add_bool(const std::string& key, bool value) { put(pair(key, GgufType::BOOL), value ? 1 : 0, 1); }
void GgufWriter::add_string_array(const std::string& key, const std::vector<std::string>& values) {
  Bytes& b = pair(key, GgufType::ARRAY);
  put(b, static_cast<uint32_t>(GgufType::STRING), 4);
  put(b, values.size(), 8);
  for (const std::string& s : values) put_string(b, s);
}
void GgufWriter::add_f32_array(const std::string& key, const std::vector<float>& values) {
  Bytes& b = pair(key, GgufType::ARRAY);
  put(b, static_cast<uint32_t>(GgufType::FLOAT32), 4);
  put(b, values.size(), 8);
  for (float f : values) put(b, std::bit_cast<uint32_t>(f), 4);
}
void GgufWriter::add_i32_array(const std::string& key, const std::vector<int32_t>& values) {
  Bytes& b = pair(key, GgufType::ARRAY);
  put(b, static_cast<uint32_t>(GgufType::INT32), 4);
  put(b, values.size(), 8);
  for (int32_t v : values) put(b, static_cast<uint32_t>(v), 4);
}

void GgufWriter::add_tensor(const std::string& name, uint32_t ggml_type, std::vector<uint64_t> ne,
                            std::vector<std::byte> bytes) {
  gguf_encode::TensorRecord t{name, ggml_type, std::move(ne), {}, {}, {}};
  t.data.resize(bytes.size());
  std::memcpy(t.data.data(), bytes.data(), bytes.size());
  tensors_.push_back(std::move(t));
}

std::vector<std::byte> GgufWriter::bytes(uint32_t version) const {
  gguf_encode::Options o;
  o.version = version;
  const gguf_encode::File f = gguf_encode::assemble(kvs_, tensors_, o);
  std::vector<std::byte> out(f.bytes.size());
  std::memcpy(out.data(), f.bytes.data(), f.bytes.size());
  return out;
}

void GgufWriter::write(const std::string& path, uint32_t version) const {
  const std::vector<std::byte> b = bytes(version);
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) fail(path, "cannot create: {}", std::strerror(errno));
  const bool ok = std::fwrite(b.data(), 1, b.size(), f) == b.size();
  if (std::fclose(f) != 0 || !ok) fail(path, "write failed");
}

std::vector<std::byte> encode_ggml(const std::vector<float>& values, uint32_t ggml_type, const std::string& where) {
  std::vector<std::byte> out;
  switch (ggml_type) {
    case kGgmlF32:
      for (float f : values) append(out, std::bit_cast<uint32_t>(f), 4);
      break;
    case kGgmlF16:
      for (float f : values) append(out, f32_to_f16(f), 2);
      break;
    case kGgmlBF16:
      for (float f : values) append(out, f32_to_bf16(f), 2);
      break;
    case kGgmlQ8_0:
      if (values.size() % kGgmlQ8_0Block) fail(where, "Q8_0 needs a multiple of {} values", kGgmlQ8_0Block);
      quantize_q8_0(values.data(), values.size(), out);
      break;
    default:
      fail(where, "cannot write ggml type {}", ggml_type_name(ggml_type));
  }
  return out;
}

std::vector<float> permute_rope_rows(const std::vector<float>& w, int64_t rows, int64_t cols, int n_heads) {
  const int64_t head_dim = rows / n_heads, half = head_dim / 2;
  std::vector<float> out(w.size());
  // w.reshape(n_heads, 2, half, cols).swapaxes(1, 2): new row h*hd + 2*i + j = old row h*hd + j*half + i.
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j)
        std::memcpy(&out[size_t((h * head_dim + 2 * i + j) * cols)], &w[size_t((h * head_dim + j * half + i) * cols)],
                    size_t(cols) * sizeof(float));
  return out;
}

void write_gguf_from_source(const TensorSource& src, const TokenizerBlob& tokenizer, const std::string& path,
                            uint32_t matrix_type) {
  const ModelConfig& c = src.config();
  if (c.rope_interleaved) fail(src.describe(), "expected a Hugging Face (rotate-half) model to convert to GGUF");
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_string("general.name", "lsb test conversion");
  w.add_u32("general.alignment", uint32_t(kAlignment));
  w.add_u32("llama.context_length", uint32_t(c.max_seq_len));
  w.add_u32("llama.embedding_length", uint32_t(c.dim));
  w.add_u32("llama.block_count", uint32_t(c.n_layers));
  w.add_u32("llama.feed_forward_length", uint32_t(c.hidden_dim));
  w.add_u32("llama.rope.dimension_count", uint32_t(c.head_dim));
  w.add_u32("llama.attention.head_count", uint32_t(c.n_heads));
  w.add_u32("llama.attention.head_count_kv", uint32_t(c.n_kv_heads));
  w.add_f32("llama.attention.layer_norm_rms_epsilon", c.norm_eps);
  w.add_f32("llama.rope.freq_base", c.rope_theta);
  w.add_u32("general.file_type", matrix_type == kGgmlF32 ? 0 : matrix_type == kGgmlF16 ? 1 : matrix_type == kGgmlQ8_0 ? 7 : 32);
  if (tokenizer.kind == TokenizerBlob::Kind::SentencePiece) {
    sentencepiece::SentencePieceProcessor sp;
    if (!sp.LoadFromSerializedProto(tokenizer.bytes).ok()) fail(tokenizer.origin, "not a SentencePiece model");
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> types;
    for (int id = 0; id < sp.GetPieceSize(); ++id) {
      tokens.push_back(sp.IdToPiece(id));
      scores.push_back(sp.GetScore(id));
      // llama.cpp's token types: 1 normal, 2 unknown, 3 control, 5 unused, 6 byte.
      types.push_back(sp.IsUnknown(id) ? 2 : sp.IsControl(id) ? 3 : sp.IsUnused(id) ? 5 : sp.IsByte(id) ? 6 : 1);
    }
    w.add_string("tokenizer.ggml.model", "llama");
    w.add_string_array("tokenizer.ggml.tokens", tokens);
    w.add_f32_array("tokenizer.ggml.scores", scores);
    w.add_i32_array("tokenizer.ggml.token_type", types);
    w.add_u32("tokenizer.ggml.bos_token_id", uint32_t(c.bos_id));
    w.add_u32("tokenizer.ggml.eos_token_id", uint32_t(c.eos_id));
  }

  auto add = [&](const std::string& hf, const std::string& gguf, uint32_t type, int permute_heads) {
    const TensorInfo& t = src.get(hf);
    std::vector<float> v = quant::tensor_to_float(t, src.data(t));
    if (permute_heads > 0) v = permute_rope_rows(v, t.rows(), t.cols(), permute_heads);
    std::vector<uint64_t> ne;
    for (size_t d = t.shape.size(); d-- > 0;) ne.push_back(uint64_t(t.shape[d]));
    w.add_tensor(gguf, type, ne, encode_ggml(v, type, src.describe() + ": " + hf));
  };
  add("model.embed_tokens.weight", "token_embd.weight", matrix_type, 0);
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string hf = "model.layers." + std::to_string(l) + ".";
    const std::string g = "blk." + std::to_string(l) + ".";
    add(hf + "input_layernorm.weight", g + "attn_norm.weight", kGgmlF32, 0);
    add(hf + "self_attn.q_proj.weight", g + "attn_q.weight", matrix_type, c.n_heads);
    add(hf + "self_attn.k_proj.weight", g + "attn_k.weight", matrix_type, c.n_kv_heads);
    add(hf + "self_attn.v_proj.weight", g + "attn_v.weight", matrix_type, 0);
    add(hf + "self_attn.o_proj.weight", g + "attn_output.weight", matrix_type, 0);
    add(hf + "post_attention_layernorm.weight", g + "ffn_norm.weight", kGgmlF32, 0);
    add(hf + "mlp.gate_proj.weight", g + "ffn_gate.weight", matrix_type, 0);
    add(hf + "mlp.up_proj.weight", g + "ffn_up.weight", matrix_type, 0);
    add(hf + "mlp.down_proj.weight", g + "ffn_down.weight", matrix_type, 0);
  }
  add("model.norm.weight", "output_norm.weight", kGgmlF32, 0);
  if (!c.tie_embeddings) add("lm_head.weight", "output.weight", matrix_type, 0);
  w.write(path);
}

}  // namespace lsb
