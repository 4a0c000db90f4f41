// Fault injection for tests, preloaded into `lsb` (LD_PRELOAD), never linked into it: the normal
// read and write paths stay exactly as they are. Configured by the environment:
//   LSB_FAULT       KIND:BYTES   the fault and after how many bytes of I/O on matching files
//   LSB_FAULT_PATH  SUBSTRING    files whose path (as opened) contains it are matching
// KINDs, on reads (pread) of a matching file, once BYTES bytes have been asked for:
//   read-eio    the read fails with EIO (a failing disk)
//   read-eof    the read returns 0, as if the file ended there
//   read-short  every read returns at most half of what was asked (legal: callers must loop)
//   read-flip   the read returns the file's bytes with one bit flipped (a disk returning wrong
//               data, or a write to the device that bypassed the file system: no metadata change)
//   truncate    before that read, the file is truncated to half its size (as another process would)
//   rewrite     before that read, 4 KiB in the middle of the file are overwritten (same size)
// and on writes (write, pwrite) to a matching file, once BYTES bytes were written:
//   write-enospc  the write is cut at BYTES, then every write fails with ENOSPC (a full disk)
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>

namespace {

enum Kind { kNone, kReadEio, kReadEof, kReadShort, kReadFlip, kTruncate, kRewrite, kWriteEnospc };

Kind g_kind = kNone;
long long g_after = 0;
char g_substr[1024];
char g_path[4096];  // the matching file first opened, for truncate and rewrite
constexpr int kMaxFd = 4096;
std::atomic<bool> g_match[kMaxFd];
std::atomic<long long> g_read{0}, g_written{0};
std::atomic<bool> g_acted{false};

template <class F>
F real(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

__attribute__((constructor)) void init() {
  const char* f = std::getenv("LSB_FAULT");
  const char* p = std::getenv("LSB_FAULT_PATH");
  if (!f || !p || !*p) return;
  const char* colon = std::strchr(f, ':');
  if (!colon) return;
  const size_t n = static_cast<size_t>(colon - f);
  static const struct { const char* name; Kind kind; } kinds[] = {
      {"read-eio", kReadEio}, {"read-eof", kReadEof}, {"read-short", kReadShort}, {"read-flip", kReadFlip},
      {"truncate", kTruncate}, {"rewrite", kRewrite}, {"write-enospc", kWriteEnospc}};
  for (const auto& k : kinds)
    if (std::strlen(k.name) == n && std::strncmp(f, k.name, n) == 0) g_kind = k.kind;
  g_after = std::atoll(colon + 1);
  std::strncpy(g_substr, p, sizeof g_substr - 1);
}

void opened(int fd, const char* path) {
  if (g_kind == kNone || fd < 0 || fd >= kMaxFd || !path || !std::strstr(path, g_substr)) return;
  g_match[fd] = true;
  if (!g_path[0]) std::strncpy(g_path, path, sizeof g_path - 1);
}

bool matching(int fd) { return g_kind != kNone && fd >= 0 && fd < kMaxFd && g_match[fd].load(); }

// Reads of a matching file: the fault, or the real pread.
ssize_t faulty_pread(int fd, void* buf, size_t count, off_t off, ssize_t (*next)(int, void*, size_t, off_t)) {
  if (!matching(fd) || g_kind == kWriteEnospc) return next(fd, buf, count, off);
  const long long before = g_read.fetch_add(static_cast<long long>(count));
  if (before + static_cast<long long>(count) <= g_after) return next(fd, buf, count, off);
  switch (g_kind) {
    case kReadEio: errno = EIO; return -1;
    case kReadEof: return 0;
    case kReadShort: return next(fd, buf, count > 1 ? count / 2 : count, off);
    case kReadFlip: {
      const ssize_t r = next(fd, buf, count, off);
      if (r > 0) static_cast<unsigned char*>(buf)[r / 2] ^= 0x10;
      return r;
    }
    case kTruncate:
    case kRewrite:
      if (!g_acted.exchange(true)) {
        struct stat st {};
        if (::stat(g_path, &st) == 0) {
          if (g_kind == kTruncate) {
            if (::truncate(g_path, st.st_size / 2) != 0) std::abort();
          } else {
            const int w = ::open(g_path, O_WRONLY | O_CLOEXEC);
            char junk[4096];
            std::memset(junk, 0x5A, sizeof junk);
            if (w < 0 || ::pwrite(w, junk, sizeof junk, st.st_size / 2) != static_cast<ssize_t>(sizeof junk)) std::abort();
            ::close(w);
          }
        }
      }
      return next(fd, buf, count, off);
    default: return next(fd, buf, count, off);
  }
}

// Writes to a matching file: cut at the limit, then ENOSPC.
template <class Write>
ssize_t faulty_write(int fd, size_t count, Write&& write_n) {
  if (!matching(fd) || g_kind != kWriteEnospc) return write_n(count);
  const long long before = g_written.load();
  if (before >= g_after) {
    errno = ENOSPC;
    return -1;
  }
  const size_t allowed = static_cast<size_t>(std::min<long long>(static_cast<long long>(count), g_after - before));
  const ssize_t r = write_n(allowed);
  if (r > 0) g_written += r;
  return r;
}

using OpenFn = int (*)(const char*, int, ...);
using OpenatFn = int (*)(int, const char*, int, ...);
using PreadFn = ssize_t (*)(int, void*, size_t, off_t);
using WriteFn = ssize_t (*)(int, const void*, size_t);
using PwriteFn = ssize_t (*)(int, const void*, size_t, off_t);

mode_t mode_arg(int flags, va_list ap) {
  return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? static_cast<mode_t>(va_arg(ap, int)) : 0;
}

}  // namespace

extern "C" {

int open(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  static const auto next = real<OpenFn>("open");
  const int fd = next(path, flags, mode);
  opened(fd, path);
  return fd;
}

int open64(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  static const auto next = real<OpenFn>("open64");
  const int fd = next(path, flags, mode);
  opened(fd, path);
  return fd;
}

int openat(int dir, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  const mode_t mode = mode_arg(flags, ap);
  va_end(ap);
  static const auto next = real<OpenatFn>("openat");
  const int fd = next(dir, path, flags, mode);
  opened(fd, path);
  return fd;
}

int close(int fd) {
  if (fd >= 0 && fd < kMaxFd) g_match[fd] = false;
  static const auto next = real<int (*)(int)>("close");
  return next(fd);
}

ssize_t pread(int fd, void* buf, size_t count, off_t off) {
  static const auto next = real<PreadFn>("pread");
  return faulty_pread(fd, buf, count, off, next);
}

ssize_t pread64(int fd, void* buf, size_t count, off_t off) {
  static const auto next = real<PreadFn>("pread64");
  return faulty_pread(fd, buf, count, off, next);
}

ssize_t write(int fd, const void* buf, size_t count) {
  static const auto next = real<WriteFn>("write");
  return faulty_write(fd, count, [&](size_t n) { return next(fd, buf, n); });
}

ssize_t pwrite(int fd, const void* buf, size_t count, off_t off) {
  static const auto next = real<PwriteFn>("pwrite");
  return faulty_write(fd, count, [&](size_t n) { return next(fd, buf, n, off); });
}

ssize_t pwrite64(int fd, const void* buf, size_t count, off_t off) {
  static const auto next = real<PwriteFn>("pwrite64");
  return faulty_write(fd, count, [&](size_t n) { return next(fd, buf, n, off); });
}

}  // extern "C"
