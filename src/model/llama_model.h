// Llama/Mistral-family decoder: RMSNorm, RoPE (interleaved or rotate-half), grouped-query
// attention with a KV cache, SwiGLU MLP, tied or separate classifier. Float32 compute; the
// weights stay in whatever form their Linear keeps them (bf16 in place, packed bits, ...).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "lsb/tensor_source.h"
#include "model/linear.h"

namespace lsb {

struct LayerWeights {
  std::vector<float> attn_norm;         // (dim)
  std::vector<float> ffn_norm;          // (dim)
  std::unique_ptr<Linear> wq;           // (n_heads*head_dim, dim)
  std::unique_ptr<Linear> wk;           // (n_kv_heads*head_dim, dim)
  std::unique_ptr<Linear> wv;           // (n_kv_heads*head_dim, dim)
  std::unique_ptr<Linear> wo;           // (dim, n_heads*head_dim)
  std::unique_ptr<Linear> gate;         // (hidden_dim, dim)   w1 in llama2.c
  std::unique_ptr<Linear> up;           // (hidden_dim, dim)   w3
  std::unique_ptr<Linear> down;         // (dim, hidden_dim)   w2
};

class LlamaModel {
 public:
  // Loads weights from `src` (checked against its config); `src` is kept alive by the model.
  explicit LlamaModel(std::shared_ptr<TensorSource> src);

  const ModelConfig& config() const { return cfg_; }
  const TensorSource& source() const { return *src_; }

  // Clears the KV cache and sizes it for `ctx` positions.
  void reset(int ctx);
  int ctx() const { return ctx_; }

  // Runs tokens[0..n) at positions pos..pos+n-1, appending their keys/values to the cache.
  // logits: (n - logits_from, vocab): the classifier runs only for tokens logits_from..n-1
  // (n - 1 when generating: the last token only). logits may be null when logits_from == n.
  void forward(const int* tokens, int n, int pos, float* logits, int logits_from);

  // Optional observer of the hidden state after each layer: (layer, x: (n, dim), n).
  std::function<void(int, const float*, int)> on_layer;

  // Bytes of weights read to decode one token (every matrix once, one embedding row).
  uint64_t weight_bytes_per_token() const;
  uint64_t n_params() const;
  const Linear& output() const { return *output_ptr_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }

 private:
  void attention(int layer, int n, int pos);
  void ensure_scratch(int n);

  std::shared_ptr<TensorSource> src_;
  ModelConfig cfg_;
  std::unique_ptr<Linear> embed_;   // (vocab, dim)
  std::vector<LayerWeights> layers_;
  std::vector<float> final_norm_;   // (dim)
  std::unique_ptr<Linear> output_;  // (vocab, dim); null when tied
  const Linear* output_ptr_ = nullptr;

  int ctx_ = 0;
  std::vector<float> key_cache_;    // (n_layers, ctx, n_kv_heads*head_dim)
  std::vector<float> value_cache_;  // (n_layers, ctx, n_kv_heads*head_dim)
  std::vector<float> rope_cos_, rope_sin_;  // (ctx, head_dim/2)

  // Scratch for n tokens.
  int scratch_n_ = 0;
  std::vector<float> x_, xb_, q_, k_, v_, att_out_, hb_, hb2_;
};

}  // namespace lsb
