// NU and VQ4 tensors as Linears: indices used in place, the tables and group scales converted to
// float once into the arena (kernels/packed.h). Rows are split across threads in blocks; a batch
// gives each block all its tokens, so that the block's weights are decoded once.
#include <algorithm>
#include <vector>

#include "base/error.h"
#include "detail/row_blocks.h"
#include "kernels/dense.h"
#include "kernels/packed.h"
#include "kernels/table_q8.h"
#include "linear/linear.h"
#include "quant/nu.h"
#include "quant/table_grid.h"
#include "quant/vq4.h"

namespace lsb {
namespace {

constexpr uint64_t kAllocSlack = 64;  // alignment one arena allocation may waste
constexpr int64_t kQ8GemmMinTokens = 8;  // fewer tokens: one at a time (the GEMM pads to tiles of 32)

std::pmr::vector<float> to_float(const uint16_t* f16, int64_t n, std::pmr::memory_resource* mr) {
  std::pmr::vector<float> v(static_cast<size_t>(n), mr);
  kernels::rows_to_f32(DType::F16, f16, n, 0, 1, v.data());
  return v;
}

// Tokens one at a time through an integer kernel: quantize(x_t, act) once per token, then
// gemv(act, r0, r1, y_t + r0) over blocks of rows. The activations are this thread's: a lambda
// naming a thread_local would get each OpenMP worker's own, so the workers see it by reference.
template <class Act, class Quantize, class Gemv>
void q8_tokens_one_at_a_time(const float* x, int64_t n, int64_t rows, int64_t cols, float* y, Quantize&& quantize,
                             Gemv&& gemv) {
  thread_local Act tls;
  Act& act = tls;
  for (int64_t t = 0; t < n; ++t) {
    quantize(x + t * cols, cols, act);
    detail::for_row_blocks(rows, 1, [&](int64_t, int64_t, int64_t r0, int64_t r1) { gemv(act, r0, r1, y + t * rows + r0); });
  }
}

// fn(r0, r1) for blocks of rows across the OpenMP team; each block sees every token.
template <class Fn>
void batch_row_blocks(int64_t rows, Fn&& fn) {
  const int64_t nblocks = (rows + detail::kRowBlock - 1) / detail::kRowBlock;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t b = 0; b < nblocks; ++b) fn(b * detail::kRowBlock, std::min(rows, (b + 1) * detail::kRowBlock));
}

std::string tensor_where(const std::string& where, const TensorInfo& info) {
  return where + ": tensor '" + info.name + "'";
}

class NuLinear final : public Linear {
 public:
  NuLinear(const TensorInfo& info, std::span<const std::byte> blob, const std::string& where, const LinearLoad& load)
      : Linear(info.name, info.rows(), info.cols()),
        v_(quant::NuView::parse(blob, info.rows(), info.cols(), info.params,
                                {.where = tensor_where(where, info), .check_content = load.check_content})),
        levels_(v_.levels, v_.levels + (1 << v_.bits), load.arena),
        scales_(to_float(v_.scales, v_.rows * v_.ngroups, load.arena)),
        levels_u8_(16, load.arena) {
    m_ = {v_.rows, v_.cols, v_.words, v_.group, v_.ngroups, v_.bits, levels_.data(), scales_.data(), v_.planes};
    q8_ = {m_, levels_u8_.data(), kernels::nu_levels_u8(levels_.data(), v_.bits, levels_u8_.data())};
    q8_fits_ = quant::table_fits_8_bits(levels_.data(), static_cast<int64_t>(levels_.size()));
  }
  void forward(const float* x, int64_t n, float* y) const override {
    const int64_t R = rows(), C = cols();
    if (n < kQ8GemmMinTokens && q8_fits_ && kernels::nu_q8_usable(m_)) {
      // Decoding: integer dot products on 8-bit activations (kernels/table_q8.h); prompts keep
      // the float panels.
      return q8_tokens_one_at_a_time<kernels::Q8Blocks>(
          x, n, R, C, y, kernels::quantize_blocks128,
          [&](const kernels::Q8Blocks& a, int64_t r0, int64_t r1, float* out) { kernels::nu_gemv_q8(q8_, a, r0, r1, out); });
    }
    if (n == 1) {
      detail::for_row_blocks(R, n, [&](int64_t t, int64_t nt, int64_t r0, int64_t r1) {
        kernels::nu_gemm(m_, x + t * C, nt, r0, r1, y + t * R, R);
      });
      return;
    }
    batch_row_blocks(R, [&](int64_t r0, int64_t r1) { kernels::nu_gemm(m_, x, n, r0, r1, y, R); });
  }
  void row(int64_t r, float* out) const override { v_.dequantize_row(r, out); }
  uint64_t weight_bytes() const override {
    return static_cast<uint64_t>(rows() * v_.bits * v_.words) * 8 + (levels_.size() + scales_.size()) * 4;
  }
  std::string kind() const override { return "nu"; }
  static uint64_t arena_bytes(const TensorInfo& t, const BlobPeek&, const std::string& where) {
    const quant::NuParams p = quant::NuParams::parse(t.params, tensor_where(where, t));
    const quant::NuLayout L(t.rows(), t.cols(), p, where);
    return 4ull * static_cast<uint64_t>(p.levels()) + 4ull * static_cast<uint64_t>(t.rows() * L.ngroups) + 16 +
           3 * kAllocSlack;  // float levels, float scales, the 16 byte levels
  }

