// Layer streaming for models larger than the memory one is willing to give them (--mem-budget).
//
// The model is divided into units: each transformer layer (its page-aligned region of the .lsb
// file) and the output head. A unit lives in a slot: one fixed block of memory holding the
// unit's bytes followed by an arena for what its Linear objects build at load (repacked
// outliers, float coefficients). Slots are allocated once and reused, so streaming never pays
// for fresh pages after the first pass over the model.
//
// Two background threads form a pipeline while the main thread computes unit u:
//   reader  - reads unit u+2 from the file (O_DIRECT with --drop-page-cache, else pread);
//   builder - checks and builds unit u+1 (parse, repack) from bytes already read.
// With three slots, reading overlaps building and computing: the disk stays busy as long as
// building and computing a unit each take less time than reading it. With two slots (a budget too small for three) reading and building of the
// next unit run one after the other while the current unit computes.
//
// Embedding rows are read on demand with pread, only the bytes a row needs, into pages released
// right after the row is converted. Everything resident is accounted for when the model sizes
// its buffers (reserve()): the process as the OS measures it at that moment, plus a bound for
// everything that can still grow (slots, the model's buffers, code not yet paged in, thread
// stacks). A budget that cannot hold it is refused with the minimum it would need.
//
// The file is read with pread only (the reader's map is released by open_session), so a file
// truncated underneath ends the run with an error instead of SIGBUS. Every unit's checksums are
// checked each time it is read, and the file's size and change time after every read: a file
// truncated or rewritten while it is streamed is detected (docs/STREAMING.md, "Faults").
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <memory_resource>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "format/lsb_reader.h"
#include "model/weights.h"
#include "quant/scheme.h"

namespace lsb {

// What streaming keeps resident, in bytes (for the budget check and its error message).
struct StreamFootprint {
  uint64_t slot_bytes = 0;   // one slot: the largest unit's bytes + its in-memory repacking
  uint64_t unit_bytes = 0;   // of which the largest unit's bytes (as read, page-aligned)
  uint64_t embedding = 0;    // pages of the embedding row being read (the largest row's, page-rounded)
  uint64_t with_slots(int slots) const { return static_cast<uint64_t>(slots) * slot_bytes + embedding; }
};

// The rest of the process, measured by the OS when the model first sizes its buffers (before
// any slot or buffer of the run exists), plus bounds for what can still grow outside them.
struct ProcessFootprint {
  uint64_t measured = 0;     // resident then: code run so far, libraries, heap (file index,
                             // tokenizer, embedding row index, the input), stacks so far
  uint64_t code_growth = 0;  // file-backed mappings (program, libraries) not resident yet
  uint64_t stacks = 0;       // every thread's whole stack: reader, builder, OpenMP workers, and
                             // the main thread's growth (one stack's worth)
  int threads = 0;           // threads counted in `stacks`
  uint64_t peak = 0;         // the process's peak resident size so far (VmHWM)
  uint64_t total() const { return measured + code_growth + stacks; }
};

struct StreamOptions {
  uint64_t mem_budget = 0;  // bytes everything resident must stay within
  // Drop each unit from the OS page cache after reading it, so every token reads the weights
  // from the disk (for measuring disk-bound speed on a machine with spare RAM).
  bool drop_page_cache = false;
  // At most this many weight slots (2: current + prefetch; 3: reading also overlaps repacking).
  // Fewer are used when the budget has no room for them.
  int max_slots = 3;
};

class LayerStreamer final : public WeightProvider {
 public:
  static constexpr int kMinSlots = 2;  // current + prefetch
  static constexpr int kMaxSlots = 3;  // current + built + being read

  LayerStreamer(std::shared_ptr<const format::LsbReader> reader, const StreamOptions& opt);
  ~LayerStreamer() override;
  LayerStreamer(const LayerStreamer&) = delete;
  LayerStreamer& operator=(const LayerStreamer&) = delete;

  const StreamFootprint& footprint() const { return footprint_; }
  int n_units() const { return static_cast<int>(units_.size()); }  // n_layers + 1 (the head)
  // Slots in use (kMinSlots..kMaxSlots); changing it waits for work in flight, frees the slots
  // given up, and keeps the units already loaded where it can.
  int slots() const { return n_slots_; }
  void set_slots(int n);

  // WeightProvider. layer(l) waits for the unit if the prefetch is not done and starts
  // prefetching the units after it; what it returns is valid until the next layer()/head().
  const LayerWeights& layer(int l) override;
  const Linear& head() override;
  // Reads the bytes of the row with pread into pages released right after.
  void embedding_row(int token, float* out) override;
  const std::vector<float>& final_norm() const override { return final_norm_; }
  // Bytes read from the file to decode one token: every unit once, plus one embedding row.
  uint64_t bytes_per_token() const override;
  // Checks the budget against everything resident (slots, embedding row pages, the model's
  // buffers, the process itself and what it can still grow by) and picks the number of slots.
  // Throws naming the minimum when it cannot. The process is measured on the first call.
  void reserve(const BufferNeeds& needs) override;
  // Bytes resident with `slots` weight slots and the model's buffers (after the first reserve()).
  uint64_t resident_need(const BufferNeeds& needs, int slots) const;
  const ProcessFootprint& process_footprint() const { return process_; }

