// Stop strings on streamed text: generation ends where one of them appears, and the text sent
// never contains it. Text that could still become the start of a stop string is held back until
// the next piece decides.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace lsb::serve {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  // Adds generated text; returns what is safe to send now. Once a stop string is found, stopped()
  // is true, the text before it is returned and everything after is dropped.
  std::string feed(std::string_view text);
  // At the end of generation: the text held back (none after a stop).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace lsb::serve
