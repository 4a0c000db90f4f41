// libFuzzer harness: model.safetensors.index.json of a Hugging Face folder. The folder holds a
// valid config.json and one small shard (shard.safetensors) so that a well-formed index gets as
// far as the cross-check of index against shards and the tensor validation.
// Minimal valid safetensors file with two F32 tensors.
#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lsbfuzz::hf_index(data, size);
  return 0;
}
