// Windows of a token stream, the llama.cpp way (`llama-perplexity`, `llama-imatrix`): the whole
// text tokenized as one string with one BOS in front, cut into consecutive windows of ctx
// tokens (incomplete tail dropped), the first token of each window replaced by BOS. Perplexity
// and KL divergence score the second half of each window; calibration uses every position.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lsb {

struct TokenWindows {
  int ctx = 0, n_chunks = 0, first_scored = 0;  // scored positions: first_scored .. ctx-2
  // Tokens of window i with its first token replaced by BOS.
  std::vector<int> window(const std::vector<int>& tokens, int i, int bos) const;
  int64_t scored_per_chunk() const { return ctx - first_scored - 1; }
};

// max_chunks <= 0: every full window. Throws lsb::Error naming `where` when the text is shorter
// than one window.
TokenWindows make_windows(int64_t n_tokens, int ctx, int max_chunks, const std::string& where);

}  // namespace lsb
