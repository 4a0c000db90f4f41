#include "format/lsb_reader.h"

#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>

#include <fmt/ranges.h>

#include "base/error.h"
#include "base/utf8.h"
#include "quant/scheme.h"

namespace lsb::format {
namespace {

struct Section {
  const char* what;
  uint64_t offset, size;
};

}  // namespace

LsbReader::LsbReader(const std::string& path) : file_(path) {
  const std::string& where = path;
  const uint64_t fsize = file_.size();
  const std::byte* base = file_.bytes().data();
  if (fsize < kMagic.size() || std::memcmp(base, kMagic.data(), kMagic.size()) != 0)
    fail(where, "not an .lsb file (bad magic)");
  if (fsize < kHeaderSize) fail(where, "truncated: {} bytes, shorter than the {}-byte header", fsize, kHeaderSize);
  header_ = decode_header(base);
  const FileHeader& h = header_;
  if (h.version_major > kVersionMajor)
    fail(where, "file format version {}.{} is newer than this lsb supports ({}.x)", h.version_major,
         h.version_minor, kVersionMajor);
  if (h.version_major == 0) fail(where, "file format version 0.{} is not supported", h.version_minor);
  if (h.flags & kRequiredFlagsMask) fail(where, "unknown required feature flags 0x{:x}", h.flags & kRequiredFlagsMask);
  if (h.file_size != fsize)
    fail(where, "truncated or extended: header says {} bytes, the file has {}", h.file_size, fsize);
  if (h.reserved != 0) fail(where, "reserved header field is not zero");

  // Every section inside the file, none overlapping another.
  std::vector<Section> sections = {{"header", 0, kHeaderSize},
                                   {"data section", h.data_offset, h.data_size},
                                   {"metadata", h.metadata_offset, h.metadata_size},
                                   {"tokenizer", h.tokenizer_offset, h.tokenizer_size},
                                   {"string table", h.strings_offset, h.strings_size},
                                   {"tensor directory", h.directory_offset, h.directory_size}};
  for (const Section& s : sections)
    if (s.offset > fsize || s.size > fsize - s.offset)
      fail(where, "{} [{}, +{}) lies past the end of the file ({} bytes)", s.what, s.offset, s.size, fsize);
  if (h.data_offset % kPageAlign != 0) fail(where, "data section offset {} is not a multiple of {}", h.data_offset, kPageAlign);
  std::vector<Section> nonempty;
  for (const Section& s : sections)
    if (s.size > 0) nonempty.push_back(s);
  std::sort(nonempty.begin(), nonempty.end(), [](const Section& a, const Section& b) { return a.offset < b.offset; });
  for (size_t i = 1; i < nonempty.size(); ++i)
    if (nonempty[i - 1].offset + nonempty[i - 1].size > nonempty[i].offset)
      fail(where, "{} overlaps {}", nonempty[i - 1].what, nonempty[i].what);
  if (h.directory_size != static_cast<uint64_t>(h.tensor_count) * kEntrySize)
    fail(where, "tensor directory is {} bytes, {} tensors need {}", h.directory_size, h.tensor_count,
         static_cast<uint64_t>(h.tensor_count) * kEntrySize);

  // Header checksum over the header and the small sections, before any of them is trusted.
  {
    XXH3_state_t* st = XXH3_createState();
    if (!st) fail(where, "out of memory");
    XXH3_64bits_reset(st);
    XXH3_64bits_update(st, base, kChecksumOffset);
    XXH3_64bits_update(st, base + h.metadata_offset, h.metadata_size);
    XXH3_64bits_update(st, base + h.tokenizer_offset, h.tokenizer_size);
    XXH3_64bits_update(st, base + h.strings_offset, h.strings_size);
    XXH3_64bits_update(st, base + h.directory_offset, h.directory_size);
    const uint64_t sum = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    if (sum != h.header_checksum) fail(where, "header checksum mismatch (file is corrupt)");
  }

  // Metadata and config.
  const std::string_view meta(reinterpret_cast<const char*>(base + h.metadata_offset), h.metadata_size);
  metadata_ = nlohmann::json::parse(meta, nullptr, /*allow_exceptions=*/false);
  if (metadata_.is_discarded() || !metadata_.is_object()) fail(where, "metadata is not a JSON object");
  if (!metadata_.contains("config")) fail(where, "metadata has no 'config'");
  config_ = config_from_json(metadata_["config"], where + ": metadata config");
  config_.validate(where);
  if (h.tokenizer_kind > static_cast<uint32_t>(TokenizerBlob::Kind::Llama2c))
    fail(where, "unknown tokenizer kind {}", h.tokenizer_kind);
  if ((h.tokenizer_kind == 0) != (h.tokenizer_size == 0))
    fail(where, "tokenizer kind {} does not agree with its size {}", h.tokenizer_kind, h.tokenizer_size);

  // Layer regions from the metadata.
  if (metadata_.contains("layers")) {
    const nlohmann::json& jl = metadata_["layers"];
    if (!jl.is_array()) fail(where, "metadata 'layers' is not an array");
    for (const nlohmann::json& r : jl) {
      if (!r.is_object() || !r.contains("layer") || !r.contains("offset") || !r.contains("size") ||
          !r["layer"].is_number_integer() || !r["offset"].is_number_unsigned() || !r["size"].is_number_unsigned())
        fail(where, "metadata 'layers' entry {} is malformed", r.dump());
      LayerRange lr{r["layer"].get<int>(), r["offset"].get<uint64_t>(), r["size"].get<uint64_t>()};
      if (lr.layer < 0 || lr.layer >= config_.n_layers) fail(where, "layer region for layer {} out of range", lr.layer);
      if (std::any_of(layers_.begin(), layers_.end(), [&](const LayerRange& o) { return o.layer == lr.layer; }))
        fail(where, "layer {} has two regions", lr.layer);
      if (lr.offset % kPageAlign != 0 || lr.offset < h.data_offset || lr.offset - h.data_offset > h.data_size ||
          lr.size > h.data_size - (lr.offset - h.data_offset))
        fail(where, "layer {} region [{}, +{}) is not a page-aligned part of the data section", lr.layer, lr.offset, lr.size);
      layers_.push_back(lr);
    }
  }

  // Directory.
  const std::string_view strings(reinterpret_cast<const char*>(base + h.strings_offset), h.strings_size);
  entries_.reserve(h.tensor_count);
  tensors_.reserve(h.tensor_count);
  std::vector<std::pair<uint64_t, size_t>> by_offset;
  const bool v1 = h.version_major == 1;
  for (uint32_t i = 0; i < h.tensor_count; ++i) {
    const std::byte* ep = base + h.directory_offset + static_cast<uint64_t>(i) * kEntrySize;
    TensorEntry e = decode_entry(ep);
    TensorEntryV1 e1{};
    if (v1) e1 = decode_entry_v1(ep);
    if (e.name_size == 0 || e.name_size > kMaxNameSize || e.name_offset > strings.size() ||
        e.name_size > strings.size() - e.name_offset)
      fail(where, "tensor {}: name [{}, +{}) lies outside the string table", i, e.name_offset, e.name_size);
    std::string name(strings.substr(e.name_offset, e.name_size));
    if (!valid_utf8(name)) fail(where, "tensor {}: name is not valid UTF-8", i);
    const std::string tw = where + ": tensor '" + name + "'";
    if (index_.count(name)) fail(where, "tensor '{}' appears twice", name);
    const auto dt = static_cast<DType>(e.dtype);
    if (!quant::find_scheme(dt)) fail(tw, "unknown dtype {}", e.dtype);
    if (e.ndim < 1 || e.ndim > kMaxDims) fail(tw, "{} dimensions (1..{} allowed)", e.ndim, kMaxDims);
    // The scheme's parameters: text in the string table (version 2), or the fixed fields of a
    // version 1 entry turned into the same text by the scheme's own codec.
    std::string params;
    if (v1) {
      if (e1.reserved != 0 || e1.reserved2 != 0) fail(tw, "reserved fields are not zero");
      if (e1.flags & ~kEntryV1FlagUseMean) fail(tw, "unknown flags 0x{:x}", e1.flags);
      if (dtype_is_dense(dt) && (e1.group_size != 0 || e1.outlier_ratio != 0.0f || e1.flags != 0))
        fail(tw, "dense tensor with quantization parameters");
      quant::SchemeOptions legacy;
      legacy.group_size = e1.group_size;
      legacy.outlier_ratio = e1.outlier_ratio;
      legacy.use_mean = (e1.flags & kEntryV1FlagUseMean) != 0;
      params = quant::make_params(dt, legacy, tw);
      e.params_offset = e.params_size = e.reserved = e.reserved1 = 0;
      e.flags = 0;
    } else {
      if (e.reserved != 0 || e.reserved1 != 0) fail(tw, "reserved fields are not zero");
      if (e.flags != 0) fail(tw, "unknown flags 0x{:x}", e.flags);
      if (e.params_size > kMaxParamsSize || e.params_offset > strings.size() ||
          e.params_size > strings.size() - e.params_offset)
        fail(tw, "parameters [{}, +{}) lie outside the string table", e.params_offset, e.params_size);
      params = std::string(strings.substr(e.params_offset, e.params_size));
      quant::check_params(dt, params, tw);
    }
    TensorInfo t;
    t.name = name;
    t.dtype = dt;
    uint64_t numel = 1;
    for (int d = 0; d < kMaxDims; ++d) {
      if (d < e.ndim) {
        if (e.shape[d] < 1) fail(tw, "dimension {} is {}", d, e.shape[d]);
        if (numel > (uint64_t(1) << 62) / static_cast<uint64_t>(e.shape[d])) fail(tw, "element count overflows");
        numel *= static_cast<uint64_t>(e.shape[d]);
        t.shape.push_back(e.shape[d]);
      } else if (e.shape[d] != 0) {
        fail(tw, "unused dimension {} is {}, expected 0", d, e.shape[d]);
      }
    }
    if (e.data_offset % kTensorAlign != 0) fail(tw, "data offset {} is not a multiple of {}", e.data_offset, kTensorAlign);
    if (e.data_offset < h.data_offset || e.data_offset - h.data_offset > h.data_size ||
        e.data_size > h.data_size - (e.data_offset - h.data_offset))
      fail(tw, "data [{}, +{}) lies outside the data section [{}, +{})", e.data_offset, e.data_size, h.data_offset,
           h.data_size);
    t.params = params;
    if (dtype_is_dense(dt)) {
      if (e.data_size != numel * dtype_size(dt))
        fail(tw, "holds {} bytes but {} [{}] needs {}", e.data_size, dtype_name(dt), fmt::join(t.shape, ", "),
             numel * dtype_size(dt));
    } else {
      if (e.ndim != 2) fail(tw, "quantized tensors must be matrices, this one has {} dimensions", e.ndim);
      const uint64_t fixed = quant::scheme(dt).fixed_bytes(t.shape[0], t.shape[1], params, tw);
      if (e.data_size < fixed) fail(tw, "blob is {} bytes, smaller than its {} fixed bytes", e.data_size, fixed);
    }
    if (e.layer < -1 || e.layer >= config_.n_layers) fail(tw, "layer index {} out of range", e.layer);
    if (e.layer >= 0) {
      auto it = std::find_if(layers_.begin(), layers_.end(), [&](const LayerRange& r) { return r.layer == e.layer; });
      if (it == layers_.end()) fail(tw, "layer {} has no region in the metadata", e.layer);
      if (e.data_offset < it->offset || e.data_offset - it->offset > it->size ||
          e.data_size > it->size - (e.data_offset - it->offset))
        fail(tw, "lies outside the region of layer {}", e.layer);
    }
    t.nbytes = e.data_size;
    index_.emplace(name, tensors_.size());
    by_offset.emplace_back(e.data_offset, tensors_.size());
    tensors_.push_back(std::move(t));
    entries_.push_back(e);
  }
  std::sort(by_offset.begin(), by_offset.end());
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorEntry& a = entries_[by_offset[i - 1].second];
    if (a.data_offset + a.data_size > by_offset[i].first)
      fail(where, "tensors '{}' and '{}' overlap", tensors_[by_offset[i - 1].second].name,
           tensors_[by_offset[i].second].name);
  }
  verified_ = std::make_unique<std::atomic<bool>[]>(tensors_.size());
  for (size_t i = 0; i < tensors_.size(); ++i) verified_[i].store(false);
}

