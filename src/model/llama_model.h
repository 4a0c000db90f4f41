// Llama/Mistral-family decoder: RMSNorm, RoPE (interleaved or rotate-half), grouped-query
// attention with a KV cache, SwiGLU MLP, tied or separate classifier. Float32 compute; the
// weights stay in whatever form their Linear keeps them (bf16 in place, packed bits, ...).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "lsb/tensor_source.h"
#include "model/layer_weights.h"
#include "model/linear.h"

namespace lsb {


class LayerStreamer;

struct ModelOptions {
  // 0: the whole model resident (memory-mapped). Otherwise everything resident — weights in use,
  // the unit being prefetched, KV cache, activations, buffers — stays within this many bytes,
  // streaming one layer at a time from a .lsb file.
  uint64_t mem_budget = 0;
  DType kv_type = DType::F32;  // KV cache element type: F32 or F16
  // Streaming only: drop each unit from the OS page cache after reading it, so every token reads
  // the weights from the disk (for measuring disk-bound speed on a machine with spare RAM).
  bool drop_page_cache = false;
  // Streaming only: at most this many weight slots (2: current + prefetch; 3: reading also
  // overlaps repacking). Fewer are used when the budget has no room for them.
  int max_stream_slots = 3;
};

class LlamaModel {
 public:
  // Loads weights from `src` (checked against its config); `src` is kept alive by the model.
  explicit LlamaModel(std::shared_ptr<TensorSource> src, const ModelOptions& opt = {});
  ~LlamaModel();

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
  bool streaming() const { return streamer_ != nullptr; }
  const LayerStreamer* streamer() const { return streamer_.get(); }  // null when not streaming
  // Bytes the streaming runtime needs resident for a batch of n tokens with the current context
  // with `slots` weight slots (weights, KV cache, activations, the process itself); 0 when not
  // streaming.
  uint64_t streaming_need(int n, int slots) const;

 private:
  void attention(int layer, int n, int pos);
  void ensure_scratch(int n);
  void check_budget(int n) const;
  void store_kv(int l, int n, int pos);
  uint64_t kv_bytes() const;
  uint64_t scratch_bytes(int n) const;

  std::shared_ptr<TensorSource> src_;
  ModelConfig cfg_;
  ModelOptions opt_;
  std::unique_ptr<LayerStreamer> streamer_;  // set when streaming under a memory budget
  uint64_t base_rss_ = 0;                    // the process before any weights or buffers
  std::unique_ptr<Linear> embed_;   // (vocab, dim)
  std::vector<LayerWeights> layers_;
  std::vector<float> final_norm_;   // (dim)
  std::unique_ptr<Linear> output_;  // (vocab, dim); null when tied
  const Linear* output_ptr_ = nullptr;

  int ctx_ = 0;
  // (n_layers, ctx, n_kv_heads*head_dim) elements of kv_type (f32 or f16 bits)
  std::vector<std::byte> key_cache_, value_cache_;
  std::vector<float> rope_cos_, rope_sin_;  // (ctx, head_dim/2)

  // Scratch for n tokens.
  int scratch_n_ = 0;
  std::vector<float> x_, xb_, q_, k_, v_, att_out_, hb_, hb2_;
};

}  // namespace lsb
