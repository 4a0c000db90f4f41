#include "runtime/layer_streamer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>

#include <xxhash.h>

#include "base/align.h"
#include "base/error.h"
#include "base/sysinfo.h"
#include "kernels/dense.h"

namespace lsb {
namespace {

constexpr uint64_t kPage = 4096;  // O_DIRECT alignment of offsets, lengths and buffers

// Counts what a parse allocates (the embedding's row index), so the budget uses the real figure.
struct CountingResource final : std::pmr::memory_resource {
  uint64_t bytes = 0;
  void* do_allocate(size_t n, size_t align) override {
    bytes += n;
    return std::pmr::new_delete_resource()->allocate(n, align);
  }
  void do_deallocate(void* p, size_t n, size_t align) override { std::pmr::new_delete_resource()->deallocate(p, n, align); }
  bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override { return this == &o; }
};

}  // namespace

void* LayerStreamer::OverflowResource::do_allocate(size_t n, size_t align) {
  bytes += n;
  return ::operator new(n, std::align_val_t(align));
}

void LayerStreamer::OverflowResource::do_deallocate(void* p, size_t n, size_t align) {
  ::operator delete(p, n, std::align_val_t(align));
}

LayerStreamer::LayerStreamer(std::shared_ptr<const format::LsbReader> reader, const StreamOptions& opt)
    : reader_(std::move(reader)), cfg_(reader_->config()), opt_(opt) {
  base_rss_ = current_rss_bytes();
  const auto& tensors = reader_->tensors();
  const auto& entries = reader_->entries();
  verified_.assign(tensors.size(), 0);
  const std::string where = reader_->describe();
  if (static_cast<int>(reader_->layers().size()) != cfg_.n_layers)
    fail(where, "file lists {} layer regions for {} layers", reader_->layers().size(), cfg_.n_layers);
  fd_ = ::open(where.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail(where, "cannot open: {}", std::strerror(errno));
  const TensorInfo& norm = reader_->get("model.norm.weight");
  final_norm_ = load_vector(norm, reader_->data(norm), cfg_.dim, where);

  // What each tensor's Linear will build in its slot's arena: the Linear says, reading what it
  // needs of the blob (e.g. the outlier counts) from the file.
  auto arena_of = [&](size_t i) -> uint64_t {
    const TensorInfo& t = tensors[i];
    if (t.shape.size() != 2) return 0;
    const BlobPeek peek = [&](uint64_t off, uint64_t len, void* out) {
      if (off > entries[i].data_size || len > entries[i].data_size - off)
        fail(where, "tensor '{}': blob of {} bytes is too short for [{}, +{})", t.name, entries[i].data_size, off, len);
      if (::pread(fd_, out, len, static_cast<off_t>(entries[i].data_offset + off)) != static_cast<ssize_t>(len))
        fail(where, "cannot read tensor '{}' at offset {}", t.name, entries[i].data_offset + off);
    };
    return linear_arena_bytes(t, peek, where);
  };

  // Units 0..n_layers-1: layers; unit n_layers: the output head.
  for (const auto& lr : reader_->layers()) units_.push_back(Unit{lr.offset, lr.size, {}, 0});
  const std::string head_name = cfg_.tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
  Unit head;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int layer = entries[i].layer;
    Unit* u = nullptr;
    if (layer >= 0 && layer < cfg_.n_layers) {
      u = &units_[static_cast<size_t>(layer)];
      if (entries[i].data_offset < u->offset || entries[i].data_offset + entries[i].data_size > u->offset + u->size)
        fail(where, "tensor '{}' lies outside the region of layer {}", tensors[i].name, layer);
    } else if (tensors[i].name == head_name) {
      head = Unit{entries[i].data_offset, entries[i].data_size, {}, 0};
      u = &head;
    }
    if (u) {
      u->tensors.push_back(i);
      u->arena_bytes += arena_of(i);
    }
    if (tensors[i].name == "model.embed_tokens.weight") embed_ = &tensors[i];
  }
  if (head.tensors.empty() || !embed_) fail(where, "missing the embedding or the output head");
  units_.push_back(head);

  // A slot holds a unit's bytes as read (page-aligned around the unit), then its arena.
  for (const Unit& u : units_) {
    const uint64_t read_len = align_up(u.offset + u.size, kPage) - align_down(u.offset, kPage);
    footprint_.unit_bytes = std::max(footprint_.unit_bytes, read_len);
    footprint_.slot_bytes = std::max(footprint_.slot_bytes, read_len + align_up(u.arena_bytes, kPage));
  }
  // Heap allocations of a built unit beside its arena: norm vectors, the Linear objects, parse's
  // row buffer.
  footprint_.slot_bytes += 2ull * static_cast<uint64_t>(cfg_.dim) * 4 + (256u << 10);

  if (opt_.drop_page_cache) {
    // Reads that bypass the page cache: every unit really comes from the disk, and no copy is
    // made through the cache. Filesystems without O_DIRECT (tmpfs) fall back to pread+fadvise.
    fd_direct_ = std::getenv("LSB_NO_DIRECT") ? -1 : ::open(where.c_str(), O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (fd_direct_ >= 0) {
      void* probe = std::aligned_alloc(kPage, kPage);
      if (!probe || ::pread(fd_direct_, probe, kPage, 0) < 0) {
        ::close(fd_direct_);
        fd_direct_ = -1;
      }
      std::free(probe);
    }
  }

  // Embedding through a private map: parsing touches only the small per-row sections.
  map_ = std::make_unique<MappedFile>(where);
  const size_t ei = static_cast<size_t>(embed_ - tensors.data());
  embed_bytes_ = map_->range(entries[ei].data_offset, entries[ei].data_size, "embedding");
  CountingResource counted;
  if (!dtype_is_dense(embed_->dtype))
    embed_view_ = quant::open_blob(embed_->dtype, embed_bytes_, embed_->rows(), embed_->cols(), embed_->params,
                                   {.where = where + ": tensor '" + embed_->name + "'", .mr = &counted});
  footprint_.embedding = counted.bytes + (64u << 10);  // + pages of the rows in use
  embedding_done();

  reader_thread_ = std::thread([this] { reader_loop(); });
  builder_thread_ = std::thread([this] { builder_loop(); });
}

LayerStreamer::~LayerStreamer() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (reader_thread_.joinable()) reader_thread_.join();
  if (builder_thread_.joinable()) builder_thread_.join();
  const uint64_t storage = footprint_.slot_bytes;
  for (Slot& s : slots_) {
    free_slot(s);
    if (s.storage) ::munmap(s.storage, storage);
  }
  if (fd_direct_ >= 0) ::close(fd_direct_);
  if (fd_ >= 0) ::close(fd_);
}

void LayerStreamer::embedding_row(int token, float* out) {
  if (embed_view_) embed_view_->dequantize_row(token, out);
  else kernels::rows_to_f32(embed_->dtype, embed_bytes_.data(), embed_->cols(), token, token + 1, out);
}

void LayerStreamer::embedding_done() {
  // The map is read-only and private: dropping pages only forgets them (they are re-read on demand).
  const long page = sysconf(_SC_PAGESIZE);
  auto base = reinterpret_cast<uintptr_t>(embed_bytes_.data());
  const uintptr_t start = base & ~static_cast<uintptr_t>(page - 1);
  ::madvise(reinterpret_cast<void*>(start), embed_bytes_.size() + (base - start), MADV_DONTNEED);
}

// ------------------------------------------------------------------ background threads

// Reads a unit's bytes into its slot (reader thread).
void LayerStreamer::read_unit(Slot& s, int unit) {
  const Unit& u = units_[static_cast<size_t>(unit)];
  const std::string where = reader_->describe();
  if (!s.storage) {
    void* p = ::mmap(nullptr, footprint_.slot_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) fail(where, "cannot allocate a streaming slot of {} bytes: {}", footprint_.slot_bytes, std::strerror(errno));
    // Fewer page faults on first use and fewer TLB misses while the kernels stream the weights.
    ::madvise(p, footprint_.slot_bytes, MADV_HUGEPAGE);
    s.storage = static_cast<std::byte*>(p);
  }
  const uint64_t start = align_down(u.offset, kPage), end = u.offset + u.size;
  const bool direct = fd_direct_ >= 0;
  // Direct reads cover whole pages around the unit; buffered reads just the unit, at the same
  // place in the slot (so the unit's alignment in memory does not depend on the mode).
  const uint64_t from = direct ? start : u.offset, to = direct ? align_up(end, kPage) : end;
  const int fd = direct ? fd_direct_ : fd_;
  uint64_t done = from - start;
  while (start + done < to) {
    const ssize_t n = ::pread(fd, s.storage + done, to - start - done, static_cast<off_t>(start + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(where, "read failed at offset {}: {}", start + done, std::strerror(errno));
    if (n == 0) {
      if (start + done >= end) break;  // the last page of the file is short
      fail(where, "read failed at offset {}: end of file", start + done);
    }
    done += static_cast<uint64_t>(n);
  }
  bytes_read_ += done - (from - start);
  if (!direct && opt_.drop_page_cache)
    ::posix_fadvise(fd_, static_cast<off_t>(u.offset), static_cast<off_t>(u.size), POSIX_FADV_DONTNEED);
  s.bytes = std::span<const std::byte>(s.storage + (u.offset - start), u.size);
}

// Checks a unit's tensors and builds its Linear objects, their arrays in the slot's arena
// (builder thread).
void LayerStreamer::build_unit(Slot& s, int unit) {
  const Unit& u = units_[static_cast<size_t>(unit)];
  const std::string where = reader_->describe();
  const auto& tensors = reader_->tensors();
  const auto& entries = reader_->entries();
  // The first load of a unit checks its checksums and every value; later loads of the same
  // bytes (the file is read-only to us) check only what memory safety depends on.
  bool first_load = false;
  for (size_t i : u.tensors) first_load = first_load || !verified_[i];
  auto bytes_of = [&](size_t i) {
    std::span<const std::byte> b = s.bytes.subspan(entries[i].data_offset - u.offset, entries[i].data_size);
    // Each tensor's checksum once per process, as the mapped reader does.
    if (!verified_[i] && XXH3_64bits(b.data(), b.size()) != entries[i].data_checksum)
      fail(where, "checksum mismatch in tensor '{}'", tensors[i].name);
    return b;
  };
  // Marked only once the whole unit has been built with every check.
  auto mark_verified = [&] {
    for (size_t i : u.tensors) verified_[i] = 1;
  };
  const uint64_t arena_at = align_up(static_cast<uint64_t>(s.bytes.data() + s.bytes.size() - s.storage), kPage);
  s.arena.emplace(s.storage + arena_at, footprint_.slot_bytes - arena_at, &overflow_);
  const LinearLoad load{&*s.arena, first_load};
  if (unit == cfg_.n_layers) {
    const size_t i = u.tensors[0];
    s.head = make_linear(tensors[i], bytes_of(i), where, load);
    mark_verified();
    return;
  }
  const TensorGetter get = [&](const std::string& name) -> std::pair<const TensorInfo*, std::span<const std::byte>> {
    for (size_t i : u.tensors)
      if (tensors[i].name == name) return {&tensors[i], bytes_of(i)};
    fail(where, "missing tensor '{}' in the region of layer {}", name, unit);
  };
  s.layer = load_layer(unit, cfg_.dim, get, where, load);
  mark_verified();
}

// One background stage: takes slots from `queue` in order, runs `work` on each outside the lock
// (timing it into `busy_ns`), then hands the slot on with `done` under the lock; an exception
// becomes the slot's error, which the main thread rethrows when it reaches that unit.
void LayerStreamer::stage_loop(std::deque<int>& queue, void (LayerStreamer::*work)(Slot&, int),
                               std::atomic<uint64_t>& busy_ns, void (LayerStreamer::*done)(int slot)) {
  for (;;) {
    int slot, unit;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !queue.empty(); });
      if (stop_) return;
      slot = queue.front();
      queue.pop_front();
      unit = slots_[slot].unit;
      ++busy_;
    }
    Slot& s = slots_[slot];
    std::string error;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      (this->*work)(s, unit);
    } catch (const std::exception& e) {
      error = e.what();
    }
    busy_ns += static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
    {
      std::lock_guard<std::mutex> lk(mu_);
      --busy_;
      if (error.empty()) {
        (this->*done)(slot);
      } else {
        s.error = error;
        s.stage = Stage::kReady;
      }
    }
    cv_.notify_all();
  }
}

