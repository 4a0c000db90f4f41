// The fuzz targets, one function per parser: the libFuzzer harnesses (fuzz_*.cpp) call them, and
// the normal test suite replays the saved corpora through them (tests/test_fuzz_replay.cpp).
// Each accepts any bytes: success or lsb::Error are fine; anything else (a crash, a sanitizer
// report, another exception escaping, a trap on a broken invariant) is a finding.
#pragma once
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include <xxhash.h>

#include "format/lsb_format.h"
#include "format/lsb_reader.h"
#include "io/gguf.h"
#include "io/hf_folder.h"
#include "io/llama2c.h"
#include "io/safetensors.h"
#include "base/config.h"
#include "base/error.h"
#include "model/model_tensors.h"
#include "model/tokenizer.h"
#include "serve/api.h"
#include "serve/chat_template.h"
#include "serve/stop_matcher.h"
#include "fuzz_util.h"

namespace lsbfuzz {

namespace detail {

inline constexpr char kConfig[] = R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":8,
"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"num_key_value_heads":1,"vocab_size":16,
"max_position_embeddings":32,"rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":true})";

// Minimal valid safetensors file with two F32 tensors.
inline std::string shard_bytes() {
  const std::string header =
      R"({"model.norm.weight":{"dtype":"F32","shape":[8],"data_offsets":[0,32]},)"
      R"("model.embed_tokens.weight":{"dtype":"F32","shape":[16,8],"data_offsets":[32,544]}})";
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += header;
  out.append(544, '\0');
  return out;
}

inline std::string folder() {
  static const std::string dir = [] {
    const std::string d = lsbfuzz::scratch_dir() + "/hf";
    std::filesystem::create_directories(d);
    std::ofstream(d + "/config.json") << kConfig;
    std::ofstream(d + "/shard.safetensors", std::ios::binary) << shard_bytes();
    return d;
  }();
  return dir;
}


using lsb::load_le;
using lsb::store_le;

inline bool inside(uint64_t off, uint64_t len, uint64_t size) { return off <= size && len <= size - off; }

inline void fix_checksums(std::vector<uint8_t>& buf) {
  namespace f = lsb::format;
  const uint64_t size = buf.size();
  if (size < f::kHeaderSize) return;
  auto* b = reinterpret_cast<std::byte*>(buf.data());
  store_le(b + 16, size, 8);  // file_size
  const uint64_t meta_off = load_le(b + 24, 8), meta_size = load_le(b + 32, 8);
  const uint64_t tok_off = load_le(b + 40, 8), tok_size = load_le(b + 48, 8);
  const uint64_t count = load_le(b + 60, 4);
  const uint64_t str_off = load_le(b + 64, 8), str_size = load_le(b + 72, 8);
  const uint64_t dir_off = load_le(b + 80, 8), dir_size = load_le(b + 88, 8);
  if (inside(dir_off, dir_size, size) && count <= dir_size / f::kEntrySize) {
    for (uint64_t i = 0; i < count; ++i) {
      std::byte* e = b + dir_off + i * f::kEntrySize;
      const uint64_t off = load_le(e + 64, 8), len = load_le(e + 72, 8);
      if (inside(off, len, size)) store_le(e + 80, XXH3_64bits(b + off, len), 8);
    }
  }
  if (!inside(meta_off, meta_size, size) || !inside(tok_off, tok_size, size) || !inside(str_off, str_size, size) ||
      !inside(dir_off, dir_size, size))
    return;
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  XXH3_64bits_update(st, b, f::kChecksumOffset);
  XXH3_64bits_update(st, b + meta_off, meta_size);
  XXH3_64bits_update(st, b + tok_off, tok_size);
  XXH3_64bits_update(st, b + str_off, str_size);
  XXH3_64bits_update(st, b + dir_off, dir_size);
  store_le(b + f::kChecksumOffset, XXH3_64bits_digest(st), 8);
  XXH3_freeState(st);
}

}  // namespace detail

