// Malformed-file matrix, in the spirit of llama.cpp's tests/test-gguf.cpp: GGUF, safetensors (in a
// Hugging Face folder), llama2.c and .lsb files broken one way each -- truncated at every
// structural boundary, absurd counts and lengths, overflowing shapes, duplicate names, offsets
// past the end, overlapping tensors, bad alignment, bad UTF-8, non-finite weights, mismatched
// shapes. Every case runs the CLI and checks: exit code 1 (not a signal), exactly one line on
// stderr that names the file and the problem, under 5 s, and a peak RSS bounded by the file size.
#include <sys/wait.h>

#include <cmath>
#include <algorithm>
#include <array>
#include <bit>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>

#include <gtest/gtest.h>

#include "base/fp16.h"
#include "lib/gguf_writer.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

// Every file is built with the project's one GGUF encoder (tools/lib/gguf_writer.h), whose
// pieces also write the other formats' little-endian fields.
using Bytes = lsb::gguf_encode::Bytes;
using lsb::gguf_encode::put;
void put_str(Bytes& b, const std::string& s) { lsb::gguf_encode::put_string(b, s); }
void patch(Bytes& b, size_t at, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) b.at(at + i) = uint8_t(v >> (8 * i));
}
std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 0.05f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}
void put_floats(Bytes& b, const std::vector<float>& v) {
  for (float f : v) put(b, std::bit_cast<uint32_t>(f), 4);
}

// Tiny Llama used by every format: dim 32, hidden 64, 1 layer, 4 heads / 2 kv heads (head_dim 8),
// vocab 264 (<unk>, <s>, </s>, 256 byte pieces, 5 merges), 16 positions, tied embeddings.
constexpr int kDim = 32, kHidden = 64, kKv = 16, kVocab = 264, kSeq = 16;
struct Tensor {
  std::string hf, gguf;
  std::vector<int64_t> shape;  // outer first
};
std::vector<Tensor> tiny_tensors() {
  return {{"model.embed_tokens.weight", "token_embd.weight", {kVocab, kDim}},
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
}
int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}
std::vector<float> tensor_values(const Tensor& t, uint32_t seed) {
  if (t.shape.size() == 1) return std::vector<float>(size_t(t.shape[0]), 1.0f);  // norms
  return random_floats(size_t(numel(t.shape)), seed);
}

// ---------------------------------------------------------------- GGUF
using GgufTensorSpec = lsb::gguf_encode::TensorRecord;
struct GgufSpec {
  lsb::gguf_encode::Options opts;  // version, count overrides
  std::vector<Bytes> kvs;
  std::vector<GgufTensorSpec> tensors;
};
lsb::gguf_encode::File encode_gguf(const GgufSpec& s) { return lsb::gguf_encode::assemble(s.kvs, s.tensors, s.opts); }

Bytes kv_str(const std::string& k, const std::string& v) {
  Bytes b;
  lsb::gguf_encode::put_key(b, k, lsb::GgufType::STRING);
  put_str(b, v);
  return b;
}
Bytes kv_u32(const std::string& k, uint32_t v) {
  Bytes b;
  lsb::gguf_encode::put_key(b, k, lsb::GgufType::UINT32);
  put(b, v, 4);
  return b;
}
Bytes kv_f32(const std::string& k, float v) {
  Bytes b;
  lsb::gguf_encode::put_key(b, k, lsb::GgufType::FLOAT32);
  put(b, std::bit_cast<uint32_t>(v), 4);
  return b;
}

