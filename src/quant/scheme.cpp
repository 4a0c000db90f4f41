// The table of schemes and the generic entry points that dispatch through it.
#include "quant/scheme.h"

#include <array>
#include <cctype>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/json_fields.h"

namespace lsb::quant {

// One row per scheme, defined in the scheme's own file.
extern const SchemeOps kF32Ops, kF16Ops, kBF16Ops, kQ8Ops, kLsb1Ops, kPaperOps, kNuOps, kVq4Ops;

namespace {

constexpr std::array<const SchemeOps*, 8> kSchemes = {&kF32Ops,  &kF16Ops,   &kBF16Ops, &kQ8Ops,
                                                      &kLsb1Ops, &kPaperOps, &kNuOps,   &kVq4Ops};

bool same_name(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

}  // namespace

SchemeOptions SchemeOptions::parse(std::string_view text, const std::string& where) {
  SchemeOptions o;
  if (text.empty()) return o;
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) fail(where, "scheme parameters '{}' are not a JSON object", text);
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (k == "group") o.group_size = get_int(j, "group", where);
    else if (k == "alpha") o.outlier_ratio = to_float_checked(get_number(j, "alpha", where), "alpha", where);
    else if (k == "mean") o.use_mean = get_bool(j, "mean", where);
    else if (k == "bits") o.bits = get_int(j, "bits", where);
    else if (k == "sym") o.sign_symmetric = get_bool(j, "sym", where);
    else fail(where, "unknown scheme parameter '{}'", k);
  }
  return o;
}

std::span<const SchemeOps* const> all_schemes() { return kSchemes; }

const SchemeOps* find_scheme(DType t) {
  for (const SchemeOps* s : kSchemes)
    if (s->id == t) return s;
  return nullptr;
}

const SchemeOps* find_scheme(std::string_view name) {
  for (const SchemeOps* s : kSchemes)
    if (same_name(s->name, name)) return s;
  return nullptr;
}

const SchemeOps& scheme(DType t) {
  if (const SchemeOps* s = find_scheme(t)) return *s;
  fail("quant", "no scheme has dtype code {}", static_cast<int>(t));
}

std::string_view scheme_name(DType t) {
  const SchemeOps* s = find_scheme(t);
  return s ? s->name : dtype_name(t);
}

std::string scheme_names() {
  std::string names;
  for (const SchemeOps* s : kSchemes) names += (names.empty() ? "" : ", ") + std::string(s->name);
  return names;
}

std::string make_params(DType t, const SchemeOptions& options, const std::string& where) {
  return scheme(t).make_params(options, where);
}

void check_params(DType t, std::string_view text, const std::string& where) {
  const std::string canonical = scheme(t).make_params(SchemeOptions::parse(text, where), where);
  if (canonical != text)
    fail(where, "{} parameters '{}' are not in canonical form ('{}')", scheme(t).name, text, canonical);
}

std::vector<std::byte> quantize(DType t, const QuantizeArgs& a) { return scheme(t).quantize(a); }

std::vector<std::byte> quantize_reference(DType t, const QuantizeArgs& a) { return scheme(t).quantize_ref(a); }

std::unique_ptr<BlobView> open_blob(DType t, std::span<const std::byte> blob, int64_t rows, int64_t cols,
                                    std::string_view params, const OpenArgs& args) {
  return scheme(t).open(blob, rows, cols, params, args);
}

void dequantize(DType t, std::span<const std::byte> blob, int64_t rows, int64_t cols, std::string_view params,
                float* out) {
  const std::unique_ptr<BlobView> v = open_blob(t, blob, rows, cols, params, {.where = "dequantize"});
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) v->dequantize_row(r, out + r * cols);
}

std::vector<float> tensor_to_float(const TensorInfo& t, std::span<const std::byte> data) {
  std::vector<float> w(static_cast<size_t>(t.numel()));
  if (!w.empty()) dequantize(t.dtype, data, t.rows(), t.cols(), t.params, w.data());
  return w;
}

}  // namespace lsb::quant
