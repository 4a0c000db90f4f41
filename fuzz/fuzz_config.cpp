// libFuzzer harness: a Hugging Face config.json through config_from_hf_json (and back through
// config_to_json / config_from_json, the .lsb metadata path). JSON syntax errors are the JSON
// library's business and are not fuzzed further.
#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lsbfuzz::config(data, size);
  return 0;
}
