// libFuzzer harness: a GGUF file: header, metadata of every type, tensor infos, the llama config,
// name mapping, every tensor's bytes (Q8_0 dequantization included) and the vocabulary turned
// into a tokenizer that then encodes a fixed text.
#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lsbfuzz::gguf(data, size);
  return 0;
}
