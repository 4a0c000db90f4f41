#include "model/layer_weights.h"

#include "base/error.h"
#include "quant/scheme.h"

namespace lsb {

std::vector<float> load_vector(const TensorInfo& t, std::span<const std::byte> bytes, int64_t expect,
                               const std::string& where) {
  if (t.numel() != expect) fail(where, "tensor '{}' has {} elements, expected {}", t.name, t.numel(), expect);
  if (!dtype_is_dense(t.dtype) || bytes.size() != static_cast<uint64_t>(expect) * dtype_size(t.dtype))
    fail(where, "tensor '{}' must be a dense float vector", t.name);
  return quant::tensor_to_float(t, bytes);
}

LayerWeights load_layer(int l, int dim, const TensorGetter& get, const std::string& where, const LinearLoad& load) {
  const std::string p = "model.layers." + std::to_string(l) + ".";
  auto linear = [&](const std::string& name) {
    auto [info, bytes] = get(p + name);
    return make_linear(*info, bytes, where, load);
  };
  auto vec = [&](const std::string& name) {
    auto [info, bytes] = get(p + name);
    return load_vector(*info, bytes, dim, where);
  };
  LayerWeights L;
  L.attn_norm = vec("input_layernorm.weight");
  L.ffn_norm = vec("post_attention_layernorm.weight");
  L.wq = linear("self_attn.q_proj.weight");
  L.wk = linear("self_attn.k_proj.weight");
  L.wv = linear("self_attn.v_proj.weight");
  L.wo = linear("self_attn.o_proj.weight");
  L.gate = linear("mlp.gate_proj.weight");
  L.up = linear("mlp.up_proj.weight");
  L.down = linear("mlp.down_proj.weight");
  return L;
}

}  // namespace lsb
