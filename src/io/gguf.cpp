#include "io/gguf.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>

#include "base/fp16.h"
#include "base/error.h"
#include "base/le.h"
#include "base/utf8.h"
#include "io/llama2c_vocab.h"

namespace lsb {

namespace {

constexpr uint64_t kMaxStringBytes = 1ull << 24;   // keys, names and metadata strings
constexpr uint64_t kMaxTensorName = 256;           // ggml allows 64; leave room
constexpr uint32_t kMaxDims = 4;                   // GGML_MAX_DIMS
constexpr uint64_t kMaxAlignment = 1ull << 16;
constexpr float kNeverMergeScore = -1e30f;         // below the llama2.c tokenizer's merge floor

// Smallest encodings, used to bound counts by the bytes left before allocating anything.
constexpr uint64_t kMinKvBytes = 8 + 1 + 4 + 1;             // key length, 1-byte key, type, u8 value
constexpr uint64_t kMinTensorInfoBytes = 8 + 1 + 4 + 8 + 4 + 8;  // name, n_dims, one ne, type, offset

const char* type_name(GgufType t) {
  static const char* names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                "bool",  "string", "array", "uint64", "int64", "float64"};
  const auto i = static_cast<uint32_t>(t);
  return i < 13 ? names[i] : "unknown";
}

uint64_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
    case GgufType::UINT16: case GgufType::INT16: return 2;
    case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
    case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: return 8;
    default: return 0;
  }
}

// Bounds-checked little-endian cursor over the mapped file.
class Cursor {
 public:
  Cursor(std::span<const std::byte> bytes, const std::string& path) : b_(bytes), path_(path) {}
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return b_.size() - pos_; }

  std::span<const std::byte> take(uint64_t n, const char* what) {
    if (n > left())
      fail(path_, "{} at offset {} needs {} bytes but only {} remain (truncated file?)", what, pos_, n, left());
    auto s = b_.subspan(pos_, n);
    pos_ += n;
    return s;
  }
  uint64_t uint(int nbytes, const char* what) {
    return load_le(take(uint64_t(nbytes), what).data(), nbytes);
  }
  std::string_view string(const char* what, uint64_t max_len) {
    const uint64_t at = pos_;
    const uint64_t n = uint(8, what);
    if (n > max_len) fail(path_, "{} at offset {} has length {}, above the limit of {}", what, at, n, max_len);
    auto s = take(n, what);
    return {reinterpret_cast<const char*>(s.data()), s.size()};
  }

 private:
  std::span<const std::byte> b_;
  const std::string& path_;
  uint64_t pos_ = 0;
};

void read_scalar(Cursor& c, GgufType t, GgufValue& v, const char* what) {
  const uint64_t n = scalar_size(t);
  const uint64_t raw = c.uint(int(n), what);
  switch (t) {
    case GgufType::UINT8: case GgufType::UINT16: case GgufType::UINT32: case GgufType::UINT64: v.u = raw; break;
    case GgufType::BOOL: v.u = raw; break;
    case GgufType::INT8: v.i = int8_t(raw); break;
    case GgufType::INT16: v.i = int16_t(raw); break;
    case GgufType::INT32: v.i = int32_t(raw); break;
    case GgufType::INT64: v.i = int64_t(raw); break;
    case GgufType::FLOAT32: { uint32_t b = uint32_t(raw); float f; std::memcpy(&f, &b, 4); v.f = f; break; }
    case GgufType::FLOAT64: { double d; std::memcpy(&d, &raw, 8); v.f = d; break; }
    default: break;
  }
}

void read_array(Cursor& c, GgufArray& a, int depth, const std::string& key, const std::string& path) {
  const uint32_t et = uint32_t(c.uint(4, "array element type"));
  if (et > uint32_t(GgufType::FLOAT64)) fail(path, "metadata '{}': unknown array element type {}", key, et);
  a.elem = GgufType(et);
  a.count = c.uint(8, "array length");
  uint64_t min_elem = scalar_size(a.elem);
  if (a.elem == GgufType::STRING) min_elem = 8;
  if (a.elem == GgufType::ARRAY) {
    if (depth > 0) fail(path, "metadata '{}': arrays nested more than one level are not supported", key);
    min_elem = 12;
  }
  // Each element takes at least min_elem bytes: a count the file cannot hold is refused before
  // anything is reserved.
  if (a.count > c.left() / min_elem)
    fail(path, "metadata '{}': array of {} {} elements does not fit in the {} bytes left", key, a.count,
         type_name(a.elem), c.left());
  if (a.elem == GgufType::STRING) {
    a.strings.reserve(a.count);
    for (uint64_t i = 0; i < a.count; ++i) a.strings.push_back(c.string("array string", kMaxStringBytes));
  } else if (a.elem == GgufType::ARRAY) {
    a.arrays.resize(a.count);
    for (uint64_t i = 0; i < a.count; ++i) read_array(c, a.arrays[i], depth + 1, key, path);
  } else {
    a.raw = c.take(a.count * min_elem, "array data");
  }
}

