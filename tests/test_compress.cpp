// `lsb compress` / `lsb inspect`: reported metrics against an independent computation, the
// bits-per-weight budgets on bookworm-27m, the peak-RSS bound, determinism across thread counts,
// and that an interrupted or failing run leaves nothing at the target path.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "pipeline/compress.h"
#include "format/lsb_reader.h"
#include "pipeline/recipe.h"
#include "base/fp16.h"
#include "base/error.h"
#include "quant/metrics.h"
#include "quant/lsb1.h"
#include "quant/paper.h"
#include "quant/scheme.h"
#include "test_util.h"

namespace fs = std::filesystem;
using lsb::DType;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string stories() { return LSB_SHARED("models/stories260K/stories260K.bin"); }
std::string tok512() { return LSB_SHARED("models/stories260K/tok512.bin"); }
std::string bookworm() { return LSB_SHARED("models/bookworm-27m"); }

// Source tensor as float, decoded here without the library's converters.
std::vector<float> source_floats(const lsb::TensorSource& s, const lsb::TensorInfo& t) {
  const auto d = s.data(t);
  std::vector<float> w(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < w.size(); ++i) {
    if (t.dtype == DType::F32) {
      std::memcpy(&w[i], d.data() + 4 * i, 4);
    } else {
      uint16_t h;
      std::memcpy(&h, d.data() + 2 * i, 2);
      if (t.dtype != DType::BF16) ADD_FAILURE() << "unexpected source dtype";
      const uint32_t bits = static_cast<uint32_t>(h) << 16;
      std::memcpy(&w[i], &bits, 4);
    }
  }
  return w;
}

struct Ref {
  double mae, rel_l2, snr_db, cosine;
  uint64_t outliers;
};
// Independent metrics: the stored blob dequantized with the scalar reference, plain double loops.
Ref independent(const lsb::format::LsbReader& r, size_t i, const std::vector<float>& w) {
  const lsb::TensorInfo& t = r.tensors()[i];
  const auto blob = r.data(t);
  std::vector<float> q(w.size());
  const int64_t rows = t.shape.size() == 2 ? t.shape[0] : 1, cols = static_cast<int64_t>(w.size()) / rows;
  const auto view = lsb::quant::open_blob(t.dtype, blob, rows, cols, t.params);
  for (int64_t row = 0; row < rows; ++row) view->dequantize_row(row, q.data() + row * cols);
  double ae = 0, e2 = 0, w2 = 0, q2 = 0, wq = 0;
  for (size_t k = 0; k < w.size(); ++k) {
    const double a = w[k], b = q[k];
    ae += std::abs(a - b);
    e2 += (a - b) * (a - b);
    w2 += a * a;
    q2 += b * b;
    wq += a * b;
  }
  Ref ref{};
  ref.mae = ae / w.size();
  ref.rel_l2 = std::sqrt(e2 / w2);
  ref.snr_db = e2 > 0 ? 10 * std::log10(w2 / e2) : INFINITY;
  ref.cosine = wq / std::sqrt(w2 * q2);
  if (t.dtype == DType::LSB1 || t.dtype == DType::PAPER) {
    const uint64_t counts = t.dtype == DType::LSB1
                                ? lsb::quant::Lsb1Layout(rows, cols, lsb::quant::Lsb1Params::parse(t.params, "t"), "t").counts
                                : lsb::quant::PaperLayout(rows, cols, "t").counts;
    for (int64_t row = 0; row < rows; ++row) {
      uint16_t c;
      std::memcpy(&c, blob.data() + counts + 2 * row, 2);
      ref.outliers += c;
    }
  }
  return ref;
}

double num(const nlohmann::json& j) { return j.is_null() ? INFINITY : j.get<double>(); }

