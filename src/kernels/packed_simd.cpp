// Highway (run-time dispatched) kernels on packed LSB1 / PAPER / Q8 weights with float
// activations. The specification is kernels/reference.h; the math is in kernels/packed.h and
// docs/KERNELS.md.
#include <algorithm>
#include <cstddef>
#include <cstring>

#include "kernels/packed.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "packed_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace lsb::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Mask of the sign bits of columns [c, c + Lanes) of one row; c is a multiple of Lanes.
HWY_INLINE hn::Mask<DF> SignMask(DF d, const uint64_t* HWY_RESTRICT w, int64_t c) {
  const size_t N = hn::Lanes(d);
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  // kmovw k, m16: a load-port uop (LoadMaskBits goes through a GPR and kmov on port 5, which
  // is also where the masked adds want to run).
  if (N == 16) {
    // GCC turns _load_mask16 into movzx + kmovw k, r32; spell out the memory form.
    __mmask16 k;
    asm("kmovw %1, %0" : "=k"(k) : "m"(*(reinterpret_cast<const uint16_t*>(w) + (c >> 4))));
    return hn::Mask<DF>{k};
  }
#endif
  if (N >= 8) return hn::LoadMaskBits(d, reinterpret_cast<const uint8_t*>(w) + (c >> 3));
  // Fewer than 8 lanes: the bits do not start on a byte, so test them in a broadcast word.
  const hn::RebindToUnsigned<DF> du;
  static constexpr uint32_t kLaneBit[8] = {1, 2, 4, 8, 16, 32, 64, 128};
  const auto bits = hn::Set(du, static_cast<uint32_t>(w[c >> 6] >> (c & 63)));
  return hn::RebindMask(d, hn::TestBit(bits, hn::LoadU(du, kLaneBit)));
}

// acc + (m ? x : 0): a single merge-masked add on AVX-512.
HWY_INLINE VF AddIf(hn::Mask<DF> m, VF x, VF acc) {
#if HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL
  return VF{_mm512_mask_add_ps(acc.raw, m.raw, acc.raw, x.raw)};
#else
  return hn::Add(acc, hn::IfThenElseZero(m, x));
#endif
}

HWY_INLINE float Sum(DF d, VF v) { return hn::GetLane(hn::SumOfLanes(d, v)); }

HWY_INLINE bool Bit(const uint64_t* w, int64_t c) { return (w[c >> 6] >> (c & 63)) & 1u; }

// Per-group float coefficients of a block of 4 rows (converted at load, see SignMatrixView):
// s[i][g] = s_g of row i; z(i, g) = m - s, the coefficient of S_g in y. No conversion, no
// allocation per call.
struct GroupCoefs {
  const float* s[4];
  const float* z[4];  // m - s; nullptr when m = 0
  void set(const SignMatrixView& w, const int64_t* rows) {
    for (int i = 0; i < 4; ++i) {
      s[i] = w.fscale + rows[i] * w.ngroups;
      z[i] = w.fzero ? w.fzero + rows[i] * w.ngroups : nullptr;
    }
  }
  float zc(int i, int64_t g) const { return z[i] ? z[i][g] : -s[i][g]; }
  // sum_g z(i, g) S_g
  float zdot(int i, const float* HWY_RESTRICT gsum, int64_t G) const {
    float u = 0;
    for (int64_t g = 0; g < G; ++g) u += zc(i, g) * gsum[g];
    return u;
  }
};

template <typename Col>
HWY_INLINE float OutlierDot(const Col* HWY_RESTRICT col, const float* HWY_RESTRICT corr, uint64_t b, uint64_t e,
                            const float* HWY_RESTRICT x) {
  float s = 0;
  for (uint64_t k = b; k < e; ++k) s += corr[k] * x[col[k]];
  return s;
}

HWY_INLINE float Outliers(const SignMatrixView& w, int64_t r, const float* x) {
  const uint64_t b = w.out_start[r], e = w.out_start[r + 1];
  if (b == e) return 0.0f;
  return w.out_col16 ? OutlierDot(w.out_col16, w.out_corr, b, e, x) : OutlierDot(w.out_col32, w.out_corr, b, e, x);
}

