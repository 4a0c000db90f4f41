#include "base/config.h"

#include <cmath>
#include <limits>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/json_fields.h"

namespace lsb {

namespace {

// Upper bounds far above any real model, low enough that sizes derived from them (rows * cols,
// layers * ...) stay well inside int64 and no absurd config can trigger a huge allocation.
constexpr int kMaxDim = 1 << 20;
constexpr int kMaxLayers = 1024;
constexpr int kMaxHeads = 1 << 16;
constexpr int kMaxSeqLen = 1 << 24;

// bos/eos ids may be an integer, null, or (newer configs) a list whose first entry is the main one.
int get_token_id(const nlohmann::json& j, const char* key, int dflt, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (it->is_array()) {
    if (it->empty()) return dflt;
    nlohmann::json wrapped = {{key, (*it)[0]}};
    return get_int(wrapped, key, where);
  }
  return get_int(j, key, where);
}

}  // namespace

void ModelConfig::validate(const std::string& where) const {
  auto check_range = [&](const char* what, int64_t v, int64_t hi) {
    if (v <= 0) fail(where, "{} must be positive, got {}", what, v);
    if (v > hi) fail(where, "{} = {} is larger than the supported maximum {}", what, v, hi);
  };
  check_range("dim (hidden_size)", dim, kMaxDim);
  check_range("hidden_dim (intermediate_size)", hidden_dim, kMaxDim);
  check_range("n_layers (num_hidden_layers)", n_layers, kMaxLayers);
  check_range("n_heads (num_attention_heads)", n_heads, kMaxHeads);
  check_range("n_kv_heads (num_key_value_heads)", n_kv_heads, kMaxHeads);
  check_range("head_dim", head_dim, kMaxDim);
  check_range("vocab_size", vocab_size, kMaxDim);
  check_range("max_seq_len (max_position_embeddings)", max_seq_len, kMaxSeqLen);
  check_range("n_heads * head_dim", int64_t(n_heads) * head_dim, kMaxDim);
  if (n_kv_heads > n_heads || n_heads % n_kv_heads != 0)
    fail(where, "n_heads ({}) must be a multiple of n_kv_heads ({})", n_heads, n_kv_heads);
  if (head_dim % 2 != 0) fail(where, "head_dim must be even for RoPE, got {}", head_dim);
  if (!std::isfinite(rope_theta) || rope_theta <= 0) fail(where, "rope_theta must be positive, got {}", rope_theta);
  if (!std::isfinite(norm_eps) || norm_eps <= 0 || norm_eps >= 1)
    fail(where, "norm_eps (rms_norm_eps) must be in (0, 1), got {}", norm_eps);
  if (bos_id < 0 || bos_id >= vocab_size) fail(where, "bos id {} is outside the vocabulary (size {})", bos_id, vocab_size);
  if (eos_id < 0 || eos_id >= vocab_size) fail(where, "eos id {} is outside the vocabulary (size {})", eos_id, vocab_size);
  if (arch != "llama" && arch != "mistral") fail(where, "unsupported architecture '{}'", arch);
}

int64_t ModelConfig::n_params_estimate() const {
  const int64_t d = dim, q = int64_t(n_heads) * head_dim, kv = int64_t(n_kv_heads) * head_dim;
  const int64_t per_layer = 2 * d + d * q + 2 * d * kv + q * d + 3 * d * int64_t(hidden_dim);
  int64_t n = int64_t(vocab_size) * d + int64_t(n_layers) * per_layer + d;
  if (!tie_embeddings) n += int64_t(vocab_size) * d;
  return n;
}

ModelConfig config_from_hf_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail(where, "expected a JSON object, got {}", j.type_name());
  ModelConfig c;

  // The architecture decides which tensors and which forward pass apply; refuse anything else
  // rather than run a different model with Llama maths.
  std::string archname;
  auto arch_it = j.find("architectures");
  if (arch_it != j.end() && !arch_it->is_null()) {
    if (!arch_it->is_array() || arch_it->empty() || !(*arch_it)[0].is_string())
      fail(where, "key 'architectures' should be a non-empty list of strings");
    archname = (*arch_it)[0].get<std::string>();
  } else if (j.contains("model_type")) {
    std::string mt = get_string(j, "model_type", where);
    archname = mt == "llama" ? "LlamaForCausalLM" : mt == "mistral" ? "MistralForCausalLM" : mt;
  } else {
    fail(where, "missing key 'architectures'");
  }
  if (archname == "LlamaForCausalLM") {
    c.arch = "llama";
  } else if (archname == "MistralForCausalLM") {
    c.arch = "mistral";
  } else {
    fail(where, "unsupported architecture '{}' (supported: LlamaForCausalLM, MistralForCausalLM)", archname);
  }

