#include <cstdio>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "model_options.h"
#include "eval/compare.h"
#include "eval/perplexity.h"
#include "eval/report.h"
#include "eval/tensor_quality.h"
#include "io/mmap_file.h"
#include "base/error.h"
#include "pipeline/open_model.h"
#include "runtime/threads.h"

namespace lsb::cli {
namespace {

struct EvalOpts {
  std::string model, tokenizer, text, ref, report;
  int ctx = 512, chunks = -1, threads = 0;
  bool json = false, layers = false, decode = false;
  ModelCliOptions mopt;
};

nlohmann::json ppl_json(const PerplexityResult& r) {
  return {{"ppl", r.ppl}, {"ppl_stderr", r.ppl_stderr}, {"mean_nll", r.mean_nll}};
}

void write_file_atomically(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f || !f.write(content.data(), static_cast<std::streamsize>(content.size())))
      fail(path, "cannot write the report");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail(path, "cannot write the report");
}

// Compressed model against its original in one process: PPL of both, KLD, top-1, layer cosine.
void run_compare(const EvalOpts& o, Session& s, const std::vector<int>& tokens) {
  Session ref = open_session(o.ref, "", /*need_tokenizer=*/false);
  CompareOptions co;
  co.ctx = o.ctx;
  co.max_chunks = o.chunks;
  co.layers = o.layers || !o.report.empty();
  co.progress = !o.json;
  co.decode = o.decode;
  const CompareResult c = compare_models(*ref.model, *s.model, tokens, co, o.text);
  if (!o.report.empty()) {
    ReportInput in{o.model, o.ref, o.text, c, compare_tensors(*ref.source, *s.source)};
    write_file_atomically(o.report, render_html_report(in));
  }
  if (o.json) {
    nlohmann::json j = ppl_json(c.model);
    j.update({{"ref", ppl_json(c.ref)},
              {"delta_ppl", c.delta_ppl},
              {"ppl_ratio", c.ppl_ratio},
              {"kld_mean", c.kld_mean},
              {"kld_stderr", c.kld_stderr},
              {"kld_median", c.kld_median},
              {"kld_p90", c.kld_p90},
              {"kld_p95", c.kld_p95},
              {"kld_p99", c.kld_p99},
              {"kld_max", c.kld_max},
              {"top1_agreement", c.top1_agreement},
              {"n_tokens", c.model.n_tokens},
              {"n_chunks", c.model.n_chunks},
              {"n_scored", c.model.n_scored},
              {"ctx", c.model.ctx},
              {"seconds", c.model.seconds},
              {"model", o.model},
              {"ref_model", o.ref},
              {"text", o.text},
              {"decode", o.decode}});
    if (co.layers) j["layer_cosine"] = c.layer_cosine;
    if (!o.report.empty()) j["report"] = o.report;
    print_json(j);
    return;
  }
  std::printf("%s: %lld tokens, %d windows of %d, %lld scored\n", o.text.c_str(), static_cast<long long>(c.model.n_tokens),
              c.model.n_chunks, c.model.ctx, static_cast<long long>(c.model.n_scored));
  std::printf("PPL model     = %.4f +/- %.5f\nPPL original  = %.4f +/- %.5f\n", c.model.ppl, c.model.ppl_stderr, c.ref.ppl,
              c.ref.ppl_stderr);
  std::printf("delta PPL     = %+.4f (ratio %.4f)\n", c.delta_ppl, c.ppl_ratio);
  std::printf("KLD mean      = %.6f +/- %.6f\nKLD median    = %.6f\nKLD p90/p95/p99 = %.5f / %.5f / %.5f, max %.4f\n",
              c.kld_mean, c.kld_stderr, c.kld_median, c.kld_p90, c.kld_p95, c.kld_p99, c.kld_max);
  std::printf("same top-1    = %.3f %%\n", 100.0 * c.top1_agreement);
  for (size_t l = 0; l < c.layer_cosine.size(); ++l) std::printf("layer %2zu cosine %.6f\n", l, c.layer_cosine[l]);
  if (!o.report.empty()) std::printf("report written to %s\n", o.report.c_str());
}

}  // namespace

