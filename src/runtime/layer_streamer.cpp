#include "runtime/layer_streamer.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <xxhash.h>

#include "kernels/dense.h"
#include "kernels/packed_linear.h"
#include "lsb/error.h"

namespace lsb {
namespace {

// Upper bound of the memory a Linear allocates beside its packed bytes (SignLinear repacks the
// outliers into column + correction arrays and keeps per-row offsets); see kernels/packed_linear.
uint64_t repack_estimate(const TensorInfo& t) {
  const uint64_t rows = static_cast<uint64_t>(t.rows());
  const uint64_t col_bytes = t.cols() <= 65535 ? 2 : 4;     // outlier columns as u16 or u32
  const uint64_t per_outlier = col_bytes + 4;                // + float correction
  const uint64_t pad = static_cast<uint64_t>(kernels::kOutlierPad) * 8 + 64;
  if (t.dtype == DType::LSB1) {
    const uint64_t k = static_cast<uint64_t>(quant::lsb1_outliers_per_row(t.cols(), t.outlier_ratio));
    const uint64_t g = t.group_size > 0 ? static_cast<uint64_t>((t.cols() + t.group_size - 1) / t.group_size) : 1;
    // outliers, per-row offsets (2 x u64), float scales (and zero points with a mean)
    return rows * (k * per_outlier + 16 + g * 4 * (t.use_mean ? 2 : 1)) + pad;
  }
  if (t.dtype == DType::PAPER)  // outlier count is data dependent: at most alpha of all weights (+ ties)
    return rows * 24 + static_cast<uint64_t>(static_cast<double>(t.numel()) * t.outlier_ratio * per_outlier) + 4096 + pad;
  if (t.dtype == DType::Q8) return rows * 16 + 64;
  return 0;
}

}  // namespace

LayerStreamer::LayerStreamer(std::shared_ptr<const format::LsbReader> reader, const ModelConfig& cfg,
                             bool drop_page_cache)
    : reader_(std::move(reader)), cfg_(cfg), drop_page_cache_(drop_page_cache) {
  const auto& tensors = reader_->tensors();
  const auto& entries = reader_->entries();
  verified_.assign(tensors.size(), 0);
  const std::string where = reader_->describe();
  if (static_cast<int>(reader_->layers().size()) != cfg_.n_layers)
    fail(where, "file lists {} layer regions for {} layers", reader_->layers().size(), cfg_.n_layers);
  // Units 0..n_layers-1: layers; unit n_layers: the output head.
  for (const auto& lr : reader_->layers()) {
    Unit u;
    u.offset = lr.offset;
    u.size = lr.size;
    units_.push_back(u);
  }
  const std::string head_name = cfg_.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  Unit head;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int layer = entries[i].layer;
    if (layer >= 0 && layer < cfg_.n_layers) {
      Unit& u = units_[static_cast<size_t>(layer)];
      if (entries[i].data_offset < u.offset || entries[i].data_offset + entries[i].data_size > u.offset + u.size)
        fail(where, "tensor '{}' lies outside the region of layer {}", tensors[i].name, layer);
      u.tensors.push_back(i);
      u.repack_estimate += repack_estimate(tensors[i]);
    } else if (tensors[i].name == head_name) {
      head.offset = entries[i].data_offset;
      head.size = entries[i].data_size;
      head.tensors.push_back(i);
      head.repack_estimate = repack_estimate(tensors[i]);
    }
    if (tensors[i].name == "model.embed_tokens.weight") embed_ = &tensors[i];
  }
  if (head.tensors.empty() || !embed_) fail(where, "missing the embedding or the output head");
  units_.push_back(head);

  uint64_t max_size = 0, max_repack = 0;
  for (const Unit& u : units_) {
    max_size = std::max(max_size, u.size);
    max_repack = std::max(max_repack, u.repack_estimate);
  }
  footprint_.buffers = 2 * max_size;
  footprint_.repacked = 2 * max_repack;

  fd_ = ::open(where.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail(where, "cannot open: {}", std::strerror(errno));

  // Embedding through a private map: parsing touches only the small per-row sections.
  map_ = std::make_unique<MappedFile>(where);
  const size_t ei = static_cast<size_t>(embed_ - tensors.data());
  embed_bytes_ = map_->range(entries[ei].data_offset, entries[ei].data_size, "embedding");
  if (!dtype_is_dense(embed_->dtype)) {
    const quant::SchemeParams p{embed_->outlier_ratio, embed_->group_size, embed_->use_mean};
    embed_view_ = quant::PackedView::parse(embed_->dtype, embed_bytes_, embed_->rows(), embed_->cols(), p,
                                           where + ": tensor '" + embed_->name + "'");
  }
  footprint_.embedding = (embed_view_.row_gap_start.size() + embed_view_.row_value_start.size()) * 8 +
                         (64u << 10);  // + pages of the rows in use
  drop_embedding_pages();

  // Per-unit arrays are allocated and freed every token: a fixed mmap threshold returns them to
  // the OS on free instead of letting glibc's adaptive threshold park them in the heap.
  ::mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  ::mallopt(M_TRIM_THRESHOLD, 1024 * 1024);
  for (Slot& s : slots_) s.buf.resize((max_size + 7) / 8);
  thread_ = std::thread([this] { worker(); });
}

LayerStreamer::~LayerStreamer() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) ::close(fd_);
}

