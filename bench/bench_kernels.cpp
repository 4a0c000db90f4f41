// Micro-benchmarks: the Linear of every stored scheme (bf16, q8, lsb1 with and without means,
// paper) beside a measured memcpy bandwidth, at 1 and 2 threads, for one token (decode) and
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

#include "kernels/packed.h"
#include "linear/linear.h"
#include "quant/scheme.h"

namespace {

using namespace lsb;

struct Shape {
  int64_t rows, cols;
};
constexpr Shape kShapes[] = {{512, 512}, {1536, 512}, {4096, 4096}, {14336, 4096}};

// What is measured: a scheme and the options it is quantized with.
struct Kind {
  const char* name;
  DType dtype;
  quant::SchemeOptions options;
};
const std::vector<Kind>& kinds() {
  static const std::vector<Kind> k = {{"bf16", DType::BF16, {}},
                                      {"lsb1", DType::LSB1, {}},
                                      {"lsb1_mean", DType::LSB1, [] {
                                         lsb::quant::SchemeOptions o;
                                         o.use_mean = true;
                                         return o;
                                       }()},
                                      {"paper", DType::PAPER, {}},
                                      {"q8", DType::Q8, {}}};
  return k;
}

// One tensor of one kind and shape, kept while benchmarks of that shape run.
struct Tensor {
  std::vector<std::byte> blob;
  std::unique_ptr<Linear> lin;
};

const Tensor& tensor(int shape, int kind) {
  static int cached_shape = -1;
  static std::vector<float> w;
  static std::vector<std::unique_ptr<Tensor>> cache(kinds().size());
  if (shape != cached_shape) {
    for (auto& c : cache) c.reset();
    const Shape s = kShapes[shape];
    w.assign(static_cast<size_t>(s.rows * s.cols), 0.0f);
    std::mt19937 rng(1234);
    std::normal_distribution<float> nd(0.0f, 0.02f);
    for (auto& v : w) v = nd(rng);
    cached_shape = shape;
  }
  auto& slot = cache[static_cast<size_t>(kind)];
  if (!slot) {
    const Shape s = kShapes[shape];
    const Kind& k = kinds()[static_cast<size_t>(kind)];
    slot = std::make_unique<Tensor>();
    TensorInfo info;
    info.name = "bench";
    info.shape = {s.rows, s.cols};
    info.dtype = k.dtype;
    info.params = quant::make_params(k.dtype, k.options, "bench");
    slot->blob = quant::quantize(k.dtype, {.w = w.data(), .rows = s.rows, .cols = s.cols, .params = info.params});
    info.nbytes = slot->blob.size();
    slot->lin = make_linear(info, slot->blob, "bench");
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
  for (auto _ : state) {
    T.lin->forward(x.data(), n, y.data());
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  state.SetLabel(fmt::format("{} {}x{} t{} n{} [{}]", kinds()[static_cast<size_t>(kind)].name, s.rows, s.cols, threads, n,
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
        for (int kind = 0; kind < static_cast<int>(kinds().size()); ++kind) {
          benchmark::RegisterBenchmark(fmt::format("linear/{}/{}x{}/t{}/n{}", kinds()[static_cast<size_t>(kind)].name,
                                                   kShapes[shape].rows,
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
