// Private pieces shared by the tokenizer sources: the llama2.c tokenizer.bin parser (also used to
// recognise the format) and the constructors of the two concrete tokenizers.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "model/tokenizer.h"

namespace lsb::detail {

// llama2.c tokenizer.bin: int32 max_token_length, then until end of file for every token:
// float32 score, int32 len, len bytes (little-endian). The vocab size is not stored.
struct Llama2cVocab {
  int max_token_length = 0;
  std::vector<std::string> pieces;
  std::vector<float> scores;
};

// Largest max_token_length accepted: real vocabularies stay below a few dozen bytes; anything
// far beyond is not a tokenizer.bin (e.g. the first bytes of a protobuf read as an int32).
inline constexpr int kLlama2cMaxTokenLength = 1 << 16;

// Parses the whole of `bytes`. Returns false and a one-line reason (without the file name) when
// the bytes are not a complete, sane tokenizer.bin; never throws for malformed input.
bool parse_llama2c(std::string_view bytes, Llama2cVocab& out, std::string& why);

// Returns false and the library's reason when the bytes do not load as a SentencePiece model.
bool is_sentencepiece(std::string_view bytes, std::string& why);

// Build the tokenizers; throw lsb::Error naming `origin` on malformed bytes.
std::unique_ptr<Tokenizer> make_llama2c_tokenizer(std::string_view bytes, const std::string& origin);
std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(std::string_view bytes, const std::string& origin);

}  // namespace lsb::detail
