#include "pipeline/calibration.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "io/mmap_file.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "model/layer_weights.h"
#include "model/model_tensors.h"
#include "model/windows.h"
#include "runtime/progress.h"

namespace lsb {

namespace {

constexpr const char* kFileFormat = "lsb-calibration";
constexpr int kFileVersion = 1;

// "model.layers.{l}.<rest>" -> l and rest; -1 when the name is not a layer tensor.
int split_layer(std::string_view name, std::string_view& rest) {
  constexpr std::string_view prefix = "model.layers.";
  if (name.substr(0, prefix.size()) != prefix) return -1;
  size_t i = prefix.size();
  int l = 0;
  bool digits = false;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && l < 10000000) {
    l = l * 10 + (name[i] - '0');
    digits = true;
    ++i;
  }
  if (!digits || i >= name.size() || name[i] != '.') return -1;
  rest = name.substr(i + 1);
  return l;
}

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

}  // namespace

std::string calibration_input_of(std::string_view name) {
  if (name == "lm_head.weight") return "head";
  std::string_view rest;
  const int l = split_layer(name, rest);
  if (l < 0) return "";
  if (rest == "self_attn.q_proj.weight" || rest == "self_attn.k_proj.weight" || rest == "self_attn.v_proj.weight")
    return fmt::format("layers.{}.qkv", l);
  if (rest == "self_attn.o_proj.weight") return fmt::format("layers.{}.o", l);
  if (rest == "mlp.gate_proj.weight" || rest == "mlp.up_proj.weight") return fmt::format("layers.{}.gate_up", l);
  if (rest == "mlp.down_proj.weight") return fmt::format("layers.{}.down", l);
  return "";
}

std::vector<std::string> calibration_inputs(const ModelConfig& cfg) {
  std::vector<std::string> keys;
  for (int l = 0; l < cfg.n_layers; ++l)
    for (const char* k : {"qkv", "o", "gate_up", "down"}) keys.push_back(fmt::format("layers.{}.{}", l, k));
  if (!cfg.tie_embeddings) keys.push_back("head");
  return keys;
}

// Columns of each input, from the configuration.
static int64_t input_cols(const ModelConfig& cfg, const std::string& key) {
  if (key == "head") return cfg.dim;
  const std::string_view k(key);
  if (k.ends_with(".qkv") || k.ends_with(".gate_up")) return cfg.dim;
  if (k.ends_with(".o")) return static_cast<int64_t>(cfg.n_heads) * cfg.head_dim;
  return cfg.hidden_dim;  // .down
}

std::string model_fingerprint(const TensorSource& src) {
  XXH3_state_t* st = XXH3_createState();
  if (!st) fail(src.describe(), "out of memory");
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> guard(st, XXH3_freeState);
  XXH3_64bits_reset(st);
  constexpr size_t kEdge = 64 << 10;
  for (const TensorInfo& t : src.tensors()) {
    XXH3_64bits_update(st, t.name.data(), t.name.size() + 1);
    XXH3_64bits_update(st, t.shape.data(), t.shape.size() * sizeof(int64_t));
    const auto dt = static_cast<uint32_t>(t.dtype);
    XXH3_64bits_update(st, &dt, sizeof dt);
    const std::span<const std::byte> d = src.data(t);
    if (d.size() <= 2 * kEdge) {
      XXH3_64bits_update(st, d.data(), d.size());
    } else {
      XXH3_64bits_update(st, d.data(), kEdge);
      XXH3_64bits_update(st, d.data() + d.size() - kEdge, kEdge);
    }
  }
  return hex64(XXH3_64bits_digest(st));
}

// ---------------------------------------------------------------------------------------------
// The weights calibration runs on: the source's own tensors, one layer at a time, with the
// matrices that read each input wrapped so that they record it (only one per input: q_proj for
// q/k/v, gate_proj for gate/up).
class Calibrator::SourceLayers final : public WeightProvider {
 public:
  explicit SourceLayers(const TensorSource& s) : src_(s), where_(s.describe()) {
    const TensorInfo& e = s.get("model.embed_tokens.weight");
    embed_ = make_linear(e, s.data(e), where_);
    const TensorInfo& n = s.get("model.norm.weight");
    final_norm_ = load_vector(n, s.data(n), s.config().dim, where_);
  }