size_t LsbReader::index_of(const TensorInfo& t) const {
  auto it = index_.find(t.name);
  if (it == index_.end()) fail(describe(), "missing tensor '{}'", t.name);
  return it->second;
}

void LsbReader::verify_tensor(size_t i) const {
  const TensorEntry& e = entries_.at(i);
  const TensorInfo& t = tensors_[i];
  const std::span<const std::byte> d = file_.range(e.data_offset, e.data_size, "tensor data");
  if (XXH3_64bits(d.data(), d.size()) != e.data_checksum)
    fail(describe(), "checksum mismatch in tensor '{}'", t.name);
  if (!dtype_is_dense(t.dtype))
    (void)quant::open_blob(t.dtype, d, t.rows(), t.cols(), t.params, {.where = describe() + ": tensor '" + t.name + "'"});
  verified_[i].store(true, std::memory_order_release);
}

void LsbReader::verify_all() const {
  for (size_t i = 0; i < tensors_.size(); ++i) verify_tensor(i);
}

std::span<const std::byte> LsbReader::data(const TensorInfo& t) const {
  const size_t i = index_of(t);
  // Two threads may both verify the same tensor the first time; the result is the same.
  if (!verified_[i].load(std::memory_order_acquire)) verify_tensor(i);
  return file_.range(entries_[i].data_offset, entries_[i].data_size, "tensor data");
}

std::string LsbReader::chat_template() const {
  auto it = metadata_.find("chat_template");
  return it != metadata_.end() && it->is_string() ? it->get<std::string>() : std::string();
}

TokenizerBlob LsbReader::tokenizer() const {
  TokenizerBlob b;
  b.kind = static_cast<TokenizerBlob::Kind>(header_.tokenizer_kind);
  if (header_.tokenizer_size > 0) {
    const auto s = file_.range(header_.tokenizer_offset, header_.tokenizer_size, "tokenizer");
    b.bytes.assign(reinterpret_cast<const char*>(s.data()), s.size());
  }
  b.origin = describe() + " (embedded tokenizer)";
  return b;
}


}  // namespace lsb::format
