// A compressed model run from its packed form gives the same tokens as the same weights expanded
// to float (the dequantized path of the compress issue), on real models.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "model/llama_model.h"
#include "model/sampler.h"
#include "quant/scheme.h"
#include "runtime/threads.h"
#include "test_util.h"

namespace {

std::vector<int> greedy(lsb::LlamaModel& m, const std::vector<int>& prompt, int n_new) {
  const int vocab = m.config().vocab_size;
  m.reset(static_cast<int>(prompt.size()) + n_new);
  std::vector<float> logits(vocab);
  m.forward(prompt.data(), static_cast<int>(prompt.size()), 0, logits.data(), static_cast<int>(prompt.size()) - 1);
  std::vector<int> out;
  int pos = static_cast<int>(prompt.size());
  for (int i = 0; i < n_new; ++i) {
    const int next = lsb::argmax(logits.data(), vocab);
    out.push_back(next);
    m.forward(&next, 1, pos++, logits.data(), 0);
  }
  return out;
}

void check_same_tokens(const std::string& source_model, const std::string& scheme, const std::string& extra,
                       const std::vector<int>& prompt, int n_new) {
  lsb::set_threads(2);
  const std::string out = (lsbtest::temp_dir() / ("m-" + scheme + ".lsb")).string();
  auto r = lsbtest::run_lsb("compress " + source_model + " -o " + out + " --scheme " + scheme + " " + extra, 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::shared_ptr<lsb::TensorSource> packed_src = lsb::open_model(out);
  lsb::Session ps = lsbtest::session_on(packed_src);
  lsb::Session ds = lsbtest::session_on(lsbtest::dequantized(packed_src));
  lsb::LlamaModel& packed = *ps.model;
  lsb::LlamaModel& dense = *ds.model;
  const auto a = greedy(packed, prompt, n_new);
  const auto b = greedy(dense, prompt, n_new);
  EXPECT_EQ(a, b) << scheme << ": packed kernels and dequantized weights chose different tokens";
  // And the logits agree closely (they differ only by float summation order).
  const int vocab = packed.config().vocab_size;
  std::vector<float> la(static_cast<size_t>(prompt.size()) * vocab), lb(la.size());
  packed.reset(static_cast<int>(prompt.size()));
  dense.reset(static_cast<int>(prompt.size()));
  packed.forward(prompt.data(), static_cast<int>(prompt.size()), 0, la.data(), 0);
  dense.forward(prompt.data(), static_cast<int>(prompt.size()), 0, lb.data(), 0);
  double max_diff = 0;
  for (size_t i = 0; i < la.size(); ++i) max_diff = std::max(max_diff, static_cast<double>(std::abs(la[i] - lb[i])));
  EXPECT_LT(max_diff, 2e-3) << scheme;
  std::printf("%s: %zu greedy tokens identical; max |logit diff| packed vs dequantized %.2e\n", scheme.c_str(),
              a.size(), max_diff);
}

}  // namespace

TEST(PackedModel, BookwormLsb1SameTokensAsDequantized) {
  check_same_tokens(LSB_SHARED("models/bookworm-27m"), "lsb1", "", {1, 337, 6228, 1974, 273, 265, 436, 4067}, 32);
}

TEST(PackedModel, BookwormDefaultRecipeSameTokensAsDequantized) {
  check_same_tokens(LSB_SHARED("models/bookworm-27m"), "default", "", {1, 337, 6228, 1974, 273, 265, 436, 4067}, 32);
}

TEST(PackedModel, StoriesLsb1AndPaperSameTokensAsDequantized) {
  const std::string tok = "--tokenizer " + LSB_SHARED("models/stories260K/tok512.bin");
  check_same_tokens(LSB_SHARED("models/stories260K/stories260K.bin"), "lsb1", tok, {1, 403, 407, 261, 378}, 48);
  check_same_tokens(LSB_SHARED("models/stories260K/stories260K.bin"), "paper", tok, {1, 403, 407, 261, 378}, 48);
}
