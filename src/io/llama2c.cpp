#include "io/llama2c.h"

#include <array>
#include <cstring>

#include "base/error.h"
#include "base/le.h"

namespace lsb {

namespace {

constexpr uint64_t kHeaderBytes = 7 * 4;

// Running byte count of the file layout; every step is overflow-checked so a hostile header
// cannot wrap around to a size that happens to match the file.
class Layout {
 public:
  explicit Layout(const std::string& path) : path_(path) {}
  uint64_t add(uint64_t a, uint64_t b, uint64_t c = 1) {
    uint64_t n = 0;
    if (__builtin_mul_overflow(a, b, &n) || __builtin_mul_overflow(n, c, &n) ||
        __builtin_mul_overflow(n, uint64_t(4), &n) || __builtin_add_overflow(pos_, n, &n))
      fail(path_, "header sizes overflow when computing the file layout");
    const uint64_t start = pos_;
    pos_ = n;
    return start;
  }
  uint64_t pos() const { return pos_; }

 private:
  std::string path_;
  uint64_t pos_ = kHeaderBytes;
};

}  // namespace

Llama2cSource::Llama2cSource(const std::string& path) : file_(path) {
  const uint64_t size = file_.size();
  if (size < kHeaderBytes) fail(path, "file is {} bytes, too short for a llama2.c header ({} bytes)", size, kHeaderBytes);
  auto header = file_.range(0, kHeaderBytes, "llama2.c header");
  if (std::memcmp(header.data(), "ak42", 4) == 0)
    fail(path, "llama2.c version-1+ export format is not supported (export with --version 0, the legacy format)");
  std::array<int32_t, 7> h{};
  for (int i = 0; i < 7; ++i) h[i] = static_cast<int32_t>(load_le32(header.data() + 4 * i));
  const char* names[7] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len"};
  for (int i = 0; i < 7; ++i)
    if (h[i] == 0 || (h[i] < 0 && i != 5) || h[i] == INT32_MIN)
      fail(path, "header field {} = {} is not a positive size (is this a llama2.c checkpoint?)", names[i], h[i]);

  ModelConfig& c = config_;
  c.arch = "llama";
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.vocab_size = h[5] < 0 ? -h[5] : h[5];
  c.tie_embeddings = h[5] > 0;  // llama2.c's convention: a negative vocab_size means a separate classifier
  c.max_seq_len = h[6];
  if (c.dim % c.n_heads != 0) fail(path, "dim {} is not a multiple of n_heads {}", c.dim, c.n_heads);
  c.head_dim = c.dim / c.n_heads;
  c.rope_theta = 10000.0f;
  c.norm_eps = 1e-5f;
  c.rope_interleaved = true;
  c.bos_id = 1;
  c.eos_id = 2;
  c.validate(path);  // bounds every size below, before any product is formed

  const uint64_t dim = c.dim, hidden = c.hidden_dim, layers = c.n_layers, vocab = c.vocab_size;
  const uint64_t head = c.head_dim, kv_dim = uint64_t(c.n_kv_heads) * head, seq = c.max_seq_len;
  Layout lay(path);
  const uint64_t off_embed = lay.add(vocab, dim);
  const uint64_t off_rms_att = lay.add(layers, dim);
  const uint64_t off_wq = lay.add(layers, dim, dim);
  const uint64_t off_wk = lay.add(layers, kv_dim, dim);
  const uint64_t off_wv = lay.add(layers, kv_dim, dim);
  const uint64_t off_wo = lay.add(layers, dim, dim);
  const uint64_t off_rms_ffn = lay.add(layers, dim);
  const uint64_t off_w1 = lay.add(layers, hidden, dim);
  const uint64_t off_w2 = lay.add(layers, dim, hidden);
  const uint64_t off_w3 = lay.add(layers, hidden, dim);
  const uint64_t off_rms_final = lay.add(dim, 1);
  lay.add(seq, head / 2);  // freq_cis_real, unused: RoPE is recomputed
  lay.add(seq, head / 2);  // freq_cis_imag
  const uint64_t off_wcls = c.tie_embeddings ? 0 : lay.add(vocab, dim);
  if (lay.pos() != size)
    fail(path, "file is {} bytes but its header (dim {}, hidden_dim {}, n_layers {}, n_heads {}, n_kv_heads {}, "
               "vocab_size {}, seq_len {}) implies {} bytes ({})",
         size, h[0], h[1], h[2], h[3], h[4], h[5], h[6], lay.pos(), size < lay.pos() ? "truncated" : "trailing data");

  auto add = [&](std::string name, std::vector<int64_t> shape, uint64_t offset) {
    TensorInfo t;
    t.name = std::move(name);
    t.shape = std::move(shape);
    t.dtype = DType::F32;
    t.nbytes = 4;
    for (int64_t d : t.shape) t.nbytes *= uint64_t(d);  // bounded by the size check above
    index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
    offsets_.push_back(offset);
  };
  const auto D = int64_t(dim), H = int64_t(hidden), KV = int64_t(kv_dim);
  add("model.embed_tokens.weight", {int64_t(vocab), D}, off_embed);
  for (uint64_t l = 0; l < layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {D}, off_rms_att + l * dim * 4);
    add(p + "self_attn.q_proj.weight", {D, D}, off_wq + l * dim * dim * 4);
    add(p + "self_attn.k_proj.weight", {KV, D}, off_wk + l * kv_dim * dim * 4);
    add(p + "self_attn.v_proj.weight", {KV, D}, off_wv + l * kv_dim * dim * 4);
    add(p + "self_attn.o_proj.weight", {D, D}, off_wo + l * dim * dim * 4);
    add(p + "post_attention_layernorm.weight", {D}, off_rms_ffn + l * dim * 4);
    add(p + "mlp.gate_proj.weight", {H, D}, off_w1 + l * hidden * dim * 4);
    add(p + "mlp.down_proj.weight", {D, H}, off_w2 + l * dim * hidden * 4);
    add(p + "mlp.up_proj.weight", {H, D}, off_w3 + l * hidden * dim * 4);
  }
  add("model.norm.weight", {D}, off_rms_final);
  if (!c.tie_embeddings) add("lm_head.weight", {int64_t(vocab), D}, off_wcls);
}

std::span<const std::byte> Llama2cSource::data(const TensorInfo& t) const {
  auto it = index_.find(t.name);
  if (it == index_.end()) fail(file_.path(), "no tensor named '{}'", t.name);
  return file_.range(offsets_[it->second], tensors_[it->second].nbytes, "tensor data");
}

}  // namespace lsb