  void load(int l, std::map<std::string, quant::InputStats>& stats) {
    const TensorGetter get = [this](const std::string& name) {
      const TensorInfo& t = src_.get(name);
      return std::make_pair(&t, src_.data(t));
    };
    layer_ = load_layer(l, src_.config().dim, get, where_);
    layer_index_ = l;
    auto rec = [&](std::unique_ptr<Linear>& m, const char* key) {
      m = std::make_unique<RecordingLinear>(std::move(m), stats.at(fmt::format("layers.{}.{}", l, key)));
    };
    rec(layer_.wq, "qkv");
    rec(layer_.wo, "o");
    rec(layer_.gate, "gate_up");
    rec(layer_.down, "down");
  }

  // Drops layer l's weights and returns its pages of the source to the kernel.
  void unload(int l) {
    layer_ = LayerWeights{};
    layer_index_ = -1;
    for (const TensorInfo& t : src_.tensors()) {
      std::string_view rest;
      if (split_layer(t.name, rest) == l) release_mapped_pages(src_.data(t));
    }
  }

  void embedding_row(int token, float* out) override { embed_->row(token, out); }
  const LayerWeights& layer(int l) override {
    if (l != layer_index_) fail(where_, "calibration: layer {} requested while layer {} is loaded", l, layer_index_);
    return layer_;
  }
  const std::vector<float>& final_norm() const override { return final_norm_; }
  const Linear& head() override { fail(where_, "calibration does not run the classifier"); }
  uint64_t bytes_per_token() const override { return 0; }

 private:
  const TensorSource& src_;
  std::string where_;
  std::unique_ptr<Linear> embed_;
  std::vector<float> final_norm_;
  LayerWeights layer_;
  int layer_index_ = -1;
};

Calibrator::Calibrator(const TensorSource& src, const Tokenizer& tok, const CalibrationOptions& opt)
    : src_(src), progress_(opt.progress) {
  const ModelConfig& cfg = src.config();
  cfg.validate(src.describe());
  validate_tensors(src);
  if (opt.ctx < 4) fail(opt.text_path, "--ctx must be at least 4 (got {})", opt.ctx);
  if (opt.ctx > cfg.max_seq_len && cfg.max_seq_len > 0)
    fail(opt.text_path, "--ctx {} is longer than the model's context of {}", opt.ctx, cfg.max_seq_len);
  if (opt.tokens < opt.ctx)
    fail(opt.text_path, "--tokens {} is less than one window of --ctx {}", opt.tokens, opt.ctx);
  const std::string text = read_small_file(opt.text_path, 1ull << 30);
  const std::vector<int> tokens = tok.encode(text, true);
  const TokenWindows win = make_windows(static_cast<int64_t>(tokens.size()), opt.ctx,
                                        static_cast<int>(opt.tokens / opt.ctx), opt.text_path);

  info_.text = opt.text_path.substr(opt.text_path.find_last_of('/') + 1);
  info_.text_xxh3 = hex64(XXH3_64bits(text.data(), text.size()));
  info_.ctx = opt.ctx;
  info_.windows = win.n_chunks;
  info_.tokens = static_cast<int64_t>(win.n_chunks) * opt.ctx;
  info_.model_fingerprint = model_fingerprint(src);
  info_.config = cfg;

  auto layers = std::make_unique<SourceLayers>(src);
  layers_ = layers.get();
  model_ = std::make_unique<LlamaModel>(cfg, std::move(layers));
  model_->reset(opt.ctx, opt.ctx);
  const auto dim = static_cast<size_t>(cfg.dim), ctx = static_cast<size_t>(opt.ctx);
  hidden_.resize(static_cast<size_t>(win.n_chunks) * ctx * dim);
  for (int w = 0; w < win.n_chunks; ++w) {
    const std::vector<int> ids = win.window(tokens, w, cfg.bos_id);
    for (int id : ids)
      if (id < 0 || id >= cfg.vocab_size)
        fail(opt.text_path, "token id {} is outside the model's vocabulary of {}", id, cfg.vocab_size);
    model_->embed(ids.data(), opt.ctx, hidden_.data() + static_cast<size_t>(w) * ctx * dim);
  }
}

