// VQ4 and NU with 8-bit tables and activations (table_q8.h). The AVX-512 kernels are compiled
// with a target attribute for the one instruction set they need (VNNI + VBMI) and chosen at run
// time.
#include "kernels/table_q8.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LSB_VQ4_Q8_X86 1
#include <immintrin.h>
// GCC 12 warns inside its own AVX-512 headers: the pass-through operand they make with
// _mm512_undefined_*() is "used uninitialized" (a known false positive of those headers).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

namespace lsb::kernels {

// round(v) to the nearest integer, halves away from zero, clamped to [-127, 127]; inline (the
// library's nearbyint is a call here).
inline int8_t round_to_int8(float v) {
  const float r = std::clamp(v, -127.0f, 127.0f);
  return static_cast<int8_t>(static_cast<int>(r + std::copysign(0.5f, r)));
}

void vq4_quantize_activations(const float* x, int64_t cols, Vq4Q8Activations& out) {
  const int64_t chunks = cols / kVq4Q8Chunk;
  out.cols = cols;
  out.xq.resize(static_cast<size_t>(cols));
  out.bias.resize(static_cast<size_t>(chunks * 16));
  out.d.resize(static_cast<size_t>(chunks * 16));
  for (int64_t c = 0; c < chunks; ++c) {
    const float* xc = x + c * kVq4Q8Chunk;
    int8_t* q = out.xq.data() + c * kVq4Q8Chunk;
    // Dword lane l multiplies columns 16l .. 16l + 15 (positions 4l..4l+3 of the 4 planes): each
    // lane has its own scale, at no cost to the kernel, which multiplies per lane anyway.
    for (int l = 0; l < 16; ++l) {
      const float* xb = xc + 16 * l;
      float amax = 0;
      for (int i = 0; i < 16; ++i) amax = std::max(amax, std::fabs(xb[i]));
      const float id = amax > 0 ? 127.0f / amax : 0.0f;
      out.d[static_cast<size_t>(c * 16 + l)] = amax / 127.0f;
      int32_t sum = 0;
      for (int i = 0; i < 16; ++i) {
        const int col = 16 * l + i, j = col / 4, t = col % 4;  // column 4j + t: plane t, position j
        const int8_t v = round_to_int8(xb[i] * id);
        q[t * 64 + j] = v;
        sum += v;
      }
      out.bias[static_cast<size_t>(c * 16 + l)] = -128 * sum;
    }
  }
}

namespace {
bool cpu_has_vnni_vbmi();
bool cpu_has_gfni();
int32_t quantize_block128_avx512(const float* x, int8_t* panel, float& amax);
}  // namespace

int64_t panel_position(int64_t col) {
  const int64_t c = col / kVq4Q8Chunk, in = col % kVq4Q8Chunk, j = in / 4, t = in % 4;
  return c * kVq4Q8Chunk + (j / 32) * 128 + t * 32 + j % 32;
}

void vq4_quantize_tokens(const float* x, int64_t n, int64_t cols, Vq4Q8Tokens& out) {
  const int64_t quads = cols / 4, blocks = cols / kVq4Q8TokBlock;
  static const bool avx512 = cpu_has_vnni_vbmi();
  out.n = n;
  out.n_pad = (n + 31) / 32 * 32;
  out.cols = cols;
  out.xq.resize(static_cast<size_t>(out.n_pad * cols));
  out.d.assign(static_cast<size_t>(blocks * out.n_pad), 0.0f);
  out.bias.assign(static_cast<size_t>(blocks * out.n_pad), 0);
  // Per tile of 32 tokens: each token's row in panel order (contiguous), then a transpose of
  // 4-byte quads into [quad][token]. Padding tokens are zeros. Tiles are independent: the team
  // shares them (serial, this was an eighth of a 512-token prompt at 1 thread).
#pragma omp parallel for schedule(static)
  for (int64_t tile = 0; tile < out.n_pad / 32; ++tile) {
    thread_local std::vector<int8_t> rows;
    rows.resize(static_cast<size_t>(32 * cols));
    std::fill(rows.begin(), rows.end(), int8_t{0});
    for (int64_t lane = 0; lane < 32 && tile * 32 + lane < n; ++lane) {
      const int64_t t = tile * 32 + lane;
      const float* xt = x + t * cols;
      int8_t* row = rows.data() + lane * cols;
      // Columns 4j + k of each 128 (j < 32) go to panel positions 32k + j; a block of
      // kVq4Q8TokBlock positions is byte k of the 32 entries for kPlanes consecutive k.
      constexpr int kPlanes = static_cast<int>(kVq4Q8TokBlock / 32);
      for (int64_t h = 0; h < cols / 128; ++h)
        for (int k0 = 0; k0 < 4; k0 += kPlanes) {
          const float* xh = xt + 128 * h;
          int8_t* o = row + 128 * h;
          float amax = 0;
          int32_t sum = 0;
          if (kPlanes == 4 && avx512) {
            sum = quantize_block128_avx512(xh, o, amax);
          } else {
            for (int k = k0; k < k0 + kPlanes; ++k)
              for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xh[4 * j + k]));
            const float id = amax > 0 ? 127.0f / amax : 0.0f;
            for (int k = k0; k < k0 + kPlanes; ++k)
              for (int j = 0; j < 32; ++j) {
                const int8_t v = round_to_int8(xh[4 * j + k] * id);
                o[32 * k + j] = v;
                sum += v;
              }
          }
          const int64_t b = (128 * h) / kVq4Q8TokBlock + k0 / kPlanes;
          out.d[static_cast<size_t>(b * out.n_pad + t)] = amax / 127.0f;
          out.bias[static_cast<size_t>(b * out.n_pad + t)] = -128 * sum;
        }
    }
    int8_t* dst = out.xq.data() + tile * quads * 128;
    for (int64_t q = 0; q < quads; ++q)
      for (int64_t lane = 0; lane < 32; ++lane) std::memcpy(dst + q * 128 + lane * 4, rows.data() + lane * cols + 4 * q, 4);
  }
}

