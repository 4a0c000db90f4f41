// Quantization schemes: traits table, scalar reference quantizers/dequantizers (the
// specification), and the fast (multi-threaded) versions that must match them bit for bit.
//
// Every scheme turns a row-major float matrix (rows, cols) into one byte blob. Blob layouts
// (all little-endian, sections back to back, each section starting at a multiple of 64 bytes
// from the blob start so that SIMD loads of a memory-mapped blob are aligned):
//
// F32 / F16 / BF16:  rows*cols elements (fp16/bf16 rounded to nearest even).
//
// Q8:   scales  f32[rows]            (scale = max|w| / 127 of the row; 0 row -> scale 0)
//       q       int8[rows*cols]      (q = round-half-away(w / scale), clamped to [-127, 127])
//
// LSB1 (group size G along each row, outlier ratio alpha):
//       signs   u64[rows * words]    words = ceil(cols/64); bit j of word w <-> column 64*w + j;
//                                    1 = +scale, 0 = -scale; padding bits 0. An outlier's bit is 1.
//       scales  f16[rows * ngroups]  ngroups = ceil(cols/G); scale of the group's inliers
//       (optional, when the scheme's `use_mean` parameter is set)
//       means   f16[rows * ngroups]  w ~ mean + scale * sign(w - mean)
//       counts  u16[rows]            outliers in each row (k = round(alpha * cols), ties to lower index)
//       gaps    u8[...]              outlier columns c_0 < c_1 < ... of each row, rows in order,
//                                    as gaps g_0 = c_0, g_i = c_i - c_{i-1} - 1; each gap is written
//                                    as floor(g/255) bytes of 255 followed by one byte g % 255.
//       values  f16[total outliers]  the exact (fp16-rounded) weight at each outlier position
//
// PAPER (the seed paper, per tensor): tau = quantile(|W|, 1 - alpha); outliers |w| > tau;
//       header  f32 mu, f32 sigma, f32 tau, u32 pad (16 bytes) — mu, sigma of the inliers
//       signs   u64[rows * words]    1 <-> (w - mu) >= 0  -> reconstruction mu + sigma * (+1 / -1)
//                                    (an outlier's bit is 1, as in LSB1)
//       counts  u16[rows], gaps u8[...], values f16[...]  as in LSB1
//
// Exact definitions (rounding, quantile index, sums) are in docs/QUANT.md. In short:
//   LSB1: k = round-half-away(double(alpha) * cols) outliers per row, the k largest |w| (ties:
//     lower column first). Per group, over its inliers, in double: without mean, scale =
//     mean |w|; with mean, m = fp16(mean w), bit = (w >= m), scale = mean |w - m|. Stored values
//     are the fp16 nearest to the double result (saturated to +-65504). Reconstruction in
//     float: bit ? m + scale : m - scale (m = 0 without mean), then outliers overwrite.
//   PAPER: tau = sorted(|W|)[floor((1 - double(alpha)) * (n - 1))]; mu, sigma (population
//     standard deviation) of the inliers in double, sums taken per row in column order and
//     then over rows in order; stored as f32.
//
// Packed blobs (Q8, LSB1, PAPER) must start at an 8-byte aligned address (the .lsb writer
// aligns every tensor to 64). The gap stream has no stored length: it ends after the last
// row's gaps; the values section starts at the next multiple of 64 (padding bytes are zero)
// and the blob ends exactly after the last value.
//
// blob_layout() computes the section offsets so that writers, readers and kernels agree.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory_resource>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lsb/dtype.h"

