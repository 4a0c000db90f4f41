#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>

#include <fmt/format.h>

#include "commands.h"
#include "model_options.h"
#include "base/error.h"
#include "model/generate.h"
#include "pipeline/open_model.h"
#include "runtime/threads.h"
#include "serve/chat_template.h"
#include "serve/stop_matcher.h"

namespace lsb::cli {

namespace {

std::atomic<bool> g_interrupted{false};
extern "C" void on_sigint(int) { g_interrupted = true; }

}  // namespace

void add_chat(CLI::App& app) {
  struct Opts {
    std::string model, tokenizer, chat_template, system;
    int ctx = 0, threads = 0, max_tokens = 0;
    float temp = 0.7f, top_p = 0.9f;
    int64_t seed = -1;
    bool verbose = false;
    ModelCliOptions mopt;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* c = app.add_subcommand(
      "chat",
      "Interactive chat in the terminal, with the model's chat template (or --chat-template). Type a message and "
      "press Enter; /reset starts a new conversation, /quit (or Ctrl-D) leaves; Ctrl-C stops the answer being "
      "written, not the program");
  c->add_option("model", o->model, "Hugging Face model folder, GGUF file, llama2.c .bin, or .lsb file")->required();
  c->add_option("--chat-template", o->chat_template,
                "template instead of the model's own: llama2, llama3, mistral, chatml, zephyr (needed when the model "
                "has none)");
  c->add_option("--system", o->system, "system prompt at the start of every conversation");
  c->add_option("-n,--max-tokens", o->max_tokens, "most tokens in one answer (default: until it ends or the context is full)")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--temp", o->temp, "sampling temperature; 0 = greedy")->capture_default_str()->check(CLI::Range(0.0, 2.0));
  c->add_option("--top-p", o->top_p, "nucleus sampling mass (1 = off)")->capture_default_str()->check(CLI::Range(0.0, 1.0));
  c->add_option("--seed", o->seed, "random seed (default: a new one each run)");
  c->add_option("--ctx", o->ctx, "context in tokens (default: the model's, at most 2048); older turns are dropped to fit")
      ->check(CLI::Range(2, 1 << 20));
  c->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  c->add_option("--tokenizer", o->tokenizer, "tokenizer.model or llama2.c tokenizer .bin; default: the model's own");
  c->add_flag("--verbose", o->verbose, "print each rendered prompt (markers and all) and the speed of each answer");
  o->mopt.add_to(c);
  c->callback([o]() {
    if (!o->chat_template.empty()) (void)serve::template_from_name(o->chat_template);
    set_threads(o->threads);
    Session s = open_session(o->model, o->tokenizer, true, o->mopt.get());
    const serve::TemplateChoice tc = serve::choose_template(o->chat_template, s.source->chat_template(), o->model);
    if (!tc.family)
      throw Error(fmt::format("{}; pass --chat-template NAME ({})", tc.problem, serve::template_names_list()));
    const ModelConfig& cfg = s.model->config();
    const int ctx = o->ctx > 0 ? o->ctx : std::min(cfg.max_seq_len > 0 ? cfg.max_seq_len : 2048, 2048);
    uint64_t seed = o->seed >= 0 ? static_cast<uint64_t>(o->seed) : std::random_device{}();

    // Ctrl-C sets a flag: generation polls it and stops; at the prompt the read is interrupted
    // (no SA_RESTART) and the line starts over. The program itself goes on.
    struct sigaction sa{};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, nullptr);

    const bool tty = isatty(STDIN_FILENO);
    std::fprintf(stderr,
                 "lsb chat: %s, chat template %s (%s), context %d tokens, %d threads.\n"
                 "/reset starts a new conversation, /quit or Ctrl-D leaves, Ctrl-C stops an answer.\n",
                 o->model.c_str(), std::string(serve::template_name(*tc.family)).c_str(), tc.origin.c_str(), ctx,
                 get_threads());
    std::vector<serve::ChatMessage> history;
    auto reset = [&] {
      history.clear();
      if (!o->system.empty()) history.push_back({"system", o->system});
    };
    reset();
    std::string line;
    for (;;) {
      if (tty) {
        std::printf("\n> ");
        std::fflush(stdout);
      }
      g_interrupted = false;
      if (!std::getline(std::cin, line)) {
        if (g_interrupted) {  // Ctrl-C at the prompt: a fresh line, not the end
          std::cin.clear();
          clearerr(stdin);
          std::printf("\n(Ctrl-C stops an answer; /quit or Ctrl-D leaves)");
          continue;
        }
        break;
      }
      if (line == "/quit" || line == "/exit") break;
      if (line == "/reset") {
        reset();
        std::printf("(new conversation)\n");
        std::fflush(stdout);
        continue;
      }
      if (line == "/help") {
        std::printf("/reset: new conversation; /quit: leave; Ctrl-C: stop the answer\n");
        continue;
      }
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      history.push_back({"user", line});

      // The oldest turns go when the conversation no longer fits (the system prompt stays).
      serve::RenderedChat chat;
      std::vector<int> ids;
      const int min_answer = std::min(64, ctx / 4);
      size_t dropped = 0;
      for (;;) {
        chat = serve::render_chat(*tc.family, history);
        ids = serve::encode_chat(chat, *s.tokenizer);
        if (static_cast<int>(ids.size()) + min_answer <= ctx) break;
        const size_t first = !history.empty() && history.front().role == "system" ? 1 : 0;
        if (history.size() - first <= 1) break;
        history.erase(history.begin() + static_cast<std::ptrdiff_t>(first));
        ++dropped;
      }
      if (static_cast<int>(ids.size()) + 1 > ctx) {
        std::printf("(the message is too long for the context of %d tokens)\n", ctx);
        history.pop_back();
        continue;
      }
      if (dropped) std::fprintf(stderr, "(%zu older messages dropped to fit the context)\n", dropped);
      if (o->verbose) std::fprintf(stderr, "[prompt, %zu tokens]\n%s\n[end of prompt]\n", ids.size(), chat.text().c_str());

      serve::StopMatcher stops(chat.end_of_turn);
      GenerateOptions g;
      const int room = ctx - static_cast<int>(ids.size());
      g.n_new = o->max_tokens > 0 ? std::min(o->max_tokens, room) : room;
      g.temperature = o->temp;
      g.top_p = o->top_p;
      g.seed = seed++;
      g.stop_ids = serve::end_of_turn_ids(chat, *s.tokenizer);
      g.echo_prompt = false;
      g.cancel = [&] { return g_interrupted.load() || stops.stopped(); };
      std::string answer;
      auto print = [&](const std::string& t) {
        answer += t;
        std::fwrite(t.data(), 1, t.size(), stdout);
        std::fflush(stdout);
      };
      const GenerateResult r = generate(*s.model, *s.tokenizer, ids, g, [&](const std::string& t) { print(stops.feed(t)); });
      print(stops.flush());
      const bool interrupted = g_interrupted.exchange(false);
      std::printf(interrupted ? " [stopped]\n" : "\n");
      std::fflush(stdout);
      if (o->verbose)
        std::fprintf(stderr, "[%zu tokens, %.1f tok/s, %s]\n", r.tokens.size(), r.decode_tok_per_s,
                     interrupted ? "stopped" : r.stop_reason.c_str());
      // What was shown is what the model said, also when it was stopped.
      history.push_back({"assistant", answer});
    }
    if (tty) std::printf("\n");
  });
}

}  // namespace lsb::cli
