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
  // Polled before each new token (and before the prompt): when it returns true, generation ends
  // with stop_reason "cancelled". A server uses it for clients that hung up and for stop strings,
  // the chat terminal for Ctrl-C.
  std::function<bool()> cancel;
  // Ids that end generation as EOS does (a chat template's end-of-turn piece, when the
  // tokenizer has it as one id).
  std::vector<int> stop_ids;
  // EOS and BOS are never sampled (their logits are masked), so exactly n_new tokens come out:
  // for speed measurements that must decode a fixed count.
  bool ignore_eos = false;
  // on_text receives the prompt's text first (lsb run prints it); false: the continuation only.
  bool echo_prompt = true;
  // > 0: size the model for this many positions (and prompt batches as long) whatever this
  // request needs, so that a server's memory stays the same from one request to the next and
  // its budget is checked once for all; a request longer than that is refused. 0: what this
  // request needs.
  int reserve_ctx = 0;
};

struct GenerateResult {
  std::vector<int> prompt_tokens;  // BOS included
  std::vector<int> tokens;         // generated ids (after the prompt)
  std::string text;                // prompt and continuation as decoded text
  size_t prompt_text_bytes = 0;    // text[0, prompt_text_bytes) is the prompt's text
  double prompt_seconds = 0, decode_seconds = 0;
  double prompt_tok_per_s = 0, decode_tok_per_s = 0;
  std::string stop_reason;  // "length", "eos" or "cancelled"
  // The continuation alone.
  std::string continuation() const { return text.substr(std::min(prompt_text_bytes, text.size())); }
};

// on_text receives text as soon as it is complete UTF-8 (prompt first unless !echo_prompt, then
// the continuation). The prompt is encoded with one BOS in front.
GenerateResult generate(LlamaModel& model, const Tokenizer& tok, const std::string& prompt,
                        const GenerateOptions& opt, const std::function<void(const std::string&)>& on_text = {});

// The same from ids already encoded (a chat template mixes text and special ids); the ids must
// be non-empty and within the model's vocabulary.
GenerateResult generate(LlamaModel& model, const Tokenizer& tok, const std::vector<int>& prompt_tokens,
                        const GenerateOptions& opt, const std::function<void(const std::string&)>& on_text = {});

}  // namespace lsb