void LayerStreamer::read_done(int slot) {
  slots_[slot].stage = Stage::kRead;
  build_q_.push_back(slot);
}

void LayerStreamer::build_done(int slot) { slots_[slot].stage = Stage::kReady; }

void LayerStreamer::reader_loop() { stage_loop(read_q_, &LayerStreamer::read_unit, read_ns_, &LayerStreamer::read_done); }

void LayerStreamer::builder_loop() {
  stage_loop(build_q_, &LayerStreamer::build_unit, build_ns_, &LayerStreamer::build_done);
}

// ------------------------------------------------------------------ main thread

int LayerStreamer::find_slot(int unit) const {
  for (int i = 0; i < n_slots_; ++i)
    if (slots_[i].unit == unit) return i;
  return -1;
}

void LayerStreamer::wait_idle(std::unique_lock<std::mutex>& lk) {
  cv_.wait(lk, [&] { return read_q_.empty() && build_q_.empty() && busy_ == 0; });
}

void LayerStreamer::schedule(int slot, int unit) {
  Slot& s = slots_[slot];
  s.unit = unit;
  s.stage = Stage::kQueued;
  s.error.clear();
  read_q_.push_back(slot);
  cv_.notify_all();
}

void LayerStreamer::free_slot(Slot& s) {
  // The Linear objects go before the arena they allocated from.
  s.layer = LayerWeights{};
  s.head.reset();
  s.arena.reset();
  s.bytes = {};
  s.unit = -1;
  s.stage = Stage::kFree;
  s.error.clear();
}

