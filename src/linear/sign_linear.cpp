#include "linear/sign_linear.h"

#include <algorithm>
#include <bit>

#include "base/error.h"
#include "detail/row_blocks.h"
#include "kernels/dense.h"
#include "quant/lsb1.h"
#include "quant/paper.h"

namespace lsb {
namespace {

constexpr uint64_t kAllocSlack = 64;  // alignment one arena allocation may waste

std::string tensor_where(const std::string& where, const TensorInfo& info) {
  return where + ": tensor '" + info.name + "'";
}

}  // namespace

uint64_t SignLinear::arena_bytes(const TensorInfo& t, const BlobPeek& peek, const std::string& where) {
  const std::string tw = tensor_where(where, t);
  const int64_t rows = t.rows(), cols = t.cols();
  uint64_t counts_off = 0, ngroups = 1;
  if (t.dtype == DType::LSB1) {
    const quant::Lsb1Layout L(rows, cols, quant::Lsb1Params::parse(t.params, tw), tw);
    counts_off = L.counts;
    ngroups = static_cast<uint64_t>(L.ngroups);
  } else {
    counts_off = quant::PaperLayout(rows, cols, tw).counts;
  }
  // The exact outlier count: the sum of the per-row counts section.
  std::vector<uint16_t> counts(static_cast<size_t>(rows));
  peek(counts_off, counts.size() * 2, counts.data());
  uint64_t outliers = 0;
  for (uint16_t c : counts) outliers += c;
  const uint64_t R = static_cast<uint64_t>(rows);
  const uint64_t col_bytes = cols <= 65536 ? 2 : 4;
  const uint64_t padded = outliers + static_cast<uint64_t>(kernels::kOutlierPad);
  return 2 * ((R + 1) * 8 + kAllocSlack)                  // outlier index: value and gap starts per row
         + padded * (col_bytes + 4) + 2 * kAllocSlack     // columns and corrections
         + 2 * (R * ngroups * 4 + kAllocSlack);           // float scales and zero points
}

SignLinear::SignLinear(const TensorInfo& info, std::span<const std::byte> blob, const std::string& where,
                       const LinearLoad& load)
    : Linear(info.name, info.rows(), info.cols()),
      dtype_(info.dtype),
      col16_(load.arena),
      col32_(load.arena),
      corr_(load.arena),
      fscale_(load.arena),
      fzero_(load.arena) {
  const int64_t R = rows(), C = cols();
  const std::string tw = tensor_where(where, info);
  // Outlier columns go straight into the kernel's arrays (u16 where they fit) as the parse
  // decodes them; the arrays have kOutlierPad zero entries past the end for vector loads.
  const bool narrow = C <= 65536;
  quant::OutlierSink sink;
  sink.reserve = [&](uint64_t total) {
    if (narrow) col16_.resize(total + kernels::kOutlierPad);
    else col32_.resize(total + kernels::kOutlierPad);
    corr_.resize(total + kernels::kOutlierPad);
  };
  sink.row = [&](int64_t, uint64_t first, const uint32_t* columns, uint32_t count) {
    if (narrow) std::copy(columns, columns + count, col16_.begin() + static_cast<ptrdiff_t>(first));
    else std::copy(columns, columns + count, col32_.begin() + static_cast<ptrdiff_t>(first));
  };
  const quant::OpenArgs args{.where = tw, .check_content = load.check_content, .mr = load.arena};
  m_.rows = R;
  m_.cols = C;
  const quant::OutlierSection* out = nullptr;
  std::vector<float> fmean;  // m_g as float (LSB1 with means)
  float paper_hi = 0;        // mu + sigma (PAPER)
  // Float coefficients per row and group (4 bytes instead of the blob's 2): the kernels then
  // neither convert f16 nor allocate per call.
  if (dtype_ == DType::LSB1) {
    auto v = std::make_unique<quant::Lsb1View>(quant::Lsb1View::parse(blob, R, C, info.params, args, &sink));
    m_.words = v->words;
    m_.signs = v->signs;
    m_.group = v->group;
    m_.ngroups = v->ngroups;
    const size_t ncoef = static_cast<size_t>(R) * static_cast<size_t>(m_.ngroups);
    fscale_.resize(ncoef);
    kernels::rows_to_f32(DType::F16, v->scales, static_cast<int64_t>(ncoef), 0, 1, fscale_.data());
    if (v->means) {
      fmean.resize(ncoef);
      kernels::rows_to_f32(DType::F16, v->means, static_cast<int64_t>(ncoef), 0, 1, fmean.data());
      fzero_.resize(ncoef);
      for (size_t i = 0; i < ncoef; ++i) fzero_[i] = fmean[i] - fscale_[i];
    }
    out = &v->outliers;
    blob_view_ = std::move(v);
  } else if (dtype_ == DType::PAPER) {
    auto v = std::make_unique<quant::PaperView>(quant::PaperView::parse(blob, R, C, info.params, args, &sink));
    m_.words = v->words;
    m_.signs = v->signs;
    m_.group = C;
    m_.ngroups = 1;
    fscale_.assign(static_cast<size_t>(R), v->sigma);
    if (v->mu != 0.0f) fzero_.assign(static_cast<size_t>(R), v->mu - v->sigma);
    paper_hi = v->mu + v->sigma;
    out = &v->outliers;
    blob_view_ = std::move(v);
  } else {
    fail(tw, "{} is not a sign-bit scheme", quant::scheme_name(dtype_));
  }
  m_.fscale = fscale_.data();
  m_.fzero = fzero_.empty() ? nullptr : fzero_.data();

  // Corrections v - (m + s): the exact value minus what the sign part counts for it (bit 1: m + s).
  // First hi = m + s of each outlier's group, then corr = v - hi in chunks (the f16 values
  // converted with the SIMD converter, the subtraction vectorised).
  const uint64_t total = out->total();
  const auto& start = out->row_value_start;
  if (dtype_ == DType::PAPER) {
    std::fill_n(corr_.begin(), total, paper_hi);
  } else {
    // Group of a column: a shift for power-of-two groups (the usual 128), else a division; a
    // loop advancing the group along the row mispredicted a branch per outlier and was slower.
    const bool pow2 = std::has_single_bit(static_cast<uint64_t>(m_.group));
    const int shift = std::countr_zero(static_cast<uint64_t>(m_.group));
    for (int64_t r = 0; r < R; ++r) {
      const float* s = fscale_.data() + r * m_.ngroups;
      const float* m = fmean.empty() ? nullptr : fmean.data() + r * m_.ngroups;
      for (uint64_t k = start[r]; k < start[r + 1]; ++k) {
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
    kernels::rows_to_f32(DType::F16, out->values + k0, static_cast<int64_t>(n), 0, 1, v);
    float* hi = corr_.data() + k0;
    for (uint64_t i = 0; i < n; ++i) hi[i] = v[i] - hi[i];
  }
  out_start_ = &start;
  m_.out_start = start.data();
  m_.out_col16 = narrow ? col16_.data() : nullptr;
  m_.out_col32 = narrow ? nullptr : col32_.data();
  m_.out_corr = corr_.data();
}

void SignLinear::forward(const float* x, int64_t n, float* y) const {
  const int64_t R = rows(), C = cols();
  // Decode needs a few group sums: keep them on the stack (no allocation per call).
  constexpr int64_t kStackSums = 512;
  float gsum_stack[kStackSums];
  std::vector<float> gsum_heap;
  const int64_t nsums = n * m_.ngroups;
  if (nsums > kStackSums) gsum_heap.resize(static_cast<size_t>(nsums));
  float* const gs = nsums > kStackSums ? gsum_heap.data() : gsum_stack;
  kernels::group_sums(x, n, C, m_.group, m_.ngroups, gs);
  detail::for_row_blocks(R, n, [&](int64_t t, int64_t nt, int64_t r0, int64_t r1) {
    kernels::sign_gemm(m_, x + t * C, nt, gs + t * m_.ngroups, r0, r1, y + t * R, R);
  });
}

void SignLinear::row(int64_t r, float* out) const { blob_view_->dequantize_row(r, out); }

uint64_t SignLinear::weight_bytes() const {
  // Signs in place + everything repacked (float coefficients replace the f16 scales/means).
  return static_cast<uint64_t>(rows()) * static_cast<uint64_t>(m_.words) * 8 + repacked_bytes();
}

uint64_t SignLinear::repacked_bytes() const {
  return col16_.size() * 2 + col32_.size() * 4 + corr_.size() * 4 + 2 * out_start_->size() * 8 +
         (fscale_.size() + fzero_.size()) * 4;
}

std::string SignLinear::kind() const { return std::string(quant::scheme_name(dtype_)); }

namespace {
std::unique_ptr<Linear> make(const TensorInfo& info, std::span<const std::byte> blob, const std::string& where,
                             const LinearLoad& load) {
  return std::make_unique<SignLinear>(info, blob, where, load);
}
}  // namespace

extern const LinearOps kLsb1Linear{DType::LSB1, make, SignLinear::arena_bytes};
extern const LinearOps kPaperLinear{DType::PAPER, make, SignLinear::arena_bytes};

}  // namespace lsb
