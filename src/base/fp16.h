// Scalar, portable conversions between float and the 16-bit float formats stored in checkpoints.
// Integer-only (no dependence on the FPU rounding mode or -ffast-math): round-to-nearest-even,
// overflow to infinity, subnormals kept, NaN stays NaN (made quiet, top payload bits kept).
#pragma once
#include <bit>
#include <cstdint>

namespace lsb {

inline float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {
      // Subnormal half: renormalise so it becomes a normal float (every half subnormal is one).
      uint32_t e = 113;  // biased float exponent of 2^-14, the half subnormal scale
      while (!(mant & 0x400u)) {
        mant <<= 1;
        --e;
      }
      bits = sign | (e << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf, or NaN with its payload
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

inline uint16_t f32_to_f16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  const auto sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // NaN
  if (ax == 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u);                       // inf
  const uint32_t e = ax >> 23;  // biased float exponent
  if (e >= 143) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 2^16: beyond any rounding to 65504
  uint32_t half;
  uint32_t rem, halfway;
  if (e <= 112) {
    // Result is a half subnormal (or zero): value / 2^-24 = mant * 2^(e - 126).
    const uint32_t mant = (ax & 0x7fffffu) | (e ? 0x800000u : 0u);
    const uint32_t shift = 126 - e;  // >= 14
    if (shift > 24) return sign;     // below half of the smallest subnormal
    half = mant >> shift;
    rem = mant & ((1u << shift) - 1);
    halfway = 1u << (shift - 1);
  } else {
    half = ((e - 112) << 10) | ((ax >> 13) & 0x3ffu);
    rem = ax & 0x1fffu;
    halfway = 0x1000u;
  }
  // A carry out of the mantissa correctly bumps the exponent (and reaches inf above 65504).
  if (rem > halfway || (rem == halfway && (half & 1u))) ++half;
  return static_cast<uint16_t>(sign | half);
}

inline float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

inline uint16_t f32_to_bf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  const uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);  // nearest, ties to even
  return static_cast<uint16_t>((x + rounding) >> 16);
}

}  // namespace lsb