void expect_metrics_match(const nlohmann::json& j, const Ref& r, const std::string& name) {
  auto close = [](double a, double b) { return a == b || std::abs(a - b) <= 1e-9 * std::max(std::abs(a), std::abs(b)); };
  EXPECT_TRUE(close(j.at("mae").get<double>(), r.mae)) << name << " mae " << j.at("mae") << " vs " << r.mae;
  EXPECT_TRUE(close(num(j.at("rel_l2")), r.rel_l2)) << name << " rel_l2";
  EXPECT_TRUE(close(num(j.at("snr_db")), r.snr_db)) << name << " snr " << j.at("snr_db") << " vs " << r.snr_db;
  EXPECT_TRUE(close(j.at("cosine").get<double>(), r.cosine)) << name << " cosine";
  EXPECT_EQ(j.at("outliers").get<uint64_t>(), r.outliers) << name;
}

bool has_temp_files(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) return true;
  return false;
}

}  // namespace

TEST(CompressRecipe, GlobKeepRulesAndNorms) {
  using namespace lsb;
  EXPECT_TRUE(glob_match("lm_head.weight", "lm_head.weight"));
  EXPECT_TRUE(glob_match("model.layers.*.mlp.down_proj.weight", "model.layers.11.mlp.down_proj.weight"));
  EXPECT_TRUE(glob_match("*v_proj*", "model.layers.0.self_attn.v_proj.weight"));
  EXPECT_TRUE(glob_match("model.layers.?.*", "model.layers.3.x"));
  EXPECT_FALSE(glob_match("model.layers.?.*", "model.layers.10.x"));
  EXPECT_FALSE(glob_match("lm_head", "lm_head.weight"));
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_THROW(parse_keep_rule("lm_head.weight"), lsb::Error);
  EXPECT_THROW(parse_keep_rule("=q8"), lsb::Error);
  EXPECT_THROW(parse_keep_rule("lm_head.weight=q3"), lsb::Error);
  EXPECT_THROW(make_recipe("int4", {}), lsb::Error);

  lsb::TensorInfo m, n;
  m.name = "model.layers.0.mlp.up_proj.weight";
  m.shape = {8, 8};
  n.name = "model.layers.0.input_layernorm.weight";
  n.shape = {8};
  Recipe r = make_recipe("lsb1", {"*=q8", "*.up_proj.*=bf16"});
  EXPECT_EQ(choose_dtype(r, m), DType::BF16);  // last match wins
  EXPECT_EQ(choose_dtype(r, n), DType::F32);   // norms always f32
  EXPECT_EQ(choose_dtype(make_recipe("paper", {}), m), DType::PAPER);
  EXPECT_THROW(check_rules_match(make_recipe("lsb1", {"nothing*=q8"}), {m, n}, "x"), lsb::Error);
}

TEST(CompressMetrics, AccumulatorEqualsCompareBitForBit) {
  std::mt19937 rng(7);
  std::normal_distribution<float> g;
  std::vector<float> a(10007), b(10007);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = g(rng);
    b[i] = a[i] + 0.1f * g(rng);
  }
  lsb::quant::MetricsAccumulator acc;
  for (size_t i = 0; i < a.size(); i += 1000) acc.add(a.data() + i, b.data() + i, std::min<size_t>(1000, a.size() - i));
  const auto x = acc.result(), y = lsb::quant::compare(a.data(), b.data(), a.size());
  EXPECT_EQ(x.mae, y.mae);
  EXPECT_EQ(x.rel_l2, y.rel_l2);
  EXPECT_EQ(x.snr_db, y.snr_db);
  EXPECT_EQ(x.cosine, y.cosine);
  EXPECT_EQ(x.max_abs_err, y.max_abs_err);
}

