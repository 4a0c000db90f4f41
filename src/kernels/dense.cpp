#include "kernels/dense.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <type_traits>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "dense.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include "base/fp16.h"

HWY_BEFORE_NAMESPACE();
namespace lsb::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Loads lanes(df) weights of type T starting at p and widens them to float.
template <typename T, class DF>
HWY_INLINE hn::Vec<DF> LoadAsF32(DF df, const T* HWY_RESTRICT p) {
  if constexpr (std::is_same_v<T, float>) {
    return hn::LoadU(df, p);
  } else {
    const hn::Rebind<T, DF> dn;
    return hn::PromoteTo(df, hn::LoadU(dn, p));
  }
}

template <typename T>
HWY_INLINE float ScalarToF32(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    uint16_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    if constexpr (std::is_same_v<T, hwy::bfloat16_t>) return bf16_to_f32(bits);
    else return f16_to_f32(bits);
  }
}

// Four rows at a time so each load of x serves four rows of weights.
template <typename T>
void GemvRows(const T* HWY_RESTRICT w, int64_t cols, int64_t r0, int64_t r1, const float* HWY_RESTRICT x,
              float* HWY_RESTRICT y) {
  const hn::ScalableTag<float> df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int64_t vec_end = cols - cols % N;
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const T* w0 = w + r * cols;
    const T* w1 = w0 + cols;
    const T* w2 = w1 + cols;
    const T* w3 = w2 + cols;
    auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
    for (int64_t c = 0; c < vec_end; c += N) {
      const auto xv = hn::LoadU(df, x + c);
      a0 = hn::MulAdd(LoadAsF32(df, w0 + c), xv, a0);
      a1 = hn::MulAdd(LoadAsF32(df, w1 + c), xv, a1);
      a2 = hn::MulAdd(LoadAsF32(df, w2 + c), xv, a2);
      a3 = hn::MulAdd(LoadAsF32(df, w3 + c), xv, a3);
    }
    float s0 = hn::GetLane(hn::SumOfLanes(df, a0)), s1 = hn::GetLane(hn::SumOfLanes(df, a1));
    float s2 = hn::GetLane(hn::SumOfLanes(df, a2)), s3 = hn::GetLane(hn::SumOfLanes(df, a3));
    for (int64_t c = vec_end; c < cols; ++c) {
      s0 += ScalarToF32(w0[c]) * x[c];
      s1 += ScalarToF32(w1[c]) * x[c];
      s2 += ScalarToF32(w2[c]) * x[c];
      s3 += ScalarToF32(w3[c]) * x[c];
    }
    y[r - r0] = s0;
    y[r - r0 + 1] = s1;
    y[r - r0 + 2] = s2;
    y[r - r0 + 3] = s3;
  }
  for (; r < r1; ++r) {
    const T* wr = w + r * cols;
    auto a = hn::Zero(df);
    for (int64_t c = 0; c < vec_end; c += N) a = hn::MulAdd(LoadAsF32(df, wr + c), hn::LoadU(df, x + c), a);
    float s = hn::GetLane(hn::SumOfLanes(df, a));
    for (int64_t c = vec_end; c < cols; ++c) s += ScalarToF32(wr[c]) * x[c];
    y[r - r0] = s;
  }
}

