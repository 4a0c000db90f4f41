#include "serve/api.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace lsb::serve {

using nlohmann::json;

ApiError::ApiError(int status, std::string message, std::string param, std::string code, std::string type)
    : std::runtime_error(std::move(message)),
      status_(status),
      param_(std::move(param)),
      code_(std::move(code)),
      type_(std::move(type)) {}

json ApiError::body() const {
  json e = {{"message", what()}, {"type", type_}, {"param", nullptr}, {"code", nullptr}};
  if (!param_.empty()) e["param"] = param_;
  if (!code_.empty()) e["code"] = code_;
  return json{{"error", std::move(e)}};
}

namespace {

std::string type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    default: return "an invalid value";
  }
}

[[noreturn]] void bad(const std::string& param, const std::string& msg, const char* code = "invalid_value") {
  throw ApiError(400, fmt::format("'{}': {}", param, msg), param, code);
}
[[noreturn]] void wrong_type(const std::string& param, const char* want, const json& v) {
  bad(param, fmt::format("expected {}, got {}", want, type_name(v)), "invalid_type");
}

// null means "not given" for every optional parameter, as OpenAI's clients send it.
const json* field(const json& obj, const char* name) {
  auto it = obj.find(name);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

bool get_bool(const json& v, const char* name) {
  if (!v.is_boolean()) wrong_type(name, "a boolean", v);
  return v.get<bool>();
}

double get_number(const json& v, const char* name, double lo, double hi) {
  if (!v.is_number()) wrong_type(name, "a number", v);
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) bad(name, fmt::format("{} is outside [{}, {}]", x, lo, hi));
  return x;
}

int64_t get_int(const json& v, const char* name, int64_t lo) {
  // 5.0 is an integer to a JavaScript client; 5.5 is not.
  if (v.is_number_float()) {
    const double x = v.get<double>();
    if (!std::isfinite(x) || x != std::floor(x)) wrong_type(name, "an integer", v);
    if (x < static_cast<double>(lo)) bad(name, fmt::format("{} is below {}", x, lo));
    return x >= 9.2e18 ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(x);
  }
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    return u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ? std::numeric_limits<int64_t>::max()
                                                                          : static_cast<int64_t>(u);
  }
  if (!v.is_number_integer()) wrong_type(name, "an integer", v);
  const int64_t x = v.get<int64_t>();
  if (x < lo) bad(name, fmt::format("{} is below {}", x, lo));
  return x;
}

const std::string& get_string(const json& v, const std::string& name) {
  if (!v.is_string()) wrong_type(name, "a string", v);
  return v.get_ref<const std::string&>();
}

// A message's content: a string, or a list of parts of which only text parts are served.
std::string message_content(const json& v, const std::string& name) {
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) wrong_type(name, "a string or an array of content parts", v);
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    const json& part = v[i];
    const std::string pname = fmt::format("{}[{}]", name, i);
    if (!part.is_object()) wrong_type(pname, "an object", part);
    const json* type = field(part, "type");
    if (!type) bad(pname + ".type", "missing");
    if (get_string(*type, pname + ".type") != "text")
      bad(pname + ".type", fmt::format("'{}' parts are not served: this model reads text only", type->get<std::string>()),
          "unsupported_content");
    const json* text = field(part, "text");
    if (!text) bad(pname + ".text", "missing");
    out += get_string(*text, pname + ".text");
  }
  return out;
}

void parse_prompt(const json& v, CompletionRequest& r, const RequestLimits& lim) {
  if (v.is_string()) {
    r.prompt = v.get<std::string>();
    return;
  }
  if (!v.is_array()) wrong_type("prompt", "a string, an array of token ids or an array of one string", v);
  if (v.empty()) bad("prompt", "empty array");
  if (v[0].is_string()) {
    if (v.size() > 1) bad("prompt", "several prompts in one request are not served; send one request per prompt", "unsupported_value");
    r.prompt = v[0].get<std::string>();
    return;
  }
  if (v[0].is_array()) bad("prompt", "several prompts in one request are not served; send one request per prompt", "unsupported_value");
  if (v.size() > lim.max_prompt_ids) bad("prompt", fmt::format("more than {} token ids", lim.max_prompt_ids));
  r.prompt_is_ids = true;
  r.prompt_ids.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string name = fmt::format("prompt[{}]", i);
    const int64_t id = get_int(v[i], name.c_str(), 0);
    if (id > std::numeric_limits<int>::max()) bad(name, "token id out of range");
    r.prompt_ids.push_back(static_cast<int>(id));
  }
}