// Library path: report == metadata == independent computation, for every scheme.
TEST(CompressRoundTrip, LibraryMetricsMatchIndependentComputation) {
  auto src = lsb::open_model(stories());
  for (const std::string scheme : {"default", "lsb1", "paper", "q8", "bf16"}) {
    SCOPED_TRACE(scheme);
    const fs::path out = lsbtest::temp_dir() / "s.lsb";
    lsb::CompressOptions o;
    o.scheme = scheme;
    const lsb::CompressReport rep = lsb::compress_model(stories(), out.string(), o);
    ASSERT_TRUE(fs::exists(out));
    EXPECT_EQ(rep.output_bytes, fs::file_size(out));
    EXPECT_EQ(rep.params, 260032u);
    EXPECT_DOUBLE_EQ(rep.bpw, rep.output_bytes * 8.0 / 260032);
    EXPECT_DOUBLE_EQ(rep.ratio_vs_bf16, 260032 * 2.0 / rep.output_bytes);
    lsb::format::LsbReader r(out.string());
    const auto& stored = r.metadata().at("tensors");
    ASSERT_EQ(stored.size(), r.tensors().size());
    ASSERT_EQ(rep.tensors.size(), r.tensors().size());
    for (size_t i = 0; i < r.tensors().size(); ++i) {
      const lsb::TensorInfo& t = r.tensors()[i];
      const std::vector<float> w = source_floats(*src, src->get(t.name));
      const Ref ref = independent(r, i, w);
      ASSERT_EQ(stored[i].at("name"), t.name);
      expect_metrics_match(stored[i], ref, t.name);
      expect_metrics_match(lsb::tensor_report_json(rep.tensors[i]), ref, t.name);
      EXPECT_EQ(rep.tensors[i].bytes, t.nbytes);
      if (t.shape.size() == 1) {
        EXPECT_EQ(t.dtype, DType::F32) << t.name;
      } else if (scheme != "default") {
        EXPECT_EQ(lsb::quant::scheme_name(t.dtype), scheme) << t.name;
      }
      if (t.dtype == DType::LSB1) {
        EXPECT_GT(ref.outliers, 0u) << t.name;
      }
    }
  }
}

// CLI path: compress --json, then inspect --json; both agree with the independent computation.
TEST(CompressRoundTrip, CliCompressAndInspectJson) {
  const fs::path out = lsbtest::temp_dir() / "cli.lsb";
  lsbtest::RunResult c = lsbtest::run_lsb("compress " + stories() + " -o " + out.string() + " --tokenizer " + tok512() +
                                          " --keep 'model.layers.1.*=q8' --json");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  lsbtest::RunResult in = lsbtest::run_lsb("inspect --json --verify " + out.string());
  ASSERT_EQ(in.exit_code, 0) << in.err;
  const auto jc = nlohmann::json::parse(c.out), ji = nlohmann::json::parse(in.out);
  EXPECT_EQ(jc.at("output_bytes").get<uint64_t>(), fs::file_size(out));
  EXPECT_EQ(ji.at("file_size").get<uint64_t>(), fs::file_size(out));
  EXPECT_EQ(jc.at("params"), ji.at("params"));
  EXPECT_DOUBLE_EQ(jc.at("bpw").get<double>(), ji.at("bpw").get<double>());
  EXPECT_GT(jc.at("peak_rss_bytes").get<uint64_t>(), 0u);
  for (const char* k : {"input_bytes", "ratio_vs_bf16", "seconds"}) EXPECT_TRUE(jc.contains(k)) << k;
  EXPECT_EQ(ji.at("provenance").at("source_xxh3"), jc.at("source_xxh3"));

  auto src = lsb::open_model(stories());
  lsb::format::LsbReader r(out.string());
  ASSERT_EQ(ji.at("tensors").size(), r.tensors().size());
  for (size_t i = 0; i < r.tensors().size(); ++i) {
    const lsb::TensorInfo& t = r.tensors()[i];
    const nlohmann::json& a = jc.at("tensors")[i];
    const nlohmann::json& b = ji.at("tensors")[i];
    EXPECT_EQ(a.at("name"), t.name);
    EXPECT_EQ(b.at("name"), t.name);
    EXPECT_EQ(a.at("scheme"), b.at("scheme"));
    EXPECT_EQ(a.at("shape"), b.at("shape"));
    EXPECT_EQ(b.at("bytes").get<uint64_t>(), t.nbytes);
    const Ref ref = independent(r, i, source_floats(*src, src->get(t.name)));
    expect_metrics_match(a, ref, t.name);
    expect_metrics_match(b, ref, t.name);
    if (t.name.rfind("model.layers.1.", 0) == 0 && t.shape.size() == 2) {
      EXPECT_EQ(b.at("scheme"), "q8") << t.name;
    }
  }
  // The text output shows the same table.
  lsbtest::RunResult txt = lsbtest::run_lsb("inspect " + out.string());
  EXPECT_EQ(txt.exit_code, 0);
  EXPECT_NE(txt.out.find("model.layers.3.mlp.up_proj.weight"), std::string::npos);
  EXPECT_NE(txt.out.find("cosine"), std::string::npos);
}

