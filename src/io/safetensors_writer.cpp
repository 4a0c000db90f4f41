#include "io/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>

#include <nlohmann/json.hpp>

#include "base/error.h"

namespace lsb {

namespace {

const char* safetensors_dtype(DType t, const std::string& where, const std::string& name) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    default: fail(where, "tensor '{}': dtype {} cannot be stored in safetensors", name, dtype_name(t));
  }
}

}  // namespace

uint64_t safetensors_entry_bytes(const SafetensorsEntry& e, const std::string& where) {
  safetensors_dtype(e.dtype, where, e.name);
  uint64_t n = dtype_size(e.dtype);
  for (int64_t d : e.shape) {
    if (d < 0) fail(where, "tensor '{}': negative dimension {}", e.name, d);
    if (__builtin_mul_overflow(n, uint64_t(d), &n)) fail(where, "tensor '{}': shape overflows", e.name);
  }
  return n;
}

std::string safetensors_header(const std::vector<SafetensorsEntry>& entries,
                               const std::map<std::string, std::string>& metadata, const std::string& where) {
  // ordered_json keeps the tensors in file order in the header too, which makes files easy to read.
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  for (const auto& [k, v] : metadata) meta[k] = v;
  if (!meta.contains("format")) meta["format"] = "pt";
  h["__metadata__"] = meta;
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const SafetensorsEntry& e : entries) {
    if (e.name.empty() || e.name == "__metadata__") fail(where, "invalid tensor name '{}'", e.name);
    if (!seen.insert(e.name).second) fail(where, "tensor '{}' listed twice", e.name);
    const uint64_t n = safetensors_entry_bytes(e, where);
    uint64_t end = 0;
    if (__builtin_add_overflow(offset, n, &end)) fail(where, "tensor '{}': file size overflows", e.name);
    h[e.name] = {{"dtype", safetensors_dtype(e.dtype, where, e.name)}, {"shape", e.shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string json = h.dump();
  json.append((8 - json.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t len = json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((len >> (8 * i)) & 0xff);
  return out + json;
}

SafetensorsWriter::SafetensorsWriter(std::string path, std::vector<SafetensorsEntry> entries,
                                     std::map<std::string, std::string> metadata)
    : path_(std::move(path)), entries_(std::move(entries)) {
  const std::string header = safetensors_header(entries_, metadata, path_);
  header_bytes_ = header.size();
  total_bytes_ = header_bytes_;
  for (const SafetensorsEntry& e : entries_) {
    sizes_.push_back(safetensors_entry_bytes(e, path_));
    total_bytes_ += sizes_.back();  // cannot overflow: safetensors_header summed the same sizes
  }
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(path_, "cannot create: {}", std::strerror(errno));
  write_raw(reinterpret_cast<const std::byte*>(header.data()), header.size());
  // Skip zero-sized tensors so current_ always names a tensor that still wants bytes.
  while (current_ < entries_.size() && sizes_[current_] == 0) ++current_;
  left_in_current_ = current_ < entries_.size() ? sizes_[current_] : 0;
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

void SafetensorsWriter::write_raw(const std::byte* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(path_, "write failed after {} bytes: {}", written_, std::strerror(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
    written_ += static_cast<uint64_t>(w);
  }
}

void SafetensorsWriter::append(std::span<const std::byte> bytes) {
  if (fd_ < 0) fail(path_, "append after finish()");
  while (!bytes.empty()) {
    if (current_ >= entries_.size())
      fail(path_, "{} more bytes than the {} tensors hold", bytes.size(), entries_.size());
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left_in_current_, bytes.size()));
    write_raw(bytes.data(), n);
    bytes = bytes.subspan(n);
    left_in_current_ -= n;
    if (left_in_current_ == 0) {
      ++current_;
      while (current_ < entries_.size() && sizes_[current_] == 0) ++current_;
      left_in_current_ = current_ < entries_.size() ? sizes_[current_] : 0;
    }
  }
}

void SafetensorsWriter::write_tensor(const std::string& name, std::span<const std::byte> bytes) {
  if (current_ >= entries_.size()) fail(path_, "tensor '{}' written but every tensor is already complete", name);
  const SafetensorsEntry& e = entries_[current_];
  if (e.name != name) fail(path_, "tensor '{}' written where '{}' comes next", name, e.name);
  if (left_in_current_ != sizes_[current_]) fail(path_, "tensor '{}' is already partly written", name);
  if (bytes.size() != sizes_[current_])
    fail(path_, "tensor '{}' needs {} bytes, got {}", name, sizes_[current_], bytes.size());
  append(bytes);
}

void SafetensorsWriter::finish() {
  if (fd_ < 0) return;
  if (current_ < entries_.size())
    fail(path_, "tensor '{}' is incomplete ({} bytes missing)", entries_[current_].name, left_in_current_);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail(path_, "close failed: {}", std::strerror(errno));
}

}  // namespace lsb
