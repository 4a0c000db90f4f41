// Error type used across the library. Every message names the file (or input) and the problem
// on one line, so the CLI can print it as is and exit non-zero.
#pragma once
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace lsb {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// fail("x.safetensors", "header length {} past end of file", n) -> throws "x.safetensors: header length ..."
template <typename... Args>
[[noreturn]] void fail(const std::string& where, fmt::format_string<Args...> fmtstr, Args&&... args) {
  throw Error(where + ": " + fmt::format(fmtstr, std::forward<Args>(args)...));
}

}  // namespace lsb
