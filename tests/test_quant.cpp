// Tests of the quantization schemes (src/quant): fast == reference bit for bit for every scheme
// and thread count, blob validation, the L2-optimal LSB1 scale, outlier selection, the PAPER
// quantile, position cost, and the error metrics.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/fp16.h"
#include "base/error.h"
#include "quant/metrics.h"
#include "quant/lsb1.h"
#include "quant/outliers.h"
#include "quant/paper.h"
#include "quant/q8.h"
#include "quant/scheme.h"
#include "test_util.h"

namespace q = lsb::quant;
using lsb::DType;

namespace {

struct Matrix {
  std::string name;
  int64_t rows = 0, cols = 0;
  std::vector<float> w;
};

Matrix gaussian(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 0.02f);
  Matrix m{"gauss", rows, cols, std::vector<float>(rows * cols)};
  for (auto& v : m.w) v = d(rng);
  return m;
}

// Student-t with 3 degrees of freedom: heavy tails like real weight matrices.
Matrix heavy_tailed(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::student_t_distribution<float> d(3.0f);
  Matrix m{"student_t3", rows, cols, std::vector<float>(rows * cols)};
  for (auto& v : m.w) v = 0.01f * d(rng);
  return m;
}

// Tiny safetensors reader for the test data (u64 header length, JSON header, data section):
// independent of the library's reader so these tests only depend on src/quant.
std::vector<Matrix> read_safetensors_matrices(const std::string& path, bool conv1d_transpose) {
  std::ifstream f(path, std::ios::binary);
  if (!f) ADD_FAILURE() << path << ": cannot open";
  f.seekg(0, std::ios::end);
  std::vector<char> bytes(f ? static_cast<size_t>(f.tellg()) : 0);
  f.seekg(0);
  f.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  std::vector<Matrix> out;
  uint64_t hlen = 0;
  if (bytes.size() < 8) return out;
  std::memcpy(&hlen, bytes.data(), 8);
  if (hlen > bytes.size() - 8) return out;
  const auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + hlen);
  const uint64_t data_start = 8 + hlen;
  for (const auto& [name, t] : header.items()) {
    if (name == "__metadata__" || t["shape"].size() != 2) continue;
    const std::string dt = t["dtype"];
    const int64_t r = t["shape"][0], c = t["shape"][1];
    const uint64_t b = t["data_offsets"][0], e = t["data_offsets"][1];
    const uint64_t esize = dt == "F32" ? 4 : 2;
    if (e < b || data_start + e > bytes.size() || e - b != static_cast<uint64_t>(r * c) * esize) {
      ADD_FAILURE() << path << ": bad offsets for " << name;
      continue;
    }
    const char* src = bytes.data() + data_start + b;
    Matrix m{name, r, c, std::vector<float>(r * c)};
    for (int64_t i = 0; i < r * c; ++i) {
      if (dt == "F32") {
        std::memcpy(&m.w[i], src + 4 * i, 4);
      } else {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        m.w[i] = dt == "BF16" ? lsb::bf16_to_f32(h) : lsb::f16_to_f32(h);
      }
    }
    if (conv1d_transpose) {  // [in, out] -> rows = out features
      Matrix t2{name, c, r, std::vector<float>(r * c)};
      for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < c; ++j) t2.w[j * r + i] = m.w[i * c + j];
      m = std::move(t2);
    }
    out.push_back(std::move(m));
  }
  return out;
}

// Read once per process: several tests use the same 12 matrices.
const std::vector<Matrix>& gpt2_matrices() {
  static const std::vector<Matrix> ms =
      read_safetensors_matrices(LSB_SHARED("models/gpt2-attn-proj/gpt2_attn_c_proj.safetensors"), true);
  EXPECT_EQ(ms.size(), 12u);
  return ms;
}


