#include "runtime/threads.h"

#include <omp.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include <thread>

namespace lsb {

void set_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  omp_set_num_threads(n);
}

int get_threads() { return omp_get_max_threads(); }

void bound_openmp_spin_when_streaming(int argc, char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  bool streaming = false;
  for (int i = 1; i < argc && !streaming; ++i) streaming = std::strncmp(argv[i], "--mem-budget", 12) == 0;
  if (!streaming) return;
  // Set before exec, so the new image cannot loop even if it sees the same arguments.
  if (::setenv("GOMP_SPINCOUNT", "10000", 1) != 0) return;
  ::execv("/proc/self/exe", argv);
}

}  // namespace lsb
