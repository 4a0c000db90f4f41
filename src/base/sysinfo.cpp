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

ProcessMemory process_memory() {
  ProcessMemory m;
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return m;
  char line[256];
  while (std::fgets(line, sizeof line, f)) {
    unsigned long long kib = 0;
    char key[32];
    if (std::sscanf(line, "%31[^:]: %llu kB", key, &kib) != 2) continue;
    const uint64_t b = static_cast<uint64_t>(kib) * 1024;
    if (!std::strcmp(key, "VmRSS")) m.rss = b;
    else if (!std::strcmp(key, "VmHWM")) m.peak = b;
    else if (!std::strcmp(key, "RssAnon")) m.anon = b;
    else if (!std::strcmp(key, "RssFile")) m.file = b;
    else if (!std::strcmp(key, "RssShmem")) m.shmem = b;
  }
  std::fclose(f);
  return m;
}

uint64_t file_mapped_not_resident_bytes(const std::vector<std::string>& skip) {
  FILE* f = std::fopen("/proc/self/smaps", "r");
  if (!f) return 0;
  uint64_t total = 0, size = 0;
  bool counted = false;  // the current mapping is file-backed and not excluded
  char line[4096];
  while (std::fgets(line, sizeof line, f)) {
    unsigned long long lo = 0, hi = 0, inode = 0, kib = 0;
    char path[4096] = "";
    int n = 0;
    // "start-end perms offset dev inode [path]": a new mapping
    if (std::sscanf(line, "%llx-%llx %*s %*s %*s %llu %n", &lo, &hi, &inode, &n) == 3) {
      std::sscanf(line + n, "%4095[^\n]", path);
      counted = inode != 0 && path[0] == '/';
      for (const std::string& k : skip) counted = counted && std::strstr(path, k.c_str()) == nullptr;
      size = hi - lo;
      continue;
    }
    if (counted && std::sscanf(line, "Rss: %llu kB", &kib) == 1) {
      const uint64_t rss = static_cast<uint64_t>(kib) * 1024;
      total += size > rss ? size - rss : 0;
      counted = false;
    }
  }
  std::fclose(f);
  return total;
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