void add_eval(CLI::App& app) {
  auto o = std::make_shared<EvalOpts>();
  CLI::App* c = app.add_subcommand(
      "eval", "Perplexity on a text file, computed the way llama.cpp's llama-perplexity does; with --ref, also KL "
              "divergence and top-1 agreement against the original model");
  c->add_option("model", o->model, "Hugging Face model folder, GGUF file (F32/F16/BF16/Q8_0), llama2.c .bin, or .lsb file")->required();
  c->add_option("--text", o->text, "text file (UTF-8), tokenized as one string with one BOS")->required();
  c->add_option("--tokenizer", o->tokenizer, "tokenizer file; default: the model's own");
  c->add_option("--ctx", o->ctx, "window length in tokens; the second half of each window is scored")->capture_default_str();
  c->add_option("--chunks", o->chunks, "score only the first N windows (default: all)");
  c->add_option("--ref", o->ref, "original model to compare against (KL divergence, top-1 agreement, delta PPL)");
  c->add_flag("--layers", o->layers, "with --ref: cosine similarity of the hidden state after every layer");
  c->add_option("--report", o->report, "with --ref: write a self-contained HTML report to this file");
  c->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  c->add_flag("--decode", o->decode,
              "run each window one token at a time, as generation does, so that the single-token kernels are the "
              "ones measured (slower)");
  o->mopt.add_to(c);
  c->add_flag("--json", o->json, "print one JSON object");
  c->callback([o]() {
    if ((o->layers || !o->report.empty()) && o->ref.empty()) fail("eval", "--layers and --report need --ref ORIGINAL");
    if (o->decode && (o->layers || !o->report.empty()))
      fail("eval", "--decode cannot be combined with --layers or --report (they compare whole windows)");
    // The original is mapped whole and every tensor of both is read for the report: nothing a
    // budget could hold.
    if (!o->ref.empty() && o->mopt.streaming())
      fail(o->ref, "--ref cannot be combined with --mem-budget: the original model is memory-mapped whole, outside "
                   "any budget (compare without --mem-budget)");
    set_threads(o->threads);
    const std::string text = read_small_file(o->text, 1ull << 31);
    if (text.empty()) fail(o->text, "text file is empty");
    Session s = open_session(o->model, o->tokenizer, true, o->mopt.get());
    const std::vector<int> tokens = s.tokenizer->encode(text, true);
    if (!o->ref.empty()) return run_compare(*o, s, tokens);
    PerplexityOptions po;
    po.ctx = o->ctx;
    po.max_chunks = o->chunks;
    po.progress = !o->json;
    po.decode = o->decode;
    PerplexityResult r = perplexity(*s.model, tokens, po, o->text);
    if (o->json) {
      nlohmann::json j = ppl_json(r);
      j.update({{"n_tokens", r.n_tokens}, {"n_chunks", r.n_chunks}, {"n_scored", r.n_scored}, {"ctx", r.ctx},
                {"seconds", r.seconds}, {"tok_per_s", r.tokens_per_second}, {"model", o->model}, {"text", o->text},
                {"threads", get_threads()}, {"decode", o->decode}});
      print_json(j);
    } else {
      std::printf("%s: %lld tokens, %d windows of %d, %lld scored\n", o->text.c_str(),
                  static_cast<long long>(r.n_tokens), r.n_chunks, r.ctx, static_cast<long long>(r.n_scored));
      std::printf("PPL = %.4f +/- %.5f  (%.1f s, %.0f tok/s)\n", r.ppl, r.ppl_stderr, r.seconds, r.tokens_per_second);
    }
  });
}

}  // namespace lsb::cli
