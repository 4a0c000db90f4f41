// Writes the seed corpora under fuzz/corpus/<parser>/ from real files in ../shared and tiny models
// built here with the project's own writers (the GGUF encoder and the safetensors writer of
// tools/lib, and compress for .lsb), each seed under 64 KB. Run by `scripts/fuzz.sh seeds` from
// the repository root: build-fuzz-seeds/lsb_fuzz_seeds CORPUS_DIR SHARED_DIR.
#include <unistd.h>

#include <bit>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "lib/gguf_writer.h"
#include "io/safetensors_writer.h"
#include "pipeline/compress.h"

namespace fs = std::filesystem;
using lsb::gguf_encode::Bytes;

namespace {

fs::path corpus;
std::mt19937 rng(1234);

std::string slurp(const fs::path& p, size_t max = SIZE_MAX) {
  std::ifstream f(p, std::ios::binary);
  if (!f) lsb::fail(p.string(), "cannot open");
  std::string s(std::istreambuf_iterator<char>(f), {});
  return s.substr(0, max);
}

void out(const std::string& parser, const std::string& name, const std::string& bytes) {
  if (bytes.size() >= 64 * 1024) lsb::fail(parser + "/" + name, "seed of {} bytes is over 64 KB", bytes.size());
  fs::create_directories(corpus / parser);
  std::ofstream(corpus / parser / name, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Tiny Llama: dim 32, hidden 64, 1 layer, 4 heads / 2 kv heads, vocab 32, 8 positions.
constexpr int kDim = 32, kHidden = 64, kKv = 16, kVocab = 32, kSeq = 8;
struct T {
  std::string hf, gguf;
  std::vector<int64_t> shape;
};
std::vector<T> tiny(bool tied) {
  std::vector<T> t = {{"model.embed_tokens.weight", "token_embd.weight", {kVocab, kDim}},
                      {"model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight", {kDim}},
                      {"model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", {kDim, kDim}},
                      {"model.layers.0.self_attn.k_proj.weight", "blk.0.attn_k.weight", {kKv, kDim}},
                      {"model.layers.0.self_attn.v_proj.weight", "blk.0.attn_v.weight", {kKv, kDim}},
                      {"model.layers.0.self_attn.o_proj.weight", "blk.0.attn_output.weight", {kDim, kDim}},
                      {"model.layers.0.post_attention_layernorm.weight", "blk.0.ffn_norm.weight", {kDim}},
                      {"model.layers.0.mlp.gate_proj.weight", "blk.0.ffn_gate.weight", {kHidden, kDim}},
                      {"model.layers.0.mlp.up_proj.weight", "blk.0.ffn_up.weight", {kHidden, kDim}},
                      {"model.layers.0.mlp.down_proj.weight", "blk.0.ffn_down.weight", {kDim, kHidden}},
                      {"model.norm.weight", "output_norm.weight", {kDim}}};
  if (!tied) t.push_back({"lm_head.weight", "output.weight", {kVocab, kDim}});
  return t;
}
int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}
std::vector<float> floats(int64_t n) {
  std::uniform_real_distribution<float> u(-0.1f, 0.1f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}
std::vector<std::byte> as_bytes(const std::vector<float>& v) {
  std::vector<std::byte> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

std::string safetensors(const std::vector<T>& ts, lsb::DType dt, const fs::path& tmp) {
  std::vector<lsb::SafetensorsEntry> entries;
  for (const T& t : ts) entries.push_back({t.hf, dt, t.shape});
  lsb::SafetensorsWriter w(tmp.string(), entries);
  for (const T& t : ts) {
    const std::vector<float> v = floats(numel(t.shape));
    if (dt == lsb::DType::F32) {
      w.write_tensor(t.hf, as_bytes(v));
    } else {
      w.write_tensor(t.hf, lsb::encode_ggml(v, dt == lsb::DType::F16 ? lsb::kGgmlF16 : lsb::kGgmlBF16, "seed"));
    }
  }
  w.finish();
  return slurp(tmp);
}

std::string llama2c(bool tied) {
  Bytes b;
  for (int32_t v : {kDim, kHidden, 1, 4, 2, tied ? kVocab : -kVocab, kSeq}) lsb::gguf_encode::put(b, uint32_t(v), 4);
  int64_t n = 0;
  for (const T& t : tiny(tied)) n += numel(t.shape);
  n += 2 * kSeq * (kDim / 4 / 2);  // the legacy RoPE tables
  for (float f : floats(n)) lsb::gguf_encode::put(b, std::bit_cast<uint32_t>(f), 4);
  return {b.begin(), b.end()};
}

// A llama.cpp-layout GGUF: matrices of ggml type `type`, norms F32, optionally a llama vocabulary.
std::string gguf(bool tied, uint32_t type, bool vocab, uint32_t version) {
  lsb::GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_u32("general.alignment", 32);
  w.add_u32("llama.context_length", kSeq);
  w.add_u32("llama.embedding_length", kDim);
  w.add_u32("llama.block_count", 1);
  w.add_u32("llama.feed_forward_length", kHidden);
  w.add_u32("llama.attention.head_count", 4);
  w.add_u32("llama.attention.head_count_kv", 2);
  w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.add_f32("llama.rope.freq_base", 10000.0f);
  if (vocab) {
    // <unk>, <s>, </s>, 256 byte pieces, then a few merges: llama conventions.
    std::vector<std::string> pieces = {"<unk>", "<s>", "</s>"};
    std::vector<float> scores(3, 0.0f);
    std::vector<int32_t> types = {2, 3, 3};
    for (int b = 0; b < 256; ++b) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      pieces.push_back(buf);
      scores.push_back(0.0f);
      types.push_back(6);
    }
    int i = 0;
    for (const char* p : {"\xE2\x96\x81", "e", "t", "a", "\xE2\x96\x81t", "he", "\xE2\x96\x81the", "o", "n"}) {
      pieces.push_back(p);
      scores.push_back(-float(i++));
      types.push_back(1);
    }
    w.add_string("tokenizer.ggml.model", "llama");
    w.add_string_array("tokenizer.ggml.tokens", pieces);
    w.add_f32_array("tokenizer.ggml.scores", scores);
    w.add_i32_array("tokenizer.ggml.token_type", types);
    w.add_u32("tokenizer.ggml.bos_token_id", 1);
    w.add_u32("tokenizer.ggml.eos_token_id", 2);
  }
  for (const T& t : tiny(tied)) {
    std::vector<uint64_t> ne;
    for (size_t d = t.shape.size(); d-- > 0;) ne.push_back(uint64_t(t.shape[d]));
    const uint32_t ty = t.shape.size() == 2 ? type : lsb::kGgmlF32;
    w.add_tensor(t.gguf, ty, ne, lsb::encode_ggml(floats(numel(t.shape)), ty, "seed"));
  }
  const std::vector<std::byte> b = w.bytes(version);
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR SHARED_DIR\n", argv[0]);
    return 2;
  }
  corpus = argv[1];
  const fs::path shared = argv[2];
  const fs::path tmp = fs::temp_directory_path() / ("lsb-seeds-" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  out("safetensors", "tiny_f32", safetensors(tiny(true), lsb::DType::F32, tmp / "a.safetensors"));
  out("safetensors", "tiny_bf16", safetensors(tiny(true), lsb::DType::BF16, tmp / "b.safetensors"));
  out("safetensors", "tiny_f16", safetensors({tiny(true).begin(), tiny(true).begin() + 3}, lsb::DType::F16,
                                             tmp / "c.safetensors"));
  out("safetensors", "gpt2_head_4k", slurp(shared / "models/gpt2-attn-proj/gpt2_attn_c_proj.safetensors", 4096));
  out("config", "bookworm-27m", slurp(shared / "models/bookworm-27m/config.json"));
  out("config", "tiny_tied",
      nlohmann::json{{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"}, {"hidden_size", 32},
                     {"intermediate_size", 64}, {"num_hidden_layers", 1}, {"num_attention_heads", 4},
                     {"num_key_value_heads", 2}, {"vocab_size", 32}, {"max_position_embeddings", 8},
                     {"rms_norm_eps", 1e-6}, {"rope_theta", 500000.0}, {"tie_word_embeddings", true}}
          .dump());
  out("config", "mistral",
      nlohmann::json{{"architectures", {"MistralForCausalLM"}}, {"model_type", "mistral"}, {"hidden_size", 64},
                     {"intermediate_size", 128}, {"num_hidden_layers", 2}, {"num_attention_heads", 8},
                     {"num_key_value_heads", 2}, {"vocab_size", 100}, {"max_position_embeddings", 64},
                     {"rms_norm_eps", 1e-5}, {"sliding_window", nullptr}}
          .dump());
  out("hf_index", "bookworm", slurp(shared / "models/bookworm-27m/model.safetensors.index.json"));
  out("hf_index", "harness_shard",
      nlohmann::json{{"metadata", {{"total_size", 544}}},
                     {"weight_map", {{"model.norm.weight", "shard.safetensors"},
                                     {"model.embed_tokens.weight", "shard.safetensors"}}}}
          .dump());
  out("llama2c", "tiny_tied", llama2c(true));
  out("llama2c", "tiny_untied", llama2c(false));
  out("llama2c", "stories260K_head", slurp(shared / "models/stories260K/stories260K.bin", 4096));
  out("llama2c_tokenizer", "tok512", slurp(shared / "models/stories260K/tok512.bin"));
  out("gguf", "tiny_f32_vocab", gguf(true, lsb::kGgmlF32, true, 3));
  out("gguf", "tiny_f16_untied", gguf(false, lsb::kGgmlF16, false, 3));
  out("gguf", "tiny_bf16_v2", gguf(true, lsb::kGgmlBF16, false, 2));
  out("gguf", "tiny_q8_0", gguf(true, lsb::kGgmlQ8_0, false, 3));
  // .lsb (format 2) from the tiny llama2.c checkpoint.
  const fs::path bin = tmp / "tiny.bin";
  { const std::string b = llama2c(true); std::ofstream(bin, std::ios::binary).write(b.data(), static_cast<std::streamsize>(b.size())); }
  for (const std::string scheme : {"lsb1", "q8", "paper"}) {
    lsb::CompressOptions o;
    o.scheme = scheme;
    const fs::path dst = tmp / ("tiny_" + scheme + ".lsb");
    lsb::compress_model(bin.string(), dst.string(), o);
    out("lsb", "tiny_v2_" + scheme, slurp(dst));
  }
  fs::remove_all(tmp);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "lsb_fuzz_seeds: %s\n", e.what());
  return 1;
}
