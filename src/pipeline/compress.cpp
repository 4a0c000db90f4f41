#include "pipeline/compress.h"

#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "base/error.h"
#include "base/sysinfo.h"
#include "base/version.h"
#include "format/lsb_writer.h"
#include "io/mmap_file.h"
#include "model/model_tensors.h"
#include "model/tokenizer.h"
#include "pipeline/open_model.h"
#include "pipeline/recipe.h"
#include "quant/gptq.h"
#include "runtime/progress.h"

namespace lsb {

using format::LsbWriter;

namespace {


// Compares the stored blob with the float weights a block of rows at a time.
// With statistics, also the output error tr(ΔW H ΔWᵀ) / tr(W H Wᵀ), when it is cheap enough
// (it costs two products with H per row: skipped for the widest matrices of 7B-sized models).
quant::TensorMetrics measure(DType dt, std::span<const std::byte> blob, const float* w, int64_t rows, int64_t cols,
                             const std::string& params, const std::string& where, uint64_t* outliers,
                             const quant::InputStats* stats, double* out_error) {
  quant::MetricsAccumulator acc;
  const bool with_error = stats && static_cast<double>(rows) * cols * cols <= 0x1p36;
  quant::ErrorTerms err;
  *out_error = -1;
  if (dt == DType::F32) {
    acc.add(w, reinterpret_cast<const float*>(blob.data()), static_cast<size_t>(rows * cols));
    *outliers = 0;
    return acc.result();
  }
  const std::unique_ptr<quant::BlobView> view = quant::open_blob(dt, blob, rows, cols, params, {.where = where});
  *outliers = view->outlier_count();
  const int64_t block = std::max<int64_t>(1, (int64_t(1) << 20) / cols);  // ~4 MB of floats
  std::vector<float> buf(static_cast<size_t>(std::min(rows, block) * cols));
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t r1 = std::min(rows, r0 + block);
#pragma omp parallel for schedule(static)
    for (int64_t r = r0; r < r1; ++r) view->dequantize_row(r, buf.data() + (r - r0) * cols);
    acc.add(w + r0 * cols, buf.data(), static_cast<size_t>((r1 - r0) * cols));
    if (with_error) err.add(quant::output_error(w + r0 * cols, buf.data(), r1 - r0, cols, stats));
  }
  if (with_error) *out_error = err.ratio();
  return acc.result();
}

std::string hex64(uint64_t v) { return fmt::format("{:016x}", v); }

}  // namespace

int tensor_layer(std::string_view name) {
  constexpr std::string_view prefix = "model.layers.";
  if (name.substr(0, prefix.size()) != prefix) return -1;
  size_t i = prefix.size();
  int layer = 0;
  bool digits = false;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && layer < 100000000) {
    layer = layer * 10 + (name[i] - '0');
    digits = true;
    ++i;
  }
  return digits && i < name.size() && name[i] == '.' ? layer : -1;
}

std::vector<const TensorInfo*> compress_order(const TensorSource& src) {
  std::vector<const TensorInfo*> order;
  std::set<std::string, std::less<>> placed;
  for (const ExpectedTensor& e : expected_tensors(src.config()))
    if (const TensorInfo* t = src.find(e.name)) {
      order.push_back(t);
      placed.insert(t->name);
    }
  for (const TensorInfo& t : src.tensors())
    if (!placed.count(t.name)) order.push_back(&t);
  return order;
}

nlohmann::json tensor_report_json(const TensorReport& t) {
  auto finite_or_null = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  return {{"name", t.name},
          {"shape", t.shape},
          {"scheme", t.scheme},
          {"params", t.params},
          {"bytes", t.bytes},
          {"bpw", t.bpw},
          {"outliers", t.outliers},
          {"mae", t.metrics.mae},
          {"mse", t.metrics.mse},
          {"rel_l2", finite_or_null(t.metrics.rel_l2)},
          {"snr_db", finite_or_null(t.metrics.snr_db)},
          {"cosine", t.metrics.cosine},
          {"max_abs_err", t.metrics.max_abs_err},
          {"calib_input", t.calib_input},
          {"out_error", t.out_error >= 0 ? nlohmann::json(t.out_error) : nlohmann::json(nullptr)}};
}

