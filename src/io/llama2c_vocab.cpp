#include "io/llama2c_vocab.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include <fmt/format.h>

#include "base/le.h"

namespace lsb {

bool parse_llama2c_vocab(std::string_view bytes, Llama2cVocab& out, std::string& why) {
  out = {};
  const size_t size = bytes.size();
  if (size < 4) {
    why = fmt::format("file of {} bytes is too short for the max_token_length header", size);
    return false;
  }
  const int32_t max_len = static_cast<int32_t>(load_le32(bytes.data()));
  if (max_len < 1 || max_len > kLlama2cMaxTokenLength) {
    why = fmt::format("max_token_length {} is not in [1, {}]", max_len, kLlama2cMaxTokenLength);
    return false;
  }
  out.max_token_length = max_len;
  size_t off = 4;
  while (off < size) {
    const size_t index = out.pieces.size();
    if (size - off < 8) {
      why = fmt::format("token {} at offset {}: {} bytes left, less than the 8 of score and length", index, off, size - off);
      return false;
    }
    const float score = std::bit_cast<float>(load_le32(bytes.data() + off));
    const int32_t len = static_cast<int32_t>(load_le32(bytes.data() + off + 4));
    off += 8;
    if (len < 0 || len > max_len) {
      why = fmt::format("token {}: length {} is not in [0, max_token_length {}]", index, len, max_len);
      return false;
    }
    if (size_t(len) > size - off) {
      why = fmt::format("token {}: length {} runs past the end of the file ({} bytes left)", index, len, size - off);
      return false;
    }
    if (!std::isfinite(score)) {
      why = fmt::format("token {}: score is not finite", index);
      return false;
    }
    out.pieces.emplace_back(bytes.substr(off, size_t(len)));
    out.scores.push_back(score);
    off += size_t(len);
  }
  // BOS 1 and EOS 2 must exist.
  if (out.pieces.size() < 3) {
    why = fmt::format("only {} tokens, fewer than <unk>, <s>, </s>", out.pieces.size());
    return false;
  }
  return true;
}

std::string serialize_llama2c_vocab(const Llama2cVocab& v) {
  size_t max_len = 1;
  for (const std::string& p : v.pieces) max_len = std::max(max_len, p.size());
  std::string out;
  append_le(out, max_len, 4);
  for (size_t i = 0; i < v.pieces.size(); ++i) {
    append_le(out, std::bit_cast<uint32_t>(v.scores[i]), 4);
    append_le(out, v.pieces[i].size(), 4);
    out += v.pieces[i];
  }
  return out;
}

}  // namespace lsb