 private:
  quant::NuView v_;
  std::pmr::vector<float> levels_, scales_;
  std::pmr::vector<uint8_t> levels_u8_;
  kernels::NuMatrixView m_;
  kernels::NuQ8MatrixView q8_;
  bool q8_fits_ = false;  // the levels survive 8 bits (quant::table_fits_8_bits)
};

class Vq4Linear final : public Linear {
 public:
  Vq4Linear(const TensorInfo& info, std::span<const std::byte> blob, const std::string& where, const LinearLoad& load)
      : Linear(info.name, info.rows(), info.cols()),
        v_(quant::Vq4View::parse(blob, info.rows(), info.cols(), info.params,
                                 {.where = tensor_where(where, info), .check_content = load.check_content})),
        codebook_(to_float(v_.codebook, int64_t{4} << v_.bits, load.arena)),
        scales_(to_float(v_.scales, v_.rows * v_.ngroups, load.arena)),
        planes_(static_cast<size_t>(4) << v_.bits, load.arena) {
    m_ = {v_.rows, v_.cols, v_.group, v_.ngroups, v_.row_words, v_.bits, codebook_.data(), scales_.data(), v_.codes};
    q8_ = {m_, planes_.data(), kernels::vq4_codebook_planes(codebook_.data(), v_.bits, planes_.data())};
    q8_.sign_symmetric = kernels::vq4_planes_sign_symmetric(planes_.data(), v_.bits);
    q8_fits_ = quant::table_fits_8_bits(codebook_.data(), static_cast<int64_t>(codebook_.size()));
  }
  void forward(const float* x, int64_t n, float* y) const override {
    const int64_t R = rows(), C = cols();
    if (q8_fits_ && kernels::vq4_q8_usable(m_)) {
      // Integer dot products on 8-bit activations (kernels/table_q8.h): one token at a time up to
      // a few tokens, a prompt's batch in tiles of 32 tokens (the buffer is this thread's, seen
      // by the workers through a reference).
      if (n < kQ8GemmMinTokens)
        return q8_tokens_one_at_a_time<kernels::Vq4Q8Activations>(
            x, n, R, C, y, kernels::vq4_quantize_activations,
            [&](const kernels::Vq4Q8Activations& a, int64_t r0, int64_t r1, float* out) {
              kernels::vq4_gemv_q8(q8_, a, r0, r1, out);
            });
      thread_local kernels::Vq4Q8Tokens tls;
      kernels::Vq4Q8Tokens& xq = tls;
      kernels::vq4_quantize_tokens(x, n, C, xq);
      batch_row_blocks(R, [&](int64_t r0, int64_t r1) { kernels::vq4_gemm_q8(q8_, xq, r0, r1, y, R); });
      return;
    }
    if (n == 1) {
      detail::for_row_blocks(R, n, [&](int64_t t, int64_t nt, int64_t r0, int64_t r1) {
        kernels::vq4_gemm(m_, x + t * C, nt, r0, r1, y + t * R, R);
      });
      return;
    }
    batch_row_blocks(R, [&](int64_t r0, int64_t r1) { kernels::vq4_gemm(m_, x, n, r0, r1, y, R); });
  }
  void row(int64_t r, float* out) const override { v_.dequantize_row(r, out); }
  uint64_t weight_bytes() const override {
    return static_cast<uint64_t>(rows() * v_.row_words) * 8 + (codebook_.size() + scales_.size()) * 4;
  }
  std::string kind() const override { return "vq4"; }
  static uint64_t arena_bytes(const TensorInfo& t, const BlobPeek&, const std::string& where) {
    const quant::Vq4Params p = quant::Vq4Params::parse(t.params, tensor_where(where, t));
    const quant::Vq4Layout L(t.rows(), t.cols(), p, where);
    return 20ull * static_cast<uint64_t>(p.entries()) + 4ull * static_cast<uint64_t>(t.rows() * L.ngroups) +
           3 * kAllocSlack;  // the float codebook, its 4 byte planes and the float scales
  }

 private:
  quant::Vq4View v_;
  std::pmr::vector<float> codebook_, scales_;
  std::pmr::vector<uint8_t> planes_;
  kernels::Vq4MatrixView m_;
  kernels::Vq4Q8MatrixView q8_;
  bool q8_fits_ = false;  // the codebook survives 8 bits (quant::table_fits_8_bits)
};

template <class T>
std::unique_ptr<Linear> make(const TensorInfo& info, std::span<const std::byte> blob, const std::string& where,
                             const LinearLoad& load) {
  return std::make_unique<T>(info, blob, where, load);
}

}  // namespace

extern const LinearOps kNuLinear{DType::NU, make<NuLinear>, NuLinear::arena_bytes};
extern const LinearOps kVq4Linear{DType::VQ4, make<Vq4Linear>, Vq4Linear::arena_bytes};

}  // namespace lsb
