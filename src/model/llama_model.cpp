// The forward pass, top to bottom, in the spirit of llama2.c's run.c. Shapes are given as
// (rows, cols) of row-major float buffers; n is the number of tokens in the batch.
#include "model/llama_model.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "format/lsb_reader.h"
#include "io/fp16.h"
#include "kernels/dense.h"
#include "lsb/error.h"
#include "model/model_tensors.h"
#include "runtime/layer_streamer.h"
#include "runtime/sysinfo.h"
#include "runtime/threads.h"

namespace lsb {
namespace {

std::unique_ptr<Linear> load_linear(const TensorSource& src, const std::string& name) {
  const TensorInfo& t = src.get(name);
  return make_linear(t, src.data(t), src.describe());
}

// out = x * w / rms(x), for n rows of length dim.
void rmsnorm(float* out, const float* x, const float* w, int n, int dim, float eps) {
  for (int t = 0; t < n; ++t) {
    const float* xr = x + static_cast<int64_t>(t) * dim;
    float* o = out + static_cast<int64_t>(t) * dim;
    double ss = 0.0;
    for (int i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / dim) + eps);
    for (int i = 0; i < dim; ++i) o[i] = w[i] * (xr[i] * inv);
  }
}

}  // namespace

LlamaModel::LlamaModel(std::shared_ptr<TensorSource> src, const ModelOptions& opt)
    : src_(std::move(src)), cfg_(src_->config()), opt_(opt) {
  cfg_.validate(src_->describe());
  validate_tensors(*src_);
  if (opt_.kv_type != DType::F32 && opt_.kv_type != DType::F16)
    throw Error(fmt::format("KV cache type {} is not supported (f32 or f16)", dtype_name(opt_.kv_type)));
  const TensorSource& s = *src_;
  if (opt_.mem_budget > 0) {
    auto lsb_file = std::dynamic_pointer_cast<const format::LsbReader>(src_);
    if (!lsb_file)
      fail(s.describe(), "--mem-budget streams layers from a .lsb file; compress the model first (lsb compress)");
    base_rss_ = current_rss_bytes();
    const TensorInfo& norm = s.get("model.norm.weight");
    final_norm_ = load_vector(norm, s.data(norm), cfg_.dim, s.describe());
    streamer_ = std::make_unique<LayerStreamer>(lsb_file, cfg_, opt_.drop_page_cache);
    // The budget is checked by reset(), once the context length (the KV cache) is known.
    return;
  }
  const TensorGetter get = [&s](const std::string& name) {
    const TensorInfo& t = s.get(name);
    return std::make_pair(&t, s.data(t));
  };
  const TensorInfo& norm = s.get("model.norm.weight");
  final_norm_ = load_vector(norm, s.data(norm), cfg_.dim, s.describe());
  embed_ = load_linear(s, "model.embed_tokens.weight");
  layers_.reserve(cfg_.n_layers);
  for (int l = 0; l < cfg_.n_layers; ++l) layers_.push_back(load_layer(l, cfg_.dim, get, s.describe()));
  if (cfg_.tie_embeddings) {
    output_ptr_ = embed_.get();
  } else {
    output_ = load_linear(s, "lm_head.weight");
    output_ptr_ = output_.get();
  }
}

LlamaModel::~LlamaModel() = default;

uint64_t LlamaModel::kv_bytes() const {
  return 2ull * cfg_.n_layers * static_cast<uint64_t>(ctx_) * cfg_.n_kv_heads * cfg_.head_dim * dtype_size(opt_.kv_type);
}

// Activations for a batch of n tokens: the forward pass's buffers, the per-thread attention
// scores, and the caller's logits (up to n rows).
uint64_t LlamaModel::scratch_bytes(int n) const {
  const uint64_t N = static_cast<uint64_t>(n);
  const uint64_t q_dim = static_cast<uint64_t>(cfg_.n_heads) * cfg_.head_dim;
  const uint64_t kv_dim = static_cast<uint64_t>(cfg_.n_kv_heads) * cfg_.head_dim;
  const uint64_t keys = static_cast<uint64_t>(std::max(ctx_, n));
  const uint64_t fwd = N * (cfg_.dim + std::max<uint64_t>(cfg_.dim, q_dim) + 2 * q_dim + 2 * kv_dim + 2ull * cfg_.hidden_dim);
  const uint64_t att = static_cast<uint64_t>(get_threads()) * (N * keys + cfg_.head_dim * keys);
  return 4 * (fwd + att + N * cfg_.vocab_size) + 2 * static_cast<uint64_t>(ctx_) * cfg_.head_dim / 2 * 4;
}

uint64_t LlamaModel::streaming_need(int n, int slots) const {
  if (!streamer_) return 0;
  return base_rss_ + streamer_->footprint().with_slots(slots) + kv_bytes() + scratch_bytes(n);
}

