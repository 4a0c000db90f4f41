// Opening a model for inference: the weights (resident, or streamed under a memory budget), the
// model running on them, and the tokenizer.
#pragma once
#include <memory>
#include <string>

#include "io/tensor_source.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"
#include "runtime/layer_streamer.h"

namespace lsb {

struct RunOptions {
  // 0: the whole model resident (memory-mapped). Otherwise everything resident — weights in use,
  // the units being prefetched, KV cache, activations, the process itself — stays within this
  // many bytes, streaming one layer at a time from a .lsb file (docs/STREAMING.md).
  uint64_t mem_budget = 0;
  DType kv_type = DType::F32;
  bool drop_page_cache = false;  // streaming: see StreamOptions
  int max_stream_slots = 3;      // streaming: see StreamOptions
};

struct Session {
  std::shared_ptr<TensorSource> source;
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<Tokenizer> tokenizer;
  const LayerStreamer* streamer = nullptr;  // the model's weights when streaming; null otherwise
};

// tokenizer_path empty: use the tokenizer that comes with the model (tokenizer.model in a Hugging
// Face folder, the one embedded in a .lsb file); error if there is none and need_tokenizer.
Session open_session(std::shared_ptr<TensorSource> source, const std::string& tokenizer_path, bool need_tokenizer = true,
                     const RunOptions& opt = {});

}  // namespace lsb
