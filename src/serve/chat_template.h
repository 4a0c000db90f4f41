// Chat templates: a conversation (system, user and assistant messages) rendered as the prompt a
// chat-tuned model was trained on. Models ship their template as Jinja text (tokenizer_config.json
// "chat_template"); lsb does not run Jinja, it recognises the common families by their markers
// and renders them in C++, the way llama.cpp's llama_chat_apply_template does.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "model/tokenizer.h"

namespace lsb::serve {

enum class TemplateFamily { Llama2, Llama3, Mistral, ChatML, Zephyr };

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// "llama2", "llama3", "mistral", "chatml", "zephyr".
std::string_view template_name(TemplateFamily f);
const std::vector<TemplateFamily>& all_template_families();
std::string template_names_list();  // "llama2, llama3, mistral, chatml, zephyr"
// Throws lsb::Error naming the accepted names.
TemplateFamily template_from_name(std::string_view name);
// The family of a model's Jinja template, by its markers; nullopt when none matches.
std::optional<TemplateFamily> detect_template(std::string_view jinja);

// Which template a model is served with: --chat-template NAME when given, else the family of the
// model's own template. Without one, `problem` says why, for the error the chat endpoint answers.
struct TemplateChoice {
  std::optional<TemplateFamily> family;
  std::string origin;   // "--chat-template", "the model's chat_template"
  std::string problem;  // when !family: "the model X has no chat template", ...
};
// override_name: "" or a name (throws lsb::Error on an unknown one); model_template: the Jinja
// text the model came with ("" if none); model: how to name the model in messages.
TemplateChoice choose_template(const std::string& override_name, const std::string& model_template,
                               const std::string& model);

// A rendered conversation: text and special pieces in order.
struct PromptPart {
  enum class Kind { Text, Bos, Eos, Marker } kind = Kind::Text;
  std::string text;  // Text: the text; Marker: the marker ("<|im_start|>"); Bos/Eos: empty
};

struct RenderedChat {
  std::vector<PromptPart> parts;
  // Markers that end the assistant's turn besides EOS ("<|im_end|>"): stop strings, and stop ids
  // where the tokenizer has them as one piece.
  std::vector<std::string> end_of_turn;
  // The whole prompt as text, markers included, BOS and EOS shown as <s> and </s> (what
  // lsb chat --verbose prints; with one BOS in front and no EOS, it is exactly what `lsb run -p`
  // gets after the BOS when no marker is a piece of the tokenizer).
  std::string text() const;
};

// Renders the messages and the opening of the assistant's answer. Every family starts with BOS.
// Throws lsb::Error on an empty conversation or a role other than system, user, assistant.
RenderedChat render_chat(TemplateFamily f, const std::vector<ChatMessage>& messages);

// Ids of the rendered prompt: BOS/EOS as the tokenizer's ids, a marker as its id where the
// tokenizer has it as one piece and as text otherwise; consecutive text is encoded as one string.
std::vector<int> encode_chat(const RenderedChat& chat, const Tokenizer& tok);
// Ids of the end-of-turn markers the tokenizer has as one piece.
std::vector<int> end_of_turn_ids(const RenderedChat& chat, const Tokenizer& tok);

}  // namespace lsb::serve
