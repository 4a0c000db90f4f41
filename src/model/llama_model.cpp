// The forward pass, top to bottom, in the spirit of llama2.c's run.c. Shapes are given as
// (rows, cols) of row-major float buffers; n is the number of tokens in the batch.
#include "model/llama_model.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/error.h"
#include "base/fp16.h"
#include "kernels/dense.h"

namespace lsb {
namespace {

// Token loops outside the matrix products run on the team for a prompt's batch: serial, they
// were a fifth of a 512-token prompt (SwiGLU's exp alone) and kept 2 threads at 1.2x one.
constexpr int kParallelTokens = 8;

// out = x * w / rms(x), for n rows of length dim.
void rmsnorm(float* out, const float* x, const float* w, int n, int dim, float eps) {
#pragma omp parallel for schedule(static) if (n >= kParallelTokens)
  for (int t = 0; t < n; ++t) {
    const float* xr = x + static_cast<int64_t>(t) * dim;
    float* o = out + static_cast<int64_t>(t) * dim;
    double ss = 0.0;
    for (int i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = 1.0f / std::sqrt(static_cast<float>(ss / dim) + eps);
    for (int i = 0; i < dim; ++i) o[i] = w[i] * (xr[i] * inv);
  }
}

void add_rows(float* x, const float* y, int n, int dim) {
#pragma omp parallel for schedule(static) if (n >= kParallelTokens)
  for (int t = 0; t < n; ++t)
    for (int i = 0; i < dim; ++i) x[static_cast<size_t>(t) * dim + i] += y[static_cast<size_t>(t) * dim + i];
}

}  // namespace

LlamaModel::LlamaModel(const ModelConfig& cfg, std::unique_ptr<WeightProvider> weights, const ModelOptions& opt)
    : cfg_(cfg), opt_(opt), weights_(std::move(weights)) {
  if (opt_.kv_type != DType::F32 && opt_.kv_type != DType::F16)
    throw Error(fmt::format("KV cache type {} is not supported (f32 or f16)", dtype_name(opt_.kv_type)));
}

LlamaModel::~LlamaModel() = default;

uint64_t LlamaModel::Activations::floats(const ModelConfig& c, int batch, int ctx, int threads) {
  const uint64_t n = static_cast<uint64_t>(batch), keys = static_cast<uint64_t>(ctx);
  const uint64_t q_dim = static_cast<uint64_t>(c.n_heads) * c.head_dim;
  const uint64_t kv_dim = static_cast<uint64_t>(c.n_kv_heads) * c.head_dim;
  const uint64_t fwd = n * (c.dim + std::max<uint64_t>(c.dim, q_dim) + 2 * q_dim + 2 * kv_dim + 2ull * c.hidden_dim);
  return fwd + static_cast<uint64_t>(threads) * (n * keys + static_cast<uint64_t>(c.head_dim) * keys);
}

void LlamaModel::Activations::allocate(const ModelConfig& c, int batch, int ctx, int threads) {
  const size_t n = static_cast<size_t>(batch);
  const size_t q_dim = static_cast<size_t>(c.n_heads) * c.head_dim;
  const size_t kv_dim = static_cast<size_t>(c.n_kv_heads) * c.head_dim;
  x.assign(n * c.dim, 0.0f);
  xb.assign(n * std::max<size_t>(c.dim, q_dim), 0.0f);
  q.assign(n * q_dim, 0.0f);
  k.assign(n * kv_dim, 0.0f);
  v.assign(n * kv_dim, 0.0f);
  att.assign(n * q_dim, 0.0f);
  hb.assign(n * c.hidden_dim, 0.0f);
  hb2.assign(n * c.hidden_dim, 0.0f);
  scores.assign(static_cast<size_t>(threads) * n * static_cast<size_t>(ctx), 0.0f);
  vt.assign(static_cast<size_t>(threads) * c.head_dim * static_cast<size_t>(ctx), 0.0f);
}

BufferNeeds LlamaModel::buffer_needs(int ctx, int batch) const {
  BufferNeeds b;
  b.ctx = ctx;
  b.batch = batch;
  b.kv_bytes = 2ull * cfg_.n_layers * static_cast<uint64_t>(ctx) * cfg_.n_kv_heads * cfg_.head_dim *
               dtype_size(opt_.kv_type);
  const uint64_t rope = static_cast<uint64_t>(ctx) * static_cast<uint64_t>(cfg_.head_dim);  // cos + sin tables
  // The caller's logits (at most one row a token) and a sampler's candidates (one pair of 8
  // bytes per vocabulary entry, for top-p).
  const uint64_t logits = static_cast<uint64_t>(batch + 2) * cfg_.vocab_size;
  b.activation_bytes = 4 * (Activations::floats(cfg_, batch, ctx, omp_get_max_threads()) + rope + logits);
  return b;
}

void LlamaModel::reset(int ctx, int max_batch) {
  if (ctx <= 0) throw Error(fmt::format("context length must be positive (got {})", ctx));
  if (max_batch <= 0 || max_batch > ctx) max_batch = ctx;
  weights_->reserve(buffer_needs(ctx, max_batch));
  // The same shape as before: the buffers stay as they are. forward() writes every cache position
  // and activation before it reads it, so there is nothing to clear, and a server that resets for
  // every request does not pay for zeroing tens of MB and recomputing the RoPE tables each time.
  if (ctx == ctx_ && max_batch == max_batch_ && omp_get_max_threads() == threads_) return;
  const int64_t kv_dim = static_cast<int64_t>(cfg_.n_kv_heads) * cfg_.head_dim;
  ctx_ = ctx;
  max_batch_ = max_batch;
  threads_ = omp_get_max_threads();
  act_.allocate(cfg_, max_batch_, ctx_, threads_);
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

// A batch larger than the one reset() sized for, or more threads than then: size again (and let
// the provider check its budget again).
void LlamaModel::ensure_batch(int n) {
  if (n <= max_batch_ && omp_get_max_threads() <= threads_) return;
  max_batch_ = std::max(max_batch_, n);
  threads_ = std::max(threads_, omp_get_max_threads());
  weights_->reserve(buffer_needs(ctx_, max_batch_));
  act_.allocate(cfg_, max_batch_, ctx_, threads_);
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
// hold this batch's queries, keys and values. Per query head and block of up to 64 queries
// [t0, t1), two gemm calls over the keys the block can see (nk = pos + t1):
//   S: (t1-t0, nk) = q_h · K_hᵀ / sqrt(head_dim), causal softmax per row, out_h = S · V_h.
// Writes att_out_: (n, n_heads*head_dim).
void LlamaModel::attention(int layer, int n, int pos) {
  constexpr int kQueryBlock = 64;
  const int hd = cfg_.head_dim, n_heads = cfg_.n_heads;
  const int q_dim = n_heads * hd, kv_dim = cfg_.n_kv_heads * hd;
  const int group = cfg_.n_heads / cfg_.n_kv_heads;  // query heads per key/value head
  const int n_keys = pos + n;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const size_t es = dtype_size(opt_.kv_type), layer_off = static_cast<size_t>(layer) * ctx_ * kv_dim * es;
  const std::byte* kc = key_cache_.data() + layer_off;    // (ctx, kv_dim) of kv_type
  const std::byte* vc = value_cache_.data() + layer_off;  // (ctx, kv_dim) of kv_type
  const bool f16 = opt_.kv_type == DType::F16;
  float* att = act_.att.data();
#pragma omp parallel
  {
    const size_t me = static_cast<size_t>(omp_get_thread_num());
    float* S = act_.scores.data() + me * static_cast<size_t>(max_batch_) * ctx_;  // (n, n_keys)
    float* Vt = act_.vt.data() + me * static_cast<size_t>(hd) * ctx_;             // (hd, n_keys): V_hᵀ
#pragma omp for schedule(dynamic, 1)
    for (int h = 0; h < n_heads; ++h) {
      const int kvh = h / group;
      if (n >= 4) {
        // V_hᵀ: (hd, n_keys), for the products S · V_h below.
        for (int j = 0; j < n_keys; ++j) {
          const std::byte* vrow = vc + (static_cast<size_t>(j) * kv_dim + kvh * hd) * es;
          float* vt = Vt + j;
          if (!f16) {
            const float* v = reinterpret_cast<const float*>(vrow);
            for (int i = 0; i < hd; ++i) vt[static_cast<size_t>(i) * n_keys] = v[i];
          } else {
            for (int i = 0; i < hd; ++i) vt[static_cast<size_t>(i) * n_keys] = kv_load(vrow, i, f16);
          }
        }
      }
      // Queries in blocks: block [t0, t1) attends to keys 0 .. pos + t1 - 1 at most (causal), so
      // the products skip most of the masked triangle of a long prompt.
      for (int t0 = 0; t0 < n; t0 += kQueryBlock) {
        const int t1 = std::min(n, t0 + kQueryBlock), nq = t1 - t0, nk = pos + t1;
        // S = q_h · K_hᵀ: (nq, nk)
        kernels::gemm_nt(opt_.kv_type, act_.q.data() + static_cast<size_t>(t0) * q_dim + h * hd, q_dim, nq,
                         kc + kvh * hd * es, kv_dim, 0, nk, hd, S, nk);
        for (int t = t0; t < t1; ++t) {
          float* row = S + static_cast<size_t>(t - t0) * nk;
          const int last = pos + t;  // token t attends to positions 0..last
          kernels::softmax_scaled(row, last + 1, scale);
          std::fill(row + last + 1, row + nk, 0.0f);
        }
        if (n < 4) {
          // Few tokens (decoding): out_h[t] = Σ_j S[t, j] · V_h[j], without transposing V.
          for (int t = t0; t < t1; ++t) {
            float* out = att + static_cast<size_t>(t) * q_dim + h * hd;
            const float* p = S + static_cast<size_t>(t - t0) * nk;
            if (!f16) {
              kernels::weighted_row_sum(reinterpret_cast<const float*>(vc) + kvh * hd, kv_dim, pos + t + 1, p, hd, out);
              continue;
            }
            std::fill(out, out + hd, 0.0f);
            for (int j = 0; j <= pos + t; ++j) {
              const std::byte* vrow = vc + (static_cast<size_t>(j) * kv_dim + kvh * hd) * es;
              for (int i = 0; i < hd; ++i) out[i] += p[j] * kv_load(vrow, i, f16);
            }
          }
          continue;
        }
        // out_h = S · V_h = S · (V_hᵀ)ᵀ: (nq, hd), over the first nk keys
        kernels::gemm_nt(DType::F32, S, nk, nq, Vt, n_keys, 0, hd, nk, att + static_cast<size_t>(t0) * q_dim + h * hd,
                         q_dim);
      }
    }
  }
}

// cache[l][pos..pos+n) = k, v (converted to the cache's element type)
void LlamaModel::store_kv(int l, int n, int pos) {
  const size_t kv_dim = static_cast<size_t>(cfg_.n_kv_heads) * cfg_.head_dim, count = static_cast<size_t>(n) * kv_dim;
  const size_t off = (static_cast<size_t>(l) * ctx_ + pos) * kv_dim * dtype_size(opt_.kv_type);
  if (opt_.kv_type == DType::F32) {
    std::memcpy(key_cache_.data() + off, act_.k.data(), count * 4);
    std::memcpy(value_cache_.data() + off, act_.v.data(), count * 4);
    return;
  }
  for (size_t i = 0; i < count; ++i) {
    const uint16_t hk = f32_to_f16(act_.k[i]), hv = f32_to_f16(act_.v[i]);
    std::memcpy(key_cache_.data() + off + 2 * i, &hk, 2);
    std::memcpy(value_cache_.data() + off + 2 * i, &hv, 2);
  }
}

void LlamaModel::embed(const int* tokens, int n, float* x) {
  for (int t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= cfg_.vocab_size)
      throw Error(fmt::format("token id {} outside the vocabulary of {}", tokens[t], cfg_.vocab_size));
    weights_->embedding_row(tokens[t], x + static_cast<size_t>(t) * cfg_.dim);
  }
  weights_->embedding_done();
}

// One transformer block on x: (n, dim) at positions pos..pos+n-1.
void LlamaModel::forward_layer(int l, float* x, int n, int pos) {
  if (ctx_ == 0 || pos < 0 || pos + n > ctx_)
    throw Error(fmt::format("positions {}..{} exceed the context of {} tokens", pos, pos + n - 1, ctx_));
  ensure_batch(n);
  const int dim = cfg_.dim, hd = cfg_.head_dim, half = hd / 2;
  const int q_dim = cfg_.n_heads * hd, kv_dim = cfg_.n_kv_heads * hd, hidden = cfg_.hidden_dim;
  float *xb = act_.xb.data(), *q = act_.q.data(), *k = act_.k.data(), *v = act_.v.data();
  float *hb = act_.hb.data(), *hb2 = act_.hb2.data();
  const LayerWeights& L = weights_->layer(l);
  // ---- attention block ----
  rmsnorm(xb, x, L.attn_norm.data(), n, dim, cfg_.norm_eps);  // xb: (n, dim)
  L.wq->forward(xb, n, q);                                    // q: (n, q_dim)
  L.wk->forward(xb, n, k);                                    // k: (n, kv_dim)
  L.wv->forward(xb, n, v);                                    // v: (n, kv_dim)
#pragma omp parallel for schedule(static) if (n >= kParallelTokens)
  for (int t = 0; t < n; ++t) {
    const float* cs = rope_cos_.data() + static_cast<size_t>(pos + t) * half;
    const float* sn = rope_sin_.data() + static_cast<size_t>(pos + t) * half;
    for (int h = 0; h < cfg_.n_heads; ++h)
      rope_rotate(q + static_cast<size_t>(t) * q_dim + h * hd, hd, cfg_.rope_interleaved, cs, sn);
    for (int h = 0; h < cfg_.n_kv_heads; ++h)
      rope_rotate(k + static_cast<size_t>(t) * kv_dim + h * hd, hd, cfg_.rope_interleaved, cs, sn);
  }
  store_kv(l, n, pos);                                        // cache[l][pos..pos+n) = k, v
  attention(l, n, pos);                                       // att: (n, q_dim)
  L.wo->forward(act_.att.data(), n, xb);                      // xb: (n, dim)
  add_rows(x, xb, n, dim);                                    // x += xb

  // ---- SwiGLU MLP block ----
  rmsnorm(xb, x, L.ffn_norm.data(), n, dim, cfg_.norm_eps);   // xb: (n, dim)
  L.gate->forward(xb, n, hb);                                 // hb: (n, hidden)
  L.up->forward(xb, n, hb2);                                  // hb2: (n, hidden)
#pragma omp parallel for schedule(static) if (n >= kParallelTokens)
  for (int t = 0; t < n; ++t)                                 // hb = silu(hb) * hb2
    kernels::silu_mul(hb + static_cast<size_t>(t) * hidden, hb2 + static_cast<size_t>(t) * hidden, hidden);
  L.down->forward(hb, n, xb);                                 // xb: (n, dim)
  add_rows(x, xb, n, dim);                                    // x += xb
  if (on_layer) on_layer(l, x, n);
}

void LlamaModel::final_norm(const float* x, int n, float* out) const {
  rmsnorm(out, x, weights_->final_norm().data(), n, cfg_.dim, cfg_.norm_eps);
}

void LlamaModel::head(const float* x, int n, float* logits) {
  ensure_batch(n);
  rmsnorm(act_.xb.data(), x, weights_->final_norm().data(), n, cfg_.dim, cfg_.norm_eps);  // xb: (n, dim)
  weights_->head().forward(act_.xb.data(), n, logits);                                  // logits: (n, vocab)
}

void LlamaModel::forward(const int* tokens, int n, int pos, float* logits, int logits_from) {
  if (n <= 0) return;
  if (logits_from < 0 || logits_from > n) throw Error(fmt::format("logits_from {} outside 0..{}", logits_from, n));
  if (ctx_ == 0 || pos < 0 || pos + n > ctx_)
    throw Error(fmt::format("positions {}..{} exceed the context of {} tokens", pos, pos + n - 1, ctx_));
  ensure_batch(n);
  float* x = act_.x.data();
  embed(tokens, n, x);                                                 // x: (n, dim)
  for (int l = 0; l < cfg_.n_layers; ++l) forward_layer(l, x, n, pos);  // x: (n, dim)
  // ---- classifier, for tokens logits_from..n-1 ----
  const int m = n - logits_from;
  if (m > 0) head(x + static_cast<size_t>(logits_from) * cfg_.dim, m, logits);  // logits: (m, vocab)
}

}  // namespace lsb
