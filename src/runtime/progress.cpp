#include "runtime/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace lsb {

bool ProgressBar::stderr_is_tty() { return ::isatty(STDERR_FILENO) == 1; }

ProgressBar::ProgressBar(std::string label, long long total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled && stderr_is_tty()),
      start_(std::chrono::steady_clock::now()) {}

ProgressBar::~ProgressBar() { finish(); }

static std::string hms(double s) {
  const long t = static_cast<long>(s + 0.5);
  return t >= 3600 ? fmt::format("{}h{:02}m", t / 3600, t / 60 % 60) : fmt::format("{}m{:02}s", t / 60, t % 60);
}

void ProgressBar::update(long long done, const std::string& extra) {
  if (!enabled_ || finished_) return;
  const auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double el = std::chrono::duration<double>(now - start_).count();
  const double frac = total_ > 0 ? static_cast<double>(done) / static_cast<double>(total_) : 1.0;
  const int width = 30, fill = static_cast<int>(frac * width);
  const std::string bar = std::string(fill, '=') + (fill < width ? ">" : "") + std::string(width - std::min(width, fill + 1), ' ');
  const std::string eta = done > 0 && done < total_ ? " ETA " + hms(el / frac - el) : "";
  std::fprintf(stderr, "\r%s [%s] %lld/%lld %s%s %s\x1b[K", label_.c_str(), bar.c_str(), done, total_,
               hms(el).c_str(), eta.c_str(), extra.c_str());
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  std::fprintf(stderr, "\n");
}

}  // namespace lsb