// acc + corr * x[col] over row r's outliers, lane-wise (the caller's horizontal sum adds them):
// one gather of x per N outliers instead of a serial chain of scalar products. Lanes past the
// row read the next row's (or the padding's) entries, whose columns are valid; they are zeroed.
HWY_INLINE VF OutlierVec(DF df, const SignMatrixView& w, int64_t r, const float* HWY_RESTRICT x, VF acc) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int64_t b = static_cast<int64_t>(w.out_start[r]), e = static_cast<int64_t>(w.out_start[r + 1]);
  const hn::RebindToSigned<DF> di;
  for (int64_t k = b; k < e; k += N) {
    const auto live = hn::FirstN(df, static_cast<size_t>(e - k));
    hn::Vec<decltype(di)> idx;
    if (w.out_col16) {
      const hn::Rebind<uint16_t, DF> d16;
      idx = hn::PromoteTo(di, hn::LoadU(d16, w.out_col16 + k));
    } else {
      const hn::RebindToUnsigned<DF> du;
      idx = hn::BitCast(di, hn::LoadU(du, w.out_col32 + k));
    }
    const VF xv = hn::IfThenElseZero(live, hn::GatherIndex(df, x, idx));
    acc = hn::MulAdd(hn::IfThenElseZero(live, hn::LoadU(df, w.out_corr + k)), xv, acc);
  }
  return acc;
}

// Vector body of group [a, b): columns [va, vb) are multiples of N; the rest is scalar.
HWY_INLINE void VectorSpan(int64_t a, int64_t b, int64_t N, int64_t& va, int64_t& vb) {
  va = std::min(b, (a + N - 1) / N * N);
  vb = va + (b - va) / N * N;
}

// P for four rows over columns [c0, c1) (multiples of N): sums of x where each row's bit is 1,
// two vectors per step into separate accumulators (eight independent add chains hide the add
// latency; four chains alone are latency-bound).
HWY_INLINE void MaskedSums4(DF df, const uint64_t* w0, const uint64_t* w1, const uint64_t* w2, const uint64_t* w3,
                            const float* HWY_RESTRICT x, int64_t c0, int64_t c1, VF& a0, VF& a1, VF& a2, VF& a3) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
  VF b0 = hn::Zero(df), b1 = hn::Zero(df), b2 = hn::Zero(df), b3 = hn::Zero(df);
  int64_t c = c0;
  for (; c + 2 * N <= c1; c += 2 * N) {
    const VF xv = hn::LoadU(df, x + c), xw = hn::LoadU(df, x + c + N);
    a0 = AddIf(SignMask(df, w0, c), xv, a0);
    a1 = AddIf(SignMask(df, w1, c), xv, a1);
    a2 = AddIf(SignMask(df, w2, c), xv, a2);
    a3 = AddIf(SignMask(df, w3, c), xv, a3);
    b0 = AddIf(SignMask(df, w0, c + N), xw, b0);
    b1 = AddIf(SignMask(df, w1, c + N), xw, b1);
    b2 = AddIf(SignMask(df, w2, c + N), xw, b2);
    b3 = AddIf(SignMask(df, w3, c + N), xw, b3);
  }
  if (c < c1) {
    const VF xv = hn::LoadU(df, x + c);
    a0 = AddIf(SignMask(df, w0, c), xv, a0);
    a1 = AddIf(SignMask(df, w1, c), xv, a1);
    a2 = AddIf(SignMask(df, w2, c), xv, a2);
    a3 = AddIf(SignMask(df, w3, c), xv, a3);
  }
  a0 = hn::Add(a0, b0);
  a1 = hn::Add(a1, b1);
  a2 = hn::Add(a2, b2);
  a3 = hn::Add(a3, b3);
}

