// Calibration: statistics of the inputs every linear layer sees when the original model reads a
// text (docs/CALIBRATION.md). They are what GPTQ needs (quant/gptq.h): H = Σ x xᵀ per input.
//
// The model runs layer-major: every calibration window goes through layer l (on the source's own
// weights) before any goes through layer l+1, so only one layer's weights, its statistics and
// the windows' hidden states are in memory at a time. Each layer's inputs come from the original
// layers before it ("plain" statistics; feeding the already quantized layers' outputs instead
// measured worse on bookworm-27m, docs/CALIBRATION.md).
//
// Inputs (one set of statistics each; the matrices reading them share it):
//   layers.{l}.qkv      the attention norm's output: q_proj, k_proj, v_proj
//   layers.{l}.o        the attention's output: o_proj
//   layers.{l}.gate_up  the MLP norm's output: gate_proj, up_proj
//   layers.{l}.down     silu(gate) * up: down_proj
//   head                the final norm's output: lm_head (absent for tied embeddings)
// The embedding's input is a token id: it has no statistics.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "io/tensor_source.h"
#include "model/llama_model.h"
#include "model/tokenizer.h"
#include "quant/stats.h"

namespace lsb {

struct CalibrationOptions {
  std::string text_path;
  int64_t tokens = 32768;  // at most this many tokens, as whole windows from the start of the text
  int ctx = 512;           // window length (positions 0..ctx-1, the first token replaced by BOS)
  bool progress = false;
};

// Where the statistics came from; stored with them and checked when they are used.
struct CalibrationInfo {
  std::string text;            // file name of the calibration text
  std::string text_xxh3;       // of its bytes
  int64_t tokens = 0;          // tokens run through the model (windows * ctx)
  int ctx = 0, windows = 0;
  std::string model_fingerprint;  // model_fingerprint() of the model that was run
  ModelConfig config;
};

// The input key a matrix reads (see above); "" for tensors without statistics.
std::string calibration_input_of(std::string_view tensor_name);
// Every input key of a model, in the order calibration produces them.
std::vector<std::string> calibration_inputs(const ModelConfig& cfg);
// Identifies a model's weights cheaply: XXH3 over every tensor's name, shape, dtype and the first
// and last 64 KiB of its bytes (hex). Statistics from another model are refused with it.
std::string model_fingerprint(const TensorSource& src);

class Calibrator {
 public:
  // Tokenizes the text and embeds its windows. Throws lsb::Error (naming the text) when it is
  // shorter than one window, or when --tokens is below one window.
  Calibrator(const TensorSource& src, const Tokenizer& tok, const CalibrationOptions& opt);
  ~Calibrator();

  // Runs every window through layer l, which must be the next one (0, 1, ...), recording the
  // statistics of its inputs; returns them by key. The windows' states move to the layer's output.
  std::map<std::string, quant::InputStats> run_layer(int l);
  // After the last layer: the statistics of the classifier's input.
  quant::InputStats run_head();

  const CalibrationInfo& info() const { return info_; }
  int next_layer() const { return next_; }

 private:
  class SourceLayers;
  const TensorSource& src_;
  CalibrationInfo info_;
  std::unique_ptr<LlamaModel> model_;
  SourceLayers* layers_ = nullptr;  // owned by model_
  std::vector<float> hidden_;       // (windows, ctx, dim)
  int next_ = 0;
  bool progress_ = false;
};

// All statistics of a model: what `lsb calibrate` writes.
struct CalibrationSet {
  CalibrationInfo info;
  std::map<std::string, quant::InputStats> inputs;
};

CalibrationSet calibrate_model(const TensorSource& src, const Tokenizer& tok, const CalibrationOptions& opt);

// The statistics file (docs/CALIBRATION.md): safetensors, `<key>.diag` F32 (cols) and `<key>.gram`
// F32 (cols, cols) per input, provenance in the metadata. Written to a temporary file renamed
// when complete.
void write_calibration(const std::string& path, const CalibrationSet& set);
// The temporary file write_calibration writes first (for a signal handler to remove).
std::string calibration_temp_path(const std::string& path);
// True when `path` is a statistics file (by its header), false for anything else (e.g. a text).
bool is_calibration_file(const std::string& path);
// Reads and checks a statistics file against the model it is to be used with: same
// configuration and fingerprint, every input present with the right size, all values finite,
// diagonals non-negative. Throws lsb::Error naming the file.
CalibrationSet read_calibration(const std::string& path, const TensorSource& model);

}  // namespace lsb
