#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "eval/perplexity.h"
#include "io/mmap_file.h"
#include "lsb/error.h"
#include "runtime/session.h"
#include "runtime/threads.h"

namespace lsb::cli {

void add_eval(CLI::App& app) {
  struct Opts {
    std::string model, tokenizer, text;
    int ctx = 512, chunks = -1, threads = 0;
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* c = app.add_subcommand("eval", "Perplexity on a text file, computed the way llama.cpp's llama-perplexity does");
  c->add_option("model", o->model, "Hugging Face model folder, llama2.c .bin, or .lsb file")->required();
  c->add_option("--text", o->text, "text file (UTF-8), tokenized as one string with one BOS")->required();
  c->add_option("--tokenizer", o->tokenizer, "tokenizer file; default: the model's own");
  c->add_option("--ctx", o->ctx, "window length in tokens; the second half of each window is scored")->capture_default_str();
  c->add_option("--chunks", o->chunks, "score only the first N windows (default: all)");
  c->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  c->add_flag("--json", o->json, "print one JSON object");
  c->callback([o]() {
    set_threads(o->threads);
    const std::string text = read_small_file(o->text, 1ull << 31);
    if (text.empty()) fail(o->text, "text file is empty");
    Session s = open_session(o->model, o->tokenizer);
    const std::vector<int> tokens = s.tokenizer->encode(text, true);
    PerplexityOptions po;
    po.ctx = o->ctx;
    po.max_chunks = o->chunks;
    po.progress = !o->json;
    PerplexityResult r = perplexity(*s.model, tokens, po, o->text);
    if (o->json) {
      nlohmann::json j = {{"ppl", r.ppl},           {"ppl_stderr", r.ppl_stderr}, {"mean_nll", r.mean_nll},
                          {"n_tokens", r.n_tokens}, {"n_chunks", r.n_chunks},     {"n_scored", r.n_scored},
                          {"ctx", r.ctx},           {"seconds", r.seconds},       {"tok_per_s", r.tokens_per_second},
                          {"model", o->model},      {"text", o->text},            {"threads", get_threads()}};
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("%s: %lld tokens, %d windows of %d, %lld scored\n", o->text.c_str(),
                  static_cast<long long>(r.n_tokens), r.n_chunks, r.ctx, static_cast<long long>(r.n_scored));
      std::printf("PPL = %.4f +/- %.5f  (%.1f s, %.0f tok/s)\n", r.ppl, r.ppl_stderr, r.seconds, r.tokens_per_second);
    }
  });
}

}  // namespace lsb::cli
