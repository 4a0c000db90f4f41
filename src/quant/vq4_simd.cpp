// The nearest-codeword search of VQ4 (quantize and k-means spend nearly all their time in it),
// run-time dispatched over SIMD targets, one codeword per lane. Bit-identical to the scalar
// search in vq4.cpp (tests/test_gptq.cpp checks every compiled target): the same products and
// sums in the same order (the quant floor is compiled with -ffp-contract=off), a strict "<" per
// lane and, among lanes with the least error, the lowest index — the scalar loop's first minimum.
#include <cstdint>
#include <limits>

#include "quant/vq4.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "vq4_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace lsb::quant::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

int Vq4Nearest(const Vq4Soa& cb, const float* w, const float* h, float s) {
  const hn::ScalableTag<float> d;
  const hn::RebindToSigned<decltype(d)> di;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const auto w0 = hn::Set(d, w[0]), w1 = hn::Set(d, w[1]), w2 = hn::Set(d, w[2]), w3 = hn::Set(d, w[3]);
  const auto h0 = hn::Set(d, h[0]), h1 = hn::Set(d, h[1]), h2 = hn::Set(d, h[2]), h3 = hn::Set(d, h[3]);
  const auto vs = hn::Set(d, s);
  auto best = hn::Set(d, std::numeric_limits<float>::infinity());
  auto best_i = hn::Zero(di);
  auto idx = hn::Iota(di, 0);
  const auto step = hn::Set(di, static_cast<int32_t>(N));
  int64_t c = 0;
  for (; c + N <= cb.entries; c += N) {
    const auto t0 = hn::Sub(w0, hn::Mul(vs, hn::LoadU(d, cb.d0 + c)));
    const auto t1 = hn::Sub(w1, hn::Mul(vs, hn::LoadU(d, cb.d1 + c)));
    const auto t2 = hn::Sub(w2, hn::Mul(vs, hn::LoadU(d, cb.d2 + c)));
    const auto t3 = hn::Sub(w3, hn::Mul(vs, hn::LoadU(d, cb.d3 + c)));
    auto e = hn::Mul(hn::Mul(h0, t0), t0);
    e = hn::Add(e, hn::Mul(hn::Mul(h1, t1), t1));
    e = hn::Add(e, hn::Mul(hn::Mul(h2, t2), t2));
    e = hn::Add(e, hn::Mul(hn::Mul(h3, t3), t3));
    const auto less = hn::Lt(e, best);
    best = hn::IfThenElse(less, e, best);
    best_i = hn::IfThenElse(hn::RebindMask(di, less), idx, best_i);
    idx = hn::Add(idx, step);
  }
  // Lanes hold indices c' ≡ lane (mod N), each its first minimum; the overall first minimum is
  // the lowest index among the lanes whose error is the least.
  const float least = hn::GetLane(hn::MinOfLanes(d, best));
  const auto at_least = hn::RebindMask(di, hn::Eq(best, hn::Set(d, least)));
  const auto cand = hn::IfThenElse(at_least, best_i, hn::Set(di, std::numeric_limits<int32_t>::max()));
  int best_c = hn::GetLane(hn::MinOfLanes(di, cand));
  float bd = least;
  if (!(least < std::numeric_limits<float>::infinity())) {  // no lane improved on +inf: index 0 (as scalar)
    best_c = 0;
    bd = std::numeric_limits<float>::infinity();
  }
  for (; c < cb.entries; ++c) {  // entries not a multiple of the lanes (never for bits >= 4 and <= 16 lanes)
    const float t0 = w[0] - s * cb.d0[c], t1 = w[1] - s * cb.d1[c], t2 = w[2] - s * cb.d2[c], t3 = w[3] - s * cb.d3[c];
    const float e = h[0] * t0 * t0 + h[1] * t1 * t1 + h[2] * t2 * t2 + h[3] * t3 * t3;
    if (e < bd) {
      bd = e;
      best_c = static_cast<int>(c);
    }
  }
  return best_c;
}

const char* Vq4TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace lsb::quant::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace lsb::quant {
HWY_EXPORT(Vq4Nearest);
HWY_EXPORT(Vq4TargetName);

int vq4_nearest_simd(const Vq4Soa& cb, const float* w, const float* h, float s) {
  return HWY_DYNAMIC_DISPATCH(Vq4Nearest)(cb, w, h, s);
}
const char* vq4_simd_target() { return HWY_DYNAMIC_DISPATCH(Vq4TargetName)(); }

int vq4_nearest_scalar(const Vq4Soa& cb, const float* w, const float* h, float s) {
  int best = 0;
  float bd = std::numeric_limits<float>::infinity();
  for (int c = 0; c < cb.entries; ++c) {
    const float t0 = w[0] - s * cb.d0[c], t1 = w[1] - s * cb.d1[c], t2 = w[2] - s * cb.d2[c], t3 = w[3] - s * cb.d3[c];
    const float e = h[0] * t0 * t0 + h[1] * t1 * t1 + h[2] * t2 * t2 + h[3] * t3 * t3;
    if (e < bd) {
      bd = e;
      best = c;
    }
  }
  return best;
}
}  // namespace lsb::quant
#endif