GgufSpec tiny_gguf_spec() {
  GgufSpec s;
  s.kvs = {kv_str("general.architecture", "llama"),  kv_u32("general.alignment", 32),
           kv_u32("llama.context_length", kSeq),      kv_u32("llama.embedding_length", kDim),
           kv_u32("llama.block_count", 1),            kv_u32("llama.feed_forward_length", kHidden),
           kv_u32("llama.attention.head_count", 4),   kv_u32("llama.attention.head_count_kv", 2),
           kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f), kv_f32("llama.rope.freq_base", 10000.0f)};
  // Vocabulary, llama conventions.
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  for (int b = 0; b < 256; ++b) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    tokens.push_back(buf);
  }
  for (const char* p : {"\xE2\x96\x81", "t", "h", "e", "\xE2\x96\x81the"}) tokens.push_back(p);
  Bytes toks, scores, types;
  put_str(toks, "tokenizer.ggml.tokens");
  put(toks, 9, 4);
  put(toks, 8, 4);
  put(toks, tokens.size(), 8);
  put_str(scores, "tokenizer.ggml.scores");
  put(scores, 9, 4);
  put(scores, 6, 4);
  put(scores, tokens.size(), 8);
  put_str(types, "tokenizer.ggml.token_type");
  put(types, 9, 4);
  put(types, 5, 4);
  put(types, tokens.size(), 8);
  for (size_t i = 0; i < tokens.size(); ++i) {
    put_str(toks, tokens[i]);
    put(scores, std::bit_cast<uint32_t>(i < 259 ? 0.0f : -float(i - 259)), 4);
    put(types, i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1, 4);
  }
  s.kvs.push_back(kv_str("tokenizer.ggml.model", "llama"));
  s.kvs.push_back(toks);
  s.kvs.push_back(scores);
  s.kvs.push_back(types);
  uint32_t seed = 1;
  for (const Tensor& t : tiny_tensors()) {
    GgufTensorSpec g;
    g.name = t.gguf;
    for (size_t d = t.shape.size(); d-- > 0;) g.ne.push_back(uint64_t(t.shape[d]));
    put_floats(g.data, tensor_values(t, seed++));
    s.tensors.push_back(std::move(g));
  }
  return s;
}

GgufTensorSpec& tensor_named(GgufSpec& s, const std::string& name) {
  for (auto& t : s.tensors)
    if (t.name == name) return t;
  throw std::runtime_error("no tensor " + name);
}

// ---------------------------------------------------------------- safetensors in a HF folder
const char kConfig[] = R"({"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":32,
"intermediate_size":64,"num_hidden_layers":1,"num_attention_heads":4,"num_key_value_heads":2,"vocab_size":264,
"max_position_embeddings":16,"rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":true})";

