// config.json parsing (defaults, refusals, type errors), ModelConfig validation bounds, and the
// round trip through our own JSON.
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/config.h"
#include "base/error.h"
#include "test_util.h"

namespace {

const std::string kWhere = "some/model/config.json";

nlohmann::json minimal_llama() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"hidden_size", 256},
          {"intermediate_size", 688},
          {"num_hidden_layers", 4},
          {"num_attention_heads", 8},
          {"vocab_size", 1000}};
}

template <typename F>
void expect_error(F&& f, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "expected an lsb::Error";
  } catch (const lsb::Error& e) {
    const std::string msg = e.what();
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

}  // namespace

TEST(ConfigHf, BookwormConfig) {
  const std::string path = LSB_SHARED("models/bookworm-27m/config.json");
  const auto j = nlohmann::json::parse(std::ifstream(path));
  const lsb::ModelConfig c = lsb::config_from_hf_json(j, path);
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.dim, j["hidden_size"].get<int>());
  EXPECT_EQ(c.hidden_dim, j["intermediate_size"].get<int>());
  EXPECT_EQ(c.n_layers, j["num_hidden_layers"].get<int>());
  EXPECT_EQ(c.n_heads, j["num_attention_heads"].get<int>());
  EXPECT_EQ(c.n_kv_heads, j["num_key_value_heads"].get<int>());
  EXPECT_EQ(c.head_dim, j["head_dim"].get<int>());
  EXPECT_EQ(c.vocab_size, j["vocab_size"].get<int>());
  EXPECT_EQ(c.max_seq_len, j["max_position_embeddings"].get<int>());
  EXPECT_FLOAT_EQ(c.norm_eps, j["rms_norm_eps"].get<float>());
  EXPECT_FLOAT_EQ(c.rope_theta, j["rope_theta"].get<float>());
  EXPECT_EQ(c.tie_embeddings, j["tie_word_embeddings"].get<bool>());
  EXPECT_FALSE(c.rope_interleaved);
  // The README gives the parameter count of this model.
  EXPECT_EQ(c.n_params_estimate(), 27269632);
}

TEST(ConfigHf, DefaultsFollowHfLlama) {
  const lsb::ModelConfig c = lsb::config_from_hf_json(minimal_llama(), kWhere);
  EXPECT_EQ(c.n_kv_heads, c.n_heads);
  EXPECT_EQ(c.head_dim, 256 / 8);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c.rope_theta, 10000.0f);
  EXPECT_EQ(c.max_seq_len, 2048);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_EQ(c.bos_id, 1);
  EXPECT_EQ(c.eos_id, 2);
  EXPECT_FALSE(c.rope_interleaved);
}

TEST(ConfigHf, MistralAcceptedAndWindowLimitsContext) {
  auto j = minimal_llama();
  j["architectures"] = {"MistralForCausalLM"};
  j["max_position_embeddings"] = 32768;
  j["sliding_window"] = 4096;
  j["eos_token_id"] = {2, 7};
  const lsb::ModelConfig c = lsb::config_from_hf_json(j, kWhere);
  EXPECT_EQ(c.arch, "mistral");
  EXPECT_EQ(c.max_seq_len, 4096);
  EXPECT_EQ(c.eos_id, 2);
  j.erase("architectures");
  j["model_type"] = "mistral";
  EXPECT_EQ(lsb::config_from_hf_json(j, kWhere).arch, "mistral");
}

TEST(ConfigHf, MissingKey) {
  auto j = minimal_llama();
  j.erase("hidden_size");
  expect_error([&] { lsb::config_from_hf_json(j, kWhere); }, {kWhere, "missing key 'hidden_size'"});
}

TEST(ConfigHf, WrongType) {
  auto j = minimal_llama();
  j["num_hidden_layers"] = "4";
  expect_error([&] { lsb::config_from_hf_json(j, kWhere); }, {kWhere, "'num_hidden_layers'", "integer"});
  j = minimal_llama();
  j["tie_word_embeddings"] = 1;
  expect_error([&] { lsb::config_from_hf_json(j, kWhere); }, {kWhere, "'tie_word_embeddings'"});
  j = minimal_llama();
  j["rope_theta"] = "big";
  expect_error([&] { lsb::config_from_hf_json(j, kWhere); }, {kWhere, "'rope_theta'", "number"});
}

TEST(ConfigHf, UnknownArchitecture) {
  auto j = minimal_llama();
  j["architectures"] = {"GPT2LMHeadModel"};
  expect_error([&] { lsb::config_from_hf_json(j, kWhere); },
               {kWhere, "unsupported architecture 'GPT2LMHeadModel' (supported: LlamaForCausalLM, MistralForCausalLM)"});
}

