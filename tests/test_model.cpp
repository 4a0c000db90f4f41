// The forward pass against references computed by other implementations.
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "eval/perplexity.h"
#include "io/llama2c_vocab.h"
#include "model/generate.h"
#include "model/sampler.h"
#include "pipeline/open_model.h"
#include "runtime/threads.h"
#include "test_util.h"

namespace {

nlohmann::json load_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

}  // namespace

// Must show 2: bookworm-27m against PyTorch float32 logits (reference.json).
TEST(ModelBookworm, MatchesPyTorchReference) {
  lsb::set_threads(2);
  const auto ref = load_json(LSB_SHARED("models/bookworm-27m/reference.json"));
  lsb::Session s = lsb::open_session(LSB_SHARED("models/bookworm-27m"), "");
  const std::vector<int> tokens = ref["tokens"].get<std::vector<int>>();
  const int n = static_cast<int>(tokens.size()) - 1;  // 64 positions, each predicting the next token
  const int vocab = s.model->config().vocab_size;
  ASSERT_EQ(n, 64);
  s.model->reset(n);
  std::vector<float> logits(static_cast<size_t>(n) * vocab);
  s.model->forward(tokens.data(), n, 0, logits.data(), 0);

  // First 16 logits at position 0.
  const auto first16 = ref["logits_pos0_first16"].get<std::vector<double>>();
  for (size_t i = 0; i < first16.size(); ++i) EXPECT_NEAR(logits[i], first16[i], 1e-3) << "logit " << i;

  double max_logit_err = 0, max_nll_err = 0;
  for (int p = 0; p < n; ++p) {
    const float* lg = logits.data() + static_cast<size_t>(p) * vocab;
    const auto top5 = ref["top5_ids"][p].get<std::vector<int>>();
    const auto top5v = ref["top5_logits"][p].get<std::vector<double>>();
    EXPECT_EQ(lsb::argmax(lg, vocab), top5[0]) << "top-1 differs at position " << p;
    for (int k = 0; k < 5; ++k) {
      const double err = std::abs(lg[top5[k]] - top5v[k]);
      max_logit_err = std::max(max_logit_err, err);
      EXPECT_LE(err, 1e-3) << "position " << p << " token " << top5[k];
    }
    const double nll = lsb::token_nll(lg, vocab, tokens[p + 1]);
    const double nll_ref = ref["nll_per_pos"][p].get<double>();
    max_nll_err = std::max(max_nll_err, std::abs(nll - nll_ref));
    EXPECT_NEAR(nll, nll_ref, 1e-3) << "position " << p;
  }
  std::printf("max |top-5 logit error| %.2e, max |NLL error| %.2e\n", max_logit_err, max_nll_err);
}

TEST(ModelBookworm, GreedyContinuationMatchesReference) {
  lsb::set_threads(2);
  const auto ref = load_json(LSB_SHARED("models/bookworm-27m/reference.json"));
  lsb::Session s = lsb::open_session(LSB_SHARED("models/bookworm-27m"), "");
  const auto prompt = ref["greedy_prompt"].get<std::vector<int>>();
  const auto expect = ref["greedy_out"].get<std::vector<int>>();
  const int vocab = s.model->config().vocab_size;
  s.model->reset(static_cast<int>(prompt.size() + expect.size()));
  std::vector<float> logits(vocab);
  s.model->forward(prompt.data(), static_cast<int>(prompt.size()), 0, logits.data(), static_cast<int>(prompt.size()) - 1);
  std::vector<int> got;
  int pos = static_cast<int>(prompt.size());
  for (size_t i = 0; i < expect.size(); ++i) {
    const int next = lsb::argmax(logits.data(), vocab);
    got.push_back(next);
    s.model->forward(&next, 1, pos++, logits.data(), 0);
  }
  EXPECT_EQ(got, expect);
}

// Batched prompt processing and one-token-at-a-time decoding must agree.
TEST(ModelBookworm, BatchAndIncrementalAgree) {
  lsb::set_threads(2);
  lsb::Session s = lsb::open_session(LSB_SHARED("models/bookworm-27m"), "");
  const std::vector<int> toks = s.tokenizer->encode("The quick brown fox jumps over the lazy dog.", true);
  const int n = static_cast<int>(toks.size()), vocab = s.model->config().vocab_size;
  std::vector<float> batch(static_cast<size_t>(n) * vocab), one(vocab);
  s.model->reset(n);
  s.model->forward(toks.data(), n, 0, batch.data(), 0);
  s.model->reset(n);
  for (int p = 0; p < n; ++p) {
    s.model->forward(&toks[p], 1, p, one.data(), 0);
    for (int i = 0; i < vocab; i += 97) ASSERT_NEAR(one[i], batch[static_cast<size_t>(p) * vocab + i], 2e-3) << p;
  }
}

