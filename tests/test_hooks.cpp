// The hooks calibrated quantization builds on: input statistics, the recording Linear, the
// per-layer forward pass, and quantizers that accept statistics.
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "base/error.h"
#include "linear/linear.h"
#include "model/llama_model.h"
#include "quant/scheme.h"
#include "quant/stats.h"
#include "runtime/threads.h"
#include "test_util.h"

namespace {

std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

}  // namespace

TEST(InputStats, SumsOfSquaresAndGramMatchDirectComputation) {
  constexpr int64_t cols = 37;
  const std::vector<float> a = randn(11 * cols, 1), b = randn(6 * cols, 2);
  lsb::quant::InputStats full(cols, true), diag(cols, false);
  for (auto* s : {&full, &diag}) {
    s->add(a.data(), 11);
    s->add(b.data(), 6);
  }
  EXPECT_EQ(full.tokens, 17u);
  EXPECT_FALSE(diag.full());
  ASSERT_TRUE(full.full());
  std::vector<const float*> rows;
  for (int t = 0; t < 11; ++t) rows.push_back(a.data() + t * cols);
  for (int t = 0; t < 6; ++t) rows.push_back(b.data() + t * cols);
  for (int64_t i = 0; i < cols; ++i) {
    double d = 0;
    for (const float* x : rows) d += static_cast<double>(x[i]) * x[i];
    EXPECT_NEAR(full.diag[i], d, 1e-9 * d);
    EXPECT_EQ(full.diag[i], diag.diag[i]);
    for (int64_t j = 0; j < cols; ++j) {
      double g = 0;
      for (const float* x : rows) g += static_cast<double>(x[i]) * x[j];
      // The Gram matrix is a float rank update; only its lower triangle is kept.
      EXPECT_NEAR(full.gram_at(i, j), g, 1e-5 * (std::fabs(g) + 1)) << i << "," << j;
      if (j > i) {
        EXPECT_EQ(full.gram[i * cols + j], 0.0f);
      }
    }
    EXPECT_NEAR(full.gram_at(i, i), full.diag[i], 1e-5 * full.diag[i]);
  }
  // Merging two halves gives the same sums as one pass.
  lsb::quant::InputStats first(cols, true), second(cols, true);
  first.add(a.data(), 11);
  second.add(b.data(), 6);
  first.merge(second);
  EXPECT_EQ(first.tokens, full.tokens);
  for (size_t k = 0; k < full.gram.size(); ++k) ASSERT_EQ(first.gram[k], full.gram[k]);
  for (size_t k = 0; k < full.diag.size(); ++k) ASSERT_EQ(first.diag[k], full.diag[k]);
  EXPECT_THROW(first.merge(diag), lsb::Error);
  EXPECT_THROW(lsb::quant::InputStats(0, false), lsb::Error);
}

TEST(RecordingLinear, SeesEveryInputAndChangesNothing) {
  constexpr int64_t rows = 9, cols = 40;
  const std::vector<float> w = randn(rows * cols, 3, 0.02f);
  lsb::TensorInfo info;
  info.name = "w";
  info.shape = {rows, cols};
  info.dtype = lsb::DType::F32;
  info.nbytes = w.size() * 4;
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(w.data()), info.nbytes);
  const auto inner = lsb::make_linear(info, bytes, "test");
  lsb::quant::InputStats stats(cols, true), direct(cols, true);
  const lsb::RecordingLinear rec(lsb::make_linear(info, bytes, "test"), stats);
  EXPECT_EQ(rec.rows(), rows);
  EXPECT_EQ(rec.name(), "w");
  const std::vector<float> x1 = randn(5 * cols, 4), x2 = randn(cols, 5);
  std::vector<float> y_rec(5 * rows), y(5 * rows);
  rec.forward(x1.data(), 5, y_rec.data());
  inner->forward(x1.data(), 5, y.data());
  EXPECT_EQ(y_rec, y);
  rec.forward(x2.data(), 1, y_rec.data());
  direct.add(x1.data(), 5);
  direct.add(x2.data(), 1);
  EXPECT_EQ(stats.tokens, 6u);
  EXPECT_EQ(stats.diag, direct.diag);
  EXPECT_EQ(stats.gram, direct.gram);
  lsb::quant::InputStats wrong(cols + 1, false);
  EXPECT_THROW(lsb::RecordingLinear(lsb::make_linear(info, bytes, "test"), wrong), lsb::Error);
}

// embed, forward_layer for every layer, head: the same logits as forward(), bit for bit, so a
// pipeline can run layer-major over many sequences.
TEST(ModelPieces, LayerByLayerEqualsForward) {
  lsb::set_threads(2);
  lsb::Session s = lsbtest::session_on(LSB_SHARED("models/stories260K/stories260K.bin"));
  lsb::LlamaModel& m = *s.model;
  const int dim = m.config().dim, vocab = m.config().vocab_size;
  const std::vector<int> toks = {1, 403, 407, 261, 378, 31, 8, 57, 9, 300};
  const int n = static_cast<int>(toks.size());
  std::vector<float> want(static_cast<size_t>(n) * vocab), got(want.size());
  m.reset(32);
  m.forward(toks.data(), n, 0, want.data(), 0);
  m.reset(32);
  std::vector<float> x(static_cast<size_t>(n) * dim);
  std::vector<int> seen;
  m.on_layer = [&](int l, const float*, int) { seen.push_back(l); };
  m.embed(toks.data(), n, x.data());
  for (int l = 0; l < m.config().n_layers; ++l) m.forward_layer(l, x.data(), n, 0);
  m.head(x.data(), n, got.data());
  m.on_layer = nullptr;
  EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * 4), 0);
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_THROW(m.forward_layer(0, x.data(), n, 30), lsb::Error);  // positions past the context
}

// Every quantizer takes statistics of its inputs. Schemes that do not round with them give the
// same bytes with or without; the calibrated ones give other bytes (tests/test_gptq.cpp says how).
TEST(QuantWithStats, EveryQuantizerAcceptsStatistics) {
  constexpr int64_t rows = 7, cols = 132;
  const std::vector<float> w = randn(rows * cols, 6, 0.02f), x = randn(50 * cols, 7);
  lsb::quant::InputStats stats(cols, true);
  stats.add(x.data(), 50);
  for (const lsb::quant::SchemeOps* s : lsb::quant::all_schemes()) {
    const std::string p = s->make_params({}, "test");
    const lsb::quant::QuantizeArgs plain{.w = w.data(), .rows = rows, .cols = cols, .params = p};
    lsb::quant::QuantizeArgs with = plain;
    with.stats = &stats;
    if (s->uses_stats) {
      EXPECT_NE(s->quantize(with), s->quantize(plain)) << s->name;
    } else {
      EXPECT_EQ(s->quantize(with), s->quantize(plain)) << s->name;
      EXPECT_EQ(s->quantize_ref(with), s->quantize_ref(plain)) << s->name;
    }
  }
}
