// Speed of a model: prompt processing and decoding, repeated, with weights read per token.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/llama_model.h"

namespace lsb {

struct BenchOptions {
  int prompt_tokens = 128;
  int decode_tokens = 64;
  int reps = 3;
};

struct Stat {
  double median = 0, min = 0, max = 0;
};
Stat summarize(std::vector<double> v);

struct BenchResult {
  Stat prompt_tok_per_s, decode_tok_per_s;
  uint64_t weight_bytes_per_token = 0;  // bytes of weights read to decode one token
  Stat decode_gb_per_s;                 // weight_bytes_per_token * decode tok/s
  std::vector<double> prompt_runs, decode_runs;
};

// Runs `reps` times: a batch of prompt_tokens (deterministic pseudo-random ids), then
// decode_tokens single-token steps (greedy).
BenchResult bench_model(LlamaModel& model, const BenchOptions& opt);

}  // namespace lsb
