#include "lib/synth.h"

#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <numbers>
#include <unordered_set>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "base/fp16.h"
#include "io/safetensors_writer.h"
#include "base/error.h"
#include "model/model_tensors.h"
#include "base/sysinfo.h"
#include "runtime/progress.h"

namespace fs = std::filesystem;

namespace lsb {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; this writer copies host floats");

// ---------------------------------------------------------------------------------------------
// Shapes

namespace {

SynthShape make_shape(std::string name, std::string hf_arch, std::string desc, int dim, int hidden, int layers,
                      int heads, int kv_heads, int vocab, int max_pos, float rope_theta) {
  SynthShape s;
  s.name = std::move(name);
  s.hf_arch = std::move(hf_arch);
  s.description = std::move(desc);
  ModelConfig& c = s.config;
  c.arch = s.hf_arch == "MistralForCausalLM" ? "mistral" : "llama";
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.head_dim = dim / heads;
  c.vocab_size = vocab;
  c.max_seq_len = max_pos;
  c.rope_theta = rope_theta;
  c.norm_eps = 1e-5f;
  c.tie_embeddings = false;
  c.rope_interleaved = false;
  c.bos_id = 1;
  c.eos_id = 2;
  c.validate(s.name);
  return s;
}

}  // namespace

const std::vector<SynthShape>& synth_shapes() {
  static const std::vector<SynthShape> shapes = {
      make_shape("llama2-7b", "LlamaForCausalLM", "Llama-2-7B: dim 4096, MLP 11008, 32 layers, 32 heads (MHA), vocab 32000",
                 4096, 11008, 32, 32, 32, 32000, 4096, 10000.0f),
      make_shape("mistral-7b", "MistralForCausalLM",
                 "Mistral-7B v0.2: dim 4096, MLP 14336, 32 layers, 32 heads / 8 KV heads, vocab 32000, rope_theta 1e6",
                 4096, 14336, 32, 32, 8, 32000, 32768, 1e6f),
      make_shape("tinyllama-1.1b", "LlamaForCausalLM",
                 "TinyLlama-1.1B: dim 2048, MLP 5632, 22 layers, 32 heads / 4 KV heads, vocab 32000", 2048, 5632, 22, 32,
                 4, 32000, 2048, 10000.0f),
      make_shape("small", "LlamaForCausalLM", "test shape for streaming: dim 512, MLP 1408, 8 layers, 8 / 4 heads, vocab 4096",
                 512, 1408, 8, 8, 4, 4096, 2048, 10000.0f),
      make_shape("tiny", "LlamaForCausalLM", "test shape, generated in well under a second: dim 256, MLP 704, 4 layers, 8 / 4 heads, vocab 2048",
                 256, 704, 4, 8, 4, 2048, 1024, 10000.0f),
  };
  return shapes;
}

const SynthShape& synth_shape(const std::string& name) {
  std::vector<std::string> known;
  for (const SynthShape& s : synth_shapes()) {
    if (s.name == name) return s;
    known.push_back(s.name);
  }
  fail(name, "unknown shape (known: {})", fmt::join(known, ", "));
}

nlohmann::ordered_json synth_hf_config(const SynthShape& shape, DType dtype, uint64_t seed) {
  const ModelConfig& c = shape.config;
  const char* torch_dtype = dtype == DType::F32 ? "float32" : dtype == DType::F16 ? "float16" : "bfloat16";
  nlohmann::ordered_json j = {
      {"architectures", {shape.hf_arch}},
      {"model_type", c.arch},
      {"hidden_size", c.dim},
      {"intermediate_size", c.hidden_dim},
      {"num_hidden_layers", c.n_layers},
      {"num_attention_heads", c.n_heads},
      {"num_key_value_heads", c.n_kv_heads},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_seq_len},
      {"rms_norm_eps", static_cast<double>(c.norm_eps)},
      {"rope_theta", static_cast<double>(c.rope_theta)},
      {"rope_scaling", nullptr},
      {"hidden_act", "silu"},
      {"initializer_range", 0.02},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"tie_word_embeddings", c.tie_embeddings},
      {"bos_token_id", c.bos_id},
      {"eos_token_id", c.eos_id},
      {"use_cache", true},
      {"torch_dtype", torch_dtype},
      {"transformers_version", "4.40.0"},
  };
  // Mistral v0.2 has no sliding window; say so explicitly, as its config does.
  if (c.arch == "mistral") j["sliding_window"] = nullptr;
  if (c.arch == "llama") j["pretraining_tp"] = 1;
  j["lsb_synthetic"] = true;
  j["lsb_synth_shape"] = shape.name;
  j["lsb_synth_seed"] = seed;
  return j;
}