// The three knobs the tests vary; each scheme turns them into its canonical parameter text.
struct Knobs {
  float alpha = 0.02f;
  int group = 128;
  bool mean = false;
  int bits = 0;  // 0: the scheme's default
};
std::string text(DType t, const Knobs& k) {
  q::SchemeOptions o;
  o.outlier_ratio = k.alpha;
  o.group_size = k.group;
  o.use_mean = k.mean;
  if (k.bits) o.bits = k.bits;
  return q::make_params(t, o, "test");
}
// Whether a scheme can store a matrix of this many columns (vq4 needs multiples of 4).
bool fits(DType t, int64_t cols) { return t != DType::VQ4 || cols % 4 == 0; }
std::vector<std::byte> qfast(DType t, const float* w, int64_t rows, int64_t cols, const Knobs& k) {
  return q::quantize(t, {.w = w, .rows = rows, .cols = cols, .params = text(t, k)});
}
std::vector<std::byte> qref(DType t, const float* w, int64_t rows, int64_t cols, const Knobs& k) {
  return q::quantize_reference(t, {.w = w, .rows = rows, .cols = cols, .params = text(t, k)});
}
void deq(DType t, std::span<const std::byte> blob, int64_t rows, int64_t cols, const Knobs& k, float* out) {
  q::dequantize(t, blob, rows, cols, text(t, k), out);
}
// Row by row through the scheme's view, one thread: the reference of the threaded dequantize.
void deq_rows(DType t, std::span<const std::byte> blob, int64_t rows, int64_t cols, const Knobs& k, float* out) {
  const auto v = q::open_blob(t, blob, rows, cols, text(t, k), {.where = "t"});
  for (int64_t r = 0; r < rows; ++r) v->dequantize_row(r, out + r * cols);
}
// Section offsets of the sign schemes, for the corruption tests.
struct SignSections {
  uint64_t signs, counts, gaps;
  int64_t words;
};
SignSections sections(DType t, int64_t rows, int64_t cols, const Knobs& k) {
  if (t == DType::LSB1) {
    const q::Lsb1Layout L(rows, cols, q::Lsb1Params::parse(text(t, k), "t"), "t");
    return {L.signs, L.counts, L.gaps, L.words};
  }
  const q::PaperLayout L(rows, cols, "t");
  return {L.signs, L.counts, L.gaps, L.words};
}

// Parameter sets each scheme is tested with (schemes without outliers ignore them).
std::vector<Knobs> params_for(DType t) {
  if (t == DType::LSB1)
    return {Knobs{}, {0.02f, 128, false}, {0.05f, 32, true}, {0.0f, 0, false},
            {0.01f, 64, true}, {0.02f, 0, true}, {0.03f, 100, false}};
  if (t == DType::PAPER) return {Knobs{}, {0.0f, 0, false}, {0.05f, 0, false}};
  if (t == DType::NU) return {{0.0f, 128, false, 3}, {0.0f, 32, false, 2}, {0.0f, 64, false, 4}};
  if (t == DType::VQ4) return {{0.0f, 256, false, 8}, {0.0f, 64, false, 4}, {0.0f, 16, false, 6}};
  return {Knobs{}};
}

std::string describe(DType t, const Knobs& p, const Matrix& m) {
  return std::string(q::scheme(t).name) + " " + text(t, p) + " on " + m.name + " " + std::to_string(m.rows) + "x" +
         std::to_string(m.cols);
}

// Runs fast and reference on one matrix and checks bytes, dequantized bits, and PackedView rows.
// Returns false on the first mismatch so loops stop instead of flooding the log.
bool fast_matches_reference(DType t, const Knobs& p, const Matrix& m) {
  SCOPED_TRACE(describe(t, p, m));
  const auto ref = qref(t, m.w.data(), m.rows, m.cols, p);
  std::vector<float> deq_ref(m.w.size());
  deq_rows(t, ref, m.rows, m.cols, p, deq_ref.data());
  const int saved = omp_get_max_threads();
  bool ok = true;
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    SCOPED_TRACE("threads=" + std::to_string(threads));
    const auto fast = qfast(t, m.w.data(), m.rows, m.cols, p);
    if (fast != ref) {
      ADD_FAILURE() << "quantize differs from quantize_reference (" << fast.size() << " vs " << ref.size() << " bytes)";
      ok = false;
      break;
    }
    std::vector<float> out(m.w.size(), -1.0f);
    deq(t, fast, m.rows, m.cols, p, out.data());
    if (std::memcmp(out.data(), deq_ref.data(), 4 * out.size()) != 0) {
      ADD_FAILURE() << "threaded dequantize differs from row-by-row dequantize_row";
      ok = false;
      break;
    }
  }
  omp_set_num_threads(saved);
  if (!ok) return false;
  const uint64_t fixed = q::scheme(t).fixed_bytes(m.rows, m.cols, text(t, p), "t");
  if (lsb::dtype_is_dense(t)) {
    EXPECT_EQ(ref.size(), fixed);
  } else {
    EXPECT_GE(ref.size(), fixed);
  }
  return true;
}

}  // namespace