void LlamaModel::check_budget(int n) const {
  if (!streamer_) return;
  const uint64_t need = streaming_need(n, LayerStreamer::kMinSlots);
  if (need > opt_.mem_budget) {
    const auto& f = streamer_->footprint();
    auto mb = [](uint64_t b) { return static_cast<double>(b) / (1 << 20); };
    fail(src_->describe(),
         "--mem-budget {:.0f} MiB is too small: it needs at least {:.0f} MiB = two weight slots (current + prefetch; "
         "each the largest unit {:.1f} + its in-memory repacking {:.1f}) {:.1f} + embedding index {:.1f} + KV cache "
         "for {} positions {:.1f} + activations for {} tokens {:.1f} + the process itself {:.1f} (MiB)",
         mb(opt_.mem_budget), std::ceil(mb(need)), mb(f.unit_bytes), mb(f.slot_bytes - f.unit_bytes),
         mb(2 * f.slot_bytes), mb(f.embedding), ctx_, mb(kv_bytes()), n, mb(scratch_bytes(n)), mb(base_rss_));
  }
  // A third slot, where the budget has room for it, lets reading overlap repacking.
  const bool room = streaming_need(n, LayerStreamer::kMaxSlots) <= opt_.mem_budget;
  streamer_->set_slots(room ? std::min(opt_.max_stream_slots, LayerStreamer::kMaxSlots) : LayerStreamer::kMinSlots);
}

void LlamaModel::reset(int ctx) {
  if (ctx <= 0) throw Error(fmt::format("context length must be positive (got {})", ctx));
  const int64_t kv_dim = static_cast<int64_t>(cfg_.n_kv_heads) * cfg_.head_dim;
  ctx_ = ctx;
  check_budget(1);
  key_cache_.assign(static_cast<size_t>(cfg_.n_layers) * ctx * kv_dim * dtype_size(opt_.kv_type), std::byte{0});
  value_cache_.assign(key_cache_.size(), std::byte{0});
  // RoPE tables: pair i rotates by pos * theta^(-2i/head_dim).
  const int half = cfg_.head_dim / 2;
  rope_cos_.resize(static_cast<size_t>(ctx) * half);
  rope_sin_.resize(rope_cos_.size());
  for (int p = 0; p < ctx; ++p) {
    for (int i = 0; i < half; ++i) {
      const double inv_freq = std::pow(static_cast<double>(cfg_.rope_theta), -2.0 * i / cfg_.head_dim);
      const double a = p * inv_freq;
      rope_cos_[static_cast<size_t>(p) * half + i] = static_cast<float>(std::cos(a));
      rope_sin_[static_cast<size_t>(p) * half + i] = static_cast<float>(std::sin(a));
    }
  }
}

static inline float kv_load(const std::byte* row, int i, bool f16) {
  if (f16) {
    uint16_t h;
    std::memcpy(&h, row + 2 * i, 2);
    return f16_to_f32(h);
  }
  float v;
  std::memcpy(&v, row + 4 * i, 4);
  return v;
}

void LlamaModel::ensure_scratch(int n) {
  if (n <= scratch_n_) return;
  scratch_n_ = n;
  const size_t N = static_cast<size_t>(n);
  const size_t q_dim = static_cast<size_t>(cfg_.n_heads) * cfg_.head_dim;
  const size_t kv_dim = static_cast<size_t>(cfg_.n_kv_heads) * cfg_.head_dim;
  x_.resize(N * cfg_.dim);
  xb_.resize(N * std::max<size_t>(cfg_.dim, q_dim));
  q_.resize(N * q_dim);
  k_.resize(N * kv_dim);
  v_.resize(N * kv_dim);
  att_out_.resize(N * q_dim);
  hb_.resize(N * cfg_.hidden_dim);
  hb2_.resize(N * cfg_.hidden_dim);
}

// Rotates pairs of one head vector `v` (head_dim) at position `pos`.
static inline void rope_rotate(float* v, int head_dim, bool interleaved, const float* cs, const float* sn) {
  const int half = head_dim / 2;
  for (int i = 0; i < half; ++i) {
    const int a = interleaved ? 2 * i : i;           // llama2.c / GGUF: (2i, 2i+1)
    const int b = interleaved ? 2 * i + 1 : i + half;  // Hugging Face rotate-half: (i, i + half)
    const float v0 = v[a], v1 = v[b];
    v[a] = v0 * cs[i] - v1 * sn[i];
    v[b] = v0 * sn[i] + v1 * cs[i];
  }
}

