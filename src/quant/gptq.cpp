#include "quant/gptq.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include <Eigen/Dense>
#include <cblas.h>

#include "base/error.h"
#include "detail/blas_threads.h"

namespace lsb::quant {
namespace {

using RowMajorF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using RowMajorD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Rows per parallel work item: every row's computation is independent of the others, and the
// chunks depend on the shape only, never on the thread count, so the bytes do not either. Wide
// matrices take more rows per chunk so that each pass over U in the lazy updates does more work.
int64_t row_chunk(int64_t cols) { return cols > 2048 ? 64 : 16; }

// LAPACK from OpenBLAS (Fortran calling convention: every argument by pointer, then the hidden
// lengths of the character arguments).
extern "C" {
void spotrf_(const char* uplo, const int* n, float* a, const int* lda, int* info, size_t);
void dpotrf_(const char* uplo, const int* n, double* a, const int* lda, int* info, size_t);
void strtri_(const char* uplo, const char* diag, const int* n, float* a, const int* lda, int* info, size_t, size_t);
void dtrtri_(const char* uplo, const char* diag, const int* n, double* a, const int* lda, int* info, size_t, size_t);
}
inline void potrf(float* a, int n, int* info) { spotrf_("U", &n, a, &n, info, 1); }
inline void potrf(double* a, int n, int* info) { dpotrf_("U", &n, a, &n, info, 1); }
inline void trtri(float* a, int n, int* info) { strtri_("U", "N", &n, a, &n, info, 1, 1); }
inline void trtri(double* a, int n, int* info) { dtrtri_("U", "N", &n, a, &n, info, 1, 1); }

bool has_gram(const InputStats* s, int64_t cols) { return s && s->full() && s->cols == cols; }

void check_stats(const InputStats* s, int64_t cols) {
  if (s && s->cols != cols) fail("gptq", "statistics of {} columns for a matrix of {} columns", s->cols, cols);
}

// The upper Cholesky factor U of (H + λ mean(diag H) I)⁻¹, in double. Columns that never saw an
// input (H_jj = 0) get H_jj = 1: their weights are free, and they must not break the factor.
// A factorisation that fails (a nearly singular H) is retried with ten times the damping.
RowMajorD inverse_cholesky_upper(const InputStats& s, double damp, std::vector<char>& dead) {
  const int64_t n = s.cols;
  RowMajorD h(n, n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) h(i, j) = s.gram_at(i, j);
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

// The same factor as inverse_cholesky_upper, in the memory of one n x n matrix (a 14336-wide
// input would need 1.6 GB per double copy). With P the reversal of the columns' order,
// P (H + λI) P = L Lᵀ gives H + λI = (P L P)(P L P)ᵀ with P L P upper, so the upper Cholesky factor
// of the inverse is (P L P)⁻¹ = P L⁻¹ P: one factorization and one triangular inverse, in place,
// then the buffer read backwards (element k of an n x n row-major matrix is (i, j), element
// n² - 1 - k is (n-1-i, n-1-j)). Double precision up to 4096 columns, float above.
template <class T>
std::vector<float> inverse_cholesky_upper_lapack(const InputStats& s, double damp, std::vector<char>& dead) {
  const int64_t n = s.cols;
  dead.assign(static_cast<size_t>(n), 0);
  double mean_diag = 0;
  for (int64_t j = 0; j < n; ++j) {
    const double d = s.gram_at(j, j);
    if (d <= 0) dead[j] = 1;
    mean_diag += d <= 0 ? 1.0 : d;
  }
  mean_diag /= static_cast<double>(n);
  std::vector<T> a(static_cast<size_t>(n * n));
  for (int attempt = 0; attempt < 4; ++attempt, damp *= 10) {
    // Row-major a = P (H + λI) P; LAPACK reads it column-major, which is its transpose: the same
    // symmetric matrix. Its upper factor (column-major) is the row-major lower factor L.
    for (int64_t i = 0; i < n; ++i) {
      const int64_t hi = n - 1 - i;
      T* row = a.data() + i * n;
      for (int64_t j = 0; j <= i; ++j) {
        const int64_t hj = n - 1 - j;
        row[j] = dead[hi] || dead[hj] ? T(0) : static_cast<T>(s.gram_at(hi, hj));
      }
      row[i] = static_cast<T>((dead[hi] ? 1.0 : static_cast<double>(s.gram_at(hi, hi))) + damp * mean_diag);
    }
    int info = 0;
    const detail::BlasOneThread one_thread;
    potrf(a.data(), static_cast<int>(n), &info);
    if (info != 0) continue;
    trtri(a.data(), static_cast<int>(n), &info);  // row-major lower triangle: L⁻¹
    if (info != 0) continue;
    std::vector<float> u;
    if constexpr (std::is_same_v<T, float>) {
      std::reverse(a.begin(), a.end());
      u = std::move(a);
    } else {
      u.assign(a.rbegin(), a.rend());
    }
    for (int64_t i = 0; i < n; ++i) std::fill(u.begin() + i * n, u.begin() + i * n + i, 0.0f);  // below the diagonal
    return u;
  }
  fail("gptq", "the input statistics of a {}-column matrix are not positive definite even with damping", n);
}

std::vector<float> factor(const InputStats& s, double damp, std::vector<char>& dead) {
  return s.cols <= 4096 ? inverse_cholesky_upper_lapack<double>(s, damp, dead)
                        : inverse_cholesky_upper_lapack<float>(s, damp, dead);
}

// tr(D H Dᵀ) and tr(W H Wᵀ) over the given rows (D = W - Q), in double; without H, the same with
// its diagonal (or 1). The reference: plain loops.
void error_terms_reference(const float* w, const float* q, int64_t rows, int64_t cols, const InputStats* stats,
                           double& num, double& den) {
  num = den = 0;
  const bool full = has_gram(stats, cols);
  std::vector<double> d(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float* wr = w + r * cols;
    for (int64_t j = 0; j < cols; ++j) d[j] = static_cast<double>(wr[j]) - q[r * cols + j];
    for (int64_t i = 0; i < cols; ++i) {
      if (!full) {
        const double hi = stats ? stats->diag[i] : 1.0;
        num += hi * d[i] * d[i];
        den += hi * static_cast<double>(wr[i]) * wr[i];
        continue;
      }
      for (int64_t j = 0; j < cols; ++j) {
        const double h = stats->gram_at(i, j);
        num += d[i] * h * d[j];
        den += static_cast<double>(wr[i]) * h * wr[j];
      }
    }
  }
}

// The same with one product [D; W] H (a symmetric multiply reading H's lower triangle).
void error_terms(const float* w, const float* q, int64_t rows, int64_t cols, const InputStats* stats,
                 double& num, double& den) {
  if (!has_gram(stats, cols)) return error_terms_reference(w, q, rows, cols, stats, num, den);
  num = den = 0;
  std::vector<float> b(static_cast<size_t>(2 * rows * cols)), t(b.size());
  for (int64_t k = 0; k < rows * cols; ++k) {
    b[k] = w[k] - q[k];
    b[rows * cols + k] = w[k];
  }
  const int n = static_cast<int>(cols);
  cblas_ssymm(CblasRowMajor, CblasRight, CblasLower, static_cast<int>(2 * rows), n, 1.0f, stats->gram.data(), n,
              b.data(), n, 0.0f, t.data(), n);
  for (int64_t k = 0; k < rows * cols; ++k) {
    num += static_cast<double>(t[k]) * b[k];
    den += static_cast<double>(t[rows * cols + k]) * b[rows * cols + k];
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

ErrorTerms output_error(const float* w, const float* q, int64_t rows, int64_t cols, const InputStats* stats) {
  check_stats(stats, cols);
  const int64_t chunk = row_chunk(cols), nchunks = (rows + chunk - 1) / chunk;
  std::vector<double> num(static_cast<size_t>(nchunks)), den(static_cast<size_t>(nchunks));
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t r0 = c * chunk, r1 = std::min(rows, r0 + chunk);
    error_terms(w + r0 * cols, q + r0 * cols, r1 - r0, cols, stats, num[c], den[c]);
  }
  ErrorTerms t;
  for (int64_t c = 0; c < nchunks; ++c) t.add({num[c], den[c]});
  return t;
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
  const int64_t chunk = row_chunk(cols), nchunks = (rows + chunk - 1) / chunk;
  std::vector<double> num(static_cast<size_t>(nchunks)), den(static_cast<size_t>(nchunks));

  if (!has_gram(stats, cols)) {
#pragma omp parallel
    {
      std::vector<float> q(static_cast<size_t>(chunk * cols));
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t r0 = c * chunk, r1 = std::min(rows, r0 + chunk);
        for (int64_t r = r0; r < r1; ++r)
          round_row(w + r * cols, cols, imp.data(), coder, res.index.data() + r * (cols / vd),
                    res.fits.data() + r * ngroups, q.data() + (r - r0) * cols);
        if (opt.measure) error_terms(w + r0 * cols, q.data(), r1 - r0, cols, stats, num[c], den[c]);
      }
    }
  } else {
    std::vector<char> dead;
    const std::vector<float> u = factor(*stats, opt.damp, dead);
    const int64_t block = (std::max<int64_t>(opt.block, G) + G - 1) / G * G;
#pragma omp parallel
    {
      RowMajorF W(chunk, cols), E(chunk, block);
      std::vector<float> q(static_cast<size_t>(chunk * cols));
#pragma omp for schedule(dynamic, 1)
      for (int64_t c = 0; c < nchunks; ++c) {
        const int64_t r0 = c * chunk, r1 = std::min(rows, r0 + chunk), nr = r1 - r0;
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
              const float* ui = u.data() + i * cols;
              const float e = (wr[i] - qr[i]) / ui[i];
              E(r, i - i1) = e;
              for (int64_t j = i + 1; j < i2; ++j) wr[j] -= e * ui[j];
            }
          }
          // W[:, i2:] -= E U[i1:i2, i2:]: the lazy update of the columns after the block.
          if (i2 < cols)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(nr), static_cast<int>(cols - i2),
                        static_cast<int>(bw), -1.0f, E.data(), static_cast<int>(block), u.data() + i1 * cols + i2,
                        static_cast<int>(cols), 1.0f, W.data() + i2, static_cast<int>(cols));
        }
        if (opt.measure) error_terms(w + r0 * cols, q.data(), nr, cols, stats, num[c], den[c]);
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
  error_terms_reference(w, q.data(), rows, cols, stats, n, d);
  res.rel_error = d > 0 ? n / d : 0.0;
  return res;
}

}  // namespace lsb::quant
