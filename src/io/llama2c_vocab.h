// llama2.c's tokenizer.bin file: int32 max_token_length, then until the end of the file, for
// every token: float32 score, int32 length, length bytes (all little-endian). The vocabulary
// size is not stored. Read by the llama2.c tokenizer (model/) and written by the GGUF reader,
// which exposes a GGUF vocabulary in this form.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace lsb {

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
bool parse_llama2c_vocab(std::string_view bytes, Llama2cVocab& out, std::string& why);
// The file's bytes; max_token_length is taken from the pieces (at least 1).
std::string serialize_llama2c_vocab(const Llama2cVocab& v);

}  // namespace lsb
