#include "io/hf_folder.h"

#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "io/mmap_file.h"
#include "base/error.h"

namespace fs = std::filesystem;

namespace lsb {

namespace {

nlohmann::json read_json_file(const std::string& path) {
  const std::string text = read_small_file(path, 64ull << 20);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(path, "not valid JSON: {}", e.what());
  }
}

// Buffers (like rotary_emb.inv_freq) that older exports saved next to the weights; they are
// recomputed from the config, never loaded.
bool is_ignored_tensor(const std::string& name) {
  return name.size() >= 20 && name.ends_with("rotary_emb.inv_freq");
}

// Shard names come from a file we do not trust; they must stay inside the folder.
void check_shard_name(const std::string& shard, const std::string& index_path) {
  if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos ||
      shard.find("..") != std::string::npos || shard.find('\0') != std::string::npos)
    fail(index_path, "shard name '{}' is not a plain file name in the model folder", shard);
}

}  // namespace

HfFolderSource::HfFolderSource(const std::string& folder) : folder_(folder) {
  const fs::path dir(folder);
  const std::string config_path = (dir / "config.json").string();
  if (!fs::exists(config_path)) fail(folder, "no config.json in this folder (expected a Hugging Face model folder)");
  config_ = config_from_hf_json(read_json_file(config_path), config_path);

  const std::string index_path = (dir / "model.safetensors.index.json").string();
  const std::string single_path = (dir / "model.safetensors").string();
  std::vector<std::string> shard_names;
  nlohmann::json weight_map;
  if (fs::exists(index_path)) {
    nlohmann::json index = read_json_file(index_path);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      fail(index_path, "missing key 'weight_map' (an object of tensor name -> shard file)");
    weight_map = index["weight_map"];
    std::set<std::string> unique;
    for (const auto& [name, shard] : weight_map.items()) {
      if (!shard.is_string()) fail(index_path, "weight_map entry '{}' should be a file name", name);
      const std::string s = shard.get<std::string>();
      check_shard_name(s, index_path);
      if (unique.insert(s).second) shard_names.push_back(s);
    }
    if (shard_names.empty()) fail(index_path, "weight_map names no shards");
  } else if (fs::exists(single_path)) {
    shard_names.push_back("model.safetensors");
  } else {
    fail(folder, "no model.safetensors or model.safetensors.index.json in this folder "
                 "(only safetensors checkpoints are supported)");
  }

  for (const std::string& shard_name : shard_names) {
    const std::string shard_path = (dir / shard_name).string();
    if (!fs::exists(shard_path)) fail(shard_path, "shard listed in {} does not exist", index_path);
    auto shard = std::make_unique<SafetensorsFile>(shard_path);
    for (const TensorInfo& t : shard->tensors()) {
      if (is_ignored_tensor(t.name)) continue;
      auto [it, inserted] = shard_of_.emplace(t.name, shards_.size());
      if (!inserted)
        fail(shard_path, "tensor '{}' is also in {}", t.name, shards_[it->second]->path());
      tensors_.push_back(t);
    }
    shards_.push_back(std::move(shard));
  }

  // The index must agree with the shards: a tensor it places in a shard has to be there.
  for (const auto& [name, shard] : weight_map.items()) {
    if (is_ignored_tensor(name)) continue;
    auto it = shard_of_.find(name);
    const std::string expected = (dir / shard.get<std::string>()).string();
    if (it == shard_of_.end()) fail(index_path, "tensor '{}' is not in its shard {}", name, expected);
    if (shards_[it->second]->path() != expected)
      fail(index_path, "tensor '{}' is listed in {} but found in {}", name, expected, shards_[it->second]->path());
  }
}

std::span<const std::byte> HfFolderSource::data(const TensorInfo& t) const {
  auto it = shard_of_.find(t.name);
  if (it == shard_of_.end()) fail(folder_, "no tensor named '{}'", t.name);
  return shards_[it->second]->data(t.name);
}

std::string HfFolderSource::chat_template() const {
  const std::string path = (fs::path(folder_) / "tokenizer_config.json").string();
  if (!fs::exists(path)) return {};
  const nlohmann::json j = read_json_file(path);
  if (!j.is_object() || !j.contains("chat_template")) return {};
  const nlohmann::json& t = j["chat_template"];
  if (t.is_null()) return {};
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array() && !t.empty()) {
    const nlohmann::json* pick = nullptr;
    for (const nlohmann::json& e : t)
      if (e.is_object() && e.value("name", nlohmann::json()) == "default") pick = &e;
    if (!pick) pick = &t.front();
    if (pick->is_object() && pick->contains("template") && (*pick)["template"].is_string())
      return (*pick)["template"].get<std::string>();
  }
  fail(path, "chat_template is neither a string nor a list of {{name, template}} objects");
}

TokenizerBlob HfFolderSource::tokenizer() const {
  const std::string path = (fs::path(folder_) / "tokenizer.model").string();
  if (!fs::exists(path)) return {};
  TokenizerBlob blob;
  blob.kind = TokenizerBlob::Kind::SentencePiece;
  blob.bytes = read_small_file(path, 64ull << 20);
  blob.origin = path;
  return blob;
}

}  // namespace lsb
