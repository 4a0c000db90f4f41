// Text generation: prompt processed as one batch, then one token at a time.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/llama_model.h"
#include "model/tokenizer.h"

namespace lsb {

struct GenerateOptions {
  int n_new = 128;
  float temperature = 0.8f;
  float top_p = 0.9f;
  uint64_t seed = 42;
};

struct GenerateResult {
  std::vector<int> prompt_tokens;  // BOS included
  std::vector<int> tokens;         // generated ids (after the prompt)
  std::string text;                // prompt and continuation as decoded text
  double prompt_seconds = 0, decode_seconds = 0;
  double prompt_tok_per_s = 0, decode_tok_per_s = 0;
  std::string stop_reason;  // "length" or "eos"
};

// on_text receives text as soon as it is complete UTF-8 (prompt first, then the continuation).
GenerateResult generate(LlamaModel& model, const Tokenizer& tok, const std::string& prompt,
                        const GenerateOptions& opt, const std::function<void(const std::string&)>& on_text = {});

}  // namespace lsb
