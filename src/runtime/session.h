// Opening a model for inference: the tensor source, the model built from it, and its tokenizer.
#pragma once
#include <memory>
#include <string>

#include "lsb/tensor_source.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"

namespace lsb {

struct Session {
  std::shared_ptr<TensorSource> source;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

// tokenizer_path empty: use the tokenizer that comes with the model (tokenizer.model in a Hugging
// Face folder, the one embedded in a .lsb file); error if there is none and need_tokenizer.
Session open_session(const std::string& model_path, const std::string& tokenizer_path, bool need_tokenizer = true,
                     const ModelOptions& opt = {});

// "400M", "1.5G", "64MiB", "123456" -> bytes (K/M/G/T are powers of 1024). Throws on bad input.
uint64_t parse_size(const std::string& s);

}  // namespace lsb
