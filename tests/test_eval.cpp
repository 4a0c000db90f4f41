// Perplexity, the llama.cpp way, against the PyTorch float32 references in reference.json.
#include <algorithm>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "eval/perplexity.h"
#include "base/error.h"
#include "test_util.h"

namespace {

nlohmann::json reference() {
  std::ifstream f(LSB_SHARED("models/bookworm-27m/reference.json"));
  return nlohmann::json::parse(f);
}

void check_first20(const std::string& text_file) {
  const auto ref = reference();
  const auto& r20 = ref["llamacpp_style_ppl_ctx512_first20"][text_file];
  const auto& full = ref["llamacpp_style_ppl_ctx512"][text_file];
  auto r = lsbtest::run_lsb("eval " + LSB_SHARED("models/bookworm-27m") + " --text " + LSB_SHARED("data/" + text_file) +
                                " --ctx 512 --chunks 20 --json -t 2",
                            300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const double want = r20["ppl"].get<double>();
  EXPECT_NEAR(j["ppl"].get<double>(), want, 0.002 * want) << text_file;
  EXPECT_EQ(j["n_chunks"].get<int>(), 20);
  EXPECT_EQ(j["n_scored"].get<int64_t>(), r20["scored"].get<int64_t>());
  EXPECT_EQ(j["n_tokens"].get<int64_t>(), full["tokens"].get<int64_t>());
  EXPECT_EQ(j["ctx"].get<int>(), 512);
  EXPECT_GT(j["ppl_stderr"].get<double>(), 0.0);
  std::printf("%s first 20 windows: PPL %.4f (reference %.4f), %.1f s\n", text_file.c_str(), j["ppl"].get<double>(),
              want, r.seconds);
}

}  // namespace

TEST(EvalPerplexity, BookwormValidFirst20Windows) { check_first20("bookworm_valid.txt"); }
TEST(EvalPerplexity, WikitextFirst20Windows) { check_first20("wikitext2_test.raw"); }

TEST(EvalPerplexity, WindowsFollowLlamaCpp) {
  // 400,336 tokens at ctx 512: 781 full windows, 255 scored positions each.
  auto w = lsb::make_windows(400336, 512, -1, "x");
  EXPECT_EQ(w.n_chunks, 781);
  EXPECT_EQ(w.first_scored, 256);
  EXPECT_EQ(w.scored_per_chunk() * w.n_chunks, 199155);
  std::vector<int> toks(2048);
  for (int i = 0; i < 2048; ++i) toks[i] = 1000 + i;
  auto win = lsb::make_windows(2048, 512, 2, "x");
  EXPECT_EQ(win.n_chunks, 2);
  auto w1 = win.window(toks, 1, 1);
  EXPECT_EQ(w1[0], 1);      // first token replaced by BOS
  EXPECT_EQ(w1[1], 1513);   // the rest is the stream
  EXPECT_THROW(lsb::make_windows(511, 512, -1, "short.txt"), lsb::Error);
}

TEST(EvalPerplexity, TokenNllIsLogSoftmax) {
  const float logits[3] = {1.0f, 2.0f, 3.0f};
  const double lse = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  EXPECT_NEAR(lsb::token_nll(logits, 3, 0), lse - 1.0, 1e-9);
  EXPECT_NEAR(lsb::token_nll(logits, 3, 2), lse - 3.0, 1e-9);
}

// Bad input at the eval boundary: an empty text file and a text shorter than one window each
// end in one line naming the file, exit code 1.
TEST(EvalPerplexity, EmptyOrTooShortTextIsRefused) {
  const auto dir = lsbtest::temp_dir();
  const std::string empty = (dir / "empty.txt").string();
  { std::ofstream f(empty); }
  auto r = lsbtest::run_lsb("eval " + LSB_SHARED("models/bookworm-27m") + " --text " + empty);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("empty.txt"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("empty"), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  const std::string tiny = (dir / "short.txt").string();
  { std::ofstream f(tiny); f << "Just a few words."; }
  auto s = lsbtest::run_lsb("eval " + LSB_SHARED("models/bookworm-27m") + " --text " + tiny + " --ctx 512");
  EXPECT_EQ(s.exit_code, 1);
  EXPECT_NE(s.err.find("short.txt"), std::string::npos) << s.err;
  EXPECT_NE(s.err.find("fewer than one window"), std::string::npos) << s.err;
}

// --decode scores each window one token at a time, as generation runs the model: on the dense
// original the same perplexity as one batch (up to summation order), every window and position
// scored alike; and it refuses the options that compare whole windows.
TEST(EvalPerplexity, DecodeModeScoresTheSamePositions) {
  const std::string base = "eval " + LSB_SHARED("models/stories260K/stories260K.bin") + " --tokenizer " +
                           LSB_SHARED("models/stories260K/tok512.bin") + " --text " +
                           LSB_SHARED("data/tinystories_valid_1000.txt") + " --ctx 128 --chunks 3 --json -t 2";
  auto batch = lsbtest::run_lsb(base, 300);
  auto decode = lsbtest::run_lsb(base + " --decode", 300);
  ASSERT_EQ(batch.exit_code, 0) << batch.err;
  ASSERT_EQ(decode.exit_code, 0) << decode.err;
  const auto a = nlohmann::json::parse(batch.out), b = nlohmann::json::parse(decode.out);
  EXPECT_FALSE(a["decode"].get<bool>());
  EXPECT_TRUE(b["decode"].get<bool>());
  EXPECT_EQ(a["n_scored"].get<int64_t>(), b["n_scored"].get<int64_t>());
  EXPECT_NEAR(a["ppl"].get<double>(), b["ppl"].get<double>(), 1e-5 * a["ppl"].get<double>());
  auto bad = lsbtest::run_lsb("eval " + LSB_SHARED("models/bookworm-27m") + " --ref " +
                              LSB_SHARED("models/bookworm-27m") + " --text " + LSB_SHARED("data/bookworm_valid.txt") +
                              " --decode --layers");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--decode cannot be combined"), std::string::npos) << bad.err;
}
