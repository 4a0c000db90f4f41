// Tokenizer entry points: recognise a tokenizer file by its content and build the right class.
#include "model/tokenizer.h"

#include "io/mmap_file.h"
#include "base/error.h"
#include "detail/tokenizer_impl.h"

namespace lsb {

namespace {
// Tokenizer files are a few MB at most; refuse to slurp something huge by mistake.
constexpr uint64_t kMaxTokenizerBytes = 64ull << 20;
}  // namespace

TokenizerBlob read_tokenizer_file(const std::string& path) {
  TokenizerBlob blob;
  blob.origin = path;
  blob.bytes = read_small_file(path, kMaxTokenizerBytes);
  if (blob.bytes.empty()) fail(path, "empty file, not a SentencePiece model or llama2.c tokenizer");

  // A llama2.c tokenizer must parse exactly to the end of the file with sane lengths; a protobuf
  // read that way fails at once (its first 4 bytes give an absurd max_token_length).
  Llama2cVocab vocab;
  std::string why_llama2c;
  if (parse_llama2c_vocab(blob.bytes, vocab, why_llama2c)) {
    blob.kind = TokenizerBlob::Kind::Llama2c;
    return blob;
  }
  std::string why_spm;
  if (detail::is_sentencepiece(blob.bytes, why_spm)) {
    blob.kind = TokenizerBlob::Kind::SentencePiece;
    return blob;
  }
  fail(path, "not a SentencePiece model or llama2.c tokenizer (as llama2.c: {}; as SentencePiece: {})", why_llama2c,
       why_spm);
}

std::unique_ptr<Tokenizer> load_tokenizer(const TokenizerBlob& blob) {
  const std::string where = blob.origin.empty() ? std::string("tokenizer") : blob.origin;
  switch (blob.kind) {
    case TokenizerBlob::Kind::SentencePiece:
      return detail::make_sentencepiece_tokenizer(blob.bytes, where);
    case TokenizerBlob::Kind::Llama2c:
      return detail::make_llama2c_tokenizer(blob.bytes, where);
    case TokenizerBlob::Kind::None:
      break;
  }
  if (blob.kind == TokenizerBlob::Kind::None)
    fail(where, "no tokenizer found with the model; one is needed here (pass --tokenizer FILE)");
  fail(where, "unknown tokenizer kind {}", static_cast<int>(blob.kind));
}

}  // namespace lsb
