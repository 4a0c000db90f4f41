// Highway (run-time dispatched) kernels for codes whose weights are a group scale times a table
// entry: NU (scalar levels from bit planes) and VQ4 (4-vectors from a codebook). The
// specification is kernels/reference.h; the designs are in kernels/packed.h and
// docs/KERNELS.md.
//
// Prompts (n >= 2): a panel of P = 2 vectors of rows is decoded once into exact float weights
// (what dequantize_row gives), transposed so that a k step is two vector loads, and multiplied
// with a block of tokens by broadcast FMAs (no horizontal sums); the panel stays in L1/L2 while
// the tokens stream.
// Single tokens, VQ4: per vector of weights, the codebook entries of its indices are loaded side
// by side (4 floats each) and multiplied with x; NU: index vectors from the bit planes and a
// register permute of the levels.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#include "kernels/packed.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "table_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

// Full unrolling of the loops over a tile's tokens, so that the accumulator arrays live in
// registers.
#if defined(__clang__)
#define LSB_UNROLL _Pragma("unroll")
#else
#define LSB_UNROLL _Pragma("GCC unroll 16")
#endif

HWY_BEFORE_NAMESPACE();
namespace lsb::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;
#if HWY_TARGET != HWY_SCALAR
using D4 = hn::FixedTag<float, 4>;
#endif

HWY_INLINE float Sum(DF d, VF v) { return hn::GetLane(hn::SumOfLanes(d, v)); }
HWY_INLINE bool Bit(const uint64_t* w, int64_t c) { return (w[c >> 6] >> (c & 63)) & 1u; }

// Mask of bits [c, c + N) of a bit plane (c a multiple of N).
HWY_INLINE hn::Mask<DF> PlaneMask(DF d, const uint64_t* HWY_RESTRICT w, int64_t c) {
  const size_t N = hn::Lanes(d);
  if (N >= 8) return hn::LoadMaskBits(d, reinterpret_cast<const uint8_t*>(w) + (c >> 3));
  const hn::RebindToUnsigned<DF> du;
  static constexpr uint32_t kLaneBit[8] = {1, 2, 4, 8, 16, 32, 64, 128};
  const auto bits = hn::Set(du, static_cast<uint32_t>(w[c >> 6] >> (c & 63)));
  return hn::RebindMask(d, hn::TestBit(bits, hn::LoadU(du, kLaneBit)));
}

