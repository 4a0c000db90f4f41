// On-disk layout of a .lsb file (docs/FORMAT.md is the specification). The structs document the
// layout and its offsets; they are never written or read as raw memory: encode_*/decode_* put
// and get every field explicitly in little-endian (base/le.h), so the file does not depend on
// the host.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "base/le.h"

namespace lsb::format {

inline constexpr std::string_view kMagic = "LSBMODEL";
inline constexpr uint16_t kVersionMajor = 2;  // written; version 1 files are still read
inline constexpr uint16_t kVersionMinor = 0;
inline constexpr uint64_t kTensorAlign = 64;
inline constexpr uint64_t kPageAlign = 4096;
inline constexpr uint64_t kHeaderSize = 128;
inline constexpr uint64_t kEntrySize = 96;
inline constexpr uint64_t kChecksumOffset = 120;  // header_checksum covers [0, 120) first
inline constexpr uint32_t kRequiredFlagsMask = 0x0000ffffu;
inline constexpr uint32_t kMaxNameSize = 4096;
inline constexpr uint32_t kMaxParamsSize = 4096;
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

// Directory entry, version 2: the scheme's parameters are text in the string table.
struct TensorEntry {
  uint64_t name_offset;    // relative to strings_offset
  uint32_t name_size;
  uint8_t dtype;
  uint8_t ndim;
  uint16_t flags;          // 0
  int64_t shape[kMaxDims];
  uint32_t params_size;    // bytes of the parameter text (0: none)
  uint32_t reserved;       // 0
  int32_t layer;
  uint32_t reserved1;      // 0
  uint64_t data_offset;
  uint64_t data_size;
  uint64_t data_checksum;
  uint64_t params_offset;  // relative to strings_offset
};
static_assert(sizeof(TensorEntry) == kEntrySize, "TensorEntry must be 96 bytes, as in docs/FORMAT.md");
static_assert(offsetof(TensorEntry, shape) == 16 && offsetof(TensorEntry, params_size) == 48 &&
              offsetof(TensorEntry, layer) == 56 && offsetof(TensorEntry, data_offset) == 64 &&
              offsetof(TensorEntry, data_checksum) == 80 && offsetof(TensorEntry, params_offset) == 88);

// Directory entry, version 1 (read only): LSB1/PAPER parameters as fixed fields.
struct TensorEntryV1 {
  uint64_t name_offset;
  uint32_t name_size;
  uint8_t dtype;
  uint8_t ndim;
  uint16_t flags;          // bit 0: use_mean (LSB1)
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
static_assert(sizeof(TensorEntryV1) == kEntrySize && offsetof(TensorEntryV1, group_size) == 48 &&
              offsetof(TensorEntryV1, outlier_ratio) == 52 && offsetof(TensorEntryV1, reserved2) == 88);
inline constexpr uint16_t kEntryV1FlagUseMean = 1;

inline std::array<std::byte, kHeaderSize> encode_header(const FileHeader& h) {
  std::array<std::byte, kHeaderSize> b{};
  std::byte* p = b.data();
  std::memcpy(p, h.magic, 8);
  store_le(p + 8, h.version_major, 2);
  store_le(p + 10, h.version_minor, 2);
  store_le(p + 12, h.flags, 4);
  store_le(p + 16, h.file_size, 8);
  store_le(p + 24, h.metadata_offset, 8);
  store_le(p + 32, h.metadata_size, 8);
  store_le(p + 40, h.tokenizer_offset, 8);
  store_le(p + 48, h.tokenizer_size, 8);
  store_le(p + 56, h.tokenizer_kind, 4);
  store_le(p + 60, h.tensor_count, 4);
  store_le(p + 64, h.strings_offset, 8);
  store_le(p + 72, h.strings_size, 8);
  store_le(p + 80, h.directory_offset, 8);
  store_le(p + 88, h.directory_size, 8);
  store_le(p + 96, h.data_offset, 8);
  store_le(p + 104, h.data_size, 8);
  store_le(p + 112, h.reserved, 8);
  store_le(p + 120, h.header_checksum, 8);
  return b;
}

inline FileHeader decode_header(const std::byte* p) {
  FileHeader h{};
  std::memcpy(h.magic, p, 8);
  h.version_major = load_le16(p + 8);
  h.version_minor = load_le16(p + 10);
  h.flags = load_le32(p + 12);
  h.file_size = load_le64(p + 16);
  h.metadata_offset = load_le64(p + 24);
  h.metadata_size = load_le64(p + 32);
  h.tokenizer_offset = load_le64(p + 40);
  h.tokenizer_size = load_le64(p + 48);
  h.tokenizer_kind = load_le32(p + 56);
  h.tensor_count = load_le32(p + 60);
  h.strings_offset = load_le64(p + 64);
  h.strings_size = load_le64(p + 72);
  h.directory_offset = load_le64(p + 80);
  h.directory_size = load_le64(p + 88);
  h.data_offset = load_le64(p + 96);
  h.data_size = load_le64(p + 104);
  h.reserved = load_le64(p + 112);
  h.header_checksum = load_le64(p + 120);
  return h;
}

// Fields at the same place in both versions: name, dtype, ndim, flags, shape, layer, data.
template <class Entry>
void decode_common(const std::byte* p, Entry& e) {
  e.name_offset = load_le64(p + 0);
  e.name_size = load_le32(p + 8);
  e.dtype = static_cast<uint8_t>(load_le(p + 12, 1));
  e.ndim = static_cast<uint8_t>(load_le(p + 13, 1));
  e.flags = load_le16(p + 14);
  for (int d = 0; d < kMaxDims; ++d) e.shape[d] = static_cast<int64_t>(load_le64(p + 16 + 8 * d));
  e.layer = static_cast<int32_t>(load_le32(p + 56));
  e.data_offset = load_le64(p + 64);
  e.data_size = load_le64(p + 72);
  e.data_checksum = load_le64(p + 80);
}

inline std::array<std::byte, kEntrySize> encode_entry(const TensorEntry& e) {
  std::array<std::byte, kEntrySize> b{};
  std::byte* p = b.data();
  store_le(p + 0, e.name_offset, 8);
  store_le(p + 8, e.name_size, 4);
  store_le(p + 12, e.dtype, 1);
  store_le(p + 13, e.ndim, 1);
  store_le(p + 14, e.flags, 2);
  for (int d = 0; d < kMaxDims; ++d) store_le(p + 16 + 8 * d, static_cast<uint64_t>(e.shape[d]), 8);
  store_le(p + 48, e.params_size, 4);
  store_le(p + 52, e.reserved, 4);
  store_le(p + 56, static_cast<uint32_t>(e.layer), 4);
  store_le(p + 60, e.reserved1, 4);
  store_le(p + 64, e.data_offset, 8);
  store_le(p + 72, e.data_size, 8);
  store_le(p + 80, e.data_checksum, 8);
  store_le(p + 88, e.params_offset, 8);
  return b;
}

inline TensorEntry decode_entry(const std::byte* p) {
  TensorEntry e{};
  decode_common(p, e);
  e.params_size = load_le32(p + 48);
  e.reserved = load_le32(p + 52);
  e.reserved1 = load_le32(p + 60);
  e.params_offset = load_le64(p + 88);
  return e;
}

inline TensorEntryV1 decode_entry_v1(const std::byte* p) {
  TensorEntryV1 e{};
  decode_common(p, e);
  e.group_size = static_cast<int32_t>(load_le32(p + 48));
  uint32_t bits = load_le32(p + 52);
  std::memcpy(&e.outlier_ratio, &bits, 4);
  e.reserved = load_le32(p + 60);
  e.reserved2 = load_le64(p + 88);
  return e;
}

}  // namespace lsb::format