void LayerStreamer::set_slots(int n) {
  n = std::clamp(n, kMinSlots, kMaxSlots);
  std::unique_lock<std::mutex> lk(mu_);
  if (n == n_slots_) return;
  wait_idle(lk);
  for (int i = n; i < n_slots_; ++i) {
    free_slot(slots_[i]);
    if (slots_[i].storage) ::munmap(slots_[i].storage, footprint_.slot_bytes);
    slots_[i].storage = nullptr;
    if (current_ == i) current_ = -1;
  }
  n_slots_ = n;
}

const LayerStreamer::Slot& LayerStreamer::acquire(int unit) {
  std::unique_lock<std::mutex> lk(mu_);
  int slot = find_slot(unit);
  if (slot < 0) {
    // Not prefetched (first use, or an out-of-order access): start the pipeline at this unit.
    wait_idle(lk);
    for (int i = 0; i < n_slots_; ++i) free_slot(slots_[i]);
    current_ = -1;
    slot = 0;
    schedule(slot, unit);
  }
  Slot& s = slots_[slot];
  cv_.wait(lk, [&] { return s.stage == Stage::kReady; });
  if (!s.error.empty()) {
    const std::string error = s.error;
    free_slot(s);
    throw Error(error);
  }
  // The unit computed before this one is done with: its slot takes the next prefetch.
  if (current_ >= 0 && current_ != slot) free_slot(slots_[current_]);
  current_ = slot;
  for (int k = 1; k < n_slots_; ++k) {
    const int next = (unit + k) % n_units();
    if (next == unit || find_slot(next) >= 0) continue;
    int free = -1;
    for (int i = 0; i < n_slots_ && free < 0; ++i)
      if (slots_[i].stage == Stage::kFree) free = i;
    if (free < 0) break;
    schedule(free, next);
  }
  return s;
}