// ---------------------------------------------------------------------------------------------
// Random numbers: counter-based (splitmix64), keyed by (seed, tensor name, row), so any row of
// any tensor can be generated alone, on any thread, with the same result.

namespace {

constexpr uint64_t kGamma = 0x9e3779b97f4a7c15ull;

inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t hash_name(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a, then mixed
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return mix64(h);
}

struct Stream {
  uint64_t state;
  explicit Stream(uint64_t key) : state(key) {}
  uint64_t next() { return mix64(state += kGamma); }
  double uniform01() { return (double(next() >> 11) + 0.5) * 0x1.0p-53; }  // (0, 1)
  double normal() {
    const double u = uniform01(), v = uniform01();
    return std::sqrt(-2.0 * std::log(u)) * std::cos(2.0 * std::numbers::pi * v);
  }
};

// Student-t with 5 degrees of freedom, scaled to unit variance, by inverting its CDF with a table:
// |t| = H(q) for the tail probability q = P(|T| > t), which is uniform. The table has 64 linear
// segments per octave of q from 2^-31 to 1, so the far tails are as accurate as the centre, and a
// draw costs a few integer operations and two loads (pow/log-based methods cost ~10x more).
class StudentT5 {
 public:
  static constexpr int kSegBits = 6, kSegs = 1 << kSegBits, kOctaves = 31;

  StudentT5() {
    constexpr double kPi = std::numbers::pi, kUnitVar = 0.7745966692414834;  // sqrt(3/5): var of t5 is 5/3
    // P(|T| < t) for 5 degrees of freedom, with theta = atan(t / sqrt 5) (Abramowitz & Stegun 26.7.3).
    auto central = [&](double th) {
      const double c = std::cos(th);
      return 2.0 / kPi * (th + std::sin(th) * (c + 2.0 / 3.0 * c * c * c));
    };
    for (int o = 0; o < kOctaves; ++o) {
      for (int k = 0; k <= kSegs; ++k) {
        const double q = std::ldexp(1.0 + double(k) / kSegs, -(o + 1));  // tail probability of this knot
        double lo = 0.0, hi = kPi / 2;
        for (int it = 0; it < 80; ++it) {  // central() increases with theta
          const double mid = 0.5 * (lo + hi);
          (central(mid) < 1.0 - q ? lo : hi) = mid;
        }
        knots_[o][k] = float(kUnitVar * std::sqrt(5.0) * std::tan(0.5 * (lo + hi)));
      }
    }
  }

  // One draw from 32 random bits: the top bit is the sign, the other 31 give q in (0, 1).
  float operator()(uint32_t r) const {
    const uint32_t bits = (r & 0x7fffffffu) | 1u;  // q = bits / 2^31, never 0
    const int o = std::countl_zero(bits) - 1;       // q in [2^-(o+1), 2^-o)
    const uint32_t m = bits << (o + 1);              // top bit set: 1.xxx of q's mantissa
    const uint32_t seg = (m >> (31 - kSegBits)) & (kSegs - 1);
    const float frac = float((m << (kSegBits + 1)) >> 8) * 0x1.0p-24f;
    const float* k = &knots_[o][seg];
    const float v = k[0] + frac * (k[1] - k[0]);
    return (r & 0x80000000u) ? -v : v;
  }

