#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "model_options.h"
#include "kernels/dense.h"
#include "model/generate.h"
#include "pipeline/open_model.h"
#include "runtime/threads.h"

namespace lsb::cli {

void add_run(CLI::App& app) {
  struct Opts {
    std::string model, tokenizer, prompt;
    int n = 128, threads = 0;
    float temp = 0.8f, top_p = 0.9f;
    uint64_t seed = 42;
    bool json = false;
    ModelCliOptions mopt;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* c = app.add_subcommand("run", "Generate text: prints the prompt and its continuation as it is generated");
  c->add_option("model", o->model, "Hugging Face model folder, GGUF file (F32/F16/BF16/Q8_0), llama2.c .bin, or .lsb file")->required();
  c->add_option("--tokenizer", o->tokenizer, "tokenizer.model (SentencePiece) or llama2.c tokenizer .bin; default: the model's own");
  c->add_option("-p,--prompt", o->prompt, "prompt text");
  c->add_option("-n,--n-predict", o->n, "number of new tokens to generate")->capture_default_str()->check(CLI::NonNegativeNumber);
  c->add_option("--temp", o->temp, "sampling temperature; 0 = greedy")->capture_default_str()->check(CLI::NonNegativeNumber);
  c->add_option("--top-p", o->top_p, "nucleus sampling mass (1 = off)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  c->add_option("--seed", o->seed, "random seed for sampling")->capture_default_str();
  c->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  o->mopt.add_to(c);
  c->add_flag("--json", o->json, "print one JSON object instead of streaming text");
  c->callback([o]() {
    set_threads(o->threads);
    Session s = open_session(o->model, o->tokenizer, true, o->mopt.get());
    GenerateOptions g;
    g.n_new = o->n;
    g.temperature = o->temp;
    g.top_p = o->top_p;
    g.seed = o->seed;
    auto on_text = [&](const std::string& t) {
      if (o->json) return;
      std::fwrite(t.data(), 1, t.size(), stdout);
      std::fflush(stdout);
    };
    GenerateResult r = generate(*s.model, *s.tokenizer, o->prompt, g, on_text);
    if (o->json) {
      nlohmann::json j = {{"text", r.text},
                          {"tokens", r.tokens},
                          {"prompt_tokens", r.prompt_tokens},
                          {"n_prompt", r.prompt_tokens.size()},
                          {"n_generated", r.tokens.size()},
                          {"stop_reason", r.stop_reason},
                          {"prompt_tok_per_s", r.prompt_tok_per_s},
                          {"decode_tok_per_s", r.decode_tok_per_s},
                          {"threads", get_threads()},
                          {"simd", kernels::simd_target_name()}};
      print_json(j);
    } else {
      std::printf("\n");
      std::fprintf(stderr, "prompt: %zu tokens, %.1f tok/s | decode: %zu tokens, %.1f tok/s | %d threads, %s\n",
                   r.prompt_tokens.size(), r.prompt_tok_per_s, r.tokens.size(), r.decode_tok_per_s, get_threads(),
                   kernels::simd_target_name());
    }
  });
}

}  // namespace lsb::cli
