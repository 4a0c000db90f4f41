// VQ4 (and NU, at the end) with integer dot products: the codebook and the activations in 8 bits, the products summed exactly in int32 by AVX-512 VNNI, the codebook lookups done in
// registers by AVX-512 VBMI byte permutes. The float kernels (packed.h) stay the path for
// prompts, for other CPUs and for shapes this one does not take.
//
// What it computes (the specification, vq4_gemv_q8_reference): with
//   cq[e][t] = round(codebook[e][t] * 127 / max |codebook|), cs = max |codebook| / 127,
//   xq[c]    = round(x[c] * 127 / max |x| over block b), d_b = max |x| over block b / 127,
// (round: to nearest, halves away from zero; blocks of 16 columns for one token, of
// kVq4Q8TokBlock panel positions for a prompt's batch),
//   y_r = cs * sum over blocks b of  s_{r, g(b)} * d_b * sum_{c in b} cq[idx_r(c / 4)][c % 4] * xq[c]
// where the inner sums are exact integers. It differs from y = W x by the rounding of the
// codebook and of the activations to 8 bits (relative error about 1 %, measured in the tests);
// llama.cpp's decode kernels round their activations to 8 bits the same way (Q8_K).
//
// Layouts, per chunk of 256 columns (64 indices, two blocks):
//   - activations in plane order: xq[chunk][t][j] = xq[256 chunk + 4 j + t], so that the byte t
//     of 64 looked-up entries multiplies one 64-byte vector of activations;
//   - the codebook as 4 planes of 2^bits bytes, cq + 128 (VNNI multiplies unsigned by signed
//     bytes); the 128 * sum(xq) this adds is subtracted up front (`bias`).
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/packed.h"

