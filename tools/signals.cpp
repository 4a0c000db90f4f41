#include "signals.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdint>
#include <cstring>

namespace lsb::cli {
namespace {

// Read by the handler, which may only use async-signal-safe calls (write, unlink, open, the
// getdents64 system call, rmdir, signal, raise).
char g_temp[4096];
volatile std::sig_atomic_t g_temp_set = 0;

void say(const char* s) {
  size_t n = std::strlen(s);
  while (n > 0) {
    const ssize_t w = ::write(2, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<size_t>(w);
  }
}

// Removes the plain files in `dir` and then `dir` (synth's temporary folder has no subfolders).
void remove_flat_dir(const char* dir) {
  const int fd = ::open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  alignas(8) char buf[4096];
  for (;;) {
    const long n = ::syscall(SYS_getdents64, fd, buf, sizeof buf);
    if (n <= 0) break;
    for (long off = 0; off < n;) {
      struct Dirent {
        uint64_t ino;
        int64_t off;
        unsigned short reclen;
        unsigned char type;
        char name[1];
      };
      const auto* d = reinterpret_cast<const Dirent*>(buf + off);
      if (std::strcmp(d->name, ".") != 0 && std::strcmp(d->name, "..") != 0) ::unlinkat(fd, d->name, 0);
      off += d->reclen;
    }
  }
  ::close(fd);
  ::rmdir(dir);
}

extern "C" void on_stop_signal(int sig) {
  const char* name = sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGHUP";
  say("lsb: interrupted by ");
  say(name);
  if (g_temp_set) {
    if (::unlink(g_temp) != 0) remove_flat_dir(g_temp);
    say("; removed the unfinished ");
    say(g_temp);
  }
  say("\n");
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

extern "C" void on_sigbus(int, siginfo_t* info, void*) {
  // SIGBUS goes to the thread that touched the page: with several threads computing, several
  // arrive at once. The first one reports and ends the process; the others wait for that.
  static std::atomic<bool> reported{false};
  static_assert(std::atomic<bool>::is_always_lock_free, "used from a signal handler");
  if (reported.exchange(true))
    for (;;) ::pause();
  say("lsb: error: a memory-mapped model file ended before the data being read (was it truncated while in use?)");
  if (info && info->si_code != BUS_ADRERR) say(" [SIGBUS]");
  say("\n");
  if (g_temp_set && ::unlink(g_temp) != 0) remove_flat_dir(g_temp);
  ::_exit(1);
}

}  // namespace

void install_signal_handlers() {
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) std::signal(sig, on_stop_signal);
  std::signal(SIGXFSZ, SIG_IGN);
  struct sigaction sa {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGBUS, &sa, nullptr);
}

void track_temp_path(const std::string& path) {
  g_temp_set = 0;
  if (path.empty() || path.size() >= sizeof g_temp) return;
  std::atomic_signal_fence(std::memory_order_seq_cst);  // the handler never sees a half-copied path
  std::memcpy(g_temp, path.c_str(), path.size() + 1);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  g_temp_set = 1;
}

}  // namespace lsb::cli
