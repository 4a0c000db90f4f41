// Subcommands of the `lsb` tool. Each adds itself to the app; its callback may throw lsb::Error,
// which main() prints as one line and turns into exit code 1.
#pragma once
#include <CLI/CLI.hpp>

namespace lsb::cli {

void add_run(CLI::App& app);
void add_eval(CLI::App& app);
void add_compress(CLI::App& app);
void add_inspect(CLI::App& app);
void add_synth(CLI::App& app);
void add_bench(CLI::App& app);

}  // namespace lsb::cli
