// Hessian-aware rounding (quant/gptq.h) and the calibrated schemes built on it (NU, VQ4).
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include <cblas.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "quant/gptq.h"
#include "quant/metrics.h"
#include "quant/nu.h"
#include "quant/scheme.h"
#include "quant/stats.h"
#include "quant/vq4.h"
#include "base/fp16.h"

#include <hwy/targets.h>

namespace q = lsb::quant;
using lsb::DType;

namespace {

// Inputs with strongly correlated columns (a few latent factors plus noise, columns of very
// different scales), as activations are: where error feedback pays.
std::vector<float> correlated_inputs(int64_t n, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  constexpr int kFactors = 8;
  std::vector<float> mix(static_cast<size_t>(kFactors * cols)), scale(static_cast<size_t>(cols));
  for (float& v : mix) v = d(rng);
  for (int64_t j = 0; j < cols; ++j) scale[j] = 0.2f + 3.0f * std::fabs(d(rng));
  std::vector<float> x(static_cast<size_t>(n * cols));
  for (int64_t t = 0; t < n; ++t) {
    float f[kFactors];
    for (float& v : f) v = d(rng);
    for (int64_t j = 0; j < cols; ++j) {
      float v = 0.3f * d(rng);
      for (int k = 0; k < kFactors; ++k) v += f[k] * mix[k * cols + j];
      x[t * cols + j] = v * scale[j];
    }
  }
  return x;
}

std::vector<float> weights(int64_t rows, int64_t cols, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.02f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (float& v : w) v = d(rng);
  return w;
}

// Sum over the inputs of ||(W - Q) x||^2: the output error the rounding should keep small.
double output_error(const std::vector<float>& w, const std::vector<float>& qw, const std::vector<float>& x,
                    int64_t rows, int64_t cols) {
  const int64_t n = static_cast<int64_t>(x.size()) / cols;
  double e = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < n; ++t) {
      double y = 0;
      for (int64_t j = 0; j < cols; ++j) y += (static_cast<double>(w[r * cols + j]) - qw[r * cols + j]) * x[t * cols + j];
      e += y * y;
    }
  return e;
}

struct Case {
  DType dtype;
  int bits, group;
};
const Case kCases[] = {{DType::NU, 2, 32}, {DType::NU, 3, 64}, {DType::VQ4, 6, 32}, {DType::VQ4, 8, 64}};

std::string params(const Case& c) {
  q::SchemeOptions o;
  o.bits = c.bits;
  o.group_size = c.group;
  return q::make_params(c.dtype, o, "test");
}

std::vector<float> roundtrip(const Case& c, const std::vector<float>& w, int64_t rows, int64_t cols,
                             const q::InputStats* stats, bool reference = false) {
  const std::string text = params(c);  // QuantizeArgs holds a view: keep the text alive
  const q::QuantizeArgs a{.w = w.data(), .rows = rows, .cols = cols, .params = text, .stats = stats};
  const auto blob = reference ? q::quantize_reference(c.dtype, a) : q::quantize(c.dtype, a);
  std::vector<float> out(w.size());
  q::dequantize(c.dtype, blob, rows, cols, params(c), out.data());
  return out;
}

}  // namespace

TEST(Gptq, StatisticsLowerTheOutputError) {
  constexpr int64_t rows = 48, cols = 128;
  const auto w = weights(rows, cols, 1);
  const auto x = correlated_inputs(512, cols, 2);
  q::InputStats full(cols, true), diag(cols, false);
  full.add(x.data(), 512);
  diag.add(x.data(), 512);
  for (const Case& c : kCases) {
    SCOPED_TRACE(params(c));
    const double plain = output_error(w, roundtrip(c, w, rows, cols, nullptr), x, rows, cols);
    const double weighted = output_error(w, roundtrip(c, w, rows, cols, &diag), x, rows, cols);
    const double gptq = output_error(w, roundtrip(c, w, rows, cols, &full), x, rows, cols);
    EXPECT_LT(gptq, 0.85 * plain);
    EXPECT_LT(gptq, weighted);
  }
}

