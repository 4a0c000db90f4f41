// Model hyper-parameters of a Llama/Mistral-family decoder, independent of the file they came from.
#pragma once
#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace lsb {

struct ModelConfig {
  std::string arch = "llama";
  int dim = 0;         // hidden_size
  int hidden_dim = 0;  // intermediate_size (SwiGLU width)
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;    // usually dim / n_heads, but HF configs may set it explicitly
  int vocab_size = 0;
  int max_seq_len = 0;
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;
  bool tie_embeddings = false;
  // RoPE convention the q/k weights are laid out for: true = interleaved pairs (2i, 2i+1) as in
  // llama2.c and GGUF; false = rotate-half (i, i + head_dim/2) as in Hugging Face checkpoints.
  bool rope_interleaved = false;
  int bos_id = 1;
  int eos_id = 2;

  // Throws lsb::Error naming `where` if a value is out of range or inconsistent.
  void validate(const std::string& where) const;
  int64_t n_params_estimate() const;
};

// Hugging Face config.json -> ModelConfig. Throws lsb::Error naming `where` on a missing key,
// a wrong type or an unsupported architecture.
ModelConfig config_from_hf_json(const nlohmann::json& j, const std::string& where);
nlohmann::json config_to_json(const ModelConfig& c);
ModelConfig config_from_json(const nlohmann::json& j, const std::string& where);  // inverse of the above

}  // namespace lsb
