// Read-only memory map of a whole file. Nothing is read until pages are touched.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace lsb {

class MappedFile {
 public:
  // Throws lsb::Error "PATH: <strerror>" if the file cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return size_; }
  std::span<const std::byte> bytes() const { return {static_cast<const std::byte*>(data_), data_ ? size_ : 0}; }
  // Checked sub-range: throws naming the file if [offset, offset+len) is not inside it, or if
  // the map was released.
  std::span<const std::byte> range(uint64_t offset, uint64_t len, const char* what) const;
  // Unmaps the file; range() throws from then on. For a caller that has copied what it needs and
  // reads the rest with pread: no page of the map can count toward its resident memory again,
  // and a file truncated underneath can no longer raise SIGBUS through it.
  void release();
  bool released() const { return released_; }

 private:
  std::string path_;
  void* data_ = nullptr;
  uint64_t size_ = 0;
  bool released_ = false;
};

// Returns the pages of a span of a read-only map to the kernel (madvise DONTNEED): they are
// dropped, not written, and stop counting toward this process's resident memory. The next access
// reads them again. Used once a tensor of a source has been consumed.
void release_mapped_pages(std::span<const std::byte> d);

// Whole small file into a string (config.json, index, tokenizer). Throws naming the path.
std::string read_small_file(const std::string& path, uint64_t max_bytes = 256ull << 20);

}  // namespace lsb
