// Layer streaming under --mem-budget: same logits as resident mode, refusal of budgets that
// cannot work (naming the minimum), and peak RSS within the budget, measured by the OS.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <utility>
#include <regex>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "model/llama_model.h"
#include "runtime/layer_streamer.h"
#include "pipeline/open_model.h"
#include "runtime/threads.h"
#include "test_util.h"

namespace {

// bookworm-27m compressed once per test process (lsb1 everywhere: the smallest file).
const std::string& bookworm_lsb() {
  static const std::string path = [] {
    const std::string out = (lsbtest::temp_dir() / "bookworm-lsb1.lsb").string();
    auto r = lsbtest::run_lsb("compress " + LSB_SHARED("models/bookworm-27m") + " -o " + out + " --scheme lsb1 -t 2", 300);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return out;
  }();
  return path;
}

std::vector<float> all_logits(lsb::LlamaModel& m, const std::vector<int>& toks) {
  const int n = static_cast<int>(toks.size()), vocab = m.config().vocab_size;
  std::vector<float> out(static_cast<size_t>(n) * vocab);
  m.reset(n + 8);
  m.forward(toks.data(), n, 0, out.data(), 0);
  // then a few single-token steps, the decode path
  std::vector<float> one(vocab);
  for (int i = 0; i < 4; ++i) {
    m.forward(&toks[i], 1, n + i, one.data(), 0);
    out.insert(out.end(), one.begin(), one.end());
  }
  return out;
}

}  // namespace

TEST(Streaming, SameLogitsAsResidentBitForBit) {
  lsb::set_threads(2);
  const std::vector<int> toks = {1, 337, 6228, 1974, 273, 265, 436, 4067, 7967, 2450, 323, 286, 1125, 1659};
  lsb::Session rs = lsbtest::session_on(bookworm_lsb());
  ASSERT_EQ(rs.streamer, nullptr);
  const auto a = all_logits(*rs.model, toks);
  // Both pipelines: two slots (read and build in turn) and three (reading overlaps building);
  // then three with --drop-page-cache, which reads with O_DIRECT where the filesystem allows it.
  for (auto [slots, drop] : {std::pair{2, false}, std::pair{3, false}, std::pair{3, true}}) {
    lsb::RunOptions opt;
    // Generous: this checks equality, and the test process may already hold other tests' memory
    // (the budget counts the whole process). The budget itself is checked from the CLI below.
    opt.mem_budget = 1ull << 30;
    opt.max_stream_slots = slots;
    opt.drop_page_cache = drop;
    lsb::Session ss = lsbtest::session_on(bookworm_lsb(), opt);
    ASSERT_NE(ss.streamer, nullptr);
    lsb::LlamaModel& streamed = *ss.model;
    // Twice: the second pass is served by the prefetch pipeline started in the first.
    for (int pass = 0; pass < 2; ++pass) {
      const auto b = all_logits(streamed, toks);
      EXPECT_EQ(ss.streamer->slots(), slots);
      ASSERT_EQ(a.size(), b.size());
      for (size_t i = 0; i < a.size(); ++i)
        ASSERT_EQ(a[i], b[i]) << slots << " slots, drop " << drop << ", pass " << pass << ", logit " << i;
    }
    // Everything the Linear objects built fitted in the arenas the budget was computed from.
    EXPECT_EQ(ss.streamer->arena_overflow_bytes(), 0u);
    // Every unit was read from the file at least once per pass.
    EXPECT_GE(ss.streamer->bytes_read(), 2 * streamed.weight_bytes_per_token() - 1);
    if (drop && !ss.streamer->direct_io())
      std::printf("note: %s does not support O_DIRECT; the buffered fallback was tested\n", bookworm_lsb().c_str());
  }
}

// The default recipe mixes q8, paper and the dense norms; its arenas must be sized exactly too.
TEST(Streaming, DefaultRecipeFitsItsArenasAndMatchesResident) {
  lsb::set_threads(2);
  const std::string path = (lsbtest::temp_dir() / "bookworm-default.lsb").string();
  auto r = lsbtest::run_lsb("compress " + LSB_SHARED("models/bookworm-27m") + " -o " + path + " -t 2", 300);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::vector<int> toks = {1, 450, 1701, 3902, 292};
  lsb::Session rs = lsbtest::session_on(path);
  lsb::RunOptions opt;
  opt.mem_budget = 1ull << 30;
  lsb::Session ss = lsbtest::session_on(path, opt);
  EXPECT_EQ(all_logits(*rs.model, toks), all_logits(*ss.model, toks));
  EXPECT_EQ(ss.streamer->slots(), 3);
  EXPECT_EQ(ss.streamer->arena_overflow_bytes(), 0u);
}

