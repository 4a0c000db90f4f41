#include <cstdio>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "lib/gguf_writer.h"
#include "base/error.h"
#include "io/gguf.h"
#include "pipeline/open_model.h"

namespace lsb::cli {

// `lsb convert MODEL --to gguf -o OUT.gguf`: a model as a llama.cpp GGUF file, written by the
// project's one GGUF encoder (tools/lib/gguf_writer.h). Used by bench/peer/ to give llama.cpp the
// same weights lsb reads.
void add_convert(CLI::App& app) {
  struct Opts {
    std::string model, to = "gguf", out, type = "f32";
    bool json = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* c = app.add_subcommand(
      "convert", "Write a Hugging Face Llama model as a llama.cpp GGUF file (llama.cpp tensor names, q/k rows "
                 "permuted for its RoPE, SentencePiece vocabulary embedded, norms F32)");
  c->add_option("model", o->model, "Hugging Face model folder (or another input lsb reads with unpacked weights)")
      ->required();
  c->add_option("--to", o->to, "output format")->capture_default_str()->check(CLI::IsMember({"gguf"}));
  c->add_option("-o,--output", o->out, "output file")->required();
  c->add_option("--type", o->type, "element type of the matrices")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}));
  c->add_flag("--json", o->json, "print one JSON object");
  c->callback([o]() {
    const uint32_t type = o->type == "f32"    ? kGgmlF32
                          : o->type == "f16"  ? kGgmlF16
                          : o->type == "bf16" ? kGgmlBF16
                                              : kGgmlQ8_0;
    auto src = open_model(o->model);
    const TokenizerBlob tok = src->tokenizer();
    if (tok.kind != TokenizerBlob::Kind::SentencePiece)
      std::fprintf(stderr, "lsb convert: warning: %s has no SentencePiece tokenizer; the GGUF file has no vocabulary\n",
                   o->model.c_str());
    write_gguf_from_source(*src, tok, o->out, type);
    uint64_t params = 0;
    for (const TensorInfo& t : src->tensors()) params += static_cast<uint64_t>(t.numel());
    if (o->json) {
      print_json(nlohmann::ordered_json{{"model", o->model},
                                        {"output", o->out},
                                        {"format", o->to},
                                        {"matrix_type", o->type},
                                        {"params", params},
                                        {"vocabulary", tok.kind == TokenizerBlob::Kind::SentencePiece}});
    } else {
      std::printf("%s -> %s (GGUF, %s matrices, %llu parameters)\n", o->model.c_str(), o->out.c_str(),
                  o->type.c_str(), static_cast<unsigned long long>(params));
    }
  });
}

}  // namespace lsb::cli
