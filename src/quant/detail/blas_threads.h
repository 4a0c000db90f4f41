// OpenBLAS (its OpenMP build, CMakeLists.txt) runs a product called outside a parallel region on
// as many threads as the calling thread's OpenMP setting allows, and a multi-threaded product
// differs from a single-threaded one in the last bits. The quantizers' output must not depend on
// the thread count: a call made outside a parallel region holds this guard, which makes it
// single-threaded; calls from inside the quantizers' parallel regions are single-threaded by
// OpenBLAS itself (it checks omp_in_parallel()).
#pragma once
#include <omp.h>

namespace lsb::quant::detail {

class BlasOneThread {
 public:
  BlasOneThread() : saved_(omp_get_max_threads()) { omp_set_num_threads(1); }
  ~BlasOneThread() { omp_set_num_threads(saved_); }
  BlasOneThread(const BlasOneThread&) = delete;
  BlasOneThread& operator=(const BlasOneThread&) = delete;

 private:
  int saved_;
};

}  // namespace lsb::quant::detail
