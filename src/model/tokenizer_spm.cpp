// SentencePiece tokenizer.model through libsentencepiece.
//
// encode is the library's Encode over the whole text (its normaliser, dummy prefix and byte
// fallback included), as llama.cpp and the PyTorch references do. decode maps each id to its
// text on its own, the way llama.cpp prints tokens, rather than calling the library's Decode on
// the whole list: Decode turns a byte sequence that is not valid UTF-8 into U+FFFD and strips the
// leading space of whatever comes first, so a stream decoded a token at a time would lose bytes
// and spaces. For complete, valid text both give the same string (tests check this).
#include <sentencepiece_processor.h>

#include "base/error.h"
#include "detail/tokenizer_impl.h"

namespace lsb::detail {

namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581, SentencePiece's space

std::string replace_space_symbol(const std::string& piece) {
  std::string out;
  out.reserve(piece.size());
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, kSpaceSymbol.size(), kSpaceSymbol) == 0) {
      out.push_back(' ');
      i += kSpaceSymbol.size();
    } else {
      out.push_back(piece[i++]);
    }
  }
  return out;
}

// "<0xXX>" -> XX, or -1.
int byte_piece_value(const std::string& piece) {
  if (piece.size() != 6 || piece.compare(0, 3, "<0x") != 0 || piece[5] != '>') return -1;
  int v = 0;
  for (int i = 3; i < 5; ++i) {
    char c = piece[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return -1;
    v = v * 16 + d;
  }
  return v;
}

// The library's load errors read "Internal: ./src/sentencepiece_processor.cc(232)
// [model_proto->ParseFromArray(...)]"; say what that means instead.
std::string load_error(const sentencepiece::util::Status& status) {
  std::string msg = status.ToString();
  if (msg.find("ParseFromArray") != std::string::npos) return "not a valid protobuf";
  while (!msg.empty() && msg.back() == ' ') msg.pop_back();
  return msg;
}

// Id of a special piece: the model's own id, else the conventional piece if it exists, else -1.
int special_id(const sentencepiece::SentencePieceProcessor& sp, int from_model, std::string_view piece) {
  if (from_model >= 0) return from_model;
  int id = sp.PieceToId(piece);
  return (id >= 0 && !sp.IsUnknown(id) && sp.IdToPiece(id) == piece) ? id : -1;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(std::string_view bytes, const std::string& origin) : origin_(origin) {
    if (bytes.empty()) fail(origin_, "empty file is not a SentencePiece model");
    auto status = sp_.LoadFromSerializedProto(bytes);
    if (!status.ok()) fail(origin_, "not a valid SentencePiece model: {}", load_error(status));
    const int n = sp_.GetPieceSize();
    if (n <= 0) fail(origin_, "SentencePiece model has no pieces");
    bos_ = special_id(sp_, sp_.bos_id(), "<s>");
    eos_ = special_id(sp_, sp_.eos_id(), "</s>");

    // Text of every id, as llama.cpp's token_to_piece gives it.
    surface_.resize(size_t(n));
    piece_has_space_prefix_.resize(size_t(n));
    int probe = -1;  // a normal piece starting with U+2581, to ask Decode how it treats it
    for (int id = 0; id < n; ++id) {
      const std::string& piece = sp_.IdToPiece(id);
      if (sp_.IsControl(id)) continue;  // <s>, </s>, ...: invisible
      if (sp_.IsByte(id)) {
        int b = byte_piece_value(piece);
        if (b < 0) fail(origin_, "byte piece {} ('{}') is not of the form <0xXX>", id, piece);
        surface_[id] = std::string(1, static_cast<char>(b));
        continue;
      }
      if (sp_.IsUnknown(id)) {
        surface_[id] = sp_.DecodeIds({id});  // the library's unknown surface (" \u2047 ")
        continue;
      }
      surface_[id] = replace_space_symbol(piece);
      piece_has_space_prefix_[id] = piece.compare(0, kSpaceSymbol.size(), kSpaceSymbol) == 0;
      if (probe < 0 && piece_has_space_prefix_[id]) probe = id;
    }
    // The library drops the space of the first piece only when the model adds a dummy prefix (or
    // removes extra whitespace); ask it rather than read the normaliser spec, which needs the
    // protobuf headers.
    strip_space_after_bos_ = probe >= 0 && sp_.DecodeIds({probe}) != surface_[probe];
  }

  int vocab_size() const override { return sp_.GetPieceSize(); }
  int bos_id() const override { return bos_; }
  int eos_id() const override { return eos_; }
  int piece_id(std::string_view piece) const override {
    const int id = sp_.PieceToId(piece);
    return (id >= 0 && !sp_.IsUnknown(id) && sp_.IdToPiece(id) == piece) ? id : -1;
  }

  std::vector<int> encode(std::string_view text, bool add_bos) const override {
    std::vector<int> ids;
    if (add_bos) {
      if (bos_ < 0) fail(origin_, "cannot add BOS: the SentencePiece model has no <s> piece");
      ids.push_back(bos_);
    }
    std::vector<int> body;
    auto status = sp_.Encode(text, &body);
    if (!status.ok()) fail(origin_, "SentencePiece encode failed: {}", status.ToString());
    ids.insert(ids.end(), body.begin(), body.end());
    return ids;
  }

  std::string decode(const std::vector<int>& ids) const override {
    std::string out;
    const int n = vocab_size();
    for (size_t i = 0; i < ids.size(); ++i) {
      const int id = ids[i];
      if (id < 0 || id >= n) fail(origin_, "token id {} out of range (vocab size {})", id, n);
      const std::string& s = surface_[id];
      const bool after_bos = i > 0 && bos_ >= 0 && ids[i - 1] == bos_;
      size_t skip = (after_bos && strip_space_after_bos_ && piece_has_space_prefix_[id]) ? 1 : 0;
      out.append(s, skip, std::string::npos);
    }
    return out;
  }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  std::string origin_;
  int bos_ = -1;
  int eos_ = -1;
  bool strip_space_after_bos_ = false;
  std::vector<std::string> surface_;
  std::vector<bool> piece_has_space_prefix_;
};

}  // namespace

bool is_sentencepiece(std::string_view bytes, std::string& why) {
  if (bytes.empty()) {
    why = "empty";
    return false;
  }
  sentencepiece::SentencePieceProcessor sp;
  auto status = sp.LoadFromSerializedProto(bytes);
  if (!status.ok()) {
    why = load_error(status);
    return false;
  }
  if (sp.GetPieceSize() <= 0) {
    why = "no pieces";
    return false;
  }
  return true;
}

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(std::string_view bytes, const std::string& origin) {
  return std::make_unique<SentencePieceTokenizer>(bytes, origin);
}

}  // namespace lsb::detail