TEST(QuantSchemes, TableIsConsistent) {
  const auto all = q::all_schemes();
  ASSERT_EQ(all.size(), 8u);
  for (const q::SchemeOps* s : all) {
    EXPECT_EQ(&q::scheme(s->id), s);
    EXPECT_EQ(q::find_scheme(s->id), s);
    ASSERT_NE(q::find_scheme(s->name), nullptr);
    EXPECT_EQ(q::find_scheme(s->name)->id, s->id);
    std::string upper(s->name);
    for (auto& c : upper) c = static_cast<char>(std::toupper(c));
    EXPECT_EQ(q::find_scheme(upper), s);
    EXPECT_EQ(q::scheme_name(s->id), s->name);
    EXPECT_FALSE(s->summary.empty());
    for (auto fn : {s->make_params != nullptr, s->fixed_bytes != nullptr, s->quantize_ref != nullptr,
                    s->quantize != nullptr, s->open != nullptr})
      EXPECT_TRUE(fn) << s->name;
  }
  EXPECT_EQ(q::find_scheme("int4"), nullptr);
  EXPECT_EQ(q::find_scheme(""), nullptr);
  EXPECT_EQ(q::find_scheme(static_cast<DType>(99)), nullptr);
  EXPECT_THROW(q::scheme(static_cast<DType>(99)), lsb::Error);
}

TEST(QuantSchemes, ParameterTextIsCanonicalAndRoundTrips) {
  for (const q::SchemeOps* s : q::all_schemes())
    for (const Knobs& k : params_for(s->id)) {
      const std::string t = text(s->id, k);
      SCOPED_TRACE(std::string(s->name) + " " + t);
      EXPECT_NO_THROW(q::check_params(s->id, t, "t"));
      // The text parses back to options that give the same text (the form a file stores).
      EXPECT_EQ(s->make_params(q::SchemeOptions::parse(t, "t"), "t"), t);
      EXPECT_EQ(s->uses_stats, s->id == DType::NU || s->id == DType::VQ4);
      if (lsb::dtype_is_dense(s->id) || s->id == DType::Q8) {
        EXPECT_EQ(t, "");
      }
    }
  // Defaults are the scheme's own; options a scheme does not have are ignored.
  EXPECT_EQ(q::make_params(DType::LSB1, {}, "t"), text(DType::LSB1, Knobs{}));
  EXPECT_EQ(q::make_params(DType::PAPER, {}, "t"), text(DType::PAPER, Knobs{0.02f, 7, true}));
  // Stored text that is not canonical, has unknown keys or wrong types is refused.
  for (const char* bad : {"{\"alpha\":0.02}", "{\"group\":128,\"alpha\":0.019999999552965164,\"mean\":false}",
                          "{\"alpha\":0.019999999552965164,\"group\":128,\"mean\":false,\"bits\":3}",
                          "{\"alpha\":\"x\",\"group\":128,\"mean\":false}", "[1,2]", "not json",
                          "{\"alpha\":0.019999999552965164,\"group\":-1,\"mean\":false}"})
    EXPECT_THROW(q::check_params(DType::LSB1, bad, "t"), lsb::Error) << bad;
  EXPECT_THROW(q::check_params(DType::Q8, "{\"alpha\":0.02}", "t"), lsb::Error);
}

TEST(QuantFastVsReference, RandomAwkwardShapes) {
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{1, 1},   {3, 7},    {5, 63},  {7, 65},
                                                           {17, 129}, {33, 500}, {64, 1000}};
  int checked = 0;
  for (const q::SchemeOps* s : q::all_schemes())
    for (const auto& p : params_for(s->id))
      for (const auto& [rows, cols] : shapes)
        for (int dist = 0; dist < 2; ++dist) {
          const uint64_t seed = rows * 1000003ull + cols * 31ull + dist;
          const Matrix m = dist == 0 ? gaussian(rows, cols, seed) : heavy_tailed(rows, cols, seed);
          if (!fits(s->id, cols)) continue;
          if (!fast_matches_reference(s->id, p, m)) return;
          ++checked;
        }
  EXPECT_GT(checked, 100);
}

TEST(QuantFastVsReference, Gpt2AttentionProjections) {
  const auto& ms = gpt2_matrices();
  for (const auto& m : ms) {
    ASSERT_EQ(m.rows, 768);
    ASSERT_EQ(m.cols, 768);
    for (const q::SchemeOps* s : q::all_schemes()) {
      // The learned codes train a table per matrix: two GPT-2 matrices are enough for them.
      if (s->uses_stats && &m - ms.data() >= 2) continue;
      const auto ps = params_for(s->id);
      // Defaults plus one non-default set per matrix keeps the run short.
      for (size_t i : {size_t{0}, size_t{1} + (&m - ms.data()) % (ps.size() > 1 ? ps.size() - 1 : 1)}) {
        if (i >= ps.size()) continue;
        if (!fast_matches_reference(s->id, ps[i], m)) return;
      }
    }
  }
}

