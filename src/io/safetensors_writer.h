// Streaming writer of one .safetensors file. The tensor list (names, dtypes, shapes) is given up
// front, so the header with every data offset is written first; tensor bytes are then appended in
// that order, in pieces of any size. Nothing but the header is held in memory, so a multi-GB shard
// is written with a buffer of the caller's choosing.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "base/dtype.h"

namespace lsb {

struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::F32;     // F32, F16 or BF16 (what the reader accepts)
  std::vector<int64_t> shape;   // outer dimension first
};

// Bytes of the tensor's data (numel * element size); throws naming `where` on overflow or a
// dtype safetensors cannot hold.
uint64_t safetensors_entry_bytes(const SafetensorsEntry& e, const std::string& where);

// The header as it will be written: u64 length + JSON padded with spaces to a multiple of 8
// (so the data section is 8-byte aligned, as the reference writer does). Offsets are in entry
// order. Throws on duplicate or empty names.
std::string safetensors_header(const std::vector<SafetensorsEntry>& entries,
                               const std::map<std::string, std::string>& metadata, const std::string& where);

class SafetensorsWriter {
 public:
  // Creates (truncates) `path` and writes the header. metadata goes into "__metadata__"
  // ({"format": "pt"} is what transformers expects; it is added when not given).
  SafetensorsWriter(std::string path, std::vector<SafetensorsEntry> entries,
                    std::map<std::string, std::string> metadata = {});
  ~SafetensorsWriter();  // closes without checking; an unfinished file is left short
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Appends bytes to the current tensor, moving on to the next one when it is full; a piece may
  // span tensors. Throws naming the file if more bytes come than the tensors hold, or on I/O error.
  void append(std::span<const std::byte> bytes);
  // The whole of the current tensor at once; throws if `name` is not the next tensor or the size differs.
  void write_tensor(const std::string& name, std::span<const std::byte> bytes);
  // Checks every tensor is complete, flushes and closes; throws naming the file otherwise.
  void finish();

  const std::string& path() const { return path_; }
  // Index of the tensor the next byte belongs to (== entries().size() when all are written).
  size_t current() const { return current_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  uint64_t header_bytes() const { return header_bytes_; }   // 8 + padded JSON
  uint64_t total_bytes() const { return total_bytes_; }     // whole file size once finished
  uint64_t written() const { return written_; }             // bytes written so far, header included

 private:
  void write_raw(const std::byte* p, size_t n);

  std::string path_;
  std::vector<SafetensorsEntry> entries_;
  std::vector<uint64_t> sizes_;
  int fd_ = -1;
  size_t current_ = 0;
  uint64_t left_in_current_ = 0;
  uint64_t header_bytes_ = 0, total_bytes_ = 0, written_ = 0;
};

}  // namespace lsb