uint64_t LayerStreamer::bytes_per_token() const {
  uint64_t b = 0;
  for (const Unit& u : units_) b += u.size;
  return b + embed_bytes_.size() / static_cast<uint64_t>(std::max<int64_t>(1, embed_->rows()));
}

const LayerWeights& LayerStreamer::layer(int l) { return acquire(l).layer; }

uint64_t LayerStreamer::resident_need(const BufferNeeds& needs, int slots) const {
  return base_rss_ + footprint_.with_slots(slots) + needs.kv_bytes + needs.activation_bytes;
}

void LayerStreamer::reserve(const BufferNeeds& needs) {
  const uint64_t need = resident_need(needs, kMinSlots);
  if (need > opt_.mem_budget) {
    const auto& f = footprint_;
    auto mb = [](uint64_t b) { return static_cast<double>(b) / (1 << 20); };
    fail(reader_->describe(),
         "--mem-budget {:.0f} MiB is too small: it needs at least {:.0f} MiB = two weight slots (current + prefetch; "
         "each the largest unit {:.1f} + its in-memory repacking {:.1f}) {:.1f} + embedding index {:.1f} + KV cache "
         "for {} positions {:.1f} + activations for {} tokens {:.1f} + the process itself {:.1f} (MiB)",
         mb(opt_.mem_budget), std::ceil(mb(need)), mb(f.unit_bytes), mb(f.slot_bytes - f.unit_bytes),
         mb(2 * f.slot_bytes), mb(f.embedding), needs.ctx, mb(needs.kv_bytes), needs.batch, mb(needs.activation_bytes),
         mb(base_rss_));
  }
  // A third slot, where the budget has room for it, lets reading overlap repacking.
  const bool room = resident_need(needs, kMaxSlots) <= opt_.mem_budget;
  set_slots(room ? std::min(opt_.max_slots, kMaxSlots) : kMinSlots);
}

const Linear& LayerStreamer::head() { return *acquire(cfg_.n_layers).head; }

}  // namespace lsb
