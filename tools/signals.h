// How lsb ends when a signal or the OS stops it, so that every way out is one line on stderr and
// leaves nothing behind (docs/STREAMING.md, "Faults"):
//   - SIGINT, SIGTERM, SIGHUP: the temporary output being written (if any) is removed, one line
//     "lsb: interrupted by SIGTERM ..." is printed, and the process ends by the same signal, so
//     the caller sees it was interrupted (a shell reports 128 + the signal number). Memory, file
//     descriptors and threads go with the process; nothing else is held.
//   - SIGXFSZ (a write past the file-size limit, `ulimit -f` / `prlimit --fsize`) is ignored:
//     the write fails with EFBIG, which the writer reports naming the file, and the temporary
//     file is removed like after any other write error.
//   - SIGBUS on a memory-mapped model file (a file truncated while a resident run maps it): one
//     line and exit status 1, instead of a crash. Streaming runs read with pread and never see it.
#pragma once
#include <string>

namespace lsb::cli {

void install_signal_handlers();
// The temporary file or folder (of plain files) being written, removed if a signal ends the
// process; empty: none. Called by compress and synth when they create and finish it.
void track_temp_path(const std::string& path);

}  // namespace lsb::cli
