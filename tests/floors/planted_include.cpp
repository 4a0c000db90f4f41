// A file of the quant floor that reaches up to the model floor. It must not compile: the quant
// floor sees only its own headers and those of the floors below (io, base). Built only by the
// ctest check floors.planted_include_fails, which expects the compiler to say the header does
// not exist.
#include "model/llama_model.h"
#include "quant/scheme.h"

int planted_include_marker() { return 1; }
