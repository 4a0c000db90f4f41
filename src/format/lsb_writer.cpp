#include "format/lsb_writer.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "base/align.h"
#include "base/error.h"

namespace lsb::format {

std::string LsbWriter::temp_path_for(const std::string& target) { return target + ".tmp." + std::to_string(::getpid()); }

LsbWriter::LsbWriter(std::string target_path) : target_(std::move(target_path)) {
  temp_path_ = temp_path_for(target_);
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd_ < 0) fail(temp_path_, "cannot create: {}", std::strerror(errno));
  // The header is written last (at offset 0); the data section starts on the first page after it.
  static const char zeros[kPageAlign] = {};
  write_at_end(zeros, sizeof zeros);
}

LsbWriter::~LsbWriter() { abort(); }

void LsbWriter::abort() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!done_ && !temp_path_.empty()) {
    ::unlink(temp_path_.c_str());
    done_ = true;
  }
}

void LsbWriter::write_at_end(const void* p, uint64_t n) {
  if (fd_ < 0) fail(temp_path_, "writer is closed");
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, 1ull << 30));
    const ssize_t w = ::write(fd_, c, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail(temp_path_, "write failed: {}", std::strerror(errno));
    }
    c += w;
    n -= static_cast<uint64_t>(w);
    pos_ += static_cast<uint64_t>(w);
  }
}

uint64_t planned_file_size(const std::vector<PlannedTensor>& tensors, const nlohmann::json& metadata,
                           uint64_t tokenizer_bytes) {
  // The same steps as add_tensor() and finish(), on positions only.
  uint64_t pos = kPageAlign, strings = 0;
  int current = -2;
  nlohmann::json layers = nlohmann::json::array();
  uint64_t layer_start = 0;
  for (const PlannedTensor& t : tensors) {
    if (t.layer != current) {
      if (current >= 0) layers.push_back({{"layer", current}, {"offset", layer_start}, {"size", pos - layer_start}});
      if (current != -2) pos = align_up(pos, kPageAlign);
      layer_start = pos;
      current = t.layer;
    }
    pos = align_up(pos, kTensorAlign) + t.bytes;
    strings += t.name_size + t.params_size;
  }
  if (current >= 0) layers.push_back({{"layer", current}, {"offset", layer_start}, {"size", pos - layer_start}});
  nlohmann::json meta = metadata;
  meta["layers"] = std::move(layers);
  for (uint64_t section : {static_cast<uint64_t>(meta.dump().size()), tokenizer_bytes, strings,
                           static_cast<uint64_t>(tensors.size()) * kEntrySize})
    pos = align_up(pos, kTensorAlign) + section;
  return pos;
}

void LsbWriter::pad_to(uint64_t alignment) {
  static const char zeros[kPageAlign] = {};
  const uint64_t target = align_up(pos_, alignment);
  while (pos_ < target) write_at_end(zeros, std::min<uint64_t>(target - pos_, sizeof zeros));
}

void LsbWriter::add_tensor(const TensorInfo& info, int layer, std::span<const std::byte> data) {
  if (info.name.empty() || info.name.size() > kMaxNameSize)
    fail(temp_path_, "tensor name '{}' must be 1..{} bytes", info.name, kMaxNameSize);
  if (std::find(names_.begin(), names_.end(), info.name) != names_.end())
    fail(temp_path_, "tensor '{}' written twice", info.name);
  if (info.shape.empty() || info.shape.size() > static_cast<size_t>(kMaxDims))
    fail(temp_path_, "tensor '{}' has {} dimensions (1..{} supported)", info.name, info.shape.size(), kMaxDims);
  if (layer < -1) fail(temp_path_, "tensor '{}' has layer index {}", info.name, layer);

  if (layer != current_layer_) {
    // A layer region starts, or ends, here: keep it on its own pages.
    if (layer >= 0 && std::any_of(layers_.begin(), layers_.end(), [&](const LayerRange& r) { return r.layer == layer; }))
      fail(temp_path_, "tensors of layer {} are not contiguous ('{}')", layer, info.name);
    if (current_layer_ != -2) pad_to(kPageAlign);
    if (layer >= 0) layers_.push_back({layer, pos_, 0});
    current_layer_ = layer;
  }
  pad_to(kTensorAlign);

  if (info.params.size() > kMaxParamsSize)
    fail(temp_path_, "tensor '{}': parameters of {} bytes exceed {}", info.name, info.params.size(), kMaxParamsSize);
  TensorEntry e{};
  e.name_offset = strings_.size();
  e.name_size = static_cast<uint32_t>(info.name.size());
  strings_ += info.name;
  e.params_offset = strings_.size();
  e.params_size = static_cast<uint32_t>(info.params.size());
  strings_ += info.params;
  e.dtype = static_cast<uint8_t>(info.dtype);
  e.ndim = static_cast<uint8_t>(info.shape.size());
  for (size_t d = 0; d < info.shape.size(); ++d) e.shape[d] = info.shape[d];
  e.layer = layer;
  e.data_offset = pos_;
  e.data_size = data.size();
  e.data_checksum = XXH3_64bits(data.data(), data.size());
  write_at_end(data.data(), data.size());
  if (layer >= 0) layers_.back().size = pos_ - layers_.back().offset;

  names_.push_back(info.name);
  entries_.push_back(e);
}