void quantize_blocks128(const float* x, int64_t cols, Q8Blocks& out) {
  const int64_t blocks = cols / 128;
  out.cols = cols;
  out.xq.resize(static_cast<size_t>(cols));
  out.d.resize(static_cast<size_t>(blocks));
  out.bias.assign(static_cast<size_t>(blocks * 16), 0);
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = x + 128 * b;
    float amax = 0;
    for (int i = 0; i < 128; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float id = amax > 0 ? 127.0f / amax : 0.0f;
    int32_t sum = 0;
    for (int i = 0; i < 128; ++i) sum += out.xq[static_cast<size_t>(128 * b + i)] = round_to_int8(xb[i] * id);
    out.d[static_cast<size_t>(b)] = amax / 127.0f;
    out.bias[static_cast<size_t>(16 * b)] = -128 * sum;
  }
}

float nu_levels_u8(const float* levels, int bits, uint8_t* out16) {
  const int L = 1 << bits;
  float amax = 0;
  for (int k = 0; k < L; ++k) amax = std::max(amax, std::fabs(levels[k]));
  const float id = amax > 0 ? 127.0f / amax : 0.0f;
  for (int k = 0; k < 16; ++k) out16[k] = static_cast<uint8_t>((k < L ? round_to_int8(levels[k] * id) : 0) + 128);
  return amax / 127.0f;
}

bool vq4_planes_sign_symmetric(const uint8_t* planes, int bits) {
  const int64_t E = int64_t{1} << bits;
  for (int t = 0; t < 4; ++t)
    for (int64_t e = 0; e < E / 2; ++e) {
      const uint8_t a = planes[t * E + e], b = planes[t * E + e + E / 2];
      if (a == 0 || b != static_cast<uint8_t>(256 - a)) return false;
    }
  return true;
}

float vq4_codebook_planes(const float* codebook, int bits, uint8_t* planes) {
  const int64_t E = int64_t{1} << bits;
  float amax = 0;
  for (int64_t i = 0; i < 4 * E; ++i) amax = std::max(amax, std::fabs(codebook[i]));
  const float cs = amax / 127.0f, ics = amax > 0 ? 127.0f / amax : 0.0f;
  for (int64_t e = 0; e < E; ++e)
    for (int t = 0; t < 4; ++t) {
      planes[t * E + e] = static_cast<uint8_t>(round_to_int8(codebook[4 * e + t] * ics) + 128);
    }
  return cs;
}

namespace {

// Index j of a row (bits-wide fields, least significant first).
uint32_t index_of(const uint64_t* row, int bits, int64_t j) {
  const int64_t at = j * bits, word = at >> 6, shift = at & 63;
  uint64_t v = row[word] >> shift;
  if (shift + bits > 64) v |= row[word + 1] << (64 - shift);
  return static_cast<uint32_t>(v & ((uint64_t{1} << bits) - 1));
}

bool cpu_has_gfni() {
#ifdef LSB_VQ4_Q8_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("gfni");
#else
  return false;
#endif
}

bool cpu_has_vnni_vbmi() {
#ifdef LSB_VQ4_Q8_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
         __builtin_cpu_supports("avx512vbmi");
#else
  return false;
#endif
}

#ifdef LSB_VQ4_Q8_X86
#define LSB_AVX512_VNNI_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi")))

// One block of 128 columns in panel order (column 4j + k at 32k + j), rounded exactly as
// round_to_int8 does (clamp, add a signed half, truncate); returns the sum, sets max |x|.
LSB_AVX512_VNNI_VBMI int32_t quantize_block128_avx512(const float* x, int8_t* panel, float& amax) {
  __m512 v[8];
  __m512 m = _mm512_setzero_ps();
  for (int i = 0; i < 8; ++i) {
    v[i] = _mm512_loadu_ps(x + 16 * i);
    m = _mm512_max_ps(m, _mm512_abs_ps(v[i]));
  }
  amax = _mm512_reduce_max_ps(m);
  const float id = amax > 0 ? 127.0f / amax : 0.0f;
  const __m512 vid = _mm512_set1_ps(id), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  const __m512 half = _mm512_set1_ps(0.5f);
  const __m512i sign = _mm512_set1_epi32(static_cast<int>(0x80000000u));
  alignas(64) int8_t natural[128];
  __m512i sum = _mm512_setzero_si512();
  for (int i = 0; i < 8; ++i) {
    const __m512 r = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v[i], vid), lo), hi);
    const __m512 h = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(r), sign),
                                                         _mm512_castps_si512(half)));
    const __m512i q = _mm512_cvttps_epi32(_mm512_add_ps(r, h));
    sum = _mm512_add_epi32(sum, q);
    _mm_store_si128(reinterpret_cast<__m128i*>(natural + 16 * i), _mm512_cvtsepi32_epi8(q));
  }
  // panel[32k + j] = natural[4j + k]: two byte permutes over the 128 bytes.
  alignas(64) uint8_t idx[128];
  for (int p = 0; p < 128; ++p) idx[p] = static_cast<uint8_t>(4 * (p % 32) + p / 32);
  const __m512i a = _mm512_load_si512(natural), b = _mm512_load_si512(natural + 64);
  _mm512_storeu_si512(panel, _mm512_permutex2var_epi8(a, _mm512_load_si512(idx), b));
  _mm512_storeu_si512(panel + 64, _mm512_permutex2var_epi8(a, _mm512_load_si512(idx + 64), b));
  return _mm512_reduce_add_epi32(sum);
}

// The last chunk of a tensor's codes, without reading past them (Lookup::chunk).
LSB_AVX512_VNNI_VBMI __attribute__((noinline)) __m512i load_tail(__mmask64 mask, const uint8_t* p) {
  return _mm512_maskz_loadu_epi8(mask, p);
}

// acc += VNNI(a (unsigned bytes), b (signed bytes)), in place: GCC 12 copies every accumulator
// of a tile through another register on each use of the intrinsic (16 extra moves per 8 products
// in the prompt kernel's loop).
LSB_AVX512_VNNI_VBMI __attribute__((always_inline)) inline void dpbusd(__m512i& acc, __m512i a, __m512i b) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
}

