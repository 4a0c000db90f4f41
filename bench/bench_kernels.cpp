// Micro-benchmarks: packed-weight kernels (LSB1 / PAPER / Q8, every SignKernel variant) beside
// dense bf16 and a measured memcpy bandwidth, at 1 and 2 threads, for one token (decode) and
// a batch of 16 tokens (prompt processing). Counters:
//   packed_GBps  bytes of the stored tensor (blob, or bf16 matrix) per second
//   GFLOPs       2 * rows * cols * tokens per second
//   us_per_tok   time per token
// The machine may be shared and noisy: compare ratios within one run (docs/KERNELS.md).
#include <omp.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include "io/fp16.h"
#include "kernels/dense.h"
#include "kernels/packed_linear.h"
#include "model/linear.h"
#include "quant/scheme.h"

namespace {

using namespace lsb;

struct Shape {
  int64_t rows, cols;
};
constexpr Shape kShapes[] = {{512, 512}, {1536, 512}, {4096, 4096}, {14336, 4096}};

enum Kind { kBF16, kLsb1Masked, kLsb1Select, kLsb1Lut, kLsb1Mean, kPaper, kQ8 };
const char* kind_name(int k) {
  static const char* names[] = {"bf16", "lsb1_masked", "lsb1_select", "lsb1_lut", "lsb1_mean_masked", "paper", "q8"};
  return names[k];
}

// One tensor of one kind and shape, kept while benchmarks of that shape run.
struct Tensor {
  std::vector<std::byte> blob;
  std::unique_ptr<Linear> lin;
};

TensorInfo make_info(DType t, Shape s, const quant::SchemeParams& p, size_t nbytes) {
  TensorInfo info;
  info.name = "bench";
  info.shape = {s.rows, s.cols};
  info.dtype = t;
  info.nbytes = nbytes;
  info.group_size = p.group_size;
  info.outlier_ratio = p.outlier_ratio;
  info.use_mean = p.use_mean;
  return info;
}

const Tensor& tensor(int shape, int kind) {
  static int cached_shape = -1;
  static std::vector<float> w;
  static std::unique_ptr<Tensor> cache[7];
  if (shape != cached_shape) {
    for (auto& c : cache) c.reset();
    const Shape s = kShapes[shape];
    w.assign(static_cast<size_t>(s.rows * s.cols), 0.0f);
    std::mt19937 rng(1234);
    std::normal_distribution<float> nd(0.0f, 0.02f);
    for (auto& v : w) v = nd(rng);
    cached_shape = shape;
  }
  auto& slot = cache[kind];
  if (!slot) {
    const Shape s = kShapes[shape];
    slot = std::make_unique<Tensor>();
    DType t = DType::LSB1;
    quant::SchemeParams p{0.02f, 128, false};
    if (kind == kBF16) t = DType::BF16;
    if (kind == kLsb1Mean) p.use_mean = true;
    if (kind == kPaper) t = DType::PAPER, p.group_size = 0;
    if (kind == kQ8) t = DType::Q8;
    if (t == DType::BF16) {
      slot->blob.resize(w.size() * 2);
      for (size_t i = 0; i < w.size(); ++i) {
        const uint16_t b = f32_to_bf16(w[i]);
        std::memcpy(slot->blob.data() + 2 * i, &b, 2);
      }
    } else {
      slot->blob = quant::quantize(t, w.data(), s.rows, s.cols, p);
    }
    slot->lin = make_linear(make_info(t, s, p, slot->blob.size()), slot->blob, "bench");
  }
  return *slot;
}

// Args: shape index, kind, threads, tokens.
void BM_Linear(benchmark::State& state) {
  const int shape = static_cast<int>(state.range(0)), kind = static_cast<int>(state.range(1));
  const int threads = static_cast<int>(state.range(2));
  const int64_t n = state.range(3);
  const Shape s = kShapes[shape];
  const Tensor& T = tensor(shape, kind);
  std::vector<float> x(static_cast<size_t>(n * s.cols)), y(static_cast<size_t>(n * s.rows));
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (auto& v : x) v = nd(rng);
  omp_set_num_threads(threads);
  const auto* sign = dynamic_cast<const kernels::SignLinear*>(T.lin.get());
  const kernels::SignKernel variant = kind == kLsb1Select ? kernels::SignKernel::kSignSelect
                                      : kind == kLsb1Lut  ? kernels::SignKernel::kLut
                                                          : kernels::SignKernel::kMaskedAdd;
  for (auto _ : state) {
    if (sign) sign->forward_with(x.data(), n, y.data(), variant);
    else T.lin->forward(x.data(), n, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetLabel(fmt::format("{} {}x{} t{} n{} [{}]", kind_name(kind), s.rows, s.cols, threads, n,
                             kernels::packed_target_name()));
  state.counters["packed_GBps"] =
      benchmark::Counter(static_cast<double>(T.blob.size()) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOPs"] = benchmark::Counter(2.0 * s.rows * s.cols * n / 1e9,
                                                benchmark::Counter::kIsIterationInvariantRate);
  state.counters["us_per_tok"] = benchmark::Counter(static_cast<double>(n) / 1e6,
                                                    benchmark::Counter::kIsIterationInvariantRate |
                                                        benchmark::Counter::kInvert);
  omp_set_num_threads(omp_get_num_procs());
}

// memcpy of a buffer larger than the caches: the memory bandwidth the weight kernels compete with.
void BM_Memcpy(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0)) << 20;
  std::vector<char> a(bytes, 1), b(bytes, 0);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), bytes);
    benchmark::DoNotOptimize(b.data());
    benchmark::ClobberMemory();
  }
  // Bytes read (the kernels' figure is bytes of weights read, too).
  state.counters["read_GBps"] =
      benchmark::Counter(static_cast<double>(bytes) / 1e9, benchmark::Counter::kIsIterationInvariantRate);
}

void register_all() {
  benchmark::RegisterBenchmark("memcpy", BM_Memcpy)->Arg(64)->Unit(benchmark::kMicrosecond);
  for (int shape = 0; shape < 4; ++shape)
    for (int64_t n : {1, 16})
      for (int threads : {1, 2})
        for (int kind = kBF16; kind <= kQ8; ++kind) {
          if (n > 1 && kind == kLsb1Select) continue;  // gemv-only experiment
          benchmark::RegisterBenchmark(fmt::format("linear/{}/{}x{}/t{}/n{}", kind_name(kind), kShapes[shape].rows,
                                                   kShapes[shape].cols, threads, n)
                                           .c_str(),
                                       BM_Linear)
              ->Args({shape, kind, threads, n})
              ->Unit(benchmark::kMicrosecond)
              ->UseRealTime();
        }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