  c.dim = get_int(j, "hidden_size", where);
  c.hidden_dim = get_int(j, "intermediate_size", where);
  c.n_layers = get_int(j, "num_hidden_layers", where);
  c.n_heads = get_int(j, "num_attention_heads", where);
  c.vocab_size = get_int(j, "vocab_size", where);
  c.n_kv_heads = get_int_or(j, "num_key_value_heads", c.n_heads, where);
  if (c.n_heads <= 0) fail(where, "num_attention_heads must be positive, got {}", c.n_heads);
  c.head_dim = get_int_or(j, "head_dim", c.dim / c.n_heads, where);
  c.norm_eps = to_float_checked(get_number_or(j, "rms_norm_eps", 1e-6, where), "rms_norm_eps", where);
  c.rope_theta = to_float_checked(get_number_or(j, "rope_theta", 10000.0, where), "rope_theta", where);
  c.max_seq_len = get_int_or(j, "max_position_embeddings", 2048, where);
  c.tie_embeddings = get_bool_or(j, "tie_word_embeddings", false, where);
  c.bos_id = get_token_id(j, "bos_token_id", 1, where);
  c.eos_id = get_token_id(j, "eos_token_id", 2, where);
  c.rope_interleaved = false;  // HF checkpoints use rotate-half

  // Features that change the maths; running without them would give silently wrong output.
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null())
    fail(where, "rope_scaling {} is not supported (only plain RoPE)", it->dump());
  if (get_bool_or(j, "attention_bias", false, where)) fail(where, "attention_bias=true is not supported");
  if (get_bool_or(j, "mlp_bias", false, where)) fail(where, "mlp_bias=true is not supported");
  if (auto it = j.find("hidden_act"); it != j.end() && !it->is_null()) {
    std::string act = get_string(j, "hidden_act", where);
    if (act != "silu") fail(where, "hidden_act '{}' is not supported (only silu)", act);
  }
  // Mistral's sliding window only matters past the window; limiting the context to it keeps
  // plain causal attention exact.
  if (auto it = j.find("sliding_window"); it != j.end() && !it->is_null()) {
    int window = get_int(j, "sliding_window", where);
    if (window > 0 && window < c.max_seq_len) c.max_seq_len = window;
  }
  c.validate(where);
  return c;
}

nlohmann::json config_to_json(const ModelConfig& c) {
  return nlohmann::json{
      {"arch", c.arch},
      {"dim", c.dim},
      {"hidden_dim", c.hidden_dim},
      {"n_layers", c.n_layers},
      {"n_heads", c.n_heads},
      {"n_kv_heads", c.n_kv_heads},
      {"head_dim", c.head_dim},
      {"vocab_size", c.vocab_size},
      {"max_seq_len", c.max_seq_len},
      {"rope_theta", static_cast<double>(c.rope_theta)},  // float -> double is exact, so it round-trips
      {"norm_eps", static_cast<double>(c.norm_eps)},
      {"tie_embeddings", c.tie_embeddings},
      {"rope_interleaved", c.rope_interleaved},
      {"bos_id", c.bos_id},
      {"eos_id", c.eos_id},
  };
}

ModelConfig config_from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) fail(where, "model config should be a JSON object, got {}", j.type_name());
  ModelConfig c;
  c.arch = get_string(j, "arch", where);
  c.dim = get_int(j, "dim", where);
  c.hidden_dim = get_int(j, "hidden_dim", where);
  c.n_layers = get_int(j, "n_layers", where);
  c.n_heads = get_int(j, "n_heads", where);
  c.n_kv_heads = get_int(j, "n_kv_heads", where);
  c.head_dim = get_int(j, "head_dim", where);
  c.vocab_size = get_int(j, "vocab_size", where);
  c.max_seq_len = get_int(j, "max_seq_len", where);
  c.rope_theta = to_float_checked(get_number(j, "rope_theta", where), "rope_theta", where);
  c.norm_eps = to_float_checked(get_number(j, "norm_eps", where), "norm_eps", where);
  c.tie_embeddings = get_bool(j, "tie_embeddings", where);
  c.rope_interleaved = get_bool(j, "rope_interleaved", where);
  c.bos_id = get_int(j, "bos_id", where);
  c.eos_id = get_int(j, "eos_id", where);
  c.validate(where);
  return c;
}

}  // namespace lsb
