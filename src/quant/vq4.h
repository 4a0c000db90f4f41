// VQ4: vector quantization of 4 consecutive weights. Each tensor has a codebook of 2^bits
// vectors of 4 (learned from the tensor), each (row, group) an f16 scale s; the 4 weights
// 4j..4j+3 of a row are s * codebook[index_j]: bits / 4 bits per weight, plus the scales.
// Parameters: {"bits": 4..10, "group": G (a multiple of 16)[, "sym": true]}; columns must be a
// multiple of 4. "sym" (sign-symmetric): codeword e + 2^(bits-1) is codeword e negated, so the
// top bit of an index is a sign; the integer kernels then look up 2^(bits-1) entries and negate
// (9 bits at about the cost of 8). The codebook is still stored whole: every reader computes the
// same, and the parser checks the symmetry bit for bit.
// Blob (sections at multiples of 64 from the blob start):
//   codebook  f16[2^bits * 4]         finite
//   scales    f16[rows * ngroups]     finite, >= 0
//   codes     u64[rows * row_words]   per row, the (cols / 4) indices as `bits`-bit fields, least
//                                     significant first; row_words = ceil(cols / 4 * bits / 64);
//                                     padding bits 0
// Rules (docs/QUANT.md): the codebook by importance-weighted k-means on 4-vectors of weights
// divided by their group's RMS; scales by a grid search and least-squares refits per group;
// indices by GPTQ over vectors when the input statistics are given, else plain rounding to the
// nearest codeword under the diagonal importances.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "quant/scheme.h"

namespace lsb::quant {

struct Vq4Params {
  int bits = 8;
  int group_size = 256;
  bool sym = false;
  static Vq4Params from(const SchemeOptions& o, const std::string& where);
  static Vq4Params parse(std::string_view text, const std::string& where);
  std::string text() const;
  int entries() const { return 1 << bits; }
};

struct Vq4Layout {
  int64_t group = 0, ngroups = 0, row_words = 0;
  uint64_t codebook = 0, scales = 0, codes = 0, size = 0;
  Vq4Layout(int64_t rows, int64_t cols, const Vq4Params& p, const std::string& where);
};

class Vq4View final : public BlobView {
 public:
  static Vq4View parse(std::span<const std::byte> blob, int64_t rows, int64_t cols, std::string_view params,
                       const OpenArgs& args);
  void dequantize_row(int64_t r, float* out) const override;
  RowSpans row_spans(int64_t r) const override;
  uint32_t index(int64_t r, int64_t j) const;  // of the vector at columns 4j..4j+3

  int64_t rows = 0, cols = 0, group = 0, ngroups = 0, row_words = 0;
  int bits = 0;
  bool sym = false;
  const uint16_t* codebook = nullptr;  // f16 [2^bits * 4]
  const uint16_t* scales = nullptr;    // f16 [rows * ngroups]
  const uint64_t* codes = nullptr;     // [rows * row_words]
};

// The nearest-codeword search, argmin_c sum_k h_k (w_k - s cb_ck)^2 over a codebook stored as
// structure-of-arrays, ties to the lower index (exposed for tests). The scalar loop is the
// specification; the SIMD search (vq4_simd.cpp, run-time dispatched) returns the same index.
struct Vq4Soa {
  const float *d0, *d1, *d2, *d3;  // component k of every codeword
  int64_t entries;
};
int vq4_nearest_scalar(const Vq4Soa& cb, const float* w, const float* h, float s);
int vq4_nearest_simd(const Vq4Soa& cb, const float* w, const float* h, float s);
const char* vq4_simd_target();  // the target the dispatcher chose

// The codebook VQ4 learns for a matrix (exposed for tests): 2^bits * 4 values, f16-rounded;
// `simd` picks the search (the result is the same); `sym`: sign-symmetric (entries e + 2^(bits-1)
// are entries e negated).
std::vector<float> vq4_learn_codebook(const float* w, int64_t rows, int64_t cols, int bits, int64_t group,
                                      const float* col_imp, bool simd = true, bool sym = false);

}  // namespace lsb::quant