namespace lsb::kernels {

inline constexpr int64_t kVq4Q8Chunk = 256;  // columns per chunk
inline constexpr int64_t kVq4Q8Block = 128;    // group sizes are multiples of this
// Panel positions per activation scale in a prompt (32, 64 or 128). 64 measured no better than
// 128 on bookworm-27m (PPL 7.3e-4 from the float kernels' against 6.9e-4, 20 windows), and each
// block costs a rescale of the tile.
inline constexpr int64_t kVq4Q8TokBlock = 128;

// One token's activations, quantized once and shared by every row (and every tensor of the
// same input width).
struct Vq4Q8Activations {
  int64_t cols = 0;
  std::vector<int8_t> xq;     // [chunks][4][64], plane order
  std::vector<int32_t> bias;  // [chunks][16]: -128 * the sum of the 16 xq that dword lane l multiplies
  std::vector<float> d;       // [chunks][16]: the scale of lane l's block (columns 16l..16l+15)
};

// cols must be a multiple of kVq4Q8Chunk.
void vq4_quantize_activations(const float* x, int64_t cols, Vq4Q8Activations& out);

// A batch of tokens for vq4_gemm_q8 (prompts). The columns of each chunk of 256 are taken in
// "panel order": the 32 first indices' byte 0, byte 1, byte 2, byte 3, then the same for the 32
// last indices (panel_position), the order in which the kernel lays out a decoded weight row;
// each block of 128 columns stays within its 128 positions. Scales per token and block of
// kVq4Q8TokBlock positions.
struct Vq4Q8Tokens {
  int64_t n = 0, n_pad = 0, cols = 0;  // n_pad: n rounded up to a tile of 32 tokens
  std::vector<int8_t> xq;     // [n_pad / 32 tiles][cols / 4 quads][32 tokens][4]
  std::vector<float> d;       // [cols / kVq4Q8TokBlock blocks][n_pad]
  std::vector<int32_t> bias;  // [cols / kVq4Q8TokBlock blocks][n_pad]: -128 * the block's sum of xq
};
// Where column `col` sits in panel order.
int64_t panel_position(int64_t col);
void vq4_quantize_tokens(const float* x, int64_t n, int64_t cols, Vq4Q8Tokens& out);

// What the integer kernel reads of a VQ4 tensor: the float view (indices and scales in place)
// and the codebook as 4 byte planes.
struct Vq4Q8MatrixView {
  Vq4MatrixView w;
  const uint8_t* planes = nullptr;  // [4][1 << bits]: cq[e][t] + 128
  float cs = 0;                     // codebook scale
  // Entry e + 2^(bits-1) of every plane is entry e negated (vq4_planes_sign_symmetric): the kernels
  // look up half the table and negate by the index's top bit (8 and 9 bits).
  bool sign_symmetric = false;
};

// The tables are rounded to 8 bits with one scale, max |v| / 127: the Linears take these kernels
// only for tables that fit that grid (quant::table_fits_8_bits).

// planes: 4 << bits bytes. Returns the codebook scale cs.
float vq4_codebook_planes(const float* codebook, int bits, uint8_t* planes);
// Whether every plane's second half is its first half negated (cq + 128 -> 256 - (cq + 128)).
// A sign-symmetric codebook (quant/vq4.h "sym") gives such planes: rounding to 8 bits is odd.
bool vq4_planes_sign_symmetric(const uint8_t* planes, int bits);

// Whether vq4_gemv_q8 takes this tensor now: the CPU has AVX-512 VNNI and VBMI, the packed
// kernels' dispatch target is AVX-512 (tests that force AVX2 or SSE4 get the float kernels), 4 to
// 9 bits, columns a multiple of 256 and groups of a multiple of 128 columns.
bool vq4_q8_usable(const Vq4MatrixView& w);

// y[r - r0] for r0 <= r < r1 (only when vq4_q8_usable).
void vq4_gemv_q8(const Vq4Q8MatrixView& m, const Vq4Q8Activations& x, int64_t r0, int64_t r1, float* y);
// y[t * ldy + r] for t < x.n, r0 <= r < r1: a prompt's tokens (only when vq4_q8_usable).
void vq4_gemm_q8(const Vq4Q8MatrixView& m, const Vq4Q8Tokens& x, int64_t r0, int64_t r1, float* y, int64_t ldy);
void vq4_gemm_q8_reference(const Vq4Q8MatrixView& m, const Vq4Q8Tokens& x, int64_t r0, int64_t r1, float* y,
                           int64_t ldy);
// The same numbers in plain loops, the float part in double (any CPU, any bits 4..10).
void vq4_gemv_q8_reference(const Vq4Q8MatrixView& m, const Vq4Q8Activations& x, int64_t r0, int64_t r1, float* y);

// ---- NU, one token at a time: the same scheme with the levels in 8 bits (cq = round(level *
// 127 / max |level|) + 128), activations in natural column order, one scale per block of 128
// columns:  y_r = cs * sum_b s_{r, g(b)} * d_b * (bias_b + sum_{c in b} cq[idx_r(c)] * xq[c]).
struct Q8Blocks {
  int64_t cols = 0;
  std::vector<int8_t> xq;     // [cols]
  std::vector<float> d;       // [cols / 128]
  std::vector<int32_t> bias;  // [cols / 128][16]: -128 * the block's sum of xq in lane 0, zeros
};
// cols must be a multiple of 128.
void quantize_blocks128(const float* x, int64_t cols, Q8Blocks& out);

struct NuQ8MatrixView {
  NuMatrixView w;
  const uint8_t* levels = nullptr;  // [16]: cq[k] for k < 2^bits, then 128
  float cs = 0;
};
// out16: 16 bytes. Returns the levels' scale cs.
float nu_levels_u8(const float* levels, int bits, uint8_t* out16);
// The CPU and target conditions of vq4_q8_usable and GFNI; 2 to 4 bits, columns and groups
// multiples of 128.
bool nu_q8_usable(const NuMatrixView& w);
void nu_gemv_q8(const NuQ8MatrixView& m, const Q8Blocks& x, int64_t r0, int64_t r1, float* y);
void nu_gemv_q8_reference(const NuQ8MatrixView& m, const Q8Blocks& x, int64_t r0, int64_t r1, float* y);

}  // namespace lsb::kernels