TEST(QuantDense, RoundTripsMatchConversions) {
  const Matrix m = heavy_tailed(9, 33, 7);
  std::vector<float> out(m.w.size());
  deq(DType::F32, qfast(DType::F32, m.w.data(), m.rows, m.cols, {}), m.rows, m.cols, {}, out.data());
  EXPECT_EQ(std::memcmp(out.data(), m.w.data(), 4 * out.size()), 0);
  deq(DType::F16, qfast(DType::F16, m.w.data(), m.rows, m.cols, {}), m.rows, m.cols, {}, out.data());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], lsb::f16_to_f32(lsb::f32_to_f16(m.w[i])));
  deq(DType::BF16, qfast(DType::BF16, m.w.data(), m.rows, m.cols, {}), m.rows, m.cols, {}, out.data());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], lsb::bf16_to_f32(lsb::f32_to_bf16(m.w[i])));
}

TEST(QuantQ8, ErrorWithinHalfStep) {
  const Matrix m = heavy_tailed(11, 257, 3);
  const auto blob = qfast(DType::Q8, m.w.data(), m.rows, m.cols, {});
  const auto v = q::Q8View::parse(blob, m.rows, m.cols, {});
  std::vector<float> row(m.cols);
  for (int64_t r = 0; r < m.rows; ++r) {
    float amax = 0;
    for (int64_t c = 0; c < m.cols; ++c) amax = std::max(amax, std::fabs(m.w[r * m.cols + c]));
    EXPECT_FLOAT_EQ(v.scales[r], amax / 127.0f);
    v.dequantize_row(r, row.data());
    for (int64_t c = 0; c < m.cols; ++c) {
      EXPECT_GE(v.q[r * m.cols + c], -127);
      EXPECT_LE(std::fabs(row[c] - m.w[r * m.cols + c]), 0.5f * v.scales[r] * 1.0001f);
    }
  }
}

TEST(QuantLsb1, OutliersAreTopKWithLowerColumnTies) {
  // Integers with many equal magnitudes exercise the tie rule.
  Matrix m = gaussian(19, 301, 11);
  for (auto& v : m.w) v = std::round(v * 150.0f);
  for (float alpha : {0.02f, 0.05f, 0.3f, 1.0f}) {
    const Knobs p{alpha, 64, false};
    const auto blob = qfast(DType::LSB1, m.w.data(), m.rows, m.cols, p);
    const auto vv = q::Lsb1View::parse(blob, m.rows, m.cols, text(DType::LSB1, p), {});
    const q::OutlierSection& v = vv.outliers;
    const int64_t k = std::llround(static_cast<double>(alpha) * m.cols);
    EXPECT_EQ(q::lsb1_outliers_per_row(m.cols, alpha), std::min<int64_t>(k, m.cols));
    std::vector<float> d(m.w.size());
    deq(DType::LSB1, blob, m.rows, m.cols, p, d.data());
    for (int64_t r = 0; r < m.rows; ++r) {
      const float* row = m.w.data() + r * m.cols;
      ASSERT_EQ(v.counts[r], std::min<int64_t>(k, m.cols));
      std::vector<int64_t> order(m.cols);
      for (int64_t c = 0; c < m.cols; ++c) order[c] = c;
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return std::fabs(row[a]) > std::fabs(row[b]); });
      std::vector<int64_t> want(order.begin(), order.begin() + v.counts[r]);
      std::sort(want.begin(), want.end());
      // Outlier columns are exactly where dequantize wrote the stored value (compare with a
      // marker dequantization: decode the gap stream by hand).
      std::vector<int64_t> got;
      const uint8_t* g = v.gaps + v.row_gap_start[r];
      int64_t col = -1;
      for (uint16_t i = 0; i < v.counts[r]; ++i) {
        int64_t gap = 0;
        while (*g == 255) gap += *g++;
        gap += *g++;
        col += gap + 1;
        got.push_back(col);
        EXPECT_EQ(lsb::f16_to_f32(v.values[v.row_value_start[r] + i]), lsb::f16_to_f32(lsb::f32_to_f16(row[col])));
        EXPECT_EQ(d[r * m.cols + col], lsb::f16_to_f32(lsb::f32_to_f16(row[col])));
      }
      ASSERT_EQ(got, want) << "row " << r << " alpha " << alpha;
    }
  }
}

