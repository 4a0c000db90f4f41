#include "eval/bench.h"

#include <algorithm>
#include <chrono>

#include "model/sampler.h"

namespace lsb {

Stat summarize(std::vector<double> v) {
  Stat s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.max = v.back();
  s.median = v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  return s;
}

BenchResult bench_model(LlamaModel& model, const BenchOptions& opt) {
  using Clock = std::chrono::steady_clock;
  const int vocab = model.config().vocab_size;
  std::vector<int> prompt(static_cast<size_t>(opt.prompt_tokens));
  uint64_t x = 0x1234567;
  for (auto& t : prompt) {  // LCG: the same ids every run and every model of the same vocabulary
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    t = 3 + static_cast<int>((x >> 33) % static_cast<uint64_t>(std::max(1, vocab - 3)));
  }
  prompt[0] = model.config().bos_id;
  std::vector<float> logits(static_cast<size_t>(vocab));
  BenchResult r;
  r.weight_bytes_per_token = model.weight_bytes_per_token();
  std::vector<double> gbps;
  for (int rep = 0; rep < opt.reps; ++rep) {
    model.reset(opt.prompt_tokens + opt.decode_tokens, opt.prompt_tokens);
    auto t0 = Clock::now();
    model.forward(prompt.data(), opt.prompt_tokens, 0, logits.data(), opt.prompt_tokens - 1);
    const double tp = std::chrono::duration<double>(Clock::now() - t0).count();
    t0 = Clock::now();
    int pos = opt.prompt_tokens;
    for (int i = 0; i < opt.decode_tokens; ++i) {
      const int next = argmax(logits.data(), vocab);
      model.forward(&next, 1, pos++, logits.data(), 0);
    }
    const double td = std::chrono::duration<double>(Clock::now() - t0).count();
    r.prompt_runs.push_back(opt.prompt_tokens / tp);
    r.decode_runs.push_back(opt.decode_tokens / td);
    gbps.push_back(static_cast<double>(r.weight_bytes_per_token) * opt.decode_tokens / td / 1e9);
  }
  r.prompt_tok_per_s = summarize(r.prompt_runs);
  r.decode_tok_per_s = summarize(r.decode_runs);
  r.decode_gb_per_s = summarize(gbps);
  return r;
}

}  // namespace lsb
