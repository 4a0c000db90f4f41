// Perplexity through the packed VQ4 and NU kernels (prompt panels, single-token tables) equals
// the perplexity of the same weights dequantized to float, within 1e-3 relative, on the first 20
// windows of bookworm_valid.txt, on every SIMD target the tests can force (issue 12, must show 4).
// Compresses bookworm-27m twice (minutes); LSB_VQ4_FILE / LSB_NU_FILE name files to use instead,
// LSB_LONG_TARGETS (e.g. "AVX3,AVX2") limits the targets (the scalar one takes an hour on a
// loaded 2-core machine).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <hwy/targets.h>

#include "eval/perplexity.h"
#include "test_util.h"

namespace {

std::string packed_file(const std::string& scheme, const char* env) {
  if (const char* f = std::getenv(env); f && *f) return f;
  const std::string out = (lsbtest::temp_dir() / (scheme + ".lsb")).string();
  auto r = lsbtest::run_lsb("compress " + LSB_SHARED("models/bookworm-27m") + " -o " + out + " --scheme " + scheme, 1800);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return out;
}

void check_scheme(const std::string& scheme, const char* env) {
  const std::string file = packed_file(scheme, env);
  std::ifstream f(LSB_SHARED("data/bookworm_valid.txt"));
  std::stringstream ss;
  ss << f.rdbuf();
  lsb::Session packed = lsb::open_session(file, "", /*need_tokenizer=*/true);
  const std::vector<int> tokens = packed.tokenizer->encode(ss.str(), true);
  lsb::Session dense = lsbtest::session_on(lsbtest::dequantized(packed.source));
  lsb::PerplexityOptions po;
  po.ctx = 512;
  po.max_chunks = 20;
  po.progress = false;
  const double want = lsb::perplexity(*dense.model, tokens, po, "dequantized").ppl;
  struct Guard {
    ~Guard() { hwy::SetSupportedTargetsForTest(0); }
  } guard;
  const char* only = std::getenv("LSB_LONG_TARGETS");
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    if (only && *only && ("," + std::string(only) + ",").find("," + std::string(hwy::TargetName(target)) + ",") ==
                             std::string::npos)
      continue;
    hwy::SetSupportedTargetsForTest(target);
    const auto r = lsb::perplexity(*packed.model, tokens, po, "packed");
    const double rel = std::fabs(r.ppl - want) / want;
    EXPECT_LT(rel, 1e-3) << scheme << " " << hwy::TargetName(target);
    std::printf("%s %-8s PPL packed %.6f, dequantized %.6f, relative difference %.2e (%.0f tok/s)\n", scheme.c_str(),
                hwy::TargetName(target), r.ppl, want, rel, r.tokens_per_second);
  }
}

}  // namespace

TEST(LongTableKernels, Vq4PerplexityEqualsDequantizedOnEveryTarget) { check_scheme("vq4", "LSB_VQ4_FILE"); }
TEST(LongTableKernels, NuPerplexityEqualsDequantizedOnEveryTarget) { check_scheme("nu", "LSB_NU_FILE"); }
