// How the packed Linears split work: rows across the OpenMP team in blocks, and tokens into
// blocks whose activations stay in L2 while a row block streams through.
#pragma once
#include <algorithm>
#include <cstdint>

namespace lsb::detail {

inline constexpr int64_t kRowBlock = 64;    // rows per work item (a multiple of the 4-row tiles)
inline constexpr int64_t kTokenBlock = 64;  // tokens per pass over a row block

// fn(t, nt, r0, r1) computes tokens [t, t + nt) for rows [r0, r1).
template <class Fn>
void for_row_blocks(int64_t rows, int64_t n, Fn&& fn) {
  const int64_t nblocks = (rows + kRowBlock - 1) / kRowBlock;
  if (n == 1) {
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < nblocks; ++b) fn(int64_t{0}, int64_t{1}, b * kRowBlock, std::min(rows, (b + 1) * kRowBlock));
    return;
  }
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t b = 0; b < nblocks; ++b)
    for (int64_t t = 0; t < n; t += kTokenBlock)
      fn(t, std::min(kTokenBlock, n - t), b * kRowBlock, std::min(rows, (b + 1) * kRowBlock));
}

}  // namespace lsb::detail