// The entries of one chunk of 64 indices, byte t of each in plane t: the indices as bytes
// (bits above `B` may hold the next index's bits: every lookup ignores them or has its table
// repeated over them), then one byte permute per plane and 64 entries (two and a blend on bit 7
// at 8 bits). At 9 bits the four planes' tables would fill all 32 registers: there the callers
// run two planes at a time (gemv_q8_9, decode_panel_rows<9>) with unpack9 and plane9, four
// permutes and blends on bits 7 and 8.
// Sym (a sign-symmetric codebook, Vq4Q8MatrixView::sign_symmetric): the top index bit is a sign.
// The planes' first halves are looked up with B - 1 bits, and the entries of negative indices
// negated: for cq + 128 in 1..255 (cq in -127..127), 256 - (cq + 128) = -cq + 128, one masked
// byte subtraction. 9 bits then fit the registers like 8 and take one pass.
template <int B, bool Sym = false>
struct Lookup {
  static constexpr int64_t E = int64_t{1} << B;  // entries per plane
  static constexpr int LB = Sym ? B - 1 : B;     // index bits looked up
  static constexpr int NT = LB <= 6 ? 1 : LB == 7 ? 2 : 4;  // 64-byte vectors per plane kept in registers (LB < 9)
  const uint8_t* planes;
  const uint8_t* codes_end;  // one past the tensor's last code byte
  __m512i tab[4][NT];
  __m512i P, S;
  __m512i P2, S2, H, H2;  // 9 bits only (unpack9)
  __mmask64 load_mask;

  LSB_AVX512_VNNI_VBMI Lookup(const uint8_t* pl, const Vq4MatrixView& w)
      : planes(pl), codes_end(reinterpret_cast<const uint8_t*>(w.codes + w.rows * w.row_words)) {
    for (int t = 0; t < 4 && LB < 9; ++t) {
      if constexpr (LB < 6) {
        // 8, 16 or 32 entries repeated to fill the 64 bytes a 6-bit permute indexes.
        constexpr int64_t kLookedUp = int64_t{1} << LB;
        alignas(64) uint8_t rep[64];
        for (int i = 0; i < 64; ++i) rep[i] = planes[t * E + (i % kLookedUp)];
        tab[t][0] = _mm512_load_si512(rep);
      } else {
        for (int k = 0; k < NT; ++k) tab[t][k] = _mm512_loadu_si512(planes + t * E + 64 * k);
      }
    }
    // Unpacking 64 fields of B < 8 bits: qword q gets the B bytes holding indices 8q..8q+7, then
    // byte k of it the 8 bits from bit k*B on (vpmultishiftqb). At 9 bits, 8 indices take 9
    // bytes: qword q gets bytes 9q..9q+7 (indices 8q..8q+6 whole) and a second qword bytes
    // 9q+1..9q+8 (index 8q+7); each index's low byte and, in a second multishift, the 8 bits
    // ending at its bit 8 (bit 8 then the sign bit of a byte).
    alignas(64) uint8_t perm[64], shift[64];
    if constexpr (B == 9) {
      alignas(64) uint8_t perm2[64], shift2[64], top[64], top2[64];
      for (int q = 0; q < 8; ++q)
        for (int k = 0; k < 8; ++k) {
          const int i = 8 * q + k;
          perm[i] = static_cast<uint8_t>(9 * q + k);
          perm2[i] = static_cast<uint8_t>(9 * q + 1 + k);
          shift[i] = static_cast<uint8_t>(k < 7 ? 9 * k : 0);
          top[i] = static_cast<uint8_t>(k < 7 ? 9 * k + 1 : 0);
          shift2[i] = static_cast<uint8_t>(k == 7 ? 55 : 0);  // bits 63..70 of the 9 bytes
          top2[i] = static_cast<uint8_t>(k == 7 ? 56 : 0);    // bits 64..71
        }
      P2 = _mm512_load_si512(perm2);
      S2 = _mm512_load_si512(shift2);
      H = _mm512_load_si512(top);
      H2 = _mm512_load_si512(top2);
    } else {
      for (int q = 0; q < 8; ++q)
        for (int k = 0; k < 8; ++k) {
          perm[8 * q + k] = static_cast<uint8_t>(std::min(63, q * B + k));
          shift[8 * q + k] = static_cast<uint8_t>(k * B);
        }
    }
    P = _mm512_load_si512(perm);
    S = _mm512_load_si512(shift);
    load_mask = B >= 8 ? ~__mmask64{0} : (__mmask64{1} << (8 * B)) - 1;
  }

