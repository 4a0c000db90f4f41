#include "kernels/packed_linear.h"

#include <algorithm>
#include <bit>

#include "kernels/dense.h"
#include "lsb/error.h"

namespace lsb::kernels {
namespace {

constexpr int64_t kRowBlock = 64;    // rows per work item (a multiple of the 4-row tiles)
constexpr int64_t kTokenBlock = 64;  // tokens per pass over a row block: x block stays in L2

quant::SchemeParams params_of(const TensorInfo& info) {
  return quant::SchemeParams{info.outlier_ratio, info.group_size, info.use_mean};
}

std::string tensor_where(const std::string& where, const TensorInfo& info) {
  return where + ": tensor '" + info.name + "'";
}

// Splits rows across the OpenMP team and tokens into L2-sized blocks; `fn(x, nt, y, r0, r1)`
// computes y[t * rows + r] for its tokens and rows.
template <class Fn>
void for_blocks(int64_t rows, int64_t cols, const float* x, int64_t n, float* y, Fn&& fn) {
  const int64_t nblocks = (rows + kRowBlock - 1) / kRowBlock;
  if (n == 1) {
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nblocks; ++b) fn(int64_t{0}, int64_t{1}, b * kRowBlock, std::min(rows, (b + 1) * kRowBlock));
    return;
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t b = 0; b < nblocks; ++b)
    for (int64_t t = 0; t < n; t += kTokenBlock)
      fn(t, std::min(kTokenBlock, n - t), b * kRowBlock, std::min(rows, (b + 1) * kRowBlock));
}

}  // namespace

void group_sums(const float* x, int64_t n, int64_t cols, int64_t group, int64_t ngroups, float* gsum) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t g = 0; g < ngroups; ++g) {
      const int64_t a = g * group, b = std::min(cols, a + group);
      // Four independent double chains (one chain is add-latency bound); still exact enough.
      const float* xt = x + t * cols;
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t c = a;
      for (; c + 4 <= b; c += 4) {
        s0 += xt[c];
        s1 += xt[c + 1];
        s2 += xt[c + 2];
        s3 += xt[c + 3];
      }
      for (; c < b; ++c) s0 += xt[c];
      gsum[t * ngroups + g] = static_cast<float>((s0 + s1) + (s2 + s3));
    }
}

size_t sign_lut_floats(int64_t cols, int64_t n) { return static_cast<size_t>(n * ((cols + 3) / 4) * 16); }

void build_sign_luts(const float* x, int64_t n, int64_t cols, float* luts) {
  const int64_t nk = (cols + 3) / 4;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t k = 0; k < nk; ++k) {
      float xv[4];
      for (int i = 0; i < 4; ++i) xv[i] = 4 * k + i < cols ? x[t * cols + 4 * k + i] : 0.0f;
      float* e = luts + (t * nk + k) * 16;
      e[0] = 0.0f;
      // Entry for bit pattern `nib` = entry without its lowest set bit + that bit's activation.
      for (unsigned nib = 1; nib < 16; ++nib) e[nib] = e[nib & (nib - 1)] + xv[std::countr_zero(nib)];
    }
}

