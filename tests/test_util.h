// Helpers shared by tests: paths to ../shared, temp dirs, running the lsb CLI.
#pragma once
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "pipeline/open_model.h"

namespace lsbtest {

// A model on a source's weights, resident or (opt.mem_budget > 0) streamed, without a tokenizer.
lsb::Session session_on(std::shared_ptr<lsb::TensorSource> src, const lsb::RunOptions& opt = {});
lsb::Session session_on(const std::string& model_path, const lsb::RunOptions& opt = {});
// Every tensor of a source expanded to F32 in memory: the dequantized reference that packed
// kernels are compared with.
std::shared_ptr<lsb::TensorSource> dequantized(std::shared_ptr<lsb::TensorSource> src);


std::string lsb_exe();                       // the lsb executable the tests run (LSB_TEST_EXE overrides)
std::string shared(const std::string& rel);  // LSB_SHARED_DIR/rel; FAILs the test naming the file if missing
std::filesystem::path temp_dir();            // fresh directory, removed at process exit

struct RunResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
  double seconds = 0;
};
// Runs `lsb ARGS` (args already shell-quoted as needed), capturing stdout and stderr, with a
// time limit (kills and fails after timeout_s).
// `env`: arguments for env(1) before the command (e.g. "-u VAR NAME=value"), empty for none.
RunResult run_lsb(const std::string& args, int timeout_s = 120, const std::string& env = "");

}  // namespace lsbtest

// Skips nothing: a missing shared file is a failure that names the file.
#define LSB_SHARED(rel) ::lsbtest::shared(rel)
