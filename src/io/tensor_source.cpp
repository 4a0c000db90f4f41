#include "lsb/tensor_source.h"

#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "format/lsb_reader.h"
#include "io/gguf.h"
#include "io/hf_folder.h"
#include "io/llama2c.h"
#include "lsb/error.h"
#include "model/model_tensors.h"

namespace fs = std::filesystem;

namespace lsb {

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // readers checked the product for overflow when parsing
  return n;
}

const TensorInfo* TensorSource::find(std::string_view name) const {
  for (const TensorInfo& t : tensors())
    if (t.name == name) return &t;
  return nullptr;
}

const TensorInfo& TensorSource::get(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (!t) fail(describe(), "missing tensor '{}'", name);
  return *t;
}

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
      src = format::open_lsb(path);
    } else if (std::memcmp(magic.data(), "GGUF", 4) == 0 || fs::path(path).extension() == ".gguf") {
      src = std::make_unique<GgufSource>(path);
    } else if (fs::path(path).extension() == ".bin") {
      src = std::make_unique<Llama2cSource>(path);
    } else {
      fail(path, "unrecognised model file (expected a Hugging Face folder, a llama2.c .bin, a GGUF or a .lsb file)");
    }
  }
  // Every consumer gets a source whose tensors match its config.
  validate_tensors(*src);
  return src;
}

}  // namespace lsb
