// Llama/Mistral-family decoder: RMSNorm, RoPE (interleaved or rotate-half), grouped-query
// attention with a KV cache, SwiGLU MLP, tied or separate classifier. Float32 compute; the
// weights stay in whatever form their Linear keeps them (bf16 in place, packed bits, ...) and
// come from a WeightProvider (resident or streamed), so this file is only the math.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "base/config.h"
#include "model/weights.h"

namespace lsb {

struct ModelOptions {
  DType kv_type = DType::F32;  // KV cache element type: F32 or F16
};

class LlamaModel {
 public:
  // `cfg` must be validated and agree with the provider's tensors.
  LlamaModel(const ModelConfig& cfg, std::unique_ptr<WeightProvider> weights, const ModelOptions& opt = {});
  ~LlamaModel();

  const ModelConfig& config() const { return cfg_; }
  WeightProvider& weights() { return *weights_; }
  const WeightProvider& weights() const { return *weights_; }

  // Starts a new sequence at position 0: sizes the KV cache for `ctx` positions and the
  // activations for batches of up to `max_batch` tokens (0: ctx), reusing the buffers when the
  // shape is unchanged. The weight provider checks its memory budget here.
  void reset(int ctx, int max_batch = 0);
  int ctx() const { return ctx_; }

  // Runs tokens[0..n) at positions pos..pos+n-1, appending their keys/values to the cache.
  // logits: (n - logits_from, vocab): the classifier runs only for tokens logits_from..n-1
  // (n - 1 when generating: the last token only). logits may be null when logits_from == n.
  void forward(const int* tokens, int n, int pos, float* logits, int logits_from);

  // The pieces of forward(), for pipelines that run layer-major over many sequences (calibration
  // passes every window through layer l before layer l+1):
  void embed(const int* tokens, int n, float* x);      // x: (n, dim) = embedding rows
  void forward_layer(int l, float* x, int n, int pos); // x: (n, dim), updated in place; KV of layer l at pos..
  void head(const float* x, int n, float* logits);     // logits: (n, vocab) = classifier(final norm(x))
  void final_norm(const float* x, int n, float* out) const;  // out: (n, dim), the classifier's input

  // Optional observer of the hidden state after each layer: (layer, x: (n, dim), n).
  std::function<void(int, const float*, int)> on_layer;

  // Bytes of weights read to decode one token (every matrix once, one embedding row).
  uint64_t weight_bytes_per_token() const { return weights_->bytes_per_token(); }
  // The KV cache and activations a run of `ctx` positions in batches of `batch` needs.
  BufferNeeds buffer_needs(int ctx, int batch) const;

 private:
  // Every buffer the forward pass uses, sized by one function for both the allocation and the
  // budget, so the two cannot drift apart.
  struct Activations {
    std::vector<float> x, xb, q, k, v, att, hb, hb2;  // (batch, ...) per the forward pass
    std::vector<float> scores, vt;                    // per thread: (batch, ctx) and (head_dim, ctx)
    static uint64_t floats(const ModelConfig& c, int batch, int ctx, int threads);
    void allocate(const ModelConfig& c, int batch, int ctx, int threads);
  };

  void attention(int layer, int n, int pos);
  void store_kv(int l, int n, int pos);
  void ensure_batch(int n);

  ModelConfig cfg_;
  ModelOptions opt_;
  std::unique_ptr<WeightProvider> weights_;

  int ctx_ = 0, max_batch_ = 0, threads_ = 0;
  // (n_layers, ctx, n_kv_heads*head_dim) elements of kv_type (f32 or f16 bits)
  std::vector<std::byte> key_cache_, value_cache_;
  std::vector<float> rope_cos_, rope_sin_;  // (ctx, head_dim/2)
  Activations act_;
};

}  // namespace lsb
