// How should the streaming runtime read a layer? Measures the three candidates on the layer
// regions of a real .lsb file, every read from the disk (page cache dropped before each pass):
//   pread+O_DIRECT  into one reused, already-faulted buffer (what LayerStreamer does with
//                   --drop-page-cache);
//   pread buffered  into the same buffer, then POSIX_FADV_DONTNEED;
//   mmap+madvise    touch every page of the region through a map, then MADV_DONTNEED and
//                   POSIX_FADV_DONTNEED (pages are faulted in again on every pass).
// Usage: lsb_bench_read_modes FILE.lsb [passes]. Prints MB/s per mode (median of the passes).
// SMALL_PAGES=1 in the environment uses 4 KiB pages for the buffer instead of huge pages.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "format/lsb_reader.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kPage = 4096;

struct Region {
  uint64_t offset, size;
};

void drop_cache(int fd) { ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED); }

double pass_pread(const std::vector<Region>& regions, int fd, std::byte* buf, bool direct, int buffered_fd) {
  const auto t0 = Clock::now();
  uint64_t total = 0;
  for (const Region& r : regions) {
    const uint64_t start = direct ? r.offset / kPage * kPage : r.offset;
    const uint64_t end = direct ? (r.offset + r.size + kPage - 1) / kPage * kPage : r.offset + r.size;
    uint64_t done = 0;
    while (start + done < end) {
      const ssize_t n = ::pread(fd, buf + done, end - start - done, static_cast<off_t>(start + done));
      if (n <= 0) break;
      done += static_cast<uint64_t>(n);
    }
    if (!direct) ::posix_fadvise(buffered_fd, static_cast<off_t>(r.offset), static_cast<off_t>(r.size), POSIX_FADV_DONTNEED);
    total += r.size;
  }
  return static_cast<double>(total) / 1e6 / std::chrono::duration<double>(Clock::now() - t0).count();
}

double pass_mmap(const std::vector<Region>& regions, const std::byte* map, int fd) {
  const auto t0 = Clock::now();
  uint64_t total = 0;
  volatile unsigned sink = 0;
  for (const Region& r : regions) {
    const uint64_t start = r.offset / kPage * kPage;
    unsigned acc = 0;
    for (uint64_t o = r.offset; o < r.offset + r.size; o += kPage) acc += static_cast<unsigned>(map[o]);
    sink = sink + acc;
    ::madvise(const_cast<std::byte*>(map + start), r.offset + r.size - start, MADV_DONTNEED);
    ::posix_fadvise(fd, static_cast<off_t>(r.offset), static_cast<off_t>(r.size), POSIX_FADV_DONTNEED);
    total += r.size;
  }
  return static_cast<double>(total) / 1e6 / std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE.lsb [passes]\n", argv[0]);
    return 2;
  }
  const std::string path = argv[1];
  const int passes = argc > 2 ? std::max(1, std::atoi(argv[2])) : 3;
  std::vector<Region> regions;
  uint64_t largest = 0, file_size = 0;
  try {
    lsb::format::LsbReader reader(path);
    for (const auto& l : reader.layers()) {
      regions.push_back({l.offset, l.size});
      largest = std::max(largest, l.size);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  const int fd = ::open(path.c_str(), O_RDONLY);
  const int dfd = ::open(path.c_str(), O_RDONLY | O_DIRECT);
  if (fd < 0 || dfd < 0) {
    std::fprintf(stderr, "%s: cannot open (O_DIRECT needs a disk-backed filesystem)\n", path.c_str());
    return 1;
  }
  file_size = static_cast<uint64_t>(::lseek(fd, 0, SEEK_END));
  const uint64_t buf_size = largest + 2 * kPage;
  // Like a streaming slot: an anonymous map with transparent huge pages, faulted in once.
  // (Huge pages matter for O_DIRECT: the kernel pins and maps far fewer pages per read.)
  void* slot = ::mmap(nullptr, buf_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (slot == MAP_FAILED) return 1;
  if (std::getenv("SMALL_PAGES") == nullptr) ::madvise(slot, buf_size, MADV_HUGEPAGE);
  auto* buf = static_cast<std::byte*>(slot);
  for (uint64_t o = 0; o < buf_size; o += kPage) buf[o] = std::byte{0};
  auto* map = static_cast<const std::byte*>(::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0));
  if (map == MAP_FAILED) return 1;
  std::vector<double> direct, buffered, mapped;
  for (int p = 0; p < passes; ++p) {
    drop_cache(fd);
    direct.push_back(pass_pread(regions, dfd, buf, true, fd));
    drop_cache(fd);
    buffered.push_back(pass_pread(regions, fd, buf, false, fd));
    drop_cache(fd);
    mapped.push_back(pass_mmap(regions, map, fd));
  }
  std::printf("%zu layer regions, %.1f MB, %d passes (median MB/s, page cache dropped before each)\n", regions.size(),
              static_cast<double>(file_size) / 1e6, passes);
  std::printf("  pread O_DIRECT, reused buffer : %8.1f MB/s\n", median(direct));
  std::printf("  pread buffered + FADV_DONTNEED: %8.1f MB/s\n", median(buffered));
  std::printf("  mmap, touch, MADV_DONTNEED    : %8.1f MB/s\n", median(mapped));
  return 0;
}
