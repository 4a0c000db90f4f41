#include "runtime/session.h"

#include <cctype>

#include "lsb/error.h"

namespace lsb {

Session open_session(const std::string& model_path, const std::string& tokenizer_path, bool need_tokenizer,
                     const ModelOptions& opt) {
  Session s;
  s.source = open_model(model_path);
  s.model = std::make_unique<LlamaModel>(s.source, opt);
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

uint64_t parse_size(const std::string& s) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    fail("--mem-budget", "'{}' is not a size (examples: 400M, 1.5G, 65536)", s);
  }
  std::string unit = s.substr(used);
  for (char& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.size() > 1 && unit.back() == 'B') unit.pop_back();
  if (unit.size() > 1 && unit.back() == 'I') unit.pop_back();
  double mult = 1;
  if (unit == "K") mult = 1024.0;
  else if (unit == "M") mult = 1024.0 * 1024;
  else if (unit == "G") mult = 1024.0 * 1024 * 1024;
  else if (unit == "T") mult = 1024.0 * 1024 * 1024 * 1024;
  else if (!unit.empty()) fail("--mem-budget", "'{}' has an unknown unit (use K, M, G or T)", s);
  if (!(v > 0) || v * mult > 1e18) fail("--mem-budget", "'{}' is not a positive size", s);
  return static_cast<uint64_t>(v * mult);
}

}  // namespace lsb