void parse_messages(const json& v, CompletionRequest& r, const RequestLimits& lim) {
  if (!v.is_array()) wrong_type("messages", "an array", v);
  if (v.empty()) bad("messages", "empty array: the conversation needs at least one message");
  if (v.size() > lim.max_messages) bad("messages", fmt::format("more than {} messages", lim.max_messages));
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string name = fmt::format("messages[{}]", i);
    const json& m = v[i];
    if (!m.is_object()) wrong_type(name, "an object", m);
    const json* role = field(m, "role");
    if (!role) bad(name + ".role", "missing");
    std::string rs = get_string(*role, name + ".role");
    if (rs == "developer") rs = "system";  // OpenAI's newer name for the system role
    if (rs != "system" && rs != "user" && rs != "assistant")
      bad(name + ".role", fmt::format("'{}' is not served (system, developer, user, assistant)", rs), "unsupported_value");
    const json* content = field(m, "content");
    // An assistant message may carry tool calls instead of content; lsb serves no tools.
    if (!content) bad(name + ".content", "missing");
    r.messages.push_back({std::move(rs), message_content(*content, name + ".content")});
  }
}

void parse_stop(const json& v, CompletionRequest& r, const RequestLimits& lim) {
  if (v.is_string()) {
    if (!v.get_ref<const std::string&>().empty()) r.stop.push_back(v.get<std::string>());
    return;
  }
  if (!v.is_array()) wrong_type("stop", "a string or an array of strings", v);
  if (v.size() > lim.max_stop) bad("stop", fmt::format("at most {} stop sequences", lim.max_stop));
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string& s = get_string(v[i], fmt::format("stop[{}]", i));
    if (!s.empty()) r.stop.push_back(s);
  }
}

}  // namespace

CompletionRequest parse_request(std::string_view body, Endpoint ep, const RequestLimits& lim) {
  const json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    throw ApiError(400, "the request body is not valid JSON", {}, "invalid_json");
  if (!j.is_object()) throw ApiError(400, fmt::format("the request body must be a JSON object, got {}", type_name(j)), {}, "invalid_type");
  CompletionRequest r;
  r.endpoint = ep;
  if (const json* v = field(j, "model")) r.model = get_string(*v, "model");
  if (ep == Endpoint::Completions) {
    const json* p = field(j, "prompt");
    if (!p) bad("prompt", "missing", "missing_parameter");
    parse_prompt(*p, r, lim);
    if (const json* v = field(j, "echo")) r.echo = get_bool(*v, "echo");
    if (const json* v = field(j, "suffix")) {
      if (!get_string(*v, "suffix").empty()) bad("suffix", "insertion (suffix) is not served", "unsupported_value");
    }
  } else {
    const json* m = field(j, "messages");
    if (!m) bad("messages", "missing", "missing_parameter");
    parse_messages(*m, r, lim);
  }
  // max_completion_tokens is the chat API's newer name for max_tokens.
  for (const char* name : {"max_tokens", "max_completion_tokens"})
    if (const json* v = field(j, name)) r.max_tokens = get_int(*v, name, ep == Endpoint::Completions ? 0 : 1);
  if (const json* v = field(j, "temperature")) r.temperature = get_number(*v, "temperature", 0, 2);
  if (const json* v = field(j, "top_p")) {
    r.top_p = get_number(*v, "top_p", 0, 1);
    // A nucleus of mass 0 holds only the most likely token: greedy decoding.
    if (r.top_p == 0) {
      r.temperature = 0;
      r.top_p = 1;
    }
  }
  if (const json* v = field(j, "seed")) {
    // Any integer: negative seeds are taken as their two's-complement bits.
    if (v->is_number_unsigned())
      r.seed = v->get<uint64_t>();
    else if (v->is_number_integer())
      r.seed = static_cast<uint64_t>(v->get<int64_t>());
    else
      wrong_type("seed", "an integer", *v);
  }
  if (const json* v = field(j, "stop")) parse_stop(*v, r, lim);
  if (const json* v = field(j, "stream")) r.stream = get_bool(*v, "stream");
  if (const json* v = field(j, "stream_options")) {
    if (!v->is_object()) wrong_type("stream_options", "an object", *v);
    if (const json* u = field(*v, "include_usage")) r.include_usage = get_bool(*u, "stream_options.include_usage");
  }
  if (const json* v = field(j, "n"); v && get_int(*v, "n", 1) != 1)
    bad("n", "only one choice per request is served", "unsupported_value");
  if (const json* v = field(j, "best_of"); v && get_int(*v, "best_of", 1) != 1)
    bad("best_of", "only one choice per request is served", "unsupported_value");
  for (const char* name : {"presence_penalty", "frequency_penalty"})
    if (const json* v = field(j, name); v && get_number(*v, name, -2, 2) != 0)
      bad(name, "penalties are not served; send 0 or leave it out", "unsupported_value");
  if (const json* v = field(j, "logprobs")) {
    const bool asked = v->is_boolean() ? v->get<bool>() : (v->is_number() ? v->get<double>() > 0 : true);
    if (asked) bad("logprobs", "log probabilities are not served", "unsupported_value");
  }
  for (const char* name : {"tools", "functions"})
    if (const json* v = field(j, name); v && !(v->is_array() && v->empty()))
      bad(name, "tool calls are not served", "unsupported_value");
  if (const json* v = field(j, "response_format")) {
    if (!v->is_object()) wrong_type("response_format", "an object", *v);
    if (const json* t = field(*v, "type"); t && get_string(*t, "response_format.type") != "text")
      bad("response_format.type", "only 'text' is served", "unsupported_value");
  }
  if (const json* v = field(j, "ignore_eos")) r.ignore_eos = get_bool(*v, "ignore_eos");
  return r;
}

