// Checkpoint readers: real models open with the right tensors, bytes match an independent read
// of the files, and every kind of malformed input fails with a message naming the file.
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "base/fp16.h"
#include "io/llama2c.h"
#include "io/safetensors.h"
#include "base/dtype.h"
#include "base/error.h"
#include "io/tensor_source.h"
#include "model/model_tensors.h"
#include "test_util.h"

namespace fs = std::filesystem;

namespace {

std::string read_bytes(const fs::path& p, uint64_t offset, uint64_t len) {
  std::ifstream f(p, std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  std::string s(len, '\0');
  f.read(s.data(), static_cast<std::streamsize>(len));
  EXPECT_TRUE(f.good()) << "short read of " << p;
  return s;
}

uint64_t u64_le(const std::string& s) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[i]);
  return v;
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << "cannot write " << p;
}

// A crafted safetensors file: header JSON, declared header length (defaults to the real one),
// and `data_bytes` zero bytes of data.
fs::path write_safetensors(const std::string& name, const nlohmann::json& header, uint64_t data_bytes,
                           std::optional<uint64_t> declared_len = std::nullopt) {
  const std::string h = header.dump();
  const uint64_t n = declared_len.value_or(h.size());
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  bytes += h;
  bytes.append(data_bytes, '\0');
  fs::path p = lsbtest::temp_dir() / name;
  write_file(p, bytes);
  return p;
}

// Runs f, expects an lsb::Error whose message contains every needle.
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

// A copy of the bookworm folder in a temp dir: every file symlinked except config.json (copied,
// then optionally edited) and `truncate_shard` (a copy cut to `keep_bytes`).
fs::path bookworm_copy(const std::function<void(nlohmann::json&)>& edit_config = {},
                       const std::string& truncate_shard = "", uint64_t keep_bytes = 0) {
  const fs::path src = LSB_SHARED("models/bookworm-27m");
  const fs::path dst = lsbtest::temp_dir() / "bookworm";
  fs::create_directories(dst);
  for (const auto& entry : fs::directory_iterator(src)) {
    const std::string name = entry.path().filename().string();
    if (name == "config.json") {
      nlohmann::json j = nlohmann::json::parse(std::ifstream(entry.path()));
      if (edit_config) edit_config(j);
      write_file(dst / name, j.dump(2));
    } else if (name == truncate_shard) {
      write_file(dst / name, read_bytes(entry.path(), 0, keep_bytes));
    } else {
      fs::create_symlink(entry.path(), dst / name);
    }
  }
  return dst;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// fp16 / bf16 conversions

TEST(IoFp16, HalfRoundTripsEveryBitPattern) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = lsb::f16_to_f32(static_cast<uint16_t>(h));
    const uint16_t back = lsb::f32_to_f16(f);
    if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) {
      ASSERT_TRUE(std::isnan(f)) << h;
      ASSERT_EQ(back & 0x7c00, 0x7c00) << h;
      ASSERT_NE(back & 0x3ff, 0) << "NaN became inf: " << h;
    } else {
      ASSERT_EQ(back, h) << "half 0x" << std::hex << h << " -> " << f;
    }
  }
}

