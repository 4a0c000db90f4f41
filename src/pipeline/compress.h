// The compression pipeline behind `lsb compress`, as a library function: reads any model
// open_model() reads, one tensor at a time (source -> float -> quantize -> metrics -> write ->
// free), and writes a .lsb file through LsbWriter (temporary file, renamed when complete).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeline/calibration.h"
#include "quant/metrics.h"
#include "quant/scheme.h"

namespace lsb {

struct CompressOptions {
  std::string scheme = "default";       // "default" recipe or a scheme name (lsb1, paper, q8, f16, bf16, f32)
  quant::SchemeOptions options;         // knobs given by the user; each scheme fills in its defaults
  std::vector<std::string> keep;        // "PATTERN=SCHEME" rules, last match wins
  std::string tokenizer_path;           // embed this tokenizer instead of the source's own
  // Calibration (docs/CALIBRATION.md): a text file, run through the model layer by layer while
  // compressing, or a statistics file from `lsb calibrate`. "" = none: every scheme rounds on
  // its own (schemes with calibration then fit with uniform importances).
  std::string calib;
  CalibrationOptions calib_options;     // tokens and ctx, when `calib` is a text
  bool progress = false;                // progress bar on stderr (only drawn on a TTY)
  // Set by the bit allocator (eval/allocate.h) instead of a recipe: each matrix's scheme and
  // parameters by tensor name (matrices not named fall back to the recipe), blobs it already
  // quantized with exactly those (used as they are), the statistics it loaded (instead of
  // reading `calib` again) and a record of the allocation stored as metadata "allocation".
  struct Planned {
    DType dtype = DType::F32;
    std::string params;
  };
  std::map<std::string, Planned> plan;
  const std::map<std::string, std::vector<std::byte>>* blobs = nullptr;
  const CalibrationSet* calib_set = nullptr;
  nlohmann::json allocation;
  // Called with the temporary file's path once it exists, and with "" once it is gone or renamed
  // (lets the CLI's signal handler remove it).
  std::function<void(const std::string&)> on_temp_file;
};

struct TensorReport {
  std::string name;
  std::vector<int64_t> shape;
  std::string scheme;
  std::string params;  // the scheme's canonical parameters ("" for dense tensors)
  uint64_t bytes = 0;
  double bpw = 0;
  uint64_t outliers = 0;
  quant::TensorMetrics metrics;
  std::string calib_input;  // the statistics it was rounded with ("" = none)
  double out_error = -1;    // tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) with those statistics; -1 = not measured
};

struct CompressReport {
  std::string source, output;
  uint64_t params = 0, input_bytes = 0, output_bytes = 0;
  double bpw = 0, ratio_vs_bf16 = 0;
  uint64_t peak_rss_bytes = 0;
  double seconds = 0;
  uint64_t largest_tensor_f32_bytes = 0;
  std::string source_xxh3;
  bool calibrated = false;              // statistics were used
  bool calibration_would_help = false;  // not calibrated, and some tensor's scheme uses statistics
  CalibrationInfo calibration;
  std::vector<TensorReport> tensors;
};

// The transformer layer a tensor belongs to ("model.layers.{l}." names), -1 for others.
int tensor_layer(std::string_view name);
// The order tensors are written in: embedding, layers in order, final norm, head, then the rest.
std::vector<const TensorInfo*> compress_order(const TensorSource& src);

CompressReport compress_model(const std::string& src_path, const std::string& out_path, const CompressOptions& opt);

// Per-tensor metrics as stored in the metadata and printed by --json ("snr_db": null = +inf).
nlohmann::json tensor_report_json(const TensorReport& t);
nlohmann::json report_json(const CompressReport& r);
nlohmann::json calibration_json(const CalibrationInfo& i, const std::string& source);
// The table both `lsb compress` and `lsb inspect` print.
std::string tensor_table(const std::vector<TensorReport>& tensors);

}  // namespace lsb
