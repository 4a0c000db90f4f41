// Whole-file perplexity (minutes, not seconds): run with `ctest -L long`.
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "test_util.h"

namespace {
void check_whole_file(const std::string& text_file) {
  std::ifstream f(LSB_SHARED("models/bookworm-27m/reference.json"));
  const auto ref = nlohmann::json::parse(f)["llamacpp_style_ppl_ctx512"][text_file];
  auto r = lsbtest::run_lsb("eval " + LSB_SHARED("models/bookworm-27m") + " --text " + LSB_SHARED("data/" + text_file) +
                                " --ctx 512 --json",
                            3600);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  const double want = ref["ppl"].get<double>();
  EXPECT_NEAR(j["ppl"].get<double>(), want, 0.002 * want);
  EXPECT_EQ(j["n_tokens"].get<int64_t>(), ref["tokens"].get<int64_t>());
  EXPECT_EQ(j["n_chunks"].get<int>(), ref["chunks"].get<int>());
  EXPECT_EQ(j["n_scored"].get<int64_t>(), ref["scored"].get<int64_t>());
  std::printf("%s: PPL %.4f +/- %.5f (reference %.4f), %.0f s\n", text_file.c_str(), j["ppl"].get<double>(),
              j["ppl_stderr"].get<double>(), want, r.seconds);
}
}  // namespace

TEST(LongPerplexity, BookwormValidWholeFile) { check_whole_file("bookworm_valid.txt"); }
TEST(LongPerplexity, WikitextWholeFile) { check_whole_file("wikitext2_test.raw"); }