TEST(QuantLsb1, StoredScaleIsL2Optimal) {
  // Squared error of one group after dequantization, with the blob's scale for (r, g) replaced.
  int groups_checked = 0;
  for (const bool use_mean : {false, true})
    for (const int G : {32, 128, 0})
      for (int dist = 0; dist < 2; ++dist) {
        const Matrix m = dist == 0 ? gaussian(6, 300, 5 + G) : heavy_tailed(6, 300, 9 + G);
        const Knobs p{0.02f, G, use_mean};
        SCOPED_TRACE(describe(DType::LSB1, p, m));
        const auto blob = qref(DType::LSB1, m.w.data(), m.rows, m.cols, p);
        const q::Lsb1Layout L(m.rows, m.cols, q::Lsb1Params::parse(text(DType::LSB1, p), "t"), "t");
        std::vector<float> d(m.w.size());
        auto group_err = [&](const std::vector<std::byte>& b, int64_t r, int64_t g) {
          deq_rows(DType::LSB1, b, m.rows, m.cols, p, d.data());
          double e = 0;
          for (int64_t c = g * L.group; c < std::min(m.cols, (g + 1) * L.group); ++c) {
            const double diff = static_cast<double>(m.w[r * m.cols + c]) - d[r * m.cols + c];
            e += diff * diff;
          }
          return e;
        };
        for (int64_t r = 0; r < m.rows; ++r)
          for (int64_t g = 0; g < L.ngroups; ++g) {
            const uint64_t off = L.scales + 2 * (r * L.ngroups + g);
            uint16_t s;
            std::memcpy(&s, blob.data() + off, 2);
            const double e0 = group_err(blob, r, g);
            const float sf = lsb::f16_to_f32(s);
            std::vector<uint16_t> alts = {static_cast<uint16_t>(s + 1), q::f16_nearest(sf * 1.01),
                                          q::f16_nearest(sf * 0.99)};
            if (s > 0) alts.push_back(static_cast<uint16_t>(s - 1));
            for (uint16_t a : alts) {
              auto b2 = blob;
              std::memcpy(b2.data() + off, &a, 2);
              const double e1 = group_err(b2, r, g);
              EXPECT_LE(e0, e1 * (1 + 1e-12)) << "row " << r << " group " << g << " scale " << sf << " alt "
                                              << lsb::f16_to_f32(a);
            }
            ++groups_checked;
          }
      }
  EXPECT_GT(groups_checked, 100);
}

TEST(QuantLsb1, OutliersReduceErrorOnGpt2) {
  for (const auto& m : gpt2_matrices()) {
    std::vector<float> d0(m.w.size()), d2(m.w.size());
    const Knobs p0{0.0f, 128, false}, p2{0.02f, 128, false};
    deq(DType::LSB1, qfast(DType::LSB1, m.w.data(), m.rows, m.cols, p0), m.rows, m.cols, p0, d0.data());
    deq(DType::LSB1, qfast(DType::LSB1, m.w.data(), m.rows, m.cols, p2), m.rows, m.cols, p2, d2.data());
    const auto e0 = q::compare(m.w.data(), d0.data(), m.w.size());
    const auto e2 = q::compare(m.w.data(), d2.data(), m.w.size());
    EXPECT_LT(e2.rel_l2, e0.rel_l2) << m.name;
    EXPECT_GT(e2.rel_l2, 0.0) << m.name;
  }
}

TEST(QuantPaper, QuantileOutlierCountAndStatistics) {
  for (const auto& m : {gaussian(37, 111, 1), heavy_tailed(64, 1000, 2)})
    for (float alpha : {0.0f, 0.01f, 0.02f, 0.1f}) {
      const Knobs p{alpha, 0, false};
      SCOPED_TRACE(describe(DType::PAPER, p, m));
      const auto blob = qfast(DType::PAPER, m.w.data(), m.rows, m.cols, p);
      const auto v = q::PaperView::parse(blob, m.rows, m.cols, text(DType::PAPER, p), {});
      const int64_t n = m.rows * m.cols;
      std::vector<float> mags(n);
      for (int64_t i = 0; i < n; ++i) mags[i] = std::fabs(m.w[i]);
      std::sort(mags.begin(), mags.end());
      const float tau = mags[static_cast<int64_t>(std::floor((1.0 - alpha) * (n - 1)))];
      EXPECT_EQ(v.tau, tau);
      int64_t above = 0;
      double sum = 0, sq = 0;
      for (float w : m.w)
        if (std::fabs(w) > tau) ++above;
        else sum += w;
      const double mu = sum / static_cast<double>(n - above);
      for (float w : m.w)
        if (std::fabs(w) <= tau) sq += (w - mu) * (w - mu);
      const double sigma = std::sqrt(sq / static_cast<double>(n - above));
      EXPECT_EQ(static_cast<int64_t>(v.outliers.total()), above);
      // Continuous data (no ties): exactly the top n-1-q magnitudes are outliers.
      EXPECT_EQ(above, n - 1 - static_cast<int64_t>(std::floor((1.0 - alpha) * (n - 1))));
      EXPECT_NEAR(v.mu, mu, 1e-6 * sigma);
      EXPECT_NEAR(v.sigma, sigma, 1e-6 * sigma);
      std::vector<float> d(n);
      deq(DType::PAPER, blob, m.rows, m.cols, p, d.data());
      for (int64_t i = 0; i < n; ++i) {
        if (std::fabs(m.w[i]) > tau)
          ASSERT_EQ(d[i], lsb::f16_to_f32(lsb::f32_to_f16(m.w[i])));
        else
          ASSERT_EQ(d[i], m.w[i] >= v.mu ? v.mu + v.sigma : v.mu - v.sigma);
      }
    }
}