TEST(Streaming, TooSmallBudgetIsRefusedWithTheMinimum) {
  auto r = lsbtest::run_lsb("run " + bookworm_lsb() + " -p Hello -n 4 --temp 0 --mem-budget 4M");
  EXPECT_EQ(r.exit_code, 1);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.err, m, std::regex("needs at least ([0-9]+) MiB"))) << r.err;
  const int need = std::stoi(m[1]);
  EXPECT_GT(need, 4);
  EXPECT_NE(r.err.find("KV cache"), std::string::npos);
  // The minimum it names is enough.
  auto ok = lsbtest::run_lsb("run " + bookworm_lsb() + " -p Hello -n 4 --temp 0 --mem-budget " + std::to_string(need + 1) + "M");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  // Streaming needs a .lsb file.
  auto hf = lsbtest::run_lsb("run " + LSB_SHARED("models/bookworm-27m") + " -p Hello -n 4 --mem-budget 100M");
  EXPECT_EQ(hf.exit_code, 1);
  EXPECT_NE(hf.err.find(".lsb"), std::string::npos);
}

TEST(Streaming, PeakRssStaysWithinBudgetAndTextMatches) {
  // Above the minimum lsb names for this file (27 MiB: two weight slots, KV, activations and the
  // process itself as measured, docs/STREAMING.md).
  const std::string budget = "32M";
  const auto dir = lsbtest::temp_dir();
  const std::string time_out = (dir / "time.txt").string();
  auto r = lsbtest::run_lsb("run " + bookworm_lsb() + " -p \"It is a truth\" -n 24 --temp 0 --json --mem-budget " + budget);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto resident = lsbtest::run_lsb("run " + bookworm_lsb() + " -p \"It is a truth\" -n 24 --temp 0 --json");
  ASSERT_EQ(resident.exit_code, 0) << resident.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["tokens"], nlohmann::json::parse(resident.out)["tokens"]);
  // Peak RSS from the OS: /usr/bin/time -v around the same command.
  const std::string cmd = "/usr/bin/time -f %M -o " + time_out + " " + lsbtest::lsb_exe() + " run " + bookworm_lsb() +
                          " -p Hi -n 24 --temp 0 --mem-budget " + budget + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream f(time_out);
  long kib = 0;
  f >> kib;
  EXPECT_GT(kib, 1000);
  EXPECT_LE(kib * 1024L, 32L << 20) << "peak RSS " << kib << " KiB over the 32 MiB budget";
}

TEST(Streaming, OpenMpSpinIsBoundedUnlessTheUserChose) {
  const std::string args = "bench " + bookworm_lsb() + " --prompt-tokens 2 --decode-tokens 2 --reps 1 --json";
  auto streamed = lsbtest::run_lsb(args + " --mem-budget 100M", 60, "-u GOMP_SPINCOUNT -u OMP_WAIT_POLICY");
  ASSERT_EQ(streamed.exit_code, 0) << streamed.err;
  EXPECT_EQ(nlohmann::json::parse(streamed.out).value("gomp_spincount", ""), "10000");
  // The user's own policy wins, and resident runs keep libgomp's default.
  auto chosen = lsbtest::run_lsb("bench " + bookworm_lsb() + " --prompt-tokens 2 --decode-tokens 2 --reps 1 --json --mem-budget 100M",
                                 60, "OMP_WAIT_POLICY=active");
  ASSERT_EQ(chosen.exit_code, 0) << chosen.err;
  EXPECT_FALSE(nlohmann::json::parse(chosen.out).contains("gomp_spincount"));
  auto resident = lsbtest::run_lsb(args, 60, "-u GOMP_SPINCOUNT -u OMP_WAIT_POLICY");
  ASSERT_EQ(resident.exit_code, 0) << resident.err;
  EXPECT_FALSE(nlohmann::json::parse(resident.out).contains("gomp_spincount"));
}

// eval streams layer-major (the whole window through a layer before the next is read): the
// perplexity is the resident one to the last bit, and each layer is read once per window.
TEST(Streaming, EvalIsIdenticalToResidentAndReadsEachLayerOncePerWindow) {
  const std::string args = "eval " + bookworm_lsb() + " --text " + LSB_SHARED("data/bookworm_valid.txt") +
                           " --ctx 128 --chunks 3 --json -t 2";
  auto resident = lsbtest::run_lsb(args);
  // A generous budget: this checks equality (and runs under ASan, whose process is larger).
  auto streamed = lsbtest::run_lsb(args + " --mem-budget 1G");
  ASSERT_EQ(resident.exit_code, 0) << resident.err;
  ASSERT_EQ(streamed.exit_code, 0) << streamed.err;
  const auto r = nlohmann::json::parse(resident.out), s = nlohmann::json::parse(streamed.out);
  EXPECT_EQ(r["n_scored"], s["n_scored"]);
  EXPECT_EQ(r["mean_nll"].get<double>(), s["mean_nll"].get<double>());
  EXPECT_EQ(r["ppl"].get<double>(), s["ppl"].get<double>());

  // In process: three windows of 128 tokens read the model three times (plus the prefetch of
  // at most two units), not 384 times.
  lsb::RunOptions opt;
  opt.mem_budget = 1ull << 30;
  lsb::Session ss = lsbtest::session_on(bookworm_lsb(), opt);
  lsb::LlamaModel& m = *ss.model;
  const int vocab = m.config().vocab_size;
  std::vector<int> window(128, 300);
  window[0] = 1;
  std::vector<float> logits(static_cast<size_t>(128) * vocab);
  for (int w = 0; w < 3; ++w) {
    m.reset(128);
    m.forward(window.data(), 128, 0, logits.data(), 0);
  }
  EXPECT_LE(ss.streamer->bytes_read(), 4 * m.weight_bytes_per_token());
  EXPECT_GE(ss.streamer->bytes_read(), 3 * m.weight_bytes_per_token() - 3 * 4096);
}

