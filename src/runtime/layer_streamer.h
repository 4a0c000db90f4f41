// Layer streaming for models larger than the memory one is willing to give them (--mem-budget).
//
// The model is divided into units: each transformer layer (its page-aligned region of the .lsb
// file) and the output head. Two reusable buffers hold the unit being computed and the next one,
// which a background thread reads with pread() — and turns into Linear objects — while the
// current unit computes. Embedding rows are read on demand from a memory map whose pages are
// dropped after each use. Everything resident is accounted for before the first token, and a
// budget that cannot hold it is refused with the minimum it would need.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "format/lsb_reader.h"
#include "io/mmap_file.h"
#include "model/layer_weights.h"
#include "quant/scheme.h"

namespace lsb {

// What streaming keeps resident, in bytes (for the budget check and its error message).
struct StreamFootprint {
  uint64_t buffers = 0;      // 2 x largest unit (current + prefetch)
  uint64_t repacked = 0;     // 2 x largest in-memory repacking of a unit (outlier arrays, offsets)
  uint64_t embedding = 0;    // row index of the embedding + a few pages
  uint64_t total() const { return buffers + repacked + embedding; }
};

class LayerStreamer {
 public:
  LayerStreamer(std::shared_ptr<const format::LsbReader> reader, const ModelConfig& cfg, bool drop_page_cache = false);
  ~LayerStreamer();
  LayerStreamer(const LayerStreamer&) = delete;
  LayerStreamer& operator=(const LayerStreamer&) = delete;

  const StreamFootprint& footprint() const { return footprint_; }
  int n_units() const { return static_cast<int>(units_.size()); }  // n_layers + 1 (the head)

  // Weights of layer l, waiting for them if the prefetch is not done; starts prefetching the
  // unit after it. Valid until the next call to layer()/head().
  const LayerWeights& layer(int l);
  const Linear& head();
  // Embedding row of a token (float), read through the map; drop_embedding_pages() releases it.
  void embedding_row(int token, float* out);
  void drop_embedding_pages();
  // Bytes read from the file so far (for bytes-per-token figures).
  uint64_t bytes_read() const { return bytes_read_.load(); }
  // Bytes read from the file to decode one token: every unit once, plus one embedding row.
  uint64_t bytes_per_token() const;

 private:
  struct Unit {
    uint64_t offset = 0, size = 0;      // region of the file
    std::vector<size_t> tensors;        // indices into reader.tensors()
    uint64_t repack_estimate = 0;
  };
  struct Slot {
    std::vector<uint64_t> buf;          // 8-byte aligned storage for the unit's bytes
    int unit = -1;                      // unit held (or being loaded)
    bool ready = false;
    LayerWeights layer;
    std::unique_ptr<Linear> head;
    std::string error;                  // load failure, rethrown on the main thread
  };

  const Slot& acquire(int unit);
  void request(int unit, int slot);
  void load(int unit, Slot& s);
  void worker();

  std::shared_ptr<const format::LsbReader> reader_;
  ModelConfig cfg_;
  std::vector<Unit> units_;
  std::vector<char> verified_;          // per tensor: checksum checked once
  StreamFootprint footprint_;
  int fd_ = -1;
  bool drop_page_cache_ = false;
  std::atomic<uint64_t> bytes_read_{0};

  // Embedding read through its own map.
  std::unique_ptr<MappedFile> map_;
  const TensorInfo* embed_ = nullptr;
  std::span<const std::byte> embed_bytes_;
  quant::PackedView embed_view_;

  Slot slots_[2];
  std::mutex mu_;
  std::condition_variable cv_;
  int pending_unit_ = -1, pending_slot_ = -1;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace lsb
