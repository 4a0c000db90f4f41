#include <cstdio>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "signals.h"
#include "lib/synth.h"
#include "base/error.h"
#include "runtime/threads.h"

namespace lsb::cli {

void add_synth(CLI::App& app) {
  struct Opts {
    std::string shape, out, dtype = "bf16";
    uint64_t seed = 0;
    int threads = 0;
    bool json = false, force = false, list = false;
  };
  auto o = std::make_shared<Opts>();
  std::string shapes_help = "model shape:";
  for (const SynthShape& s : synth_shapes()) shapes_help += "\n  " + s.name + " - " + s.description;
  CLI::App* c = app.add_subcommand(
      "synth", "Write a synthetic Hugging Face model folder (random weights with realistic statistics) at a real model's shape");
  c->add_option("--shape", o->shape, shapes_help);
  c->add_option("-o,--output", o->out, "output folder (created through a temporary folder beside it)");
  c->add_option("--dtype", o->dtype, "weight dtype")->capture_default_str()->check(CLI::IsMember({"bf16", "f16", "f32"}));
  c->add_option("--seed", o->seed, "random seed; the same seed gives byte-identical files")->capture_default_str();
  c->add_option("-t,--threads", o->threads, "threads (default: all cores)");
  c->add_flag("--force", o->force, "replace the output folder if it exists and is not empty");
  c->add_flag("--list", o->list, "list the known shapes and exit");
  c->add_flag("--json", o->json, "print one JSON object");
  c->callback([o]() {
    if (o->list) {
      for (const SynthShape& s : synth_shapes())
        std::printf("%-15s %5.2fB params  %s\n", s.name.c_str(), double(s.config.n_params_estimate()) / 1e9,
                    s.description.c_str());
      return;
    }
    if (o->shape.empty()) fail("synth", "--shape is required (see lsb synth --list)");
    if (o->out.empty()) fail("synth", "-o/--output is required");
    set_threads(o->threads);
    const SynthShape& shape = synth_shape(o->shape);
    SynthOptions so;
    so.dtype = o->dtype == "f32" ? DType::F32 : o->dtype == "f16" ? DType::F16 : DType::BF16;
    so.seed = o->seed;
    so.force = o->force;
    so.progress = !o->json;
    so.on_temp_dir = track_temp_path;
    const SynthResult r = synth_model(o->out, shape, so);
    const double mb_s = r.weight_seconds > 0 ? double(r.tensor_bytes) / 1e6 / r.weight_seconds : 0.0;
    if (o->json) {
      nlohmann::ordered_json j = {{"synthetic", true},
                                  {"shape", r.shape},
                                  {"dir", r.dir},
                                  {"dtype", o->dtype},
                                  {"seed", o->seed},
                                  {"n_params", r.n_params},
                                  {"n_tensors", r.n_tensors},
                                  {"n_shards", r.n_shards},
                                  {"tensor_bytes", r.tensor_bytes},
                                  {"file_bytes", r.file_bytes},
                                  {"tokenizer_pieces", r.tokenizer_pieces},
                                  {"tokenizer_seconds", r.tokenizer_seconds},
                                  {"weight_seconds", r.weight_seconds},
                                  {"seconds", r.seconds},
                                  {"mb_per_s", mb_s},
                                  {"peak_rss_mb", r.peak_rss_mb},
                                  {"threads", get_threads()}};
      print_json(j);
    } else {
      std::printf("synthetic %s model (%.2fB params, %s, seed %llu) written to %s\n", r.shape.c_str(),
                  double(r.n_params) / 1e9, o->dtype.c_str(), static_cast<unsigned long long>(o->seed), r.dir.c_str());
      std::printf("%d tensors in %d shard(s), %.2f GB; tokenizer %d pieces; %.1f s (weights %.0f MB/s), peak RSS %.0f MB\n",
                  r.n_tensors, r.n_shards, double(r.file_bytes) / 1e9, r.tokenizer_pieces, r.seconds, mb_s,
                  r.peak_rss_mb);
    }
  });
}

}  // namespace lsb::cli
