// libFuzzer harness: lsb serve's request bodies (fuzz_targets.h, request()).
#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lsbfuzz::request(data, size);
  return 0;
}