void LayerStreamer::embedding_row(int token, float* out) {
  if (dtype_is_dense(embed_->dtype)) kernels::rows_to_f32(embed_->dtype, embed_bytes_.data(), embed_->cols(), token, token + 1, out);
  else embed_view_.dequantize_row(token, out);
}

void LayerStreamer::drop_embedding_pages() {
  // The map is read-only and private: dropping pages only forgets them (they are re-read on demand).
  const long page = sysconf(_SC_PAGESIZE);
  auto base = reinterpret_cast<uintptr_t>(embed_bytes_.data());
  const uintptr_t start = base & ~static_cast<uintptr_t>(page - 1);
  ::madvise(reinterpret_cast<void*>(start), embed_bytes_.size() + (base - start), MADV_DONTNEED);
}

// Reads a unit into a slot and builds its Linear objects (runs on the background thread).
void LayerStreamer::load(int unit, Slot& s) {
  const Unit& u = units_[static_cast<size_t>(unit)];
  const std::string where = reader_->describe();
  auto* dst = reinterpret_cast<std::byte*>(s.buf.data());
  uint64_t done = 0;
  while (done < u.size) {
    const ssize_t n = ::pread(fd_, dst + done, u.size - done, static_cast<off_t>(u.offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail(where, "read failed at offset {}: {}", u.offset + done, n < 0 ? std::strerror(errno) : "end of file");
    done += static_cast<uint64_t>(n);
  }
  bytes_read_ += u.size;
  if (drop_page_cache_) ::posix_fadvise(fd_, static_cast<off_t>(u.offset), static_cast<off_t>(u.size), POSIX_FADV_DONTNEED);
  const auto& tensors = reader_->tensors();
  const auto& entries = reader_->entries();
  auto bytes_of = [&](size_t i) {
    std::span<const std::byte> b(dst + (entries[i].data_offset - u.offset), entries[i].data_size);
    if (!verified_[i]) {  // each tensor's checksum once per process, as the mapped reader does
      if (XXH3_64bits(b.data(), b.size()) != entries[i].data_checksum)
        fail(where, "checksum mismatch in tensor '{}'", tensors[i].name);
      verified_[i] = 1;
    }
    return b;
  };
  // Free the slot's previous weights before building the new ones, so no third copy exists.
  s.layer = LayerWeights{};
  s.head.reset();
  if (unit == cfg_.n_layers) {
    const size_t i = u.tensors[0];
    s.head = make_linear(tensors[i], bytes_of(i), where);
    return;
  }
  const TensorGetter get = [&](const std::string& name) -> std::pair<const TensorInfo*, std::span<const std::byte>> {
    for (size_t i : u.tensors)
      if (tensors[i].name == name) return {&tensors[i], bytes_of(i)};
    fail(where, "missing tensor '{}' in the region of layer {}", name, unit);
  };
  s.layer = load_layer(unit, cfg_.dim, get, where);
}

void LayerStreamer::worker() {
  for (;;) {
    int unit, slot;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || pending_unit_ >= 0; });
      if (stop_) return;
      unit = pending_unit_;
      slot = pending_slot_;
      pending_unit_ = -1;
    }
    Slot& s = slots_[slot];
    std::string error;
    try {
      load(unit, s);
    } catch (const std::exception& e) {
      error = e.what();
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      s.error = error;
      s.ready = true;
    }
    cv_.notify_all();
  }
}

void LayerStreamer::request(int unit, int slot) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    Slot& s = slots_[slot];
    s.unit = unit;
    s.ready = false;
    s.error.clear();
    pending_unit_ = unit;
    pending_slot_ = slot;
  }
  cv_.notify_all();
}

const LayerStreamer::Slot& LayerStreamer::acquire(int unit) {
  int slot = slots_[0].unit == unit ? 0 : slots_[1].unit == unit ? 1 : -1;
  if (slot < 0) {
    // Not prefetched (first use, or an out-of-order access): load it into a slot that is idle.
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return pending_unit_ < 0 && (slots_[0].unit < 0 || slots_[0].ready) &&
                              (slots_[1].unit < 0 || slots_[1].ready); });
    lk.unlock();
    slot = 0;
    request(unit, slot);
  }
  Slot& s = slots_[slot];
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return s.ready; });
  }
  if (!s.error.empty()) {
    s.unit = -1;
    throw Error(s.error);
  }
  // The other slot's unit has been used: prefetch the unit after this one into it.
  const int next = (unit + 1) % n_units();
  Slot& other = slots_[1 - slot];
  {
    std::unique_lock<std::mutex> lk(mu_);
    cv_.wait(lk, [&] { return other.unit < 0 || other.ready; });
  }
  if (other.unit != next) request(next, 1 - slot);
  return s;
}

uint64_t LayerStreamer::bytes_per_token() const {
  uint64_t b = 0;
  for (const Unit& u : units_) b += u.size;
  return b + embed_bytes_.size() / static_cast<uint64_t>(std::max<int64_t>(1, embed_->rows()));
}

const LayerWeights& LayerStreamer::layer(int l) { return acquire(l).layer; }

const Linear& LayerStreamer::head() { return *acquire(cfg_.n_layers).head; }

}  // namespace lsb