TEST(Gptq, FastAgreesWithTheReference) {
  constexpr int64_t rows = 24, cols = 96;
  const auto w = weights(rows, cols, 3);
  const auto x = correlated_inputs(300, cols, 4);
  q::InputStats stats(cols, true);
  stats.add(x.data(), 300);
  for (const Case& c : kCases) {
    SCOPED_TRACE(params(c));
    const auto fast = roundtrip(c, w, rows, cols, &stats);
    const auto ref = roundtrip(c, w, rows, cols, &stats, /*reference=*/true);
    const double ef = output_error(w, fast, x, rows, cols), er = output_error(w, ref, x, rows, cols);
    EXPECT_NEAR(ef, er, 0.05 * er);
    // Float (fast) and double (reference) arithmetic round a few weights differently, no more.
    int same = 0;
    for (size_t i = 0; i < fast.size(); ++i) same += fast[i] == ref[i];
    EXPECT_GT(same, static_cast<int>(0.9 * fast.size()));
    // Without statistics both are plain rounding, byte for byte the same.
    EXPECT_EQ(roundtrip(c, w, rows, cols, nullptr), roundtrip(c, w, rows, cols, nullptr, true));
  }
}

TEST(Gptq, BytesDoNotDependOnTheThreadCount) {
  constexpr int64_t rows = 70, cols = 128;
  const auto w = weights(rows, cols, 5);
  const auto x = correlated_inputs(256, cols, 6);
  q::InputStats stats(cols, true);
  stats.add(x.data(), 256);
  const int saved = omp_get_max_threads();
  for (const Case& c : kCases) {
    const std::string text = params(c);
    const q::QuantizeArgs a{.w = w.data(), .rows = rows, .cols = cols, .params = text, .stats = &stats};
    omp_set_num_threads(1);
    const auto one = q::quantize(c.dtype, a);
    omp_set_num_threads(2);
    const auto two = q::quantize(c.dtype, a);
    EXPECT_EQ(one, two) << params(c);
  }
  omp_set_num_threads(saved);
}

// GPTQ's lazy updates and the output error call OpenBLAS from every thread of a team at once.
// Debian's serial OpenBLAS is not safe for that (its buffer pool has no lock): two threads
// running these products returned 2-10 wrong ones of 40000; the OpenMP build the project links
// returned none. Every concurrent product must equal the single-threaded one, bit for bit.
TEST(Blas, ConcurrentProductsAreExact) {
  constexpr int M = 16, N = 400, K = 128, kIters = 20000;
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> a(M * K), b(K * N), want(M * N);
  for (float& v : a) v = nd(rng);
  for (float& v : b) v = nd(rng);
  // The reference from one thread of a team (OpenBLAS runs single-threaded inside a parallel region).
#pragma omp parallel num_threads(2)
#pragma omp single
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a.data(), K, b.data(), N, 0.0f, want.data(), N);
  long wrong = 0, runs = 0;
#pragma omp parallel num_threads(2) reduction(+ : wrong, runs)
  {
    std::vector<float> c(M * N);
    for (int it = 0; it < kIters; ++it) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a.data(), K, b.data(), N, 0.0f, c.data(), N);
      wrong += std::memcmp(c.data(), want.data(), c.size() * sizeof(float)) != 0;
      ++runs;
    }
  }
  EXPECT_GE(runs, kIters);
  EXPECT_EQ(wrong, 0) << "of " << runs << " products";
}

// Columns that never saw an input and statistics of fewer tokens than columns (a singular H)
// still quantize: dead columns are free, damping makes H invertible.
TEST(Gptq, DeadColumnsAndSingularStatistics) {
  constexpr int64_t rows = 16, cols = 64;
  const auto w = weights(rows, cols, 7);
  auto x = correlated_inputs(20, cols, 8);  // 20 tokens < 64 columns
  for (int64_t t = 0; t < 20; ++t) x[t * cols + 5] = 0.0f;
  q::InputStats stats(cols, true);
  stats.add(x.data(), 20);
  for (const Case& c : kCases) {
    const auto out = roundtrip(c, w, rows, cols, &stats);
    for (float v : out) ASSERT_TRUE(std::isfinite(v));
  }
  q::InputStats wrong(cols + 4, true);
  EXPECT_THROW(q::quantize(DType::NU, {.w = w.data(), .rows = rows, .cols = cols, .params = params(kCases[0]),
                                       .stats = &wrong}),
               lsb::Error);
}