// Scratch that lives as long as the thread (no allocation per call once grown).
template <typename T>
HWY_INLINE T* Scratch(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// ---------------------------------------------------------------- row decoding (exact floats)

// Index of the vector at columns 4j..4j+3 of a VQ4 row.
HWY_INLINE uint32_t Vq4Index(const uint64_t* row, int bits, int64_t j) {
  const int64_t at = j * bits, word = at >> 6, shift = at & 63;
  uint64_t v = row[word] >> shift;
  if (shift + bits > 64) v |= row[word + 1] << (64 - shift);
  return static_cast<uint32_t>(v & ((uint64_t{1} << bits) - 1));
}

// out[c] = s_g * codebook[index][c % 4] for the whole row: one 4-vector per index.
void Vq4DecodeRow(const Vq4MatrixView& w, int64_t r, float* HWY_RESTRICT out) {
  const uint64_t* row = w.codes + r * w.row_words;
  const float* sc = w.scales + r * w.ngroups;
  const int64_t J = w.cols / 4;
  const uint8_t* bytes = reinterpret_cast<const uint8_t*>(row);
  for (int64_t g = 0; g < w.ngroups; ++g) {
    const int64_t j0 = g * w.group / 4, j1 = std::min(J, j0 + w.group / 4);
#if HWY_TARGET == HWY_SCALAR
    for (int64_t j = j0; j < j1; ++j) {
      const float* e = w.codebook + 4 * (w.bits == 8 ? bytes[j] : Vq4Index(row, w.bits, j));
      for (int64_t i = 0; i < 4; ++i) out[4 * j + i] = sc[g] * e[i];
    }
#else
    const D4 d4;
    const auto s = hn::Set(d4, sc[g]);
    if (w.bits == 8) {
      for (int64_t j = j0; j < j1; ++j) hn::StoreU(hn::Mul(s, hn::LoadU(d4, w.codebook + 4 * bytes[j])), d4, out + 4 * j);
    } else {
      for (int64_t j = j0; j < j1; ++j)
        hn::StoreU(hn::Mul(s, hn::LoadU(d4, w.codebook + 4 * Vq4Index(row, w.bits, j))), d4, out + 4 * j);
    }
#endif
  }
}

// Index vector of columns [c, c + N) of a NU row from its bit planes.
HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> NuIndex(DF df, const uint64_t* planes, int64_t words, int bits, int64_t c) {
  const hn::RebindToSigned<DF> di;
  auto idx = hn::Zero(di);
  for (int b = 0; b < bits; ++b)
    idx = hn::Add(idx, hn::IfThenElseZero(hn::RebindMask(di, PlaneMask(df, planes + b * words, c)), hn::Set(di, 1 << b)));
  return idx;
}

HWY_INLINE int NuScalarIndex(const uint64_t* planes, int64_t words, int bits, int64_t c) {
  int k = 0;
  for (int b = 0; b < bits; ++b) k |= static_cast<int>(Bit(planes + b * words, c)) << b;
  return k;
}

// Table entries for an index vector: a permute within one register when the table fits in it,
// else a gather from memory.
HWY_INLINE VF Entries(DF df, const float* table, int entries, const VF& table_reg, hn::Vec<hn::RebindToSigned<DF>> idx) {
  if (entries <= static_cast<int>(hn::Lanes(df))) return hn::TableLookupLanes(table_reg, hn::IndicesFromVec(df, idx));
  return hn::GatherIndex(df, table, idx);
}

// The levels in a register (padded with zeros to the vector width).
HWY_INLINE VF LevelsReg(DF df, const NuMatrixView& w) {
  HWY_ALIGN float padded[hn::MaxLanes(DF()) > 16 ? hn::MaxLanes(DF()) : 16] = {};
  const int L = 1 << w.bits;
  for (int k = 0; k < L && k < static_cast<int>(hn::Lanes(df)); ++k) padded[k] = w.levels[k];
  return hn::Load(df, padded);
}

void NuDecodeRow(const NuMatrixView& w, const VF& table, int64_t r, float* HWY_RESTRICT out) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int L = 1 << w.bits;
  const uint64_t* planes = w.planes + r * w.bits * w.words;
  const float* sc = w.scales + r * w.ngroups;
  for (int64_t g = 0; g < w.ngroups; ++g) {
    const int64_t a = g * w.group, b = std::min(w.cols, a + w.group);
    const int64_t vb = a % N == 0 ? a + (b - a) / N * N : a;
    const VF s = hn::Set(df, sc[g]);
    for (int64_t c = a; c < vb; c += N)
      hn::StoreU(hn::Mul(s, Entries(df, w.levels, L, table, NuIndex(df, planes, w.words, w.bits, c))), df, out + c);
    for (int64_t c = vb; c < b; ++c) out[c] = sc[g] * w.levels[NuScalarIndex(planes, w.words, w.bits, c)];
  }
}

// ---------------------------------------------------------------- prompts: decoded panels

// Rows of a panel: two vectors (so each broadcast of x feeds two FMAs); tokens per micro tile:
// accumulators 2 * kT plus two weight vectors and a broadcast within the register file.
constexpr int64_t kPanelVecs = 2;
constexpr int kTokTile = HWY_MAX_BYTES >= 64 ? 8 : 6;
constexpr int64_t kPromptTokenBlock = 128;  // tokens per pass over a panel (x block in L2)
// Fewer tokens than this use the single-token kernels (a panel's decoding would cost more).
constexpr int64_t kNuPanelMinTokens = 2;
constexpr int64_t kVq4PanelMinTokens = 2;

