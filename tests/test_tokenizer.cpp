// Tokenizers on the real files in shared/: llama2.c tok512.bin (stories260K) and bookworm-27m's
// SentencePiece tokenizer.model. Expected values come from other files (model headers,
// config.json, reference.json) or from independent implementations written here.
#include <sentencepiece_processor.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/mmap_file.h"
#include "base/error.h"
#include "model/tokenizer.h"
#include "test_util.h"

namespace {

using lsb::Tokenizer;
using lsb::TokenizerBlob;

std::string slurp(const std::string& path) { return lsb::read_small_file(path); }

void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << p;
}

nlohmann::json reference_json() {
  return nlohmann::json::parse(slurp(LSB_SHARED("models/bookworm-27m/reference.json")));
}

// Throws and the message names `where`.
template <typename F>
void expect_error_naming(F&& f, const std::string& where) {
  try {
    f();
    ADD_FAILURE() << "no lsb::Error thrown (expected one naming " << where << ")";
  } catch (const lsb::Error& e) {
    EXPECT_NE(std::string(e.what()).find(where), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------
// An independent, literal transcription of llama2.c run.c (build_tokenizer + encode with its
// O(n^2) merge loop + decode), used as the oracle for the library's heap-based port.
struct NaiveLlama2c {
  std::vector<std::string> vocab;
  std::vector<float> scores;
  std::map<std::string, int> sorted;  // run.c's sorted_vocab + bsearch

  explicit NaiveLlama2c(const std::string& bytes) {
    size_t off = 4;
    while (off < bytes.size()) {
      float score;
      int32_t len;
      std::memcpy(&score, bytes.data() + off, 4);
      std::memcpy(&len, bytes.data() + off + 4, 4);
      off += 8;
      vocab.push_back(bytes.substr(off, size_t(len)));
      scores.push_back(score);
      off += size_t(len);
    }
    for (int i = int(vocab.size()) - 1; i >= 0; --i) sorted[vocab[i]] = i;
  }
  int lookup(const std::string& s) const {
    auto it = sorted.find(s);
    return it == sorted.end() ? -1 : it->second;
  }
  std::vector<int> encode(const std::string& text, bool bos) const {
    std::vector<int> tokens;
    if (bos) tokens.push_back(1);
    if (!text.empty()) tokens.push_back(lookup(" "));
    std::string buf;
    for (size_t i = 0; i < text.size(); ++i) {
      if ((text[i] & 0xC0) != 0x80) buf.clear();
      buf.push_back(text[i]);
      char next = i + 1 < text.size() ? text[i + 1] : '\0';
      if ((next & 0xC0) == 0x80 && buf.size() < 4) continue;
      int id = lookup(buf);
      if (id != -1) {
        tokens.push_back(id);
      } else {
        for (unsigned char b : buf) tokens.push_back(int(b) + 3);
      }
      buf.clear();
    }
    while (true) {
      float best_score = -1e10f;
      int best_id = -1, best_idx = -1;
      for (size_t i = 0; i + 1 < tokens.size(); ++i) {
        int id = lookup(vocab[tokens[i]] + vocab[tokens[i + 1]]);
        if (id != -1 && scores[id] > best_score) {
          best_score = scores[id];
          best_id = id;
          best_idx = int(i);
        }
      }
      if (best_idx == -1) break;
      tokens[best_idx] = best_id;
      tokens.erase(tokens.begin() + best_idx + 1);
    }
    return tokens;
  }
  // run.c decode(prev, token) concatenated, BOS/EOS printing nothing.
  std::string decode(const std::vector<int>& ids) const {
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids[i] == 1 || ids[i] == 2) continue;
      const char* piece = vocab[ids[i]].c_str();
      if (i > 0 && ids[i - 1] == 1 && piece[0] == ' ') piece++;
      unsigned char byte_val;
      if (std::sscanf(piece, "<0x%02hhX>", &byte_val) == 1) {
        out.push_back(char(byte_val));
      } else {
        out += piece;
      }
    }
    return out;
  }
};

std::unique_ptr<Tokenizer> load_tok512() {
  return lsb::load_tokenizer(lsb::read_tokenizer_file(LSB_SHARED("models/stories260K/tok512.bin")));
}
std::unique_ptr<Tokenizer> load_bookworm() {
  return lsb::load_tokenizer(lsb::read_tokenizer_file(LSB_SHARED("models/bookworm-27m/tokenizer.model")));
}

// ---------------------------------------------------------------------------------------------
// llama2.c tok512.bin

TEST(TokenizerLlama2c, LoadsWithTheModelsVocabSize) {
  auto blob = lsb::read_tokenizer_file(LSB_SHARED("models/stories260K/tok512.bin"));
  EXPECT_EQ(blob.kind, TokenizerBlob::Kind::Llama2c);
  auto tok = lsb::load_tokenizer(blob);
  // The checkpoint header's 6th int32 is the vocab size (negative when unshared).
  std::string header = slurp(LSB_SHARED("models/stories260K/stories260K.bin")).substr(0, 28);
  int32_t vocab;
  std::memcpy(&vocab, header.data() + 20, 4);
  EXPECT_EQ(tok->vocab_size(), std::abs(vocab));
  EXPECT_EQ(tok->vocab_size(), 512);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
}

TEST(TokenizerLlama2c, PromptEncodesWithBosAndDecodesBack) {
  auto tok = load_tok512();
  const std::string prompt = "Once upon a time";
  auto ids = tok->encode(prompt, true);
  ASSERT_GE(ids.size(), 2u);
  EXPECT_EQ(ids[0], 1);
  EXPECT_EQ(tok->decode(ids), prompt);
  // Without BOS the dummy-prefix space stays, as run.c prints it.
  EXPECT_EQ(tok->decode(tok->encode(prompt, false)), " " + prompt);
  EXPECT_EQ(tok->encode("", true), std::vector<int>{1});
  EXPECT_TRUE(tok->encode("", false).empty());
}

TEST(TokenizerLlama2c, MatchesLiteralRunCPort) {
  auto tok = load_tok512();
  NaiveLlama2c ref(slurp(LSB_SHARED("models/stories260K/tok512.bin")));
  std::vector<std::string> texts = {
      "Once upon a time",
      slurp(LSB_SHARED("models/stories260K/golden_greedy_64.txt")),
      slurp(LSB_SHARED("data/tinystories_valid_1000.txt")).substr(0, 3000),
      "Caf\xC3\xA9 d\xC3\xA9j\xC3\xA0 vu \xF0\x9F\x99\x82 \xE4\xB8\xAD\xE6\x96\x87",  // 2-, 4-, 3-byte UTF-8
      "stray continuation \x80\x80 and truncated \xE4\xB8",
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbb  \n\n  tabs\tand spaces",
  };
  for (const auto& text : texts) {
    for (bool bos : {true, false}) {
      auto want = ref.encode(text, bos);
      auto got = tok->encode(text, bos);
      EXPECT_EQ(got, want) << "text: " << text.substr(0, 80);
      EXPECT_EQ(tok->decode(got), ref.decode(want));
    }
  }
}

TEST(TokenizerLlama2c, GoldenTextRoundTrips) {
  auto tok = load_tok512();
  const std::string golden = slurp(LSB_SHARED("models/stories260K/golden_greedy_64.txt"));
  ASSERT_FALSE(golden.empty());
  auto ids = tok->encode(golden, true);
  EXPECT_EQ(ids[0], 1);
  // Real merges happened: far fewer tokens than bytes.
  EXPECT_LT(ids.size(), golden.size() / 2);
  EXPECT_EQ(tok->decode(ids), golden);
}

TEST(TokenizerLlama2c, NonAsciiUsesByteFallbackAndRoundTrips) {
  auto tok = load_tok512();
  NaiveLlama2c vocab(slurp(LSB_SHARED("models/stories260K/tok512.bin")));
  // tok512 has a piece for e-acute (C3 A9) but none for u-umlaut (C3 BC) or the 4-byte emoji.
  ASSERT_NE(vocab.lookup("\xC3\xA9"), -1);
  ASSERT_EQ(vocab.lookup("\xC3\xBC"), -1);
  const std::string text = "The caf\xC3\xA9 said \xC3\xBC \xF0\x9F\x99\x82";
  auto ids = tok->encode(text, true);
  EXPECT_EQ(tok->decode(ids), text);
  EXPECT_NE(std::find(ids.begin(), ids.end(), vocab.lookup("\xC3\xA9")), ids.end());
  // A byte without a piece comes out as <0xXX>, id byte + 3, consecutive for one codepoint.
  for (std::vector<int> bytes : {std::vector<int>{0xC3, 0xBC}, std::vector<int>{0xF0, 0x9F, 0x99, 0x82}}) {
    std::vector<int> want;
    for (int b : bytes) want.push_back(b + 3);
    EXPECT_NE(std::search(ids.begin(), ids.end(), want.begin(), want.end()), ids.end());
    for (int b : bytes) EXPECT_EQ(tok->decode({b + 3}), std::string(1, char(b)));
  }
}

TEST(TokenizerLlama2c, DecodeRejectsOutOfRangeIds) {
  auto tok = load_tok512();
  const std::string path = LSB_SHARED("models/stories260K/tok512.bin");
  expect_error_naming([&] { tok->decode({1, 512}); }, path);
  expect_error_naming([&] { tok->decode({-1}); }, path);
}

TEST(TokenizerLlama2c, WholeTinyStoriesFileRoundTripsQuickly) {
  auto tok = load_tok512();
  const std::string text = slurp(LSB_SHARED("data/tinystories_valid_1000.txt"));
  auto t0 = std::chrono::steady_clock::now();
  auto ids = tok->encode(text, true);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ timing ] tok512 encode of tinystories_valid_1000.txt (" << text.size() << " bytes): " << ids.size()
            << " tokens in " << s << " s\n";
  EXPECT_LT(s, 10.0);
  EXPECT_EQ(tok->decode(ids), text);
}