Calibrator::~Calibrator() = default;

std::map<std::string, quant::InputStats> Calibrator::run_layer(int l) {
  const ModelConfig& cfg = src_.config();
  if (l != next_) fail(src_.describe(), "calibration: layer {} requested, layer {} is next", l, next_);
  std::map<std::string, quant::InputStats> stats;
  for (const char* k : {"qkv", "o", "gate_up", "down"}) {
    const std::string key = fmt::format("layers.{}.{}", l, k);
    stats.emplace(key, quant::InputStats(input_cols(cfg, key), true));
  }
  layers_->load(l, stats);
  const auto step = static_cast<size_t>(info_.ctx) * static_cast<size_t>(cfg.dim);
  ProgressBar bar(fmt::format("calibrate layer {}/{}", l + 1, cfg.n_layers), info_.windows, progress_);
  for (int w = 0; w < info_.windows; ++w) {
    model_->forward_layer(l, hidden_.data() + static_cast<size_t>(w) * step, info_.ctx, 0);
    bar.update(w + 1);
  }
  bar.finish();
  layers_->unload(l);
  ++next_;
  return stats;
}

quant::InputStats Calibrator::run_head() {
  const ModelConfig& cfg = src_.config();
  if (next_ != cfg.n_layers) fail(src_.describe(), "calibration: the head comes after the {} layers", cfg.n_layers);
  quant::InputStats s(cfg.dim, true);
  const auto step = static_cast<size_t>(info_.ctx) * static_cast<size_t>(cfg.dim);
  std::vector<float> normed(step);
  for (int w = 0; w < info_.windows; ++w) {
    model_->final_norm(hidden_.data() + static_cast<size_t>(w) * step, info_.ctx, normed.data());
    s.add(normed.data(), info_.ctx);
  }
  ++next_;
  return s;
}

CalibrationSet calibrate_model(const TensorSource& src, const Tokenizer& tok, const CalibrationOptions& opt) {
  Calibrator c(src, tok, opt);
  CalibrationSet set;
  for (int l = 0; l < src.config().n_layers; ++l) set.inputs.merge(c.run_layer(l));
  if (!src.config().tie_embeddings) set.inputs.emplace("head", c.run_head());
  set.info = c.info();
  return set;
}

// ---------------------------------------------------------------------------------------------
// Statistics file

