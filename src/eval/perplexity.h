// Perplexity exactly as llama.cpp's `llama-perplexity` computes it, so numbers are comparable:
// the whole text tokenized as one string with one BOS in front, cut into consecutive windows of
// ctx tokens (incomplete tail dropped), the first token of each window replaced by BOS, and only
// the second half of each window scored (positions ctx/2 .. ctx-2 predicting the next token).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "model/llama_model.h"
#include "model/windows.h"

namespace lsb {

struct PerplexityOptions {
  int ctx = 512;
  int max_chunks = -1;  // -1: all full windows
  bool progress = true;
  bool decode = false;  // run each window one token at a time, as generation does (forward_window)
};

struct PerplexityResult {
  double ppl = 0, ppl_stderr = 0, mean_nll = 0;
  int64_t n_tokens = 0;  // tokens in the whole text, BOS included
  int n_chunks = 0;
  int64_t n_scored = 0;
  int ctx = 0;
  double seconds = 0;
  double tokens_per_second = 0;  // tokens run through the model (n_chunks * ctx) per second
};

class MeanAccumulator;
// Fills ppl, mean_nll, ppl_stderr and n_scored from the accumulated per-token NLLs.
void set_ppl(PerplexityResult& r, const MeanAccumulator& nll);

// Natural-log negative log-likelihood of `target` under softmax(logits) (computed in double).
double token_nll(const float* logits, int vocab, int target);

// Observer of each scored position: (chunk, position in window, logits (vocab), target token).
using ScoredLogitsFn = std::function<void(int, int, const float*, int)>;

// Runs window w (ctx tokens from position 0) and writes the logits of positions first_scored ..
// ctx-1. decode: one forward() a token, so that the single-token kernels of generation compute
// them (their numbers may differ from a batch's: kernels/table_q8.h); else one batch.
void forward_window(LlamaModel& model, const std::vector<int>& w, int ctx, int first_scored, float* logits,
                    bool decode);

PerplexityResult perplexity(LlamaModel& model, const std::vector<int>& tokens, const PerplexityOptions& opt,
                            const std::string& where, const ScoredLogitsFn& observer = {});

}  // namespace lsb