TEST(Nu, LevelsAndReconstruction) {
  constexpr int64_t rows = 20, cols = 96;
  const auto w = weights(rows, cols, 9);
  const std::vector<float> ones(cols, 1.0f);
  for (int bits : {2, 3, 4}) {
    const auto lv = q::nu_learn_levels(w.data(), rows, cols, 1 << bits, 32, ones.data());
    ASSERT_EQ(lv.size(), size_t{1} << bits);
    for (size_t k = 1; k < lv.size(); ++k) EXPECT_LT(lv[k - 1], lv[k]);
    const Case c{DType::NU, bits, 32};
    const auto blob = q::quantize(DType::NU, {.w = w.data(), .rows = rows, .cols = cols, .params = params(c)});
    const auto v = q::NuView::parse(blob, rows, cols, params(c), {});
    std::vector<float> row(cols);
    for (int64_t r = 0; r < rows; ++r) {
      v.dequantize_row(r, row.data());
      for (int64_t j = 0; j < cols; ++j)
        EXPECT_EQ(row[j], lsb::f16_to_f32(v.scales[r * v.ngroups + j / 32]) * v.levels[v.index(r, j)]);
    }
    // More levels, less error.
    if (bits > 2) {
      const double e_more = output_error(w, roundtrip(c, w, rows, cols, nullptr), std::vector<float>(cols, 1.0f), rows, cols);
      const double e_less =
          output_error(w, roundtrip({DType::NU, bits - 1, 32}, w, rows, cols, nullptr), std::vector<float>(cols, 1.0f), rows, cols);
      EXPECT_LT(e_more, e_less);
    }
  }
}

TEST(Vq4, CodebookAndReconstruction) {
  constexpr int64_t rows = 40, cols = 128;
  const auto w = weights(rows, cols, 10);
  const Case c{DType::VQ4, 6, 64};
  const auto blob = q::quantize(DType::VQ4, {.w = w.data(), .rows = rows, .cols = cols, .params = params(c)});
  const auto v = q::Vq4View::parse(blob, rows, cols, params(c), {});
  std::vector<float> row(cols);
  for (int64_t r = 0; r < rows; ++r) {
    v.dequantize_row(r, row.data());
    for (int64_t j = 0; j < cols; ++j)
      EXPECT_EQ(row[j], lsb::f16_to_f32(v.scales[r * v.ngroups + j / 64]) *
                            lsb::f16_to_f32(v.codebook[v.index(r, j / 4) * 4 + j % 4]));
  }
  // Bits per weight as documented: bits/4 per weight + an f16 scale per group + the codebook.
  EXPECT_EQ(blob.size(), q::scheme(DType::VQ4).fixed_bytes(rows, cols, params(c), "t"));
  EXPECT_THROW(q::quantize(DType::VQ4, {.w = w.data(), .rows = rows, .cols = 126, .params = params(c)}), lsb::Error);
  // More bits, less error.
  const double e6 = output_error(w, roundtrip(c, w, rows, cols, nullptr), std::vector<float>(cols, 1.0f), rows, cols);
  const double e8 =
      output_error(w, roundtrip({DType::VQ4, 8, 64}, w, rows, cols, nullptr), std::vector<float>(cols, 1.0f), rows, cols);
  EXPECT_LT(e8, e6);
}