TEST(QuantLsb1, PositionCostAtTwoPercent) {
  auto position_bpw = [](const Matrix& m) {
    const Knobs p{0.02f, 128, false};
    const auto blob = qfast(DType::LSB1, m.w.data(), m.rows, m.cols, p);
    const auto v = q::Lsb1View::parse(blob, m.rows, m.cols, text(DType::LSB1, p), {});
    const double bits = 8.0 * (2.0 * m.rows + static_cast<double>(v.outliers.row_gap_start[m.rows]));
    return bits / static_cast<double>(m.rows * m.cols);
  };
  for (int64_t cols : {512, 768, 1536})
    for (int dist = 0; dist < 2; ++dist) {
      const Matrix m = dist == 0 ? gaussian(64, cols, cols) : heavy_tailed(64, cols, cols + 1);
      EXPECT_LE(position_bpw(m), 0.25) << m.name << " cols " << cols;
    }
  for (const auto& m : gpt2_matrices()) EXPECT_LE(position_bpw(m), 0.25) << m.name;
}

namespace {
std::vector<std::byte> small_blob(DType t, const Knobs& p, int64_t rows, int64_t cols) {
  const Matrix m = heavy_tailed(rows, cols, 77);
  return qfast(t, m.w.data(), rows, cols, p);
}
}  // namespace

TEST(QuantBlobView, RejectsTruncatedAndExtendedBlobs) {
  const int64_t rows = 5, cols = 132;
  for (const q::SchemeOps* s : q::all_schemes())
    for (const auto& p : params_for(s->id)) {
      SCOPED_TRACE(std::string(s->name));
      const auto blob = small_blob(s->id, p, rows, cols);
      const std::string pt = text(s->id, p);
      std::vector<float> out(rows * cols);
      for (size_t len = 0; len < blob.size(); ++len) {
        const std::span<const std::byte> cut(blob.data(), len);
        EXPECT_THROW(s->open(cut, rows, cols, pt, {}), lsb::Error) << "len " << len;
        EXPECT_THROW(deq(s->id, cut, rows, cols, p, out.data()), lsb::Error) << "len " << len;
      }
      auto longer = blob;
      longer.push_back(std::byte{0});
      EXPECT_THROW(s->open(longer, rows, cols, pt, {}), lsb::Error);
      EXPECT_THROW(deq(s->id, longer, rows, cols, p, out.data()), lsb::Error);
    }
}

// Streaming reads an embedding row by fetching only the ranges row_spans(r) lists into an
// otherwise empty buffer (docs/STREAMING.md): a row dequantized from a copy of the blob that holds
// just those bytes, every other byte poisoned, must be the row of the whole blob, bit for bit.
TEST(QuantBlobView, RowSpansCoverEveryByteRead) {
  const int64_t rows = 7, cols = 200;
  for (const q::SchemeOps* s : q::all_schemes())
    for (const auto& p : params_for(s->id)) {
      const int64_t c = cols;
      SCOPED_TRACE(std::string(s->name) + " " + text(s->id, p));
      const auto blob = small_blob(s->id, p, rows, c);
      const auto whole = s->open(blob, rows, c, text(s->id, p), {});
      // Aligned like a file's blob; the view is opened on the real bytes, then every byte outside
      // row r's spans is overwritten before the row is read.
      std::vector<uint64_t> storage((blob.size() + 7) / 8 + 1);
      auto* copy = reinterpret_cast<std::byte*>(storage.data());
      std::memcpy(copy, blob.data(), blob.size());
      const auto view = s->open({copy, blob.size()}, rows, c, text(s->id, p), {});
      for (int64_t r = 0; r < rows; ++r) {
        const q::RowSpans spans = view->row_spans(r);
        ASSERT_GT(spans.n, 0);
        std::vector<char> keep(blob.size(), 0);
        for (int i = 0; i < spans.n; ++i) {
          const auto sp = spans.spans[static_cast<size_t>(i)];
          ASSERT_GE(sp.data(), copy);
          ASSERT_LE(sp.data() + sp.size(), copy + blob.size());
          std::fill_n(keep.begin() + (sp.data() - copy), sp.size(), 1);
        }
        for (size_t b = 0; b < blob.size(); ++b) copy[b] = keep[b] ? blob[b] : std::byte{0xA5};
        std::vector<float> want(static_cast<size_t>(c)), got(static_cast<size_t>(c));
        whole->dequantize_row(r, want.data());
        view->dequantize_row(r, got.data());
        ASSERT_EQ(std::memcmp(want.data(), got.data(), 4 * want.size()), 0) << "row " << r;
        std::memcpy(copy, blob.data(), blob.size());
      }
    }
}