// y[t * ldy + i] += ... for i < np: T tokens x P rows, Wt[k * P + i] the transposed panel.
template <int T>
HWY_INLINE void PanelTile(const float* HWY_RESTRICT wt, int64_t K, const float* HWY_RESTRICT x, int64_t ldx,
                          float* HWY_RESTRICT y, int64_t ldy, int64_t np) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int64_t P = kPanelVecs * N;
  VF a0[T], a1[T];
  LSB_UNROLL
  for (int t = 0; t < T; ++t) a0[t] = hn::Zero(df), a1[t] = hn::Zero(df);
  for (int64_t k = 0; k < K; ++k) {
    const VF w0 = hn::LoadU(df, wt + k * P), w1 = hn::LoadU(df, wt + k * P + N);
    LSB_UNROLL
    for (int t = 0; t < T; ++t) {
      const VF xb = hn::Set(df, x[t * ldx + k]);
      a0[t] = hn::MulAdd(xb, w0, a0[t]);
      a1[t] = hn::MulAdd(xb, w1, a1[t]);
    }
  }
  if (np == P) {
    LSB_UNROLL
    for (int t = 0; t < T; ++t) {
      hn::StoreU(a0[t], df, y + t * ldy);
      hn::StoreU(a1[t], df, y + t * ldy + N);
    }
  } else {
    HWY_ALIGN float tmp[kPanelVecs * hn::MaxLanes(DF())];
    for (int t = 0; t < T; ++t) {
      hn::Store(a0[t], df, tmp);
      hn::Store(a1[t], df, tmp + N);
      std::memcpy(y + t * ldy, tmp, static_cast<size_t>(np) * sizeof(float));
    }
  }
}

template <int T>
void PanelTokens(const float* wt, int64_t K, const float* x, int64_t t0, int64_t t1, float* y, int64_t ldy,
                 int64_t np) {
  int64_t t = t0;
  for (; t + T <= t1; t += T) PanelTile<T>(wt, K, x + t * K, K, y + t * ldy, ldy, np);
  if (t < t1) {
    if constexpr (T > 1) PanelTokens<T - 1>(wt, K, x, t, t1, y, ldy, np);
  }
}

// 4 decoded rows (rows[i * K + k]) into panel columns i0..i0+3: Wt[k * P + i0 + i].
void Transpose4(const float* HWY_RESTRICT rows, int64_t K, float* HWY_RESTRICT wt, int64_t P, int64_t i0) {
  int64_t k = 0;
#if HWY_TARGET != HWY_SCALAR
  const D4 d4;
  for (; k + 4 <= K; k += 4) {
    const auto r0 = hn::LoadU(d4, rows + k), r1 = hn::LoadU(d4, rows + K + k);
    const auto r2 = hn::LoadU(d4, rows + 2 * K + k), r3 = hn::LoadU(d4, rows + 3 * K + k);
    const auto t0 = hn::InterleaveLower(d4, r0, r1), t1 = hn::InterleaveLower(d4, r2, r3);  // k, k+1
    const auto t2 = hn::InterleaveUpper(d4, r0, r1), t3 = hn::InterleaveUpper(d4, r2, r3);  // k+2, k+3
    hn::StoreU(hn::ConcatLowerLower(d4, t1, t0), d4, wt + k * P + i0);
    hn::StoreU(hn::ConcatUpperUpper(d4, t1, t0), d4, wt + (k + 1) * P + i0);
    hn::StoreU(hn::ConcatLowerLower(d4, t3, t2), d4, wt + (k + 2) * P + i0);
    hn::StoreU(hn::ConcatUpperUpper(d4, t3, t2), d4, wt + (k + 3) * P + i0);
  }
#endif
  for (; k < K; ++k)
    for (int64_t i = 0; i < 4; ++i) wt[k * P + i0 + i] = rows[i * K + k];
}

