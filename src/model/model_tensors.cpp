#include "model/model_tensors.h"

#include <filesystem>
#include <set>

#include <fmt/ranges.h>

#include "base/error.h"

namespace lsb {

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& c) {
  const int64_t dim = c.dim, hidden = c.hidden_dim, vocab = c.vocab_size;
  const int64_t q_dim = int64_t(c.n_heads) * c.head_dim, kv_dim = int64_t(c.n_kv_heads) * c.head_dim;
  std::vector<ExpectedTensor> out;
  out.reserve(3 + 9 * size_t(c.n_layers > 0 ? c.n_layers : 0));
  out.push_back({"model.embed_tokens.weight", {vocab, dim}});
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", {dim}});
    out.push_back({p + "self_attn.q_proj.weight", {q_dim, dim}});
    out.push_back({p + "self_attn.k_proj.weight", {kv_dim, dim}});
    out.push_back({p + "self_attn.v_proj.weight", {kv_dim, dim}});
    out.push_back({p + "self_attn.o_proj.weight", {dim, q_dim}});
    out.push_back({p + "post_attention_layernorm.weight", {dim}});
    out.push_back({p + "mlp.gate_proj.weight", {hidden, dim}});
    out.push_back({p + "mlp.up_proj.weight", {hidden, dim}});
    out.push_back({p + "mlp.down_proj.weight", {dim, hidden}});
  }
  out.push_back({"model.norm.weight", {dim}});
  if (!c.tie_embeddings) out.push_back({"lm_head.weight", {vocab, dim}});
  return out;
}

void validate_tensors(const TensorSource& src) {
  const std::string where = src.describe();
  const ModelConfig& c = src.config();
  // Name the file the expectation came from, so the user knows which side to look at.
  std::error_code ec;
  const char* config_name = std::filesystem::is_directory(where, ec) ? "config.json" : "the model header";

  std::set<std::string, std::less<>> wanted;
  for (const ExpectedTensor& e : expected_tensors(c)) {
    wanted.insert(e.name);
    const TensorInfo* t = src.find(e.name);
    if (!t) fail(where, "missing tensor '{}'", e.name);
    if (t->shape != e.shape)
      fail(where, "tensor '{}' has shape [{}] but {} implies [{}]", e.name, fmt::join(t->shape, ", "), config_name,
           fmt::join(e.shape, ", "));
    if (dtype_is_dense(t->dtype)) {
      const uint64_t want = uint64_t(t->numel()) * dtype_size(t->dtype);
      if (t->nbytes != want)
        fail(where, "tensor '{}' holds {} bytes but {} [{}] needs {}", e.name, t->nbytes, dtype_name(t->dtype),
             fmt::join(t->shape, ", "), want);
    }
  }
  for (const TensorInfo& t : src.tensors()) {
    if (wanted.count(t.name)) continue;
    // Some exports save lm_head.weight even when it is tied; harmless if it has the right shape.
    if (t.name == "lm_head.weight" && c.tie_embeddings) {
      if (t.shape != std::vector<int64_t>{c.vocab_size, c.dim})
        fail(where, "tensor 'lm_head.weight' has shape [{}] but {} implies [{}, {}]", fmt::join(t.shape, ", "),
             config_name, c.vocab_size, c.dim);
      continue;
    }
    fail(where, "unexpected tensor '{}' (not part of a {} model with this config)", t.name, c.arch);
  }
}

}  // namespace lsb
