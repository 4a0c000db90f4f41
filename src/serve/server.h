// lsb serve's HTTP side, on cpp-httplib: the OpenAI endpoints (/v1/completions,
// /v1/chat/completions, /v1/models), /health and the chat page at /. Requests are parsed by
// serve/api.h and run by the Engine (serve/engine.h); this file is routing, limits, the API key,
// server-sent events and noticing clients that hang up.
#pragma once
#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "model/tokenizer.h"
#include "serve/chat_template.h"
#include "serve/engine.h"

namespace lsb::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;           // 0: any free port (bind() returns it)
  std::string api_key;       // non-empty: /v1/ requests need "Authorization: Bearer KEY"
  std::string model_name;    // the model's id in /v1/models and in responses
  size_t max_body = 256 * 1024;  // bytes of a request body; larger ones get 413
  int http_threads = 16;     // connections served at once (each waits for its request's turn)
  // The chat template for /v1/chat/completions; absent: chat requests get 400 with
  // chat_template_problem, which names --chat-template.
  std::optional<TemplateFamily> chat_template;
  std::string chat_template_problem;
  bool log = true;  // one line per request on stderr
};

class Server {
 public:
  Server(const Tokenizer& tok, Engine& engine, ServerOptions opt);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds the address; returns the port. Throws lsb::Error when it cannot.
  int bind();
  // Serves until stop(); returns then.
  void listen();
  // Any thread: stop accepting, finish the connections in progress, make listen() return.
  void stop();
  const ServerOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The chat page served at / (serve/chat_page.cpp): one HTML document, no external resources.
const std::string& chat_page_html();

}  // namespace lsb::serve
