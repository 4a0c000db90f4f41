#include "runtime/session.h"

#include "lsb/error.h"

namespace lsb {

Session open_session(const std::string& model_path, const std::string& tokenizer_path, bool need_tokenizer) {
  Session s;
  s.source = open_model(model_path);
  s.model = std::make_unique<LlamaModel>(s.source);
  TokenizerBlob blob = tokenizer_path.empty() ? s.source->tokenizer() : read_tokenizer_file(tokenizer_path);
  if (blob.kind == TokenizerBlob::Kind::None && !need_tokenizer) return s;
  if (blob.kind == TokenizerBlob::Kind::None)
    fail(model_path, "no tokenizer found with the model; pass --tokenizer PATH");
  s.tokenizer = load_tokenizer(blob);
  if (s.tokenizer->vocab_size() > s.model->config().vocab_size)
    fail(blob.origin, "tokenizer has {} tokens but the model's vocabulary is {}", s.tokenizer->vocab_size(),
         s.model->config().vocab_size);
  return s;
}

}  // namespace lsb