// One token, four rows, any group layout (groups may start mid-vector: scalar head/tail
// columns). rows[] may repeat the last valid row; the caller drops those results.
void Gemv4(const SignMatrixView& w, const int64_t* rows, const float* HWY_RESTRICT x, const float* HWY_RESTRICT gsum,
           const GroupCoefs& gc, float out[4]) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const uint64_t* w0 = w.signs + rows[0] * w.words;
  const uint64_t* w1 = w.signs + rows[1] * w.words;
  const uint64_t* w2 = w.signs + rows[2] * w.words;
  const uint64_t* w3 = w.signs + rows[3] * w.words;
  const int64_t G = w.ngroups;
  const float *s0 = gc.s[0], *s1 = gc.s[1], *s2 = gc.s[2], *s3 = gc.s[3];
  VF y0 = hn::Zero(df), y1 = hn::Zero(df), y2 = hn::Zero(df), y3 = hn::Zero(df);
  float t0 = 0, t1 = 0, t2 = 0, t3 = 0;  // scalar parts, scaled
  for (int64_t g = 0; g < G; ++g) {
    const int64_t a = g * w.group, b = std::min(w.cols, a + w.group);
    int64_t va, vb;
    VectorSpan(a, b, N, va, vb);
    VF a0, a1, a2, a3;
    MaskedSums4(df, w0, w1, w2, w3, x, va, vb, a0, a1, a2, a3);
    float p0 = 0, p1 = 0, p2 = 0, p3 = 0;
    auto scalar = [&](int64_t c) {
      const float xc = x[c];
      p0 += Bit(w0, c) ? xc : 0.0f;
      p1 += Bit(w1, c) ? xc : 0.0f;
      p2 += Bit(w2, c) ? xc : 0.0f;
      p3 += Bit(w3, c) ? xc : 0.0f;
    };
    for (int64_t c = a; c < va; ++c) scalar(c);
    for (int64_t c = vb; c < b; ++c) scalar(c);
    y0 = hn::MulAdd(hn::Set(df, s0[g]), a0, y0);
    y1 = hn::MulAdd(hn::Set(df, s1[g]), a1, y1);
    y2 = hn::MulAdd(hn::Set(df, s2[g]), a2, y2);
    y3 = hn::MulAdd(hn::Set(df, s3[g]), a3, y3);
    t0 += s0[g] * p0;
    t1 += s1[g] * p1;
    t2 += s2[g] * p2;
    t3 += s3[g] * p3;
  }
  constexpr float k = 2.0f;
  out[0] = k * (Sum(df, y0) + t0) + gc.zdot(0, gsum, G) + Outliers(w, rows[0], x);
  out[1] = k * (Sum(df, y1) + t1) + gc.zdot(1, gsum, G) + Outliers(w, rows[1], x);
  out[2] = k * (Sum(df, y2) + t2) + gc.zdot(2, gsum, G) + Outliers(w, rows[2], x);
  out[3] = k * (Sum(df, y3) + t3) + gc.zdot(3, gsum, G) + Outliers(w, rows[3], x);
}