// y[t * ldy + r] = dot(x[t * K : +K], W[r, :]) for all n tokens and rows [r0, r1), decoding each
// panel of rows once per token block. decode(r, out) writes row r's K exact weights.
template <class Decode>
void PanelGemm(int64_t K, const float* x, int64_t n, int64_t r0, int64_t r1, float* y, int64_t ldy,
               const Decode& decode) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int64_t P = kPanelVecs * N;
  static thread_local std::vector<float> wt_store, rows_store;
  float* wt = Scratch(wt_store, static_cast<size_t>(P * K));
  float* rows = Scratch(rows_store, static_cast<size_t>(4 * K));
  for (int64_t tb = 0; tb < n; tb += kPromptTokenBlock) {
    const int64_t te = std::min(n, tb + kPromptTokenBlock);
    for (int64_t p = r0; p < r1; p += P) {
      const int64_t np = std::min(P, r1 - p);
      for (int64_t i0 = 0; i0 < P; i0 += 4) {
        for (int64_t i = 0; i < 4; ++i) {
          if (i0 + i < np) decode(p + i0 + i, rows + i * K);
          else std::fill(rows + i * K, rows + (i + 1) * K, 0.0f);
        }
        Transpose4(rows, K, wt, P, i0);
      }
      PanelTokens<kTokTile>(wt, K, x, tb, te, y + p, ldy, np);
    }
  }
}

// ---------------------------------------------------------------- NU

// One token (or up to four), one row at a time: index vectors from the bit planes, entries by a
// register permute, one FMA per vector of columns per token.
void NuGemmSmall(const NuMatrixView& w, const float* x, int64_t n, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int L = 1 << w.bits;
  const VF table = LevelsReg(df, w);
  for (int64_t r = r0; r < r1; ++r) {
    const uint64_t* planes = w.planes + r * w.bits * w.words;
    const float* sc = w.scales + r * w.ngroups;
    for (int64_t t = 0; t < n; t += 4) {
      const int64_t nt = std::min<int64_t>(4, n - t);
      const float* x0 = x + t * w.cols;
      const float* x1 = x + (t + (nt > 1 ? 1 : 0)) * w.cols;
      const float* x2 = x + (t + (nt > 2 ? 2 : 0)) * w.cols;
      const float* x3 = x + (t + (nt > 3 ? 3 : 0)) * w.cols;
      VF y0 = hn::Zero(df), y1 = hn::Zero(df), y2 = hn::Zero(df), y3 = hn::Zero(df);
      float tail[4] = {0, 0, 0, 0};
      for (int64_t g = 0; g < w.ngroups; ++g) {
        const int64_t a = g * w.group, b = std::min(w.cols, a + w.group);
        const int64_t vb = a % N == 0 ? a + (b - a) / N * N : a;
        VF a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
        for (int64_t c = a; c < vb; c += N) {
          const VF e = Entries(df, w.levels, L, table, NuIndex(df, planes, w.words, w.bits, c));
          a0 = hn::MulAdd(e, hn::LoadU(df, x0 + c), a0);
          if (nt > 1) a1 = hn::MulAdd(e, hn::LoadU(df, x1 + c), a1);
          if (nt > 2) a2 = hn::MulAdd(e, hn::LoadU(df, x2 + c), a2);
          if (nt > 3) a3 = hn::MulAdd(e, hn::LoadU(df, x3 + c), a3);
        }
        const VF s = hn::Set(df, sc[g]);
        y0 = hn::MulAdd(s, a0, y0);
        y1 = hn::MulAdd(s, a1, y1);
        y2 = hn::MulAdd(s, a2, y2);
        y3 = hn::MulAdd(s, a3, y3);
        for (int64_t c = vb; c < b; ++c) {
          const float e = sc[g] * w.levels[NuScalarIndex(planes, w.words, w.bits, c)];
          tail[0] += e * x0[c];
          tail[1] += e * x1[c];
          tail[2] += e * x2[c];
          tail[3] += e * x3[c];
        }
      }
      const float out[4] = {Sum(df, y0) + tail[0], Sum(df, y1) + tail[1], Sum(df, y2) + tail[2], Sum(df, y3) + tail[3]};
      for (int64_t i = 0; i < nt; ++i) y[(t + i) * ldy + r] = out[i];
    }
  }
}

