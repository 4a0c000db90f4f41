// Dense schemes f32, f16 and bf16: plain row-major elements (f16/bf16 rounded to nearest even).
// Blobs may sit at any offset of a file (safetensors aligns to 8 bytes at most), so elements
// are read with memcpy.
#include <cstring>

#include "base/checked.h"
#include "base/error.h"
#include "base/fp16.h"
#include "quant/scheme.h"

namespace lsb::quant {
namespace {

template <DType T>
struct Dense {
  static constexpr size_t kSize = T == DType::F32 ? 4 : 2;

  static std::string make_params(const SchemeOptions&, const std::string&) { return ""; }

  static uint64_t fixed_bytes(int64_t rows, int64_t cols, std::string_view, const std::string& where) {
    if (rows < 0 || cols < 0) fail(where, "negative matrix shape {} x {}", rows, cols);
    return checked_mul(checked_mul(static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), where), kSize, where);
  }

  static uint16_t to16(float v) { return T == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v); }
  static float from16(uint16_t h) { return T == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h); }

  static std::vector<std::byte> quantize_ref(const QuantizeArgs& a) {
    const int64_t n = static_cast<int64_t>(fixed_bytes(a.rows, a.cols, a.params, "quantize_reference") / kSize);
    std::vector<std::byte> blob(static_cast<size_t>(n) * kSize);
    for (int64_t i = 0; i < n; ++i) {
      if constexpr (T == DType::F32) {
        std::memcpy(blob.data() + 4 * i, &a.w[i], 4);
      } else {
        const uint16_t h = to16(a.w[i]);
        std::memcpy(blob.data() + 2 * i, &h, 2);
      }
    }
    return blob;
  }

  static std::vector<std::byte> quantize(const QuantizeArgs& a) {
    const int64_t n = static_cast<int64_t>(fixed_bytes(a.rows, a.cols, a.params, "quantize") / kSize);
    std::vector<std::byte> blob(static_cast<size_t>(n) * kSize);
    if constexpr (T == DType::F32) {
      if (n > 0) std::memcpy(blob.data(), a.w, 4 * static_cast<size_t>(n));
    } else {
      auto* dst = reinterpret_cast<uint16_t*>(blob.data());
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < n; ++i) dst[i] = to16(a.w[i]);
    }
    return blob;
  }

  class View final : public BlobView {
   public:
    View(std::span<const std::byte> b, int64_t cols) : b_(b), cols_(cols) {}
    RowSpans row_spans(int64_t r) const override {
      RowSpans s;
      s.add(b_.data() + static_cast<size_t>(r * cols_) * kSize, static_cast<uint64_t>(cols_) * kSize);
      return s;
    }
    void dequantize_row(int64_t r, float* out) const override {
      const std::byte* row = b_.data() + static_cast<size_t>(r * cols_) * kSize;
      for (int64_t c = 0; c < cols_; ++c) {
        if constexpr (T == DType::F32) {
          std::memcpy(&out[c], row + 4 * c, 4);
        } else {
          uint16_t h;
          std::memcpy(&h, row + 2 * c, 2);
          out[c] = from16(h);
        }
      }
    }

   private:
    std::span<const std::byte> b_;
    int64_t cols_;
  };

  static std::unique_ptr<BlobView> open(std::span<const std::byte> blob, int64_t rows, int64_t cols,
                                        std::string_view params, const OpenArgs& args) {
    const uint64_t want = fixed_bytes(rows, cols, params, args.where);
    if (blob.size() != want) fail(args.where, "{} blob is {} bytes, expected {}", dtype_name(T), blob.size(), want);
    return std::make_unique<View>(blob, cols);
  }
};

}  // namespace

extern const SchemeOps kF32Ops{DType::F32, "f32", "dense float32 (no loss)", false, Dense<DType::F32>::make_params,
                               Dense<DType::F32>::fixed_bytes, Dense<DType::F32>::quantize_ref,
                               Dense<DType::F32>::quantize, Dense<DType::F32>::open};
extern const SchemeOps kF16Ops{DType::F16, "f16", "dense float16, round to nearest even", false,
                               Dense<DType::F16>::make_params, Dense<DType::F16>::fixed_bytes,
                               Dense<DType::F16>::quantize_ref, Dense<DType::F16>::quantize, Dense<DType::F16>::open};
extern const SchemeOps kBF16Ops{DType::BF16, "bf16", "dense bfloat16, round to nearest even", false,
                                Dense<DType::BF16>::make_params, Dense<DType::BF16>::fixed_bytes,
                                Dense<DType::BF16>::quantize_ref, Dense<DType::BF16>::quantize,
                                Dense<DType::BF16>::open};

}  // namespace lsb::quant