// One token, four rows, for groups that start on a vector boundary (group % N == 0, or one
// group): only vector steps, except a scalar tail when cols % N != 0 (last group only). The
// outlier corrections are gathered into the row's vector accumulator, so each row needs a
// single horizontal sum.
void Gemv4Aligned(const SignMatrixView& w, const int64_t* rows, const float* HWY_RESTRICT x,
                  const float* HWY_RESTRICT gsum, const GroupCoefs& gc, float out[4]) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const uint64_t* w0 = w.signs + rows[0] * w.words;
  const uint64_t* w1 = w.signs + rows[1] * w.words;
  const uint64_t* w2 = w.signs + rows[2] * w.words;
  const uint64_t* w3 = w.signs + rows[3] * w.words;
  const int64_t G = w.ngroups, C = w.cols;
  const float *s0 = gc.s[0], *s1 = gc.s[1], *s2 = gc.s[2], *s3 = gc.s[3];
  VF y0 = hn::Zero(df), y1 = hn::Zero(df), y2 = hn::Zero(df), y3 = hn::Zero(df);
  float t0 = 0, t1 = 0, t2 = 0, t3 = 0;  // scalar tail, scaled
  for (int64_t g = 0, a = 0; g < G; ++g, a += w.group) {
    const int64_t b = std::min(C, a + w.group);
    const int64_t vb = a + (b - a) / N * N;
    VF a0, a1, a2, a3;
    MaskedSums4(df, w0, w1, w2, w3, x, a, vb, a0, a1, a2, a3);
    y0 = hn::MulAdd(hn::Set(df, s0[g]), a0, y0);
    y1 = hn::MulAdd(hn::Set(df, s1[g]), a1, y1);
    y2 = hn::MulAdd(hn::Set(df, s2[g]), a2, y2);
    y3 = hn::MulAdd(hn::Set(df, s3[g]), a3, y3);
    if (HWY_UNLIKELY(vb < b)) {  // only the last group, only when cols % N != 0
      float p0 = 0, p1 = 0, p2 = 0, p3 = 0;
      for (int64_t cc = vb; cc < b; ++cc) {
        const float xc = x[cc];
        p0 += Bit(w0, cc) ? xc : 0.0f;
        p1 += Bit(w1, cc) ? xc : 0.0f;
        p2 += Bit(w2, cc) ? xc : 0.0f;
        p3 += Bit(w3, cc) ? xc : 0.0f;
      }
      t0 += s0[g] * p0;
      t1 += s1[g] * p1;
      t2 += s2[g] * p2;
      t3 += s3[g] * p3;
    }
  }
  constexpr float k = 2.0f;
  const VF kv = hn::Set(df, k);
  out[0] = Sum(df, OutlierVec(df, w, rows[0], x, hn::Mul(kv, y0))) + k * t0 + gc.zdot(0, gsum, G);
  out[1] = Sum(df, OutlierVec(df, w, rows[1], x, hn::Mul(kv, y1))) + k * t1 + gc.zdot(1, gsum, G);
  out[2] = Sum(df, OutlierVec(df, w, rows[2], x, hn::Mul(kv, y2))) + k * t2 + gc.zdot(2, gsum, G);
  out[3] = Sum(df, OutlierVec(df, w, rows[3], x, hn::Mul(kv, y3))) + k * t3 + gc.zdot(3, gsum, G);
}