// "sym": half the codebook learned, the other half its negation (bit for bit, checked by the
// parser); the error stays near the free codebook's and below that of one bit less.
TEST(Vq4, SignSymmetricCodebook) {
  constexpr int64_t rows = 256, cols = 256;  // 32 vectors per codeword
  const auto w = weights(rows, cols, 12);
  auto rel_l2 = [&](const std::vector<float>& q) { return q::compare(w.data(), q.data(), w.size()).rel_l2; };
  q::SchemeOptions o;
  o.bits = 9;
  o.group_size = 64;
  const std::string plain = q::make_params(DType::VQ4, o, "t");
  o.sign_symmetric = true;
  const std::string sym = q::make_params(DType::VQ4, o, "t");
  EXPECT_EQ(plain, R"({"bits":9,"group":64})");  // files made before "sym" keep their parameters
  EXPECT_EQ(sym, R"({"bits":9,"group":64,"sym":true})");
  auto blob = q::quantize(DType::VQ4, {.w = w.data(), .rows = rows, .cols = cols, .params = sym});
  const auto v = q::Vq4View::parse(blob, rows, cols, sym, {});
  ASSERT_TRUE(v.sym);
  for (int64_t i = 0; i < 4 * 256; ++i) ASSERT_EQ(v.codebook[1024 + i], v.codebook[i] ^ 0x8000u) << i;
  int64_t negative = 0;  // indices that use the negated half
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols / 4; ++j) negative += v.index(r, j) >= 256;
  EXPECT_GT(negative, rows * cols / 4 / 4);
  std::vector<float> out(w.size());
  q::dequantize(DType::VQ4, blob, rows, cols, sym, out.data());
  const double e_sym = rel_l2(out), e_free = rel_l2(roundtrip({DType::VQ4, 9, 64}, w, rows, cols, nullptr));
  const double e_8 = rel_l2(roundtrip({DType::VQ4, 8, 64}, w, rows, cols, nullptr));
  std::printf("[ Vq4 ] relative L2: 9 bits sym %.4f, free %.4f; 8 bits %.4f\n", e_sym, e_free, e_8);
  EXPECT_LT(e_sym, 1.03 * e_free);
  EXPECT_LT(e_sym, 0.97 * e_8);
  // A codebook that breaks the symmetry is refused, whatever check_content says.
  auto* cb = reinterpret_cast<uint16_t*>(blob.data());
  cb[1024 + 5] ^= 1;
  EXPECT_THROW(q::Vq4View::parse(blob, rows, cols, sym, {}), lsb::Error);
  EXPECT_NO_THROW(q::Vq4View::parse(blob, rows, cols, plain, {}));
}

// The SIMD nearest-codeword search returns the scalar search's index on every compiled target,
// including exact ties (duplicated codewords), zero importances and codebooks whose size is not
// a multiple of the lanes.
TEST(Vq4, SimdNearestMatchesScalarOnEveryTarget) {
  struct Guard {
    ~Guard() { hwy::SetSupportedTargetsForTest(0); }
  } guard;
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  int checked = 0, ties = 0;
  for (int64_t entries : {int64_t{1}, int64_t{7}, int64_t{16}, int64_t{37}, int64_t{256}, int64_t{512}}) {
    std::vector<float> d[4];
    for (auto& v : d) {
      v.resize(static_cast<size_t>(entries));
      for (float& x : v) x = nd(rng);
    }
    // Every third codeword repeats an earlier one: exact ties, which go to the lower index.
    for (int64_t c = 3; c < entries; c += 3)
      for (auto& v : d) v[c] = v[c / 3];
    const q::Vq4Soa cb{d[0].data(), d[1].data(), d[2].data(), d[3].data(), entries};
    for (int trial = 0; trial < 200; ++trial) {
      float w[4], h[4];
      const int64_t pick = static_cast<int64_t>(rng() % static_cast<uint32_t>(entries));
      const float s = trial % 5 == 0 ? 1.0f : std::fabs(nd(rng)) + 0.05f;
      for (int k = 0; k < 4; ++k) {
        // Half the trials sit exactly on a (possibly duplicated) codeword.
        w[k] = trial % 2 ? s * d[k][pick] : nd(rng);
        h[k] = trial % 7 == 0 ? 0.0f : std::fabs(nd(rng));
      }
      const int want = q::vq4_nearest_scalar(cb, w, h, s);
      if (trial % 2 && pick % 3 == 0 && pick > 0) ++ties;
      for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
        hwy::SetSupportedTargetsForTest(target);
        ASSERT_STREQ(q::vq4_simd_target(), hwy::TargetName(target));
        ASSERT_EQ(q::vq4_nearest_simd(cb, w, h, s), want)
            << hwy::TargetName(target) << " entries=" << entries << " trial=" << trial;
        ++checked;
      }
    }
  }
  EXPECT_GT(checked, 1200);
  EXPECT_GT(ties, 20);
}