 private:
  float knots_[kOctaves][kSegs + 1];
};

const StudentT5& student_t5() {
  static const StudentT5 table;
  return table;
}

enum class Kind { Embed, Q, K, V, O, Gate, Up, Down, LayerNorm, FinalNorm, LmHead };

struct KindParams {
  float gain;        // std = gain / sqrt(in_features) before row/column factors
  float row_sigma;   // log-normal spread of per-row scales
  bool input_proj;   // reads the residual stream: column spread and outlier input channels
};

KindParams params_of(Kind k) {
  switch (k) {
    case Kind::Embed: return {1.0f, 0.30f, false};
    case Kind::Q:
    case Kind::K: return {1.4f, 0.35f, true};
    case Kind::V: return {0.6f, 0.20f, true};
    case Kind::O: return {0.6f, 0.20f, false};
    case Kind::Gate:
    case Kind::Up: return {1.2f, 0.20f, true};
    case Kind::Down: return {1.6f, 0.25f, false};
    case Kind::LmHead: return {1.3f, 0.25f, false};
    default: return {0.0f, 0.0f, false};
  }
}

Kind kind_of(const std::string& name, int* layer) {
  *layer = -1;
  if (name == "model.embed_tokens.weight") return Kind::Embed;
  if (name == "model.norm.weight") return Kind::FinalNorm;
  if (name == "lm_head.weight") return Kind::LmHead;
  const std::string prefix = "model.layers.";
  if (name.starts_with(prefix)) {
    size_t pos = prefix.size();
    int l = 0;
    while (pos < name.size() && name[pos] >= '0' && name[pos] <= '9') l = l * 10 + (name[pos++] - '0');
    *layer = l;
    const std::string rest = name.substr(pos);
    if (rest == ".input_layernorm.weight" || rest == ".post_attention_layernorm.weight") return Kind::LayerNorm;
    if (rest == ".self_attn.q_proj.weight") return Kind::Q;
    if (rest == ".self_attn.k_proj.weight") return Kind::K;
    if (rest == ".self_attn.v_proj.weight") return Kind::V;
    if (rest == ".self_attn.o_proj.weight") return Kind::O;
    if (rest == ".mlp.gate_proj.weight") return Kind::Gate;
    if (rest == ".mlp.up_proj.weight") return Kind::Up;
    if (rest == ".mlp.down_proj.weight") return Kind::Down;
  }
  fail(name, "not a tensor of a Llama-family model");
}

// The residual-stream channels that are outliers in every layer (real models have a handful of
// such "massive activation" dimensions, fixed across layers): about 1 in 512, at least 3.
std::vector<int64_t> outlier_channels(const ModelConfig& c, uint64_t seed) {
  const int64_t n = std::min<int64_t>(c.dim, std::max<int64_t>(3, c.dim / 512));
  Stream s(mix64(seed ^ 0x6f75746c69657273ull));
  std::vector<int64_t> out;
  while (int64_t(out.size()) < n) {
    const int64_t ch = int64_t(s.next() % uint64_t(c.dim));
    if (std::find(out.begin(), out.end(), ch) == out.end()) out.push_back(ch);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

void synth_tensor_rows(const ModelConfig& config, uint64_t seed, const std::string& name, int64_t rows, int64_t cols,
                       int64_t row_begin, int64_t row_end, float* out) {
  if (row_begin < 0 || row_end > rows || row_begin > row_end || cols <= 0)
    fail(name, "rows [{}, {}) outside a {}x{} tensor", row_begin, row_end, rows, cols);
  int layer = -1;
  const Kind kind = kind_of(name, &layer);
  const uint64_t key = mix64(seed ^ hash_name(name));

  if (kind == Kind::LayerNorm || kind == Kind::FinalNorm) {
    // Norm gains near 1 with a little noise; kept positive like trained ones.
    const double noise = kind == Kind::FinalNorm ? 0.10 : 0.05;
    for (int64_t r = row_begin; r < row_end; ++r) {
      Stream s(mix64(key ^ mix64(uint64_t(r) * 2 + 1)));
      float* o = out + (r - row_begin) * cols;
      for (int64_t c = 0; c < cols; ++c) o[c] = float(std::max(0.05, 1.0 + noise * s.normal()));
    }
    return;
  }

  const KindParams p = params_of(kind);
  std::vector<float> col_scale(size_t(cols), 1.0f);
  if (p.input_proj) {
    Stream s(mix64(key ^ 0x636f6c756d6e73ull));
    for (float& v : col_scale) v = float(std::exp(0.10 * s.normal()));
    for (int64_t ch : outlier_channels(config, seed)) {
      if (ch >= cols) continue;
      col_scale[size_t(ch)] *= float(5.0 + 15.0 * s.uniform01());  // 5x to 20x
    }
  }
  const double base = p.gain / std::sqrt(double(cols));
  const StudentT5& t5 = student_t5();

  #pragma omp parallel for schedule(dynamic, 16)
  for (int64_t r = row_begin; r < row_end; ++r) {
    Stream s(mix64(key ^ mix64(uint64_t(r) * 2 + 1)));
    const float rs = float(base * std::exp(p.row_sigma * s.normal()));
    float* o = out + (r - row_begin) * cols;
    int64_t c = 0;
    for (; c + 1 < cols; c += 2) {  // two draws per 64-bit random
      const uint64_t x = s.next();
      o[c] = rs * col_scale[size_t(c)] * t5(uint32_t(x));
      o[c + 1] = rs * col_scale[size_t(c + 1)] * t5(uint32_t(x >> 32));
    }
    if (c < cols) o[c] = rs * col_scale[size_t(c)] * t5(uint32_t(s.next()));
  }
}

// ---------------------------------------------------------------------------------------------
// Tokenizer: a real SentencePiece BPE model trained on built-in text, so a synthetic folder looks
// like a real one to every tool.

namespace {

constexpr const char* kWords[] = {
    "the", "of", "and", "to", "in", "a", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
    "he", "she", "this", "are", "or", "his", "her", "from", "at", "which", "but", "have", "an", "had", "they", "you",
    "were", "their", "one", "all", "we", "can", "there", "been", "if", "more", "when", "will", "would", "who", "so",
    "no", "time", "people", "year", "way", "day", "man", "woman", "child", "world", "life", "hand", "part", "place",
    "case", "week", "company", "system", "program", "question", "work", "government", "number", "night", "point",
    "home", "water", "room", "mother", "area", "money", "story", "fact", "month", "lot", "right", "study", "book",
    "eye", "job", "word", "business", "issue", "side", "kind", "head", "house", "service", "friend", "father",
    "power", "hour", "game", "line", "end", "member", "law", "car", "city", "community", "name", "president", "team",
    "minute", "idea", "kid", "body", "information", "back", "parent", "face", "others", "level", "office", "door",
    "health", "person", "art", "war", "history", "party", "result", "change", "morning", "reason", "research", "girl",
    "guy", "moment", "air", "teacher", "force", "education", "river", "mountain", "forest", "village", "garden",
    "language", "music", "market", "school", "student", "window", "table", "letter", "picture", "machine", "model",
    "computer", "network", "signal", "memory", "energy", "light", "sound", "color", "weather", "winter", "summer",
    "say", "get", "make", "go", "know", "take", "see", "come", "think", "look", "want", "give", "use", "find", "tell",
    "ask", "seem", "feel", "try", "leave", "call", "keep", "let", "begin", "help", "show", "hear", "play", "run",
    "move", "live", "believe", "bring", "happen", "write", "provide", "sit", "stand", "lose", "pay", "meet", "include",
    "continue", "learn", "lead", "understand", "watch", "follow", "stop", "create", "speak", "read", "spend", "grow",
    "open", "walk", "win", "offer", "remember", "love", "consider", "appear", "buy", "wait", "serve", "die", "send",
    "expect", "build", "stay", "fall", "cut", "reach", "remain", "suggest", "raise", "pass", "sell", "require",
    "report", "decide", "pull", "carried", "walked", "said", "found", "thought", "looked", "wanted", "gave", "used",
    "good", "new", "first", "last", "long", "great", "little", "own", "other", "old", "big", "high", "different",
    "small", "large", "next", "early", "young", "important", "few", "public", "bad", "same", "able", "quiet", "bright",
    "dark", "warm", "cold", "careful", "strange", "simple", "beautiful", "ancient", "modern", "gentle", "heavy",
    "slowly", "quickly", "never", "always", "often", "again", "still", "perhaps", "together", "already", "however",
    "because", "although", "while", "before", "after", "under", "over", "between", "through", "during", "without",
    "about", "against", "toward", "across", "behind", "beyond", "within", "around", "into", "upon", "every", "many",
    "several", "some", "most", "each", "another", "such", "only", "very", "also", "then", "now", "here", "where",
    "why", "how", "what", "these", "those", "them", "him", "our", "your", "my", "its", "could", "should", "might",
    "must", "may", "did", "does", "made", "went", "came", "took", "knew", "told", "became", "left", "felt", "brought",
};

constexpr const char* kSyllables[] = {
    "ka", "lo", "mi", "ra", "ne", "to", "su", "ve", "da", "ri", "po", "len", "mar", "tis", "gor", "bel", "an", "el",
    "or", "un", "sha", "tho", "qui", "zan", "dor", "fen", "gal", "hul", "ith", "jor", "kel", "lun", "mor", "nar",
    "ost", "pra", "rin", "sel", "tar", "vin", "wyn", "yra", "zel", "bra", "cro", "dri", "fla", "gri",
};

// Deterministic English-like text: sentences from a fixed word list and invented proper names
// (so BPE finds several thousand merges), with numbers and punctuation, from a fixed seed.
std::vector<std::string> tokenizer_corpus() {
  constexpr size_t kNumWords = std::size(kWords), kNumSyl = std::size(kSyllables);
  Stream s(0x746f6b656e697a65ull);
  std::vector<std::string> names;
  for (int i = 0; i < 1500; ++i) {
    std::string n;
    const int k = 2 + int(s.next() % 2);
    for (int j = 0; j < k; ++j) n += kSyllables[s.next() % kNumSyl];
    n[0] = char(n[0] - 'a' + 'A');
    names.push_back(std::move(n));
  }
  std::vector<std::string> out;
  constexpr int kSentences = 12000;
  out.reserve(kSentences);
  for (int i = 0; i < kSentences; ++i) {
    std::string line;
    const int n_words = 6 + int(s.next() % 14);
    for (int w = 0; w < n_words; ++w) {
      const uint64_t r = s.next();
      std::string word;
      if (r % 10 == 0) {
        word = names[(r >> 8) % names.size()];
      } else if (r % 37 == 1) {
        word = std::to_string((r >> 8) % 3000);
      } else {
        // Rank-skewed choice so common words are common, as in real text.
        const double u = double((r >> 11) & 0xfffff) / double(0x100000);
        word = kWords[std::min<size_t>(kNumWords - 1, size_t(double(kNumWords) * u * u))];
      }
      if (w == 0) word[0] = char(std::toupper(static_cast<unsigned char>(word[0])));
      if (!line.empty()) line += ' ';
      line += word;
      if (w + 1 < n_words && (r >> 40) % 9 == 0) line += ',';
    }
    const uint64_t e = s.next() % 10;
    line += e < 7 ? "." : e < 9 ? "?" : "!";
    out.push_back(std::move(line));
  }
  return out;
}

class VectorSentences : public sentencepiece::SentenceIterator {
 public:
  explicit VectorSentences(const std::vector<std::string>& v) : v_(v) {}
  bool done() const override { return i_ >= v_.size(); }
  void Next() override { ++i_; }
  const std::string& value() const override { return v_[i_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& v_;
  size_t i_ = 0;
};

}  // namespace

// Appends NORMAL pieces to a serialized SentencePiece ModelProto until it holds `want` pieces.
// A protobuf message's repeated field may be continued anywhere in the message, so each new
// piece is one more `pieces` field (1) at the end: SentencePiece { piece = 1 (string), score = 2
// (float), type = 3 (NORMAL = 1) }. Pieces are "▁" + invented syllable words not already in the
// model, with scores below every trained merge, so trained tokenization hardly changes.
static std::string pad_tokenizer(std::string proto, int want) {
  sentencepiece::SentencePieceProcessor sp;
  if (!sp.LoadFromSerializedProto(proto).ok()) fail("synth tokenizer", "trained tokenizer does not load");
  int have = sp.GetPieceSize();
  float score = 0.0f;
  for (int i = 0; i < have; ++i) score = std::min(score, sp.GetScore(i));
  auto varint = [](std::string& out, uint64_t v) {
    for (; v >= 0x80; v >>= 7) out.push_back(char((v & 0x7f) | 0x80));
    out.push_back(char(v));
  };
  constexpr size_t kNumSyl = std::size(kSyllables);
  std::unordered_set<std::string> added;
  for (uint64_t k = 0; have < want; ++k) {
    std::string word = "\xE2\x96\x81";  // U+2581, SentencePiece's space
    for (uint64_t x = k;; x /= kNumSyl) {
      word += kSyllables[x % kNumSyl];
      if (x < kNumSyl) break;
    }
    if (sp.PieceToId(word) != sp.unk_id() || !added.insert(word).second) continue;
    score -= 1.0f;
    std::string msg;
    msg.push_back(0x0a);  // piece: field 1, length-delimited
    varint(msg, word.size());
    msg += word;
    msg.push_back(0x15);  // score: field 2, 32-bit
    const uint32_t bits = std::bit_cast<uint32_t>(score);
    for (int b = 0; b < 4; ++b) msg.push_back(char((bits >> (8 * b)) & 0xff));
    msg.push_back(0x18);  // type: field 3, varint
    msg.push_back(0x01);  // NORMAL
    proto.push_back(0x0a);  // ModelProto.pieces: field 1, length-delimited
    varint(proto, msg.size());
    proto += msg;
    ++have;
  }
  return proto;
}

std::string synth_tokenizer_model(int max_pieces) {
  if (max_pieces < 300) fail("synth tokenizer", "vocabulary of {} is too small (byte fallback alone needs 259)", max_pieces);
  const std::vector<std::string> corpus = tokenizer_corpus();
  VectorSentences it(corpus);
  // Llama's tokenizer settings; single-threaded with no sampling so the model is byte-identical
  // on every run.
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(std::min(max_pieces, 4096))},
      {"hard_vocab_limit", "false"},
      {"byte_fallback", "true"},
      {"character_coverage", "1.0"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"remove_extra_whitespaces", "false"},
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"num_threads", "1"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"minloglevel", "2"},
  };
  std::string proto;
  const auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, &proto);
  if (!status.ok()) fail("synth tokenizer", "SentencePiece training failed: {}", status.ToString());
  // The built-in text supports a few thousand merges; a larger vocabulary (a 7B shape's 32000)
  // is filled up with extra pieces so that every id the model can emit decodes.
  return pad_tokenizer(std::move(proto), max_pieces);
}

// ---------------------------------------------------------------------------------------------
// Writing a folder

namespace {

void write_text_file(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(text.data(), std::streamsize(text.size()));
  f.close();
  if (!f) fail(p.string(), "cannot write file: {}", std::strerror(errno));
}

std::string shard_name(int i, int n) { return fmt::format("model-{:05}-of-{:05}.safetensors", i + 1, n); }

void convert_row(const float* src, std::byte* dst, int64_t n, DType dtype) {
  if (dtype == DType::F32) {
    std::memcpy(dst, src, size_t(n) * 4);
  } else if (dtype == DType::BF16) {
    auto* d = reinterpret_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
  } else {
    auto* d = reinterpret_cast<uint16_t*>(dst);
    for (int64_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
  }
}

// Removes the temporary folder unless released, so a failure leaves nothing behind.
struct TempDir {
  fs::path path;
  bool keep = false;
  std::function<void(const std::string&)> announce;
  void remove_now() {
    std::error_code ec;
    if (!keep && !path.empty()) fs::remove_all(path, ec);
  }
  ~TempDir() {
    remove_now();
    if (announce) announce("");
  }
};

}  // namespace

SynthResult synth_model(const std::string& dir, const std::string& shape_name, const SynthOptions& options) {
  return synth_model(dir, synth_shape(shape_name), options);
}

SynthResult synth_model(const std::string& dir, const SynthShape& shape, const SynthOptions& o) {
  const auto t0 = std::chrono::steady_clock::now();
  if (o.dtype != DType::F32 && o.dtype != DType::F16 && o.dtype != DType::BF16)
    fail(dir, "dtype {} is not one of f32, f16, bf16", dtype_name(o.dtype));
  if (o.max_shard_bytes == 0) fail(dir, "shard size limit must be positive");
  const ModelConfig& cfg = shape.config;
  cfg.validate(shape.name);

  if (dir.empty()) fail("synth", "no output folder given");
  const fs::path target = fs::absolute(fs::path(dir)).lexically_normal();
  const fs::path clean = target.has_filename() ? target : target.parent_path();  // "out/" -> "out"
  std::error_code ec;
  if (fs::exists(clean, ec)) {
    if (!fs::is_directory(clean, ec)) fail(clean.string(), "exists and is not a folder");
    if (!fs::is_empty(clean, ec) && !o.force) fail(clean.string(), "folder exists and is not empty (use --force to replace it)");
  }
  const fs::path parent = clean.parent_path();
  fs::create_directories(parent, ec);
  if (ec) fail(parent.string(), "cannot create folder: {}", ec.message());

  // Tensors in HF order, assigned to shards the way transformers does: a new shard starts when
  // the next tensor would take the current one past the limit.
  const std::vector<ExpectedTensor> expected = expected_tensors(cfg);
  const size_t esize = dtype_size(o.dtype);
  std::vector<std::vector<SafetensorsEntry>> shards(1);
  std::vector<uint64_t> shard_bytes(1, 0);
  uint64_t tensor_bytes = 0;
  for (const ExpectedTensor& e : expected) {
    SafetensorsEntry entry{e.name, o.dtype, e.shape};
    const uint64_t n = safetensors_entry_bytes(entry, e.name);
    if (!shards.back().empty() && shard_bytes.back() + n > o.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes.push_back(0);
    }
    shards.back().push_back(std::move(entry));
    shard_bytes.back() += n;
    tensor_bytes += n;
  }
  const int n_shards = int(shards.size());

  // Refuse early rather than fail after minutes of writing.
  const fs::space_info space = fs::space(parent, ec);
  if (!ec && space.available < tensor_bytes + (64ull << 20))
    fail(parent.string(), "needs {:.2f} GB free for the synthetic {} model, only {:.2f} GB available",
         double(tensor_bytes) / 1e9, shape.name, double(space.available) / 1e9);

  TempDir tmp;
  tmp.path = parent / fmt::format(".{}.lsb-synth-tmp-{}", clean.filename().string(), ::getpid());
  tmp.announce = o.on_temp_dir;
  if (tmp.announce) tmp.announce(tmp.path.string());
  fs::remove_all(tmp.path, ec);
  fs::create_directory(tmp.path, ec);
  if (ec) fail(tmp.path.string(), "cannot create temporary folder: {}", ec.message());

  SynthResult res;
  try {
    res.dir = clean.string();
    res.shape = shape.name;
    res.config = cfg;
    res.n_params = cfg.n_params_estimate();
    res.n_tensors = int(expected.size());
    res.n_shards = n_shards;
    res.tensor_bytes = tensor_bytes;

    const std::string config_text = synth_hf_config(shape, o.dtype, o.seed).dump(2) + "\n";
    write_text_file(tmp.path / "config.json", config_text);
    res.file_bytes += config_text.size();

    if (o.tokenizer) {
      const auto tt = std::chrono::steady_clock::now();
      // Trained on at most 4096 pieces (the built-in text holds no more merges), padded to the
      // shape's vocabulary so every id the model emits decodes.
      const std::string proto = synth_tokenizer_model(cfg.vocab_size);
      write_text_file(tmp.path / "tokenizer.model", proto);
      sentencepiece::SentencePieceProcessor sp;
      if (!sp.LoadFromSerializedProto(proto).ok()) fail((tmp.path / "tokenizer.model").string(), "trained tokenizer does not load");
      res.tokenizer_pieces = sp.GetPieceSize();
      res.file_bytes += proto.size();
      res.tokenizer_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - tt).count();
    }

    // Weights: row chunks of at most chunk_bytes, generated in parallel into one buffer while the
    // previous chunk is written from the other, so memory stays at two chunks whatever the model.
    const auto tw = std::chrono::steady_clock::now();
    const std::string bar_label = fmt::format("synth {} (synthetic)", shape.name);
    ProgressBar bar(bar_label, static_cast<long long>((tensor_bytes + 999999) / 1000000), o.progress);
    std::vector<std::byte> buf[2];
    std::vector<float> values;
    int which = 0;
    uint64_t done = 0;
    nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
    for (int si = 0; si < n_shards; ++si) {
      const std::string name = shard_name(si, n_shards);
      SafetensorsWriter writer((tmp.path / name).string(), shards[size_t(si)],
                               {{"format", "pt"}, {"lsb_synthetic", "true"}});
      std::future<void> pending;  // declared after writer: destroyed (waited for) first
      for (const SafetensorsEntry& e : shards[size_t(si)]) {
        weight_map[e.name] = name;
        const int64_t rows = e.shape.size() >= 2 ? e.shape[0] : 1;
        const int64_t cols = e.shape.back();
        const uint64_t row_bytes = uint64_t(cols) * esize;
        const int64_t rows_per_chunk = std::max<int64_t>(1, int64_t(o.chunk_bytes / std::max<uint64_t>(1, row_bytes)));
        for (int64_t r0 = 0; r0 < rows; r0 += rows_per_chunk) {
          const int64_t r1 = std::min(rows, r0 + rows_per_chunk);
          const size_t n = size_t(r1 - r0) * size_t(cols);
          values.resize(n);
          synth_tensor_rows(cfg, o.seed, e.name, rows, cols, r0, r1, values.data());
          std::vector<std::byte>& out = buf[which];
          out.resize(n * esize);
          #pragma omp parallel for schedule(static)
          for (int64_t r = r0; r < r1; ++r)
            convert_row(values.data() + size_t(r - r0) * size_t(cols), out.data() + size_t(r - r0) * row_bytes, cols, o.dtype);
          if (pending.valid()) pending.get();
          pending = std::async(std::launch::async, [&writer, &out] { writer.append(out); });
          which ^= 1;
          done += out.size();
          const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - tw).count();
          bar.update(static_cast<long long>(done / 1000000),
                     fmt::format("MB, {:.0f} MB/s", el > 0 ? double(done) / 1e6 / el : 0.0));
        }
      }
      if (pending.valid()) pending.get();
      writer.finish();
      res.file_bytes += writer.total_bytes();
    }
    bar.update(static_cast<long long>((tensor_bytes + 999999) / 1000000), "MB");
    bar.finish();
    res.weight_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - tw).count();

    nlohmann::ordered_json index = {{"metadata", {{"total_size", tensor_bytes}, {"lsb_synthetic", true}}},
                                    {"weight_map", weight_map}};
    const std::string index_text = index.dump(2) + "\n";
    write_text_file(tmp.path / "model.safetensors.index.json", index_text);
    res.file_bytes += index_text.size();

    if (fs::exists(clean, ec)) {
      fs::remove_all(clean, ec);  // empty, or non-empty with force (checked above)
      if (ec) fail(clean.string(), "cannot replace existing folder: {}", ec.message());
    }
    fs::rename(tmp.path, clean, ec);
    if (ec) fail(clean.string(), "cannot move {} into place: {}", tmp.path.string(), ec.message());
  } catch (const Error& e) {
    // The folder being written goes first, so the message says what is true: nothing is left.
    tmp.remove_now();
    fail(clean.string(), "not written (the temporary folder {} was removed): {}", tmp.path.string(), e.what());
  }
  tmp.keep = true;

  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  res.peak_rss_mb = double(peak_rss_bytes()) / (1 << 20);
  return res;
}

}  // namespace lsb