// Four tokens x four rows: each sign mask is decoded once and used for four tokens. Per-group
// sums are folded into ybuf (scaled by s_g) so only 16 accumulators stay in registers.
void Tile4x4(const SignMatrixView& w, const int64_t* rows, const float* const* xs, const float* const* gs,
             const GroupCoefs& gc, float out[4][4]) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const uint64_t* w0 = w.signs + rows[0] * w.words;
  const uint64_t* w1 = w.signs + rows[1] * w.words;
  const uint64_t* w2 = w.signs + rows[2] * w.words;
  const uint64_t* w3 = w.signs + rows[3] * w.words;
  const float *x0 = xs[0], *x1 = xs[1], *x2 = xs[2], *x3 = xs[3];
  const int64_t G = w.ngroups;
  HWY_ALIGN float ybuf[16 * hn::MaxLanes(df)];
  for (int i = 0; i < 16; ++i) hn::Store(hn::Zero(df), df, ybuf + i * N);
  float ts[4][4] = {}, us[4][4] = {};  // [token][row]
  for (int64_t g = 0; g < G; ++g) {
    const int64_t a = g * w.group, b = std::min(w.cols, a + w.group);
    int64_t va, vb;
    VectorSpan(a, b, N, va, vb);
    // a<token><row>
    VF a00 = hn::Zero(df), a01 = hn::Zero(df), a02 = hn::Zero(df), a03 = hn::Zero(df);
    VF a10 = hn::Zero(df), a11 = hn::Zero(df), a12 = hn::Zero(df), a13 = hn::Zero(df);
    VF a20 = hn::Zero(df), a21 = hn::Zero(df), a22 = hn::Zero(df), a23 = hn::Zero(df);
    VF a30 = hn::Zero(df), a31 = hn::Zero(df), a32 = hn::Zero(df), a33 = hn::Zero(df);
    for (int64_t c = va; c < vb; c += N) {
      const auto m0 = SignMask(df, w0, c), m1 = SignMask(df, w1, c);
      const auto m2 = SignMask(df, w2, c), m3 = SignMask(df, w3, c);
      VF x = hn::LoadU(df, x0 + c);
      a00 = AddIf(m0, x, a00); a01 = AddIf(m1, x, a01); a02 = AddIf(m2, x, a02); a03 = AddIf(m3, x, a03);
      x = hn::LoadU(df, x1 + c);
      a10 = AddIf(m0, x, a10); a11 = AddIf(m1, x, a11); a12 = AddIf(m2, x, a12); a13 = AddIf(m3, x, a13);
      x = hn::LoadU(df, x2 + c);
      a20 = AddIf(m0, x, a20); a21 = AddIf(m1, x, a21); a22 = AddIf(m2, x, a22); a23 = AddIf(m3, x, a23);
      x = hn::LoadU(df, x3 + c);
      a30 = AddIf(m0, x, a30); a31 = AddIf(m1, x, a31); a32 = AddIf(m2, x, a32); a33 = AddIf(m3, x, a33);
    }
    const float s[4] = {gc.s[0][g], gc.s[1][g], gc.s[2][g], gc.s[3][g]};
    const float z[4] = {gc.zc(0, g), gc.zc(1, g), gc.zc(2, g), gc.zc(3, g)};
#define LSB_FOLD(t, r, acc)                                                          \
  hn::Store(hn::MulAdd(hn::Set(df, s[r]), acc, hn::Load(df, ybuf + (4 * t + r) * N)), df, \
            ybuf + (4 * t + r) * N)
    LSB_FOLD(0, 0, a00); LSB_FOLD(0, 1, a01); LSB_FOLD(0, 2, a02); LSB_FOLD(0, 3, a03);
    LSB_FOLD(1, 0, a10); LSB_FOLD(1, 1, a11); LSB_FOLD(1, 2, a12); LSB_FOLD(1, 3, a13);
    LSB_FOLD(2, 0, a20); LSB_FOLD(2, 1, a21); LSB_FOLD(2, 2, a22); LSB_FOLD(2, 3, a23);
    LSB_FOLD(3, 0, a30); LSB_FOLD(3, 1, a31); LSB_FOLD(3, 2, a32); LSB_FOLD(3, 3, a33);
#undef LSB_FOLD
    const uint64_t* ws[4] = {w0, w1, w2, w3};
    for (int t = 0; t < 4; ++t) {
      const float S = gs[t][g];
      for (int r = 0; r < 4; ++r) {
        float p = 0;
        for (int64_t c = a; c < va; ++c) p += Bit(ws[r], c) ? xs[t][c] : 0.0f;
        for (int64_t c = vb; c < b; ++c) p += Bit(ws[r], c) ? xs[t][c] : 0.0f;
        ts[t][r] += s[r] * p;
        us[t][r] += z[r] * S;
      }
    }
  }
  for (int t = 0; t < 4; ++t)
    for (int r = 0; r < 4; ++r)
      out[t][r] = 2.0f * (Sum(df, hn::Load(df, ybuf + (4 * t + r) * N)) + ts[t][r]) + us[t][r] +
                  Outliers(w, rows[r], xs[t]);
}

void SignGemm(const SignMatrixView& w, const float* x, int64_t n, const float* gsum, int64_t r0, int64_t r1,
              float* y, int64_t ldy) {
  GroupCoefs gc;
  const int64_t N = static_cast<int64_t>(hn::Lanes(DF()));
  // Groups on vector boundaries; lanes past a row's outliers stay inside the padded arrays.
  const bool aligned = (w.ngroups == 1 || w.group % N == 0) && N <= kOutlierPad;
  for (int64_t r = r0; r < r1; r += 4) {
    const int64_t nr = std::min<int64_t>(4, r1 - r);
    int64_t rows[4];
    for (int i = 0; i < 4; ++i) rows[i] = r + (i < nr ? i : 0);
    gc.set(w, rows);
    for (int64_t t = 0; t < n; t += 4) {
      const int64_t nt = std::min<int64_t>(4, n - t);
      const float* xs[4];
      const float* gs[4];
      for (int i = 0; i < 4; ++i) {
        const int64_t ti = t + (i < nt ? i : 0);
        xs[i] = x + ti * w.cols;
        gs[i] = gsum + ti * w.ngroups;
      }
      float out[4][4];
      if (nt == 1) {
        if (aligned) Gemv4Aligned(w, rows, xs[0], gs[0], gc, out[0]);
        else Gemv4(w, rows, xs[0], gs[0], gc, out[0]);
      } else {
        Tile4x4(w, rows, xs, gs, gc, out);
      }
      for (int64_t i = 0; i < nt; ++i)
        for (int64_t j = 0; j < nr; ++j) y[(t + i) * ldy + r + j] = out[i][j];
    }
  }
}

