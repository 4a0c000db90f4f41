#include "model/sampler.h"

#include <algorithm>
#include <cmath>

namespace lsb {

int argmax(const float* v, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

Sampler::Sampler(float temperature, float top_p, uint64_t seed)
    : temperature_(temperature), top_p_(top_p), state_(seed ? seed : 0x9E3779B97F4A7C15ull) {}

// xorshift64*: tiny, deterministic, identical everywhere (std distributions are not).
float Sampler::uniform() {
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  return static_cast<float>((state_ * 0x2545F4914F6CDD1Dull) >> 40) / 16777216.0f;
}

int Sampler::sample(float* logits, int vocab) {
  if (temperature_ <= 0.0f) return argmax(logits, vocab);
  // softmax(logits / T)
  float mx = -INFINITY;
  for (int i = 0; i < vocab; ++i) mx = std::max(mx, logits[i]);
  double sum = 0.0;
  for (int i = 0; i < vocab; ++i) {
    logits[i] = std::exp((logits[i] - mx) / temperature_);
    sum += logits[i];
  }
  for (int i = 0; i < vocab; ++i) logits[i] = static_cast<float>(logits[i] / sum);
  const float r = uniform();
  if (top_p_ <= 0.0f || top_p_ >= 1.0f) {
    float cdf = 0.0f;
    for (int i = 0; i < vocab; ++i) {
      cdf += logits[i];
      if (r < cdf) return i;
    }
    return vocab - 1;
  }
  // Nucleus: smallest set of most likely tokens whose mass exceeds top_p. Tokens below
  // (1 - top_p) / (vocab - 1) can never be in it, so they are dropped before sorting.
  candidates_.clear();
  const float cutoff = (1.0f - top_p_) / static_cast<float>(std::max(1, vocab - 1));
  for (int i = 0; i < vocab; ++i)
    if (logits[i] >= cutoff) candidates_.emplace_back(logits[i], i);
  if (candidates_.empty()) return argmax(logits, vocab);  // top_p below 1/vocab
  std::sort(candidates_.begin(), candidates_.end(),
            [](const auto& a, const auto& b) { return a.first != b.first ? a.first > b.first : a.second < b.second; });
  float mass = 0.0f;
  size_t last = candidates_.size() - 1;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    mass += candidates_[i].first;
    if (mass > top_p_) {
      last = i;
      break;
    }
  }
  const float target = r * mass;
  float cdf = 0.0f;
  for (size_t i = 0; i <= last; ++i) {
    cdf += candidates_[i].first;
    if (target < cdf) return candidates_[i].second;
  }
  return candidates_[last].second;
}

}  // namespace lsb
