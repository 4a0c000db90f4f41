#include "eval/compare.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "base/error.h"
#include "eval/perplexity.h"
#include "eval/stats.h"
#include "quant/metrics.h"
#include "model/sampler.h"
#include "runtime/progress.h"

namespace lsb {
namespace {

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0.0;
  const double idx = q * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(idx);
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (idx - static_cast<double>(lo)) * (sorted[hi] - sorted[lo]);
}

}  // namespace

double kl_divergence(const float* p_logits, const float* q_logits, int vocab) {
  std::vector<double> lp, lq;
  log_softmax(p_logits, vocab, lp);
  log_softmax(q_logits, vocab, lq);
  double kl = 0.0;
  for (int i = 0; i < vocab; ++i) kl += std::exp(lp[i]) * (lp[i] - lq[i]);
  return std::max(0.0, kl);
}

CompareResult compare_models(LlamaModel& ref, LlamaModel& model, const std::vector<int>& tokens,
                             const CompareOptions& opt, const std::string& where) {
  const ModelConfig& rc = ref.config();
  const ModelConfig& mc = model.config();
  if (rc.vocab_size != mc.vocab_size || rc.dim != mc.dim || rc.n_layers != mc.n_layers)
    fail(where, "the reference model's shape (vocab {}, dim {}, layers {}) differs from the model's ({}, {}, {})",
         rc.vocab_size, rc.dim, rc.n_layers, mc.vocab_size, mc.dim, mc.n_layers);
  const TokenWindows win = make_windows(static_cast<int64_t>(tokens.size()), opt.ctx, opt.max_chunks, where);
  const int vocab = rc.vocab_size, dim = rc.dim, n_layers = rc.n_layers;
  ref.reset(win.ctx);
  model.reset(win.ctx);
  const size_t rows = static_cast<size_t>(win.ctx - win.first_scored);
  std::vector<float> ref_logits(rows * vocab), logits(rows * vocab);

  // Hidden states of the reference after each layer, compared when the model reaches that layer.
  std::vector<float> ref_hidden;
  std::vector<double> cos_sum(static_cast<size_t>(n_layers), 0.0);
  int64_t cos_tokens = 0;
  if (opt.layers) {
    ref_hidden.resize(static_cast<size_t>(n_layers) * win.ctx * dim);
    ref.on_layer = [&](int l, const float* x, int n) {
      std::copy(x, x + static_cast<size_t>(n) * dim, ref_hidden.begin() + static_cast<size_t>(l) * win.ctx * dim);
    };
    model.on_layer = [&](int l, const float* x, int n) {
      const float* r = ref_hidden.data() + static_cast<size_t>(l) * win.ctx * dim;
      double s = 0;
      for (int t = 0; t < n; ++t) s += quant::compare(r + static_cast<size_t>(t) * dim, x + static_cast<size_t>(t) * dim, static_cast<size_t>(dim)).cosine;
      cos_sum[l] += s;
    };
  }

  std::vector<double> klds;
  klds.reserve(static_cast<size_t>(win.n_chunks * win.scored_per_chunk()));
  MeanAccumulator nll_r, nll_m, kld;
  int64_t same_top1 = 0;
  std::vector<double> lp, lq;
  ProgressBar bar("kl-divergence", win.n_chunks, opt.progress);
  const auto t0 = std::chrono::steady_clock::now();
  for (int c = 0; c < win.n_chunks; ++c) {
    const std::vector<int> w = win.window(tokens, c, rc.bos_id);
    ref.forward(w.data(), win.ctx, 0, ref_logits.data(), win.first_scored);
    forward_window(model, w, win.ctx, win.first_scored, logits.data(), opt.decode);
    cos_tokens += win.ctx;
    for (int j = win.first_scored; j < win.ctx - 1; ++j) {
      const size_t off = static_cast<size_t>(j - win.first_scored) * vocab;
      const int target = tokens[static_cast<size_t>(c) * win.ctx + j + 1];
      log_softmax(ref_logits.data() + off, vocab, lp);
      log_softmax(logits.data() + off, vocab, lq);
      double kl = 0.0;
      for (int i = 0; i < vocab; ++i) kl += std::exp(lp[i]) * (lp[i] - lq[i]);
      klds.push_back(std::max(0.0, kl));
      kld.add(klds.back());
      nll_r.add(-lp[target]);
      nll_m.add(-lq[target]);
      same_top1 += argmax(ref_logits.data() + off, vocab) == argmax(logits.data() + off, vocab);
    }
    bar.update(c + 1, fmt::format("PPL {:.3f} vs {:.3f}", std::exp(nll_m.mean()), std::exp(nll_r.mean())));
  }
  bar.finish();
  ref.on_layer = nullptr;
  model.on_layer = nullptr;

  CompareResult r;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (PerplexityResult* p : {&r.ref, &r.model}) {
    p->n_tokens = static_cast<int64_t>(tokens.size());
    p->n_chunks = win.n_chunks;
    p->ctx = win.ctx;
    p->seconds = secs;
  }
  set_ppl(r.ref, nll_r);
  set_ppl(r.model, nll_m);
  r.delta_ppl = r.model.ppl - r.ref.ppl;
  r.ppl_ratio = r.model.ppl / r.ref.ppl;
  r.top1_agreement = static_cast<double>(same_top1) / static_cast<double>(kld.count());
  r.kld_mean = kld.mean();
  r.kld_stderr = kld.stderr_of_mean();
  std::vector<double> sorted = klds;
  std::sort(sorted.begin(), sorted.end());
  r.kld_median = percentile(sorted, 0.5);
  r.kld_p90 = percentile(sorted, 0.90);
  r.kld_p95 = percentile(sorted, 0.95);
  r.kld_p99 = percentile(sorted, 0.99);
  r.kld_max = sorted.back();
  if (opt.layers)
    for (int l = 0; l < n_layers; ++l) r.layer_cosine.push_back(cos_sum[l] / static_cast<double>(cos_tokens));
  // log10 histogram over [1e-6, 1e2]
  const int bins = std::max(1, opt.histogram_bins);
  const double lo = -6.0, hi = 2.0;
  r.hist_counts.assign(static_cast<size_t>(bins), 0);
  for (int b = 0; b <= bins; ++b) r.hist_edges.push_back(std::pow(10.0, lo + (hi - lo) * b / bins));
  for (double k : klds) {
    const double lk = std::log10(std::clamp(k, 1e-6, 1e2));
    r.hist_counts[std::min<size_t>(static_cast<size_t>((lk - lo) / (hi - lo) * bins), bins - 1)]++;
  }
  return r;
}

}  // namespace lsb