  // The 64 9-bit indices of the 72 bytes at `src`: their low bytes, and bit 8 of each.
  LSB_AVX512_VNNI_VBMI __attribute__((always_inline)) inline void unpack9(const uint8_t* src, __m512i& idx,
                                                                         __mmask64& bit8) const {
    constexpr __mmask64 kLast = 0x8080808080808080ull;  // index 8q + 7 of each qword
    const __m512i lo = _mm512_loadu_si512(src);
    const __m512i hi = _mm512_castsi128_si512(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + 64)));
    const __m512i q = _mm512_permutex2var_epi8(lo, P, hi), q2 = _mm512_permutex2var_epi8(lo, P2, hi);
    idx = _mm512_mask_multishift_epi64_epi8(_mm512_multishift_epi64_epi8(S, q), kLast, S2, q2);
    bit8 = _mm512_movepi8_mask(_mm512_mask_multishift_epi64_epi8(_mm512_multishift_epi64_epi8(H, q), kLast, H2, q2));
  }

  // The tables of planes 2 * half and 2 * half + 1 (9 bits: 8 vectors each).
  LSB_AVX512_VNNI_VBMI __attribute__((always_inline)) inline void tables9(int half, __m512i tab[2][8]) const {
    for (int t = 0; t < 2; ++t)
      for (int k = 0; k < 8; ++k) tab[t][k] = _mm512_loadu_si512(planes + (2 * half + t) * 512 + 64 * k);
  }

  // Byte `t` of the entries of 64 indices at 9 bits, with the plane's 512 bytes in tab[0..7].
  LSB_AVX512_VNNI_VBMI __attribute__((always_inline)) static inline __m512i plane9(const __m512i* tab, __m512i idx,
                                                                                  __mmask64 high, __mmask64 bit8) {
    __m512i p[4];  // entries 128k .. 128k + 127
    for (int k = 0; k < 4; ++k) p[k] = _mm512_permutex2var_epi8(tab[2 * k], idx, tab[2 * k + 1]);
    return _mm512_mask_blend_epi8(bit8, _mm512_mask_blend_epi8(high, p[0], p[1]),
                                  _mm512_mask_blend_epi8(high, p[2], p[3]));
  }

  // e[t] = byte t of the entries of indices 64c .. 64c + 63 of `row`.
  LSB_AVX512_VNNI_VBMI __attribute__((always_inline)) inline void chunk(const uint8_t* row, int64_t c,
                                                                       __m512i e[4]) const {
    // A chunk is 8 * B bytes; a full 64-byte load reads into the next chunk (ignored) except at
    // the end of the codes. Masked loads only there: weights streamed from memory through masked
    // loads ran at 0.4-0.6x the speed of plain ones on this CPU (AMD Zen 5: 25-35 against 60 G
    // weights/s, 4-7 bits, 268 M weights; a synthetic 1.1B model decoded at a third of its 8-bit
    // speed with 6 bits).
    const uint8_t* p = row + c * 8 * B;
    __m512i idx;
    __mmask64 sign = 0;
    if constexpr (B == 9) {
      static_assert(Sym, "9 bits without a sign: gemv_q8_9 and decode_panel_rows<9> run two planes at a time");
      unpack9(p, idx, sign);  // 72 bytes: no read past the chunk
    } else {
      // The tail load is a call: inlined, GCC turned the two loads into one masked load with a
      // mask chosen per chunk, and the prefetcher ignored it again (6-bit VQ4 on the synthetic
      // 1.1B model: 22 against 72 tokens/s).
      idx = __builtin_expect(p + 64 <= codes_end, 1) ? _mm512_loadu_si512(p) : load_tail(load_mask, p);
      if constexpr (B != 8) idx = _mm512_multishift_epi64_epi8(S, _mm512_permutexvar_epi8(P, idx));
      if constexpr (Sym) sign = _mm512_test_epi8_mask(idx, _mm512_set1_epi8(static_cast<char>(1 << (B - 1))));
    }
    __mmask64 high = 0;
    if constexpr (LB == 8) high = _mm512_movepi8_mask(idx);
    for (int t = 0; t < 4; ++t) {
      if constexpr (LB <= 6) {
        e[t] = _mm512_permutexvar_epi8(idx, tab[t][0]);
      } else if constexpr (LB == 7) {
        e[t] = _mm512_permutex2var_epi8(tab[t][0], idx, tab[t][1]);
      } else {
        e[t] = _mm512_mask_blend_epi8(high, _mm512_permutex2var_epi8(tab[t][0], idx, tab[t][1]),
                                      _mm512_permutex2var_epi8(tab[t][2], idx, tab[t][3]));
      }
      if constexpr (Sym) e[t] = _mm512_mask_sub_epi8(e[t], sign, _mm512_setzero_si512(), e[t]);
    }
  }
};

// The group of each block of 128 columns of a `cols`-wide matrix: the decode kernels read it
// from this table, made once per call, instead of dividing per chunk. This thread's; valid until
// its next call.
inline const int32_t* block_groups(int64_t cols, int64_t group) {
  thread_local std::vector<int32_t> gi;
  gi.resize(static_cast<size_t>(cols / 128));
  for (size_t b = 0; b < gi.size(); ++b) gi[b] = static_cast<int32_t>(128 * static_cast<int64_t>(b) / group);
  return gi.data();
}

// acc_f + chunk c's int32 lane sums times each lane's group scale and activation scale (lanes
// 0..7 are the chunk's first block of 128 columns, 8..15 its second; g from block_groups).
LSB_AVX512_VNNI_VBMI __attribute__((always_inline)) inline __m512 scale_chunk(const Vq4Q8Activations& x,
                                                                             const float* sc, const int32_t* g,
                                                                             int64_t c, __m512i acc, __m512 acc_f) {
  const __m512 s = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(sc[g[2 * c]]), _mm512_set1_ps(sc[g[2 * c + 1]]));
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(s, _mm512_loadu_ps(x.d.data() + c * 16)), acc_f);
}

// y[0..3] = cs * the sums of a0..a3's 16 lanes (the NU kernel's four rows side by side): one
// horizontal sum per row (four shuffles) was a large part of the time of short rows; four rows
// share these six. Halves, then quarters, then pairs within each 128 bits.
LSB_AVX512_VNNI_VBMI __attribute__((always_inline)) inline void store_sums4(__m512 a0, __m512 a1, __m512 a2,
                                                                           __m512 a3, float cs, float* y) {
  // p01 = [a0 Q0+Q2, a0 Q1+Q3, a1 Q0+Q2, a1 Q1+Q3] (Q: 128-bit quarters)
  const __m512 p01 = _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, 0x44), _mm512_shuffle_f32x4(a0, a1, 0xEE));
  const __m512 p23 = _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, 0x44), _mm512_shuffle_f32x4(a2, a3, 0xEE));
  // q = [a0, a1, a2, a3], four partial sums each
  const __m512 q = _mm512_add_ps(_mm512_shuffle_f32x4(p01, p23, 0x88), _mm512_shuffle_f32x4(p01, p23, 0xDD));
  const __m512 h = _mm512_add_ps(q, _mm512_permute_ps(q, 0x4E));
  const __m512 z = _mm512_mul_ps(_mm512_add_ps(h, _mm512_permute_ps(h, 0xB1)), _mm512_set1_ps(cs));
  alignas(64) float out[16];
  _mm512_store_ps(out, z);
  for (int i = 0; i < 4; ++i) y[i] = out[4 * i];
}