// Must show 1: stories260K greedy output equals llama2.c's golden text.
TEST(ModelStories, GreedyMatchesLlama2cGolden) {
  const std::string golden = read_text(LSB_SHARED("models/stories260K/golden_greedy_64.txt"));
  ASSERT_FALSE(golden.empty());
  const std::string m = LSB_SHARED("models/stories260K/stories260K.bin");
  const std::string t = LSB_SHARED("models/stories260K/tok512.bin");
  // The golden file holds 63 generated tokens after the 4-token prompt, so -n 64 covers it and
  // the issue's -n 60 must print a prefix of it.
  auto r64 = lsbtest::run_lsb("run " + m + " --tokenizer " + t + " -p \"Once upon a time\" -n 64 --temp 0");
  ASSERT_EQ(r64.exit_code, 0) << r64.err;
  EXPECT_EQ(r64.out.substr(0, golden.size()), golden);
  auto r60 = lsbtest::run_lsb("run " + m + " --tokenizer " + t + " -p \"Once upon a time\" -n 60 --temp 0");
  ASSERT_EQ(r60.exit_code, 0) << r60.err;
  std::string out60 = r60.out;
  while (!out60.empty() && out60.back() == '\n') out60.pop_back();
  ASSERT_GT(out60.size(), 150u);
  EXPECT_EQ(golden.substr(0, out60.size()), out60);
}

TEST(Sampler, GreedyTemperatureAndTopP) {
  std::vector<float> logits = {0.1f, 3.0f, 0.2f, 2.9f};
  lsb::Sampler greedy(0.0f, 0.9f, 1);
  auto l = logits;
  EXPECT_EQ(greedy.sample(l.data(), 4), 1);
  // Probabilities are about (0.03, 0.50, 0.03, 0.45): at top-p 0.4 only the most likely token
  // survives.
  lsb::Sampler nucleus(1.0f, 0.4f, 7);
  int ones = 0;
  for (int i = 0; i < 200; ++i) {
    l = logits;
    ones += nucleus.sample(l.data(), 4) == 1;
  }
  EXPECT_EQ(ones, 200);
  // Same seed, same sequence; temperature sampling visits both likely tokens.
  lsb::Sampler a(1.0f, 1.0f, 123), b(1.0f, 1.0f, 123);
  int seen1 = 0, seen3 = 0;
  for (int i = 0; i < 500; ++i) {
    auto la = logits, lb = logits;
    const int x = a.sample(la.data(), 4);
    ASSERT_EQ(x, b.sample(lb.data(), 4));
    seen1 += x == 1;
    seen3 += x == 3;
  }
  EXPECT_GT(seen1, 100);
  EXPECT_GT(seen3, 100);
}

// A model with more rows than its tokenizer has pieces (padded vocabularies are common) samples
// only ids the tokenizer can decode, instead of failing on the first id it cannot.
TEST(Generate, ModelVocabularyLargerThanTokenizerSamplesDecodableIds) {
  const std::string model = LSB_SHARED("models/stories260K/stories260K.bin");
  const std::string tok = LSB_SHARED("models/stories260K/tok512.bin");
  std::string bytes;
  {
    std::ifstream f(tok, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  lsb::Llama2cVocab vocab;
  std::string why;
  ASSERT_TRUE(lsb::parse_llama2c_vocab(bytes, vocab, why)) << why;
  ASSERT_EQ(vocab.pieces.size(), 512u);
  constexpr size_t kKeep = 300;  // of the model's 512 rows
  vocab.pieces.resize(kKeep);
  vocab.scores.resize(kKeep);
  const std::string small = (lsbtest::temp_dir() / "tok300.bin").string();
  {
    const std::string out = lsb::serialize_llama2c_vocab(vocab);
    std::ofstream(small, std::ios::binary).write(out.data(), static_cast<std::streamsize>(out.size()));
  }
  const std::string gen = " -p 'Once upon a time' -n 64 --temp 1.5 --seed 3 --json -t 1";
  // With the full tokenizer the same sampling does pick ids past 300 ...
  auto full = lsbtest::run_lsb("run " + model + " --tokenizer " + tok + gen);
  ASSERT_EQ(full.exit_code, 0) << full.err;
  int past = 0;
  for (int id : nlohmann::json::parse(full.out).at("tokens").get<std::vector<int>>()) past += id >= int(kKeep);
  EXPECT_GT(past, 0);
  // ... and with 300 pieces it never does, and finishes.
  auto cut = lsbtest::run_lsb("run " + model + " --tokenizer " + small + gen);
  ASSERT_EQ(cut.exit_code, 0) << cut.err;
  const auto ids = nlohmann::json::parse(cut.out).at("tokens").get<std::vector<int>>();
  EXPECT_FALSE(ids.empty());
  for (int id : ids) EXPECT_LT(id, int(kKeep));
}