// Loads 4 weight rows and 4 token rows per step and keeps 16 dot products in registers, so every
// vector loaded serves four products. Missing rows/tokens at the edges point at a valid row and
// their results are discarded, which keeps the kernel free of bounds checks.
template <typename T>
HWY_INLINE void Tile4x4(const float* const* xs, const T* const* ws, int64_t K, float out[4][4]) {
  const hn::ScalableTag<float> df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int64_t vec_end = K - K % N;
  auto a00 = hn::Zero(df), a01 = hn::Zero(df), a02 = hn::Zero(df), a03 = hn::Zero(df);
  auto a10 = hn::Zero(df), a11 = hn::Zero(df), a12 = hn::Zero(df), a13 = hn::Zero(df);
  auto a20 = hn::Zero(df), a21 = hn::Zero(df), a22 = hn::Zero(df), a23 = hn::Zero(df);
  auto a30 = hn::Zero(df), a31 = hn::Zero(df), a32 = hn::Zero(df), a33 = hn::Zero(df);
  for (int64_t k = 0; k < vec_end; k += N) {
    const auto w0 = LoadAsF32(df, ws[0] + k), w1 = LoadAsF32(df, ws[1] + k);
    const auto w2 = LoadAsF32(df, ws[2] + k), w3 = LoadAsF32(df, ws[3] + k);
    auto x = hn::LoadU(df, xs[0] + k);
    a00 = hn::MulAdd(x, w0, a00); a01 = hn::MulAdd(x, w1, a01); a02 = hn::MulAdd(x, w2, a02); a03 = hn::MulAdd(x, w3, a03);
    x = hn::LoadU(df, xs[1] + k);
    a10 = hn::MulAdd(x, w0, a10); a11 = hn::MulAdd(x, w1, a11); a12 = hn::MulAdd(x, w2, a12); a13 = hn::MulAdd(x, w3, a13);
    x = hn::LoadU(df, xs[2] + k);
    a20 = hn::MulAdd(x, w0, a20); a21 = hn::MulAdd(x, w1, a21); a22 = hn::MulAdd(x, w2, a22); a23 = hn::MulAdd(x, w3, a23);
    x = hn::LoadU(df, xs[3] + k);
    a30 = hn::MulAdd(x, w0, a30); a31 = hn::MulAdd(x, w1, a31); a32 = hn::MulAdd(x, w2, a32); a33 = hn::MulAdd(x, w3, a33);
  }
  out[0][0] = hn::GetLane(hn::SumOfLanes(df, a00)); out[0][1] = hn::GetLane(hn::SumOfLanes(df, a01));
  out[0][2] = hn::GetLane(hn::SumOfLanes(df, a02)); out[0][3] = hn::GetLane(hn::SumOfLanes(df, a03));
  out[1][0] = hn::GetLane(hn::SumOfLanes(df, a10)); out[1][1] = hn::GetLane(hn::SumOfLanes(df, a11));
  out[1][2] = hn::GetLane(hn::SumOfLanes(df, a12)); out[1][3] = hn::GetLane(hn::SumOfLanes(df, a13));
  out[2][0] = hn::GetLane(hn::SumOfLanes(df, a20)); out[2][1] = hn::GetLane(hn::SumOfLanes(df, a21));
  out[2][2] = hn::GetLane(hn::SumOfLanes(df, a22)); out[2][3] = hn::GetLane(hn::SumOfLanes(df, a23));
  out[3][0] = hn::GetLane(hn::SumOfLanes(df, a30)); out[3][1] = hn::GetLane(hn::SumOfLanes(df, a31));
  out[3][2] = hn::GetLane(hn::SumOfLanes(df, a32)); out[3][3] = hn::GetLane(hn::SumOfLanes(df, a33));
  for (int64_t k = vec_end; k < K; ++k)
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) out[i][j] += xs[i][k] * ScalarToF32(ws[j][k]);
}

// One token against four weight rows (the remainder tokens of a batch, and single-token calls).
template <typename T>
HWY_INLINE void Tile1x4(const float* HWY_RESTRICT x, const T* const* ws, int64_t K, float out[4]) {
  const hn::ScalableTag<float> df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int64_t vec_end = K - K % N;
  auto a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
  for (int64_t k = 0; k < vec_end; k += N) {
    const auto xv = hn::LoadU(df, x + k);
    a0 = hn::MulAdd(LoadAsF32(df, ws[0] + k), xv, a0);
    a1 = hn::MulAdd(LoadAsF32(df, ws[1] + k), xv, a1);
    a2 = hn::MulAdd(LoadAsF32(df, ws[2] + k), xv, a2);
    a3 = hn::MulAdd(LoadAsF32(df, ws[3] + k), xv, a3);
  }
  out[0] = hn::GetLane(hn::SumOfLanes(df, a0));
  out[1] = hn::GetLane(hn::SumOfLanes(df, a1));
  out[2] = hn::GetLane(hn::SumOfLanes(df, a2));
  out[3] = hn::GetLane(hn::SumOfLanes(df, a3));
  for (int64_t k = vec_end; k < K; ++k)
    for (int j = 0; j < 4; ++j) out[j] += x[k] * ScalarToF32(ws[j][k]);
}

