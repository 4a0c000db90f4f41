#include "runtime/layer_streamer.h"

#include <fcntl.h>
#include <omp.h>
#include <sys/mman.h>
#include <sys/stat.h>
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
#include "runtime/threads.h"

namespace lsb {
namespace {

constexpr uint64_t kPage = 4096;  // O_DIRECT alignment of offsets, lengths and buffers

uint64_t current_file_size(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

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
  const auto& tensors = reader_->tensors();
  const auto& entries = reader_->entries();
  verified_.assign(tensors.size(), 0);
  const std::string where = reader_->describe();
  if (static_cast<int>(reader_->layers().size()) != cfg_.n_layers)
    fail(where, "file lists {} layer regions for {} layers", reader_->layers().size(), cfg_.n_layers);
  fd_ = ::open(where.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail(where, "cannot open: {}", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0) fail(where, "cannot stat: {}", std::strerror(errno));
  file_size_ = static_cast<uint64_t>(st.st_size);
  file_ctime_sec_ = st.st_ctim.tv_sec;
  file_ctime_nsec_ = st.st_ctim.tv_nsec;
  // The file opened here must be the one the reader checked (not one renamed over it since).
  if (file_size_ != reader_->file_size()) fail(where, "the file changed while it was being opened ({} bytes, then {})", reader_->file_size(), file_size_);
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
      const uint64_t at = entries[i].data_offset + off;
      read_exact(fd_, static_cast<std::byte*>(out), len, at, at + len);
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

  // Embedding: parse the blob once through a map of it (checksum and every check; for packed
  // schemes this builds the per-row index), then replace the map, at the same addresses, by
  // anonymous memory that holds nothing until embedding_row reads a row's bytes into it. The
  // view's pointers stay valid, no page of the file stays mapped, and a row costs exactly the
  // pages of its spans, released after use.
  const size_t ei = static_cast<size_t>(embed_ - tensors.data());
  embed_offset_ = entries[ei].data_offset;
  const uint64_t map_from = align_down(embed_offset_, kPage);
  embed_map_len_ = align_up(embed_offset_ + entries[ei].data_size, kPage) - map_from;
  void* m = ::mmap(nullptr, embed_map_len_, PROT_READ, MAP_PRIVATE, fd_, static_cast<off_t>(map_from));
  if (m == MAP_FAILED) fail(where, "cannot map the embedding: {}", std::strerror(errno));
  embed_map_ = m;
  embed_bytes_ = {static_cast<const std::byte*>(m) + (embed_offset_ - map_from), entries[ei].data_size};
  ::madvise(m, embed_map_len_, MADV_NOHUGEPAGE);
  const std::string ew = where + ": tensor '" + embed_->name + "'";
  if (!dtype_is_dense(embed_->dtype))
    embed_view_ = quant::open_blob(embed_->dtype, embed_bytes_, embed_->rows(), embed_->cols(), embed_->params, {.where = ew});
  else if (embed_bytes_.size() != static_cast<uint64_t>(embed_->rows()) * embed_->cols() * dtype_size(embed_->dtype))
    fail(ew, "holds {} bytes, not rows x cols", embed_bytes_.size());
  // Per row: the pages its bytes take (a span may straddle a page boundary: rounded out on both
  // sides; the largest row is the budget's term) and a checksum of its bytes, so that every row
  // read later is checked like every unit is. Then the blob's own checksum, which covers what
  // the parse and the row checksums saw: a file changed before it finishes fails here.
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> hs(XXH3_createState(), XXH3_freeState);
  if (!hs) throw std::bad_alloc();
  auto drop_map = [&] { ::madvise(m, embed_map_len_, MADV_DONTNEED); };  // opening never holds the blob
  embed_row_sums_.resize(static_cast<size_t>(embed_->rows()));
  for (int64_t r = 0; r < embed_->rows(); ++r) {
    const quant::RowSpans s = embed_row_spans(static_cast<int>(r));
    uint64_t pages = 0;
    XXH3_64bits_reset(hs.get());
    for (int i = 0; i < s.n; ++i) {
      const auto sp = s.spans[static_cast<size_t>(i)];
      const auto a = reinterpret_cast<uintptr_t>(sp.data());
      pages += align_up(a + sp.size(), kPage) - align_down(a, kPage);
      XXH3_64bits_update(hs.get(), sp.data(), sp.size());
    }
    embed_row_sums_[static_cast<size_t>(r)] = XXH3_64bits_digest(hs.get());
    footprint_.embedding = std::max(footprint_.embedding, pages);
    if (r % 1024 == 1023) drop_map();
  }
  drop_map();
  {
    XXH3_64bits_reset(hs.get());
    constexpr uint64_t kWindow = 4ull << 20;
    for (uint64_t at = 0; at < embed_bytes_.size(); at += kWindow) {
      XXH3_64bits_update(hs.get(), embed_bytes_.data() + at, std::min<uint64_t>(kWindow, embed_bytes_.size() - at));
      drop_map();
    }
    if (XXH3_64bits_digest(hs.get()) != entries[ei].data_checksum)
      fail(where, "checksum mismatch in tensor '{}'", embed_->name);
  }
  ::madvise(m, embed_map_len_, MADV_DONTNEED);
  if (::mmap(m, embed_map_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) ==
      MAP_FAILED)
    fail(where, "cannot map memory for embedding rows: {}", std::strerror(errno));
  ::madvise(m, embed_map_len_, MADV_NOHUGEPAGE);  // a row must not fault in 2 MiB

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
  if (embed_map_) ::munmap(embed_map_, embed_map_len_);
  if (fd_direct_ >= 0) ::close(fd_direct_);
  if (fd_ >= 0) ::close(fd_);
}

quant::RowSpans LayerStreamer::embed_row_spans(int token) const {
  if (embed_view_) return embed_view_->row_spans(token);
  quant::RowSpans s;
  const uint64_t row = static_cast<uint64_t>(embed_->cols()) * dtype_size(embed_->dtype);
  s.add(embed_bytes_.data() + static_cast<uint64_t>(token) * row, row);
  return s;
}

void LayerStreamer::embedding_row(int token, float* out) {
  const quant::RowSpans s = embed_row_spans(token);
  // The spans' addresses are inside the anonymous pages standing in for the blob: fill just them.
  auto pages = [&](int i, auto&& fn) {
    const auto a = reinterpret_cast<uintptr_t>(s.spans[static_cast<size_t>(i)].data());
    const uintptr_t lo = align_down(a, kPage), hi = align_up(a + s.spans[static_cast<size_t>(i)].size(), kPage);
    fn(reinterpret_cast<void*>(lo), hi - lo);
  };
  struct Release {  // the pages go back even when a read fails
    const quant::RowSpans& s;
    decltype(pages)& each;
    ~Release() {
      for (int i = 0; i < s.n; ++i) each(i, [](void* p, uint64_t n) { ::madvise(p, n, MADV_DONTNEED); });
    }
  } release{s, pages};
  for (int i = 0; i < s.n; ++i) {
    const auto sp = s.spans[static_cast<size_t>(i)];
    const uint64_t at = embed_offset_ + static_cast<uint64_t>(sp.data() - embed_bytes_.data());
    read_exact(fd_, const_cast<std::byte*>(sp.data()), sp.size(), at, at + sp.size());
    bytes_read_ += sp.size();
  }
  check_unchanged();
  XXH3_state_t* st = XXH3_createState();
  if (!st) throw std::bad_alloc();
  XXH3_64bits_reset(st);
  for (int i = 0; i < s.n; ++i) XXH3_64bits_update(st, s.spans[static_cast<size_t>(i)].data(), s.spans[static_cast<size_t>(i)].size());
  const uint64_t sum = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  if (sum != embed_row_sums_[static_cast<size_t>(token)])
    fail(reader_->describe(),
         "checksum mismatch in row {} of tensor '{}' (it matched when the file was opened: the file changed while it "
         "was being streamed)",
         token, embed_->name);
  if (embed_view_) embed_view_->dequantize_row(token, out);
  else kernels::rows_to_f32(embed_->dtype, embed_bytes_.data(), embed_->cols(), token, token + 1, out);
}

// pread until `len` bytes are in; bytes past `valid_end` (the end of what is wanted, for direct
// reads of whole pages at the end of the file) may be missing. Every failure names the file.
void LayerStreamer::read_exact(int fd, std::byte* dst, uint64_t len, uint64_t offset, uint64_t valid_end) {
  uint64_t done = 0;
  while (done < len) {
    const ssize_t n = ::pread(fd, dst + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(reader_->describe(), "read failed at offset {}: {}", offset + done, std::strerror(errno));
    if (n == 0) {
      if (offset + done >= valid_end) return;  // the last page of the file is short
      fail(reader_->describe(), "read failed at offset {}: end of file (the file is {} bytes now, {} when opened: truncated while in use?)",
           offset + done, current_file_size(fd), file_size_);
    }
    done += static_cast<uint64_t>(n);
  }
}

// After every read: a file that was truncated, extended or written since it was opened has a new
// size or change time (ctime cannot be set back by a writer). Renaming another file over the path
// is not a change: this process keeps reading the file it opened.
void LayerStreamer::check_unchanged() {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) fail(reader_->describe(), "cannot stat: {}", std::strerror(errno));
  if (static_cast<uint64_t>(st.st_size) != file_size_)
    fail(reader_->describe(), "the file changed while it was being streamed: {} bytes, {} when opened", st.st_size,
         file_size_);
  if (st.st_ctim.tv_sec != file_ctime_sec_ || st.st_ctim.tv_nsec != file_ctime_nsec_)
    fail(reader_->describe(), "the file changed while it was being streamed (it was written to after it was opened)");
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
  read_exact(fd, s.storage + (from - start), to - from, from, end);
  check_unchanged();
  bytes_read_ += end - u.offset;
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
  // Every load checks the checksums of what was read: the same bytes as last time, or a file
  // changed underneath. The first load of a unit also checks every value; later loads of bytes
  // with the same checksums check only what memory safety depends on.
  bool first_load = false;
  for (size_t i : u.tensors) first_load = first_load || !verified_[i];
  auto bytes_of = [&](size_t i) {
    std::span<const std::byte> b = s.bytes.subspan(entries[i].data_offset - u.offset, entries[i].data_size);
    if (XXH3_64bits(b.data(), b.size()) != entries[i].data_checksum)
      fail(where, "checksum mismatch in tensor '{}'{}", tensors[i].name,
           verified_[i] ? " (it matched when first read: the file changed while it was being streamed)" : "");
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
  return process_.total() + footprint_.with_slots(slots) + needs.kv_bytes + needs.activation_bytes;
}

void LayerStreamer::reserve(const BufferNeeds& needs) {
  auto mb = [](uint64_t b) { return static_cast<double>(b) / (1 << 20); };
  if (!measured_) {
    // The first call comes before any slot or buffer of the run exists (slots are allocated when
    // the first unit is read, buffers after this returns): what is resident now is the process
    // itself. What can still grow outside the slots and the model's buffers is bounded: code and
    // library pages not yet touched (at most their mappings' size) and thread stacks (at most
    // their size; threads started with prepare_process_for_budget() have small ones).
    const ProcessMemory now = process_memory();
    process_.measured = now.rss ? now.rss : current_rss_bytes();
    process_.peak = now.peak;
    // Libraries only compress, calibrate and synth call (LAPACK/BLAS for GPTQ and calibration,
    // SentencePiece training): a streaming run never executes or reads them after start-up, and
    // they are large (OpenBLAS maps 32 MiB of code). Their start-up pages are in `measured`.
    static const std::vector<std::string> kNeverCalledWhileStreaming = {"libopenblas", "libblas", "liblapack",
                                                                        "libgfortran", "libquadmath",
                                                                        "libsentencepiece_train"};
    process_.code_growth = file_mapped_not_resident_bytes(kNeverCalledWhileStreaming);
    const int workers = std::max(0, omp_get_max_threads() - 1);
    process_.threads = workers + 3;  // + reader, builder, and the main thread's own growth
    process_.stacks = static_cast<uint64_t>(workers) * thread_stack_bound(true) + 3 * thread_stack_bound(false);
    measured_ = true;
  } else if (omp_get_max_threads() - 1 > process_.threads - 3) {
    // More OpenMP workers than when measured (a caller raised the thread count): their stacks too.
    const int workers = omp_get_max_threads() - 1;
    process_.stacks += static_cast<uint64_t>(workers - (process_.threads - 3)) * thread_stack_bound(true);
    process_.threads = workers + 3;
  }
  const uint64_t need = resident_need(needs, kMinSlots);
  // Opening the model and the input (e.g. tokenizing eval's text) may already have taken the
  // process past the budget; the run cannot undo that peak.
  if (need <= opt_.mem_budget && process_.peak > opt_.mem_budget)
    fail(reader_->describe(),
         "--mem-budget {:.0f} MiB was exceeded before the first token: opening the model and preparing the input "
         "took the process to {:.1f} MiB (tokenizing a long text is the usual cause; use a shorter text or a "
         "budget of at least {:.0f} MiB)",
         mb(opt_.mem_budget), mb(process_.peak), std::ceil(mb(process_.peak)));
  if (need > opt_.mem_budget) {
    const auto& f = footprint_;
    const auto& p = process_;
    fail(reader_->describe(),
         "--mem-budget {:.0f} MiB is too small: it needs at least {:.0f} MiB = two weight slots (current + prefetch; "
         "each the largest unit {:.1f} + its in-memory repacking {:.1f}) {:.1f} + KV cache for {} positions {:.1f} + "
         "activations for {} tokens {:.1f} + an embedding row being read {:.1f} + the process itself, measured "
         "(program, libraries, file index, tokenizer, input) {:.1f} + program and library code not yet in memory "
         "{:.1f} + thread stacks ({} x {:.2f}) {:.1f} (MiB)",
         mb(opt_.mem_budget), std::ceil(mb(need)), mb(f.unit_bytes), mb(f.slot_bytes - f.unit_bytes),
         mb(2 * f.slot_bytes), needs.ctx, mb(needs.kv_bytes), needs.batch, mb(needs.activation_bytes),
         mb(f.embedding), mb(p.measured), mb(p.code_growth), p.threads,
         mb(p.threads ? p.stacks / static_cast<uint64_t>(p.threads) : 0), mb(p.stacks));
  }
  // A third slot, where the budget has room for it, lets reading overlap repacking.
  const bool room = resident_need(needs, kMaxSlots) <= opt_.mem_budget;
  set_slots(room ? std::min(opt_.max_slots, kMaxSlots) : kMinSlots);
}

const Linear& LayerStreamer::head() { return *acquire(cfg_.n_layers).head; }

}  // namespace lsb
