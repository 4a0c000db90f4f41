// Faults end cleanly (docs/STREAMING.md, "Faults"): a read error, a short read or a file changed
// underneath a streaming run, a full disk or a file-size limit under compress and synth, and
// SIGTERM/SIGINT during a streaming run or compress each end with one line on stderr and a
// non-zero status (or death by the signal), never a crash, a hang, a partial output file, or a
// result printed as if it were right. Read and write faults are injected by a shim preloaded
// into lsb (tests/faults/fault_shim.cpp); file-size limits by prlimit; signals by kill.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "pipeline/compress.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

// stories260K in lsb1 (every matrix packed, the embedding too), streamed by every test here.
// ctest runs each test in its own process: the file is compressed once per build of this test
// binary and kept beside it (compress_model writes through a temporary file and renames, so
// processes that make it at the same time each see a whole file).
const fs::path& stories_lsb() {
  static const fs::path p = [] {
    const fs::path exe = fs::read_symlink("/proc/self/exe");
    const fs::path out = exe.parent_path() / "fault_fixtures" / "stories_lsb1.lsb";
    std::error_code ec;
    if (fs::exists(out, ec) && fs::last_write_time(out, ec) >= fs::last_write_time(exe, ec)) return out;
    fs::create_directories(out.parent_path(), ec);
    lsb::CompressOptions o;
    o.scheme = "lsb1";
    o.progress = false;
    o.tokenizer_path = LSB_SHARED("models/stories260K/tok512.bin");
    lsb::compress_model(LSB_SHARED("models/stories260K/stories260K.bin"), out.string(), o);
    return out;
  }();
  return p;
}

// Size of a file that may not exist yet (0 then).
uintmax_t size_or_0(const fs::path& p) {
  std::error_code ec;
  const uintmax_t n = fs::file_size(p, ec);
  return ec ? 0 : n;
}

// A private copy of a file (faults that change the file must not touch the shared one).
fs::path copy_of(const fs::path& src) {
  const fs::path d = lsbtest::temp_dir() / src.filename();
  fs::copy_file(src, d);
  return d;
}

std::string shim_env(const std::string& fault, const std::string& path_part) {
  // verify_asan_link_order=0: the sanitizer stage preloads the shim into a sanitized lsb.
  return "LD_PRELOAD=" LSB_FAULT_SHIM " LSB_FAULT=" + fault + " LSB_FAULT_PATH=" + path_part +
         " ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=1";
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s) {
    if (c == '\n') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

// The contract of every fault: status 1 (not a signal), exactly one line on stderr, starting
// "lsb: error: PATH" and containing `problem`; stdout holds no result (--json prints nothing).
void expect_one_line_error(const lsbtest::RunResult& r, const std::string& path, const std::string& problem) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  const auto l = lines(r.err);
  ASSERT_EQ(l.size(), 1u) << r.err;
  EXPECT_EQ(l[0].rfind("lsb: error: " + path, 0), 0u) << l[0];
  EXPECT_NE(l[0].find(problem), std::string::npos) << l[0];
  EXPECT_EQ(r.out, "") << "a result was printed by a failed run";
  std::printf("  message: %s\n", l[0].c_str());
}

std::vector<std::string> listing(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

const std::string kRun = " -p 'Once upon a time' -n 48 --temp 0 --json -t 2 --mem-budget 64M";

}  // namespace

// A streaming run's bytes, for the thresholds below: stories260K lsb1 reads about 40 KB per
// token (every unit), so 100 KB fails a few tokens in, after units were read and used.
TEST(FaultsStreaming, ReadErrorEndsWithOneLine) {
  const fs::path m = stories_lsb();
  auto r = lsbtest::run_lsb("run " + m.string() + kRun, 60, shim_env("read-eio:100000", m.filename().string()));
  expect_one_line_error(r, m.string(), "read failed at offset");
  EXPECT_NE(r.err.find("Input/output error"), std::string::npos);
  // The same while the file is being opened (the streamer's first reads).
  auto early = lsbtest::run_lsb("run " + m.string() + kRun, 60, shim_env("read-eio:0", m.filename().string()));
  expect_one_line_error(early, m.string(), "Input/output error");
  // And under eval (layer-major windows).
  auto ev = lsbtest::run_lsb("eval " + m.string() + " --text " + LSB_SHARED("data/tinystories_valid_1000.txt") +
                                 " --ctx 64 --chunks 4 --json -t 2 --mem-budget 64M",
                             60, shim_env("read-eio:100000", m.filename().string()));
  expect_one_line_error(ev, m.string(), "read failed at offset");
}

