// The control of floors.planted_include_fails: the same target setup including only what the
// quant floor may include (its own headers, io, base) compiles.
#include "base/dtype.h"
#include "io/tensor_source.h"
#include "quant/scheme.h"

int allowed_include_marker() { return lsb::quant::find_scheme(lsb::DType::F32) != nullptr; }
