// Size arithmetic on untrusted numbers (shapes and counts read from files): overflow is an
// lsb::Error naming `where`, never a wrapped value.
#pragma once
#include <cstdint>
#include <string>

#include "base/error.h"

namespace lsb {

inline uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& where) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail(where, "size overflows ({} x {})", a, b);
  return r;
}

inline uint64_t checked_add(uint64_t a, uint64_t b, const std::string& where) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) fail(where, "size overflows ({} + {})", a, b);
  return r;
}

}  // namespace lsb