// ---------------------------------------------------------------------------------------------
// SentencePiece tokenizer.model

TEST(TokenizerSentencePiece, LoadsWithConfigIds) {
  auto blob = lsb::read_tokenizer_file(LSB_SHARED("models/bookworm-27m/tokenizer.model"));
  EXPECT_EQ(blob.kind, TokenizerBlob::Kind::SentencePiece);
  auto tok = lsb::load_tokenizer(blob);
  auto config = nlohmann::json::parse(slurp(LSB_SHARED("models/bookworm-27m/config.json")));
  EXPECT_EQ(tok->vocab_size(), config["vocab_size"].get<int>());
  EXPECT_EQ(tok->bos_id(), config["bos_token_id"].get<int>());
  EXPECT_EQ(tok->eos_id(), config["eos_token_id"].get<int>());
  EXPECT_EQ(tok->vocab_size(), 8192);
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
}

TEST(TokenizerSentencePiece, ReferenceTokensRoundTrip) {
  auto tok = load_bookworm();
  auto ref = reference_json();
  std::vector<int> tokens = ref["tokens"].get<std::vector<int>>();
  ASSERT_EQ(tokens.size(), 65u);
  ASSERT_EQ(tokens[0], 1);
  const std::string text = tok->decode(tokens);
  EXPECT_FALSE(text.empty());
  EXPECT_NE(text[0], ' ');  // the dummy-prefix space after BOS is dropped
  EXPECT_EQ(tok->encode(text, true), tokens);
}

