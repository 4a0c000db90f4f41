#include "serve/server.h"

#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <arpa/inet.h>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <httplib.h>

#include "base/error.h"
#include "serve/api.h"

namespace lsb::serve {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status();
  res.set_content(dump(e.body()), "application/json");
}

std::string random_hex(size_t n) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* digits = "0123456789abcdef";
  std::string s(n, '0');
  for (char& c : s) c = digits[rng() & 15];
  return s;
}

uint64_t random_seed() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

// Compares in time independent of where the strings differ, so the key cannot be found byte by
// byte from response times (its length can; keys are long and random).
bool same_key(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

// The socket of the connection a request came on. cpp-httplib (0.11) does not hand it to
// handlers, but while a handler runs its connection is open, and the connection is the one whose
// peer and local ports are the request's: found among the process's sockets by those.
int connection_socket(const httplib::Request& req) {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  int found = -1;
  while (dirent* e = readdir(d)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end) continue;
    struct stat st{};
    if (fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    sockaddr_storage peer{}, local{};
    socklen_t pl = sizeof(peer), ll = sizeof(local);
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&local), &ll) != 0) continue;
    auto port_of = [](const sockaddr_storage& a) {
      if (a.ss_family == AF_INET) return static_cast<int>(ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port));
      if (a.ss_family == AF_INET6) return static_cast<int>(ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port));
      return -1;
    };
    if (port_of(peer) == req.remote_port && port_of(local) == req.local_port) {
      found = static_cast<int>(fd);
      break;
    }
  }
  closedir(d);
  return found;
}

// True once the client has closed its end (or the connection broke).
bool peer_gone(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, static_cast<short>(POLLIN | POLLRDHUP), 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)) return true;
  char c;
  return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

}  // namespace

struct Server::Impl {
  const Tokenizer& tok;
  Engine& engine;
  ServerOptions opt;
  httplib::Server http;
  int port = -1;
  // stop() may come before listen() has started serving (a signal right at startup).
  std::atomic<bool> stop_requested{false}, listen_started{false}, listen_returned{false};
  int64_t started = std::time(nullptr);

  Impl(const Tokenizer& t, Engine& e, ServerOptions o) : tok(t), engine(e), opt(std::move(o)) {}

  void log(const std::string& line) const {
    if (opt.log) std::fprintf(stderr, "%s\n", line.c_str());
  }

  json model_json() const {
    return {{"id", opt.model_name}, {"object", "model"}, {"created", started}, {"owned_by", "lsb"}};
  }

  void setup();
  void completion(const httplib::Request& req, httplib::Response& res, Endpoint ep);
};