namespace {

// Drops the file from the page cache (any user may for a file it can read), so the next run
// reads it from the disk.
void drop_from_page_cache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path;
  ::fdatasync(fd);
  EXPECT_EQ(::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
  ::close(fd);
}

// Peak RSS in KiB of `lsb ARGS` as the OS reports it (/usr/bin/time), and its exit status.
std::pair<long, int> measured_peak_kib(const std::string& args) {
  const std::string out = (lsbtest::temp_dir() / "time.txt").string();
  const std::string cmd = "/usr/bin/time -f %M -o " + out + " " + lsbtest::lsb_exe() + " " + args + " >/dev/null 2>&1";
  const int st = std::system(cmd.c_str());
  std::ifstream f(out);
  std::string line, last;
  while (std::getline(f, line))
    if (!line.empty()) last = line;  // "Command exited with non-zero status N" comes first
  return {last.empty() ? -1 : std::stol(last), WIFEXITED(st) ? WEXITSTATUS(st) : 128};
}

}  // namespace

// The budget holds by construction at its tightest: each command (run, eval, bench), at 1 and 2
// threads, with the file's pages dropped from the page cache and right after a resident run of
// the same command (file cached), runs at exactly the minimum lsb names for it, and the peak
// RSS the OS measures stays within it. (Before the process was measured when the model first
// sizes its buffers, every one of these went over by 0.2 to 2.1 MiB.) The long version, with
// the synthetic tinyllama-1.1b, more budgets and a loaded machine: bench/budget_stress.sh.
TEST(StreamingBudget, PeakWithinTheNamedMinimumColdAndWarm) {
  const std::string m = bookworm_lsb();
  const std::string text = (lsbtest::temp_dir() / "text.txt").string();
  {
    std::ifstream in(LSB_SHARED("data/bookworm_valid.txt"));
    std::string t(20000, '\0');
    in.read(t.data(), static_cast<std::streamsize>(t.size()));
    t.resize(static_cast<size_t>(in.gcount()));
    std::ofstream(text) << t;
  }
  const std::vector<std::string> commands = {"run " + m + " -p \"It is a truth\" -n 24 --temp 0",
                                             "eval " + m + " --text " + text + " --ctx 128 --chunks 2",
                                             "bench " + m + " --prompt-tokens 16 --decode-tokens 16 --reps 1"};
  int runs = 0;
  long max_kib = 0;
  for (const std::string& c : commands)
    for (int threads : {1, 2}) {
      const std::string cmd = c + " -t " + std::to_string(threads);
      auto probe = lsbtest::run_lsb(cmd + " --mem-budget 1M");
      std::smatch mm;
      ASSERT_TRUE(std::regex_search(probe.err, mm, std::regex("needs at least ([0-9]+) MiB"))) << probe.err;
      const long budget_mib = std::stol(mm[1]);
      for (bool cold : {true, false}) {
        if (cold) {
          drop_from_page_cache(m);
        } else {
          auto resident = lsbtest::run_lsb(cmd);
          ASSERT_EQ(resident.exit_code, 0) << resident.err;
        }
        const auto [kib, status] = measured_peak_kib(cmd + " --mem-budget " + std::to_string(budget_mib) + "M");
        ++runs;
        max_kib = std::max(max_kib, kib);
        EXPECT_EQ(status, 0) << cmd << " at its minimum " << budget_mib << " MiB failed";
        EXPECT_GT(kib, 1000);
        EXPECT_LE(kib, budget_mib * 1024) << cmd << (cold ? " (cold)" : " (after a resident run)") << ": peak " << kib
                                          << " KiB over the " << budget_mib << " MiB budget";
      }
    }
  std::printf("%d runs at the named minimum, max peak %.1f MiB\n", runs, static_cast<double>(max_kib) / 1024);
}
