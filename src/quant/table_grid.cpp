#include "quant/table_grid.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "base/fp16.h"

namespace lsb::quant {

float int8_grid_step(const float* v, int64_t n) {
  float amax = 0;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(v[i]));
  return amax / 127.0f;
}

bool table_keeps_8_bits(const float* v, int64_t n) {
  if (n <= 0) return false;
  std::vector<float> a(v, v + n);
  for (float& x : a) x = std::fabs(x);
  std::nth_element(a.begin(), a.begin() + n / 2, a.end());
  const float median = a[static_cast<size_t>(n / 2)];
  const float amax = *std::max_element(a.begin(), a.end());
  return median > 0 && amax / 254.0f <= 0.03f * median;  // half a step of the grid
}

bool table_on_int8_grid(const float* v, int64_t n) {
  const float step = int8_grid_step(v, n);
  if (!(step > 0)) return false;
  for (int64_t i = 0; i < n; ++i) {
    const float q = v[i] / step;
    if (std::fabs(q - std::nearbyint(q)) > 0.125f) return false;
  }
  return true;
}

void put_table_on_int8_grid(float* v, int64_t n) {
  const float step = int8_grid_step(v, n);
  if (!(step > 0)) return;
  for (int64_t i = 0; i < n; ++i) {
    const float q = std::clamp(std::nearbyint(v[i] / step), -127.0f, 127.0f);
    v[i] = f16_to_f32(f32_to_f16(q * step));
  }
}

}  // namespace lsb::quant
