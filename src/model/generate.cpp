#include "model/generate.h"

#include <algorithm>
#include <chrono>
#include <limits>

#include <fmt/format.h>

#include "base/error.h"
#include "model/sampler.h"

namespace lsb {
namespace {

// Length of the longest prefix of s that does not end inside a UTF-8 sequence.
size_t complete_utf8_prefix(const std::string& s) {
  size_t n = s.size();
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead byte
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    return len > back ? n - back : n;
  }
  return n;
}

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

GenerateResult generate(LlamaModel& model, const Tokenizer& tok, const std::string& prompt,
                        const GenerateOptions& opt, const std::function<void(const std::string&)>& on_text) {
  return generate(model, tok, tok.encode(prompt, true), opt, on_text);
}

GenerateResult generate(LlamaModel& model, const Tokenizer& tok, const std::vector<int>& prompt_tokens,
                        const GenerateOptions& opt, const std::function<void(const std::string&)>& on_text) {
  GenerateResult r;
  const ModelConfig& cfg = model.config();
  if (prompt_tokens.empty()) throw Error("generate: the prompt has no tokens");
  for (int id : prompt_tokens)
    if (id < 0 || id >= cfg.vocab_size)
      throw Error(fmt::format("generate: prompt token {} is outside the vocabulary (0..{})", id, cfg.vocab_size - 1));
  r.prompt_tokens = prompt_tokens;
  const int n_prompt = static_cast<int>(r.prompt_tokens.size());
  const int n_new = std::max(0, opt.n_new);
  r.stop_reason = "length";
  auto cancelled = [&] {
    if (!opt.cancel || !opt.cancel()) return false;
    r.stop_reason = "cancelled";
    return true;
  };
  if (opt.reserve_ctx > 0 && n_prompt + n_new > opt.reserve_ctx)
    throw Error(fmt::format("generate: {} prompt + {} new tokens exceed the context of {}", n_prompt, n_new,
                            opt.reserve_ctx));
  if (opt.reserve_ctx > 0)
    model.reset(opt.reserve_ctx, opt.reserve_ctx);
  else
    model.reset(n_prompt + n_new, n_prompt);

  std::vector<int> all = r.prompt_tokens;
  size_t printed = 0;
  // r.text == tok.decode(all) after every call; a token's text needs only the one before it
  // (Tokenizer::decode), so a long answer costs O(1) per token, not a decode of everything so far.
  auto flush = [&]() {
    const size_t upto = complete_utf8_prefix(r.text);
    if (on_text && upto > printed) on_text(r.text.substr(printed, upto - printed));
    printed = std::max(printed, upto);
  };
  auto append = [&](int id) {
    const int prev = all.back();
    all.push_back(id);
    r.text += tok.decode({prev, id}).substr(tok.decode({prev}).size());
    flush();
  };
  {
    // The prompt's text; without echo it only moves the printed mark past it.
    r.text = tok.decode(all);
    r.prompt_text_bytes = complete_utf8_prefix(r.text);
    if (opt.echo_prompt)
      flush();
    else
      printed = r.prompt_text_bytes;
  }
  if (cancelled()) return r;

  std::vector<float> logits(static_cast<size_t>(cfg.vocab_size));
  // Only ids the tokenizer can decode are sampled: a model's vocabulary may be padded past the
  // tokenizer's (docs/DESIGN.md).
  const int sample_vocab = std::min(cfg.vocab_size, tok.vocab_size());
  Sampler sampler(opt.temperature, opt.top_p, opt.seed);
  auto t = Clock::now();
  model.forward(r.prompt_tokens.data(), n_prompt, 0, logits.data(), n_prompt - 1);
  r.prompt_seconds = since(t);
  int pos = n_prompt;
  int n_decoded = 0;
  t = Clock::now();
  for (int i = 0; i < n_new; ++i) {
    if (opt.ignore_eos)
      for (int id : {tok.eos_id(), tok.bos_id()})
        if (id >= 0 && id < sample_vocab) logits[static_cast<size_t>(id)] = -std::numeric_limits<float>::infinity();
    const int next = sampler.sample(logits.data(), sample_vocab);
    // EOS ends generation; so does BOS, which llama2.c models emit between stories.
    if (next == tok.eos_id() || next == tok.bos_id() ||
        std::find(opt.stop_ids.begin(), opt.stop_ids.end(), next) != opt.stop_ids.end()) {
      r.stop_reason = "eos";
      break;
    }
    r.tokens.push_back(next);
    append(next);
    if (i + 1 == n_new || cancelled()) break;
    model.forward(&next, 1, pos++, logits.data(), 0);
    ++n_decoded;
  }
  r.decode_seconds = since(t);
  r.prompt_tok_per_s = r.prompt_seconds > 0 ? n_prompt / r.prompt_seconds : 0;
  r.decode_tok_per_s = r.decode_seconds > 0 && n_decoded > 0 ? n_decoded / r.decode_seconds : 0;
  return r;
}

}  // namespace lsb