namespace {

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json timings_json(const Timings& t) {
  return {{"prompt_n", t.prompt_n},
          {"prompt_ms", t.prompt_ms},
          {"prompt_per_second", t.prompt_per_second},
          {"predicted_n", t.predicted_n},
          {"predicted_ms", t.predicted_ms},
          {"predicted_per_second", t.predicted_per_second}};
}

json head(const ResponseMeta& m, const char* object) {
  return {{"id", m.id}, {"object", object}, {"created", m.created}, {"model", m.model}, {"system_fingerprint", "lsb"}};
}

}  // namespace

json completion_body(const ResponseMeta& m, const std::string& text, const std::string& finish_reason, const Usage& u,
                     const Timings& t) {
  const bool chat = m.endpoint == Endpoint::ChatCompletions;
  json j = head(m, chat ? "chat.completion" : "text_completion");
  json choice = {{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason}};
  if (chat)
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  else
    choice["text"] = text;
  j["choices"] = json::array({std::move(choice)});
  j["usage"] = usage_json(u);
  j["timings"] = timings_json(t);
  return j;
}

json chunk_body(const ResponseMeta& m, const std::string& text, const std::string* finish_reason, bool first) {
  const bool chat = m.endpoint == Endpoint::ChatCompletions;
  json j = head(m, chat ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", 0}, {"logprobs", nullptr}};
  choice["finish_reason"] = finish_reason ? json(*finish_reason) : json(nullptr);
  if (chat) {
    json delta = json::object();
    if (first) delta["role"] = "assistant";
    if (!finish_reason || !text.empty()) delta["content"] = text;
    choice["delta"] = std::move(delta);
  } else {
    choice["text"] = text;
  }
  j["choices"] = json::array({std::move(choice)});
  return j;
}

json usage_chunk_body(const ResponseMeta& m, const Usage& u, const Timings& t) {
  json j = head(m, m.endpoint == Endpoint::ChatCompletions ? "chat.completion.chunk" : "text_completion");
  j["choices"] = json::array();
  j["usage"] = usage_json(u);
  j["timings"] = timings_json(t);
  return j;
}

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace lsb::serve