// One token: per chunk, byte t of the 64 entries times the 64 activations of plane t (VNNI: 4
// products summed into each dword lane), then per lane the group scale times the activation scale.
template <int B, bool Sym = false>
LSB_AVX512_VNNI_VBMI void gemv_q8(const Vq4Q8MatrixView& m, const Vq4Q8Activations& x, int64_t r0, int64_t r1,
                                  float* y) {
  const Vq4MatrixView& w = m.w;
  const Lookup<B, Sym> lk(m.planes, m.w);
  const int64_t chunks = w.cols / kVq4Q8Chunk;
  const int8_t* xq = x.xq.data();
  const int32_t* g = block_groups(w.cols, w.group);
  // One row at a time. Four rows sharing one horizontal sum (store_sums4, as the NU kernel does
  // with its rows side by side) ran short cache-resident rows faster, but streaming from memory
  // it kept fewer loads in flight: the synthetic 1.1B model in 6-bit VQ4 decoded at 33 tokens/s
  // against 64 one row at a time; bookworm-27m end to end was the same either way.
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = reinterpret_cast<const uint8_t*>(w.codes + r * w.row_words);
    const float* sc = w.scales + r * w.ngroups;
    __m512 acc_f = _mm512_setzero_ps();
    for (int64_t c = 0; c < chunks; ++c) {
      __m512i e[4];
      lk.chunk(row, c, e);
      __m512i acc = _mm512_loadu_si512(x.bias.data() + c * 16);
      const int8_t* xc = xq + c * kVq4Q8Chunk;
      for (int t = 0; t < 4; ++t) dpbusd(acc, e[t], _mm512_loadu_si512(xc + 64 * t));
      acc_f = scale_chunk(x, sc, g, c, acc, acc_f);
    }
    y[r - r0] = m.cs * _mm512_reduce_add_ps(acc_f);
  }
}

// One token at 9 bits. The four planes' tables (2 KB) would take every register, and reading
// them from L1 for each chunk made the loads the bottleneck (3x the time of 8 bits). Instead a
// block of rows is unpacked once into a buffer, then run twice, each time with two planes' tables
// in registers; the int32 sums wait in a second buffer between the runs. The sums are the same
// exact integers as when all four planes were looked up per chunk (eval --decode unchanged).
LSB_AVX512_VNNI_VBMI void gemv_q8_9(const Vq4Q8MatrixView& m, const Vq4Q8Activations& x, int64_t r0, int64_t r1,
                                    float* y) {
  constexpr int64_t kPairs = 128;  // (row, chunk) pairs per block: 8 KB of indices, 8 KB of sums
  const Vq4MatrixView& w = m.w;
  const int64_t chunks = w.cols / kVq4Q8Chunk;
  const Lookup<9> lk(m.planes, m.w);
  const int32_t* g = block_groups(w.cols, w.group);
  const int64_t block_rows = std::max<int64_t>(1, kPairs / chunks);
  thread_local std::vector<uint8_t> idx_buf, sum_buf;  // this thread's, 64 bytes per pair; one row at least
  thread_local std::vector<__mmask64> bit8;
  const auto pairs = static_cast<size_t>(block_rows * chunks);
  if (bit8.size() < pairs) idx_buf.resize(64 * pairs), sum_buf.resize(64 * pairs), bit8.resize(pairs);
  uint8_t* const idx = idx_buf.data();
  uint8_t* const sums = sum_buf.data();
  for (int64_t rb = r0; rb < r1; rb += block_rows) {
    const int64_t n = std::min(block_rows, r1 - rb) * chunks;
    for (int64_t i = 0; i < n; ++i) {
      __m512i v;
      lk.unpack9(reinterpret_cast<const uint8_t*>(w.codes + (rb + i / chunks) * w.row_words) + (i % chunks) * 72, v,
                 bit8[i]);
      _mm512_storeu_si512(idx + 64 * i, v);
    }
    for (int half = 0; half < 2; ++half) {
      __m512i tab[2][8];
      lk.tables9(half, tab);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t c = i % chunks;
        __m512i acc = _mm512_loadu_si512(half ? sums + 64 * i : reinterpret_cast<const uint8_t*>(x.bias.data() + c * 16));
        const __m512i v = _mm512_loadu_si512(idx + 64 * i);
        const __mmask64 high = _mm512_movepi8_mask(v);
        for (int t = 0; t < 2; ++t)
          dpbusd(acc, Lookup<9>::plane9(tab[t], v, high, bit8[i]),
                 _mm512_loadu_si512(x.xq.data() + c * kVq4Q8Chunk + 64 * (2 * half + t)));
        _mm512_storeu_si512(sums + 64 * i, acc);
      }
    }
    for (int64_t r = rb; r < rb + n / chunks; ++r) {
      __m512 acc_f = _mm512_setzero_ps();
      for (int64_t c = 0; c < chunks; ++c)
        acc_f = scale_chunk(x, w.scales + r * w.ngroups, g, c, _mm512_loadu_si512(sums + 64 * ((r - rb) * chunks + c)), acc_f);
      y[r - r0] = m.cs * _mm512_reduce_add_ps(acc_f);
    }
  }
}