// Index vector of columns [c, c + N) from BITS planes, unrolled: the first plane sets its lanes,
// the others add their bit where set (a merge-masked add on AVX3).
template <int BITS>
HWY_INLINE hn::Vec<hn::RebindToSigned<DF>> NuIndexT(DF df, const uint64_t* planes, int64_t words, int64_t c) {
  const hn::RebindToSigned<DF> di;
  auto idx = hn::IfThenElseZero(hn::RebindMask(di, PlaneMask(df, planes, c)), hn::Set(di, 1));
  for (int b = 1; b < BITS; ++b) {
    const auto m = hn::RebindMask(di, PlaneMask(df, planes + b * words, c));
    idx = hn::IfThenElse(m, hn::Add(idx, hn::Set(di, 1 << b)), idx);
  }
  return idx;
}

// One token, four rows at a time (four independent chains sharing each load of x), levels
// permuted from a register (BITS <= log2 of the lane count).
template <int BITS>
void NuGemv4(const NuMatrixView& w, const float* HWY_RESTRICT x, int64_t r0, int64_t r1, float* HWY_RESTRICT y) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const VF table = LevelsReg(df, w);
  const int64_t stride = w.bits * w.words;
  for (int64_t r = r0; r < r1; r += 4) {
    const int64_t nr = std::min<int64_t>(4, r1 - r);
    const uint64_t* p[4];
    const float* sc[4];
    for (int64_t i = 0; i < 4; ++i) {
      const int64_t ri = r + (i < nr ? i : 0);
      p[i] = w.planes + ri * stride;
      sc[i] = w.scales + ri * w.ngroups;
    }
    VF y0 = hn::Zero(df), y1 = hn::Zero(df), y2 = hn::Zero(df), y3 = hn::Zero(df);
    float tail[4] = {0, 0, 0, 0};
    for (int64_t g = 0; g < w.ngroups; ++g) {
      const int64_t a = g * w.group, b = std::min(w.cols, a + w.group);
      const int64_t vb = a % N == 0 ? a + (b - a) / N * N : a;
      VF a0 = hn::Zero(df), a1 = hn::Zero(df), a2 = hn::Zero(df), a3 = hn::Zero(df);
      for (int64_t c = a; c < vb; c += N) {
        const VF xv = hn::LoadU(df, x + c);
        a0 = hn::MulAdd(hn::TableLookupLanes(table, hn::IndicesFromVec(df, NuIndexT<BITS>(df, p[0], w.words, c))), xv, a0);
        a1 = hn::MulAdd(hn::TableLookupLanes(table, hn::IndicesFromVec(df, NuIndexT<BITS>(df, p[1], w.words, c))), xv, a1);
        a2 = hn::MulAdd(hn::TableLookupLanes(table, hn::IndicesFromVec(df, NuIndexT<BITS>(df, p[2], w.words, c))), xv, a2);
        a3 = hn::MulAdd(hn::TableLookupLanes(table, hn::IndicesFromVec(df, NuIndexT<BITS>(df, p[3], w.words, c))), xv, a3);
      }
      y0 = hn::MulAdd(hn::Set(df, sc[0][g]), a0, y0);
      y1 = hn::MulAdd(hn::Set(df, sc[1][g]), a1, y1);
      y2 = hn::MulAdd(hn::Set(df, sc[2][g]), a2, y2);
      y3 = hn::MulAdd(hn::Set(df, sc[3][g]), a3, y3);
      for (int64_t c = vb; c < b; ++c)
        for (int64_t i = 0; i < 4; ++i) tail[i] += sc[i][g] * w.levels[NuScalarIndex(p[i], w.words, BITS, c)] * x[c];
    }
    const float out[4] = {Sum(df, y0) + tail[0], Sum(df, y1) + tail[1], Sum(df, y2) + tail[2], Sum(df, y3) + tail[3]};
    for (int64_t i = 0; i < nr; ++i) y[r - r0 + i] = out[i];
  }
}