// Short reads are legal: the reader loops, and the answer is the same as without them.
TEST(FaultsStreaming, ShortReadsAreRetriedAndChangeNothing) {
  const fs::path m = stories_lsb();
  auto normal = lsbtest::run_lsb("run " + m.string() + kRun);
  ASSERT_EQ(normal.exit_code, 0) << normal.err;
  auto shortr = lsbtest::run_lsb("run " + m.string() + kRun, 60, shim_env("read-short:0", m.filename().string()));
  ASSERT_EQ(shortr.exit_code, 0) << shortr.err;
  EXPECT_EQ(nlohmann::json::parse(shortr.out)["tokens"], nlohmann::json::parse(normal.out)["tokens"]);
}

// A read that returns 0 before the end of what the file is supposed to hold.
TEST(FaultsStreaming, PrematureEndOfFileEndsWithOneLine) {
  const fs::path m = stories_lsb();
  auto r = lsbtest::run_lsb("run " + m.string() + kRun, 60, shim_env("read-eof:100000", m.filename().string()));
  expect_one_line_error(r, m.string(), "end of file");
}

// Truncated by another writer while a run streams it: the next read or the size check after it.
TEST(FaultsStreaming, FileTruncatedWhileStreamingIsDetected) {
  const fs::path m = copy_of(stories_lsb());
  auto r = lsbtest::run_lsb("run " + m.string() + kRun, 60, shim_env("truncate:100000", m.filename().string()));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  ASSERT_EQ(lines(r.err).size(), 1u) << r.err;
  EXPECT_TRUE(r.err.find("changed while it was being streamed") != std::string::npos ||
              r.err.find("end of file") != std::string::npos)
      << r.err;
  EXPECT_EQ(r.out, "");
  std::printf("  message: %s", r.err.c_str());
}

// Rewritten in place (same size): its change time moved, which the check after every read sees.
TEST(FaultsStreaming, FileRewrittenWhileStreamingIsDetected) {
  const fs::path m = copy_of(stories_lsb());
  auto r = lsbtest::run_lsb("run " + m.string() + kRun, 60, shim_env("rewrite:100000", m.filename().string()));
  expect_one_line_error(r, m.string(), "changed while it was being streamed");
}

// Bytes that differ when read again with no change of size or time (a device returning other
// data, a write to the block device under the file system): the checksums of every read catch
// them, for units (checked every time they are read, not only the first) and embedding rows.
TEST(FaultsStreaming, DifferentBytesOnRereadAreCaughtByChecksums) {
  const fs::path m = stories_lsb();
  // Well past the first pass over every unit (48 tokens read the model 49 times).
  auto r = lsbtest::run_lsb("run " + m.string() + kRun, 60, shim_env("read-flip:300000", m.filename().string()));
  expect_one_line_error(r, m.string(), "checksum mismatch in ");
  EXPECT_NE(r.err.find("matched when"), std::string::npos) << r.err;
  // From the first read on: the first unit read is refused.
  auto first = lsbtest::run_lsb("run " + m.string() + kRun, 60, shim_env("read-flip:0", m.filename().string()));
  expect_one_line_error(first, m.string(), "checksum mismatch in ");
}