// libFuzzer harness: one .safetensors file (header JSON, offsets, dtypes), then every tensor's bytes.
inline void safetensors(const uint8_t* data, size_t size) {
  const std::string path = lsbfuzz::write_input("model.safetensors", data, size);
  try {
    lsb::SafetensorsFile f(path);
    uint64_t sum = 0;
    for (const lsb::TensorInfo& t : f.tensors()) {
      auto bytes = f.data(t.name);
      if (bytes.size() != t.nbytes) __builtin_trap();
      for (std::byte b : bytes) sum += static_cast<uint8_t>(b);  // touches every byte: ASan checks the range
      (void)t.rows();
      (void)t.cols();
    }
    (void)sum;
  } catch (const lsb::Error&) {
  }
}

// libFuzzer harness: a Hugging Face config.json through config_from_hf_json (and back through
// config_to_json / config_from_json, the .lsb metadata path). JSON syntax errors are the JSON
// library's business and are not fuzzed further.
inline void config(const uint8_t* data, size_t size) {
  const auto j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return;
  try {
    const lsb::ModelConfig c = lsb::config_from_hf_json(j, "config.json");
    (void)c.n_params_estimate();
    const lsb::ModelConfig back = lsb::config_from_json(lsb::config_to_json(c), "round trip");
    if (back.dim != c.dim || back.n_layers != c.n_layers || back.vocab_size != c.vocab_size) __builtin_trap();
  } catch (const lsb::Error&) {
  }
  try {
    (void)lsb::config_from_json(j, "metadata config");
  } catch (const lsb::Error&) {
  }
}

