// Options every command that runs a model shares: --mem-budget, --kv-type and the streaming knobs.
#pragma once
#include <string>

#include <CLI/CLI.hpp>

#include "runtime/session.h"

namespace lsb::cli {

struct ModelCliOptions {
  uint64_t mem_budget = 0;
  std::string kv_type = "f32";
  bool drop_page_cache = false;
  int stream_slots = 3;
  void add_to(CLI::App* c) {
    c->add_option("--mem-budget", mem_budget,
                  "stream layers from a .lsb file so that everything resident stays within SIZE (e.g. 400M, 2G; "
                  "K/M/G are powers of 1024)")
        ->transform(CLI::AsSizeValue(false))
        ->check(CLI::PositiveNumber);
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
  bool streaming() const { return mem_budget > 0; }
  RunOptions get() const {
    RunOptions o;
    o.mem_budget = mem_budget;
    o.kv_type = kv_type == "f16" ? DType::F16 : DType::F32;
    o.drop_page_cache = drop_page_cache;
    o.max_stream_slots = stream_slots;
    return o;
  }
};

}  // namespace lsb::cli
