#include "runtime/session.h"

#include "base/error.h"
#include "format/lsb_reader.h"
#include "model/model_tensors.h"
#include "runtime/resident_weights.h"

namespace lsb {

Session open_session(std::shared_ptr<TensorSource> source, const std::string& tokenizer_path, bool need_tokenizer,
                     const RunOptions& opt) {
  Session s;
  s.source = std::move(source);
  const ModelConfig& cfg = s.source->config();
  cfg.validate(s.source->describe());
  std::unique_ptr<WeightProvider> weights;
  std::shared_ptr<format::LsbReader> streamed;
  if (opt.mem_budget > 0) {
    auto lsb_file = std::dynamic_pointer_cast<format::LsbReader>(s.source);
    if (!lsb_file)
      fail(s.source->describe(), "--mem-budget streams layers from a .lsb file; compress the model first (lsb compress)");
    validate_tensors(*lsb_file);
    auto streamer = std::make_unique<LayerStreamer>(
        lsb_file, StreamOptions{opt.mem_budget, opt.drop_page_cache, opt.max_stream_slots});
    s.streamer = streamer.get();
    weights = std::move(streamer);
    streamed = lsb_file;
  } else {
    weights = std::make_unique<ResidentWeights>(s.source);
  }
  s.model = std::make_unique<LlamaModel>(cfg, std::move(weights), ModelOptions{opt.kv_type});
  TokenizerBlob blob = tokenizer_path.empty() ? s.source->tokenizer() : read_tokenizer_file(tokenizer_path);
  // Streaming reads the file with pread from here on: the map goes, so none of its pages can
  // count toward the budget again and a file truncated underneath cannot raise SIGBUS.
  if (streamed) streamed->release_map();
  if (blob.kind == TokenizerBlob::Kind::None && !need_tokenizer) return s;
  if (blob.kind == TokenizerBlob::Kind::None)
    fail(s.source->describe(), "no tokenizer found with the model; pass --tokenizer PATH");
  s.tokenizer = load_tokenizer(blob);
  // A model may have more rows than its tokenizer has pieces (vocabularies padded to a multiple
  // of 64 or 128 are common): generation samples only ids the tokenizer can decode. The other
  // way round, ids the model cannot embed, is an error.
  if (s.tokenizer->vocab_size() > cfg.vocab_size)
    fail(blob.origin, "tokenizer has {} tokens but the model's vocabulary is {}", s.tokenizer->vocab_size(),
         cfg.vocab_size);
  return s;
}

}  // namespace lsb