// ---------------------------------------------------------------- Q8
HWY_INLINE VF LoadQ8(DF df, const int8_t* HWY_RESTRICT p) {
  const hn::Rebind<int8_t, DF> d8;
  const hn::Rebind<int32_t, DF> di;
  return hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(d8, p)));
}

void Q8Gemv4(const quant::Q8View& w, const int64_t* rows, const float* HWY_RESTRICT x, float out[4]) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int64_t C = w.cols, vec_end = C - C % N;
  const int8_t *q0 = w.q + rows[0] * C, *q1 = w.q + rows[1] * C, *q2 = w.q + rows[2] * C, *q3 = w.q + rows[3] * C;
  VF a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
  for (int64_t c = 0; c < vec_end; c += N) {
    const VF xv = hn::LoadU(df, x + c);
    a0 = hn::MulAdd(LoadQ8(df, q0 + c), xv, a0);
    a1 = hn::MulAdd(LoadQ8(df, q1 + c), xv, a1);
    a2 = hn::MulAdd(LoadQ8(df, q2 + c), xv, a2);
    a3 = hn::MulAdd(LoadQ8(df, q3 + c), xv, a3);
  }
  float s0 = Sum(df, a0), s1 = Sum(df, a1), s2 = Sum(df, a2), s3 = Sum(df, a3);
  for (int64_t c = vec_end; c < C; ++c) {
    s0 += static_cast<float>(q0[c]) * x[c];
    s1 += static_cast<float>(q1[c]) * x[c];
    s2 += static_cast<float>(q2[c]) * x[c];
    s3 += static_cast<float>(q3[c]) * x[c];
  }
  out[0] = s0 * w.scales[rows[0]];
  out[1] = s1 * w.scales[rows[1]];
  out[2] = s2 * w.scales[rows[2]];
  out[3] = s3 * w.scales[rows[3]];
}

// Four rows converted once, used for four tokens.
void Q8Tile4x4(const quant::Q8View& w, const int64_t* rows, const float* const* xs, float out[4][4]) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int64_t C = w.cols, vec_end = C - C % N;
  const int8_t* qs[4] = {w.q + rows[0] * C, w.q + rows[1] * C, w.q + rows[2] * C, w.q + rows[3] * C};
  VF a00 = hn::Zero(df), a01 = hn::Zero(df), a02 = hn::Zero(df), a03 = hn::Zero(df);
  VF a10 = hn::Zero(df), a11 = hn::Zero(df), a12 = hn::Zero(df), a13 = hn::Zero(df);
  VF a20 = hn::Zero(df), a21 = hn::Zero(df), a22 = hn::Zero(df), a23 = hn::Zero(df);
  VF a30 = hn::Zero(df), a31 = hn::Zero(df), a32 = hn::Zero(df), a33 = hn::Zero(df);
  for (int64_t c = 0; c < vec_end; c += N) {
    const VF q0 = LoadQ8(df, qs[0] + c), q1 = LoadQ8(df, qs[1] + c);
    const VF q2 = LoadQ8(df, qs[2] + c), q3 = LoadQ8(df, qs[3] + c);
    VF x = hn::LoadU(df, xs[0] + c);
    a00 = hn::MulAdd(q0, x, a00); a01 = hn::MulAdd(q1, x, a01); a02 = hn::MulAdd(q2, x, a02); a03 = hn::MulAdd(q3, x, a03);
    x = hn::LoadU(df, xs[1] + c);
    a10 = hn::MulAdd(q0, x, a10); a11 = hn::MulAdd(q1, x, a11); a12 = hn::MulAdd(q2, x, a12); a13 = hn::MulAdd(q3, x, a13);
    x = hn::LoadU(df, xs[2] + c);
    a20 = hn::MulAdd(q0, x, a20); a21 = hn::MulAdd(q1, x, a21); a22 = hn::MulAdd(q2, x, a22); a23 = hn::MulAdd(q3, x, a23);
    x = hn::LoadU(df, xs[3] + c);
    a30 = hn::MulAdd(q0, x, a30); a31 = hn::MulAdd(q1, x, a31); a32 = hn::MulAdd(q2, x, a32); a33 = hn::MulAdd(q3, x, a33);
  }
  out[0][0] = Sum(df, a00); out[0][1] = Sum(df, a01); out[0][2] = Sum(df, a02); out[0][3] = Sum(df, a03);
  out[1][0] = Sum(df, a10); out[1][1] = Sum(df, a11); out[1][2] = Sum(df, a12); out[1][3] = Sum(df, a13);
  out[2][0] = Sum(df, a20); out[2][1] = Sum(df, a21); out[2][2] = Sum(df, a22); out[2][3] = Sum(df, a23);
  out[3][0] = Sum(df, a30); out[3][1] = Sum(df, a31); out[3][2] = Sum(df, a32); out[3][3] = Sum(df, a33);
  for (int t = 0; t < 4; ++t)
    for (int r = 0; r < 4; ++r) {
      for (int64_t c = vec_end; c < C; ++c) out[t][r] += static_cast<float>(qs[r][c]) * xs[t][c];
      out[t][r] *= w.scales[rows[r]];
    }
}