// y[t * ldy + r] = dot(x[t * ldx : +K], w[r * ldw : +K]) for t < n, r0 <= r < r1.
template <typename T>
void GemmNT(const float* HWY_RESTRICT x, int64_t ldx, int64_t n, const T* HWY_RESTRICT w, int64_t ldw, int64_t r0,
            int64_t r1, int64_t K, float* HWY_RESTRICT y, int64_t ldy) {
  constexpr int64_t kTokenBlock = 64;  // x block stays in L2 while 4 weight rows stay in L1
  float out[4][4];
  for (int64_t tb = 0; tb < n; tb += kTokenBlock) {
    const int64_t te = std::min(n, tb + kTokenBlock);
    for (int64_t r = r0; r < r1; r += 4) {
      const int64_t nr = std::min<int64_t>(4, r1 - r);
      const T* ws[4];
      for (int j = 0; j < 4; ++j) ws[j] = w + (r + (j < nr ? j : 0)) * ldw;
      int64_t t = tb;
      for (; t + 4 <= te; t += 4) {
        const float* xs[4] = {x + t * ldx, x + (t + 1) * ldx, x + (t + 2) * ldx, x + (t + 3) * ldx};
        Tile4x4(xs, ws, K, out);
        for (int64_t i = 0; i < 4; ++i)
          for (int64_t j = 0; j < nr; ++j) y[(t + i) * ldy + r + j] = out[i][j];
      }
      for (; t < te; ++t) {
        Tile1x4(x + t * ldx, ws, K, out[0]);
        for (int64_t j = 0; j < nr; ++j) y[t * ldy + r + j] = out[0][j];
      }
    }
  }
}

void GemmDense(DType t, const float* x, int64_t ldx, int64_t n, const void* w, int64_t ldw, int64_t r0, int64_t r1,
               int64_t K, float* y, int64_t ldy) {
  switch (t) {
    case DType::F32: return GemmNT(x, ldx, n, static_cast<const float*>(w), ldw, r0, r1, K, y, ldy);
    case DType::BF16: return GemmNT(x, ldx, n, static_cast<const hwy::bfloat16_t*>(w), ldw, r0, r1, K, y, ldy);
    case DType::F16: return GemmNT(x, ldx, n, static_cast<const hwy::float16_t*>(w), ldw, r0, r1, K, y, ldy);
    default: return;
  }
}

template <typename T>
void RowsToF32(const T* HWY_RESTRICT w, int64_t cols, int64_t r0, int64_t r1, float* HWY_RESTRICT out) {
  const hn::ScalableTag<float> df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const T* src = w + r0 * cols;
  const int64_t n = (r1 - r0) * cols;
  int64_t i = 0;
  for (; i + N <= n; i += N) hn::StoreU(LoadAsF32(df, src + i), df, out + i);
  for (; i < n; ++i) out[i] = ScalarToF32(src[i]);
}

void GemvDense(DType t, const void* w, int64_t cols, int64_t r0, int64_t r1, const float* x, float* y) {
  switch (t) {
    case DType::F32: return GemvRows(static_cast<const float*>(w), cols, r0, r1, x, y);
    case DType::BF16: return GemvRows(static_cast<const hwy::bfloat16_t*>(w), cols, r0, r1, x, y);
    case DType::F16: return GemvRows(static_cast<const hwy::float16_t*>(w), cols, r0, r1, x, y);
    default: return;
  }
}

