#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <thread>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "model_options.h"
#include "base/error.h"
#include "base/sysinfo.h"
#include "kernels/dense.h"
#include "pipeline/open_model.h"
#include "runtime/threads.h"
#include "serve/engine.h"
#include "serve/server.h"

namespace lsb::cli {

namespace {

// The id clients name the model by: the file or folder name without .lsb/.gguf/.bin.
std::string default_model_name(const std::string& path) {
  std::filesystem::path p(path);
  if (!p.has_filename()) p = p.parent_path();
  std::string name = p.filename().string();
  for (const char* ext : {".lsb", ".gguf", ".bin", ".safetensors"})
    if (name.size() > std::strlen(ext) && name.ends_with(ext)) name.resize(name.size() - std::strlen(ext));
  return name.empty() ? "model" : name;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

// Bytes the HTTP side may hold at once beyond the engine: per connection its request body (and
// the parsed JSON, a few times the body), plus a fixed allowance for the server's threads and
// buffers. Under --mem-budget the model gets what is left.
uint64_t server_reserve(size_t max_body, int http_threads) {
  return (8ull << 20) + static_cast<uint64_t>(http_threads) * 3 * max_body;
}

}  // namespace

void add_serve(CLI::App& app) {
  struct Opts {
    std::string model, tokenizer, host = "127.0.0.1", api_key, chat_template, model_name;
    int port = 8080, ctx = 0, threads = 0, queue = 16, http_threads = 16;
    uint64_t max_body = 256 * 1024;
    bool json = false, quiet = false;
    ModelCliOptions mopt;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* c = app.add_subcommand(
      "serve",
      "HTTP server with the OpenAI API (/v1/completions, /v1/chat/completions, /v1/models), /health and a chat page "
      "at /. Requests wait their turn in a first-in first-out queue and run one at a time; under --mem-budget the "
      "whole server stays within the budget");
  c->add_option("model", o->model, "Hugging Face model folder, GGUF file, llama2.c .bin, or .lsb file")->required();
  c->add_option("--host", o->host, "address to listen on (anything but loopback exposes the model to the network)")
      ->capture_default_str();
  c->add_option("--port", o->port, "port (0: any free port, printed at startup)")->capture_default_str()->check(CLI::Range(0, 65535));
  c->add_option("--ctx", o->ctx, "context of one request, prompt and answer, in tokens (default: the model's, at most 2048)")
      ->check(CLI::Range(2, 1 << 20));
  c->add_option("-t,--threads", o->threads, "compute threads (default: all cores)");
  c->add_option("--api-key", o->api_key,
                "require 'Authorization: Bearer KEY' on /v1/ requests (default: the LSB_API_KEY environment variable "
                "if set, else no key)");
  c->add_option("--chat-template", o->chat_template,
                "chat template for /v1/chat/completions instead of the model's own: llama2, llama3, mistral, chatml, "
                "zephyr");
  c->add_option("--model-name", o->model_name, "model id in /v1/models and responses (default: the file name)");
  c->add_option("--queue", o->queue, "requests that may wait for their turn; more get 503")->capture_default_str()->check(CLI::Range(0, 100000));
  c->add_option("--http-threads", o->http_threads, "connections served at once")->capture_default_str()->check(CLI::Range(1, 1024));
  c->add_option("--max-body", o->max_body, "largest request body (e.g. 256K, 1M); larger ones get 413")
      ->capture_default_str()
      ->transform(CLI::AsSizeValue(false))
      ->check(CLI::Range(uint64_t{1024}, uint64_t{1} << 30));
  c->add_option("--tokenizer", o->tokenizer, "tokenizer.model or llama2.c tokenizer .bin; default: the model's own");
  o->mopt.add_to(c);
  c->add_flag("--json", o->json, "print one JSON line with the address and settings on stdout once listening");
  c->add_flag("-q,--quiet", o->quiet, "no line per request on stderr");
  c->callback([o]() {
    if (o->api_key.empty())
      if (const char* k = std::getenv("LSB_API_KEY")) o->api_key = k;
    const auto choice_name = o->chat_template;
    if (!choice_name.empty()) (void)serve::template_from_name(choice_name);  // a bad name fails before loading

    RunOptions ro = o->mopt.get();
    const uint64_t reserve = server_reserve(o->max_body, o->http_threads);
    if (ro.mem_budget > 0) {
      if (ro.mem_budget <= reserve)
        throw Error(fmt::format("--mem-budget {:.0f} MiB leaves nothing for the model: the server keeps {:.0f} MiB for "
                                "{} connections with bodies of up to {} KiB (--http-threads, --max-body)",
                                ro.mem_budget / 1048576.0, reserve / 1048576.0, o->http_threads, o->max_body / 1024));
      ro.mem_budget -= reserve;
    }
    // SIGINT and SIGTERM are taken by one thread that stops the server; every thread started from
    // here on (the engine's, the HTTP pool) inherits the blocked mask.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    signal(SIGPIPE, SIG_IGN);

    // The model's share of --mem-budget is what the streamer's messages name: say where the rest went.
    auto with_reserve = [&](const Error& e) {
      if (ro.mem_budget == 0) return e;
      return Error(fmt::format("{} (lsb serve keeps {:.0f} MiB of --mem-budget {:.0f} MiB for {} connections with bodies "
                               "of up to {} KiB: --http-threads, --max-body)",
                               e.what(), reserve / 1048576.0, (ro.mem_budget + reserve) / 1048576.0, o->http_threads,
                               o->max_body / 1024));
    };
    std::optional<Session> opened;
    try {
      opened.emplace(open_session(o->model, o->tokenizer, true, ro));
    } catch (const Error& e) {
      throw with_reserve(e);
    }
    Session& s = *opened;
    const ModelConfig& cfg = s.model->config();
    const int ctx = o->ctx > 0 ? o->ctx : std::min(cfg.max_seq_len > 0 ? cfg.max_seq_len : 2048, 2048);
    serve::TemplateChoice tc = serve::choose_template(choice_name, s.source->chat_template(), o->model);
    std::optional<serve::Engine> started;
    try {
      started.emplace(*s.model, *s.tokenizer, serve::EngineOptions{ctx, o->queue, o->threads});
    } catch (const Error& e) {
      throw with_reserve(e);
    }
    serve::Engine& engine = *started;

    serve::ServerOptions so;
    so.host = o->host;
    so.port = o->port;
    so.api_key = o->api_key;
    so.model_name = o->model_name.empty() ? default_model_name(o->model) : o->model_name;
    so.max_body = o->max_body;
    so.http_threads = o->http_threads;
    so.chat_template = tc.family;
    so.chat_template_problem = tc.problem;
    so.log = !o->quiet;
    serve::Server server(*s.tokenizer, engine, so);
    const int port = server.bind();

    std::atomic<bool> stopping{false};
    std::thread stopper([&] {
      int sig = 0;
      sigwait(&stop_signals, &sig);
      stopping = true;
      std::fprintf(stderr, "lsb serve: %s: stopping\n", sig == SIGINT ? "interrupted" : "terminated");
      engine.shutdown();
      server.stop();
    });

    const std::string host_shown = o->host.find(':') != std::string::npos ? "[" + o->host + "]" : o->host;
    const std::string url = fmt::format("http://{}:{}/", host_shown, port);
    const std::string tmpl = tc.family ? fmt::format("{} ({})", serve::template_name(*tc.family), tc.origin)
                                       : "none: " + tc.problem + " (/v1/chat/completions answers 400)";
    std::fprintf(stderr, "lsb serve: %s as '%s' on %s\n  context %d tokens, %d threads, %s; chat template %s\n",
                 o->model.c_str(), so.model_name.c_str(), url.c_str(), ctx, engine.threads(),
                 kernels::simd_target_name(), tmpl.c_str());
    if (o->mopt.streaming())
      std::fprintf(stderr, "  memory: --mem-budget %.0f MiB = model and its buffers %.0f MiB + server %.0f MiB\n",
                   (ro.mem_budget + reserve) / 1048576.0, ro.mem_budget / 1048576.0, reserve / 1048576.0);
    if (!is_loopback(o->host) && o->api_key.empty())
      std::fprintf(stderr, "  warning: listening on %s without --api-key: anyone who can reach it can use the model\n",
                   o->host.c_str());
    if (o->json) {
      print_json_line(nlohmann::json{{"url", url},
                                     {"host", o->host},
                                     {"port", port},
                                     {"model", so.model_name},
                                     {"ctx", ctx},
                                     {"threads", engine.threads()},
                                     {"chat_template", tc.family ? nlohmann::json(std::string(serve::template_name(*tc.family)))
                                                                 : nlohmann::json(nullptr)},
                                     {"mem_budget", o->mopt.mem_budget},
                                     {"pid", static_cast<int64_t>(getpid())}});
    }
    std::fflush(stdout);
    server.listen();
    // listen() returns after stop(), which the stopper thread calls on a signal; if it returned
    // for another reason, the stopper is still waiting: wake it.
    if (!stopping) pthread_kill(stopper.native_handle(), SIGTERM);
    stopper.join();
    std::fprintf(stderr, "lsb serve: stopped; peak RSS %.1f MiB\n", peak_rss_bytes() / 1048576.0);
  });
}

}  // namespace lsb::cli
