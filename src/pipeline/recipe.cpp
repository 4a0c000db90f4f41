#include "pipeline/recipe.h"

#include <fnmatch.h>

#include <algorithm>

#include "base/error.h"
#include "quant/scheme.h"

namespace lsb {

bool glob_match(const std::string& pattern, const std::string& name) {
  return ::fnmatch(pattern.c_str(), name.c_str(), 0) == 0;
}

static DType scheme_dtype(std::string_view name, const std::string& where) {
  const quant::SchemeOps* t = quant::find_scheme(name);
  if (!t) fail(where, "unknown scheme '{}' (choose one of: {})", name, quant::scheme_names());
  return t->id;
}

KeepRule parse_keep_rule(const std::string& spec) {
  const size_t eq = spec.rfind('=');
  if (eq == std::string::npos) fail("--keep " + spec, "expected PATTERN=SCHEME, e.g. 'lm_head.weight=q8'");
  KeepRule r;
  r.pattern = spec.substr(0, eq);
  r.spec = spec;
  if (r.pattern.empty()) fail("--keep " + spec, "empty pattern");
  r.dtype = scheme_dtype(spec.substr(eq + 1), "--keep " + spec);
  return r;
}

Recipe make_recipe(const std::string& scheme, const std::vector<std::string>& keep) {
  Recipe r;
  r.name = scheme;
  if (scheme == "default") {
    // Measured on bookworm-27m (docs/RECIPE.md): PAPER matrices gave a lower perplexity than
    // LSB1 at fewer bits; the embedding and layer 0's down/v/k projections are the most
    // sensitive per bit, so they are kept at q8 (2.82 bits per weight, whole file).
    r.base = DType::PAPER;
    r.rules.push_back(parse_keep_rule("model.embed_tokens.weight=q8"));
    r.rules.push_back(parse_keep_rule("model.layers.0.mlp.down_proj.weight=q8"));
    r.rules.push_back(parse_keep_rule("model.layers.0.self_attn.v_proj.weight=q8"));
    r.rules.push_back(parse_keep_rule("model.layers.0.self_attn.k_proj.weight=q8"));
  } else {
    r.base = scheme_dtype(scheme, "--scheme");
  }
  r.builtin_rules = r.rules.size();
  for (const std::string& k : keep) r.rules.push_back(parse_keep_rule(k));
  return r;
}

DType choose_dtype(const Recipe& r, const TensorInfo& t) {
  if (t.shape.size() != 2) return DType::F32;  // norm weights: tiny, and every bit matters
  DType d = r.base;
  for (const KeepRule& k : r.rules)
    if (glob_match(k.pattern, t.name)) d = k.dtype;
  return d;
}

void check_rules_match(const Recipe& r, const std::vector<TensorInfo>& tensors, const std::string& where) {
  for (size_t i = r.builtin_rules; i < r.rules.size(); ++i) {
    const KeepRule& k = r.rules[i];
    const bool any = std::any_of(tensors.begin(), tensors.end(), [&](const TensorInfo& t) {
      return t.shape.size() == 2 && glob_match(k.pattern, t.name);
    });
    if (!any) fail(where, "--keep pattern '{}' matches no matrix of the model", k.pattern);
  }
}

}  // namespace lsb