TEST(CompressBookworm, DefaultRecipeAndLsb1Budgets) {
  const int64_t params = 27269632;
  for (const auto& [scheme, budget] : {std::pair<std::string, double>{"default", 2.84}, {"lsb1", 1.7}}) {
    SCOPED_TRACE(scheme);
    const fs::path out = lsbtest::temp_dir() / (scheme + ".lsb");
    lsb::CompressOptions o;
    o.scheme = scheme;
    const auto rep = lsb::compress_model(bookworm(), out.string(), o);
    const double bpw = fs::file_size(out) * 8.0 / params;  // whole file, everything counted
    std::printf("bookworm-27m --scheme %s: %.4f bpw, %.3fx vs bf16\n", scheme.c_str(), bpw, params * 2.0 / fs::file_size(out));
    EXPECT_LE(bpw, budget);
    EXPECT_EQ(rep.params, static_cast<uint64_t>(params));
    lsb::format::LsbReader r(out.string());
    EXPECT_EQ(r.tokenizer().kind, lsb::TokenizerBlob::Kind::SentencePiece);  // embedded tokenizer.model
    if (scheme == "lsb1") {
      for (const lsb::TensorInfo& t : r.tensors())
        EXPECT_EQ(t.dtype, t.shape.size() == 2 ? DType::LSB1 : DType::F32) << t.name;  // embedding and head included
    }
  }
}

// Peak RSS measured by the OS (getrusage in the CLI process), and the same bytes whatever the
// thread count.
TEST(CompressBookworm, PeakRssBoundAndDeterministicAcrossThreads) {
  uint64_t largest = 0;
  {
    auto src = lsb::open_model(bookworm());
    for (const lsb::TensorInfo& t : src->tensors()) largest = std::max<uint64_t>(largest, uint64_t(t.numel()) * 4);
  }
  const fs::path d = lsbtest::temp_dir();
  lsbtest::RunResult a = lsbtest::run_lsb("compress " + bookworm() + " -o " + (d / "t1.lsb").string() + " -t 1 --json", 300);
  lsbtest::RunResult b = lsbtest::run_lsb("compress " + bookworm() + " -o " + (d / "t2.lsb").string() + " -t 2 --json", 300);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  for (const lsbtest::RunResult* r : {&a, &b}) {
    const auto j = nlohmann::json::parse(r->out);
    const uint64_t rss = j.at("peak_rss_bytes");
    std::printf("peak RSS %.1f MB, bound %.1f MB (largest f32 tensor %.1f MB)\n", rss / 1e6,
                (2 * largest + (64u << 20)) / 1e6, largest / 1e6);
    EXPECT_LE(rss, 2 * largest + (64u << 20));
    EXPECT_EQ(j.at("largest_tensor_f32_bytes").get<uint64_t>(), largest);
  }
  EXPECT_EQ(nlohmann::json::parse(a.out).at("threads"), 1);
  const std::string x = slurp(d / "t1.lsb"), y = slurp(d / "t2.lsb");
  EXPECT_GT(x.size(), 1000000u);
  EXPECT_TRUE(x == y) << "output differs between 1 and 2 threads";
}