void NuGemm(const NuMatrixView& w, const float* x, int64_t n, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  if (n == 1 && N >= (int64_t{1} << w.bits)) {  // the levels fit in one register
    switch (w.bits) {
      case 2: return NuGemv4<2>(w, x, r0, r1, y + r0);
      case 3: return NuGemv4<3>(w, x, r0, r1, y + r0);
      case 4: return NuGemv4<4>(w, x, r0, r1, y + r0);
      default: break;
    }
  }
  if (n < kNuPanelMinTokens || N < 4) return NuGemmSmall(w, x, n, r0, r1, y, ldy);
  const VF table = LevelsReg(df, w);
  PanelGemm(w.cols, x, n, r0, r1, y, ldy, [&](int64_t r, float* out) { NuDecodeRow(w, table, r, out); });
}

// ---------------------------------------------------------------- VQ4

#if HWY_TARGET != HWY_SCALAR
// Codebook entries idx[0 .. Lanes/4) side by side in one vector (4 floats each).
template <class D>
HWY_INLINE hn::Vec<D> LoadEntries(D d, const float* HWY_RESTRICT cb, const uint32_t* idx) {
  if constexpr (hn::MaxLanes(D()) <= 4) {
    return hn::LoadU(d, cb + 4 * idx[0]);
  } else {
    const hn::Half<D> dh;
    return hn::Combine(d, LoadEntries(dh, cb, idx + hn::MaxLanes(dh) / 4), LoadEntries(dh, cb, idx));
  }
}
#endif

// id[0 .. count) = indices j .. j + count of a row: one unaligned little-endian u64 read per 8
// indices (bits <= 8; at 8 bits the read is aligned to the index) or per 4 (up to 12 bits: 4 * 12
// + 7 bits fit). Reads must stay inside the row (the caller checks). BITS = 0: bits at run time.
template <int BITS>
HWY_INLINE void Vq4Indices(const uint8_t* HWY_RESTRICT bytes, int bits_rt, int64_t j, int64_t count,
                           uint32_t* HWY_RESTRICT id) {
  const int bits = BITS ? BITS : bits_rt;
  const uint64_t mask = (uint64_t{1} << bits) - 1;
  const int64_t per = bits <= 8 ? 8 : 4;
  for (int64_t k0 = 0; k0 < count; k0 += per) {
    const int64_t at = (j + k0) * bits;
    uint64_t v;
    std::memcpy(&v, bytes + (at >> 3), sizeof v);
    v >>= (at & 7);
    const int64_t m = std::min(per, count - k0);
    for (int64_t k = 0; k < m; ++k) id[k0 + k] = static_cast<uint32_t>((v >> (k * bits)) & mask);
  }
}