nlohmann::json calibration_json(const CalibrationInfo& i, const std::string& source) {
  return {{"source", source},       {"text", i.text},       {"text_xxh3", i.text_xxh3},
          {"tokens", i.tokens},     {"ctx", i.ctx},         {"windows", i.windows},
          {"model_fingerprint", i.model_fingerprint}};
}

nlohmann::json report_json(const CompressReport& r) {
  nlohmann::json tensors = nlohmann::json::array();
  for (const TensorReport& t : r.tensors) tensors.push_back(tensor_report_json(t));
  return {{"source", r.source},
          {"output", r.output},
          {"params", r.params},
          {"input_bytes", r.input_bytes},
          {"output_bytes", r.output_bytes},
          {"bpw", r.bpw},
          {"ratio_vs_bf16", r.ratio_vs_bf16},
          {"peak_rss_bytes", r.peak_rss_bytes},
          {"largest_tensor_f32_bytes", r.largest_tensor_f32_bytes},
          {"seconds", r.seconds},
          {"source_xxh3", r.source_xxh3},
          {"calibrated", r.calibrated},
          {"calibration_would_help", r.calibration_would_help},
          {"tensors", std::move(tensors)}};
}

std::string tensor_table(const std::vector<TensorReport>& tensors) {
  size_t wname = 4;
  bool any_out = false;
  for (const TensorReport& t : tensors) {
    wname = std::max(wname, t.name.size());
    any_out = any_out || t.out_error >= 0;
  }
  // out_err: the error of the layer's output on the calibration inputs (only with --calib).
  std::string s = fmt::format("{:<{}}  {:>12}  {:>6}  {:>10}  {:>7}  {:>8}  {:>10}  {:>8}  {:>7}  {:>8}{}\n", "name",
                              wname, "shape", "scheme", "bytes", "bpw", "outliers", "mae", "rel_l2", "snr_db", "cosine",
                              any_out ? "   out_err" : "");
  for (const TensorReport& t : tensors) {
    const std::string shape = fmt::format("{}", fmt::join(t.shape, "x"));
    const std::string snr = std::isfinite(t.metrics.snr_db) ? fmt::format("{:.2f}", t.metrics.snr_db) : "inf";
    const std::string out = !any_out ? "" : t.out_error >= 0 ? fmt::format("  {:>8.5f}", t.out_error) : "         -";
    s += fmt::format("{:<{}}  {:>12}  {:>6}  {:>10}  {:>7.4f}  {:>8}  {:>10.3e}  {:>8.5f}  {:>7}  {:>8.6f}{}\n", t.name,
                     wname, shape, t.scheme, t.bytes, t.bpw, t.outliers, t.metrics.mae, t.metrics.rel_l2, snr,
                     t.metrics.cosine, out);
  }
  return s;
}

