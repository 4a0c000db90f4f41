// The OpenAI HTTP API as lsb serve speaks it: request bodies of /v1/completions and
// /v1/chat/completions parsed and checked into a CompletionRequest (every refusal an ApiError
// naming the parameter, as OpenAI's error bodies do), and the response, stream chunk and error
// bodies. No HTTP here: the server (serve/server.h) and the fuzz target call these.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "serve/chat_template.h"

namespace lsb::serve {

// An error answered to the client: HTTP status and OpenAI's error object
// {"error": {"message", "type", "param", "code"}}.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string message, std::string param = {}, std::string code = {},
           std::string type = "invalid_request_error");
  int status() const { return status_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  const std::string& type() const { return type_; }
  nlohmann::json body() const;

 private:
  int status_;
  std::string param_, code_, type_;
};

enum class Endpoint { Completions, ChatCompletions };

// Limits of one request (from the server's options).
struct RequestLimits {
  size_t max_stop = 4;            // stop strings (OpenAI's limit)
  size_t max_messages = 1024;     // chat messages
  size_t max_prompt_ids = 1 << 20;  // a prompt given as token ids
};

struct CompletionRequest {
  Endpoint endpoint = Endpoint::Completions;
  std::string model;  // "" when the client named none
  // /v1/completions: the prompt as text, or as token ids (then prompt_ids is used).
  std::string prompt;
  std::vector<int> prompt_ids;
  bool prompt_is_ids = false;
  // /v1/chat/completions
  std::vector<ChatMessage> messages;
  std::optional<int64_t> max_tokens;  // absent: 16 for completions (OpenAI's default), the rest of the context for chat
  double temperature = 1.0;           // OpenAI's defaults
  double top_p = 1.0;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  bool echo = false;           // completions: the prompt in front of the text
  // Extensions (llama-server has the same): never stop at EOS, so exactly max_tokens come out.
  bool ignore_eos = false;
};

// Parses and checks a request body. Throws ApiError (400) for malformed JSON, a wrong type, a
// value out of range or a feature lsb does not serve (n > 1, tools, logprobs); unknown fields
// are ignored, as llama-server and most OpenAI-compatible servers do.
CompletionRequest parse_request(std::string_view body, Endpoint ep, const RequestLimits& limits = {});

// What a finished request reports.
struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};
struct Timings {  // lsb's own field: the engine's speed on this request (like llama-server's "timings")
  double prompt_ms = 0, prompt_per_second = 0, predicted_ms = 0, predicted_per_second = 0;
  int64_t prompt_n = 0, predicted_n = 0;
};

struct ResponseMeta {
  std::string id;  // "cmpl-..." or "chatcmpl-..."
  int64_t created = 0;
  std::string model;
  Endpoint endpoint = Endpoint::Completions;
};

// The whole (non-streamed) response body.
nlohmann::json completion_body(const ResponseMeta& m, const std::string& text, const std::string& finish_reason,
                               const Usage& u, const Timings& t);
// One server-sent event's data: a chunk of text (finish_reason null), or the last one
// (finish_reason set, text empty). `first` adds the assistant role to a chat delta.
nlohmann::json chunk_body(const ResponseMeta& m, const std::string& text, const std::string* finish_reason,
                          bool first);
// The usage chunk sent last when stream_options.include_usage (choices empty).
nlohmann::json usage_chunk_body(const ResponseMeta& m, const Usage& u, const Timings& t);

// JSON text for the wire: bytes that are not UTF-8 (a byte piece on its own) become U+FFFD
// instead of throwing.
std::string dump(const nlohmann::json& j);

}  // namespace lsb::serve