void DenseRowsToF32(DType t, const void* w, int64_t cols, int64_t r0, int64_t r1, float* out) {
  switch (t) {
    case DType::F32: return RowsToF32(static_cast<const float*>(w), cols, r0, r1, out);
    case DType::BF16: return RowsToF32(static_cast<const hwy::bfloat16_t*>(w), cols, r0, r1, out);
    case DType::F16: return RowsToF32(static_cast<const hwy::float16_t*>(w), cols, r0, r1, out);
    default: return;
  }
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

void WeightedRowSum(const float* HWY_RESTRICT rows, int64_t ld, int64_t n, const float* HWY_RESTRICT p, int64_t len,
                    float* HWY_RESTRICT out) {
  const hn::ScalableTag<float> df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  int64_t i = 0;
  for (; i + 2 * N <= len; i += 2 * N) {
    auto a0 = hn::Zero(df), a1 = hn::Zero(df);
    for (int64_t j = 0; j < n; ++j) {
      const auto pj = hn::Set(df, p[j]);
      a0 = hn::MulAdd(pj, hn::LoadU(df, rows + j * ld + i), a0);
      a1 = hn::MulAdd(pj, hn::LoadU(df, rows + j * ld + i + N), a1);
    }
    hn::StoreU(a0, df, out + i);
    hn::StoreU(a1, df, out + i + N);
  }
  for (; i < len; ++i) {
    float a = 0;
    for (int64_t j = 0; j < n; ++j) a += p[j] * rows[j * ld + i];
    out[i] = a;
  }
}

void SiluMul(float* HWY_RESTRICT g, const float* HWY_RESTRICT u, int64_t len) {
  const hn::ScalableTag<float> df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const auto one = hn::Set(df, 1.0f);
  int64_t i = 0;
  for (; i + N <= len; i += N) {
    const auto v = hn::LoadU(df, g + i);
    const auto sig = hn::Div(v, hn::Add(one, hn::Exp(df, hn::Neg(v))));
    hn::StoreU(hn::Mul(sig, hn::LoadU(df, u + i)), df, g + i);
  }
  for (; i < len; ++i) {
    const float v = g[i];
    g[i] = v / (1.0f + hn::GetLane(hn::Exp(df, hn::Set(df, -v)))) * u[i];
  }
}

void SoftmaxScaled(float* HWY_RESTRICT row, int64_t len, float scale) {
  const hn::ScalableTag<float> df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const auto vs = hn::Set(df, scale);
  float mx = -INFINITY;
  int64_t i = 0;
  if (len >= N) {
    auto m = hn::Set(df, -INFINITY);
    for (; i + N <= len; i += N) m = hn::Max(m, hn::Mul(hn::LoadU(df, row + i), vs));
    mx = hn::GetLane(hn::MaxOfLanes(df, m));
  }
  for (; i < len; ++i) mx = std::max(mx, row[i] * scale);
  const auto vm = hn::Set(df, mx);
  auto sum = hn::Zero(df);
  float tail = 0;
  i = 0;
  for (; i + N <= len; i += N) {
    const auto e = hn::Exp(df, hn::Sub(hn::Mul(hn::LoadU(df, row + i), vs), vm));
    hn::StoreU(e, df, row + i);
    sum = hn::Add(sum, e);
  }
  for (; i < len; ++i) {
    const auto e = hn::Exp(df, hn::Set(df, row[i] * scale - mx));
    row[i] = hn::GetLane(e);
    tail += row[i];
  }
  const auto inv = hn::Set(df, 1.0f / (hn::GetLane(hn::SumOfLanes(df, sum)) + tail));
  i = 0;
  for (; i + N <= len; i += N) hn::StoreU(hn::Mul(hn::LoadU(df, row + i), inv), df, row + i);
  for (; i < len; ++i) row[i] *= hn::GetLane(inv);
}

}  // namespace lsb::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "base/error.h"

namespace lsb::kernels {
HWY_EXPORT(GemvDense);
HWY_EXPORT(GemmDense);
HWY_EXPORT(DenseRowsToF32);
HWY_EXPORT(TargetName);
HWY_EXPORT(SoftmaxScaled);
HWY_EXPORT(WeightedRowSum);
HWY_EXPORT(SiluMul);

static void require_dense(DType t) {
  if (!dtype_is_dense(t)) throw Error(fmt::format("dense kernel called on non-dense dtype {}", dtype_name(t)));
}

void gemv_dense(DType t, const void* w, int64_t cols, int64_t r0, int64_t r1, const float* x, float* y) {
  require_dense(t);
  HWY_DYNAMIC_DISPATCH(GemvDense)(t, w, cols, r0, r1, x, y);
}

void gemm_nt(DType t, const float* x, int64_t ldx, int64_t n, const void* w, int64_t ldw, int64_t r0, int64_t r1,
             int64_t k, float* y, int64_t ldy) {
  require_dense(t);
  HWY_DYNAMIC_DISPATCH(GemmDense)(t, x, ldx, n, w, ldw, r0, r1, k, y, ldy);
}

void rows_to_f32(DType t, const void* w, int64_t cols, int64_t r0, int64_t r1, float* out) {
  require_dense(t);
  HWY_DYNAMIC_DISPATCH(DenseRowsToF32)(t, w, cols, r0, r1, out);
}

const char* simd_target_name() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

void softmax_scaled(float* row, int64_t len, float scale) { HWY_DYNAMIC_DISPATCH(SoftmaxScaled)(row, len, scale); }

void silu_mul(float* g, const float* u, int64_t len) { HWY_DYNAMIC_DISPATCH(SiluMul)(g, u, len); }

void weighted_row_sum(const float* rows, int64_t ld, int64_t n, const float* p, int64_t len, float* out) {
  HWY_DYNAMIC_DISPATCH(WeightedRowSum)(rows, ld, n, p, len, out);
}

}  // namespace lsb::kernels
#endif