TEST(QuantBlobView, RejectsCorruptGapStreams) {
  const int64_t rows = 6, cols = 300;
  for (DType t : {DType::LSB1, DType::PAPER}) {
    const Knobs p{0.05f, 64, false};
    const std::string pt = text(t, p);
    const auto blob = small_blob(t, p, rows, cols);
    const SignSections L = sections(t, rows, cols, p);
    ASSERT_NO_THROW(q::open_blob(t, blob, rows, cols, pt));
    auto u16_at = [](std::vector<std::byte>& b, uint64_t off) { return reinterpret_cast<uint16_t*>(b.data() + off); };
    std::vector<std::vector<std::byte>> bad;
    {  // one more outlier counted than coded
      auto b = blob;
      *u16_at(b, L.counts) += 1;
      bad.push_back(b);
    }
    {  // count moved from one row to another: total matches, rows do not
      auto b = blob;
      *u16_at(b, L.counts) += 1;
      *u16_at(b, L.counts + 2) -= 1;
      bad.push_back(b);
    }
    {  // more outliers than columns
      auto b = blob;
      *u16_at(b, L.counts) = static_cast<uint16_t>(cols + 1);
      bad.push_back(b);
    }
    {  // a gap that jumps past the last column
      auto b = blob;
      b[L.gaps] = std::byte{254};
      b[L.gaps + 1] = std::byte{254};
      bad.push_back(b);
    }
    {  // a run of 255 continuation bytes through the end of the blob
      auto b = blob;
      for (size_t i = L.gaps; i < b.size(); ++i) b[i] = std::byte{255};
      bad.push_back(b);
    }
    {  // an outlier's sign bit cleared
      auto b = blob;
      const auto* gaps = reinterpret_cast<const uint8_t*>(blob.data() + L.gaps);
      int64_t c = 0;
      for (const uint8_t* g = gaps; *g == 255; ++g) c += 255;
      c += gaps[c / 255];
      reinterpret_cast<uint64_t*>(b.data() + L.signs)[c / 64] &= ~(uint64_t{1} << (c % 64));
      bad.push_back(b);
    }
    {  // sign padding bit set
      auto b = blob;
      reinterpret_cast<uint64_t*>(b.data() + L.signs)[L.words - 1] |= uint64_t{1} << 63;
      bad.push_back(b);
    }
    for (size_t i = 0; i < bad.size(); ++i)
      EXPECT_THROW(q::open_blob(t, bad[i], rows, cols, pt), lsb::Error) << q::scheme(t).name << " case " << i;

    // Random corruption of the counts/gaps/values region: either a clean lsb::Error or a blob
    // that parses and dequantizes without touching memory outside it.
    std::mt19937_64 rng(42);
    std::vector<float> out(rows * cols);
    int rejected = 0;
    for (int trial = 0; trial < 2000; ++trial) {
      auto b = blob;
      for (int j = 0; j < 3; ++j) {
        const size_t at = L.counts + rng() % (b.size() - L.counts);
        b[at] = static_cast<std::byte>(rng() & 0xff);
      }
      try {
        const auto v = q::open_blob(t, b, rows, cols, pt);
        for (int64_t r = 0; r < rows; ++r) v->dequantize_row(r, out.data() + r * cols);
      } catch (const lsb::Error&) {
        ++rejected;
      }
    }
    EXPECT_GT(rejected, 0);
  }
}

