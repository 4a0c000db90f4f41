// KL divergence, top-1 agreement, layer similarity and the HTML report.
#include <cmath>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "eval/compare.h"
#include "test_util.h"

TEST(CompareKld, MatchesDirectComputation) {
  const float p[3] = {0.5f, 1.5f, -1.0f};
  const float q[3] = {1.0f, 0.0f, 0.0f};
  auto softmax = [](const float* l, double* out) {
    double s = 0;
    for (int i = 0; i < 3; ++i) s += std::exp(static_cast<double>(l[i]));
    for (int i = 0; i < 3; ++i) out[i] = std::exp(static_cast<double>(l[i])) / s;
  };
  double P[3], Q[3];
  softmax(p, P);
  softmax(q, Q);
  double kl = 0;
  for (int i = 0; i < 3; ++i) kl += P[i] * std::log(P[i] / Q[i]);
  EXPECT_NEAR(lsb::kl_divergence(p, q, 3), kl, 1e-12);
  EXPECT_NEAR(lsb::kl_divergence(p, p, 3), 0.0, 1e-15);
  // Adding a constant to all logits does not change the distribution.
  const float p2[3] = {10.5f, 11.5f, 9.0f};
  EXPECT_NEAR(lsb::kl_divergence(p, p2, 3), 0.0, 1e-6);
}

// The original against itself through the CLI: zero divergence, full agreement, cosine 1 at
// every layer, and a report with the three pictures. (Compressed-vs-original numbers are checked
// in the compression tests.)
TEST(CompareCli, SameModelGivesZeroDivergenceAndReport) {
  const std::string m = LSB_SHARED("models/bookworm-27m");
  const auto dir = lsbtest::temp_dir();
  const std::string report = (dir / "r.html").string();
  auto r = lsbtest::run_lsb("eval " + m + " --ref " + m + " --text " + LSB_SHARED("data/bookworm_valid.txt") +
                            " --ctx 128 --chunks 3 --layers --report " + report + " --json -t 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_NEAR(j["kld_mean"].get<double>(), 0.0, 1e-9);
  EXPECT_DOUBLE_EQ(j["top1_agreement"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(j["ppl"].get<double>(), j["ref"]["ppl"].get<double>());
  EXPECT_EQ(j["n_scored"].get<int>(), 3 * (128 - 64 - 1));
  ASSERT_EQ(j["layer_cosine"].size(), 6u);
  for (const auto& c : j["layer_cosine"]) EXPECT_NEAR(c.get<double>(), 1.0, 1e-9);
  std::ifstream f(report);
  const std::string html((std::istreambuf_iterator<char>(f)), {});
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_NE(html.find("model.layers.5.mlp.down_proj.weight"), std::string::npos);  // SNR bar per tensor
  EXPECT_NE(html.find("layer 5: cosine"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);  // self-contained, static
}

TEST(CompareCli, LayersWithoutRefIsAnError) {
  auto r = lsbtest::run_lsb("eval " + LSB_SHARED("models/bookworm-27m") + " --text " +
                            LSB_SHARED("data/bookworm_valid.txt") + " --layers");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--ref"), std::string::npos);
}
