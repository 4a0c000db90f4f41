// libFuzzer harness: a llama2.c legacy checkpoint (.bin): header, layout, tensor ranges.
#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lsbfuzz::llama2c(data, size);
  return 0;
}
