// Private pieces shared by the tokenizer sources: the constructors of the two concrete tokenizers.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/llama2c_vocab.h"
#include "model/tokenizer.h"

namespace lsb::detail {

// Returns false and the library's reason when the bytes do not load as a SentencePiece model.
bool is_sentencepiece(std::string_view bytes, std::string& why);

// Build the tokenizers; throw lsb::Error naming `origin` on malformed bytes.
std::unique_ptr<Tokenizer> make_llama2c_tokenizer(std::string_view bytes, const std::string& origin);
std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(std::string_view bytes, const std::string& origin);

}  // namespace lsb::detail
