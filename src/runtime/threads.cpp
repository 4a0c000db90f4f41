#include "runtime/threads.h"

#include <omp.h>

#include <thread>

namespace lsb {

void set_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  omp_set_num_threads(n);
}

int get_threads() { return omp_get_max_threads(); }

}  // namespace lsb
