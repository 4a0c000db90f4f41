// The scheme table: one row of operations per way a matrix can be stored (dense f32/f16/bf16,
// q8, lsb1, paper, ...), in the spirit of ggml's type_traits. Code and tests loop over it;
// adding a scheme is one file in src/quant (its layout, parameter codec, reference and fast
// quantizers, and a view that dequantizes rows) plus one row in schemes.cpp — see
// docs/DESIGN.md, "How to add a scheme". How a scheme is multiplied (its Linear and kernels)
// lives two floors up, in src/linear's table.
//
// Every scheme turns a row-major float matrix (rows, cols) (rows = output features) into one
// byte blob; layouts are documented in the scheme's own header and in docs/QUANT.md. Sections
// inside a blob start at multiples of 64 bytes from the blob start, so that SIMD loads of a
// memory-mapped blob are aligned.
//
// Parameters are per tensor, as text: a JSON object holding exactly the keys the scheme uses,
// keys sorted, every value explicit (e.g. {"alpha":0.019999999552965164,"group":128,"mean":false}),
// or "" for schemes without parameters. This canonical text is what a .lsb directory stores, so
// new schemes bring new keys without changing the file format.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <memory_resource>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/align.h"
#include "base/dtype.h"
#include "io/tensor_source.h"
#include "quant/stats.h"

namespace lsb::quant {

inline constexpr uint64_t kSectionAlign = 64;
inline constexpr uint64_t align_section(uint64_t off) { return align_up(off, kSectionAlign); }

// What a user or a recipe may ask of a scheme. Each scheme reads the knobs it has, fills in its
// own defaults for the ones not given, validates them, and ignores the rest.
struct SchemeOptions {
  std::optional<int> group_size;       // "group": columns sharing one scale; 0 = the whole row
  std::optional<float> outlier_ratio;  // "alpha": fraction of each row kept exactly (fp16)
  std::optional<bool> use_mean;        // "mean": store a mean per group (lsb1)
  std::optional<int> bits;             // "bits": code bits (nu: per weight; vq4: per vector of 4)
  std::optional<bool> sign_symmetric;  // "sym": vq4's codebook is its first half and that half negated
  // From a parameter text / JSON object; unknown keys and wrong types are errors.
  static SchemeOptions parse(std::string_view text, const std::string& where);
};

// The bytes of a blob that dequantize_row(r) reads: a few ranges inside the blob the view was
// opened on (row r's part of each section, plus any table shared by all rows). Streaming reads
// embedding rows by fetching exactly these ranges (docs/STREAMING.md), so a view must list every
// byte it reads; QuantBlobView.RowSpansCoverEveryByteRead checks it for every scheme.
struct RowSpans {
  static constexpr int kMax = 6;
  std::array<std::span<const std::byte>, kMax> spans{};
  int n = 0;
  void add(const void* p, uint64_t bytes) {
    if (n == kMax) throw std::logic_error("RowSpans: more than kMax ranges");
    if (bytes > 0) spans[static_cast<size_t>(n++)] = {static_cast<const std::byte*>(p), static_cast<size_t>(bytes)};
  }
};

// A validated blob, as the matrix it stores.
class BlobView {
 public:
  virtual ~BlobView() = default;
  // Row r of the matrix as float, exactly as the scheme defines its reconstruction.
  virtual void dequantize_row(int64_t r, float* out) const = 0;
  // Every byte of the blob dequantize_row(r) reads.
  virtual RowSpans row_spans(int64_t r) const = 0;
  // Weights stored exactly beside the code (0 for schemes without outliers).
  virtual uint64_t outlier_count() const { return 0; }
};

struct QuantizeArgs {
  const float* w = nullptr;  // (rows, cols) row-major; must be finite
  int64_t rows = 0, cols = 0;
  std::string_view params;   // canonical parameter text (from make_params)
  // Statistics of the inputs this matrix is multiplied by (calibration); null: none. Schemes
  // that round use them to weight their errors; others ignore them.
  const InputStats* stats = nullptr;
};

struct OpenArgs {
  std::string where = "blob";  // prefix of error messages ("FILE: tensor 'NAME'")
  // false skips the checks of values that memory safety does not depend on (finite scales and
  // outliers, outlier sign bits); sizes, offsets and columns are always checked.
  bool check_content = true;
  std::pmr::memory_resource* mr = std::pmr::get_default_resource();  // for per-row index arrays
};

struct SchemeOps {
  DType id;                  // on-disk id (base/dtype.h)
  std::string_view name;     // user-facing name: --scheme, --keep, metadata
  std::string_view summary;  // one line for --help and docs
  bool uses_stats;           // rounds with the inputs' statistics (calibration) when given
  // Parameter codec: canonical text from options (defaults filled in); throws on invalid values.
  std::string (*make_params)(const SchemeOptions& options, const std::string& where);
  // Bytes of the sections whose size does not depend on the data: the whole blob for schemes
  // without outliers, a lower bound otherwise. Throws on invalid shapes or parameters.
  uint64_t (*fixed_bytes)(int64_t rows, int64_t cols, std::string_view params, const std::string& where);
  // Scalar reference quantizer: the specification (docs/QUANT.md says the same in prose).
  std::vector<std::byte> (*quantize_ref)(const QuantizeArgs& a);
  // Fast quantizer (threads over rows): byte for byte equal to quantize_ref for any thread count.
  std::vector<std::byte> (*quantize)(const QuantizeArgs& a);
  // Validates a whole blob (every size, offset and value) and returns its view.
  std::unique_ptr<BlobView> (*open)(std::span<const std::byte> blob, int64_t rows, int64_t cols,
                                    std::string_view params, const OpenArgs& args);
};

// Every scheme, in id order.
std::span<const SchemeOps* const> all_schemes();
const SchemeOps* find_scheme(DType t);                // null for an unknown id
const SchemeOps* find_scheme(std::string_view name);  // case-insensitive; null when unknown
const SchemeOps& scheme(DType t);                     // throws for an unknown id
// The scheme's name, or "dtype N" for an unknown id (for messages).
std::string_view scheme_name(DType t);
// "f32, f16, bf16, q8, lsb1, paper": for error messages and help texts.
std::string scheme_names();

// Canonical parameters of scheme t from options.
std::string make_params(DType t, const SchemeOptions& options, const std::string& where);
// Checks stored parameter text: it must be exactly what make_params gives for the options it
// holds (a file written by lsb always is). Throws naming `where` otherwise.
void check_params(DType t, std::string_view text, const std::string& where);

// Dispatch through the table. Non-finite weights are refused by the quantizers of packed schemes.
std::vector<std::byte> quantize(DType t, const QuantizeArgs& a);
std::vector<std::byte> quantize_reference(DType t, const QuantizeArgs& a);
std::unique_ptr<BlobView> open_blob(DType t, std::span<const std::byte> blob, int64_t rows, int64_t cols,
                                    std::string_view params, const OpenArgs& args = {});
// Whole matrix as float (rows in parallel); validates the blob first.
void dequantize(DType t, std::span<const std::byte> blob, int64_t rows, int64_t cols, std::string_view params,
                float* out);
// Any stored tensor (dense or quantized) as float32 values: what the model computes with.
std::vector<float> tensor_to_float(const TensorInfo& t, std::span<const std::byte> data);

}  // namespace lsb::quant