// Rows r .. r + RT - 1 in panel order (table_q8.h): per chunk, the first 32 entries of the four
// planes, then the last 32.
template <int B, bool Sym>
LSB_AVX512_VNNI_VBMI void decode_panel_rows(const Vq4MatrixView& w, const Lookup<B, Sym>& lk, int64_t r, int rows,
                                            uint8_t* out) {
  const int64_t chunks = w.cols / kVq4Q8Chunk;
  if constexpr (B == 9 && !Sym) {
    // As gemv_q8_9: two runs with two planes' tables in registers (planes 0 and 1 fill bytes
    // 0..63 and 128..191 of each chunk's 256, planes 2 and 3 the others); the indices are
    // unpacked in each run.
    for (int half = 0; half < 2; ++half) {
      __m512i tab[2][8];
      lk.tables9(half, tab);
      for (int i = 0; i < rows; ++i) {
        const uint8_t* row = reinterpret_cast<const uint8_t*>(w.codes + (r + i) * w.row_words);
        uint8_t* o = out + i * w.cols + 64 * half;
        for (int64_t c = 0; c < chunks; ++c) {
          __m512i idx;
          __mmask64 bit8;
          lk.unpack9(row + c * 72, idx, bit8);
          const __mmask64 high = _mm512_movepi8_mask(idx);
          const __m512i a = Lookup<9>::plane9(tab[0], idx, high, bit8), b = Lookup<9>::plane9(tab[1], idx, high, bit8);
          _mm512_storeu_si512(o + c * 256, _mm512_shuffle_i64x2(a, b, 0x44));
          _mm512_storeu_si512(o + c * 256 + 128, _mm512_shuffle_i64x2(a, b, 0xEE));
        }
      }
    }
  } else {
    for (int i = 0; i < rows; ++i) {
      const uint8_t* row = reinterpret_cast<const uint8_t*>(w.codes + (r + i) * w.row_words);
      uint8_t* o = out + i * w.cols;
      for (int64_t c = 0; c < chunks; ++c) {
        __m512i e[4];
        lk.chunk(row, c, e);
        _mm512_storeu_si512(o + c * 256, _mm512_shuffle_i64x2(e[0], e[1], 0x44));
        _mm512_storeu_si512(o + c * 256 + 64, _mm512_shuffle_i64x2(e[2], e[3], 0x44));
        _mm512_storeu_si512(o + c * 256 + 128, _mm512_shuffle_i64x2(e[0], e[1], 0xEE));
        _mm512_storeu_si512(o + c * 256 + 192, _mm512_shuffle_i64x2(e[2], e[3], 0xEE));
      }
    }
  }
}

// RT rows x 32 tokens: per 4 columns (a quad), the rows' 4 weight bytes broadcast against the 32
// tokens' 4 activation bytes (2 VNNI products per row); per block of 128 columns the int32 sums
// are scaled by the row's group scale and the tokens' block scales into float accumulators.
template <int RT>
LSB_AVX512_VNNI_VBMI void gemm_tile(const Vq4Q8MatrixView& m, const Vq4Q8Tokens& x, const uint8_t* wp, int64_t r,
                                    int64_t tile, float* y, int64_t ldy) {
  const Vq4MatrixView& w = m.w;
  const int64_t quads = w.cols / 4, blocks = w.cols / kVq4Q8TokBlock;
  constexpr int64_t kQuadsPerBlock = kVq4Q8TokBlock / 4;
  const int8_t* xt = x.xq.data() + tile * quads * 128;
  __m512 yf[RT][2];
  for (int i = 0; i < RT; ++i) yf[i][0] = yf[i][1] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const __m512i bias0 = _mm512_loadu_si512(x.bias.data() + b * x.n_pad + tile * 32);
    const __m512i bias1 = _mm512_loadu_si512(x.bias.data() + b * x.n_pad + tile * 32 + 16);
    __m512i acc[RT][2];
    for (int i = 0; i < RT; ++i) acc[i][0] = bias0, acc[i][1] = bias1;
    for (int64_t q = kQuadsPerBlock * b; q < kQuadsPerBlock * (b + 1); ++q) {
      const __m512i x0 = _mm512_loadu_si512(xt + q * 128), x1 = _mm512_loadu_si512(xt + q * 128 + 64);
      for (int i = 0; i < RT; ++i) {
        int32_t wq;
        std::memcpy(&wq, wp + i * w.cols + 4 * q, 4);
        const __m512i wv = _mm512_set1_epi32(wq);
        dpbusd(acc[i][0], wv, x0);
        dpbusd(acc[i][1], wv, x1);
      }
    }
    const __m512 d0 = _mm512_loadu_ps(x.d.data() + b * x.n_pad + tile * 32);
    const __m512 d1 = _mm512_loadu_ps(x.d.data() + b * x.n_pad + tile * 32 + 16);
    for (int i = 0; i < RT; ++i) {
      const __m512 s = _mm512_set1_ps(w.scales[(r + i) * w.ngroups + b * kVq4Q8TokBlock / w.group]);
      yf[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][0]), _mm512_mul_ps(s, d0), yf[i][0]);
      yf[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i][1]), _mm512_mul_ps(s, d1), yf[i][1]);
    }
  }
  alignas(64) float out[32];
  const int64_t t0 = tile * 32, nt = std::min<int64_t>(32, x.n - t0);
  for (int i = 0; i < RT; ++i) {
    _mm512_store_ps(out, _mm512_mul_ps(yf[i][0], _mm512_set1_ps(m.cs)));
    _mm512_store_ps(out + 16, _mm512_mul_ps(yf[i][1], _mm512_set1_ps(m.cs)));
    for (int64_t t = 0; t < nt; ++t) y[(t0 + t) * ldy + r + i] = out[t];
  }
}

template <int B, bool Sym = false>
LSB_AVX512_VNNI_VBMI void gemm_q8(const Vq4Q8MatrixView& m, const Vq4Q8Tokens& x, int64_t r0, int64_t r1, float* y,
                                  int64_t ldy) {
  constexpr int RT = 4;
  const Lookup<B, Sym> lk(m.planes, m.w);
  thread_local std::vector<uint8_t> panel;  // RT rows, this thread's
  panel.resize(static_cast<size_t>(RT * m.w.cols));
  const int64_t tiles = x.n_pad / 32;
  int64_t r = r0;
  for (; r + RT <= r1; r += RT) {
    decode_panel_rows(m.w, lk, r, RT, panel.data());
    for (int64_t tile = 0; tile < tiles; ++tile) gemm_tile<RT>(m, x, panel.data(), r, tile, y, ldy);
  }
  for (; r < r1; ++r) {
    decode_panel_rows(m.w, lk, r, 1, panel.data());
    for (int64_t tile = 0; tile < tiles; ++tile) gemm_tile<1>(m, x, panel.data(), r, tile, y, ldy);
  }
}

