// Checks shared by the packed schemes' quantizers and blob views (private to the quant floor).
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "quant/outliers.h"
#include "quant/scheme.h"

namespace lsb::quant::detail {

// Throws "where: weight at row R column C is not finite" for the first such weight (row-major).
void require_finite(const float* w, int64_t rows, int64_t cols, const char* where);
// The same check and message, rows scanned in parallel (the fast quantizers).
void require_finite_parallel(const float* w, int64_t rows, int64_t cols, const char* where);
// Sign bits past the last column must be 0: kernels may sum whole words.
void check_sign_padding(const uint64_t* signs, int64_t rows, int64_t words, int64_t cols, const std::string& where);
// The outlier sections of a sign-bit blob, parsed with the view's arguments.
OutlierSection parse_sign_outliers(std::span<const std::byte> blob, int64_t rows, int64_t cols, uint64_t counts_off,
                                   uint64_t gaps_off, const uint64_t* signs, int64_t words, const OpenArgs& args,
                                   const OutlierSink* sink);

}  // namespace lsb::quant::detail
