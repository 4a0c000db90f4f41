#include "io/mmap_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "base/error.h"

namespace lsb {

MappedFile::MappedFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path, "cannot open: {}", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    fail(path, "cannot stat: {}", std::strerror(e));
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    fail(path, "is a directory, expected a file");
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ > 0) {
    data_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data_ == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      data_ = nullptr;
      fail(path, "cannot mmap: {}", std::strerror(e));
    }
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

void MappedFile::release() {
  if (data_) ::munmap(data_, size_);
  data_ = nullptr;
  released_ = true;
}

std::span<const std::byte> MappedFile::range(uint64_t offset, uint64_t len, const char* what) const {
  if (released_) fail(path_, "{} [{}, +{}) is not mapped any more (the file is being streamed)", what, offset, len);
  if (offset > size_ || len > size_ - offset)
    fail(path_, "{} [{}, +{}) lies outside the file ({} bytes)", what, offset, len, size_);
  return bytes().subspan(offset, len);
}

std::string read_small_file(const std::string& path, uint64_t max_bytes) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, "cannot open: {}", std::strerror(errno));
  f.seekg(0, std::ios::end);
  auto n = static_cast<uint64_t>(f.tellg());
  if (n > max_bytes) fail(path, "file is {} bytes, more than the {} expected", n, max_bytes);
  f.seekg(0);
  std::string s(n, '\0');
  if (n && !f.read(s.data(), static_cast<std::streamsize>(n))) fail(path, "read failed");
  return s;
}

void release_mapped_pages(std::span<const std::byte> d) {
  if (d.empty()) return;
  const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto begin = reinterpret_cast<uintptr_t>(d.data()) / page * page;
  const auto end = reinterpret_cast<uintptr_t>(d.data() + d.size());
  ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace lsb