  // Bytes read from the file so far (for bytes-per-token figures).
  uint64_t bytes_read() const { return bytes_read_.load(); }
  // Bytes the Linear objects of a unit asked for beyond their slot's arena (served by the heap).
  // Non-zero means the footprint computed for the budget was too small: a bug.
  uint64_t arena_overflow_bytes() const { return overflow_.bytes.load(); }
  // Seconds the reader thread spent inside read calls so far: bytes_read() / read_seconds() is
  // the rate the file delivered while being read; read_seconds() / wall time is how busy the
  // disk was kept.
  double read_seconds() const { return static_cast<double>(read_ns_.load()) * 1e-9; }
  // Seconds the builder thread spent checking and building units.
  double build_seconds() const { return static_cast<double>(build_ns_.load()) * 1e-9; }
  // Whether unit reads bypass the page cache (O_DIRECT).
  bool direct_io() const { return fd_direct_ >= 0; }

 private:
  struct Unit {
    uint64_t offset = 0, size = 0;      // region of the file
    std::vector<size_t> tensors;        // indices into reader.tensors()
    uint64_t arena_bytes = 0;           // what its Linear objects allocate at load
  };
  enum class Stage { kFree, kQueued, kRead, kReady };
  struct Slot {
    std::byte* storage = nullptr;       // slot_bytes, page-aligned (mmap), allocated on first use
    int unit = -1;                      // unit held or being loaded; -1: free
    Stage stage = Stage::kFree;
    std::span<const std::byte> bytes;   // the unit's bytes inside storage
    std::optional<std::pmr::monotonic_buffer_resource> arena;
    LayerWeights layer;
    std::unique_ptr<Linear> head;
    std::string error;                  // load failure, rethrown on the main thread
  };
  // Upstream of the slot arenas: the heap, counting what it serves.
  struct OverflowResource final : std::pmr::memory_resource {
    std::atomic<uint64_t> bytes{0};
    void* do_allocate(size_t n, size_t align) override;
    void do_deallocate(void* p, size_t n, size_t align) override;
    bool do_is_equal(const std::pmr::memory_resource& o) const noexcept override { return this == &o; }
  };

  const Slot& acquire(int unit);
  int find_slot(int unit) const;           // caller holds mu_
  void wait_idle(std::unique_lock<std::mutex>& lk);
  void schedule(int slot, int unit);       // caller holds mu_
  void free_slot(Slot& s);                 // caller holds mu_; the slot is not in flight
  void read_unit(Slot& s, int unit);       // reader thread
  void read_exact(int fd, std::byte* dst, uint64_t len, uint64_t offset, uint64_t valid_end);
  void check_unchanged();                  // the file's size and change time are those at open
  void build_unit(Slot& s, int unit);      // builder thread
  void reader_loop();
  void builder_loop();
  void stage_loop(std::deque<int>& queue, void (LayerStreamer::*work)(Slot&, int), std::atomic<uint64_t>& busy_ns,
                  void (LayerStreamer::*done)(int slot));
  void read_done(int slot);   // caller holds mu_
  void build_done(int slot);  // caller holds mu_

  std::shared_ptr<const format::LsbReader> reader_;
  ModelConfig cfg_;
  StreamOptions opt_;
  ProcessFootprint process_;            // measured on the first reserve()
  bool measured_ = false;
  std::vector<float> final_norm_;
  std::vector<Unit> units_;
  std::vector<char> verified_;          // per tensor: checksum checked once (builder thread only)
  StreamFootprint footprint_;
  int fd_ = -1, fd_direct_ = -1;
  uint64_t file_size_ = 0;              // st_size and st_ctim at open, checked after every read
  int64_t file_ctime_sec_ = 0, file_ctime_nsec_ = 0;
  std::atomic<uint64_t> bytes_read_{0};
  std::atomic<uint64_t> read_ns_{0}, build_ns_{0};
  OverflowResource overflow_;

  // Embedding: a view parsed once over a map of its blob; the map is then replaced, at the
  // same address, by anonymous pages that embedding_row fills with pread (row spans only).
  const TensorInfo* embed_ = nullptr;
  uint64_t embed_offset_ = 0;           // of the blob in the file
  void* embed_map_ = nullptr;
  uint64_t embed_map_len_ = 0;
  std::span<const std::byte> embed_bytes_;       // the blob's addresses (inside embed_map_)
  std::unique_ptr<quant::BlobView> embed_view_;  // packed embeddings: rows through their scheme
  std::vector<uint64_t> embed_row_sums_;         // XXH3 of each row's spans, taken at open
  quant::RowSpans embed_row_spans(int token) const;

  Slot slots_[kMaxSlots];
  int n_slots_ = kMinSlots;
  int current_ = -1;                    // slot the main thread computes with
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<int> read_q_, build_q_;    // slots, in unit order
  int busy_ = 0;                        // slots popped from a queue and not finished
  bool stop_ = false;
  std::thread reader_thread_, builder_thread_;
};

}  // namespace lsb
