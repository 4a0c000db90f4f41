#include "quant/gptq.h"

#include <algorithm>
#include <cmath>

#include <Eigen/Dense>

#include "base/error.h"

namespace lsb::quant {
namespace {

using RowMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMajorD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Rows per parallel work item: every row's computation is independent of the others, and the
// chunks are fixed whatever the thread count, so the bytes are too.
constexpr int64_t kRowChunk = 16;

bool has_gram(const InputStats* s, int64_t cols) { return s && s->full() && s->cols == cols; }

void check_stats(const InputStats* s, int64_t cols) {
  if (s && s->cols != cols) fail("gptq", "statistics of {} columns for a matrix of {} columns", s->cols, cols);
}

// The upper Cholesky factor U of (H + λ mean(diag H) I)⁻¹, in double. Columns that never saw an
// input (H_jj = 0) get H_jj = 1: their weights are free, and they must not break the factor.
// A factorisation that fails (a nearly singular H) is retried with ten times the damping.
RowMajorD inverse_cholesky_upper(const InputStats& s, double damp, std::vector<char>& dead) {
  const int64_t n = s.cols;
  RowMajorD h = Eigen::Map<const RowMajorD>(s.gram.data(), n, n);
  double mean_diag = 0;
  dead.assign(static_cast<size_t>(n), 0);
  for (int64_t j = 0; j < n; ++j) {
    if (h(j, j) <= 0) {
      dead[j] = 1;
      h.row(j).setZero();
      h.col(j).setZero();
      h(j, j) = 1;
    }
    mean_diag += h(j, j);
  }
  mean_diag /= static_cast<double>(n);
  for (int attempt = 0; attempt < 4; ++attempt, damp *= 10) {
    RowMajorD hd = h;
    hd.diagonal().array() += damp * mean_diag;
    Eigen::LLT<RowMajorD> llt(hd);
    if (llt.info() != Eigen::Success) continue;
    RowMajorD inv = llt.solve(RowMajorD::Identity(n, n));
    inv = (0.5 * (inv + inv.transpose())).eval();
    Eigen::LLT<RowMajorD> llt2(inv);
    if (llt2.info() != Eigen::Success) continue;
    return RowMajorD(llt2.matrixU());
  }
  fail("gptq", "the input statistics of a {}-column matrix are not positive definite even with damping", n);
}

// tr(D H Dᵀ) / tr(W H Wᵀ) over the given rows, in double; without H, the diagonal (or 1).
void error_terms(const float* w, const float* q, int64_t rows, int64_t cols, const InputStats* stats,
                 double& num, double& den) {
  num = den = 0;
  const bool full = has_gram(stats, cols);
  std::vector<double> d(static_cast<size_t>(cols)), hd(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float* wr = w + r * cols;
    const float* qr = q + r * cols;
    for (int64_t j = 0; j < cols; ++j) d[j] = static_cast<double>(wr[j]) - qr[j];
    if (full) {
      const Eigen::Map<const RowMajorD> h(stats->gram.data(), cols, cols);
      const Eigen::Map<const Eigen::VectorXd> dv(d.data(), cols);
      Eigen::VectorXd wv(cols);
      for (int64_t j = 0; j < cols; ++j) wv[j] = wr[j];
      num += dv.dot(h * dv);
      den += wv.dot(h * wv);
    } else {
      for (int64_t j = 0; j < cols; ++j) {
        const double hj = stats ? stats->diag[j] : 1.0;
        num += hj * d[j] * d[j];
        den += hj * static_cast<double>(wr[j]) * wr[j];
      }
    }
  }
}

// Plain rounding of one row: each group fitted on the weights themselves, every vector rounded.
void round_row(const float* w, int64_t cols, const float* imp, const GroupCoder& coder, uint32_t* index,
               GroupFit* fits, float* q) {
  const int64_t G = coder.group();
  const int vd = coder.vec_dim();
  for (int64_t g0 = 0, g = 0; g0 < cols; g0 += G, ++g) {
    const int64_t n = std::min(G, cols - g0);
    fits[g] = coder.fit(w + g0, imp + g0, n);
    for (int64_t i = g0; i < g0 + n; i += vd) index[i / vd] = coder.round(fits[g], w + i, imp + i, q + i);
  }
}

void check_shape(int64_t cols, const GroupCoder& coder) {
  if (coder.group() % coder.vec_dim() != 0 || cols % coder.vec_dim() != 0)
    fail("gptq", "{} columns and groups of {} do not divide into vectors of {}", cols, coder.group(), coder.vec_dim());
}

}  // namespace

std::vector<float> column_importance(const InputStats* stats, int64_t cols) {
  std::vector<float> imp(static_cast<size_t>(cols), 1.0f);
  if (stats && stats->cols == cols)
    for (int64_t j = 0; j < cols; ++j) imp[j] = static_cast<float>(stats->diag[j]);
  return imp;
}

GptqResult gptq(const float* w, int64_t rows, int64_t cols, const InputStats* stats, const GroupCoder& coder,
                const GptqOptions& opt) {
  check_stats(stats, cols);
  check_shape(cols, coder);
  const int64_t G = coder.group(), ngroups = (cols + G - 1) / G;
  const int vd = coder.vec_dim();
  GptqResult res;
  res.index.assign(static_cast<size_t>(rows * (cols / vd)), 0);
  res.fits.assign(static_cast<size_t>(rows * ngroups), {});
  const std::vector<float> imp = column_importance(stats, cols);
  const int64_t nchunks = (rows + kRowChunk - 1) / kRowChunk;
  std::vector<double> num(static_cast<size_t>(nchunks)), den(static_cast<size_t>(nchunks));

  if (!has_gram(stats, cols)) {
#pragma omp parallel
    {
      std::vector<float> q(static_cast<size_t>(kRowChunk * cols));
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t r0 = c * kRowChunk, r1 = std::min(rows, r0 + kRowChunk);
        for (int64_t r = r0; r < r1; ++r)
          round_row(w + r * cols, cols, imp.data(), coder, res.index.data() + r * (cols / vd),
                    res.fits.data() + r * ngroups, q.data() + (r - r0) * cols);
        error_terms(w + r0 * cols, q.data(), r1 - r0, cols, stats, num[c], den[c]);
      }
    }
  } else {
    std::vector<char> dead;
    const RowMajorF U = inverse_cholesky_upper(*stats, opt.damp, dead).cast<float>();
    const int64_t block = (std::max<int64_t>(opt.block, G) + G - 1) / G * G;
#pragma omp parallel
    {
      RowMajorF W(kRowChunk, cols), E(kRowChunk, block);
      std::vector<float> q(static_cast<size_t>(kRowChunk * cols)), qv(static_cast<size_t>(vd));
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t r0 = c * kRowChunk, r1 = std::min(rows, r0 + kRowChunk), nr = r1 - r0;
        for (int64_t r = 0; r < nr; ++r)
          for (int64_t j = 0; j < cols; ++j) W(r, j) = dead[j] ? 0.0f : w[(r0 + r) * cols + j];
        for (int64_t i1 = 0; i1 < cols; i1 += block) {
          const int64_t i2 = std::min(cols, i1 + block), bw = i2 - i1;
          for (int64_t r = 0; r < nr; ++r) {
            float* wr = &W(r, 0);
            uint32_t* index = res.index.data() + (r0 + r) * (cols / vd);
            GroupFit* fits = res.fits.data() + (r0 + r) * ngroups;
            float* qr = q.data() + r * cols;
            for (int64_t i = i1; i < i2; ++i) {
              if (i % G == 0) fits[i / G] = coder.fit(wr + i, imp.data() + i, std::min(G, cols - i));
              // A vector is decided at its first column; its later columns have received the
              // updates of the columns before the vector only.
              if (i % vd == 0) index[i / vd] = coder.round(fits[i / G], wr + i, imp.data() + i, qr + i);
              const float e = (wr[i] - qr[i]) / U(i, i);
              E(r, i - i1) = e;
              const float* u = &U(i, 0);
              for (int64_t j = i + 1; j < i2; ++j) wr[j] -= e * u[j];
            }
          }
          if (i2 < cols)
            W.topRightCorner(nr, cols - i2).noalias() -= E.topLeftCorner(nr, bw) * U.block(i1, i2, bw, cols - i2);
        }
        error_terms(w + r0 * cols, q.data(), nr, cols, stats, num[c], den[c]);
      }
    }
  }
  double n = 0, d = 0;
  for (int64_t c = 0; c < nchunks; ++c) {
    n += num[c];
    d += den[c];
  }
  res.rel_error = d > 0 ? n / d : 0.0;
  return res;
}