void write_calibration(const std::string& path, const CalibrationSet& set) {
  std::vector<SafetensorsEntry> entries;
  for (const auto& [key, s] : set.inputs) {
    entries.push_back({key + ".diag", DType::F32, {s.cols}});
    entries.push_back({key + ".gram", DType::F32, {s.cols, s.cols}});
  }
  const CalibrationInfo& i = set.info;
  std::map<std::string, std::string> meta = {{"format", kFileFormat},
                                             {"version", std::to_string(kFileVersion)},
                                             {"text", i.text},
                                             {"text_xxh3", i.text_xxh3},
                                             {"tokens", std::to_string(i.tokens)},
                                             {"ctx", std::to_string(i.ctx)},
                                             {"windows", std::to_string(i.windows)},
                                             {"model_fingerprint", i.model_fingerprint},
                                             {"model_config", config_to_json(i.config).dump()}};
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  try {
    SafetensorsWriter w(tmp, entries, meta);
    for (const auto& [key, s] : set.inputs) {
      std::vector<float> diag(s.diag.begin(), s.diag.end());
      w.write_tensor(key + ".diag", std::as_bytes(std::span<const float>(diag)));
      // The full symmetric matrix, so that other tools can read it as it is.
      std::vector<float> row(static_cast<size_t>(s.cols));
      for (int64_t r = 0; r < s.cols; ++r) {
        for (int64_t c = 0; c < s.cols; ++c) row[c] = s.full() ? s.gram_at(r, c) : (r == c ? float(s.diag[r]) : 0.0f);
        w.append(std::as_bytes(std::span<const float>(row)));
      }
    }
    w.finish();
    if (std::rename(tmp.c_str(), path.c_str()) != 0) fail(path, "cannot rename {}: {}", tmp, std::strerror(errno));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

bool is_calibration_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char head[4096];
  const ssize_t n = ::pread(fd, head, sizeof head, 0);
  ::close(fd);
  if (n < 16) return false;
  const std::string_view h(head + 8, static_cast<size_t>(n) - 8);
  return head[8] == '{' && h.find(std::string("\"") + kFileFormat + "\"") != std::string_view::npos;
}

CalibrationSet read_calibration(const std::string& path, const TensorSource& model) {
  const SafetensorsFile f(path);
  const auto& meta = f.metadata();
  auto get = [&](const char* key) {
    const auto it = meta.find(key);
    if (it == meta.end()) fail(path, "not an lsb calibration file (metadata '{}' missing)", key);
    return it->second;
  };
  if (get("format") != kFileFormat) fail(path, "not an lsb calibration file (format '{}')", get("format"));
  if (get("version") != std::to_string(kFileVersion))
    fail(path, "calibration file version {} is not supported (this lsb reads version {})", get("version"), kFileVersion);
  CalibrationSet set;
  CalibrationInfo& i = set.info;
  try {
    i.text = get("text");
    i.text_xxh3 = get("text_xxh3");
    i.tokens = std::stoll(get("tokens"));
    i.ctx = std::stoi(get("ctx"));
    i.windows = std::stoi(get("windows"));
    i.model_fingerprint = get("model_fingerprint");
    i.config = config_from_json(nlohmann::json::parse(get("model_config")), path);
  } catch (const std::logic_error& e) {  // stoll / JSON parse
    fail(path, "calibration metadata is malformed: {}", e.what());
  }
  const ModelConfig& cfg = model.config();
  if (config_to_json(i.config) != config_to_json(cfg))
    fail(path, "statistics are of a model shaped {} but this model is {} (calibrate this model with lsb calibrate)",
         config_to_json(i.config).dump(), config_to_json(cfg).dump());
  const std::string fp = model_fingerprint(model);
  if (i.model_fingerprint != fp)
    fail(path, "statistics come from another model (fingerprint {}, this model's is {}); calibrate this model",
         i.model_fingerprint, fp);
  if (i.tokens <= 0) fail(path, "statistics of {} tokens", i.tokens);
  for (const std::string& key : calibration_inputs(cfg)) {
    const int64_t cols = input_cols(cfg, key);
    const TensorInfo* d = f.find(key + ".diag");
    const TensorInfo* g = f.find(key + ".gram");
    if (!d || !g) fail(path, "statistics of input '{}' are missing", key);
    if (d->dtype != DType::F32 || d->shape != std::vector<int64_t>{cols} || g->dtype != DType::F32 ||
        g->shape != std::vector<int64_t>{cols, cols})
      fail(path, "statistics of input '{}' should be F32 ({}) and ({}, {})", key, cols, cols, cols);
    quant::InputStats s(cols, true);
    s.tokens = static_cast<uint64_t>(i.tokens);
    const auto* dv = reinterpret_cast<const float*>(f.data(d->name).data());
    const auto* gv = reinterpret_cast<const float*>(f.data(g->name).data());
    for (int64_t c = 0; c < cols; ++c) {
      float v;
      std::memcpy(&v, dv + c, 4);
      if (!std::isfinite(v) || v < 0) fail(path, "input '{}': diagonal value {} is {} (must be finite, >= 0)", key, c, v);
      s.diag[c] = v;
    }
    for (int64_t r = 0; r < cols; ++r)
      for (int64_t c = 0; c <= r; ++c) {
        float v;
        std::memcpy(&v, gv + r * cols + c, 4);
        if (!std::isfinite(v)) fail(path, "input '{}': Gram matrix entry ({}, {}) is {} (must be finite)", key, r, c, v);
        s.gram[r * cols + c] = v;
      }
    set.inputs.emplace(key, std::move(s));
  }
  return set;
}

}  // namespace lsb