void Q8Gemm(const quant::Q8View& w, const float* x, int64_t n, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  for (int64_t r = r0; r < r1; r += 4) {
    const int64_t nr = std::min<int64_t>(4, r1 - r);
    int64_t rows[4];
    for (int i = 0; i < 4; ++i) rows[i] = r + (i < nr ? i : 0);
    for (int64_t t = 0; t < n; t += 4) {
      const int64_t nt = std::min<int64_t>(4, n - t);
      float out[4][4];
      if (nt == 1) {
        Q8Gemv4(w, rows, x + t * w.cols, out[0]);
      } else {
        const float* xs[4];
        for (int i = 0; i < 4; ++i) xs[i] = x + (t + (i < nt ? i : 0)) * w.cols;
        Q8Tile4x4(w, rows, xs, out);
      }
      for (int64_t i = 0; i < nt; ++i)
        for (int64_t j = 0; j < nr; ++j) y[(t + i) * ldy + r + j] = out[i][j];
    }
  }
}

const char* PackedTargetName() { return hwy::TargetName(HWY_TARGET); }
bool PackedTargetIsAvx512() { return HWY_TARGET <= HWY_AVX3; }  // lower values are the wider targets

}  // namespace lsb::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace lsb::kernels {
HWY_EXPORT(SignGemm);
HWY_EXPORT(Q8Gemm);
HWY_EXPORT(PackedTargetName);
HWY_EXPORT(PackedTargetIsAvx512);

void sign_gemm(const SignMatrixView& w, const float* x, int64_t n, const float* gsum, int64_t r0, int64_t r1,
               float* y, int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(SignGemm)(w, x, n, gsum, r0, r1, y, ldy);
}

void q8_gemm(const quant::Q8View& w, const float* x, int64_t n, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(Q8Gemm)(w, x, n, r0, r1, y, ldy);
}

const char* packed_target_name() { return HWY_DYNAMIC_DISPATCH(PackedTargetName)(); }
bool packed_target_is_avx512() { return HWY_DYNAMIC_DISPATCH(PackedTargetIsAvx512)(); }

void group_sums(const float* x, int64_t n, int64_t cols, int64_t group, int64_t ngroups, float* gsum) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t g = 0; g < ngroups; ++g) {
      const int64_t a = g * group, b = std::min(cols, a + group);
      // Four independent double chains (one chain is add-latency bound); still exact enough.
      const float* xt = x + t * cols;
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t c = a;
      for (; c + 4 <= b; c += 4) {
        s0 += xt[c];
        s1 += xt[c + 1];
        s2 += xt[c + 2];
        s3 += xt[c + 3];
      }
      for (; c < b; ++c) s0 += xt[c];
      gsum[t * ngroups + g] = static_cast<float>((s0 + s1) + (s2 + s3));
    }
}

}  // namespace lsb::kernels
#endif