TEST(TokenizerSentencePiece, DecodeAgreesWithLibraryDecode) {
  auto tok = load_bookworm();
  sentencepiece::SentencePieceProcessor sp;
  ASSERT_TRUE(sp.LoadFromSerializedProto(slurp(LSB_SHARED("models/bookworm-27m/tokenizer.model"))).ok());
  std::vector<int> tokens = reference_json()["tokens"].get<std::vector<int>>();
  EXPECT_EQ(tok->decode(tokens), sp.DecodeIds(tokens));
  const std::string text = "Caf\xC3\xA9 \xF0\x9F\x99\x82 and  two  spaces\n\nnew paragraph";
  auto ids = tok->encode(text, true);
  EXPECT_EQ(tok->decode(ids), sp.DecodeIds(ids));
  EXPECT_EQ(tok->decode(ids), text);
  // Decoding one token at a time keeps the spaces and the raw bytes, so streams concatenate.
  std::string streamed;
  for (size_t i = 1; i < ids.size(); ++i) streamed += tok->decode({ids[i]});
  EXPECT_EQ(streamed, " " + text);
}

TEST(TokenizerSentencePiece, DecodeRejectsOutOfRangeIds) {
  auto tok = load_bookworm();
  expect_error_naming([&] { tok->decode({1, 8192}); }, LSB_SHARED("models/bookworm-27m/tokenizer.model"));
}

// Whole files as one string with one BOS, as llama.cpp's perplexity tool tokenizes them; the
// counts are those of the reference perplexity run.
void check_whole_file_count(const std::string& name) {
  auto tok = load_bookworm();
  auto ref = reference_json();
  const auto& entry = ref["llamacpp_style_ppl_ctx512"][name];
  ASSERT_TRUE(entry.is_object()) << "reference.json lacks llamacpp_style_ppl_ctx512." << name;
  const size_t want = entry["tokens"].get<size_t>();
  const std::string text = slurp(LSB_SHARED("data/" + name));
  auto t0 = std::chrono::steady_clock::now();
  auto ids = tok->encode(text, true);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ timing ] bookworm encode of " << name << " (" << text.size() << " bytes): " << ids.size()
            << " tokens in " << s << " s\n";
  EXPECT_EQ(ids.size(), want);
  EXPECT_EQ(ids[0], tok->bos_id());
  EXPECT_LT(s, 10.0);
  t0 = std::chrono::steady_clock::now();
  std::string back = tok->decode(ids);
  s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ timing ] decode: " << s << " s\n";
  EXPECT_EQ(back, text);
}