// ---------------------------------------------------------------- SignLinear
SignLinear::SignLinear(const TensorInfo& info, std::span<const std::byte> blob, const std::string& where,
                       const LinearLoad& load)
    : Linear(info.name, info.rows(), info.cols()),
      blob_bytes_(blob.size()),
      col16_(load.arena),
      col32_(load.arena),
      corr_(load.arena),
      fscale_(load.arena),
      fzero_(load.arena),
      pv_(parse_blob(info, blob, where, load)) {
  const int64_t R = rows(), C = cols();
  m_.rows = R;
  m_.cols = C;
  m_.words = pv_.words;
  m_.signs = pv_.signs;
  // Float coefficients per row and group (4 bytes instead of the blob's 2): the kernels then
  // neither convert f16 nor allocate per call.
  std::vector<float> fmean;  // m_g as float (LSB1 with means)
  if (info.dtype == DType::PAPER) {
    m_.group = C;
    m_.ngroups = 1;
    fscale_.assign(static_cast<size_t>(R), pv_.sigma);
    if (pv_.mu != 0.0f) fzero_.assign(static_cast<size_t>(R), pv_.mu - pv_.sigma);
  } else {
    m_.group = pv_.params.group_size == 0 ? C : std::min<int64_t>(pv_.params.group_size, C);
    m_.ngroups = pv_.ngroups;
    const size_t ncoef = static_cast<size_t>(R) * static_cast<size_t>(m_.ngroups);
    fscale_.resize(ncoef);
    rows_to_f32(DType::F16, pv_.scales, static_cast<int64_t>(ncoef), 0, 1, fscale_.data());
    if (pv_.means) {
      fmean.resize(ncoef);
      rows_to_f32(DType::F16, pv_.means, static_cast<int64_t>(ncoef), 0, 1, fmean.data());
      fzero_.resize(ncoef);
      for (size_t i = 0; i < ncoef; ++i) fzero_[i] = fmean[i] - fscale_[i];
    }
  }
  m_.fscale = fscale_.data();
  m_.fzero = fzero_.empty() ? nullptr : fzero_.data();
  // Outliers (columns already stored by parse_blob): corrections v - (m + s), the difference
  // between the exact value and what the sign part counts for it (bit 1: m + s, from the f16
  // values as the reference does).
  const uint64_t total = pv_.row_value_start[R];
  const bool narrow = !col16_.empty();
  // First hi = m + s of each outlier's group, then corr = v - hi over the whole array in chunks
  // (the f16 values converted with the SIMD converter, the subtraction vectorised).
  if (info.dtype == DType::PAPER) {
    std::fill_n(corr_.begin(), total, pv_.mu + pv_.sigma);
  } else {
    // Group of a column: a shift for power-of-two groups (the usual 128), else a division; a
    // loop advancing the group along the row mispredicted a branch per outlier and was slower.
    const bool pow2 = std::has_single_bit(static_cast<uint64_t>(m_.group));
    const int shift = std::countr_zero(static_cast<uint64_t>(m_.group));
    for (int64_t r = 0; r < R; ++r) {
      const float* s = fscale_.data() + r * m_.ngroups;
      const float* m = fmean.empty() ? nullptr : fmean.data() + r * m_.ngroups;
      for (uint64_t k = pv_.row_value_start[r]; k < pv_.row_value_start[r + 1]; ++k) {
        const int64_t c = narrow ? col16_[k] : col32_[k];
        const int64_t g = pow2 ? c >> shift : c / m_.group;
        corr_[k] = (m ? m[g] : 0.0f) + s[g];
      }
    }
  }
  constexpr uint64_t kChunk = 1024;
  float v[kChunk];
  for (uint64_t k0 = 0; k0 < total; k0 += kChunk) {
    const uint64_t n = std::min(kChunk, total - k0);
    rows_to_f32(DType::F16, pv_.values + k0, static_cast<int64_t>(n), 0, 1, v);
    float* hi = corr_.data() + k0;
    for (uint64_t i = 0; i < n; ++i) hi[i] = v[i] - hi[i];
  }
  m_.out_start = pv_.row_value_start.data();
  m_.out_col16 = narrow ? col16_.data() : nullptr;
  m_.out_col32 = narrow ? nullptr : col32_.data();
  m_.out_corr = corr_.data();
}

quant::PackedView SignLinear::parse_blob(const TensorInfo& info, std::span<const std::byte> blob,
                                        const std::string& where, const LinearLoad& load) {
  if (info.dtype != DType::LSB1 && info.dtype != DType::PAPER)
    fail(where, "tensor '{}': {} is not a sign-bit scheme", info.name, dtype_name(info.dtype));
  // Outlier columns go straight into the kernel's arrays (u16 where they fit) as parse decodes
  // them; the arrays have kOutlierPad zero entries past the end for the kernels' vector loads.
  const bool narrow = info.cols() <= 65536;
  quant::PackedView::OutlierSink sink;
  sink.reserve = [&](uint64_t total) {
    if (narrow) col16_.resize(total + kOutlierPad);
    else col32_.resize(total + kOutlierPad);
    corr_.resize(total + kOutlierPad);
  };
  sink.row = [&](int64_t, uint64_t first, const uint32_t* columns, uint32_t count) {
    if (narrow) std::copy(columns, columns + count, col16_.begin() + static_cast<ptrdiff_t>(first));
    else std::copy(columns, columns + count, col32_.begin() + static_cast<ptrdiff_t>(first));
  };
  return quant::PackedView::parse(info.dtype, blob, info.rows(), info.cols(), params_of(info),
                                  tensor_where(where, info), &sink, load.arena, load.check_content);
}

