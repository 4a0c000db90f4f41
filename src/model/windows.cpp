#include "model/windows.h"

#include <algorithm>

#include "base/error.h"

namespace lsb {

std::vector<int> TokenWindows::window(const std::vector<int>& tokens, int i, int bos) const {
  std::vector<int> w(tokens.begin() + static_cast<int64_t>(i) * ctx, tokens.begin() + static_cast<int64_t>(i + 1) * ctx);
  w[0] = bos;
  return w;
}

TokenWindows make_windows(int64_t n_tokens, int ctx, int max_chunks, const std::string& where) {
  if (ctx < 4) fail(where, "--ctx must be at least 4 (got {})", ctx);
  const int64_t full = n_tokens / ctx;
  if (full < 1)
    fail(where, "text has {} tokens, fewer than one window of {} (use a longer text or a smaller --ctx)", n_tokens, ctx);
  TokenWindows w;
  w.ctx = ctx;
  w.n_chunks = static_cast<int>(max_chunks > 0 ? std::min<int64_t>(full, max_chunks) : full);
  w.first_scored = ctx / 2;
  return w;
}

}  // namespace lsb
