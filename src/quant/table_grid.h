// The 8-bit grid of a learned table (VQ4 codebook, NU levels): one scale, max |v| / 127, and
// integers in [-127, 127]. The integer kernels (kernels/table_q8.h) multiply tables on this grid;
// the quantizers put a table on it when rounding would otherwise cost its small entries.
#pragma once
#include <cstdint>

namespace lsb::quant {

// The grid step of `v` (n values): max |v| / 127 (0 for an all-zero table).
float int8_grid_step(const float* v, int64_t n);

// Whether rounding `v` to its grid keeps its typical value: half a step (max |v| / 254) at most
// 3 % of the median |v|. A table with a few entries far out (from heavy-tailed weights) fails.
bool table_keeps_8_bits(const float* v, int64_t n);

// Whether every value of `v` already lies on its grid (within an eighth of a step: the f16
// storage of the tables moves a grid value by up to 127 * 2^-11 of a step).
bool table_on_int8_grid(const float* v, int64_t n);

// Whether the integer kernels may take the table: it keeps its typical value on the grid, or it
// lies on the grid already (then they compute exactly what the file holds).
inline bool table_fits_8_bits(const float* v, int64_t n) { return table_keeps_8_bits(v, n) || table_on_int8_grid(v, n); }

// Rounds `v` to its grid, each value then stored as f16 (the tables' format): afterwards
// table_on_int8_grid(v, n) holds.
void put_table_on_int8_grid(float* v, int64_t n);

}  // namespace lsb::quant
