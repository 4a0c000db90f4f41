#include "format/recipe.h"

#include <algorithm>

#include "lsb/error.h"
#include "quant/scheme.h"

namespace lsb::format {

bool glob_match(std::string_view p, std::string_view s) {
  // Iterative matcher with single-star backtracking: linear in practice, no recursion.
  size_t pi = 0, si = 0, star = std::string_view::npos, mark = 0;
  while (si < s.size()) {
    if (pi < p.size() && (p[pi] == '?' || p[pi] == s[si])) {
      ++pi;
      ++si;
    } else if (pi < p.size() && p[pi] == '*') {
      star = pi++;
      mark = si;
    } else if (star != std::string_view::npos) {
      pi = star + 1;
      si = ++mark;
    } else {
      return false;
    }
  }
  while (pi < p.size() && p[pi] == '*') ++pi;
  return pi == p.size();
}

static DType scheme_dtype(std::string_view name, const std::string& where) {
  const quant::SchemeTraits* t = quant::find_scheme(name);
  if (!t) {
    std::string names;
    for (const quant::SchemeTraits& s : quant::all_schemes()) names += (names.empty() ? "" : ", ") + std::string(s.name);
    fail(where, "unknown scheme '{}' (choose one of: {})", name, names);
  }
  return t->dtype;
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

}  // namespace lsb::format
