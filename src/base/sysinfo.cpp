#include "base/sysinfo.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

namespace lsb {

uint64_t peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_maxrss) * 1024;  // Linux reports KiB
}

uint64_t current_rss_bytes() {
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long long size = 0, resident = 0;
  const int got = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  return got == 2 ? resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) : 0;
}

static double memcpy_gbps_here(uint64_t bytes, int reps) {
  std::vector<char> a(bytes, 1), b(bytes, 2);
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    std::memcpy(b.data(), a.data(), bytes);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * static_cast<double>(bytes) / s / 1e9);
    a[r] = b[bytes - 1 - r];  // keep the copies observable
  }
  return best;
}

double measure_memcpy_gbps(uint64_t bytes, int reps) {
  // In a child process, so its buffers never count toward this process's peak RSS.
  int fds[2];
  if (::pipe(fds) != 0) return memcpy_gbps_here(bytes, reps);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    const double v = memcpy_gbps_here(bytes, reps);
    const ssize_t w = ::write(fds[1], &v, sizeof v);
    ::_exit(w == static_cast<ssize_t>(sizeof v) ? 0 : 1);
  }
  ::close(fds[1]);
  double v = 0;
  if (pid < 0 || ::read(fds[0], &v, sizeof v) != static_cast<ssize_t>(sizeof v)) v = 0;
  ::close(fds[0]);
  if (pid > 0) ::waitpid(pid, nullptr, 0);
  return v;
}

}  // namespace lsb