bool is_integer(GgufType t) {
  return t == GgufType::UINT8 || t == GgufType::INT8 || t == GgufType::UINT16 || t == GgufType::INT16 ||
         t == GgufType::UINT32 || t == GgufType::INT32 || t == GgufType::UINT64 || t == GgufType::INT64;
}
bool is_signed(GgufType t) {
  return t == GgufType::INT8 || t == GgufType::INT16 || t == GgufType::INT32 || t == GgufType::INT64;
}

// Bytes a tensor of a supported type occupies; 0 for a type lsb does not read.
uint64_t stored_bytes(uint32_t type, uint64_t numel, uint64_t ne0, const std::string& path, const std::string& name) {
  switch (type) {
    case kGgmlF32: return numel * 4;  // numel is bounded (< 2^60) by the caller
    case kGgmlF16:
    case kGgmlBF16: return numel * 2;
    case kGgmlQ8_0:
      if (ne0 % kGgmlQ8_0Block != 0)
        fail(path, "tensor '{}': Q8_0 row length {} is not a multiple of {}", name, ne0, kGgmlQ8_0Block);
      return numel / kGgmlQ8_0Block * kGgmlQ8_0BlockBytes;
    default: return 0;
  }
}

// "blk.N.rest" -> ("model.layers.N.", rest); llama.cpp names of the blocks' tensors.
struct NameMap {
  const char* gguf;
  const char* hf;
};
constexpr NameMap kBlockNames[] = {
    {"attn_norm.weight", "input_layernorm.weight"},   {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},     {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},     {"attn_output.weight", "self_attn.o_proj.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},      {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

}  // namespace

std::string ggml_type_name(uint32_t type) {
  static const char* names[] = {"F32",     "F16",    "Q4_0",   "Q4_1",    "Q4_2", "Q4_3",  "Q5_0",   "Q5_1",
                                "Q8_0",    "Q8_1",   "Q2_K",   "Q3_K",    "Q4_K", "Q5_K",  "Q6_K",   "Q8_K",
                                "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",  "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS",
                                "I8",      "I16",    "I32",    "I64",     "F64",  "IQ1_M", "BF16",   "Q4_0_4_4",
                                "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4"};
  if (type < sizeof(names) / sizeof(names[0])) return names[type];
  return fmt::format("type {}", type);
}

std::string gguf_to_hf_name(const std::string& g) {
  if (g == "token_embd.weight") return "model.embed_tokens.weight";
  if (g == "output_norm.weight") return "model.norm.weight";
  if (g == "output.weight") return "lm_head.weight";
  if (g.rfind("blk.", 0) == 0) {
    size_t i = 4;
    while (i < g.size() && g[i] >= '0' && g[i] <= '9') ++i;
    // Digits, then a dot; no leading zeros so that one layer has one spelling.
    if (i > 4 && i - 4 <= 6 && i < g.size() && g[i] == '.' && !(g[4] == '0' && i > 5)) {
      const std::string rest = g.substr(i + 1);
      for (const NameMap& m : kBlockNames)
        if (rest == m.gguf) return "model.layers." + g.substr(4, i - 4) + "." + m.hf;
    }
  }
  return g;
}

void dequantize_q8_0(std::span<const std::byte> blocks, float* out, const std::string& where) {
  const uint64_t n = blocks.size() / kGgmlQ8_0BlockBytes;
  for (uint64_t b = 0; b < n; ++b) {
    const std::byte* p = blocks.data() + b * kGgmlQ8_0BlockBytes;
    const float d = f16_to_f32(static_cast<uint16_t>(load_le(p, 2)));
    if (!std::isfinite(d)) fail(where, "Q8_0 block {} has a non-finite scale", b);
    for (uint64_t k = 0; k < kGgmlQ8_0Block; ++k)
      out[b * kGgmlQ8_0Block + k] = d * static_cast<float>(static_cast<int8_t>(p[2 + k]));
  }
}

GgufSource::GgufSource(const std::string& path) : file_(path) {
  const uint64_t size = file_.size();
  Cursor c(file_.bytes(), path);
  if (size < 4 || std::memcmp(file_.bytes().data(), "GGUF", 4) != 0) fail(path, "not a GGUF file (no GGUF magic)");
  c.take(4, "magic");
  version_ = uint32_t(c.uint(4, "version"));
  if (version_ == 1) fail(path, "GGUF version 1 is not supported (re-convert with a current llama.cpp)");
  if (version_ != 2 && version_ != 3) {
    if ((version_ & 0xffff) == 0 && (version_ >> 24) >= 2 && (version_ >> 24) <= 3)
      fail(path, "GGUF file is big-endian, which lsb does not read");
    fail(path, "unsupported GGUF version {} (supported: 2, 3)", version_);
  }
  const uint64_t n_tensors = c.uint(8, "tensor count");
  const uint64_t n_kv = c.uint(8, "metadata count");
  if (n_tensors > c.left() / kMinTensorInfoBytes)
    fail(path, "tensor count {} cannot fit in a file of {} bytes", n_tensors, size);
  if (n_kv > c.left() / kMinKvBytes) fail(path, "metadata count {} cannot fit in a file of {} bytes", n_kv, size);

  for (uint64_t k = 0; k < n_kv; ++k) {
    const std::string key(c.string("metadata key", kMaxStringBytes));
    if (key.empty()) fail(path, "metadata entry {} has an empty key", k);
    if (!valid_utf8(key)) fail(path, "metadata entry {}: key is not valid UTF-8", k);
    const uint32_t t = uint32_t(c.uint(4, "metadata type"));
    if (t > uint32_t(GgufType::FLOAT64)) fail(path, "metadata '{}': unknown value type {}", key, t);
    GgufValue v;
    v.type = GgufType(t);
    if (v.type == GgufType::STRING) {
      v.str = c.string("metadata string", kMaxStringBytes);
    } else if (v.type == GgufType::ARRAY) {
      read_array(c, v.arr, 0, key, path);
    } else {
      read_scalar(c, v.type, v, "metadata value");
    }
    if (!kv_.emplace(key, std::move(v)).second) fail(path, "metadata key '{}' appears twice", key);
  }

  // Typed metadata access.
  auto find = [&](std::string_view key) -> const GgufValue* {
    auto it = kv_.find(key);
    return it == kv_.end() ? nullptr : &it->second;
  };
  auto get_int = [&](std::string_view key, int64_t lo, int64_t hi, std::optional<int64_t> dflt) -> int64_t {
    const GgufValue* v = find(key);
    if (!v) {
      if (!dflt) fail(path, "missing metadata key '{}'", key);
      return *dflt;
    }
    if (!is_integer(v->type)) fail(path, "metadata '{}' should be an integer, got {}", key, type_name(v->type));
    const bool neg = is_signed(v->type) && v->i < 0;
    if (neg ? v->i < lo : (is_signed(v->type) ? uint64_t(v->i) : v->u) > uint64_t(hi))
      fail(path, "metadata '{}' = {} is out of range [{}, {}]", key,
           is_signed(v->type) ? fmt::format("{}", v->i) : fmt::format("{}", v->u), lo, hi);
    return is_signed(v->type) ? v->i : int64_t(v->u);
  };
  auto get_float = [&](std::string_view key, double dflt) -> double {
    const GgufValue* v = find(key);
    if (!v) return dflt;
    if (v->type != GgufType::FLOAT32 && v->type != GgufType::FLOAT64)
      fail(path, "metadata '{}' should be a float, got {}", key, type_name(v->type));
    if (!std::isfinite(v->f) || std::fabs(v->f) > double(std::numeric_limits<float>::max()))
      fail(path, "metadata '{}' = {} is not a finite float", key, v->f);
    return v->f;
  };

  if (const GgufValue* a = find("general.alignment")) {
    if (!is_integer(a->type)) fail(path, "general.alignment should be an integer, got {}", type_name(a->type));
    const int64_t al = get_int("general.alignment", 1, int64_t(kMaxAlignment), {});
    if (al <= 0 || (al & (al - 1)) != 0) fail(path, "general.alignment {} is not a power of two", al);
    alignment_ = uint64_t(al);
  }

  // Tensor infos.
  struct Raw {
    std::string name;
    uint32_t type;
    std::vector<uint64_t> ne;
    uint64_t offset, bytes, numel;
  };
  std::vector<Raw> raws;
  raws.reserve(n_tensors);
  std::map<std::string, size_t, std::less<>> seen;
  for (uint64_t k = 0; k < n_tensors; ++k) {
    Raw r;
    r.name = std::string(c.string("tensor name", kMaxTensorName));
    if (r.name.empty()) fail(path, "tensor {} has an empty name", k);
    if (!valid_utf8(r.name)) fail(path, "tensor {}: name is not valid UTF-8", k);
    if (!seen.emplace(r.name, k).second) fail(path, "tensor '{}' appears twice", r.name);
    const uint32_t nd = uint32_t(c.uint(4, "tensor n_dims"));
    if (nd < 1 || nd > kMaxDims) fail(path, "tensor '{}': {} dimensions (1..{} allowed)", r.name, nd, kMaxDims);
    r.numel = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      const uint64_t n = c.uint(8, "tensor dimension");
      if (n == 0) fail(path, "tensor '{}': dimension {} is 0", r.name, d);
      if (n > (uint64_t(1) << 60) / r.numel)
        fail(path, "tensor '{}': shape overflows (dimension {} is {})", r.name, d, n);
      r.numel *= n;
      r.ne.push_back(n);
    }
    r.type = uint32_t(c.uint(4, "tensor type"));
    r.offset = c.uint(8, "tensor offset");
    r.bytes = stored_bytes(r.type, r.numel, r.ne[0], path, r.name);
    if (r.bytes == 0)
      fail(path, "tensor '{}' has type {}, which lsb does not read (supported: F32, F16, BF16, Q8_0)", r.name,
           ggml_type_name(r.type));
    if (r.offset % alignment_ != 0)
      fail(path, "tensor '{}': data offset {} is not a multiple of the alignment {}", r.name, r.offset, alignment_);
    raws.push_back(std::move(r));
  }
  const uint64_t data_start = (c.pos() + alignment_ - 1) / alignment_ * alignment_;  // pos <= size: no overflow
  if (data_start > size && n_tensors > 0)
    fail(path, "data section would start at {}, past the end of the file ({} bytes)", data_start, size);
  const uint64_t data_size = data_start > size ? 0 : size - data_start;
  for (Raw& r : raws)
    if (r.offset > data_size || r.bytes > data_size - r.offset)
      fail(path, "tensor '{}' data [{}, +{}) lies past the end of the data section ({} bytes; truncated file?)", r.name,
           r.offset, r.bytes, data_size);
  {
    std::vector<const Raw*> by_off;
    for (const Raw& r : raws) by_off.push_back(&r);
    std::sort(by_off.begin(), by_off.end(), [](const Raw* a, const Raw* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_off.size(); ++i)
      if (by_off[i - 1]->offset + by_off[i - 1]->bytes > by_off[i]->offset)
        fail(path, "tensors '{}' and '{}' overlap", by_off[i - 1]->name, by_off[i]->name);
  }

  // Config from the llama.* keys.
  const GgufValue* arch = find("general.architecture");
  if (!arch) fail(path, "missing metadata key 'general.architecture'");
  if (arch->type != GgufType::STRING) fail(path, "general.architecture should be a string");
  if (arch->str != "llama")
    fail(path, "general.architecture is '{}'; lsb reads only 'llama' GGUF models", arch->str);
  constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
  ModelConfig& cfg = config_;
  cfg.arch = "llama";
  cfg.dim = int(get_int("llama.embedding_length", 1, kIntMax, {}));
  cfg.hidden_dim = int(get_int("llama.feed_forward_length", 1, kIntMax, {}));
  cfg.n_layers = int(get_int("llama.block_count", 1, kIntMax, {}));
  cfg.n_heads = int(get_int("llama.attention.head_count", 1, kIntMax, {}));
  cfg.n_kv_heads = int(get_int("llama.attention.head_count_kv", 1, kIntMax, cfg.n_heads));
  cfg.max_seq_len = int(get_int("llama.context_length", 1, kIntMax, 2048));
  cfg.head_dim = cfg.dim % cfg.n_heads == 0 ? cfg.dim / cfg.n_heads : 0;
  cfg.head_dim = int(get_int("llama.attention.key_length", 1, kIntMax, cfg.head_dim));
  cfg.norm_eps = float(get_float("llama.attention.layer_norm_rms_epsilon", 1e-5));
  cfg.rope_theta = float(get_float("llama.rope.freq_base", 10000.0));
  cfg.bos_id = int(get_int("tokenizer.ggml.bos_token_id", 0, kIntMax, 1));
  cfg.eos_id = int(get_int("tokenizer.ggml.eos_token_id", 0, kIntMax, 2));
  cfg.rope_interleaved = true;
  cfg.tie_embeddings = seen.find("output.weight") == seen.end();
  // Vocabulary size: explicit key, else the token list, else the embedding's rows.
  int64_t vocab = 0;
  if (find("llama.vocab_size")) {
    vocab = get_int("llama.vocab_size", 1, kIntMax, {});
  } else if (const GgufValue* toks = find("tokenizer.ggml.tokens"); toks && toks->type == GgufType::ARRAY) {
    vocab = int64_t(std::min<uint64_t>(toks->arr.count, uint64_t(kIntMax)));
  } else if (auto it = seen.find("token_embd.weight"); it != seen.end() && raws[it->second].ne.size() == 2) {
    vocab = int64_t(std::min<uint64_t>(raws[it->second].ne[1], uint64_t(kIntMax)));
  }
  cfg.vocab_size = int(vocab);
  cfg.validate(path);

  // Tensors under canonical names; GGUF dims are innermost first, ours outer first.
  for (size_t k = 0; k < raws.size(); ++k) {
    Raw& r = raws[k];
    TensorInfo t;
    t.name = gguf_to_hf_name(r.name);
    for (size_t d = r.ne.size(); d-- > 0;) t.shape.push_back(int64_t(r.ne[d]));
    switch (r.type) {
      case kGgmlF16: t.dtype = DType::F16; break;
      case kGgmlBF16: t.dtype = DType::BF16; break;
      default: t.dtype = DType::F32; break;  // F32, and Q8_0 once dequantized
    }
    t.nbytes = r.type == kGgmlQ8_0 ? r.numel * 4 : r.bytes;
    if (!index_.emplace(t.name, tensors_.size()).second)
      fail(path, "tensor '{}' (from '{}') appears twice", t.name, r.name);
    // Layer tensors must name a layer the config has.
    // (The file may also use HF-style names itself: read the digits, if any, without trusting them.)
    if (t.name.rfind("model.layers.", 0) == 0) {
      int64_t layer = 0;
      size_t i = 13;
      for (; i < t.name.size() && i < 13 + 9 && t.name[i] >= '0' && t.name[i] <= '9'; ++i)
        layer = layer * 10 + (t.name[i] - '0');
      if (i > 13 && layer >= cfg.n_layers)
        fail(path, "tensor '{}' belongs to layer {} but llama.block_count is {}", r.name, layer, cfg.n_layers);
    }
    tensors_.push_back(std::move(t));
    gguf_names_.push_back(r.name);
    types_.push_back(r.type);
    offsets_.push_back(data_start + r.offset);
    stored_.push_back(r.bytes);
  }
}

std::span<const std::byte> GgufSource::data(const TensorInfo& t) const {
  auto it = index_.find(t.name);
  if (it == index_.end()) fail(file_.path(), "no tensor named '{}'", t.name);
  const size_t i = it->second;
  const auto stored = file_.range(offsets_[i], stored_[i], "tensor data");
  if (types_[i] != kGgmlQ8_0) return stored;
  std::lock_guard<std::mutex> lock(mutex_);
  auto found = dequantized_.find(i);
  if (found == dequantized_.end()) {
    std::vector<float> out(tensors_[i].nbytes / 4);
    dequantize_q8_0(stored, out.data(), file_.path() + ": tensor '" + gguf_names_[i] + "'");
    found = dequantized_.emplace(i, std::move(out)).first;
  }
  return std::as_bytes(std::span<const float>(found->second));
}

std::string GgufSource::chat_template() const {
  auto it = kv_.find("tokenizer.chat_template");
  return it != kv_.end() && it->second.type == GgufType::STRING ? std::string(it->second.str) : std::string();
}

TokenizerBlob GgufSource::tokenizer() const {
  const std::string& path = file_.path();
  auto model = kv_.find("tokenizer.ggml.model");
  if (model == kv_.end() || model->second.type != GgufType::STRING || model->second.str != "llama") return {};
  auto toks = kv_.find("tokenizer.ggml.tokens");
  if (toks == kv_.end() || toks->second.type != GgufType::ARRAY || toks->second.arr.elem != GgufType::STRING)
    fail(path, "tokenizer.ggml.tokens should be an array of strings");
  const auto& pieces = toks->second.arr.strings;
  const uint64_t n = pieces.size();
  auto scores = kv_.find("tokenizer.ggml.scores");
  if (scores != kv_.end() && (scores->second.type != GgufType::ARRAY || scores->second.arr.elem != GgufType::FLOAT32 ||
                              scores->second.arr.count != n))
    fail(path, "tokenizer.ggml.scores should be {} float32 values", n);
  auto types = kv_.find("tokenizer.ggml.token_type");
  if (types != kv_.end() && (types->second.type != GgufType::ARRAY || types->second.arr.elem != GgufType::INT32 ||
                             types->second.arr.count != n))
    fail(path, "tokenizer.ggml.token_type should be {} int32 values", n);
  if (auto sp = kv_.find("tokenizer.ggml.add_space_prefix");
      sp != kv_.end() && sp->second.type == GgufType::BOOL && sp->second.u == 0)
    fail(path, "tokenizer.ggml.add_space_prefix = false is not supported by lsb's llama tokenizer");
  // The llama2.c algorithm assumes Llama's special ids (and byte pieces right after them).
  if (config_.bos_id != 1 || config_.eos_id != 2)
    fail(path, "tokenizer has bos {} / eos {}; lsb's llama tokenizer needs bos 1 and eos 2", config_.bos_id,
         config_.eos_id);
  if (n < 3) fail(path, "tokenizer.ggml.tokens has {} tokens, fewer than <unk>, <s>, </s>", n);
  if (n > uint64_t(config_.vocab_size))
    fail(path, "tokenizer has {} tokens but the model's vocabulary is {}", n, config_.vocab_size);

  constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581
  Llama2cVocab vocab;
  bool has_bytes = false;
  for (uint64_t id = 0; id < n; ++id) {
    std::string piece;
    const std::string_view p = pieces[id];
    for (size_t i = 0; i < p.size();) {
      if (p.compare(i, kSpace.size(), kSpace) == 0) {
        piece.push_back(' ');
        i += kSpace.size();
      } else {
        piece.push_back(p[i++]);
      }
    }
    float score = 0.0f;
    if (scores != kv_.end()) score = std::bit_cast<float>(load_le32(scores->second.arr.raw.data() + id * 4));
    int32_t type = 1;  // normal
    if (types != kv_.end()) type = static_cast<int32_t>(load_le32(types->second.arr.raw.data() + id * 4));
    if (type == 6) {  // byte piece "<0xXX>": must be id 3 + XX for the byte fallback
      has_bytes = true;
      char want[8];
      std::snprintf(want, sizeof want, "<0x%02X>", unsigned(id - 3));
      if (id < 3 || id > 258 || piece != want)
        fail(path, "byte token {} '{}' is not at id 3 + its byte value, as lsb's llama tokenizer needs", id, piece);
    }
    // Only normal pieces take part in merges, as in SentencePiece.
    if (type != 1 || !std::isfinite(score)) score = kNeverMergeScore;
    if (piece.size() > uint64_t(kLlama2cMaxTokenLength))
      fail(path, "token {} is {} bytes long, above the limit of {}", id, piece.size(), kLlama2cMaxTokenLength);
    vocab.pieces.push_back(std::move(piece));
    vocab.scores.push_back(score);
  }
  if (!has_bytes && types != kv_.end())
    fail(path, "tokenizer has no byte tokens <0x00>..<0xFF>; lsb's llama tokenizer needs byte fallback");
  TokenizerBlob blob;
  blob.kind = TokenizerBlob::Kind::Llama2c;
  blob.bytes = serialize_llama2c_vocab(vocab);
  blob.origin = path + " (GGUF vocabulary)";
  return blob;
}

}  // namespace lsb