// NU, one token. Per block of 128 columns the planes' 16 bytes go into one vector (plane k in
// lane k). Per 64 columns a byte permute puts plane k's byte q at byte 7 - k of qword q, and an
// affine transform over GF(2) (GFNI) transposes each qword's 8 x 8 bits: byte j of qword q becomes
// the index of column 8q + j, bit k from plane k. Then the levels by an in-lane byte shuffle (16
// entries at most), VNNI with the activations in natural order, and per block of 128 columns the
// row's group scale times the block's scale. (Building the index bytes with one masked add per
// plane took 1.3-1.6x the time per weight of 8-bit VQ4.)
#define LSB_AVX512_VNNI_VBMI_GFNI \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512vbmi,gfni")))
template <int BITS>
LSB_AVX512_VNNI_VBMI_GFNI void nu_gemv_q8_avx512(const NuQ8MatrixView& m, const Q8Blocks& x, int64_t r0, int64_t r1,
                                                 float* y) {
  const NuMatrixView& w = m.w;
  const __m512i tab = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(m.levels)));
  // perm[h]: output byte 8q + 7 - k <- byte 16k + 8h + q of the block's vector, for planes k < BITS;
  // the other bytes are zeroed (index bits above BITS).
  alignas(64) uint8_t perm[2][64] = {};
  __mmask64 planes_mask = 0;
  for (int h = 0; h < 2; ++h)
    for (int q = 0; q < 8; ++q)
      for (int k = 0; k < BITS; ++k) {
        perm[h][8 * q + 7 - k] = static_cast<uint8_t>(16 * k + 8 * h + q);
        planes_mask |= __mmask64{1} << (8 * q + 7 - k);
      }
  const __m512i P0 = _mm512_load_si512(perm[0]), P1 = _mm512_load_si512(perm[1]);
  const __m512i unit = _mm512_set1_epi64(0x8040201008040201LL);  // byte j: 1 << j
  const int64_t blocks = w.cols / 128, stride = w.bits * w.words;
  const int32_t* g = block_groups(w.cols, w.group);
  constexpr int RR = 4;  // rows side by side (latency of each row's chain; 2 rows were 1.1-1.2x one), one store_sums4
  auto block = [&](const uint64_t* p, const float* sc, int64_t b, __m512 yf) LSB_AVX512_VNNI_VBMI_GFNI {
    auto plane = [&](int k) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + k * w.words + 2 * b)); };
    __m512i v = _mm512_castsi128_si512(plane(0));
    if constexpr (BITS > 1) v = _mm512_inserti32x4(v, plane(1), 1);
    if constexpr (BITS > 2) v = _mm512_inserti32x4(v, plane(2), 2);
    if constexpr (BITS > 3) v = _mm512_inserti32x4(v, plane(3), 3);
    __m512i acc = _mm512_loadu_si512(x.bias.data() + 16 * b);
    const __m512i i0 = _mm512_gf2p8affine_epi64_epi8(unit, _mm512_maskz_permutexvar_epi8(planes_mask, P0, v), 0);
    const __m512i i1 = _mm512_gf2p8affine_epi64_epi8(unit, _mm512_maskz_permutexvar_epi8(planes_mask, P1, v), 0);
    dpbusd(acc, _mm512_shuffle_epi8(tab, i0), _mm512_loadu_si512(x.xq.data() + 128 * b));
    dpbusd(acc, _mm512_shuffle_epi8(tab, i1), _mm512_loadu_si512(x.xq.data() + 128 * b + 64));
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(sc[g[b]] * x.d[static_cast<size_t>(b)]), yf);
  };
  int64_t r = r0;
  for (; r + RR <= r1; r += RR) {
    __m512 yf[RR];
    for (int i = 0; i < RR; ++i) yf[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b)
      for (int i = 0; i < RR; ++i) yf[i] = block(w.planes + (r + i) * stride, w.scales + (r + i) * w.ngroups, b, yf[i]);
    store_sums4(yf[0], yf[1], yf[2], yf[3], m.cs, y + r - r0);
  }
  for (; r < r1; ++r) {
    __m512 yf = _mm512_setzero_ps();
    for (int64_t b = 0; b < blocks; ++b) yf = block(w.planes + r * stride, w.scales + r * w.ngroups, b, yf);
    y[r - r0] = m.cs * _mm512_reduce_add_ps(yf);
  }
}
#else
int32_t quantize_block128_avx512(const float*, int8_t*, float&) { return 0; }  // never called
#endif

}  // namespace

bool vq4_q8_usable(const Vq4MatrixView& w) {
  static const bool cpu = cpu_has_vnni_vbmi();
  if (!cpu || w.bits < 4 || w.bits > 9 || w.cols % kVq4Q8Chunk != 0 || w.group % kVq4Q8Block != 0) return false;
  return packed_target_is_avx512();
}

bool nu_q8_usable(const NuMatrixView& w) {
  static const bool cpu = cpu_has_vnni_vbmi() && cpu_has_gfni();
  if (!cpu || w.bits < 2 || w.bits > 4 || w.cols % 128 != 0 || w.group % 128 != 0) return false;
  return packed_target_is_avx512();
}

void nu_gemv_q8(const NuQ8MatrixView& m, const Q8Blocks& x, int64_t r0, int64_t r1, float* y) {
#ifdef LSB_VQ4_Q8_X86
  switch (m.w.bits) {
    case 2: return nu_gemv_q8_avx512<2>(m, x, r0, r1, y);
    case 3: return nu_gemv_q8_avx512<3>(m, x, r0, r1, y);
    case 4: return nu_gemv_q8_avx512<4>(m, x, r0, r1, y);
    default: break;
  }
#endif
  nu_gemv_q8_reference(m, x, r0, r1, y);
}

