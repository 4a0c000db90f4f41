// lsb compress SRC -o OUT.lsb: the pipeline is compress_model; this file adds the
// command line and the summary. The temporary file is removed on SIGINT/SIGTERM (signals.h).
#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "base/error.h"
#include "eval/allocate.h"
#include "signals.h"
#include "pipeline/compress.h"
#include "runtime/progress.h"
#include "runtime/threads.h"

namespace lsb::cli {

void add_compress(CLI::App& app) {
  struct Opts {
    std::string src, out, scheme = "default", tokenizer, calib, sens_text;
    double target_bpw = 0;
    int sens_windows = 4;
    float outlier_ratio = 0.02f;
    int group_size = 128, threads = 0, bits = 0, calib_ctx = 512;
    int64_t calib_tokens = 32768;
    bool use_mean = false, sign_symmetric = false;
    std::vector<std::string> keep;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* c = app.add_subcommand("compress", "Compress a model into a .lsb file (1-bit weights with fp16 outliers)");
  c->add_option("src", o->src, "Hugging Face model folder or llama2.c .bin")->required();
  c->add_option("-o,--output", o->out, "output .lsb file (written to OUT.tmp.<pid>, renamed when complete)")->required();
  c->add_option("--scheme", o->scheme,
                "'default' (measured recipe, docs/RECIPE.md) or one scheme for every matrix: lsb1, paper, q8, f16, bf16, f32")
      ->capture_default_str();
  CLI::Option* ratio =
      c->add_option("--outlier-ratio", o->outlier_ratio,
                    "fraction of each row kept as fp16 outliers, for schemes that keep outliers (default: the scheme's; "
                    "lsb1 and paper 0.02)");
  CLI::Option* group = c->add_option("--group-size", o->group_size,
                                     "columns sharing one scale, for schemes with groups (0 = whole row; default: "
                                     "the scheme's; lsb1 128)");
  CLI::Option* mean = c->add_flag("--use-mean", o->use_mean, "lsb1: store a mean per group beside its scale");
  CLI::Option* bits = c->add_option("--bits", o->bits,
                                    "code bits, for schemes that have them (nu: bits per weight, 2-4; vq4: bits per "
                                    "vector of 4 weights, 4-10)");
  CLI::Option* sym = c->add_flag("--sign-symmetric", o->sign_symmetric,
                                 "vq4: learn half the codebook and use its negation for the other half; the "
                                 "integer kernels then take 9 bits at about the speed of 8 (docs/QUANT.md)");
  c->add_option("--calib", o->calib,
                "calibration: a text file (run through the model while compressing) or a statistics file from "
                "`lsb calibrate`; schemes that round with statistics (nu, vq4) then use GPTQ");
  c->add_option("--calib-tokens", o->calib_tokens, "tokens of the calibration text to use")->capture_default_str();
  c->add_option("--calib-ctx", o->calib_ctx, "calibration window length")->capture_default_str();
  CLI::Option* target = c->add_option(
      "--target-bpw", o->target_bpw,
      "choose each matrix's code (vq4, nu, q8; embedding and head included) to minimise the measured loss with the "
      "whole file at most this many bits per weight; needs --calib (docs/CALIBRATION.md)");
  c->add_option("--sens-text", o->sens_text,
                "--target-bpw: text whose last windows measure each kind of matrix's sensitivity (default: the "
                "--calib text; required when --calib is a statistics file)");
  c->add_option("--sens-windows", o->sens_windows, "--target-bpw: windows of --calib-ctx tokens for sensitivity")
      ->capture_default_str();
  c->add_option("--keep", o->keep, "PATTERN=SCHEME (glob over tensor names, e.g. 'lm_head.weight=q8'); repeatable, last match wins");
  c->add_option("--tokenizer", o->tokenizer, "tokenizer file to embed (default: the one found with the model)");
  c->add_option("-t,--threads", o->threads, "threads (default: all cores); the output does not depend on it");
  c->add_flag("--json", o->json, "print one JSON object");
  c->callback([o, ratio, group, mean, bits, sym, target]() {
    set_threads(o->threads);
    CompressOptions opt;
    opt.scheme = o->scheme;
    if (ratio->count()) opt.options.outlier_ratio = o->outlier_ratio;
    if (group->count()) opt.options.group_size = o->group_size;
    if (mean->count()) opt.options.use_mean = o->use_mean;
    if (bits->count()) opt.options.bits = o->bits;
    if (sym->count()) opt.options.sign_symmetric = o->sign_symmetric;
    opt.calib = o->calib;
    opt.calib_options.tokens = o->calib_tokens;
    opt.calib_options.ctx = o->calib_ctx;
    opt.keep = o->keep;
    opt.tokenizer_path = o->tokenizer;
    opt.progress = !o->json;
    opt.on_temp_file = track_temp_path;
    TargetReport tr;
    if (target->count()) {
      if (o->scheme != "default" || !o->keep.empty() || ratio->count() || group->count() || mean->count() ||
          bits->count() || sym->count())
        fail("--target-bpw", "chooses every matrix's code itself: leave out --scheme, --keep, --bits, --group-size, "
                             "--outlier-ratio, --use-mean and --sign-symmetric");
      AllocateOptions a;
      a.target_bpw = o->target_bpw;
      a.sens_text = o->sens_text;
      a.sens_windows = o->sens_windows;
      a.sens_ctx = o->calib_ctx;
      tr = compress_to_target(o->src, o->out, opt, a);
    } else {
      tr.compress = compress_model(o->src, o->out, opt);
    }
    const CompressReport& r = tr.compress;
    if (o->json) {
      nlohmann::json j = report_json(r);
      if (target->count())
        j["allocation"] = {{"predicted_kld", tr.predicted_kld}, {"kind_kld", tr.kind_kld},
                           {"kind_factor", tr.kind_factor}, {"codes", tr.codes}};
      j["threads"] = get_threads();
      print_json(j);
      return;
    }
    std::printf("%s", tensor_table(r.tensors).c_str());
    if (target->count()) std::printf("%s", allocation_summary(tr).c_str());
    std::printf("%s -> %s\n", r.source.c_str(), r.output.c_str());
    std::printf("params %llu, input %.2f MB, output %.2f MB: %.4f bits per weight (whole file), %.2fx smaller than bf16\n",
                static_cast<unsigned long long>(r.params), r.input_bytes / 1e6, r.output_bytes / 1e6, r.bpw,
                r.ratio_vs_bf16);
    std::printf("peak RSS %.1f MB, %.2f s, %d threads\n", r.peak_rss_bytes / 1e6, r.seconds, get_threads());
    if (r.calibrated) {
      std::printf("calibrated on %s: %lld tokens (%d windows of %d)\n", r.calibration.text.c_str(),
                  static_cast<long long>(r.calibration.tokens), r.calibration.windows, r.calibration.ctx);
    } else {
      std::printf("hint: calibration lowers the error a lot at the same size: --calib TEXT with --target-bpw "
                  "(docs/CALIBRATION.md)\n");
    }
  });
}

}  // namespace lsb::cli
