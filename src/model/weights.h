// Where the forward pass gets its weights: all resident (runtime's ResidentWeights, the file
// memory-mapped) or streamed one layer at a time under a memory budget (runtime's
// LayerStreamer). The forward pass asks for the embedding rows of a batch, then each layer in
// order, then the head, and never keeps a reference past the next request.
#pragma once
#include <cstdint>
#include <vector>

#include "model/layer_weights.h"

namespace lsb {

// The model's own buffers for a run: what a provider under a memory budget adds to its own
// footprint when it checks the budget.
struct BufferNeeds {
  int ctx = 0, batch = 0;          // positions in the KV cache; tokens per forward() call at most
  uint64_t kv_bytes = 0;           // the KV cache
  uint64_t activation_bytes = 0;   // forward-pass buffers, attention scratch and the caller's logits
};

class WeightProvider {
 public:
  virtual ~WeightProvider() = default;
  // Row `token` of the embedding as float (dim).
  virtual void embedding_row(int token, float* out) = 0;
  // After the embedding rows of a batch were read (a streaming provider releases their pages).
  virtual void embedding_done() {}
  virtual const LayerWeights& layer(int l) = 0;
  virtual const std::vector<float>& final_norm() const = 0;  // (dim)
  virtual const Linear& head() = 0;                          // (vocab, dim)
  // Bytes of weights read to decode one token (for GB/s figures).
  virtual uint64_t bytes_per_token() const = 0;
  // Called once per run, when the model sizes its buffers (LlamaModel::reset). A provider that
  // promised to stay within a memory budget checks it here and throws if it cannot.
  virtual void reserve(const BufferNeeds& needs) { (void)needs; }
};

}  // namespace lsb
