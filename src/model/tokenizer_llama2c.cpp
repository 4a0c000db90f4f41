// llama2.c's tokenizer.bin and its encode/decode, ported from karpathy/llama2.c run.c
// (build_tokenizer, encode, decode). encode gives the same ids as run.c's O(n^2) merge loop, but
// finds the best pair with a heap so that whole files encode in linear-logarithmic time.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <queue>
#include <unordered_map>

#include "base/error.h"
#include "base/le.h"
#include "detail/tokenizer_impl.h"

namespace lsb::detail {

namespace {

// "<0xXX>" -> XX; -1 for any other piece. run.c decodes these pieces into the raw byte.
int byte_piece_value(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  int hi = hex(piece[3]), lo = hex(piece[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

constexpr int kBos = 1;
constexpr int kEos = 2;
// run.c encodes a byte b that has no piece as id b + 3 (<unk>, <s>, </s> come first).
constexpr int kByteOffset = 3;
// run.c only merges pairs whose score beats its initial best_score of -1e10.
constexpr float kMinMergeScore = -1e10f;

class Llama2cTokenizer final : public Tokenizer {
 public:
  Llama2cTokenizer(Llama2cVocab vocab, std::string origin) : vocab_(std::move(vocab)), origin_(std::move(origin)) {
    const int n = vocab_size();
    piece_to_id_.reserve(size_t(n) * 2);
    // run.c looks pieces up by binary search in a sorted copy; with duplicate pieces which one
    // it finds is unspecified. Keep the lowest id.
    for (int id = 0; id < n; ++id) piece_to_id_.emplace(vocab_.pieces[id], id);
    byte_value_.resize(size_t(n));
    for (int id = 0; id < n; ++id) byte_value_[id] = byte_piece_value(vocab_.pieces[id]);
  }

  int vocab_size() const override { return static_cast<int>(vocab_.pieces.size()); }

  std::vector<int> encode(std::string_view text, bool add_bos) const override {
    std::vector<int> tokens;
    tokens.reserve(text.size() + 2);
    if (add_bos) tokens.push_back(kBos);
    // run.c's add_dummy_prefix: a space in front of any non-empty text.
    if (!text.empty()) push_piece_or_bytes(" ", tokens);

    // One token per UTF-8 codepoint (at most 4 bytes), or its bytes when it has no piece.
    // Mirrors run.c byte for byte, including how it treats stray continuation bytes.
    std::string buf;
    for (size_t i = 0; i < text.size(); ++i) {
      unsigned char c = static_cast<unsigned char>(text[i]);
      if ((c & 0xC0) != 0x80) buf.clear();
      buf.push_back(static_cast<char>(c));
      unsigned char next = i + 1 < text.size() ? static_cast<unsigned char>(text[i + 1]) : 0;
      if ((next & 0xC0) == 0x80 && buf.size() < 4) continue;
      push_piece_or_bytes(buf, tokens);
      buf.clear();
    }
    merge(tokens);
    return tokens;
  }

  std::string decode(const std::vector<int>& ids) const override {
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i) {
      const int id = ids[i];
      check_id(id);
      if (id == kBos || id == kEos) continue;
      const std::string& piece = vocab_.pieces[id];
      if (byte_value_[id] >= 0) {
        out.push_back(static_cast<char>(byte_value_[id]));
        continue;
      }
      // run.c drops the dummy-prefix space of the first piece after BOS.
      size_t skip = (i > 0 && ids[i - 1] == kBos && !piece.empty() && piece[0] == ' ') ? 1 : 0;
      out.append(piece, skip, std::string::npos);
    }
    return out;
  }

 private:
  void check_id(int id) const {
    if (id < 0 || id >= vocab_size()) fail(origin_, "token id {} out of range (vocab size {})", id, vocab_size());
  }

  void push_piece_or_bytes(std::string_view s, std::vector<int>& tokens) const {
    auto it = piece_to_id_.find(std::string(s));
    if (it != piece_to_id_.end()) {
      tokens.push_back(it->second);
      return;
    }
    for (char ch : s) {
      int id = static_cast<unsigned char>(ch) + kByteOffset;
      if (id >= vocab_size())
        fail(origin_, "cannot encode byte 0x{:02X}: vocab of {} has no byte-fallback pieces", static_cast<unsigned char>(ch),
             vocab_size());
      tokens.push_back(id);
    }
  }

  // Id of the piece spelled piece(a)+piece(b) when its score can win a merge; -1 otherwise.
  int merged_id(int a, int b, std::unordered_map<uint64_t, int>& cache) const {
    const uint64_t key = uint64_t(uint32_t(a)) << 32 | uint32_t(b);
    auto hit = cache.find(key);
    if (hit != cache.end()) return hit->second;
    int id = -1;
    auto it = piece_to_id_.find(vocab_.pieces[a] + vocab_.pieces[b]);
    // `!(x > min)` also rejects NaN scores, exactly as run.c's `score > best_score` does.
    if (it != piece_to_id_.end() && vocab_.scores[it->second] > kMinMergeScore) id = it->second;
    cache.emplace(key, id);
    return id;
  }

  // run.c: repeatedly merge the adjacent pair whose merged piece has the highest score, the
  // leftmost such pair on ties, until no pair merges. Here the pairs live in a heap ordered by
  // (score desc, position asc); positions are the original indices of a linked list, whose
  // order never changes, so "leftmost" is the same. Entries whose pair has changed since they
  // were pushed are skipped when popped.
  void merge(std::vector<int>& tokens) const {
    const int n = static_cast<int>(tokens.size());
    if (n < 2) return;
    std::vector<int> next(n), prev(n);
    std::vector<char> alive(n, 1);
    for (int i = 0; i < n; ++i) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    struct Candidate {
      float score;
      int pos;    // node of the left token
      int left;   // ids when pushed, to detect stale entries
      int right;
      int merged;
    };
    auto worse = [](const Candidate& x, const Candidate& y) {
      if (x.score != y.score) return x.score < y.score;
      return x.pos > y.pos;
    };
    std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> heap(worse);
    std::unordered_map<uint64_t, int> cache;
    auto consider = [&](int pos) {
      if (pos < 0 || next[pos] < 0) return;
      int a = tokens[pos], b = tokens[next[pos]];
      int m = merged_id(a, b, cache);
      if (m >= 0) heap.push({vocab_.scores[m], pos, a, b, m});
    };
    for (int i = 0; i + 1 < n; ++i) consider(i);

    while (!heap.empty()) {
      Candidate c = heap.top();
      heap.pop();
      if (!alive[c.pos] || next[c.pos] < 0 || tokens[c.pos] != c.left || tokens[next[c.pos]] != c.right) continue;
      const int right = next[c.pos];
      tokens[c.pos] = c.merged;
      alive[right] = 0;
      next[c.pos] = next[right];
      if (next[right] >= 0) prev[next[right]] = c.pos;
      consider(prev[c.pos]);
      consider(c.pos);
    }
    int w = 0;
    for (int i = 0; i >= 0; i = next[i]) tokens[w++] = tokens[i];
    tokens.resize(size_t(w));
  }

  Llama2cVocab vocab_;
  std::string origin_;
  std::unordered_map<std::string, int> piece_to_id_;
  std::vector<int> byte_value_;  // per id: the raw byte of a "<0xXX>" piece, or -1
};

}  // namespace

std::unique_ptr<Tokenizer> make_llama2c_tokenizer(std::string_view bytes, const std::string& origin) {
  Llama2cVocab vocab;
  std::string why;
  if (!parse_llama2c_vocab(bytes, vocab, why)) fail(origin, "not a valid llama2.c tokenizer: {}", why);
  return std::make_unique<Llama2cTokenizer>(std::move(vocab), origin);
}

}  // namespace lsb::detail
