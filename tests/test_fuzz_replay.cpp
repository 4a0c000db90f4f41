// Replays every saved fuzz input (fuzz/corpus/<parser>/*) through the same entry points as the
// libFuzzer harnesses (fuzz/fuzz_targets.h), in the normal build: each input must load or be
// refused with lsb::Error -- a crash, a sanitizer report (in the LSB_SANITIZE build) or any other
// exception fails the test. New crashes found by fuzzing are added to the corpus as regressions.
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include <gtest/gtest.h>

#include "fuzz_targets.h"

namespace fs = std::filesystem;

namespace {

using Target = std::function<void(const uint8_t*, size_t)>;

const std::map<std::string, Target>& targets() {
  static const std::map<std::string, Target> t = {
      {"safetensors", lsbfuzz::safetensors},   {"config", lsbfuzz::config},
      {"hf_index", lsbfuzz::hf_index},         {"llama2c", lsbfuzz::llama2c},
      {"llama2c_tokenizer", lsbfuzz::llama2c_tokenizer}, {"lsb", lsbfuzz::lsb_file},
      {"gguf", lsbfuzz::gguf},                 {"request", lsbfuzz::request}};
  return t;
}

// Replays one parser's corpus; returns the number of inputs.
size_t replay(const std::string& parser) {
  const fs::path dir = fs::path(LSB_SOURCE_DIR) / "fuzz" / "corpus" / parser;
  EXPECT_TRUE(fs::is_directory(dir)) << "missing corpus " << dir;
  if (!fs::is_directory(dir)) return 0;
  const Target& run = targets().at(parser);
  size_t n = 0;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) files.push_back(e.path());
  std::sort(files.begin(), files.end());
  for (const fs::path& p : files) {
    std::ifstream f(p, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(f)), {});
    SCOPED_TRACE(p.string());
    EXPECT_NO_THROW(run(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size())) << p;
    ++n;
  }
  std::printf("%s: replayed %zu inputs\n", parser.c_str(), n);
  return n;
}

class Corpus : public ::testing::TestWithParam<std::string> {
 protected:
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(lsbfuzz::scratch_dir(), ec);
  }
};

TEST_P(Corpus, LoadsOrFailsCleanly) { EXPECT_GT(replay(GetParam()), 0u); }

INSTANTIATE_TEST_SUITE_P(FuzzReplay, Corpus,
                         ::testing::Values("safetensors", "config", "hf_index", "llama2c", "llama2c_tokenizer", "lsb",
                                           "gguf", "request"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

}  // namespace
