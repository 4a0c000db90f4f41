// Synthetic checkpoints: Hugging Face-layout model folders (config.json, sharded safetensors with
// an index, tokenizer.model) at the shapes of real models, filled with deterministic random
// weights whose statistics resemble trained ones (see docs/SYNTH.md). They let the project be
// tested at 7B scale without downloading anything. Every such folder is marked synthetic.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/config.h"
#include "base/dtype.h"

namespace lsb {

struct SynthShape {
  std::string name;          // e.g. "llama2-7b"
  std::string hf_arch;       // "LlamaForCausalLM" or "MistralForCausalLM"
  std::string description;   // one line for --help and docs
  ModelConfig config;        // as lsb reads the written config.json back
};

const std::vector<SynthShape>& synth_shapes();
// Throws lsb::Error "NAME: unknown shape (known: a, b, ...)" for an unknown name.
const SynthShape& synth_shape(const std::string& name);

struct SynthOptions {
  DType dtype = DType::BF16;                  // F32, F16 or BF16
  uint64_t seed = 0;
  uint64_t max_shard_bytes = 5'000'000'000;   // tensor bytes per shard, as transformers' "5GB"
  bool force = false;                         // replace a non-empty existing folder
  bool progress = true;                       // progress bar on stderr when it is a terminal
  bool tokenizer = true;                      // train and write tokenizer.model
  // Rows generated per step are capped so a step's output is at most this many bytes; the peak
  // memory of generation is about twice this (two buffers: one generated while one is written).
  uint64_t chunk_bytes = 8ull << 20;
  // Called with the temporary folder's path before it is created, and with "" once it is moved
  // into place or removed (the CLI removes it if a signal ends the process).
  std::function<void(const std::string&)> on_temp_dir;
};

struct SynthResult {
  std::string dir;
  std::string shape;
  ModelConfig config;
  int64_t n_params = 0;
  int n_tensors = 0;
  int n_shards = 0;
  uint64_t tensor_bytes = 0;   // sum of tensor data (the index's total_size)
  uint64_t file_bytes = 0;     // all files written, headers and tokenizer included
  int tokenizer_pieces = 0;    // 0 when no tokenizer was written
  double tokenizer_seconds = 0;
  double weight_seconds = 0;   // generating and writing the shards
  double seconds = 0;          // everything
  double peak_rss_mb = 0;      // getrusage max RSS of this process at the end
};

// Writes the model folder `dir` through a temporary folder beside it, renamed at the end, so a
// failure leaves no partial output. Refuses a non-empty existing `dir` unless options.force.
// Throws lsb::Error naming the path on any problem.
SynthResult synth_model(const std::string& dir, const SynthShape& shape, const SynthOptions& options);
SynthResult synth_model(const std::string& dir, const std::string& shape_name, const SynthOptions& options);

// transformers-style config.json for a shape (plus "lsb_synthetic": true and the seed).
nlohmann::ordered_json synth_hf_config(const SynthShape& shape, DType dtype, uint64_t seed);

// Values of rows [row_begin, row_end) of the named tensor, as float32 before rounding to the
// stored dtype; `out` holds (row_end - row_begin) * cols floats. Depends only on (seed, name,
// shape, row), so tensors and rows can be generated independently and in any order.
void synth_tensor_rows(const ModelConfig& config, uint64_t seed, const std::string& name, int64_t rows, int64_t cols,
                       int64_t row_begin, int64_t row_end, float* out);

// A SentencePiece BPE model (byte fallback, unk 0 / bos 1 / eos 2, like Llama's) trained on a
// built-in deterministic English-like text, with at most max_pieces pieces. Serialized proto.
// The same max_pieces always gives the same bytes.
std::string synth_tokenizer_model(int max_pieces);

}  // namespace lsb
