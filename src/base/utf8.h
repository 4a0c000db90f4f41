// UTF-8 validation for names and strings read from files.
#pragma once
#include <string_view>

namespace lsb {

// True when s is well-formed UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF,
// no truncated sequence.
bool valid_utf8(std::string_view s);

}  // namespace lsb
