// Options every command that runs a model shares: --mem-budget, --kv-type and the streaming knobs.
#pragma once
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "model/llama_model.h"
#include "runtime/session.h"

namespace lsb::cli {

struct ModelCliOptions {
  std::string mem_budget, kv_type = "f32";
  bool drop_page_cache = false;
  int stream_slots = 3;
  void add_to(CLI::App* c) {
    c->add_option("--mem-budget", mem_budget,
                  "stream layers from a .lsb file so that everything resident stays within SIZE (e.g. 400M, 2G)");
    c->add_option("--kv-type", kv_type, "KV cache element type: f32 or f16")
        ->capture_default_str()
        ->check(CLI::IsMember({"f32", "f16"}));
    c->add_flag("--drop-page-cache", drop_page_cache,
                "with --mem-budget: drop streamed layers from the OS page cache after reading them, so every token "
                "reads from the disk");
    c->add_option("--stream-slots", stream_slots,
                  "with --mem-budget: weight slots, 2 (current + prefetch) or 3 (reading also overlaps repacking; "
                  "used when the budget has room)")
        ->capture_default_str()
        ->check(CLI::Range(2, 3));
  }
  ModelOptions get() const {
    ModelOptions o;
    if (!mem_budget.empty()) o.mem_budget = parse_size(mem_budget);
    o.kv_type = kv_type == "f16" ? DType::F16 : DType::F32;
    o.drop_page_cache = drop_page_cache;
    o.max_stream_slots = stream_slots;
    return o;
  }
};

}  // namespace lsb::cli
