#include "eval/allocate.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>

#include <fmt/format.h>

#include "base/error.h"
#include "eval/compare.h"
#include "format/lsb_format.h"
#include "format/lsb_writer.h"
#include "io/mmap_file.h"
#include "model/llama_model.h"
#include "model/model_tensors.h"
#include "model/tokenizer.h"
#include "pipeline/open_model.h"
#include "quant/gptq.h"
#include "runtime/progress.h"
#include "runtime/resident_weights.h"

namespace lsb {
namespace {

constexpr uint64_t kNoFit = std::numeric_limits<uint64_t>::max();
// The code every kind is measured with for its sensitivity: low enough that its damage is well
// above the noise of a few windows, and a code the allocator actually uses at low sizes.
constexpr const char* kReferenceLabel = "vq4/b6/g256";

// The source as it is, except for the matrices given quantized blobs: what the model runs when
// the sensitivity of one kind is measured.
class OverlaySource final : public TensorSource {
 public:
  struct Blob {
    DType dtype;
    std::string params;
    const std::vector<std::byte>* bytes;
  };
  OverlaySource(const TensorSource& base, const std::map<std::string, Blob>& over) : base_(base), over_(over) {
    infos_ = base.tensors();
    for (TensorInfo& t : infos_)
      if (const auto it = over_.find(t.name); it != over_.end()) {
        t.dtype = it->second.dtype;
        t.params = it->second.params;
        t.nbytes = it->second.bytes->size();
      }
  }
  const ModelConfig& config() const override { return base_.config(); }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  std::span<const std::byte> data(const TensorInfo& t) const override {
    if (const auto it = over_.find(t.name); it != over_.end()) return *it->second.bytes;
    return base_.data(*base_.find(t.name));
  }
  std::string describe() const override { return base_.describe(); }
  std::string_view format_name() const override { return base_.format_name(); }