TEST(ConfigHf, RopeScalingRefused) {
  auto j = minimal_llama();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  expect_error([&] { lsb::config_from_hf_json(j, kWhere); }, {kWhere, "rope_scaling", "not supported"});
  j["rope_scaling"] = nullptr;  // null means plain RoPE
  EXPECT_NO_THROW(lsb::config_from_hf_json(j, kWhere));
}

TEST(ConfigHf, BiasesAndOtherActivationsRefused) {
  auto j = minimal_llama();
  j["attention_bias"] = true;
  expect_error([&] { lsb::config_from_hf_json(j, kWhere); }, {kWhere, "attention_bias"});
  j = minimal_llama();
  j["hidden_act"] = "gelu";
  expect_error([&] { lsb::config_from_hf_json(j, kWhere); }, {kWhere, "gelu"});
}

TEST(ConfigValidate, RejectsInconsistentOrAbsurdValues) {
  auto base = lsb::config_from_hf_json(minimal_llama(), kWhere);
  auto expect_invalid = [&](auto mutate, const std::string& needle) {
    lsb::ModelConfig c = base;
    mutate(c);
    expect_error([&] { c.validate("x.json"); }, {"x.json", needle});
  };
  expect_invalid([](lsb::ModelConfig& c) { c.n_kv_heads = 3; }, "multiple of n_kv_heads");
  expect_invalid([](lsb::ModelConfig& c) { c.head_dim = 33; }, "even");
  expect_invalid([](lsb::ModelConfig& c) { c.dim = 0; }, "positive");
  expect_invalid([](lsb::ModelConfig& c) { c.hidden_dim = -5; }, "positive");
  expect_invalid([](lsb::ModelConfig& c) { c.dim = 1 << 30; }, "maximum");
  expect_invalid([](lsb::ModelConfig& c) { c.vocab_size = 1 << 28; }, "maximum");
  expect_invalid([](lsb::ModelConfig& c) { c.n_layers = 5000; }, "maximum");
  expect_invalid([](lsb::ModelConfig& c) { c.norm_eps = 0; }, "norm_eps");
  expect_invalid([](lsb::ModelConfig& c) { c.eos_id = c.vocab_size; }, "eos");
  EXPECT_NO_THROW(base.validate("x.json"));
}

TEST(ConfigHf, AbsurdSizesInJsonRefused) {
  auto j = minimal_llama();
  j["intermediate_size"] = int64_t(1) << 40;
  expect_error([&] { lsb::config_from_hf_json(j, kWhere); }, {kWhere, "'intermediate_size'", "out of range"});
}

TEST(ConfigJson, RoundTripsEveryField) {
  lsb::ModelConfig c;
  c.arch = "mistral";
  c.dim = 320;
  c.hidden_dim = 864;
  c.n_layers = 3;
  c.n_heads = 10;
  c.n_kv_heads = 5;
  c.head_dim = 48;  // explicitly different from dim / n_heads
  c.vocab_size = 777;
  c.max_seq_len = 333;
  c.rope_theta = 123456.7f;
  c.norm_eps = 3.3e-6f;
  c.tie_embeddings = true;
  c.rope_interleaved = true;
  c.bos_id = 5;
  c.eos_id = 6;
  // Through text, as it will be stored inside a file.
  const auto text = lsb::config_to_json(c).dump();
  const lsb::ModelConfig d = lsb::config_from_json(nlohmann::json::parse(text), "x.lsb");
  EXPECT_EQ(d.arch, c.arch);
  EXPECT_EQ(d.dim, c.dim);
  EXPECT_EQ(d.hidden_dim, c.hidden_dim);
  EXPECT_EQ(d.n_layers, c.n_layers);
  EXPECT_EQ(d.n_heads, c.n_heads);
  EXPECT_EQ(d.n_kv_heads, c.n_kv_heads);
  EXPECT_EQ(d.head_dim, c.head_dim);
  EXPECT_EQ(d.vocab_size, c.vocab_size);
  EXPECT_EQ(d.max_seq_len, c.max_seq_len);
  EXPECT_EQ(d.rope_theta, c.rope_theta);  // bit-exact
  EXPECT_EQ(d.norm_eps, c.norm_eps);
  EXPECT_EQ(d.tie_embeddings, c.tie_embeddings);
  EXPECT_EQ(d.rope_interleaved, c.rope_interleaved);
  EXPECT_EQ(d.bos_id, c.bos_id);
  EXPECT_EQ(d.eos_id, c.eos_id);
}

TEST(ConfigJson, MissingFieldNamed) {
  auto j = lsb::config_to_json(lsb::config_from_hf_json(minimal_llama(), kWhere));
  j.erase("rope_interleaved");
  expect_error([&] { lsb::config_from_json(j, "x.lsb"); }, {"x.lsb", "missing key 'rope_interleaved'"});
}
