// Little-endian integers in byte buffers, whatever the host's byte order: the one place where
// every file format of the project (safetensors, GGUF, llama2.c, .lsb) reads and writes them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace lsb {

// The nbytes (1..8) little-endian bytes at p as an unsigned integer.
inline uint64_t load_le(const void* p, int nbytes) {
  const auto* b = static_cast<const unsigned char*>(p);
  uint64_t v = 0;
  for (int i = nbytes - 1; i >= 0; --i) v = (v << 8) | b[i];
  return v;
}
inline uint16_t load_le16(const void* p) { return static_cast<uint16_t>(load_le(p, 2)); }
inline uint32_t load_le32(const void* p) { return static_cast<uint32_t>(load_le(p, 4)); }
inline uint64_t load_le64(const void* p) { return load_le(p, 8); }

// Writes the low nbytes (1..8) bytes of v at p, least significant first.
inline void store_le(void* p, uint64_t v, int nbytes) {
  auto* b = static_cast<unsigned char*>(p);
  for (int i = 0; i < nbytes; ++i) b[i] = static_cast<unsigned char>((v >> (8 * i)) & 0xffu);
}

// Appends the low nbytes (1..8) bytes of v, least significant first.
template <class Buffer>  // std::vector<std::byte> or std::string
void append_le(Buffer& out, uint64_t v, int nbytes) {
  for (int i = 0; i < nbytes; ++i)
    out.push_back(static_cast<typename Buffer::value_type>((v >> (8 * i)) & 0xffu));
}

}  // namespace lsb
