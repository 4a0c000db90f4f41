// lsb: compress, run and measure Llama-family models with outlier-preserving 1-bit weights.
#include <cstdio>
#include <exception>
#include <new>

#include "commands.h"
#include "signals.h"
#include "base/error.h"
#include "base/version.h"
#include "runtime/threads.h"

int main(int argc, char** argv) {
  lsb::bound_openmp_spin_when_streaming(argc, argv);
  // Before any thread exists: thread stacks and malloc arenas of a run under --mem-budget.
  if (lsb::argv_streams(argc, argv)) lsb::prepare_process_for_budget();
  lsb::cli::install_signal_handlers();
  CLI::App app{"lsb - Loop Singular Bit: compress, run and measure Llama-family models (Hugging Face folders, GGUF, llama2.c .bin, .lsb)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "lsb " + std::string(lsb::kVersion));
  lsb::cli::add_run(app);
  lsb::cli::add_eval(app);
  lsb::cli::add_compress(app);
  lsb::cli::add_calibrate(app);
  lsb::cli::add_inspect(app);
  lsb::cli::add_synth(app);
  lsb::cli::add_bench(app);
  lsb::cli::add_serve(app);
  lsb::cli::add_chat(app);
  lsb::cli::add_convert(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const lsb::Error& e) {
    std::fprintf(stderr, "lsb: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "lsb: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lsb: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
