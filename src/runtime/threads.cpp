#include "runtime/threads.h"

#include <malloc.h>
#include <omp.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace lsb {

void set_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  omp_set_num_threads(n);
}

int get_threads() { return omp_get_max_threads(); }

void release_openmp_workers() { omp_pause_resource_all(omp_pause_soft); }

bool argv_streams(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--mem-budget", 12) == 0) return true;
  return false;
}

void bound_openmp_spin_when_streaming(int argc, char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (!argv_streams(argc, argv)) return;
  // Set before exec, so the new image cannot loop even if it sees the same arguments.
  if (::setenv("GOMP_SPINCOUNT", "10000", 1) != 0) return;
  ::execv("/proc/self/exe", argv);
}

void prepare_process_for_budget() {
  pthread_attr_t attr;
  if (pthread_attr_init(&attr) == 0) {
    if (pthread_attr_setstacksize(&attr, kBudgetThreadStack) == 0) pthread_setattr_default_np(&attr);
    pthread_attr_destroy(&attr);
  }
  mallopt(M_ARENA_MAX, 1);
  mallopt(M_MMAP_THRESHOLD, 128 << 10);
  mallopt(M_TRIM_THRESHOLD, 128 << 10);
}

namespace {

// libgomp's OMP_STACKSIZE syntax: a number with an optional B, K, M or G suffix (default K).
uint64_t parse_omp_stacksize(const char* s) {
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (end == s) return 0;
  while (std::isspace(static_cast<unsigned char>(*end))) ++end;
  switch (std::toupper(static_cast<unsigned char>(*end))) {
    case 'B': return v;
    case 'M': return v << 20;
    case 'G': return v << 30;
    default: return v << 10;
  }
}

}  // namespace

uint64_t thread_stack_bound(bool openmp_worker) {
  if (openmp_worker)
    for (const char* var : {"OMP_STACKSIZE", "GOMP_STACKSIZE"})
      if (const char* v = std::getenv(var))
        if (const uint64_t b = parse_omp_stacksize(v)) return b;
  size_t size = 8ull << 20;
  pthread_attr_t attr;
  if (pthread_getattr_default_np(&attr) == 0) {
    pthread_attr_getstacksize(&attr, &size);
    pthread_attr_destroy(&attr);
  }
  return size;
}

}  // namespace lsb