// Resident runs map the file: a file truncated underneath raises SIGBUS on the next access to a
// page past the new end, which lsb turns into one line and status 1.
TEST(FaultsStreaming, ResidentRunOnTruncatedFileEndsWithOneLine) {
  const fs::path m = copy_of(stories_lsb());
  const fs::path d = lsbtest::temp_dir();
  const std::string cmd = "exec " + lsbtest::lsb_exe() + " run " + m.string() + " -p 'Once upon a time' -n 500 --temp 0 -t 2 >" +
                          (d / "out").string() + " 2>" + (d / "err").string() + " </dev/null";
  const pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_GT(pid, 0);
  // Once it generates, cut the file to its first page: every weight page is gone.
  const auto t0 = std::chrono::steady_clock::now();
  while (size_or_0(d / "out") < 40 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  fs::resize_file(m, 4096);
  int st = 0;
  ASSERT_EQ(waitpid(pid, &st, 0), pid);
  std::ifstream ef(d / "err");
  const std::string err((std::istreambuf_iterator<char>(ef)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(WIFEXITED(st)) << "ended by signal " << WTERMSIG(st) << ": " << err;
  EXPECT_EQ(WEXITSTATUS(st), 1) << err;
  ASSERT_EQ(lines(err).size(), 1u) << err;
  EXPECT_NE(err.find("lsb: error: a memory-mapped model file ended before the data being read"), std::string::npos) << err;
  std::printf("  message: %s", err.c_str());
}

namespace {

// compress / synth output folder with nothing else in it.
fs::path out_dir() { return lsbtest::temp_dir(); }

void expect_nothing_written(const fs::path& dir) {
  EXPECT_EQ(listing(dir), std::vector<std::string>{}) << "left behind in " << dir;
}

}  // namespace

TEST(FaultsWrite, CompressOnFullDiskLeavesNothing) {
  const fs::path d = out_dir();
  const std::string out = (d / "out.lsb").string();
  auto r = lsbtest::run_lsb("compress " + LSB_SHARED("models/stories260K/stories260K.bin") + " --tokenizer " +
                                LSB_SHARED("models/stories260K/tok512.bin") + " -o " + out + " --scheme lsb1 --json",
                            60, shim_env("write-enospc:20000", "out.lsb"));
  expect_one_line_error(r, out, "No space left on device");
  EXPECT_NE(r.err.find("temporary file " + out + ".tmp."), std::string::npos) << r.err;
  expect_nothing_written(d);
}

TEST(FaultsWrite, CompressOverFileSizeLimitLeavesNothing) {
  const fs::path d = out_dir();
  const std::string out = (d / "out.lsb").string();
  // prlimit --fsize: writing past it raises SIGXFSZ, which would kill lsb; lsb ignores it and
  // the write fails with EFBIG.
  const std::string cmd = "prlimit --fsize=20000 " + lsbtest::lsb_exe() + " compress " +
                          LSB_SHARED("models/stories260K/stories260K.bin") + " --tokenizer " +
                          LSB_SHARED("models/stories260K/tok512.bin") + " -o " + out + " --scheme lsb1 --json";
  const fs::path o = lsbtest::temp_dir();
  const int st = std::system((cmd + " >" + (o / "out").string() + " 2>" + (o / "err").string()).c_str());
  lsbtest::RunResult r;
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  std::ifstream fo(o / "out"), fe(o / "err");
  r.out.assign(std::istreambuf_iterator<char>(fo), std::istreambuf_iterator<char>());
  r.err.assign(std::istreambuf_iterator<char>(fe), std::istreambuf_iterator<char>());
  expect_one_line_error(r, out, "File too large");
  expect_nothing_written(d);
}

// synth writes a folder through a temporary folder beside it: on a full disk neither remains.
TEST(FaultsWrite, SynthOnFullDiskLeavesNothing) {
  const fs::path d = out_dir();
  const std::string out = (d / "tiny").string();
  auto r = lsbtest::run_lsb("synth --shape tiny -o " + out + " -t 2 --json", 120,
                            shim_env("write-enospc:1000000", ".safetensors"));
  expect_one_line_error(r, out, "No space left on device");
  EXPECT_NE(r.err.find("temporary folder"), std::string::npos) << r.err;
  expect_nothing_written(d);
}

TEST(FaultsWrite, SynthOverFileSizeLimitLeavesNothing) {
  const fs::path d = out_dir();
  const std::string out = (d / "tiny").string();
  const fs::path o = lsbtest::temp_dir();
  const int st = std::system(("prlimit --fsize=1000000 " + lsbtest::lsb_exe() + " synth --shape tiny -o " + out +
                              " -t 2 --json >" + (o / "out").string() + " 2>" + (o / "err").string())
                                 .c_str());
  lsbtest::RunResult r;
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  std::ifstream fo(o / "out"), fe(o / "err");
  r.out.assign(std::istreambuf_iterator<char>(fo), std::istreambuf_iterator<char>());
  r.err.assign(std::istreambuf_iterator<char>(fe), std::istreambuf_iterator<char>());
  expect_one_line_error(r, out, "File too large");
  expect_nothing_written(d);
}

namespace {

struct Spawned {
  pid_t pid = -1;
  fs::path out, err;
  std::string read_err() const {
    std::ifstream f(err);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
  }
};

// `lsb ARGS` in the background; the pid is lsb's own (sh and env exec into it, and lsb's
// re-execution under --mem-budget keeps it).
Spawned spawn_lsb(const std::string& args) {
  Spawned s;
  const fs::path d = lsbtest::temp_dir();
  s.out = d / "out";
  s.err = d / "err";
  const std::string cmd =
      "exec " + lsbtest::lsb_exe() + " " + args + " >" + s.out.string() + " 2>" + s.err.string() + " </dev/null";
  s.pid = fork();
  if (s.pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  return s;
}

// Waits (at most `limit`) for the process to end; its wait status, or -1 if it did not end.
int wait_end(pid_t pid, std::chrono::seconds limit) {
  const auto t0 = std::chrono::steady_clock::now();
  int st = 0;
  while (std::chrono::steady_clock::now() - t0 < limit) {
    if (waitpid(pid, &st, WNOHANG) == pid) return st;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &st, 0);
  return -1;
}

// Signals a streaming run once it has printed generated text; it must end by that signal within
// 10 s, print one line, and leave no process and no file behind.
void interrupt_streaming_run(int sig, const char* name) {
  const fs::path m = copy_of(stories_lsb());
  const auto before = listing(m.parent_path());
  Spawned s = spawn_lsb("run " + m.string() + " -p 'Once upon a time' -n 500 --temp 0 -t 2 --mem-budget 32M");
  ASSERT_GT(s.pid, 0);
  const auto t0 = std::chrono::steady_clock::now();
  while (size_or_0(s.out) < 40 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(60))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_GE(size_or_0(s.out), 40u) << "no text generated: " << s.read_err();
  ASSERT_EQ(kill(s.pid, sig), 0) << "the run ended before it could be interrupted: " << s.read_err();
  const int st = wait_end(s.pid, std::chrono::seconds(10));
  ASSERT_NE(st, -1) << "still running 10 s after " << name;
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == sig) << "status " << st;
  EXPECT_EQ(s.read_err(), std::string("lsb: interrupted by ") + name + "\n");
  EXPECT_NE(kill(s.pid, 0), 0) << "the process is still there";
  EXPECT_EQ(listing(m.parent_path()), before);
  std::printf("  message: %s", s.read_err().c_str());
}

}  // namespace

TEST(FaultsSignals, SigtermDuringStreamingRun) { interrupt_streaming_run(SIGTERM, "SIGTERM"); }
TEST(FaultsSignals, SigintDuringStreamingRun) { interrupt_streaming_run(SIGINT, "SIGINT"); }

// Interrupted while writing its output: the temporary file goes, the target never appears.
TEST(FaultsSignals, SigtermDuringCompressRemovesTheTemporaryFile) {
  const fs::path d = out_dir();
  const std::string out = (d / "bw.lsb").string();
  Spawned s = spawn_lsb("compress " + LSB_SHARED("models/bookworm-27m") + " -o " + out + " --scheme lsb1 -t 1 --json");
  ASSERT_GT(s.pid, 0);
  // Once the temporary file holds some tensors.
  const auto t0 = std::chrono::steady_clock::now();
  auto temp_bytes = [&] {
    for (const auto& e : fs::directory_iterator(d))
      if (e.path().filename().string().find(".tmp.") != std::string::npos) return fs::file_size(e.path());
    return uintmax_t{0};
  };
  while (temp_bytes() < 100000 && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_GE(temp_bytes(), 100000u) << s.read_err();
  ASSERT_EQ(kill(s.pid, SIGTERM), 0) << "compress ended before it could be interrupted";
  const int st = wait_end(s.pid, std::chrono::seconds(10));
  ASSERT_NE(st, -1);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM) << "status " << st;
  const std::string err = s.read_err();
  EXPECT_EQ(err.rfind("lsb: interrupted by SIGTERM; removed the unfinished " + out + ".tmp.", 0), 0u) << err;
  EXPECT_EQ(lines(err).size(), 1u) << err;
  expect_nothing_written(d);
  std::printf("  message: %s", err.c_str());
}