struct StSpec {
  std::vector<Tensor> tensors = tiny_tensors();
  std::function<void(std::string& header_json)> edit_header;
  std::function<void(Bytes& data)> edit_data;
};
Bytes encode_safetensors(const StSpec& s) {
  std::string h = "{";
  Bytes data;
  uint32_t seed = 1;
  for (const Tensor& t : s.tensors) {
    const uint64_t begin = data.size();
    put_floats(data, tensor_values(t, seed++));
    std::string shape;
    for (int64_t d : t.shape) shape += (shape.empty() ? "" : ",") + std::to_string(d);
    h += (h.size() > 1 ? "," : "") + std::string("\"") + t.hf + "\":{\"dtype\":\"F32\",\"shape\":[" + shape +
         "],\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(data.size()) + "]}";
  }
  h += "}";
  if (s.edit_header) s.edit_header(h);
  if (s.edit_data) s.edit_data(data);
  Bytes b;
  put(b, h.size(), 8);
  b.insert(b.end(), h.begin(), h.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

// ---------------------------------------------------------------- llama2.c
Bytes encode_llama2c(std::array<int32_t, 7> h) {
  Bytes b;
  for (int32_t v : h) put(b, uint32_t(v), 4);
  if (h[0] == kDim && h[1] == kHidden && h[2] == 1) {
    // The real layout of the tiny model (tied): embedding, norms, matrices, final norm, RoPE tables.
    const size_t n = size_t(kVocab * kDim + kDim + kDim * kDim * 2 + kKv * kDim * 2 + kDim + 3 * kHidden * kDim + kDim +
                            2 * kSeq * 4);
    put_floats(b, random_floats(n, 7));
  }
  return b;
}
const std::array<int32_t, 7> kLlama2cHeader = {kDim, kHidden, 1, 4, 2, kVocab, kSeq};

// ---------------------------------------------------------------- running a case
struct Outcome {
  int exit_code = -1;
  std::string err;
  double seconds = 0;
  long max_rss_kb = -1;
};

#if defined(__SANITIZE_ADDRESS__)
constexpr long kBaseRssKb = 512 * 1024;  // ASan's shadow memory and quarantine
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr long kBaseRssKb = 512 * 1024;
#else
constexpr long kBaseRssKb = 64 * 1024;
#endif
#else
constexpr long kBaseRssKb = 64 * 1024;
#endif

Outcome run_cli(const std::string& args) {
  const fs::path d = lsbtest::temp_dir();
  const std::string rss = (d / "rss").string();
  const std::string cmd = "timeout -s KILL 20 /usr/bin/time -f %M -o " + rss + " " + lsbtest::lsb_exe() + " " + args +
                          " >" + (d / "out").string() + " 2>" + (d / "err").string() + " </dev/null";
  const auto t0 = std::chrono::steady_clock::now();
  const int st = std::system(cmd.c_str());
  Outcome o;
  o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  o.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  std::ifstream ef(d / "err");
  o.err.assign(std::istreambuf_iterator<char>(ef), {});
  // GNU time writes "Command exited with non-zero status N" (or "...terminated by signal N")
  // before the format line; the last line is %M.
  std::ifstream rf(rss);
  std::string line, last;
  while (std::getline(rf, line)) {
    if (!line.empty()) last = line;
    if (line.find("terminated by signal") != std::string::npos) o.exit_code = 128;
  }
  if (!last.empty() && std::isdigit(static_cast<unsigned char>(last[0]))) o.max_rss_kb = std::stol(last);
  return o;
}

struct Case {
  std::string name;
  // Writes the broken input under `dir`; returns {path to name in the message, CLI arguments}.
  std::function<std::pair<std::string, std::string>(const fs::path& dir)> make;
  std::string expect;  // substring of the one-line error
};

void write_file(const fs::path& p, const Bytes& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
}
void write_file(const fs::path& p, const std::string& s) { write_file(p, Bytes(s.begin(), s.end())); }

const std::string kRun = " -p 'the' -n 1 --temp 0 -t 1";

Case gguf_case(std::string name, std::function<void(GgufSpec&)> edit, std::string expect) {
  return {name,
          [edit](const fs::path& dir) {
            GgufSpec s = tiny_gguf_spec();
            if (edit) edit(s);
            const std::string p = (dir / "model.gguf").string();
            write_file(p, encode_gguf(s).bytes);
            return std::make_pair(p, "run " + p + kRun);
          },
          expect};
}
// Truncation of the valid tiny GGUF at its i-th structural boundary (minus `back` bytes).
Case gguf_truncated(std::string name, int boundary, size_t back, std::string expect) {
  return {name,
          [boundary, back](const fs::path& dir) {
            lsb::gguf_encode::File f = encode_gguf(tiny_gguf_spec());
            const size_t at = boundary < 0 ? f.boundaries[f.boundaries.size() + boundary] : f.boundaries[boundary];
            f.bytes.resize(at - back);
            const std::string p = (dir / "model.gguf").string();
            write_file(p, f.bytes);
            return std::make_pair(p, "run " + p + kRun);
          },
          expect};
}
Case gguf_bytes_case(std::string name, std::function<void(Bytes&)> edit, std::string expect) {
  return {name,
          [edit](const fs::path& dir) {
            Bytes b = encode_gguf(tiny_gguf_spec()).bytes;
            edit(b);
            const std::string p = (dir / "model.gguf").string();
            write_file(p, b);
            return std::make_pair(p, "run " + p + kRun);
          },
          expect};
}
Case st_case(std::string name, std::function<void(StSpec&)> edit, std::string expect,
             std::function<void(Bytes&)> edit_file = nullptr) {
  return {name,
          [edit, edit_file](const fs::path& dir) {
            StSpec s;
            if (edit) edit(s);
            Bytes b = encode_safetensors(s);
            if (edit_file) edit_file(b);
            const fs::path folder = dir / "hf";
            fs::create_directories(folder);
            write_file(folder / "config.json", std::string(kConfig));
            write_file(folder / "model.safetensors", b);
            return std::make_pair(folder.string(), "run " + folder.string() + kRun);
          },
          expect};
}
Case llama2c_case(std::string name, std::function<void(Bytes&)> edit, std::string expect,
                  std::array<int32_t, 7> header = kLlama2cHeader) {
  return {name,
          [edit, header](const fs::path& dir) {
            Bytes b = encode_llama2c(header);
            if (edit) edit(b);
            const std::string p = (dir / "model.bin").string();
            write_file(p, b);
            return std::make_pair(p, "run " + p + kRun);
          },
          expect};
}
// .lsb cases start from the tiny llama2.c model compressed by the CLI itself.
Case lsb_case(std::string name, std::function<void(Bytes&)> edit, std::string expect, std::string cmd = "run") {
  return {name,
          [edit, cmd](const fs::path& dir) {
            const std::string bin = (dir / "tiny.bin").string(), lsbf = (dir / "model.lsb").string();
            write_file(bin, encode_llama2c(kLlama2cHeader));
            auto r = lsbtest::run_lsb("compress " + bin + " -o " + lsbf + " --scheme q8 -t 1");
            EXPECT_EQ(r.exit_code, 0) << r.err;
            std::ifstream f(lsbf, std::ios::binary);
            Bytes b((std::istreambuf_iterator<char>(f)), {});
            f.close();
            edit(b);
            write_file(lsbf, b);
            return std::make_pair(lsbf, cmd + " " + lsbf + (cmd == "run" ? kRun : std::string(" --verify")));
          },
          expect};
}

uint64_t u64_at(const Bytes& b, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | b.at(at + i);
  return v;
}

std::vector<Case> all_cases() {
  std::vector<Case> c;
  // --- GGUF: truncation at every structural boundary (boundaries: 0 magic, 1 version, 2 tensor
  // count, 3 kv count, 4.. kvs, then infos, data start, each tensor's data).
  c.push_back(gguf_truncated("GgufTruncatedInMagic", 0, 2, "not a GGUF file"));
  c.push_back(gguf_truncated("GgufTruncatedAfterMagic", 0, 0, "version at offset 4 needs 4 bytes"));
  c.push_back(gguf_truncated("GgufTruncatedInTensorCount", 2, 3, "tensor count at offset 8 needs 8 bytes"));
  c.push_back(gguf_truncated("GgufTruncatedAfterCounts", 3, 0, "cannot fit in a file"));
  c.push_back(gguf_truncated("GgufTruncatedInSecondKv", 5, 3, "cannot fit in a file"));
  c.push_back(gguf_truncated("GgufTruncatedInTokenArray", 15, 100, "truncated file?"));
  c.push_back(gguf_truncated("GgufTruncatedInTensorInfos", -13, 5, "truncated file?"));
  c.push_back(gguf_truncated("GgufTruncatedInData", -1, 4, "lies past the end of the data section"));
  c.push_back(gguf_truncated("GgufTruncatedAtDataStart", -12, 0, "lies past the end of the data section"));
  // --- GGUF: absurd counts and sizes.
  c.push_back(gguf_case("GgufTensorCount2Pow60", [](GgufSpec& s) { s.opts.n_tensors = uint64_t(1) << 60; },
                        "tensor count 1152921504606846976 cannot fit"));
  c.push_back(gguf_case("GgufKvCount2Pow60", [](GgufSpec& s) { s.opts.n_kv = uint64_t(1) << 60; },
                        "metadata count 1152921504606846976 cannot fit"));
  c.push_back(gguf_bytes_case("GgufKeyLength2Pow63", [](Bytes& b) { patch(b, 24, uint64_t(1) << 63, 8); },
                              "metadata key at offset 24 has length 9223372036854775808"));
  c.push_back(gguf_case("GgufStringValueLength2Pow63",
                        [](GgufSpec& s) {
                          Bytes& kv = s.kvs[0];  // general.architecture = "llama"
                          patch(kv, 8 + 20 + 4, uint64_t(1) << 63, 8);
                        },
                        "has length 9223372036854775808"));
  c.push_back(gguf_case("GgufArrayCount2Pow62",
                        [](GgufSpec& s) {
                          Bytes& kv = s.kvs[11];  // tokenizer.ggml.tokens
                          patch(kv, 8 + 21 + 4 + 4, uint64_t(1) << 62, 8);
                        },
                        "array of 4611686018427387904 string elements does not fit"));
  c.push_back(gguf_case("GgufNestedArrayTooDeep",
                        [](GgufSpec& s) {
                          Bytes kv;
                          put_str(kv, "x.nested");
                          put(kv, 9, 4);
                          put(kv, 9, 4);  // array of arrays
                          put(kv, 1, 8);
                          put(kv, 9, 4);  // of arrays again
                          put(kv, 0, 8);
                          s.kvs.insert(s.kvs.begin(), kv);
                        },
                        "arrays nested more than one level"));
  c.push_back(gguf_case("GgufUnknownValueType",
                        [](GgufSpec& s) { patch(s.kvs[1], 8 + 17, 13, 4); }, "unknown value type 13"));
  c.push_back(gguf_case("GgufShapeProductOverflows",
                        [](GgufSpec& s) { tensor_named(s, "blk.0.attn_q.weight").ne = {1ull << 32, 1ull << 32, 1ull << 31}; },
                        "tensor 'blk.0.attn_q.weight': shape overflows"));
  c.push_back(gguf_case("GgufZeroDimension", [](GgufSpec& s) { tensor_named(s, "blk.0.attn_k.weight").ne = {32, 0}; },
                        "tensor 'blk.0.attn_k.weight': dimension 1 is 0"));
  c.push_back(gguf_case("GgufTooManyDims", [](GgufSpec& s) { tensor_named(s, "blk.0.attn_k.weight").n_dims = 1000; },
                        "tensor 'blk.0.attn_k.weight': 1000 dimensions"));
  c.push_back(gguf_case("GgufDuplicateTensorName",
                        [](GgufSpec& s) { tensor_named(s, "blk.0.attn_k.weight").name = "blk.0.attn_q.weight"; },
                        "tensor 'blk.0.attn_q.weight' appears twice"));
  c.push_back(gguf_case("GgufDuplicateKey", [](GgufSpec& s) { s.kvs.push_back(s.kvs[3]); },
                        "metadata key 'llama.embedding_length' appears twice"));
  c.push_back(gguf_case("GgufOffsetPastEnd", [](GgufSpec& s) { tensor_named(s, "output_norm.weight").offset = 1ll << 40; },
                        "tensor 'output_norm.weight' data [1099511627776, +128) lies past the end"));
  c.push_back(gguf_case("GgufOverlappingTensors",
                        [](GgufSpec& s) {
                          tensor_named(s, "blk.0.attn_v.weight").offset = 0;  // on top of token_embd
                        },
                        "overlap"));
  c.push_back(gguf_case("GgufMisalignedOffset", [](GgufSpec& s) { tensor_named(s, "blk.0.attn_q.weight").offset = 33804; },
                        "data offset 33804 is not a multiple of the alignment 32"));
  c.push_back(gguf_case("GgufAlignmentNotPowerOfTwo", [](GgufSpec& s) { s.kvs[1] = kv_u32("general.alignment", 48); },
                        "general.alignment 48 is not a power of two"));
  c.push_back(gguf_case("GgufBadUtf8TensorName",
                        [](GgufSpec& s) { tensor_named(s, "blk.0.attn_q.weight").name = "blk.0.attn_\xC0\xAF.weight"; },
                        "tensor 2: name is not valid UTF-8"));
  c.push_back(gguf_case("GgufUnsupportedTypeQ4K",
                        [](GgufSpec& s) {
                          auto& t = tensor_named(s, "blk.0.attn_q.weight");
                          t.type = 12;
                        },
                        "tensor 'blk.0.attn_q.weight' has type Q4_K, which lsb does not read (supported: F32, F16, "
                        "BF16, Q8_0)"));
  c.push_back(gguf_case("GgufVersion1", [](GgufSpec& s) { s.opts.version = 1; }, "GGUF version 1 is not supported"));
  c.push_back(gguf_case("GgufVersion9", [](GgufSpec& s) { s.opts.version = 9; }, "unsupported GGUF version 9"));
  c.push_back(gguf_case("GgufWrongArchitecture", [](GgufSpec& s) { s.kvs[0] = kv_str("general.architecture", "falcon"); },
                        "general.architecture is 'falcon'; lsb reads only 'llama' GGUF models"));
  c.push_back(gguf_case("GgufMissingEmbeddingLength", [](GgufSpec& s) { s.kvs.erase(s.kvs.begin() + 3); },
                        "missing metadata key 'llama.embedding_length'"));
  c.push_back(gguf_case("GgufHeadCountWrongType", [](GgufSpec& s) { s.kvs[6] = kv_str("llama.attention.head_count", "4"); },
                        "metadata 'llama.attention.head_count' should be an integer, got string"));
  c.push_back(gguf_case("GgufMismatchedShape",
                        [](GgufSpec& s) {
                          auto& t = tensor_named(s, "blk.0.attn_k.weight");
                          t.ne = {32, 8};
                          t.data.resize(32 * 8 * 4);
                        },
                        "model.layers.0.self_attn.k_proj.weight"));
  c.push_back(gguf_case("GgufLayerPastBlockCount",
                        [](GgufSpec& s) { tensor_named(s, "blk.0.ffn_up.weight").name = "blk.7.ffn_up.weight"; },
                        "tensor 'blk.7.ffn_up.weight' belongs to layer 7 but llama.block_count is 1"));
  c.push_back(gguf_case("GgufQ8_0NanScale",
                        [](GgufSpec& s) {
                          auto& t = tensor_named(s, "blk.0.attn_q.weight");
                          t.type = 8;
                          t.data.assign(32 * 34, 0);
                          patch(t.data, 34 * 5, 0x7e00, 2);  // NaN scale in block 5
                        },
                        "tensor 'blk.0.attn_q.weight': Q8_0 block 5 has a non-finite scale"));
  c.push_back(gguf_case("GgufQ8_0RowNotMultipleOf32",
                        [](GgufSpec& s) {
                          auto& t = tensor_named(s, "blk.0.ffn_down.weight");
                          t.type = 8;
                          t.ne = {48, 32};
                        },
                        "Q8_0 row length 48 is not a multiple of 32"));
  // --- safetensors (in a Hugging Face folder).
  c.push_back(st_case("SafetensorsHeaderLengthPastEnd", nullptr, "header length 1000000 past end of file",
                      [](Bytes& b) { patch(b, 0, 1000000, 8); }));
  c.push_back(st_case("SafetensorsHeaderLength2Pow63", nullptr, "header length 9223372036854775808 past end",
                      [](Bytes& b) { patch(b, 0, uint64_t(1) << 63, 8); }));
  c.push_back(st_case("SafetensorsTruncatedInHeader", nullptr, "past end of file", [](Bytes& b) { b.resize(100); }));
  c.push_back(st_case("SafetensorsTruncatedToFiveBytes", nullptr, "too short for a safetensors header",
                      [](Bytes& b) { b.resize(5); }));
  c.push_back(st_case("SafetensorsTruncatedInData", nullptr, "outside the file", [](Bytes& b) { b.resize(b.size() - 4); }));
  c.push_back(st_case("SafetensorsNotJson", [](StSpec& s) { s.edit_header = [](std::string& h) { h[0] = '['; }; },
                      "header is not valid JSON"));
  c.push_back(st_case("SafetensorsShapeOverflows",
                      [](StSpec& s) {
                        s.edit_header = [](std::string& h) {
                          const auto at = h.find("[32,32]");
                          h.replace(at, 7, "[4294967296,4294967296,65536]");
                        };
                      },
                      "overflows"));
  c.push_back(st_case("SafetensorsOffsetsDisagreeWithShape",
                      [](StSpec& s) {
                        s.edit_header = [](std::string& h) { h.replace(h.find("[32,32]"), 7, "[32,31]"); };
                      },
                      "needs 3968 bytes"));
  c.push_back(st_case("SafetensorsUnsupportedDtype",
                      [](StSpec& s) {
                        s.edit_header = [](std::string& h) { h.replace(h.find("\"F32\""), 5, "\"I64\""); };
                      },
                      "unsupported dtype 'I64'"));
  c.push_back(st_case("SafetensorsMissingTensor", [](StSpec& s) { s.tensors.erase(s.tensors.begin() + 5); },
                      "model.layers.0.self_attn.o_proj.weight"));
  c.push_back(st_case("SafetensorsMismatchedShape",
                      [](StSpec& s) { s.tensors[3].shape = {kDim, kDim}; }, "model.layers.0.self_attn.k_proj.weight"));
  // --- llama2.c
  c.push_back(llama2c_case("Llama2cTruncatedHeader", [](Bytes& b) { b.resize(10); }, "too short for a llama2.c header"));
  c.push_back(llama2c_case("Llama2cTruncatedWeights", [](Bytes& b) { b.resize(b.size() - 4); }, "truncated"));
  c.push_back(llama2c_case("Llama2cTrailingData", [](Bytes& b) { b.resize(b.size() + 4); }, "trailing data"));
  c.push_back(llama2c_case("Llama2cAbsurdDim", nullptr, "dim (hidden_size) = 1073741824 is larger",
                           {1 << 30, kHidden, 1, 4, 2, kVocab, kSeq}));
  c.push_back(llama2c_case("Llama2cNegativeLayers", nullptr, "header field n_layers = -1",
                           {kDim, kHidden, -1, 4, 2, kVocab, kSeq}));
  c.push_back(llama2c_case("Llama2cDimNotMultipleOfHeads", nullptr, "dim 32 is not a multiple of n_heads 5",
                           {kDim, kHidden, 1, 5, 5, kVocab, kSeq}));
  c.push_back(llama2c_case("Llama2cMoreKvHeadsThanHeads", nullptr, "must be a multiple of n_kv_heads",
                           {kDim, kHidden, 1, 4, 8, kVocab, kSeq}));
  // --- .lsb
  c.push_back(lsb_case("LsbTruncatedToHalf", [](Bytes& b) { b.resize(b.size() / 2); }, "truncated or extended"));
  c.push_back(lsb_case("LsbTruncatedInHeader", [](Bytes& b) { b.resize(100); }, ""));
  c.push_back(lsb_case("LsbBadMagic", [](Bytes& b) { b[0] = 'X'; }, "not an .lsb file"));
  c.push_back(lsb_case("LsbMetadataFlipped", [](Bytes& b) { b.at(u64_at(b, 24) + 3) ^= 0x20; }, "header checksum mismatch"));
  c.push_back(lsb_case("LsbTensorDataFlipped", [](Bytes& b) { b.at(u64_at(b, 96) + 10) ^= 0xff; }, "checksum mismatch in tensor",
                       "inspect"));
  c.push_back(lsb_case("LsbDirectoryPastEnd", [](Bytes& b) { patch(b, 80, uint64_t(1) << 62, 8); }, "lies past the end"));
  return c;
}

// Test names say which case failed; the default printer would dump the struct's bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class MalformedFile : public ::testing::TestWithParam<Case> {};

TEST_P(MalformedFile, FailsCleanlyWithOneLine) {
  const Case& k = GetParam();
  const fs::path dir = lsbtest::temp_dir();
  const auto [path, args] = k.make(dir);
  uint64_t size = 0;
  if (fs::is_directory(path)) {
    for (const auto& e : fs::directory_iterator(path)) size += fs::file_size(e.path());
  } else {
    size = fs::file_size(path);
  }
  const Outcome o = run_cli(args);
  EXPECT_EQ(o.exit_code, 1) << "stderr: " << o.err;
  EXPECT_LT(o.seconds, 5.0);
  // One line: "lsb: error: PATH...: problem".
  EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
  EXPECT_EQ(o.err.rfind("lsb: error: " + path, 0), 0u) << o.err;
  EXPECT_NE(o.err.find(k.expect), std::string::npos) << "expected '" << k.expect << "' in: " << o.err;
  ASSERT_GT(o.max_rss_kb, 0) << "no RSS measurement";
  EXPECT_LT(o.max_rss_kb, kBaseRssKb + long(2 * size / 1024)) << "peak RSS " << o.max_rss_kb << " KB for a file of "
                                                               << size << " bytes";
}

INSTANTIATE_TEST_SUITE_P(Malformed, MalformedFile, ::testing::ValuesIn(all_cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

// The unbroken inputs the cases start from are accepted, so each case fails for its own reason.
TEST(MalformedControl, UnbrokenTinyFilesLoad) {
  const fs::path dir = lsbtest::temp_dir();
  const std::string g = (dir / "ok.gguf").string();
  write_file(g, encode_gguf(tiny_gguf_spec()).bytes);
  auto r = lsbtest::run_lsb("run " + g + kRun);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const fs::path hf = dir / "hf";
  fs::create_directories(hf);
  write_file(hf / "config.json", std::string(kConfig));
  write_file(hf / "model.safetensors", encode_safetensors({}));
  // No tokenizer in the folder: open it through compress instead of run.
  const std::string out = (dir / "ok.lsb").string();
  r = lsbtest::run_lsb("compress " + hf.string() + " -o " + out + " --scheme q8 -t 1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const std::string bin = (dir / "ok.bin").string();
  write_file(bin, encode_llama2c(kLlama2cHeader));
  r = lsbtest::run_lsb("compress " + bin + " -o " + (dir / "ok2.lsb").string() + " --scheme q8 -t 1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = lsbtest::run_lsb("inspect " + (dir / "ok2.lsb").string() + " --verify");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// Non-finite weights: lsb compress refuses them naming the tensor (quantized schemes), and the
// GGUF reader refuses non-finite Q8_0 scales (above). `lsb run` does not scan dense weights.
TEST(MalformedNonFinite, CompressRefusesNanWeightNamingTensor) {
  const fs::path dir = lsbtest::temp_dir();
  for (float bad : {std::nanf(""), INFINITY}) {
    GgufSpec s = tiny_gguf_spec();
    patch(tensor_named(s, "blk.0.ffn_up.weight").data, 4 * 70, std::bit_cast<uint32_t>(bad), 4);
    const std::string g = (dir / "nan.gguf").string();
    write_file(g, encode_gguf(s).bytes);
    for (const char* scheme : {"q8", "lsb1"}) {
      const Outcome o = run_cli("compress " + g + " -o " + (dir / "nan.lsb").string() + " --scheme " + scheme + " -t 1");
      EXPECT_EQ(o.exit_code, 1) << scheme << ": " << o.err;
      EXPECT_EQ(std::count(o.err.begin(), o.err.end(), '\n'), 1) << o.err;
      EXPECT_NE(o.err.find("model.layers.0.mlp.up_proj.weight"), std::string::npos) << o.err;
      EXPECT_NE(o.err.find("not finite"), std::string::npos) << o.err;
      EXPECT_FALSE(fs::exists(dir / "nan.lsb"));
    }
  }
}

}  // namespace
