#include <chrono>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "model_options.h"
#include "eval/bench.h"
#include "kernels/dense.h"
#include "base/sysinfo.h"
#include "pipeline/open_model.h"
#include "runtime/threads.h"

namespace lsb::cli {

void add_bench(CLI::App& app) {
  struct Opts {
    std::vector<std::string> models;
    int threads = 0, reps = 3, prompt = 128, decode = 64;
    bool json = false;
    ModelCliOptions mopt;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* c = app.add_subcommand(
      "bench", "Speed: prompt and decode tokens/s, weights read per token, GB/s, peak RSS. Several models are "
               "measured in the same run and compared with the first");
  c->add_option("models", o->models, "one or more models (HF folder, llama2.c .bin, .lsb)")->required();
  c->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  c->add_option("--reps", o->reps, "repetitions (median and min-max are reported)")->capture_default_str()->check(CLI::Range(1, 1000));
  c->add_option("--prompt-tokens", o->prompt, "tokens in the prompt batch")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  c->add_option("--decode-tokens", o->decode, "tokens decoded one at a time")->capture_default_str()->check(CLI::Range(1, 1 << 16));
  o->mopt.add_to(c);
  c->add_flag("--json", o->json, "print one JSON object");
  c->callback([o]() {
    set_threads(o->threads);
    nlohmann::json out = {{"threads", get_threads()},
                          {"simd", kernels::simd_target_name()},
                          {"models", nlohmann::json::array()}};
    // Spin limit of the OpenMP workers, when set (see bound_openmp_spin_when_streaming).
    if (const char* spin = std::getenv("GOMP_SPINCOUNT")) out["gomp_spincount"] = spin;
    BenchOptions bo{o->prompt, o->decode, o->reps};
    double first_decode = 0, first_prompt = 0;
    for (const std::string& path : o->models) {
      Session s = open_session(path, "", /*need_tokenizer=*/false, o->mopt.get());
      const auto t0 = std::chrono::steady_clock::now();
      BenchResult r = bench_model(*s.model, bo);
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const uint64_t rss = current_rss_bytes();
      if (first_decode == 0) {
        first_decode = r.decode_tok_per_s.median;
        first_prompt = r.prompt_tok_per_s.median;
      }
      auto stat = [](const Stat& st) { return nlohmann::json{{"median", st.median}, {"min", st.min}, {"max", st.max}}; };
      uint64_t params = 0;
      for (const TensorInfo& t : s.source->tensors()) params += static_cast<uint64_t>(t.numel());
      out["models"].push_back({{"model", path},
                               {"params", params},
                               {"prompt_tokens", o->prompt},
                               {"decode_tokens", o->decode},
                               {"prompt_tok_per_s", stat(r.prompt_tok_per_s)},
                               {"decode_tok_per_s", stat(r.decode_tok_per_s)},
                               {"weight_bytes_per_token", r.weight_bytes_per_token},
                               {"decode_gb_per_s", stat(r.decode_gb_per_s)},
                               {"rss_bytes", rss},
                               {"decode_speedup_vs_first", r.decode_tok_per_s.median / first_decode},
                               {"prompt_speedup_vs_first", r.prompt_tok_per_s.median / first_prompt}});
      if (const LayerStreamer* st = s.streamer)
        out["models"].back()["streaming"] = {{"slots", st->slots()},
                                             {"direct_io", st->direct_io()},
                                             {"file_bytes_read", st->bytes_read()},
                                             {"read_seconds", st->read_seconds()},
                                             {"build_seconds", st->build_seconds()},
                                             {"bench_seconds", wall},
                                             {"reader_busy_fraction", st->read_seconds() / wall},
                                             {"arena_overflow_bytes", st->arena_overflow_bytes()}};
    }
    // Peak RSS first: the bandwidth measurement below allocates its own buffers.
    out["peak_rss_bytes"] = peak_rss_bytes();
    // The bandwidth reference needs 512 MiB of buffers; under --mem-budget it would break the
    // budget the OS measures (a child's RSS counts toward /usr/bin/time's figure), so it is skipped.
    const bool streaming = o->mopt.streaming();
    const double membw = streaming ? 0.0 : measure_memcpy_gbps();
    if (!streaming) out["memcpy_gb_per_s"] = membw;
    if (o->json) {
      print_json(out);
      return;
    }
    for (const auto& m : out["models"]) {
      auto med = [&](const char* k) { return m[k]["median"].get<double>(); };
      std::printf("%s\n  prompt %d tok: %8.1f tok/s (min %.1f, max %.1f)  x%.2f vs first\n",
                  m["model"].get<std::string>().c_str(), o->prompt, med("prompt_tok_per_s"),
                  m["prompt_tok_per_s"]["min"].get<double>(), m["prompt_tok_per_s"]["max"].get<double>(),
                  m["prompt_speedup_vs_first"].get<double>());
      std::printf("  decode %d tok: %8.1f tok/s (min %.1f, max %.1f)  x%.2f vs first\n", o->decode,
                  med("decode_tok_per_s"), m["decode_tok_per_s"]["min"].get<double>(),
                  m["decode_tok_per_s"]["max"].get<double>(), m["decode_speedup_vs_first"].get<double>());
      std::printf("  weights read per decoded token: %.2f MB -> %.2f GB/s (%s)  RSS %.1f MB\n",
                  m["weight_bytes_per_token"].get<double>() / 1e6, med("decode_gb_per_s"),
                  streaming ? "memcpy reference skipped under --mem-budget"
                            : fmt::format("machine memcpy {:.1f} GB/s", membw).c_str(),
                  m["rss_bytes"].get<double>() / 1e6);
      if (m.contains("streaming"))
        std::printf("  streaming: %d weight slots, %s, %.2f GB read from the file at %.2f GB/s while reading; "
                    "reader busy %.0f%% of the run, builder %.0f%%\n",
                    m["streaming"]["slots"].get<int>(),
                    m["streaming"]["direct_io"].get<bool>() ? "O_DIRECT reads" : "buffered reads",
                    m["streaming"]["file_bytes_read"].get<double>() / 1e9,
                    m["streaming"]["file_bytes_read"].get<double>() / 1e9 / m["streaming"]["read_seconds"].get<double>(),
                    100 * m["streaming"]["reader_busy_fraction"].get<double>(),
                    100 * m["streaming"]["build_seconds"].get<double>() / m["streaming"]["bench_seconds"].get<double>());
    }
    std::printf("peak RSS of the process: %.1f MB | %d threads, %s\n", out["peak_rss_bytes"].get<double>() / 1e6,
                get_threads(), kernels::simd_target_name());
  });
}

}  // namespace lsb::cli
