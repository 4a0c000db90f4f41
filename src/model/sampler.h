// Next-token choice: greedy (temperature 0), or temperature + nucleus (top-p) sampling with a
// seeded generator whose output is the same on every platform.
#pragma once
#include <cstdint>
#include <vector>

namespace lsb {

class Sampler {
 public:
  Sampler(float temperature, float top_p, uint64_t seed);
  // logits: (vocab); modified in place.
  int sample(float* logits, int vocab);

 private:
  float uniform();  // [0, 1)
  float temperature_, top_p_;
  uint64_t state_;
  std::vector<std::pair<float, int>> candidates_;
};

int argmax(const float* v, int n);

}  // namespace lsb