// SIGTERM while the temporary file is being written: the handler removes it; nothing appears at
// the target. SIGKILL cannot be handled: the target still does not exist (the temporary may).
TEST(CompressFailures, InterruptedRunLeavesNothingAtTarget) {
  for (int sig : {SIGTERM, SIGINT, SIGKILL}) {
    SCOPED_TRACE(sig);
    const fs::path d = lsbtest::temp_dir();
    const fs::path out = d / "out.lsb";
    const std::string exe = lsbtest::lsb_exe();
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::freopen("/dev/null", "w", stdout);
      ::freopen("/dev/null", "w", stderr);
      ::execl(exe.c_str(), exe.c_str(), "compress", bookworm().c_str(), "-o", out.c_str(), "-t", "1", "--scheme", "paper",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Kill as soon as the temporary file exists (compression has started writing).
    const auto t0 = std::chrono::steady_clock::now();
    while (!has_temp_files(d) && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(20))
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    EXPECT_TRUE(has_temp_files(d)) << "no temporary file appeared";
    ::kill(pid, sig);
    int st = 0;
    ::waitpid(pid, &st, 0);
    ASSERT_TRUE(WIFSIGNALED(st)) << "process was not killed (finished first?)";
    EXPECT_EQ(WTERMSIG(st), sig);
    EXPECT_FALSE(fs::exists(out));
    if (sig != SIGKILL) {
      EXPECT_FALSE(has_temp_files(d)) << "temporary file left behind";
    }
  }
}

TEST(CompressFailures, FailingRunsLeaveNothing) {
  const fs::path d = lsbtest::temp_dir();
  const std::string out = (d / "o.lsb").string();
  // A corrupt .lsb as the source fails half way through (at layer 3's checksum), after the
  // output's temporary file was created and tensors were written to it.
  const fs::path good = d / "src.lsb", bad = d / "bad_src.lsb";
  lsb::CompressOptions o;
  o.scheme = "f32";
  lsb::compress_model(stories(), good.string(), o);
  {
    std::string b = slurp(good);
    lsb::format::LsbReader r(good.string());
    const size_t i = static_cast<size_t>(r.find("model.layers.3.mlp.up_proj.weight") - r.tensors().data());
    b[r.entries()[i].data_offset + 10] ^= 0x40;
    std::ofstream(bad, std::ios::binary).write(b.data(), static_cast<std::streamsize>(b.size()));
  }
  struct Case {
    std::string args, message;
  };
  const std::vector<Case> cases = {
      {stories() + " --keep lm_head.weight=q3", "unknown scheme 'q3'"},
      {stories() + " --scheme int4", "unknown scheme 'int4'"},
      {stories() + " --keep 'nothing*=q8'", "matches no matrix"},
      {stories() + " --outlier-ratio 2", "compress options"},
      {(d / "missing.bin").string(), "no such file"},
      {bad.string(), "checksum mismatch in tensor 'model.layers.3.mlp.up_proj.weight'"},
  };
  for (const Case& c : cases) {
    lsbtest::RunResult r = lsbtest::run_lsb("compress " + c.args + " -o " + out);
    EXPECT_EQ(r.exit_code, 1) << c.args;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << ": " << r.err;
    EXPECT_FALSE(fs::exists(out)) << c.args;
    EXPECT_FALSE(has_temp_files(d)) << c.args;
  }
  // The intact .lsb is a valid source too (recompressing it is lossless for f32).
  lsbtest::RunResult ok = lsbtest::run_lsb("compress " + good.string() + " --scheme f32 -o " + out);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_TRUE(fs::exists(out));
}
