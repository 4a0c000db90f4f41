// The weights of one transformer layer, however they are stored.
#pragma once
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "linear/linear.h"

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

// Finds a tensor by canonical name: its info and its bytes (throws if absent).
using TensorGetter = std::function<std::pair<const TensorInfo*, std::span<const std::byte>>(const std::string&)>;

// Builds layer l's weights from its tensors ("model.layers.{l}.*"); norm vectors become float.
// `load` applies to every matrix (see make_linear).
LayerWeights load_layer(int l, int dim, const TensorGetter& get, const std::string& where, const LinearLoad& load = {});
// A dense 1-D tensor (norm weights) as float, checked to have `expect` elements.
std::vector<float> load_vector(const TensorInfo& t, std::span<const std::byte> bytes, int64_t expect,
                               const std::string& where);

}  // namespace lsb
