// Tokenizers: SentencePiece `tokenizer.model` (through libsentencepiece) and llama2.c's
// `tokenizer.bin` format (e.g. tok512.bin). Llama conventions: BOS 1, EOS 2.
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/tensor_source.h"

namespace lsb {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Text -> ids; one BOS in front when add_bos. The whole text is encoded as one string.
  virtual std::vector<int> encode(std::string_view text, bool add_bos) const = 0;
  // Ids -> text, the way the reference tools print it: BOS/EOS produce nothing, byte-fallback
  // pieces become raw bytes, and the space a piece carries after BOS is dropped. Each id's text
  // depends on that id and the one before it only: decode(a + b) == decode(a) + the part of
  // decode({a.back()} + b) after decode({a.back()}). generate() streams on that, in O(1) a token.
  virtual std::string decode(const std::vector<int>& ids) const = 0;
  virtual int vocab_size() const = 0;
  virtual int bos_id() const { return 1; }
  virtual int eos_id() const { return 2; }
  // Id of the one piece whose text is exactly `piece` (a special piece such as "<|im_end|>"),
  // or -1 when there is none: chat templates encode their markers as such ids where the
  // tokenizer has them, as text otherwise.
  virtual int piece_id(std::string_view piece) const { return -1; }
};

// Builds a tokenizer from the raw bytes of its file (what a .lsb file embeds). Throws lsb::Error
// naming blob.origin on malformed input.
std::unique_ptr<Tokenizer> load_tokenizer(const TokenizerBlob& blob);
// Reads a tokenizer file; kind is guessed from the content (SentencePiece protobuf or llama2.c).
TokenizerBlob read_tokenizer_file(const std::string& path);

}  // namespace lsb