void Server::Impl::setup() {
  http.new_task_queue = [n = opt.http_threads] { return new httplib::ThreadPool(static_cast<size_t>(n)); };
  http.set_payload_max_length(opt.max_body);
  http.set_read_timeout(30);
  http.set_write_timeout(30);
  // Streamed chunks go out as written. With Nagle's algorithm (cpp-httplib's default) a chunk
  // written while the previous one is unacknowledged waits for the client's delayed ACK: over a
  // kept connection, a 1-token prompt's first chunk reached a local client 8.3 ms after the
  // request was sent (the engine's part 1.5 ms), 4.7 ms with TCP_NODELAY.
  http.set_tcp_nodelay(true);

  // The API key guards the API; /health and the page (which asks for the key) stay open.
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (opt.api_key.empty() || req.path.rfind("/v1/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
    const std::string auth = req.get_header_value("Authorization");
    const std::string prefix = "Bearer ";
    if (auth.rfind(prefix, 0) == 0 && same_key(auth.substr(prefix.size()), opt.api_key))
      return httplib::Server::HandlerResponse::Unhandled;
    res.set_header("WWW-Authenticate", "Bearer");
    send_error(res, ApiError(401,
                             auth.empty() ? "no API key: send the header 'Authorization: Bearer KEY'"
                                          : "incorrect API key provided",
                             {}, "invalid_api_key"));
    log(fmt::format("{} {} -> 401 (API key)", req.method, req.path));
    return httplib::Server::HandlerResponse::Handled;
  });

  // Bodies for the statuses cpp-httplib answers by itself (404, 413, 400 for a broken request
  // line), in OpenAI's shape; responses that already have a body keep it.
  http.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string msg, code;
    switch (res.status) {
      case 404: msg = fmt::format("no route for {} {}", req.method, req.path), code = "not_found"; break;
      case 413: msg = fmt::format("the request body is larger than {} bytes", opt.max_body), code = "request_too_large"; break;
      case 414: msg = "the request URI is too long", code = "uri_too_long"; break;
      default: msg = fmt::format("HTTP {}", res.status); break;
    }
    send_error(res, ApiError(res.status, msg, {}, code));
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([this](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, ApiError(500, what, {}, "internal_error", "server_error"));
    log(fmt::format("{} {} -> 500 ({})", req.method, req.path, what));
  });

  http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(chat_page_html(), "text/html; charset=utf-8");
  });
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const Engine::Stats s = engine.stats();
    json j = {{"status", "ok"},
              {"model", opt.model_name},
              {"ctx", engine.ctx()},
              {"threads", engine.threads()},
              {"chat_template", opt.chat_template ? json(std::string(template_name(*opt.chat_template))) : json(nullptr)},
              {"api_key_required", !opt.api_key.empty()},
              {"queued", s.queued},
              {"busy", s.busy},
              {"completed", s.completed},
              {"failed", s.failed},
              {"cancelled", s.cancelled},
              {"refused", s.refused}};
    res.set_content(dump(j), "application/json");
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(dump(json{{"object", "list"}, {"data", json::array({model_json()})}}), "application/json");
  });
  http.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] != opt.model_name)
      return send_error(res, ApiError(404, fmt::format("the model '{}' does not exist; this server serves '{}'",
                                                       req.matches[1].str(), opt.model_name),
                                      "model", "model_not_found"));
    res.set_content(dump(model_json()), "application/json");
  });
  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completion(req, res, Endpoint::Completions);
  });
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    completion(req, res, Endpoint::ChatCompletions);
  });
}

