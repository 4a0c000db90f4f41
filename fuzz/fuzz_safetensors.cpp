// libFuzzer harness: one .safetensors file (header JSON, offsets, dtypes), then every tensor's bytes.
#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lsbfuzz::safetensors(data, size);
  return 0;
}
