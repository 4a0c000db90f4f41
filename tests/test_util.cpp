#include "test_util.h"

#include <cstdlib>

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "base/error.h"
#include "quant/scheme.h"

namespace fs = std::filesystem;

namespace lsbtest {

std::string lsb_exe() {
  // The sanitizer stages run in-process tests built with the sanitizer and the CLI of the normal
  // build: LSB_TEST_EXE names it.
  const char* e = std::getenv("LSB_TEST_EXE");
  return e && *e ? e : LSB_EXE;
}

std::string shared(const std::string& rel) {
  fs::path p = fs::path(LSB_SHARED_DIR) / rel;
  if (!fs::exists(p)) ADD_FAILURE() << "required shared file is missing: " << p.string();
  return p.string();
}

namespace {
struct TempRoot {
  fs::path root;
  TempRoot() {
    std::random_device rd;
    root = fs::temp_directory_path() / ("lsb_test_" + std::to_string(::getpid()) + "_" + std::to_string(rd()));
    fs::create_directories(root);
  }
  ~TempRoot() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
};
TempRoot& temp_root() {
  static TempRoot r;
  return r;
}
std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
}  // namespace

fs::path temp_dir() {
  static int counter = 0;
  // (Not "d" + std::to_string(...): g++ 12 warns about that with a false -Wrestrict.)
  std::string name = std::to_string(counter++);
  name.insert(name.begin(), 'd');
  fs::path d = temp_root().root / name;
  fs::create_directories(d);
  return d;
}

RunResult run_lsb(const std::string& args, int timeout_s, const std::string& env) {
  fs::path d = temp_dir();
  std::string cmd = (env.empty() ? std::string() : "env " + env + " ") + "timeout -s KILL " + std::to_string(timeout_s) + " " + lsb_exe() + " " + args +
                    " >" + (d / "out").string() + " 2>" + (d / "err").string() + " </dev/null";
  auto t0 = std::chrono::steady_clock::now();
  int st = std::system(cmd.c_str());
  RunResult r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  r.exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  r.out = slurp(d / "out");
  r.err = slurp(d / "err");
  return r;
}

namespace {
class DequantizedSource final : public lsb::TensorSource {
 public:
  explicit DequantizedSource(std::shared_ptr<lsb::TensorSource> src) : src_(std::move(src)) {
    for (const auto& t : src_->tensors()) {
      lsb::TensorInfo f = t;
      f.dtype = lsb::DType::F32;
      f.nbytes = static_cast<uint64_t>(t.numel()) * 4;
      f.params.clear();
      infos_.push_back(f);
      data_.push_back(lsb::quant::tensor_to_float(t, src_->data(t)));
    }
  }
  const lsb::ModelConfig& config() const override { return src_->config(); }
  const std::vector<lsb::TensorInfo>& tensors() const override { return infos_; }
  std::span<const std::byte> data(const lsb::TensorInfo& t) const override {
    for (size_t i = 0; i < infos_.size(); ++i)
      if (infos_[i].name == t.name)
        return {reinterpret_cast<const std::byte*>(data_[i].data()), data_[i].size() * 4};
    throw lsb::Error("no tensor " + t.name);
  }
  std::string describe() const override { return src_->describe() + " (dequantized)"; }
  std::string_view format_name() const override { return "dequantized"; }

 private:
  std::shared_ptr<lsb::TensorSource> src_;
  std::vector<lsb::TensorInfo> infos_;
  std::vector<std::vector<float>> data_;
};
}  // namespace

std::shared_ptr<lsb::TensorSource> dequantized(std::shared_ptr<lsb::TensorSource> src) {
  return std::make_shared<DequantizedSource>(std::move(src));
}

lsb::Session session_on(std::shared_ptr<lsb::TensorSource> src, const lsb::RunOptions& opt) {
  return lsb::open_session(std::move(src), "", /*need_tokenizer=*/false, opt);
}

lsb::Session session_on(const std::string& model_path, const lsb::RunOptions& opt) {
  return session_on(std::shared_ptr<lsb::TensorSource>(lsb::open_model(model_path)), opt);
}

}  // namespace lsbtest
