// On-disk layout of a .lsb file (docs/FORMAT.md is the specification). The structs document the
// layout and its offsets; they are never written or read as raw memory: encode_*/decode_* put
// and get every field explicitly in little-endian, so the file does not depend on the host.
#pragma once
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>

namespace lsb::format {

static_assert(std::endian::native == std::endian::little || std::endian::native == std::endian::big,
              "mixed-endian hosts are not supported");

inline constexpr std::string_view kMagic = "LSBMODEL";
inline constexpr std::string_view kLsbVersion = "0.1.0";  // recorded in the metadata
inline constexpr uint16_t kVersionMajor = 1;
inline constexpr uint16_t kVersionMinor = 0;
inline constexpr uint64_t kTensorAlign = 64;
inline constexpr uint64_t kPageAlign = 4096;
inline constexpr uint64_t kHeaderSize = 128;
inline constexpr uint64_t kEntrySize = 96;
inline constexpr uint64_t kChecksumOffset = 120;  // header_checksum covers [0, 120) first
inline constexpr uint32_t kRequiredFlagsMask = 0x0000ffffu;
inline constexpr uint16_t kEntryFlagUseMean = 1;
inline constexpr uint32_t kMaxNameSize = 4096;
inline constexpr int kMaxDims = 4;

struct FileHeader {
  char magic[8];
  uint16_t version_major;
  uint16_t version_minor;
  uint32_t flags;
  uint64_t file_size;
  uint64_t metadata_offset, metadata_size;
  uint64_t tokenizer_offset, tokenizer_size;
  uint32_t tokenizer_kind;
  uint32_t tensor_count;
  uint64_t strings_offset, strings_size;
  uint64_t directory_offset, directory_size;
  uint64_t data_offset, data_size;
  uint64_t reserved;
  uint64_t header_checksum;
};
static_assert(sizeof(FileHeader) == kHeaderSize, "FileHeader must be 128 bytes, as in docs/FORMAT.md");
static_assert(offsetof(FileHeader, file_size) == 16 && offsetof(FileHeader, tokenizer_kind) == 56 &&
              offsetof(FileHeader, data_offset) == 96 && offsetof(FileHeader, header_checksum) == kChecksumOffset);

struct TensorEntry {
  uint64_t name_offset;
  uint32_t name_size;
  uint8_t dtype;
  uint8_t ndim;
  uint16_t flags;
  int64_t shape[kMaxDims];
  int32_t group_size;
  float outlier_ratio;
  int32_t layer;
  uint32_t reserved;
  uint64_t data_offset;
  uint64_t data_size;
  uint64_t data_checksum;
  uint64_t reserved2;
};
static_assert(sizeof(TensorEntry) == kEntrySize, "TensorEntry must be 96 bytes, as in docs/FORMAT.md");
static_assert(offsetof(TensorEntry, shape) == 16 && offsetof(TensorEntry, group_size) == 48 &&
              offsetof(TensorEntry, layer) == 56 && offsetof(TensorEntry, data_offset) == 64 &&
              offsetof(TensorEntry, data_checksum) == 80);

// Little-endian field access on byte buffers.
inline void put_le(std::byte* p, uint64_t v, int nbytes) {
  for (int i = 0; i < nbytes; ++i) p[i] = static_cast<std::byte>((v >> (8 * i)) & 0xffu);
}
inline uint64_t get_le(const std::byte* p, int nbytes) {
  uint64_t v = 0;
  for (int i = 0; i < nbytes; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

inline std::array<std::byte, kHeaderSize> encode_header(const FileHeader& h) {
  std::array<std::byte, kHeaderSize> b{};
  std::memcpy(b.data(), h.magic, 8);
  std::byte* p = b.data();
  put_le(p + 8, h.version_major, 2);
  put_le(p + 10, h.version_minor, 2);
  put_le(p + 12, h.flags, 4);
  put_le(p + 16, h.file_size, 8);
  put_le(p + 24, h.metadata_offset, 8);
  put_le(p + 32, h.metadata_size, 8);
  put_le(p + 40, h.tokenizer_offset, 8);
  put_le(p + 48, h.tokenizer_size, 8);
  put_le(p + 56, h.tokenizer_kind, 4);
  put_le(p + 60, h.tensor_count, 4);
  put_le(p + 64, h.strings_offset, 8);
  put_le(p + 72, h.strings_size, 8);
  put_le(p + 80, h.directory_offset, 8);
  put_le(p + 88, h.directory_size, 8);
  put_le(p + 96, h.data_offset, 8);
  put_le(p + 104, h.data_size, 8);
  put_le(p + 112, h.reserved, 8);
  put_le(p + 120, h.header_checksum, 8);
  return b;
}

inline FileHeader decode_header(const std::byte* p) {
  FileHeader h{};
  std::memcpy(h.magic, p, 8);
  h.version_major = static_cast<uint16_t>(get_le(p + 8, 2));
  h.version_minor = static_cast<uint16_t>(get_le(p + 10, 2));
  h.flags = static_cast<uint32_t>(get_le(p + 12, 4));
  h.file_size = get_le(p + 16, 8);
  h.metadata_offset = get_le(p + 24, 8);
  h.metadata_size = get_le(p + 32, 8);
  h.tokenizer_offset = get_le(p + 40, 8);
  h.tokenizer_size = get_le(p + 48, 8);
  h.tokenizer_kind = static_cast<uint32_t>(get_le(p + 56, 4));
  h.tensor_count = static_cast<uint32_t>(get_le(p + 60, 4));
  h.strings_offset = get_le(p + 64, 8);
  h.strings_size = get_le(p + 72, 8);
  h.directory_offset = get_le(p + 80, 8);
  h.directory_size = get_le(p + 88, 8);
  h.data_offset = get_le(p + 96, 8);
  h.data_size = get_le(p + 104, 8);
  h.reserved = get_le(p + 112, 8);
  h.header_checksum = get_le(p + 120, 8);
  return h;
}

inline std::array<std::byte, kEntrySize> encode_entry(const TensorEntry& e) {
  std::array<std::byte, kEntrySize> b{};
  std::byte* p = b.data();
  put_le(p + 0, e.name_offset, 8);
  put_le(p + 8, e.name_size, 4);
  put_le(p + 12, e.dtype, 1);
  put_le(p + 13, e.ndim, 1);
  put_le(p + 14, e.flags, 2);
  for (int d = 0; d < kMaxDims; ++d) put_le(p + 16 + 8 * d, static_cast<uint64_t>(e.shape[d]), 8);
  put_le(p + 48, static_cast<uint32_t>(e.group_size), 4);
  put_le(p + 52, std::bit_cast<uint32_t>(e.outlier_ratio), 4);
  put_le(p + 56, static_cast<uint32_t>(e.layer), 4);
  put_le(p + 60, e.reserved, 4);
  put_le(p + 64, e.data_offset, 8);
  put_le(p + 72, e.data_size, 8);
  put_le(p + 80, e.data_checksum, 8);
  put_le(p + 88, e.reserved2, 8);
  return b;
}

inline TensorEntry decode_entry(const std::byte* p) {
  TensorEntry e{};
  e.name_offset = get_le(p + 0, 8);
  e.name_size = static_cast<uint32_t>(get_le(p + 8, 4));
  e.dtype = static_cast<uint8_t>(get_le(p + 12, 1));
  e.ndim = static_cast<uint8_t>(get_le(p + 13, 1));
  e.flags = static_cast<uint16_t>(get_le(p + 14, 2));
  for (int d = 0; d < kMaxDims; ++d) e.shape[d] = static_cast<int64_t>(get_le(p + 16 + 8 * d, 8));
  e.group_size = static_cast<int32_t>(static_cast<uint32_t>(get_le(p + 48, 4)));
  e.outlier_ratio = std::bit_cast<float>(static_cast<uint32_t>(get_le(p + 52, 4)));
  e.layer = static_cast<int32_t>(static_cast<uint32_t>(get_le(p + 56, 4)));
  e.reserved = static_cast<uint32_t>(get_le(p + 60, 4));
  e.data_offset = get_le(p + 64, 8);
  e.data_size = get_le(p + 72, 8);
  e.data_checksum = get_le(p + 80, 8);
  e.reserved2 = get_le(p + 88, 8);
  return e;
}

inline constexpr uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

}  // namespace lsb::format
