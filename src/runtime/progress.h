// A one-line progress bar on stderr, drawn only when stderr is a terminal.
#pragma once
#include <chrono>
#include <string>

namespace lsb {

class ProgressBar {
 public:
  ProgressBar(std::string label, long long total, bool enabled = true);
  ~ProgressBar();
  // done units of total; extra text (e.g. "PPL 24.6" or "38 MB/s") shown after the bar.
  void update(long long done, const std::string& extra = "");
  void finish();
  static bool stderr_is_tty();

 private:
  std::string label_;
  long long total_;
  bool enabled_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace lsb