GptqResult gptq_reference(const float* w, int64_t rows, int64_t cols, const InputStats* stats,
                          const GroupCoder& coder, const GptqOptions& opt) {
  check_stats(stats, cols);
  check_shape(cols, coder);
  const int64_t G = coder.group(), ngroups = (cols + G - 1) / G;
  const int vd = coder.vec_dim();
  GptqResult res;
  res.index.assign(static_cast<size_t>(rows * (cols / vd)), 0);
  res.fits.assign(static_cast<size_t>(rows * ngroups), {});
  const std::vector<float> imp = column_importance(stats, cols);
  std::vector<float> q(static_cast<size_t>(rows * cols));
  if (!has_gram(stats, cols)) {
    for (int64_t r = 0; r < rows; ++r)
      round_row(w + r * cols, cols, imp.data(), coder, res.index.data() + r * (cols / vd),
                res.fits.data() + r * ngroups, q.data() + r * cols);
  } else {
    std::vector<char> dead;
    const RowMajorD U = inverse_cholesky_upper(*stats, opt.damp, dead);
    std::vector<double> wd(static_cast<size_t>(cols));
    std::vector<float> wf(static_cast<size_t>(vd > 0 ? G : 1));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < cols; ++j) wd[j] = dead[j] ? 0.0 : w[r * cols + j];
      float* qr = q.data() + r * cols;
      for (int64_t i = 0; i < cols; ++i) {
        if (i % G == 0) {
          const int64_t n = std::min(G, cols - i);
          for (int64_t k = 0; k < n; ++k) wf[k] = static_cast<float>(wd[i + k]);
          res.fits[r * ngroups + i / G] = coder.fit(wf.data(), imp.data() + i, n);
        }
        if (i % vd == 0) {
          float cur[16];
          for (int k = 0; k < vd; ++k) cur[k] = static_cast<float>(wd[i + k]);
          res.index[r * (cols / vd) + i / vd] = coder.round(res.fits[r * ngroups + i / G], cur, imp.data() + i, qr + i);
        }
        const double e = (wd[i] - qr[i]) / U(i, i);
        for (int64_t j = i + 1; j < cols; ++j) wd[j] -= e * U(i, j);
      }
    }
  }
  double n = 0, d = 0;
  error_terms(w, q.data(), rows, cols, stats, n, d);
  res.rel_error = d > 0 ? n / d : 0.0;
  return res;
}

}  // namespace lsb::quant
