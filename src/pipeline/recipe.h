// Which scheme each tensor gets when compressing: a base scheme (or the measured default recipe,
// docs/RECIPE.md) plus `PATTERN=SCHEME` rules with shell-style globs (fnmatch(3): `*`, `?`,
// `[...]`) over full tensor names; the last matching rule wins. 1-D tensors (norm weights) are
// always stored F32.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "base/dtype.h"
#include "io/tensor_source.h"

namespace lsb {

struct KeepRule {
  std::string pattern;
  DType dtype = DType::F32;
  std::string spec;  // as given, for messages and metadata
};

struct Recipe {
  std::string name;              // "default" or a scheme name
  DType base = DType::LSB1;      // scheme of every matrix no rule matches
  std::vector<KeepRule> rules;   // built-in rules of the recipe, then the user's
  size_t builtin_rules = 0;      // rules_[0, builtin_rules) come from the recipe itself
};

// fnmatch(3) without flags: `*` matches any run of characters (dots included), `?` one character.
bool glob_match(const std::string& pattern, const std::string& name);
// "PATTERN=SCHEME"; throws lsb::Error on a missing '=', an empty pattern or an unknown scheme.
KeepRule parse_keep_rule(const std::string& spec);
// "default" (the measured recipe) or one of the scheme names (lsb1, paper, q8, f16, bf16, f32);
// throws lsb::Error listing the choices otherwise.
Recipe make_recipe(const std::string& scheme, const std::vector<std::string>& keep);
// The dtype a tensor is stored in.
DType choose_dtype(const Recipe& r, const TensorInfo& t);
// Throws if a user rule matches none of `tensors` (a typo would otherwise pass silently).
void check_rules_match(const Recipe& r, const std::vector<TensorInfo>& tensors, const std::string& where);

}  // namespace lsb