TEST(QuantParams, InvalidInputsAreErrors) {
  const Matrix m = gaussian(4, 70, 1);
  for (float alpha : {-0.01f, 1.5f, std::nanf("")}) {
    const Knobs p{alpha, 64, false};
    EXPECT_THROW(qfast(DType::LSB1, m.w.data(), m.rows, m.cols, p), lsb::Error);
    EXPECT_THROW(qref(DType::PAPER, m.w.data(), m.rows, m.cols, p), lsb::Error);
  }
  EXPECT_THROW(qfast(DType::LSB1, m.w.data(), m.rows, m.cols, {0.02f, -1, false}), lsb::Error);
  EXPECT_THROW(qfast(DType::LSB1, m.w.data(), 0, 70, {}), lsb::Error);
  auto bad = m.w;
  bad[77] = std::numeric_limits<float>::infinity();
  for (DType t : {DType::Q8, DType::LSB1, DType::PAPER}) {
    EXPECT_THROW(qfast(t, bad.data(), m.rows, m.cols, {}), lsb::Error);
    EXPECT_THROW(qref(t, bad.data(), m.rows, m.cols, {}), lsb::Error);
  }
  try {
    qfast(DType::LSB1, bad.data(), m.rows, m.cols, {});
  } catch (const lsb::Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 1 column 7"), std::string::npos) << e.what();
  }
}

TEST(QuantMetrics, HandComputedCases) {
  const float w[4] = {1, 2, 3, 4};
  const float a[4] = {1, 2, 3, 5};  // one error of 1
  auto m = q::compare(w, a, 4);
  EXPECT_DOUBLE_EQ(m.mae, 0.25);
  EXPECT_DOUBLE_EQ(m.mse, 0.25);
  EXPECT_DOUBLE_EQ(m.max_abs_err, 1.0);
  EXPECT_DOUBLE_EQ(m.rel_l2, 1.0 / std::sqrt(30.0));  // ||w||^2 = 1 + 4 + 9 + 16
  EXPECT_DOUBLE_EQ(m.snr_db, 10.0 * std::log10(30.0));
  EXPECT_DOUBLE_EQ(m.cosine, 34.0 / std::sqrt(30.0 * 39.0));  // <w,a> = 1+4+9+20, ||a||^2 = 39

  const float neg[4] = {-1, -2, -3, -4};
  m = q::compare(w, neg, 4);
  EXPECT_DOUBLE_EQ(m.rel_l2, 2.0);
  EXPECT_DOUBLE_EQ(m.cosine, -1.0);
  EXPECT_DOUBLE_EQ(m.mae, 5.0);  // (2 + 4 + 6 + 8) / 4
  EXPECT_DOUBLE_EQ(m.snr_db, 10.0 * std::log10(0.25));

  m = q::compare(w, w, 4);
  EXPECT_EQ(m.rel_l2, 0.0);
  EXPECT_EQ(m.cosine, 1.0);
  EXPECT_TRUE(std::isinf(m.snr_db) && m.snr_db > 0);

  const float z[2] = {0, 0}, h[2] = {0.5f, -0.5f};
  m = q::compare(z, h, 2);
  EXPECT_TRUE(std::isinf(m.rel_l2));
  EXPECT_EQ(m.cosine, 0.0);
  EXPECT_DOUBLE_EQ(m.mae, 0.5);
  m = q::compare(z, z, 2);
  EXPECT_EQ(m.rel_l2, 0.0);
  EXPECT_EQ(m.cosine, 1.0);
}

TEST(QuantOutlierCoding, GapCodeRoundTripsLongGaps) {
  const std::vector<uint32_t> cols = {0, 1, 254, 255, 510, 1020, 70000, 70001};
  std::vector<uint8_t> code;
  q::append_gap_code(cols, code);
  EXPECT_EQ(code.size(), q::gap_code_bytes(cols));
  std::vector<uint32_t> back(cols.size());
  const uint64_t end = q::decode_gap_code(code.data(), 0, code.size(), cols.size(), 70002, back.data(), "t", 0);
  EXPECT_EQ(end, code.size());
  EXPECT_EQ(back, cols);
  EXPECT_THROW(q::decode_gap_code(code.data(), 0, code.size(), cols.size(), 70001, back.data(), "t", 0), lsb::Error);
  EXPECT_THROW(q::decode_gap_code(code.data(), 0, code.size() - 1, cols.size(), 70002, back.data(), "t", 0),
               lsb::Error);
  // f16_nearest: exact fp16 values stay, midpoints go to even, saturation instead of inf.
  EXPECT_EQ(q::f16_nearest(1.0), 0x3c00);
  EXPECT_EQ(q::f16_nearest(1.0 + 1.0 / 2048), 0x3c00);      // halfway 1 and 1+2^-10: even
  EXPECT_EQ(q::f16_nearest(1.0 + 3.0 / 2048), 0x3c02);      // halfway 1+2^-10 and 1+2^-9: even
  EXPECT_EQ(q::f16_nearest(1.0 + 1.0 / 2048 + 1e-12), 0x3c01);
  EXPECT_EQ(q::f16_nearest(1e9), 0x7bff);
  EXPECT_EQ(q::f16_nearest(-1e9), 0xfbff);
}
