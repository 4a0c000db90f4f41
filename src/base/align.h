// Rounding sizes and offsets to alignments.
#pragma once
#include <cstdint>

namespace lsb {

inline constexpr uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
inline constexpr uint64_t align_down(uint64_t v, uint64_t a) { return v / a * a; }

}  // namespace lsb
