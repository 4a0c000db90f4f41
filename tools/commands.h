// Subcommands of the `lsb` tool. Each adds itself to the app; its callback may throw lsb::Error,
// which main() prints as one line and turns into exit code 1.
#pragma once
#include <cstdio>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace lsb::cli {

void add_run(CLI::App& app);
void add_eval(CLI::App& app);
void add_compress(CLI::App& app);
void add_calibrate(CLI::App& app);
void add_inspect(CLI::App& app);
void add_synth(CLI::App& app);
void add_bench(CLI::App& app);
void add_serve(CLI::App& app);
void add_chat(CLI::App& app);
void add_convert(CLI::App& app);

// Prints a --json result. Generated text may hold bytes that are not UTF-8 (a sampled byte piece
// on its own); they are printed as U+FFFD instead of aborting the command.
template <class Json>
void print_json(const Json& j) {
  std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}
// The same on one line (a line a script reads while the command goes on running).
template <class Json>
void print_json_line(const Json& j) {
  std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}

}  // namespace lsb::cli