// libFuzzer harness: model.safetensors.index.json of a Hugging Face folder. The folder holds a
// valid config.json and one small shard (shard.safetensors) so that a well-formed index gets as
// far as the cross-check of index against shards and the tensor validation.
// Minimal valid safetensors file with two F32 tensors.
inline void hf_index(const uint8_t* data, size_t size) {
  const std::string dir = detail::folder();
  {
    std::ofstream f(dir + "/model.safetensors.index.json", std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    lsb::HfFolderSource src(dir);
    for (const lsb::TensorInfo& t : src.tensors()) (void)src.data(t);
    lsb::validate_tensors(src);
  } catch (const lsb::Error&) {
  }
}

// libFuzzer harness: a llama2.c legacy checkpoint (.bin): header, layout, tensor ranges.
inline void llama2c(const uint8_t* data, size_t size) {
  const std::string path = lsbfuzz::write_input("model.bin", data, size);
  try {
    lsb::Llama2cSource src(path);
    for (const lsb::TensorInfo& t : src.tensors()) {
      auto bytes = src.data(t);
      if (bytes.size() != t.nbytes) __builtin_trap();
      if (!bytes.empty()) (void)bytes.back();
    }
    lsb::validate_tensors(src);
  } catch (const lsb::Error&) {
  }
}

// libFuzzer harness: llama2.c tokenizer.bin bytes through the loader, then encode (the merge
// loop) and decode of every id. The first byte of the input chooses nothing: the whole input is
// the file; the text encoded is fixed plus the file's last bytes, so odd UTF-8 reaches encode.
inline void llama2c_tokenizer(const uint8_t* data, size_t size) {
  lsb::TokenizerBlob blob;
  blob.kind = lsb::TokenizerBlob::Kind::Llama2c;
  blob.bytes.assign(reinterpret_cast<const char*>(data), size);
  blob.origin = "tokenizer.bin";
  try {
    auto tok = lsb::load_tokenizer(blob);
    std::string text = "Once upon a time, a caf\xC3\xA9 \xF0\x9F\x98\x80 \xFF\x80 x";
    text.append(blob.bytes, size > 16 ? size - 16 : 0, std::string::npos);
    std::vector<int> ids = tok->encode(text, true);
    for (int id : ids)
      if (id < 0 || id >= tok->vocab_size()) __builtin_trap();
    (void)tok->decode(ids);
    std::vector<int> all;
    for (int i = 0; i < tok->vocab_size() && i < 4096; ++i) all.push_back(i);
    (void)tok->decode(all);
  } catch (const lsb::Error&) {
  }
}

// libFuzzer harness: a .lsb file. Random bytes would almost never pass the header checksum, so
// before writing the input the harness recomputes the checksums the way the writer does (each
// tensor's data checksum, then the header checksum) whenever the ranges they cover lie inside
// the input; the fuzzer then reaches the directory, metadata and blob parsers.
inline void lsb_file(const uint8_t* data, size_t size) {
  std::vector<uint8_t> buf(data, data + size);
  detail::fix_checksums(buf);
  const std::string path = lsbfuzz::write_input("model.lsb", buf.data(), buf.size());
  try {
    lsb::format::LsbReader r(path);
    for (const lsb::TensorInfo& t : r.tensors()) (void)r.data(t);
    (void)r.tokenizer();
    lsb::validate_tensors(r);
  } catch (const lsb::Error&) {
  }
}

// libFuzzer harness: a GGUF file: header, metadata of every type, tensor infos, the llama config,
// name mapping, every tensor's bytes (Q8_0 dequantization included) and the vocabulary turned
// into a tokenizer that then encodes a fixed text.
inline void gguf(const uint8_t* data, size_t size) {
  const std::string path = lsbfuzz::write_input("model.gguf", data, size);
  try {
    lsb::GgufSource src(path);
    for (const lsb::TensorInfo& t : src.tensors()) {
      auto bytes = src.data(t);
      if (bytes.size() != t.nbytes) __builtin_trap();
      if (!bytes.empty()) (void)bytes.back();
    }
    try {
      lsb::validate_tensors(src);
    } catch (const lsb::Error&) {
    }
    const lsb::TokenizerBlob blob = src.tokenizer();
    if (blob.kind != lsb::TokenizerBlob::Kind::None) {
      auto tok = lsb::load_tokenizer(blob);
      (void)tok->decode(tok->encode("the cat \xC3\xA9\xFF", true));
    }
  } catch (const lsb::Error&) {
  }
}

// libFuzzer harness: an HTTP request body of lsb serve, through the parser of both endpoints
// (/v1/completions and /v1/chat/completions). A refusal must be an ApiError with a 4xx status and
// an error body that serialises; an accepted request must hold what the server relies on (at most
// 4 stop strings, a non-empty conversation that every chat template renders, a prompt of ids or
// text) and its response bodies must serialise whatever bytes it carries.
inline void request(const uint8_t* data, size_t size) {
  using namespace lsb::serve;
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  for (Endpoint ep : {Endpoint::Completions, Endpoint::ChatCompletions}) {
    CompletionRequest r;
    try {
      r = parse_request(body, ep);
    } catch (const ApiError& e) {
      if (e.status() < 400 || e.status() > 499) __builtin_trap();
      (void)dump(e.body());
      continue;
    }
    if (r.stop.size() > 4) __builtin_trap();
    for (const std::string& s : r.stop)
      if (s.empty()) __builtin_trap();
    if (r.temperature < 0 || r.temperature > 2 || !(r.top_p > 0 && r.top_p <= 1)) __builtin_trap();
    std::string text = r.prompt;
    if (ep == Endpoint::ChatCompletions) {
      if (r.messages.empty()) __builtin_trap();
      for (TemplateFamily f : all_template_families()) text += render_chat(f, r.messages).text();
    } else if (r.prompt_is_ids == r.prompt_ids.empty()) {
      __builtin_trap();
    }
    // The stop strings on the text, fed in pieces of 3 bytes: without a stop, everything comes out.
    StopMatcher m(r.stop);
    std::string out;
    for (size_t i = 0; i < text.size(); i += 3) out += m.feed(std::string_view(text).substr(i, 3));
    out += m.flush();
    if (!m.stopped() && out != text) __builtin_trap();
    if (m.stopped() && text.find(out) != 0) __builtin_trap();
    const ResponseMeta meta{"cmpl-x", 0, r.model, ep};
    (void)dump(completion_body(meta, text, "stop", {}, {}));
    (void)dump(chunk_body(meta, text, nullptr, true));
  }
}

}  // namespace lsbfuzz