// One token, rows [r0, r1): per vector of N weights, N / 4 codebook entries are loaded side by
// side and multiplied with x (one FMA per N weights), two chains; the group scale once per group.
// (A per-token table of dot products with gathered lookups measured slower on this CPU: a gather
// of 16 costs more than the 16 entry loads it replaces, and the table has to be built.)
template <int BITS>
void Vq4Gemv(const Vq4MatrixView& w, const float* HWY_RESTRICT x, int64_t r0, int64_t r1, float* HWY_RESTRICT y) {
  const DF df;
  const int64_t N = static_cast<int64_t>(hn::Lanes(df));
  const int64_t row_bytes = w.row_words * 8;
  // Columns whose index reads (8 bytes from the first index of each read) stay inside the row.
  // Every width, 8 bits included: with fewer than 8 indices per read (SSE4, AVX2) the last read
  // of the last row would otherwise run past the blob (AddressSanitizer caught it).
  const int64_t safe_cols = std::max<int64_t>(0, ((row_bytes - 8) * 8 / w.bits) * 4);
  (void)N, (void)safe_cols;  // unused on the scalar target
  for (int64_t r = r0; r < r1; ++r) {
    const uint64_t* row = w.codes + r * w.row_words;
    const uint8_t* bytes = reinterpret_cast<const uint8_t*>(row);
    (void)bytes;
    const float* sc = w.scales + r * w.ngroups;
    VF y0 = hn::Zero(df);
    float tail = 0;
    for (int64_t g = 0; g < w.ngroups; ++g) {
      const int64_t a = g * w.group, b = std::min(w.cols, a + w.group);
      VF a0 = hn::Zero(df), a1 = hn::Zero(df);
      int64_t c = a;
#if HWY_TARGET != HWY_SCALAR
      if constexpr (hn::MaxLanes(DF()) >= 4) {
        uint32_t id[hn::MaxLanes(DF()) >= 4 ? 2 * hn::MaxLanes(DF()) / 4 : 1];
        const int64_t safe = std::min(b, safe_cols);
        for (; c + 2 * N <= safe; c += 2 * N) {
          Vq4Indices<BITS>(bytes, w.bits, c / 4, N / 2, id);
          a0 = hn::MulAdd(LoadEntries(df, w.codebook, id), hn::LoadU(df, x + c), a0);
          a1 = hn::MulAdd(LoadEntries(df, w.codebook, id + N / 4), hn::LoadU(df, x + c + N), a1);
        }
        for (; c + N <= b; c += N) {
          for (int64_t i = 0; i < N / 4; ++i) id[i] = Vq4Index(row, w.bits, c / 4 + i);
          a0 = hn::MulAdd(LoadEntries(df, w.codebook, id), hn::LoadU(df, x + c), a0);
        }
      }
#endif
      float p = 0;
      for (; c < b; c += 4) {
        const float* e = w.codebook + 4 * Vq4Index(row, w.bits, c / 4);
        p += (e[0] * x[c] + e[1] * x[c + 1]) + (e[2] * x[c + 2] + e[3] * x[c + 3]);
      }
      y0 = hn::MulAdd(hn::Set(df, sc[g]), hn::Add(a0, a1), y0);
      tail += sc[g] * p;
    }
    y[r - r0] = Sum(df, y0) + tail;
  }
}

void Vq4Gemm(const Vq4MatrixView& w, const float* x, int64_t n, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  const DF df;
  if (n < kVq4PanelMinTokens || hn::Lanes(df) < 4) {
    for (int64_t t = 0; t < n; ++t) {
      if (w.bits == 8) Vq4Gemv<8>(w, x + t * w.cols, r0, r1, y + t * ldy + r0);
      else Vq4Gemv<0>(w, x + t * w.cols, r0, r1, y + t * ldy + r0);
    }
    return;
  }
  PanelGemm(w.cols, x, n, r0, r1, y, ldy, [&](int64_t r, float* out) { Vq4DecodeRow(w, r, out); });
}

const char* TableTargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace lsb::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace lsb::kernels {
HWY_EXPORT(NuGemm);
HWY_EXPORT(Vq4Gemm);

void nu_gemm(const NuMatrixView& w, const float* x, int64_t n, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(NuGemm)(w, x, n, r0, r1, y, ldy);
}

void vq4_gemm(const Vq4MatrixView& w, const float* x, int64_t n, int64_t r0, int64_t r1, float* y, int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(Vq4Gemm)(w, x, n, r0, r1, y, ldy);
}

}  // namespace lsb::kernels
#endif