void SignLinear::forward(const float* x, int64_t n, float* y) const { forward_with(x, n, y, SignKernel::kMaskedAdd); }

void SignLinear::forward_with(const float* x, int64_t n, float* y, SignKernel variant) const {
  const int64_t R = rows(), C = cols();
  // Decode needs a few group sums: keep them on the stack (no allocation per call).
  constexpr int64_t kStackSums = 512;
  float gsum_stack[kStackSums];
  std::vector<float> gsum_heap;
  const int64_t nsums = n * m_.ngroups;
  if (nsums > kStackSums) gsum_heap.resize(static_cast<size_t>(nsums));
  float* const gs = nsums > kStackSums ? gsum_heap.data() : gsum_stack;
  group_sums(x, n, C, m_.group, m_.ngroups, gs);
  if (variant == SignKernel::kLut) {
    std::vector<float> luts(sign_lut_floats(C, n));
    build_sign_luts(x, n, C, luts.data());
    const int64_t lut_stride = static_cast<int64_t>(sign_lut_floats(C, 1));
    for_blocks(R, C, x, n, y, [&](int64_t t, int64_t nt, int64_t r0, int64_t r1) {
      sign_gemm_lut(m_, luts.data() + t * lut_stride, nt, x + t * C, gs + t * m_.ngroups, r0, r1,
                    y + t * R, R);
    });
    return;
  }
  for_blocks(R, C, x, n, y, [&](int64_t t, int64_t nt, int64_t r0, int64_t r1) {
    sign_gemm(m_, x + t * C, nt, gs + t * m_.ngroups, r0, r1, y + t * R, R, variant);
  });
}

void SignLinear::row(int64_t r, float* out) const { pv_.dequantize_row(r, out); }

uint64_t SignLinear::weight_bytes() const {
  const uint64_t R = static_cast<uint64_t>(rows());
  // Signs in place + everything repacked (float coefficients replace the f16 scales/means).
  return R * static_cast<uint64_t>(m_.words) * 8 + repacked_bytes();
}

uint64_t SignLinear::repacked_bytes() const {
  return col16_.size() * 2 + col32_.size() * 4 + corr_.size() * 4 + pv_.row_value_start.size() * 8 +
         pv_.row_gap_start.size() * 8 + (fscale_.size() + fzero_.size()) * 4;
}

std::string SignLinear::kind() const { return std::string(dtype_name(pv_.dtype)); }

// ---------------------------------------------------------------- Q8Linear
Q8Linear::Q8Linear(const TensorInfo& info, std::span<const std::byte> blob, const std::string& where,
                   const LinearLoad& load)
    : Linear(info.name, info.rows(), info.cols()) {
  if (info.dtype != DType::Q8) fail(where, "tensor '{}': {} is not q8", info.name, dtype_name(info.dtype));
  pv_ = quant::PackedView::parse(info.dtype, blob, rows(), cols(), params_of(info), tensor_where(where, info), nullptr,
                                 std::pmr::get_default_resource(), load.check_content);
  m_.rows = rows();
  m_.cols = cols();
  m_.scales = pv_.q8_scales;
  m_.q = pv_.q8;
}

void Q8Linear::forward(const float* x, int64_t n, float* y) const {
  const int64_t R = rows(), C = cols();
  for_blocks(R, C, x, n, y, [&](int64_t t, int64_t nt, int64_t r0, int64_t r1) {
    q8_gemm(m_, x + t * C, nt, r0, r1, y + t * R, R);
  });
}

void Q8Linear::row(int64_t r, float* out) const { pv_.dequantize_row(r, out); }

uint64_t Q8Linear::weight_bytes() const {
  return static_cast<uint64_t>(rows()) * 4 + static_cast<uint64_t>(rows() * cols());
}

}  // namespace lsb::kernels
