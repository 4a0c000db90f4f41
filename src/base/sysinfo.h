// Measurements of the process and the machine, taken from the OS (never estimated).
#pragma once
#include <cstdint>

namespace lsb {

uint64_t peak_rss_bytes();     // getrusage(RUSAGE_SELF).ru_maxrss
uint64_t current_rss_bytes();  // /proc/self/statm resident pages (0 where unavailable)
// Memory bandwidth: best of `reps` single-threaded memcpy passes over `bytes` (GB/s = 1e9 B/s,
// counting bytes read + bytes written), measured in a child process so the buffers do not count
// toward this process's peak RSS. 0 if it could not be measured.
double measure_memcpy_gbps(uint64_t bytes = 256ull << 20, int reps = 3);

}  // namespace lsb
