// Measurements of the process and the machine, taken from the OS (never estimated).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lsb {

uint64_t peak_rss_bytes();     // getrusage(RUSAGE_SELF).ru_maxrss
uint64_t current_rss_bytes();  // /proc/self/statm resident pages (0 where unavailable)

// The process's resident memory as the kernel accounts it (/proc/self/status; zeros where
// unavailable). `peak` is VmHWM, what getrusage and /usr/bin/time report as maximum RSS.
struct ProcessMemory {
  uint64_t rss = 0, anon = 0, file = 0, shmem = 0, peak = 0;
};
ProcessMemory process_memory();

// Bytes of the process's file-backed mappings (the executable, shared libraries, their data)
// that are not resident now: how far the resident size can still grow by running code that has
// not run yet. Mappings whose path contains one of `skip` are left out. Reads /proc/self/smaps;
// 0 where unavailable.
uint64_t file_mapped_not_resident_bytes(const std::vector<std::string>& skip = {});
// Memory bandwidth: best of `reps` single-threaded memcpy passes over `bytes` (GB/s = 1e9 B/s,
// counting bytes read + bytes written), measured in a child process so the buffers do not count
// toward this process's peak RSS. 0 if it could not be measured.
double measure_memcpy_gbps(uint64_t bytes = 256ull << 20, int reps = 3);

}  // namespace lsb