void nu_gemv_q8_reference(const NuQ8MatrixView& m, const Q8Blocks& x, int64_t r0, int64_t r1, float* y) {
  const NuMatrixView& w = m.w;
  for (int64_t r = r0; r < r1; ++r) {
    const uint64_t* p = w.planes + r * w.bits * w.words;
    double sum = 0;
    for (int64_t b = 0; b < w.cols / 128; ++b) {
      int32_t acc = x.bias[static_cast<size_t>(16 * b)];
      for (int64_t c = 128 * b; c < 128 * (b + 1); ++c) {
        int k = 0;
        for (int bit = 0; bit < w.bits; ++bit) k |= static_cast<int>((p[bit * w.words + c / 64] >> (c % 64)) & 1u) << bit;
        acc += static_cast<int32_t>(m.levels[k]) * x.xq[static_cast<size_t>(c)];
      }
      sum += static_cast<double>(acc) * w.scales[r * w.ngroups + 128 * b / w.group] * x.d[static_cast<size_t>(b)];
    }
    y[r - r0] = static_cast<float>(m.cs * sum);
  }
}

void vq4_gemv_q8(const Vq4Q8MatrixView& m, const Vq4Q8Activations& x, int64_t r0, int64_t r1, float* y) {
#ifdef LSB_VQ4_Q8_X86
  if (m.sign_symmetric && m.w.bits == 8) return gemv_q8<8, true>(m, x, r0, r1, y);
  if (m.sign_symmetric && m.w.bits == 9) return gemv_q8<9, true>(m, x, r0, r1, y);
  switch (m.w.bits) {
    case 4: return gemv_q8<4>(m, x, r0, r1, y);
    case 5: return gemv_q8<5>(m, x, r0, r1, y);
    case 6: return gemv_q8<6>(m, x, r0, r1, y);
    case 7: return gemv_q8<7>(m, x, r0, r1, y);
    case 8: return gemv_q8<8>(m, x, r0, r1, y);
    case 9: return gemv_q8_9(m, x, r0, r1, y);
    default: break;
  }
#endif
  vq4_gemv_q8_reference(m, x, r0, r1, y);
}

void vq4_gemm_q8(const Vq4Q8MatrixView& m, const Vq4Q8Tokens& x, int64_t r0, int64_t r1, float* y, int64_t ldy) {
#ifdef LSB_VQ4_Q8_X86
  if (m.sign_symmetric && m.w.bits == 8) return gemm_q8<8, true>(m, x, r0, r1, y, ldy);
  if (m.sign_symmetric && m.w.bits == 9) return gemm_q8<9, true>(m, x, r0, r1, y, ldy);
  switch (m.w.bits) {
    case 4: return gemm_q8<4>(m, x, r0, r1, y, ldy);
    case 5: return gemm_q8<5>(m, x, r0, r1, y, ldy);
    case 6: return gemm_q8<6>(m, x, r0, r1, y, ldy);
    case 7: return gemm_q8<7>(m, x, r0, r1, y, ldy);
    case 8: return gemm_q8<8>(m, x, r0, r1, y, ldy);
    case 9: return gemm_q8<9>(m, x, r0, r1, y, ldy);
    default: break;
  }
#endif
  vq4_gemm_q8_reference(m, x, r0, r1, y, ldy);
}

void vq4_gemm_q8_reference(const Vq4Q8MatrixView& m, const Vq4Q8Tokens& x, int64_t r0, int64_t r1, float* y,
                           int64_t ldy) {
  const Vq4MatrixView& w = m.w;
  const int64_t E = int64_t{1} << w.bits, blocks = w.cols / kVq4Q8TokBlock, quads = w.cols / 4;
  std::vector<int64_t> acc(static_cast<size_t>(blocks));
  for (int64_t r = r0; r < r1; ++r) {
    const uint64_t* row = w.codes + r * w.row_words;
    for (int64_t t = 0; t < x.n; ++t) {
      const int64_t tile = t / 32, lane = t % 32;
      for (int64_t b = 0; b < blocks; ++b) acc[static_cast<size_t>(b)] = x.bias[static_cast<size_t>(b * x.n_pad + t)];
      for (int64_t col = 0; col < w.cols; ++col) {
        const int64_t p = panel_position(col);  // where column `col` sits in panel order
        const uint32_t e = index_of(row, w.bits, col / 4);
        acc[static_cast<size_t>(p / kVq4Q8TokBlock)] +=
            static_cast<int32_t>(m.planes[(col % 4) * E + e]) *
            x.xq[static_cast<size_t>((tile * quads + p / 4) * 128 + lane * 4 + p % 4)];
      }
      // The positions of block b lie in one block of 128 columns, hence in one group.
      double sum = 0;
      for (int64_t b = 0; b < blocks; ++b)
        sum += static_cast<double>(acc[static_cast<size_t>(b)]) *
               w.scales[r * w.ngroups + b * kVq4Q8TokBlock / w.group] * x.d[static_cast<size_t>(b * x.n_pad + t)];
      y[t * ldy + r] = static_cast<float>(m.cs * sum);
    }
  }
}

void vq4_gemv_q8_reference(const Vq4Q8MatrixView& m, const Vq4Q8Activations& x, int64_t r0, int64_t r1, float* y) {
  const Vq4MatrixView& w = m.w;
  const int64_t E = int64_t{1} << w.bits, chunks = w.cols / kVq4Q8Chunk;
  for (int64_t r = r0; r < r1; ++r) {
    const uint64_t* row = w.codes + r * w.row_words;
    double sum = 0;
    for (int64_t c = 0; c < chunks; ++c)
      for (int l = 0; l < 16; ++l) {
        // Dword lane l: positions 4l..4l+3 of each plane, i.e. indices 64c + 4l .. +3.
        int32_t acc = x.bias[static_cast<size_t>(c * 16 + l)];
        for (int t = 0; t < 4; ++t)
          for (int64_t j = 4 * l; j < 4 * l + 4; ++j) {
            const uint32_t e = index_of(row, w.bits, 64 * c + j);
            acc += static_cast<int32_t>(m.planes[t * E + e]) * x.xq[static_cast<size_t>(c * kVq4Q8Chunk + t * 64 + j)];
          }
        const int64_t col = c * kVq4Q8Chunk + (l < 8 ? 0 : kVq4Q8Block);
        sum += static_cast<double>(acc) * w.scales[r * w.ngroups + col / w.group] * x.d[static_cast<size_t>(c * 16 + l)];
      }
    y[r - r0] = static_cast<float>(m.cs * sum);
  }
}

}  // namespace lsb::kernels
