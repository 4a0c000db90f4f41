// Every weight of the model in memory at once: dense tensors used in place from the source's
// memory map, packed ones through their Linear. The default when no memory budget is given.
#pragma once
#include <memory>
#include <vector>

#include "io/tensor_source.h"
#include "model/weights.h"

namespace lsb {

class ResidentWeights final : public WeightProvider {
 public:
  // Checks the source's tensors against its config; keeps `src` alive.
  explicit ResidentWeights(std::shared_ptr<const TensorSource> src);

  void embedding_row(int token, float* out) override { embed_->row(token, out); }
  const LayerWeights& layer(int l) override { return layers_[static_cast<size_t>(l)]; }
  const std::vector<float>& final_norm() const override { return final_norm_; }
  const Linear& head() override { return *head_; }
  uint64_t bytes_per_token() const override;

 private:
  std::shared_ptr<const TensorSource> src_;
  std::unique_ptr<Linear> embed_;   // (vocab, dim)
  std::vector<LayerWeights> layers_;
  std::vector<float> final_norm_;   // (dim)
  std::unique_ptr<Linear> output_;  // (vocab, dim); null when tied
  const Linear* head_ = nullptr;
};

}  // namespace lsb