TEST(IoFp16, HalfValuesAndRounding) {
  EXPECT_EQ(lsb::f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(lsb::f16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(lsb::f16_to_f32(0x7bff), 65504.0f);               // largest finite
  EXPECT_EQ(lsb::f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(lsb::f32_to_f16(65520.0f), 0x7c00);  // halfway to 2^16 rounds (to even) to infinity
  EXPECT_EQ(lsb::f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // tie -> even
  EXPECT_EQ(lsb::f32_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie -> even (up)
  EXPECT_EQ(lsb::f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);             // tie below smallest subnormal
  EXPECT_EQ(lsb::f32_to_f16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(lsb::f32_to_f16(-0.0f), 0x8000);
  EXPECT_EQ(lsb::f32_to_f16(-INFINITY), 0xfc00);
  EXPECT_TRUE(std::isnan(lsb::f16_to_f32(lsb::f32_to_f16(NAN))));
}

#if defined(__FLT16_MAX__)
TEST(IoFp16, HalfMatchesCompilerConversion) {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    const uint32_t x = bits(rng);
    float f;
    std::memcpy(&f, &x, 4);
    if (std::isnan(f)) continue;
    const _Float16 ref = static_cast<_Float16>(f);
    uint16_t want;
    std::memcpy(&want, &ref, 2);
    ASSERT_EQ(lsb::f32_to_f16(f), want) << "float bits 0x" << std::hex << x;
  }
}
#endif

TEST(IoFp16, Bfloat16RoundTripAndRounding) {
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = lsb::bf16_to_f32(static_cast<uint16_t>(b));
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(lsb::bf16_to_f32(lsb::f32_to_bf16(f)))) << b;
    } else {
      ASSERT_EQ(lsb::f32_to_bf16(f), b);
    }
  }
  auto from_bits = [](uint32_t x) {
    float f;
    std::memcpy(&f, &x, 4);
    return f;
  };
  EXPECT_EQ(lsb::f32_to_bf16(from_bits(0x3f808000u)), 0x3f80);  // tie -> even (down)
  EXPECT_EQ(lsb::f32_to_bf16(from_bits(0x3f818000u)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(lsb::f32_to_bf16(from_bits(0x3f808001u)), 0x3f81);
  EXPECT_EQ(lsb::f32_to_bf16(from_bits(0x7f7fffffu)), 0x7f80);  // max float rounds to inf
  EXPECT_TRUE(std::isnan(lsb::bf16_to_f32(lsb::f32_to_bf16(from_bits(0x7f800001u)))));  // payload only in low bits
}

TEST(IoDType, NamesSizesRoundTrip) {
  for (lsb::DType t : {lsb::DType::F32, lsb::DType::F16, lsb::DType::BF16}) {
    auto back = lsb::dense_dtype_from_name(lsb::dtype_name(t));
    ASSERT_TRUE(back.has_value()) << lsb::dtype_name(t);
    EXPECT_EQ(*back, t);
    EXPECT_TRUE(lsb::dtype_is_dense(t));
  }
  for (lsb::DType t : {lsb::DType::Q8, lsb::DType::LSB1, lsb::DType::PAPER}) {
    EXPECT_FALSE(lsb::dtype_is_dense(t));
    EXPECT_EQ(lsb::dtype_size(t), 0u);
    EXPECT_EQ(lsb::dtype_name(t), "dtype " + std::to_string(static_cast<int>(t)));
  }
  EXPECT_EQ(lsb::dtype_size(lsb::DType::F32), sizeof(float));
  EXPECT_EQ(lsb::dtype_size(lsb::DType::BF16), sizeof(uint16_t));
  EXPECT_EQ(lsb::dense_dtype_from_name("bf16"), lsb::DType::BF16);
  EXPECT_FALSE(lsb::dense_dtype_from_name("I64").has_value());
  EXPECT_FALSE(lsb::dense_dtype_from_name("LSB1").has_value());
}

// ---------------------------------------------------------------------------------------------
// Real checkpoints

TEST(IoSafetensors, Gpt2AttnProjOpens) {
  const std::string path = LSB_SHARED("models/gpt2-attn-proj/gpt2_attn_c_proj.safetensors");
  lsb::SafetensorsFile f(path);
  ASSERT_EQ(f.tensors().size(), 12u);
  const uint64_t hlen = u64_le(read_bytes(path, 0, 8));
  const auto header = nlohmann::json::parse(read_bytes(path, 8, hlen));
  std::set<std::string> names;
  for (const auto& t : f.tensors()) {
    names.insert(t.name);
    EXPECT_EQ(t.dtype, lsb::DType::F32) << t.name;
    EXPECT_EQ(t.shape, (std::vector<int64_t>{768, 768})) << t.name;
    auto bytes = f.data(t.name);
    ASSERT_EQ(bytes.size(), uint64_t(768 * 768 * sizeof(float))) << t.name;
    // Compare the first and last float with a direct read of the file at the header's offset.
    const uint64_t begin = header.at(t.name).at("data_offsets")[0].get<uint64_t>();
    EXPECT_EQ(std::memcmp(bytes.data(), read_bytes(path, 8 + hlen + begin, 4).data(), 4), 0) << t.name;
    EXPECT_EQ(std::memcmp(bytes.data() + bytes.size() - 4,
                          read_bytes(path, 8 + hlen + begin + bytes.size() - 4, 4).data(), 4), 0) << t.name;
  }
  for (int i = 0; i < 12; ++i) EXPECT_TRUE(names.count("h." + std::to_string(i) + ".attn.c_proj.weight")) << i;
  // The same file as a TensorSource (no config).
  auto src = lsb::open_safetensors(path);
  EXPECT_EQ(src->tensors().size(), 12u);
  EXPECT_EQ(src->data(src->get("h.3.attn.c_proj.weight")).size(), size_t(768 * 768 * 4));
}

TEST(IoHfFolder, BookwormOpens) {
  const fs::path dir = LSB_SHARED("models/bookworm-27m");
  auto src = lsb::open_model(dir.string());
  const lsb::ModelConfig& c = src->config();
  const auto cfg = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  EXPECT_EQ(c.dim, cfg["hidden_size"].get<int>());
  EXPECT_EQ(c.n_layers, cfg["num_hidden_layers"].get<int>());
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_FALSE(c.rope_interleaved);

  // embed, final norm, lm_head + 9 per layer.
  ASSERT_EQ(src->tensors().size(), size_t(3 + 9 * c.n_layers));
  const auto expected = lsb::expected_tensors(c);
  ASSERT_EQ(expected.size(), src->tensors().size());
  for (const auto& e : expected) {
    const lsb::TensorInfo& t = src->get(e.name);
    EXPECT_EQ(t.shape, e.shape) << e.name;
    EXPECT_EQ(t.dtype, lsb::DType::BF16) << e.name;
    EXPECT_EQ(src->data(t).size(), uint64_t(t.numel()) * 2) << e.name;
  }
  EXPECT_NO_THROW(lsb::validate_tensors(*src));

  // First and last bf16 of embed_tokens, read independently: index -> shard -> header -> offset.
  const auto index = nlohmann::json::parse(std::ifstream(dir / "model.safetensors.index.json"));
  const fs::path shard = dir / index["weight_map"]["model.embed_tokens.weight"].get<std::string>();
  const uint64_t hlen = u64_le(read_bytes(shard, 0, 8));
  const auto header = nlohmann::json::parse(read_bytes(shard, 8, hlen));
  const auto offs = header["model.embed_tokens.weight"]["data_offsets"];
  const uint64_t begin = offs[0].get<uint64_t>(), end = offs[1].get<uint64_t>();
  const std::string first = read_bytes(shard, 8 + hlen + begin, 2);
  const std::string last = read_bytes(shard, 8 + hlen + end - 2, 2);
  auto data = src->data(src->get("model.embed_tokens.weight"));
  ASSERT_EQ(data.size(), end - begin);
  EXPECT_EQ(std::memcmp(data.data(), first.data(), 2), 0);
  EXPECT_EQ(std::memcmp(data.data() + data.size() - 2, last.data(), 2), 0);
  const uint16_t first_bits = uint16_t(uint8_t(first[0]) | (uint8_t(first[1]) << 8));
  uint16_t got_bits;
  std::memcpy(&got_bits, data.data(), 2);
  EXPECT_EQ(lsb::bf16_to_f32(got_bits), lsb::bf16_to_f32(first_bits));
  EXPECT_TRUE(std::isfinite(lsb::bf16_to_f32(got_bits)));

  const lsb::TokenizerBlob tok = src->tokenizer();
  EXPECT_EQ(tok.kind, lsb::TokenizerBlob::Kind::SentencePiece);
  EXPECT_EQ(tok.bytes.size(), fs::file_size(dir / "tokenizer.model"));
}

TEST(IoLlama2c, Stories260KOpens) {
  const std::string path = LSB_SHARED("models/stories260K/stories260K.bin");
  auto src = lsb::open_model(path);
  const lsb::ModelConfig& c = src->config();
  // Header fields read independently.
  const std::string hdr = read_bytes(path, 0, 28);
  int32_t h[7];
  std::memcpy(h, hdr.data(), 28);
  EXPECT_EQ(c.dim, h[0]);
  EXPECT_EQ(c.hidden_dim, h[1]);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, h[3]);
  EXPECT_EQ(c.n_kv_heads, h[4]);
  EXPECT_EQ(c.vocab_size, std::abs(h[5]));
  EXPECT_EQ(c.max_seq_len, h[6]);
  EXPECT_EQ(c.head_dim, h[0] / h[3]);
  EXPECT_TRUE(c.tie_embeddings);
  EXPECT_TRUE(c.rope_interleaved);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);

  ASSERT_EQ(src->tensors().size(), size_t(2 + 9 * c.n_layers));  // tied: no lm_head
  EXPECT_EQ(src->find("lm_head.weight"), nullptr);
  for (const auto& e : lsb::expected_tensors(c)) {
    const lsb::TensorInfo& t = src->get(e.name);
    EXPECT_EQ(t.shape, e.shape) << e.name;
    EXPECT_EQ(t.dtype, lsb::DType::F32);
    EXPECT_EQ(src->data(t).size(), uint64_t(t.numel()) * 4) << e.name;
  }
  EXPECT_EQ(src->get("model.layers.0.self_attn.k_proj.weight").shape,
            (std::vector<int64_t>{int64_t(c.n_kv_heads) * c.head_dim, c.dim}));

  // Embedding starts right after the header; the final norm ends where the two RoPE tables
  // (seq_len * head_dim/2 floats each) begin, counted back from the end of the file.
  auto embed = src->data(src->get("model.embed_tokens.weight"));
  EXPECT_EQ(std::memcmp(embed.data(), read_bytes(path, 28, 16).data(), 16), 0);
  const uint64_t rope_bytes = 2ull * h[6] * (h[0] / h[3] / 2) * 4;
  const uint64_t norm_at = fs::file_size(path) - rope_bytes - uint64_t(h[0]) * 4;
  auto norm = src->data(src->get("model.norm.weight"));
  EXPECT_EQ(std::memcmp(norm.data(), read_bytes(path, norm_at, norm.size()).data(), norm.size()), 0);
  // Layer 1's w2 (down_proj) sits one dim*hidden matrix after layer 0's.
  auto d0 = src->data(src->get("model.layers.0.mlp.down_proj.weight"));
  auto d1 = src->data(src->get("model.layers.1.mlp.down_proj.weight"));
  EXPECT_EQ(d1.data() - d0.data(), std::ptrdiff_t(h[0]) * h[1] * 4);
}

// ---------------------------------------------------------------------------------------------
// Malformed input: one test per case, each message names the file and the problem.

TEST(IoErrors, MissingPath) {
  const std::string path = (lsbtest::temp_dir() / "no_such_model").string();
  expect_error([&] { lsb::open_model(path); }, {path, "no such file"});
}

TEST(IoErrors, TruncatedShard) {
  const std::string shard = "model-00003-of-00004.safetensors";
  const fs::path dir = bookworm_copy({}, shard, 1 << 20);
  expect_error([&] { lsb::open_model(dir.string()); }, {shard, "outside the file", "truncated"});
}

TEST(IoErrors, MissingShard) {
  const fs::path dir = bookworm_copy();
  fs::remove(dir / "model-00002-of-00004.safetensors");
  expect_error([&] { lsb::open_model(dir.string()); }, {"model-00002-of-00004.safetensors", "does not exist"});
}

TEST(IoErrors, ShardNameEscapingFolder) {
  const fs::path dir = bookworm_copy();
  nlohmann::json index = nlohmann::json::parse(std::ifstream(dir / "model.safetensors.index.json"));
  index["weight_map"]["model.norm.weight"] = "../elsewhere.safetensors";
  fs::remove(dir / "model.safetensors.index.json");
  write_file(dir / "model.safetensors.index.json", index.dump());
  expect_error([&] { lsb::open_model(dir.string()); }, {"model.safetensors.index.json", "../elsewhere.safetensors"});
}

TEST(IoErrors, DuplicateTensorAcrossShards) {
  const fs::path dir = lsbtest::temp_dir();
  const fs::path a = write_safetensors("a.safetensors", {{"x", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}}}, 8);
  const fs::path b = write_safetensors("b.safetensors", {{"x", {{"dtype", "F32"}, {"shape", {2}}, {"data_offsets", {0, 8}}}}}, 8);
  fs::copy_file(a, dir / "model-a.safetensors");
  fs::copy_file(b, dir / "model-b.safetensors");
  fs::copy_file(LSB_SHARED("models/bookworm-27m/config.json"), dir / "config.json");
  write_file(dir / "model.safetensors.index.json",
             nlohmann::json{{"weight_map", {{"x", "model-a.safetensors"}, {"y", "model-b.safetensors"}}}}.dump());
  expect_error([&] { lsb::open_model(dir.string()); }, {"model-b.safetensors", "'x'", "also in"});
}

TEST(IoErrors, HeaderLengthPastEndOfFile) {
  const fs::path p = write_safetensors("long_header.safetensors", nlohmann::json::object(), 0, 1000);
  expect_error([&] { lsb::SafetensorsFile f(p.string()); }, {"long_header.safetensors", "past end of file"});
}

TEST(IoErrors, TensorOffsetsOutsideFile) {
  // A 4x4 F32 tensor claims 64 bytes, the file holds 16.
  const fs::path p = write_safetensors(
      "short_data.safetensors", {{"w", {{"dtype", "F32"}, {"shape", {4, 4}}, {"data_offsets", {0, 64}}}}}, 16);
  expect_error([&] { lsb::SafetensorsFile f(p.string()); }, {"short_data.safetensors", "'w'", "outside the file"});
}

TEST(IoErrors, TensorSizeDisagreesWithShape) {
  const fs::path p = write_safetensors(
      "bad_size.safetensors", {{"w", {{"dtype", "BF16"}, {"shape", {4, 4}}, {"data_offsets", {0, 30}}}}}, 32);
  expect_error([&] { lsb::SafetensorsFile f(p.string()); }, {"bad_size.safetensors", "'w'", "needs 32 bytes"});
}

TEST(IoErrors, ShapeOverflow) {
  const fs::path p = write_safetensors(
      "huge.safetensors",
      {{"w", {{"dtype", "F32"}, {"shape", {uint64_t(1) << 40, uint64_t(1) << 40}}, {"data_offsets", {0, 0}}}}}, 0);
  expect_error([&] { lsb::SafetensorsFile f(p.string()); }, {"huge.safetensors", "overflows"});
}

TEST(IoErrors, UnsupportedDtype) {
  const fs::path p = write_safetensors(
      "ints.safetensors", {{"ids", {{"dtype", "I64"}, {"shape", {2}}, {"data_offsets", {0, 16}}}}}, 16);
  expect_error([&] { lsb::SafetensorsFile f(p.string()); }, {"ints.safetensors", "unsupported dtype 'I64'"});
}

TEST(IoErrors, ShapeDisagreesWithConfig) {
  const fs::path dir = bookworm_copy([](nlohmann::json& j) { j["intermediate_size"] = 1535; });
  expect_error([&] { lsb::open_model(dir.string()); },
               {dir.string(), "config.json implies", "has shape [1536, 512]", "[1535, 512]"});
}

TEST(IoErrors, MissingConfigKey) {
  const fs::path dir = bookworm_copy([](nlohmann::json& j) { j.erase("hidden_size"); });
  expect_error([&] { lsb::open_model(dir.string()); }, {(dir / "config.json").string(), "missing key 'hidden_size'"});
}

TEST(IoErrors, UnknownArchitecture) {
  const fs::path dir = bookworm_copy([](nlohmann::json& j) { j["architectures"] = {"GPT2LMHeadModel"}; });
  expect_error([&] { lsb::open_model(dir.string()); },
               {"config.json", "unsupported architecture 'GPT2LMHeadModel'"});
}

TEST(IoErrors, MissingTensor) {
  // One layer more in config.json than in the shards.
  const fs::path dir = bookworm_copy([](nlohmann::json& j) { j["num_hidden_layers"] = j["num_hidden_layers"].get<int>() + 1; });
  expect_error([&] { lsb::open_model(dir.string()); }, {dir.string(), "missing tensor 'model.layers.6."});
}

TEST(IoErrors, Llama2cTruncated) {
  const std::string src = LSB_SHARED("models/stories260K/stories260K.bin");
  const uint64_t size = fs::file_size(src);
  const fs::path p = lsbtest::temp_dir() / "cut.bin";
  write_file(p, read_bytes(src, 0, size - 100));
  expect_error([&] { lsb::open_model(p.string()); },
               {"cut.bin", std::to_string(size - 100) + " bytes", "implies " + std::to_string(size), "truncated"});
}

TEST(IoErrors, Llama2cTrailingData) {
  const std::string src = LSB_SHARED("models/stories260K/stories260K.bin");
  const fs::path p = lsbtest::temp_dir() / "long.bin";
  write_file(p, read_bytes(src, 0, fs::file_size(src)) + std::string(4, '\0'));
  expect_error([&] { lsb::open_model(p.string()); }, {"long.bin", "trailing data"});
}

TEST(IoErrors, Llama2cAbsurdHeader) {
  // dim 2^30 would need gigabytes; it must be refused from the header alone.
  const int32_t h[7] = {1 << 30, 172, 5, 8, 4, 512, 512};
  const fs::path p = lsbtest::temp_dir() / "absurd.bin";
  write_file(p, std::string(reinterpret_cast<const char*>(h), sizeof h) + std::string(64, '\0'));
  expect_error([&] { lsb::open_model(p.string()); }, {"absurd.bin", "dim"});
  const int32_t neg[7] = {64, -172, 5, 8, 4, 512, 512};
  write_file(p, std::string(reinterpret_cast<const char*>(neg), sizeof neg));
  expect_error([&] { lsb::open_model(p.string()); }, {"absurd.bin", "hidden_dim", "not a positive size"});
}

TEST(IoErrors, BrokenOrUnknownFilesAreRefused) {
  // Files that start like GGUF / .lsb but hold nothing valid are dispatched to those readers,
  // which refuse them naming the file.
  const fs::path dir = lsbtest::temp_dir();
  write_file(dir / "m.gguf", std::string("GGUF\x03\0\0\0", 8) + std::string(64, '\0'));
  expect_error([&] { lsb::open_model((dir / "m.gguf").string()); }, {"m.gguf"});
  write_file(dir / "m.lsb", std::string("LSBMODEL") + std::string(64, '\0'));
  expect_error([&] { lsb::open_model((dir / "m.lsb").string()); }, {"m.lsb"});
  write_file(dir / "notes.txt", "hello");
  expect_error([&] { lsb::open_model((dir / "notes.txt").string()); }, {"notes.txt", "unrecognised model file"});
}

TEST(IoErrors, MutatedSafetensorsNeverCrash) {
  // Random byte flips in a valid two-tensor file: each variant either parses (and then every
  // tensor lies inside the file) or fails with lsb::Error — never another exception or a crash.
  const nlohmann::json header = {
      {"__metadata__", {{"format", "pt"}}},
      {"a", {{"dtype", "F16"}, {"shape", {2, 3}}, {"data_offsets", {0, 12}}}},
      {"b", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {12, 28}}}}};
  const fs::path good = write_safetensors("good.safetensors", header, 28);
  const std::string bytes = read_bytes(good, 0, fs::file_size(good));
  ASSERT_NO_THROW(lsb::SafetensorsFile f(good.string()));
  std::mt19937 rng(7);
  const fs::path p = lsbtest::temp_dir() / "mutant.safetensors";
  int parsed = 0, refused = 0;
  for (int i = 0; i < 300; ++i) {
    std::string m = bytes;
    const int flips = 1 + int(rng() % 3);
    for (int k = 0; k < flips; ++k) m[rng() % m.size()] = static_cast<char>(rng() & 0xff);
    if (rng() % 4 == 0) m.resize(rng() % m.size());
    write_file(p, m);
    try {
      lsb::SafetensorsFile f(p.string());
      for (const auto& t : f.tensors()) {
        auto d = f.data(t.name);
        ASSERT_EQ(d.size(), t.nbytes);
        ASSERT_EQ(uint64_t(t.numel()) * lsb::dtype_size(t.dtype), t.nbytes);
        unsigned sum = 0;  // touch every byte: a span outside the map would fault here
        for (std::byte b : d) sum += unsigned(b);
        volatile unsigned sink = sum;
        (void)sink;
      }
      ++parsed;
    } catch (const lsb::Error& e) {
      ASSERT_NE(std::string(e.what()).find("mutant.safetensors"), std::string::npos) << e.what();
      ++refused;
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_EQ(parsed + refused, 300);
}
