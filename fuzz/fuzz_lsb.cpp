// libFuzzer harness: a .lsb file. Random bytes would almost never pass the header checksum, so
// before writing the input the harness recomputes the checksums the way the writer does (each
// tensor's data checksum, then the header checksum) whenever the ranges they cover lie inside
// the input; the fuzzer then reaches the directory, metadata and blob parsers.
#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lsbfuzz::lsb_file(data, size);
  return 0;
}
