#include "eval/perplexity.h"

#include <chrono>
#include <cmath>

#include "base/error.h"
#include "eval/stats.h"
#include "runtime/progress.h"

namespace lsb {

void set_ppl(PerplexityResult& r, const MeanAccumulator& nll) {
  r.n_scored = nll.count();
  r.mean_nll = nll.mean();
  r.ppl = std::exp(r.mean_nll);
  // Standard error as llama.cpp reports it: sqrt(var(nll) / (N - 1)) * PPL.
  r.ppl_stderr = nll.stderr_of_mean() * r.ppl;
}

double token_nll(const float* logits, int vocab, int target) { return log_sum_exp(logits, vocab) - logits[target]; }

void forward_window(LlamaModel& model, const std::vector<int>& w, int ctx, int first_scored, float* logits,
                    bool decode) {
  if (!decode) return model.forward(w.data(), ctx, 0, logits, first_scored);
  const size_t vocab = static_cast<size_t>(model.config().vocab_size);
  for (int p = 0; p < ctx; ++p) {
    if (p < first_scored)
      model.forward(&w[static_cast<size_t>(p)], 1, p, nullptr, 1);
    else
      model.forward(&w[static_cast<size_t>(p)], 1, p, logits + static_cast<size_t>(p - first_scored) * vocab, 0);
  }
}

PerplexityResult perplexity(LlamaModel& model, const std::vector<int>& tokens, const PerplexityOptions& opt,
                            const std::string& where, const ScoredLogitsFn& observer) {
  const TokenWindows win = make_windows(static_cast<int64_t>(tokens.size()), opt.ctx, opt.max_chunks, where);
  const int vocab = model.config().vocab_size;
  const int bos = model.config().bos_id;
  model.reset(win.ctx);
  std::vector<float> logits(static_cast<size_t>(win.ctx - win.first_scored) * vocab);

  MeanAccumulator nll;
  ProgressBar bar("perplexity", win.n_chunks, opt.progress);
  const auto t0 = std::chrono::steady_clock::now();
  for (int c = 0; c < win.n_chunks; ++c) {
    const std::vector<int> w = win.window(tokens, c, bos);
    // logits rows correspond to window positions first_scored .. ctx-1
    forward_window(model, w, win.ctx, win.first_scored, logits.data(), opt.decode);
    for (int j = win.first_scored; j < win.ctx - 1; ++j) {
      const float* lg = logits.data() + static_cast<size_t>(j - win.first_scored) * vocab;
      const int target = tokens[static_cast<size_t>(c) * win.ctx + j + 1];
      nll.add(token_nll(lg, vocab, target));
      if (observer) observer(c, j, lg, target);
    }
    bar.update(c + 1, fmt::format("PPL {:.4f}", std::exp(nll.mean())));
  }
  bar.finish();
  PerplexityResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.n_tokens = static_cast<int64_t>(tokens.size());
  r.n_chunks = win.n_chunks;
  r.ctx = win.ctx;
  set_ppl(r, nll);
  r.tokens_per_second = r.seconds > 0 ? static_cast<double>(win.n_chunks) * win.ctx / r.seconds : 0.0;
  return r;
}

}  // namespace lsb