// Attention for the n tokens of the batch at positions pos..pos+n-1; q_ and the cache already
// hold this batch's queries, keys and values. Per query head, two gemm calls:
//   S: (n, pos+n) = q_h · K_hᵀ / sqrt(head_dim), causal softmax per row, out_h: (n, hd) = S · V_h.
// Writes att_out_: (n, n_heads*head_dim).
void LlamaModel::attention(int layer, int n, int pos) {
  const int hd = cfg_.head_dim, n_heads = cfg_.n_heads;
  const int q_dim = n_heads * hd, kv_dim = cfg_.n_kv_heads * hd;
  const int group = cfg_.n_heads / cfg_.n_kv_heads;  // query heads per key/value head
  const int n_keys = pos + n;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const size_t es = dtype_size(opt_.kv_type), layer_off = static_cast<size_t>(layer) * ctx_ * kv_dim * es;
  const std::byte* kc = key_cache_.data() + layer_off;    // (ctx, kv_dim) of kv_type
  const std::byte* vc = value_cache_.data() + layer_off;  // (ctx, kv_dim) of kv_type
  const bool f16 = opt_.kv_type == DType::F16;
#pragma omp parallel
  {
    std::vector<float> S(static_cast<size_t>(n) * n_keys);   // (n, n_keys)
    std::vector<float> Vt(static_cast<size_t>(hd) * n_keys); // (hd, n_keys): V_hᵀ
#pragma omp for schedule(dynamic, 1)
    for (int h = 0; h < n_heads; ++h) {
      const int kvh = h / group;
      // S = q_h · K_hᵀ
      kernels::gemm_nt(opt_.kv_type, q_.data() + h * hd, q_dim, n, kc + kvh * hd * es, kv_dim, 0, n_keys, hd, S.data(), n_keys);
      for (int t = 0; t < n; ++t) {
        float* row = S.data() + static_cast<size_t>(t) * n_keys;
        const int last = pos + t;  // token t attends to positions 0..last
        float mx = -INFINITY;
        for (int j = 0; j <= last; ++j) mx = std::max(mx, row[j] * scale);
        float sum = 0.0f;
        for (int j = 0; j <= last; ++j) {
          row[j] = std::exp(row[j] * scale - mx);
          sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j <= last; ++j) row[j] *= inv;
        std::fill(row + last + 1, row + n_keys, 0.0f);
      }
      if (n < 4) {
        // Few tokens (decoding): out_h[t] = Σ_j S[t, j] · V_h[j], without transposing V.
        for (int t = 0; t < n; ++t) {
          float* out = att_out_.data() + static_cast<size_t>(t) * q_dim + h * hd;
          std::fill(out, out + hd, 0.0f);
          const float* p = S.data() + static_cast<size_t>(t) * n_keys;
          for (int j = 0; j <= pos + t; ++j) {
            const std::byte* vrow = vc + (static_cast<size_t>(j) * kv_dim + kvh * hd) * es;
            for (int i = 0; i < hd; ++i) out[i] += p[j] * kv_load(vrow, i, f16);
          }
        }
        continue;
      }
      for (int j = 0; j < n_keys; ++j) {
        const std::byte* vrow = vc + (static_cast<size_t>(j) * kv_dim + kvh * hd) * es;
        for (int i = 0; i < hd; ++i) Vt[static_cast<size_t>(i) * n_keys + j] = kv_load(vrow, i, f16);
      }
      // out_h = S · V_h = S · (V_hᵀ)ᵀ
      kernels::gemm_nt(DType::F32, S.data(), n_keys, n, Vt.data(), n_keys, 0, hd, n_keys, att_out_.data() + h * hd, q_dim);
    }
  }
}

// cache[l][pos..pos+n) = k, v (converted to the cache's element type)
void LlamaModel::store_kv(int l, int n, int pos) {
  const size_t kv_dim = static_cast<size_t>(cfg_.n_kv_heads) * cfg_.head_dim, count = static_cast<size_t>(n) * kv_dim;
  const size_t off = (static_cast<size_t>(l) * ctx_ + pos) * kv_dim * dtype_size(opt_.kv_type);
  if (opt_.kv_type == DType::F32) {
    std::memcpy(key_cache_.data() + off, k_.data(), count * 4);
    std::memcpy(value_cache_.data() + off, v_.data(), count * 4);
    return;
  }
  for (size_t i = 0; i < count; ++i) {
    const uint16_t hk = f32_to_f16(k_[i]), hv = f32_to_f16(v_[i]);
    std::memcpy(key_cache_.data() + off + 2 * i, &hk, 2);
    std::memcpy(value_cache_.data() + off + 2 * i, &hv, 2);
  }
}