CompressReport compress_model(const std::string& src_path, const std::string& out_path, const CompressOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  // Everything that can be checked is checked before the output file is created.
  const Recipe recipe = make_recipe(opt.scheme, opt.keep);
  // Scheme parameters, built in one place: the options given, each scheme's defaults for the rest.
  // Built (and so checked) for every scheme the recipe can choose before anything is written.
  std::map<DType, std::string> params_of;
  params_of[recipe.base] = quant::make_params(recipe.base, opt.options, "compress options");
  for (const KeepRule& k : recipe.rules) params_of[k.dtype] = quant::make_params(k.dtype, opt.options, "compress options");
  std::unique_ptr<TensorSource> src = open_model(src_path);
  const ModelConfig& cfg = src->config();
  check_rules_match(recipe, src->tensors(), src_path);
  const TokenizerBlob tok = opt.tokenizer_path.empty() ? src->tokenizer() : read_tokenizer_file(opt.tokenizer_path);
  std::unique_ptr<Tokenizer> tokenizer;
  if (tok.kind != TokenizerBlob::Kind::None) tokenizer = load_tokenizer(tok);  // refuse to embed a broken tokenizer

  // Statistics: all of them from a file now, or layer by layer from a text while compressing
  // (only one layer's statistics in memory).
  CalibrationSet calib_file;
  std::unique_ptr<Calibrator> calibrator;
  std::map<std::string, quant::InputStats> layer_stats;  // the current layer's, from the calibrator
  if (opt.calib_set) {
    // Loaded by the caller (who checked it against this model).
  } else if (!opt.calib.empty()) {
    if (is_calibration_file(opt.calib)) {
      calib_file = read_calibration(opt.calib, *src);
    } else {
      if (!tokenizer) fail(opt.calib, "calibrating from a text needs the model's tokenizer (none found; use --tokenizer)");
      CalibrationOptions co = opt.calib_options;
      co.text_path = opt.calib;
      co.progress = opt.progress;
      calibrator = std::make_unique<Calibrator>(*src, *tokenizer, co);
    }
  }
  auto stats_for = [&](const std::string& name) -> const quant::InputStats* {
    const std::string key = calibration_input_of(name);
    if (key.empty() || (opt.calib.empty() && !opt.calib_set)) return nullptr;
    if (opt.calib_set) return &opt.calib_set->inputs.at(key);
    if (!calibrator) return &calib_file.inputs.at(key);
    if (key == "head") {
      if (!layer_stats.count("head")) {
        while (calibrator->next_layer() < cfg.n_layers) layer_stats = calibrator->run_layer(calibrator->next_layer());
        layer_stats.clear();
        layer_stats.emplace("head", calibrator->run_head());
      }
    } else {
      // Layers arrive in order; run the calibrator up to this tensor's layer.
      while (!layer_stats.count(key) && calibrator->next_layer() < cfg.n_layers)
        layer_stats = calibrator->run_layer(calibrator->next_layer());
    }
    const auto it = layer_stats.find(key);
    if (it == layer_stats.end()) fail(src_path, "tensor '{}' comes after its layer was calibrated", name);
    return &it->second;
  };

  const std::vector<const TensorInfo*> order = compress_order(*src);

  CompressReport rep;
  rep.source = src_path;
  rep.output = out_path;
  for (const TensorInfo* t : order) {
    rep.input_bytes += t->nbytes;
    rep.params += static_cast<uint64_t>(t->numel());
    rep.largest_tensor_f32_bytes = std::max<uint64_t>(rep.largest_tensor_f32_bytes, uint64_t(t->numel()) * 4);
  }

  // The temporary's name is announced before the file exists, so a signal arriving right after
  // it is created still finds it (unlinking a name not yet created is harmless).
  struct TempGuard {
    const CompressOptions& o;
    ~TempGuard() {
      if (o.on_temp_file) o.on_temp_file("");
    }
  } guard{opt};
  if (opt.on_temp_file) opt.on_temp_file(LsbWriter::temp_path_for(out_path));
  LsbWriter writer(out_path);
  writer.set_tokenizer(tok);

  XXH3_state_t* hs = XXH3_createState();
  if (!hs) fail(src_path, "out of memory");
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> hash_state(hs, XXH3_freeState);
  XXH3_64bits_reset(hs);

  ProgressBar bar("compress", static_cast<long long>(order.size()), opt.progress);
  uint64_t done_bytes = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const TensorInfo& in = *order[i];
    const std::span<const std::byte> sd = src->data(in);
    XXH3_64bits_update(hs, sd.data(), sd.size());
    std::vector<float> w = quant::tensor_to_float(in, sd);
    release_mapped_pages(sd);
    // Non-finite weights are refused whatever the scheme (docs/HARDENING.md), naming the tensor.
    for (size_t k = 0; k < w.size(); ++k)
      if (!std::isfinite(w[k])) fail(src_path, "tensor '{}': weight {} is not finite ({})", in.name, k, w[k]);

    TensorInfo out;
    out.name = in.name;
    out.shape = in.shape;
    const auto planned = in.shape.size() == 2 ? opt.plan.find(in.name) : opt.plan.end();
    if (planned != opt.plan.end()) {
      out.dtype = planned->second.dtype;
      out.params = planned->second.params;
    } else {
      out.dtype = choose_dtype(recipe, in);
      out.params = out.dtype == DType::F32 ? std::string() : params_of.at(out.dtype);
    }
    const int64_t rows = in.rows(), cols = in.cols();
    std::vector<std::byte> owned;
    std::span<const std::byte> blob;
    const quant::InputStats* stats = nullptr;
    if (out.dtype == DType::F32) {
      blob = {reinterpret_cast<const std::byte*>(w.data()), w.size() * 4};  // no copy for passthrough
    } else {
      if (quant::scheme(out.dtype).uses_stats) {
        stats = stats_for(in.name);
        if (!stats && !calibration_input_of(in.name).empty()) rep.calibration_would_help = true;
      }
      const std::vector<std::byte>* cached = nullptr;
      if (opt.blobs && planned != opt.plan.end())
        if (const auto it = opt.blobs->find(in.name); it != opt.blobs->end()) cached = &it->second;
      if (cached) {
        blob = *cached;  // quantized by the allocator with this scheme and these statistics
      } else {
        owned = quant::quantize(out.dtype,
                                {.w = w.data(), .rows = rows, .cols = cols, .params = out.params, .stats = stats});
        blob = owned;
      }
    }
    out.nbytes = blob.size();

    TensorReport tr;
    tr.name = in.name;
    tr.shape = in.shape;
    tr.scheme = std::string(quant::scheme_name(out.dtype));
    tr.params = out.params;
    tr.bytes = blob.size();
    tr.bpw = static_cast<double>(blob.size()) * 8.0 / static_cast<double>(w.size());
    tr.metrics = measure(out.dtype, blob, w.data(), rows, cols, out.params, src_path + ": tensor '" + in.name + "'",
                         &tr.outliers, stats, &tr.out_error);
    if (stats) tr.calib_input = calibration_input_of(in.name);
    writer.add_tensor(out, tensor_layer(in.name), blob);
    rep.tensors.push_back(std::move(tr));

    done_bytes += in.nbytes;
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    bar.update(static_cast<long long>(i + 1), fmt::format("{:.0f} MB/s", el > 0 ? done_bytes / el / 1e6 : 0.0));
  }
  bar.finish();
  rep.source_xxh3 = hex64(XXH3_64bits_digest(hs));
  if (!opt.calib.empty() || opt.calib_set) {
    rep.calibrated = true;
    rep.calibration = opt.calib_set ? opt.calib_set->info : calibrator ? calibrator->info() : calib_file.info;
  }

  nlohmann::json tensors = nlohmann::json::array();
  for (const TensorReport& t : rep.tensors) tensors.push_back(tensor_report_json(t));
  nlohmann::json keep = nlohmann::json::array(), rules = nlohmann::json::array();
  for (const std::string& k : opt.keep) keep.push_back(k);
  for (const KeepRule& k : recipe.rules) rules.push_back(k.spec);
  nlohmann::json options = nlohmann::json::object();
  if (opt.options.group_size) options["group"] = *opt.options.group_size;
  if (opt.options.outlier_ratio) options["alpha"] = static_cast<double>(*opt.options.outlier_ratio);
  if (opt.options.use_mean) options["mean"] = *opt.options.use_mean;
  if (opt.options.sign_symmetric) options["sym"] = *opt.options.sign_symmetric;
  nlohmann::json meta = {
      {"format", "lsb"},
      {"lsb_version", std::string(kVersion)},
      {"config", config_to_json(cfg)},
      {"provenance",
       {{"source", src_path},
        {"source_format", std::string(src->format_name())},
        {"source_tensor_bytes", rep.input_bytes},
        {"source_params", rep.params},
        {"source_xxh3", rep.source_xxh3},
        {"tokenizer", opt.tokenizer_path.empty() ? tok.origin : opt.tokenizer_path}}},
      {"options",
       {{"scheme", opt.scheme},
        {"scheme_options", std::move(options)},
        {"keep", std::move(keep)},
        {"rules", std::move(rules)},
        {"base_scheme", std::string(quant::scheme_name(recipe.base))}}},
      {"tensors", std::move(tensors)}};
  // Kept so that `lsb serve` and `lsb chat` on the .lsb file format conversations as the source did.
  if (const std::string tmpl = src->chat_template(); !tmpl.empty()) meta["chat_template"] = tmpl;
  if (rep.calibrated) meta["calibration"] = calibration_json(rep.calibration, opt.calib);
  if (!opt.allocation.is_null()) meta["allocation"] = opt.allocation;
  rep.output_bytes = writer.finish(std::move(meta));

  rep.bpw = rep.params ? static_cast<double>(rep.output_bytes) * 8.0 / static_cast<double>(rep.params) : 0.0;
  rep.ratio_vs_bf16 = rep.output_bytes ? static_cast<double>(rep.params) * 2.0 / static_cast<double>(rep.output_bytes) : 0.0;
  rep.peak_rss_bytes = peak_rss_bytes();
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

}  // namespace lsb