 private:
  const TensorSource& base_;
  std::map<std::string, Blob> over_;
  std::vector<TensorInfo> infos_;
};

struct NonOwning {
  void operator()(const TensorSource*) const {}
};

// A record as long as any tensor's report in the metadata can be (the numbers at their longest).
nlohmann::json longest_report(const TensorInfo& t, size_t params_size) {
  TensorReport r;
  r.name = t.name;
  r.shape = t.shape;
  r.scheme = "paper";  // the longest scheme name
  r.params = std::string(params_size, 'x');
  r.bytes = r.outliers = std::numeric_limits<uint64_t>::max();
  const double big = -1.2345678901234567e-100;
  r.bpw = r.metrics.mae = r.metrics.mse = r.metrics.rel_l2 = r.metrics.snr_db = r.metrics.cosine = big;
  r.metrics.max_abs_err = r.out_error = big;
  r.calib_input = "layers.00000.gate_up";
  return tensor_report_json(r);
}

uint64_t src_params(const TensorSource& src) {
  uint64_t n = 0;
  for (const TensorInfo& t : src.tensors()) n += static_cast<uint64_t>(t.numel());
  return n;
}

}  // namespace

std::vector<AllocCandidate> allocation_candidates() {
  struct Spec {
    DType dtype;
    int bits, group;
    bool sym = false;
  };
  // Measured on bookworm-27m (docs/CALIBRATION.md): the 4-d vector codebook is best from 1.4 to
  // about 2.6 bits per weight, the learned 8- and 16-level scalar codes above; q8 for what must
  // stay nearly exact. 9-bit VQ4 with a sign-symmetric codebook: the same KLD as a free one
  // (0.3236 against 0.3242, every matrix 9 bits, 40 windows) and 1.3-1.5x its decode speed; at 8
  // bits the symmetric codebook cost 1.6 % of KLD for 1.07x, so 8 bits stay free.
  static const Spec specs[] = {{DType::VQ4, 5, 128}, {DType::VQ4, 6, 256},       {DType::VQ4, 7, 256},
                               {DType::VQ4, 8, 256}, {DType::VQ4, 9, 128, true}, {DType::NU, 3, 128},
                               {DType::NU, 4, 128},  {DType::Q8, 0, 0}};
  std::vector<AllocCandidate> out;
  for (const Spec& s : specs) {
    quant::SchemeOptions o;
    if (s.bits) o.bits = s.bits;
    if (s.group) o.group_size = s.group;
    if (s.sym) o.sign_symmetric = true;
    AllocCandidate c;
    c.dtype = s.dtype;
    c.params = quant::make_params(s.dtype, o, "allocation candidates");
    c.label = s.bits ? fmt::format("{}/b{}{}/g{}", quant::scheme_name(s.dtype), s.bits, s.sym ? "s" : "", s.group)
                     : std::string(quant::scheme_name(s.dtype));
    out.push_back(std::move(c));
  }
  return out;
}

std::string matrix_kind(std::string_view name) {
  if (name == "model.embed_tokens.weight") return "embed";
  if (name == "lm_head.weight") return "head";
  static const std::pair<const char*, const char*> kinds[] = {
      {".self_attn.q_proj.weight", "q"}, {".self_attn.k_proj.weight", "k"}, {".self_attn.v_proj.weight", "v"},
      {".self_attn.o_proj.weight", "o"}, {".mlp.gate_proj.weight", "gate"}, {".mlp.up_proj.weight", "up"},
      {".mlp.down_proj.weight", "down"}};
  if (name.substr(0, 13) != "model.layers.") return "";
  for (const auto& [suffix, kind] : kinds) {
    const std::string_view s(suffix);
    if (name.size() > s.size() && name.substr(name.size() - s.size()) == s) return kind;
  }
  return "";
}

Allocation allocate_bits(const std::vector<AllocMatrix>& ms, const std::map<std::string, double>& factor,
                         double exponent, uint64_t budget_bytes, const std::string& where) {
  const size_t M = ms.size();
  Allocation out;
  out.choice.assign(M, -1);
  if (M == 0) return out;
  const uint64_t bucket = std::max<uint64_t>(1, (budget_bytes + 16383) / 16384);
  const size_t cap = static_cast<size_t>(budget_bytes / bucket);
  auto cost = [&](const AllocMatrix& m, size_t c) {
    const auto it = factor.find(m.kind);
    const double a = it == factor.end() ? 0.0 : it->second;
    return a * std::pow(std::max(0.0, m.err[c]), exponent);
  };
  uint64_t smallest = 0;
  for (const AllocMatrix& m : ms) {
    uint64_t s = kNoFit;
    for (uint64_t b : m.bytes) s = std::min(s, b);
    if (s == kNoFit) fail(where, "no candidate code can store '{}'", m.name);
    smallest += s;
  }
  if (smallest > budget_bytes)
    fail(where, "the smallest codes need {} bytes for the matrices but only {} are left under the target", smallest,
         budget_bytes);
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> dp(cap + 1, inf), next(cap + 1);
  dp[0] = 0;
  std::vector<std::vector<int8_t>> pick(M, std::vector<int8_t>(cap + 1, -1));
  for (size_t i = 0; i < M; ++i) {
    std::fill(next.begin(), next.end(), inf);
    const AllocMatrix& m = ms[i];
    for (size_t c = 0; c < m.bytes.size(); ++c) {
      if (m.bytes[c] == kNoFit) continue;
      const size_t u = static_cast<size_t>((m.bytes[c] + bucket - 1) / bucket);
      if (u > cap) continue;
      const double e = cost(m, c);
      for (size_t j = u; j <= cap; ++j) {
        const double v = dp[j - u] + e;
        if (v < next[j]) {
          next[j] = v;
          pick[i][j] = static_cast<int8_t>(c);
        }
      }
    }
    dp.swap(next);
  }
  size_t best = 0;
  for (size_t j = 1; j <= cap; ++j)
    if (dp[j] < dp[best]) best = j;
  if (!std::isfinite(dp[best]))
    fail(where, "the smallest codes do not fit in {} bytes once sizes are rounded to {}-byte buckets", budget_bytes,
         bucket);
  out.predicted = dp[best];
  for (size_t i = M; i-- > 0;) {
    const int c = pick[i][best];
    out.choice[i] = c;
    out.bytes += ms[i].bytes[static_cast<size_t>(c)];
    best -= static_cast<size_t>((ms[i].bytes[static_cast<size_t>(c)] + bucket - 1) / bucket);
  }
  return out;
}

TargetReport compress_to_target(const std::string& src_path, const std::string& out_path, CompressOptions opt,
                                const AllocateOptions& a) {
  const std::string where = "--target-bpw";
  if (!(a.target_bpw > 0) || !std::isfinite(a.target_bpw))
    fail(where, "must be a positive number of bits per weight (got {})", a.target_bpw);
  if (opt.calib.empty())
    fail(where, "needs calibration: --calib TEXT (or a statistics file from `lsb calibrate` with --sens-text TEXT)");
  if (a.sens_windows < 1) fail("--sens-windows", "must be at least 1 (got {})", a.sens_windows);
  const auto t0 = std::chrono::steady_clock::now();
  std::shared_ptr<const TensorSource> src(open_model(src_path));
  const ModelConfig& cfg = src->config();
  cfg.validate(src_path);
  validate_tensors(*src);
  const TokenizerBlob tok_blob = opt.tokenizer_path.empty() ? src->tokenizer() : read_tokenizer_file(opt.tokenizer_path);
  if (tok_blob.kind == TokenizerBlob::Kind::None)
    fail(src_path, "--target-bpw measures the model on text and needs its tokenizer (none found; use --tokenizer)");
  const std::unique_ptr<Tokenizer> tok = load_tokenizer(tok_blob);

  // Statistics of every input, in memory (a statistics file is read once; a text is run now).
  const bool stats_file = is_calibration_file(opt.calib);
  std::string sens_text = a.sens_text;
  if (sens_text.empty()) {
    if (stats_file)
      fail(where, "with a statistics file, name the text to measure sensitivity on with --sens-text (e.g. the "
                  "calibration text)");
    sens_text = opt.calib;
  }
  CalibrationSet calib;
  if (stats_file) {
    calib = read_calibration(opt.calib, *src);
  } else {
    CalibrationOptions co = opt.calib_options;
    co.text_path = opt.calib;
    co.progress = opt.progress;
    calib = calibrate_model(*src, *tok, co);
  }
  // Sensitivity windows: the last ones of the text (the statistics come from its start).
  const std::string text = read_small_file(sens_text, 1ull << 30);
  std::vector<int> tokens = tok->encode(text, true);
  const int64_t want = static_cast<int64_t>(a.sens_windows) * a.sens_ctx;
  if (static_cast<int64_t>(tokens.size()) < a.sens_ctx)
    fail(sens_text, "has {} tokens, fewer than one sensitivity window of {}", tokens.size(), a.sens_ctx);
  if (static_cast<int64_t>(tokens.size()) > want) tokens.erase(tokens.begin(), tokens.end() - want);

  // 1. Every candidate on every matrix.
  const std::vector<AllocCandidate> cands = allocation_candidates();
  size_t ref_c = 0;
  while (ref_c < cands.size() && cands[ref_c].label != kReferenceLabel) ++ref_c;
  std::vector<AllocMatrix> ms;
  std::map<std::string, std::vector<std::vector<std::byte>>> blobs;  // per matrix, per candidate
  std::vector<const TensorInfo*> order;
  for (const ExpectedTensor& e : expected_tensors(cfg))
    if (const TensorInfo* t = src->find(e.name); t && t->shape.size() == 2) order.push_back(t);
  uint64_t cached = 0;
  {
    ProgressBar bar("measure codes", static_cast<long long>(order.size() * cands.size()), opt.progress);
    long long done = 0;
    for (const TensorInfo* t : order) {
      AllocMatrix m;
      m.name = t->name;
      m.kind = matrix_kind(t->name);
      if (m.kind.empty()) fail(src_path, "tensor '{}' is not a matrix --target-bpw knows", t->name);
      const std::span<const std::byte> sd = src->data(*t);
      const std::vector<float> w = quant::tensor_to_float(*t, sd);
      release_mapped_pages(sd);
      for (float v : w)
        if (!std::isfinite(v)) fail(src_path, "tensor '{}' has a weight that is not finite", t->name);
      const std::string key = calibration_input_of(t->name);
      const quant::InputStats* stats = key.empty() ? nullptr : &calib.inputs.at(key);
      const int64_t rows = t->rows(), cols = t->cols();
      std::vector<std::vector<std::byte>>& mine = blobs[t->name];
      std::vector<float> q(w.size());
      for (const AllocCandidate& c : cands) {
        bar.update(++done, t->name);
        if (c.dtype == DType::VQ4 && cols % 4 != 0) {
          m.bytes.push_back(kNoFit);
          m.err.push_back(0);
          mine.emplace_back();
          continue;
        }
        std::vector<std::byte> b = quant::quantize(
            c.dtype, {.w = w.data(), .rows = rows, .cols = cols, .params = c.params,
                      .stats = quant::scheme(c.dtype).uses_stats ? stats : nullptr});
        quant::dequantize(c.dtype, b, rows, cols, c.params, q.data());
        double err;
        if (stats) {
          err = quant::output_error(w.data(), q.data(), rows, cols, stats).ratio();
        } else {
          double num = 0, den = 0;
          for (size_t k = 0; k < w.size(); ++k) {
            num += static_cast<double>(w[k] - q[k]) * (w[k] - q[k]);
            den += static_cast<double>(w[k]) * w[k];
          }
          err = den > 0 ? num / den : 0.0;
        }
        m.bytes.push_back(b.size());
        m.err.push_back(err);
        mine.push_back(std::move(b));
      }
      for (const auto& b : mine) cached += b.size();
      ms.push_back(std::move(m));
    }
    bar.finish();
  }
  if (ref_c == cands.size()) fail(where, "internal: reference code {} is not a candidate", kReferenceLabel);

  // 2. Sensitivity of each kind at the reference code.
  TargetReport rep;
  std::map<std::string, double> err_sum;  // Σ e(m, ref)^P per kind
  for (const AllocMatrix& m : ms)
    if (m.bytes[ref_c] != kNoFit) err_sum[m.kind] += std::pow(m.err[ref_c], a.exponent);
  {
    LlamaModel ref(cfg, std::make_unique<ResidentWeights>(src));
    CompareOptions co;
    co.ctx = a.sens_ctx;
    co.max_chunks = a.sens_windows;
    co.progress = false;
    ProgressBar bar("sensitivity", static_cast<long long>(err_sum.size()), opt.progress);
    long long done = 0;
    for (const auto& [kind, sum] : err_sum) {
      std::map<std::string, OverlaySource::Blob> over;
      for (const AllocMatrix& m : ms)
        if (m.kind == kind && m.bytes[ref_c] != kNoFit)
          over[m.name] = {cands[ref_c].dtype, cands[ref_c].params, &blobs.at(m.name)[ref_c]};
      auto overlay = std::make_shared<OverlaySource>(*src, over);
      LlamaModel model(cfg, std::make_unique<ResidentWeights>(overlay));
      const CompareResult r = compare_models(ref, model, tokens, co, sens_text);
      rep.kind_kld[kind] = r.kld_mean;
      // A kind whose damage is lost in the noise still costs something per unit of error.
      rep.kind_factor[kind] = sum > 0 ? std::max(r.kld_mean, 1e-6) / sum : 0.0;
      bar.update(++done, kind);
    }
    bar.finish();
  }

  // 3. The allocation, with everything else in the file counted: the file's size for a choice is
  // planned exactly as the writer lays it out (format::planned_file_size), with a metadata
  // record bounded from above (every number at its longest, 4 KiB plus the paths and the
  // configuration for the fields outside the tensors).
  const uint64_t params = src_params(*src);
  const uint64_t target_bytes = static_cast<uint64_t>(std::floor(a.target_bpw * static_cast<double>(params) / 8.0));
  nlohmann::json alloc_json = {{"target_bpw", a.target_bpw},
                               {"exponent", a.exponent},
                               {"reference_code", kReferenceLabel},
                               {"sensitivity_text", sens_text.substr(sens_text.find_last_of('/') + 1)},
                               {"sensitivity_windows", a.sens_windows},
                               {"sensitivity_ctx", a.sens_ctx},
                               {"kind_kld", rep.kind_kld},
                               {"kind_factor", rep.kind_factor}};
  nlohmann::json codes = nlohmann::json::object();
  size_t longest_label = 0, longest_params = 0;
  for (const AllocCandidate& c : cands) {
    longest_label = std::max(longest_label, c.label.size());
    longest_params = std::max(longest_params, c.params.size());
  }
  for (const AllocMatrix& m : ms) codes[m.name] = std::string(longest_label, 'x');
  alloc_json["codes"] = codes;
  alloc_json["predicted_kld"] = -1.2345678901234567e-100;
  const std::vector<const TensorInfo*> file_order = compress_order(*src);
  nlohmann::json meta_bound = {{"fields", std::string(4096 + 4 * (src_path.size() + opt.calib.size() +
                                                                   opt.tokenizer_path.size() + tok_blob.origin.size()),
                                                      'x')},
                               {"config", config_to_json(cfg)},
                               {"allocation", alloc_json}};
  nlohmann::json reports = nlohmann::json::array();
  for (const TensorInfo* t : file_order) reports.push_back(longest_report(*t, longest_params));
  meta_bound["tensors"] = std::move(reports);
  std::map<std::string, size_t> index_of;
  for (size_t i = 0; i < ms.size(); ++i) index_of[ms[i].name] = i;
  auto file_size = [&](const std::vector<int>& choice) {
    std::vector<format::PlannedTensor> pt;
    for (const TensorInfo* t : file_order) {
      format::PlannedTensor p{tensor_layer(t->name), static_cast<uint64_t>(t->numel()) * 4, t->name.size(), 0};
      if (const auto it = index_of.find(t->name); it != index_of.end()) {
        const size_t c = static_cast<size_t>(choice[it->second]);
        p.bytes = ms[it->second].bytes[c];
        p.params_size = cands[c].params.size();
      }
      pt.push_back(p);
    }
    return format::planned_file_size(pt, meta_bound, tok_blob.bytes.size());
  };
  std::vector<int> smallest(ms.size());
  uint64_t smallest_matrices = 0;
  for (size_t i = 0; i < ms.size(); ++i) {
    smallest[i] = static_cast<int>(std::min_element(ms[i].bytes.begin(), ms[i].bytes.end()) - ms[i].bytes.begin());
    smallest_matrices += ms[i].bytes[static_cast<size_t>(smallest[i])];
  }
  const uint64_t min_file = file_size(smallest);
  if (min_file > target_bytes)
    fail(where, "{} bits per weight is below the smallest file these codes make ({:.4f} bits per weight)",
         a.target_bpw, static_cast<double>(min_file) * 8.0 / static_cast<double>(params));
  // The bytes besides the matrices change a little with the choice (alignment), so the budget for
  // the matrices is adjusted until the planned file is as large as it may be.
  int64_t budget = static_cast<int64_t>(target_bytes) - static_cast<int64_t>(min_file - smallest_matrices);
  Allocation al;
  bool have = false;
  for (int it = 0; it < 8 && budget > 0; ++it) {
    const Allocation trial = allocate_bits(ms, rep.kind_factor, a.exponent, static_cast<uint64_t>(budget), where);
    const uint64_t size = file_size(trial.choice);
    if (size <= target_bytes) {
      if (!have || trial.predicted < al.predicted) al = trial;
      have = true;
      if (target_bytes - size < 256) break;
      budget += static_cast<int64_t>(target_bytes - size);
    } else {
      budget -= static_cast<int64_t>(size - target_bytes) + 64;
    }
  }
  if (!have) {  // only the smallest codes fit (min_file <= target)
    al.choice = smallest;
    al.bytes = smallest_matrices;
    al.predicted = 0;
    for (size_t i = 0; i < ms.size(); ++i) {
      const auto f = rep.kind_factor.find(ms[i].kind);
      if (f != rep.kind_factor.end())
        al.predicted += f->second * std::pow(ms[i].err[static_cast<size_t>(smallest[i])], a.exponent);
    }
  }
  rep.predicted_kld = al.predicted;

  std::map<std::string, std::vector<std::byte>> chosen;
  for (size_t i = 0; i < ms.size(); ++i) {
    const AllocCandidate& c = cands[static_cast<size_t>(al.choice[i])];
    opt.plan[ms[i].name] = {c.dtype, c.params};
    codes[ms[i].name] = c.label;
    rep.codes.push_back(ms[i].name + "=" + c.label);
    if (cached <= a.cache_limit_bytes) chosen[ms[i].name] = std::move(blobs.at(ms[i].name)[static_cast<size_t>(al.choice[i])]);
  }
  blobs.clear();
  alloc_json["codes"] = codes;
  alloc_json["predicted_kld"] = al.predicted;
  opt.blobs = &chosen;
  opt.calib_set = &calib;
  opt.allocation = alloc_json;
  opt.scheme = "f32";  // every matrix is planned; 1-D tensors stay f32 as always
  opt.keep.clear();
  rep.compress = compress_model(src_path, out_path, opt);
  if (rep.compress.output_bytes > target_bytes) {
    ::unlink(out_path.c_str());  // over the promise: a bug in the estimate above, never a file
    fail(out_path, "internal: the file came out at {} bytes, over the target's {} (removed)", rep.compress.output_bytes,
         target_bytes);
  }
  rep.compress.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return rep;
}

std::string allocation_summary(const TargetReport& r) {
  // codes[i] is "name=label"; group the labels by kind.
  std::map<std::string, std::map<std::string, int>> by_kind;
  for (const std::string& c : r.codes) {
    const size_t eq = c.rfind('=');
    by_kind[matrix_kind(c.substr(0, eq))][c.substr(eq + 1)]++;
  }
  std::string s = fmt::format("allocation (sensitivity: KLD with one kind at {}):\n", kReferenceLabel);
  for (const auto& [kind, counts] : by_kind) {
    std::string list;
    for (const auto& [label, n] : counts) list += fmt::format("{}{} x{}", list.empty() ? "" : ", ", label, n);
    const auto k = r.kind_kld.find(kind);
    s += fmt::format("  {:<5} KLD {:>8.4f}  {}\n", kind, k == r.kind_kld.end() ? 0.0 : k->second, list);
  }
  s += fmt::format("predicted KLD {:.4f} (sum over kinds; measured jointly it is higher, docs/CALIBRATION.md)\n",
                   r.predicted_kld);
  return s;
}

}  // namespace lsb
