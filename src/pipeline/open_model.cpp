#include "pipeline/open_model.h"

#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "base/error.h"
#include "format/lsb_reader.h"
#include "io/gguf.h"
#include "io/hf_folder.h"
#include "io/llama2c.h"
#include "model/model_tensors.h"

namespace fs = std::filesystem;

namespace lsb {

std::unique_ptr<TensorSource> open_model(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) fail(path, "no such file or directory");

  std::unique_ptr<TensorSource> src;
  if (fs::is_directory(st)) {
    src = std::make_unique<HfFolderSource>(path);
  } else {
    std::array<char, 8> magic{};
    {
      std::ifstream f(path, std::ios::binary);
      if (!f) fail(path, "cannot open: {}", std::strerror(errno));
      f.read(magic.data(), magic.size());  // a shorter file leaves zeros, which match no magic
    }
    // A .lsb name with the wrong magic goes to the .lsb reader too, which says "not an .lsb file".
    if (std::memcmp(magic.data(), "LSBMODEL", 8) == 0 || fs::path(path).extension() == ".lsb") {
      src = std::make_unique<format::LsbReader>(path);
    } else if (std::memcmp(magic.data(), "GGUF", 4) == 0 || fs::path(path).extension() == ".gguf") {
      src = std::make_unique<GgufSource>(path);
    } else if (fs::path(path).extension() == ".bin") {
      src = std::make_unique<Llama2cSource>(path);
    } else {
      fail(path, "unrecognised model file (expected a Hugging Face folder, a llama2.c .bin, a GGUF or a .lsb file)");
    }
  }
  validate_tensors(*src);
  return src;
}

Session open_session(const std::string& path, const std::string& tokenizer_path, bool need_tokenizer,
                     const RunOptions& opt) {
  return open_session(std::shared_ptr<TensorSource>(open_model(path)), tokenizer_path, need_tokenizer, opt);
}

}  // namespace lsb
