#include "serve/chat_template.h"

#include <fmt/format.h>

#include "base/error.h"

namespace lsb::serve {

namespace {

using Kind = PromptPart::Kind;

std::string strip(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\n\r");
  if (b == std::string_view::npos) return {};
  const size_t e = s.find_last_not_of(" \t\n\r");
  return std::string(s.substr(b, e - b + 1));
}

struct Builder {
  RenderedChat out;
  void text(std::string_view t) {
    if (t.empty()) return;
    if (!out.parts.empty() && out.parts.back().kind == Kind::Text)
      out.parts.back().text += t;
    else
      out.parts.push_back({Kind::Text, std::string(t)});
  }
  void marker(std::string_view m) { out.parts.push_back({Kind::Marker, std::string(m)}); }
  void bos() { out.parts.push_back({Kind::Bos, {}}); }
  void eos() { out.parts.push_back({Kind::Eos, {}}); }
};

// The system prompt (a leading system message) and the rest, for the families without a system
// role of their own (Llama-2 folds it into the first user turn, Mistral too).
std::pair<std::string, std::vector<ChatMessage>> split_system(const std::vector<ChatMessage>& m) {
  if (!m.empty() && m.front().role == "system") return {m.front().content, {m.begin() + 1, m.end()}};
  return {{}, m};
}

// Llama-2 chat, as its tokenizer_config.json template: each user turn is
// <s>[INST] content [/INST], each answer " content </s>"; the system prompt is wrapped in
// <<SYS>> and put in front of the first user turn.
void llama2(Builder& b, const std::vector<ChatMessage>& messages) {
  auto [system, rest] = split_system(messages);
  bool first = true;
  for (const ChatMessage& m : rest) {
    std::string content = m.content;
    if (first && !system.empty()) content = "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content;
    first = false;
    if (m.role == "assistant") {
      b.text(" " + strip(content) + " ");
      b.eos();
    } else {  // user (a later system message is shown as a user turn)
      b.bos();
      b.marker("[INST]");
      b.text(" " + strip(content) + " ");
      b.marker("[/INST]");
    }
  }
  if (rest.empty()) {  // a system prompt alone: an empty first user turn carries it
    b.bos();
    b.marker("[INST]");
    b.text(" " + strip("<<SYS>>\n" + system + "\n<</SYS>>\n\n") + " ");
    b.marker("[/INST]");
  }
}

// Mistral Instruct: <s>[INST] user [/INST]answer</s>[INST] user [/INST]; no system role, so a
// system prompt goes in front of the first user message.
void mistral(Builder& b, const std::vector<ChatMessage>& messages) {
  auto [system, rest] = split_system(messages);
  b.bos();
  bool first = true;
  for (const ChatMessage& m : rest) {
    if (m.role == "assistant") {
      b.text(m.content);
      b.eos();
    } else {
      std::string content = first && !system.empty() ? system + "\n\n" + m.content : m.content;
      b.marker("[INST]");
      b.text(" " + content + " ");
      b.marker("[/INST]");
    }
    first = false;
  }
  if (rest.empty()) {
    b.marker("[INST]");
    b.text(" " + system + " ");
    b.marker("[/INST]");
  }
}

// Llama-3: <|begin_of_text|> (the BOS), then per message
// <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>.
void llama3(Builder& b, const std::vector<ChatMessage>& messages) {
  b.bos();
  auto header = [&](std::string_view role) {
    b.marker("<|start_header_id|>");
    b.text(role);
    b.marker("<|end_header_id|>");
    b.text("\n\n");
  };
  for (const ChatMessage& m : messages) {
    header(m.role);
    b.text(strip(m.content));
    b.marker("<|eot_id|>");
  }
  header("assistant");
  b.out.end_of_turn = {"<|eot_id|>"};
}

// ChatML: <|im_start|>role\ncontent<|im_end|>\n per message.
void chatml(Builder& b, const std::vector<ChatMessage>& messages) {
  b.bos();
  for (const ChatMessage& m : messages) {
    b.marker("<|im_start|>");
    b.text(m.role + "\n" + m.content);
    b.marker("<|im_end|>");
    b.text("\n");
  }
  b.marker("<|im_start|>");
  b.text("assistant\n");
  b.out.end_of_turn = {"<|im_end|>"};
}

// Zephyr: <|role|>\ncontent</s>\n per message (the </s> is EOS).
void zephyr(Builder& b, const std::vector<ChatMessage>& messages) {
  b.bos();
  for (const ChatMessage& m : messages) {
    b.marker("<|" + m.role + "|>");
    b.text("\n" + m.content);
    b.eos();
    b.text("\n");
  }
  b.marker("<|assistant|>");
  b.text("\n");
  // A model that runs on past its EOS starts the next turn; stop there too.
  b.out.end_of_turn = {"<|user|>"};
}

}  // namespace

std::string_view template_name(TemplateFamily f) {
  switch (f) {
    case TemplateFamily::Llama2: return "llama2";
    case TemplateFamily::Llama3: return "llama3";
    case TemplateFamily::Mistral: return "mistral";
    case TemplateFamily::ChatML: return "chatml";
    case TemplateFamily::Zephyr: return "zephyr";
  }
  return "?";
}

const std::vector<TemplateFamily>& all_template_families() {
  static const std::vector<TemplateFamily> all = {TemplateFamily::Llama2, TemplateFamily::Llama3,
                                                  TemplateFamily::Mistral, TemplateFamily::ChatML,
                                                  TemplateFamily::Zephyr};
  return all;
}

std::string template_names_list() {
  std::string s;
  for (TemplateFamily f : all_template_families()) s += (s.empty() ? "" : ", ") + std::string(template_name(f));
  return s;
}

TemplateFamily template_from_name(std::string_view name) {
  for (TemplateFamily f : all_template_families())
    if (template_name(f) == name) return f;
  throw Error(fmt::format("unknown chat template '{}' (known: {})", name, template_names_list()));
}

std::optional<TemplateFamily> detect_template(std::string_view jinja) {
  auto has = [&](std::string_view s) { return jinja.find(s) != std::string_view::npos; };
  // Most specific markers first: Llama-3's header tokens and ChatML's im_start cannot be confused
  // with anything; [INST] is shared by Llama-2 (which has <<SYS>>) and Mistral (which has not).
  if (has("<|start_header_id|>")) return TemplateFamily::Llama3;
  if (has("<|im_start|>")) return TemplateFamily::ChatML;
  if (has("<|user|>") || has("<|assistant|>")) return TemplateFamily::Zephyr;
  if (has("[INST]")) return has("<<SYS>>") ? TemplateFamily::Llama2 : TemplateFamily::Mistral;
  return std::nullopt;
}

TemplateChoice choose_template(const std::string& override_name, const std::string& model_template,
                               const std::string& model) {
  TemplateChoice c;
  if (!override_name.empty()) {
    c.family = template_from_name(override_name);
    c.origin = "--chat-template";
    return c;
  }
  if (model_template.empty()) {
    c.problem = fmt::format("the model {} has no chat template", model);
    return c;
  }
  c.family = detect_template(model_template);
  if (c.family) {
    c.origin = "the model's chat_template";
    return c;
  }
  c.problem = fmt::format("the chat template of the model {} is none of the families lsb knows", model);
  return c;
}

std::string RenderedChat::text() const {
  std::string s;
  for (const PromptPart& p : parts) {
    switch (p.kind) {
      case Kind::Text:
      case Kind::Marker: s += p.text; break;
      case Kind::Bos: s += "<s>"; break;
      case Kind::Eos: s += "</s>"; break;
    }
  }
  return s;
}

RenderedChat render_chat(TemplateFamily f, const std::vector<ChatMessage>& messages) {
  if (messages.empty()) throw Error("the conversation has no messages");
  for (const ChatMessage& m : messages)
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      throw Error(fmt::format("message role '{}' is not one of system, user, assistant", m.role));
  Builder b;
  switch (f) {
    case TemplateFamily::Llama2: llama2(b, messages); break;
    case TemplateFamily::Llama3: llama3(b, messages); break;
    case TemplateFamily::Mistral: mistral(b, messages); break;
    case TemplateFamily::ChatML: chatml(b, messages); break;
    case TemplateFamily::Zephyr: zephyr(b, messages); break;
  }
  return std::move(b.out);
}

std::vector<int> encode_chat(const RenderedChat& chat, const Tokenizer& tok) {
  std::vector<int> ids;
  std::string pending;  // text (and markers the tokenizer does not have) not yet encoded
  auto flush = [&] {
    if (pending.empty()) return;
    const std::vector<int> t = tok.encode(pending, false);
    ids.insert(ids.end(), t.begin(), t.end());
    pending.clear();
  };
  for (const PromptPart& p : chat.parts) {
    if (p.kind == Kind::Text) {
      pending += p.text;
      continue;
    }
    int id = -1;
    if (p.kind == Kind::Bos) id = tok.bos_id();
    if (p.kind == Kind::Eos) id = tok.eos_id();
    if (p.kind == Kind::Marker) id = tok.piece_id(p.text);
    if (id < 0) {
      // A marker the vocabulary lacks is plain text; a tokenizer without BOS/EOS skips them.
      if (p.kind == Kind::Marker) pending += p.text;
      continue;
    }
    flush();
    ids.push_back(id);
  }
  flush();
  return ids;
}

std::vector<int> end_of_turn_ids(const RenderedChat& chat, const Tokenizer& tok) {
  std::vector<int> ids;
  for (const std::string& m : chat.end_of_turn)
    if (int id = tok.piece_id(m); id >= 0) ids.push_back(id);
  return ids;
}

}  // namespace lsb::serve
