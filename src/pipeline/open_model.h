// Opening any model file the project reads, by looking at the path and its first bytes.
#pragma once
#include <memory>
#include <string>

#include "io/tensor_source.h"
#include "runtime/session.h"

namespace lsb {

// A Hugging Face folder, a llama2.c .bin, a GGUF or a .lsb file. The tensors are checked against
// the config (names present, shapes agreeing), so every consumer gets a consistent model.
// Throws lsb::Error "PATH: problem".
std::unique_ptr<TensorSource> open_model(const std::string& path);

// open_model(path), then the session on it (runtime/session.h).
Session open_session(const std::string& path, const std::string& tokenizer_path, bool need_tokenizer = true,
                     const RunOptions& opt = {});

}  // namespace lsb