void LlamaModel::forward(const int* tokens, int n, int pos, float* logits, int logits_from) {
  if (n <= 0) return;
  if (logits_from < 0 || logits_from > n) throw Error(fmt::format("logits_from {} outside 0..{}", logits_from, n));
  if (ctx_ == 0 || pos < 0 || pos + n > ctx_)
    throw Error(fmt::format("positions {}..{} exceed the context of {} tokens", pos, pos + n - 1, ctx_));
  check_budget(n);
  ensure_scratch(n);
  const int dim = cfg_.dim, hd = cfg_.head_dim, half = hd / 2;
  const int q_dim = cfg_.n_heads * hd, kv_dim = cfg_.n_kv_heads * hd, hidden = cfg_.hidden_dim;

  // x: (n, dim) = embedding rows of the tokens
  for (int t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= cfg_.vocab_size)
      throw Error(fmt::format("token id {} outside the vocabulary of {}", tokens[t], cfg_.vocab_size));
    if (streamer_) streamer_->embedding_row(tokens[t], x_.data() + static_cast<size_t>(t) * dim);
    else embed_->row(tokens[t], x_.data() + static_cast<size_t>(t) * dim);
  }
  if (streamer_) streamer_->drop_embedding_pages();

  for (int l = 0; l < cfg_.n_layers; ++l) {
    const LayerWeights& L = streamer_ ? streamer_->layer(l) : layers_[l];
    // ---- attention block ----
    rmsnorm(xb_.data(), x_.data(), L.attn_norm.data(), n, dim, cfg_.norm_eps);  // xb: (n, dim)
    L.wq->forward(xb_.data(), n, q_.data());                                   // q: (n, q_dim)
    L.wk->forward(xb_.data(), n, k_.data());                                   // k: (n, kv_dim)
    L.wv->forward(xb_.data(), n, v_.data());                                   // v: (n, kv_dim)
    for (int t = 0; t < n; ++t) {
      const float* cs = rope_cos_.data() + static_cast<size_t>(pos + t) * half;
      const float* sn = rope_sin_.data() + static_cast<size_t>(pos + t) * half;
      for (int h = 0; h < cfg_.n_heads; ++h)
        rope_rotate(q_.data() + static_cast<size_t>(t) * q_dim + h * hd, hd, cfg_.rope_interleaved, cs, sn);
      for (int h = 0; h < cfg_.n_kv_heads; ++h)
        rope_rotate(k_.data() + static_cast<size_t>(t) * kv_dim + h * hd, hd, cfg_.rope_interleaved, cs, sn);
    }
    // cache[l][pos..pos+n) = k, v
    store_kv(l, n, pos);
    attention(l, n, pos);                                                      // att_out: (n, q_dim)
    L.wo->forward(att_out_.data(), n, xb_.data());                             // xb: (n, dim)
    for (size_t i = 0; i < static_cast<size_t>(n) * dim; ++i) x_[i] += xb_[i];

    // ---- SwiGLU MLP block ----
    rmsnorm(xb_.data(), x_.data(), L.ffn_norm.data(), n, dim, cfg_.norm_eps);  // xb: (n, dim)
    L.gate->forward(xb_.data(), n, hb_.data());                                // hb: (n, hidden)
    L.up->forward(xb_.data(), n, hb2_.data());                                 // hb2: (n, hidden)
    for (size_t i = 0; i < static_cast<size_t>(n) * hidden; ++i) {
      const float g = hb_[i];
      hb_[i] = g / (1.0f + std::exp(-g)) * hb2_[i];                            // silu(gate) * up
    }
    L.down->forward(hb_.data(), n, xb_.data());                                // xb: (n, dim)
    for (size_t i = 0; i < static_cast<size_t>(n) * dim; ++i) x_[i] += xb_[i];
    if (on_layer) on_layer(l, x_.data(), n);
  }

  // ---- classifier, for tokens logits_from..n-1 ----
  const int m = n - logits_from;
  if (m <= 0) return;
  const float* xs = x_.data() + static_cast<size_t>(logits_from) * dim;
  rmsnorm(xb_.data(), xs, final_norm_.data(), m, dim, cfg_.norm_eps);        // xb: (m, dim)
  const Linear& head = streamer_ ? streamer_->head() : *output_ptr_;
  head.forward(xb_.data(), m, logits);                                       // logits: (m, vocab)
}

uint64_t LlamaModel::weight_bytes_per_token() const {
  if (streamer_) return streamer_->bytes_per_token();
  uint64_t b = embed_->weight_bytes() / std::max<int64_t>(1, embed_->rows());  // one row
  for (const auto& L : layers_) {
    for (const Linear* m : {L.wq.get(), L.wk.get(), L.wv.get(), L.wo.get(), L.gate.get(), L.up.get(), L.down.get()})
      b += m->weight_bytes();
    b += (L.attn_norm.size() + L.ffn_norm.size()) * sizeof(float);
  }
  return b + output_ptr_->weight_bytes() + final_norm_.size() * sizeof(float);
}

uint64_t LlamaModel::n_params() const {
  uint64_t p = 0;
  for (const auto& t : src_->tensors()) p += static_cast<uint64_t>(t.numel());
  return p;
}

}  // namespace lsb