TEST(TokenizerWholeFile, BookwormValidCountMatchesReference) { check_whole_file_count("bookworm_valid.txt"); }
TEST(TokenizerWholeFile, Wikitext2TestCountMatchesReference) { check_whole_file_count("wikitext2_test.raw"); }

// ---------------------------------------------------------------------------------------------
// Malformed input

TEST(TokenizerMalformed, TruncatedTok512NamesTheFile) {
  const std::string good = slurp(LSB_SHARED("models/stories260K/tok512.bin"));
  auto dir = lsbtest::temp_dir();
  // Cut inside the last piece, inside a score/length pair, and right after the header.
  for (size_t cut : {good.size() - 1, good.size() - 7, size_t(4) + 3, size_t(2)}) {
    auto path = (dir / ("tok_cut_" + std::to_string(cut) + ".bin")).string();
    write_file(path, good.substr(0, cut));
    expect_error_naming([&] { lsb::read_tokenizer_file(path); }, path);
    TokenizerBlob blob{TokenizerBlob::Kind::Llama2c, good.substr(0, cut), path};
    expect_error_naming([&] { lsb::load_tokenizer(blob); }, path);
  }
}

TEST(TokenizerMalformed, BadLengthsAreRejected) {
  auto make = [](int32_t max_len, std::vector<std::pair<int32_t, std::string>> entries) {
    std::string b(reinterpret_cast<const char*>(&max_len), 4);
    for (auto& [len, piece] : entries) {
      float score = 0.f;
      b.append(reinterpret_cast<const char*>(&score), 4);
      b.append(reinterpret_cast<const char*>(&len), 4);
      b += piece;
    }
    return b;
  };
  const std::vector<std::pair<int32_t, std::string>> ok = {{5, "<unk>"}, {3, "<s>"}, {4, "</s>"}, {1, "a"}};
  // The well-formed variant loads, so the rejections below are about the one bad field.
  EXPECT_NO_THROW(lsb::load_tokenizer({TokenizerBlob::Kind::Llama2c, make(5, ok), "ok.bin"}));
  auto neg = ok;
  neg[3] = {-1, ""};
  auto too_long = ok;
  too_long[3] = {6, "abcdef"};  // longer than max_token_length 5
  auto past_end = ok;
  past_end[3] = {4, "a"};
  for (const auto& bytes : {make(5, neg), make(5, too_long), make(5, past_end), make(0, ok), make(-3, ok),
                            make(1 << 30, ok), make(5, {{5, "<unk>"}, {3, "<s>"}})}) {
    expect_error_naming([&] { lsb::load_tokenizer({TokenizerBlob::Kind::Llama2c, bytes, "bad.bin"}); }, "bad.bin");
  }
}

TEST(TokenizerMalformed, RandomBytesAreRejected) {
  auto dir = lsbtest::temp_dir();
  std::mt19937 rng(1234);
  for (int trial = 0; trial < 4; ++trial) {
    std::string bytes(4096 + trial * 1000, '\0');
    for (auto& c : bytes) c = static_cast<char>(rng());
    auto path = (dir / ("random_" + std::to_string(trial) + ".bin")).string();
    write_file(path, bytes);
    expect_error_naming([&] { lsb::read_tokenizer_file(path); }, path);
    expect_error_naming([&] { lsb::load_tokenizer({TokenizerBlob::Kind::SentencePiece, bytes, path}); }, path);
    expect_error_naming([&] { lsb::load_tokenizer({TokenizerBlob::Kind::Llama2c, bytes, path}); }, path);
  }
}

TEST(TokenizerMalformed, EmptyFileIsRejected) {
  auto path = (lsbtest::temp_dir() / "empty.model").string();
  write_file(path, "");
  expect_error_naming([&] { lsb::read_tokenizer_file(path); }, path);
  expect_error_naming([&] { lsb::load_tokenizer({TokenizerBlob::Kind::SentencePiece, "", path}); }, path);
  expect_error_naming([&] { lsb::load_tokenizer({TokenizerBlob::Kind::Llama2c, "", path}); }, path);
}

TEST(TokenizerMalformed, MissingTokenizerAsksForOne) {
  try {
    lsb::load_tokenizer(TokenizerBlob{TokenizerBlob::Kind::None, "", "model.bin"});
    ADD_FAILURE() << "no error for a missing tokenizer";
  } catch (const lsb::Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("model.bin"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--tokenizer"), std::string::npos) << msg;
  }
  expect_error_naming([] { lsb::read_tokenizer_file("/nonexistent/tokenizer.model"); }, "/nonexistent/tokenizer.model");
}

}  // namespace