namespace lsb::quant {

struct SchemeParams {
  float outlier_ratio = 0.02f;  // alpha (LSB1, PAPER)
  int group_size = 128;         // G (LSB1); 0 = whole row
  bool use_mean = false;        // LSB1: store a per-group mean
};

// One row of the traits table that code and tests loop over.
struct SchemeTraits {
  DType dtype;
  std::string_view name;      // "f32", "f16", "bf16", "q8", "lsb1", "paper"
  bool has_outliers;
  bool packed_signs;
  std::string_view summary;
};
std::span<const SchemeTraits> all_schemes();
const SchemeTraits& traits(DType t);
const SchemeTraits* find_scheme(std::string_view name);

inline constexpr uint64_t kSectionAlign = 64;
inline constexpr uint64_t align_section(uint64_t off) {
  return (off + kSectionAlign - 1) / kSectionAlign * kSectionAlign;
}

// Byte offsets of the fixed sections of a blob. Sections a scheme does not have are 0 (means
// is 0 unless LSB1 with use_mean). `gaps` is where the data-dependent part starts; for dense
// types and Q8 it equals the whole blob size.
struct BlobLayout {
  int64_t words = 0;    // u64 words of sign bits per row
  int64_t group = 0;    // effective group size (LSB1; cols when group_size is 0)
  int64_t ngroups = 0;  // groups per row (LSB1)
  uint64_t header = 0, signs = 0, scales = 0, means = 0, counts = 0, q8 = 0, gaps = 0;
};
// Throws lsb::Error (prefixed with `where`) on invalid parameters (alpha outside [0, 1] or not
// finite, negative group size, non-positive dims for packed types, columns over 2^31 - 1) and
// on size overflow.
BlobLayout blob_layout(DType t, int64_t rows, int64_t cols, const SchemeParams& p,
                       const std::string& where = "quant");
// Outliers kept in each row by LSB1: round-half-away(double(alpha) * cols), at most cols.
int64_t lsb1_outliers_per_row(int64_t cols, float alpha);

// Exact blob size for a matrix (rows, cols). For schemes with outliers the size depends on the
// data (gaps): use quantize() and take .size(). This returns the size of the fixed sections only.
uint64_t fixed_blob_bytes(DType t, int64_t rows, int64_t cols, const SchemeParams& p);

// Scalar reference (single-threaded, plain loops): the specification.
std::vector<std::byte> quantize_reference(DType t, const float* w, int64_t rows, int64_t cols,
                                          const SchemeParams& p);
void dequantize_reference(DType t, std::span<const std::byte> blob, int64_t rows, int64_t cols,
                          const SchemeParams& p, float* out);

// Fast versions (threads over rows, SIMD where it helps). Must equal the reference bit for bit,
// whatever the number of threads.
std::vector<std::byte> quantize(DType t, const float* w, int64_t rows, int64_t cols,
                                const SchemeParams& p);
void dequantize(DType t, std::span<const std::byte> blob, int64_t rows, int64_t cols,
                const SchemeParams& p, float* out);
// Dequantize a single row (embedding lookup). Needs the per-row outlier start positions for the
// gap stream, so it takes a prepared view; see PackedView.
struct PackedView;

// Parsed section pointers of a blob (no copies). Validates every section against blob.size()
// and throws lsb::Error(where + ": ...") on inconsistency. Computes per-row outlier offsets
// (in memory only), which the kernels use.
struct PackedView {
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  SchemeParams params;
  int64_t words = 0, ngroups = 0;
  const uint64_t* signs = nullptr;
  const uint16_t* scales = nullptr;  // f16 bits
  const uint16_t* means = nullptr;   // f16 bits or nullptr
  const uint16_t* counts = nullptr;
  const uint8_t* gaps = nullptr;
  const uint16_t* values = nullptr;  // f16 bits
  float mu = 0, sigma = 0, tau = 0;  // PAPER
  const float* q8_scales = nullptr;
  const int8_t* q8 = nullptr;
  std::pmr::vector<uint64_t> row_value_start;  // rows+1 prefix sums of counts
  std::pmr::vector<uint64_t> row_gap_start;    // rows+1 byte offsets into gaps
  // Receives the decoded outlier columns of LSB1/PAPER blobs while parse validates them, so that
  // callers need not decode the gap stream a second time: reserve(total) once, then row() per
  // row with the index of the row's first outlier value and its columns (increasing).
  struct OutlierSink {
    std::function<void(uint64_t total)> reserve;
    std::function<void(int64_t row, uint64_t first, const uint32_t* columns, uint32_t count)> row;
  };
  // The two per-row arrays are allocated from `mr` (the streaming runtime passes an arena).
  // check_content = false skips the checks of values that cannot affect memory safety (finite
  // scales, means and outliers, outlier sign bits); sizes, offsets and columns are always checked.
  static PackedView parse(DType t, std::span<const std::byte> blob, int64_t rows, int64_t cols,
                          const SchemeParams& p, const std::string& where, const OutlierSink* sink = nullptr,
                          std::pmr::memory_resource* mr = std::pmr::get_default_resource(),
                          bool check_content = true);
  void dequantize_row(int64_t r, float* out) const;
};

}  // namespace lsb::quant
