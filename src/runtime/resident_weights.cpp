#include "runtime/resident_weights.h"

#include <algorithm>

#include "model/model_tensors.h"

namespace lsb {

ResidentWeights::ResidentWeights(std::shared_ptr<const TensorSource> src) : src_(std::move(src)) {
  const TensorSource& s = *src_;
  const ModelConfig& cfg = s.config();
  const std::string where = s.describe();
  cfg.validate(where);
  validate_tensors(s);
  const TensorGetter get = [&s](const std::string& name) {
    const TensorInfo& t = s.get(name);
    return std::make_pair(&t, s.data(t));
  };
  auto linear = [&](const std::string& name) {
    auto [info, bytes] = get(name);
    return make_linear(*info, bytes, where);
  };
  const TensorInfo& norm = s.get("model.norm.weight");
  final_norm_ = load_vector(norm, s.data(norm), cfg.dim, where);
  embed_ = linear("model.embed_tokens.weight");
  layers_.reserve(static_cast<size_t>(cfg.n_layers));
  for (int l = 0; l < cfg.n_layers; ++l) layers_.push_back(load_layer(l, cfg.dim, get, where));
  if (cfg.tie_embeddings) {
    head_ = embed_.get();
  } else {
    output_ = linear("lm_head.weight");
    head_ = output_.get();
  }
}

uint64_t ResidentWeights::bytes_per_token() const {
  uint64_t b = embed_->weight_bytes() / static_cast<uint64_t>(std::max<int64_t>(1, embed_->rows()));  // one row
  for (const auto& L : layers_) {
    for (const Linear* m : {L.wq.get(), L.wk.get(), L.wv.get(), L.wo.get(), L.gate.get(), L.up.get(), L.down.get()})
      b += m->weight_bytes();
    b += (L.attn_norm.size() + L.ffn_norm.size()) * sizeof(float);
  }
  return b + head_->weight_bytes() + final_norm_.size() * sizeof(float);
}

}  // namespace lsb
