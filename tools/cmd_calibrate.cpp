// lsb calibrate MODEL --text FILE -o STATS: the statistics of every linear layer's inputs on a
// text (pipeline/calibration.h), written once and reused by any number of `lsb compress --calib`.
#include <chrono>
#include <cstdio>

#include <fmt/format.h>

#include "base/error.h"
#include "base/sysinfo.h"
#include "commands.h"
#include "signals.h"
#include "model/tokenizer.h"
#include "pipeline/calibration.h"
#include "pipeline/open_model.h"
#include "runtime/threads.h"

namespace lsb::cli {

void add_calibrate(CLI::App& app) {
  struct Opts {
    std::string model, text, out, tokenizer;
    int64_t tokens = 32768;
    int ctx = 512, threads = 0;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* c = app.add_subcommand(
      "calibrate",
      "Measure what each linear layer of a model sees on a text (input statistics for GPTQ), for compress --calib");
  c->add_option("model", o->model, "the original model: Hugging Face folder, GGUF or llama2.c .bin")->required();
  c->add_option("--text", o->text, "calibration text (plain UTF-8); only its first --tokens tokens are used")->required();
  c->add_option("-o,--output", o->out, "statistics file to write (safetensors; docs/CALIBRATION.md)")->required();
  c->add_option("--tokens", o->tokens, "tokens to run, as whole windows from the start of the text")->capture_default_str();
  c->add_option("--ctx", o->ctx, "window length in tokens (each window starts with BOS)")->capture_default_str();
  c->add_option("--tokenizer", o->tokenizer, "tokenizer file (default: the one found with the model)");
  c->add_option("-t,--threads", o->threads, "threads (default: all cores); the statistics do not depend on it");
  c->add_flag("--json", o->json, "print one JSON object");
  c->callback([o]() {
    set_threads(o->threads);
    const auto t0 = std::chrono::steady_clock::now();
    const std::unique_ptr<TensorSource> src = open_model(o->model);
    const TokenizerBlob blob = o->tokenizer.empty() ? src->tokenizer() : read_tokenizer_file(o->tokenizer);
    if (blob.kind == TokenizerBlob::Kind::None)
      fail(o->model, "no tokenizer found with the model (use --tokenizer)");
    const std::unique_ptr<Tokenizer> tok = load_tokenizer(blob);
    CalibrationOptions co;
    co.text_path = o->text;
    co.tokens = o->tokens;
    co.ctx = o->ctx;
    co.progress = !o->json;
    const CalibrationSet set = calibrate_model(*src, *tok, co);
    track_temp_path(calibration_temp_path(o->out));  // a signal while writing removes it
    write_calibration(o->out, set);
    track_temp_path("");
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const CalibrationInfo& i = set.info;
    if (o->json) {
      print_json(nlohmann::json{{"model", o->model},
                                {"text", o->text},
                                {"output", o->out},
                                {"tokens", i.tokens},
                                {"windows", i.windows},
                                {"ctx", i.ctx},
                                {"inputs", set.inputs.size()},
                                {"model_fingerprint", i.model_fingerprint},
                                {"seconds", seconds},
                                {"peak_rss_bytes", peak_rss_bytes()},
                                {"threads", get_threads()}});
      return;
    }
    std::printf("%s: %lld tokens (%d windows of %d) through %s: statistics of %zu inputs -> %s\n", o->text.c_str(),
                static_cast<long long>(i.tokens), i.windows, i.ctx, o->model.c_str(), set.inputs.size(),
                o->out.c_str());
    std::printf("%.1f s, peak RSS %.1f MB, %d threads\n", seconds, peak_rss_bytes() / 1e6, get_threads());
  });
}

}  // namespace lsb::cli
