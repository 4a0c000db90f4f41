// Model-level quality of a compressed model against its original, measured the way llama.cpp's
// `llama-perplexity --kl-divergence` does (same windows, same scored positions), but with both
// models in one process instead of a logits file: perplexity of each, KL divergence of the
// next-token distributions (mean, median, percentiles), top-1 agreement, and optionally the
// cosine similarity of the hidden state after every layer.
#pragma once
#include <cstdint>
#include <vector>

#include "eval/perplexity.h"
#include "model/llama_model.h"

namespace lsb {

struct CompareOptions {
  int ctx = 512;
  int max_chunks = -1;
  bool layers = false;  // per-layer hidden-state cosine similarity
  bool progress = true;
  bool decode = false;  // the model (not the reference) one token at a time (forward_window)
  int histogram_bins = 40;  // KLD histogram on a log10 scale, for the report
};

struct CompareResult {
  PerplexityResult ref, model;
  double delta_ppl = 0, ppl_ratio = 0;
  double kld_mean = 0, kld_stderr = 0, kld_median = 0, kld_p90 = 0, kld_p95 = 0, kld_p99 = 0, kld_max = 0;
  double top1_agreement = 0;  // fraction of scored positions where both argmaxes agree
  std::vector<double> layer_cosine;  // (n_layers) mean over all window tokens; empty unless asked
  // Histogram of log10(KLD) (KLD clamped to [1e-6, 1e2]): bin edges and counts.
  std::vector<double> hist_edges;
  std::vector<int64_t> hist_counts;
};

CompareResult compare_models(LlamaModel& ref, LlamaModel& model, const std::vector<int>& tokens,
                             const CompareOptions& opt, const std::string& where);

// KL(P || Q) of softmax(p_logits) and softmax(q_logits), in double.
double kl_divergence(const float* p_logits, const float* q_logits, int vocab);

}  // namespace lsb