void Server::Impl::completion(const httplib::Request& req, httplib::Response& res, Endpoint ep) {
  const auto t0 = Clock::now();
  const char* what = ep == Endpoint::Completions ? "completion" : "chat";
  CompletionRequest r;
  JobSpec spec;
  std::string echo_text;
  try {
    r = parse_request(req.body, ep);
    if (!r.model.empty() && r.model != opt.model_name)
      throw ApiError(404, fmt::format("the model '{}' does not exist; this server serves '{}'", r.model, opt.model_name),
                     "model", "model_not_found");
    spec.stop = r.stop;
    if (ep == Endpoint::ChatCompletions) {
      if (!opt.chat_template)
        throw ApiError(400,
                       fmt::format("{}; start lsb serve with --chat-template NAME ({}), or use /v1/completions",
                                   opt.chat_template_problem, template_names_list()),
                       "messages", "no_chat_template");
      const RenderedChat chat = render_chat(*opt.chat_template, r.messages);
      spec.prompt = encode_chat(chat, tok);
      spec.stop_ids = end_of_turn_ids(chat, tok);
      spec.stop.insert(spec.stop.end(), chat.end_of_turn.begin(), chat.end_of_turn.end());
    } else if (r.prompt_is_ids) {
      for (size_t i = 0; i < r.prompt_ids.size(); ++i)
        if (r.prompt_ids[i] >= tok.vocab_size())
          throw ApiError(400, fmt::format("'prompt[{}]': token id {} is outside the vocabulary (0..{})", i,
                                          r.prompt_ids[i], tok.vocab_size() - 1),
                         fmt::format("prompt[{}]", i), "invalid_value");
      spec.prompt = r.prompt_ids;
      if (r.echo) echo_text = tok.decode(spec.prompt);
    } else {
      spec.prompt = tok.encode(r.prompt, true);
      if (r.echo) echo_text = r.prompt;
    }
    const int64_t ctx = engine.ctx(), n_prompt = static_cast<int64_t>(spec.prompt.size());
    if (n_prompt >= ctx)
      throw ApiError(400,
                     fmt::format("this model's context is {} tokens and the prompt alone has {}; shorten it, or start "
                                 "lsb serve with a larger --ctx",
                                 ctx, n_prompt),
                     ep == Endpoint::Completions ? "prompt" : "messages", "context_length_exceeded");
    int64_t max_new = ctx - n_prompt;  // chat: until the answer ends or the context is full
    if (r.max_tokens) {
      if (*r.max_tokens > ctx - n_prompt)
        throw ApiError(400,
                       fmt::format("this model's context is {} tokens; the prompt has {} and max_tokens asks for {} "
                                   "more (at most {} fit)",
                                   ctx, n_prompt, *r.max_tokens, ctx - n_prompt),
                       "max_tokens", "context_length_exceeded");
      max_new = *r.max_tokens;
    } else if (ep == Endpoint::Completions) {
      max_new = std::min<int64_t>(16, max_new);  // OpenAI's default for completions
    }
    spec.max_new = static_cast<int>(max_new);
    spec.temperature = static_cast<float>(r.temperature);
    spec.top_p = static_cast<float>(r.top_p);
    spec.seed = r.seed ? *r.seed : random_seed();
    spec.ignore_eos = r.ignore_eos;
    spec.stream = r.stream;
  } catch (const ApiError& e) {
    log(fmt::format("POST {} -> {} ({})", req.path, e.status(), e.what()));
    return send_error(res, e);
  } catch (const Error& e) {  // the template refused the conversation, the tokenizer the text
    log(fmt::format("POST {} -> 400 ({})", req.path, e.what()));
    return send_error(res, ApiError(400, e.what()));
  }

  ResponseMeta meta{(ep == Endpoint::Completions ? "cmpl-" : "chatcmpl-") + random_hex(24), std::time(nullptr),
                    opt.model_name, ep};
  const int64_t n_prompt = static_cast<int64_t>(spec.prompt.size());
  auto usage_of = [n_prompt](const JobResult& jr) { return Usage{n_prompt, jr.completion_tokens}; };
  auto timings_of = [](const JobResult& jr) {
    return Timings{jr.prompt_seconds * 1e3, jr.prompt_tok_per_s, jr.decode_seconds * 1e3, jr.decode_tok_per_s,
                   jr.prompt_tokens, jr.completion_tokens};
  };
  auto log_done = [this, t0, path = req.path, what](int status, const JobResult& jr, const char* how) {
    log(fmt::format("POST {} -> {} {} {}: prompt {} tok ({:.0f} tok/s), answer {} tok ({:.1f} tok/s), {}, {:.0f} ms",
                    path, status, how, what, jr.prompt_tokens, jr.prompt_tok_per_s, jr.completion_tokens,
                    jr.decode_tok_per_s, jr.error.empty() ? jr.finish_reason : "error: " + jr.error,
                    std::chrono::duration<double, std::milli>(Clock::now() - t0).count()));
  };

  std::shared_ptr<Job> job;
  try {
    job = engine.submit(spec);
  } catch (const QueueFull& e) {
    res.set_header("Retry-After", "1");
    log(fmt::format("POST {} -> 503 ({})", req.path, e.what()));
    return send_error(res, ApiError(503, fmt::format("the server is busy: {}", e.what()), {}, "queue_full", "server_error"));
  }

  if (!r.stream) {
    // Waits for the answer, watching the connection: a client that hangs up cancels its request.
    const int fd = connection_socket(req);
    std::string text = echo_text;
    while (!job->wait(std::chrono::milliseconds(50), text))
      if (!job->cancelled() && peer_gone(fd)) job->cancel();
    const JobResult& jr = job->result();
    if (job->cancelled()) {
      log_done(499, jr, "(client gone)");
      res.status = 499;  // nobody reads it; nginx's "client closed request"
      return;
    }
    if (!jr.error.empty()) {
      log_done(500, jr, "failed");
      return send_error(res, ApiError(500, "generation failed: " + jr.error, {}, "generation_failed", "server_error"));
    }
    if (jr.finish_reason == "cancelled") {
      log_done(503, jr, "(shutting down)");
      return send_error(res, ApiError(503, "the server is shutting down", {}, "shutting_down", "server_error"));
    }
    res.set_content(dump(completion_body(meta, text, jr.finish_reason, usage_of(jr), timings_of(jr))),
                    "application/json");
    log_done(200, jr, "");
    return;
  }

  // Server-sent events: one chunk per piece of text as it comes, the finish reason, the usage
  // (when asked), then [DONE]. A write that fails, or a socket found closed, cancels the job.
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  struct StreamState {
    bool first = true;
    std::string pending;
  };
  auto st = std::make_shared<StreamState>();
  st->pending = echo_text;
  const bool include_usage = r.include_usage;
  res.set_chunked_content_provider(
      "text/event-stream",
      [=, this](size_t, httplib::DataSink& sink) {
        auto send = [&](const json& j) {
          const std::string line = "data: " + dump(j) + "\n\n";
          return sink.write(line.data(), line.size());
        };
        const bool done = job->wait(std::chrono::milliseconds(100), st->pending);
        if (!sink.is_writable()) {
          job->cancel();
          return false;
        }
        if (!st->pending.empty() || (st->first && ep == Endpoint::ChatCompletions)) {
          if (!send(chunk_body(meta, st->pending, nullptr, st->first))) {
            job->cancel();
            return false;
          }
          if (!st->pending.empty()) job->delivered();  // the worker may go on (Job::kFirstHandoff)
          st->first = false;
          st->pending.clear();
        }
        if (!done) return true;
        const JobResult& jr = job->result();
        bool ok = true;
        if (!jr.error.empty()) {
          ok = send(ApiError(500, "generation failed: " + jr.error, {}, "generation_failed", "server_error").body());
          log_done(500, jr, "failed (streamed)");
        } else if (jr.finish_reason == "cancelled") {
          ok = send(ApiError(503, "the server is shutting down", {}, "shutting_down", "server_error").body());
          log_done(503, jr, "(shutting down)");
        } else {
          ok = send(chunk_body(meta, "", &jr.finish_reason, false));
          if (ok && include_usage) ok = send(usage_chunk_body(meta, usage_of(jr), timings_of(jr)));
          log_done(200, jr, "streamed");
        }
        static const std::string kDone = "data: [DONE]\n\n";
        if (ok) ok = sink.write(kDone.data(), kDone.size());
        if (ok) sink.done();
        return ok;
      },
      [job, this, t0, path = req.path, what](bool success) {
        if (success) return;
        job->cancel();  // the client went away (or the server stops): the job ends at its next token
        log(fmt::format("POST {} -> 499 (client gone) streamed {}: cancelled after {:.0f} ms", path, what,
                        std::chrono::duration<double, std::milli>(Clock::now() - t0).count()));
      });
}

Server::Server(const Tokenizer& tok, Engine& engine, ServerOptions opt)
    : impl_(std::make_unique<Impl>(tok, engine, std::move(opt))) {
  impl_->setup();
}

Server::~Server() { stop(); }

int Server::bind() {
  const ServerOptions& o = impl_->opt;
  if (o.port == 0) {
    impl_->port = impl_->http.bind_to_any_port(o.host);
    if (impl_->port <= 0) throw Error(fmt::format("{}: cannot bind a port", o.host));
  } else {
    if (!impl_->http.bind_to_port(o.host, o.port))
      throw Error(fmt::format("{}:{}: cannot bind (address in use, or not an address of this machine)", o.host, o.port));
    impl_->port = o.port;
  }
  return impl_->port;
}

void Server::listen() {
  impl_->listen_started = true;
  if (!impl_->stop_requested) impl_->http.listen_after_bind();
  impl_->listen_returned = true;
}

void Server::stop() {
  impl_->stop_requested = true;
  if (impl_->listen_started)
    while (!impl_->listen_returned && !impl_->http.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (impl_->http.is_running()) impl_->http.stop();
}

const ServerOptions& Server::options() const { return impl_->opt; }

}  // namespace lsb::serve
