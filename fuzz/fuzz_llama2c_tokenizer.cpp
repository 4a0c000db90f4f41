// libFuzzer harness: llama2.c tokenizer.bin bytes through the loader, then encode (the merge
// loop) and decode of every id. The first byte of the input chooses nothing: the whole input is
// the file; the text encoded is fixed plus the file's last bytes, so odd UTF-8 reaches encode.
#include "fuzz_targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  lsbfuzz::llama2c_tokenizer(data, size);
  return 0;
}