uint64_t LsbWriter::finish(nlohmann::json metadata) {
  if (done_ || fd_ < 0) fail(temp_path_, "writer already finished");
  const uint64_t data_end = pos_;
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerRange& r : layers_) layers.push_back({{"layer", r.layer}, {"offset", r.offset}, {"size", r.size}});
  metadata["layers"] = std::move(layers);
  const std::string meta = metadata.dump();

  std::string directory;
  directory.reserve(entries_.size() * kEntrySize);
  for (const TensorEntry& e : entries_) {
    const auto b = encode_entry(e);
    directory.append(reinterpret_cast<const char*>(b.data()), b.size());
  }

  FileHeader h{};
  std::memcpy(h.magic, kMagic.data(), 8);
  h.version_major = kVersionMajor;
  h.version_minor = kVersionMinor;
  h.data_offset = kPageAlign;
  h.data_size = data_end - kPageAlign;
  auto section = [&](const std::string& bytes, uint64_t& off, uint64_t& size) {
    pad_to(kTensorAlign);
    off = pos_;
    size = bytes.size();
    write_at_end(bytes.data(), bytes.size());
  };
  section(meta, h.metadata_offset, h.metadata_size);
  section(tokenizer_.bytes, h.tokenizer_offset, h.tokenizer_size);
  h.tokenizer_kind = tokenizer_.bytes.empty() ? 0u : static_cast<uint32_t>(tokenizer_.kind);
  section(strings_, h.strings_offset, h.strings_size);
  section(directory, h.directory_offset, h.directory_size);
  h.tensor_count = static_cast<uint32_t>(entries_.size());
  h.file_size = pos_;

  auto bytes = encode_header(h);
  XXH3_state_t* st = XXH3_createState();
  if (!st) fail(temp_path_, "out of memory");
  XXH3_64bits_reset(st);
  XXH3_64bits_update(st, bytes.data(), kChecksumOffset);
  XXH3_64bits_update(st, meta.data(), meta.size());
  XXH3_64bits_update(st, tokenizer_.bytes.data(), tokenizer_.bytes.size());
  XXH3_64bits_update(st, strings_.data(), strings_.size());
  XXH3_64bits_update(st, directory.data(), directory.size());
  h.header_checksum = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  bytes = encode_header(h);

  if (::pwrite(fd_, bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size()))
    fail(temp_path_, "write failed: {}", std::strerror(errno));
  // Durable before it becomes visible under the target name.
  if (::fdatasync(fd_) != 0) fail(temp_path_, "sync failed: {}", std::strerror(errno));
  if (::close(fd_) != 0) {
    fd_ = -1;
    fail(temp_path_, "close failed: {}", std::strerror(errno));
  }
  fd_ = -1;
  if (std::rename(temp_path_.c_str(), target_.c_str()) != 0)
    fail(target_, "cannot rename {} to it: {}", temp_path_, std::strerror(errno));
  done_ = true;
  return h.file_size;
}

}  // namespace lsb::format
